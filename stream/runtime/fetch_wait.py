"""How the worker's fetches wait at the broker, from how busy the worker is.

A fetch waits at the broker up to TUSK_FETCH_WAIT_MS for TUSK_FETCH_MIN_BYTES of records to
gather (faust_adapter.py, `fetch_in_batches`). The wait is paid in latency, and the batch it
gathers is paid for once: on a 2-core machine a worker's CPU per event after its thread slept is
several times what it is back to back (README, Speed), so small batches cost the whole machine,
broker included. A worker near its capacity cannot afford them, and the CPU a longer wait saves
is what keeps its queue short.

So the wait follows the share of the last second the drain loop spent handling records: the
floor (TUSK_FETCH_WAIT_MS) up to BUSY_LOW of it, the ceiling (TUSK_FETCH_WAIT_BUSY_MS) from
BUSY_HIGH, in proportion between. A backlog is unaffected: the broker answers at once when
TUSK_FETCH_MIN_BYTES are waiting.

A worker with next to nothing to do (busy under BUSY_IDLE) asks for any record instead (one
byte), and lets the broker hold the fetch up to TUSK_FETCH_IDLE_WAIT_MS: a record is handed over
as it lands, and an idle worker is no longer woken, with the broker, every floor's milliseconds
(a broker and two idle workers: 0.27 to 0.46 of a core at the 10 ms wait, 0.12 to 0.16 with
this). It goes back to batches from BUSY_LOW; between the two it stays idle or batched as it
was, so that the dearer records of one-record fetches do not flip it back and forth. The idle
wait is kept short (100 ms by default) because aiokafka leaves a partition whose records are
still being handled out of the fetch in flight: a record arriving there may wait for that fetch
to end.
"""

from __future__ import annotations

from typing import NamedTuple

BUSY_IDLE = 0.1
BUSY_LOW = 0.2
BUSY_HIGH = 0.5
WINDOW_S = 1.0
ANY_RECORD = 1
"""The idle fetch's minimum size (bytes): whatever came."""


def wait_for(busy: float, floor_ms: int, ceiling_ms: int) -> int:
    """The fetch wait (ms) of batched fetches for a drain loop busy `busy` of the time (0 to 1)."""
    if ceiling_ms <= floor_ms:
        return floor_ms
    share = min(1.0, max(0.0, (busy - BUSY_LOW) / (BUSY_HIGH - BUSY_LOW)))
    return floor_ms + round((ceiling_ms - floor_ms) * share)


class FetchAsk(NamedTuple):
    """What the worker's next fetches ask the broker: the longest wait and the least to return."""

    max_wait_ms: int
    min_bytes: int


class FetchWait:
    """The drain loop's time spent handling records, per window; `handled` says when the fetches
    should change (`ask`)."""

    __slots__ = ("min_bytes", "floor_ms", "ceiling_ms", "idle_ms", "ask", "idle", "_since", "_busy")

    def __init__(self, min_bytes: int, floor_ms: int, ceiling_ms: int, idle_ms: int, now: float) -> None:
        self.min_bytes, self.floor_ms = min_bytes, floor_ms
        self.ceiling_ms, self.idle_ms = ceiling_ms, idle_ms
        self.ask = FetchAsk(floor_ms, min_bytes)
        self.idle = False  # asking for any record, with the idle wait
        self._since, self._busy = now, 0.0

    @classmethod
    def when_on(cls, min_bytes: int, floor_ms: int, ceiling_ms: int, idle_ms: int,
                now: float) -> FetchWait | None:
        """A FetchWait, or None when neither the busy ceiling nor the idle wait is above the
        floor (both off: the fetches keep the floor and the minimum size)."""
        if ceiling_ms <= floor_ms and idle_ms <= floor_ms:
            return None
        return cls(min_bytes, floor_ms, ceiling_ms, idle_ms, now)

    def handled(self, seconds: float, now: float) -> FetchAsk | None:
        """A batch took `seconds` to handle, ending at `now` (monotonic s): the new ask when a
        window ended and the ask changed, else None."""
        self._busy += seconds
        span = now - self._since
        if span < WINDOW_S:
            return None
        busy = self._busy / span
        self._since, self._busy = now, 0.0
        self.idle = self.idle_ms > self.floor_ms and (busy < BUSY_IDLE or (self.idle and busy <= BUSY_LOW))
        if self.idle:
            ask = FetchAsk(self.idle_ms, ANY_RECORD)
        else:
            ask = FetchAsk(wait_for(busy, self.floor_ms, self.ceiling_ms), self.min_bytes)
        if ask == self.ask:
            return None
        self.ask = ask
        return ask
