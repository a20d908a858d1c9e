import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DeadLetter(_message.Message):
    __slots__ = ("original", "original_key", "reason", "detail", "topic", "partition", "offset", "failed_at", "headers", "original_size", "original_sha256", "original_truncated")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    ORIGINAL_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_KEY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    FAILED_AT_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_SHA256_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    original: bytes
    original_key: bytes
    reason: str
    detail: str
    topic: str
    partition: int
    offset: int
    failed_at: _timestamp_pb2.Timestamp
    headers: _containers.ScalarMap[str, bytes]
    original_size: int
    original_sha256: str
    original_truncated: bool
    def __init__(self, original: _Optional[bytes] = ..., original_key: _Optional[bytes] = ..., reason: _Optional[str] = ..., detail: _Optional[str] = ..., topic: _Optional[str] = ..., partition: _Optional[int] = ..., offset: _Optional[int] = ..., failed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., headers: _Optional[_Mapping[str, bytes]] = ..., original_size: _Optional[int] = ..., original_sha256: _Optional[str] = ..., original_truncated: _Optional[bool] = ...) -> None: ...
