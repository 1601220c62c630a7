"""A ListPayments page never outgrows what paygate.client takes in (64 KiB), even on a
gateway allowed to send more: otherwise anyone could make another user's list unreadable
with long descriptions. On a real SQLite store, through Payments.list and the servicer's
own message encoding."""

from __future__ import annotations

import asyncio
import pathlib
import time
import uuid
from typing import Any

from paygate.common.config import DEFAULT_MAX_MESSAGE_BYTES
from paygate.gateway.messages import payment_message
from paygate.gateway.models import Payment, PaymentStatus, TxnState, User
from paygate.gateway.payments import Payments, PaymentSettings
from paygate.gateway.store import SqliteGatewayStore
from paygate.gen.paygate.v1 import gateway_pb2

PAYER = User(
    user_id="u-payer", username="payer", bank_id="bank-a", account_number="1", currency="USD"
)
PAYEE = User(
    user_id="u-payee", username="payee", bank_id="bank-b", account_number="2", currency="USD"
)
LONG = "\U0001f4b8" * 500  # 2,000 bytes of description


def a_payment() -> Payment:
    return Payment(
        payment_id=uuid.uuid4().hex,
        status=PaymentStatus.SUCCEEDED,
        txn_state=TxnState.COMMITTED,
        payer_user_id=PAYER.user_id,
        payer_username=PAYER.username,
        payer_bank_id=PAYER.bank_id,
        payer_account=PAYER.account_number,
        payee_user_id=PAYEE.user_id,
        payee_username=PAYEE.username,
        payee_bank_id=PAYEE.bank_id,
        payee_account=PAYEE.account_number,
        amount_minor=1,
        currency="USD",
        description=LONG,
        create_time_us=int(time.time() * 1e6),
    )


def test_pages_fit_the_clients_limit_on_a_gateway_that_may_send_more(
    tmp_path: pathlib.Path,
) -> None:
    async def scenario() -> list[int]:
        store = SqliteGatewayStore(tmp_path / "gateway.db")
        await store.open()
        try:
            for u in (PAYER, PAYEE):
                await store.create_user(u, b"hash")
            for i in range(100):
                await store.begin_payment(f"k{i}", "h", a_payment())
            coordinator: Any = None  # listing never reaches the coordinator
            payments = Payments(
                store,
                coordinator,
                PaymentSettings(max_payment_minor=100, max_message_bytes=1024 * 1024),
            )
            sizes, token, seen = [], "", 0
            while True:
                page, token = await payments.list(
                    PAYEE,
                    100,
                    token,
                    size_of=lambda p: payment_message(p).ByteSize(),
                )
                answer = gateway_pb2.ListPaymentsResponse(
                    payments=[payment_message(p) for p in page], next_page_token=token
                )
                sizes.append(answer.ByteSize())
                seen += len(page)
                if not token:
                    return [seen, *sizes]
        finally:
            await store.close()

    seen, *sizes = asyncio.run(scenario())
    assert seen == 100
    assert len(sizes) >= 4 and max(sizes) <= DEFAULT_MAX_MESSAGE_BYTES, sizes
