"""The web config: TLS and basic auth for /metrics, in the Prometheus exporter-toolkit format.

The same file other exporters take with ``--web.config.file`` works here unchanged::

    tls_server_config:
      cert_file: server.crt            # relative paths are relative to this file
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert
      client_ca_file: prometheus-ca.crt
      min_version: TLS12
    basic_auth_users:
      prometheus: $2b$12$...            # bcrypt hash, e.g. from `htpasswd -nBC 12 ""`
    apigee_tls_exporter:               # our own extension, not in the exporter toolkit
      health_without_auth: true        # /-/healthy and /-/ready answer without basic auth

Also as in the Go toolkit: ``client_allowed_sans`` (the verified client certificate must carry
one of these DNS names, IP addresses, e-mail addresses or URIs), ``cipher_suites`` (Go's names,
mapped to OpenSSL's; TLS 1.2 only, as in Go) and ``http_server_config.headers`` (the same five
headers, the same allowed values). Differences, each refused with a clear message rather than
silently ignored: ``RequestClientCert`` and ``RequireAnyClientCert`` (which accept any client
certificate without verifying it) cannot be expressed with Python's ssl module;
``curve_preferences`` and ``http_server_config.http2: true`` are not implemented; TLS versions
below 1.2 are not offered. The ``apigee_tls_exporter`` section is ours; the Go toolkit would
refuse it.
"""

from __future__ import annotations

import base64
import binascii
import collections
import hashlib
import hmac
import os
import re
import secrets
import ssl
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Union

import bcrypt
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from ..config import ConfigError, read_yaml

__all__ = [
    "ALLOWED_HEADERS",
    "GO_CIPHER_SUITES",
    "BasicAuth",
    "ExporterHTTPConfig",
    "HTTPServerConfig",
    "TLSServerConfig",
    "WebConfig",
    "WebConfigError",
    "build_ssl_context",
    "load_web_config",
]

ClientAuthType = Literal[
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
]
TLSVersionName = Literal["TLS10", "TLS11", "TLS12", "TLS13"]

_TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_VERIFY_MODES = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
# Valid in the exporter-toolkit format but not implemented here: say so instead of "extra input".
_UNSUPPORTED_KEYS = {
    "curve_preferences": "Python's ssl module chooses the curves",
    "cert": "inline certificates are not supported; use cert_file",
    "key": "inline keys are not supported; use key_file",
}
# Go's TLS 1.2 cipher suite names (crypto/tls) -> OpenSSL's.
GO_CIPHER_SUITES = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256": "AES128-SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256": "ECDHE-ECDSA-AES128-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256": "ECDHE-RSA-AES128-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305": "ECDHE-RSA-CHACHA20-POLY1305",
}
# The response headers the Go toolkit lets a web config set, and their allowed values (None: any).
ALLOWED_HEADERS: dict[str, Optional[tuple[str, ...]]] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}
_HEADER_VALUE = re.compile(r"^[\x20-\x7e]*$")  # printable ASCII: never a CR, LF or NUL
_BCRYPT_HASH = re.compile(r"^\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}$")


class WebConfigError(Exception):
    """A web config that cannot be used; lists every problem found, each with its location."""

    def __init__(self, path: Union[str, os.PathLike[str]], problems: list[str]) -> None:
        self.path = str(path)
        self.problems = problems
        super().__init__(f"web config {self.path}: " + "; ".join(problems))


class TLSServerConfig(BaseModel):
    """``tls_server_config``: the server certificate and the client certificate policy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cert_file: str
    key_file: str
    client_auth_type: ClientAuthType = "NoClientCert"
    client_ca_file: Optional[str] = None
    min_version: TLSVersionName = "TLS12"
    max_version: Optional[TLSVersionName] = None
    prefer_server_cipher_suites: bool = True
    cipher_suites: Optional[list[str]] = None
    client_allowed_sans: Optional[list[str]] = None

    @field_validator("cipher_suites")
    @classmethod
    def _known_suites(cls, value: Optional[list[str]]) -> Optional[list[str]]:
        for name in value or ():
            if name not in GO_CIPHER_SUITES:
                raise ValueError(
                    f"{name} is not a TLS 1.2 cipher suite Go offers (TLS 1.3 suites cannot be"
                    " chosen, as in Go)"
                )
        return value


class HTTPServerConfig(BaseModel):
    """``http_server_config``: response headers, as the Go toolkit allows them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    http2: bool = False
    headers: dict[str, str] = {}

    @field_validator("http2")
    @classmethod
    def _no_http2(cls, value: bool) -> bool:
        if value:
            raise ValueError("HTTP/2 is not implemented; set false or leave it out")
        return value

    @field_validator("headers")
    @classmethod
    def _allowed_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, header_value in value.items():
            if name not in ALLOWED_HEADERS:
                raise ValueError(
                    f"{name} cannot be set; allowed: {', '.join(sorted(ALLOWED_HEADERS))}"
                )
            allowed = ALLOWED_HEADERS[name]
            if allowed is not None and header_value not in allowed:
                raise ValueError(f"{name}: expected one of {', '.join(allowed)}")
            if not _HEADER_VALUE.match(header_value):
                raise ValueError(f"{name}: only printable ASCII in a header value")
        return value


