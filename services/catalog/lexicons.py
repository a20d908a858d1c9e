"""Brand and product-type lexicons built from a catalog.

Both map every accepted surface form (normalized) to one canonical entry and remember
which categories the entry's products sit in, so a tagger can say "brand Horizon
Organic, usually in dairy eggs > milk" and a guardrail can check that a tag exists.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from services.catalog.attributes import AttributeKind, AttributeMatch, AttributeVocabulary
from services.catalog.locale import CatalogLocale, number_forms
from services.catalog.model import CategoryPath, Product, format_path, parse_path
from services.catalog.phrases import PhraseHit, PhraseIndex
from services.catalog.type_inference import TypeInference, infer_product_types
from services.normalize import normalize_query

_APOSTROPHE_S = re.compile(r"(\w+)['\u2019\u02bc]s\b", re.IGNORECASE)
_CORPORATE_SUFFIXES = {"inc", "co", "company", "llc", "ltd", "corp", "corporation", "brand", "brands"}
# Words after which a product name stops naming its type: "Pasta Sauce with Basil" is a pasta sauce.
_TYPE_CUTS = re.compile(r"\b(?:with|in|for|made with|featuring)\b")
TOP_CATEGORIES = 5


def brand_aliases(brand: str) -> tuple[str, ...]:
    """Normalized surface forms under which shoppers type ``brand``.

    Covers case and punctuation (by normalization), "&"/"and", possessives ("Annie's" ->
    "annies", "annie s", "annie"), a leading "the" and corporate suffixes.
    """
    base = normalize_query(brand)
    if not base:
        return ()
    forms = [base]
    # Possessives: normalization drops the apostrophe ("annies"); shoppers also type "annie" or "annie s".
    for match in _APOSTROPHE_S.finditer(brand):
        stem = normalize_query(match.group(1))
        for variant in (stem, f"{stem} s"):
            forms.append(base.replace(f"{stem}s", variant, 1))
    # The shortening rules compose ("The Hershey Company" -> "hershey"): apply them until nothing new.
    pending = list(forms)
    while pending:
        tokens = pending.pop().split()
        shorter = []
        if "and" in tokens[1:-1] and len(tokens) > 2:
            shorter.append([t for t in tokens if t != "and"])
        if tokens[0] == "the" and len(tokens) > 1:
            shorter.append(tokens[1:])
        if tokens[-1] in _CORPORATE_SUFFIXES:
            rest = tokens[:-1]
            while rest and rest[-1] == "and":  # "mccormick and co" -> "mccormick", not "mccormick and"
                rest = rest[:-1]
            shorter.append(rest)
        for candidate in (" ".join(t) for t in shorter if t):
            if candidate not in forms:
                forms.append(candidate)
                pending.append(candidate)
    return tuple(forms)


def type_forms(term: str, locale: CatalogLocale | None = None) -> tuple[str, ...]:
    """A product type's surface forms: singular and plural (English rules, and the locale's for its last
    word: "компот" / "компоты"), and a multi-word type written as one word, as shoppers often type it
    ("icecream", "peanutbutter")."""
    forms = plural_variants(term)
    if locale is not None:
        head, _, last = term.rpartition(" ")
        prefix = f"{head} " if head else ""
        forms = tuple(dict.fromkeys(forms + tuple(prefix + w for w in number_forms(last, locale))))
    if " " in term:
        forms += tuple(f.replace(" ", "") for f in forms)
    return forms


def plural_variants(term: str) -> tuple[str, ...]:
    """The term with its last word in singular and plural ("cookies" <-> "cookie", "berries" <-> "berry")."""
    head, _, last = term.rpartition(" ")
    prefix = f"{head} " if head else ""
    words = {last}
    if last.endswith("ies") and len(last) > 4:
        words.update((last[:-3] + "y", last[:-1]))  # "berries" -> "berry", "cookies" -> "cookie"
    elif last.endswith(("ches", "shes", "xes", "sses", "oes")):
        words.add(last[:-2])
    elif last.endswith("s") and not last.endswith("ss") and len(last) > 3:
        words.add(last[:-1])
    elif last.endswith("y") and len(last) > 2 and last[-2] not in "aeiou":
        words.add(last[:-1] + "ies")
    elif last.endswith(("ch", "sh", "x", "ss")):
        words.add(last + "es")
    elif not last.endswith("s") and not last[-1:].isdigit():
        words.add(last + "s")
    return tuple(prefix + w for w in sorted(words, key=lambda w: w != last))


@dataclass(slots=True)
class LexiconEntry:
    """A brand or product type: its canonical form, surface forms and where its products sit."""

    canonical: str  # as the catalog writes it ("Ben & Jerry's", "sandwich cookies")
    key: str  # normalized canonical
    aliases: tuple[str, ...]
    product_count: int = 0
    categories: dict[CategoryPath, int] = field(default_factory=dict)

    def top_categories(self, n: int = TOP_CATEGORIES) -> list[tuple[CategoryPath, int]]:
        return sorted(self.categories.items(), key=lambda kv: (-kv[1], kv[0]))[:n]

    def to_json(self) -> dict[str, object]:
        return {
            "canonical": self.canonical,
            "key": self.key,
            "aliases": list(self.aliases),
            "products": self.product_count,
            "categories": [{"path": format_path(p), "products": n} for p, n in self.top_categories(50)],
        }

    @classmethod
    def from_json(cls, row: dict[str, object]) -> LexiconEntry:
        categories = {
            parse_path(str(c["path"])): int(c["products"])
            for c in row["categories"]  # type: ignore[attr-defined]
        }
        aliases = tuple(str(a) for a in row["aliases"])  # type: ignore[attr-defined]
        return cls(str(row["canonical"]), str(row["key"]), aliases, int(row["products"]), categories)  # type: ignore[call-overload]


class Lexicon:
    """Entries by key, with every alias indexed for longest-match lookup in normalized text."""

    def __init__(self, entries: Iterable[LexiconEntry]) -> None:
        self.entries: dict[str, LexiconEntry] = {}
        self._index: PhraseIndex[LexiconEntry] = PhraseIndex()
        # Canonical keys first, so an entry's own name always wins over another entry's alias.
        ordered = sorted(entries, key=lambda e: -e.product_count)
        for entry in ordered:
            self.entries[entry.key] = entry
            self._index.add(entry.key, entry, replace=True)
        for entry in ordered:
            for alias in entry.aliases:
                if self._index.get(alias) is None:
                    self._index.add(alias, entry)

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, text: object) -> bool:
        return isinstance(text, str) and self.lookup(text) is not None

    def lookup(self, text: str) -> LexiconEntry | None:
        """The entry ``text`` names (any alias, any case or punctuation), or None."""
        return self._index.get(normalize_query(text))

    def find(self, normalized: str, taken: list[bool] | None = None) -> list[PhraseHit[LexiconEntry]]:
        return self._index.find(normalized, taken)

    def to_json(self) -> list[dict[str, object]]:
        return [e.to_json() for e in sorted(self.entries.values(), key=lambda e: (-e.product_count, e.key))]

    @classmethod
    def from_json(cls, rows: list[dict[str, object]]) -> Lexicon:
        return cls(LexiconEntry.from_json(r) for r in rows)


# A brand's shorter form ("electric" of "Electric Co", "green" of "The Green.Company") names the brand only
# when the catalog does not use it for other things: at most this many other brands' products may carry it.
GENERIC_ALIAS_PRODUCTS = 3


@dataclass
class BrandReport:
    """What the brand column taught, and the surface forms refused and why (the import report)."""

    brands: int = 0
    aliases: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def reject(self, reason: str, alias: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < 10 and alias not in shown:
            shown.append(alias)

    def to_json(self) -> dict[str, object]:
        return {
            "brands": self.brands,
            "aliases": self.aliases,
            "rejected": dict(sorted(self.rejected.items())),
            "examples": dict(sorted(self.examples.items())),
        }


def build_brand_lexicon(
    products: Iterable[Product],
    attributes: AttributeVocabulary | None = None,
    locale: CatalogLocale | None = None,
) -> Lexicon:
    """One entry per brand; its canonical form is the spelling most products use (see :func:`learn_brands`)."""
    return learn_brands(products, attributes, locale)[0]


def learn_brands(
    products: Iterable[Product],
    attributes: AttributeVocabulary | None = None,
    locale: CatalogLocale | None = None,
) -> tuple[Lexicon, BrandReport]:
    """Brands from the brand column, each with the surface forms the catalog's evidence supports.

    The brand's own name (normalized) is always a form. A shorter or derived form (a possessive, a dropped
    "the" or "Co", the plural "s" dropped: "haldiram" for "Haldirams") is kept only when it is no function
    word of the locale, no attribute term, and not a word that other brands' products use in their names
    (``GENERIC_ALIAS_PRODUCTS``); a form two brands share names neither. A brand whose very name is an
    attribute term ("Sugar Free") is left out: in a query those words are the claim, and a brand tag there
    would be wrong far more often than right.
    """
    products = list(products)
    stopwords = locale.stopwords if locale is not None else frozenset()
    spellings: dict[str, Counter[str]] = defaultdict(Counter)
    categories: dict[str, Counter[CategoryPath]] = defaultdict(Counter)
    # normalized word -> brand key -> products whose name holds the word
    word_brands: dict[str, Counter[str]] = defaultdict(Counter)
    for product in products:
        key = normalize_query(product.brand)
        for word in set(normalize_query(product.name).split()):
            word_brands[word][key] += 1
        if not key:
            continue
        spellings[key][product.brand] += 1
        categories[key][product.category_path] += 1
    report = BrandReport()
    forms: dict[str, list[str]] = {}
    for key, counter in spellings.items():
        derived = [a for spelling in counter for a in brand_aliases(spelling)]
        if key.endswith("s") and len(key.split()[-1]) > 4:
            derived.append(key[:-1])  # "haldirams" -> "haldiram"
        kept = [key]
        for alias in dict.fromkeys(derived):
            if alias == key:
                continue
            words = alias.split()
            if all(w in stopwords for w in words) or len(alias) < 2:
                report.reject("a function word", alias)
            elif attributes is not None and attributes.lookup(alias) is not None:
                report.reject("an attribute term", alias)
            elif len(words) == 1 and sum(n for b, n in word_brands[alias].items() if b != key) > GENERIC_ALIAS_PRODUCTS:
                report.reject("a word other brands' products use", alias)
            else:
                kept.append(alias)
        forms[key] = kept
    claimed = Counter(alias for kept in forms.values() for alias in kept[1:])
    entries = []
    for key, counter in spellings.items():
        aliases = [key]
        for alias in forms[key][1:]:
            if claimed[alias] > 1 and alias not in spellings:
                report.reject("a form two brands share", alias)
            else:
                aliases.append(alias)
        if attributes is not None and attributes.lookup(key) is not None:
            report.reject("a brand named like an attribute term (left out)", key)
            continue
        canonical = counter.most_common(1)[0][0]
        entries.append(LexiconEntry(canonical, key, tuple(aliases), sum(counter.values()), dict(categories[key])))
        report.aliases += len(aliases)
    report.brands = len(entries)
    return Lexicon(entries), report


def type_phrase(normalized_name: str) -> str:
    """The part of a normalized name that can hold its type: "pasta sauce with basil" -> "pasta sauce"."""
    return _TYPE_CUTS.split(normalized_name)[0].strip() or normalized_name


def names_the_type(match: AttributeMatch, type_end: int) -> bool:
    """Whether an attribute match is really the product type.

    English product names end with their type ("Strawberry Yogurt", "Iced Coffee", "Granola
    Bars"): a flavour or form ending the type phrase is the type. Sizes ("Milk 1 Gallon") and
    claims ("Apple Honeycrisp Organic") there are still attributes.
    """
    return match.end == type_end and match.kind in (AttributeKind.FLAVOUR, AttributeKind.FORM)


def build_product_type_lexicon(
    products: list[Product],
    brands: Lexicon,
    attributes: AttributeVocabulary,
    *,
    min_support: int = 2,
    locale: CatalogLocale | None = None,
) -> tuple[Lexicon, dict[str, str]]:
    """Product types and, for each product id, the type its name was given (see
    :mod:`services.catalog.type_inference`: learnt from the agreement of a category's products, in whatever
    order the catalog's names put their words)."""
    lexicon, types, _ = learn_product_types(products, brands, attributes, min_support=min_support, locale=locale)
    return lexicon, types


def learn_product_types(
    products: list[Product],
    brands: Lexicon,
    attributes: AttributeVocabulary,
    *,
    min_support: int = 2,
    locale: CatalogLocale | None = None,
) -> tuple[Lexicon, dict[str, str], TypeInference]:
    """:func:`build_product_type_lexicon` with the inference behind it (its ``report``: what was learnt and
    rejected)."""
    market = locale or attributes.locale
    inference = infer_product_types(products, brands, attributes, market, min_support=min_support)
    by_type: dict[str, list[Product]] = defaultdict(list)
    by_id = {p.product_id: p for p in products}
    for pid, term in inference.assigned.items():
        by_type[term].append(by_id[pid])
    # Merge singular/plural spellings into the spelling with more products.
    merged: dict[str, str] = {}
    # On a tie the spelling the catalog used first (a stable sort over the products' order).
    for term in sorted(by_type, key=lambda t: -len(by_type[t])):
        if term in merged:
            continue
        for variant in plural_variants(term):
            if variant in by_type and variant not in merged:
                merged[variant] = term
    entries: dict[str, LexiconEntry] = {}

    def count(key: str, product: Product) -> None:
        entry = entries.get(key)
        if entry is None:
            entry = entries[key] = LexiconEntry(key, key, type_forms(key, market))
        entry.product_count += 1
        entry.categories[product.category_path] = entry.categories.get(product.category_path, 0) + 1

    for term, members in by_type.items():
        for product in members:
            count(merged[term], product)
    # The head word of several multi-word types is a type too ("oil" of the coconut and olive oils): a shopper
    # who types it alone means all of them. One longer type is no evidence ("half" of "half and half").
    headed: dict[str, set[str]] = defaultdict(set)
    for pid, head in inference.heads.items():
        if head != inference.assigned[pid]:
            headed[head].add(merged[inference.assigned[pid]])
    for pid, head in inference.heads.items():
        if head == inference.assigned[pid] or len(headed[head]) < 2:
            continue
        key = merged.get(head) or next((merged[v] for v in plural_variants(head) if v in merged), head)
        count(key, by_id[pid])
    types = {pid: merged[t] for pid, t in inference.assigned.items()}
    inference.report.types = len(entries)
    return Lexicon(entries.values()), types, inference
