"""What answers a replay: a candidate (or baseline) configuration, parsed from one SPEC string.

A SPEC is comma-separated ``key=value`` parts; a bare value is the student::

    onnx:3                                   version 3 of the exported students, in process
    student=lexicon,cache=none               the catalog-lexicon student (qu_student version 1), no head cache
    student=onnx:3,cache=teach-1f2e,settings=thresholds.json
    served                                   (baseline only) the annotations that were served, from the archive

- ``student``: ``lexicon``, ``onnx:N`` or ``onnx:DIR`` (in process, as `qu eval` names them), ``triton`` or
  ``triton:N`` (the student Triton serves, at QU_TRITON_GRPC_URL: the default or version N), ``teacher`` (the
  catalog teacher's pipeline), or ``none`` (every miss answered by the catalog-lexicon fallback, as when
  Triton is down);
- ``cache``: a head-tag run id, read from Redis without touching the live pointer, or ``none`` (default);
- ``settings``: a JSON file of setting overrides (e.g. ``{"guardrail_min_category_similarity": 0.3}``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import orjson

from services.cache.keys import check_run_id
from services.errors import QuError

SERVED = "served"
_KEYS = ("student", "cache", "settings")


class InvalidSpec(QuError):
    """A SPEC that cannot be read; the message names the part and what is allowed."""


@dataclass(frozen=True, slots=True)
class ReplaySpec:
    student: str = "lexicon"
    cache_run: str | None = None
    settings_file: Path | None = None
    served: bool = False  # the annotations that were served: read, not computed

    @property
    def label(self) -> str:
        if self.served:
            return SERVED
        parts = [f"student={self.student}", f"cache={self.cache_run or 'none'}"]
        if self.settings_file is not None:
            parts.append(f"settings={self.settings_file.name}")
        return ",".join(parts)

    def setting_overrides(self) -> dict[str, object]:
        if self.settings_file is None:
            return {}
        try:
            data = orjson.loads(self.settings_file.read_bytes())
        except (OSError, orjson.JSONDecodeError) as err:
            raise InvalidSpec(f"settings={self.settings_file}: not a readable JSON file ({err})") from err
        if not isinstance(data, dict):
            raise InvalidSpec(f"settings={self.settings_file}: a JSON object of setting names is expected")
        return data


def parse_spec(text: str, *, what: str = "--candidate") -> ReplaySpec:
    """``text`` as a :class:`ReplaySpec`; raises :class:`InvalidSpec` naming the option and the part."""
    text = text.strip()
    if text == SERVED:
        return ReplaySpec(served=True)
    values: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            raise InvalidSpec(f"{what} {text!r}: an empty part (two commas, or a trailing one)")
        key, sep, value = part.partition("=")
        if not sep:
            key, value = "student", part
        if key not in _KEYS:
            raise InvalidSpec(f"{what} {text!r}: unknown key {key!r}; use {', '.join(_KEYS)}")
        if key in values:
            raise InvalidSpec(f"{what} {text!r}: {key} is given twice")
        if not value:
            raise InvalidSpec(f"{what} {text!r}: {key}= needs a value")
        values[key] = value
    student = values.get("student", "lexicon")
    version = student.partition(":")[2]
    if not (
        student in ("lexicon", "none", "teacher", "triton")
        or (student.startswith("onnx:") and version)
        or (student.startswith("triton:") and version.isdigit())
    ):
        raise InvalidSpec(
            f"{what} {text!r}: student={student!r}; use lexicon, onnx:N, onnx:DIR, triton, triton:N, teacher or none"
        )
    cache = values.get("cache", "none")
    if cache != "none":
        try:
            check_run_id(cache)
        except ValueError as err:
            raise InvalidSpec(f"{what} {text!r}: cache={cache!r}: {err}") from err
    settings_file = Path(values["settings"]) if "settings" in values else None
    if settings_file is not None and not settings_file.is_file():
        raise InvalidSpec(f"{what} {text!r}: settings={settings_file}: no such file")
    return ReplaySpec(student, None if cache == "none" else cache, settings_file)
