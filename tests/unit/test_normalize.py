"""normalize_query / normalize_with_offsets: the one lookup key, and the map back to what was typed."""

from __future__ import annotations

import re
import tracemalloc
import unicodedata

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from services import normalize
from services.normalize import normalize_query, normalize_with_offsets

CASES = [
    # unicode compatibility form
    pytest.param("ＭＩＬＫ　１２ｏｚ", "milk 12 oz", id="full-width"),
    pytest.param("ﬁsh ﬂakes", "fish flakes", id="ligatures"),
    pytest.param("oat\u00a0milk", "oat milk", id="nbsp"),
    pytest.param("oat\u2009milk\u3000bar", "oat milk bar", id="thin-and-ideographic-space"),
    pytest.param("Ⅻ", "xii", id="roman-numeral-compat"),
    # case
    pytest.param("ORGANIC Whole MiLk", "organic whole milk", id="case"),
    pytest.param("STRASSE ß", "strasse ss", id="casefold-sharp-s"),
    # accents
    pytest.param("Café", "cafe", id="accent-precomposed"),
    pytest.param("Cafe\u0301", "cafe", id="accent-combining"),
    pytest.param("jalapeño poppers", "jalapeno poppers", id="tilde"),
    pytest.param("Crème Brûlée", "creme brulee", id="several-accents"),
    # whitespace
    pytest.param("  whole\tmilk\n\n2   gallon \r\n", "whole milk 2 gallon", id="whitespace"),
    # punctuation
    pytest.param("bread, no gluten!", "bread no gluten", id="comma-bang"),
    pytest.param("gluten-free", "gluten free", id="hyphen"),
    pytest.param("x-large zip-lock", "x large zip lock", id="hyphens"),
    pytest.param("milk (organic) [2%]", "milk organic 2%", id="brackets"),
    pytest.param("eggs...", "eggs", id="trailing-dots"),
    pytest.param("chips/salsa", "chips salsa", id="slash-between-words"),
    pytest.param("snake_case", "snake case", id="underscore"),
    pytest.param("tea; coffee: cocoa?", "tea coffee cocoa", id="semicolon-colon"),
    pytest.param("#1 @home *new*", "1 home new", id="symbols"),
    # apostrophes and possessives, "&"
    pytest.param("Ben & Jerry's", "ben and jerrys", id="ben-and-jerrys"),
    pytest.param("Ben&Jerry’s", "ben and jerrys", id="glued-ampersand-curly-apostrophe"),
    pytest.param("Annie's", "annies", id="possessive"),
    pytest.param("Annie`s", "annies", id="backtick-apostrophe"),
    pytest.param("mac & cheese", "mac and cheese", id="ampersand"),
    pytest.param("M&M's", "m and ms", id="m-and-ms"),
    # units written apart or glued
    pytest.param("2 %", "2%", id="percent-apart"),
    pytest.param("2 % milk", "2% milk", id="percent-apart-then-word"),
    pytest.param("2% milk", "2% milk", id="percent-kept"),
    pytest.param("12oz", "12 oz", id="oz-glued"),
    pytest.param("12OZ", "12 oz", id="oz-glued-upper"),
    pytest.param("1.5L", "1.5 l", id="litre-glued"),
    pytest.param("12 fl. oz.", "12 fl oz", id="fl-oz-dots"),
    pytest.param("12 FL OZ", "12 fl oz", id="fl-oz-upper"),
    pytest.param("10lbs", "10 lbs", id="lbs-glued"),
    pytest.param("500ml", "500 ml", id="ml-glued"),
    pytest.param("6pk", "6 pk", id="pack-glued"),
    pytest.param("12ct eggs", "12 ct eggs", id="count-glued"),
    pytest.param("12oz.", "12 oz", id="glued-unit-trailing-dot"),
    pytest.param("12 oz", "12 oz", id="already-apart"),
    # numbers kept
    pytest.param("1/2 gallon", "1/2 gallon", id="fraction"),
    pytest.param("1.5", "1.5", id="decimal"),
    pytest.param("1,000 count", "1,000 count", id="thousands-comma"),
    pytest.param("100%", "100%", id="hundred-percent"),
    # brands with digits untouched
    pytest.param("v8", "v8", id="v8"),
    pytest.param("V8 Juice", "v8 juice", id="v8-juice"),
    pytest.param("7up", "7up", id="7up"),
    pytest.param("7UP 12oz", "7up 12 oz", id="7up-with-size"),
    pytest.param("A1 sauce", "a1 sauce", id="a1"),
    pytest.param("5-hour energy", "5 hour energy", id="5-hour"),
    # control and zero-width characters
    pytest.param("milk\x00\x07", "milk", id="control-chars"),
    pytest.param("\u200bmilk\u200b", "milk", id="zero-width-space-at-edges"),
    pytest.param("\ufeffmilk", "milk", id="bom"),
    # empty and whitespace-only
    pytest.param("", "", id="empty"),
    pytest.param("   ", "", id="spaces"),
    pytest.param("\t\n\r\u00a0\u200b", "", id="only-invisible"),
    pytest.param("!!! ... ---", "", id="only-punctuation"),
]


