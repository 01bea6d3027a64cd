"""Real TLS backends on 127.0.0.1 for the diagnose tests, and the certificates they use.

Two independent peers:

* ``PythonBackend``: a Python ``ssl`` server in a thread. Python has no API for the acceptable
  client CA list a server sends in its CertificateRequest, so ``ca_names`` sets it with OpenSSL's
  own ``SSL_CTX_set_client_CA_list`` through ctypes on the context's ``SSL_CTX`` (the same libssl
  Python's ``_ssl`` is linked to). Without ``ca_names`` the server sends no CA names, as Python
  does by default.
* ``OpenSSLBackend``: ``openssl s_server -Verify 1 -verify_return_error``; its ``-CAfile`` is both
  the CA list sent and, unless ``-verifyCAfile`` is given, the trust used to check the client.

All certificates are made here with trustme; nothing is read from the host.
"""

from __future__ import annotations

import ctypes
import datetime
import select
import shutil
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import trustme

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
VERSIONS = ("1.2", "1.3")


def write_pem(path: Path, *pems: bytes) -> str:
    """Write PEM blobs to ``path`` and return it as a string."""
    path.write_bytes(b"".join(pems))
    return str(path)


@dataclass
class Pki:
    """The certificates of one test: CAs, the server's certificate and client leaves."""

    tmp: Path
    accepted_ca: trustme.CA = field(default_factory=lambda: trustme.CA(organization_name="Good"))
    other_ca: trustme.CA = field(default_factory=lambda: trustme.CA(organization_name="Other"))
    server_ca: trustme.CA = field(default_factory=lambda: trustme.CA(organization_name="Srv"))

    def __post_init__(self) -> None:
        self.intermediate = self.accepted_ca.create_child_ca()
        self.server = self.server_ca.issue_cert("localhost", "127.0.0.1")

    def ca_file(self, *cas: trustme.CA, name: str) -> str:
        """A PEM bundle of the given CAs."""
        return write_pem(self.tmp / name, *(ca.cert_pem.bytes() for ca in cas))

    def client(
        self,
        issuer: trustme.CA,
        name: str,
        *,
        days: tuple[float, float] = (-1, 30),
        chain: Optional[int] = None,
        with_root: Optional[trustme.CA] = None,
    ) -> tuple[str, str]:
        """Issue a client certificate; return ``(cert_file, key_file)``.

        ``days`` is the validity relative to now; ``chain`` cuts the PEM chain to that many
        certificates (1: the leaf only); ``with_root`` appends a root at the end.
        """
        now = datetime.datetime.now(datetime.timezone.utc)
        leaf = issuer.issue_cert(
            common_name=f"{name}.client.test",
            not_before=now + datetime.timedelta(days=days[0]),
            not_after=now + datetime.timedelta(days=days[1]),
        )
        pems = [blob.bytes() for blob in leaf.cert_chain_pems]
        if chain is not None:
            pems = pems[:chain]
        if with_root is not None:
            pems.append(with_root.cert_pem.bytes())
        cert = write_pem(self.tmp / f"{name}.crt", *pems)
        key = write_pem(self.tmp / f"{name}.key", leaf.private_key_pem.bytes())
        return cert, key


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _libssl() -> ctypes.CDLL:
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split()[-1]
            if "/libssl.so" in path:
                return ctypes.CDLL(path)
    raise RuntimeError("libssl is not loaded")


def set_client_ca_names(context: ssl.SSLContext, pem_file: str) -> None:
    """Make ``context`` send the CA names of ``pem_file`` in its CertificateRequest."""
    lib = _libssl()
    lib.SSL_load_client_CA_file.restype = ctypes.c_void_p
    lib.SSL_load_client_CA_file.argtypes = [ctypes.c_char_p]
    lib.SSL_CTX_set_client_CA_list.restype = None
    lib.SSL_CTX_set_client_CA_list.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    # PySSLContext starts with PyObject_HEAD then ``SSL_CTX *ctx``.
    ctx_ptr = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
    names = lib.SSL_load_client_CA_file(pem_file.encode())
    if not ctx_ptr or not names:
        raise RuntimeError("could not set the client CA list")
    lib.SSL_CTX_set_client_CA_list(ctx_ptr, names)


