"""AsyncClient's calls of account security: two-factor login, the password, sessions.

    enrollment = await client.enroll_totp(password)          # a secret for the app
    recovery_codes = await client.confirm_totp(code)          # two-factor is on
    await client.login("alice", password, one_time_code=code)
    await client.change_password(password, new_password)      # other sessions end
    for session in await client.list_sessions(): ...
    await client.revoke_session(session.session_id)

A login without a code, for a user with two-factor on, raises Unauthenticated with the
reason MFA_REQUIRED (the password was right); a wrong or used code, INVALID_ONE_TIME_CODE.
The secret, the codes and the recovery codes are never logged (the client's log line names
only the method, its status and its duration).
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message

from paygate.client._models import SessionInfo, TotpEnrollment
from paygate.gen.paygate.v1 import gateway_pb2


class AccountSecurityCalls:
    """The account-security methods of AsyncClient, which supplies `_stub` and `_call`."""

    _stub: Any

    async def _call(self, rpc: Any, request: Message) -> Any:
        raise NotImplementedError  # AsyncClient's

    async def enroll_totp(self, password: str) -> TotpEnrollment:
        """Start turning two-factor login on: a new secret for an authenticator app.
        Nothing changes until confirm_totp() with a code of it; enrolling again replaces
        a pending secret. FailedPrecondition TOTP_ALREADY_ENABLED when it is on."""
        request = gateway_pb2.EnrollTotpRequest(password=password)
        response: gateway_pb2.EnrollTotpResponse = await self._call(self._stub.EnrollTotp, request)
        return TotpEnrollment.from_proto(response)

    async def confirm_totp(self, code: str) -> list[str]:
        """Turn two-factor login on with the code the app shows now; returns the 10
        recovery codes, which the gateway keeps only as hashes: shown this once.
        InvalidArgument INVALID_ONE_TIME_CODE when the code does not match."""
        request = gateway_pb2.ConfirmTotpRequest(code=code)
        response: gateway_pb2.ConfirmTotpResponse = await self._call(
            self._stub.ConfirmTotp, request
        )
        return list(response.recovery_codes)

    async def disable_totp(self, password: str, one_time_code: str) -> None:
        """Turn two-factor login off: the password and a code (or a recovery code)."""
        request = gateway_pb2.DisableTotpRequest(password=password, one_time_code=one_time_code)
        await self._call(self._stub.DisableTotp, request)

    async def regenerate_recovery_codes(self, one_time_code: str) -> list[str]:
        """New recovery codes for a code (or an unused recovery code); the old ones stop
        working. Shown this once."""
        request = gateway_pb2.RegenerateRecoveryCodesRequest(one_time_code=one_time_code)
        response: gateway_pb2.RegenerateRecoveryCodesResponse = await self._call(
            self._stub.RegenerateRecoveryCodes, request
        )
        return list(response.recovery_codes)

    async def change_password(self, current_password: str, new_password: str) -> int:
        """Replace the password. Every other session of the user ends (this client's
        stays); returns how many did. A wrong current password counts as a failed login."""
        request = gateway_pb2.ChangePasswordRequest(
            current_password=current_password, new_password=new_password
        )
        response: gateway_pb2.ChangePasswordResponse = await self._call(
            self._stub.ChangePassword, request
        )
        return int(response.sessions_ended)

    async def list_sessions(self) -> list[SessionInfo]:
        """The user's live sessions, newest first (at most 100), this one marked current."""
        request = gateway_pb2.ListSessionsRequest()
        response: gateway_pb2.ListSessionsResponse = await self._call(
            self._stub.ListSessions, request
        )
        return [SessionInfo.from_proto(message) for message in response.sessions]

    async def revoke_session(self, session_id: str) -> None:
        """End one of the user's sessions at once; NotFound when no live one has that id."""
        request = gateway_pb2.RevokeSessionRequest(session_id=session_id)
        await self._call(self._stub.RevokeSession, request)
