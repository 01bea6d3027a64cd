"""Real TLS backends on 127.0.0.1 for the diagnose tests, and the certificates they use.

The backends operators run, each started by the tests as the current user with its own config,
pid file, error log and temp paths in a tmp dir (nothing under /etc, no system service):

* ``Nginx``: Debian's ``nginx`` with one ``server`` block per ``NginxSite`` (``ssl_verify_client``
  on / optional_no_ca with a 403, ``ssl_verify_depth``, ``ssl_reject_handshake`` for SNI, the
  protocols). nginx completes the handshake without a client certificate and answers HTTP 400.
* ``Apache``: Debian's ``apache2`` (mod_ssl, ``SSLVerifyClient require``), one VirtualHost per
  ``ApacheSite``.
* ``Haproxy``: Debian's ``haproxy`` (``verify required``), one frontend per ``HaproxySite``.
* ``OpenSSLBackend``: ``openssl s_server -www -Verify 1 -verify_return_error``; its ``-CAfile`` is
  both the CA list sent and, unless ``-verifyCAfile`` is given, the trust used to check the client.
* ``JsseServer`` (``tests/helpers/jsse.py``): a Java backend like Tomcat (``needClientAuth``, which
  answers an unacceptable or missing certificate with ``bad_certificate``).
* ``PythonBackend``: a Python ``ssl`` server in a thread. Python has no API for the acceptable
  client CA list a server sends in its CertificateRequest, so ``ca_names`` sets it with OpenSSL's
  own ``SSL_CTX_set_client_CA_list`` through ctypes on the context's ``SSL_CTX``.

One ``Nginx``/``Apache``/``Haproxy`` process serves every site of a test module (a port each), so
a module starts each server once. All certificates are made here (trustme CAs, leaves built with
``cryptography`` so that dates and key usages can be chosen); nothing is read from the host.
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
from typing import ClassVar, Optional, Union

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from helpers import jsse
from helpers.jsse import JsseServer, RawServer
from helpers.support import free_port, stop_process, wait_for

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
APACHE = shutil.which("apache2") or "/usr/sbin/apache2"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
APACHE_MODULES = Path("/usr/lib/apache2/modules")
VERSIONS = ("1.2", "1.3")


def write_pem(path: Path, *pems: bytes) -> str:
    """Write PEM blobs to ``path`` and return it as a string."""
    path.write_bytes(b"".join(pems))
    return str(path)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _ca_cert(ca: trustme.CA) -> x509.Certificate:
    return x509.load_pem_x509_certificate(ca.cert_pem.bytes())


def _ca_key(ca: trustme.CA) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def _intermediates(ca: trustme.CA) -> list[bytes]:
    """``ca`` and its parents up to, not including, the root (trustme's chain convention)."""
    out, node = [], ca
    while node.parent_cert is not None:
        out.append(node.cert_pem.bytes())
        node = node.parent_cert
    return out


def issue_leaf(
    issuer: trustme.CA,
    common_name: str,
    *,
    days: tuple[float, float] = (-1, 30),
    usages: Optional[tuple[x509.ObjectIdentifier, ...]] = (ExtendedKeyUsageOID.CLIENT_AUTH,),
    dns: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
    key_type: str = "EC",
) -> tuple[bytes, bytes]:
    """A leaf certificate from ``issuer``: ``(cert PEM, key PEM)``.

    ``days`` is the validity relative to now; ``usages`` the extended key usages (None: no
    extension); ``dns``/``ips`` the subject alternative names; ``key_type`` "EC" (P-256) or
    "RSA" (2048 bits).
    """
    import ipaddress

    now = datetime.datetime.now(datetime.timezone.utc)
    key: Union[ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey] = (
        rsa.generate_private_key(65537, 2048)
        if key_type == "RSA"
        else ec.generate_private_key(ec.SECP256R1())
    )
    ca_cert = _ca_cert(issuer)
    builder = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Tests"),
                    x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + datetime.timedelta(days=days[0]))
        .not_valid_after(now + datetime.timedelta(days=days[1]))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(_ca_key(issuer).public_key()),
            critical=False,
        )
    )
    if usages is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ips]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(_ca_key(issuer), hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return _pem(cert), key_pem


@dataclass
class Pki:
    """The certificates of one test module: CAs, the servers' certificates and client leaves."""

    tmp: Path
    accepted_ca: trustme.CA = field(default_factory=lambda: trustme.CA(organization_name="Good"))
    other_ca: trustme.CA = field(default_factory=lambda: trustme.CA(organization_name="Other"))
    server_ca: trustme.CA = field(default_factory=lambda: trustme.CA(organization_name="Srv"))

    def __post_init__(self) -> None:
        self.intermediate = self.accepted_ca.create_child_ca()
        self.server = self.server_ca.issue_cert("localhost", "127.0.0.1")
        self.server_cert, self.server_key = self.server_files("server", ips=("127.0.0.1",))

    def ca_file(self, *cas: trustme.CA, name: str) -> str:
        """A PEM bundle of the given CAs."""
        return write_pem(self.tmp / name, *(ca.cert_pem.bytes() for ca in cas))

    def server_files(
        self,
        name: str,
        *,
        dns: tuple[str, ...] = ("localhost",),
        ips: tuple[str, ...] = (),
        days: tuple[float, float] = (-1, 30),
    ) -> tuple[str, str]:
        """A server certificate from ``server_ca``: ``(cert_file, key_file)``."""
        cert, key = issue_leaf(
            self.server_ca,
            name,
            days=days,
            usages=(ExtendedKeyUsageOID.SERVER_AUTH,),
            dns=dns,
            ips=ips,
        )
        return write_pem(self.tmp / f"{name}.crt", cert), write_pem(self.tmp / f"{name}.key", key)

    def client(
        self,
        issuer: trustme.CA,
        name: str,
        *,
        days: tuple[float, float] = (-1, 30),
        chain: Optional[int] = None,
        with_root: Optional[trustme.CA] = None,
        usages: Optional[tuple[x509.ObjectIdentifier, ...]] = (ExtendedKeyUsageOID.CLIENT_AUTH,),
        key_type: str = "EC",
    ) -> tuple[str, str]:
        """Issue a client certificate; return ``(cert_file, key_file)``.

        The PEM chain is the leaf then the issuer's intermediates (not the root), cut to ``chain``
        certificates when given (1: the leaf only); ``with_root`` appends a root at the end.
        """
        cert, key = issue_leaf(
            issuer, f"{name}.client.test", days=days, usages=usages, key_type=key_type
        )
        pems = [cert, *_intermediates(issuer)]
        if chain is not None:
            pems = pems[:chain]
        if with_root is not None:
            pems.append(with_root.cert_pem.bytes())
        return (
            write_pem(self.tmp / f"{name}.crt", *pems),
            write_pem(self.tmp / f"{name}.key", key),
        )


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


# -- servers run as processes with their own config ----------------------------------------------


class _ServerProcess:
    """A server process with a config written in ``directory``, listening on ``ports``."""

    name = "server"

    def __init__(self, directory: Path, ports: list[int]) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ports = ports
        self.error_log = self.dir / "error.log"
        self._proc: Optional[subprocess.Popen[bytes]] = None

    def argv(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        """True once the server finished starting (beyond listening: its pid file is written)."""
        return True

    def log_text(self) -> str:
        """The server's error log so far ('' when none)."""
        try:
            return self.error_log.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> _ServerProcess:
        out = (self.dir / "stdout.log").open("wb")
        self._proc = subprocess.Popen(
            self.argv(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
        out.close()

        def up() -> bool:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise AssertionError(f"{self.name} exited: {self.startup_output()}")
            return self.ready() and all(_accepts(p) for p in self.ports)

        wait_for(up, timeout=30, what=f"{self.name} to listen", detail=self.startup_output)
        return self

    def startup_output(self) -> str:
        try:
            out = (self.dir / "stdout.log").read_text(errors="replace")
        except OSError:
            out = ""
        return f"\n{out}\n{self.log_text()[-2000:]}"

    def __exit__(self, *exc: object) -> None:
        if self._proc is None:
            return
        stop_process(self._proc)


@dataclass
class NginxSite:
    """One nginx ``server`` block. ``client_ca``: ssl_client_certificate (names sent and trusted);
    ``trusted``: ssl_trusted_certificate (trusted, names not sent); ``verify``: ssl_verify_client;
    ``forbid_unverified``: answer 403 unless the client certificate verified; ``sni_name``: the
    server_name, with a default server on the same port that rejects every other handshake."""

    cert: str
    key: str
    client_ca: Optional[str] = None
    trusted: Optional[str] = None
    verify: str = "on"
    depth: Optional[int] = None
    protocols: str = "TLSv1.2 TLSv1.3"
    forbid_unverified: bool = False
    sni_name: Optional[str] = None
    port: int = field(default_factory=free_port)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


class Nginx(_ServerProcess):
    """Debian's nginx, master process in the foreground, every path in ``directory``."""

    name = "nginx"

    def __init__(self, directory: Path, sites: list[NginxSite]) -> None:
        super().__init__(directory, [s.port for s in sites])
        self.sites = sites
        conf = [
            f"pid {self.dir / 'nginx.pid'};",
            f"error_log {self.error_log} info;",
            "worker_processes 1;",
            "events { worker_connections 64; }",
            "http {",
            "  access_log off;",
            *(
                f"  {kind}_temp_path {self.dir / kind};"
                for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
            ),
        ]
        for site in sites:
            conf.extend(self._server(site))
        conf.append("}")
        self.conf = self.dir / "nginx.conf"
        self.conf.write_text("\n".join(conf) + "\n")

    @staticmethod
    def _server(site: NginxSite) -> list[str]:
        lines = []
        listen = f"  listen 127.0.0.1:{site.port} ssl;"
        if site.sni_name:
            lines += [
                "  server {",
                listen.replace(" ssl;", " ssl default_server;"),
                "    ssl_reject_handshake on;",
                f"    ssl_protocols {site.protocols};",
                "  }",
            ]
        lines += ["  server {", listen]
        if site.sni_name:
            lines.append(f"    server_name {site.sni_name};")
        lines += [
            f"    ssl_certificate {site.cert};",
            f"    ssl_certificate_key {site.key};",
            f"    ssl_protocols {site.protocols};",
            f"    ssl_verify_client {site.verify};",
        ]
        if site.client_ca:
            lines.append(f"    ssl_client_certificate {site.client_ca};")
        if site.trusted:
            lines.append(f"    ssl_trusted_certificate {site.trusted};")
        if site.depth is not None:
            lines.append(f"    ssl_verify_depth {site.depth};")
        lines.append("    location / {")
        if site.forbid_unverified:
            lines.append("      if ($ssl_client_verify != SUCCESS) { return 403; }")
        lines += ['      return 200 "ok\\n";', "    }", "  }"]
        return lines

    def ready(self) -> bool:
        return (self.dir / "nginx.pid").exists()

    def argv(self) -> list[str]:
        return [NGINX, "-p", str(self.dir), "-e", str(self.error_log), "-c", str(self.conf),
                "-g", "daemon off;"]  # fmt: skip


@dataclass
class ApacheSite:
    """One Apache VirtualHost. ``ca_file``: SSLCACertificateFile (trusted, and the names sent
    unless ``ca_names`` gives SSLCADNRequestFile); ``verify``: SSLVerifyClient."""

    cert: str
    key: str
    ca_file: Optional[str] = None
    ca_names: Optional[str] = None
    verify: str = "require"
    depth: Optional[int] = None
    protocols: str = "-all +TLSv1.2 +TLSv1.3"
    allowed_cn: Optional[str] = None  # 403 for any other client certificate CN
    port: int = field(default_factory=free_port)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


class Apache(_ServerProcess):
    """Debian's apache2 (mpm_event, mod_ssl) in the foreground, every path in ``directory``."""

    name = "apache2"

    def __init__(self, directory: Path, sites: list[ApacheSite]) -> None:
        super().__init__(directory, [s.port for s in sites])
        self.sites = sites
        (self.dir / "htdocs").mkdir(exist_ok=True)
        (self.dir / "htdocs" / "index.html").write_text("ok\n")
        modules = ["mpm_event", "authz_core", "socache_shmcb", "ssl", "dir"]
        conf = [
            f'ServerRoot "{self.dir}"',
            f'DefaultRuntimeDir "{self.dir}"',
            f'PidFile "{self.dir / "apache2.pid"}"',
            f'ErrorLog "{self.error_log}"',
            "LogLevel info ssl:info",
            f"Mutex file:{self.dir} default",
            "ServerName localhost",
            *(f"LoadModule {m}_module {APACHE_MODULES / f'mod_{m}.so'}" for m in modules),
            "StartServers 1",
            "ServerLimit 1",
            "ThreadsPerChild 8",
            "MaxRequestWorkers 8",
            f'DocumentRoot "{self.dir / "htdocs"}"',
            f'SSLSessionCache "shmcb:{self.dir / "ssl_scache"}(512000)"',
            "SSLRandomSeed startup builtin",
        ]
        for site in sites:
            conf += [
                f"Listen 127.0.0.1:{site.port}",
                f"<VirtualHost 127.0.0.1:{site.port}>",
                "  SSLEngine on",
                f"  SSLCertificateFile {site.cert}",
                f"  SSLCertificateKeyFile {site.key}",
                f"  SSLProtocol {site.protocols}",
                f"  SSLVerifyClient {site.verify}",
            ]
            if site.ca_file:
                conf.append(f"  SSLCACertificateFile {site.ca_file}")
            if site.ca_names:
                conf.append(f"  SSLCADNRequestFile {site.ca_names}")
            if site.depth is not None:
                conf.append(f"  SSLVerifyDepth {site.depth}")
            if site.allowed_cn:
                conf += [
                    "  <Location />",
                    f"    Require expr %{{SSL_CLIENT_S_DN_CN}} == '{site.allowed_cn}'",
                    "  </Location>",
                ]
            conf.append("</VirtualHost>")
        self.conf = self.dir / "apache2.conf"
        self.conf.write_text("\n".join(conf) + "\n")

    def argv(self) -> list[str]:
        return [APACHE, "-f", str(self.conf), "-DFOREGROUND"]

    def ready(self) -> bool:
        return (self.dir / "apache2.pid").exists()


@dataclass
class HaproxySite:
    """One HAProxy frontend: ``ca_file`` (names sent and trusted), ``verify``, protocols."""

    pem: str  # certificate then key
    ca_file: Optional[str] = None
    verify: str = "required"
    min_version: str = "TLSv1.2"
    max_version: str = "TLSv1.3"
    allowed_cn: Optional[str] = None  # 403 for any other client certificate CN
    strict_sni: bool = False  # refuse a handshake whose SNI names no certificate (or none)
    port: int = field(default_factory=free_port)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


class Haproxy(_ServerProcess):
    """Debian's haproxy in the foreground (``-db``) answering ``200 ok`` on every frontend."""

    name = "haproxy"

    def __init__(self, directory: Path, sites: list[HaproxySite]) -> None:
        super().__init__(directory, [s.port for s in sites])
        self.sites = sites
        conf = [
            "global",
            f"  pidfile {self.dir / 'haproxy.pid'}",
            "defaults",
            "  mode http",
            "  timeout connect 5s",
            "  timeout client 10s",
            "  timeout server 10s",
        ]
        for i, site in enumerate(sites):
            bind = (
                f"  bind 127.0.0.1:{site.port} ssl crt {site.pem} ssl-min-ver {site.min_version}"
                f" ssl-max-ver {site.max_version} verify {site.verify}"
            )
            if site.ca_file:
                bind += f" ca-file {site.ca_file}"
            if site.strict_sni:
                bind += " strict-sni"
            conf += [f"frontend site{i}", bind]
            if site.allowed_cn:
                conf.append(
                    f"  http-request deny if !{{ ssl_c_s_dn(cn) -m str {site.allowed_cn} }}"
                )
            conf.append("  http-request return status 200 content-type text/plain string ok")
        self.conf = self.dir / "haproxy.cfg"
        self.conf.write_text("\n".join(conf) + "\n")

    def argv(self) -> list[str]:
        return [HAPROXY, "-db", "-f", str(self.conf)]


# -- openssl s_server and Python ssl --------------------------------------------------------------


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


class PythonBackend(RawServer):
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
        super().__init__(self._answer)

    def _answer(self, raw: socket.socket) -> None:
        try:
            with self.context.wrap_socket(raw, server_side=True) as tls:
                tls.sendall(b"ok\n")
        except (ssl.SSLError, OSError) as exc:
            self.errors.append(str(exc))


class OpenSSLBackend:
    """``openssl s_server -www`` on 127.0.0.1 requiring a client certificate (unless
    ``require=False``).

    ``ca_file`` is s_server's ``-CAfile``: the acceptable CA names it sends and, without
    ``verify_file``, the CAs it trusts. ``verify_file`` (``-verifyCAfile``) separates the trust.
    ``no_ca_names`` sends no names at all (``-no-CAfile`` with the trust in ``-verifyCAfile``).
    ``version`` is "1.2", "1.3" or "any"; ``extra`` is appended to the command line.
    """

    def __init__(
        self,
        pki: Pki,
        version: str,
        *,
        ca_file: Optional[str] = None,
        verify_file: Optional[str] = None,
        require: bool = True,
        cert: Optional[tuple[str, str]] = None,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.port = 0  # s_server picks it and prints "ACCEPT 127.0.0.1:PORT"
        cert_file, key_file = cert or (pki.server_cert, pki.server_key)
        argv = [OPENSSL, "s_server", "-accept", "127.0.0.1:0", "-cert", cert_file]
        argv += ["-key", key_file, "-www"]
        if version != "any":
            argv.append("-tls1_3" if version == "1.3" else "-tls1_2")
        if require:
            argv += ["-Verify", "1", "-verify_return_error"]
        if ca_file:
            argv += ["-CAfile", ca_file]
        if verify_file:
            argv += ["-verifyCAfile", verify_file]
        argv += list(extra)
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
            stop_process(self._proc, 5)
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


class PlainHttpBackend(RawServer):
    """A plain-text HTTP server on a port the MP expects TLS on: answers 400 to anything."""

    def __init__(self) -> None:
        super().__init__(self._answer)

    @staticmethod
    def _answer(conn: socket.socket) -> None:
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")


Backend = Union[PythonBackend, OpenSSLBackend, SilentBackend, PlainHttpBackend]


def haproxy_pem(tmp: Path, cert: str, key: str, name: str) -> str:
    """HAProxy's ``crt``: the certificate and its key in one file."""
    return write_pem(tmp / f"{name}.pem", Path(cert).read_bytes(), Path(key).read_bytes())


# -- the backends of issue 20: what they say after the handshake ----------------------------------


def _read_head(tls: socket.socket) -> bytes:
    """An HTTP request's head (or what came before the peer stopped sending)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = tls.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def _http(status: str, body: str = "") -> bytes:
    text = body or status
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(text)}\r\n"
        f"Connection: close\r\n\r\n{text}"
    ).encode()


class PythonHttpsBackend(RawServer):
    """A Python ``ssl`` HTTPS server on 127.0.0.1 whose answer after the handshake is the test:

    * ``post_handshake``: TLS 1.3, no CertificateRequest in the handshake; on a request it asks
      for the certificate with post-handshake authentication (``verify_client_post_handshake``,
      which fails when the client did not offer it: Java never does) and answers 403.
    * ``silent``: TLS 1.3, requires a certificate (sends no CA names, trusts ``trust``), then
      reads the request and closes without an alert or answer unless the certificate's CN is
      ``allowed_cn`` (200).
    * ``misdirected``: no client authentication; 421 Misdirected Request to a connection
      without an SNI name, 200 with one.
    """

    def __init__(
        self, pki: Pki, mode: str, *, trust: Optional[str] = None, allowed_cn: str = ""
    ) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        pki.server.configure_cert(ctx)
        if mode in ("post_handshake", "silent"):
            ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        if mode == "post_handshake":
            ctx.post_handshake_auth = True
            ctx.verify_mode = ssl.CERT_OPTIONAL
            ctx.load_verify_locations(trust)
        if mode == "silent":
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(trust)
        self.names: dict[int, str] = {}
        if mode == "misdirected":
            ctx.sni_callback = self._sni
        self.context, self.mode, self.allowed_cn = ctx, mode, allowed_cn
        self.errors: list[str] = []
        super().__init__(self._answer)

    def _sni(self, conn: object, name: Optional[str], ctx: ssl.SSLContext) -> None:
        if name:
            self.names[id(conn)] = name

    def _answer(self, raw: socket.socket) -> None:
        try:
            with self.context.wrap_socket(raw, server_side=True) as tls:
                _read_head(tls)
                if self.mode == "post_handshake":
                    try:
                        tls.verify_client_post_handshake()
                    except ssl.SSLError as exc:
                        self.errors.append(str(exc))
                    tls.sendall(_http("403 Forbidden", "client certificate required"))
                elif self.mode == "silent":
                    cert = tls.getpeercert() or {}
                    cns = [
                        v for rdn in cert.get("subject", ()) for k, v in rdn if k == "commonName"
                    ]
                    if self.allowed_cn in cns:
                        tls.sendall(_http("200 OK", "ok"))
                    # else: close the socket, no close_notify, no answer
                elif self.names.pop(id(tls), None):
                    tls.sendall(_http("200 OK", "ok"))
                else:
                    tls.sendall(_http("421 Misdirected Request", "no server name (SNI)"))
        except (ssl.SSLError, OSError) as exc:
            self.errors.append(str(exc))


class HaproxyTcp(_ServerProcess):
    """Debian's haproxy in ``mode tcp``: ``sni_port`` passes a ClientHello with an SNI name to
    ``upstream`` and closes one without; ``dead_port`` passes everything to ``dead`` (a port
    nothing listens on)."""

    name = "haproxy-tcp"

    def __init__(self, directory: Path, upstream: int, dead: int) -> None:
        self.sni_port, self.dead_port = free_port(), free_port()
        super().__init__(directory, [self.sni_port, self.dead_port])
        conf = [
            "global",
            f"  pidfile {self.dir / 'haproxy.pid'}",
            "defaults",
            "  mode tcp",
            "  timeout connect 1s",
            "  timeout client 10s",
            "  timeout server 10s",
            "frontend by_sni",
            f"  bind 127.0.0.1:{self.sni_port}",
            "  tcp-request inspect-delay 2s",
            "  tcp-request content accept if { req.ssl_hello_type 1 }",
            "  use_backend upstream if { req.ssl_sni -m found }",
            "frontend to_dead",
            f"  bind 127.0.0.1:{self.dead_port}",
            "  default_backend dead",
            "backend upstream",
            f"  server up 127.0.0.1:{upstream}",
            "backend dead",
            f"  server down 127.0.0.1:{dead}",
        ]
        self.conf = self.dir / "haproxy.cfg"
        self.conf.write_text("\n".join(conf) + "\n")

    def argv(self) -> list[str]:
        return [HAPROXY, "-db", "-f", str(self.conf)]


LIGHTTPD = shutil.which("lighttpd") or "/usr/sbin/lighttpd"
STUNNEL = shutil.which("stunnel4") or shutil.which("stunnel") or "/usr/bin/stunnel4"


class Lighttpd(_ServerProcess):
    """lighttpd (mod_openssl) requiring a client certificate from ``ca_file`` and accepting
    only ECDSA signatures from the client (``ClientSignatureAlgorithms``): the backend that
    asks for EC keys."""

    name = "lighttpd"

    def __init__(self, directory: Path, cert: str, key: str, ca_file: str, version: str) -> None:
        self.port = free_port()
        super().__init__(directory, [self.port])
        root = self.dir / "www"
        root.mkdir(exist_ok=True)
        (root / "index.html").write_text("ok\n")
        protocol = "TLSv1.3" if version == "1.3" else "TLSv1.2"
        conf = [
            f'server.document-root = "{root}"',
            'server.bind = "127.0.0.1"',
            f"server.port = {self.port}",
            f'server.errorlog = "{self.error_log}"',
            f'server.pid-file = "{self.dir / "lighttpd.pid"}"',
            'server.modules = ("mod_openssl")',
            'index-file.names = ("index.html")',
            'ssl.engine = "enable"',
            f'ssl.pemfile = "{cert}"',
            f'ssl.privkey = "{key}"',
            f'ssl.ca-file = "{ca_file}"',
            'ssl.verifyclient.activate = "enable"',
            'ssl.verifyclient.enforce = "enable"',
            "ssl.openssl.ssl-conf-cmd = ("
            f'"MinProtocol" => "{protocol}", "MaxProtocol" => "{protocol}", '
            '"ClientSignatureAlgorithms" => "ECDSA+SHA256:ECDSA+SHA384:ECDSA+SHA512")',
        ]
        self.conf = self.dir / "lighttpd.conf"
        self.conf.write_text("\n".join(conf) + "\n")

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        return [LIGHTTPD, "-D", "-f", str(self.conf)]


class Stunnel(_ServerProcess):
    """stunnel in server mode (``verify = 2``: a client certificate from ``ca_file`` required)
    in front of ``upstream`` (a plain HTTP server)."""

    name = "stunnel"

    def __init__(self, directory: Path, cert: str, key: str, ca_file: str, upstream: int) -> None:
        self.port = free_port()
        super().__init__(directory, [self.port])
        conf = [
            "foreground = yes",
            f"pid = {self.dir / 'stunnel.pid'}",
            f"output = {self.error_log}",
            "[tls]",
            f"accept = 127.0.0.1:{self.port}",
            f"connect = 127.0.0.1:{upstream}",
            f"cert = {cert}",
            f"key = {key}",
            f"CAfile = {ca_file}",
            "verify = 2",
        ]
        self.conf = self.dir / "stunnel.conf"
        self.conf.write_text("\n".join(conf) + "\n")

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        return [STUNNEL, str(self.conf)]


TOMCAT_HOME = Path("/usr/share/tomcat10")
_SERVLET = """
import java.io.IOException;
import jakarta.servlet.http.HttpServlet;
import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletResponse;

/** 403 unless the connection carried a verified client certificate, else "ok". */
public class CertOr403 extends HttpServlet {
    @Override
    protected void doGet(HttpServletRequest req, HttpServletResponse resp) throws IOException {
        if (req.getAttribute("jakarta.servlet.request.X509Certificate") == null) {
            resp.sendError(403, "client certificate required");
            return;
        }
        resp.setContentType("text/plain");
        resp.getWriter().write("ok");
    }
}
"""
_WEB_XML = """<?xml version="1.0" encoding="UTF-8"?>
<web-app xmlns="https://jakarta.ee/xml/ns/jakartaee" version="6.0">
  <servlet><servlet-name>app</servlet-name><servlet-class>CertOr403</servlet-class></servlet>
  <servlet-mapping><servlet-name>app</servlet-name><url-pattern>/*</url-pattern></servlet-mapping>
</web-app>
"""


class Tomcat(_ServerProcess):
    """Apache Tomcat 10 (Debian's ``tomcat10``) run with ``catalina.sh run`` in its own
    CATALINA_BASE: one NIO HTTPS connector per verification mode (``required``: the JSSE
    handshake refuses a missing or unacceptable certificate; ``optional``: the handshake lets
    it in and the application answers 403 without a certificate). The CA names sent are the
    CAs of ``ca_file``."""

    name = "tomcat"

    def __init__(self, directory: Path, cert: str, key: str, ca_file: str) -> None:
        self.by_mode = {"required": free_port(), "optional": free_port()}
        super().__init__(directory, list(self.by_mode.values()))
        for sub in ("conf", "logs", "temp", "work", "webapps/ROOT/WEB-INF/classes"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy("/etc/tomcat10/web.xml", self.dir / "conf" / "web.xml")
        app = self.dir / "webapps" / "ROOT" / "WEB-INF"
        (app / "web.xml").write_text(_WEB_XML)
        source = self.dir / "CertOr403.java"
        source.write_text(_SERVLET)
        javac = shutil.which("javac") or "javac"
        subprocess.run(
            [javac, "--release", "11", "-cp", str(TOMCAT_HOME / "lib" / "servlet-api.jar"),
             "-d", str(app / "classes"), str(source)],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        truststore = self.dir / "conf" / "trust.p12"
        cas = x509.load_pem_x509_certificates(Path(ca_file).read_bytes())
        truststore.write_bytes(
            pkcs12.serialize_java_truststore(
                [pkcs12.PKCS12Certificate(c, None) for c in cas],
                serialization.BestAvailableEncryption(jsse.PASSWORD.encode()),
            )
        )
        connectors = "".join(
            f"""
    <Connector port="{port}" address="127.0.0.1" SSLEnabled="true" scheme="https" secure="true"
               protocol="org.apache.coyote.http11.Http11NioProtocol">
      <SSLHostConfig certificateVerification="{mode}" truststoreFile="{truststore}"
                     truststoreType="PKCS12" truststorePassword="{jsse.PASSWORD}"
                     protocols="TLSv1.2+TLSv1.3">
        <Certificate certificateFile="{cert}" certificateKeyFile="{key}"/>
      </SSLHostConfig>
    </Connector>"""
            for mode, port in self.by_mode.items()
        )
        (self.dir / "conf" / "server.xml").write_text(
            f"""<?xml version="1.0" encoding="UTF-8"?>
<Server port="-1" shutdown="SHUTDOWN">
  <Service name="Catalina">{connectors}
    <Engine name="Catalina" defaultHost="localhost">
      <Host name="localhost" appBase="webapps" unpackWARs="false" autoDeploy="false"/>
    </Engine>
  </Service>
</Server>
"""
        )

    def target(self, mode: str) -> str:
        return f"127.0.0.1:{self.by_mode[mode]}"

    def ready(self) -> bool:
        return "Server startup in" in self.startup_output()

    def argv(self) -> list[str]:
        flags = " ".join(jsse.JVM_FLAGS)
        return [
            "env", f"CATALINA_HOME={TOMCAT_HOME}", f"CATALINA_BASE={self.dir}",
            f"CATALINA_TMPDIR={self.dir / 'temp'}", f"JAVA_OPTS={flags}",
            str(TOMCAT_HOME / "bin" / "catalina.sh"), "run",
        ]  # fmt: skip


NODE = shutil.which("node") or shutil.which("nodejs") or "/usr/bin/node"
_NODE_SERVER = """
const fs = require("fs");
const https = require("https");
const [port, cert, key, ca, reject] = process.argv.slice(2);
https.createServer({
  cert: fs.readFileSync(cert), key: fs.readFileSync(key), ca: fs.readFileSync(ca),
  requestCert: true, rejectUnauthorized: reject === "reject",
}, (req, res) => {
  if (!req.socket.authorized) {
    res.writeHead(401, {"Content-Type": "text/plain"});
    res.end("client certificate: " + req.socket.authorizationError + "\\n");
    return;
  }
  res.writeHead(200, {"Content-Type": "text/plain"});
  res.end("ok\\n");
}).listen(Number(port), "127.0.0.1", () => console.log("listening"));
"""


class NodeHttps(_ServerProcess):
    """A Node.js ``https`` server asking for a client certificate (the CA names of ``ca_file``):
    ``reject`` refuses an unverified one in TLS (``rejectUnauthorized``); otherwise the
    handshake lets anything in and the application answers 401 unless ``socket.authorized``."""

    name = "node"

    def __init__(self, directory: Path, cert: str, key: str, ca_file: str, reject: bool) -> None:
        self.port = free_port()
        super().__init__(directory, [self.port])
        self.script = self.dir / "server.js"
        self.script.write_text(_NODE_SERVER)
        self._args = [str(self.port), cert, key, ca_file, "reject" if reject else "app"]

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        return [NODE, str(self.script), *self._args]


# -- every backend of a test module, each started once --------------------------------------------

SCENARIOS = (
    "require",  # client certificate required, CA names sent = trusted CAs = the accepted root
    "no_names",  # required, no CA names sent, the accepted root trusted
    "optional_403",  # nginx: optional_no_ca, names sent, 403 unless verified
    "no_names_403",  # nginx: optional_no_ca, trust only (no names), 403 unless verified
    "incomplete",  # names the intermediate, trusts the root only
    "depth0",  # verify depth 0: no intermediate allowed
    "sni",  # refuses a handshake without the SNI name backend.test
    "tls13",  # TLS 1.3 only
    "other_host",  # the server certificate names other.example only
    "expired_server",  # the server certificate has expired
    "no_client_auth",  # asks for no client certificate
    "cn_403",  # verifies the certificate, then answers 403 to any CN but allowed.client.test
)
SNI_NAME = "backend.test"
ALLOWED_CN = "allowed.client.test"


class Lab:
    """Every real backend for the diagnose tests, one process per server kind, a port each.

    ``target(kind, scenario)`` is ``127.0.0.1:PORT``; ``kinds(scenario)`` the kinds that can play
    it. The servers accept TLS 1.2 and 1.3 (except ``tls13``): the MP's protocols choose.
    """

    KINDS_BY_SCENARIO: ClassVar[dict[str, tuple[str, ...]]] = {
        "require": ("nginx", "apache", "haproxy", "s_server", "jsse"),
        "no_names": ("s_server",),
        "optional_403": ("nginx",),
        "no_names_403": ("nginx",),
        "incomplete": ("apache", "s_server"),
        "depth0": ("nginx", "apache"),
        "sni": ("nginx", "haproxy"),
        "tls13": ("nginx", "apache", "haproxy", "s_server", "jsse"),
        "other_host": ("nginx", "apache", "haproxy", "s_server"),
        "expired_server": ("nginx", "s_server"),
        "no_client_auth": ("nginx", "apache", "haproxy", "s_server", "jsse"),
        "cn_403": ("apache", "haproxy"),
    }

    def __init__(self, tmp: Path, pki: Pki) -> None:
        self.tmp, self.pki = tmp, pki
        tmp.mkdir(parents=True, exist_ok=True)
        acc = pki.ca_file(pki.accepted_ca, name="lab-accepted.pem")
        inter = pki.ca_file(pki.intermediate, name="lab-intermediate.pem")
        self.files = {"accepted": acc, "intermediate": inter}
        srv = (pki.server_cert, pki.server_key)
        other = pki.server_files("lab-other-host", dns=("other.example",))
        expired = pki.server_files(
            "lab-expired", dns=("localhost",), ips=("127.0.0.1",), days=(-60, -1)
        )
        sni = pki.server_files("lab-sni", dns=(SNI_NAME,), ips=("127.0.0.1",))
        self.nginx_sites = {
            "require": NginxSite(*srv, client_ca=acc),
            "optional_403": NginxSite(
                *srv, client_ca=acc, verify="optional_no_ca", forbid_unverified=True
            ),
            "no_names_403": NginxSite(
                *srv, trusted=acc, verify="optional_no_ca", forbid_unverified=True
            ),
            "depth0": NginxSite(*srv, client_ca=acc, depth=0),
            "sni": NginxSite(*sni, client_ca=acc, sni_name=SNI_NAME),
            "tls13": NginxSite(*srv, client_ca=acc, protocols="TLSv1.3"),
            "other_host": NginxSite(*other, client_ca=acc),
            "expired_server": NginxSite(*expired, client_ca=acc),
            "no_client_auth": NginxSite(*srv, verify="off"),
        }
        self.apache_sites = {
            "require": ApacheSite(*srv, ca_file=acc),
            "incomplete": ApacheSite(*srv, ca_file=acc, ca_names=inter, depth=2),
            "depth0": ApacheSite(*srv, ca_file=acc, depth=0),
            "tls13": ApacheSite(*srv, ca_file=acc, protocols="-all +TLSv1.3"),
            "other_host": ApacheSite(*other, ca_file=acc),
            "no_client_auth": ApacheSite(*srv, verify="none"),
            "cn_403": ApacheSite(*srv, ca_file=acc, allowed_cn=ALLOWED_CN),
        }
        pem = haproxy_pem(tmp, *srv, "lab-haproxy")
        self.haproxy_sites = {
            "require": HaproxySite(pem, ca_file=acc),
            "tls13": HaproxySite(pem, ca_file=acc, min_version="TLSv1.3"),
            "other_host": HaproxySite(haproxy_pem(tmp, *other, "lab-hap-other"), ca_file=acc),
            "no_client_auth": HaproxySite(pem, verify="none"),
            "cn_403": HaproxySite(pem, ca_file=acc, allowed_cn=ALLOWED_CN),
            "sni": HaproxySite(haproxy_pem(tmp, *sni, "lab-hap-sni"), ca_file=acc, strict_sni=True),
        }
        self.s_server_args: dict[str, tuple[str, dict[str, object]]] = {
            "require": ("any", {"ca_file": acc}),
            "no_names": ("any", {"verify_file": acc}),
            "incomplete": ("any", {"ca_file": inter, "verify_file": acc}),
            "tls13": ("1.3", {"ca_file": acc}),
            "other_host": ("any", {"ca_file": acc, "cert": other}),
            "expired_server": ("any", {"ca_file": acc, "cert": expired}),
            "no_client_auth": ("any", {"require": False}),
        }
        # The JSSE server (a Tomcat-like Java backend): need, none; TLS 1.3 only for tls13.
        self.jsse_args: dict[str, dict[str, object]] = {
            "require": {"truststore": acc, "client_auth": "need"},
            "tls13": {"truststore": acc, "client_auth": "need", "protocols": ["TLSv1.3"]},
            "no_client_auth": {"client_auth": "none"},
        }
        self.jsse_servers: dict[str, JsseServer] = {}
        self.nginx = Nginx(tmp / "nginx", list(self.nginx_sites.values()))
        self.apache = Apache(tmp / "apache2", list(self.apache_sites.values()))
        self.haproxy = Haproxy(tmp / "haproxy", list(self.haproxy_sites.values()))
        self.s_servers: dict[str, OpenSSLBackend] = {}
        self._started: list[Union[_ServerProcess, OpenSSLBackend, JsseServer]] = []

    def __enter__(self) -> Lab:
        try:
            for server in (self.nginx, self.apache, self.haproxy):
                self._started.append(server.__enter__())
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for server in reversed(self._started):
            server.__exit__()
        self._started.clear()

    def kinds(self, scenario: str) -> list[str]:
        """The server kinds that play ``scenario``."""
        table = {"nginx": self.nginx_sites, "apache": self.apache_sites,
                 "haproxy": self.haproxy_sites, "s_server": self.s_server_args,
                 "jsse": self.jsse_args}  # fmt: skip
        found = [kind for kind, sites in table.items() if scenario in sites]
        assert tuple(found) == self.KINDS_BY_SCENARIO[scenario], scenario
        return found

    def target(self, kind: str, scenario: str) -> str:
        """Where ``kind`` plays ``scenario`` (s_server is started on first use)."""
        if kind == "nginx":
            return self.nginx_sites[scenario].target
        if kind == "apache":
            return self.apache_sites[scenario].target
        if kind == "haproxy":
            return self.haproxy_sites[scenario].target
        if kind == "jsse":
            return self._jsse(scenario)
        if scenario not in self.s_servers:
            version, options = self.s_server_args[scenario]
            backend = OpenSSLBackend(self.pki, version, **options)  # type: ignore[arg-type]
            self.s_servers[scenario] = backend.__enter__()
            self._started.append(backend)
        return self.s_servers[scenario].target

    def _jsse(self, scenario: str) -> str:
        jsse.require_java()
        if scenario not in self.jsse_servers:
            keystore = jsse.write_pkcs12(
                self.tmp / "jsse-server.p12",
                Path(self.pki.server_key).read_bytes(),
                [Path(self.pki.server_cert).read_bytes()],
            )
            server = JsseServer(keystore, **self.jsse_args[scenario])  # type: ignore[arg-type]
            self.jsse_servers[scenario] = server.__enter__()
            self._started.append(server)
        return self.jsse_servers[scenario].target

    def log(self, kind: str) -> str:
        """A server's error log, for failure messages."""
        server = {"nginx": self.nginx, "apache": self.apache, "haproxy": self.haproxy}.get(kind)
        return server.log_text()[-3000:] if server is not None else ""
