"""The attribute vocabulary: sizes and units, dietary and process claims, flavours and forms.

A vocabulary maps every accepted surface form (normalized) to one canonical term, so
"gluten-free", "no gluten" and "without gluten" all tag as ``gluten free``. Sizes and
percentages are patterns, not lists: "12 oz", "1.5 l", "2%". The seed lists below are
the grocery basics; a catalog import adds what its products' names and attribute
columns use, with counts.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from services.catalog.locale import CatalogLocale, catalog_locale
from services.catalog.phrases import PhraseIndex
from services.normalize import normalize_query


class AttributeKind(StrEnum):
    SIZE = "size"
    CLAIM = "claim"
    FLAVOUR = "flavour"
    FORM = "form"
    OCCASION = "occasion"  # who or what it is for: "party food", "snacks for kids"
    AUDIENCE = "audience"  # who it is for, in the catalog locale's words: "for women", "детский"
    COLOUR = "colour"
    PRICE = "price"  # "10 rs", "$5": a shopper's budget, never the product
    VARIANT = "variant"  # mined from the catalog: words that vary among products of one type ("steel", "aloe")
    OTHER = "other"  # named by a catalog's attributes column, not known to the seed lists


# canonical -> extra surface forms (the canonical form itself is always accepted).
SEED_CLAIMS: dict[str, tuple[str, ...]] = {
    "organic": ("usda organic", "certified organic"),
    "gluten free": ("no gluten", "without gluten", "gf"),
    "vegan": ("plant based vegan",),
    "vegetarian": ("veggie",),
    "plant based": (),
    "fat free": ("nonfat", "non fat", "no fat", "zero fat"),
    "reduced fat": (),
    "low fat": ("lowfat", "lite fat"),
    "ultra pasteurized": ("ultra pasteurised", "ultrapasteurized"),
    "pasteurized": (),
    "non gmo": ("no gmo", "nongmo", "gmo free", "non gmo project verified"),
    "sugar free": ("no sugar", "zero sugar", "sugarless", "without sugar"),
    "no sugar added": ("no added sugar", "no sugar added"),
    "unsweetened": (),
    "lactose free": ("no lactose",),
    "dairy free": ("non dairy", "nondairy", "no dairy"),
    "kosher": (),
    "whole grain": ("whole grains", "wholegrain", "multigrain", "multi grain"),
    "whole wheat": (),
    "grass fed": ("grassfed",),
    "cage free": (),
    "free range": (),
    "pasture raised": (),
    "low sodium": ("reduced sodium", "less sodium", "lower sodium"),
    "no salt added": ("unsalted", "salt free", "no salt"),
    "all natural": ("natural",),  # "100% natural" reads as the percentage "100%" and "natural"
    "keto": ("keto friendly",),
    "paleo": (),
    "high protein": ("protein",),
    "caffeine free": ("decaf", "decaffeinated", "no caffeine"),
    "wild caught": (),
    "antibiotic free": ("no antibiotics", "raised without antibiotics"),
    "fair trade": ("fair trade certified",),
    "light": ("lite",),
    "diet": (),
    "low carb": (),
    "sprouted": (),
    "raw": (),
    "healthy": (),
}

SEED_FLAVOURS: tuple[str, ...] = (
    "chocolate", "dark chocolate", "milk chocolate", "vanilla", "french vanilla", "strawberry", "blueberry",
    "raspberry", "cherry", "banana", "peach", "mango", "pineapple", "coconut", "lemon", "lime", "orange",
    "apple", "cinnamon", "honey", "maple", "caramel", "salted caramel", "peanut butter", "almond", "hazelnut",
    "mint", "peppermint", "coffee", "mocha", "espresso", "cookies and cream", "cookie dough", "pumpkin spice",
    "original", "plain", "unflavored", "garlic", "garlic herb", "onion", "sour cream and onion", "cheddar",
    "barbecue", "bbq", "honey mustard", "ranch", "spicy", "hot", "extra hot", "mild", "medium", "chipotle",
    "jalapeno", "buffalo", "teriyaki", "sea salt", "salt and vinegar", "black pepper", "herb", "lemon pepper",
    "smoky", "sweet", "sour", "tropical", "mixed berry", "berry", "grape", "watermelon", "pomegranate",
    "cranberry", "ginger", "matcha", "chai", "butter", "buttermilk", "sweet and salty", "red hot",
)  # fmt: skip

SEED_FORMS: tuple[str, ...] = (
    "sliced", "shredded", "grated", "diced", "chopped", "whole", "ground", "crushed", "minced", "frozen",
    "canned", "dried", "fresh", "smoked", "roasted", "toasted", "salted", "powder", "powdered", "liquid",
    "concentrate", "bars", "bites", "sticks", "cubes", "flakes", "halves", "pieces", "chunks", "strips",
    "fillets", "boneless", "skinless", "bone in", "instant", "ready to eat", "microwavable", "family size",
    "single serve", "variety pack", "multipack", "refill", "spray", "squeeze", "thin", "thick", "crunchy",
    "creamy", "chunky", "smooth", "sparkling", "still", "unscented", "scented", "fragrance free",
)  # fmt: skip

# Forms that name a kind of product on their own ("fish sticks", "bouillon cubes", "protein powder"); the other
# forms only describe one ("frozen", "sliced", "creamy") and are never a product type.
NAMING_FORMS: frozenset[str] = frozenset(
    {
        "powder", "liquid", "concentrate", "bars", "bites", "sticks", "cubes", "flakes", "halves", "pieces",
        "chunks", "strips", "fillets", "refill", "spray", "squeeze", "variety pack", "multipack",
    }
)  # fmt: skip

SEED_OCCASIONS: dict[str, tuple[str, ...]] = {
    "party": ("party size", "for parties"),
    "kids": ("for kids", "kid", "kids size", "children", "for children"),
    "birthday": (),
    "holiday": ("holidays",),
    "christmas": ("xmas",),
    "thanksgiving": (),
    "halloween": (),
    "easter": (),
    "picnic": (),
    "game day": (),
    "lunch box": ("lunchbox",),
}

# Size words: "x large zip lock", "jumbo eggs".
SEED_SIZE_WORDS: dict[str, tuple[str, ...]] = {
    "x large": ("extra large", "xl", "x lg", "xlarge"),
    "xx large": ("xxl", "extra extra large"),
    "large": ("lg", "big"),
    "medium": ("med",),
    "small": ("sm",),
    "mini": ("minis", "miniature"),
    "jumbo": (),
    "king size": (),
    "snack size": (),
    "travel size": (),
    "value pack": ("value size", "bulk"),
}

# Unit surface form -> canonical unit, for size patterns ("12 ounce" -> "12 oz").
UNIT_CANONICAL: dict[str, str] = {
    "fl oz": "fl oz", "floz": "fl oz", "oz": "oz", "ounce": "oz", "ounces": "oz",
    "lb": "lb", "lbs": "lb", "pound": "lb", "pounds": "lb", "g": "g", "gr": "g", "grams": "g", "kg": "kg",
    "mg": "mg", "ml": "ml", "cl": "cl", "l": "l", "ltr": "l", "liter": "l", "liters": "l", "litre": "l",
    "litres": "l", "gal": "gal", "gallon": "gal", "gallons": "gal", "qt": "qt", "quart": "qt", "quarts": "qt",
    "pt": "pt", "pint": "pt", "pints": "pt", "ct": "ct", "count": "ct", "pk": "pack", "pack": "pack",
    "packs": "pack", "pc": "ct", "pcs": "ct", "in": "in", "inch": "in", "inches": "in", "ft": "ft",
    "cm": "cm", "mm": "mm", "dozen": "dozen", "doz": "dozen",
    # ages on baby food and toys ("6+ months", "3 years")
    "month": "months", "months": "months", "mths": "months", "year": "years", "years": "years", "yrs": "years",
}  # fmt: skip

_NUMBER = r"\d+(?:\.\d+)?(?:/\d+)?"
_PERCENT_PATTERN = re.compile(rf"(?<![\w.])({_NUMBER})%")
_HALF_GALLON = re.compile(r"(?<!\w)half gallon(?!\w)")


def _alternatives(words: Iterable[str]) -> str:
    return "|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True))


def size_pattern(units: dict[str, str]) -> re.Pattern[str]:
    """ "12 oz", and "280г" where a script's normalization keeps the unit glued to the number."""
    return re.compile(rf"(?<![\w.])({_NUMBER}) ?({_alternatives(units)})(?![\w%])")


