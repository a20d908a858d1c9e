"""The root of the engine's exceptions: every error the engine raises on purpose derives from it."""

from __future__ import annotations


class QuError(Exception):
    """Base class for errors the engine raises on purpose (bad input, bad state, bad settings)."""


class ServiceUnavailable(QuError):
    """A service the engine depends on (Redis, Triton, Kafka) did not answer in time; callers degrade."""


class InputError(QuError):
    """A file or record given to the engine is invalid; the message names the file, row and column."""

    def __init__(
        self, source: str, reason: str, *, row: int | None = None, column: str | None = None, problem: str = ""
    ) -> None:
        self.source = source
        self.row = row
        self.column = column
        self.reason = reason
        # The kind of problem without the offending value, to count skipped records by it.
        self.problem = problem or reason
        where = source
        if row is not None:
            where += f", row {row}"
        if column is not None:
            where += f", column {column!r}"
        super().__init__(f"{where}: {reason}")


class InvalidAnswer(ServiceUnavailable):
    """A service answered in time, but its answer is unusable (e.g. a student's TAGS_JSON that is not an
    Understanding): the caller degrades as for an outage, but the service is up and a circuit must not open."""
