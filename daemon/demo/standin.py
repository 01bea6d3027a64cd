"""A local STAND-IN for the Apigee Edge management API (read-only), for the tests and the demo.

This is NOT Apigee: it answers the endpoints and JSON shapes documented in
``shared/reference/mp-log-format.md`` so that the diagnose and inventory code can be tested without
a Management Server. It checks Basic auth or a bearer token (401 otherwise), answers 404 for unknown
names and can serve broken JSON on purpose. It listens on 127.0.0.1 only, over HTTP or (with
``tls``, a server ``ssl.SSLContext``) HTTPS. Every answer carries the header
``X-Stand-In: apigee-tls-exporter (not Apigee)``. The shapes, under
``/v1/organizations/{org}/environments/{env}``::

    GET references/{ref}            {"name", "refers", "resourceType": "KeyStore"}
    GET keystores                   ["name", ...]
    GET keystores/{ks}/certs        ["cert-name", ...]
    GET keystores/{ks}/certs/{c}    {"certName", "certInfo": [certInfo, ...]}  (leaf first)
    GET keystores/{ks}/aliases      ["alias", ...]
    GET keystores/{ks}/aliases/{a}  {"alias", "certsInfo": {"certInfo": [...], "certName"},
                                     "keyName"}
    GET deployments                 {"name": env, "aPIProxy": [{"name": api, "revision":
                                     [{"name": rev, "state": "deployed"}]}]}
    GET targetservers               ["name", ...]
    GET targetservers/{name}        {"name", "host", "port", "isEnabled",
                                     "sSLInfo": {"enabled", "clientAuthEnabled", "keyStore",
                                                 "keyAlias", "trustStore", "protocols": [...],
                                                 "ciphers": [...]}}

and, under ``/v1/organizations/{org}/apis/{api}/revisions/{rev}``, the TargetEndpoints::

    GET targets                     ["name", ...]
    GET targets/{name}              {"name", "connection": {"connectionType": "httpConnection",
                                     "uRL", "sSLInfo": {...as a TargetServer's}}}

``certInfo`` entries are ``cert_info()``'s (Java-style names, dates in epoch milliseconds);
``target_server()`` builds the TargetServer object, ``sSLInfo`` strings as Edge writes them
("true"/"false"), ``protocols`` Java names (``TLSv1.2``), ``ciphers`` Java suite names.
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional
from urllib.parse import unquote

from cryptography import x509

STAND_IN = "apigee-tls-exporter (not Apigee)"


def java_name(name: x509.Name) -> str:
    """A name as Java's X500Principal prints it: most specific first, ``", "`` between."""
    parts = []
    for attr in reversed(list(name)):
        key = {"1.2.840.113549.1.9.1": "EMAILADDRESS"}.get(
            attr.oid.dotted_string, attr.rfc4514_attribute_name
        )
        parts.append(f"{key}={attr.value!s}")
    return ", ".join(parts)


def cert_info(cert: x509.Certificate) -> dict[str, Any]:
    """One ``certInfo`` entry in the management API's shape, from a real certificate."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = [str(v) for v in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        sans = []
    return {
        "basicConstraints": "CA:FALSE",
        "expiryDate": int(cert.not_valid_after_utc.timestamp() * 1000),
        "isValid": "Yes",
        "issuer": java_name(cert.issuer),
        "publicKey": "EC Public Key",
        "serialNumber": format(cert.serial_number, "x"),
        "sigAlgName": "SHA256withECDSA",
        "subject": java_name(cert.subject),
        "subjectAlternativeNames": sans,
        "validFrom": int(cert.not_valid_before_utc.timestamp() * 1000),
        "version": 3,
    }


def chain_info(pem: bytes) -> list[dict[str, Any]]:
    """``certInfo`` entries (leaf first) for a PEM chain."""
    return [cert_info(c) for c in x509.load_pem_x509_certificates(pem)]


def target_endpoint(
    name: str,
    url: str,
    *,
    key_store: str = "",
    key_alias: str = "",
    protocols: Optional[list[str]] = None,
    client_auth: bool = True,
) -> dict[str, Any]:
    """A TargetEndpoint with an inline ``<SSLInfo>`` (``url``: its ``<URL>``)."""
    ssl_info = target_server(
        name, "", 0, key_store=key_store, key_alias=key_alias, protocols=protocols,
        client_auth=client_auth,
    )["sSLInfo"]  # fmt: skip
    return {
        "name": name,
        "connection": {"connectionType": "httpConnection", "uRL": url, "sSLInfo": ssl_info},
    }


def target_server(
    name: str,
    host: str,
    port: int,
    *,
    key_store: str = "",
    key_alias: str = "",
    trust_store: str = "",
    protocols: Optional[list[str]] = None,
    ciphers: Optional[list[str]] = None,
    client_auth: bool = True,
) -> dict[str, Any]:
    """A TargetServer in the management API's shape, with its ``sSLInfo``."""
    return {
        "name": name,
        "host": host,
        "port": port,
        "isEnabled": True,
        "sSLInfo": {
            "enabled": "true",
            "clientAuthEnabled": "true" if client_auth else "false",
            "keyStore": key_store,
            "keyAlias": key_alias,
            "trustStore": trust_store,
            "protocols": list(protocols or []),
            "ciphers": list(ciphers or []),
        },
    }


