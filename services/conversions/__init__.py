"""Conversion history: per normalized query, the categories and brands shoppers converted on.

Built offline from a conversion log (:func:`build_conversions`) and read by the teacher's
context and the category re-ranker (:meth:`ConversionHistory.load`, then ``get(query)``).
"""

from services.conversions.build import ConversionsBuildReport, build_conversions
from services.conversions.history import BrandCount, CategoryCount, QueryConversions, roll_up
from services.conversions.store import ConversionHistory, ConversionsNotFoundError

__all__ = [
    "BrandCount",
    "CategoryCount",
    "ConversionHistory",
    "ConversionsBuildReport",
    "ConversionsNotFoundError",
    "QueryConversions",
    "build_conversions",
    "roll_up",
]