class ExporterHTTPConfig(BaseModel):
    """``apigee_tls_exporter``: settings of our own, beside the exporter-toolkit ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # /-/healthy and /-/ready without basic auth (a TLS client certificate, when required, is
    # still required: it is asked for before any request is read).
    health_without_auth: bool = False


class WebConfig(BaseModel):
    """The whole web config file; an empty file means plain HTTP without authentication."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tls_server_config: Optional[TLSServerConfig] = None
    http_server_config: HTTPServerConfig = HTTPServerConfig()
    basic_auth_users: dict[str, str] = {}
    apigee_tls_exporter: ExporterHTTPConfig = ExporterHTTPConfig()

    @field_validator("basic_auth_users", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("apigee_tls_exporter", "http_server_config", mode="before")
    @classmethod
    def _none_is_default(cls, value: Any) -> Any:
        return {} if value is None else value


def load_web_config(path: Union[str, os.PathLike[str]]) -> WebConfig:
    """Read, validate and check a web config file; WebConfigError listing every problem.

    Beyond the schema, the files are opened and an SSLContext is built, so that a bad
    certificate, a key that does not match it or an unreadable file is reported here (by
    ``check-config``) and not at the first scrape. Relative paths are resolved against the
    directory of the file, as the Go toolkit does.
    """
    try:
        raw = read_yaml(path)
    except ConfigError as exc:
        raise WebConfigError(path, exc.problems) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise WebConfigError(path, ["expected a mapping at the top level"])
    try:
        config = WebConfig.model_validate(raw)
    except ValidationError as exc:
        raise WebConfigError(path, [_pydantic_problem(e) for e in exc.errors()]) from None
    config = _resolve_paths(config, Path(path).parent)
    problems = check_web_config(config)
    if problems:
        raise WebConfigError(path, problems)
    return config


def check_web_config(config: WebConfig) -> list[str]:
    """The problems of a schema-valid config that only show when it is used; empty when none."""
    problems: list[str] = []
    for user, hashed in config.basic_auth_users.items():
        if not user or ":" in user:
            problems.append(f"basic_auth_users: user name {user!r} is empty or contains ':'")
        if not _BCRYPT_HASH.match(hashed):
            # Never echo the value: it may be a plain password pasted by mistake.
            problems.append(f"basic_auth_users.{user}: not a bcrypt hash ($2a$, $2b$ or $2y$)")
    tls = config.tls_server_config
    if tls is None:
        return problems
    where = "tls_server_config"
    if tls.client_auth_type in ("RequestClientCert", "RequireAnyClientCert"):
        problems.append(
            f"{where}.client_auth_type: {tls.client_auth_type} accepts unverified client"
            " certificates and is not supported; use VerifyClientCertIfGiven or"
            " RequireAndVerifyClientCert with client_ca_file"
        )
    elif tls.client_auth_type != "NoClientCert" and tls.client_ca_file is None:
        problems.append(f"{where}.client_ca_file: required for {tls.client_auth_type}")
    elif tls.client_auth_type == "NoClientCert" and tls.client_ca_file is not None:
        problems.append(
            f"{where}.client_auth_type: client_ca_file is set but client_auth_type is"
            " NoClientCert; set VerifyClientCertIfGiven or RequireAndVerifyClientCert"
        )
    if tls.client_allowed_sans and tls.client_auth_type == "NoClientCert":
        problems.append(
            f"{where}.client_allowed_sans: needs a verified client certificate; set"
            " client_auth_type RequireAndVerifyClientCert and client_ca_file"
        )
    for name in ("min_version", "max_version"):
        value = getattr(tls, name)
        if value is not None and value not in _TLS_VERSIONS:
            problems.append(f"{where}.{name}: {value} is not offered; use TLS12 or TLS13")
    low = _TLS_VERSIONS.get(tls.min_version)
    high = _TLS_VERSIONS.get(tls.max_version or "TLS13")
    if low is not None and high is not None and high < low:
        problems.append(f"{where}.max_version: lower than min_version {tls.min_version}")
    files = [("cert_file", tls.cert_file), ("key_file", tls.key_file)]
    if tls.client_ca_file is not None:
        files.append(("client_ca_file", tls.client_ca_file))
    for name, file in files:
        problem = _file_problem(file)
        if problem:
            problems.append(f"{where}.{name}: {problem}")
    if not problems:
        try:
            build_ssl_context(tls)
        except WebConfigError as exc:
            problems.extend(exc.problems)
    return problems


def build_ssl_context(tls: TLSServerConfig) -> ssl.SSLContext:
    """A server-side SSLContext for the config; WebConfigError (path "") on a bad file."""
    where = "tls_server_config"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _TLS_VERSIONS.get(tls.min_version, ssl.TLSVersion.TLSv1_2)
    if tls.max_version is not None:
        context.maximum_version = _TLS_VERSIONS.get(tls.max_version, ssl.TLSVersion.TLSv1_3)
    if tls.cipher_suites:
        try:
            context.set_ciphers(":".join(GO_CIPHER_SUITES[n] for n in tls.cipher_suites))
        except ssl.SSLError:
            raise WebConfigError(
                "", [f"{where}.cipher_suites: none of them is available in this OpenSSL"]
            ) from None
    if tls.prefer_server_cipher_suites:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file, password=_no_passphrase)
    except _EncryptedKeyError:
        raise WebConfigError(
            "", [f"{where}.key_file: encrypted private keys are not supported: {tls.key_file}"]
        ) from None
    except (ssl.SSLError, OSError) as exc:
        raise WebConfigError(
            "",
            [
                f"{where}.cert_file/key_file: cannot load {tls.cert_file} with {tls.key_file}"
                f" (not PEM, or the key does not match the certificate): {_ssl_reason(exc)}"
            ],
        ) from None
    if tls.client_ca_file is not None:
        try:
            context.load_verify_locations(cafile=tls.client_ca_file)
        except (ssl.SSLError, OSError) as exc:
            raise WebConfigError(
                "",
                [
                    f"{where}.client_ca_file: no PEM certificate in {tls.client_ca_file}: "
                    + _ssl_reason(exc)
                ],
            ) from None
    context.verify_mode = _VERIFY_MODES.get(tls.client_auth_type, ssl.CERT_REQUIRED)
    return context


