"""The state interface's contract (stream/state/partition.py), run against both implementations:
`TableState` (the worker's: write-back layer over real rocksdict databases, as Faust's stores
hold them) and `MemoryState`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import rocksdict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processors.identity.quarantine import PREFIX
from stream.runtime import faust_adapter
from stream.state import writeback as state_mod
from stream.state.partition import MemoryState, State, TableState
from stream.state.writeback import WriteBack


class FakeRocksStore:
    """What the state layer reaches of Faust's RocksDB store (through stream/runtime/faust_adapter.py)."""

    def __init__(self, base: Path, name: str) -> None:
        self.base, self.name = base, name
        self._dbs: dict[int, Any] = {}

    def _db_for_partition(self, p: int) -> Any:
        if p not in self._dbs:
            self._dbs[p] = rocksdict.Rdict(str(self.base / f"{self.name}-{p}"),
                                           options=rocksdict.Options(raw_mode=True))
        return self._dbs[p]


class FakeTable:
    def __init__(self, base: Path, name: str) -> None:
        self.name = name
        self.data = FakeRocksStore(base, name)
        self.changelog_topic = SimpleNamespace(get_topic_name=lambda: f"{name}-changelog")

    def get(self, key: bytes) -> bytes | None:  # Faust's table.get: whichever partition holds it
        for db in self.data._dbs.values():
            value = db.get(key)
            if value is not None:
                return value  # type: ignore[no-any-return]
        return None


class RocksUnderTest(TableState):
    """The worker's state, with the record's partition set by `begin` (Faust's in the worker)."""

    current = [0]

    def begin(self, partition: int) -> None:
        self.current[0] = partition
        super().begin(partition)


NO_SINK = SimpleNamespace(changelog=lambda table, topic, p, key, value: None)
"""The changelog records of the write-back layer go nowhere here."""


def make_rocks(base: Path, monkeypatch: Any) -> tuple[State, Callable[[], None]]:
    current = [0]
    RocksUnderTest.current = current
    monkeypatch.setattr(state_mod, "current_partition", lambda: current[0])
    monkeypatch.setattr(faust_adapter, "current_partition", lambda: current[0])
    tables = [FakeTable(base, n) for n in ("identities", "profiles", "meta")]
    # a Faust bookkeeping key, which no listing may return
    tables[1].data._db_for_partition(0)[b"__faust\x00offset__"] = b"7"

    def close() -> None:
        for t in tables:
            for db in t.data._dbs.values():
                db.close()

    return RocksUnderTest(WriteBack(cache_bytes=4096, flush_records=3, flush_ms=10_000,
                                    sink=NO_SINK), *tables), close


