import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BucketKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BUCKET_KIND_UNSPECIFIED: _ClassVar[BucketKind]
    BUCKET_KIND_DAILY: _ClassVar[BucketKind]
    BUCKET_KIND_MONTHLY: _ClassVar[BucketKind]
    BUCKET_KIND_TOP_UP: _ClassVar[BucketKind]
    BUCKET_KIND_PROMOTIONAL: _ClassVar[BucketKind]
    BUCKET_KIND_TRIAL: _ClassVar[BucketKind]

class GrantSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GRANT_SOURCE_UNSPECIFIED: _ClassVar[GrantSource]
    GRANT_SOURCE_PLAN: _ClassVar[GrantSource]
    GRANT_SOURCE_PURCHASE: _ClassVar[GrantSource]
    GRANT_SOURCE_PROMO: _ClassVar[GrantSource]
    GRANT_SOURCE_REFERRAL: _ClassVar[GrantSource]
    GRANT_SOURCE_ADJUSTMENT: _ClassVar[GrantSource]
    GRANT_SOURCE_REFUND: _ClassVar[GrantSource]

class AlertSeverity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ALERT_SEVERITY_UNSPECIFIED: _ClassVar[AlertSeverity]
    ALERT_SEVERITY_INFO: _ClassVar[AlertSeverity]
    ALERT_SEVERITY_WARNING: _ClassVar[AlertSeverity]
    ALERT_SEVERITY_CRITICAL: _ClassVar[AlertSeverity]

class AlertKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ALERT_KIND_UNSPECIFIED: _ClassVar[AlertKind]
    ALERT_KIND_LOW_BALANCE: _ClassVar[AlertKind]
    ALERT_KIND_USAGE_THRESHOLD: _ClassVar[AlertKind]
    ALERT_KIND_SPENDING_CAP_REACHED: _ClassVar[AlertKind]
    ALERT_KIND_DEPLETED: _ClassVar[AlertKind]
    ALERT_KIND_CYCLE_RESET: _ClassVar[AlertKind]
    ALERT_KIND_AUTO_TOP_UP_REQUESTED: _ClassVar[AlertKind]
BUCKET_KIND_UNSPECIFIED: BucketKind
BUCKET_KIND_DAILY: BucketKind
BUCKET_KIND_MONTHLY: BucketKind
BUCKET_KIND_TOP_UP: BucketKind
BUCKET_KIND_PROMOTIONAL: BucketKind
BUCKET_KIND_TRIAL: BucketKind
GRANT_SOURCE_UNSPECIFIED: GrantSource
GRANT_SOURCE_PLAN: GrantSource
GRANT_SOURCE_PURCHASE: GrantSource
GRANT_SOURCE_PROMO: GrantSource
GRANT_SOURCE_REFERRAL: GrantSource
GRANT_SOURCE_ADJUSTMENT: GrantSource
GRANT_SOURCE_REFUND: GrantSource
ALERT_SEVERITY_UNSPECIFIED: AlertSeverity
ALERT_SEVERITY_INFO: AlertSeverity
ALERT_SEVERITY_WARNING: AlertSeverity
ALERT_SEVERITY_CRITICAL: AlertSeverity
ALERT_KIND_UNSPECIFIED: AlertKind
ALERT_KIND_LOW_BALANCE: AlertKind
ALERT_KIND_USAGE_THRESHOLD: AlertKind
ALERT_KIND_SPENDING_CAP_REACHED: AlertKind
ALERT_KIND_DEPLETED: AlertKind
ALERT_KIND_CYCLE_RESET: AlertKind
ALERT_KIND_AUTO_TOP_UP_REQUESTED: AlertKind

class CostBasis(_message.Message):
    __slots__ = ("currency_code", "micros_per_credit")
    CURRENCY_CODE_FIELD_NUMBER: _ClassVar[int]
    MICROS_PER_CREDIT_FIELD_NUMBER: _ClassVar[int]
    currency_code: str
    micros_per_credit: int
    def __init__(self, currency_code: _Optional[str] = ..., micros_per_credit: _Optional[int] = ...) -> None: ...

