"""Errors of the head-tag cache. Callers on the real-time path catch ``ServiceUnavailable`` (which
:class:`CacheUnavailable` is) and answer from the student instead; nothing here is retried behind
the caller's back beyond one immediate reconnect."""

from __future__ import annotations

from services.errors import QuError, ServiceUnavailable


class CacheError(QuError):
    """The cache could not do what was asked (the message says which command and why)."""


class CacheUnavailable(CacheError, ServiceUnavailable):
    """Redis did not answer in time, refused the connection, or failed a read: down, restarting,
    overloaded or misconfigured. A lookup that raises this is a miss the caller must degrade on."""
