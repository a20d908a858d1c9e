"""Brands inferred from product names that carry no brand column (the Instacart names).

A brand, when a name has one, stands first and is followed by what the product is: "Smart Ones
Classic Favorites Salisbury Steak", "Taster's Choice House Blend Instant Coffee". Most names
carry none ("Organic Baby Spinach"), so a leading word run is a brand only on evidence, and a
wrong brand ("Organic", "Heavy Duty") is worse than a missing one: it poisons tagging.

The evidence, read over the whole name list:

- Open Food Facts lists the run as a brand (checked against everyday words, which OFF lists too).
- The run recurs first in several names and seldom stands mid-name, and its first word is no
  everyday adjective, product type or food word ("Graduates", "Steamfresh", "SmartBlend").
- A possessive ("Annie's", "Rao's", "Taster's Choice") names a maker, unless it is a generic
  possessive ("Children's", "Chef's", "Farmer's").
- Two words that recur first across different product types and almost always together
  ("Smart Ones", "Grill Mates", "Toll House") name a product line even where the first word alone
  is an everyday one; a pair that recurs within one type only ("Organic Baby" Spinach/Carrots)
  or whose second word is an attribute, type or food word does not.
- A run that stands mid-name only right after another brand ("Eggo Nutri-Grain",
  "Stonyfield Organic Oikos") still counts as leading its names: a second pass re-reads the lead
  ratios with those occurrences set aside.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from services.catalog.attributes import AttributeKind, AttributeVocabulary
from services.normalize import normalize_query

__all__ = ["BRAND_PRECISION_NOTE", "infer_brands"]

MIN_RECURRENCE = 3  # names a coined prefix ("SmartBlend") must lead to be a brand without OFF
MIN_RECURRENCE_PLAIN = 5  # a dictionary-looking first word ("Lucky", "Daisy") needs more products
MIN_LINE_RECURRENCE = 4  # names a two-word product line ("Grill Mates") must lead
MIN_LINE_TYPES = 2  # ... ending in at least this many different product types (last words)
LINE_COHESION = 0.6  # share of the line's second word's occurrences that follow its first word
MIN_JOINED = 2  # "Spot's" -> "Spot's Stew", "Snug" -> "Snug & Dry" only when two or more names go on so
EXTEND_RATIO = 0.75  # "Town" -> "Town House" only when most "Town" names go on that way
# A brand stands first in most names that hold it; "Hass" in "Organic Hass Avocado" does not.
LEAD_RATIO = 0.6
OFF_LEAD_RATIO = 0.4
STRICT_LEAD_RATIO = 0.85  # unconfirmed brands: the first word leads 85% of the names that hold it
LINE_LEAD_RATIO = 0.8  # product lines: the pair leads 80% of the names that hold it
MAX_BRAND_WORDS = 3
TYPE_WORD_RATIO = 0.3  # a word that ends this share of the names holding it is a product type
# Adverbs, participles and demonyms lead descriptive names ("Totally Natural", "Curried Lentils").
ADJECTIVE_ENDINGS = ("ly", "ed", "ing", "ous", "al", "ese", "ian")
HONORIFICS = frozenset({"mr", "mrs", "ms", "dr", "st", "mt"})  # "Mrs." alone is half a brand
# Read by eye on the real data (after tuning on it, so optimistic): of 100 branded names drawn at
# random (seed 11) from the 1,579 of 49,688 that get a brand, 92 carry their brand or product line;
# the 8 wrong are scent or blend names ("Apollo", "Phoenix", "Deadman's"), a cut-short brand
# ("ProActive", "Purrfect"), a descriptor ("Ultra Plush") and a remedy ("Arnica Montana").
BRAND_PRECISION_NOTE = "~92% (by eye: 92/100 sampled branded names, seed 11)"

# Words that lead many grocery names without being brands; the last lines are everyday words seen
# leading Instacart names (or listed as OFF brands) while tuning. The attribute vocabulary, words
# that mostly end names (product types) and OFF category words are added from the data.
_GENERIC_TEXT = """
    organic original classic natural naturals naturally whole fresh large small chocolate pure premium
    extra super ultra simply real gourmet traditional homestyle style deluxe special select signature
    everyday family kids baby value best good great perfect ultimate new old authentic artisan imported
    premium limited edition assorted variety mixed mini petite jumbo big little double triple single
    sweet dark white black red green yellow blue golden pink brown light lite low high reduced free no
    non fat gluten sugar dairy lactose vegan keto raw plain mild medium hot spicy cold iced soft hard
    thin thick crispy crunchy creamy smooth chunky sliced diced chopped ground roasted toasted smoked
    baked grilled frozen dried salted unsalted uncured boneless skinless seedless sparkling still
    italian french greek mexican thai indian asian american english spanish swiss belgian hawaiian
    mediterranean california tuscan country farm garden home kitchen homemade hand daily sport
    complete total advanced maximum max plus pro clear clean gentle sensitive moisturizing healthy
    lean 100 the a an all just very one two three four five with for by in of and or on to from
    organics oh wicked even genuine ten expert lucky tranquil spectacular kidz seriously restaurante
    excellence imperial nice costa terra stella match target legal vita plantation prima purity marie
    orlando robert delice ocean yakisoba hello via smart living beyond basic superior nourish platinum skinny bistro
    get general chicago boston texas oregon vermont santa extreme fiesta eco wholesome spa polar vintage
    cactus diamond vital farmer hero mama remedy cooker cookers dose filtration river lysine
    holiday seasonal easter halloween valentines christmas summer winter spring fall
    size sizes pack packs count bag box case set kit refill
