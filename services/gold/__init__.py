"""Gold (labelled) queries: the traffic generator's labels and QueryNER, read into one shape.

Evaluation (``qu eval``) scores predictions against them; the student's training reads the same
records. Spans index the query text as held in :class:`GoldQuery` (QueryNER: its tokens joined
by single spaces).
"""

from services.gold.model import GoldQuery
from services.gold.qu_labels import read_qu_labels
from services.gold.queryner import QUERYNER_ROLES, read_queryner

__all__ = ["QUERYNER_ROLES", "GoldQuery", "read_qu_labels", "read_queryner"]
