"""The ``diagnose`` subcommand: options, the client identity they describe, and the run.

``daemon/cli.py`` hands ``diagnose``'s arguments here; this is the only place that turns them into
an identity and MP settings, and into an exit code (0 a cause was decided, 1 ``unknown``, 2 bad
arguments, one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Optional

from cryptography import x509

from ..errors import UsageError
from .decide import Clock, run_diagnosis
from .identity import (
    ClientIdentity,
    identity_from_management,
    identity_from_target_server,
    load_pem_identity,
    load_pkcs12_identity,
    read_file,
)
from .mgmt import (
    Credentials,
    ManagementAPIError,
    ManagementClient,
    TargetServerSSL,
    read_secret,
)
from .probe import PROTOCOLS, parse_target
from .report import render_report


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``diagnose`` options to ``parser``."""
    parser.add_argument("--target", required=True, metavar="HOST:PORT", help="backend to probe")
    parser.add_argument(
        "--servername",
        help="SNI name the MP sends (default: the target's host name, none for an IP address; "
        "'' for none)",
    )
    mp = parser.add_argument_group("the MP's side of the handshake (TargetServer <SSLInfo>)")
    mp.add_argument(
        "--protocols", metavar="LIST", help="e.g. TLSv1.2 or TLSv1.2,TLSv1.3 (default: the JVM's)"
    )
    mp.add_argument(
        "--ciphers", metavar="LIST", help="Java cipher suite names, comma separated (default: all)"
    )
    mp.add_argument(
        "--received",
        metavar="REASON",
        help="the alert the MP logged (reason label, e.g. bad_certificate): what it means is "
        "reported when no cause is certain",
    )
    files = parser.add_argument_group("client identity from files")
    files.add_argument("--client-cert", metavar="PEM", help="client certificate chain, leaf first")
    files.add_argument("--client-key", metavar="PEM", help="private key of the client certificate")
    files.add_argument("--pkcs12", metavar="FILE", help="PKCS#12 file with key and chain")
    files.add_argument("--pkcs12-password-file", metavar="FILE")
    files.add_argument("--pkcs12-password-env", metavar="VAR")
    api = parser.add_argument_group("client identity from the Edge management API")
    api.add_argument("--management-url", metavar="URL", help="e.g. http://ms:8080/v1")
    api.add_argument("--org")
    api.add_argument("--env")
    api.add_argument("--keystore", metavar="NAME|ref://REF")
    api.add_argument("--key-alias", metavar="ALIAS")
    api.add_argument("--target-server", metavar="NAME", help="read keyStore/keyAlias from sSLInfo")
    api.add_argument("--username")
    api.add_argument("--password-file", metavar="FILE")
    api.add_argument("--password-env", metavar="VAR")
    api.add_argument("--token-file", metavar="FILE", help="OAuth bearer token")
    api.add_argument("--token-env", metavar="VAR")
    api.add_argument(
        "--insecure", action="store_true", help="do not verify the management API's TLS"
    )
    api.add_argument("--ca-file", metavar="PEM", help="CA bundle for the management API")
    parser.add_argument(
        "--backend-ca-file",
        metavar="PEM",
        help="CAs of the MP truststore: check the backend's chain against them",
    )
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds per connection (default 10)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _secret(path: Optional[str], env: Optional[str], what: str) -> Optional[str]:
    try:
        return read_secret(path, env)
    except ValueError as err:
        raise UsageError(f"{what}: {err}") from None


def _credentials(args: argparse.Namespace) -> Credentials:
    password = _secret(args.password_file, args.password_env, "password")
    token = _secret(args.token_file, args.token_env, "token")
    if token and (args.username or password):
        raise UsageError("give either --username with a password or a token, not both")
    if args.username and not password:
        raise UsageError("--username needs --password-file or --password-env")
    if password and not args.username:
        raise UsageError("a password needs --username")
    return Credentials(username=args.username, password=password, token=token)


