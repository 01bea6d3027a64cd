"""The guard's parts on their own: the bounded priority queue and the remembered answers."""

from __future__ import annotations

import asyncio
import base64

import bcrypt
from apigee_tls_exporter.web import guard
from apigee_tls_exporter.web.serve import MetricsServer
from apigee_tls_exporter.web.webconfig import BasicAuth, WebConfig
from prometheus_client import CollectorRegistry

HASH = bcrypt.hashpw(b"right", bcrypt.gensalt(rounds=4)).decode()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_full_queue_gives_a_newcomer_the_place_of_the_worst() -> None:
    """With the slot taken and the queue full, a newcomer takes the place of the waiting one
    with the most failures (told False); at equal failures, of the oldest; a newcomer with more
    failures than every waiting one is refused; the slot goes lowest priority first."""
    outcome: dict[str, bool] = {}

    async def main() -> None:
        slots = guard.PrioritySlots(1, max_waiting=2)
        assert await slots.acquire(0)

        async def waiter(name: str, priority: int) -> None:
            outcome[name] = await slots.acquire(priority)
            if outcome[name]:
                slots.release()

        tasks = []
        for name, priority in (("flood", 5), ("early", 1), ("fresh", 0), ("late", 1), ("worse", 9)):
            tasks.append(asyncio.ensure_future(waiter(name, priority)))
            await asyncio.sleep(0)
        slots.release()
        await asyncio.gather(*tasks)

    asyncio.run(main())

    assert outcome == {
        "flood": False,  # the most failures: out for "fresh"
        "early": False,  # equal to "late", older: out for it
        "fresh": True,
        "late": True,
        "worse": False,  # more failures than every waiting one
    }


def test_refused_credentials_are_refused_again_without_bcrypt() -> None:
    """A wrong password once verified is refused by ``cached`` (no bcrypt) until cache_seconds
    have passed; the right one is accepted by it; another wrong one still needs verify."""
    now = [0.0]
    auth = BasicAuth({"u": HASH}, cache_seconds=60, clock=lambda: now[0])

    before = auth.cached(basic("u", "wrong"))
    verified = (auth.verify(basic("u", "wrong")), auth.verify(basic("u", "right")))
    remembered = (auth.cached(basic("u", "wrong")), auth.cached(basic("u", "right")))
    other = auth.cached(basic("u", "other"))
    now[0] = 61.0
    later = auth.cached(basic("u", "wrong"))

    assert (before, verified, remembered, other, later) == (
        None,
        (False, True),
        (False, True),
        None,
        None,
    )


def test_refused_memory_is_bounded() -> None:
    """At most max_refused refused credentials are remembered, the oldest forgotten first."""
    auth = BasicAuth({"u": HASH}, max_refused=3)
    for i in range(5):
        auth.verify(basic("u", f"wrong-{i}"))

    assert [auth.cached(basic("u", f"wrong-{i}")) for i in range(5)] == [
        None,
        None,
        False,
        False,
        False,
    ]


def test_reload_with_the_same_users_keeps_the_logins() -> None:
    """set_web_config with the same users keeps their BasicAuth (a SIGHUP does not make the
    scraper pay a bcrypt again); other users get a new one."""
    server = MetricsServer(CollectorRegistry(), "127.0.0.1", 0)
    try:
        server.set_web_config(WebConfig.model_validate({"basic_auth_users": {"u": HASH}}))
        first = server.basic_auth
        server.set_web_config(WebConfig.model_validate({"basic_auth_users": {"u": HASH}}))
        same = server.basic_auth
        server.set_web_config(
            WebConfig.model_validate({"basic_auth_users": {"u": HASH, "v": HASH}})
        )
        other = server.basic_auth
    finally:
        server.server_close()

    assert first is same and other is not first
