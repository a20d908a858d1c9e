"""``qu conversions build LOG``: read a conversion log against the catalog, aggregate it, save it."""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from services.catalog.model import Product
from services.conversions.history import ConversionAggregator
from services.conversions.reader import ConversionLogReader, SkippedRecord
from services.conversions.store import ConversionHistory, ConversionsManifest
from services.errors import InputError

__all__ = ["ConversionsBuildReport", "build_conversions"]


@dataclass(frozen=True, slots=True)
class ConversionsBuildReport:
    source: str
    output_dir: Path
    manifest_path: Path
    records_read: int
    records_kept: int
    records_skipped: int
    queries: int
    reference_ts: datetime | None  # the newest conversion kept: scores decay back from it
    skipped: list[SkippedRecord] = field(default_factory=list)
    skipped_by_reason: dict[str, int] = field(default_factory=dict)


def build_conversions(
    log: Path,
    products: Iterable[Product],
    out_dir: Path,
    *,
    top_k: int,
    half_life_days: float,
    skip_invalid: bool,
) -> ConversionsBuildReport:
    """Build the conversion history of ``log`` and save it in ``out_dir``.

    Raises :class:`InputError` for a bad record (unless ``skip_invalid``) and when no record is
    left to build from; in both cases nothing is written and a previous history stays in place.
    """
    catalog: dict[str, Product] = {}
    for product in products:
        if product.product_id in catalog:
            raise ValueError(f"the catalog lists product_id {product.product_id!r} twice")
        catalog[product.product_id] = product
    # Checked before the log is read: a bad setting should not cost a pass over a large file.
    aggregator = ConversionAggregator(catalog, top_k=top_k, half_life_days=half_life_days)
    reader = ConversionLogReader(log, catalog, skip_invalid=skip_invalid)
    with _cyclic_gc_paused():
        for conversion in reader:
            aggregator.add(conversion)
        queries = aggregator.result()
    stats = reader.stats
    if stats.kept == 0:
        # An empty history would replace a good one with nothing; say why instead.
        reasons = "; ".join(f"{reason} x{n}" for reason, n in stats.skipped_by_reason().items())
        raise InputError(stats.source, f"no valid record among {stats.records_read} ({reasons})")
    reference = None if aggregator.newest is None else datetime.fromtimestamp(aggregator.newest, tz=UTC)
    manifest = ConversionsManifest(
        source=stats.source,
        built_at=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        reference_ts=None if reference is None else reference.isoformat().replace("+00:00", "Z"),
        top_k=top_k,
        half_life_days=float(half_life_days),
        records_read=stats.records_read,
        records_kept=stats.kept,
        records_skipped=len(stats.skipped),
    )
    manifest_path = ConversionHistory.from_queries(queries, manifest).save(out_dir)
    return ConversionsBuildReport(
        source=stats.source,
        output_dir=out_dir,
        manifest_path=manifest_path,
        records_read=stats.records_read,
        records_kept=stats.kept,
        records_skipped=len(stats.skipped),
        queries=len(queries),
        reference_ts=reference,
        skipped=stats.skipped,
        skipped_by_reason=stats.skipped_by_reason(),
    )


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Pause the cycle collector while the aggregation grows.

    It makes millions of small long-lived objects and no reference cycles, and the collector
    would walk all of them again each time the heap grows: about a third of the build time on a
    million-line log. Reference counting still frees everything; the collector resumes after.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
