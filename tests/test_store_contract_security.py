"""The storage contract of account security, on SQLite and PostgreSQL: sessions a user can
list and end, password changes, two-factor state, and what operators do to users (frozen
users, two-factor reset, the audit table) (tests/test_store_contract.py has the rest, and
the fixtures)."""

from __future__ import annotations

import asyncio
import pathlib
import secrets
import sqlite3
import time
from typing import Any

from paygate.common.database_url import PostgresUrl
from paygate.gateway.models import ActionDone, BeginOutcome, UserAction
from paygate.gateway.store import GatewayStore
from paygate.gateway.store_postgres import PostgresGatewayStore
from paygate.gateway.totp import SecretBox
from paygate.gateway.two_factor import TwoFactor
from test_store_contract import (
    ALICE,
    BOB,
    CAROL,
    Backend,
    backend,
    payment,
    pg_schemas,
    run,
    with_users,
)
from totp_codes import rfc6238

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
        assert sorted(await store.change_password(ALICE.user_id, b"new", keep="a1")) == ["a2", "a3"]
        assert await store.user_by_username("alice") == (ALICE, b"new")
        assert await store.revoke_sessions_of(ALICE.user_id) == ["a1"]
        assert await store.revoke_sessions_of(ALICE.user_id) == []
        found = await store.session("b1")
        assert found is not None and not found.revoked

    run(backend.gateway(backend.fresh("gateway")), body)


def test_two_factor_state_and_each_step_and_recovery_code_used_once(backend: Backend) -> None:
    async def body(store: GatewayStore) -> None:
        await with_users(store)
        off = await store.totp(ALICE.user_id)
        assert (off.enabled, off.pending, off.recovery_codes_left) == (False, None, 0)
        assert not await store.use_totp_step(ALICE.user_id, 5)  # off: nothing to use
        await store.set_totp_pending(ALICE.user_id, b"sealed-1")
        await store.set_totp_pending(ALICE.user_id, b"sealed-2")
        assert not await store.enable_totp(ALICE.user_id, b"sealed-1", step=9, code_hashes=["x"])
        assert await store.enable_totp(ALICE.user_id, b"sealed-2", step=9, code_hashes=["h1", "h2"])
        on = await store.totp(ALICE.user_id)
        assert (on.secret, on.pending, on.last_step, on.recovery_codes_left) == (
            b"sealed-2",
            None,
            9,
            2,
        )
        assert [await store.use_totp_step(ALICE.user_id, s) for s in (9, 8, 10, 10, 12)] == [
            False,
            False,
            True,
            False,
            True,
        ]
        assert await store.use_recovery_code(ALICE.user_id, "h1", 1.0)
        assert not await store.use_recovery_code(ALICE.user_id, "h1", 2.0)
        assert not await store.use_recovery_code(BOB.user_id, "h2", 2.0)
        await store.replace_recovery_codes(ALICE.user_id, ["h3"])
        assert not await store.use_recovery_code(ALICE.user_id, "h2", 2.0)
        assert (await store.totp(ALICE.user_id)).recovery_codes_left == 1
        await store.disable_totp(ALICE.user_id)
        assert await store.totp(ALICE.user_id) == off

    run(backend.gateway(backend.fresh("gateway")), body)


def test_the_totp_secret_is_stored_sealed(backend: Backend) -> None:
    """Through the domain module, with the gateway's sealing: the base32 secret and the
    recovery codes are nowhere in the database (the SQLite file and its WAL, or PostgreSQL's
    users and recovery_codes tables as text)."""

    async def no_password_check(user: object, password: str, peer: str) -> None:
        return None

    async def dump(conn: Any) -> bytes:
        rows = await (await conn.execute("SELECT u::text FROM users u")).fetchall()
        rows += await (await conn.execute("SELECT r::text FROM recovery_codes r")).fetchall()
        return "".join(str(row[0]) for row in rows).encode()

    async def body(store: GatewayStore) -> tuple[list[str], bytes]:
        await with_users(store)
        two_factor = TwoFactor(store, SecretBox(secrets.token_bytes(32)), no_password_check)
        secret, _ = await two_factor.enroll(ALICE, "", "")
        codes = await two_factor.confirm(ALICE, rfc6238(secret, two_factor.clock.step()))
        assert len(codes) == 10 and (await store.totp(ALICE.user_id)).enabled
        if isinstance(store, PostgresGatewayStore):
            return [secret, *codes], await store._postgres.transaction(dump)
        return [secret, *codes], b""

    location = backend.fresh("gateway")
    secret_texts, data = run(backend.gateway(location), body)
    if not isinstance(location, PostgresUrl):
        files = [pathlib.Path(f"{location}{suffix}") for suffix in ("", "-wal")]
        data = b"".join(f.read_bytes() for f in files if f.exists())
    assert len(data) > 1000 or isinstance(location, PostgresUrl)
    found = [
        text[:4]
        for text in secret_texts
        for form in {text, text.lower(), text.replace("-", "")}
        if form.encode() in data
    ]
    assert found == []


