"""Predictors by name: what ``qu eval --model NAME_OR_VERSION`` can score.

``PREDICTOR_FACTORIES`` is the registration point: a name -> a function of :class:`PredictorEnv`
that builds a :class:`~services.evaluation.predictors.Predictor`. A model that answers batches
of normalized queries is one line, e.g.::

    PREDICTOR_FACTORIES["onnx"] = lambda env: env.wrap("onnx", OnnxStudent(...).predict_batch)

``env.wrap`` normalizes the gold text, maps tag offsets back and applies the real-time guardrails
(see :mod:`services.evaluation.predictors`). The teacher registers itself here as ``"teacher"``
(its answers are already guardrailed by its pipeline: pass ``guarded=False``).

A bare number N (or ``student:N``) is version N of the Triton student; ``student`` is the version
Triton serves by default. Both answer as the real-time path does: Triton, then the guardrails.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from functools import cached_property
from pathlib import Path

from services.catalog.artifacts import Catalog, load_catalog
from services.domain import Understanding
from services.embeddings import SentenceEmbedder
from services.errors import QuError
from services.evaluation.predictors import BatchAnswer, NormalizingPredictor, Predictor, lexicon_answer
from services.evaluation.triton_student import TritonStudentAnswer
from services.guardrails import Guardrails
from services.settings import Settings
from services.tagging import SUGGESTED_PRIOR_WEIGHT

__all__ = ["PREDICTOR_FACTORIES", "PredictorEnv", "UnknownPredictor", "build_predictor", "predictor_names"]

_VERSION = re.compile(r"(?:student:)?(\d+)")


class UnknownPredictor(QuError):
    pass


class PredictorEnv:
    """What a predictor factory may need, each loaded on first use: settings, the catalog, MiniLM, guardrails."""

    def __init__(self, settings: Settings, catalog_dir: Path | None = None, *, guardrails: bool = True) -> None:
        self.settings = settings
        self.catalog_dir = catalog_dir or settings.resolved_catalog_dir
        # False scores a model's raw answer: what the tagger does, not what the engine would publish. The
        # catalog guardrails drop every tag outside the grocery catalog, so on general queries (QueryNER)
        # only the raw answer says how well the model tags.
        self.guardrails_on = guardrails

    @cached_property
    def catalog(self) -> Catalog:
        return load_catalog(self.catalog_dir)

    @cached_property
    def embedder(self) -> SentenceEmbedder:
        return self.settings.embedder()

    @cached_property
    def guardrails(self) -> Guardrails:
        # As the real-time path checks a student's answer: thresholds from settings, no embedder.
        return Guardrails.from_settings(self.catalog, self.settings)

    def wrap(
        self,
        name: str,
        answer: BatchAnswer,
        *,
        guarded: bool = True,
        close: Callable[[], Awaitable[None]] | None = None,
    ) -> NormalizingPredictor:
        guard = self._guard if guarded and self.guardrails_on else None
        return NormalizingPredictor(name, answer, guard=guard, close=close)

    def _guard(self, understanding: Understanding, normalized: str) -> Understanding:
        # The catalog loads on the first answer, not when the predictor is built.
        return self.guardrails.check(understanding, normalized)[0]


PredictorFactory = Callable[[PredictorEnv], Predictor]


def _lexicon(env: PredictorEnv) -> Predictor:
    return env.wrap("lexicon", lexicon_answer(env.catalog, env.embedder))


def _lexicon_exact(env: PredictorEnv) -> Predictor:
    return env.wrap("lexicon-exact", lexicon_answer(env.catalog, env.embedder, spelling=False))


def _lexicon_prior(env: PredictorEnv) -> Predictor:
    answer = lexicon_answer(env.catalog, env.embedder, prior_weight=SUGGESTED_PRIOR_WEIGHT)
    return env.wrap("lexicon-prior", answer)


def _teacher(env: PredictorEnv) -> Predictor:
    # Imported here: the teacher pulls in its prompts and context builder, which other predictors do not need.
    from services.evaluation.teacher_predictor import TeacherAnswer
    from services.teacher.catalog_teacher import CatalogTeacher

    answer = TeacherAnswer(env.settings, env.catalog, env.embedder, CatalogTeacher(env.catalog))
    return env.wrap("teacher", answer, guarded=False)


def _teacher_llm(hybrid: bool) -> PredictorFactory:
    """The LLM teacher (QU_TEACHER_BASE_URL, QU_TEACHER_MODEL) through the same pipeline; ``hybrid``: with the
    catalog teacher behind it and the policy `qu teacher choose` saved (catalog-only without one)."""

    def build(env: PredictorEnv) -> Predictor:
        from services.evaluation.teacher_predictor import TeacherAnswer
        from services.teacher.llm_client import OpenAIChatBackend
        from services.teacher.runtime import hybrid_policy

        backend = OpenAIChatBackend.from_settings(env.settings)
        policy = hybrid_policy(env.settings) if hybrid else None
        answer = TeacherAnswer(env.settings, env.catalog, env.embedder, backend, hybrid=policy)
        name = "teacher-hybrid" if hybrid else "teacher-llm"
        return env.wrap(name, answer, guarded=False, close=backend.aclose)

    return build


def _onnx(where: str) -> PredictorFactory:
    """An exported student version in-process: ``onnx:N`` (version N of STATE_DIR's published store) or
    ``onnx:DIR`` (a version directory)."""

    def build(env: PredictorEnv) -> Predictor:
        from services.student.export.publish import published_store
        from services.student.onnx_student import OnnxStudent

        directory = published_store(env.settings.state_dir) / where if where.isdigit() else Path(where)
        if not directory.is_dir():
            raise UnknownPredictor(f"no exported student version at {directory} (see `qu student export`)")
        student = OnnxStudent(directory, env.catalog_dir)

        async def close() -> None:
            student.close()

        return env.wrap(f"onnx:{where}", student.understand, close=close)

    return build


def _triton(version: str) -> PredictorFactory:
    def build(env: PredictorEnv) -> Predictor:
        answer = TritonStudentAnswer(env.settings.triton_grpc_url, env.settings.student_model, version)
        return env.wrap(f"student:{version}" if version else "student", answer, close=answer.close)

    return build


PREDICTOR_FACTORIES: dict[str, PredictorFactory] = {
    # The catalog-lexicon tagger + MiniLM category ranking, in-process (what qu_student version 1 serves).
    "lexicon": _lexicon,
    # The same without spelling tolerance: exact matches only (what the slips add is lexicon minus this).
    "lexicon-exact": _lexicon_exact,
    # The same with the catalog's placement of the tagged product type in the category order.
    "lexicon-prior": _lexicon_prior,
    # The student on Triton (QU_TRITON_GRPC_URL, QU_STUDENT_MODEL), the default version.
    "student": _triton(""),
    # The deterministic catalog-grounded teacher through the teacher's pipeline (context, prompts, guardrails).
    "teacher": _teacher,
    # The LLM teacher alone, and the hybrid (the LLM proposes, the catalog teacher stands behind it).
    "teacher-llm": _teacher_llm(hybrid=False),
    "teacher-hybrid": _teacher_llm(hybrid=True),
    # "onnx:N" / "onnx:DIR": an exported student version, in-process (build_predictor below).
}


def predictor_names() -> list[str]:
    return sorted(PREDICTOR_FACTORIES)


def build_predictor(name_or_version: str, env: PredictorEnv) -> Predictor:
    """The predictor registered as ``name_or_version``, or version N of the Triton student for "N"/"student:N"."""
    factory = PREDICTOR_FACTORIES.get(name_or_version)
    if factory is None and name_or_version.startswith("onnx:"):
        factory = _onnx(name_or_version.removeprefix("onnx:"))
    if factory is None:
        version = _VERSION.fullmatch(name_or_version)
        if version is None:
            raise UnknownPredictor(
                f"no predictor named {name_or_version!r}: use one of {', '.join(predictor_names())}, "
                "a Triton student version number (e.g. 2 or student:2), or onnx:N / onnx:DIR (in-process)"
            )
        factory = _triton(version.group(1))
    return factory(env)
