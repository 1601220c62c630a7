"""Finisher: records that a transaction ended (COMMITTED or ABORTED), batched.

The last of a payment's three writes at the gateway marks it finished once every bank
acknowledged the decision. Transactions that end together share one database transaction
(a Batcher of batching.py, over GatewayStore.finish_many): one call into the database
thread instead of one per payment.

Losing a finish is harmless: the decision stays on disk, so recovery delivers it again
(every bank operation is idempotent) and finishes the transaction. A finish that fails is
therefore logged and not reported to the payer, whose payment did happen.
"""

from __future__ import annotations

import asyncio
import logging

from paygate.errors import DATABASE_UNAVAILABLE, Unavailable
from paygate.gateway.batching import Batcher
from paygate.gateway.models import TxnState
from paygate.gateway.store import GatewayStore

_log = logging.getLogger("paygate.coordinator")

MAX_BATCH_SIZE = 256


class Finisher:
    def __init__(self, store: GatewayStore, *, timeout_s: float) -> None:
        self._store = store
        self._timeout_s = timeout_s
        self._batcher: Batcher[tuple[str, TxnState], None] = Batcher(
            "gateway.finish",
            self._write,
            fail=lambda exc: Unavailable(
                f"finish not recorded: {exc}", reason=DATABASE_UNAVAILABLE
            ),
            expired=lambda: Unavailable("finish not recorded in time", reason=DATABASE_UNAVAILABLE),
            max_size=MAX_BATCH_SIZE,
            max_in_flight=1,
            span_name="store.finish_batch",
        )

    async def finish(self, payment_id: str, final: TxnState) -> None:
        """Record the end of a transaction; never raises for a failed write (see above)."""
        try:
            await self._batcher.call((payment_id, final), timeout_s=self._timeout_s)
        except Unavailable as exc:
            _log.warning(
                "finish not recorded; recovery will finish the transaction",
                extra={"fields": {"transaction_id": payment_id, "error": exc.message}},
            )

    async def _write(self, finished: list[tuple[str, TxnState]], timeout_s: float) -> list[None]:
        async with asyncio.timeout(timeout_s):
            await self._store.finish_many(finished)
        return [None] * len(finished)

    async def close(self) -> None:
        await self._batcher.close()
