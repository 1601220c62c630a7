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

import bcrypt

from paygate.common.call_info import note
from paygate.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
)
from paygate.gateway.banks import BankClients
from paygate.gateway.login_throttle import LoginThrottle
from paygate.gateway.models import BankAccount, Principal, User
from paygate.gateway.session_cache import DEFAULT_MAX_ENTRIES, DEFAULT_TTL_S, SessionCache
from paygate.gateway.store import GatewayStore, Session

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
    ) -> None:
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

    async def register(
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

    async def login(self, username: str, password: str, peer: str) -> tuple[str, float]:
        """Check the credentials; return a new token and its expiry (unix seconds).

        `peer` is the client's address, for the throttle of failed logins.
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
            await self._throttle.succeeded(username)
        token = secrets.token_urlsafe(32)
        expire_at_s = time.time() + self._settings.token_ttl_s
        await self._store.insert_session(token_hash(token), found[0].user_id, expire_at_s)
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
        if session is None or session.revoked:
            raise Unauthenticated("the access token is invalid or was revoked; log in again")
        if session.expire_at_s <= time.time():
            raise Unauthenticated("the access token has expired; log in again")
        return Principal(user=session.user, token_hash=hashed)

    async def logout(self, principal: Principal) -> None:
        hashed = principal.token_hash
        revoke = asyncio.ensure_future(self._store.revoke_session(hashed))
        # The cache forgets the token as soon as the revocation is in the database, before
        # Logout answers, and even if this call is cancelled while the write runs on.
        revoke.add_done_callback(lambda task: self._forget(hashed, task))
        await asyncio.shield(revoke)

    def _forget(self, hashed: str, revoke: asyncio.Future[None]) -> None:
        self._sessions.invalidate(hashed)
        if not revoke.cancelled():
            revoke.exception()  # marked as seen: a cancelled Logout has nobody to raise it to

    async def balance(self, user: User) -> BankAccount:
        return await self._banks.get_account(
            user.bank_id, user.account_number, timeout_s=self._settings.bank_call_timeout_s
        )

    def close(self) -> None:
        self._hasher.close()
