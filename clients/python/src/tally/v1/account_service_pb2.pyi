import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from tally.v1 import credits_pb2 as _credits_pb2
from tally.v1 import reads_pb2 as _reads_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LedgerEntryKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LEDGER_ENTRY_KIND_UNSPECIFIED: _ClassVar[LedgerEntryKind]
    LEDGER_ENTRY_KIND_ACCOUNT_OPENED: _ClassVar[LedgerEntryKind]
    LEDGER_ENTRY_KIND_GRANT: _ClassVar[LedgerEntryKind]
    LEDGER_ENTRY_KIND_GRANT_VOIDED: _ClassVar[LedgerEntryKind]
    LEDGER_ENTRY_KIND_HOLD: _ClassVar[LedgerEntryKind]
    LEDGER_ENTRY_KIND_HOLD_EXTENDED: _ClassVar[LedgerEntryKind]
    LEDGER_ENTRY_KIND_HOLD_RELEASED: _ClassVar[LedgerEntryKind]
    LEDGER_ENTRY_KIND_HOLD_EXPIRED: _ClassVar[LedgerEntryKind]
    LEDGER_ENTRY_KIND_DEBIT: _ClassVar[LedgerEntryKind]
    LEDGER_ENTRY_KIND_OVERAGE_REPAID: _ClassVar[LedgerEntryKind]
    LEDGER_ENTRY_KIND_BUCKET_EXPIRED: _ClassVar[LedgerEntryKind]
    LEDGER_ENTRY_KIND_CYCLE_STARTED: _ClassVar[LedgerEntryKind]
    LEDGER_ENTRY_KIND_DAY_STARTED: _ClassVar[LedgerEntryKind]
    LEDGER_ENTRY_KIND_PLAN_CHANGED: _ClassVar[LedgerEntryKind]
    LEDGER_ENTRY_KIND_SPENDING_CAP_SET: _ClassVar[LedgerEntryKind]
    LEDGER_ENTRY_KIND_BILLING_ANCHOR_SET: _ClassVar[LedgerEntryKind]
    LEDGER_ENTRY_KIND_ALERT: _ClassVar[LedgerEntryKind]
    LEDGER_ENTRY_KIND_ALERT_THRESHOLDS_SET: _ClassVar[LedgerEntryKind]
    LEDGER_ENTRY_KIND_ADJUSTMENT: _ClassVar[LedgerEntryKind]
    LEDGER_ENTRY_KIND_REFUND: _ClassVar[LedgerEntryKind]
    LEDGER_ENTRY_KIND_GRANT_EFFECTIVE: _ClassVar[LedgerEntryKind]
LEDGER_ENTRY_KIND_UNSPECIFIED: LedgerEntryKind
LEDGER_ENTRY_KIND_ACCOUNT_OPENED: LedgerEntryKind
LEDGER_ENTRY_KIND_GRANT: LedgerEntryKind
LEDGER_ENTRY_KIND_GRANT_VOIDED: LedgerEntryKind
LEDGER_ENTRY_KIND_HOLD: LedgerEntryKind
LEDGER_ENTRY_KIND_HOLD_EXTENDED: LedgerEntryKind
LEDGER_ENTRY_KIND_HOLD_RELEASED: LedgerEntryKind
LEDGER_ENTRY_KIND_HOLD_EXPIRED: LedgerEntryKind
LEDGER_ENTRY_KIND_DEBIT: LedgerEntryKind
LEDGER_ENTRY_KIND_OVERAGE_REPAID: LedgerEntryKind
LEDGER_ENTRY_KIND_BUCKET_EXPIRED: LedgerEntryKind
LEDGER_ENTRY_KIND_CYCLE_STARTED: LedgerEntryKind
LEDGER_ENTRY_KIND_DAY_STARTED: LedgerEntryKind
LEDGER_ENTRY_KIND_PLAN_CHANGED: LedgerEntryKind
LEDGER_ENTRY_KIND_SPENDING_CAP_SET: LedgerEntryKind
LEDGER_ENTRY_KIND_BILLING_ANCHOR_SET: LedgerEntryKind
LEDGER_ENTRY_KIND_ALERT: LedgerEntryKind
LEDGER_ENTRY_KIND_ALERT_THRESHOLDS_SET: LedgerEntryKind
LEDGER_ENTRY_KIND_ADJUSTMENT: LedgerEntryKind
LEDGER_ENTRY_KIND_REFUND: LedgerEntryKind
LEDGER_ENTRY_KIND_GRANT_EFFECTIVE: LedgerEntryKind

