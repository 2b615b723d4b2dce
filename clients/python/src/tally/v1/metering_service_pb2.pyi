import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from tally.v1 import credits_pb2 as _credits_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class QuoteItem(_message.Message):
    __slots__ = ("action", "model", "count", "dimensions")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    action: str
    model: str
    count: int
    dimensions: _credits_pb2.Dimensions
    def __init__(self, action: _Optional[str] = ..., model: _Optional[str] = ..., count: _Optional[int] = ..., dimensions: _Optional[_Union[_credits_pb2.Dimensions, _Mapping]] = ...) -> None: ...

class QuoteRequest(_message.Message):
    __slots__ = ("account_id", "items")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    items: _containers.RepeatedCompositeFieldContainer[QuoteItem]
    def __init__(self, account_id: _Optional[str] = ..., items: _Optional[_Iterable[_Union[QuoteItem, _Mapping]]] = ...) -> None: ...

class QuoteLine(_message.Message):
    __slots__ = ("action", "model", "count", "unit_price_millicredits", "total_millicredits")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    UNIT_PRICE_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    action: str
    model: str
    count: int
    unit_price_millicredits: int
    total_millicredits: int
    def __init__(self, action: _Optional[str] = ..., model: _Optional[str] = ..., count: _Optional[int] = ..., unit_price_millicredits: _Optional[int] = ..., total_millicredits: _Optional[int] = ...) -> None: ...

class QuoteResponse(_message.Message):
    __slots__ = ("lines", "total_millicredits", "available_millicredits", "affordable", "rate_card_version", "spending_cap_millicredits", "used_this_cycle_millicredits", "held_millicredits", "within_cap")
    LINES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    AFFORDABLE_FIELD_NUMBER: _ClassVar[int]
    RATE_CARD_VERSION_FIELD_NUMBER: _ClassVar[int]
    SPENDING_CAP_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    USED_THIS_CYCLE_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    HELD_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    WITHIN_CAP_FIELD_NUMBER: _ClassVar[int]
    lines: _containers.RepeatedCompositeFieldContainer[QuoteLine]
    total_millicredits: int
    available_millicredits: int
    affordable: bool
    rate_card_version: int
    spending_cap_millicredits: int
    used_this_cycle_millicredits: int
    held_millicredits: int
    within_cap: bool
    def __init__(self, lines: _Optional[_Iterable[_Union[QuoteLine, _Mapping]]] = ..., total_millicredits: _Optional[int] = ..., available_millicredits: _Optional[int] = ..., affordable: _Optional[bool] = ..., rate_card_version: _Optional[int] = ..., spending_cap_millicredits: _Optional[int] = ..., used_this_cycle_millicredits: _Optional[int] = ..., held_millicredits: _Optional[int] = ..., within_cap: _Optional[bool] = ...) -> None: ...

class ReserveRequest(_message.Message):
    __slots__ = ("idempotency_key", "account_id", "member_id", "action", "model", "amount_millicredits", "ttl", "dimensions")
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    idempotency_key: str
    account_id: str
    member_id: str
    action: str
    model: str
    amount_millicredits: int
    ttl: _duration_pb2.Duration
    dimensions: _credits_pb2.Dimensions
    def __init__(self, idempotency_key: _Optional[str] = ..., account_id: _Optional[str] = ..., member_id: _Optional[str] = ..., action: _Optional[str] = ..., model: _Optional[str] = ..., amount_millicredits: _Optional[int] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., dimensions: _Optional[_Union[_credits_pb2.Dimensions, _Mapping]] = ...) -> None: ...

class ReserveResponse(_message.Message):
    __slots__ = ("reservation", "available_millicredits", "consistency_token")
    RESERVATION_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    reservation: _credits_pb2.Reservation
    available_millicredits: int
    consistency_token: str
    def __init__(self, reservation: _Optional[_Union[_credits_pb2.Reservation, _Mapping]] = ..., available_millicredits: _Optional[int] = ..., consistency_token: _Optional[str] = ...) -> None: ...

class CommitRequest(_message.Message):
    __slots__ = ("idempotency_key", "account_id", "reservation_id", "amount_millicredits", "dimensions")
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    idempotency_key: str
    account_id: str
    reservation_id: str
    amount_millicredits: int
    dimensions: _credits_pb2.Dimensions
    def __init__(self, idempotency_key: _Optional[str] = ..., account_id: _Optional[str] = ..., reservation_id: _Optional[str] = ..., amount_millicredits: _Optional[int] = ..., dimensions: _Optional[_Union[_credits_pb2.Dimensions, _Mapping]] = ...) -> None: ...