class BasicAuth:
    """Checks ``Authorization: Basic`` headers against bcrypt hashes.

    A bcrypt check costs tens of milliseconds of CPU on purpose. ``cached`` is the fast path, no
    bcrypt: a credential verified within ``cache_seconds`` of its last use is accepted (an HMAC
    of it under a key made for this process, compared in constant time), and one refused within
    ``cache_seconds`` is refused (at most ``max_refused`` remembered), so that neither a scraper
    every 15 s nor a guesser repeating itself costs a bcrypt each time. ``verify`` is the slow
    path, queued by the server on its own terms (``guard``); ``check`` is both.

    An unknown user name is checked against a stand-in hash made here with the highest cost
    among the configured hashes, so that its 401 takes as long as a wrong password's (a user
    name cannot be found out by timing). Making it measures what one check costs
    (``check_seconds``), which sizes the server's bcrypt queue.
    """

    def __init__(
        self,
        users: Mapping[str, str],
        cache_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_refused: int = 4096,
    ) -> None:
        self.users = dict(users)
        self._users = {user: hashed.encode("ascii") for user, hashed in users.items()}
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._max_refused = max_refused
        self._key = secrets.token_bytes(32)
        self._cache: dict[str, tuple[bytes, float]] = {}
        self._refused: collections.OrderedDict[bytes, float] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.cost = max((_cost(h) for h in self._users.values()), default=10)
        started = time.perf_counter()
        self._stand_in = bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(rounds=self.cost))
        self.check_seconds = max(time.perf_counter() - started, 0.001)

    @property
    def enabled(self) -> bool:
        """True when at least one user is configured."""
        return bool(self._users)

    def check(self, authorization: Optional[str]) -> bool:
        """True when the header value carries a configured user and its password."""
        cached = self.cached(authorization)
        return cached if cached is not None else self.verify(authorization)

    def cached(self, authorization: Optional[str]) -> Optional[bool]:
        """Decided without bcrypt: True for credentials verified within ``cache_seconds`` of
        their last use, False for a missing or malformed header or credentials refused within
        ``cache_seconds``; None when only ``verify`` can tell."""
        credentials = _parse_basic(authorization)
        if credentials is None:
            return False
        user_name, digest = self._digest(*credentials)
        now = self._clock()
        with self._lock:
            cached = self._cache.get(user_name)
            if cached is not None and now < cached[1] and hmac.compare_digest(cached[0], digest):
                self._cache[user_name] = (digest, now + self._cache_seconds)
                return True
            refused_until = self._refused.get(digest)
            if refused_until is not None:
                if now < refused_until:
                    return False
                del self._refused[digest]
        return None

    def verify(self, authorization: Optional[str]) -> bool:
        """The bcrypt check (tens to hundreds of ms, the same for unknown users); the answer is
        remembered for ``cached``."""
        credentials = _parse_basic(authorization)
        if credentials is None:
            return False
        user, password = credentials
        user_name, digest = self._digest(user, password)
        hashed = self._users.get(user_name)
        # bcrypt looks at the first 72 bytes only (as Go and htpasswd do); bcrypt>=5 refuses more.
        ok = bcrypt.checkpw(password[:72], hashed or self._stand_in) and hashed is not None
        until = self._clock() + self._cache_seconds
        with self._lock:
            if ok:
                self._cache[user_name] = (digest, until)
            else:
                self._refused[digest] = until
                self._refused.move_to_end(digest)
                while len(self._refused) > self._max_refused:
                    self._refused.popitem(last=False)
        return ok

    def _digest(self, user: bytes, password: bytes) -> tuple[str, bytes]:
        digest = hmac.new(self._key, user + b"\0" + password[:72], hashlib.sha256).digest()
        return user.decode("utf-8", "replace"), digest


