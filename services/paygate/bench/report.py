"""The numbers of a run: latency percentiles, rates, the JSON report and its summary.

The report's "latency_by_second" lists, per second of the measured window, the calls that
completed in it ("count"), those that ended OK ("ok"), and their p50, p99 and max latency; a
bulk run's "items_ok_by_second" the payments in those seconds' calls (plot.py draws both).
Its "memory" holds, per supervisor program, its resident memory over the measured window
(procstat.memory_window): rss_start_mib, rss_end_mib, rss_max_mib, growth_mib (end -
start), slope_mib_per_min (least squares over the window's second half) and series_mib.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import platform
from collections.abc import Mapping, Sequence
from typing import Any

from paygate.bench.load import LoadResult

PERCENTILES = (50, 95, 99)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The nearest-rank q-th percentile of already sorted values (0 when there are none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summarize(result: LoadResult, window_s: float) -> dict[str, Any]:
    """Calls completed in the window, their rate, latency percentiles and outcomes."""
    latencies = sorted(result.latencies_ms)
    ok = result.outcomes.get("OK", 0)
    latency = {f"p{q}": round(percentile(latencies, q), 3) for q in PERCENTILES}
    latency["max"] = round(latencies[-1], 3) if latencies else 0.0
    latency["mean"] = round(sum(latencies) / len(latencies), 3) if latencies else 0.0
    return {
        "window_s": round(window_s, 3),
        "completed": len(latencies),
        "ok": ok,
        "ok_per_s": round(ok / window_s, 1) if window_s > 0 else 0.0,
        "latency_ms": latency,
        "outcomes": dict(sorted(result.outcomes.items())),
        "outcomes_including_warmup_and_tail": dict(sorted(result.outcomes_all.items())),
        "client_cpu_s": round(result.client_cpu_s, 3),
        "latency_by_second": by_second(result),
    }


def bulk(
    result: LoadResult, window_s: float, batch_size: int, baseline: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """The items of a bulk run (--batch-size above 1): payments, where `payments` counts
    calls. None for a run of single payments."""
    if batch_size <= 1:
        return None
    ok = result.item_outcomes.get("OK", 0)
    ok_per_s = round(ok / window_s, 1) if window_s > 0 else 0.0
    return {
        "batch_size": batch_size,
        "items": sum(result.item_outcomes.values()),
        "items_ok": ok,
        "items_ok_per_s": ok_per_s,
        "item_outcomes": dict(sorted(result.item_outcomes.items())),
        # Beside the seconds of the payments' latency_by_second: the payments made in each.
        "items_ok_by_second": [
            result.items_ok_by_second[second] for second in range(_seconds(result))
        ],
        # Payments per baseline call, the number to set beside `ratio` of single payments.
        "items_ratio": ratio({"ok_per_s": ok_per_s}, baseline),
    }


def splits(
    payments: Mapping[str, Any],
    payees: int,
    distinct_banks: bool,
    baseline: Mapping[str, Any] | None,
) -> dict[str, Any] | None:
    """The split payments of a --splits run (each a payment, counted in `payments` too),
    set beside the baseline. None for a run of plain payments."""
    if payees <= 1:
        return None
    return {
        "payees": payees,
        # Whether every payment paid its payees at distinct banks (splits.PayeeChooser).
        "payees_at_distinct_banks": distinct_banks,
        "ok": payments["ok"],
        "ok_per_s": payments["ok_per_s"],
        "ratio": ratio(payments, baseline),
    }


def by_second(result: LoadResult) -> list[dict[str, float]]:
    """Per second of the window: calls completed, those that ended OK, their p50, p99 and
    max latency (ms; 0 in a second without calls).

    A tail that comes from a few stalls (a checkpoint, a periodic job) shows here as a few
    bad seconds; a tail spread over every second is queueing."""
    seconds: dict[int, list[float]] = {}
    for at, latency in zip(result.completed_s, result.latencies_ms, strict=True):
        seconds.setdefault(int(at), []).append(latency)
    out = []
    for second in range(_seconds(result)):
        values = sorted(seconds.get(second, ()))
        out.append(
            {
                "second": second,
                "count": len(values),
                "ok": result.ok_by_second[second],
                "p50": round(percentile(values, 50), 1),
                "p99": round(percentile(values, 99), 1),
                "max": round(values[-1], 1) if values else 0.0,
            }
        )
    return out


def _seconds(result: LoadResult) -> int:
    """Every second up to the last one with a call, so that a full stall shows as a zero."""
    return int(max(result.completed_s)) + 1 if result.completed_s else 0


def ratio(payments: Mapping[str, Any], baseline: Mapping[str, Any] | None) -> float | None:
    if not baseline or not baseline["ok_per_s"]:
        return None
    return round(float(payments["ok_per_s"]) / float(baseline["ok_per_s"]), 3)


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def write(report: Mapping[str, Any], path: pathlib.Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")


def _line(name: str, summary: Mapping[str, Any]) -> str:
    latency = summary["latency_ms"]
    return (
        f"{name:<9} {summary['ok_per_s']:>8.1f}/s  p50 {latency['p50']:>7.1f}  "
        f"p95 {latency['p95']:>7.1f}  p99 {latency['p99']:>7.1f}  max {latency['max']:>7.1f} ms"
        f"  outcomes {summary['outcomes']}"
    )


def _signed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f}"


def text(report: Mapping[str, Any]) -> str:
    """The summary printed at the end of a run."""
    settings = report["settings"]
    lines = [
        f"paygate-bench: {settings['concurrency']} callers, {settings['processes']} process(es), "
        f"{settings['duration_s']} s after {settings['warmup_s']} s warm-up"
        + (f", capped at {settings['rate_per_s']}/s" if settings["rate_per_s"] else ""),
        _line("payments", report["payments"]),
    ]
    if report.get("bulk"):
        bulk_ = report["bulk"]
        lines.append(
            f"bulk      {bulk_['batch_size']} payments a call: {bulk_['items_ok_per_s']:.1f}"
            f" payments/s, item outcomes {bulk_['item_outcomes']}"
        )
    if report.get("splits"):
        split = report["splits"]
        banks = "at distinct banks" if split["payees_at_distinct_banks"] else "some at one bank"
        lines.append(
            f"splits    {split['payees']} payees a payment, {banks}: "
            f"{split['ok_per_s']:.1f} split payments/s, ratio to the baseline {split['ratio']}"
        )
    if report.get("baseline"):
        lines.append(_line("baseline", report["baseline"]))
        lines.append(f"ratio     payments/s / baseline calls/s = {report['ratio']}")
        if report.get("bulk"):
            lines.append(
                f"          (bulk: calls/s above; items/s / baseline calls/s ="
                f" {report['bulk']['items_ratio']})"
            )
    if report.get("ceiling"):
        lines.append(_line("ceiling", report["ceiling"]))
        if report.get("ceiling_ratio") is not None:
            lines.append(
                f"ceiling   GetPayment calls/s / baseline calls/s = {report['ceiling_ratio']}"
                " (the most the ratio could be through this gateway's per-call stack)"
            )
        lines.append(
            f"          payments/s / GetPayment calls/s = {report['payments_per_ceiling']}"
        )
    cpu = report.get("cpu") or {}
    if cpu:
        parts = [
            f"{name} {v['cpu_s']:.2f} s ({v['cores']:.2f} cores)" if "cpu_s" in v
            else f"{name} restarted"
            for name, v in cpu.items()
        ]
        lines.append("cpu       " + ", ".join(parts))
    memory = report.get("memory") or {}
    if memory:
        lines.append("memory    " + ", ".join(
            f"{name} {v['rss_start_mib']:.1f} -> {v['rss_end_mib']:.1f} MiB "
            f"(max {v['rss_max_mib']:.1f}, {v['growth_mib']:+.1f}; second half "
            f"{_signed(v['slope_mib_per_min'])} MiB/min)" if "rss_start_mib" in v
            else f"{name} restarted"
            for name, v in memory.items()
        ))
    batches = report.get("batches") or {}
    if batches:
        lines.append("batches   " + ", ".join(
            f"{operation} {v['calls']} calls in {v['rpcs']} RPCs ({v['calls_per_rpc']} per RPC)"
            for operation, v in batches.items()
        ))
    load = report.get("machine_load") or {}
    if load:
        lines.append(
            f"machine   {load['busy_cores']:.2f} cores busy during the payments window, "
            f"{load['other_cores']:.2f} of them not the suite or the bench "
            f"(steal {load['steal_cores']:.2f}, load average {load['load_average_1m']})"
        )
    money = report["money"]
    verdict = "ok" if money["ok"] else "FAILED: " + "; ".join(money["problems"])
    lines.append(
        f"money     {verdict} (total {money['total_before_minor']} -> "
        f"{money['total_after_minor']}; exact balances: "
        f"{money['balances_match_acknowledged_payments']})"
    )
    return "\n".join(lines)
