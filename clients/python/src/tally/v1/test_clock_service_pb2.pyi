import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TestClock(_message.Message):
    __slots__ = ("test_clock_id", "frozen_time", "start_time", "account_ids")
    TEST_CLOCK_ID_FIELD_NUMBER: _ClassVar[int]
    FROZEN_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_IDS_FIELD_NUMBER: _ClassVar[int]
    test_clock_id: str
    frozen_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    account_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, test_clock_id: _Optional[str] = ..., frozen_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., account_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class CreateTestClockRequest(_message.Message):
    __slots__ = ("test_clock_id", "frozen_time")
    TEST_CLOCK_ID_FIELD_NUMBER: _ClassVar[int]
    FROZEN_TIME_FIELD_NUMBER: _ClassVar[int]
    test_clock_id: str
    frozen_time: _timestamp_pb2.Timestamp
    def __init__(self, test_clock_id: _Optional[str] = ..., frozen_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateTestClockResponse(_message.Message):
    __slots__ = ("test_clock",)
    TEST_CLOCK_FIELD_NUMBER: _ClassVar[int]
    test_clock: TestClock
    def __init__(self, test_clock: _Optional[_Union[TestClock, _Mapping]] = ...) -> None: ...

class GetTestClockRequest(_message.Message):
    __slots__ = ("test_clock_id",)
    TEST_CLOCK_ID_FIELD_NUMBER: _ClassVar[int]
    test_clock_id: str
    def __init__(self, test_clock_id: _Optional[str] = ...) -> None: ...

class GetTestClockResponse(_message.Message):
    __slots__ = ("test_clock",)
    TEST_CLOCK_FIELD_NUMBER: _ClassVar[int]
    test_clock: TestClock
    def __init__(self, test_clock: _Optional[_Union[TestClock, _Mapping]] = ...) -> None: ...

class AdvanceTestClockRequest(_message.Message):
    __slots__ = ("test_clock_id", "frozen_time")
    TEST_CLOCK_ID_FIELD_NUMBER: _ClassVar[int]
    FROZEN_TIME_FIELD_NUMBER: _ClassVar[int]
    test_clock_id: str
    frozen_time: _timestamp_pb2.Timestamp
    def __init__(self, test_clock_id: _Optional[str] = ..., frozen_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class AdvanceTestClockResponse(_message.Message):
    __slots__ = ("test_clock", "events_written")
    TEST_CLOCK_FIELD_NUMBER: _ClassVar[int]
    EVENTS_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    test_clock: TestClock
    events_written: int
    def __init__(self, test_clock: _Optional[_Union[TestClock, _Mapping]] = ..., events_written: _Optional[int] = ...) -> None: ...
