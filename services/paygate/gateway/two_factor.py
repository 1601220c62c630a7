"""Two-factor login with TOTP (RFC 6238): enrolment, the check at login, recovery codes.

EnrollTotp (with the password) makes a secret and keeps it pending: nothing changes until
ConfirmTotp proves, with a code of it, that the user's app holds it; then two-factor is on
and 10 recovery codes are returned, once. Login then needs a code: the current one (or one
step either side), each time step once per user, or an unused recovery code, once. A wrong
code counts as a failed login (accounts.py records it in the throttle). The secret and the
codes never reach a log line, an error or a metric (gateway/totp.py keeps them sealed).
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Awaitable, Callable

from cryptography.exceptions import InvalidTag

from paygate.errors import (
    INVALID_ONE_TIME_CODE,
    TOTP_ALREADY_ENABLED,
    TOTP_KEY_MISMATCH,
    TOTP_NOT_ENABLED,
    TOTP_NOT_ENROLLED,
    Aborted,
    FailedPrecondition,
    InvalidArgument,
    Unauthenticated,
    Unavailable,
)
from paygate.gateway import totp
from paygate.gateway.models import TotpRecord, User
from paygate.gateway.store import GatewayStore

_log = logging.getLogger("paygate.gateway.two_factor")

# Checks the user's password (raising Unauthenticated, counted by the throttle); the
# client's address goes with it.
PasswordCheck = Callable[[User, str, str], Awaitable[None]]


class CodeCheck(enum.Enum):
    NOT_NEEDED = "not_needed"  # two-factor is off
    MISSING = "missing"
    WRONG = "wrong"  # or used already
    ACCEPTED = "accepted"


def wrong_code() -> Unauthenticated:
    return Unauthenticated("the one-time code is wrong or was used", reason=INVALID_ONE_TIME_CODE)


class TwoFactor:
    def __init__(
        self,
        store: GatewayStore,
        box: totp.SecretBox,
        check_password: PasswordCheck,
        clock: totp.TotpClock | None = None,
    ) -> None:
        self._store = store
        self._box = box
        self._check_password = check_password
        self.clock = clock or totp.TotpClock()  # tests replace its now_s

    async def check_login(self, user: User, code: str) -> CodeCheck:
        """Whether the user may log in as far as two-factor goes; uses up the code."""
        record = await self._store.totp(user.user_id)
        if not record.enabled:
            return CodeCheck.NOT_NEEDED
        if not code:
            return CodeCheck.MISSING
        return CodeCheck.ACCEPTED if await self._use(user, record, code) else CodeCheck.WRONG

    async def enroll(self, user: User, password: str, peer: str) -> tuple[str, str]:
        """A new pending secret and its otpauth:// URI; two-factor stays as it was."""
        await self._check_password(user, password, peer)
        if (await self._store.totp(user.user_id)).enabled:
            raise FailedPrecondition(
                "two-factor login is already on; disable it first", reason=TOTP_ALREADY_ENABLED
            )
        secret = totp.new_secret()
        await self._store.set_totp_pending(user.user_id, self._box.seal(secret, user.user_id))
        return secret, totp.provisioning_uri(secret, user.username)

    async def confirm(self, user: User, code: str) -> list[str]:
        """Turn two-factor on with a code of the pending secret; the new recovery codes."""
        record = await self._store.totp(user.user_id)
        if record.enabled:
            raise FailedPrecondition("two-factor login is already on", reason=TOTP_ALREADY_ENABLED)
        if record.pending is None:
            raise FailedPrecondition(
                "no two-factor enrolment to confirm: call EnrollTotp first",
                reason=TOTP_NOT_ENROLLED,
            )
        secret = self._open(record.pending, user)
        step = totp.matching_step(secret, _bounded(code), self.clock.step())
        if step is None:
            raise InvalidArgument(
                "the code does not match the new key: check the app's clock and type the"
                " code it shows now",
                reason=INVALID_ONE_TIME_CODE,
            )
        codes = totp.new_recovery_codes()
        hashes = [totp.recovery_code_hash(c) for c in codes]
        if not await self._store.enable_totp(
            user.user_id, record.pending, step=step, code_hashes=hashes
        ):
            raise Aborted("the enrolment changed meanwhile; enrol again")
        return codes

    async def disable(self, user: User, password: str, code: str, peer: str) -> None:
        await self._check_password(user, password, peer)
        await self.require(user, code)
        await self._store.disable_totp(user.user_id)

    async def regenerate_recovery_codes(self, user: User, code: str) -> list[str]:
        await self.require(user, code)
        codes = totp.new_recovery_codes()
        await self._store.replace_recovery_codes(
            user.user_id, [totp.recovery_code_hash(c) for c in codes]
        )
        return codes

    async def require(self, user: User, code: str) -> None:
        """Use up a valid code of the user's, or raise."""
        record = await self._store.totp(user.user_id)
        if not record.enabled:
            raise FailedPrecondition("two-factor login is off", reason=TOTP_NOT_ENABLED)
        if not await self._use(user, record, code):
            raise wrong_code()

    async def _use(self, user: User, record: TotpRecord, code: str) -> bool:
        code = _bounded(code)
        if record.secret is None or not code:
            return False
        if totp.looks_like_recovery_code(code):
            code_hash = totp.recovery_code_hash(code)
            return await self._store.use_recovery_code(user.user_id, code_hash, time.time())
        step = totp.matching_step(self._open(record.secret, user), code, self.clock.step())
        return step is not None and await self._store.use_totp_step(user.user_id, step)

    def _open(self, sealed: bytes, user: User) -> str:
        try:
            return self._box.open(sealed, user.user_id)
        except InvalidTag:
            # Not the key the secret was sealed with: the key file was replaced.
            _log.error("a TOTP secret does not open with this gateway's key file")
            raise Unavailable(
                "two-factor secrets cannot be read by this gateway", reason=TOTP_KEY_MISMATCH
            ) from None


def _bounded(code: str) -> str:
    """The code as typed, or '' when it is too long to be one (never looked at further)."""
    code = code.strip()
    return code if len(code) <= totp.CODE_MAX_LENGTH else ""
