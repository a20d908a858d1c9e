"""A circuit breaker for the real-time path's dependencies (Redis, Triton): fail fast while one is down.

Without it every batch pays the dependency's full timeout while it is down or hung: Redis blackholed
cost each batch the socket timeout, a Triton past its deadline cost every miss the whole deadline, and
a stream at hundreds of events a second fell behind for as long as the outage lasted. With it, after
``failure_threshold`` consecutive failures the circuit *opens*: calls fail at once (the caller degrades:
no cache, or the lexicon fallback) for ``open_s``; then exactly one call, the *probe*, is let through.
Its success closes the circuit; its failure opens it for another ``open_s``. So an outage costs one
timeout per ``open_s`` instead of one per batch, and the dependency is back in use within ``open_s`` of
its return.

Why not a library: purgatory (the maintained asyncio one) measures the open time on the wall clock,
lets every concurrent call through while half-open (a whole batch of misses would wait the deadline
again at each probe) and raises one shared exception instance while open, whose traceback grows with
every raise on a hot path. This one is synchronous bookkeeping around the caller's own awaits: a few
attribute reads per call, on the event loop's thread only (not thread-safe, by design).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from enum import Enum

from services.errors import ServiceUnavailable

log = logging.getLogger(__name__)


class CircuitState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"  # one probe is in flight


class CircuitOpen(ServiceUnavailable):
    """The dependency failed repeatedly and is not asked again until the circuit's probe succeeds."""


# Called with (circuit name, old state, new state, the failure that caused it or None).
OnStateChange = Callable[[str, CircuitState, CircuitState, BaseException | None], None]


class CircuitBreaker:
    """``breaker.check()`` before a call, then ``breaker.succeeded()`` or ``breaker.failed(err)`` after it.

    A call that was let through and reports nothing (cancelled, say) does not wedge the circuit: a probe
    not reported within ``open_s`` counts as failed and the next call probes again.
    """

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int,
        open_s: float,
        setting_hint: str = "",
        clock: Callable[[], float] = time.monotonic,
        on_state_change: OnStateChange | None = None,
    ) -> None:
        if failure_threshold < 1 or open_s <= 0:
            raise ValueError(
                f"a circuit needs failure_threshold >= 1 and open_s > 0, got {failure_threshold} and {open_s} "
                "(QU_BREAKER_FAILURES, QU_BREAKER_OPEN_S)"
            )
        self.name = name
        self.failure_threshold = failure_threshold
        self.open_s = open_s
        self.setting_hint = setting_hint
        self._clock = clock
        self._on_state_change = on_state_change or _log_state_change
        self.state = CircuitState.CLOSED
        self.consecutive_failures = 0
        self.rejected = 0  # calls refused while open: each one a timeout not waited for
        self.opened = 0  # times the circuit opened
        self._until = 0.0  # OPEN: when the next probe may go; HALF_OPEN: when the probe counts as lost
        self._last_error: BaseException | None = None

    def check(self) -> None:
        """Return if the call may go ahead; raise :class:`CircuitOpen` (at once) if not."""
        if self.state is CircuitState.CLOSED:
            return
        now = self._clock()
        if now >= self._until:
            # OPEN: time for a probe. HALF_OPEN: the probe never reported; this call probes instead.
            self._until = now + self.open_s
            self._set(CircuitState.HALF_OPEN, None)
            return
        self.rejected += 1
        raise CircuitOpen(
            f"{self.name} is not asked: it failed {self.consecutive_failures} times in a row, the last with "
            f"{self._last_error!s:.300}; the next try is in {self._until - now:.2f} s{self.setting_hint}"
        )

    def succeeded(self) -> None:
        self.consecutive_failures = 0
        if self.state is not CircuitState.CLOSED:
            self._set(CircuitState.CLOSED, None)

    def failed(self, error: BaseException) -> None:
        self.consecutive_failures += 1
        self._last_error = error
        if self.state is CircuitState.HALF_OPEN or (
            self.state is CircuitState.CLOSED and self.consecutive_failures >= self.failure_threshold
        ):
            self._until = self._clock() + self.open_s
            self.opened += 1
            self._set(CircuitState.OPEN, error)
        # OPEN already: a call let through before it opened failed late; the open time is not extended.

    def _set(self, state: CircuitState, error: BaseException | None) -> None:
        old, self.state = self.state, state
        self._on_state_change(self.name, old, state, error)


def _log_state_change(name: str, old: CircuitState, new: CircuitState, error: BaseException | None) -> None:
    # One line per transition (at most two per open_s during an outage), never one per refused call.
    if new is CircuitState.OPEN:
        log.warning("circuit %s opened (was %s): %s", name, old.value, error)
    elif new is CircuitState.CLOSED:
        log.warning("circuit %s closed: it answers again", name)
    else:
        log.info("circuit %s half-open: one probe call goes through", name)