class PythonBackend:
    """A Python ``ssl`` TLS server on 127.0.0.1 that answers ``ok`` after a good handshake."""

    def __init__(
        self,
        pki: Pki,
        version: str,
        *,
        trust: Optional[str] = None,
        ca_names: Optional[str] = None,
        require: bool = True,
    ) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        pki.server.configure_cert(ctx)
        tls = ssl.TLSVersion.TLSv1_3 if version == "1.3" else ssl.TLSVersion.TLSv1_2
        ctx.minimum_version = ctx.maximum_version = tls
        if require:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(trust)
            if ca_names:
                set_client_ca_names(ctx, ca_names)
        self.context = ctx
        self.errors: list[str] = []
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(8)
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def target(self) -> str:
        """``127.0.0.1:PORT``."""
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> PythonBackend:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self._listener.accept()
            except (socket.timeout, OSError):
                continue
            raw.settimeout(5)
            try:
                with self.context.wrap_socket(raw, server_side=True) as tls:
                    tls.sendall(b"ok\n")
            except (ssl.SSLError, OSError) as exc:
                self.errors.append(str(exc))
            finally:
                raw.close()


class OpenSSLBackend:
    """``openssl s_server`` on 127.0.0.1 requiring a client certificate (unless ``require=False``).

    ``ca_file`` is s_server's ``-CAfile``: the acceptable CA names it sends and, without
    ``verify_file``, the CAs it trusts. ``verify_file`` (``-verifyCAfile``) separates the trust.
    """

    def __init__(
        self,
        pki: Pki,
        version: str,
        *,
        ca_file: Optional[str] = None,
        verify_file: Optional[str] = None,
        require: bool = True,
    ) -> None:
        self.port = 0  # s_server picks it and prints "ACCEPT 127.0.0.1:PORT"
        cert = write_pem(pki.tmp / "s_server.crt", *(b.bytes() for b in pki.server.cert_chain_pems))
        key = write_pem(pki.tmp / "s_server.key", pki.server.private_key_pem.bytes())
        argv = [OPENSSL, "s_server", "-accept", "127.0.0.1:0", "-cert", cert, "-key", key]
        argv += ["-ign_eof", "-tls1_3" if version == "1.3" else "-tls1_2"]
        if require:
            argv += ["-Verify", "1", "-verify_return_error"]
        if ca_file:
            argv += ["-CAfile", ca_file]
        if verify_file:
            argv += ["-verifyCAfile", verify_file]
        self._argv = argv
        self._proc: Optional[subprocess.Popen[bytes]] = None
        self._drain: Optional[threading.Thread] = None

    @property
    def target(self) -> str:
        """``127.0.0.1:PORT``."""
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> OpenSSLBackend:
        self._proc = subprocess.Popen(
            self._argv,
            bufsize=0,  # unbuffered: select() then readline() must not hide lines in a buffer
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert self._proc.stdout is not None
        deadline = time.monotonic() + 10
        while not self.port:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([self._proc.stdout], [], [], max(remaining, 0))
            line = self._proc.stdout.readline() if ready else b""
            if not line:
                self.__exit__()
                raise RuntimeError("openssl s_server did not start")
            if line.startswith(b"ACCEPT"):
                self.port = int(line.rsplit(b":", 1)[1])
        # Keep reading its per-connection output so that a full pipe never blocks it.
        self._drain = threading.Thread(target=self._proc.stdout.read, daemon=True)
        self._drain.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
            if self._drain is not None:
                self._drain.join(5)  # s_server is gone: its stdout is at EOF
            for pipe in (self._proc.stdin, self._proc.stdout):
                if pipe:
                    pipe.close()


class SilentBackend:
    """Accepts TCP and never answers: a ClientHello dropped on the floor."""

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(8)
        self.port: int = self._listener.getsockname()[1]

    @property
    def target(self) -> str:
        """``127.0.0.1:PORT``."""
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> SilentBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self._listener.close()
