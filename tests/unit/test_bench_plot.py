"""paygate.bench.plot: the figure of a report shows the report's own per-second numbers.

The plot of a real run, and its PNG, are checked in tests/test_bench.py; here, the cases a
short run does not make: a last second cut short, a second without calls, a bulk run.
"""

from __future__ import annotations

import math
import pathlib
from typing import Any

import pytest
from paygate.bench import plot
from paygate.bench.load import LoadResult
from paygate.bench.report import bulk, summarize


def lines_of(report: dict[str, Any]) -> dict[str, tuple[list[float], list[float]]]:
    figure = plot.draw(report)
    return {
        str(line.get_label()): (list(map(float, line.get_xdata())),
                                list(map(float, line.get_ydata())))
        for axes in figure.axes
        for line in axes.get_lines()
    }  # fmt: skip


def a_report(payments: dict[str, Any], **more: Any) -> dict[str, Any]:
    settings = {"concurrency": 4, "rate_per_s": 0.0, "batch_size": 1, "processes": 1}
    return {
        "settings": {**settings, **more.pop("settings", {})},
        "payments": payments,
        "bulk": None,
        "baseline": None,
        "ratio": None,
        "ceiling": None,
        **more,
    }


def result_of(calls: list[tuple[float, float, str]]) -> LoadResult:
    """(completed at s, latency ms, outcome) per call, as the callers' loop records them."""
    result = LoadResult()
    for at, latency_ms, code in calls:
        result.completed_s.append(at)
        result.latencies_ms.append(latency_ms)
        result.outcomes[code] += 1
        if code == "OK":
            result.ok_by_second[int(at)] += 1
    return result


def test_rates_and_latencies_are_the_reports_seconds() -> None:
    # 2.5 s window: second 1 has no call, second 2 lasts half a second.
    calls = [(0.1, 10.0, "OK"), (0.5, 30.0, "OK"), (0.7, 20.0, "ABORTED"), (2.2, 50.0, "OK")]
    payments = summarize(result_of(calls), window_s=2.5)
    baseline = summarize(result_of([(0.5, 1.0, "OK")] * 5 + [(1.5, 1.0, "OK")] * 6), 2.5)
    report = a_report(payments, baseline=baseline, ratio=0.1)
    lines = lines_of(report)

    assert [s["ok"] for s in payments["latency_by_second"]] == [2, 0, 1]
    # Each at the middle of its second; the last second, half a second long, made 1 payment.
    assert lines[plot.PAYMENTS_LABEL] == ([0.5, 1.5, 2.25], [2.0, 0.0, 2.0])
    assert lines[plot.BASELINE_LABEL] == ([0.5, 1.5], [5.0, 6.0])
    seconds, p50 = lines[plot.P50_LABEL]
    assert seconds == [0.5, 1.5, 2.25]
    assert p50[0] == 20.0 and math.isnan(p50[1]) and p50[2] == 50.0
    p99 = lines[plot.P99_LABEL][1]
    assert p99[0] == 30.0 and math.isnan(p99[1]) and p99[2] == 50.0
    assert plot.CALLS_LABEL not in lines and plot.CEILING_LABEL not in lines


def test_a_bulk_run_plots_its_payments_and_its_calls() -> None:
    result = result_of([(0.5, 100.0, "OK"), (1.5, 120.0, "OK"), (1.7, 90.0, "OK")])
    result.item_outcomes.update({"OK": 70, "FAILED_PRECONDITION": 5})
    result.items_ok_by_second.update({0: 25, 1: 45})
    payments = summarize(result, window_s=2.0)
    baseline = summarize(result_of([(0.5, 1.0, "OK")] * 10 + [(1.5, 1.0, "OK")] * 10), 2.0)
    bulk_ = bulk(result, 2.0, 25, baseline)
    assert bulk_ is not None and bulk_["items_ok_by_second"] == [25, 45]
    report = a_report(payments, bulk=bulk_, baseline=baseline, settings={"batch_size": 25})
    lines = lines_of(report)

    assert lines[plot.PAYMENTS_LABEL][1] == [25.0, 45.0]
    assert lines[plot.CALLS_LABEL][1] == [1.0, 2.0]
    title = plot.title(report)
    assert "concurrency 4, rate as fast as possible, batch size 25" in title
    assert "35.0 payments/s" in title and f"ratio {bulk_['items_ratio']}" in title


def test_the_title_names_the_rate_and_a_missing_baseline() -> None:
    report = a_report(summarize(result_of([(0.5, 4.0, "OK")]), 1.0), settings={"rate_per_s": 150})
    assert plot.title(report).splitlines() == [
        "paygate-bench: concurrency 4, rate 150/s, batch size 1",
        "1.0 payments/s, p50 4.0 / p99 4.0 ms; no baseline",
    ]


def test_a_report_without_calls_still_draws(tmp_path: pathlib.Path) -> None:
    report = a_report(summarize(LoadResult(), window_s=1.0))
    path = tmp_path / "empty" / "bench.png"
    plot.write(report, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("report", "png"),
    [("bench.json", "bench.png"), ("var/run-1", "var/run-1.png"), ("a.png", "a.png.png")],
)
def test_the_plot_goes_beside_the_report(report: str, png: str) -> None:
    assert plot.default_path(pathlib.Path(report)) == pathlib.Path(png)
