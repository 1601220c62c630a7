import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class UserAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    USER_ACTION_UNSPECIFIED: _ClassVar[UserAction]
    USER_ACTION_FREEZE: _ClassVar[UserAction]
    USER_ACTION_UNFREEZE: _ClassVar[UserAction]
    USER_ACTION_RESET_TWO_FACTOR: _ClassVar[UserAction]
USER_ACTION_UNSPECIFIED: UserAction
USER_ACTION_FREEZE: UserAction
USER_ACTION_UNFREEZE: UserAction
USER_ACTION_RESET_TWO_FACTOR: UserAction

class OperatorAction(_message.Message):
    __slots__ = ("time", "operator", "action", "reason", "changed")
    TIME_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    operator: str
    action: UserAction
    reason: str
    changed: bool
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., operator: _Optional[str] = ..., action: _Optional[_Union[UserAction, str]] = ..., reason: _Optional[str] = ..., changed: _Optional[bool] = ...) -> None: ...

class UserDetails(_message.Message):
    __slots__ = ("user_id", "username", "bank_id", "account_number", "currency", "create_time", "two_factor_enabled", "recovery_codes_left", "frozen", "live_sessions", "recent_actions")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    BANK_ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_NUMBER_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    TWO_FACTOR_ENABLED_FIELD_NUMBER: _ClassVar[int]
    RECOVERY_CODES_LEFT_FIELD_NUMBER: _ClassVar[int]
    FROZEN_FIELD_NUMBER: _ClassVar[int]
    LIVE_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    RECENT_ACTIONS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    username: str
    bank_id: str
    account_number: str
    currency: str
    create_time: _timestamp_pb2.Timestamp
    two_factor_enabled: bool
    recovery_codes_left: int
    frozen: bool
    live_sessions: int
    recent_actions: _containers.RepeatedCompositeFieldContainer[OperatorAction]
    def __init__(self, user_id: _Optional[str] = ..., username: _Optional[str] = ..., bank_id: _Optional[str] = ..., account_number: _Optional[str] = ..., currency: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., two_factor_enabled: _Optional[bool] = ..., recovery_codes_left: _Optional[int] = ..., frozen: _Optional[bool] = ..., live_sessions: _Optional[int] = ..., recent_actions: _Optional[_Iterable[_Union[OperatorAction, _Mapping]]] = ...) -> None: ...

class GetUserRequest(_message.Message):
    __slots__ = ("username",)
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    username: str
    def __init__(self, username: _Optional[str] = ...) -> None: ...

class GetUserResponse(_message.Message):
    __slots__ = ("user",)
    USER_FIELD_NUMBER: _ClassVar[int]
    user: UserDetails
    def __init__(self, user: _Optional[_Union[UserDetails, _Mapping]] = ...) -> None: ...

class FreezeUserRequest(_message.Message):
    __slots__ = ("username", "reason")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    username: str
    reason: str
    def __init__(self, username: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class FreezeUserResponse(_message.Message):
    __slots__ = ("user", "changed", "sessions_ended")
    USER_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_ENDED_FIELD_NUMBER: _ClassVar[int]
    user: UserDetails
    changed: bool
    sessions_ended: int
    def __init__(self, user: _Optional[_Union[UserDetails, _Mapping]] = ..., changed: _Optional[bool] = ..., sessions_ended: _Optional[int] = ...) -> None: ...

class UnfreezeUserRequest(_message.Message):
    __slots__ = ("username", "reason")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    username: str
    reason: str
    def __init__(self, username: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class UnfreezeUserResponse(_message.Message):
    __slots__ = ("user", "changed")
    USER_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    user: UserDetails
    changed: bool
    def __init__(self, user: _Optional[_Union[UserDetails, _Mapping]] = ..., changed: _Optional[bool] = ...) -> None: ...

class ResetTwoFactorRequest(_message.Message):
    __slots__ = ("username", "reason")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    username: str
    reason: str
    def __init__(self, username: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ResetTwoFactorResponse(_message.Message):
    __slots__ = ("user", "changed")
    USER_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    user: UserDetails
    changed: bool
    def __init__(self, user: _Optional[_Union[UserDetails, _Mapping]] = ..., changed: _Optional[bool] = ...) -> None: ...
