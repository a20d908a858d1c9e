"""Atomic JSON-lines files: written under a temporary name and renamed, so no reader sees half a file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from services.errors import InputError


def write_jsonl_atomic(path: Path, records: Iterable[Any]) -> int:
    """Write one JSON object per line to ``path``; returns the number of lines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    count = 0
    try:
        with os.fdopen(fd, "wb") as handle:
            for record in records:
                handle.write(orjson.dumps(record))
                handle.write(b"\n")
                count += 1
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return count


def read_json_lines(path: Path, what: str) -> Iterator[tuple[int, Any]]:
    """``(line number, decoded value)`` for every non-blank line; :class:`InputError` names the file and line.

    ``what`` says what the file is for the error message ("the query log", "the gold file").
    """
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise InputError(str(path), f"cannot read {what}: {exc.strerror or exc}") from None
    with handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield line_no, orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise InputError(str(path), f"not JSON ({exc})", row=line_no, problem="not JSON") from None
