"""Probe targets from the management API, as Prometheus service discovery (``file_sd``/``http_sd``).

Every TargetServer whose ``sSLInfo.enabled`` is true becomes one target group: its
``host:port`` and the labels the ``/probe`` scrape job turns into query parameters (``org``,
``env``, ``keystore``, ``key_alias``, ``protocols``), with ``target_server`` naming it. A
TargetServer without client authentication gets an empty ``key_alias`` (the probe checks the
server side alone). With ``endpoints``, the TargetEndpoints of every deployed proxy revision
that have their own ``<URL>`` and TLS come too (``target_endpoint``: ``API/NAME``), once per
distinct probe: many revisions with the same backend and identity make one target.
The output is the whole current list, sorted: a TargetServer deleted, or with TLS switched off,
is simply absent, so Prometheus drops it.

``targets`` (the subcommand) writes the list to a file atomically; ``/sd`` (``SdEndpoint``)
answers it to ``http_sd_configs``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Optional, TypeVar, Union

from .mgmt import ManagementAPIError, ManagementClient, TargetEndpointSSL, TargetServerSSL

Clock = Callable[[], float]
T = TypeVar("T")
Group = dict[str, Any]  # {"targets": [...], "labels": {...}}


def scope(text: str) -> tuple[str, str]:
    """``ORG/ENV`` to ``(org, env)``; ValueError otherwise."""
    org, sep, env = text.partition("/")
    if not sep or not org or not env or "/" in env:
        raise ValueError(f"expected ORG/ENV, got {text!r}")
    return org, env


def group(org: str, env: str, server: Union[TargetServerSSL, TargetEndpointSSL]) -> Group:
    """The target group of one TargetServer or TargetEndpoint."""
    client_auth = server.client_auth_enabled
    endpoint = f"{server.api}/{server.name}" if isinstance(server, TargetEndpointSSL) else ""
    return {
        "targets": [f"{server.host}:{server.port}"],
        "labels": {
            "org": org,
            "env": env,
            "target_server": "" if endpoint else server.name,
            "target_endpoint": endpoint,
            "keystore": server.key_store if client_auth else "",
            "key_alias": server.key_alias if client_auth else "",
            "protocols": ",".join(server.protocols),
        },
    }


def _skip_missing(read: Callable[..., T], *args: str) -> Optional[T]:
    """``read(*args)``, or None when what it reads was deleted since it was listed."""
    try:
        return read(*args)
    except ManagementAPIError as exc:
        if exc.kind == "not_found":
            return None
        raise


def _endpoints(client: ManagementClient, org: str, env: str) -> list[TargetEndpointSSL]:
    found = []
    for api, rev in client.deployed_revisions(org, env):
        names = _skip_missing(client.list_target_endpoints, org, api, rev) or []
        for name in names:
            endpoint = _skip_missing(client.get_target_endpoint, org, api, rev, name)
            if endpoint is not None:
                found.append(endpoint)
    return found


def discover(
    client: ManagementClient, scopes: Sequence[tuple[str, str]], *, endpoints: bool = False
) -> list[Group]:
    """Every TLS TargetServer (and, with ``endpoints``, TargetEndpoint) of the environments,
    one group per distinct probe, sorted; ``ManagementAPIError`` when the API fails (a partial
    list would make Prometheus drop live targets)."""
    groups: dict[tuple[Any, ...], Group] = {}
    for org, env in scopes:
        servers: list[Union[TargetServerSSL, TargetEndpointSSL]] = []
        for name in client.list_target_servers(org, env):
            read = _skip_missing(client.get_target_server, org, env, name)
            if read is not None:
                servers.append(read)
        if endpoints:
            servers.extend(_endpoints(client, org, env))
        for one in servers:
            if one.enabled and one.host and 0 < one.port < 65536:
                found = group(org, env, one)
                labels = found["labels"]
                key = (found["targets"][0], org, env, labels["keystore"], labels["key_alias"],
                       labels["protocols"])  # fmt: skip
                groups.setdefault(key, found)
    return sorted(groups.values(), key=lambda g: (g["targets"], sorted(g["labels"].items())))


def render(groups: Sequence[Group]) -> str:
    """The ``file_sd`` JSON text."""
    return json.dumps(list(groups), indent=2, sort_keys=True) + "\n"


def write_atomically(path: str, text: str) -> None:
    """Replace ``path`` with ``text`` in one rename: Prometheus never reads half a file."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".targets-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


class SdEndpoint:
    """``GET /sd?env=ORG/ENV[&env=...][&target_endpoints=1]``: the same list for
    ``http_sd_configs``.

    A route handler (query parameters, lower-cased headers) -> (status, content type, body).
    Answers are kept ``ttl`` seconds per set of environments; a failing management API answers
    503 (Prometheus then keeps the targets it had).
    """

    def __init__(
        self, client: ManagementClient, *, ttl: float = 60.0, clock: Clock = time.monotonic
    ) -> None:
        self._client = client
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[tuple[tuple[tuple[str, str], ...], bool], tuple[float, bytes]] = {}

    def __call__(
        self, params: Mapping[str, list[str]], headers: Mapping[str, str]
    ) -> tuple[int, str, bytes]:
        try:
            scopes = tuple(sorted({scope(v) for v in params.get("env", [])}))
        except ValueError as err:
            return 400, "text/plain; charset=utf-8", f"env: {err}\n".encode()
        if not scopes:
            return 400, "text/plain; charset=utf-8", b"env=ORG/ENV is required\n"
        endpoints = params.get("target_endpoints", [""])[-1] in ("1", "true")
        key = (scopes, endpoints)
        now = self._clock()
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and now - hit[0] < self._ttl:
            return 200, "application/json", hit[1]
        try:
            body = render(discover(self._client, scopes, endpoints=endpoints)).encode()
        except ManagementAPIError as err:
            return 503, "text/plain; charset=utf-8", f"management API: {err.kind}\n".encode()
        with self._lock:
            self._cache = {k: v for k, v in self._cache.items() if now - v[0] < self._ttl}
            self._cache[key] = (now, body)
        return 200, "application/json", body


def command(args: argparse.Namespace) -> int:
    """``targets``: the list from the management API of the config's ``diagnosis:``, to
    ``--output`` (replaced atomically) or stdout; one line on stderr and exit 1 on failure."""
    from ..config import ConfigError, load_config
    from .inventory import client_from_config

    prog = "apigee-tls-exporter targets"
    try:
        scopes = [scope(text) for text in args.envs]
        config = load_config(args.config).diagnosis
        if not config.management_url:
            raise ValueError(f"{args.config}: diagnosis.management_url is not set")
        groups = discover(client_from_config(config), scopes, endpoints=args.target_endpoints)
    except ConfigError as err:
        print(f"{prog}: {args.config}: invalid configuration: {'; '.join(err.problems)}",
              file=sys.stderr)  # fmt: skip
        return 1
    except (ValueError, ManagementAPIError) as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return 1
    text = render(groups)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        write_atomically(args.output, text)
    except OSError as err:
        print(f"{prog}: {args.output}: {err.strerror or err}", file=sys.stderr)
        return 1
    return 0
