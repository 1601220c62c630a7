"""The client refuses a payment it could not send before anything reaches the outbox, and a
queued row that cannot be sent (written by an older client) fails alone, without stopping
delivery of the payments behind it."""

from __future__ import annotations

import asyncio
import math
import pathlib
from typing import Any

import pytest
from paygate.client import AsyncClient, Outbox
from paygate.client.outbox_models import EntryState, PaymentOrder
from paygate.errors import InvalidArgument

# Nothing listens on port 1: a payment that got past the checks would be queued, not sent.
UNREACHABLE = "127.0.0.1:1"


def client(tmp_path: pathlib.Path, outbox: Outbox | None = None) -> AsyncClient:
    ca_cert = tmp_path / "ca.pem"
    ca_cert.write_bytes(b"")  # never used for a handshake
    return AsyncClient(
        UNREACHABLE,
        ca_cert=ca_cert,
        timeout_s=2,
        username="alice",
        outbox=outbox or Outbox(tmp_path / "outbox.db"),
    )


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        pytest.param({"amount_minor": 12.5}, "whole number", id="float-amount"),
        pytest.param({"amount_minor": True}, "whole number", id="bool-amount"),
        pytest.param({"amount_minor": "100"}, "whole number", id="string-amount"),
        pytest.param({"amount_minor": 0}, "positive", id="zero-amount"),
        pytest.param({"amount_minor": -100}, "positive", id="negative-amount"),
        pytest.param({"amount_minor": 2**63}, "positive", id="amount-beyond-int64"),
        pytest.param({"payee_username": ""}, "payee_username", id="no-payee"),
        pytest.param({"payee_username": None}, "payee_username", id="payee-not-a-string"),
        pytest.param({"currency": 840}, "currency", id="currency-not-a-string"),
        pytest.param({"description": b"lunch"}, "description", id="description-bytes"),
        pytest.param({"idempotency_key": ""}, "idempotency_key", id="empty-key"),
        pytest.param({"idempotency_key": "k" * 256}, "idempotency_key", id="key-too-long"),
        pytest.param({"idempotency_key": "k\n"}, "idempotency_key", id="key-with-newline"),
    ],
)
@pytest.mark.parametrize("queue_if_offline", [True, False], ids=["queued", "online"])
def test_a_payment_that_cannot_be_sent_is_refused_and_not_queued(
    tmp_path: pathlib.Path, fields: dict[str, Any], words: str, queue_if_offline: bool
) -> None:
    async def scenario() -> list[Any]:
        async with client(tmp_path) as payer:
            arguments: dict[str, Any] = {"payee_username": "bob", "amount_minor": 1_00, **fields}
            with pytest.raises(InvalidArgument) as caught:
                await payer.pay(**arguments, queue_if_offline=queue_if_offline)
            assert words in str(caught.value)
            assert payer.outbox is not None
            return await payer.outbox.entries(UNREACHABLE, "alice")

    assert asyncio.run(scenario()) == []


def test_a_queued_row_that_cannot_be_sent_fails_alone(tmp_path: pathlib.Path) -> None:
    outbox = Outbox(tmp_path / "outbox.db")

    async def scenario() -> dict[str, EntryState]:
        async with client(tmp_path, outbox) as payer:
            # As an older client, which did not check the amount, could have queued it.
            await outbox.open()
            await outbox.store.enqueue(
                PaymentOrder(
                    idempotency_key="old-float",
                    gateway=UNREACHABLE,
                    payer_username="alice",
                    payee_username="bob",
                    amount_minor=12.5,
                    currency="USD",  # type: ignore[arg-type]
                    description="",
                )
            )
            queued = await payer.pay("bob", 2_00, idempotency_key="next", queue_if_offline=True)
            assert not isinstance(queued, Exception)
            await payer.deliver_queued(max_attempts=1)
            entries = await outbox.entries(UNREACHABLE, "alice")
            return {entry.idempotency_key: entry.state for entry in entries}

    # The float row is failed for good; the payment behind it was tried (the gateway is
    # unreachable, so it waits in the queue) instead of waiting behind a row that never goes.
    assert asyncio.run(scenario()) == {"old-float": EntryState.FAILED, "next": EntryState.QUEUED}


@pytest.mark.parametrize("timeout_s", [0, -1, math.inf, math.nan])
def test_the_client_timeout_is_a_positive_finite_number(
    tmp_path: pathlib.Path, timeout_s: float
) -> None:
    ca_cert = tmp_path / "ca.pem"
    ca_cert.write_bytes(b"")
    with pytest.raises(ValueError, match="timeout_s"):
        AsyncClient(UNREACHABLE, ca_cert=ca_cert, timeout_s=timeout_s)
