"""Every table database a worker opens draws on one block cache and one memtable budget."""

from __future__ import annotations

from pathlib import Path

import rocksdict
from faust.stores.rocksdb import RocksDBOptions

from stream.runtime import faust_adapter


def _open(path: Path) -> rocksdict.Rdict:
    # what Faust's store does for each partition database (faust/stores/rocksdb.py, 0.15.3)
    return rocksdict.Rdict(str(path), options=RocksDBOptions(write_buffer_size=1 << 20).as_options())


def test_two_databases_share_one_block_cache_and_one_memtable_budget(tmp_path: Path) -> None:
    cache, memtables = faust_adapter.share_rocksdb_memory(8 << 20, 4 << 20)
    first, second = _open(tmp_path / "p0"), _open(tmp_path / "p1")
    try:
        for db, key in ((first, b"a"), (second, b"b")):
            before = memtables.get_usage()
            for i in range(500):
                db[key + str(i).encode()] = b"z" * 400
            assert memtables.get_usage() > before  # each database's writes count in the one budget
        for db in (first, second):
            db.flush()
        before_reads = cache.get_usage()
        assert first[b"a7"] == b"z" * 400
        after_first_read = cache.get_usage()
        assert after_first_read > before_reads
        assert second[b"b7"] == b"z" * 400
        assert cache.get_usage() > after_first_read
    finally:
        first.close()
        second.close()


def test_a_second_call_patches_once_and_later_databases_use_its_cache(tmp_path: Path) -> None:
    faust_adapter.share_rocksdb_memory(8 << 20, 4 << 20)
    as_options = RocksDBOptions.as_options
    cache, _ = faust_adapter.share_rocksdb_memory(16 << 20, 4 << 20)
    assert RocksDBOptions.as_options is as_options
    db = _open(tmp_path / "p0")
    try:
        for i in range(300):
            db[str(i).encode()] = b"v" * 400
        db.flush()
        assert db[b"3"] == b"v" * 400
        assert cache.get_usage() > 0
    finally:
        db.close()
