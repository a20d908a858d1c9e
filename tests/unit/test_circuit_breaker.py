"""The circuit breaker's bookkeeping, on a clock the test moves."""

from __future__ import annotations

import pytest

from services.circuit_breaker import CircuitBreaker, CircuitOpen, CircuitState
from services.errors import ServiceUnavailable


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def changes() -> list[tuple[CircuitState, CircuitState]]:
    return []


@pytest.fixture
def breaker(clock: Clock, changes: list[tuple[CircuitState, CircuitState]]) -> CircuitBreaker:
    return CircuitBreaker(
        "redis",
        failure_threshold=3,
        open_s=2.0,
        setting_hint=" (QU_BREAKER_OPEN_S)",
        clock=clock,
        on_state_change=lambda _name, old, new, _err: changes.append((old, new)),
    )


def fail(breaker: CircuitBreaker, times: int) -> None:
    for i in range(times):
        breaker.check()
        breaker.failed(ServiceUnavailable(f"timeout {i}"))


def test_it_opens_after_the_threshold_of_consecutive_failures_and_refuses_at_once(breaker: CircuitBreaker) -> None:
    fail(breaker, 2)
    breaker.check()
    breaker.succeeded()  # a success in between: the count starts again
    fail(breaker, 2)
    assert breaker.state is CircuitState.CLOSED
    fail(breaker, 1)
    assert breaker.state is CircuitState.OPEN and breaker.opened == 1
    with pytest.raises(CircuitOpen) as refused:
        breaker.check()
    message = str(refused.value)
    assert "redis" in message and "3 times in a row" in message and "timeout 0" in message
    assert "QU_BREAKER_OPEN_S" in message and "next try is in 2.00 s" in message
    assert isinstance(refused.value, ServiceUnavailable)  # callers degrade on it as on any outage
    assert breaker.rejected == 1


def test_one_probe_after_open_s_and_its_success_closes_the_circuit(
    breaker: CircuitBreaker, clock: Clock, changes: list[tuple[CircuitState, CircuitState]]
) -> None:
    fail(breaker, 3)
    clock.now += 1.9
    with pytest.raises(CircuitOpen):
        breaker.check()
    clock.now += 0.2
    breaker.check()  # the probe
    assert breaker.state is CircuitState.HALF_OPEN
    with pytest.raises(CircuitOpen):
        breaker.check()  # only one probe at a time: the others still degrade at once
    breaker.succeeded()
    assert breaker.state is CircuitState.CLOSED and breaker.consecutive_failures == 0
    breaker.check()
    assert changes == [
        (CircuitState.CLOSED, CircuitState.OPEN),
        (CircuitState.OPEN, CircuitState.HALF_OPEN),
        (CircuitState.HALF_OPEN, CircuitState.CLOSED),
    ]


def test_a_failed_probe_opens_it_for_another_open_s(breaker: CircuitBreaker, clock: Clock) -> None:
    fail(breaker, 3)
    clock.now += 2.0
    breaker.check()
    breaker.failed(ServiceUnavailable("still down"))
    assert breaker.state is CircuitState.OPEN and breaker.opened == 2
    clock.now += 1.0
    with pytest.raises(CircuitOpen, match="still down"):
        breaker.check()
    clock.now += 1.0
    breaker.check()
    assert breaker.state is CircuitState.HALF_OPEN


def test_a_probe_that_never_reports_does_not_wedge_the_circuit(breaker: CircuitBreaker, clock: Clock) -> None:
    fail(breaker, 3)
    clock.now += 2.0
    breaker.check()  # the probe's caller is cancelled and reports nothing
    clock.now += 2.0
    breaker.check()  # another call probes instead
    breaker.succeeded()
    assert breaker.state is CircuitState.CLOSED


def test_late_failures_of_calls_let_through_before_it_opened_do_not_extend_the_open_time(
    breaker: CircuitBreaker, clock: Clock
) -> None:
    fail(breaker, 3)
    clock.now += 1.5
    breaker.failed(ServiceUnavailable("late"))
    assert breaker.opened == 1
    clock.now += 0.5
    breaker.check()
    assert breaker.state is CircuitState.HALF_OPEN


@pytest.mark.parametrize(("threshold", "open_s"), [(0, 1.0), (1, 0.0)])
def test_bad_settings_are_named(threshold: int, open_s: float) -> None:
    with pytest.raises(ValueError, match="QU_BREAKER_FAILURES"):
        CircuitBreaker("x", failure_threshold=threshold, open_s=open_s)


def test_the_student_client_stops_calling_a_dead_triton_and_probes_it_after_open_s(clock: Clock) -> None:
    import asyncio

    from services.stack.ports import free_port
    from services.student.client import StudentClient, StudentUnavailable

    breaker = CircuitBreaker("student", failure_threshold=3, open_s=5.0, clock=clock)
    client = StudentClient(
        f"127.0.0.1:{free_port()}", "qu_student", deadline_ms=500, batch_window_ms=0, max_batch=4, breaker=breaker
    )

    async def ask() -> BaseException:
        try:
            await client.understand("milk")
        except StudentUnavailable as err:
            return err
        except CircuitOpen as err:
            return err
        raise AssertionError("nothing listens there: the call cannot succeed")

    async def scenario() -> None:
        try:
            for _ in range(3):
                assert not isinstance(await ask(), CircuitOpen)
            sent = client.requests_sent
            refused = await ask()
            assert isinstance(refused, CircuitOpen) and "student" in str(refused)
            assert client.requests_sent == sent  # refused before any request was made
            clock.now += 5.0
            assert not isinstance(await ask(), CircuitOpen)  # the probe went to Triton
            assert client.requests_sent == sent + 1 and breaker.state is CircuitState.OPEN
        finally:
            await client.close()

    asyncio.run(scenario())
