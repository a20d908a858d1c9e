"""The layout's one-way dependencies, read from the code's imports: ``streams -> services -> protos``, and
inside ``services/`` no two packages importing each other (the domain vocabulary at the bottom)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imports_of(package: str) -> dict[str, set[str]]:
    """module -> the absolute modules it imports (lazy imports inside functions included)."""
    out: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
        out[module] = names
    return out


def package_of(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_services_import_neither_streams_nor_faust() -> None:
    offending = {
        module: sorted(n for n in names if n.split(".")[0] in {"streams", "faust"})
        for module, names in imports_of("services").items()
    }
    assert {m: n for m, n in offending.items() if n} == {}


def test_no_two_packages_of_services_import_each_other() -> None:
    arrows: dict[tuple[str, str], set[str]] = defaultdict(set)
    for module, names in imports_of("services").items():
        for name in names:
            if name.startswith("services.") and package_of(name) != package_of(module):
                arrows[(package_of(module), package_of(name))].add(module)
    both_ways = sorted(
        f"{a} <-> {b} ({sorted(arrows[(a, b)])} / {sorted(arrows[(b, a)])})"
        for a, b in arrows
        if a < b and (b, a) in arrows
    )
    assert both_ways == []


def test_the_domain_vocabulary_imports_nothing_of_the_engine() -> None:
    engine = {n for n in imports_of("services")["services.domain"] if n.split(".")[0] in {"services", "streams"}}
    assert engine == set()
