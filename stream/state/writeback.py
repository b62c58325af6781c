"""Write-back table state: reads and writes of the worker's tables go through memory; the
changed keys are written per batch of records, to each partition's RocksDB in one write batch
and to the changelog as one record per key through the outbox.

Faust's table write path costs per write a RocksDB put with its write-ahead log, a changelog
record built by Faust, sensors and key-index bookkeeping (py-spy: ~8% of a worker's samples).
Here a write only marks the key dirty in memory; `flush()` writes every dirty key:

1. one `WriteBatch` per partition database, without the write-ahead log (after a crash the
   database is a prefix of its writes, each batch before the changelog offset that covers it:
   stream/runtime/faust_adapter.py, `UNLOGGED`);
2. one changelog record per key through the outbox (`sink.changelog`); when Kafka acknowledges it,
   `Outbox.poll` records the changelog offset in the partition's database (unlogged too), as
   Faust does for its own writes, so a restart or a new owner replays the changelog only from
   there.

Before Faust writes a database this layer wrote (a partition handed over, kept as a standby or
recovered later), `flush_memtables` writes the unlogged writes to its files: Faust's writes have
the log, and must not survive a crash that the earlier unlogged ones do not.

A flush runs every `flush_records` records or `flush_interval_ms` (whichever comes first), before
every offset commit and partition hand-over (the outbox's drain, which Faust's producer flush
runs, flushes first: `Outbox.before_drain`), and before a table rebalances. No input offset is
therefore committed before the state it produced is in RocksDB and acknowledged on the
changelog. What a crash loses is the state of records whose offsets were not committed: they
are read again (README, processing guarantee).

Clean values (read from, or written to, RocksDB) stay cached, least recently used evicted once
their encoded size passes `state_cache_mb`. After any rebalance the cache is emptied: a
partition may have become a standby, whose database Faust updates from the changelog.

Faust internals are reached through stream/runtime/faust_adapter.py only.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any, Protocol

import rocksdict
from faust.exceptions import FaustError

from processors.common.errors import PlatformError

# Faust internals (the record's partition, a partition's database) come from the adapter
# (stream/runtime/faust_adapter.py), checked against faust-streaming 0.15.3.
from stream.runtime.faust_adapter import (
    current_partition,
    flush_memtable,
    open_db,
    partition_db,
    write_unlogged,
)


def changelog_topic(table: Any) -> str:
    name: str = table.changelog_topic.get_topic_name()
    return name


# --- the cache --------------------------------------------------------------------------------

Value = bytes | None


class StateWriteFailed(PlatformError, FaustError):  # type: ignore[misc]
    """RocksDB refused a batch: the platform, not a record (the agents crash the worker, so no
    offset moves past what was not written)."""

OVERHEAD = 120
"""bytes counted per cached entry besides its key and value (dict slot, tuple, bytes headers)"""
_MISSING = object()


def _size(key: bytes, value: Value) -> int:
    return OVERHEAD + len(key) + (len(value) if value else 0)


class ChangelogSink(Protocol):
    def changelog(self, table: Any, topic: str, partition: int, key: bytes,
                  value: bytes | None) -> None: ...


class WriteBack:
    def __init__(self, cache_bytes: int, flush_records: int, flush_ms: int,
                 sink: ChangelogSink | None = None) -> None:
        """The sizes and flush triggers are the worker's settings (stream/runtime/settings.py)."""
        # where the changelog records go: the app's outbox (stream/runtime/app.py: build_app)
        self.sink = sink
        self.cache_bytes = cache_bytes
        self.flush_records = flush_records
        self.flush_ms = flush_ms
        self._tables: dict[str, Any] = {}
        self._dirty: dict[tuple[str, int], dict[bytes, Value]] = {}
        self._clean: OrderedDict[tuple[str, int, bytes], Value] = OrderedDict()
        self._clean_size = 0
        self._records = 0
        self._dirty_since: float | None = None
        self._unlogged: dict[tuple[str, int], Any] = {}  # databases with writes only in memtables
        self.flushes = 0
        self.keys_flushed = 0

    # reads and writes while handling a record of a partition

    def get(self, table: Any, key: bytes) -> Value:
        p = current_partition()
        name = table.name
        dirty = self._dirty.get((name, p))
        if dirty is not None and key in dirty:
            return dirty[key]
        ck = (name, p, key)
        value = self._clean.get(ck, _MISSING)
        if value is not _MISSING:
            self._clean.move_to_end(ck)
            return value  # type: ignore[return-value]
        value = partition_db(table, p).get(key)
        self._keep(ck, value)
        return value

    def put(self, table: Any, key: bytes, value: Value) -> None:
        """Set (or, with None, delete) a key of the current record's partition."""
        p = current_partition()
        name = table.name
        self._tables[name] = table
        dirty = self._dirty.get((name, p))
        if dirty is None:
            dirty = self._dirty[(name, p)] = {}
        dirty[key] = value
        old = self._clean.pop((name, p, key), _MISSING)
        if old is not _MISSING:
            self._clean_size -= _size(key, old)  # type: ignore[arg-type]
        if self._dirty_since is None:
            self._dirty_since = time.monotonic()

    # reads outside of a record (HTTP lookups, timers): what the tables hold, cached or not

    def peek(self, table: Any, partition: int, key: bytes) -> Value:
        """A key of an open partition (None if absent or not open here); not cached."""
        dirty = self._dirty.get((table.name, partition))
        if dirty is not None and key in dirty:
            return dirty[key]
        value = self._clean.get((table.name, partition, key), _MISSING)
        if value is not _MISSING:
            return value  # type: ignore[return-value]
        db = open_db(table, partition)
        return db.get(key) if db is not None else None

    def lookup(self, table: Any, key: bytes) -> Value:
        """A key of whichever partition holds it (Faust's table.get for what is not dirty;
        raises KeyError as it does while partitions are being assigned)."""
        for (name, _), dirty in self._dirty.items():
            if name == table.name and key in dirty:
                return dirty[key]
        value: Value = table.get(key)
        return value

    # writing out

    def record_done(self) -> None:
        """A record boundary: flush if the batch is full or old enough."""
        self._records += 1
        if self._dirty_since is not None and (
                self._records >= self.flush_records
                or (time.monotonic() - self._dirty_since) * 1000 >= self.flush_ms):
            self.flush()

    def flush_due(self) -> None:
        """From a timer: flush dirty state older than the interval."""
        if self._dirty_since is not None and (time.monotonic() - self._dirty_since) * 1000 >= self.flush_ms:
            self.flush()

    def flush(self) -> int:
        """Write every dirty key: RocksDB (one batch per partition database), then the changelog.
        Keys written."""
        sink = self.sink
        if sink is None:
            raise RuntimeError("no changelog sink: the write-back layer is given the app's outbox "
                               "(stream/runtime/app.py: build_app)")
        self._records = 0
        if not self._dirty:
            self._dirty_since = None
            return 0
        items = list(self._dirty.items())
        self._dirty = {}
        self._dirty_since = None
        written = 0
        for i, ((name, p), values) in enumerate(items):
            table = self._tables[name]
            batch = rocksdict.WriteBatch(raw_mode=True)
            put = batch.put  # the loops below run once per key: bound methods looked up once
            deleted = False
            for key, value in values.items():
                if value is None:
                    batch.delete(key)
                    deleted = True
                else:
                    put(key, value)
            try:
                write_unlogged(partition_db(table, p), batch)
                self._unlogged[(name, p)] = table
            except Exception as e:  # keep what is not written: still read from here, retried
                self._dirty = dict(items[i:])
                self._dirty_since = time.monotonic()
                raise StateWriteFailed(f"writing {len(values)} keys of {name}[{p}]: {e!r}") from e
            if deleted:  # erased values leave the database files too (stream/privacy/erasure.py purges it)
                from stream.privacy.erasure import mark

                mark(table.data, p)
            topic = changelog_topic(table)
            changelog, keep = sink.changelog, self._keep if self.cache_bytes > 0 else None
            for key, value in values.items():
                changelog(table, topic, p, key, value)
                if keep is not None:  # no copy for a value that is not cached
                    # an exact-size copy: orjson's over-allocated (then shrunk) buffers, kept for
                    # long, fragment the heap (measured: 60 MB cached, 180 MB resident; copied: 63)
                    keep((name, p, key), None if value is None else bytes(memoryview(value)))
            written += len(values)
        self.flushes += 1
        self.keys_flushed += written
        return written

    def flush_memtables(self) -> int:
        """Make this layer's unlogged writes durable in their databases' files (before Faust
        writes them: a rebalance). Databases flushed."""
        done, self._unlogged = self._unlogged, {}
        for (_, p), table in done.items():
            db = open_db(table, p)
            if db is not None:  # a closed database flushed its memtables as it closed
                flush_memtable(db)
        return len(done)

    def drop(self) -> None:
        """Forget every clean value (after a rebalance); dirty ones must be flushed first."""
        self._clean.clear()
        self._clean_size = 0

    def _keep(self, ck: tuple[str, int, bytes], value: Value) -> None:
        if self.cache_bytes <= 0:
            return
        old = self._clean.pop(ck, _MISSING)
        if old is not _MISSING:
            self._clean_size -= _size(ck[2], old)  # type: ignore[arg-type]
        self._clean[ck] = value
        self._clean_size += _size(ck[2], value)
        while self._clean_size > self.cache_bytes and self._clean:
            (_, _, key), evicted = self._clean.popitem(last=False)
            self._clean_size -= _size(key, evicted)

    @property
    def cached_bytes(self) -> int:
        return self._clean_size

    @property
    def dirty_keys(self) -> int:
        return sum(len(v) for v in self._dirty.values())