class OpenAccountRequest(_message.Message):
    __slots__ = ("idempotency_key", "account_id", "plan", "time_zone", "billing_anchor", "trial", "spending_cap_millicredits", "test_clock_id")
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    BILLING_ANCHOR_FIELD_NUMBER: _ClassVar[int]
    TRIAL_FIELD_NUMBER: _ClassVar[int]
    SPENDING_CAP_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    TEST_CLOCK_ID_FIELD_NUMBER: _ClassVar[int]
    idempotency_key: str
    account_id: str
    plan: str
    time_zone: str
    billing_anchor: _credits_pb2.BillingAnchor
    trial: bool
    spending_cap_millicredits: int
    test_clock_id: str
    def __init__(self, idempotency_key: _Optional[str] = ..., account_id: _Optional[str] = ..., plan: _Optional[str] = ..., time_zone: _Optional[str] = ..., billing_anchor: _Optional[_Union[_credits_pb2.BillingAnchor, _Mapping]] = ..., trial: _Optional[bool] = ..., spending_cap_millicredits: _Optional[int] = ..., test_clock_id: _Optional[str] = ...) -> None: ...

class OpenAccountResponse(_message.Message):
    __slots__ = ("balance", "consistency_token")
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    balance: _credits_pb2.Balance
    consistency_token: str
    def __init__(self, balance: _Optional[_Union[_credits_pb2.Balance, _Mapping]] = ..., consistency_token: _Optional[str] = ...) -> None: ...

class ChangePlanRequest(_message.Message):
    __slots__ = ("idempotency_key", "account_id", "plan")
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    idempotency_key: str
    account_id: str
    plan: str
    def __init__(self, idempotency_key: _Optional[str] = ..., account_id: _Optional[str] = ..., plan: _Optional[str] = ...) -> None: ...

class ChangePlanResponse(_message.Message):
    __slots__ = ("effective_at", "balance", "consistency_token")
    EFFECTIVE_AT_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    effective_at: _timestamp_pb2.Timestamp
    balance: _credits_pb2.Balance
    consistency_token: str
    def __init__(self, effective_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., balance: _Optional[_Union[_credits_pb2.Balance, _Mapping]] = ..., consistency_token: _Optional[str] = ...) -> None: ...

class SetSpendingCapRequest(_message.Message):
    __slots__ = ("idempotency_key", "account_id", "spending_cap_millicredits")
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    SPENDING_CAP_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    idempotency_key: str
    account_id: str
    spending_cap_millicredits: int
    def __init__(self, idempotency_key: _Optional[str] = ..., account_id: _Optional[str] = ..., spending_cap_millicredits: _Optional[int] = ...) -> None: ...

class SetSpendingCapResponse(_message.Message):
    __slots__ = ("balance", "consistency_token")
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    balance: _credits_pb2.Balance
    consistency_token: str
    def __init__(self, balance: _Optional[_Union[_credits_pb2.Balance, _Mapping]] = ..., consistency_token: _Optional[str] = ...) -> None: ...

class SetBillingAnchorRequest(_message.Message):
    __slots__ = ("idempotency_key", "account_id", "billing_anchor")
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    BILLING_ANCHOR_FIELD_NUMBER: _ClassVar[int]
    idempotency_key: str
    account_id: str
    billing_anchor: _credits_pb2.BillingAnchor
    def __init__(self, idempotency_key: _Optional[str] = ..., account_id: _Optional[str] = ..., billing_anchor: _Optional[_Union[_credits_pb2.BillingAnchor, _Mapping]] = ...) -> None: ...

class SetBillingAnchorResponse(_message.Message):
    __slots__ = ("balance", "consistency_token")
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    balance: _credits_pb2.Balance
    consistency_token: str
    def __init__(self, balance: _Optional[_Union[_credits_pb2.Balance, _Mapping]] = ..., consistency_token: _Optional[str] = ...) -> None: ...

class SetAlertThresholdsRequest(_message.Message):
    __slots__ = ("idempotency_key", "account_id", "thresholds")
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    THRESHOLDS_FIELD_NUMBER: _ClassVar[int]
    idempotency_key: str
    account_id: str
    thresholds: _credits_pb2.AlertThresholds
    def __init__(self, idempotency_key: _Optional[str] = ..., account_id: _Optional[str] = ..., thresholds: _Optional[_Union[_credits_pb2.AlertThresholds, _Mapping]] = ...) -> None: ...

