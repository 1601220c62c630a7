"""The gateway's Batcher (paygate.gateway.batching): calls waiting for one bank leave as
one batch, a lone call leaves at once, and each call keeps its own deadline and answer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from paygate.errors import (
    BANK_TIMEOUT,
    BANK_UNAVAILABLE,
    FailedPrecondition,
    PaygateError,
    Unavailable,
)
from paygate.gateway.batching import Batcher


class FakeBank:
    """A bank's batch RPC: records each batch, answers after `delay_s`."""

    def __init__(self, delay_s: float = 0.05) -> None:
        self.delay_s = delay_s
        self.batches: list[list[str]] = []
        self.timeouts: list[float] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.fail_with: BaseException | None = None

    async def send(self, items: list[str], timeout_s: float) -> Sequence[str | PaygateError]:
        self.batches.append(list(items))
        self.timeouts.append(timeout_s)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.in_flight -= 1
        if self.fail_with is not None:
            raise self.fail_with
        return [
            FailedPrecondition(f"{item} refused", reason="REFUSED")
            if item.startswith("bad")
            else f"ok:{item}"
            for item in items
        ]


def batcher(bank: FakeBank, *, max_size: int = 8, max_in_flight: int = 1) -> Batcher[str, str]:
    return Batcher(
        "bank-a.prepare",
        bank.send,
        fail=lambda exc: Unavailable(f"failed: {exc}", reason=BANK_UNAVAILABLE),
        expired=lambda: Unavailable("too slow", reason=BANK_TIMEOUT),
        max_size=max_size,
        max_in_flight=max_in_flight,
    )


def test_a_lone_call_is_sent_at_once_alone() -> None:
    async def scenario() -> None:
        bank = FakeBank(delay_s=0)
        b = batcher(bank)
        loop = asyncio.get_running_loop()
        start = loop.time()
        assert await b.call("t1", timeout_s=2.0) == "ok:t1"
        assert loop.time() - start < 0.05  # no timer: nothing waited for company
        assert bank.batches == [["t1"]]

    asyncio.run(scenario())


def test_calls_waiting_behind_a_batch_leave_together_in_order() -> None:
    async def scenario() -> None:
        bank = FakeBank()
        b = batcher(bank, max_size=8, max_in_flight=1)
        results = await asyncio.gather(*(b.call(f"t{i}", timeout_s=2.0) for i in range(20)))
        assert results == [f"ok:t{i}" for i in range(20)]
        # All 20 queued before the first batch left: batches of at most 8, in order.
        assert bank.batches == [
            [f"t{i}" for i in range(0, 8)],
            [f"t{i}" for i in range(8, 16)],
            ["t16", "t17", "t18", "t19"],
        ]
        assert bank.max_in_flight == 1

    asyncio.run(scenario())


def test_at_most_max_in_flight_batches_are_on_the_wire() -> None:
    async def scenario() -> None:
        bank = FakeBank()
        b = batcher(bank, max_size=4, max_in_flight=2)
        await asyncio.gather(*(b.call(f"t{i}", timeout_s=2.0) for i in range(30)))
        assert bank.max_in_flight == 2
        assert sorted(item for batch in bank.batches for item in batch) == sorted(
            f"t{i}" for i in range(30)
        )
        assert max(len(batch) for batch in bank.batches) == 4

    asyncio.run(scenario())


def test_each_call_gets_its_own_error_and_the_others_succeed() -> None:
    async def scenario() -> None:
        bank = FakeBank()
        b = batcher(bank)
        first = asyncio.create_task(b.call("t0", timeout_s=2.0))
        await asyncio.sleep(0.001)
        results = await asyncio.gather(
            b.call("t1", timeout_s=2.0),
            b.call("bad2", timeout_s=2.0),
            b.call("t3", timeout_s=2.0),
            return_exceptions=True,
        )
        assert await first == "ok:t0"
        assert results[0] == "ok:t1" and results[2] == "ok:t3"
        assert isinstance(results[1], FailedPrecondition) and results[1].reason == "REFUSED"
        assert bank.batches[1] == ["t1", "bad2", "t3"]

    asyncio.run(scenario())


def test_a_failed_batch_fails_every_call_with_a_fresh_error() -> None:
    async def scenario() -> None:
        bank = FakeBank()
        bank.fail_with = ConnectionError("connection reset")
        b = batcher(bank)
        results = await asyncio.gather(
            *(b.call(f"t{i}", timeout_s=2.0) for i in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, Unavailable) and r.reason == BANK_UNAVAILABLE for r in results)
        assert len({id(r) for r in results}) == 3

    asyncio.run(scenario())


