"""The calibration's threshold choice on hand-made similarity lists, and its labelled examples."""

from __future__ import annotations

import pytest

from services.catalog.artifacts import Catalog, build_catalog
from services.gold.model import GoldQuery
from services.guardrails import Guardrails
from services.guardrails.calibration import (
    CalibrationError,
    calibrate,
    candidate_points,
    category_examples,
    choose_threshold,
    operating_point,
    rewrite_examples,
    substitute_examples,
    term_department,
)
from tests.unit.test_guardrails import BREAD, CLEANING, EGGS, MILK, PRODUCTS, SOY, HandEncoder, _catalog

TERMS = {
    "milk": {"synonyms": ["milks", "dairy milk"], "broader": ["dairies"]},
    "eggs": {"synonyms": ["hen eggs"], "broader": ["farming products"]},
    "bread": {"synonyms": ["breads", "loaf"], "broader": ["bakery products"]},
    "dish soap": {"synonyms": ["dishwashing liquid"], "broader": ["cleaning products"]},
    "almond milk": {"synonyms": [], "broader": ["plant milks", "dairies"]},
    "soy milk": {"synonyms": [], "broader": ["plant milks"]},
    "mystery": {"synonyms": ["enigma"], "broader": []},  # no department: positives only
}


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    built = _catalog(with_vectors=True)
    built.category_terms = TERMS
    return built


# --- choosing a threshold ---------------------------------------------------------------------


def test_the_best_f1_threshold() -> None:
    positives, negatives = [0.9, 0.8, 0.7], [0.75, 0.3, 0.2]
    point, reached = choose_threshold(positives, negatives)
    # 0.7 keeps all 3 positives and 1 negative: P 0.75, R 1, F1 0.857 beats 0.8 (P 1, R 0.667, F1 0.8).
    assert (point.threshold, point.true_positives, point.false_positives, reached) == (0.7, 3, 1, True)
    assert point.precision == 0.75 and point.recall == 1.0 and point.f1 == pytest.approx(6 / 7)


def test_a_target_precision_takes_the_best_recall_that_reaches_it() -> None:
    positives, negatives = [0.9, 0.8, 0.7], [0.75, 0.3, 0.2]
    point, reached = choose_threshold(positives, negatives, target_precision=1.0)
    assert (point.threshold, reached) == (0.8, True)
    assert point.recall == pytest.approx(2 / 3)
    point, reached = choose_threshold(positives, negatives, target_precision=0.7)
    assert (point.threshold, reached) == (0.7, True)


def test_an_unreachable_target_gives_the_most_precise_point_flagged() -> None:
    point, reached = choose_threshold([0.5, 0.4], [0.6, 0.55], target_precision=0.9)
    assert reached is False
    assert point.precision == max(p.precision for p in candidate_points([0.5, 0.4], [0.6, 0.55]))


def test_equal_f1_goes_to_the_lower_threshold_and_thresholds_round_down() -> None:
    # Both 0.4 and 0.6 separate perfectly; the lower keeps more.
    point, _ = choose_threshold([0.61234, 0.65], [0.39, 0.2])
    assert point.threshold == 0.612
    assert candidate_points([0.12345], [0.1])[-1].threshold == 0.123
    assert operating_point([0.12345], [0.1], 0.123).true_positives == 1


def test_no_positives_or_no_negatives_cannot_calibrate() -> None:
    with pytest.raises(CalibrationError, match="no positive"):
        choose_threshold([], [0.1])
    with pytest.raises(CalibrationError, match="no negative"):
        choose_threshold([0.1], [])


# --- the labelled examples --------------------------------------------------------------------


def gold(query: str, path: tuple[str, ...] | None) -> GoldQuery:
    return GoldQuery(query, (), path)


def test_category_examples_gold_path_positive_other_candidates_negative(catalog: Catalog) -> None:
    guardrails = Guardrails(catalog, embedder=HandEncoder())
    labels = [
        gold("whole milk", MILK),
        gold("Whole Milk", SOY),  # the same query again: the first label counts
        gold("dish soap", CLEANING),
        gold("yogurt", ("dairy eggs", "yogurt")),  # not in the taxonomy: skipped
        gold("bread", None),  # no gold path: skipped
    ]
    examples = category_examples(guardrails, labels, top_k=3)
    assert (examples.queries, examples.skipped) == (2, 2)
    # "dish soap" is pure household: cosine 1 to its gold, 0 to others; "whole milk": 1 to milk.
    assert sorted(examples.positives) == [pytest.approx(1.0), pytest.approx(1.0)]
    # whole milk's top 3: milk (gold), eggs 0.8, soy 0.5; dish soap's: cleaning (gold), then two at 0.
    assert sorted(round(s, 3) for s in examples.negatives) == [0.0, 0.0, 0.5, 0.8]
    other = category_examples(guardrails, labels, top_k=2, negatives="other-department")
    # outside dairy eggs for whole milk: bread and cleaning, both 0.
    assert sorted(round(s, 3) for s in other.negatives) == [0.0, 0.0, 0.0, 0.0]


def test_term_departments_come_from_the_lexicon_or_a_node_name(catalog: Catalog) -> None:
    assert term_department(catalog, "milk") == "dairy eggs"
    assert term_department(catalog, "cleaning") == "household"  # a taxonomy node's name
    assert term_department(catalog, "mystery") is None


def test_rewrite_examples_synonyms_and_broader_are_positives_other_departments_negatives(catalog: Catalog) -> None:
    examples = rewrite_examples(catalog, seed=0)
    assert ("milk", "milks") not in examples.positives  # a plural is no test of a threshold
    assert {("milk", "dairy milk"), ("milk", "dairies"), ("mystery", "enigma")} <= set(examples.positives)
    department = {"milk": "dairy eggs", "eggs": "dairy eggs", "bread": "bakery", "dish soap": "household"}
    for term, other in examples.negatives:
        assert term_department(catalog, term) != term_department(catalog, other)
    assert not any(term == "mystery" for term, _ in examples.negatives)
    assert set(department) <= {t for t, _ in examples.negatives}
    assert rewrite_examples(catalog, seed=0) == examples  # deterministic
    assert rewrite_examples(catalog, seed=1).positives == examples.positives


def test_substitute_examples_are_terms_under_one_broader_term(catalog: Catalog) -> None:
    examples = substitute_examples(catalog, seed=0)
    assert ("almond milk", "soy milk") in examples.positives
    assert ("soy milk", "almond milk") in examples.positives
    assert ("milk", "almond milk") in examples.positives  # both under "dairies"
    assert not any(a == "bread" for a, _ in examples.positives)  # alone under its broader terms


def test_calibrate_end_to_end_on_the_hand_catalog_is_deterministic() -> None:
    built = build_catalog(PRODUCTS, embedder=None, category_terms=TERMS)
    labels = [gold("whole milk", MILK), gold("eggs", EGGS), gold("sourdough", BREAD), gold("dish soap", CLEANING)]
    first = calibrate(built, HandEncoder(), labels, top_k=3)
    again = calibrate(built, HandEncoder(), labels, top_k=3)
    assert first.to_json() == again.to_json()
    assert first.category.positives == 4 and first.category.recall == 1.0
    assert first.settings_lines()[0] == f"QU_CATEGORY_MIN_SIMILARITY={first.category.threshold}"
    assert first.substitute_level in ("department", "aisle")