class SetAlertThresholdsResponse(_message.Message):
    __slots__ = ("balance", "consistency_token")
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    balance: _credits_pb2.Balance
    consistency_token: str
    def __init__(self, balance: _Optional[_Union[_credits_pb2.Balance, _Mapping]] = ..., consistency_token: _Optional[str] = ...) -> None: ...

class GrantRequest(_message.Message):
    __slots__ = ("idempotency_key", "account_id", "kind", "amount_millicredits", "source", "priority", "effective_at", "expires_at", "cost_basis", "reference", "pack")
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    COST_BASIS_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    PACK_FIELD_NUMBER: _ClassVar[int]
    idempotency_key: str
    account_id: str
    kind: _credits_pb2.BucketKind
    amount_millicredits: int
    source: _credits_pb2.GrantSource
    priority: int
    effective_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    cost_basis: _credits_pb2.CostBasis
    reference: str
    pack: str
    def __init__(self, idempotency_key: _Optional[str] = ..., account_id: _Optional[str] = ..., kind: _Optional[_Union[_credits_pb2.BucketKind, str]] = ..., amount_millicredits: _Optional[int] = ..., source: _Optional[_Union[_credits_pb2.GrantSource, str]] = ..., priority: _Optional[int] = ..., effective_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cost_basis: _Optional[_Union[_credits_pb2.CostBasis, _Mapping]] = ..., reference: _Optional[str] = ..., pack: _Optional[str] = ...) -> None: ...

class GrantResponse(_message.Message):
    __slots__ = ("bucket", "overage_repaid_millicredits", "balance", "consistency_token")
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    OVERAGE_REPAID_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    bucket: _credits_pb2.Bucket
    overage_repaid_millicredits: int
    balance: _credits_pb2.Balance
    consistency_token: str
    def __init__(self, bucket: _Optional[_Union[_credits_pb2.Bucket, _Mapping]] = ..., overage_repaid_millicredits: _Optional[int] = ..., balance: _Optional[_Union[_credits_pb2.Balance, _Mapping]] = ..., consistency_token: _Optional[str] = ...) -> None: ...

