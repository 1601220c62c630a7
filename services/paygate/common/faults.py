"""Crash points for tests: kill this process with SIGKILL at a named step of the protocol.

A test arms a point by creating the file `<var_dir>/faults/<process>/<point>`; the process
removes the file and then kills itself when it reaches that point, so the crash happens
once and the restarted process runs normally. Nothing is checked unless the suite was
started with fault injection switched on (`PAYGATE_FAULT_INJECTION=1`), which production
never does.

The points, in protocol order:

    gateway.before_prepare          the payment is recorded, no bank has been asked
    gateway.after_first_prepare     the first of two or more banks has voted yes
    gateway.after_prepares          every bank voted yes, no decision written
    gateway.after_decision          the commit decision is on disk, no commit sent
    gateway.after_first_commit      the first of two or more banks has committed
    gateway.after_commits           every bank committed; the answer is not sent yet
    gateway.after_authorization     an authorization is on disk (AUTHORIZED), not yet answered
    gateway.after_captured_decision a capture and its amount are on disk, no Commit sent
    gateway.after_canceled_decision a cancellation is on disk, no Abort sent
    gateway.after_expired_decision  recovery recorded an authorization as expired, no Abort sent
    gateway.after_refund_reserved   a refund and its amount are on disk, no bank asked (a refund
                                    then passes the payment points, as the payment turned around)
    bank.before_hold                a bank is about to write the holds of a prepare
    bank.after_hold                 the holds are on disk, the vote is not sent yet
    bank.before_post                a bank is about to post a committed transaction
    bank.after_post                 the transaction is posted, the ack is not sent yet

A one-phase commit (both accounts at one bank) passes gateway.before_prepare,
gateway.after_prepares (the bank has posted it, the gateway has recorded nothing),
gateway.after_decision (COMMITTED on disk, the answer is not sent yet), and the bank's
before_hold and after_hold (which brackets the posting too). A split payment across three
banks passes the payment's points as a payment across two does.
"""

from __future__ import annotations

import logging
import os
import pathlib
import signal

# The points a payment passes (its two phases); an authorization's life adds the others.
PAYMENT_POINTS = (
    "gateway.before_prepare",
    "gateway.after_first_prepare",
    "gateway.after_prepares",
    "gateway.after_decision",
    "gateway.after_first_commit",
    "gateway.after_commits",
    "bank.before_hold",
    "bank.after_hold",
    "bank.before_post",
    "bank.after_post",
)
AUTHORIZATION_POINTS = (
    "gateway.after_authorization",
    "gateway.after_captured_decision",
    "gateway.after_canceled_decision",
    "gateway.after_expired_decision",
)
REFUND_POINTS = ("gateway.after_refund_reserved",)
POINTS = PAYMENT_POINTS + AUTHORIZATION_POINTS + REFUND_POINTS

_log = logging.getLogger("paygate.faults")


class FaultInjector:
    def __init__(self, *, enabled: bool, var_dir: pathlib.Path, process: str) -> None:
        self.enabled = enabled
        self.folder = var_dir / "faults" / process

    def crash_point(self, point: str) -> None:
        if not self.enabled:
            return
        if point not in POINTS:
            raise ValueError(f"unknown crash point {point!r}")
        armed = self.folder / point
        if not armed.exists():
            return
        armed.unlink()
        _log.warning("crash point reached, killing self", extra={"fields": {"point": point}})
        for handler in logging.getLogger().handlers:
            handler.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def arm(var_dir: pathlib.Path, process: str, point: str) -> pathlib.Path:
    """Arm `point` in `process` (used by tests and paygate-chaos)."""
    if point not in POINTS:
        raise ValueError(f"unknown crash point {point!r}")
    folder = var_dir / "faults" / process
    folder.mkdir(parents=True, exist_ok=True)
    armed = folder / point
    armed.touch()
    return armed
