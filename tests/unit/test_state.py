"""The write-back state (stream/state/writeback.py) over real rocksdict databases, without Kafka."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import rocksdict
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.state import writeback as st_mod
from stream.state.writeback import OVERHEAD, StateWriteFailed, WriteBack


class FakeStore:
    """What stream/state/writeback.py uses of Faust's RocksDB store."""

    def __init__(self, base: Path, name: str) -> None:
        self.base, self.name = base, name
        self._dbs: dict[int, Any] = {}
        self.writes = 0

    def _db_for_partition(self, p: int) -> Any:
        if p not in self._dbs:
            self._dbs[p] = rocksdict.Rdict(str(self.base / f"{self.name}-{p}"),
                                           options=rocksdict.Options(raw_mode=True))
        db = self._dbs[p]
        store = self

        class Counting:
            def get(self, key: bytes) -> bytes | None:
                return db.get(key)  # type: ignore[no-any-return]

            def write(self, batch: Any, options: Any = None) -> None:
                store.writes += 1
                db.write(batch, options)

        return Counting()


class FakeTable:
    def __init__(self, base: Path, name: str) -> None:
        self.name = name
        self.data = FakeStore(base, name)
        self.changelog_topic = SimpleNamespace(get_topic_name=lambda: f"{name}-changelog")

    def get(self, key: bytes) -> bytes | None:
        for db in self.data._dbs.values():
            value = db.get(key)
            if value is not None:
                return value  # type: ignore[no-any-return]
        return None

    def stored(self, p: int) -> dict[bytes, bytes]:
        db = self.data._dbs.get(p)
        return {} if db is None else dict(db.items())


@pytest.fixture()
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    partition = [0]
    sent: list[tuple[str, int, bytes, bytes | None]] = []
    monkeypatch.setattr(st_mod, "current_partition", lambda: partition[0])
    sink = SimpleNamespace(changelog=lambda table, topic, p, key, value: sent.append((topic, p, key, value)))
    tables = [FakeTable(tmp_path, "profiles"), FakeTable(tmp_path, "meta")]
    yield SimpleNamespace(partition=partition, sent=sent, tables=tables, sink=sink)
    for t in tables:
        for db in t.data._dbs.values():
            db.close()


def test_writes_stay_in_memory_until_a_flush_writes_one_batch_per_partition(world: Any) -> None:
    profiles, meta = world.tables
    wb = WriteBack(cache_bytes=1 << 20, flush_records=1000, flush_ms=10_000, sink=world.sink)
    for p in (0, 1):
        world.partition[0] = p
        for i in range(5):
            wb.put(profiles, f"p{i}".encode(), f"v{p}{i}".encode())
        wb.put(profiles, b"p0", b"last")
        wb.put(meta, b"s", b"{}")
        wb.put(profiles, b"p4", None)
        assert wb.get(profiles, b"p0") == b"last"  # read your own writes
        assert wb.get(profiles, b"p4") is None
    assert profiles.stored(0) == {} and world.sent == []
    assert wb.flush() == 2 * (5 + 1)
    assert profiles.data.writes == 2 and meta.data.writes == 2  # one batch per partition database
    assert profiles.stored(1) == {b"p0": b"last", b"p1": b"v11", b"p2": b"v12", b"p3": b"v13"}
    # one changelog record per key, with the key's last value (a tombstone for a delete)
    p1 = [(k, v) for topic, p, k, v in world.sent if topic == "profiles-changelog" and p == 1]
    assert sorted(p1, key=lambda kv: kv[0]) == [(b"p0", b"last"), (b"p1", b"v11"), (b"p2", b"v12"),
                                                 (b"p3", b"v13"), (b"p4", None)]
    assert wb.flush() == 0 and len(world.sent) == 12


def test_batches_skip_the_log_and_a_rebalance_flushes_their_memtables_to_files(world: Any) -> None:
    profiles, meta = world.tables
    wb = WriteBack(cache_bytes=1 << 20, flush_records=1000, flush_ms=10_000, sink=world.sink)
    for p in (0, 1):
        world.partition[0] = p
        wb.put(profiles, b"p0", b"v")
        wb.put(meta, b"s", b"{}")
    wb.flush()
    dbs = [t.data._dbs[p] for t in (profiles, meta) for p in (0, 1)]

    def in_memtables(db: Any) -> int:
        return int(db.property_int_value("rocksdb.num-entries-active-mem-table") or 0)

    assert all(in_memtables(db) == 1 for db in dbs)
    assert all(db.property_int_value("rocksdb.total-sst-files-size") == 0 for db in dbs)
    folders = [t.data.base / f"{t.name}-{p}" for t in (profiles, meta) for p in (0, 1)]
    assert sum(f.stat().st_size for d in folders for f in d.glob("*.log")) == 0  # the write-ahead logs
    assert wb.flush_memtables() == 4
    assert all(in_memtables(db) == 0 for db in dbs)
    assert all(int(db.property_int_value("rocksdb.total-sst-files-size") or 0) > 0 for db in dbs)
    assert wb.flush_memtables() == 0  # nothing written since


