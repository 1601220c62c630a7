"""The gateway's cache of verified sessions: it saves database reads, and never lets a
revoked or expired token in (paygate.gateway.session_cache, Accounts.authenticate)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from paygate.errors import Unauthenticated
from paygate.gateway.accounts import Accounts, AccountSettings, token_hash
from paygate.gateway.models import Principal, User
from paygate.gateway.session_cache import SessionCache
from paygate.gateway.store import Session

USER = User(
    user_id="usr_1",
    username="alice",
    bank_id="bank-a",
    account_number="100001",
    currency="USD",
)
TOKEN = "token-of-alice"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_cache_keeps_an_answer_for_ttl_then_forgets_it() -> None:
    clock = FakeClock()
    cache: SessionCache[str] = SessionCache(ttl_s=2.0, max_entries=10, clock=clock)
    cache.put("h", "session", cache.generation)
    assert cache.get("h") == "session"
    clock.now += 2.0
    assert cache.get("h") is None
    assert len(cache) == 0


def test_cache_is_bounded_and_drops_the_oldest_first() -> None:
    cache: SessionCache[int] = SessionCache(ttl_s=60, max_entries=3)
    for i in range(5):
        cache.put(f"h{i}", i, cache.generation)
    assert len(cache) == 3
    assert [cache.get(f"h{i}") for i in range(5)] == [None, None, 2, 3, 4]


def test_an_answer_read_before_an_invalidation_is_not_kept() -> None:
    cache: SessionCache[str] = SessionCache()
    generation = cache.generation  # a lookup starts reading the database
    cache.invalidate("h")  # a logout of any token finishes meanwhile
    cache.put("h", "session read before the logout", generation)
    assert cache.get("h") is None


def test_ttl_zero_switches_the_cache_off() -> None:
    cache: SessionCache[str] = SessionCache(ttl_s=0)
    cache.put("h", "session", cache.generation)
    assert cache.get("h") is None


class FakeStore:
    """The store calls authenticate and logout make, with a gate to hold a read."""

    def __init__(self, expire_at_s: float) -> None:
        self.revoked = False
        self.expire_at_s = expire_at_s
        self.reads = 0
        self.hold_reads: asyncio.Event | None = None

    async def session(self, hashed: str) -> Session | None:
        self.reads += 1
        answer = Session(USER, self.expire_at_s, self.revoked)  # read now ...
        if self.hold_reads is not None:
            await self.hold_reads.wait()  # ... returned later
        return answer if hashed == token_hash(TOKEN) else None

    async def revoke_session(self, hashed: str) -> None:
        await asyncio.sleep(0)
        self.revoked = True

    async def touch_session(self, hashed: str, at_s: float) -> None:
        """When the session was last used: nothing any test here reads."""


def accounts(store: FakeStore, ttl_s: float = 2.0) -> Accounts:
    settings = AccountSettings(
        bcrypt_rounds=4, token_ttl_s=3600, bank_call_timeout_s=1.0, session_cache_ttl_s=ttl_s
    )
    fake: Any = store
    return Accounts(fake, banks=fake, settings=settings, throttle=fake)


def test_a_cached_session_skips_the_database_and_logout_revokes_at_once() -> None:
    async def scenario() -> None:
        store = FakeStore(time.time() + 3600)
        gate = accounts(store)
        principal = await gate.authenticate(TOKEN)
        await gate.authenticate(TOKEN)
        assert store.reads == 1
        await gate.logout(Principal(user=USER, token_hash=principal.token_hash))
        with pytest.raises(Unauthenticated):
            await gate.authenticate(TOKEN)
        gate.close()

    asyncio.run(scenario())


def test_a_lookup_racing_a_logout_does_not_bring_the_token_back() -> None:
    async def scenario() -> None:
        store = FakeStore(time.time() + 3600)
        gate = accounts(store)
        store.hold_reads = asyncio.Event()
        slow = asyncio.create_task(gate.authenticate(TOKEN))  # reads "valid", then waits
        await asyncio.sleep(0.01)
        await gate.logout(Principal(user=USER, token_hash=token_hash(TOKEN)))
        store.hold_reads.set()
        await slow  # it began before the logout ended: letting it in is fine
        store.hold_reads = None
        with pytest.raises(Unauthenticated, match="revoked"):
            await gate.authenticate(TOKEN)
        gate.close()

    asyncio.run(scenario())


def test_expiry_is_checked_on_every_call_even_from_the_cache() -> None:
    async def scenario() -> None:
        store = FakeStore(time.time() + 0.2)
        gate = accounts(store, ttl_s=60)
        await gate.authenticate(TOKEN)
        await asyncio.sleep(0.3)
        with pytest.raises(Unauthenticated, match="expired"):
            await gate.authenticate(TOKEN)
        assert store.reads == 1
        gate.close()

    asyncio.run(scenario())


def test_a_revocation_elsewhere_is_seen_within_the_ttl() -> None:
    async def scenario() -> None:
        store = FakeStore(time.time() + 3600)
        gate = accounts(store, ttl_s=0.1)
        await gate.authenticate(TOKEN)
        store.revoked = True  # another gateway process revoked it in the shared database
        await asyncio.sleep(0.15)
        with pytest.raises(Unauthenticated, match="revoked"):
            await gate.authenticate(TOKEN)
        gate.close()

    asyncio.run(scenario())
