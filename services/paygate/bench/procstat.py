"""CPU time and memory of processes, read from /proc, and the suite's pids from supervisorctl.

A process's CPU time is its utime + stime (user and system time of all its threads), so a
window's CPU is the difference of two samples. A pid that changed between the samples
(supervisord restarted the program) makes the window's number meaningless: it is reported
as restarted instead of as a number.

Memory is each process's resident set (VmRSS of /proc/PID/status), sampled every second or
so over the window (at most MAX_MEMORY_SAMPLES samples, the interval widening for long
windows): reading a few small /proc files a second costs nothing measurable.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
SUPERVISORCTL_TIMEOUT_S = 20.0
# Fields of /proc/PID/stat after the ")" that ends the command name: state is the first,
# utime (field 14 of the whole line) is the 12th and stime the 13th.
UTIME_INDEX = 11
STIME_INDEX = 12


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds `pid` has used so far; None when it does not exist."""
    try:
        text = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()
    return (int(fields[UTIME_INDEX]) + int(fields[STIME_INDEX])) / CLOCK_TICKS_PER_S


def supervisor_pids(
    conf: pathlib.Path, directory: pathlib.Path, programs: Iterable[str]
) -> tuple[dict[str, int], str]:
    """The pid of each running program (`supervisorctl pid NAME`), and why some are missing.

    Never raises: a bench without CPU numbers is still a bench.
    """
    pids: dict[str, int] = {}
    problems = []
    for program in programs:
        try:
            result = subprocess.run(
                [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(conf), "pid", program],
                cwd=directory,
                capture_output=True,
                text=True,
                timeout=SUPERVISORCTL_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            problems.append(f"{program}: {exc}")
            continue
        text = result.stdout.strip()
        if text.isdigit() and int(text) > 0:
            pids[program] = int(text)
        else:
            problems.append(f"{program}: {(text or result.stderr.strip())[:200]}")
    return pids, "; ".join(problems)


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, stolen) CPU seconds of the whole machine so far, all cores together.

    Busy is everything but idle, iowait and steal; steal is time the hypervisor gave to
    other guests. Compared with the suite's own CPU, it shows how much else ran during
    a measurement: the bench's numbers only mean something on an otherwise quiet machine.
    """
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0
    fields += [0] * (8 - len(fields))
    user, nice, system, idle, iowait, irq, softirq, steal = fields[:8]
    busy = user + nice + system + irq + softirq
    return busy / CLOCK_TICKS_PER_S, steal / CLOCK_TICKS_PER_S


@dataclasses.dataclass(frozen=True)
class CpuSample:
    pids: Mapping[str, int]
    seconds: Mapping[str, float | None]
    machine_busy_s: float = 0.0
    machine_steal_s: float = 0.0


def sample(pids: Mapping[str, int]) -> CpuSample:
    busy, steal = machine_cpu_seconds()
    return CpuSample(
        dict(pids), {name: cpu_seconds(pid) for name, pid in pids.items()}, busy, steal
    )


def machine_window(before: CpuSample, after: CpuSample, window_s: float) -> dict[str, float]:
    """How busy the whole machine was over the window, in cores, and its load average."""
    if window_s <= 0:
        return {}
    return {
        "busy_cores": round((after.machine_busy_s - before.machine_busy_s) / window_s, 3),
        "steal_cores": round((after.machine_steal_s - before.machine_steal_s) / window_s, 3),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def window(
    before: CpuSample, after: CpuSample, current_pids: Mapping[str, int], window_s: float
) -> dict[str, dict[str, Any]]:
    """Per process: pid, CPU seconds in the window and the share of one core it used."""
    out: dict[str, dict[str, Any]] = {}
    for name, pid in before.pids.items():
        start, end = before.seconds.get(name), after.seconds.get(name)
        if start is None or end is None or current_pids.get(name, pid) != pid:
            out[name] = {"pid": pid, "restarted": True}
            continue
        cpu_s = end - start
        out[name] = {
            "pid": pid,
            "cpu_s": round(cpu_s, 3),
            "cores": round(cpu_s / window_s, 3) if window_s > 0 else 0.0,
        }
    return out


COMMAND_KEY = "{name}#{pid}"
MAX_COMMAND_PIDS = 1000  # a bound on what one --cpu-of-command samples


def command_pids(name: str) -> dict[str, int]:
    """Every process whose command (/proc/PID/comm) is `name`, keyed NAME#PID.

    For a server the suite does not run itself, PostgreSQL's backends for instance: its
    CPU is part of what a payment costs. A process that starts during the window is not
    counted, one that ends in it is reported as restarted and left out of the sum.
    """
    if not name:
        return {}
    found: dict[str, int] = {}
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit() or len(found) >= MAX_COMMAND_PIDS:
            continue
        try:
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if comm == name:
            found[COMMAND_KEY.format(name=name, pid=entry.name)] = int(entry.name)
    return found


def fold_commands(cpu: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The NAME#PID entries of `window`'s answer summed into one NAME entry."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in cpu.items():
        name, sep, _ = key.partition("#")
        if not sep:
            out[key] = dict(value)
            continue
        total = out.setdefault(name, {"processes": 0, "cpu_s": 0.0, "cores": 0.0})
        if "cpu_s" in value:
            total["processes"] += 1
            total["cpu_s"] = round(total["cpu_s"] + value["cpu_s"], 3)
            total["cores"] = round(total["cores"] + value["cores"], 3)
    return out


# Memory -----------------------------------------------------------------------------------

MIB = 1024 * 1024
DEFAULT_MEMORY_INTERVAL_S = 1.0
MAX_MEMORY_SAMPLES = 4000  # per process: the interval widens so that a window fits in these


def rss_bytes(pid: int) -> int | None:
    """Resident memory of `pid` now (VmRSS of /proc/PID/status); None when it does not exist."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024  # the kernel reports kB
    except (OSError, ValueError, IndexError):
        return None
    return None  # a zombie or a kernel thread has no VmRSS line


