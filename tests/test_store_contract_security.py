"""The storage contract of account security, on SQLite and PostgreSQL: sessions a user can
list and end, password changes (tests/test_store_contract.py has the rest, and the fixtures)."""

from __future__ import annotations

import time

from paygate.gateway.store import GatewayStore
from test_store_contract import ALICE, BOB, Backend, backend, pg_schemas, run, with_users

__all__ = ["backend", "pg_schemas"]  # the fixtures, used by name

LATER_S = time.time() + 3600


def test_sessions_have_a_public_id_an_address_and_a_last_use(backend: Backend) -> None:
    async def body(store: GatewayStore) -> None:
        await with_users(store)
        await store.insert_session("t1", ALICE.user_id, LATER_S, client_address="ipv4:10.0.0.1")
        await store.insert_session("t2", ALICE.user_id, LATER_S, session_id="ses_" + "a" * 24)
        await store.insert_session("t3", BOB.user_id, LATER_S)
        await store.insert_session("old", ALICE.user_id, time.time() - 1)
        listed = await store.live_sessions(ALICE.user_id, now_s=time.time(), limit=10)
        assert {s.token_hash for s in listed} == {"t1", "t2"}
        by_hash = {s.token_hash: s for s in listed}
        assert by_hash["t2"].session_id == "ses_" + "a" * 24
        assert by_hash["t1"].session_id.startswith("ses_")
        assert "t1" not in by_hash["t1"].session_id
        assert by_hash["t1"].client_address == "ipv4:10.0.0.1"
        first = by_hash["t1"].last_used_at_s
        await store.touch_session("t1", first + 120)
        found = await store.session("t1")
        assert found is not None and found.last_used_at_s == first + 120
        assert found.session_id == by_hash["t1"].session_id
        assert len(await store.live_sessions(ALICE.user_id, now_s=time.time(), limit=1)) == 1

    run(backend.gateway(backend.fresh("gateway")), body)


def test_a_session_is_revoked_by_id_only_by_its_user(backend: Backend) -> None:
    async def body(store: GatewayStore) -> None:
        await with_users(store)
        await store.insert_session("t1", ALICE.user_id, LATER_S, session_id="ses_" + "1" * 24)
        assert await store.revoke_session_by_id(BOB.user_id, "ses_" + "1" * 24) is None
        assert await store.revoke_session_by_id(ALICE.user_id, "ses_" + "1" * 24) == "t1"
        assert await store.revoke_session_by_id(ALICE.user_id, "ses_" + "1" * 24) is None
        found = await store.session("t1")
        assert found is not None and found.revoked

    run(backend.gateway(backend.fresh("gateway")), body)


def test_revoking_all_sessions_but_one_and_changing_the_password(backend: Backend) -> None:
    async def body(store: GatewayStore) -> None:
        await with_users(store)
        for token in ("a1", "a2", "a3"):
            await store.insert_session(token, ALICE.user_id, LATER_S)
        await store.insert_session("b1", BOB.user_id, LATER_S)
        assert sorted(await store.change_password(ALICE.user_id, b"new", keep="a1")) == [
            "a2", "a3"
        ]
        assert await store.user_by_username("alice") == (ALICE, b"new")
        assert await store.revoke_sessions_of(ALICE.user_id) == ["a1"]
        assert await store.revoke_sessions_of(ALICE.user_id) == []
        found = await store.session("b1")
        assert found is not None and not found.revoked

    run(backend.gateway(backend.fresh("gateway")), body)