@pytest.mark.parametrize(("raw", "expected"), CASES)
def test_normalize_query(raw: str, expected: str) -> None:
    assert normalize_query(raw) == expected


@pytest.mark.parametrize(("raw", "expected"), CASES)
def test_normalize_with_offsets_gives_the_same_text(raw: str, expected: str) -> None:
    normalized = normalize_with_offsets(raw)
    assert normalized.text == expected
    assert normalized.original == raw
    assert len(normalized.offsets) == len(normalized.text)
    assert all(0 <= i < len(raw) for i in normalized.offsets)


def test_same_key_for_shopper_and_teacher_spellings() -> None:
    assert normalize_query("Ben & Jerry's 12oz") == normalize_query("ben and jerrys 12 oz")


@pytest.mark.parametrize(
    "raw",
    ["mi\u200blk", "mi\u200dlk", "mi\u2060lk", "mi\u00adlk"],
    ids=["zero-width-space", "zero-width-joiner", "word-joiner", "soft-hyphen"],
)
def test_zero_width_characters_inside_a_word_are_removed(raw: str) -> None:
    assert normalize_query(raw) == "milk"


@pytest.mark.parametrize(
    ("raw", "expected"), [("½ gallon", "1/2 gallon"), ("¼ lb butter", "1/4 lb butter")], ids=["half", "quarter"]
)
def test_vulgar_fractions_keep_their_slash(raw: str, expected: str) -> None:
    # Today "½ gallon" becomes "1 2 gallon": one, then two gallons.
    assert normalize_query(raw) == expected


# --- idempotence ------------------------------------------------------------------------------

# Characters that exercise every rule: units, separators, "&", apostrophes, accents, compat forms.
_TRICKY = st.sampled_from(list("0123456789 .,/%&'’-_!\t\nabcflgmoxzLOZ&éñ\u0301ﬁ１２Ａ\u00a0\u200b\x00"))


@given(st.text())
@example("2 % %")
@example("12oz. 1.5L fl. oz")
@example("a .5 b")
@example("1 , 5")
def test_normalize_is_idempotent(text: str) -> None:
    once = normalize_query(text)
    assert normalize_query(once) == once


@given(st.text(_TRICKY, max_size=30))
def test_normalize_is_idempotent_on_tricky_text(text: str) -> None:
    once = normalize_query(text)
    assert normalize_query(once) == once


@given(st.text())
def test_normalized_text_is_trimmed_single_spaced_lowercase(text: str) -> None:
    out = normalize_query(text)
    assert out == out.strip()
    assert "  " not in out
    assert not re.search(r"\s", out.replace(" ", ""))
    assert out == out.casefold()
    assert all(unicodedata.category(c) != "Mn" for c in out)


# --- offsets ----------------------------------------------------------------------------------

OFFSET_QUERIES = [
    "Ben & Jerry's 12oz",
    "  Café   jalapeño 1.5L ",
    "12 fl. oz. milk",
    "2 % reduced-fat milk",
    "ＭＩＬＫ　１２ｏｚ",
    "ﬁsh ﬂakes",
    "Cafe\u0301 au lait",
    "x-large zip-lock bags",
    "bread,no gluten!",
    "M&M's 7UP v8",
]


def _token_spans(text: str) -> list[tuple[int, int, str]]:
    return [(m.start(), m.end(), m.group(0)) for m in re.finditer(r"\S+", text)]


def _assert_tokens_map_back(raw: str) -> None:
    normalized = normalize_with_offsets(raw)
    for start, end, token in _token_spans(normalized.text):
        o_start, o_end = normalized.to_original(start, end)
        assert 0 <= o_start < o_end <= len(raw)
        assert normalize_query(raw[o_start:o_end]) == token, (raw, token, raw[o_start:o_end])


