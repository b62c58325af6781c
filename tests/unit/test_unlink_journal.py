"""The unlink journal's storage (processors/identity/unlink.py: record, journal, forget).

One key per event, in a ring of JOURNAL_EVENTS slots: journaling reads nothing and writes one
key; `journal()` gives what the chunk format of older versions gave (the same window, the same
completeness); journals written in that format, wholly or as the first part of a profile's
events, are still read, bounded and erased.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from processors.identity import unlink
from processors.identity.unlink import CHUNK, JOURNAL_EVENTS, forget, journal, record
from stream.state.partition import REQUEST, MemoryState


def _ev(i: int) -> dict[str, Any]:
    return {"m": {"messageId": f"m{i}"}, "ts": i, "ids": [["email", f"{i}@x.io"]]}


def _record_chunked(store: MemoryState, profile: dict[str, Any], ev: dict[str, Any]) -> None:
    """The chunk format of older versions (7216b1f), verbatim: what stored journals hold."""
    n = profile.get("_jn", 0)
    key = f"journal:{profile['id']}:{n // CHUNK}"
    chunk = {"ev": []} if n % CHUNK == 0 else store.request(key) or {"ev": []}
    chunk["ev"].append(ev)
    store.set_request(key, chunk)
    profile["_jn"] = n + 1
    stale = (n - JOURNAL_EVENTS) // CHUNK
    if n % CHUNK == 0 and stale >= 0 and store.request(f"journal:{profile['id']}:{stale}") is not None:
        store.set_request(f"journal:{profile['id']}:{stale}", None)


def _window(n: int) -> int:
    """The first event `journal()` returns after n events (chunk-aligned, as it always was)."""
    return ((n - JOURNAL_EVENTS) // CHUNK + 1) * CHUNK if n > JOURNAL_EVENTS else 0


def _journal_keys(store: MemoryState) -> list[bytes]:
    return [k for k in store._p().meta if k.startswith(REQUEST + unlink.JOURNAL_PREFIX.encode())]


class _Counting(MemoryState):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def request(self, rid: str) -> dict[str, Any] | None:
        self.reads += 1
        return super().request(rid)


def test_journaling_an_event_reads_nothing_and_writes_one_key() -> None:
    store = _Counting()
    profile: dict[str, Any] = {"id": "p_1"}
    for i in range(JOURNAL_EVENTS + 40):
        before = len(_journal_keys(store))
        record(store, profile, _ev(i))
        assert len(_journal_keys(store)) == min(before + 1, JOURNAL_EVENTS)
    assert store.reads == 0
    assert profile["_je"] == JOURNAL_EVENTS + 40 and "_jn" not in profile


@settings(max_examples=40, deadline=None)
@given(chunked=st.integers(0, 700), more=st.integers(0, 700))
def test_old_chunks_then_new_keys_read_as_one_journal_and_erase_to_nothing(chunked: int, more: int) -> None:
    """`chunked` events journaled by an older version, then `more` by this one: `journal()` is
    what the old format alone would give, the ring stays bounded, `forget` leaves no key."""
    store, old_store = MemoryState(), MemoryState()
    profile: dict[str, Any] = {"id": "p_1"}
    reference: dict[str, Any] = {"id": "p_1"}
    for i in range(chunked):
        _record_chunked(store, profile, _ev(i))
        _record_chunked(old_store, reference, _ev(i))
    for i in range(chunked, chunked + more):
        record(store, profile, _ev(i))
        _record_chunked(old_store, reference, _ev(i))
        # the old chunks go when the old format would have dropped them
        chunks = {k for k in _journal_keys(store) if b"/" not in k}
        assert chunks == {k for k in _journal_keys(old_store) if int(k.rsplit(b":", 1)[1]) * CHUNK < chunked}
    n = chunked + more
    events, complete = journal(store, profile)
    assert (events, complete) == journal(old_store, reference)  # read as the old format was
    assert events == [_ev(i) for i in range(_window(n), n)] and complete == (n <= JOURNAL_EVENTS)
    assert len([k for k in _journal_keys(store) if b"/" in k]) <= JOURNAL_EVENTS
    assert profile.get("_jn", 0) == chunked and profile.get("_je", chunked) == n
    forget(store, "p_1", profile)
    assert _journal_keys(store) == []
    forget(old_store, "p_1", reference)  # the old format alone (no `_je`) is erased too
    assert _journal_keys(old_store) == []


def test_a_redirect_forgets_the_journal_of_its_snapshot() -> None:
    store = MemoryState()
    profile: dict[str, Any] = {"id": "p_1"}
    for i in range(20):
        _record_chunked(store, profile, _ev(i))
    for i in range(20, 30):
        record(store, profile, _ev(i))
    forget(store, "p_1", {"redirect": "p_0", "snap": profile})
    assert _journal_keys(store) == []
