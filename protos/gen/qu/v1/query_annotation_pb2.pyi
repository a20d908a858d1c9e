import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from qu.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Source(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SOURCE_UNSPECIFIED: _ClassVar[Source]
    SOURCE_CACHE: _ClassVar[Source]
    SOURCE_STUDENT: _ClassVar[Source]
    SOURCE_TEACHER: _ClassVar[Source]
    SOURCE_FALLBACK: _ClassVar[Source]
SOURCE_UNSPECIFIED: Source
SOURCE_CACHE: Source
SOURCE_STUDENT: Source
SOURCE_TEACHER: Source
SOURCE_FALLBACK: Source

class Timings(_message.Message):
    __slots__ = ("decode_ms", "cache_ms", "student_ms", "guardrails_ms", "total_ms")
    DECODE_MS_FIELD_NUMBER: _ClassVar[int]
    CACHE_MS_FIELD_NUMBER: _ClassVar[int]
    STUDENT_MS_FIELD_NUMBER: _ClassVar[int]
    GUARDRAILS_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    decode_ms: float
    cache_ms: float
    student_ms: float
    guardrails_ms: float
    total_ms: float
    def __init__(self, decode_ms: _Optional[float] = ..., cache_ms: _Optional[float] = ..., student_ms: _Optional[float] = ..., guardrails_ms: _Optional[float] = ..., total_ms: _Optional[float] = ...) -> None: ...

class QueryAnnotation(_message.Message):
    __slots__ = ("event_id", "query", "normalized_query", "tags", "categories", "rewrites", "source", "model_version", "guardrails", "degraded", "timings", "annotated_at", "schema_version")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    NORMALIZED_QUERY_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    REWRITES_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    GUARDRAILS_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    ANNOTATED_AT_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    query: str
    normalized_query: str
    tags: _containers.RepeatedCompositeFieldContainer[_common_pb2.Tag]
    categories: _containers.RepeatedCompositeFieldContainer[_common_pb2.CategoryScore]
    rewrites: _containers.RepeatedCompositeFieldContainer[_common_pb2.Rewrite]
    source: Source
    model_version: str
    guardrails: _containers.RepeatedCompositeFieldContainer[_common_pb2.GuardrailDecision]
    degraded: bool
    timings: Timings
    annotated_at: _timestamp_pb2.Timestamp
    schema_version: int
    def __init__(self, event_id: _Optional[str] = ..., query: _Optional[str] = ..., normalized_query: _Optional[str] = ..., tags: _Optional[_Iterable[_Union[_common_pb2.Tag, _Mapping]]] = ..., categories: _Optional[_Iterable[_Union[_common_pb2.CategoryScore, _Mapping]]] = ..., rewrites: _Optional[_Iterable[_Union[_common_pb2.Rewrite, _Mapping]]] = ..., source: _Optional[_Union[Source, str]] = ..., model_version: _Optional[str] = ..., guardrails: _Optional[_Iterable[_Union[_common_pb2.GuardrailDecision, _Mapping]]] = ..., degraded: _Optional[bool] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., annotated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., schema_version: _Optional[int] = ...) -> None: ...
