"""Checks of invariants that stay on in production (unlike `assert`, which `python -O` drops).

A failed check is a programmer error or corrupted state, never a caller's mistake: the
process must not go on moving money on top of it, so the check raises InvariantViolation,
which the servers report as INTERNAL and log loudly.
"""

from __future__ import annotations


class InvariantViolation(AssertionError):
    """An invariant of the ledger or the protocol does not hold."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise InvariantViolation(message)
