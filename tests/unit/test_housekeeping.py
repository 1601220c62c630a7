"""paygate.gateway.main.prune_in_batches: expired rows go in bounded transactions."""

from __future__ import annotations

import asyncio

from paygate.gateway.main import PRUNE_BATCH, prune_in_batches


def test_a_backlog_is_deleted_batch_by_batch_until_none_is_left() -> None:
    backlog = 2 * PRUNE_BATCH + 7
    calls: list[tuple[float, int]] = []

    async def prune(*, older_than_s: float, limit: int) -> int:
        nonlocal backlog
        calls.append((older_than_s, limit))
        deleted = min(backlog, limit)
        backlog -= deleted
        return deleted

    assert asyncio.run(prune_in_batches(prune, 123.0)) == 2 * PRUNE_BATCH + 7
    assert backlog == 0
    assert calls == [(123.0, PRUNE_BATCH)] * 3  # two full batches, then the rest


def test_nothing_to_delete_is_one_call() -> None:
    calls = 0

    async def prune(*, older_than_s: float, limit: int) -> int:
        nonlocal calls
        calls += 1
        return 0

    assert asyncio.run(prune_in_batches(prune, 0.0)) == 0
    assert calls == 1