@pytest.fixture(params=["rocksdb", "memory"])
def state(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[State]:
    if request.param == "memory":
        yield MemoryState()
        return
    s, close = make_rocks(tmp_path, monkeypatch)
    yield s
    close()


def test_identities_profiles_and_requests_per_partition(state: State) -> None:
    state.begin(0)
    assert state.identity("email:a@x.org") is None and state.profile("p1") is None
    profile: dict[str, Any] = {"id": "p1", "traits": {"n": 1}}
    state.set_identity("email:a@x.org", "p1")
    state.set_profile("p1", profile)
    profile["traits"]["n"] = 2  # what was written is stored, not the caller's object
    assert state.identity("email:a@x.org") == "p1"
    assert state.profile("p1") == {"id": "p1", "traits": {"n": 1}}
    state.set_request("r1", {"status": "pending"})
    assert state.request("r1") == {"status": "pending"}
    state.begin(1)  # another partition sees none of it
    assert state.identity("email:a@x.org") is None and state.profile("p1") is None
    assert state.request("r1") is None
    state.begin(0)
    state.delete_profile("p1")
    state.delete_identity("email:a@x.org")
    state.set_request("r1", None)
    assert state.profile("p1") is None and state.identity("email:a@x.org") is None
    assert state.request("r1") is None


def test_lookups_from_outside_a_record_find_any_partition(state: State) -> None:
    state.begin(2)
    state.set_identity("phone:+1415", "p9")
    state.set_profile("p9", {"id": "p9"})
    state.begin(3)
    assert state.lookup_identity("phone:+1415") == "p9"
    assert state.lookup_profile("p9") == b'{"id":"p9"}'
    assert state.lookup_profile("nobody") is None
    state.flush()
    assert state.lookup_identity("phone:+1415") == "p9"
    assert [pid for pid, _ in state.stored_profiles(2)] == ["p9"]
    assert list(state.stored_profiles(3)) == []


def test_partition_metadata(state: State) -> None:
    state.begin(0)
    assert state.segment_sizes() == {} and state.journey_stats() == {}
    assert state.clock() == (0, -1) and state.sources() == {} and state.backfilled() is None
    state.add_segment_sizes({"vip": 2, "lapsed": 0})
    state.add_segment_sizes({"vip": -1, "new": 3})
    assert state.segment_sizes() == {"vip": 1, "new": 3}
    state.set_journey_stats({"j1": {"": {"active": 4}}})
    state.set_clock(1_000, 17)
    state.set_sources({"1": [500, False], "0": [None, True]})
    state.set_backfilled("fp1")
    assert state.journey_stats() == {"j1": {"": {"active": 4}}}
    assert state.clock() == (1_000, 17)
    assert state.sources() == {"0": [None, True], "1": [500, False]}
    assert state.backfilled() == "fp1"
    state.begin(1)
    assert state.segment_sizes() == {} and state.clock() == (0, -1) and state.backfilled() is None
    state.flush()
    # from outside a record (web views, timers), unflushed or flushed
    assert state.peek_segment_sizes(0) == {"vip": 1, "new": 3}
    assert state.peek_journey_stats(0) == {"j1": {"": {"active": 4}}}
    assert state.peek_backfilled(0) == "fp1" and state.peek_backfilled(1) is None


def test_quarantined_identifiers_are_listed_from_the_requests(state: State) -> None:
    state.begin(0)
    state.set_request(PREFIX + "device_id:kiosk", {"claims": [], "quarantined": {
        "at": 5, "distinct": 3, "threshold": 2}})
    state.set_request(PREFIX + "email:a@x.org", {"claims": [["p1", 1]]})  # watched, not quarantined
    state.set_request("privacy-7", {"status": "pending"})
    state.flush()
    assert state.peek_quarantined(0) == [("device_id:kiosk", {"at": 5, "distinct": 3, "threshold": 2})]
    assert state.peek_quarantined(1) == []


def test_profile_ids_page_through_a_partition_in_key_order(state: State) -> None:
    state.begin(0)
    pids = [f"p{i:02d}" for i in range(7)]
    for pid in reversed(pids):
        state.set_profile(pid, {"id": pid})
    state.begin(1)
    state.set_profile("p99", {"id": "p99"})
    state.begin(0)
    pages, after = [], None
    while True:
        page = state.profile_ids(after, 3)
        if not page:
            break
        pages.append(page)
        after = page[-1]
    assert pages == [pids[:3], pids[3:6], pids[6:]]


maybe_ms = st.one_of(st.none(), st.integers(0, 50))
deadline_ops = st.lists(st.tuples(st.sampled_from(["move", "due", "done"]), st.sampled_from(["a", "b", "c"]),
                                  maybe_ms, maybe_ms, st.integers(1, 4)), max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=deadline_ops)
def test_the_deadline_index_is_a_sorted_set_of_deadline_and_profile(
        ops: list[Any], tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Deadlines moved and taken off in any order: `due` lists what a sorted set holds by `now`,
    earliest first, `limit` at most, in both implementations alike."""
    rocks, close = make_rocks(tmp_path_factory.mktemp("due"), monkeypatch)
    try:
        memory = MemoryState()
        model: set[tuple[int, str]] = set()
        for s in (rocks, memory):
            s.begin(0)
        for op, pid, old, new, limit in ops:
            if op == "move":
                for s in (rocks, memory):
                    s.move_deadline(pid, old, new)
                if old is not None:
                    model.discard((old, pid))
                if new is not None:
                    model.add((new, pid))
            elif op == "due":
                now = old if old is not None else 25
                expected = sorted(d for d in model if d[0] <= now)[:limit]
                assert rocks.due(now, limit) == expected
                assert memory.due(now, limit) == expected
            else:
                for s in (rocks, memory):
                    s.begin(0)
        assert rocks.due(10**6, 10**6) == memory.due(10**6, 10**6) == sorted(model)
    finally:
        close()
