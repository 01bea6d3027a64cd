"""Entry point of dist/apigee-tls-exporter.pyz, the single-file build (see `make dist`).

Pure-Python packages are imported straight from the archive. Python cannot load compiled
extension modules (pydantic-core, cryptography, bcrypt, cffi) from a zip file, so `make dist`
puts the packages that contain them under ``_native/`` and this bootstrap extracts that tree,
once, to a cache directory ($APIGEE_TLS_EXPORTER_PYZ_CACHE, else $XDG_CACHE_HOME or ~/.cache,
under apigee-tls-exporter/) and puts it on sys.path. The compiled parts only load on the Python
version and machine the archive was built for, which ``_native/BUILD`` records and this checks.
"""

import hashlib
import os
import platform
import shutil
import sys
import zipfile

PROG = "apigee-tls-exporter"


def _native_path(archive: str) -> str:
    with zipfile.ZipFile(archive) as zf:
        build = zf.read("_native/BUILD").decode("ascii").strip()
        wanted = f"cp{sys.version_info[0]}{sys.version_info[1]} {platform.machine()}"
        if build != wanted:
            sys.exit(
                f"{PROG}: this .pyz was built for {build} and cannot run on {wanted};"
                " install from the wheelhouse instead (see docs/operations.md)"
            )
        members = [name for name in zf.namelist() if name.startswith("_native/")]
        digest = hashlib.sha256()
        for info in sorted(zf.infolist(), key=lambda i: i.filename):
            if info.filename.startswith("_native/"):
                digest.update(f"{info.filename}:{info.CRC}:{info.file_size}\n".encode())
        base = os.environ.get("APIGEE_TLS_EXPORTER_PYZ_CACHE") or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), PROG
        )
        target = os.path.join(base, "native-" + digest.hexdigest()[:16])
        if os.path.exists(os.path.join(target, "BUILD")):
            return target
        staging = f"{target}.{os.getpid()}.tmp"
        try:
            zf.extractall(staging, members)
            os.makedirs(base, exist_ok=True)
            os.rename(os.path.join(staging, "_native"), target)
        except FileExistsError:
            pass  # another process extracted it first
        except OSError as exc:
            if not os.path.exists(os.path.join(target, "BUILD")):
                sys.exit(f"{PROG}: cannot extract compiled modules to {base}: {exc.strerror}")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target


def main() -> None:
    archive = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(1, _native_path(archive))
    from apigee_tls_exporter.cli import main as cli_main

    sys.exit(cli_main())


if __name__ == "__main__":
    main()