def identity_from_args(args: argparse.Namespace) -> Optional[ClientIdentity]:
    """The client identity the options describe; ``UsageError``/``ManagementAPIError`` if bad."""
    return identity_and_server(args)[0]


def identity_and_server(
    args: argparse.Namespace,
) -> tuple[Optional[ClientIdentity], Optional[TargetServerSSL]]:
    """The client identity and, with ``--target-server``, the TargetServer's ``sSLInfo``."""
    uses_files = bool(args.client_cert or args.client_key)
    uses_p12 = bool(args.pkcs12)
    uses_api = bool(args.management_url)
    if sum((uses_files, uses_p12, uses_api)) > 1:
        raise UsageError(
            "give one client identity: --client-cert/--client-key, --pkcs12 or --management-url"
        )
    if uses_files:
        if not (args.client_cert and args.client_key):
            raise UsageError("--client-cert and --client-key go together")
        return load_pem_identity(args.client_cert, args.client_key), None
    if uses_p12:
        password = _secret(args.pkcs12_password_file, args.pkcs12_password_env, "PKCS#12 password")
        return load_pkcs12_identity(args.pkcs12, password.encode() if password else None), None
    if not uses_api:
        if args.keystore or args.target_server or args.org or args.env:
            raise UsageError("--keystore/--target-server/--org/--env need --management-url")
        return None, None
    if not (args.org and args.env):
        raise UsageError("--management-url needs --org and --env")
    if bool(args.keystore) == bool(args.target_server):
        raise UsageError("--management-url needs either --keystore or --target-server")
    try:
        client = ManagementClient(
            args.management_url,
            _credentials(args),
            verify=not args.insecure,
            ca_file=args.ca_file,
            timeout=args.timeout,
        )
    except ValueError as exc:  # a bad URL or an unreadable --ca-file
        raise UsageError(str(exc)) from None
    if args.target_server:
        if args.key_alias:
            raise UsageError("--key-alias comes from the target server's sSLInfo; drop it")
        return identity_from_target_server(client, args.org, args.env, args.target_server)
    identity = identity_from_management(client, args.org, args.env, args.keystore, args.key_alias)
    return identity, None


def _names(text: Optional[str]) -> tuple[str, ...]:
    return tuple(p.strip() for p in (text or "").replace(" ", ",").split(",") if p.strip())


def command(args: argparse.Namespace, *, clock: Clock = time.time) -> int:
    """Run ``diagnose``: 0 when a cause was decided, 1 for ``unknown``, 2 for bad arguments."""
    try:
        parse_target(args.target)
        if not args.timeout > 0:
            raise UsageError("--timeout must be positive")
        protocols, ciphers = _names(args.protocols), _names(args.ciphers)
        unknown = [p for p in protocols if p not in PROTOCOLS]
        if unknown:
            raise UsageError(
                f"--protocols: unknown protocol {unknown[0]} (known: {', '.join(PROTOCOLS)})"
            )
        if args.backend_ca_file:
            data = read_file(args.backend_ca_file, "--backend-ca-file")
            try:
                x509.load_pem_x509_certificates(data)
            except ValueError:
                raise UsageError(
                    f"--backend-ca-file {args.backend_ca_file}: no PEM certificate found"
                ) from None
        identity, server = identity_and_server(args)
    except (UsageError, ValueError, ManagementAPIError) as exc:
        print(f"diagnose: error: {exc}", file=sys.stderr)
        return 2
    if server is not None:  # the TargetServer's sSLInfo, unless given on the command line
        protocols = protocols or server.protocols
        ciphers = ciphers or server.ciphers
    diagnosis = run_diagnosis(
        args.target,
        servername=args.servername,
        identity=identity,
        timeout=args.timeout,
        ca_file=args.backend_ca_file,
        clock=clock,
        protocols=protocols,
        ciphers=ciphers,
        received=args.received,
    )
    if args.json:
        print(json.dumps(diagnosis.to_json(), indent=2, sort_keys=True))
    else:
        print(render_report(diagnosis), end="")
    return 1 if diagnosis.cause == "unknown" else 0
