"""Spelling tolerance: which query words are slips of a catalog word (services/catalog/spelling.py), the
corrector that reads them so (services/tagging/spelling_correction.py), the lexicon tagger that tags the
shopper's own words with them, and the guardrails that keep what the tagger found."""

from __future__ import annotations

from collections import Counter

import pytest

from services.catalog.artifacts import build_catalog
from services.catalog.model import Product, parse_path
from services.catalog.spelling import cut_short_of, slip_of, spelled_like
from services.domain import Role, Understanding
from services.guardrails.binding import CatalogBinding
from services.normalize import normalize_query
from services.tagging import LexiconTagger
from services.tagging.spelling_correction import SpellingCorrector, language_words, stemmer


@pytest.mark.parametrize(
    ("word", "target"),
    [
        ("aata", "atta"),  # transliteration: one letter
        ("namkin", "namkeen"),  # two edits, but one stem with short endings
        ("мороженное", "мороженое"),  # a doubled letter
        ("колбаски", "колбаса"),  # another ending of one stem
        ("огурцы", "огурец"),
        ("berries", "berry"),
        ("chese", "cheese"),
        ("yougurt", "yogurt"),
        ("strawberies", "strawberries"),
    ],
)
def test_slips_of_a_catalog_word(word: str, target: str) -> None:
    assert slip_of(word, target)


@pytest.mark.parametrize(
    ("word", "target"),
    [
        ("oil", "oils"),  # under four letters: never
        ("tea", "pea"),
        ("milk", "milk"),  # the same word is no slip
        ("12oz", "12 oz"),  # only letters
        ("cream", "bread"),  # too far
        ("chips", "chipotle"),  # shared start, but a long other ending
    ],
)
def test_not_slips(word: str, target: str) -> None:
    assert not slip_of(word, target)


def test_a_word_cut_short_keeps_half_its_letters_and_four_or_more() -> None:
    assert cut_short_of("шокол", "шоколад")
    assert cut_short_of("yogu", "yogurt")
    assert not cut_short_of("yog", "yogurt")  # under four letters
    assert not cut_short_of("choc", "chocolates")  # under half of it
    assert not cut_short_of("yogurt", "yogurt")


def test_spelled_like_reads_word_for_word_and_the_last_word_may_be_cut_short() -> None:
    assert spelled_like("ice creem", "ice cream")
    assert spelled_like("aata", "atta")  # trigrams alone say 0.25
    assert spelled_like("peanut butt", "peanut butter")
    assert not spelled_like("ice", "ice cream")


def corrector(*targets: str, known: tuple[str, ...] = ()) -> SpellingCorrector:
    return SpellingCorrector(Counter(dict.fromkeys(targets, 1)), known)


def test_the_corrector_replaces_only_words_it_does_not_know() -> None:
    fix = corrector("atta", "bread", "milk", known=("brea",))
    assert fix.correct("aata") == "atta"
    assert fix.correct("milk") is None  # a catalog word already
    assert fix.correct("brea") is None  # a word another lexicon knows is never replaced
    assert fix.correct("brea", last=True) is None
    assert fix.correct("mlk") is None  # three letters


def test_the_nearest_word_wins_then_the_word_of_most_products() -> None:
    weighted = SpellingCorrector(Counter({"cake": 10, "cane": 2, "cakes": 50}), ())
    assert weighted.correct("cakw") == "cake"  # one edit from cake and cakes is two
    assert weighted.correct("kake") == "cake"  # one edit from both cake and cane: cake carries more products
    assert SpellingCorrector(Counter({"cane": 10, "cake": 2}), ()).correct("kane") == "cane"


def test_only_the_last_word_may_be_cut_short() -> None:
    fix = corrector("мороженое", "молоко")
    assert fix.correct("морож") is None  # four letters short: no other ending
    assert fix.correct("морож", last=True) == "мороженое"


def product(pid: str, name: str, brand: str, path: str) -> Product:
    return Product(pid, name, brand, parse_path(path))


@pytest.fixture(scope="module")
def tagger() -> LexiconTagger:
    catalog = build_catalog(
        [
            product("1", "Organic Whole Wheat Atta 5 kg", "Aashirvaad", "staples > flours"),
            product("2", "Multigrain Atta 1 kg", "Pillsbury", "staples > flours"),
            product("3", "Vanilla Ice Cream 1 l", "Amul", "frozen > ice cream"),
            product("4", "Chocolate Ice Cream 500 ml", "Kwality", "frozen > ice cream"),
            product("5", "Sourdough Bread", "Bakers", "bakery > bread"),
            product("6", "Multigrain Bread", "Bakers", "bakery > bread"),
        ],
        embedder=None,
    )
    return LexiconTagger(catalog)


