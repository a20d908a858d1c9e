"""What a catalog's market writes around its products: units, prices, audiences, colours, function words.

A product name carries its size, price, audience and colour in the words of its market ("10 rs", "half kg",
"for women", "280 г", "5 kom"); none of them is ever the product type, and a shopper's query uses the same
words. The catalog import masks them before it learns types, and the attribute vocabulary tags them in
queries. ``QU_CATALOG_LOCALE`` chooses the set; ``en-US`` is the engine's original vocabulary, so a catalog
imported without a locale learns what it learnt before.

The lists are the language's closed classes (units, currency, pronoun-like audience words, colours,
prepositions): they are not tuned to any one catalog's strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

LocaleName = Literal["en-US", "en-IN", "ru-RU", "sr-RS"]
DEFAULT_LOCALE: LocaleName = "en-US"


@dataclass(frozen=True)
class CatalogLocale:
    name: str
    # surface form -> canonical unit, beyond the engine's built-in units (services/catalog/attributes.py)
    units: dict[str, str] = field(default_factory=dict)
    # words and signs of the currency: "10 rs", "rs 10", "₹10"
    currency: tuple[str, ...] = ()
    # audience canonical -> surface forms ("for women", "women", "womens")
    audiences: dict[str, tuple[str, ...]] = field(default_factory=dict)
    colours: tuple[str, ...] = ()
    # Words after which a product name stops naming its type ("pasta sauce with basil", "брынза в масле").
    type_cuts: tuple[str, ...] = ()
    # Function words: never a product type, a brand alias or a mined attribute on their own.
    stopwords: frozenset[str] = frozenset()
    # Number words before a unit ("half kg" -> 0.5 kg).
    fractions: dict[str, str] = field(default_factory=dict)
    # Words by which a query names two products ("salt and pepper"); any other query names one.
    conjunctions: frozenset[str] = frozenset()
    # The language of the market's words, as pyspellchecker names its word lists ("en", "ru"), or None
    # where it has none, and as Snowball names its stemmer ("english"): a word of the language is read
    # only as a catalog word of the same stem (services/tagging/spelling_correction.py).
    language: str | None = None
    stemmer: str | None = None


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_EN_STOPWORDS = _words(
    "a an the and or of for with in on to from by at as is it its this that these those no not new all any "
    "each per plus w o x n s"
)
_EN_AUDIENCES: dict[str, tuple[str, ...]] = {
    "men": ("for men", "mens", "man", "male", "gents", "for him"),
    "women": ("for women", "womens", "woman", "ladies", "female", "for her"),
    "kids": ("for kids", "kid", "children", "childrens", "for children", "junior"),
    "boys": ("for boys", "boy"),
    "girls": ("for girls", "girl"),
    "baby": ("for baby", "babies", "infant", "infants", "toddler", "toddlers", "newborn"),
    "adults": ("for adults", "adult"),
    "unisex": (),
    "pets": ("for pets",),
}
_EN_COLOURS = (
    "black", "white", "red", "blue", "green", "yellow", "purple", "pink", "brown", "grey", "gray",
    "silver", "gold", "beige", "navy", "maroon", "violet", "ivory", "multicolour",
    "multicolor", "transparent", "clear",
)  # fmt: skip
_EN_CUTS = ("with", "in", "for", "made with", "featuring")

_EN_CONJUNCTIONS = _words("and or vs versus plus")
_RU_STOPWORDS = _words("и или в во на с со из для по от до к ко у о об при без под над the and of")
_SR_STOPWORDS = _words("i ili u na sa s od do za iz po bez pod nad kod ka o")

LOCALES: dict[str, CatalogLocale] = {
    "en-US": CatalogLocale(
        "en-US",
        currency=("$", "usd", "dollar", "dollars", "cents"),
        audiences=_EN_AUDIENCES,
        colours=_EN_COLOURS,
        type_cuts=_EN_CUTS,
        stopwords=_EN_STOPWORDS,
        conjunctions=_EN_CONJUNCTIONS,
        language="en",
        stemmer="english",
        fractions={"half": "1/2", "quarter": "1/4"},
    ),
    "en-IN": CatalogLocale(
        "en-IN",
        units={
            "gm": "g",
            "gms": "g",
            "gram": "g",
            "kilo": "kg",
            "kilos": "kg",
            "kgs": "kg",
            "kilogram": "kg",
            "kilograms": "kg",
            "ltrs": "l",
            "mtr": "m",
            "m": "m",
            "pouch": "pack",
            "sachet": "pack",
            "nos": "ct",
            "no": "ct",
            "piece": "ct",
            "pieces": "ct",
            "unit": "ct",
            "units": "ct",
        },
        currency=("rs", "rupees", "rupee", "inr", "₹"),
        audiences=_EN_AUDIENCES,
        colours=_EN_COLOURS,
        type_cuts=_EN_CUTS,
        stopwords=_EN_STOPWORDS,
        conjunctions=_EN_CONJUNCTIONS,
        language="en",
        stemmer="english",
        fractions={"half": "1/2", "quarter": "1/4", "dedh": "1.5"},
    ),
    "ru-RU": CatalogLocale(
        "ru-RU",
        units={
            "г": "g",
            "гр": "g",
            "грамм": "g",
            "кг": "kg",
            "мл": "ml",
            "л": "l",
            "литр": "l",
            "шт": "ct",
            "уп": "pack",
            "пак": "pack",
            "мг": "mg",
            "см": "cm",
            "м": "m",
        },
        currency=("руб", "р", "рублей", "₽"),
        audiences={
            "men": ("мужской", "мужские", "для мужчин", "муж"),
            "women": ("женский", "женские", "для женщин", "жен"),
            "kids": ("детский", "детские", "детская", "детское", "для детей", "дет"),
            "baby": ("для малышей", "детское питание"),
        },
        colours=(
            "черный",
            "белый",
            "красный",
            "синий",
            "зеленый",
            "желтый",
            "оранжевый",
            "розовый",
            "коричневый",
            "серый",
            "черная",
            "белая",
            "красная",
            "черное",
            "белое",
            "красное",
        ),
        type_cuts=("с", "со", "в", "во", "для", "из", "на"),
        stopwords=_RU_STOPWORDS,
        conjunctions=_words("и или либо"),
        language="ru",
        stemmer="russian",
        fractions={"пол": "1/2"},
    ),
    "sr-RS": CatalogLocale(
        "sr-RS",
        units={"kom": "ct", "gr": "g", "lit": "l", "kesa": "pack"},
        currency=("din", "rsd", "dinara"),
        audiences={
            "men": ("muski", "za muskarce", "men"),
            "women": ("zenski", "za zene", "women", "lady"),
            "kids": ("decji", "za decu", "kids", "junior"),
            "baby": ("baby", "bebi", "za bebe"),
        },
        colours=("crni", "beli", "crveni", "plavi", "zeleni", "zuti", "braon", "sivi", "roze", "black", "white"),
        type_cuts=("sa", "za", "u", "od", "bez"),
        stopwords=_SR_STOPWORDS,
        conjunctions=_words("i ili"),
        stemmer="serbian",
    ),
}


_RU_HUSHING = tuple("гкхжшчщ")


def russian_number_forms(word: str) -> tuple[str, ...]:
    """A Russian noun's nominative singular and plural (as normalized: "й" folds to "и"): "компот" <->
    "компоты", "слива" <-> "сливы", "булка" <-> "булки", "яицо" <-> "яица", "печенье" <-> "печенья". Regular
    endings only; a form that is not a word costs nothing, as nobody types it."""
    if len(word) < 3 or not all("а" <= ch <= "я" or ch == "ё" for ch in word):
        return (word,)
    forms = [word]
    stem, last = word[:-1], word[-1]
    if last == "а":
        forms.append(stem + ("и" if stem.endswith(_RU_HUSHING) else "ы"))
    elif last in "яь":
        forms.append(stem + "и")
    elif last == "о":
        forms.append(stem + "а")
    elif last == "е":
        forms.append(stem + "я")
    elif last == "ы" and len(stem) >= 3:
        forms += [stem, stem + "а"]
    elif last == "и" and len(stem) >= 3:
        forms += [stem, stem + "а", stem + "я", stem + "ь"]
    elif last not in "аеёиоуыэюя":
        forms.append(word + ("и" if word.endswith(_RU_HUSHING) else "ы"))
    return tuple(dict.fromkeys(forms))


def number_forms(word: str, locale: CatalogLocale) -> tuple[str, ...]:
    """The word's singular and plural forms in the locale's language (English rules are the lexicons' own)."""
    if locale.name == "ru-RU":
        return russian_number_forms(word)
    return (word,)


def catalog_locale(name: str | None) -> CatalogLocale:
    """The locale called ``name`` (None: the default); an unknown name is an error naming the known ones."""
    key = name or DEFAULT_LOCALE
    try:
        return LOCALES[key]
    except KeyError:
        known = ", ".join(sorted(LOCALES))
        raise ValueError(f"unknown catalog locale {key!r} (QU_CATALOG_LOCALE): known are {known}") from None
