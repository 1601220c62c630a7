"""BankCalls: one call to a bank of the two-phase commit, and the event its outcome is.

The driver (coordinator.py) starts these as tasks and steps the events they return through
the transition function; transport failures arrive here already translated by BankClients
(banks.py): Unavailable when the bank gave no answer, another PaygateError when it answered
with an error. Timeouts are counted here, where they are seen.
"""

from __future__ import annotations

import asyncio
import logging

from paygate.common.metrics import CoordinatorMetrics
from paygate.errors import BANK_TIMEOUT, PaygateError, Unavailable
from paygate.gateway import transitions as t
from paygate.gateway.models import Leg
from paygate.gateway.two_phase import PREPARE_TIMEOUT_MARGIN_S, CoordinatorSettings, Participants

_log = logging.getLogger("paygate.coordinator")


class BankCalls:
    def __init__(
        self, banks: Participants, settings: CoordinatorSettings, metrics: CoordinatorMetrics
    ) -> None:
        self._banks = banks
        self._settings = settings
        self._metrics = metrics

    async def prepare(
        self,
        payment_id: str,
        bank: str,
        legs: list[Leg],
        action: t.SendPrepares,
        spans_banks: bool = False,  # the legs are part of a split payment's across banks
    ) -> t.Event:
        timeout_s = self._settings.prepare_timeout_s
        try:
            vote = await self._banks.prepare(
                bank,
                payment_id,
                legs,
                timeout_s=timeout_s,
                one_phase=action.one_phase,
                spans_banks=spans_banks,
            )
        except Unavailable as exc:
            if exc.reason == BANK_TIMEOUT:
                self._metrics.timeouts.labels(bank, "prepare").inc()
            return t.PrepareFailed(bank, exc.reason, exc.message, answered=False)
        except PaygateError as exc:
            return t.PrepareFailed(bank, exc.reason, repr(exc), answered=True)
        return t.Voted(bank, vote.yes, vote.reason, posted=vote.committed)

    async def votes_deadline(self) -> t.Event:
        # The calls' own deadlines fire first, so that a bank that is down is told apart
        # from one that is slow (banks.py); this bound only backs them up.
        await asyncio.sleep(self._settings.prepare_timeout_s + PREPARE_TIMEOUT_MARGIN_S)
        return t.VotesTimedOut()

    async def decision(
        self, payment_id: str, bank: str, commit: bool, amount_minor: int
    ) -> t.Event:
        """One Commit (of `amount_minor` of each hold; 0: all) or Abort, and what came of it."""
        timeout_s = self._settings.bank_call_timeout_s
        try:
            if commit:
                await self._banks.commit(
                    bank, payment_id, timeout_s=timeout_s, amount_minor=amount_minor
                )
            else:
                await self._banks.abort(bank, payment_id, timeout_s=timeout_s)
        except Unavailable as exc:
            if exc.reason == BANK_TIMEOUT:
                self._metrics.timeouts.labels(bank, "commit" if commit else "abort").inc()
            _log.info(
                "phase two send failed, will retry",
                extra={"fields": {"transaction_id": payment_id, "bank": bank,
                                  "decision": "commit" if commit else "abort",
                                  "reason": exc.reason}},
            )  # fmt: skip
            return t.NotAcked(bank, exc.reason)
        except PaygateError as exc:
            return t.Refused(bank, exc.reason)
        return t.Acked(bank)
