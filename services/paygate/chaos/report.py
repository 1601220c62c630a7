"""The report of a chaos run: a one-screen summary, results.json, history.json and a plot.

results.json holds the verdict (`valid`), the run's settings and counts, every check with
"ok" or "violated", and for each kind of violation its count and first example.
history.json holds everything the checker read. chaos.png plots the total money of the
accounts and the rate of successful payments over time, with the faults shaded.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import pathlib
from typing import Any

from paygate.chaos.checker import CHECKS, CheckResult
from paygate.chaos.faults import CRASH_POINT, KINDS
from paygate.chaos.history import Fault, History, Outcome, Phase

RESULTS_FILE = "results.json"
HISTORY_FILE = "history.json"
PLOT_FILE = "chaos.png"
FAULT_COLOURS = {
    "kill-gateway": "tab:red",
    "kill-bank": "tab:orange",
    "pause-bank": "tab:blue",
    "restart": "tab:green",
    "crash-point": "tab:purple",
}


def counts(history: History) -> dict[str, Any]:
    outcomes: dict[str, collections.Counter[str]] = {p.value: collections.Counter() for p in Phase}
    for call in history.calls:
        outcomes[call.phase.value][call.outcome.value] += 1
    statuses = collections.Counter(p.status for p in history.gateway_payments)
    refusals = collections.Counter(
        c.reason for c in history.calls if c.outcome == Outcome.REFUSED and c.phase == Phase.RUN
    )
    refunds: dict[str, collections.Counter[str]] = {p.value: collections.Counter() for p in Phase}
    for refund in history.refunds:
        refunds[refund.phase.value][refund.outcome.value] += 1
    items = collections.Counter(c.outcome.value for c in history.calls if c.batch)
    splits = {p.payment_id for p in history.gateway_payments if p.splits}
    split_refunds = collections.Counter(
        r.status for r in history.gateway_refunds if r.payment_id in splits
    )
    return {
        "users": len(history.users),
        "keys": len(history.intents),
        "split_keys": sum(bool(i.splits) for i in history.intents.values()),
        "split_payments": dict(
            collections.Counter(p.status for p in history.gateway_payments if p.splits)
        ),
        "batches": len({c.batch for c in history.calls if c.batch}),
        "batch_items": dict(items),
        "calls": {phase: dict(counter) for phase, counter in outcomes.items()},
        "refusals": dict(refusals),
        "refunds": {phase: dict(counter) for phase, counter in refunds.items()},
        "gateway_refunds": dict(collections.Counter(r.status for r in history.gateway_refunds)),
        "split_refunds": dict(split_refunds),
        "gateway_payments": dict(statuses),
        "faults": fault_counts(history.faults),
        "samples": len(history.samples),
        "complete_samples": sum(s.complete for s in history.samples),
        "replay_skipped": history.replay_skipped,
    }


def fault_counts(faults: list[Fault]) -> dict[str, int]:
    """Faults that took effect, by kind (a crash point that was never reached does not count)."""
    found = collections.Counter(
        f.kind for f in faults if not (f.kind == CRASH_POINT and f.detail.endswith("not reached"))
    )
    return {kind: found[kind] for kind in KINDS if found[kind]}


def results(history: History, result: CheckResult, settings: dict[str, Any]) -> dict[str, Any]:
    final = history.quiescent
    return {
        **result.to_json(),
        "settings": settings,
        "counts": counts(history),
        "money": {
            "initial_total_minor": history.initial_total(),
            "final_total_minor": None if final is None else final.total_balance(),
            "final_read_complete": final is not None and final.complete,
            "holds_settled_after_s": history.pending_settled_after_s,
        },
        "timeline": {"run_end_s": history.run_end_s, "recovered_s": history.recovered_s},
        "faults": [dataclasses.asdict(f) for f in history.faults],
    }


def write(out: pathlib.Path, history: History, data: dict[str, Any]) -> list[pathlib.Path]:
    out.mkdir(parents=True, exist_ok=True)
    (out / RESULTS_FILE).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    (out / HISTORY_FILE).write_text(json.dumps(history.to_json()) + "\n")
    plot(out / PLOT_FILE, history)
    return [out / RESULTS_FILE, out / HISTORY_FILE, out / PLOT_FILE]


def summary(data: dict[str, Any], history: History, files: list[pathlib.Path]) -> str:
    s, c, money = data["settings"], data["counts"], data["money"]
    run = c["calls"]["run"]
    faults = ", ".join(f"{kind} x{n}" for kind, n in c["faults"].items()) or "none"
    targets = [
        f"{f.kind} {f.target} at {f.start_s:.0f}s ({f.end_s - f.start_s:.1f}s)"
        + (f" {f.detail}" if f.detail else "")
        for f in history.faults
    ]
    lines = [
        f"paygate-chaos: {'VALID' if data['valid'] else 'INVALID'}  (seed {s['seed']}, "
        f"{s['duration_s']:.0f} s, {s['clients']} clients, {c['users']} users)",
        f"faults     {faults}",
        *(f"           {line}" for line in _wrap(targets)),
        f"keys       {c['keys']}; gateway payments {_fmt(c['gateway_payments'])}",
        f"splits     {c['split_keys']} keys, gateway {_fmt(c['split_payments'])}; batches"
        f" {c['batches']}, their items {_fmt(c['batch_items'])}",
        f"calls      run {_fmt(run)}; refusals {_fmt(c['refusals'])}",
        f"refunds    run {_fmt(c['refunds']['run'])}; gateway {_fmt(c['gateway_refunds'])}"
        f" (of split payments {_fmt(c['split_refunds'])})",
        f"after      resolve {_fmt(c['calls']['resolve'])}; replay {_fmt(c['calls']['replay'])}"
        + (f" ({c['replay_skipped']} keys not replayed)" if c["replay_skipped"] else ""),
        f"money      initial {money['initial_total_minor']} minor, after recovery "
        f"{money['final_total_minor']}; {c['complete_samples']}/{c['samples']} reads "
        "during the run complete",
        f"holds      settled {_settled(money['holds_settled_after_s'])} after recovery",
        "checks",
    ]
    for kind, state in data["checks"].items():
        found = data["violations"].get(kind)
        mark = "ok" if state == "ok" else f"VIOLATED x{found['count']}"
        lines.append(f"  {mark:<14} {CHECKS[kind]}")
        if found:
            lines.append(f"  {'':<14}   first: {_clip(found['first']['message'])}")
    lines.append("files      " + ", ".join(str(f) for f in files))
    return "\n".join(lines)


def _fmt(counter: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counter.items())) or "none"


def _settled(after_s: float | None) -> str:
    return "NOT" if after_s is None else f"{after_s:.1f} s"


def _wrap(items: list[str], width: int = 100, lines_max: int = 3) -> list[str]:
    """Items joined by ", " on at most `lines_max` lines; the rest are counted, not shown."""
    lines: list[str] = []
    for index, item in enumerate(items):
        if lines and len(lines[-1]) + len(item) + 2 <= width:
            lines[-1] += ", " + item
        elif len(lines) < lines_max:
            lines.append(item)
        else:
            lines[-1] += f", and {len(items) - index} more (results.json)"
            break
    return lines


def _clip(text: str, width: int = 150) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def plot(path: pathlib.Path, history: History) -> None:
    """Total money (complete reads) and successful payments per second, faults shaded."""
    import matplotlib

    matplotlib.use("Agg")  # no display: write files only
    from matplotlib import pyplot

    figure, (money_axes, rate_axes) = pyplot.subplots(2, 1, sharex=True, figsize=(11, 6))
    try:
        complete = [s for s in history.samples if s.complete]
        money_axes.plot(
            [s.start_s for s in complete],
            [s.total_balance() for s in complete],
            label="total balance (minor units)",
        )
        money_axes.axhline(
            history.initial_total(), linestyle="--", color="grey", label="initial total"
        )
        money_axes.set_ylabel("money (minor units)")
        money_axes.legend(loc="lower left", fontsize="small")
        seconds = collections.Counter(
            int(c.end_s)
            for c in history.calls
            if c.phase == Phase.RUN and c.outcome == Outcome.SUCCEEDED
        )
        span = range(int(history.run_end_s) + 1)
        rate_axes.plot(list(span), [seconds[t] for t in span], label="succeeded / s")
        rate_axes.set_ylabel("payments per second")
        rate_axes.set_xlabel("seconds since start")
        shown: set[str] = set()
        for fault in history.faults:
            for axes in (money_axes, rate_axes):
                axes.axvspan(
                    fault.start_s,
                    max(fault.end_s, fault.start_s + 0.2),
                    alpha=0.25,
                    color=FAULT_COLOURS.get(fault.kind, "grey"),
                    label=None if fault.kind in shown or axes is money_axes else fault.kind,
                )
            shown.add(fault.kind)
        rate_axes.legend(loc="lower left", fontsize="small")
        figure.suptitle("paygate-chaos: money and payment rate, faults shaded")
        figure.tight_layout()
        figure.savefig(path, dpi=100)
    finally:
        pyplot.close(figure)
