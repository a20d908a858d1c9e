"""Query normalization: the one function that turns any text into a lookup key.

Every place a query becomes a key (the head-tag cache, conversion history, lexicons,
labels) goes through :func:`normalize_query`, so "Ben & Jerry's 12oz" typed by a shopper
and "ben and jerrys 12 oz" stored by the teacher meet on the same key.

Tagging works on the normalized text but must report spans as offsets into the text
the shopper typed; :func:`normalize_with_offsets` keeps, for every normalized
character, the index of the original character it came from.
"""

from __future__ import annotations

import functools
import re
import sys
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["UNITS", "NormalizedText", "normalize_query", "normalize_with_offsets"]

# Units that are split from a number written against them ("12oz" -> "12 oz").
# Only known units: splitting every digit/letter boundary would break brands like "v8" or "7up".
UNITS: tuple[str, ...] = (
    "fl oz", "floz", "oz", "ounce", "ounces", "lbs", "lb", "pound", "pounds", "kg", "mg", "g", "gr",
    "grams", "ml", "cl", "l", "ltr", "liter", "liters", "litre", "litres", "gal", "gallon", "gallons",
    "qt", "quart", "quarts", "pt", "pint", "pints", "ct", "count", "pk", "pack", "packs", "pc", "pcs",
    "in", "inch", "inches", "ft", "cm", "mm", "dozen", "doz", "x",
)  # fmt: skip

_APOSTROPHES = "'\u2018\u2019\u02bc`\u00b4"
_NUMBER = r"\d+(?:[.,/]\d+)?"
_UNIT_GLUED = re.compile(
    rf"(?<![a-z0-9])({_NUMBER})({'|'.join(re.escape(u) for u in sorted(UNITS, key=len, reverse=True))})(?![a-z0-9])"
)
_PERCENT_APART = re.compile(rf"({_NUMBER})\s+%")
_PERCENT_GLUED = re.compile(r"(?<=\d)%(?=[a-z])")
# Punctuation that only separates words. Kept: "%" (part of "2%"), "." "," and "/" between digits.
_SEPARATOR = re.compile(r"[^\w%.,/]|_|(?<!\d)[.,/]|[.,/](?!\d)")
_SPACES = re.compile(r"\s+")
_AMPERSAND = re.compile(r"&")


@dataclass(frozen=True, slots=True)
class NormalizedText:
    """A normalized string and, for each of its characters, the index in the original."""

    original: str
    text: str
    offsets: tuple[int, ...]

    def to_original(self, start: int, end: int) -> tuple[int, int]:
        """Map a half-open span of the normalized text to a half-open span of the original."""
        if not 0 <= start < end <= len(self.text):
            raise ValueError(f"span [{start}, {end}) is outside the normalized text {self.text!r}")
        first = self.offsets[start]
        last = self.offsets[end - 1]
        # Combining marks after the last character belong to it ("e" + U+0301 is one letter).
        stop = last + 1
        while stop < len(self.original) and unicodedata.category(self.original[stop]) == "Mn":
            stop += 1
        return first, stop


class _Builder:
    """A string with per-character source offsets that regex rewrites keep aligned."""

    def __init__(self, chars: list[str], offsets: list[int]) -> None:
        self.chars = chars
        self.offsets = offsets

    @property
    def text(self) -> str:
        return "".join(self.chars)

    def sub(self, pattern: re.Pattern[str], replace: Callable[[re.Match[str]], str]) -> None:
        text = self.text
        chars: list[str] = []
        offsets: list[int] = []
        pos = 0
        for match in pattern.finditer(text):
            chars.extend(self.chars[pos : match.start()])
            offsets.extend(self.offsets[pos : match.start()])
            chars_new, offsets_new = _align(match, replace(match), self.offsets)
            chars.extend(chars_new)
            offsets.extend(offsets_new)
            pos = match.end()
        chars.extend(self.chars[pos:])
        offsets.extend(self.offsets[pos:])
        self.chars, self.offsets = chars, offsets


def _align(match: re.Match[str], new: str, offsets: list[int]) -> tuple[list[str], list[int]]:
    """Offsets for a replacement: a kept character keeps its source ("12oz" -> "12 oz"),
    an inserted one points at the character it stands in for ("&" -> " and ")."""
    old = match.group(0)
    source = offsets[match.start() : match.end()]
    out: list[int] = []
    j = 0
    for ch in new:
        k = old.find(ch, j)
        if k >= 0:
            out.append(source[k])
            j = k + 1
        else:
            out.append(source[min(j, len(source) - 1)])
    return list(new), out


