"""How long the worker's fetches wait at the broker, from how busy the worker is.

A fetch waits at the broker up to TUSK_FETCH_WAIT_MS for records to gather (faust_adapter.py,
`fetch_in_batches`). The wait is paid in latency, and the batch it gathers is paid for once: on
a 2-core machine a worker's CPU per event after its thread slept is several times what it is
back to back (README, Speed), so small batches cost the whole machine, broker included. A
worker with little to do can afford that and answers fastest with a short wait; a worker near
its capacity cannot, and the CPU a longer wait saves is what keeps its queue short.

So the wait follows the share of the last second the drain loop spent handling records: the
floor (TUSK_FETCH_WAIT_MS) up to BUSY_LOW of it, the ceiling (TUSK_FETCH_WAIT_BUSY_MS) from
BUSY_HIGH, in proportion between. A backlog is unaffected: the broker answers at once when
TUSK_FETCH_MIN_BYTES are waiting.
"""

from __future__ import annotations

BUSY_LOW = 0.2
BUSY_HIGH = 0.5
WINDOW_S = 1.0


def wait_for(busy: float, floor_ms: int, ceiling_ms: int) -> int:
    """The fetch wait (ms) for a drain loop busy `busy` of the time (0 to 1)."""
    if ceiling_ms <= floor_ms:
        return floor_ms
    share = min(1.0, max(0.0, (busy - BUSY_LOW) / (BUSY_HIGH - BUSY_LOW)))
    return floor_ms + round((ceiling_ms - floor_ms) * share)


class FetchWait:
    """The drain loop's time spent handling records, per window; `handled` says when the wait
    should change."""

    __slots__ = ("floor_ms", "ceiling_ms", "wait_ms", "_since", "_busy")

    def __init__(self, floor_ms: int, ceiling_ms: int, now: float) -> None:
        self.floor_ms, self.ceiling_ms = floor_ms, ceiling_ms
        self.wait_ms = floor_ms
        self._since, self._busy = now, 0.0

    @classmethod
    def when_on(cls, floor_ms: int, ceiling_ms: int, now: float) -> FetchWait | None:
        """A FetchWait, or None when the ceiling turns it off (at most the floor)."""
        return cls(floor_ms, ceiling_ms, now) if ceiling_ms > floor_ms else None

    def handled(self, seconds: float, now: float) -> int | None:
        """A batch took `seconds` to handle, ending at `now` (monotonic s): the new wait (ms)
        when a window ended and the wait changed, else None."""
        self._busy += seconds
        span = now - self._since
        if span < WINDOW_S:
            return None
        wait = wait_for(self._busy / span, self.floor_ms, self.ceiling_ms)
        self._since, self._busy = now, 0.0
        if wait == self.wait_ms:
            return None
        self.wait_ms = wait
        return wait
