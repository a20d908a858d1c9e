"""Records whose header keys are not UTF-8 reach the handler (and become dead letters) instead of stalling a partition.

Kafka header keys are strings, and aiokafka decodes them strictly while it parses a fetched batch. One
record with a key that is not UTF-8 makes every fetch of its partition raise ``UnicodeDecodeError``
inside the client, before any record of the batch is handed over: the partition stalls for good and
a worker that crashes on it crashes again after every restart (measured against tansu: ``getmany``
raised on every call and no later record was ever returned).

:func:`install` makes the worker's fetcher parse record sets through :class:`_TolerantMemoryRecords`:
batches are read by aiokafka's fast (Cython) parser as before; only when one raises that error is the
same batch parsed again by aiokafka's pure-Python parser, over a buffer whose slices decode with
``surrogateescape``. The bad key then arrives as a string holding lone surrogates, which the handler
recognises (``services.wire.check_header_keys``) and dead-letters as ``invalid_header``. Records of
the batch already handed over are not handed over twice.

This reaches into aiokafka's record classes (``aiokafka.record``, ``aiokafka.consumer.fetcher``), whose
names are private: :func:`install` checks they are there and fails at start-up, naming them, if an
aiokafka upgrade moved them. tests/integration/test_tolerant_records.py proves it against the real broker.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, SupportsIndex, overload

from aiokafka.consumer import fetcher
from aiokafka.record import default_records, memory_records

_ESCAPE = "surrogateescape"


class _EscapingBytes(bytearray):
    def decode(self, encoding: str = "utf-8", errors: str = _ESCAPE) -> str:
        return super().decode(encoding, _ESCAPE)


class _EscapingBuffer(bytearray):
    """A batch buffer whose slices decode invalid UTF-8 as lone surrogates instead of raising."""

    @overload
    def __getitem__(self, index: SupportsIndex) -> int: ...
    @overload
    def __getitem__(self, index: slice) -> bytearray: ...
    def __getitem__(self, index: SupportsIndex | slice) -> int | bytearray:
        item = super().__getitem__(index)
        return _EscapingBytes(item) if isinstance(item, bytearray) else item


class _TolerantBatch:
    """A fetched batch (v2 format) that falls back to an escaping parse on a header key that is not UTF-8."""

    def __init__(self, batch: Any, raw: memoryview) -> None:
        self._batch = batch
        self._raw = raw

    def __getattr__(self, name: str) -> Any:
        return getattr(self._batch, name)

    def __iter__(self) -> Iterator[Any]:
        next_offset = -1
        try:
            for record in self._batch:
                next_offset = record.offset + 1
                yield record
            return
        except UnicodeDecodeError:
            pass
        slow = default_records._DefaultRecordBatchPy(self._raw)
        slow._maybe_uncompress()  # the records' bytes, uncompressed, in slow._buffer
        slow._buffer = _EscapingBuffer(slow._buffer)
        for record in slow:
            if record.offset >= next_offset:
                yield record


class _TolerantMemoryRecords:
    """aiokafka's record set reader, handing out :class:`_TolerantBatch` for each v2 batch."""

    def __init__(self, data: bytes) -> None:
        self._records: Any = memory_records._MemoryRecordsPy(data)

    def size_in_bytes(self) -> int:
        return int(self._records.size_in_bytes())

    def has_next(self) -> bool:
        return bool(self._records.has_next())

    def next_batch(self) -> Any:
        raw = self._records._next_slice
        batch = self._records.next_batch()
        magic = raw[memory_records._MemoryRecordsPy.MAGIC_OFFSET] if raw is not None else 0
        return _TolerantBatch(batch, raw) if batch is not None and raw is not None and magic >= 2 else batch


def install() -> None:
    """Make aiokafka's fetcher (in this process) read record sets with :class:`_TolerantMemoryRecords`."""
    needed = {
        "aiokafka.consumer.fetcher.MemoryRecords": hasattr(fetcher, "MemoryRecords"),
        "aiokafka.record.memory_records._MemoryRecordsPy": hasattr(memory_records, "_MemoryRecordsPy"),
        "aiokafka.record.default_records._DefaultRecordBatchPy": hasattr(default_records, "_DefaultRecordBatchPy"),
    }
    missing = [name for name, present in needed.items() if not present]
    if missing:
        raise RuntimeError(
            f"aiokafka no longer has {', '.join(missing)}: services/kafka_tolerant_records.py must follow its record "
            "parsing (records with a header key that is not UTF-8 would stall their partition)"
        )
    fetcher.MemoryRecords = _TolerantMemoryRecords
