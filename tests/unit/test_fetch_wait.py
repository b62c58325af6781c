"""The fetches follow how busy the drain loop is (stream/runtime/fetch_wait.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from stream.runtime.fetch_wait import (
    ANY_RECORD,
    BUSY_HIGH,
    BUSY_IDLE,
    BUSY_LOW,
    WINDOW_S,
    FetchAsk,
    FetchWait,
    wait_for,
)

busy = st.floats(min_value=0.0, max_value=1.0)
waits = st.tuples(st.integers(1, 100), st.integers(1, 500))
MIN_BYTES = 65536


@given(busy, busy, waits)
def test_the_wait_stays_between_floor_and_ceiling_and_grows_with_the_load(
        a: float, b: float, bounds: tuple[int, int]) -> None:
    floor, ceiling = bounds
    low, high = sorted((a, b))
    wa, wb = wait_for(low, floor, ceiling), wait_for(high, floor, ceiling)
    assert floor <= wa <= wb <= max(floor, ceiling)


@given(busy, waits)
def test_the_ends_of_the_range(load: float, bounds: tuple[int, int]) -> None:
    floor, ceiling = bounds
    if ceiling <= floor:  # turned off: always the floor
        assert wait_for(load, floor, ceiling) == floor
        return
    if load <= BUSY_LOW:
        assert wait_for(load, floor, ceiling) == floor
    if load >= BUSY_HIGH:
        assert wait_for(load, floor, ceiling) == ceiling


def _expected(share: float, was_idle: bool, floor: int, ceiling: int, idle_ms: int) -> tuple[FetchAsk, bool]:
    """The ask after a window busy `share` of the time, and whether the loop is idle then."""
    idle = idle_ms > floor and (share < BUSY_IDLE or (was_idle and share <= BUSY_LOW))
    if idle:
        return FetchAsk(idle_ms, ANY_RECORD), True
    return FetchAsk(wait_for(share, floor, ceiling), MIN_BYTES), False


@given(st.lists(st.tuples(st.floats(0.0, 0.05), st.floats(0.0, 0.2)), max_size=200),
       st.sampled_from([(10, 30, 100), (10, 30, 10), (10, 10, 100), (5, 60, 500)]))
def test_a_window_changes_the_ask_once_and_to_its_own_share(
        batches: list[tuple[float, float]], config: tuple[int, int, int]) -> None:
    """Batches of (handling time, then idle time): at each window's end the ask is that of the
    window's busy share (and of whether the loop was idle before), reported only when it changed;
    nothing is reported within a window."""
    floor, ceiling, idle_ms = config
    now = 0.0
    pacing = FetchWait(MIN_BYTES, floor, ceiling, idle_ms, now)
    since, handled, current, idle = now, 0.0, FetchAsk(floor, MIN_BYTES), False
    for seconds, pause in batches:
        now += seconds
        handled += seconds
        changed = pacing.handled(seconds, now)
        if now - since < WINDOW_S:
            assert changed is None
        else:
            expected, idle = _expected(handled / (now - since), idle, floor, ceiling, idle_ms)
            assert changed == (expected if expected != current else None)
            current, since, handled = expected, now, 0.0
        assert pacing.ask == current and pacing.idle == idle
        now += pause


@given(st.lists(busy, min_size=1, max_size=50))
def test_idle_asks_for_any_record_and_busy_for_batches(shares: list[float]) -> None:
    """Under BUSY_IDLE the loop asks for any record with the idle wait; above BUSY_LOW for the
    minimum size with the batched wait; between them it keeps what it asked before."""
    pacing = FetchWait(MIN_BYTES, 10, 30, 100, 0.0)
    now, before = 0.0, pacing.ask
    for share in shares:
        now += WINDOW_S
        pacing.handled(share * WINDOW_S, now)
        if share < BUSY_IDLE:
            assert pacing.ask == FetchAsk(100, ANY_RECORD)
        elif share > BUSY_LOW:
            assert pacing.ask == FetchAsk(wait_for(share, 10, 30), MIN_BYTES)
        elif before.min_bytes == ANY_RECORD:
            assert pacing.ask == before
        else:
            assert pacing.ask == FetchAsk(10, MIN_BYTES)
        before = pacing.ask


def test_off_when_neither_the_ceiling_nor_the_idle_wait_is_above_the_floor() -> None:
    assert FetchWait.when_on(MIN_BYTES, 10, 10, 10, 0.0) is None
    assert FetchWait.when_on(MIN_BYTES, 10, 30, 10, 0.0) is not None
    assert FetchWait.when_on(MIN_BYTES, 10, 10, 100, 0.0) is not None
