import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Direction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DIRECTION_UNSPECIFIED: _ClassVar[Direction]
    DIRECTION_DEBIT: _ClassVar[Direction]
    DIRECTION_CREDIT: _ClassVar[Direction]

class Vote(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VOTE_UNSPECIFIED: _ClassVar[Vote]
    VOTE_YES: _ClassVar[Vote]
    VOTE_NO: _ClassVar[Vote]
DIRECTION_UNSPECIFIED: Direction
DIRECTION_DEBIT: Direction
DIRECTION_CREDIT: Direction
VOTE_UNSPECIFIED: Vote
VOTE_YES: Vote
VOTE_NO: Vote

class Account(_message.Message):
    __slots__ = ("account_number", "currency", "balance", "available", "pending_debit", "pending_credit")
    ACCOUNT_NUMBER_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    PENDING_DEBIT_FIELD_NUMBER: _ClassVar[int]
    PENDING_CREDIT_FIELD_NUMBER: _ClassVar[int]
    account_number: str
    currency: str
    balance: int
    available: int
    pending_debit: int
    pending_credit: int
    def __init__(self, account_number: _Optional[str] = ..., currency: _Optional[str] = ..., balance: _Optional[int] = ..., available: _Optional[int] = ..., pending_debit: _Optional[int] = ..., pending_credit: _Optional[int] = ...) -> None: ...

class GetAccountRequest(_message.Message):
    __slots__ = ("account_number",)
    ACCOUNT_NUMBER_FIELD_NUMBER: _ClassVar[int]
    account_number: str
    def __init__(self, account_number: _Optional[str] = ...) -> None: ...

class GetAccountResponse(_message.Message):
    __slots__ = ("account",)
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    account: Account
    def __init__(self, account: _Optional[_Union[Account, _Mapping]] = ...) -> None: ...

class OpenAccountRequest(_message.Message):
    __slots__ = ("currency", "initial_balance")
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    INITIAL_BALANCE_FIELD_NUMBER: _ClassVar[int]
    currency: str
    initial_balance: int
    def __init__(self, currency: _Optional[str] = ..., initial_balance: _Optional[int] = ...) -> None: ...

class OpenAccountResponse(_message.Message):
    __slots__ = ("account", "link_code")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    LINK_CODE_FIELD_NUMBER: _ClassVar[int]
    account: Account
    link_code: str
    def __init__(self, account: _Optional[_Union[Account, _Mapping]] = ..., link_code: _Optional[str] = ...) -> None: ...

class LinkAccountRequest(_message.Message):
    __slots__ = ("account_number", "link_code")
    ACCOUNT_NUMBER_FIELD_NUMBER: _ClassVar[int]
    LINK_CODE_FIELD_NUMBER: _ClassVar[int]
    account_number: str
    link_code: str
    def __init__(self, account_number: _Optional[str] = ..., link_code: _Optional[str] = ...) -> None: ...

class LinkAccountResponse(_message.Message):
    __slots__ = ("account",)
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    account: Account
    def __init__(self, account: _Optional[_Union[Account, _Mapping]] = ...) -> None: ...

class IssueLinkCodeRequest(_message.Message):
    __slots__ = ("account_number",)
    ACCOUNT_NUMBER_FIELD_NUMBER: _ClassVar[int]
    account_number: str
    def __init__(self, account_number: _Optional[str] = ...) -> None: ...

class IssueLinkCodeResponse(_message.Message):
    __slots__ = ("link_code",)
    LINK_CODE_FIELD_NUMBER: _ClassVar[int]
    link_code: str
    def __init__(self, link_code: _Optional[str] = ...) -> None: ...

class DepositRequest(_message.Message):
    __slots__ = ("account_number", "amount", "currency", "reference")
    ACCOUNT_NUMBER_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    account_number: str
    amount: int
    currency: str
    reference: str
    def __init__(self, account_number: _Optional[str] = ..., amount: _Optional[int] = ..., currency: _Optional[str] = ..., reference: _Optional[str] = ...) -> None: ...

class DepositResponse(_message.Message):
    __slots__ = ("account", "replayed")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    account: Account
    replayed: bool
    def __init__(self, account: _Optional[_Union[Account, _Mapping]] = ..., replayed: _Optional[bool] = ...) -> None: ...

class Leg(_message.Message):
    __slots__ = ("account_number", "direction", "amount", "currency")
    ACCOUNT_NUMBER_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    account_number: str
    direction: Direction
    amount: int
    currency: str
    def __init__(self, account_number: _Optional[str] = ..., direction: _Optional[_Union[Direction, str]] = ..., amount: _Optional[int] = ..., currency: _Optional[str] = ...) -> None: ...

class PrepareRequest(_message.Message):
    __slots__ = ("transaction_id", "legs", "one_phase", "spans_banks")
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    LEGS_FIELD_NUMBER: _ClassVar[int]
    ONE_PHASE_FIELD_NUMBER: _ClassVar[int]
    SPANS_BANKS_FIELD_NUMBER: _ClassVar[int]
    transaction_id: str
    legs: _containers.RepeatedCompositeFieldContainer[Leg]
    one_phase: bool
    spans_banks: bool
    def __init__(self, transaction_id: _Optional[str] = ..., legs: _Optional[_Iterable[_Union[Leg, _Mapping]]] = ..., one_phase: _Optional[bool] = ..., spans_banks: _Optional[bool] = ...) -> None: ...

class PrepareResponse(_message.Message):
    __slots__ = ("vote", "reason", "committed")
    VOTE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    vote: Vote
    reason: str
    committed: bool
    def __init__(self, vote: _Optional[_Union[Vote, str]] = ..., reason: _Optional[str] = ..., committed: _Optional[bool] = ...) -> None: ...

class CommitRequest(_message.Message):
    __slots__ = ("transaction_id", "amount")
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    transaction_id: str
    amount: int
    def __init__(self, transaction_id: _Optional[str] = ..., amount: _Optional[int] = ...) -> None: ...

class CommitResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AbortRequest(_message.Message):
    __slots__ = ("transaction_id",)
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    transaction_id: str
    def __init__(self, transaction_id: _Optional[str] = ...) -> None: ...

class AbortResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class BatchError(_message.Message):
    __slots__ = ("code", "reason", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    reason: str
    message: str
    def __init__(self, code: _Optional[int] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class PrepareBatchRequest(_message.Message):
    __slots__ = ("transactions",)
    TRANSACTIONS_FIELD_NUMBER: _ClassVar[int]
    transactions: _containers.RepeatedCompositeFieldContainer[PrepareRequest]
    def __init__(self, transactions: _Optional[_Iterable[_Union[PrepareRequest, _Mapping]]] = ...) -> None: ...

class PrepareResult(_message.Message):
    __slots__ = ("transaction_id", "response", "error")
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    transaction_id: str
    response: PrepareResponse
    error: BatchError
    def __init__(self, transaction_id: _Optional[str] = ..., response: _Optional[_Union[PrepareResponse, _Mapping]] = ..., error: _Optional[_Union[BatchError, _Mapping]] = ...) -> None: ...

class PrepareBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[PrepareResult]
    def __init__(self, results: _Optional[_Iterable[_Union[PrepareResult, _Mapping]]] = ...) -> None: ...

class CommitBatchRequest(_message.Message):
    __slots__ = ("transactions",)
    TRANSACTIONS_FIELD_NUMBER: _ClassVar[int]
    transactions: _containers.RepeatedCompositeFieldContainer[CommitRequest]
    def __init__(self, transactions: _Optional[_Iterable[_Union[CommitRequest, _Mapping]]] = ...) -> None: ...

class ResolveResult(_message.Message):
    __slots__ = ("transaction_id", "error")
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    transaction_id: str
    error: BatchError
    def __init__(self, transaction_id: _Optional[str] = ..., error: _Optional[_Union[BatchError, _Mapping]] = ...) -> None: ...

class CommitBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ResolveResult]
    def __init__(self, results: _Optional[_Iterable[_Union[ResolveResult, _Mapping]]] = ...) -> None: ...

class AbortBatchRequest(_message.Message):
    __slots__ = ("transactions",)
    TRANSACTIONS_FIELD_NUMBER: _ClassVar[int]
    transactions: _containers.RepeatedCompositeFieldContainer[AbortRequest]
    def __init__(self, transactions: _Optional[_Iterable[_Union[AbortRequest, _Mapping]]] = ...) -> None: ...

class AbortBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ResolveResult]
    def __init__(self, results: _Optional[_Iterable[_Union[ResolveResult, _Mapping]]] = ...) -> None: ...

class ListHoldsRequest(_message.Message):
    __slots__ = ("account_number", "page_size", "page_token")
    ACCOUNT_NUMBER_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    account_number: str
    page_size: int
    page_token: str
    def __init__(self, account_number: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class Hold(_message.Message):
    __slots__ = ("transaction_id", "payment_id", "direction", "amount", "currency", "create_time", "refund_id")
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    REFUND_ID_FIELD_NUMBER: _ClassVar[int]
    transaction_id: str
    payment_id: str
    direction: Direction
    amount: int
    currency: str
    create_time: _timestamp_pb2.Timestamp
    refund_id: str
    def __init__(self, transaction_id: _Optional[str] = ..., payment_id: _Optional[str] = ..., direction: _Optional[_Union[Direction, str]] = ..., amount: _Optional[int] = ..., currency: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., refund_id: _Optional[str] = ...) -> None: ...

class ListHoldsResponse(_message.Message):
    __slots__ = ("holds", "next_page_token")
    HOLDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    holds: _containers.RepeatedCompositeFieldContainer[Hold]
    next_page_token: str
    def __init__(self, holds: _Optional[_Iterable[_Union[Hold, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
