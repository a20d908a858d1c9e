"""Gold (labelled) queries: the traffic generator's labels, QueryNER and character-span BIO sets, read into one shape.

Evaluation (``qu eval``) scores predictions against them; the student's training reads the same
records. Spans index the query text as held in :class:`GoldQuery` (QueryNER: its tokens joined
by single spaces).
"""

from services.gold.bio_spans import parse_label_map, read_bio_spans
from services.gold.model import GoldQuery
from services.gold.qu_labels import read_qu_labels
from services.gold.queryner import QUERYNER_ROLES, read_queryner

__all__ = ["QUERYNER_ROLES", "GoldQuery", "parse_label_map", "read_bio_spans", "read_qu_labels", "read_queryner"]
