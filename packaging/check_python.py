"""`make install` runs this with PYTHON: prints why the installed unit could not run it, or nothing.

The venv in PREFIX links to PYTHON's base interpreter, and the unit runs that: it must be visible
under the unit's sandbox (ProtectHome=yes hides /root, /home and /run/user; PrivateTmp=yes hides
/tmp and /var/tmp), be the system's (under /usr), be new enough, and match the wheelhouse's target.
Runs on any Python 3 (RHEL 8's 3.6 too), so that an old one gets this message, not a traceback.

    python3 packaging/check_python.py PYTHON WHEEL_PYTHON
"""

import os
import sys

HINT = "choose the system Python, e.g. make install PYTHON=/usr/bin/python3.9"


def problem(name: str, wheel_python: str) -> str:
    base = getattr(sys, "_base_executable", None) or sys.executable
    exe = os.path.realpath(base)
    version = "%d.%d" % sys.version_info[:2]
    for hidden in ("/root/", "/home/", "/run/user/", "/tmp/", "/var/tmp/"):
        if exe.startswith(hidden):
            return "%s is %s, under %s, which the installed unit cannot see; %s" % (
                name,
                exe,
                hidden.rstrip("/"),
                HINT,
            )
    if not exe.startswith("/usr/"):
        return "%s is %s, not the system Python; %s" % (name, exe, HINT)
    if sys.version_info < (3, 9):
        return "%s is Python %s; apigee-tls-exporter needs 3.9 or newer; %s" % (name, version, HINT)
    if wheel_python and version != wheel_python:
        return "%s is Python %s but WHEEL_PYTHON=%s; leave WHEEL_PYTHON unset for make install" % (
            name,
            version,
            wheel_python,
        )
    return ""


if __name__ == "__main__":
    print(problem(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else ""))
