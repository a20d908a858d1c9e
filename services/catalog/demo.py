"""The demo catalog that ships inside the package (derived from public data: see NOTICE)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def demo_files() -> tuple[Path, Path]:
    """The demo catalog CSV and its category terms JSON."""
    demo = resources.files("services") / "data" / "demo"
    return Path(str(demo / "catalog.csv")), Path(str(demo / "category_terms.json"))