class Bucket(_message.Message):
    __slots__ = ("grant_id", "kind", "source", "priority", "amount_millicredits", "remaining_millicredits", "held_millicredits", "effective_at", "expires_at", "cost_basis", "reference")
    GRANT_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    REMAINING_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    HELD_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    COST_BASIS_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    grant_id: str
    kind: BucketKind
    source: GrantSource
    priority: int
    amount_millicredits: int
    remaining_millicredits: int
    held_millicredits: int
    effective_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    cost_basis: CostBasis
    reference: str
    def __init__(self, grant_id: _Optional[str] = ..., kind: _Optional[_Union[BucketKind, str]] = ..., source: _Optional[_Union[GrantSource, str]] = ..., priority: _Optional[int] = ..., amount_millicredits: _Optional[int] = ..., remaining_millicredits: _Optional[int] = ..., held_millicredits: _Optional[int] = ..., effective_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cost_basis: _Optional[_Union[CostBasis, _Mapping]] = ..., reference: _Optional[str] = ...) -> None: ...

class Draw(_message.Message):
    __slots__ = ("grant_id", "kind", "amount_millicredits")
    GRANT_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    grant_id: str
    kind: BucketKind
    amount_millicredits: int
    def __init__(self, grant_id: _Optional[str] = ..., kind: _Optional[_Union[BucketKind, str]] = ..., amount_millicredits: _Optional[int] = ...) -> None: ...

class Receipt(_message.Message):
    __slots__ = ("reservation_id", "member_id", "action", "model", "charged_millicredits", "draws", "overage_millicredits", "released_millicredits", "late", "rate_card_version", "dimensions", "capability")
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CHARGED_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    DRAWS_FIELD_NUMBER: _ClassVar[int]
    OVERAGE_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    RELEASED_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    LATE_FIELD_NUMBER: _ClassVar[int]
    RATE_CARD_VERSION_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    member_id: str
    action: str
    model: str
    charged_millicredits: int
    draws: _containers.RepeatedCompositeFieldContainer[Draw]
    overage_millicredits: int
    released_millicredits: int
    late: bool
    rate_card_version: int
    dimensions: Dimensions
    capability: str
    def __init__(self, reservation_id: _Optional[str] = ..., member_id: _Optional[str] = ..., action: _Optional[str] = ..., model: _Optional[str] = ..., charged_millicredits: _Optional[int] = ..., draws: _Optional[_Iterable[_Union[Draw, _Mapping]]] = ..., overage_millicredits: _Optional[int] = ..., released_millicredits: _Optional[int] = ..., late: _Optional[bool] = ..., rate_card_version: _Optional[int] = ..., dimensions: _Optional[_Union[Dimensions, _Mapping]] = ..., capability: _Optional[str] = ...) -> None: ...

