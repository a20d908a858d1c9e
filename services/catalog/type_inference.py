"""Product types learnt from a catalog's own evidence, whatever its naming convention.

A product's type is not "the last words of its name": that holds for "Organic Strawberry Yogurt" but not for
"Sauce - Sweet & Sour", "Брынза умалат в масле 280г" or "Cokolada white lemon Ritter sport 100g". What every
convention shares is that **the products of one category keep naming the same thing**, while the rest of a
name (brand, variant, size, audience) changes from product to product. So:

1. **Structure.** A name is cut at its separators (" - ", "|", ",", ";", brackets, and "/" between words,
   which joins two languages as in "Cow Ghee/Tuppa"); the first part that names anything is the head (the
   rest are variants: "Sweet & Sour"). The head is cut again at the locale's type-cut words ("with", "в",
   "za"). Brands (the brand lexicon), attributes (sizes, prices, claims, audiences, colours: the
   vocabulary), numbers and function words are masked; what is left are runs of words, and every 1-3 word
   phrase inside a run is a candidate.
2. **Agreement in the category.** A candidate scores by the share of its leaf category's products that name
   it, times how specific it is to few categories (an inverse document frequency over leaf categories): a
   word every category uses ("new", "pack", a colour that escaped the list) scores low wherever it is.
3. **The catalog's own word order.** The first pass picks each product's best word; where most products'
   best word stands first in the head (type-first: Russian, Serbian) or last (type-last: English), the
   second pass favours that position, which settles the names whose words tie.
4. **Multi-word types.** A phrase of 2-3 words is a type when at least ``min_support`` products name it and
   it is cohesive: its products are a fair share (``MIN_COHESION``) of those naming its rarest word. The
   product then gets the longest accepted phrase around its best word ("coconut oil", not "oil";
   "strawberry yogurt" stays "yogurt" with a flavour).

A type needs ``min_support`` products (a phrase only one product uses names that product, not a kind of
product); a product whose words are all unique gets no type and is counted as such in the report.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from services.catalog.attributes import NAMING_FORMS, AttributeKind, AttributeVocabulary
from services.catalog.locale import CatalogLocale
from services.catalog.model import CategoryPath, Product
from services.normalize import normalize_query

MAX_TYPE_WORDS = 3
MIN_COHESION = 0.1
# How much the catalog's dominant word position multiplies a candidate's score in the second pass.
POSITION_WEIGHT = 0.5
# The share of products whose best word is first (or last) above which the catalog is type-first (-last).
CONVENTION_SHARE = 0.6
# The kinds of attribute that are never a product type, so they are masked before types are learnt. Flavours
# and naming forms stay ("banana", "granola bars" name products too: the category's agreement decides);
# descriptive forms ("frozen", "sliced") are masked with these.
_MASKED_KINDS = frozenset(
    {
        AttributeKind.SIZE,
        AttributeKind.CLAIM,
        AttributeKind.AUDIENCE,
        AttributeKind.COLOUR,
        AttributeKind.PRICE,
        AttributeKind.OCCASION,
    }
)
_SEPARATORS = re.compile(r"\s+[-\u2013\u2014|]\s+|[|,;()\[\]{}]")
# "/" between two words of two letters or more: "Cow Ghee/Tuppa"; not "1/2", "16/1", "w/o", "ст/б".
_SLASH = re.compile(r"(?<=[^\W\d_]{2})\s*/\s*(?=[^\W\d_]{2})")
_WORD = re.compile(r"\S+")


class PhraseFinder(Protocol):
    """What masks a catalog's brands in a name (services.catalog.lexicons.Lexicon.find)."""

    def find(self, normalized: str, taken: list[bool] | None = None) -> list[Any]: ...


@dataclass(frozen=True, slots=True)
class NameParts:
    """A name's head (where its type is) as normalized text, and the candidate runs of words in it."""

    head: str
    runs: tuple[tuple[str, ...], ...]  # words left after masking, in order; a masked word ends a run


def head_segments(name: str) -> list[str]:
    """The name's parts at its separators, in order ("Sauce - Sweet & Sour" -> ["Sauce", "Sweet & Sour"])."""
    return [part.strip() for part in _SEPARATORS.split(_SLASH.sub(" | ", name)) if part and part.strip()]


