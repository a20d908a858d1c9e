"""Catalog records and the taxonomy tree built from their category paths."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

PATH_SEPARATOR = " > "

CategoryPath = tuple[str, ...]


def format_path(path: CategoryPath) -> str:
    """``("dairy eggs", "milk")`` -> ``"dairy eggs > milk"``."""
    return PATH_SEPARATOR.join(path)


def parse_path(text: str) -> CategoryPath:
    """``"dairy eggs > milk"`` -> ``("dairy eggs", "milk")``; raises ValueError on an empty level."""
    levels = tuple(level.strip() for level in text.split(">"))
    if not text.strip():
        raise ValueError("the category path is empty")
    if any(not level for level in levels):
        raise ValueError(f"the category path {text!r} has an empty level")
    return levels


@dataclass(frozen=True, slots=True)
class Product:
    product_id: str
    name: str
    brand: str  # "" when the catalog names no brand
    category_path: CategoryPath
    attributes: tuple[str, ...] = ()
    popularity: float = 0.0


@dataclass(slots=True)
class CategoryNode:
    path: CategoryPath
    children: list[str] = field(default_factory=list)
    product_count: int = 0  # products at this node or below

    @property
    def name(self) -> str:
        return self.path[-1]

    @property
    def is_leaf(self) -> bool:
        return not self.children


class Taxonomy:
    """The category tree: every prefix of every product's path is a node."""

    def __init__(self, nodes: dict[CategoryPath, CategoryNode]) -> None:
        self._nodes = nodes

    @classmethod
    def from_products(cls, products: Iterable[Product]) -> Taxonomy:
        nodes: dict[CategoryPath, CategoryNode] = {}
        for product in products:
            path = product.category_path
            for depth in range(1, len(path) + 1):
                prefix = path[:depth]
                node = nodes.get(prefix)
                if node is None:
                    node = nodes[prefix] = CategoryNode(prefix)
                    if depth > 1:
                        nodes[path[: depth - 1]].children.append(prefix[-1])
                node.product_count += 1
        return cls(nodes)

    def __contains__(self, path: object) -> bool:
        return path in self._nodes

    def __len__(self) -> int:
        return len(self._nodes)

    def __iter__(self) -> Iterator[CategoryNode]:
        return iter(self._nodes.values())

    def node(self, path: CategoryPath) -> CategoryNode:
        return self._nodes[path]

    @property
    def roots(self) -> list[CategoryNode]:
        return [n for n in self._nodes.values() if len(n.path) == 1]

    @property
    def leaves(self) -> list[CategoryNode]:
        return [n for n in self._nodes.values() if n.is_leaf]

    @property
    def depth(self) -> int:
        return max((len(p) for p in self._nodes), default=0)

    def to_json(self) -> list[dict[str, object]]:
        return [
            {"path": list(n.path), "children": sorted(n.children), "products": n.product_count}
            for n in sorted(self._nodes.values(), key=lambda n: n.path)
        ]

    @classmethod
    def from_json(cls, rows: list[dict[str, object]]) -> Taxonomy:
        nodes: dict[CategoryPath, CategoryNode] = {}
        for row in rows:
            path = tuple(str(p) for p in row["path"])  # type: ignore[attr-defined]
            children = [str(c) for c in row["children"]]  # type: ignore[attr-defined]
            nodes[path] = CategoryNode(path, children, int(row["products"]))  # type: ignore[call-overload]
        return cls(nodes)
