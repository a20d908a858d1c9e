from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_UNSPECIFIED: _ClassVar[Role]
    ROLE_PRODUCT: _ClassVar[Role]
    ROLE_BRAND: _ClassVar[Role]
    ROLE_ATTRIBUTE: _ClassVar[Role]

class RewriteType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REWRITE_TYPE_UNSPECIFIED: _ClassVar[RewriteType]
    REWRITE_TYPE_SUBSTITUTE: _ClassVar[RewriteType]
    REWRITE_TYPE_BROADER: _ClassVar[RewriteType]
    REWRITE_TYPE_SYNONYM: _ClassVar[RewriteType]
ROLE_UNSPECIFIED: Role
ROLE_PRODUCT: Role
ROLE_BRAND: Role
ROLE_ATTRIBUTE: Role
REWRITE_TYPE_UNSPECIFIED: RewriteType
REWRITE_TYPE_SUBSTITUTE: RewriteType
REWRITE_TYPE_BROADER: RewriteType
REWRITE_TYPE_SYNONYM: RewriteType

class Tag(_message.Message):
    __slots__ = ("role", "start", "end", "text", "canonical", "confidence")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CANONICAL_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    role: Role
    start: int
    end: int
    text: str
    canonical: str
    confidence: float
    def __init__(self, role: _Optional[_Union[Role, str]] = ..., start: _Optional[int] = ..., end: _Optional[int] = ..., text: _Optional[str] = ..., canonical: _Optional[str] = ..., confidence: _Optional[float] = ...) -> None: ...

class CategoryScore(_message.Message):
    __slots__ = ("path", "score")
    PATH_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    path: _containers.RepeatedScalarFieldContainer[str]
    score: float
    def __init__(self, path: _Optional[_Iterable[str]] = ..., score: _Optional[float] = ...) -> None: ...

class Rewrite(_message.Message):
    __slots__ = ("type", "query", "score")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    type: RewriteType
    query: str
    score: float
    def __init__(self, type: _Optional[_Union[RewriteType, str]] = ..., query: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class GuardrailDecision(_message.Message):
    __slots__ = ("check", "item", "kept", "reason")
    CHECK_FIELD_NUMBER: _ClassVar[int]
    ITEM_FIELD_NUMBER: _ClassVar[int]
    KEPT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    check: str
    item: str
    kept: bool
    reason: str
    def __init__(self, check: _Optional[str] = ..., item: _Optional[str] = ..., kept: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...