def name_parts(
    product: Product,
    brands: PhraseFinder | None,
    attributes: AttributeVocabulary,
    locale: CatalogLocale,
) -> NameParts:
    """The first part of the name that holds a word no brand, attribute or function word claims."""
    for segment in head_segments(product.name):
        text = normalize_query(segment)
        text = _cut(text, locale)
        if not text:
            continue
        runs = _runs(text, brands, attributes, locale)
        if runs:
            return NameParts(text, tuple(runs))
    return NameParts("", ())


def _cut(text: str, locale: CatalogLocale) -> str:
    """The text before the first type-cut word that is not its first word ("pasta sauce with basil")."""
    words = text.split()
    for i, word in enumerate(words[1:], start=1):
        if word in locale.type_cuts or " ".join(words[i : i + 2]) in locale.type_cuts:
            return " ".join(words[:i])
    return text


def _runs(
    text: str, brands: PhraseFinder | None, attributes: AttributeVocabulary, locale: CatalogLocale
) -> list[tuple[str, ...]]:
    taken = [False] * len(text)
    if brands is not None:
        brands.find(text, taken)  # marks the brand's characters
    for match in attributes.match(text, [*taken]):
        descriptive = match.kind is AttributeKind.FORM and match.canonical not in NAMING_FORMS
        if match.kind in _MASKED_KINDS or descriptive:
            taken[match.start : match.end] = [True] * (match.end - match.start)
    runs: list[list[str]] = [[]]
    for word_match in _WORD.finditer(text):
        word = word_match.group(0)
        masked = any(taken[word_match.start() : word_match.end()])
        if masked or not any(ch.isalpha() for ch in word) or (len(word) < 2 and word not in locale.stopwords):
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append(word)
    # A function word inside a run joins ("half and half"); at its ends it names nothing.
    out = []
    for run in runs:
        while run and run[0] in locale.stopwords:
            run.pop(0)
        while run and run[-1] in locale.stopwords:
            run.pop()
        if run:
            out.append(tuple(run))
    return out


def _phrases(runs: Sequence[tuple[str, ...]], phrase_ok: Callable[[tuple[str, ...]], bool]) -> dict[str, str]:
    """Folded phrase -> the phrase as this name writes it, for every 1-3 word phrase of the runs that
    ``phrase_ok`` allows."""
    out: dict[str, str] = {}
    for run in runs:
        for n in range(1, min(MAX_TYPE_WORDS, len(run)) + 1):
            for i in range(len(run) - n + 1):
                words = run[i : i + n]
                if not phrase_ok(words):
                    continue
                out.setdefault(" ".join(fold(w) for w in words), " ".join(words))
    return out


