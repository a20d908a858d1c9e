"""The conversion history on disk, and the object the engine looks queries up in.

Layout of a conversions directory::

    DIR/manifest.json                  what was built, from what, and which data file holds it
    DIR/queries-<sha256[:16]>.json     {"schema_version": 1, "queries": {KEY: ROW, ...}}

with ROW, for a normalized query KEY::

    {"conversions": 12, "last_ts": "2024-05-01T12:00:00Z",
     "categories": [{"path": ["dairy eggs", "milk"], "count": 9, "last_ts": "...", "score": 7.81}, ...],
     "brands": [{"brand": "Horizon Organic", "count": 4, "last_ts": "...", "score": 3.2}, ...]}

Times are ISO-8601 in UTC. Each file is written to a temporary file in DIR and moved into
place with ``os.replace``; the data file first, under a name of its own content, then the
manifest, which is the commit point. A save that fails at any step leaves the previous
history readable and no partial file behind, and a reader never sees half of either.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from services.atomic_files import write_bytes_atomic
from services.catalog.model import CategoryPath
from services.conversions.history import BrandCount, CategoryCount, QueryConversions
from services.errors import InputError, QuError
from services.normalize import normalize_query

__all__ = [
    "MANIFEST_FILE",
    "SCHEMA_VERSION",
    "ConversionHistory",
    "ConversionsManifest",
    "ConversionsNotFoundError",
]

SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"
_DATA_PREFIX = "queries-"
_DECODED_CACHE = 4096


class ConversionsNotFoundError(QuError):
    """No usable conversion history in a directory (none built, or built by another schema)."""


@dataclass(frozen=True, slots=True)
class ConversionsManifest:
    source: str  # the log it was built from
    built_at: str  # ISO-8601 UTC
    reference_ts: str | None  # the newest conversion: scores decay back from it (None: empty history)
    top_k: int
    half_life_days: float
    records_read: int
    records_kept: int
    records_skipped: int


class ConversionHistory:
    """Per normalized query, the converted categories and brands; built once, read many times.

    Rows are kept as decoded from disk and turned into :class:`QueryConversions` on lookup, so
    loading a large history costs one JSON parse, not an object per category. The most recent
    lookups are kept decoded: head queries come back again and again.
    """

    def __init__(self, rows: dict[str, dict[str, Any]], manifest: ConversionsManifest) -> None:
        self._rows = rows
        self.manifest = manifest
        self._decoded = functools.lru_cache(maxsize=_DECODED_CACHE)(self._decode)

    @classmethod
    def from_queries(cls, queries: Mapping[str, QueryConversions], manifest: ConversionsManifest) -> ConversionHistory:
        return cls({key: encode_query_conversions(queries[key]) for key in sorted(queries)}, manifest)

    def get(self, query: str) -> QueryConversions | None:
        """The history of ``query``, normalized first ("Ben & Jerry's" finds "ben and jerrys")."""
        return self._decoded(normalize_query(query))

    def get_normalized(self, key: str) -> QueryConversions | None:
        """The history of a key that is already :func:`normalize_query`'s output.

        For callers that hold the normalized text anyway (the tagger): normalizing costs more than
        the lookup. A key that is not normalized finds nothing.
        """
        return self._decoded(key)

    def _decode(self, key: str) -> QueryConversions | None:
        row = self._rows.get(key)
        return None if row is None else _decode(key, row)

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, query: object) -> bool:
        return isinstance(query, str) and normalize_query(query) in self._rows

    def queries(self) -> Iterator[str]:
        """The stored keys (normalized queries), in sorted order."""
        return iter(self._rows)

    def save(self, directory: Path) -> Path:
        """Write the history to ``directory`` atomically (see the module docstring); returns the manifest."""
        directory.mkdir(parents=True, exist_ok=True)
        data = orjson.dumps({"schema_version": SCHEMA_VERSION, "queries": self._rows})
        sha = hashlib.sha256(data).hexdigest()
        data_name = f"{_DATA_PREFIX}{sha[:16]}.json"
        manifest = {
            "schema_version": SCHEMA_VERSION,
            **asdict(self.manifest),
            "queries": len(self._rows),
            "data_file": data_name,
            "data_sha256": sha,
        }
        data_path = directory / data_name
        # The same content saved again has the same name: then the file is the live one, keep it.
        fresh = not data_path.exists()
        write_bytes_atomic(data_path, data)
        manifest_path = directory / MANIFEST_FILE
        try:
            write_bytes_atomic(manifest_path, orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
        except BaseException:
            if fresh:  # no manifest names it: it would only be left lying there
                data_path.unlink(missing_ok=True)
            raise
        # Only now is the old data file unreferenced. A reader that read the old manifest a moment
        # ago may still want it; load() retries once for that case.
        for old in directory.glob(f"{_DATA_PREFIX}*.json"):
            if old.name != data_name:
                old.unlink(missing_ok=True)
        return manifest_path

    @classmethod
    def load(cls, directory: Path) -> ConversionHistory:
        """Read a history saved by :meth:`save`; raises ConversionsNotFoundError if there is none."""
        try:
            return cls._load(directory)
        except FileNotFoundError:
            pass  # a save may have replaced the files between our two reads: read its manifest
        try:
            return cls._load(directory)
        except FileNotFoundError as err:
            raise ConversionsNotFoundError(
                f"the conversion history in {directory} is incomplete ({err.filename} is missing): build it again"
            ) from err

    @classmethod
    def _load(cls, directory: Path) -> ConversionHistory:
        manifest_path = directory / MANIFEST_FILE
        if not manifest_path.is_file():
            raise ConversionsNotFoundError(
                f"no conversion history in {directory}: run `qu conversions build LOG` first"
            )
        manifest = _read_json(manifest_path)
        if not isinstance(manifest, dict) or manifest.get("schema_version") != SCHEMA_VERSION:
            version = manifest.get("schema_version") if isinstance(manifest, dict) else None
            raise ConversionsNotFoundError(
                f"the conversion history in {directory} has schema version {version}, this engine reads "
                f"{SCHEMA_VERSION}: build it again"
            )
        data_name = manifest.get("data_file")
        if not (isinstance(data_name, str) and data_name.startswith(_DATA_PREFIX) and "/" not in data_name):
            raise InputError(str(manifest_path), f"bad data_file {data_name!r}", column="data_file")
        data_path = directory / data_name
        data = data_path.read_bytes()
        if hashlib.sha256(data).hexdigest() != manifest.get("data_sha256"):
            raise InputError(str(data_path), "the data file does not match the manifest's checksum: build again")
        document = _parse_json(str(data_path), data)
        rows = document.get("queries") if isinstance(document, dict) else None
        if not isinstance(rows, dict):
            raise InputError(str(data_path), "expected an object with a 'queries' object")
        try:
            fields = {name: manifest[name] for name in ConversionsManifest.__dataclass_fields__}
        except KeyError as err:
            raise InputError(str(manifest_path), f"missing field {err.args[0]!r}") from err
        return cls(rows, ConversionsManifest(**fields))


def encode_query_conversions(q: QueryConversions) -> dict[str, Any]:
    """The JSON form of one query's history, as stored and as printed by `qu conversions show`."""
    return {
        "conversions": q.conversions,
        "last_ts": _iso(q.last_ts),
        "categories": [
            {"path": list(c.path), "count": c.count, "last_ts": _iso(c.last_ts), "score": c.score} for c in q.categories
        ],
        "brands": [
            {"brand": b.brand, "count": b.count, "last_ts": _iso(b.last_ts), "score": b.score} for b in q.brands
        ],
    }


def _decode(key: str, row: dict[str, Any]) -> QueryConversions:
    categories = tuple(
        CategoryCount(_path(c["path"]), c["count"], datetime.fromisoformat(c["last_ts"]), c["score"])
        for c in row["categories"]
    )
    brands = tuple(
        BrandCount(b["brand"], b["count"], datetime.fromisoformat(b["last_ts"]), b["score"]) for b in row["brands"]
    )
    return QueryConversions(key, row["conversions"], datetime.fromisoformat(row["last_ts"]), categories, brands)


def _path(levels: list[str]) -> CategoryPath:
    return tuple(levels)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _read_json(path: Path) -> Any:
    return _parse_json(str(path), path.read_bytes())


def _parse_json(source: str, data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as err:
        raise InputError(source, f"invalid JSON: {err}") from err
