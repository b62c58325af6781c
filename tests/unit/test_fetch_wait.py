"""The fetch wait follows how busy the drain loop is (stream/runtime/fetch_wait.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from stream.runtime.fetch_wait import BUSY_HIGH, BUSY_LOW, WINDOW_S, FetchWait, wait_for

busy = st.floats(min_value=0.0, max_value=1.0)
waits = st.tuples(st.integers(1, 100), st.integers(1, 500))


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


@given(st.lists(st.tuples(st.floats(0.0, 0.05), st.floats(0.0, 0.2)), max_size=200))
def test_a_window_changes_the_wait_once_and_to_its_own_share(batches: list[tuple[float, float]]) -> None:
    """Batches of (handling time, then idle time): at each window's end the wait is that of the
    window's busy share, reported only when it changed; nothing is reported within a window."""
    now = 0.0
    pacing = FetchWait(10, 30, now)
    since, handled, current = now, 0.0, 10
    for seconds, idle in batches:
        now += seconds
        handled += seconds
        changed = pacing.handled(seconds, now)
        if now - since < WINDOW_S:
            assert changed is None
        else:
            expected = wait_for(handled / (now - since), 10, 30)
            assert changed == (expected if expected != current else None)
            current, since, handled = expected, now, 0.0
        assert pacing.wait_ms == current
        now += idle
