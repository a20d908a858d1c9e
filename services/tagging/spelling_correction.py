"""Reads a query word the catalog does not know as the catalog word it is a slip of.

Shoppers type "aata", "мороженное", "колбаски", "шокол": the exact-match tagger knows "atta",
"мороженое", "колбаса", "шоколад". Before tagging, each query word that no lexicon knows (no brand,
type or attribute form, no stopword) is replaced by the catalog word it is a slip of (one corrector
per family, the tagger asks types, then attributes, then brands; :mod:`services.catalog.spelling`: a
typo, another ending, or, for the last word, cut short),
the nearest first, then the word the most products carry; a word in another script than the catalog's
is compared in Latin letters (anyascii: "умка" finds "umka"). Words the catalog knows are never
replaced, so a correction can only add a tag where the exact tagger had none. A word of the market's
language (pyspellchecker's word lists) is read only as a catalog word of the same stem (Snowball's
stemmer of the language: "shirts" as "shirt", "молока" as "молоко", "мороженное" as "мороженое"),
never as another word ("spaces" is not "spices", "church" not "churro", "sold" not "hold").

Each index is built from the lexicons when the tagger is warmed or first needs it: every word of the
family once, kept by length for the edit search (rapidfuzz) and sorted for the prefix search (cut-short
words, endings).
"""

from __future__ import annotations

import bisect
import functools
from collections import Counter
from collections.abc import Callable, Collection, Iterable

from anyascii import anyascii
from rapidfuzz import process
from rapidfuzz.distance import OSA

from services.catalog.spelling import (
    MIN_SLIP_LETTERS,
    STEM_MIN,
    cut_short_of,
    max_edits,
    slip_distance,
)

__all__ = ["FORM_LENGTH_DIFF", "SpellingCorrector", "language_words", "stemmer"]

# Another number or case of a word is at most this many letters longer or shorter ("dresses"/"dress",
# "молока"/"молоко"); a stem's other words are longer ("folding"/"fold", "fishing"/"fish").
FORM_LENGTH_DIFF = 2
REMEMBERED_WORDS = 1 << 16  # answers kept per corrector (a few MB)


@functools.cache
def language_words(language: str) -> frozenset[str]:
    """The words of a language (pyspellchecker's lists: "en" 160k words, "ru" 20k)."""
    from spellchecker import SpellChecker  # loads its list (0.1 s), so only where a tagger corrects

    return frozenset(SpellChecker(language=language, distance=1).word_frequency.dictionary)


def stemmer(algorithm: str) -> Callable[[str], str]:
    """Snowball's stemmer of a language ("english", "russian", "serbian") as a function of one word."""
    import snowballstemmer

    return functools.lru_cache(maxsize=65536)(snowballstemmer.stemmer(algorithm).stemWord)


class _WordIndex:
    """Catalog words by length (the edit search) and in order (the prefix search), each with its weight."""

    def __init__(self, weight: dict[str, int]) -> None:
        self.weight = weight
        self._sorted = sorted(weight)
        self._by_length: dict[int, list[str]] = {}
        for word in self._sorted:
            self._by_length.setdefault(len(word), []).append(word)

    def slips(self, word: str, *, last: bool) -> dict[str, int]:
        """Every indexed word ``word`` is a slip of (or, when ``last``, cut short from), with its distance."""
        found: dict[str, int] = {}
        limit = max_edits(word)
        for length in range(len(word) - limit, len(word) + limit + 1):
            choices = self._by_length.get(length)
            if not choices:
                continue
            for target, distance, _ in process.extract(
                word, choices, scorer=OSA.distance, score_cutoff=limit, limit=None
            ):
                found[target] = int(distance)
        # Same stem, other ending ("колбаски" -> "колбаса"), and cut short: both share the first letters.
        lo = bisect.bisect_left(self._sorted, word[:STEM_MIN])
        hi = bisect.bisect_right(self._sorted, word[:STEM_MIN] + "\uffff")
        for target in self._sorted[lo:hi]:
            if target in found:
                continue
            slip = slip_distance(word, target)
            if slip is not None:
                found[target] = slip
            elif last and cut_short_of(word, target):
                found[target] = len(target) - len(word)
        return found


class SpellingCorrector:
    """Replacements for unknown query words, from the words a catalog's product types (or brands) are written with."""

    def __init__(
        self,
        targets: Counter[str],
        known: Iterable[str],
        *,
        language: Collection[str] = (),
        stem: Callable[[str], str] | None = None,
    ) -> None:
        """``targets``: catalog word -> products it names (the tie-break); ``known``: words never replaced;
        ``language``: the words of the market's language (:func:`language_words`), read only as a catalog
        word of the same ``stem`` (:func:`stemmer`; without one, never)."""
        self._language = language
        self._stem = stem
        weight = {w: n for w, n in targets.items() if w.isalpha() and len(w) >= MIN_SLIP_LETTERS}
        # The catalog's words, shared by a tagger's correctors as they are (not copied into each).
        self._known = known if isinstance(known, frozenset) else frozenset(known)
        self._words = _WordIndex(weight)
        # The same words in Latin letters ("умка" as "umka"): a shopper types a brand in the other script.
        self._latin: dict[str, str] = {}  # transliteration -> the catalog word of most products written so
        for word in sorted(weight, key=lambda w: (-weight[w], w)):
            self._latin.setdefault(anyascii(word), word)
        self._other_scripts = any(latin != word for latin, word in self._latin.items())
        # Shoppers repeat their words (and their misspellings): a search costs ~0.5 ms, a repeat nothing.
        self._remembered = functools.lru_cache(maxsize=REMEMBERED_WORDS)(self._correct)

    def __len__(self) -> int:
        return len(self._words.weight)

    def correct(self, word: str, *, last: bool = False) -> str | None:
        """The catalog word ``word`` is a slip of, or None; ``last``: the query's last word (may be cut short)."""
        return self._remembered(word, last)

    def _correct(self, word: str, last: bool) -> str | None:
        if not self._slippable(word):
            return None
        found = self._words.slips(word, last=last)
        if word in self._language:  # a word in its own right: only another form of it
            stem = self._stem
            found = {
                t: d
                for t, d in found.items()
                if stem is not None and stem(t) == stem(word) and abs(len(t) - len(word)) <= FORM_LENGTH_DIFF
            }
        return self._best(found, self._words.weight)

    def transliterated(self, word: str, *, last: bool = False) -> str | None:
        """The catalog word ``word`` names in another script ("макфа" for "makfa", "umka" for "умка"): the
        same in Latin letters (anyascii); a word of the language never is. Slips across scripts are not
        tried: on X5's queries they found as many wrong words as right ones."""
        if not self._slippable(word) or word in self._language:
            return None
        latin = anyascii(word).lower()
        if latin == word and not self._other_scripts:
            return None  # the same letters as the catalog's: nothing a plain slip did not try
        return self._latin.get(latin)

    def _slippable(self, word: str) -> bool:
        return (
            word not in self._known
            and word not in self._words.weight
            and len(word) >= MIN_SLIP_LETTERS
            and word.isalpha()
        )

    @staticmethod
    def _best(found: dict[str, int], weight: dict[str, int]) -> str | None:
        return min(found, key=lambda t: (found[t], -weight[t], t)) if found else None