# Per character, not per query: a query the memo below has not seen (a miss, the tail) is still made of
# characters seen a million times, and three unicodedata calls per character were most of its cost.
@functools.lru_cache(maxsize=8192)
def _fold_char(ch: str) -> str:
    """Unicode compatibility form, case-folded, accents dropped.

    Control characters and line separators become spaces (they separate words); invisible
    format characters (zero-width space, soft hyphen, joiners) and apostrophes vanish.
    """
    category = unicodedata.category(ch)
    if category in ("Cc", "Zl", "Zp"):
        return " "
    if category == "Cf" or ch in _APOSTROPHES:
        return ""
    # "½" is "1⁄2" in compatibility form; the fraction slash is a plain slash inside a number.
    folded = unicodedata.normalize("NFKC", ch).casefold().replace("\u2044", "/")
    decomposed = unicodedata.normalize("NFD", folded)
    return "".join(c for c in decomposed if unicodedata.category(c) != "Mn")


# Queries repeat (a Zipf head: the top 1,000 make ~60% of searches) and every event is normalized on the
# real-time path, so results are memoized; they are immutable (a frozen dataclass of str and tuple), so a
# shared result is safe. A typical entry is a few hundred bytes: 16k entries are a few MiB. The entry count
# alone does not bound memory: NFKC makes some characters 18 (U+FDFA), so one query of 511 characters is
# ~100 KB here and 16k distinct ones ~1.6 GB. The byte budget holds the whole entry bound of ordinary
# queries (~50 characters: ~1 KB each) and, under a flood of expanders, a few hundred of them at most.
MEMO_MAX_ENTRIES = 16_384
MEMO_MAX_BYTES = 32 * 1024 * 1024
_SMALL_INTS = 257  # CPython shares the int objects 0..256; every larger offset is an object of its own


def _size_bytes(result: NormalizedText) -> int:
    """What one memo entry keeps alive: its result (whose original is the key), the offsets' ints, its slot."""
    ints = max(0, len(result.original) - _SMALL_INTS) if result.offsets else 0
    return (
        sys.getsizeof(result)
        + sys.getsizeof(result.original)
        + sys.getsizeof(result.text)
        + sys.getsizeof(result.offsets)
        + ints * sys.getsizeof(_SMALL_INTS)
        + 100  # the OrderedDict's slot and link
    )


class _Memo:
    """A least-recently-used memo bounded by both its entry count and the bytes its entries hold."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.size_bytes = 0
        self._entries: OrderedDict[str, tuple[NormalizedText, int]] = OrderedDict()
        # normalize_query is a library function any thread may call (functools.lru_cache, which this
        # replaces, was thread-safe): an OrderedDict moved and trimmed from two threads at once is not.
        self._lock = threading.Lock()

    def get(self, key: str) -> NormalizedText | None:
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return None
            self._entries.move_to_end(key)
            return found[0]

    def put(self, key: str, result: NormalizedText) -> None:
        size = _size_bytes(result)
        if size > self.max_bytes:
            return  # it would evict everything else for one entry
        with self._lock:
            previous = self._entries.pop(key, None)
            if previous is not None:
                self.size_bytes -= previous[1]
            self._entries[key] = (result, size)
            self.size_bytes += size
            while len(self._entries) > self.max_entries or self.size_bytes > self.max_bytes:
                _, (_, evicted) = self._entries.popitem(last=False)
                self.size_bytes -= evicted

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.size_bytes = 0


_memo = _Memo(MEMO_MAX_ENTRIES, MEMO_MAX_BYTES)


def normalize_with_offsets(text: str) -> NormalizedText:
    """Normalize ``text`` and keep the map from normalized characters to original ones.

    Rules, in order: Unicode compatibility form (full-width digits, ligatures), case
    folding, accents dropped, control characters and apostrophes removed ("jerry's" ->
    "jerrys"), "&" -> "and", punctuation to spaces except inside numbers ("1.5", "1/2")
    and "%", a percent sign joined to its number and apart from the next word ("2 %milk" ->
    "2% milk"), a unit split from its number ("12oz" -> "12 oz"), whitespace collapsed and trimmed.
    """
    found = _memo.get(text)
    if found is None:
        found = _normalize(text)
        _memo.put(text, found)
    return found


def _normalize(text: str) -> NormalizedText:
    chars: list[str] = []
    offsets: list[int] = []
    for index, ch in enumerate(text):
        for out in _fold_char(ch):
            chars.append(out)
            offsets.append(index)
    b = _Builder(chars, offsets)
    b.sub(_AMPERSAND, lambda m: " and ")
    b.sub(_SEPARATOR, lambda m: " ")
    b.sub(_SPACES, lambda m: " ")
    b.sub(_PERCENT_APART, lambda m: m.group(1) + "%")
    b.sub(_PERCENT_GLUED, lambda m: "% ")
    b.sub(_UNIT_GLUED, lambda m: f"{m.group(1)} {m.group(2)}")
    # Trim: drop leading/trailing spaces along with their offsets.
    start = 0
    end = len(b.chars)
    while start < end and b.chars[start] == " ":
        start += 1
    while end > start and b.chars[end - 1] == " ":
        end -= 1
    return NormalizedText(text, "".join(b.chars[start:end]), tuple(b.offsets[start:end]))


def normalize_query(text: str) -> str:
    """The lookup key for ``text``: see :func:`normalize_with_offsets` for the rules."""
    return normalize_with_offsets(text).text
