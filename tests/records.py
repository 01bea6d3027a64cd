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


def failed(
    *,
    message: str = "Received fatal alert: bad_certificate",
    remote: str = "backend.example.com/10.20.3.4:443",
    ctx: str = CTX,
    thread: str = "NIOThread@0",
    stamp: str = STAMP,
) -> str:
    """A ``handshakeFailed()`` line; ``remote`` as Java prints it (hostname/ip:port)."""
    return (
        f"{stamp} {ctx}{thread} ERROR HTTP.CLIENT - HTTPClient$Context.handshakeFailed() : "
        f"SSLClientChannel[C:10.0.3.4:52144 Remote host:{remote}]@65461 useCount=1 bytesRead=0 "
        f"bytesWritten=0 age=529ms lastIO=529ms handshake failed, message: {message}"
    )


def timeout(
    *,
    remote: str = "10.20.3.4:443",
    ctx: str = CTX,
    thread: str = "NIOThread@2",
    stamp: str = STAMP,
) -> str:
    """A ``handshakeTimeout()`` line."""
    return (
        f"{stamp} {ctx}{thread} ERROR HTTP.CLIENT - HTTPClient$Context.handshakeTimeout() : "
        f"SSLClientChannel[Connected: Remote:{remote} Local:10.0.3.4]@739028 useCount=1 "
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


def text(lines: list[str]) -> str:
    """Lines as they are appended to the log, each with its newline."""
    return "".join(line + "\n" for line in lines)
