"""Longest-match phrase lookup over normalized text, shared by every lexicon."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Generic, TypeVar

V = TypeVar("V")

_TOKEN = re.compile(r"\S+")


@dataclass(frozen=True, slots=True)
class PhraseHit(Generic[V]):
    start: int  # character offsets into the normalized text
    end: int
    text: str
    value: V


class PhraseIndex(Generic[V]):
    """Maps token sequences to values; finds them in normalized text on token boundaries."""

    def __init__(self) -> None:
        self._phrases: dict[tuple[str, ...], V] = {}
        self._max_tokens = 0

    def add(self, phrase: str, value: V, *, replace: bool = False) -> None:
        """Index ``phrase`` (already normalized). The first value given for a phrase wins unless ``replace``."""
        key = tuple(phrase.split())
        if not key or (key in self._phrases and not replace):
            return
        self._phrases[key] = value
        self._max_tokens = max(self._max_tokens, len(key))

    def get(self, phrase: str) -> V | None:
        return self._phrases.get(tuple(phrase.split()))

    def __len__(self) -> int:
        return len(self._phrases)

    def find(self, normalized: str, taken: list[bool] | None = None) -> list[PhraseHit[V]]:
        """Phrases in ``normalized``, scanning left to right and taking the longest at each token.

        ``taken`` marks characters already claimed by an earlier matcher; hits never overlap them,
        and the characters of each hit are marked in it.
        """
        if taken is None:
            taken = [False] * len(normalized)
        tokens = [(m.start(), m.end(), m.group(0)) for m in _TOKEN.finditer(normalized)]
        hits: list[PhraseHit[V]] = []
        i = 0
        while i < len(tokens):
            step = 1
            for n in range(min(self._max_tokens, len(tokens) - i), 0, -1):
                value = self._phrases.get(tuple(t[2] for t in tokens[i : i + n]))
                if value is None:
                    continue
                start, end = tokens[i][0], tokens[i + n - 1][1]
                if any(taken[start:end]):
                    continue
                for c in range(start, end):
                    taken[c] = True
                hits.append(PhraseHit(start, end, normalized[start:end], value))
                step = n
                break
            i += step
        return hits
