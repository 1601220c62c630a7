"""Time-based one-time passwords (RFC 6238) and the secrets behind them, with no I/O.

A user's TOTP secret is kept in the database sealed with AES-GCM under the gateway's key
(a file named by [gateway] totp_key_file, never in the database), with the user's id as
associated data, so that a sealed secret copied onto another user's row does not open.

A code is accepted for the current 30-second step or one step either side (clock drift),
and each step at most once per user: the store records the last step used with a
conditional update (GatewayStore.use_totp_step), which holds across gateways sharing a
database. Recovery codes are random, shown once, and stored only as SHA-256 hashes (they
carry 80 bits, so a hash is as hard to reverse as the code is to guess).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import pathlib
import secrets
import time
from collections.abc import Callable

import pyotp
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from paygate.common.tls import read_private_key

STEP_S = 30
DIGITS = 6
DRIFT_STEPS = 1  # a code of the step before or after the current one is accepted too
ISSUER = "Paygate"
KEY_BYTES = 32
NONCE_BYTES = 12
RECOVERY_CODES = 10
RECOVERY_CODE_BYTES = 10  # 80 bits: 16 characters of base32, shown as 4 groups of 4
RECOVERY_CODE_LENGTH = 16
CODE_MAX_LENGTH = 64  # longer one-time codes are refused unread


class KeyFileError(RuntimeError):
    """The TOTP key file is missing, readable by others, or not a key."""


class SecretBox:
    """Seals and opens TOTP secrets with the gateway's key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise KeyFileError(f"a TOTP key is {KEY_BYTES} bytes, not {len(key)}")
        self._aead = AESGCM(key)

    @classmethod
    def from_file(cls, path: pathlib.Path) -> SecretBox:
        try:
            text = read_private_key(path)
        except FileNotFoundError:
            raise KeyFileError(
                f"no TOTP key file at {path}: make one with `python ops/gen_certs.py`"
                " (or `make setup`), or name yours in [gateway] totp_key_file"
            ) from None
        try:
            return cls(base64.b64decode(text.strip(), validate=True))
        except ValueError:
            raise KeyFileError(f"{path} does not hold a base64 key") from None

    def seal(self, secret: str, user_id: str) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, secret.encode(), user_id.encode())

    def open(self, sealed: bytes, user_id: str) -> str:
        nonce, ciphertext = sealed[:NONCE_BYTES], sealed[NONCE_BYTES:]
        return self._aead.decrypt(nonce, ciphertext, user_id.encode()).decode()


def new_secret() -> str:
    """A new TOTP secret: 160 random bits in base32, as authenticator apps take them."""
    return pyotp.random_base32(32)


def provisioning_uri(secret: str, username: str) -> str:
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_S).provisioning_uri(
        name=username, issuer_name=ISSUER
    )


@dataclasses.dataclass
class TotpClock:
    """The time the TOTP check reads; tests give the gateway another clock."""

    now_s: Callable[[], float] = time.time

    def step(self) -> int:
        return int(self.now_s()) // STEP_S


def matching_step(secret: str, code: str, current_step: int) -> int | None:
    """The time step within DRIFT_STEPS of `current_step` whose code is `code`, or None."""
    if len(code) != DIGITS or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=STEP_S)
    for step in range(current_step - DRIFT_STEPS, current_step + DRIFT_STEPS + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def new_recovery_codes() -> list[str]:
    return [_recovery_code() for _ in range(RECOVERY_CODES)]


def _recovery_code() -> str:
    text = base64.b32encode(secrets.token_bytes(RECOVERY_CODE_BYTES)).decode().lower()
    return "-".join(text[i : i + 4] for i in range(0, RECOVERY_CODE_LENGTH, 4))


def normalize_recovery_code(code: str) -> str:
    """A recovery code as typed, without dashes, spaces or case."""
    return "".join(code.split()).replace("-", "").lower()


def looks_like_recovery_code(code: str) -> bool:
    return len(normalize_recovery_code(code)) == RECOVERY_CODE_LENGTH


def recovery_code_hash(code: str) -> str:
    return hashlib.sha256(normalize_recovery_code(code).encode()).hexdigest()
