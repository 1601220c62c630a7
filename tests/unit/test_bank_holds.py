"""ListHolds' parts that need no server: page tokens, payment ids, and the query plans that
keep a listing bounded by the prepared transactions rather than the bank's history."""

from __future__ import annotations

import asyncio
import base64
import pathlib
import secrets
import sqlite3

import pytest
from paygate.bank.holds import (
    PAGE_TOKEN_MAX_LENGTH,
    decode_page_token,
    encode_page_token,
    payment_id_of,
    refund_id_of,
)
from paygate.bank.store import SQL, SqliteLedgerStore
from paygate.errors import InvalidArgument
from paygate.gateway.models import REFUND_ID_PREFIX


@pytest.mark.parametrize(
    "transaction_id",
    ["pay_0123456789abcdef01234567", "t", "ünïcødé " * 30, "\N{MUSICAL SYMBOL G CLEF}" * 255],
)
def test_a_page_token_gives_back_its_transaction(transaction_id: str) -> None:
    token = encode_page_token(transaction_id)
    assert len(token) <= PAGE_TOKEN_MAX_LENGTH
    assert decode_page_token(token) == transaction_id


def test_no_token_is_the_first_page() -> None:
    assert decode_page_token("") == ""


@pytest.mark.parametrize(
    "token",
    [
        "not a token",
        base64.urlsafe_b64encode(b"v2:pay_1").decode(),  # another version
        base64.urlsafe_b64encode(b"v1:").decode(),  # no transaction
        base64.urlsafe_b64encode(b"v1:\xff\xfe").decode(),  # not UTF-8
        "A" * (PAGE_TOKEN_MAX_LENGTH + 1),
    ],
)
def test_a_token_the_bank_did_not_give_is_refused(token: str) -> None:
    with pytest.raises(InvalidArgument, match="page_token"):
        decode_page_token(token)


@pytest.mark.parametrize(
    ("transaction_id", "payment_id"),
    [
        ("pay_0123456789abcdef01234567", "pay_0123456789abcdef01234567"),
        ("pay_0123456789ABCDEF01234567", ""),  # the gateway writes lower-case hex
        ("pay_0123", ""),
        ("pay_0123456789abcdef01234567x", ""),
        ("inproc-7d1f", ""),
    ],
)
def test_a_transaction_id_is_a_payment_id_when_the_gateway_made_it(
    transaction_id: str, payment_id: str
) -> None:
    assert payment_id_of(transaction_id) == payment_id
    assert refund_id_of(transaction_id) == ""


def test_a_refunds_transaction_is_named_by_the_refund() -> None:
    refund_id = f"{REFUND_ID_PREFIX}{secrets.token_hex(12)}"  # as gateway/refunds.py makes it
    assert (refund_id_of(refund_id), payment_id_of(refund_id)) == (refund_id, "")
    assert refund_id_of(refund_id.upper()) == refund_id_of("re_0123") == ""


def test_holds_are_found_through_the_prepared_transactions_not_a_scan(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "bank.db"

    async def create() -> None:
        store = SqliteLedgerStore(path)
        await store.open()
        await store.close()

    asyncio.run(create())
    with sqlite3.connect(path) as conn:
        for statement, params in (
            (SQL.holds_on_account, ("100001", 21)),
            (SQL.holds_on_account_after, ("t", "100001", "t", 21)),
        ):
            steps = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {statement.text}", params)]
            assert any("USING INDEX transactions_prepared" in step for step in steps), steps
            assert not [s for s in steps if s.startswith("SCAN")], steps