def fold(word: str) -> str:
    """One key for a word's singular and plural ("apples", "apple"; "berries", "berry"); English rules,
    harmless elsewhere (a Cyrillic or Serbian word rarely ends so, and then only its count is shared)."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("ches", "shes", "xes", "sses", "oes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


@dataclass
class TypeReport:
    """What the catalog taught about product types, and what it did not accept and why (the import report)."""

    convention: str = "mixed"  # "type-first", "type-last" or "mixed"
    first_share: float = 0.0  # share of products whose best word stands first in the head
    types: int = 0
    multi_word_types: int = 0
    typed_products: int = 0
    untyped_products: int = 0  # every word of the name masked (brand, attributes, numbers)
    lone_product_types: int = 0  # products typed by a word no other product shares (the convention's end word)
    rejected: dict[str, int] = field(default_factory=dict)  # reason -> candidate phrases
    examples: dict[str, list[str]] = field(default_factory=dict)  # reason or "learnt" -> a few phrases

    def to_json(self) -> dict[str, object]:
        return {
            "convention": self.convention,
            "first_share": round(self.first_share, 3),
            "types": self.types,
            "multi_word_types": self.multi_word_types,
            "typed_products": self.typed_products,
            "untyped_products": self.untyped_products,
            "lone_product_types": self.lone_product_types,
            "rejected": dict(sorted(self.rejected.items())),
            "examples": {k: v[:10] for k, v in sorted(self.examples.items())},
        }


@dataclass
class TypeInference:
    """Each product's type (normalized phrase), the single word that decided it (its head: "oil" of "coconut
    oil", itself a broader type a shopper types alone), the runs of candidate words its name was read into
    (what :func:`mine_variant_words` reads again), and the report."""

    assigned: dict[str, str]
    heads: dict[str, str]
    runs: dict[str, tuple[tuple[str, ...], ...]]
    report: TypeReport


def infer_product_types(
    products: Sequence[Product],
    brands: PhraseFinder | None,
    attributes: AttributeVocabulary,
    locale: CatalogLocale,
    *,
    min_support: int = 2,
) -> TypeInference:
    """Every product's type by agreement within its leaf category (see the module docstring)."""

    def naming_attribute(text: str) -> bool:
        term = attributes.lookup(text)
        return term is not None and term.kind in (AttributeKind.FLAVOUR, AttributeKind.FORM)

    def phrase_ok(words: tuple[str, ...]) -> bool:
        """A type neither opens nor closes on a function word."""
        return words[0] not in locale.stopwords and words[-1] not in locale.stopwords

    def flavoured(key: str, accepted: set[str]) -> bool:
        """ "chocolate sandwich cookies" is sandwich cookies in chocolate: a phrase that opens on a flavour or
        form is no type of its own where the rest of it is one (but "coconut oil" is: "oil" is one word)."""
        first, _, rest = key.partition(" ")
        return " " in rest and rest in accepted and naming_attribute(first) and not naming_attribute(key)

    parts = {p.product_id: name_parts(p, brands, attributes, locale) for p in products}
    candidates = {pid: _phrases(np.runs, phrase_ok) for pid, np in parts.items()}
    support: Counter[str] = Counter(c for cands in candidates.values() for c in cands)
    in_category: dict[CategoryPath, Counter[str]] = defaultdict(Counter)
    category_size: Counter[CategoryPath] = Counter()
    for product in products:
        category_size[product.category_path] += 1
        in_category[product.category_path].update(candidates[product.product_id].keys())
    categories_of: Counter[str] = Counter(phrase for counts in in_category.values() for phrase in counts)
    leaves = max(1, len(in_category))

    def score(key: str, category: CategoryPath) -> float:
        share = in_category[category][key] / category_size[category]
        return share * math.log(1.0 + leaves / categories_of[key])

    def words_of(product: Product) -> list[str]:
        return [w for run in parts[product.product_id].runs for w in run]

    def best_word(product: Product, position_bias: float | None, floor: int) -> tuple[str, float] | None:
        """The product's best single word (folded key) and its relative position in the head."""
        words = words_of(product)
        best: tuple[float, int, str] | None = None
        for index, word in enumerate(words):
            key = fold(word)
            if key not in candidates[product.product_id] or support[key] < floor:
                continue
            value = score(key, product.category_path)
            if position_bias is not None and len(words) > 1:
                closeness = 1.0 - abs(index / (len(words) - 1) - position_bias)
                value *= 1.0 + POSITION_WEIGHT * closeness
            # Ties go to the later word, as in English names; the position bias settles them in the others.
            ranked = (value, index, key)
            if best is None or ranked > best:
                best = ranked
        if best is None:
            return None
        return best[2], best[1] / (len(words) - 1) if len(words) > 1 else 0.5

    # Pass 1: the best word by category agreement alone; where it stands tells the catalog's convention.
    positions = []
    for product in products:
        found = best_word(product, None, min_support)
        if found is not None and len(words_of(product)) > 1:
            positions.append(found[1])
    report = TypeReport()
    bias: float | None = None
    if positions:
        report.first_share = sum(1 for p in positions if p == 0.0) / len(positions)
        last_share = sum(1 for p in positions if p == 1.0) / len(positions)
        if report.first_share >= CONVENTION_SHARE:
            report.convention, bias = "type-first", 0.0
        elif last_share >= CONVENTION_SHARE:
            report.convention, bias = "type-last", 1.0

    # Multi-word phrases that are types of their own: enough products, and cohesive.
    accepted_phrases: set[str] = set()
    rejected: Counter[str] = Counter()
    examples: dict[str, list[str]] = defaultdict(list)
    for key, count in support.items():
        words = key.split()
        if len(words) == 1:
            continue
        if count < min_support:
            rejected["multi-word phrase named by too few products"] += 1
            continue
        cohesion = count / min(support[w] for w in words if support[w])
        if cohesion < MIN_COHESION:
            rejected["multi-word phrase not cohesive (its words mostly stand apart)"] += 1
            if len(examples["not cohesive"]) < 10 and count >= 5:
                examples["not cohesive"].append(key)
            continue
        accepted_phrases.add(key)

    assigned: dict[str, str] = {}
    heads: dict[str, str] = {}
    fallback = 0
    end = 0.0 if bias == 0.0 else 1.0  # where a lone product's type stands: the convention's end, else the last
    for product in products:
        found = best_word(product, bias, min_support)
        if found is None:
            # No word shared with another product: the word at the convention's end names it, alone.
            found = best_word(product, end, 1)
            if found is None:
                report.untyped_products += 1
                continue
            fallback += 1
        word = found[0]
        choice = word
        for run in parts[product.product_id].runs:
            keys = [fold(w) for w in run]
            for n in range(MAX_TYPE_WORDS, 1, -1):
                for i in range(len(run) - n + 1):
                    phrase = " ".join(keys[i : i + n])
                    if (
                        word in keys[i : i + n]
                        and phrase in accepted_phrases
                        and phrase in candidates[product.product_id]
                        and n > len(choice.split())
                        and not flavoured(phrase, accepted_phrases)
                    ):
                        choice = phrase
        assigned[product.product_id] = candidates[product.product_id][choice]
        heads[product.product_id] = candidates[product.product_id][word]
    used = Counter(assigned.values())
    rejected["word named by one product only"] = sum(1 for k, c in support.items() if " " not in k and c < 2)
    used_keys = {" ".join(fold(w) for w in t.split()) for t in used}
    losers = [k for k in support if " " not in k and support[k] >= min_support and k not in used_keys]
    rejected["word never the best of its products (a variant, brand or size word)"] = len(losers)
    examples["variant words"] = sorted(losers, key=lambda k: -support[k])[:10]
    examples["learnt"] = [t for t, _ in used.most_common(10)]
    report.types = len(used)
    report.multi_word_types = sum(1 for t in used if " " in t)
    report.typed_products = len(assigned)
    report.lone_product_types = fallback
    report.rejected = dict(rejected)
    report.examples = dict(examples)
    return TypeInference(assigned, heads, {pid: np.runs for pid, np in parts.items()}, report)