class RefundReceipt(_message.Message):
    __slots__ = ("charge_idempotency_key", "amount_millicredits", "returned", "overage_cancelled_millicredits", "refund_bucket", "refunded_millicredits", "refundable_millicredits", "cycle_returned_millicredits", "member_id", "action", "model", "reason")
    CHARGE_IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    RETURNED_FIELD_NUMBER: _ClassVar[int]
    OVERAGE_CANCELLED_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    REFUND_BUCKET_FIELD_NUMBER: _ClassVar[int]
    REFUNDED_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    REFUNDABLE_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    CYCLE_RETURNED_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    charge_idempotency_key: str
    amount_millicredits: int
    returned: _containers.RepeatedCompositeFieldContainer[Draw]
    overage_cancelled_millicredits: int
    refund_bucket: Draw
    refunded_millicredits: int
    refundable_millicredits: int
    cycle_returned_millicredits: int
    member_id: str
    action: str
    model: str
    reason: str
    def __init__(self, charge_idempotency_key: _Optional[str] = ..., amount_millicredits: _Optional[int] = ..., returned: _Optional[_Iterable[_Union[Draw, _Mapping]]] = ..., overage_cancelled_millicredits: _Optional[int] = ..., refund_bucket: _Optional[_Union[Draw, _Mapping]] = ..., refunded_millicredits: _Optional[int] = ..., refundable_millicredits: _Optional[int] = ..., cycle_returned_millicredits: _Optional[int] = ..., member_id: _Optional[str] = ..., action: _Optional[str] = ..., model: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class Dimensions(_message.Message):
    __slots__ = ("input_tokens", "output_tokens", "context_tokens", "images", "tool_calls", "units")
    class UnitsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    UNITS_FIELD_NUMBER: _ClassVar[int]
    input_tokens: int
    output_tokens: int
    context_tokens: int
    images: int
    tool_calls: int
    units: _containers.ScalarMap[str, int]
    def __init__(self, input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., context_tokens: _Optional[int] = ..., images: _Optional[int] = ..., tool_calls: _Optional[int] = ..., units: _Optional[_Mapping[str, int]] = ...) -> None: ...

class BillingAnchor(_message.Message):
    __slots__ = ("day", "hour", "minute")
    DAY_FIELD_NUMBER: _ClassVar[int]
    HOUR_FIELD_NUMBER: _ClassVar[int]
    MINUTE_FIELD_NUMBER: _ClassVar[int]
    day: int
    hour: int
    minute: int
    def __init__(self, day: _Optional[int] = ..., hour: _Optional[int] = ..., minute: _Optional[int] = ...) -> None: ...

class Reservation(_message.Message):
    __slots__ = ("reservation_id", "member_id", "action", "model", "held_millicredits", "draws", "expires_at", "rate_card_version", "dimensions")
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    HELD_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    DRAWS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    RATE_CARD_VERSION_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    member_id: str
    action: str
    model: str
    held_millicredits: int
    draws: _containers.RepeatedCompositeFieldContainer[Draw]
    expires_at: _timestamp_pb2.Timestamp
    rate_card_version: int
    dimensions: Dimensions
    def __init__(self, reservation_id: _Optional[str] = ..., member_id: _Optional[str] = ..., action: _Optional[str] = ..., model: _Optional[str] = ..., held_millicredits: _Optional[int] = ..., draws: _Optional[_Iterable[_Union[Draw, _Mapping]]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., rate_card_version: _Optional[int] = ..., dimensions: _Optional[_Union[Dimensions, _Mapping]] = ...) -> None: ...

class Balance(_message.Message):
    __slots__ = ("account_id", "available_millicredits", "held_millicredits", "overage_millicredits", "buckets", "granted_millicredits", "consumed_millicredits", "expired_millicredits", "voided_millicredits", "open_reservations", "last_activity_at", "version", "upcoming_millicredits", "plan", "pending_plan", "time_zone", "billing_anchor", "cycle_start", "cycle_end", "used_this_cycle_millicredits", "monthly_allowance_millicredits", "daily_allowance_millicredits", "spending_cap_millicredits", "alert_thresholds", "last_debit", "test_clock_id")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    HELD_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    OVERAGE_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    GRANTED_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    CONSUMED_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    VOIDED_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    OPEN_RESERVATIONS_FIELD_NUMBER: _ClassVar[int]
    LAST_ACTIVITY_AT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UPCOMING_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    PENDING_PLAN_FIELD_NUMBER: _ClassVar[int]
    TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    BILLING_ANCHOR_FIELD_NUMBER: _ClassVar[int]
    CYCLE_START_FIELD_NUMBER: _ClassVar[int]
    CYCLE_END_FIELD_NUMBER: _ClassVar[int]
    USED_THIS_CYCLE_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    MONTHLY_ALLOWANCE_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    DAILY_ALLOWANCE_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    SPENDING_CAP_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    ALERT_THRESHOLDS_FIELD_NUMBER: _ClassVar[int]
    LAST_DEBIT_FIELD_NUMBER: _ClassVar[int]
    TEST_CLOCK_ID_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    available_millicredits: int
    held_millicredits: int
    overage_millicredits: int
    buckets: _containers.RepeatedCompositeFieldContainer[Bucket]
    granted_millicredits: int
    consumed_millicredits: int
    expired_millicredits: int
    voided_millicredits: int
    open_reservations: int
    last_activity_at: _timestamp_pb2.Timestamp
    version: int
    upcoming_millicredits: int
    plan: str
    pending_plan: str
    time_zone: str
    billing_anchor: BillingAnchor
    cycle_start: _timestamp_pb2.Timestamp
    cycle_end: _timestamp_pb2.Timestamp
    used_this_cycle_millicredits: int
    monthly_allowance_millicredits: int
    daily_allowance_millicredits: int
    spending_cap_millicredits: int
    alert_thresholds: AlertThresholds
    last_debit: LastDebit
    test_clock_id: str
    def __init__(self, account_id: _Optional[str] = ..., available_millicredits: _Optional[int] = ..., held_millicredits: _Optional[int] = ..., overage_millicredits: _Optional[int] = ..., buckets: _Optional[_Iterable[_Union[Bucket, _Mapping]]] = ..., granted_millicredits: _Optional[int] = ..., consumed_millicredits: _Optional[int] = ..., expired_millicredits: _Optional[int] = ..., voided_millicredits: _Optional[int] = ..., open_reservations: _Optional[int] = ..., last_activity_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., version: _Optional[int] = ..., upcoming_millicredits: _Optional[int] = ..., plan: _Optional[str] = ..., pending_plan: _Optional[str] = ..., time_zone: _Optional[str] = ..., billing_anchor: _Optional[_Union[BillingAnchor, _Mapping]] = ..., cycle_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cycle_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., used_this_cycle_millicredits: _Optional[int] = ..., monthly_allowance_millicredits: _Optional[int] = ..., daily_allowance_millicredits: _Optional[int] = ..., spending_cap_millicredits: _Optional[int] = ..., alert_thresholds: _Optional[_Union[AlertThresholds, _Mapping]] = ..., last_debit: _Optional[_Union[LastDebit, _Mapping]] = ..., test_clock_id: _Optional[str] = ...) -> None: ...

class LastDebit(_message.Message):
    __slots__ = ("charged_at", "member_id", "action", "model", "amount_millicredits")
    CHARGED_AT_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    charged_at: _timestamp_pb2.Timestamp
    member_id: str
    action: str
    model: str
    amount_millicredits: int
    def __init__(self, charged_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., member_id: _Optional[str] = ..., action: _Optional[str] = ..., model: _Optional[str] = ..., amount_millicredits: _Optional[int] = ...) -> None: ...

class AlertThresholds(_message.Message):
    __slots__ = ("low_balance_millicredits", "usage_percent", "auto_top_up", "critical_level_millicredits")
    LOW_BALANCE_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    USAGE_PERCENT_FIELD_NUMBER: _ClassVar[int]
    AUTO_TOP_UP_FIELD_NUMBER: _ClassVar[int]
    CRITICAL_LEVEL_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    low_balance_millicredits: _containers.RepeatedScalarFieldContainer[int]
    usage_percent: _containers.RepeatedScalarFieldContainer[int]
    auto_top_up: AutoTopUp
    critical_level_millicredits: int
    def __init__(self, low_balance_millicredits: _Optional[_Iterable[int]] = ..., usage_percent: _Optional[_Iterable[int]] = ..., auto_top_up: _Optional[_Union[AutoTopUp, _Mapping]] = ..., critical_level_millicredits: _Optional[int] = ...) -> None: ...

class AutoTopUp(_message.Message):
    __slots__ = ("below_millicredits", "pack")
    BELOW_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    PACK_FIELD_NUMBER: _ClassVar[int]
    below_millicredits: int
    pack: str
    def __init__(self, below_millicredits: _Optional[int] = ..., pack: _Optional[str] = ...) -> None: ...

class Alert(_message.Message):
    __slots__ = ("kind", "threshold_millicredits", "usage_percent", "pack", "available_millicredits", "used_this_cycle_millicredits", "spending_cap_millicredits", "overage_millicredits", "raised_at", "sequence", "allowance_millicredits", "severity")
    KIND_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    USAGE_PERCENT_FIELD_NUMBER: _ClassVar[int]
    PACK_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    USED_THIS_CYCLE_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    SPENDING_CAP_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    OVERAGE_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    RAISED_AT_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    ALLOWANCE_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    kind: AlertKind
    threshold_millicredits: int
    usage_percent: int
    pack: str
    available_millicredits: int
    used_this_cycle_millicredits: int
    spending_cap_millicredits: int
    overage_millicredits: int
    raised_at: _timestamp_pb2.Timestamp
    sequence: int
    allowance_millicredits: int
    severity: AlertSeverity
    def __init__(self, kind: _Optional[_Union[AlertKind, str]] = ..., threshold_millicredits: _Optional[int] = ..., usage_percent: _Optional[int] = ..., pack: _Optional[str] = ..., available_millicredits: _Optional[int] = ..., used_this_cycle_millicredits: _Optional[int] = ..., spending_cap_millicredits: _Optional[int] = ..., overage_millicredits: _Optional[int] = ..., raised_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., sequence: _Optional[int] = ..., allowance_millicredits: _Optional[int] = ..., severity: _Optional[_Union[AlertSeverity, str]] = ...) -> None: ...
