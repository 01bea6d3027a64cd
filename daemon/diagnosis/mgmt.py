"""A small client for the Apigee Edge management API: keystores, references, target servers.

Only the read-only endpoints the bad_certificate playbook uses (shapes in
``shared/reference/mp-log-format.md``)::

    GET {base}/organizations/{org}/environments/{env}/references/{ref}
    GET {base}/organizations/{org}/environments/{env}/keystores
    GET {base}/organizations/{org}/environments/{env}/keystores/{ks}/certs
    GET {base}/organizations/{org}/environments/{env}/keystores/{ks}/certs/{cert}
    GET {base}/organizations/{org}/environments/{env}/keystores/{ks}/aliases
    GET {base}/organizations/{org}/environments/{env}/keystores/{ks}/aliases/{alias}
    GET {base}/organizations/{org}/environments/{env}/deployments
    GET {base}/organizations/{org}/apis/{api}/revisions/{rev}/targets
    GET {base}/organizations/{org}/apis/{api}/revisions/{rev}/targets/{name}
    GET {base}/organizations/{org}/environments/{env}/targetservers
    GET {base}/organizations/{org}/environments/{env}/targetservers/{name}

``base`` is the URL up to and including ``/v1`` (Private Cloud: ``http://MS_HOST:8080/v1``).
TLS is verified by default. Every failure becomes a ``ManagementAPIError`` whose message never
contains the credentials; ``kind`` is a bounded word fit for a metric label.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Optional

ERROR_KINDS = (
    "unauthorized",  # 401 / 403
    "not_found",  # 404
    "http_error",  # any other HTTP status
    "connection",  # refused, DNS, TLS, reset
    "timeout",
    "bad_response",  # not JSON, or not the documented shape
)


class ManagementAPIError(Exception):
    """A management API call failed; ``str(error)`` is one line without credentials."""

    def __init__(self, message: str, kind: str, status: Optional[int] = None) -> None:
        super().__init__(message)
        self.kind = kind if kind in ERROR_KINDS else "http_error"
        self.status = status


def read_secret(file: Optional[str], env: Optional[str]) -> Optional[str]:
    """A secret (password, token) from a file or an environment variable; None when neither is
    named. The file's first line without its line end (CR LF or LF; other whitespace is kept, it
    may belong to the secret). An empty one, from the file or the variable, is an error: a blank
    secret is never meant (a file truncated, a variable exported empty). ValueError saying what is
    wrong, for the caller to put its option's name in front of."""
    if file and env:
        raise ValueError("give it as a file or an environment variable, not both")
    if file:
        try:
            with open(file, encoding="utf-8", errors="replace") as handle:
                value = handle.readline().rstrip("\r\n")
        except OSError as err:
            raise ValueError(f"cannot read {file}: {err.strerror or 'error'}") from None
        if not value:
            raise ValueError(f"{file} is empty")
        return value
    if env:
        value = os.environ.get(env, "")
        if not value:
            raise ValueError(f"${env} is not set or empty")
        return value
    return None


@dataclass(frozen=True)
class Credentials:
    """Basic auth (username and password) or an OAuth bearer token. Never printed."""

    username: Optional[str] = None
    password: Optional[str] = field(default=None, repr=False)
    token: Optional[str] = field(default=None, repr=False)

    def header(self) -> Optional[str]:
        """The ``Authorization`` header value, or None for no credentials."""
        if self.token:
            return f"Bearer {self.token}"
        if self.username is not None and self.password is not None:
            raw = f"{self.username}:{self.password}".encode()
            return "Basic " + base64.b64encode(raw).decode("ascii")
        return None

    def secrets(self) -> tuple[str, ...]:
        """Every string that must never appear in a message (used to redact)."""
        found = [s for s in (self.password, self.token) if s]
        header = self.header()
        if header:
            found.append(header.split(" ", 1)[1])
        return tuple(found)


@dataclass(frozen=True)
class ApiCertificate:
    """One ``certInfo`` entry: a certificate as the management API describes it."""

    subject: str
    issuer: str
    valid_from: Optional[float]  # seconds since the epoch
    expiry: Optional[float]  # seconds since the epoch
    subject_alternative_names: tuple[str, ...] = ()
    is_valid: Optional[bool] = None
    serial_number: str = ""


