"""Users of the gateway: registration, login, sessions, and the balance of their account.

Passwords are hashed with bcrypt on a small bounded thread pool, so that a flood of logins
cannot stall the event loop that runs payments. Tokens are 256 random bits; the database
keeps only their SHA-256, so a copy of the database cannot be used to log in. Sessions
found valid are remembered for a couple of seconds (session_cache.py, which explains how
Logout still revokes at once, and the caveat with several gateway processes).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import hashlib
import hmac
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

import bcrypt

from paygate.common.call_info import note
from paygate.errors import (
    MFA_REQUIRED,
    USER_FROZEN,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
)
from paygate.gateway import totp
from paygate.gateway.banks import BankClients
from paygate.gateway.login_throttle import LoginThrottle, peer_address
from paygate.gateway.models import BankAccount, Principal, User
from paygate.gateway.session_cache import DEFAULT_MAX_ENTRIES, DEFAULT_TTL_S, SessionCache
from paygate.gateway.store import GatewayStore, Session, SessionInfo
from paygate.gateway.two_factor import CodeCheck, TwoFactor, wrong_code

T = TypeVar("T")

# Matched with fullmatch(): `$` would also match before a trailing newline ("alice\n").
USERNAME_PATTERN = re.compile(r"[a-z0-9_.-]{3,32}")
ACCOUNT_NUMBER_PATTERN = re.compile(r"[0-9]{1,34}")
PASSWORD_MIN_BYTES = 8
PASSWORD_MAX_BYTES = 72  # bcrypt ignores anything past 72 bytes: refuse rather than truncate
BANK_ID_MAX_LENGTH = 64
LINK_CODE_MAX_LENGTH = 64
BAD_LOGIN = "invalid username or password"
# What a Login's log line says in place of a name that is not, or not yet known to be, a user.
NOT_A_USER = "<not a user>"
NAME_NOT_LOOKED_UP = "<not looked up>"
FINGERPRINT_HEX_CHARS = 16
# When a session was last used is written at most this often (and read to this precision).
LAST_USED_RESOLUTION_S = 60.0
SESSIONS_LISTED_MAX = 100
SESSION_ID_PATTERN = re.compile(r"ses_[0-9a-f]{24,32}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class AccountSettings:
    bcrypt_rounds: int
    token_ttl_s: int
    bank_call_timeout_s: float
    hash_threads: int = 2
    hash_queue_max: int = 64
    session_cache_ttl_s: float = DEFAULT_TTL_S  # 0: read every session from the database
    session_cache_max: int = DEFAULT_MAX_ENTRIES


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def validate_username(username: str) -> str:
    if not USERNAME_PATTERN.fullmatch(username):
        raise InvalidArgument("username must be 3 to 32 characters from a-z, 0-9, '_', '.', '-'")
    return username


def validate_password(password: str) -> bytes:
    encoded = password.encode()
    if not PASSWORD_MIN_BYTES <= len(encoded) <= PASSWORD_MAX_BYTES:
        raise InvalidArgument(
            f"password must be {PASSWORD_MIN_BYTES} to {PASSWORD_MAX_BYTES} bytes long"
        )
    return encoded


class Hasher:
    """bcrypt on a bounded pool: at most hash_queue_max calls wait, the rest are refused."""

    def __init__(self, rounds: int, threads: int, queue_max: int) -> None:
        self._rounds = rounds
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="bcrypt")
        self._slots = asyncio.BoundedSemaphore(queue_max)
        # Checked against when the username is unknown, so both cases take the same time.
        self._dummy_hash = bcrypt.hashpw(b"not-a-password", bcrypt.gensalt(rounds))

    async def _run(self, fn: object, *args: bytes) -> object:
        if self._slots.locked():
            raise ResourceExhausted("too many logins in progress; retry in a second")
        async with self._slots:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, fn, *args)  # type: ignore[arg-type]

    async def hash(self, password: bytes) -> bytes:
        salt = bcrypt.gensalt(self._rounds)
        return await self._run(bcrypt.hashpw, password, salt)  # type: ignore[return-value]

    async def check(self, password: bytes, hashed: bytes | None) -> bool:
        ok = await self._run(bcrypt.checkpw, password, hashed or self._dummy_hash)
        return bool(ok) and hashed is not None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class Accounts:
    def __init__(
        self,
        store: GatewayStore,
        banks: BankClients,
        settings: AccountSettings,
        throttle: LoginThrottle,
        totp_box: totp.SecretBox | None = None,
    ) -> None:
        """`totp_box` seals two-factor secrets: the gateway's key file (main.py); without
        one, a key of this process only (unit tests that make no lasting secrets)."""
        self._store = store
        self._banks = banks
        self._settings = settings
        self._throttle = throttle
        self._fingerprint_key = secrets.token_bytes(32)  # new at each start, never stored
        self._hasher = Hasher(
            settings.bcrypt_rounds, settings.hash_threads, settings.hash_queue_max
        )
        self._sessions: SessionCache[Session] = SessionCache(
            settings.session_cache_ttl_s, settings.session_cache_max
        )
        box = totp_box or totp.SecretBox(secrets.token_bytes(totp.KEY_BYTES))
        self.two_factor = TwoFactor(store, box, self.check_password)

    async def register(
        self,
        username: str,
        password: str,
        bank_id: str,
        account_number: str,
        link_code: str,
        peer: str = "",
    ) -> User:
        """Create a user linked to the account. Refusals count per client address
        (`peer`), as failed logins do: a wrong link code is a guess at a secret."""
        async with self._throttle.register_attempt(peer):
            try:
                return await self._register(username, password, bank_id, account_number, link_code)
            except (InvalidArgument, NotFound, AlreadyExists, FailedPrecondition):
                await self._throttle.register_failed(peer)
                raise

    async def _register(
        self, username: str, password: str, bank_id: str, account_number: str, link_code: str
    ) -> User:
        validate_username(username)
        encoded = validate_password(password)
        if not bank_id:
            raise InvalidArgument("bank_id is required")
        if len(bank_id) > BANK_ID_MAX_LENGTH:
            raise InvalidArgument(f"bank_id must be at most {BANK_ID_MAX_LENGTH} characters")
        if not ACCOUNT_NUMBER_PATTERN.fullmatch(account_number):
            raise InvalidArgument("account_number must be 1 to 34 digits")
        if not 0 < len(link_code) <= LINK_CODE_MAX_LENGTH or not link_code.isprintable():
            raise InvalidArgument(
                f"link_code must be 1 to {LINK_CODE_MAX_LENGTH} printable characters: the"
                " code the bank gave the account holder"
            )
        if not self._banks.knows(bank_id):
            raise NotFound(f"unknown bank {bank_id!r}; banks: {', '.join(self._banks.bank_ids)}")
        if await self._store.user_by_username(username) is not None:
            raise AlreadyExists(f"username {username!r} is taken")
        # The proof that the caller holds the account: its bank checks the link code.
        account = await self._banks.link_account(
            bank_id, account_number, link_code, timeout_s=self._settings.bank_call_timeout_s
        )
        user = User(
            user_id=f"usr_{uuid.uuid4().hex}",
            username=username,
            bank_id=bank_id,
            account_number=account_number,
            currency=account.currency,
        )
        await self._store.create_user(user, await self._hasher.hash(encoded))
        return user

    async def login(
        self, username: str, password: str, peer: str, one_time_code: str = ""
    ) -> tuple[str, float]:
        """Check the credentials; return a new token and its expiry (unix seconds).

        `peer` is the client's address, for the throttle of failed logins. A user with
        two-factor on needs `one_time_code` too: without one, the answer is MFA_REQUIRED
        (the password was right); a wrong one counts as a failed login.
        """
        # The name may be a password typed into the wrong field: the call's log line gets it
        # only once it names a user; until then a fingerprint, which ties one caller's
        # attempts together but cannot be reversed (its key never leaves this process).
        note(username=NAME_NOT_LOOKED_UP, username_fingerprint=self._fingerprint(username))
        # No user has such a name or such a password (Register refuses them): the answer is
        # known without the database or bcrypt (which raises on passwords over 72 bytes).
        if not USERNAME_PATTERN.fullmatch(username) or len(password.encode()) > PASSWORD_MAX_BYTES:
            if not USERNAME_PATTERN.fullmatch(username):
                note(username=NOT_A_USER)
            raise Unauthenticated(BAD_LOGIN)
        async with self._throttle.attempt(username, peer):
            found = await self._store.user_by_username(username)
            note(username=username if found is not None else NOT_A_USER)
            hashed = found[1] if found else None
            if not await self._hasher.check(password.encode(), hashed) or found is None:
                await self._throttle.failed(username, peer)
                raise Unauthenticated(BAD_LOGIN)
            check = await self.two_factor.check_login(found[0], one_time_code)
            if check == CodeCheck.MISSING:
                raise Unauthenticated(
                    "this account needs a one-time code from its authenticator app",
                    reason=MFA_REQUIRED,
                )
            if check == CodeCheck.WRONG:
                await self._throttle.failed(username, peer)
                raise wrong_code()
            await self._throttle.succeeded(username)
        token = secrets.token_urlsafe(32)
        expire_at_s = time.time() + self._settings.token_ttl_s
        # Refused only now, to a caller who proved to be the user: anybody else learns
        # nothing of a freeze. The session is recorded only for a user not frozen.
        if not await self._store.insert_session(
            token_hash(token), found[0].user_id, expire_at_s, client_address=peer_address(peer)
        ):
            raise user_frozen()
        return token, expire_at_s

    def _fingerprint(self, username: str) -> str:
        digest = hmac.new(self._fingerprint_key, username.encode(), hashlib.sha256)
        return digest.hexdigest()[:FINGERPRINT_HEX_CHARS]

    async def authenticate(self, token: str) -> Principal:
        hashed = token_hash(token)
        session = self._sessions.get(hashed)
        if session is None:
            generation = self._sessions.generation
            session = await self._store.session(hashed)
            if session is not None and not session.revoked:
                self._sessions.put(hashed, session, generation)
                await self._note_use(hashed, session)
        if session is None or session.revoked:
            raise Unauthenticated("the access token is invalid or was revoked; log in again")
        if session.expire_at_s <= time.time():
            raise Unauthenticated("the access token has expired; log in again")
        return Principal(user=session.user, token_hash=hashed)

    async def _note_use(self, hashed: str, session: Session) -> None:
        """Record when a session was used, to LAST_USED_RESOLUTION_S: at most one write a
        session per that time, and only on a read from the database (not from the cache)."""
        now_s = time.time()
        if now_s - session.last_used_at_s >= LAST_USED_RESOLUTION_S:
            await self._store.touch_session(hashed, now_s)

    async def logout(self, principal: Principal, *, all_sessions: bool = False) -> None:
        if all_sessions:
            await self._revoking(self._store.revoke_sessions_of(principal.user.user_id))
            return
        hashed = principal.token_hash
        await self._revoking(_listed(hashed, self._store.revoke_session(hashed)))

    async def _revoking(self, revoke: Awaitable[list[str]]) -> int:
        """Run a revocation; how many sessions it ended (see ending_sessions)."""
        ended: list[str] = await self.ending_sessions(revoke, _hashes)
        return len(ended)

    async def ending_sessions(self, write: Awaitable[T], ended: Callable[[T], Iterable[str]]) -> T:
        """Run a write that ends sessions (`ended` reads the token hashes of those it ended
        from its result); the cache forgets them as soon as the write is in the database,
        before the call answers, even if the call is cancelled while the write runs on."""
        task = asyncio.ensure_future(write)
        task.add_done_callback(lambda done: self._forget(done, ended))
        return await asyncio.shield(task)

    def _forget(self, write: asyncio.Future[T], ended: Callable[[T], Iterable[str]]) -> None:
        if write.cancelled() or write.exception() is not None:
            # Marked as seen: a cancelled call has nobody to raise it to. What was ended is
            # not known: forget every cached session.
            self._sessions.clear()
            return
        for hashed in ended(write.result()):
            self._sessions.invalidate(hashed)

    async def change_password(
        self, principal: Principal, current_password: str, new_password: str, peer: str
    ) -> int:
        """Replace the password; every other session ends. How many ended. Wrong current
        passwords count toward the login throttle (a stolen token must not guess it)."""
        user = principal.user
        encoded = validate_password(new_password)
        await self.check_password(user, current_password, peer)
        new_hash = await self._hasher.hash(encoded)
        return await self._revoking(
            self._store.change_password(user.user_id, new_hash, keep=principal.token_hash)
        )

    async def check_password(self, user: User, password: str, peer: str) -> None:
        """Raise Unauthenticated unless `password` is the user's; a wrong one counts toward
        the login throttle (a stolen token must not be a way to guess the password)."""
        if len(password.encode()) > PASSWORD_MAX_BYTES:
            raise Unauthenticated("the password is wrong")
        async with self._throttle.attempt(user.username, peer):
            found = await self._store.user_by_username(user.username)
            hashed = found[1] if found else None
            if not await self._hasher.check(password.encode(), hashed):
                await self._throttle.failed(user.username, peer)
                raise Unauthenticated("the password is wrong")

    async def list_sessions(self, principal: Principal) -> list[SessionInfo]:
        return await self._store.live_sessions(
            principal.user.user_id, now_s=time.time(), limit=SESSIONS_LISTED_MAX
        )

    async def revoke_session(self, principal: Principal, session_id: str) -> None:
        if not SESSION_ID_PATTERN.fullmatch(session_id):
            raise InvalidArgument("session_id must be an id that ListSessions gave")
        revoked = await self._revoking(
            _listed_optional(self._store.revoke_session_by_id(principal.user.user_id, session_id))
        )
        if revoked == 0:
            raise NotFound(f"no live session {session_id} of yours")

    async def balance(self, user: User) -> BankAccount:
        return await self._banks.get_account(
            user.bank_id, user.account_number, timeout_s=self._settings.bank_call_timeout_s
        )

    def close(self) -> None:
        self._hasher.close()


def _hashes(ended: list[str]) -> list[str]:
    return ended


def user_frozen() -> FailedPrecondition:
    """The refusal of a login, a payment or a capture by or to a frozen user."""
    return FailedPrecondition(
        "this account is frozen by an operator: logins and payments are refused",
        reason=USER_FROZEN,
    )


async def _listed(hashed: str, revoke: Awaitable[None]) -> list[str]:
    await revoke
    return [hashed]


async def _listed_optional(revoke: Awaitable[str | None]) -> list[str]:
    hashed = await revoke
    return [hashed] if hashed is not None else []