def _cost(hashed: bytes) -> int:
    """The cost (log2 rounds) of a bcrypt hash, ``$2b$12$...`` -> 12."""
    try:
        return int(hashed.split(b"$")[2])
    except (IndexError, ValueError):
        return 10


class _EncryptedKeyError(Exception):
    pass


def _no_passphrase() -> bytes:
    """load_cert_chain's password callback: refuse instead of prompting on a terminal."""
    raise _EncryptedKeyError


def _parse_basic(authorization: Optional[str]) -> Optional[tuple[bytes, bytes]]:
    if not authorization:
        return None
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    if not sep:
        return None
    return user, password


def _resolve_paths(config: WebConfig, base: Path) -> WebConfig:
    tls = config.tls_server_config
    if tls is None:
        return config

    def resolve(file: Optional[str]) -> Optional[str]:
        if file is None or os.path.isabs(file):
            return file
        return str(base / file)

    resolved = tls.model_copy(
        update={
            "cert_file": resolve(tls.cert_file),
            "key_file": resolve(tls.key_file),
            "client_ca_file": resolve(tls.client_ca_file),
        }
    )
    return config.model_copy(update={"tls_server_config": resolved})


def _file_problem(path: str) -> Optional[str]:
    if not os.path.exists(path):
        return f"file not found: {path}"
    if not os.path.isfile(path):
        return f"not a regular file: {path}"
    if not os.access(path, os.R_OK):
        return f"file not readable by uid {os.geteuid()}: {path}"
    return None


def _ssl_reason(exc: Exception) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).lower().replace("_", " ")
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def _pydantic_problem(error: Mapping[str, Any]) -> str:
    location = ".".join(str(part) for part in error["loc"]) or "(top level)"
    last = str(error["loc"][-1]) if error["loc"] else ""
    if error["type"] == "extra_forbidden":
        if last in _UNSUPPORTED_KEYS:
            return f"{location}: not supported by apigee-tls-exporter ({_UNSUPPORTED_KEYS[last]})"
        return f"{location}: unknown key"
    if error["type"] == "missing":
        return f"{location}: required"
    if error["type"] == "value_error" and "error" in error.get("ctx", {}):
        return f"{location}: {error['ctx']['error']}"  # our own validator's words, as they are
    message = str(error["msg"])
    return f"{location}: {message[:1].lower()}{message[1:]}"
