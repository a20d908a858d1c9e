"""How alike two spellings are, and which query words are slips of a catalog word.

Two measures, shared by everything that tolerates a misspelling, so that what one part accepts the
next does not drop:

* character trigrams (:func:`trigram_jaccard`): the teacher finds "Pepperidge Farm" for "pepridge
  farm" by it, and the guardrails accept a tag whose span is spelled like one of its entry's aliases;
* word slips (:func:`slip_of`, :func:`cut_short_of`): the lexicon tagger reads an unknown query word as
  the catalog word it is a slip of: a typo or transliteration ("aata" for "atta", "мороженное" for
  "мороженое"), another grammatical ending of one stem ("колбаски" for "колбаса", "berries" for
  "berry"), or, for the query's last word, a word cut short while typing ("шокол" for "шоколад").
  They never fire on a word under :data:`MIN_SLIP_LETTERS` letters or holding anything but letters, nor
  read a word as one that short.
  The guardrails accept these slips too (:func:`spelled_like`).

The thresholds were chosen on labelled queries (docs/QUALITY.md, "Spelling tolerance"), where the
precision of the tags that only a slip made is measured.
"""

from __future__ import annotations

from collections.abc import Collection

from rapidfuzz.distance import OSA

__all__ = [
    "MIN_SLIP_LETTERS",
    "cut_short_of",
    "max_edits",
    "slip_distance",
    "slip_of",
    "spelled_like",
    "trigram_jaccard",
    "trigrams",
]

# A word under this many letters is never read as another: "cas" is too many words' slip to be any one's.
MIN_SLIP_LETTERS = 4
# Words this long or longer may carry two slips (a transposition counts as one); shorter ones one.
TWO_EDITS_FROM = 8
# One stem, another ending: the words share at least this many first letters, and neither has more
# than ENDING_MAX letters after them ("огурцы"/"огурец", "berries"/"berry").
STEM_MIN = 4
ENDING_MAX = 3
# A cut-short word keeps at least this share of the word it starts ("шокол" is 5 of "шоколад"'s 7).
CUT_MIN_SHARE = 0.5
# Spans spelled at least this much like an alias (trigram Jaccard) name its entry (services/guardrails).
TRIGRAM_MIN_SIMILARITY = 0.5


def trigrams(text: str) -> frozenset[str]:
    padded = f"  {text} "  # padding weighs word starts, where misspellings are rarest
    return frozenset(padded[i : i + 3] for i in range(len(padded) - 2))


def trigram_jaccard(a: str, b: str) -> float:
    left, right = trigrams(a), trigrams(b)
    return len(left & right) / len(left | right) if left or right else 0.0


def max_edits(word: str) -> int:
    """Edits (insert, delete, substitute, transpose) a query word of this length may carry."""
    return 2 if len(word) >= TWO_EDITS_FROM else 1


def _slippable(word: str) -> bool:
    return len(word) >= MIN_SLIP_LETTERS and word.isalpha()


def _shared_start(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def slip_distance(word: str, target: str) -> int | None:
    """How far ``word`` is from ``target`` when it is a slip of it (typo or other ending), else None.

    The distance is the optimal-string-alignment edit distance, so callers can prefer the nearest
    of several catalog words. Equal words are not slips (distance 0 is returned for them).
    """
    if word == target:
        return 0
    if not _slippable(word) or not _slippable(target):
        return None
    limit = max_edits(word)
    distance = OSA.distance(word, target, score_cutoff=max(limit, 2 * ENDING_MAX))
    if distance <= limit:
        return distance
    stem = _shared_start(word, target)
    if stem >= STEM_MIN and len(word) - stem <= ENDING_MAX and len(target) - stem <= ENDING_MAX:
        return distance
    return None


def slip_of(word: str, target: str) -> bool:
    """Whether the query word ``word`` is a slip (not the same word) of the catalog word ``target``."""
    return word != target and slip_distance(word, target) is not None


def cut_short_of(word: str, target: str) -> bool:
    """Whether ``word`` is ``target`` cut short: its first letters, at least half of them, four or more."""
    return (
        _slippable(word)
        and len(word) < len(target)
        and target.startswith(word)
        and len(word) >= CUT_MIN_SHARE * len(target)
    )


def spelled_like(span: str, form: str, known: Collection[str] = ()) -> bool:
    """Whether a normalized span is spelled like a catalog form: close by trigrams, or, word for word,
    the same word or a slip of it (the last word may be cut short). A word in ``known`` (the catalog's
    own words, :func:`services.catalog.artifacts.catalog_words`) is itself, never a slip: "milk" is
    not "silk". Equal strings are spelled alike."""
    if span == form or trigram_jaccard(span, form) >= TRIGRAM_MIN_SIMILARITY:
        return True
    words, targets = span.split(), form.split()
    if len(words) != len(targets):
        return False
    last = len(words) - 1
    return all(
        w == t or (w not in known and (slip_of(w, t) or (i == last and cut_short_of(w, t))))
        for i, (w, t) in enumerate(zip(words, targets, strict=True))
    )
