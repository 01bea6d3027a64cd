"""The ``demo`` command (what ``make run`` starts): the daemon on a generated log, with the lab.

A writer (``generator.DemoWriter``) appends realistic MP records to a log, failures in bursts;
the daemon follows it with alert windows as long as a burst. The lab (``lab.py``) runs on
127.0.0.1 a TLS backend that rejects one of the demo keystore's aliases and a clearly labelled
STAND-IN of the management API (not Apigee) serving that keystore, so that the first burst (a
page about that backend) is diagnosed (the cause on the status page and on
``apigee_tls_alert_firing``) and ``/probe`` predicts the same rejection, within the first minute.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import time
import urllib.parse
from typing import Optional

from .generator import DEMO_INCIDENTS, Backend, Bursts, DemoWriter, Incident, Proxy, demo_alerts
from .lab import ACCEPTED_ALIAS, ENV, KEYSTORE, ORG, REJECTED_ALIAS, USERNAME, Lab, start


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """The options of ``apigee-tls-exporter demo``."""
    parser.add_argument(
        "--listen",
        default="127.0.0.1:9847",
        metavar="HOST:PORT",
        help="where to serve /metrics (default 127.0.0.1:9847; port 0 picks a free one)",
    )
    parser.add_argument("--rate", type=float, default=50.0, help="demo log lines per second")
    parser.add_argument(
        "--burst",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="length of each burst of failures, and of the alert windows (default 60)",
    )
    parser.add_argument(
        "--pause",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="time without failures between two bursts (default 120)",
    )
    parser.add_argument(
        "--dir",
        metavar="DIR",
        help="where the demo log and state go (default: a new directory under the system's "
        "temporary directory); kept after exit",
    )


def incidents(lab: Lab) -> tuple[Incident, ...]:
    """The demo's incidents, the first one (a page) about the lab's backend and rejected alias."""
    backend = Backend(None, "127.0.0.1", lab.backend.port, REJECTED_ALIAS, "52de60d9", "6ec45759")
    payments = Proxy(ORG, ENV, "payments-v1", ("7", "8"), (backend,))
    return (Incident(payments, backend, "bad_certificate"), *DEMO_INCIDENTS[1:])


def probe_url(base: str, target: str, alias: str) -> str:
    query = urllib.parse.urlencode(
        {"target": target, "org": ORG, "env": ENV, "key_alias": alias}, safe=":"
    )
    return f"{base}/probe?{query}"


def command(args: argparse.Namespace) -> int:
    """Run the demo until Ctrl-C; the metrics URL is the first line printed, once the daemon
    listens. Raises ValueError for bad options or an address it cannot listen on."""
    import tempfile

    from ..config import ConfigError, parse_listen, validate
    from ..log import configure_logging
    from ..run.app import Service
    from ..run.notify import Notifier

    if args.rate <= 0 or args.burst <= 0 or args.pause < 0:
        raise ValueError("--rate and --burst must be positive, --pause not negative")
    if args.dir:
        os.makedirs(args.dir, exist_ok=True)
    workdir = os.path.abspath(args.dir or tempfile.mkdtemp(prefix="apigee-tls-demo-"))
    log_path = os.path.join(workdir, "system.log")
    password_file = os.path.join(workdir, "standin-password")
    password = secrets.token_urlsafe(12)
    with open(os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(password + "\n")
    lab = start(password)
    try:
        config = validate(
            {
                "logs": [{"path": log_path}],
                "listen": args.listen,
                "from_beginning": True,
                "state_file": os.path.join(workdir, "state.json"),
                "alerts": demo_alerts(args.burst),
                "diagnosis": {
                    "enabled": True,
                    "management_url": lab.standin.url,
                    "username": USERNAME,
                    "password_file": password_file,
                    "default_keystore": KEYSTORE,
                    "min_interval": "30s",
                    "inventory": {"keystores": [{"org": ORG, "env": ENV, "keystore": KEYSTORE}]},
                },
            }
        )
    except ConfigError as err:
        lab.close()
        raise ValueError(err.problems[0]) from None
    host = parse_listen(config.listen)[0] or "127.0.0.1"
    open(log_path, "a").close()  # the daemon finds it at once, not "waiting for log file"
    configure_logging("warning")  # start-up is quiet: the URL comes first, then "info" lines
    bursts = Bursts(args.burst, args.pause, start=time.time(), incidents=incidents(lab))
    writer = DemoWriter(log_path, rate=args.rate, failure_fraction=0.02, bursts=bursts)
    service: Optional[Service] = None
    target = lab.backend.target

    class Announce(Notifier):
        """Prints where to look once the daemon listens and follows the log (its READY)."""

        announced = False

        def ready(self, status: Optional[str] = None) -> bool:
            if not self.announced and service is not None:
                self.announced = True
                configure_logging("info")  # from now on: alerts firing and resolving
                server = service.server
                base = f"{server.scheme}://{host}:{server.port}"
                period = args.burst + args.pause
                print(f"metrics:   {base}/metrics", flush=True)
                print(f"status:    {base}/ (the first page's cause, once diagnosed)")
                print(
                    f"alerts:    apigee_tls_alert_firing there: a {args.burst:g} s burst of "
                    f"failures every {period:g} s, each alert resolves {args.burst:g} s after it",
                )
                print(f"probe:     {probe_url(base, target, REJECTED_ALIAS)}")
                print(f"           {probe_url(base, target, ACCEPTED_ALIAS)}")
                print(
                    f"backend:   {target}, a demo TLS backend that accepts client certificates "
                    f'from "Demo Partner CA" only: alias {REJECTED_ALIAS} (from "Demo Legacy '
                    f'CA") is rejected, {ACCEPTED_ALIAS} accepted'
                )
                print(
                    f"mgmt API:  {lab.standin.url}, a local STAND-IN of the Edge management API "
                    f"(not Apigee) serving keystore {KEYSTORE} of {ORG}/{ENV}"
                )
                print(f"demo log:  {log_path} ({args.rate:g} lines/s)")
                print(f"kept:      {workdir} stays after exit (rm -rf it when done)")
                print("stop with Ctrl-C", flush=True)
            return super().ready(status)

    writer.start()
    try:
        service = Service(lambda: config, notifier=Announce())
        return service.run()
    except OSError as err:
        raise ValueError(f"cannot listen on {config.listen}: {err.strerror or err}") from None
    finally:
        writer.stop()
        lab.close()
        with contextlib.suppress(BrokenPipeError):  # stdout may be gone (a closed pipe)
            print(f"demo files kept in {workdir}", flush=True)