@dataclass
class Env:
    """What one org/env holds: keystores (alias -> certInfo list), references, target servers."""

    keystores: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)
    references: dict[str, str] = field(default_factory=dict)
    target_servers: dict[str, dict[str, Any]] = field(default_factory=dict)
    deployed: dict[str, list[str]] = field(default_factory=dict)  # api -> revisions


@dataclass
class Revision:
    """One API proxy revision of an org: its TargetEndpoints by name."""

    targets: dict[str, dict[str, Any]] = field(default_factory=dict)


class Standin:
    """The stand-in server. ``envs[(org, env)]`` is the data; ``requests`` logs what was asked."""

    def __init__(
        self,
        *,
        username: str = "admin",
        password: str = "pa55-w0rd-Secret",
        token: Optional[str] = None,
        tls: Optional[ssl.SSLContext] = None,
    ) -> None:
        self.username, self.password, self.token = username, password, token
        self.envs: dict[tuple[str, str], Env] = {}
        self.revisions: dict[tuple[str, str, str], Revision] = {}  # (org, api, rev)
        self.broken_json: set[str] = set()  # paths answered with invalid JSON
        self.requests: list[str] = []
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                standin.requests.append(self.path)
                if not standin.authorized(self.headers.get("Authorization")):
                    self._send(401, {"code": "keymanagement.service.invalid_credentials"})
                    return
                if self.path in standin.broken_json:
                    self._raw(200, b"<html>not json</html>")
                    return
                status, body = standin.answer(self.path)
                self._send(status, body)

            def _send(self, status: int, body: Any) -> None:
                self._raw(status, json.dumps(body).encode())

            def _raw(self, status: int, data: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-Stand-In", STAND_IN)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.scheme = "http"
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        """The base URL, ``.../v1``."""
        return f"{self.scheme}://127.0.0.1:{self.server.server_address[1]}/v1"

    def env(self, org: str, env: str) -> Env:
        """The data of one org/env, created empty on first use."""
        return self.envs.setdefault((org, env), Env())

    def revision(self, org: str, api: str, rev: str) -> Revision:
        """One API proxy revision, created empty on first use."""
        return self.revisions.setdefault((org, api, rev), Revision())

    def __enter__(self) -> Standin:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)

    def authorized(self, header: Optional[str]) -> bool:
        """Basic auth with the configured user, or the bearer token."""
        if header is None:
            return False
        if self.token and header == f"Bearer {self.token}":
            return True
        raw = f"{self.username}:{self.password}".encode()
        return header == "Basic " + base64.b64encode(raw).decode()

    def answer(self, path: str) -> tuple[int, Any]:
        """Route a GET path to ``(status, JSON body)``."""
        parts = [unquote(p) for p in path.split("?")[0].strip("/").split("/")]
        not_found = (404, {"code": "not found", "message": path})
        if parts[:2] == ["v1", "organizations"] and len(parts) >= 8 and parts[3] == "apis":
            return self._proxy_answer(parts[2], parts[4:], not_found)
        if parts[:2] != ["v1", "organizations"] or len(parts) < 5 or parts[3] != "environments":
            return not_found
        org, env_name, rest = parts[2], parts[4], parts[5:]
        data = self.envs.get((org, env_name))
        if data is None or not rest:
            return not_found
        kind, args = rest[0], rest[1:]
        if kind == "references" and len(args) == 1 and args[0] in data.references:
            return 200, {
                "name": args[0],
                "refers": data.references[args[0]],
                "resourceType": "KeyStore",
            }
        if kind == "deployments" and not args:
            return 200, {
                "name": env_name,
                "aPIProxy": [
                    {"name": api, "revision": [{"name": r, "state": "deployed"} for r in revs]}
                    for api, revs in sorted(data.deployed.items())
                ],
            }
        if kind == "targetservers" and not args:
            return 200, sorted(data.target_servers)
        if kind == "targetservers" and len(args) == 1 and args[0] in data.target_servers:
            return 200, data.target_servers[args[0]]
        if kind != "keystores":
            return not_found
        if not args:
            return 200, sorted(data.keystores)
        store = data.keystores.get(args[0])
        if store is None:
            return not_found
        if args[1:] == ["certs"]:
            return 200, [f"{alias}-cert" for alias, chain in store.items() if chain]
        if args[1:] == ["aliases"]:
            return 200, sorted(store)
        if len(args) == 3 and args[1] == "certs":
            alias = args[2][: -len("-cert")] if args[2].endswith("-cert") else ""
            if store.get(alias):
                return 200, {"certName": args[2], "certInfo": store[alias]}
        if len(args) == 3 and args[1] == "aliases" and args[2] in store:
            chain = store[args[2]]
            return 200, {
                "alias": args[2],
                "certsInfo": {"certInfo": chain, "certName": f"{args[2]}-cert"},
                "keyName": f"{args[2]}-key",
            }
        return not_found

    def _proxy_answer(
        self, org: str, rest: list[str], not_found: tuple[int, Any]
    ) -> tuple[int, Any]:
        """``apis/{api}/revisions/{rev}/targets[/{name}]`` (``rest`` starts at the api)."""
        if len(rest) < 4 or rest[1] != "revisions" or rest[3] != "targets":
            return not_found
        revision = self.revisions.get((org, rest[0], rest[2]))
        if revision is None:
            return not_found
        if len(rest) == 4:
            return 200, sorted(revision.targets)
        if len(rest) == 5 and rest[4] in revision.targets:
            return 200, revision.targets[rest[4]]
        return not_found
