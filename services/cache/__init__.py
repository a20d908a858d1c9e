"""The head-tag cache: teacher answers for head queries in Redis, one run active at a time.

Readers: :class:`HeadTagStore` (batches) behind :class:`BatchingHeadTagLookup` (single lookups).
Writers: :class:`HeadTagWriter`, driven by :class:`HeadTagRefresher` from ``qu.head-tags.v1``, which binds
every entry to the catalog first (:class:`HeadTagAdmission`).
The key layout is documented in :mod:`services.cache.keys`.
"""

from services.cache.admission import HeadTagAdmission
from services.cache.errors import CacheError, CacheUnavailable
from services.cache.head_tags import BatchingHeadTagLookup, HeadTagStore, connect_head_tag_cache
from services.cache.keys import CachedHeadTags, HeadTagKeys
from services.cache.publish import PublishError, publish_head_tags
from services.cache.refresher import HeadTagRefresher, RefresherCounters, RefresherError
from services.cache.writer import Activation, ActivationStatus, HeadTagWriter, RetiredRunError

__all__ = [
    "Activation",
    "ActivationStatus",
    "BatchingHeadTagLookup",
    "CacheError",
    "CacheUnavailable",
    "CachedHeadTags",
    "HeadTagAdmission",
    "HeadTagKeys",
    "HeadTagRefresher",
    "HeadTagStore",
    "HeadTagWriter",
    "PublishError",
    "RefresherCounters",
    "RefresherError",
    "RetiredRunError",
    "connect_head_tag_cache",
    "publish_head_tags",
]