def test_a_call_whose_deadline_passes_while_waiting_is_never_sent() -> None:
    async def scenario() -> None:
        bank = FakeBank(delay_s=0.3)
        b = batcher(bank, max_in_flight=1)
        first = asyncio.create_task(b.call("t0", timeout_s=2.0))
        await asyncio.sleep(0.01)  # t0 is on the wire
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(Unavailable) as caught:
            await b.call("late", timeout_s=0.1)  # would wait behind t0 (0.3 s)
        assert caught.value.reason == BANK_TIMEOUT
        assert loop.time() - start < 0.2  # it fails at its own deadline, not t0's answer
        assert await first == "ok:t0"
        await asyncio.sleep(0.05)
        assert bank.batches == [["t0"]]

    asyncio.run(scenario())


def test_a_batch_rpc_deadline_is_its_earliest_calls() -> None:
    async def scenario() -> None:
        bank = FakeBank(delay_s=0.1)
        b = batcher(bank)
        first = asyncio.create_task(b.call("t0", timeout_s=5.0))
        await asyncio.sleep(0.001)
        await asyncio.gather(b.call("t1", timeout_s=5.0), b.call("t2", timeout_s=1.0))
        await first
        assert bank.timeouts[0] == pytest.approx(5.0, abs=0.05)
        assert bank.timeouts[1] == pytest.approx(0.9, abs=0.05)  # t2's, after 0.1 s waiting

    asyncio.run(scenario())


def test_a_caller_that_gives_up_is_dropped_from_the_queue() -> None:
    async def scenario() -> None:
        bank = FakeBank(delay_s=0.1)
        b = batcher(bank)
        first = asyncio.create_task(b.call("t0", timeout_s=2.0))
        await asyncio.sleep(0.001)
        gone = asyncio.create_task(b.call("gone", timeout_s=2.0))
        kept = asyncio.create_task(b.call("kept", timeout_s=2.0))
        await asyncio.sleep(0.01)
        gone.cancel()
        assert await kept == "ok:kept"
        await first
        assert bank.batches == [["t0"], ["kept"]]

    asyncio.run(scenario())


def test_the_batcher_refuses_a_size_or_concurrency_of_zero() -> None:
    with pytest.raises(ValueError):
        batcher(FakeBank(), max_size=0)
    with pytest.raises(ValueError):
        batcher(FakeBank(), max_in_flight=0)


def lingering(bank: FakeBank, *, linger_s: float, max_size: int = 8) -> Batcher[str, str]:
    return Batcher(
        "bank-a.commit",
        bank.send,
        fail=lambda exc: Unavailable(f"failed: {exc}", reason=BANK_UNAVAILABLE),
        expired=lambda: Unavailable("too slow", reason=BANK_TIMEOUT),
        max_size=max_size,
        max_in_flight=2,
        linger_s=linger_s,
    )


def test_a_lingering_batcher_sends_the_calls_of_its_linger_as_one_batch() -> None:
    async def scenario() -> None:
        bank = FakeBank(delay_s=0)
        b = lingering(bank, linger_s=0.2)
        loop = asyncio.get_running_loop()
        start = loop.time()
        calls = []
        for i in range(3):  # a moderate load: calls that never coincide
            calls.append(asyncio.create_task(b.call(f"t{i}", timeout_s=2.0)))
            await asyncio.sleep(0.03)
        assert await asyncio.gather(*calls) == ["ok:t0", "ok:t1", "ok:t2"]
        assert bank.batches == [["t0", "t1", "t2"]]
        assert 0.2 <= loop.time() - start < 0.4  # the first call waited the linger

    asyncio.run(scenario())


def test_a_full_batch_does_not_wait_for_the_linger_to_end() -> None:
    async def scenario() -> None:
        bank = FakeBank(delay_s=0)
        b = lingering(bank, linger_s=5.0, max_size=4)
        loop = asyncio.get_running_loop()
        start = loop.time()
        results = await asyncio.gather(*(b.call(f"t{i}", timeout_s=2.0) for i in range(4)))
        assert results == [f"ok:t{i}" for i in range(4)]
        assert bank.batches == [["t0", "t1", "t2", "t3"]]
        assert loop.time() - start < 1.0

    asyncio.run(scenario())


def test_a_negative_linger_is_refused() -> None:
    with pytest.raises(ValueError, match="linger_s"):
        lingering(FakeBank(), linger_s=-0.1)
