"""``qu eval`` against the student on a real Triton: a pinned version answers as the in-process lexicon does.

qu_student version 1 is the catalog-lexicon tagger + MiniLM category ranking, so the Triton
predictor (``--model 1``) and the in-process ``lexicon`` predictor must give the same answers and
the same figures; a version Triton does not serve is an error naming it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from services.domain import Understanding
from services.evaluation import PredictionError, PredictorEnv, build_predictor, predict_all
from services.settings import Settings
from services.stack.triton_server import TritonServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUERIES = ["Organic Bananas", "happy baby spinach", "Kellogg's Special K 12oz", "!!!", "x large zip lock", "milk"]


def test_a_pinned_triton_version_answers_as_the_in_process_lexicon(
    triton_server: TritonServer, student_catalog_dir: Path, clean_env: None, tmp_path: Path
) -> None:
    env = PredictorEnv(Settings(state_dir=tmp_path, triton_grpc_url=triton_server.grpc_url), student_catalog_dir)

    async def both() -> tuple[list[Understanding], list[Understanding]]:
        triton = build_predictor("1", env)
        lexicon = build_predictor("lexicon", env)
        try:
            return await predict_all(triton, QUERIES, batch_size=4), await predict_all(lexicon, QUERIES)
        finally:
            await triton.close()
            await lexicon.close()

    served, in_process = asyncio.run(both())
    assert [u.to_json()["tags"] for u in served] == [u.to_json()["tags"] for u in in_process]
    assert [[c.path for c in u.categories] for u in served] == [[c.path for c in u.categories] for u in in_process]
    assert served[3] == Understanding()  # no words: not sent
    kelloggs = served[2].tags
    assert (kelloggs[0].start, kelloggs[0].end, kelloggs[0].text) == (
        0,
        9,
        "Kellogg's",
    )  # offsets of the query as given


def test_a_version_triton_does_not_serve_is_named(
    triton_server: TritonServer, student_catalog_dir: Path, clean_env: None, tmp_path: Path
) -> None:
    env = PredictorEnv(Settings(state_dir=tmp_path, triton_grpc_url=triton_server.grpc_url), student_catalog_dir)
    predictor = build_predictor("student:99", env)

    async def ask() -> None:
        try:
            await predictor.predict(["milk"])
        finally:
            await predictor.close()

    with pytest.raises(PredictionError, match=r"qu_student version 99 at .* is not loaded"):
        asyncio.run(ask())