@pytest.mark.parametrize("raw", OFFSET_QUERIES)
def test_every_token_maps_back_to_an_original_span(raw: str) -> None:
    _assert_tokens_map_back(raw)


def test_offsets_of_known_spans() -> None:
    raw = "Ben & Jerry's 12oz"
    normalized = normalize_with_offsets(raw)
    assert normalized.text == "ben and jerrys 12 oz"

    def original_of(token: str) -> str:
        start = normalized.text.index(token)
        o_start, o_end = normalized.to_original(start, start + len(token))
        return raw[o_start:o_end]

    assert original_of("ben") == "Ben"
    assert original_of("and") == "&"
    assert original_of("jerrys") == "Jerry's"
    assert original_of("12") == "12"
    assert original_of("oz") == "oz"
    assert original_of("ben and jerrys") == "Ben & Jerry's"
    assert original_of("12 oz") == "12oz"


def test_span_ending_in_an_accent_includes_its_combining_mark() -> None:
    raw = "Cafe\u0301 au lait"
    normalized = normalize_with_offsets(raw)
    assert normalized.to_original(0, 4) == (0, 5)
    assert normalized.to_original(5, 7) == (6, 8)


def test_percent_joined_maps_to_the_whole_original() -> None:
    raw = "2 % milk"
    normalized = normalize_with_offsets(raw)
    assert normalized.text == "2% milk"
    assert normalized.to_original(0, 2) == (0, 3)


def _one_piece(ch: str) -> bool:
    """False for characters whose compatibility form holds a separator ("½" -> "1⁄2", "⑴" -> "(1)"):
    they become several tokens that share one original character, which no span can tell apart."""
    compat = unicodedata.normalize("NFKC", ch)
    return len(compat) <= 1 or compat.isalnum()


@given(st.text(st.characters().filter(_one_piece), max_size=40))
def test_tokens_map_back_for_arbitrary_text(text: str) -> None:
    _assert_tokens_map_back(text)


@given(st.text(_TRICKY, max_size=30))
def test_tokens_map_back_for_tricky_text(text: str) -> None:
    _assert_tokens_map_back(text)


@pytest.mark.parametrize(("start", "end"), [(-1, 2), (0, 0), (3, 2), (0, 99), (5, 6), (6, 7)])
def test_out_of_range_spans_raise(start: int, end: int) -> None:
    normalized = normalize_with_offsets("milk!")  # "milk"
    assert normalized.text == "milk"
    with pytest.raises(ValueError, match="outside"):
        normalized.to_original(start, end)


def test_empty_text_has_no_spans() -> None:
    normalized = normalize_with_offsets("  \t ")
    assert normalized.text == ""
    assert normalized.offsets == ()
    with pytest.raises(ValueError):
        normalized.to_original(0, 1)


# --- the memo of normalized queries -----------------------------------------------------------


def test_the_memo_is_bounded_by_bytes_not_only_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    # 511 x U+FDFA normalizes to 9,198 characters and 9,198 offsets: ~100 KB for one entry, so
    # 16k distinct ones (the entry bound alone) would hold ~1.6 GB. A small budget keeps the test short.
    budget = 1 << 20
    monkeypatch.setattr(normalize._memo, "max_bytes", budget)
    normalize._memo.clear()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(40):  # ~4 MB if every entry were kept
            assert len(normalize_with_offsets("\ufdfa" * 510 + str(i)).text) > 9_000
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < budget * 1.3, f"the memo holds {held} bytes for a budget of {budget}"
    assert normalize._memo.size_bytes <= budget
    # The memo still works: a repeated query is the same object, not normalized again.
    assert normalize_with_offsets("organic milk") is normalize_with_offsets("organic milk")


def test_a_result_larger_than_the_whole_budget_is_returned_but_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(normalize._memo, "max_bytes", 10_000)
    normalize._memo.clear()
    kept = normalize_with_offsets("milk")
    big = normalize_with_offsets("\ufdfa" * 100)
    assert big.text.startswith("صلى الله عليه وسلم")
    assert normalize_with_offsets("\ufdfa" * 100) is not big
    assert normalize_with_offsets("milk") is kept
    assert normalize._memo.size_bytes <= 10_000