def price_pattern(currency: Iterable[str]) -> re.Pattern[str] | None:
    """ "10 rs", "rs 10", "$ 5" in normalized text; None for a locale without currency words."""
    words = [w for w in currency if w]
    if not words:
        return None
    either = _alternatives(words)
    return re.compile(rf"(?<![\w.])(?:({_NUMBER}) ?(?:{either})|(?:{either}) ?({_NUMBER}))(?![\w%])")


@dataclass(frozen=True, slots=True)
class AttributeMatch:
    """An attribute found in normalized text; ``start``/``end`` index that text."""

    start: int
    end: int
    text: str
    canonical: str
    kind: AttributeKind


@dataclass(slots=True)
class AttributeTerm:
    canonical: str
    kind: AttributeKind
    aliases: tuple[str, ...]  # normalized surface forms, canonical included
    product_count: int = 0


class AttributeVocabulary:
    """Known attribute terms plus size, price and percentage patterns (in the catalog locale's units and
    currency, services/catalog/locale.py), matched on normalized text."""

    def __init__(self, terms: Iterable[AttributeTerm], locale: CatalogLocale | None = None) -> None:
        self.locale = locale or catalog_locale(None)
        self.units = {**UNIT_CANONICAL, **self.locale.units}
        self._size = size_pattern(self.units)
        self._price = price_pattern(self.locale.currency)
        fractions = self.locale.fractions
        self._fraction = (
            re.compile(rf"(?<!\w)({_alternatives(fractions)}) ({_alternatives(self.units)})(?!\w)")
            if fractions
            else None
        )
        self.terms: dict[str, AttributeTerm] = {}
        self._by_alias: PhraseIndex[AttributeTerm] = PhraseIndex()
        for term in terms:
            self.add(term)

    def add(self, term: AttributeTerm) -> None:
        existing = self.terms.get(term.canonical)
        if existing is not None:
            existing.aliases = tuple(dict.fromkeys(existing.aliases + term.aliases))
            term = existing
        else:
            self.terms[term.canonical] = term
        for alias in term.aliases:
            # The first term to claim a surface form keeps it: claims before flavours before forms.
            self._by_alias.add(alias, term)

    def __contains__(self, canonical: object) -> bool:
        return canonical in self.terms

    def __len__(self) -> int:
        return len(self.terms)

    def lookup(self, text: str) -> AttributeTerm | None:
        """The term whose surface form is ``text`` (normalized first), or None."""
        return self._by_alias.get(normalize_query(text))

    def canonical_of(self, text: str) -> str | None:
        """The canonical value of an attribute surface form, patterns included, or None if unknown."""
        normalized = normalize_query(text)
        matches = self.match(normalized)
        if len(matches) == 1 and matches[0].start == 0 and matches[0].end == len(normalized):
            return matches[0].canonical
        return None

    def match(self, normalized: str, taken: list[bool] | None = None) -> list[AttributeMatch]:
        """All attributes in ``normalized`` text: size patterns first, then the longest known terms.

        Matches never overlap each other nor characters already marked in ``taken``.
        """
        if taken is None:
            taken = [False] * len(normalized)
        found: list[AttributeMatch] = []
        units, fractions = self.units, self.locale.fractions
        patterns: list[tuple[re.Pattern[str], Callable[[re.Match[str]], str], AttributeKind]] = [
            (self._size, lambda m: f"{m.group(1)} {units[m.group(2)]}", AttributeKind.SIZE),
            (_PERCENT_PATTERN, lambda m: f"{m.group(1)}%", AttributeKind.SIZE),
            (_HALF_GALLON, lambda m: "1/2 gal", AttributeKind.SIZE),
        ]
        if self._fraction is not None:
            patterns.append(
                (self._fraction, lambda m: f"{fractions[m.group(1)]} {units[m.group(2)]}", AttributeKind.SIZE)
            )
        if self._price is not None:
            patterns.append((self._price, lambda m: f"price {m.group(1) or m.group(2)}", AttributeKind.PRICE))
        for pattern, canonical, kind in patterns:
            for m in pattern.finditer(normalized):
                if not any(taken[m.start() : m.end()]):
                    taken[m.start() : m.end()] = [True] * (m.end() - m.start())
                    found.append(AttributeMatch(m.start(), m.end(), m.group(0), canonical(m), kind))
        for hit in self._by_alias.find(normalized, taken):
            found.append(AttributeMatch(hit.start, hit.end, hit.text, hit.value.canonical, hit.value.kind))
        return sorted(found, key=lambda a: a.start)

    @classmethod
    def seed(cls, locale: CatalogLocale | None = None) -> AttributeVocabulary:
        """The built-in grocery vocabulary, with the locale's audiences and colours, before any catalog is seen."""
        locale = locale or catalog_locale(None)
        terms: list[AttributeTerm] = []
        for canonical, aliases in SEED_CLAIMS.items():
            terms.append(_term(canonical, AttributeKind.CLAIM, aliases))
        for canonical, aliases in SEED_SIZE_WORDS.items():
            terms.append(_term(canonical, AttributeKind.SIZE, aliases))
        terms.extend(_term(f, AttributeKind.FLAVOUR, ()) for f in SEED_FLAVOURS)
        terms.extend(_term(f, AttributeKind.FORM, ()) for f in SEED_FORMS)
        terms.extend(_term(c, AttributeKind.OCCASION, a) for c, a in SEED_OCCASIONS.items())
        # After the seed lists: "kids" stays an occasion where the seed has it, its other forms join.
        terms.extend(_term(c, AttributeKind.AUDIENCE, a) for c, a in locale.audiences.items())
        terms.extend(_term(c, AttributeKind.COLOUR, ()) for c in locale.colours)
        return cls(terms, locale)

    @classmethod
    def build(
        cls, names: Iterable[str], declared: Iterable[Iterable[str]], locale: CatalogLocale | None = None
    ) -> AttributeVocabulary:
        """The seed vocabulary, with counts from product ``names`` and the terms the catalog
        ``declared`` in its attributes column (unknown ones become kind ``other``)."""
        vocab = cls.seed(locale)
        counts: Counter[str] = Counter()
        for name in names:
            counts.update({m.canonical for m in vocab.match(normalize_query(name))})
        for attributes in declared:
            for attribute in attributes:
                canonical = vocab.canonical_of(attribute)
                if canonical is None:
                    canonical = normalize_query(attribute)
                    if not canonical:
                        continue
                    vocab.add(_term(canonical, AttributeKind.OTHER, ()))
                counts[canonical] += 1
        for canonical, count in counts.items():
            if canonical in vocab.terms:
                vocab.terms[canonical].product_count += count
            else:  # a size or percentage pattern seen in the catalog: keep it as a term too
                kind = AttributeKind.SIZE
                vocab.add(AttributeTerm(canonical, kind, (canonical,), count))
        return vocab

    def to_json(self) -> list[dict[str, object]]:
        return [
            {
                "canonical": t.canonical,
                "kind": t.kind.value,
                "aliases": list(t.aliases),
                "products": t.product_count,
            }
            for t in sorted(self.terms.values(), key=lambda t: (t.kind.value, t.canonical))
        ]

    @classmethod
    def from_json(cls, rows: list[dict[str, object]], locale: CatalogLocale | None = None) -> AttributeVocabulary:
        terms = (
            AttributeTerm(
                str(r["canonical"]),
                AttributeKind(str(r["kind"])),
                tuple(str(a) for a in r["aliases"]),  # type: ignore[attr-defined]
                int(r["products"]),  # type: ignore[call-overload]
            )
            for r in rows
        )
        return cls(terms, locale)


def _term(canonical: str, kind: AttributeKind, aliases: Iterable[str]) -> AttributeTerm:
    forms = [normalize_query(canonical), *(normalize_query(a) for a in aliases)]
    return AttributeTerm(normalize_query(canonical), kind, tuple(dict.fromkeys(f for f in forms if f)))
