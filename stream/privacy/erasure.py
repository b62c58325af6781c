"""Erased data leaves the worker's disk and the broker's, within TUSK_ERASE_WITHIN.

RocksDB: a delete writes a tombstone; the old value stays in the write-ahead log, the memtable
and older SST files until a flush and a compaction drop it, and the MANIFEST remembers each
SST file's smallest and largest key until the MANIFEST is rewritten. So every table database
in which a key was deleted (an erasure, a merge, a changelog tombstone applied by a standby or
a restore), and every database once after it is opened (what a stopped run left), is flushed
and compacted to its bottom level every E/8 (`purge`), and the MANIFEST is rewritten on every
change (`max_manifest_file_size` 1 byte: it only lists the live files). Standbys apply each
changelog record as it comes instead of 1000 at a time.

A partition that moved to another worker leaves its folder behind, a copy no erasure reaches:
folders of partitions the worker has not held (active or standby) for E/8 are removed.

Kafka: the worker appends a roll marker (a tombstone of topic_configs.ROLL_KEY) to every
changelog partition it owns every E/8, so that the segments holding shadowed records and
tombstones close and the log cleaner compacts them even in a quiet partition
(stream/kafka/topic_configs.py explains the rest).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import shutil
import time
from collections.abc import Callable, Iterable
from typing import Any

import rocksdict

from stream.kafka.topic_configs import ROLL_KEY, changelogs, step_ms
from stream.runtime.faust_adapter import event_partition, hook_rocksdb_store, open_dbs

log = logging.getLogger(__name__)

DIRTY: dict[int, tuple[Any, set[int]]] = {}
"""id(store) → (store, partitions whose database saw a delete since its last purge)."""


def mark(store: Any, partition: int | None) -> None:
    """Note that a key was deleted in this store's database of `partition` (None: all)."""
    _, parts = DIRTY.setdefault(id(store), (store, set()))
    parts.update(open_dbs(store) if partition is None else (partition,))


def purge(db: rocksdict.Rdict) -> None:
    """Flush the memtable (the WAL goes with it) and compact everything to the bottom level,
    where RocksDB drops deleted values and the tombstones themselves; then one more MANIFEST edit."""
    db.flush(True)
    opts = rocksdict.CompactOptions()
    opts.set_bottommost_level_compaction(rocksdict.BottommostLevelCompaction.force())
    db.compact_range(None, None, opts)
    # the MANIFEST was rewritten at the compaction's edit from the version before it, which still
    # listed the flushed file (its smallest/largest keys may be a deleted key): one more edit, a
    # tiny flush, rewrites it from the version after the compaction
    db.delete(ROLL_KEY)
    db.flush(True)


async def purge_dirty() -> int:
    """Purge every database that saw a delete; how many were purged."""
    done = 0
    for store, parts in list(DIRTY.values()):
        todo, parts_left = set(parts), parts
        parts_left.clear()
        for partition in sorted(todo):
            db = open_dbs(store).get(partition)
            if db is None:  # moved away: its folder is no longer this worker's to keep
                continue
            try:
                await asyncio.to_thread(purge, db)
                done += 1
            except Exception:  # a database closing under us: try again next time
                log.warning("could not compact %s partition %s", store, partition, exc_info=True)
                parts_left.add(partition)
    return done


UNASSIGNED: dict[tuple[int, int], float] = {}
"""(id(store), partition) → when its folder was first seen without the partition assigned."""


def partitions_on_disk(store: Any) -> list[int]:
    prefix = f"{store.basename.name}-"
    found = []
    for path in store.path.glob(f"{prefix}*.db"):
        number = path.name[len(prefix):-len(".db")]
        if number.isdigit():
            found.append(int(number))
    return sorted(found)


async def drop_unassigned(stores: Iterable[Any], grace_s: float) -> list[str]:
    """Remove the folders of partitions this worker has not held (active or standby) for
    `grace_s`: a partition that moved to another worker leaves a copy behind that no erasure
    reaches. Back within the grace, the folder is reused; later, it is restored afresh."""
    now = time.monotonic()
    removed = []
    for store in stores:
        async with store.db_lock:  # not while a rebalance opens or closes databases
            for partition in partitions_on_disk(store):
                key = (id(store), partition)
                if partition in open_dbs(store):
                    UNASSIGNED.pop(key, None)
                    continue
                if now - UNASSIGNED.setdefault(key, now) < grace_s:
                    continue
                gc.collect()  # Faust drops a revoked database without closing it
                path = store.partition_path(partition)
                shutil.rmtree(path, ignore_errors=True)
                UNASSIGNED.pop(key, None)
                removed.append(str(path))
    return removed


def _deleted(store: Any, key: bytes) -> None:
    if key != ROLL_KEY:
        mark(store, event_partition())


def _tombstone_applied(store: Any, key: bytes, partition: int) -> None:
    if key != ROLL_KEY:
        mark(store, partition)


def _opened(store: Any, partition: int) -> None:
    # what an earlier run left (a delete just before it stopped, flushed at close) goes too
    DIRTY.setdefault(id(store), (store, set()))[1].add(partition)


def install() -> None:
    """Hook Faust's RocksDB store (once, for the process): MANIFEST rewritten on each change,
    deletes noted. The worker calls it at start, before any table opens (stream/runtime/worker.py)."""
    hook_rocksdb_store(on_delete=_deleted, on_changelog_delete=_tombstone_applied, on_open=_opened,
                       small_manifest=True)


def register(app: Any, settings: Any, owned: Callable[[], list[int]], outbox: Any) -> None:
    """The worker's timers: roll markers on owned changelog partitions (sent through `outbox`),
    purges of dirty databases."""
    every = step_ms(settings) / 1000
    names = changelogs(settings)
    for table in app.tables.values():
        # a standby applies each changelog record at once (Faust buffers 1000 by default, and
        # applies them only when the buffer is full or the worker stops: a standby's disk would
        # get an erased person's tombstones, keys included, at its shutdown flush)
        table.standby_buffer_size = 1

    @app.timer(every)
    async def roll_changelogs() -> None:
        for partition in owned():
            for name in names:
                outbox.send(name, ROLL_KEY, None, partition)

    @app.timer(every)
    async def purge_deleted() -> None:
        n = await purge_dirty()
        if n:
            log.debug("compacted %d table databases after deletes", n)
        stores = [t.data for t in app.tables.values() if hasattr(t.data, "db_lock")]
        for path in await drop_unassigned(stores, every):
            log.info("removed %s: the partition is no longer this worker's", path)