def tags(tagger: LexiconTagger, query: str) -> list[tuple[str, str, str]]:
    return [(t.role.value, t.text, t.canonical) for t in tagger.tag(normalize_query(query))]


def test_the_tagger_tags_the_shoppers_own_words_with_the_catalogs_canonical_form(tagger: LexiconTagger) -> None:
    assert tags(tagger, "aata 5 kg") == [("product", "aata", "atta"), ("attribute", "5 kg", "5 kg")]
    assert tags(tagger, "vanilla ice creem") == [
        ("attribute", "vanilla", "vanilla"),
        ("product", "ice creem", "ice cream"),
    ]
    assert tags(tagger, "multigrain bre") == [("attribute", "multigrain", "whole grain")]  # "bre": 3 letters
    assert tags(tagger, "multigrain brea") == [("attribute", "multigrain", "whole grain"), ("product", "brea", "bread")]


def test_exact_matching_alone_when_asked(tagger: LexiconTagger) -> None:
    exact = LexiconTagger(tagger.catalog, spelling=False)
    assert [t.text for t in exact.tag("aata")] == []
    assert "+exact" in exact.version and "+exact" not in tagger.version


def test_the_guardrails_keep_what_a_slip_tagged(tagger: LexiconTagger) -> None:
    binding = CatalogBinding(tagger.catalog)
    for query in ("aata", "vanilla ice creem", "multigrain brea"):
        normalized = normalize_query(query)
        found = tagger.tag(normalized)
        kept, _ = binding.bind(Understanding(found, []), normalized)
        assert [t.text for t in kept.tags] == [t.text for t in found], query
        assert any(t.role is Role.PRODUCT for t in kept.tags)


def test_a_word_of_the_language_is_read_only_as_another_form_of_itself() -> None:
    english = SpellingCorrector(
        Counter({"spices": 9, "shirt": 3, "churro": 2, "fish": 5}),
        (),
        language={"spaces", "shirts", "church", "fishing"},
        stem=stemmer("english"),
    )
    assert english.correct("spaces") is None  # a word of its own, one letter from "spices"
    assert english.correct("church") is None  # shares four letters with "churro", not its stem
    assert english.correct("fishing") is None  # same stem, but another word than "fish"
    assert english.correct("shirts") == "shirt"
    assert english.correct("spicse") == "spices"  # not a word of the language: any slip
    russian = SpellingCorrector(
        Counter({"мороженое": 4, "молоко": 7}), (), language={"мороженное", "молока"}, stem=stemmer("russian")
    )
    assert russian.correct("мороженное") == "мороженое"  # a common misspelling the word list holds
    assert russian.correct("молока") == "молоко"
    assert SpellingCorrector(Counter({"shirt": 1}), (), language={"shirts"}).correct("shirts") is None  # no stemmer


def test_the_markets_own_words_and_stems_come_with_its_locale() -> None:
    assert "church" in language_words("en") and "молоко" in language_words("ru")
    assert stemmer("russian")("сметаны") == stemmer("russian")("сметана")


def test_a_name_in_the_other_script_is_read_through_its_latin_letters() -> None:
    brands = SpellingCorrector(Counter({"макфа": 3, "umka": 2}), (), language={"milk"})
    assert brands.transliterated("makfa") == "макфа"
    assert brands.transliterated("умка") == "umka"
    assert brands.transliterated("макфы") is None  # no slips across scripts
    assert brands.transliterated("milk") is None  # a word of the language is itself
    assert brands.correct("makfa") is None  # a plain slip search stays in its own script


def test_another_models_span_gets_the_catalogs_value(tagger: LexiconTagger) -> None:
    # What the student says is the span; what is published is the catalog's entry it names.
    assert tagger.canonical(Role.PRODUCT, "aata") == "atta"
    assert tagger.canonical(Role.PRODUCT, "ice creem") == "ice cream"
    assert tagger.canonical(Role.BRAND, "aata") is None  # not this role
    assert tagger.canonical(Role.PRODUCT, "vanilla ice cream") is None  # not one tag
    assert tagger.canonical(Role.PRODUCT, "quinoa") is None


def test_a_serving_process_builds_the_spelling_indexes_before_its_first_query(tagger: LexiconTagger) -> None:
    fresh = LexiconTagger(tagger.catalog)
    assert fresh._correctors is None  # constructing stays fast: nothing built yet
    assert fresh.warm() is fresh and fresh._correctors is not None
    assert LexiconTagger(tagger.catalog, spelling=False).warm()._correctors is None  # exact matching needs none
