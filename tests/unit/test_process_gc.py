"""paygate.common.process.tune_gc: the server processes' garbage-collector settings."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from paygate.common.process import GC_THRESHOLDS, tune_gc


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_gc")
def test_start_up_objects_are_frozen_and_collections_are_rarer() -> None:
    tune_gc()
    assert gc.get_threshold() == GC_THRESHOLDS
    assert GC_THRESHOLDS[0] > 700  # CPython's default for the youngest generation
    assert gc.get_freeze_count() > 0


@pytest.mark.usefixtures("restored_gc")
def test_the_collector_still_runs_by_itself_only_less_often() -> None:
    """Memory stays bounded: cyclic garbage is collected without anyone calling collect()."""
    tune_gc()
    collections: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(info["generation"])

    class Node:
        other: Node

    gc.callbacks.append(count)
    try:
        for _ in range(5 * GC_THRESHOLDS[0]):
            a, b = Node(), Node()
            a.other, b.other = b, a
    finally:
        gc.callbacks.remove(count)
    # Each pair is two allocations; with CPython's default of 700 this would be ~285 passes.
    assert 1 <= len(collections) <= 10 * 2 * 5, collections
