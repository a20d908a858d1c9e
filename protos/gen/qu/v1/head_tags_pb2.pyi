import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from qu.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HeadTags(_message.Message):
    __slots__ = ("normalized_query", "tags", "categories", "rewrites", "teacher_version", "run_id", "run_end", "run_size", "schema_version", "created_at", "guardrails")
    NORMALIZED_QUERY_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    REWRITES_FIELD_NUMBER: _ClassVar[int]
    TEACHER_VERSION_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_END_FIELD_NUMBER: _ClassVar[int]
    RUN_SIZE_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    GUARDRAILS_FIELD_NUMBER: _ClassVar[int]
    normalized_query: str
    tags: _containers.RepeatedCompositeFieldContainer[_common_pb2.Tag]
    categories: _containers.RepeatedCompositeFieldContainer[_common_pb2.CategoryScore]
    rewrites: _containers.RepeatedCompositeFieldContainer[_common_pb2.Rewrite]
    teacher_version: str
    run_id: str
    run_end: bool
    run_size: int
    schema_version: int
    created_at: _timestamp_pb2.Timestamp
    guardrails: _containers.RepeatedCompositeFieldContainer[_common_pb2.GuardrailDecision]
    def __init__(self, normalized_query: _Optional[str] = ..., tags: _Optional[_Iterable[_Union[_common_pb2.Tag, _Mapping]]] = ..., categories: _Optional[_Iterable[_Union[_common_pb2.CategoryScore, _Mapping]]] = ..., rewrites: _Optional[_Iterable[_Union[_common_pb2.Rewrite, _Mapping]]] = ..., teacher_version: _Optional[str] = ..., run_id: _Optional[str] = ..., run_end: _Optional[bool] = ..., run_size: _Optional[int] = ..., schema_version: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., guardrails: _Optional[_Iterable[_Union[_common_pb2.GuardrailDecision, _Mapping]]] = ...) -> None: ...
