"""The plot of a run: payments/s and latency per second, beside the baseline's calls/s.

Drawn from the JSON report alone (`draw` makes the figure of a report, `write` saves it as a
PNG), so that a report read back from its file draws the same picture. Three panels over
the seconds of the measured window, a point in the middle of each second:

    payments   payments/s (payments that ended OK; in a bulk run, the payments of the
               calls, and the calls/s beside them)
    baseline   the same callers' echo calls/s and, with --ceiling, their GetPayment calls/s:
               a panel of its own, as these run several times faster than payments
    latency    the payments' p50 and p99 per second (ms), with a gap for a second in which
               no call completed

Each phase has a window of its own, of the same length: second 3 of the baseline is the
fourth second of the baseline's window, not a moment of the payments'. A rate is the
second's count over its length, so a last second cut short by a fractional --duration
does not show as a drop.
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PAYMENTS_LABEL = "payments/s"
CALLS_LABEL = "payment calls/s"
BASELINE_LABEL = "baseline (echo) calls/s"
CEILING_LABEL = "ceiling (GetPayment) calls/s"
P50_LABEL = "payments p50"
P99_LABEL = "payments p99"
DPI = 100
FIGURE_SIZE_IN = (11.0, 8.5)

Series = tuple[list[float], list[float]]


def rates(summary: Mapping[str, Any], counts: Sequence[int] | None = None) -> Series:
    """The middle of each second of a phase's window and, per second, `counts` (default:
    its calls that ended OK) over the length of that second."""
    seconds = summary["latency_by_second"]
    if counts is None:
        counts = [entry["ok"] for entry in seconds]
    xs, ys = [], []
    for entry, count in zip(seconds, counts, strict=True):
        length_s = _length_s(summary, entry["second"])
        xs.append(entry["second"] + length_s / 2)
        ys.append(count / length_s)
    return xs, ys


def latencies(summary: Mapping[str, Any], key: str) -> Series:
    """The middle of each second of a phase's window and that second's latency `key` (p50,
    p99) in ms; NaN, a gap in the line, where no call completed."""
    seconds = summary["latency_by_second"]
    return (
        [entry["second"] + _length_s(summary, entry["second"]) / 2 for entry in seconds],
        [float(entry[key]) if entry["count"] else math.nan for entry in seconds],
    )


def _length_s(summary: Mapping[str, Any], second: int) -> float:
    """How much of `second` the window holds: 1, less for a last second cut short. A call
    counts only before the window's end, so each listed second holds some of it (the
    report rounds the window's length: never less than a millisecond here)."""
    return max(0.001, min(1.0, float(summary["window_s"]) - second))


def title(report: Mapping[str, Any]) -> str:
    """What was run, on the first line; what it gave, on the second."""
    settings, payments = report["settings"], report["payments"]
    rate = f"{settings['rate_per_s']:g}/s" if settings["rate_per_s"] else "as fast as possible"
    first = (
        f"paygate-bench: concurrency {settings['concurrency']}, rate {rate}, "
        f"batch size {settings['batch_size']}"
    )
    if settings.get("splits", 1) > 1:
        first += f", split payments to {settings['splits']} payees"
    if settings.get("processes", 1) > 1:
        first += f", {settings['processes']} client processes"
    bulk, baseline = report.get("bulk"), report.get("baseline")
    per_s = bulk["items_ok_per_s"] if bulk else payments["ok_per_s"]
    latency = payments["latency_ms"]
    second = f"{per_s:,.1f} payments/s, p50 {latency['p50']:.1f} / p99 {latency['p99']:.1f} ms"
    if baseline:
        ratio = bulk["items_ratio"] if bulk else report.get("ratio")
        second += f"; baseline {baseline['ok_per_s']:,.1f} calls/s, ratio {ratio}"
    else:
        second += "; no baseline"
    return first + "\n" + second


def draw(report: Mapping[str, Any]) -> Figure:
    """The figure of a report (a Figure of its own: no pyplot, no global state)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=FIGURE_SIZE_IN)
    payment_axes, baseline_axes, latency_axes = figure.subplots(3, 1, sharex=True)
    payments, bulk = report["payments"], report.get("bulk")
    if bulk:
        payment_axes.plot(
            *rates(payments, bulk["items_ok_by_second"]), label=PAYMENTS_LABEL, marker="."
        )
        payment_axes.plot(*rates(payments), label=CALLS_LABEL, marker=".")
    else:
        payment_axes.plot(*rates(payments), label=PAYMENTS_LABEL, marker=".")
    payment_axes.set_ylabel("payments per second")
    if report.get("baseline"):
        baseline_axes.plot(
            *rates(report["baseline"]), label=BASELINE_LABEL, color="grey", marker="."
        )
    if report.get("ceiling"):
        baseline_axes.plot(
            *rates(report["ceiling"]), label=CEILING_LABEL, color="tab:purple", marker="."
        )
    baseline_axes.set_ylabel("calls per second")
    if not baseline_axes.get_lines():
        baseline_axes.text(0.5, 0.5, "no baseline in this run", ha="center", va="center",
                           transform=baseline_axes.transAxes)  # fmt: skip
        baseline_axes.set_yticks([])
    latency_axes.plot(*latencies(payments, "p50"), label=P50_LABEL, marker=".")
    latency_axes.plot(*latencies(payments, "p99"), label=P99_LABEL, marker=".")
    latency_axes.set_ylabel("latency (ms)")
    latency_axes.set_xlabel("seconds into the measured window (each phase its own)")
    latency_axes.set_xlim(0, max(1.0, float(payments["window_s"])))
    latency_axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    for axes in (payment_axes, baseline_axes, latency_axes):
        highest = max(
            (y for line in axes.get_lines() for y in line.get_ydata() if math.isfinite(y)),
            default=0.0,
        )
        axes.set_ylim(0, max(1.0, highest * 1.15))  # from zero, with room for the legend
        axes.grid(alpha=0.3)
        if axes.get_lines():
            axes.legend(loc="best", fontsize="small")
    figure.suptitle(title(report), fontsize="medium")
    figure.tight_layout()
    return figure


def write(report: Mapping[str, Any], path: pathlib.Path) -> None:
    """Save the report's figure as a PNG at `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    draw(report).savefig(path, dpi=DPI, format="png")


def default_path(report_path: pathlib.Path) -> pathlib.Path:
    """Beside the JSON report, with its stem: bench.json -> bench.png."""
    if report_path.suffix == ".png":  # never the report's own file
        return report_path.with_name(report_path.name + ".png")
    return report_path.with_suffix(".png")
