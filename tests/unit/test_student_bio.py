"""BIO labels of the student: spans -> first-sub-token labels, and label probabilities -> spans, on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
from tokenizers import Tokenizer

from services.domain import Role, Tag
from services.settings import Settings
from services.student.bio import IGNORE, LABEL_IDS, LABELS, decode_spans, label_tokens, load_tokenizer, words
from tests.fixtures.student import tiny_gold


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return load_tokenizer(Settings().resolved_embedding_model_path() / "tokenizer.json")


def tag(role: Role, text: str, query: str, occurrence: int = 0) -> Tag:
    start = -1
    for _ in range(occurrence + 1):
        start = query.index(text, start + 1)
    return Tag(role, start, start + len(text), text, text)


def word_labels(tokenizer: Tokenizer, query: str, spans: list[Tag]) -> list[str]:
    encoding = tokenizer.encode(query)
    labelled = label_tokens(encoding, spans)
    return [LABELS[labelled.label_ids[w.token]] for w in words(encoding)]


def one_hot(tokenizer: Tokenizer, query: str, labels_per_word: list[str], confidence: float = 0.9) -> np.ndarray:
    """Label probabilities: each word's first sub-token puts ``confidence`` on its label; the rest are O."""
    encoding = tokenizer.encode(query)
    rest = (1 - confidence) / (len(LABELS) - 1)
    probabilities = np.full((len(encoding.ids), len(LABELS)), rest, dtype=np.float32)
    probabilities[:, LABEL_IDS["O"]] = confidence
    for word, label in zip(words(encoding), labels_per_word, strict=True):
        probabilities[word.token] = rest
        probabilities[word.token, LABEL_IDS[label]] = confidence
    return probabilities


def test_labels_are_o_and_b_i_of_each_role() -> None:
    assert LABELS == ("O", "B-product", "I-product", "B-brand", "I-brand", "B-attribute", "I-attribute")


def test_each_word_gets_its_role_with_b_on_the_first(tokenizer: Tokenizer) -> None:
    query = "happy farms organic greek yogurt"
    spans = [
        tag(Role.BRAND, "happy farms", query),
        tag(Role.ATTRIBUTE, "organic", query),
        tag(Role.PRODUCT, "greek yogurt", query),
    ]
    assert word_labels(tokenizer, query, spans) == [
        "B-brand", "I-brand", "B-attribute", "B-product", "I-product",
    ]  # fmt: skip


def test_only_the_first_sub_token_is_labelled_and_special_tokens_are_ignored(tokenizer: Tokenizer) -> None:
    query = "ben and jerrys"
    encoding = tokenizer.encode(query)
    assert encoding.tokens == ["[CLS]", "ben", "and", "jerry", "##s", "[SEP]"]
    labelled = label_tokens(encoding, [tag(Role.BRAND, query, query)])
    assert labelled.label_ids == [
        IGNORE, LABEL_IDS["B-brand"], LABEL_IDS["I-brand"], LABEL_IDS["I-brand"], IGNORE, IGNORE,
    ]  # fmt: skip
    assert labelled.unaligned == 0


def test_a_number_with_a_decimal_point_is_several_words_of_one_span(tokenizer: Tokenizer) -> None:
    query = "1.5 oz milk"
    spans = [tag(Role.ATTRIBUTE, "1.5 oz", query), tag(Role.PRODUCT, "milk", query)]
    assert word_labels(tokenizer, query, spans) == [
        "B-attribute",
        "I-attribute",
        "I-attribute",
        "I-attribute",
        "B-product",
    ]


def test_a_span_off_word_boundaries_is_left_out_and_counted(tokenizer: Tokenizer) -> None:
    query = "farmstand milk"
    inside_a_word = Tag(Role.BRAND, 0, 4, "farm", "farm")
    labelled = label_tokens(tokenizer.encode(query), [inside_a_word, tag(Role.PRODUCT, "milk", query)])
    assert labelled.unaligned == 1
    assert word_labels(tokenizer, query, [inside_a_word]) == ["O", "O"]


def test_decoding_gives_spans_on_the_query_with_mean_confidence(tokenizer: Tokenizer) -> None:
    query = "acme low fat milk by blue hill"
    labels = ["B-brand", "B-attribute", "I-attribute", "B-product", "O", "B-brand", "I-brand"]
    tags = decode_spans(query, tokenizer.encode(query), one_hot(tokenizer, query, labels))
    assert [(t.role, t.text, t.start, t.end) for t in tags] == [
        (Role.BRAND, "acme", 0, 4),
        (Role.ATTRIBUTE, "low fat", 5, 12),
        (Role.PRODUCT, "milk", 13, 17),
        (Role.BRAND, "blue hill", 21, 30),
    ]
    assert all(t.canonical == t.text and t.confidence == pytest.approx(0.9) for t in tags)


def test_a_lone_i_opens_a_span_and_a_role_change_closes_one(tokenizer: Tokenizer) -> None:
    query = "organic whole milk pasta"
    labels = ["I-attribute", "B-product", "I-product", "I-attribute"]
    tags = decode_spans(query, tokenizer.encode(query), one_hot(tokenizer, query, labels))
    assert [(t.role, t.text) for t in tags] == [
        (Role.ATTRIBUTE, "organic"),
        (Role.PRODUCT, "whole milk"),
        (Role.ATTRIBUTE, "pasta"),
    ]


def test_sub_token_labels_do_not_split_a_word(tokenizer: Tokenizer) -> None:
    query = "jerrys milk"
    encoding = tokenizer.encode(query)
    probabilities = one_hot(tokenizer, query, ["B-brand", "B-product"])
    second_piece = encoding.tokens.index("##s")
    probabilities[second_piece] = 0.0
    probabilities[second_piece, LABEL_IDS["B-attribute"]] = 1.0  # ignored: not the word's first sub-token
    assert [(t.role, t.text) for t in decode_spans(query, encoding, probabilities)] == [
        (Role.BRAND, "jerrys"),
        (Role.PRODUCT, "milk"),
    ]


def test_labels_decode_back_to_the_gold_spans(tokenizer: Tokenizer) -> None:
    for gold in tiny_gold():
        encoding = tokenizer.encode(gold.query)
        labelled = label_tokens(encoding, gold.spans)
        probabilities = np.zeros((len(encoding.ids), len(LABELS)), dtype=np.float32)
        for position, label_id in enumerate(labelled.label_ids):
            probabilities[position, LABEL_IDS["O"] if label_id == IGNORE else label_id] = 1.0
        assert decode_spans(gold.query, encoding, probabilities) == list(gold.spans), gold.query
