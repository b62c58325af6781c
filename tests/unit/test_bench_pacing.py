"""The latency driver's pacing (stream/bench/suite.py: `pace`): it never hands librdkafka a wait
shorter than it can make (a sub-millisecond poll returns at once, so the driver spun a core at
2k/s), and it returns only once the ping is due."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from stream.bench import suite


@given(due_in=st.floats(min_value=-0.01, max_value=0.05),
       fractions=st.lists(st.floats(min_value=0.01, max_value=1.0), min_size=1, max_size=50))
def test_pace_waits_at_least_a_millisecond_and_until_due(due_in: float, fractions: list[float]) -> None:
    clock = [100.0]
    waits: list[float] = []

    def poll(wait: float) -> None:  # returns after part of the wait (a trigger arrived) or all of it
        # checked here, not after: a pace that polled for less could never reach `due` (each poll
        # takes only a part of what is left)
        assert wait >= suite.MIN_POLL_S
        waits.append(wait)
        clock[0] += wait * fractions[len(waits) % len(fractions)]

    due = clock[0] + due_in
    suite.pace(due, poll, lambda: clock[0])
    assert clock[0] >= due
    assert due_in > 0 or not waits  # a ping already due is sent without waiting