class VoidGrantRequest(_message.Message):
    __slots__ = ("idempotency_key", "account_id", "grant_id", "reason")
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    GRANT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    idempotency_key: str
    account_id: str
    grant_id: str
    reason: str
    def __init__(self, idempotency_key: _Optional[str] = ..., account_id: _Optional[str] = ..., grant_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class AdjustRequest(_message.Message):
    __slots__ = ("idempotency_key", "account_id", "amount_millicredits", "reason", "operator")
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_FIELD_NUMBER: _ClassVar[int]
    idempotency_key: str
    account_id: str
    amount_millicredits: int
    reason: str
    operator: str
    def __init__(self, idempotency_key: _Optional[str] = ..., account_id: _Optional[str] = ..., amount_millicredits: _Optional[int] = ..., reason: _Optional[str] = ..., operator: _Optional[str] = ...) -> None: ...

class AdjustResponse(_message.Message):
    __slots__ = ("amount_millicredits", "grant_id", "draws", "balance", "consistency_token")
    AMOUNT_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    GRANT_ID_FIELD_NUMBER: _ClassVar[int]
    DRAWS_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    amount_millicredits: int
    grant_id: str
    draws: _containers.RepeatedCompositeFieldContainer[_credits_pb2.Draw]
    balance: _credits_pb2.Balance
    consistency_token: str
    def __init__(self, amount_millicredits: _Optional[int] = ..., grant_id: _Optional[str] = ..., draws: _Optional[_Iterable[_Union[_credits_pb2.Draw, _Mapping]]] = ..., balance: _Optional[_Union[_credits_pb2.Balance, _Mapping]] = ..., consistency_token: _Optional[str] = ...) -> None: ...

class VoidGrantResponse(_message.Message):
    __slots__ = ("voided_millicredits", "balance", "consistency_token")
    VOIDED_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    voided_millicredits: int
    balance: _credits_pb2.Balance
    consistency_token: str
    def __init__(self, voided_millicredits: _Optional[int] = ..., balance: _Optional[_Union[_credits_pb2.Balance, _Mapping]] = ..., consistency_token: _Optional[str] = ...) -> None: ...

class GetBalanceRequest(_message.Message):
    __slots__ = ("account_id", "consistency")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    consistency: _reads_pb2.ReadConsistency
    def __init__(self, account_id: _Optional[str] = ..., consistency: _Optional[_Union[_reads_pb2.ReadConsistency, _Mapping]] = ...) -> None: ...

class GetBalanceResponse(_message.Message):
    __slots__ = ("balance",)
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    balance: _credits_pb2.Balance
    def __init__(self, balance: _Optional[_Union[_credits_pb2.Balance, _Mapping]] = ...) -> None: ...

class ListLedgerRequest(_message.Message):
    __slots__ = ("account_id", "page_size", "page_token", "member_id", "action", "kinds", "start_time", "end_time", "consistency")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    page_size: int
    page_token: str
    member_id: str
    action: str
    kinds: _containers.RepeatedScalarFieldContainer[LedgerEntryKind]
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    consistency: _reads_pb2.ReadConsistency
    def __init__(self, account_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., member_id: _Optional[str] = ..., action: _Optional[str] = ..., kinds: _Optional[_Iterable[_Union[LedgerEntryKind, str]]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., consistency: _Optional[_Union[_reads_pb2.ReadConsistency, _Mapping]] = ...) -> None: ...

class LedgerEntry(_message.Message):
    __slots__ = ("sequence", "occurred_at", "kind", "amount_millicredits", "member_id", "action", "model", "reservation_id", "grant_id", "draws", "receipt", "available_before_millicredits", "available_after_millicredits", "idempotency_key", "bucket_kind", "note", "alert", "operator", "refund")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    GRANT_ID_FIELD_NUMBER: _ClassVar[int]
    DRAWS_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_BEFORE_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_AFTER_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    BUCKET_KIND_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    ALERT_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_FIELD_NUMBER: _ClassVar[int]
    REFUND_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    occurred_at: _timestamp_pb2.Timestamp
    kind: LedgerEntryKind
    amount_millicredits: int
    member_id: str
    action: str
    model: str
    reservation_id: str
    grant_id: str
    draws: _containers.RepeatedCompositeFieldContainer[_credits_pb2.Draw]
    receipt: _credits_pb2.Receipt
    available_before_millicredits: int
    available_after_millicredits: int
    idempotency_key: str
    bucket_kind: _credits_pb2.BucketKind
    note: str
    alert: _credits_pb2.Alert
    operator: str
    refund: _credits_pb2.RefundReceipt
    def __init__(self, sequence: _Optional[int] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., kind: _Optional[_Union[LedgerEntryKind, str]] = ..., amount_millicredits: _Optional[int] = ..., member_id: _Optional[str] = ..., action: _Optional[str] = ..., model: _Optional[str] = ..., reservation_id: _Optional[str] = ..., grant_id: _Optional[str] = ..., draws: _Optional[_Iterable[_Union[_credits_pb2.Draw, _Mapping]]] = ..., receipt: _Optional[_Union[_credits_pb2.Receipt, _Mapping]] = ..., available_before_millicredits: _Optional[int] = ..., available_after_millicredits: _Optional[int] = ..., idempotency_key: _Optional[str] = ..., bucket_kind: _Optional[_Union[_credits_pb2.BucketKind, str]] = ..., note: _Optional[str] = ..., alert: _Optional[_Union[_credits_pb2.Alert, _Mapping]] = ..., operator: _Optional[str] = ..., refund: _Optional[_Union[_credits_pb2.RefundReceipt, _Mapping]] = ...) -> None: ...

class WatchAccountRequest(_message.Message):
    __slots__ = ("account_id", "after_sequence")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    after_sequence: int
    def __init__(self, account_id: _Optional[str] = ..., after_sequence: _Optional[int] = ...) -> None: ...

class WatchAccountResponse(_message.Message):
    __slots__ = ("sequence", "balance", "entry", "alert")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    ALERT_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    balance: _credits_pb2.Balance
    entry: LedgerEntry
    alert: _credits_pb2.Alert
    def __init__(self, sequence: _Optional[int] = ..., balance: _Optional[_Union[_credits_pb2.Balance, _Mapping]] = ..., entry: _Optional[_Union[LedgerEntry, _Mapping]] = ..., alert: _Optional[_Union[_credits_pb2.Alert, _Mapping]] = ...) -> None: ...

class ListLedgerResponse(_message.Message):
    __slots__ = ("entries", "next_page_token", "test_clock_id")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TEST_CLOCK_ID_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[LedgerEntry]
    next_page_token: str
    test_clock_id: str
    def __init__(self, entries: _Optional[_Iterable[_Union[LedgerEntry, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., test_clock_id: _Optional[str] = ...) -> None: ...
