"""The storage contract of account security, on SQLite and PostgreSQL: sessions a user can
list and end, password changes, two-factor state (tests/test_store_contract.py has the
rest, and the fixtures)."""

from __future__ import annotations

import pathlib
import secrets
import time
from typing import Any

from paygate.common.database_url import PostgresUrl
from paygate.gateway.store import GatewayStore
from paygate.gateway.store_postgres import PostgresGatewayStore
from paygate.gateway.totp import SecretBox
from paygate.gateway.two_factor import TwoFactor
from test_store_contract import ALICE, BOB, Backend, backend, pg_schemas, run, with_users
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
        assert sorted(await store.change_password(ALICE.user_id, b"new", keep="a1")) == [
            "a2", "a3"
        ]
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
            b"sealed-2", None, 9, 2
        )
        assert [await store.use_totp_step(ALICE.user_id, s) for s in (9, 8, 10, 10, 12)] == [
            False, False, True, False, True
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
