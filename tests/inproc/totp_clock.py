"""The in-process gateway's TOTP clock, set by a test, so that no test waits for a 30-second
step: `with set_clock(servers) as clock:` (or the fixture around it), then `clock.step`,
`clock.advance(steps)`. The codes themselves come from tests/totp_codes.py."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from servers import Servers
from totp_codes import STEP_S

# A fixed time, in the middle of a step: far from the real clock, so a code of now fails.
BASE_S = 1_900_000_005.0


class Clock:
    """The gateway's TOTP clock, set by the test."""

    def __init__(self, servers: Servers) -> None:
        self._clock = servers.gateway.accounts.two_factor.clock
        self.now_s = BASE_S
        self._clock.now_s = lambda: self.now_s

    @property
    def step(self) -> int:
        return int(self.now_s) // STEP_S

    def advance(self, steps: int = 1) -> None:
        self.now_s += steps * STEP_S


@contextlib.contextmanager
def set_clock(servers: Servers) -> Iterator[Clock]:
    """The gateway reads the test's clock inside the block, its own after it."""
    real = servers.gateway.accounts.two_factor.clock.now_s
    try:
        yield Clock(servers)
    finally:
        servers.gateway.accounts.two_factor.clock.now_s = real