def memory_interval_s(window_s: float, interval_s: float = DEFAULT_MEMORY_INTERVAL_S) -> float:
    """The sampling interval for a window: `interval_s`, widened to stay in the bound."""
    return max(interval_s, window_s / (MAX_MEMORY_SAMPLES - 1))


@dataclasses.dataclass
class MemorySeries:
    """RSS samples of processes over a window: times (s from the first) and bytes, per name.

    A sample of a process that is gone (or restarted: its pid is reused only rarely, so a
    vanished pid is the sign) is None.
    """

    pids: Mapping[str, int]
    times_s: list[float] = dataclasses.field(default_factory=list)
    rss: dict[str, list[int | None]] = dataclasses.field(default_factory=dict)

    def add(self, at_s: float) -> None:
        if len(self.times_s) >= MAX_MEMORY_SAMPLES:
            return
        self.times_s.append(at_s)
        for name, pid in self.pids.items():
            self.rss.setdefault(name, []).append(rss_bytes(pid))


def slope_per_s(times_s: Sequence[float], values: Sequence[float]) -> float | None:
    """The least-squares slope of values over times; None with fewer than two times."""
    n = len(times_s)
    if n < 2 or n != len(values):
        return None
    mean_t = sum(times_s) / n
    mean_v = sum(values) / n
    spread = sum((t - mean_t) ** 2 for t in times_s)
    if spread <= 0:
        return None
    return sum((t - mean_t) * (v - mean_v) for t, v in zip(times_s, values, strict=True)) / spread


def memory_window(
    series: MemorySeries, current_pids: Mapping[str, int]
) -> dict[str, dict[str, Any]]:
    """Per process: RSS at the window's start and end, its max, and its growth in MiB.

    growth_mib is end - start; slope_mib_per_min is the least-squares slope over the second
    half of the window only, so that a process filling its caches and pools during the first
    half is not counted as growing. A process that vanished or was restarted in the window
    is reported as restarted.
    """
    out: dict[str, dict[str, Any]] = {}
    for name, pid in series.pids.items():
        values = series.rss.get(name, [])
        if not values or any(v is None for v in values) or current_pids.get(name, pid) != pid:
            out[name] = {"pid": pid, "restarted": True}
            continue
        rss = [int(v) for v in values if v is not None]
        half = series.times_s[-1] / 2
        late = [(t, v / MIB) for t, v in zip(series.times_s, rss, strict=True) if t >= half]
        slope = slope_per_s([t for t, _ in late], [v for _, v in late])
        out[name] = {
            "pid": pid,
            "samples": len(rss),
            "rss_start_mib": round(rss[0] / MIB, 2),
            "rss_end_mib": round(rss[-1] / MIB, 2),
            "rss_max_mib": round(max(rss) / MIB, 2),
            "growth_mib": round((rss[-1] - rss[0]) / MIB, 2),
            "slope_mib_per_min": None if slope is None else round(slope * 60, 3),
            "series_mib": _thinned(series.times_s, rss),
        }
    return out


MAX_SERIES_POINTS = 60  # of each process's RSS over the window, in the JSON report


def _thinned(times_s: Sequence[float], rss: Sequence[int]) -> list[list[float]]:
    """At most MAX_SERIES_POINTS [seconds, MiB] pairs, evenly picked, the last one included."""
    step = max(1, -(-len(rss) // MAX_SERIES_POINTS))
    picked = list(range(0, len(rss), step))
    if picked[-1] != len(rss) - 1:
        picked[-1] = len(rss) - 1
    return [[round(times_s[i], 1), round(rss[i] / MIB, 2)] for i in picked]
