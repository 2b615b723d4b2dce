from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class PublishRateCardRequest(_message.Message):
    __slots__ = ("toml",)
    TOML_FIELD_NUMBER: _ClassVar[int]
    toml: str
    def __init__(self, toml: _Optional[str] = ...) -> None: ...

class PublishRateCardResponse(_message.Message):
    __slots__ = ("version", "already_published")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ALREADY_PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    version: int
    already_published: bool
    def __init__(self, version: _Optional[int] = ..., already_published: _Optional[bool] = ...) -> None: ...

class GetRateCardRequest(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class GetRateCardResponse(_message.Message):
    __slots__ = ("version", "toml")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TOML_FIELD_NUMBER: _ClassVar[int]
    version: int
    toml: str
    def __init__(self, version: _Optional[int] = ..., toml: _Optional[str] = ...) -> None: ...

class PublishPlanCatalogueRequest(_message.Message):
    __slots__ = ("toml",)
    TOML_FIELD_NUMBER: _ClassVar[int]
    toml: str
    def __init__(self, toml: _Optional[str] = ...) -> None: ...

class PublishPlanCatalogueResponse(_message.Message):
    __slots__ = ("version", "already_published")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ALREADY_PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    version: int
    already_published: bool
    def __init__(self, version: _Optional[int] = ..., already_published: _Optional[bool] = ...) -> None: ...

class GetPlanCatalogueRequest(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class GetPlanCatalogueResponse(_message.Message):
    __slots__ = ("version", "toml")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TOML_FIELD_NUMBER: _ClassVar[int]
    version: int
    toml: str
    def __init__(self, version: _Optional[int] = ..., toml: _Optional[str] = ...) -> None: ...
