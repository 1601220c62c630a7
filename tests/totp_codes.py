"""RFC 6238 codes computed by the tests themselves (hmac and struct), not by the gateway's
library: a test that used the same code to make and to check codes could not fail."""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct

STEP_S = 30


def rfc6238(secret_b32: str, step: int, digits: int = 6) -> str:
    """The TOTP code of `step` (HMAC-SHA1, dynamic truncation), as RFC 6238 and 4226 say."""
    key = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8))
    digest = hmac.new(key, struct.pack(">Q", step), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10**digits).zfill(digits)