# A word is a variant of its products' types ("steel", "aloe", "winter") when it qualifies this many
# different types, in this many products, and is no product type itself.
VARIANT_MIN_TYPES = 3
VARIANT_MIN_PRODUCTS = 5


@dataclass
class VariantReport:
    """The attribute words mined from the catalog: what varies among the products of one type."""

    mined: int = 0
    examples: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {"mined": self.mined, "examples": self.examples[:15]}


def mine_variant_words(
    runs: dict[str, tuple[tuple[str, ...], ...]],
    types: dict[str, str],
    known_type: Callable[[str], bool],
    attributes: AttributeVocabulary,
    locale: CatalogLocale,
) -> tuple[list[str], VariantReport]:
    """Words that qualify many product types across a catalog's names and are no type themselves (``known_type``:
    the product-type lexicon, any spelling): the colours, materials, scents and styles of this market that no
    list names ("steel", "aloe", "casual"). "tomato" of "tomato sauce" stays a product word. ``runs`` are the
    names as type inference read them (:attr:`TypeInference.runs`), ``types`` each product's type."""
    qualifies: dict[str, set[str]] = defaultdict(set)
    holders: Counter[str] = Counter()
    for pid, own in types.items():
        own_words = set(own.split())
        for run in runs[pid]:
            for word in set(run) - own_words:
                if word in locale.stopwords or len(word) < 3 or attributes.lookup(word) is not None:
                    continue
                qualifies[word].add(own)
                holders[word] += 1
    mined = []
    for word, qualified in qualifies.items():
        if len(qualified) < VARIANT_MIN_TYPES or holders[word] < VARIANT_MIN_PRODUCTS:
            continue
        if known_type(word):
            continue
        mined.append(word)
    mined.sort(key=lambda w: -holders[w])
    return mined, VariantReport(len(mined), mined[:15])