@dataclass(frozen=True)
class TargetServerSSL:
    """A TargetServer and its ``sSLInfo``."""

    name: str
    host: str
    port: int
    enabled: bool
    client_auth_enabled: bool
    key_store: str
    key_alias: str
    trust_store: str
    protocols: tuple[str, ...] = ()  # empty: the MP's JVM defaults
    ciphers: tuple[str, ...] = ()  # Java (IANA) cipher suite names; empty: the JVM defaults


@dataclass(frozen=True)
class TargetEndpointSSL:
    """A TargetEndpoint of a deployed revision with its own ``<URL>`` and ``<SSLInfo>``."""

    api: str
    revision: str
    name: str
    host: str
    port: int
    enabled: bool
    client_auth_enabled: bool
    key_store: str
    key_alias: str
    protocols: tuple[str, ...] = ()


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value if str(v).strip()) if isinstance(value, list) else ()


def _ms(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        return float(value) / 1000.0
    except ValueError:
        return None


def parse_cert_info(entries: Any, where: str) -> tuple[ApiCertificate, ...]:
    """The ``certInfo`` list (leaf first) as ``ApiCertificate`` values."""
    if not isinstance(entries, list):
        raise ManagementAPIError(f"{where}: 'certInfo' is not a list", "bad_response")
    out = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise ManagementAPIError(
                f"{where}: a 'certInfo' entry is not an object", "bad_response"
            )
        sans = entry.get("subjectAlternativeNames") or []
        valid = entry.get("isValid")
        out.append(
            ApiCertificate(
                subject=str(entry.get("subject", "")),
                issuer=str(entry.get("issuer", "")),
                valid_from=_ms(entry.get("validFrom")),
                expiry=_ms(entry.get("expiryDate")),
                subject_alternative_names=tuple(str(s) for s in sans)
                if isinstance(sans, list)
                else (),
                is_valid=None if valid is None else str(valid).lower() in ("yes", "true"),
                serial_number=str(entry.get("serialNumber", "")),
            )
        )
    return tuple(out)


def strip_ref(name: str) -> tuple[str, bool]:
    """``("name", True)`` for ``ref://name``, ``(name, False)`` otherwise."""
    if name.startswith("ref://"):
        return name[len("ref://") :], True
    return name, False


class ManagementClient:
    """Read-only Edge management API client (stdlib ``urllib``)."""

    def __init__(
        self,
        base_url: str,
        credentials: Optional[Credentials] = None,
        *,
        verify: bool = True,
        ca_file: Optional[str] = None,
        timeout: float = 10.0,
    ) -> None:
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("management URL must be http(s)://HOST[:PORT]/v1")
        if parts.username is not None or parts.password is not None:
            raise ValueError(
                "management URL must not contain credentials; use a password or token file"
            )
        self.base_url = base_url.rstrip("/")
        self._credentials = credentials or Credentials()
        self._timeout = timeout
        self._ssl: Optional[ssl.SSLContext] = None
        if parts.scheme == "https":
            if verify:
                try:
                    self._ssl = ssl.create_default_context(cafile=ca_file)
                except (OSError, ValueError):
                    raise ValueError(f"CA file {ca_file}: not a readable PEM bundle") from None
            else:
                self._ssl = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                self._ssl.check_hostname = False
                self._ssl.verify_mode = ssl.CERT_NONE

    def __repr__(self) -> str:
        return f"ManagementClient({self.base_url!r})"

    # -- transport ---------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        for secret in self._credentials.secrets():
            text = text.replace(secret, "***")
        return text

    def get_json(self, path: str) -> Any:
        """GET ``base_url + path`` and decode JSON; every failure is a ``ManagementAPIError``."""
        url = self.base_url + path
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        header = self._credentials.header()
        if header:
            request.add_unredirected_header("Authorization", header)
        where = f"GET {url}"
        try:
            with urllib.request.urlopen(request, timeout=self._timeout, context=self._ssl) as resp:
                body = resp.read()
        except urllib.error.HTTPError as exc:
            status = exc.code
            exc.close()
            if status in (401, 403):
                raise ManagementAPIError(
                    f"{where}: HTTP {status}, the management API refused the credentials",
                    "unauthorized",
                    status,
                ) from None
            if status == 404:
                raise ManagementAPIError(
                    f"{where}: HTTP 404, not found", "not_found", 404
                ) from None
            raise ManagementAPIError(f"{where}: HTTP {status}", "http_error", status) from None
        except (TimeoutError, ssl.SSLError, urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            timeout = isinstance(reason, (TimeoutError, socket.timeout))
            kind = "timeout" if timeout else "connection"
            text = self._redact(str(reason) or type(reason).__name__)
            raise ManagementAPIError(f"{where}: {text}", kind) from None
        try:
            return json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise ManagementAPIError(f"{where}: response is not JSON", "bad_response") from None

    def _env(self, org: str, env: str) -> str:
        q = urllib.parse.quote
        return f"/organizations/{q(org, safe='')}/environments/{q(env, safe='')}"

    def _string_list(self, path: str) -> list[str]:
        data = self.get_json(path)
        if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
            raise ManagementAPIError(
                f"GET {self.base_url}{path}: expected a list of names", "bad_response"
            )
        return list(data)

    def _object(self, path: str) -> dict[str, Any]:
        data = self.get_json(path)
        if not isinstance(data, dict):
            raise ManagementAPIError(
                f"GET {self.base_url}{path}: expected a JSON object", "bad_response"
            )
        return data

    # -- endpoints ---------------------------------------------------------------------------

    def resolve_reference(self, org: str, env: str, ref: str) -> str:
        """The keystore a reference ``refers`` to."""
        path = f"{self._env(org, env)}/references/{urllib.parse.quote(ref, safe='')}"
        data = self._object(path)
        refers = data.get("refers")
        if not isinstance(refers, str) or not refers:
            raise ManagementAPIError(
                f"GET {self.base_url}{path}: reference has no 'refers'", "bad_response"
            )
        return refers

    def resolve_keystore(self, org: str, env: str, name_or_ref: str) -> str:
        """A keystore name from ``NAME`` or ``ref://REF``."""
        name, is_ref = strip_ref(name_or_ref)
        return self.resolve_reference(org, env, name) if is_ref else name

    def _ks(self, org: str, env: str, keystore: str) -> str:
        return f"{self._env(org, env)}/keystores/{urllib.parse.quote(keystore, safe='')}"

    def list_keystores(self, org: str, env: str) -> list[str]:
        """The keystore names of an environment."""
        return self._string_list(f"{self._env(org, env)}/keystores")

    def list_certs(self, org: str, env: str, keystore: str) -> list[str]:
        """The certificate names in a keystore (empty: no client certificate)."""
        return self._string_list(f"{self._ks(org, env, keystore)}/certs")

    def get_cert(self, org: str, env: str, keystore: str, cert: str) -> tuple[ApiCertificate, ...]:
        """The chain of one certificate entry, leaf first."""
        path = f"{self._ks(org, env, keystore)}/certs/{urllib.parse.quote(cert, safe='')}"
        data = self._object(path)
        return parse_cert_info(data.get("certInfo"), f"GET {self.base_url}{path}")

    def list_aliases(self, org: str, env: str, keystore: str) -> list[str]:
        """The aliases of a keystore."""
        return self._string_list(f"{self._ks(org, env, keystore)}/aliases")

    def get_alias(
        self, org: str, env: str, keystore: str, alias: str
    ) -> tuple[ApiCertificate, ...]:
        """The certificate chain of an alias, leaf first (empty when it holds none)."""
        path = f"{self._ks(org, env, keystore)}/aliases/{urllib.parse.quote(alias, safe='')}"
        data = self._object(path)
        info = data.get("certsInfo")
        if info is None:
            return ()
        if not isinstance(info, dict):
            raise ManagementAPIError(
                f"GET {self.base_url}{path}: 'certsInfo' is not an object", "bad_response"
            )
        return parse_cert_info(info.get("certInfo", []), f"GET {self.base_url}{path}")

    def list_target_servers(self, org: str, env: str) -> list[str]:
        """The TargetServer names of an environment."""
        return self._string_list(f"{self._env(org, env)}/targetservers")

    def get_target_server(self, org: str, env: str, name: str) -> TargetServerSSL:
        """A TargetServer with its ``sSLInfo``."""
        path = f"{self._env(org, env)}/targetservers/{urllib.parse.quote(name, safe='')}"
        data = self._object(path)
        ssl_info = data.get("sSLInfo") or {}
        if not isinstance(ssl_info, dict):
            raise ManagementAPIError(
                f"GET {self.base_url}{path}: 'sSLInfo' is not an object", "bad_response"
            )
        try:
            port = int(data.get("port", 0))
        except (TypeError, ValueError):
            raise ManagementAPIError(
                f"GET {self.base_url}{path}: 'port' is not a number", "bad_response"
            ) from None

        return TargetServerSSL(
            name=str(data.get("name", name)),
            host=str(data.get("host", "")),
            port=port,
            enabled=_flag(ssl_info.get("enabled")),
            client_auth_enabled=_flag(ssl_info.get("clientAuthEnabled")),
            key_store=str(ssl_info.get("keyStore") or ""),
            key_alias=str(ssl_info.get("keyAlias") or ""),
            trust_store=str(ssl_info.get("trustStore") or ""),
            protocols=_strings(ssl_info.get("protocols")),
            ciphers=_strings(ssl_info.get("ciphers")),
        )

    def deployed_revisions(self, org: str, env: str) -> list[tuple[str, str]]:
        """``(api, revision)`` of every API proxy revision deployed in the environment."""
        path = f"{self._env(org, env)}/deployments"
        proxies = self._object(path).get("aPIProxy") or []
        if not isinstance(proxies, list):
            raise ManagementAPIError(
                f"GET {self.base_url}{path}: 'aPIProxy' is not a list", "bad_response"
            )
        found = []
        for proxy in proxies:
            if not isinstance(proxy, dict):
                continue
            for rev in proxy.get("revision") or []:
                if isinstance(rev, dict) and rev.get("state", "deployed") == "deployed":
                    found.append((str(proxy.get("name", "")), str(rev.get("name", ""))))
        return [f for f in found if all(f)]

    def _rev(self, org: str, api: str, rev: str) -> str:
        q = urllib.parse.quote
        org_api = f"/organizations/{q(org, safe='')}/apis/{q(api, safe='')}"
        return f"{org_api}/revisions/{q(rev, safe='')}"

    def list_target_endpoints(self, org: str, api: str, rev: str) -> list[str]:
        """The TargetEndpoint names of a proxy revision."""
        return self._string_list(f"{self._rev(org, api, rev)}/targets")

    def get_target_endpoint(
        self, org: str, api: str, rev: str, name: str
    ) -> Optional[TargetEndpointSSL]:
        """A TargetEndpoint with its URL's host and port, or None when it has no plain
        ``<URL>`` (it uses TargetServers, a local target or a variable in the URL)."""
        path = f"{self._rev(org, api, rev)}/targets/{urllib.parse.quote(name, safe='')}"
        connection = self._object(path).get("connection")
        if not isinstance(connection, dict) or not isinstance(connection.get("uRL"), str):
            return None
        ssl_info = connection.get("sSLInfo") or {}
        try:
            url = urllib.parse.urlsplit(connection["uRL"].strip())
            host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
        except ValueError:
            return None
        if not host or not isinstance(ssl_info, dict) or "{" in connection["uRL"]:
            return None
        return TargetEndpointSSL(
            api=api,
            revision=rev,
            name=name,
            host=host,
            port=port,
            enabled=_flag(ssl_info.get("enabled")) or url.scheme == "https",
            client_auth_enabled=_flag(ssl_info.get("clientAuthEnabled")),
            key_store=str(ssl_info.get("keyStore") or ""),
            key_alias=str(ssl_info.get("keyAlias") or ""),
            protocols=_strings(ssl_info.get("protocols")),
        )


def _flag(value: Any) -> bool:
    return str(value).lower() == "true"