def test_record_count_and_age_trigger_a_flush(world: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    profiles, _ = world.tables
    clock = [100.0]
    monkeypatch.setattr(st_mod.time, "monotonic", lambda: clock[0])
    wb = WriteBack(cache_bytes=1 << 20, flush_records=3, flush_ms=20, sink=world.sink)
    wb.put(profiles, b"a", b"1")
    wb.record_done()
    wb.record_done()
    assert world.sent == []
    wb.record_done()  # the third record
    assert len(world.sent) == 1
    wb.put(profiles, b"b", b"2")
    clock[0] += 0.019
    wb.flush_due()
    wb.record_done()
    assert len(world.sent) == 1
    clock[0] += 0.002
    wb.flush_due()  # 21 ms old
    assert len(world.sent) == 2
    for _ in range(10):  # nothing dirty: nothing to write, however many records
        wb.record_done()
    assert len(world.sent) == 2 and profiles.data.writes == 2


def test_outside_reads_see_unwritten_state(world: Any) -> None:
    profiles, meta = world.tables
    wb = WriteBack(cache_bytes=0, flush_records=1000, flush_ms=10_000, sink=world.sink)
    world.partition[0] = 3
    wb.put(profiles, b"x", b"dirty")
    wb.put(meta, b"bv", b"fp")
    assert wb.lookup(profiles, b"x") == b"dirty"
    assert wb.peek(meta, 3, b"bv") == b"fp"
    assert wb.peek(meta, 2, b"bv") is None
    wb.flush()
    assert wb.lookup(profiles, b"x") == b"dirty"  # now from the database (no cache at 0 MB)
    assert wb.peek(meta, 3, b"bv") == b"fp"


def test_a_refused_batch_keeps_what_was_not_written(world: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    profiles, meta = world.tables
    wb = WriteBack(cache_bytes=1 << 20, flush_records=1000, flush_ms=10_000, sink=world.sink)
    wb.put(profiles, b"a", b"1")
    wb.put(meta, b"s", b"{}")
    real = meta.data._db_for_partition

    def broken(p: int) -> Any:
        raise OSError("disk full")

    monkeypatch.setattr(meta.data, "_db_for_partition", broken)
    with pytest.raises(StateWriteFailed):
        wb.flush()
    assert profiles.stored(0) == {b"a": b"1"} and wb.dirty_keys == 1
    assert wb.get(meta, b"s") == b"{}"
    monkeypatch.setattr(meta.data, "_db_for_partition", real)
    assert wb.flush() == 1
    assert meta.stored(0) == {b"s": b"{}"}
    assert [(t, k) for t, _, k, _ in world.sent] == [("profiles-changelog", b"a"), ("meta-changelog", b"s")]


ops = st.lists(st.tuples(
    st.sampled_from(["put", "delete", "get", "flush", "drop", "done"]),
    st.integers(0, 2),  # partition
    st.integers(0, 1),  # table
    st.integers(0, 7),  # key
    st.binary(min_size=0, max_size=300)), max_size=60)


@settings(max_examples=120, deadline=None)
@given(steps=ops, budget=st.sampled_from([0, 300, 600, 4000, 1 << 20]))
def test_reads_equal_a_plain_dict_and_the_cache_stays_within_its_bytes(
        tmp_path_factory: pytest.TempPathFactory, steps: list[Any], budget: int) -> None:
    base = tmp_path_factory.mktemp("wb")
    partition = [0]
    sent: dict[tuple[str, int, bytes], bytes | None] = {}
    saved = st_mod.current_partition
    st_mod.current_partition = lambda: partition[0]  # type: ignore[assignment]
    sink = SimpleNamespace(changelog=lambda table, topic, p, key, value:
                           sent.__setitem__((topic, p, key), value))
    tables = [FakeTable(base, "profiles"), FakeTable(base, "meta")]
    try:
        wb = WriteBack(cache_bytes=budget, flush_records=5, flush_ms=10_000, sink=sink)
        model: dict[tuple[int, int, bytes], bytes] = {}
        for op, p, t, k, value in steps:
            partition[0] = p
            table, key = tables[t], b"k%d" % k
            if op == "put":
                wb.put(table, key, value)
                model[(t, p, key)] = value
            elif op == "delete":
                wb.put(table, key, None)
                model.pop((t, p, key), None)
            elif op == "get":
                assert wb.get(table, key) == model.get((t, p, key))
            elif op == "flush":
                wb.flush()
            elif op == "drop":
                wb.flush()
                wb.drop()
            else:
                wb.record_done()
            assert wb.cached_bytes <= max(budget, 0)
            # no entry is cached beyond the budget, and entries are counted by their encoded size
            assert wb.cached_bytes == sum(OVERHEAD + len(ck[2]) + len(v or b"")
                                          for ck, v in wb._clean.items())
        wb.flush()
        for t, table in enumerate(tables):
            for p in range(3):
                assert table.stored(p) == {key: v for (tt, pp, key), v in model.items() if (tt, pp) == (t, p)}
                for k in range(8):  # the changelog's last record per key is the key's final value
                    key = b"k%d" % k
                    if (f"{table.name}-changelog", p, key) in sent:
                        assert sent[(f"{table.name}-changelog", p, key)] == model.get((t, p, key))
    finally:
        st_mod.current_partition = saved  # type: ignore[assignment]
        for table in tables:
            for db in table.data._dbs.values():
                db.close()
