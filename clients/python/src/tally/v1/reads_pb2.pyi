import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class UsageGrouping(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    USAGE_GROUPING_UNSPECIFIED: _ClassVar[UsageGrouping]
    USAGE_GROUPING_ACTION: _ClassVar[UsageGrouping]
    USAGE_GROUPING_CAPABILITY: _ClassVar[UsageGrouping]
    USAGE_GROUPING_MEMBER: _ClassVar[UsageGrouping]
    USAGE_GROUPING_MODEL: _ClassVar[UsageGrouping]
    USAGE_GROUPING_DAY: _ClassVar[UsageGrouping]
USAGE_GROUPING_UNSPECIFIED: UsageGrouping
USAGE_GROUPING_ACTION: UsageGrouping
USAGE_GROUPING_CAPABILITY: UsageGrouping
USAGE_GROUPING_MEMBER: UsageGrouping
USAGE_GROUPING_MODEL: UsageGrouping
USAGE_GROUPING_DAY: UsageGrouping

class ReadConsistency(_message.Message):
    __slots__ = ("minimize_latency", "at_least_as_fresh", "fully_consistent")
    MINIMIZE_LATENCY_FIELD_NUMBER: _ClassVar[int]
    AT_LEAST_AS_FRESH_FIELD_NUMBER: _ClassVar[int]
    FULLY_CONSISTENT_FIELD_NUMBER: _ClassVar[int]
    minimize_latency: bool
    at_least_as_fresh: str
    fully_consistent: bool
    def __init__(self, minimize_latency: _Optional[bool] = ..., at_least_as_fresh: _Optional[str] = ..., fully_consistent: _Optional[bool] = ...) -> None: ...

class DayRange(_message.Message):
    __slots__ = ("first_day", "last_day")
    FIRST_DAY_FIELD_NUMBER: _ClassVar[int]
    LAST_DAY_FIELD_NUMBER: _ClassVar[int]
    first_day: str
    last_day: str
    def __init__(self, first_day: _Optional[str] = ..., last_day: _Optional[str] = ...) -> None: ...

class GetUsageRequest(_message.Message):
    __slots__ = ("account_id", "group_by", "cycles_ago", "days", "runway_days", "consistency")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    CYCLES_AGO_FIELD_NUMBER: _ClassVar[int]
    DAYS_FIELD_NUMBER: _ClassVar[int]
    RUNWAY_DAYS_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    group_by: UsageGrouping
    cycles_ago: int
    days: DayRange
    runway_days: int
    consistency: ReadConsistency
    def __init__(self, account_id: _Optional[str] = ..., group_by: _Optional[_Union[UsageGrouping, str]] = ..., cycles_ago: _Optional[int] = ..., days: _Optional[_Union[DayRange, _Mapping]] = ..., runway_days: _Optional[int] = ..., consistency: _Optional[_Union[ReadConsistency, _Mapping]] = ...) -> None: ...

class UsageTotals(_message.Message):
    __slots__ = ("charged_millicredits", "overage_millicredits", "actions", "input_tokens", "output_tokens", "context_tokens", "images", "tool_calls", "units")
    class UnitsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    CHARGED_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    OVERAGE_MILLICREDITS_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    UNITS_FIELD_NUMBER: _ClassVar[int]
    charged_millicredits: int
    overage_millicredits: int
    actions: int
    input_tokens: int
    output_tokens: int
    context_tokens: int
    images: int
    tool_calls: int
    units: _containers.ScalarMap[str, int]
    def __init__(self, charged_millicredits: _Optional[int] = ..., overage_millicredits: _Optional[int] = ..., actions: _Optional[int] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., context_tokens: _Optional[int] = ..., images: _Optional[int] = ..., tool_calls: _Optional[int] = ..., units: _Optional[_Mapping[str, int]] = ...) -> None: ...

class UsageGroup(_message.Message):
    __slots__ = ("key", "totals")
    KEY_FIELD_NUMBER: _ClassVar[int]
    TOTALS_FIELD_NUMBER: _ClassVar[int]
    key: str
    totals: UsageTotals
    def __init__(self, key: _Optional[str] = ..., totals: _Optional[_Union[UsageTotals, _Mapping]] = ...) -> None: ...

class Runway(_message.Message):
    __slots__ = ("window_days", "pace_millicredits_per_day", "runs_out_at", "hits_cap_at")
    WINDOW_DAYS_FIELD_NUMBER: _ClassVar[int]
    PACE_MILLICREDITS_PER_DAY_FIELD_NUMBER: _ClassVar[int]
    RUNS_OUT_AT_FIELD_NUMBER: _ClassVar[int]
    HITS_CAP_AT_FIELD_NUMBER: _ClassVar[int]
    window_days: int
    pace_millicredits_per_day: int
    runs_out_at: _timestamp_pb2.Timestamp
    hits_cap_at: _timestamp_pb2.Timestamp
    def __init__(self, window_days: _Optional[int] = ..., pace_millicredits_per_day: _Optional[int] = ..., runs_out_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., hits_cap_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetUsageResponse(_message.Message):
    __slots__ = ("groups", "total", "period_start", "period_end", "runway", "test_clock_id")
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    PERIOD_START_FIELD_NUMBER: _ClassVar[int]
    PERIOD_END_FIELD_NUMBER: _ClassVar[int]
    RUNWAY_FIELD_NUMBER: _ClassVar[int]
    TEST_CLOCK_ID_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedCompositeFieldContainer[UsageGroup]
    total: UsageTotals
    period_start: _timestamp_pb2.Timestamp
    period_end: _timestamp_pb2.Timestamp
    runway: Runway
    test_clock_id: str
    def __init__(self, groups: _Optional[_Iterable[_Union[UsageGroup, _Mapping]]] = ..., total: _Optional[_Union[UsageTotals, _Mapping]] = ..., period_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., period_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., runway: _Optional[_Union[Runway, _Mapping]] = ..., test_clock_id: _Optional[str] = ...) -> None: ...