FREEZE, UNFREEZE, RESET = UserAction.FREEZE, UserAction.UNFREEZE, UserAction.RESET_TWO_FACTOR


async def act(store: GatewayStore, action: UserAction, username: str, reason: str = "") -> Any:
    return await store.act_on_user(
        action, username, operator="admin", reason=reason, at_s=time.time()
    )


def test_a_frozen_user_gets_no_session_and_takes_part_in_no_payment(backend: Backend) -> None:
    async def body(store: GatewayStore) -> None:
        await with_users(store)
        assert await store.insert_session("a1", ALICE.user_id, LATER_S)
        assert await store.insert_session("a2", ALICE.user_id, LATER_S)
        assert await store.insert_session("b1", BOB.user_id, LATER_S)
        frozen = await act(store, FREEZE, "alice", "card reported stolen")
        assert frozen.changed and sorted(frozen.ended) == ["a1", "a2"]
        for token in ("a1", "a2"):
            found = await store.session(token)
            assert found is not None and found.revoked
        assert not (await store.session("b1")).revoked  # type: ignore[union-attr]
        assert not await store.insert_session("a3", ALICE.user_id, LATER_S)
        assert await store.session("a3") is None
        for payer, payee in ((ALICE, BOB), (BOB, ALICE)):
            refused = await store.begin_payment(f"k-{payer.username}", "h", payment(payer, payee))
            assert (refused.outcome, refused.frozen) == (BeginOutcome.FROZEN, (ALICE.user_id,))
        assert await store.list_payments(BOB.user_id, before_seq=None, limit=10) == []
        assert await store.frozen_parties(BOB.user_id, ALICE.user_id) == [ALICE.user_id]
        assert await store.frozen_parties(BOB.user_id, CAROL.user_id) == []
        assert await act(store, FREEZE, "alice") == ActionDone(changed=False)

        assert await act(store, UNFREEZE, "alice") == ActionDone(changed=True)
        assert await act(store, UNFREEZE, "alice") == ActionDone(changed=False)
        assert (await store.session("a1")).revoked  # type: ignore[union-attr]
        assert await store.insert_session("a4", ALICE.user_id, LATER_S)
        started = await store.begin_payment("k-again", "h", payment(BOB, ALICE))
        assert started.outcome == BeginOutcome.STARTED

    run(backend.gateway(backend.fresh("gateway")), body)


def test_the_status_an_operator_sees_and_the_audit_trail(backend: Backend) -> None:
    async def body(store: GatewayStore) -> None:
        await with_users(store)
        now_s = time.time()
        assert await store.user_status("nobody", now_s=now_s, recent_actions=10) is None
        assert await act(store, FREEZE, "nobody") is None
        await store.insert_session("a1", ALICE.user_id, LATER_S)
        await store.insert_session("a2", ALICE.user_id, LATER_S)
        await store.insert_session("old", ALICE.user_id, now_s - 1)
        await store.revoke_session("a2")
        status = await store.user_status("alice", now_s=now_s, recent_actions=10)
        assert status is not None
        assert (status.user, status.frozen, status.two_factor_enabled) == (ALICE, False, False)
        assert (status.live_sessions, status.recovery_codes_left, status.recent_actions) == (
            1,
            0,
            (),
        )
        assert abs(status.created_at_s - now_s) < 60
        await act(store, FREEZE, "alice", "first")
        await act(store, FREEZE, "alice", "second")
        await act(store, UNFREEZE, "alice", "cleared")
        await act(store, FREEZE, "bob", "not alice")
        status = await store.user_status("alice", now_s=time.time(), recent_actions=2)
        assert status is not None and not status.frozen and status.live_sessions == 0
        assert [(a.action, a.reason, a.changed, a.operator) for a in status.recent_actions] == [
            (UNFREEZE, "cleared", True, "admin"),
            (FREEZE, "second", False, "admin"),
        ]
        assert status.recent_actions[0].at_s >= status.recent_actions[1].at_s > 0
        bob = await store.user_status("bob", now_s=time.time(), recent_actions=10)
        assert bob is not None and bob.frozen and len(bob.recent_actions) == 1

    run(backend.gateway(backend.fresh("gateway")), body)


