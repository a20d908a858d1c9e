import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SearchContext(_message.Message):
    __slots__ = ("store_id", "retailer_id")
    STORE_ID_FIELD_NUMBER: _ClassVar[int]
    RETAILER_ID_FIELD_NUMBER: _ClassVar[int]
    store_id: str
    retailer_id: str
    def __init__(self, store_id: _Optional[str] = ..., retailer_id: _Optional[str] = ...) -> None: ...

class SearchEvent(_message.Message):
    __slots__ = ("event_id", "query", "user_id", "session_id", "timestamp", "locale", "context")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    LOCALE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    query: str
    user_id: str
    session_id: str
    timestamp: _timestamp_pb2.Timestamp
    locale: str
    context: SearchContext
    def __init__(self, event_id: _Optional[str] = ..., query: _Optional[str] = ..., user_id: _Optional[str] = ..., session_id: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., locale: _Optional[str] = ..., context: _Optional[_Union[SearchContext, _Mapping]] = ...) -> None: ...