"""
GENERIC_WORDS = frozenset(_GENERIC_TEXT.split())
# Possessives that name who a product is for or what it is like, not who made it.
_GENERIC_POSSESSIVE_TEXT = """
    children child men man women woman kid kids baby babies infant infants adult adults toddler
    chef chefs farmer farmers baker grandma grandpa mother mom dad father nature natures
    goat goats sheep cow cows devil devils angel world everyone shepherd fisherman athlete
    valentine it what that there here who today master king queen captain emperor brewer
    brewmaster waiter director liar pirate
    america americas italy france texas florida louisiana denmark california vermont
"""
GENERIC_POSSESSIVES = frozenset(_GENERIC_POSSESSIVE_TEXT.split())
# "Trading Company", "Foods": what follows a maker's name, so never a product line's second word.
CORPORATE_WORDS = frozenset({"company", "co", "inc", "brand", "brands", "foods", "kitchens", "farms", "bakery"})
CONNECTORS = frozenset({"&", "and", "of", "the", "de", "du", "des", "la", "le", "di", "del", "n", "'n'", "n'"})
# Digits are sizes and stages ("2nd Foods", "100% Juice"), never the start of a brand here.
_CAPITALIZED = re.compile(r"^[A-Z][\w'’.&!-]*$")
_COINED = re.compile(r"[a-z][A-Z]|[A-Za-z]-[A-Za-z]|[A-Za-z]\d|\d[A-Za-z]|!")
_POSSESSIVE = re.compile(r"^([A-Z][\w.]*?)['’]s$")  # "Annie's", "Kid’s"; not "Newman-O's"
_TRAILING = re.compile(r"[,:;\-–]+$")


def _prefixes(name: str) -> list[tuple[str, str]]:
    """(normalized key, surface form) of each prefix of the name's leading capitalized words, shortest
    first: at most MAX_BRAND_WORDS words with connectors between them, never the whole name (a brand
    is followed by what the product is)."""
    words: list[str] = []
    found: list[tuple[str, str]] = []
    for token in name.replace("®", "").replace("™", "").split()[:-1]:
        if words and token.lower() in CONNECTORS:
            words.append(token)
            continue
        stripped = _TRAILING.sub("", token)
        if not _CAPITALIZED.match(stripped):
            break
        words.append(stripped)
        key = normalize_query(" ".join(words))
        if key and (not found or found[-1][0] != key):
            found.append((key, " ".join(words)))
        if stripped != token or len(found) == MAX_BRAND_WORDS:  # "Jelly, Blackberry": a comma ends it
            break
    return found


def _coined(surface: str) -> bool:
    """ "SmartBlend", "Nutri-Grain", "Mach3", "Grands!": spellings no dictionary word has."""
    return bool(_COINED.search(surface))


def _possessive_stem(surface: str) -> str | None:
    """ "annie" for "Annie's", None for anything that is no possessive of one word."""
    match = _POSSESSIVE.match(surface)
    return normalize_query(match.group(1)) if match else None


@dataclass
class _Evidence:
    """Counts over the whole name list that every rule reads."""

    tokens: list[list[str]]
    prefixes: list[list[tuple[str, str]]]
    off_brands: set[str]
    food_words: set[str]
    occurrences: Counter[str] = field(default_factory=Counter)  # names holding the word
    first: Counter[str] = field(default_factory=Counter)  # names the word starts
    type_words: set[str] = field(default_factory=set)
    generic: frozenset[str] = frozenset()
    claims: frozenset[str] = frozenset()  # one-word claims of the attribute vocabulary ("organic", "vegan")
    starts: Counter[str] = field(default_factory=Counter)  # names each candidate prefix starts
    contains: Counter[str] = field(default_factory=Counter)  # names holding the candidate anywhere
    last_words: dict[str, set[str]] = field(default_factory=dict)  # product types a candidate leads
    surfaces: dict[str, Counter[str]] = field(default_factory=dict)

    @classmethod
    def read(
        cls, names: Sequence[str], off_brands: set[str], food_words: set[str], vocab: AttributeVocabulary
    ) -> _Evidence:
        tokens = [normalize_query(n).split() for n in names]
        ev = cls(tokens, [_prefixes(n) for n in names], off_brands, food_words)
        ev.occurrences = Counter(w for t in tokens for w in set(t))
        ev.first = Counter(t[0] for t in tokens if t)
        last = Counter(t[-1] for t in tokens if t)
        # A word that ends a good share of the names it is in names a product type ("Preserves", "Avocado").
        ev.type_words = {w for w, n in last.items() if n >= 3 and n >= TYPE_WORD_RATIO * ev.occurrences[w]}
        attribute_words = {alias for term in vocab.terms.values() for alias in term.aliases if " " not in alias}
        ev.generic = GENERIC_WORDS | attribute_words | ev.type_words
        ev.claims = frozenset(
            alias
            for term in vocab.terms.values()
            if term.kind is AttributeKind.CLAIM
            for alias in term.aliases
            if " " not in alias
        )
        surfaces: dict[str, Counter[str]] = defaultdict(Counter)
        last_words: dict[str, set[str]] = defaultdict(set)
        for found, words in zip(ev.prefixes, tokens, strict=True):
            for key, surface in found:
                surfaces[key][surface] += 1
                last_words[key].add(words[-1])
            ev.starts.update({k for k, _ in found})
        ev.surfaces, ev.last_words = dict(surfaces), dict(last_words)
        ev.contains = ev.count_anywhere(tokens)
        return ev

    def count_anywhere(self, tokens: Sequence[Sequence[str]]) -> Counter[str]:
        """Names holding each candidate prefix anywhere (as whole words)."""
        longest = max((len(k.split()) for k in self.starts), default=0)
        contains: Counter[str] = Counter()
        for words in tokens:
            grams = {" ".join(words[i : i + n]) for n in range(1, longest + 1) for i in range(len(words) - n + 1)}
            contains.update(g for g in grams if g in self.starts)
        return contains

    def plain(self, word: str) -> bool:
        """An everyday word: generic, an attribute, a product type or a food word."""
        return word in self.generic or word in self.food_words


@dataclass
class _Judge:
    """The rules, over the evidence and the current reading of how often a candidate stands mid-name."""

    ev: _Evidence
    contains: Counter[str]  # names holding the candidate, less those where it follows another brand
    leads: Counter[str]  # names a word starts, plus those where it follows another brand

    def lead_ok(self, key: str, ratio: float) -> bool:
        return self.ev.starts[key] >= ratio * self.contains[key]

    def starts_brand(self, key: str, surface: str) -> bool:
        ev, words = self.ev, key.split()
        if words[-1] in ev.type_words | HONORIFICS:
            return False
        # OFF lists everyday words too ("Deep", "Crystal"); only a distinctive spelling ("Reese's",
        # "Polly-O", "Cape Cod") or a word that is no everyday one ("Oreo", "Velveeta") may also stand
        # mid-name ("Double Stuf Oreo") almost as often as first.
        distinctive = len(words) > 1 or _coined(surface) or "'" in surface or not ev.plain(key)
        if key in ev.off_brands:  # OFF may vouch for "Special K" although "Special" is generic, never for "Sweet".
            if not self.lead_ok(key, OFF_LEAD_RATIO if distinctive else LEAD_RATIO):
                return False
            return words[0] not in ev.generic or (len(words) > 1 and words[-1] not in ev.generic and ev.starts[key] > 1)
        return self.possessive(key, surface) or self.recurring(key, surface) or self.product_line(key, surface)

    def possessive(self, key: str, surface: str) -> bool:
        """ "Annie's", "Rao's": a maker's name, once or often, unless it reads as an everyday word."""
        stem = _possessive_stem(surface)
        if stem is None or len(stem) < 2 or not stem.isascii() or stem in GENERIC_POSSESSIVES or self.ev.plain(stem):
            return False
        if self.ev.starts[key] == 1:
            # Once only: the stem must be no word the names use on its own ("Master" in "Master Blend").
            return self.ev.occurrences[stem] == 0 and self.ev.occurrences[key] == 1
        return self.lead_ok(key, LEAD_RATIO)

    def recurring(self, key: str, surface: str) -> bool:
        """A recurring first word that almost never stands mid-name and does not read like an everyday
        adjective; plain words need more products than coined spellings."""
        ev, head = self.ev, key.split()[0]
        coined = _coined(surface)
        if (len(head) <= 2 and not coined) or not self.lead_ok(key, LEAD_RATIO):  # "Sf", "EF": abbreviations
            return False
        if (stem := _possessive_stem(surface.split()[0])) is not None and stem in GENERIC_POSSESSIVES:
            return False  # "Chef's" leads many names, but names no maker
        head_leads = self.leads[head] >= STRICT_LEAD_RATIO * ev.occurrences[head]
        if coined and " " in key:  # "Nutri-Grain": the coined whole leads, whatever its parts do
            head_leads = head_leads or self.lead_ok(key, STRICT_LEAD_RATIO)
        return (
            ev.starts[key] >= (MIN_RECURRENCE if coined else MIN_RECURRENCE_PLAIN)
            and head_leads
            and not ev.plain(head)
            and (coined or not head.endswith(ADJECTIVE_ENDINGS))
        )

    def product_line(self, key: str, surface: str) -> bool:
        """Two capitalized words that recur first, across product types, and belong together: the second
        word is no everyday word and mostly follows the first ("Smart Ones", "Grill Mates")."""
        ev, words = self.ev, key.split()
        if len(words) != 2 or len(surface.split()) != 2 or words[1] in CONNECTORS:
            return False
        first, second = words
        if first in ev.claims or (len(first) > 4 and first.endswith(ADJECTIVE_ENDINGS) and not _coined(surface)):
            return False  # "Organic Promise", "Russian River": a claim or a demonym describes, it names no line
        return (
            ev.starts[key] >= MIN_LINE_RECURRENCE
            and len(ev.last_words[key]) >= MIN_LINE_TYPES
            and self.lead_ok(key, LINE_LEAD_RATIO)
            and not ev.plain(second)
            and second.isalpha()
            and not second.endswith(ADJECTIVE_ENDINGS)
            and second not in CORPORATE_WORDS
            and self.contains[key] >= LINE_COHESION * ev.occurrences[second]
        )

    def extends(self, key: str, surface: str, best: str, best_surface: str, previous: int) -> bool:
        ev = self.ev
        if key in ev.off_brands:
            return True
        # A coined word is the whole brand ("Acti-Fresh", not "Acti-Fresh Body"), and an OFF brand
        # extends only into another OFF brand ("Pepperidge Farm", not "Pepperidge Farm Goldfish").
        if best in ev.off_brands or (" " not in best_surface and _coined(best_surface)):
            return False
        new = key.split()[-1]
        if best.split()[-1] in HONORIFICS:  # "Mrs." -> "Mrs. Meyer's"
            return True
        if new in ev.generic or new in HONORIFICS:  # "Kit's Organic", "Builder's Chocolate"
            return False
        # Every product goes on the same way after a possessive or a connector: "Taster's Choice", "Snug & Dry".
        joined = best_surface.endswith(("'s", "’s")) or len(surface.split()) > len(best_surface.split()) + 1
        if joined and ev.starts[key] == previous >= MIN_JOINED:
            return True
        return new not in ev.food_words and ev.starts[key] >= max(5, EXTEND_RATIO * previous)

    def brand(self, found: list[tuple[str, str]]) -> str:
        """The normalized key of the brand the name's leading words make, or ""."""
        best, best_surface, previous, may_start = "", "", 0, True
        for key, surface in found:
            if best and not self.extends(key, surface, best, best_surface, previous):
                break
            # Past a rejected first word only OFF starts a brand ("Special K"), or a title ("Mrs. Meyer's"),
            # or a product line ("Smart Ones").
            if best or (
                self.starts_brand(key, surface)
                if may_start or key in self.ev.off_brands
                else self.product_line(key, surface)
            ):
                best, best_surface = key, surface
            else:
                may_start = key.split()[-1] in HONORIFICS
            previous = self.ev.starts[key]
        return best