def test_resetting_two_factor_deletes_the_secret_and_the_recovery_codes(
    backend: Backend,
) -> None:
    async def body(store: GatewayStore) -> None:
        await with_users(store)
        await store.set_totp_pending(ALICE.user_id, b"sealed")
        assert await store.enable_totp(ALICE.user_id, b"sealed", step=3, code_hashes=["h1", "h2"])
        await store.set_totp_pending(ALICE.user_id, b"next")
        await store.set_totp_pending(BOB.user_id, b"bob's")
        on = await store.user_status("alice", now_s=time.time(), recent_actions=1)
        assert on is not None and on.two_factor_enabled and on.recovery_codes_left == 2
        assert await act(store, RESET, "alice", "lost phone") == ActionDone(changed=True)
        off = await store.totp(ALICE.user_id)
        assert (off.secret, off.pending, off.last_step, off.recovery_codes_left) == (
            None,
            None,
            None,
            0,
        )
        assert not await store.use_recovery_code(ALICE.user_id, "h1", 1.0)
        assert await act(store, RESET, "alice") == ActionDone(changed=False)
        assert (await store.totp(BOB.user_id)).pending == b"bob's"
        status = await store.user_status("alice", now_s=time.time(), recent_actions=5)
        assert status is not None and not status.two_factor_enabled
        assert [a.changed for a in status.recent_actions] == [False, True]

    run(backend.gateway(backend.fresh("gateway")), body)


def test_operators_acting_at_once_are_each_recorded(backend: Backend) -> None:
    """Twenty freezes and unfreezes at once: each one recorded, and every change recorded
    as one (the user's state flips exactly as often as the trail says it changed)."""

    async def body(store: GatewayStore) -> None:
        await with_users(store)
        actions = [FREEZE if i % 2 else UNFREEZE for i in range(20)]
        done = await asyncio.gather(
            *(act(store, a, "carol", str(i)) for i, a in enumerate(actions))
        )
        status = await store.user_status("carol", now_s=time.time(), recent_actions=100)
        assert status is not None and len(status.recent_actions) == 20
        changes = [a for a in reversed(status.recent_actions) if a.changed]
        assert sum(d.changed for d in done) == len(changes)
        # Each change flips the state: the changes alternate, starting with a freeze.
        assert [a.action for a in changes] == [FREEZE, UNFREEZE] * (len(changes) // 2) + (
            [FREEZE] if len(changes) % 2 else []
        )
        assert status.frozen == (len(changes) % 2 == 1)

    run(backend.gateway(backend.fresh("gateway")), body)


def test_users_have_no_stored_role(backend: Backend) -> None:
    """Operators are certificates, not users: the column nothing read is gone."""

    async def columns(conn: Any) -> list[str]:
        cursor = await conn.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = 'users'"
        )
        return [str(row[0]) for row in await cursor.fetchall()]

    async def body(store: GatewayStore) -> list[str]:
        if isinstance(store, PostgresGatewayStore):
            return await store._postgres.transaction(columns)
        return []

    location = backend.fresh("gateway")
    found = run(backend.gateway(location), body)
    if not isinstance(location, PostgresUrl):
        with sqlite3.connect(location) as conn:
            found = [str(row[1]) for row in conn.execute("PRAGMA table_info(users)")]
    assert "frozen" in found and "username" in found
    assert "role" not in found


def test_logins_racing_a_freeze_leave_no_live_session(backend: Backend) -> None:
    """Thirty logins of a user at once with a freeze of them: each login is either recorded
    before the freeze, which ends it, or refused; none is left live (on PostgreSQL the
    login locks the user's row against the freeze's update)."""

    async def body(store: GatewayStore) -> None:
        await with_users(store)
        logins = [store.insert_session(f"r{i}", ALICE.user_id, LATER_S) for i in range(30)]
        results = await asyncio.gather(*logins[:15], act(store, FREEZE, "alice"), *logins[15:])
        recorded = {f"r{i}" for i, ok in enumerate(results[:15] + results[16:]) if ok}
        assert set(results[15].ended) == recorded
        assert await store.live_sessions(ALICE.user_id, now_s=time.time(), limit=100) == []

    run(backend.gateway(backend.fresh("gateway")), body)
