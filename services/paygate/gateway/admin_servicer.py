"""AdminServicer: translates AdminService messages to operators.py and back, nothing else."""

from __future__ import annotations

from paygate.common.handlers import Context
from paygate.gateway.messages import bounded, timestamp
from paygate.gateway.models import OperatorAction, UserAction, UserStatus
from paygate.gateway.operator_interceptor import OPERATOR
from paygate.gateway.operators import Operators
from paygate.gen.paygate.v1 import admin_pb2, admin_pb2_grpc

SERVICE_NAME = admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name

_ACTIONS = {
    UserAction.FREEZE: admin_pb2.USER_ACTION_FREEZE,
    UserAction.UNFREEZE: admin_pb2.USER_ACTION_UNFREEZE,
    UserAction.RESET_TWO_FACTOR: admin_pb2.USER_ACTION_RESET_TWO_FACTOR,
}


def action_message(action: OperatorAction) -> admin_pb2.OperatorAction:
    return admin_pb2.OperatorAction(
        time=timestamp(action.at_s),
        operator=action.operator,
        action=_ACTIONS[action.action],
        reason=action.reason,
        changed=action.changed,
    )


def user_details(status: UserStatus) -> admin_pb2.UserDetails:
    user = status.user
    return admin_pb2.UserDetails(
        user_id=user.user_id,
        username=user.username,
        bank_id=user.bank_id,
        account_number=user.account_number,
        currency=user.currency,
        create_time=timestamp(status.created_at_s),
        two_factor_enabled=status.two_factor_enabled,
        recovery_codes_left=status.recovery_codes_left,
        frozen=status.frozen,
        live_sessions=status.live_sessions,
        recent_actions=[action_message(a) for a in status.recent_actions],
    )


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    def __init__(self, operators: Operators) -> None:
        self._operators = operators

    async def GetUser(
        self, request: admin_pb2.GetUserRequest, context: Context
    ) -> admin_pb2.GetUserResponse:
        status = await self._operators.get_user(
            OPERATOR.get(), bounded(request.username, "username")
        )
        return admin_pb2.GetUserResponse(user=user_details(status))

    async def FreezeUser(
        self, request: admin_pb2.FreezeUserRequest, context: Context
    ) -> admin_pb2.FreezeUserResponse:
        status, done = await self._operators.act(
            OPERATOR.get(),
            UserAction.FREEZE,
            bounded(request.username, "username"),
            bounded(request.reason, "reason"),
        )
        return admin_pb2.FreezeUserResponse(
            user=user_details(status), changed=done.changed, sessions_ended=len(done.ended)
        )

    async def UnfreezeUser(
        self, request: admin_pb2.UnfreezeUserRequest, context: Context
    ) -> admin_pb2.UnfreezeUserResponse:
        status, done = await self._operators.act(
            OPERATOR.get(),
            UserAction.UNFREEZE,
            bounded(request.username, "username"),
            bounded(request.reason, "reason"),
        )
        return admin_pb2.UnfreezeUserResponse(user=user_details(status), changed=done.changed)

    async def ResetTwoFactor(
        self, request: admin_pb2.ResetTwoFactorRequest, context: Context
    ) -> admin_pb2.ResetTwoFactorResponse:
        status, done = await self._operators.act(
            OPERATOR.get(),
            UserAction.RESET_TWO_FACTOR,
            bounded(request.username, "username"),
            bounded(request.reason, "reason"),
        )
        return admin_pb2.ResetTwoFactorResponse(user=user_details(status), changed=done.changed)
