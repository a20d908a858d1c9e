"""Quality figures (``qu eval``): SRL spans, category accuracy and rewrites, scored against gold labels.

- :mod:`~services.span_scores` (below ``services/``' other packages: student training scores with it too):
  exact-match span precision/recall/F1 per role, micro-averaged;
- :mod:`~services.evaluation.categories`: top-1 / top-3 category path accuracy;
- :mod:`~services.evaluation.rewrites`: rewrite coverage and precision (defined there);
- :mod:`~services.evaluation.predictors` and :mod:`~services.evaluation.registry`: what is scored;
- :mod:`~services.evaluation.run`: reading gold files and asking predictors in batches.
"""

from services.evaluation.categories import CategoryAccuracy
from services.evaluation.predictors import NormalizingPredictor, PredictionError, Predictor
from services.evaluation.registry import PREDICTOR_FACTORIES, PredictorEnv, build_predictor
from services.evaluation.rewrites import CatalogRetriever, RewriteScores
from services.evaluation.run import GoldFormat, load_gold, predict_all, score_categories, score_spans_of
from services.span_scores import Counts, SpanScores, score_spans

__all__ = [
    "PREDICTOR_FACTORIES",
    "CatalogRetriever",
    "CategoryAccuracy",
    "Counts",
    "GoldFormat",
    "NormalizingPredictor",
    "PredictionError",
    "Predictor",
    "PredictorEnv",
    "RewriteScores",
    "SpanScores",
    "build_predictor",
    "load_gold",
    "predict_all",
    "score_categories",
    "score_spans",
    "score_spans_of",
]
