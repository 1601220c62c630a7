"""RFC 6238 codes computed by the tests themselves (hmac and struct), not by the gateway's
library: a test that used the same code to make and to check codes could not fail.

`rfc6238(secret, step)` is a code of any step: tests/inproc sets the gateway's clock
(inproc/totp_clock.py). Against processes on the real clock, `Authenticator(secret).code()`
picks a step the gateway accepts now and has not seen used.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
import time

STEP_S = 30


def rfc6238(secret_b32: str, step: int, digits: int = 6) -> str:
    """The TOTP code of `step` (HMAC-SHA1, dynamic truncation), as RFC 6238 and 4226 say."""
    key = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8))
    digest = hmac.new(key, struct.pack(">Q", step), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10**digits).zfill(digits)


# A code is computed at least this long before its step ends, so that the gateway (on this
# machine's clock) checks it within the same step.
BOUNDARY_MARGIN_S = 3.0


def current_step(now_s: float | None = None) -> int:
    return int(time.time() if now_s is None else now_s) // STEP_S


def step_clear_of_its_end(margin_s: float = BOUNDARY_MARGIN_S) -> int:
    """The current step, once at least `margin_s` of it remain (sleeping into the next step
    otherwise): a code of a step near it, computed now, is checked by a gateway on this
    machine while the same step lasts."""
    now_s = time.time()
    left_s = STEP_S - now_s % STEP_S
    if left_s < margin_s:
        time.sleep(left_s + 0.05)
    return current_step()


def wait_for_step(step: int) -> None:
    """Sleep until the real clock's step is at least `step`."""
    time.sleep(max(0.0, step * STEP_S - time.time()) + 0.05)


class Authenticator:
    """A user's authenticator app against a gateway on the real clock: each code it gives is
    of a step the gateway accepts now (the current one or one either side) and of a later
    step than the last one it gave, since the gateway takes each step once per user."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.last_step: int | None = None

    def code(self, steps_back: int = 1) -> str:
        """A code of the current step less `steps_back` (1: one step old), or of the
        earliest later step not used yet; waits for the next step when none is left."""
        while True:
            now = step_clear_of_its_end()
            step = now - steps_back
            if self.last_step is not None:
                step = max(step, self.last_step + 1)
            if step <= now + 1:
                self.last_step = step
                return rfc6238(self.secret, step)
            time.sleep(STEP_S - time.time() % STEP_S + 0.05)
