"""The queries shoppers type, composed from a catalog so that every one is labelled by construction.

The head is a ranked list of the queries a catalog makes likely (product types, aisles,
brands, brand + type, attribute + type, product names), ranked by the popularity of the
products that answer them. The tail is composed on demand from one product at a time:
specific multi-attribute queries, negations ("bread no gluten"), sizes ("x large zip
lock"), odd word orders and misspellings, so it keeps producing queries never seen before.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence

from services.catalog.artifacts import Catalog
from services.catalog.attributes import AttributeKind
from services.catalog.lexicons import plural_variants
from services.catalog.model import CategoryPath, Product
from services.normalize import normalize_query
from services.traffic.model import LabelledQuery, Part, QueryKind, Role

# Claims shoppers type as a negation, with the phrasings they use.
NEGATIONS: dict[str, tuple[str, ...]] = {
    "gluten free": ("no gluten", "without gluten"),
    "sugar free": ("no sugar", "without sugar"),
    "dairy free": ("no dairy", "non dairy"),
    "lactose free": ("no lactose", "without lactose"),
    "fat free": ("no fat", "non fat"),
    "caffeine free": ("no caffeine",),
    "no salt added": ("no salt",),
    "non gmo": ("no gmo",),
    "antibiotic free": ("no antibiotics",),
}
SIZE_WORDS = ("x large", "extra large", "large", "small", "mini", "jumbo", "family size", "value pack")
# Broad intents: a claim or form over a department or aisle ("healthy snacks", "frozen breakfast").
BROAD_MODIFIERS = ("healthy", "organic", "frozen", "gluten free", "vegan", "fresh", "low fat", "sugar free")
# Broad queries with no single category: what they retrieve is the whole catalog, by popularity.
OPEN_BROAD = (
    (Part("healthy", Role.ATTRIBUTE, "healthy"), Part("food", Role.PRODUCT, "food")),
    (Part("party", Role.ATTRIBUTE, "party"), Part("food", Role.PRODUCT, "food")),
    (Part("snacks", Role.PRODUCT, "snacks"), Part("for kids", Role.ATTRIBUTE, "kids")),
    (Part("lunch box", Role.ATTRIBUTE, "lunch box"), Part("ideas", Role.PRODUCT, "ideas")),
    (Part("dinner", Role.PRODUCT, "dinner"),),
    (Part("groceries", Role.PRODUCT, "groceries"),),
)
KEYBOARD_NEIGHBOURS = {
    "a": "sq", "b": "vn", "c": "xv", "d": "sf", "e": "wr", "f": "dg", "g": "fh", "h": "gj", "i": "uo", "j": "hk",
    "k": "jl", "l": "k", "m": "n", "n": "bm", "o": "ip", "p": "o", "q": "w", "r": "et", "s": "ad", "t": "ry",
    "u": "yi", "v": "cb", "w": "qe", "x": "zc", "y": "tu", "z": "x",
}  # fmt: skip


class QueryUniverse:
    """Head queries ranked by weight, and a composer of tail queries, for one catalog."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.products = catalog.products
        self.by_id = {p.product_id: p for p in self.products}
        self.popularity = [p.popularity + 1.0 for p in self.products]  # +1: unseen products still sell
        self._by_type: dict[str, list[Product]] = defaultdict(list)
        self._by_brand: dict[str, list[Product]] = defaultdict(list)
        self._by_category: dict[CategoryPath, list[Product]] = defaultdict(list)
        self._attributes: dict[str, list[tuple[str, AttributeKind]]] = {}
        for product in self.products:
            type_key = catalog.product_types.get(product.product_id)
            if type_key:
                self._by_type[type_key].append(product)
            brand = catalog.brands.lookup(product.brand) if product.brand else None
            if brand is not None:
                self._by_brand[brand.key].append(product)
            for depth in range(1, len(product.category_path) + 1):
                self._by_category[product.category_path[:depth]].append(product)
            self._attributes[product.product_id] = self._product_attributes(product)
        self.head = self._build_head()

    # -- what a product is -------------------------------------------------------------------------

    def _product_attributes(self, product: Product) -> list[tuple[str, AttributeKind]]:
        """The product's attributes, from its name and its declared ones, minus words of its type:
        "Banana" is a banana, not a banana-flavoured banana."""
        vocab = self.catalog.attributes
        found = [(m.canonical, m.kind) for m in vocab.match(normalize_query(product.name))]
        for declared in product.attributes:
            canonical = vocab.canonical_of(declared)
            term = vocab.terms.get(canonical or "")
            if term is not None:
                found.append((term.canonical, term.kind))
        type_words = set((self.catalog.product_types.get(product.product_id) or "").split())
        for variant in plural_variants(" ".join(type_words)) if type_words else ():
            type_words.update(variant.split())
        return [a for a in dict.fromkeys(found) if not type_words.intersection(a[0].split())]

    def type_of(self, product: Product) -> str | None:
        return self.catalog.product_types.get(product.product_id)

    def _type_part(self, type_key: str, rng: random.Random | None = None) -> Part:
        entry = self.catalog.types.entries[type_key]
        text = entry.canonical
        if rng is not None and len(entry.aliases) > 1 and rng.random() < 0.3:
            text = rng.choice(entry.aliases)
        return Part(text, Role.PRODUCT, entry.canonical)

    def _brand_part(self, product: Product, rng: random.Random | None = None) -> Part | None:
        entry = self.catalog.brands.lookup(product.brand) if product.brand else None
        if entry is None:
            return None
        text = entry.canonical.lower()
        if rng is not None and rng.random() < 0.4:
            text = rng.choice(entry.aliases)  # "ben and jerrys" as often as "ben & jerry's"
        return Part(text, Role.BRAND, entry.canonical)

    @staticmethod
    def _attribute_part(canonical: str, rng: random.Random | None = None) -> Part:
        text = canonical
        if rng is not None and " " in canonical and not canonical[0].isdigit() and rng.random() < 0.3:
            text = canonical.replace(" ", "-")  # "reduced-fat", "gluten-free"
        return Part(text, Role.ATTRIBUTE, canonical)

    def _answer(self, products: Sequence[Product]) -> tuple[tuple[str, ...], tuple[float, ...]]:
        ranked = sorted(products, key=lambda p: -p.popularity)[:200]
        return tuple(p.product_id for p in ranked), tuple(p.popularity + 1.0 for p in ranked)

    @staticmethod
    def _top_category(products: Sequence[Product]) -> CategoryPath | None:
        counts: dict[CategoryPath, float] = defaultdict(float)
        for p in products:
            counts[p.category_path] += p.popularity + 1.0
        return max(counts, key=lambda c: (counts[c], c)) if counts else None

    def _query(
        self,
        parts: list[Part],
        products: Sequence[Product],
        kind: QueryKind,
        category: CategoryPath | None = None,
    ) -> LabelledQuery:
        ids, weights = self._answer(products)
        return LabelledQuery.compose(parts, category or self._top_category(products), kind, ids, weights)

    # -- the head ----------------------------------------------------------------------------------

    def _build_head(self) -> list[LabelledQuery]:
        """Distinct head queries, most searched first (weight: popularity of what answers them)."""
        weighted: dict[str, tuple[float, LabelledQuery]] = {}

        def add(query: LabelledQuery, products: Sequence[Product], factor: float) -> None:
            key = normalize_query(query.text)
            weight = factor * sum(p.popularity + 1.0 for p in products)
            if key and (key not in weighted or weighted[key][0] < weight):
                weighted[key] = (weight, query)

        for type_key, products in self._by_type.items():
            add(self._query([self._type_part(type_key)], products, QueryKind.PRODUCT_TYPE), products, 1.0)
            attrs: dict[str, list[Product]] = defaultdict(list)
            brands: dict[str, list[Product]] = defaultdict(list)
            for p in products:
                for canonical, _ in self._attributes[p.product_id]:
                    attrs[canonical].append(p)
                if p.brand and self.catalog.brands.lookup(p.brand) is not None:
                    brands[p.brand].append(p)
            for canonical, members in attrs.items():
                parts = [self._attribute_part(canonical), self._type_part(type_key)]
                add(self._query(parts, members, QueryKind.ATTRIBUTE_TYPE), members, 0.35)
            for members in brands.values():
                brand = self._brand_part(members[0])
                if brand is not None:
                    parts = [brand, self._type_part(type_key)]
                    add(self._query(parts, members, QueryKind.BRAND_TYPE), members, 0.3)
        for products in self._by_brand.values():
            brand = self._brand_part(products[0])
            if brand is not None:
                add(self._query([brand], products, QueryKind.BRAND), products, 0.5)
        for path, products in self._by_category.items():
            name = path[-1]
            # A department is browsed more than searched; an aisle name ("yogurt") is a common search.
            factor = 0.02 if len(path) == 1 else 0.15
            add(
                self._query([Part(name, Role.PRODUCT, name)], products, QueryKind.BROAD, path),
                products,
                factor,
            )
            if len(path) == 1:
                for modifier in BROAD_MODIFIERS:
                    # "frozen snacks" only where snacks are sold frozen: the products that say so answer it.
                    having = [p for p in products if any(a == modifier for a, _ in self._attributes[p.product_id])]
                    if len(having) >= 3:
                        parts = [self._attribute_part(modifier), Part(name, Role.PRODUCT, name)]
                        add(self._query(parts, having, QueryKind.BROAD, path), having, 0.1)
        for parts_tuple in OPEN_BROAD:
            query = LabelledQuery.compose(list(parts_tuple), None, QueryKind.BROAD, *self._answer(self.products))
            add(query, self.products, 0.002)
        for product in self.products:
            add(self.name_query(product), [product], 0.2)
        return [q for _, q in sorted(weighted.values(), key=lambda wq: (-wq[0], wq[1].text))]

    def name_query(self, product: Product) -> LabelledQuery:
        """The product's name as a query, tagged as the generator reads it: brand prefix,
        attributes, and the product's own type where the name says it."""
        text = normalize_query(product.name.split(",")[0]) or normalize_query(product.name)
        taken = [False] * len(text)
        tags: list[tuple[int, int, Role, str]] = []
        brand = self.catalog.brands.lookup(product.brand) if product.brand else None
        if brand is not None:
            for alias in brand.aliases:
                if text == alias or text.startswith(alias + " "):
                    tags.append((0, len(alias), Role.BRAND, brand.canonical))
                    taken[: len(alias)] = [True] * len(alias)
                    break
        for m in self.catalog.attributes.match(text, taken):
            tags.append((m.start, m.end, Role.ATTRIBUTE, m.canonical))
        type_key = self.type_of(product)
        if type_key is not None:
            entry = self.catalog.types.entries[type_key]
            hits = [h for h in self.catalog.types.find(text, list(taken)) if h.value.key == entry.key]
            if hits:
                tags.append((hits[-1].start, hits[-1].end, Role.PRODUCT, entry.canonical))
        parts: list[Part] = []
        cursor = 0
        for start, end, role, canonical in sorted(tags):
            if cursor < start:
                parts.append(Part(text[cursor:start].strip()))
            parts.append(Part(text[start:end], role, canonical))
            cursor = end
        parts.append(Part(text[cursor:].strip()))
        parts = [p for p in parts if p.text]
        return self._query(parts, [product], QueryKind.PRODUCT_NAME, product.category_path)

    # -- the tail ----------------------------------------------------------------------------------

    def pick_product(self, rng: random.Random) -> Product:
        return rng.choices(self.products, weights=self.popularity, k=1)[0]

    def tail_query(self, rng: random.Random, product: Product | None = None) -> LabelledQuery:
        """A fresh, specific query about one product, in one of the shoppers' phrasings."""
        product = product or self.pick_product(rng)
        type_key = self.type_of(product)
        if type_key is None:
            return self._query(
                [Part(normalize_query(product.name))],
                [product],
                QueryKind.PRODUCT_NAME,
                product.category_path,
            )
        kind = rng.choices(
            (QueryKind.SPECIFIC, QueryKind.NEGATION, QueryKind.SIZE, QueryKind.BRAND_TYPE),
            weights=(0.5, 0.2, 0.15, 0.15),
        )[0]
        peers = self._by_type[type_key]
        type_part = self._type_part(type_key, rng)
        attrs = self._attributes[product.product_id]
        if kind is QueryKind.NEGATION:
            # Only claims that products of this aisle make: "bread no gluten", never "soap no lactose".
            aisle = self._by_category[product.category_path]
            claims = sorted(c for c in NEGATIONS if any(self._has_claim(p, c) for p in aisle))
            if claims:
                claim = rng.choice(claims)
                negation = Part(rng.choice(NEGATIONS[claim]), Role.ATTRIBUTE, claim)
                parts = [type_part, negation] if rng.random() < 0.6 else [negation, type_part]
                having = [p for p in peers if self._has_claim(p, claim)]
                return self._query(parts, having or peers, kind, product.category_path)
            kind = QueryKind.SPECIFIC
        if kind is QueryKind.SIZE:
            sizes = [a for a, k in attrs if k is AttributeKind.SIZE]
            size = rng.choice(sizes) if sizes and rng.random() < 0.6 else rng.choice(SIZE_WORDS)
            canonical = self.catalog.attributes.canonical_of(size) or size
            parts = [Part(size, Role.ATTRIBUTE, canonical), type_part]
            return self._query(parts, [product], kind, product.category_path)
        chosen = rng.sample(attrs, k=min(len(attrs), rng.randint(1, 3)))
        parts = [self._attribute_part(a, rng) for a, _ in chosen]
        brand = self._brand_part(product, rng)
        if kind is QueryKind.BRAND_TYPE and brand is not None:
            parts = [brand, *parts[:1]]
        elif kind is QueryKind.BRAND_TYPE:
            kind = QueryKind.SPECIFIC
        if kind is QueryKind.SPECIFIC and brand is not None and rng.random() < 0.3:
            parts.insert(0, brand)
        if not parts:
            return self._query([self._type_part(type_key, rng)], peers, QueryKind.PRODUCT_TYPE)
        # Shoppers put qualifiers after the type too: "milk organic 2%".
        parts = [type_part, *parts] if rng.random() < 0.15 else [*parts, type_part]
        return self._query(parts, [product], kind, product.category_path)

    def _has_claim(self, product: Product, claim: str) -> bool:
        return (claim, AttributeKind.CLAIM) in self._attributes[product.product_id]

    def refine(self, previous: LabelledQuery, rng: random.Random) -> LabelledQuery:
        """A follow-up search in the same session: narrow the previous query to one of its products."""
        if not previous.products:
            return self.tail_query(rng)
        pid = rng.choices(previous.products, weights=previous.weights, k=1)[0]
        return self.tail_query(rng, self.by_id[pid])

    @staticmethod
    def misspell(query: LabelledQuery, rng: random.Random) -> LabelledQuery:
        """One typing error in one word of a tagged span; the labels keep the canonical values."""
        candidates = [(i, s) for i, s in enumerate(query.spans) if len(s.text) >= 4 and s.text.isascii()]
        if not candidates:
            return query
        index, span = rng.choice(candidates)
        word = span.text
        pos = rng.randrange(1, len(word) - 1)
        edit = rng.choice(("drop", "swap", "double", "neighbour"))
        if edit == "drop":
            typo = word[:pos] + word[pos + 1 :]
        elif edit == "swap":
            typo = word[: pos - 1] + word[pos] + word[pos - 1] + word[pos + 1 :]
        elif edit == "double":
            typo = word[:pos] + word[pos] + word[pos:]
        else:
            near = KEYBOARD_NEIGHBOURS.get(word[pos].lower(), word[pos])
            typo = word[:pos] + rng.choice(near) + word[pos + 1 :]
        if typo == word:
            return query
        parts = []
        cursor = 0
        for i, s in enumerate(query.spans):
            if cursor < s.start:
                parts.append(Part(query.text[cursor : s.start].strip()))
            parts.append(Part(typo if i == index else s.text, s.role, s.canonical))
            cursor = s.end
        if cursor < len(query.text):
            parts.append(Part(query.text[cursor:].strip()))
        parts = [p for p in parts if p.text]
        return LabelledQuery.compose(parts, query.category, QueryKind.MISSPELLING, query.products, query.weights)
