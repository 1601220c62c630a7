"""The observer: reads every user's account at its bank, as the operator (`admin`).

During the run it samples all accounts every `interval_s`, concurrently, each read with a
deadline; a bank that is down or paused makes the sample incomplete instead of stalling
it. After recovery it waits, for a bounded time, until no account holds anything, and
that read is the quiescent one the checker's exact claims are made on.
"""

from __future__ import annotations

import asyncio
import contextlib

import grpc

from paygate.chaos.connections import Connections
from paygate.chaos.history import AccountRead, History, Sample, User
from paygate.chaos.workload import Clock
from paygate.gen.paygate.bank.v1 import bank_pb2

READ_TIMEOUT_S = 2.0
SETTLE_POLL_S = 0.5


class Observer:
    def __init__(self, conn: Connections, history: History, clock: Clock) -> None:
        self._conn = conn
        self._history = history
        self._clock = clock

    async def read_all(self) -> Sample:
        start_s = self._clock.now()
        results = await asyncio.gather(*(self._read(u) for u in self._history.users))
        reads = tuple(r for r in results if r is not None)
        return Sample(
            start_s=start_s,
            end_s=self._clock.now(),
            reads=reads,
            complete=len(reads) == len(self._history.users),
        )

    async def _read(self, user: User) -> AccountRead | None:
        try:
            response: bank_pb2.GetAccountResponse = await self._conn.banks[user.bank_id].GetAccount(
                bank_pb2.GetAccountRequest(account_number=user.account_number),
                timeout=READ_TIMEOUT_S,
            )
        except grpc.aio.AioRpcError:
            return None
        account = response.account
        return AccountRead(
            bank_id=user.bank_id,
            account_number=account.account_number,
            balance=account.balance,
            available=account.available,
            pending_debit=account.pending_debit,
            pending_credit=account.pending_credit,
        )

    async def sample_until(self, stop: asyncio.Event, interval_s: float) -> None:
        while not stop.is_set():
            self._history.samples.append(await self.read_all())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval_s)

    async def wait_settled(self, limit_s: float) -> None:
        """Read until a complete read shows no hold, for at most `limit_s` seconds.

        Records the last read as the quiescent one, and how long settling took (None when
        holds were still pending, or a bank did not answer, at the limit).
        """
        start_s = self._clock.now()
        while True:
            sample = await self.read_all()
            settled = sample.complete and not any(
                r.pending_debit or r.pending_credit for r in sample.reads
            )
            if settled or self._clock.now() - start_s >= limit_s:
                break
            await asyncio.sleep(SETTLE_POLL_S)
        self._history.quiescent = sample
        self._history.pending_settled_after_s = sample.end_s - start_s if settled else None
