"""How the gateway batched its bank calls over the measured window, from its /metrics.

`paygate_bank_batch_size{bank,operation}` is a histogram of the calls carried by each batch
RPC; its _count and _sum read at the window's start and end give, per operation (summed
over the banks), the batch RPCs sent and the calls they carried in the window. With
`--processes N` the window is the one the run was scheduled with (the workers' start-up
shifts theirs a little later), and the last read follows the calls still finishing, as for
the CPU samples.
"""

from __future__ import annotations

import collections
import http.client
import urllib.request
from collections.abc import Mapping
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

FAMILY = "paygate_bank_batch_size"
SCRAPE_TIMEOUT_S = 5.0
MAX_BODY_BYTES = 4 * 1024 * 1024

Totals = dict[str, dict[str, float]]  # operation -> {"rpcs": n, "calls": m}


def read_totals(metrics_address: str) -> Totals | None:
    """The batch histogram's totals per operation, or None when /metrics does not answer
    with a Prometheus text body of at most MAX_BODY_BYTES (the report then says null)."""
    try:
        with urllib.request.urlopen(
            f"http://{metrics_address}/metrics", timeout=SCRAPE_TIMEOUT_S
        ) as response:
            raw = response.read(MAX_BODY_BYTES + 1)
        if len(raw) > MAX_BODY_BYTES:
            return None
        return parse_totals(raw.decode())
    except (OSError, ValueError, http.client.HTTPException):
        return None


def parse_totals(body: str) -> Totals:
    """The batch histogram's totals per operation in a Prometheus text body."""
    totals: Totals = collections.defaultdict(lambda: {"rpcs": 0.0, "calls": 0.0})
    for family in text_string_to_metric_families(body):
        if family.name != FAMILY:
            continue
        for sample in family.samples:
            operation = sample.labels.get("operation", "")
            if sample.name == f"{FAMILY}_count":
                totals[operation]["rpcs"] += sample.value
            elif sample.name == f"{FAMILY}_sum":
                totals[operation]["calls"] += sample.value
    return dict(totals)


def window(first: Totals | None, last: Totals | None) -> dict[str, Any] | None:
    """Per operation: batch RPCs sent, calls carried and calls per RPC between two reads.

    None when either read failed, or when a counter went down (the gateway restarted in
    between, and its counters started again from zero)."""
    if first is None or last is None:
        return None
    out: dict[str, Any] = {}
    for operation in sorted(set(first) | set(last)):
        before: Mapping[str, float] = first.get(operation, {"rpcs": 0.0, "calls": 0.0})
        after: Mapping[str, float] = last.get(operation, {"rpcs": 0.0, "calls": 0.0})
        rpcs = after["rpcs"] - before["rpcs"]
        calls = after["calls"] - before["calls"]
        if rpcs < 0 or calls < 0:
            return None
        out[operation] = {
            "rpcs": int(rpcs),
            "calls": int(calls),
            "calls_per_rpc": round(calls / rpcs, 2) if rpcs else None,
        }
    return out
