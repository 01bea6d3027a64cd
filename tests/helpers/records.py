"""MP system.log records for the tests, written once as the MP writes them.

The shapes follow ``../shared/reference/mp-log-format.md``; each test module binds the values it
varies (time, thread, message id, backend, alias, message) and keeps its own defaults.
"""

from __future__ import annotations

MESSAGE_ID = "rrt-0d027480041e2a148-a-de-7885-572449-1"
STAMP = "2017-10-23 05:28:57,813"


def context(message_id: str = MESSAGE_ID, api: str = "payments-v1") -> str:
    """The context block with its trailing space; ``""`` (no block) for no message id."""
    if not message_id:
        return ""
    return f"org:acme env:prod api:{api} rev:7 messageid:{message_id} "


CTX = context()


REMOTE_HOST = "remote host"  # SSLClientChannel[C:<mp> Remote host:<backend>]
CONNECTED = "connected"  # SSLClientChannel[Connected: Remote:<backend> Local:<mp>]


def channel(remote: str, rendering: str) -> str:
    """The channel block in one of its two public renderings (either may come with either kind
    of line: which depends on the channel's state or the Edge version is unconfirmed)."""
    if rendering == CONNECTED:
        return f"SSLClientChannel[Connected: Remote:{remote} Local:10.0.3.4]"
    return f"SSLClientChannel[C:10.0.3.4:52144 Remote host:{remote}]"


def failed(
    *,
    message: str = "Received fatal alert: bad_certificate",
    remote: str = "backend.example.com/10.20.3.4:443",
    ctx: str = CTX,
    thread: str = "NIOThread@0",
    stamp: str = STAMP,
    rendering: str = REMOTE_HOST,
) -> str:
    """A ``handshakeFailed()`` line; ``remote`` as Java prints it (hostname/ip:port)."""
    return (
        f"{stamp} {ctx}{thread} ERROR HTTP.CLIENT - HTTPClient$Context.handshakeFailed() : "
        f"{channel(remote, rendering)}@65461 useCount=1 bytesRead=0 "
        f"bytesWritten=0 age=529ms lastIO=529ms handshake failed, message: {message}"
    )


def timeout(
    *,
    remote: str = "10.20.3.4:443",
    ctx: str = CTX,
    thread: str = "NIOThread@2",
    stamp: str = STAMP,
    rendering: str = CONNECTED,
) -> str:
    """A ``handshakeTimeout()`` line."""
    return (
        f"{stamp} {ctx}{thread} ERROR HTTP.CLIENT - HTTPClient$Context.handshakeTimeout() : "
        f"{channel(remote, rendering)}@739028 useCount=1 "
        "bytesRead=0 bytesWritten=0 age=55001ms lastIO=55001ms handshake timeout"
    )


def ssl_info(
    *,
    alias: str = "backend-client",
    ctx: str = CTX,
    thread: str = "NIOThread@0",
    stamp: str = STAMP,
) -> str:
    """The ``SSLInfo:`` line that names the KeyAlias of a failure."""
    return (
        f"{stamp} {ctx}{thread} ERROR HTTP.CLIENT - HTTPClient$Context.handshakeFailed() : "
        f"SSLInfo: KeyStore:java.security.KeyStore@52de60d9 KeyAlias:{alias} "
        "TrustStore:java.security.KeyStore@6ec45759"
    )


def traffic(*, ctx: str = CTX, thread: str = "NIOThread@1", stamp: str = STAMP) -> str:
    """An ordinary record of another thread."""
    return (
        f"{stamp} {ctx}{thread} INFO MESSAGING.RUNTIME - "
        "AbstractRequestListener.onRequest() : request received"
    )


def on_exception(
    *,
    alert: str = "bad_certificate",
    ctx: str = CTX,
    thread: str = "NIOThread@0",
    stamp: str = "2017-10-23 05:28:57,814",
) -> list[str]:
    """The onException record that repeats a failure's alert, with its stack trace."""
    return [
        f"{stamp} {ctx}{thread} ERROR ADAPTORS.HTTP.FLOW - "
        "RequestWriteListener.onException() : "
        "RequestWriteListener.onException(HTTPRequest@6071a73d)",
        f"javax.net.ssl.SSLException: Received fatal alert: {alert}",
        "\tat sun.security.ssl.Alerts.getSSLException(Alerts.java:208) ~[na:1.8.0_101]",
        "\tat com.apigee.protocol.http.HTTPClient$Context.handshakeFailed(HTTPClient.java:1006) "
        "~[http-1.0.0.jar:na]",
    ]


def exception_record(
    exception: str = "javax.net.ssl.SSLHandshakeException: "
    "(certificate_required) Received fatal alert: certificate_required",
    *,
    ctx: str = CTX,
    thread: str = "NIOThread@0",
    stamp: str = "2017-10-23 05:28:57,814",
    caused_by: str = "",
) -> list[str]:
    """An onException record whose exception line is ``exception`` (class and message), with a
    stack trace, and ``Caused by: <caused_by>`` after it when given: the trace of a failure the
    MP may log without a handshakeFailed line (TLS 1.3: the alert comes on the first read)."""
    lines = [
        f"{stamp} {ctx}{thread} ERROR ADAPTORS.HTTP.FLOW - "
        "RequestWriteListener.onException() : "
        "RequestWriteListener.onException(HTTPRequest@6071a73d)",
        exception,
        "\tat sun.security.ssl.Alert.createSSLException(Alert.java:131) ~[na:17.0.21]",
        "\tat sun.security.ssl.SSLEngineImpl.unwrap(SSLEngineImpl.java:453) ~[na:17.0.21]",
    ]
    if caused_by:
        lines += [
            f"Caused by: {caused_by}",
            "\tat sun.security.ssl.Alert.createSSLException(Alert.java:131) ~[na:17.0.21]",
            "\t... 12 common frames omitted",
        ]
    return lines


def text(lines: list[str]) -> str:
    """Lines as they are appended to the log, each with its newline."""
    return "".join(line + "\n" for line in lines)