class CommitResponse(_message.Message):
    __slots__ = ("receipt", "available_millicredits", "consistency_token")
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    receipt: _credits_pb2.Receipt
    available_millicredits: int
    consistency_token: str
    def __init__(self, receipt: _Optional[_Union[_credits_pb2.Receipt, _Mapping]] = ..., available_millicredits: _Optional[int] = ..., consistency_token: _Optional[str] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("idempotency_key", "account_id", "reservation_id")
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    idempotency_key: str
    account_id: str
    reservation_id: str
    def __init__(self, idempotency_key: _Optional[str] = ..., account_id: _Optional[str] = ..., reservation_id: _Optional[str] = ...) -> None: ...

class ReleaseResponse(_message.Message):
    __slots__ = ("released_millicredits", "available_millicredits", "consistency_token")
    RELEASED_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    released_millicredits: int
    available_millicredits: int
    consistency_token: str
    def __init__(self, released_millicredits: _Optional[int] = ..., available_millicredits: _Optional[int] = ..., consistency_token: _Optional[str] = ...) -> None: ...

class ExtendRequest(_message.Message):
    __slots__ = ("idempotency_key", "account_id", "reservation_id", "ttl")
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    idempotency_key: str
    account_id: str
    reservation_id: str
    ttl: _duration_pb2.Duration
    def __init__(self, idempotency_key: _Optional[str] = ..., account_id: _Optional[str] = ..., reservation_id: _Optional[str] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ExtendResponse(_message.Message):
    __slots__ = ("reservation", "consistency_token")
    RESERVATION_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    reservation: _credits_pb2.Reservation
    consistency_token: str
    def __init__(self, reservation: _Optional[_Union[_credits_pb2.Reservation, _Mapping]] = ..., consistency_token: _Optional[str] = ...) -> None: ...

class DebitRequest(_message.Message):
    __slots__ = ("idempotency_key", "account_id", "member_id", "action", "model", "amount_millicredits", "dimensions")
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    idempotency_key: str
    account_id: str
    member_id: str
    action: str
    model: str
    amount_millicredits: int
    dimensions: _credits_pb2.Dimensions
    def __init__(self, idempotency_key: _Optional[str] = ..., account_id: _Optional[str] = ..., member_id: _Optional[str] = ..., action: _Optional[str] = ..., model: _Optional[str] = ..., amount_millicredits: _Optional[int] = ..., dimensions: _Optional[_Union[_credits_pb2.Dimensions, _Mapping]] = ...) -> None: ...

class DebitResponse(_message.Message):
    __slots__ = ("receipt", "available_millicredits", "consistency_token")
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    receipt: _credits_pb2.Receipt
    available_millicredits: int
    consistency_token: str
    def __init__(self, receipt: _Optional[_Union[_credits_pb2.Receipt, _Mapping]] = ..., available_millicredits: _Optional[int] = ..., consistency_token: _Optional[str] = ...) -> None: ...

class RefundRequest(_message.Message):
    __slots__ = ("idempotency_key", "account_id", "charge_idempotency_key", "amount_millicredits", "reason")
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    CHARGE_IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    idempotency_key: str
    account_id: str
    charge_idempotency_key: str
    amount_millicredits: int
    reason: str
    def __init__(self, idempotency_key: _Optional[str] = ..., account_id: _Optional[str] = ..., charge_idempotency_key: _Optional[str] = ..., amount_millicredits: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class RefundResponse(_message.Message):
    __slots__ = ("refund", "available_millicredits", "consistency_token")
    REFUND_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    refund: _credits_pb2.RefundReceipt
    available_millicredits: int
    consistency_token: str
    def __init__(self, refund: _Optional[_Union[_credits_pb2.RefundReceipt, _Mapping]] = ..., available_millicredits: _Optional[int] = ..., consistency_token: _Optional[str] = ...) -> None: ...

class UsageRecord(_message.Message):
    __slots__ = ("idempotency_key", "account_id", "member_id", "action", "model", "amount_millicredits", "dimensions", "occurred_at")
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    idempotency_key: str
    account_id: str
    member_id: str
    action: str
    model: str
    amount_millicredits: int
    dimensions: _credits_pb2.Dimensions
    occurred_at: _timestamp_pb2.Timestamp
    def __init__(self, idempotency_key: _Optional[str] = ..., account_id: _Optional[str] = ..., member_id: _Optional[str] = ..., action: _Optional[str] = ..., model: _Optional[str] = ..., amount_millicredits: _Optional[int] = ..., dimensions: _Optional[_Union[_credits_pb2.Dimensions, _Mapping]] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ReportUsageRequest(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[UsageRecord]
    def __init__(self, records: _Optional[_Iterable[_Union[UsageRecord, _Mapping]]] = ...) -> None: ...

class ReportUsageStreamRequest(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[UsageRecord]
    def __init__(self, records: _Optional[_Iterable[_Union[UsageRecord, _Mapping]]] = ...) -> None: ...

class RecordError(_message.Message):
    __slots__ = ("code", "reason", "message", "fields")
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    code: int
    reason: str
    message: str
    fields: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, code: _Optional[int] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., fields: _Optional[_Iterable[str]] = ...) -> None: ...

class UsageRecordResult(_message.Message):
    __slots__ = ("charged", "refused")
    CHARGED_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    charged: DebitResponse
    refused: RecordError
    def __init__(self, charged: _Optional[_Union[DebitResponse, _Mapping]] = ..., refused: _Optional[_Union[RecordError, _Mapping]] = ...) -> None: ...

class ReportUsageResponse(_message.Message):
    __slots__ = ("results", "charged", "refused")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    CHARGED_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[UsageRecordResult]
    charged: int
    refused: int
    def __init__(self, results: _Optional[_Iterable[_Union[UsageRecordResult, _Mapping]]] = ..., charged: _Optional[int] = ..., refused: _Optional[int] = ...) -> None: ...

class ReportUsageStreamResponse(_message.Message):
    __slots__ = ("results", "charged", "refused")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    CHARGED_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[UsageRecordResult]
    charged: int
    refused: int
    def __init__(self, results: _Optional[_Iterable[_Union[UsageRecordResult, _Mapping]]] = ..., charged: _Optional[int] = ..., refused: _Optional[int] = ...) -> None: ...
