"""What the head-tag refresher lets into Redis from ``qu.head-tags.v1``: catalog values only.

The topic is a trust boundary: whoever can write it (a teacher with another catalog, a bug, anyone with
producer rights) must not be able to put an out-of-catalog value into the cache that every head query
is answered from. Each entry goes through the same catalog binding as every real-time answer
(:mod:`services.guardrails.binding`): a tag that names no catalog entry, a span that does not say it,
a category outside the taxonomy, a score that is not a finite number in [0, 1], a rewrite with a
control, bidi or zero-width character are dropped, and the catalog's canonical replaces the record's.
The entry is written with what is left, so one bad item does not cost the run its completeness; a
record whose teacher version (published as every hit's ``model_version``) hides characters is refused.

The binding only: the quality thresholds (similarities, limits) are the teacher's and the reader's
business, and the reader checks every hit again with them.
"""

from __future__ import annotations

from dataclasses import dataclass

from qu.v1 import head_tags_pb2

from services.cache.keys import from_head_tags, to_head_tags
from services.catalog.artifacts import Catalog
from services.domain import GuardrailDecision
from services.guardrails.binding import CatalogBinding, hidden_character

__all__ = ["Admitted", "HeadTagAdmission"]


@dataclass(frozen=True, slots=True)
class Admitted:
    """One entry's fate: the record to write (None when refused whole), and why items were dropped or it was refused."""

    record: head_tags_pb2.HeadTags | None
    dropped: tuple[GuardrailDecision, ...] = ()
    refused: str = ""
    rebound: bool = False  # the written record differs from the one read (items dropped or canonicals replaced)


class HeadTagAdmission:
    """Binds each run entry to ``catalog`` before it is written (see the module docstring)."""

    def __init__(self, catalog: Catalog) -> None:
        self._binding = CatalogBinding(catalog)

    def admit(self, record: head_tags_pb2.HeadTags) -> Admitted:
        """The entry as it may be written. ``record`` must have passed :func:`services.cache.keys.entry_problem`."""
        hidden = hidden_character(record.teacher_version)
        if hidden is not None:
            return Admitted(None, refused=f"teacher_version contains the invisible character {hidden}")
        cached = from_head_tags(record)
        bound, decisions = self._binding.bind(cached.understanding, cached.normalized_query)
        if not decisions and bound == cached.understanding:
            return Admitted(record)  # the common case: written byte for byte as the teacher published it
        rebuilt = to_head_tags(
            cached.normalized_query,
            bound,
            teacher_version=record.teacher_version,
            run_id=record.run_id,
            schema_version=record.schema_version,
            guardrails=cached.guardrails,
        )
        if record.HasField("created_at"):
            rebuilt.created_at.CopyFrom(record.created_at)
        return Admitted(rebuilt, tuple(decisions), rebound=True)
