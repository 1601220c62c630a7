"""The fault schedule: it acts on the suite only through its supervisord.

Every `interval_s` (jittered by a quarter either way) it injects one fault, and waits until
the program serves again before the next interval starts:

    kill-gateway   SIGKILL to a random gateway's pid (`supervisorctl pid gateway-2`);
                   supervisord restarts it
    kill-bank      SIGKILL to a random bank
    pause-bank     SIGSTOP to a random bank for `pause_s` (a few seconds longer than the
                   prepare timeout), then SIGCONT
    restart        `supervisorctl restart` of a random program (a graceful stop and start)
    crash-point    arm a crash point (paygate.common.faults) in the process it belongs to
                   and wait for the process to reach it and die; needs a suite started
                   with fault_injection = true

The first faults are one of each of kill-gateway, kill-bank and pause-bank (in a random
order), so that even a short run exercises all three; then the others, then random ones.
Signals go only to the pids that this suite's supervisord reports. `heal` undoes whatever
a fault left behind: it resumes a paused process, disarms crash points, starts stopped
programs and waits until every program serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import pathlib
import random
import signal
import sys
from collections.abc import Callable, Iterator

from paygate.chaos.connections import Connections
from paygate.chaos.history import Fault, History
from paygate.chaos.workload import Clock
from paygate.common import faults as crash_points

KILL_GATEWAY = "kill-gateway"
KILL_BANK = "kill-bank"
PAUSE_BANK = "pause-bank"
RESTART = "restart"
CRASH_POINT = "crash-point"
KINDS = (KILL_GATEWAY, KILL_BANK, PAUSE_BANK, RESTART, CRASH_POINT)
DEFAULT_KINDS = (KILL_GATEWAY, KILL_BANK, PAUSE_BANK, RESTART)
# Each of these is injected once before any kind repeats (when it is enabled).
FIRST_KINDS = (KILL_GATEWAY, KILL_BANK, PAUSE_BANK)

SUPERVISORCTL_TIMEOUT_S = 60.0  # a restart waits up to stopwaitsecs=15 for the old process
PID_POLL_S = 0.1


class SupervisorError(RuntimeError):
    """supervisorctl did not answer, or answered something this tool cannot use."""


class Supervisor:
    """supervisorctl of one suite, run in the directory its supervisord was started from."""

    def __init__(self, conf: pathlib.Path, directory: pathlib.Path) -> None:
        self.conf = conf
        self.directory = directory

    async def ctl(self, *args: str) -> str:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "supervisor.supervisorctl",
            "-c",
            str(self.conf),
            *args,
            cwd=self.directory,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            async with asyncio.timeout(SUPERVISORCTL_TIMEOUT_S):
                out, _ = await process.communicate()
        except TimeoutError:
            process.kill()
            await process.wait()
            raise SupervisorError(f"supervisorctl {' '.join(args)} did not answer") from None
        return out.decode(errors="replace").strip()

    async def pid(self, program: str) -> int:
        """The pid supervisord reports for `program`; 0 while it does not run."""
        text = await self.ctl("pid", program)
        if not text.isdigit():
            raise SupervisorError(f"supervisorctl pid {program}: {text}")
        return int(text)

    async def not_running(self, programs: list[str]) -> list[str]:
        return [p for p in programs if await self.pid(p) <= 0]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScheduleSettings:
    interval_s: float
    pause_s: float
    kinds: tuple[str, ...] = DEFAULT_KINDS
    crash_points: tuple[str, ...] = ()
    restart_timeout_s: float = 30.0


def kind_order(kinds: tuple[str, ...], rng: random.Random) -> Iterator[str]:
    """FIRST_KINDS in a random order, then the other kinds once each, then random kinds."""
    first = [k for k in FIRST_KINDS if k in kinds]
    rng.shuffle(first)
    yield from first
    yield from (k for k in kinds if k not in first)
    while True:
        yield rng.choice(kinds)


class FaultSchedule:
    def __init__(
        self,
        supervisor: Supervisor,
        conn: Connections,
        settings: ScheduleSettings,
        var_dir: pathlib.Path,
        rng: random.Random,
        clock: Clock,
        history: History,
        progress: Callable[[str], None],
    ) -> None:
        self._sup = supervisor
        self._conn = conn
        self._settings = settings
        self._var_dir = var_dir
        self._rng = rng
        self._clock = clock
        self._history = history
        self._progress = progress
        self._paused: int | None = None
        self._armed: pathlib.Path | None = None

    @property
    def banks(self) -> list[str]:
        return sorted(self._conn.bank_channels)

    async def run(self, stop: asyncio.Event) -> None:
        """Inject faults until `stop` is set; a fault under way is finished first."""
        kinds = kind_order(self._settings.kinds, self._rng)
        while True:
            interval_s = self._settings.interval_s * self._rng.uniform(0.75, 1.25)
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval_s)
                return
            except TimeoutError:
                pass
            kind = next(kinds)
            self._progress(f"fault: {kind}")
            fault = await self.inject(kind)
            if fault is not None:
                self._history.faults.append(fault)
                self._progress(
                    f"fault: {kind} {fault.target} over after "
                    f"{fault.end_s - fault.start_s:.1f} s {fault.detail}".rstrip()
                )

    async def inject(self, kind: str) -> Fault | None:
        if kind == KILL_GATEWAY:
            return await self._kill(KILL_GATEWAY, self._rng.choice(self._conn.gateway_programs))
        if kind == KILL_BANK:
            return await self._kill(KILL_BANK, self._rng.choice(self.banks))
        if kind == PAUSE_BANK:
            return await self._pause(self._rng.choice(self.banks))
        if kind == RESTART:
            return await self._restart(self._rng.choice(self._conn.programs))
        if kind == CRASH_POINT:
            return await self._crash(self._rng.choice(self._settings.crash_points))
        raise ValueError(f"unknown fault kind {kind!r}")

    async def _kill(self, kind: str, program: str) -> Fault | None:
        pid = await self._sup.pid(program)
        if pid <= 0:
            return None
        start_s = self._clock.now()
        os.kill(pid, signal.SIGKILL)
        detail = await self._wait_restarted(program, pid, self._settings.restart_timeout_s)
        return Fault(
            kind=kind, target=program, start_s=start_s, end_s=self._clock.now(), detail=detail
        )

    async def _pause(self, program: str) -> Fault | None:
        pid = await self._sup.pid(program)
        if pid <= 0:
            return None
        start_s = self._clock.now()
        self._paused = pid
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(self._settings.pause_s)
        finally:
            self._resume()
        return Fault(
            kind=PAUSE_BANK,
            target=program,
            start_s=start_s,
            end_s=self._clock.now(),
        )

    def _resume(self) -> None:
        if self._paused is not None:
            # It may have died while paused; supervisord restarts it then.
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._paused, signal.SIGCONT)
            self._paused = None

    async def _restart(self, program: str) -> Fault:
        start_s = self._clock.now()
        await self._sup.ctl("restart", program)
        serving = await self._conn.wait_serving([program], self._settings.restart_timeout_s)
        return Fault(
            kind=RESTART,
            target=program,
            start_s=start_s,
            end_s=self._clock.now(),
            detail="" if serving else "not serving again in time",
        )

    async def _crash(self, point: str) -> Fault | None:
        gateway = point.startswith("gateway.")
        program = self._rng.choice(self._conn.gateway_programs if gateway else self.banks)
        pid = await self._sup.pid(program)
        if pid <= 0:
            return None
        start_s = self._clock.now()
        self._armed = crash_points.arm(self._var_dir, program, point)
        # Under load a point is reached at once; an idle suite may never reach it.
        detail = await self._wait_restarted(program, pid, self._settings.interval_s * 2)
        reached = self._armed is not None and not self._armed.exists()
        self._disarm()
        if not reached:
            detail = "not reached"
        return Fault(
            kind=CRASH_POINT,
            target=program,
            start_s=start_s,
            end_s=self._clock.now(),
            detail=f"{point} {detail}".strip(),
        )

    def _disarm(self) -> None:
        if self._armed is not None:
            self._armed.unlink(missing_ok=True)
            self._armed = None

    async def _wait_restarted(self, program: str, old_pid: int, timeout_s: float) -> str:
        """Wait for a new pid and for it to serve; returns "" or why it did not."""
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    if await self._sup.pid(program) not in (0, old_pid):
                        break
                    await asyncio.sleep(PID_POLL_S)
        except TimeoutError:
            return "not restarted in time"
        serving = await self._conn.wait_serving([program], self._settings.restart_timeout_s)
        return "" if serving else "not serving again in time"

    async def heal(self, timeout_s: float) -> bool:
        """Undo every fault: resume, disarm, start what is stopped, wait for all to serve."""
        self._resume()
        self._disarm()
        programs = self._conn.programs
        for program in await self._sup.not_running(programs):
            await self._sup.ctl("start", program)
        return await self._conn.wait_serving(programs, timeout_s)
