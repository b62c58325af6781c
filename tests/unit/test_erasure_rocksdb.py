"""A deleted key leaves a RocksDB folder once its database is purged (stream/privacy/erasure.py):
no value or key bytes in the WAL, the SST files or the MANIFEST."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import rocksdict
from faust.stores.rocksdb import RocksDBOptions

from stream.kafka.topic_configs import ROLL_KEY
from stream.privacy import erasure


@pytest.fixture(autouse=True)
def hooked() -> None:
    """Faust's RocksDB store hooked as the worker hooks it at start (importing erasure does not)."""
    erasure.install()


SECRET_KEY = b"email:zelphinia.q@example.org"
SECRET_VALUE = b'{"first_name": "Zelphinia"}'


def files_holding(folder: Path, *needles: bytes) -> list[str]:
    return sorted(p.name for p in folder.iterdir()
                  if p.is_file() and any(n in p.read_bytes() for n in needles))


def test_purge_leaves_no_byte_of_a_deleted_key(tmp_path: Path) -> None:
    path = tmp_path / "identities-0.db"
    db = RocksDBOptions(write_buffer_size=1 << 20).open(path)  # Faust's options, as erasure patches them
    try:
        for i in range(3000):  # other people, over several SST files
            db[f"email:person{i}@example.org".encode()] = b"p_" + str(i).encode() * 8
            if i % 1000 == 999:
                db.flush(True)
        db[b"phone:+14155550177"] = b"Korvalda Vintermoss"  # someone who stays
        db[SECRET_KEY] = SECRET_VALUE
        db.flush(True)
        assert files_holding(path, SECRET_KEY)  # the check sees what is there
        del db[SECRET_KEY]
        assert files_holding(path, SECRET_KEY)  # a delete leaves the bytes (and writes the key again)
        erasure.purge(db)
        assert files_holding(path, SECRET_KEY, SECRET_VALUE) == []
        assert files_holding(path, b"phone:+14155550177")  # the others are still there
        assert db[b"email:person7@example.org"] == b"p_" + b"7" * 8
    finally:
        db.close()


def test_deletes_and_opened_databases_are_marked_for_a_purge(tmp_path: Path) -> None:
    store = SimpleNamespace(_dbs={0: None, 1: None})
    erasure.DIRTY.clear()
    erasure.mark(store, 1)
    assert erasure.DIRTY[id(store)][1] == {1}
    erasure.mark(store, None)
    assert erasure.DIRTY[id(store)][1] == {0, 1}
    erasure.DIRTY.clear()
    # a standby applying changelog records: tombstones mark, roll markers and values do not
    from faust.stores.rocksdb import Store

    class FakeStore:
        _dbs: dict[int, rocksdict.Rdict] = {}
        written: list[tuple[int, bytes, bytes | None]] = []

        def _db_for_partition(self, partition: int) -> object:
            return SimpleNamespace(write=lambda batch: None)

        def set_persisted_offset(self, tp: object, offset: int) -> None:
            pass

        use_rocksdict = True

    fake = FakeStore()

    def event(partition: int, key: bytes, value: bytes | None, offset: int) -> object:
        return SimpleNamespace(message=SimpleNamespace(partition=partition, key=key, value=value,
                                                       offset=offset, tp=("t", partition)))

    Store.apply_changelog_batch(fake, [event(0, b"k", b"v", 1), event(1, ROLL_KEY, None, 2)],
                                lambda k: k, lambda v: v)
    assert id(fake) not in erasure.DIRTY
    Store.apply_changelog_batch(fake, [event(1, SECRET_KEY, None, 3)], lambda k: k, lambda v: v)
    assert erasure.DIRTY[id(fake)][1] == {1}
    erasure.DIRTY.clear()


def test_folders_of_partitions_no_longer_held_are_removed_after_the_grace(tmp_path: Path) -> None:
    import asyncio

    class Folders:
        path = tmp_path
        basename = Path("profiles")
        db_lock = asyncio.Lock()
        _dbs: dict[int, object] = {0: object()}

        def partition_path(self, partition: int) -> Path:
            return tmp_path / f"profiles-{partition}.db"

    store = Folders()
    for name in ("profiles-0.db", "profiles-1.db", "profiles-12.db", "profiles-backups", "identities-1.db"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "000001.sst").write_bytes(b"someone")
    erasure.UNASSIGNED.clear()
    assert asyncio.run(erasure.drop_unassigned([store], 3600)) == []  # noticed, within the grace
    store._dbs[12] = object()  # partition 12 came back: its folder is kept
    assert asyncio.run(erasure.drop_unassigned([store], 0)) == [str(tmp_path / "profiles-1.db")]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "identities-1.db", "profiles-0.db", "profiles-12.db", "profiles-backups"]
    erasure.UNASSIGNED.clear()