def infer_brands(
    names: Sequence[str], off_brands: set[str], food_words: set[str], vocab: AttributeVocabulary
) -> list[tuple[str, bool]]:
    """For each name, its inferred brand ("" if none) and whether Open Food Facts confirms it.

    ``food_words`` (words of OFF category names) block only brands that OFF does not confirm.
    """
    ev = _Evidence.read(names, off_brands, food_words, vocab)
    judge = _Judge(ev, ev.contains, ev.first)
    keys = [judge.brand(found) for found in ev.prefixes]
    # Second pass: what follows a brand leads too ("Eggo Nutri-Grain ..." -> "Nutri-Grain Bars").
    after = [words[len(key.split()) :] if key else [] for key, words in zip(keys, ev.tokens, strict=True)]
    leads = Counter(tail[0] for tail in after if tail)
    judge = _Judge(ev, ev.contains - _leading(ev.starts, after), ev.first + leads)
    keys = [judge.brand(found) for found in ev.prefixes]
    return [(ev.surfaces[k].most_common(1)[0][0], k in off_brands) if k else ("", False) for k in keys]


def _leading(candidates: Counter[str], after: Sequence[Sequence[str]]) -> Counter[str]:
    """How many names hold each candidate right after their brand."""
    out: Counter[str] = Counter()
    for tail in after:
        for n in range(1, min(MAX_BRAND_WORDS, len(tail)) + 1):
            gram = " ".join(tail[:n])
            if gram in candidates:
                out[gram] += 1
    return out
