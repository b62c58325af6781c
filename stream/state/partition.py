"""One interface to a worker's state, per partition: the identity and profile stores and the
partition's metadata (re-check deadlines, segment sizes, journey counts, the event-time clock,
source watermarks, the definitions backfilled, privacy and quarantine requests).

Two implementations run the same contract (tests/unit/test_state_contract.py):

- `TableState`, what the worker runs: Faust's three RocksDB tables (identities, profiles, meta)
  through the write-back layer (stream/state/writeback.py: cache, batches, changelog through the outbox).
  The record's partition is the one Faust is delivering (stream/runtime/faust_adapter.py).
- `MemoryState`, plain dictionaries per partition, for tests and tools without a broker.

The layout of the meta table (its byte keys) is known here and nowhere else:
  b"d" + deadline (8 bytes, big-endian ms) + profile id  → b""   re-check index, in time order
  b"s"     member count by segment (JSON)          b"j"   journey counts (JSON)
  b"w"     event-time watermark: [ms, tick offset] b"sw"  per input partition [event time, idle]
  b"bv"    fingerprint of the definitions backfilled
  b"r:" + request id → request state (privacy requests, quarantine claims; JSON)

Within a record (`begin(partition)` starts one) the methods act on that record's partition; the
`peek_*`/`lookup_*` methods read any partition from outside a record (HTTP views, timers).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import Any, Protocol

import orjson

from processors.identity.graph import Store
from processors.identity.quarantine import PREFIX as QUARANTINE_PREFIX
from processors.profile.unified import Profile

Sources = dict[str, list[Any]]
"""Input partition (as a string) → [latest event time or None, read to its end for a while]."""


class State(Store, Protocol):
    """A worker's state. Every write is of the current record's partition."""

    # the record boundary
    def begin(self, partition: int) -> None: ...
    def flush(self) -> int: ...
    def flush_due(self) -> None: ...

    # partition metadata
    def move_deadline(self, pid: str, old: int | None, new: int | None) -> None: ...
    def due(self, now: int, limit: int) -> list[tuple[int, str]]: ...
    def segment_sizes(self) -> dict[str, int]: ...
    def add_segment_sizes(self, deltas: dict[str, int]) -> None: ...
    def journey_stats(self) -> dict[str, Any]: ...
    def set_journey_stats(self, stats: dict[str, Any]) -> None: ...
    def clock(self) -> tuple[int, int]: ...
    def set_clock(self, watermark: int, offset: int) -> None: ...
    def sources(self) -> Sources: ...
    def set_sources(self, sources: Sources) -> None: ...
    def backfilled(self) -> str | None: ...
    def set_backfilled(self, fingerprint: str) -> None: ...
    def profile_ids(self, after: str | None, limit: int) -> list[str]: ...

    # outside of a record
    def peek_segment_sizes(self, partition: int) -> dict[str, int]: ...
    def peek_journey_stats(self, partition: int) -> dict[str, Any]: ...
    def peek_backfilled(self, partition: int) -> str | None: ...
    def peek_quarantined(self, partition: int) -> list[tuple[str, dict[str, Any]]]: ...
    def lookup_identity(self, key: str) -> str | None: ...
    def lookup_profile(self, pid: str) -> bytes | None: ...
    def stored_profiles(self, partition: int) -> Iterator[tuple[str, bytes]]: ...


# --- the meta table's encoding (shared by both implementations) -------------------------------

SIZES, JOURNEYS, CLOCK, SOURCES, BACKFILLED, REQUEST, DUE = b"s", b"j", b"w", b"sw", b"bv", b"r:", b"d"
QUARANTINE = REQUEST + QUARANTINE_PREFIX.encode()


def due_key(due: int, pid: str) -> bytes:
    return DUE + due.to_bytes(8, "big") + pid.encode()


def decode_clock(raw: bytes | None) -> tuple[int, int]:
    if not raw:
        return 0, -1
    value = orjson.loads(raw)
    return (int(value[0]), int(value[1])) if isinstance(value, list) else (int(value), -1)


def quarantined(items: Iterator[tuple[bytes, bytes]]) -> list[tuple[str, dict[str, Any]]]:
    """(identifier key, quarantine record) of request entries from QUARANTINE on, in key order."""
    out = []
    for raw_key, raw in items:
        if not raw_key.startswith(QUARANTINE):
            break
        record = orjson.loads(raw).get("quarantined")
        if record:
            out.append((raw_key[len(QUARANTINE):].decode(), record))
    return out


def is_table_key(key: bytes) -> bool:
    """False for Faust's own bookkeeping keys in a table's database (its persisted offset)."""
    return not key.startswith(b"__faust")


class MetaKeys:
    """The partition metadata kept under the meta table's keys, on three primitives each
    implementation gives: `_get`/`_put` (None deletes) in the record's partition, `_peek` into
    any partition from outside a record."""

    def _get(self, key: bytes) -> bytes | None:
        raise NotImplementedError

    def _put(self, key: bytes, value: bytes | None) -> None:
        raise NotImplementedError

    def _peek(self, partition: int, key: bytes) -> bytes | None:
        raise NotImplementedError

    def _json(self, key: bytes) -> Any:
        raw = self._get(key)
        return orjson.loads(raw) if raw else {}

    def request(self, rid: str) -> dict[str, Any] | None:
        raw = self._get(REQUEST + rid.encode())
        return orjson.loads(raw) if raw else None

    def set_request(self, rid: str, state: dict[str, Any] | None) -> None:
        self._put(REQUEST + rid.encode(), None if state is None else orjson.dumps(state))

    def segment_sizes(self) -> dict[str, int]:
        sizes: dict[str, int] = self._json(SIZES)
        return sizes

    def add_segment_sizes(self, deltas: dict[str, int]) -> None:
        """One key for all segments: a record changes several at once."""
        sizes = self.segment_sizes()
        for segment, delta in deltas.items():
            if delta:
                sizes[segment] = sizes.get(segment, 0) + delta
        self._put(SIZES, orjson.dumps(sizes))

    def journey_stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self._json(JOURNEYS)
        return stats

    def set_journey_stats(self, stats: dict[str, Any]) -> None:
        self._put(JOURNEYS, orjson.dumps(stats))

    def clock(self) -> tuple[int, int]:
        return decode_clock(self._get(CLOCK))

    def set_clock(self, watermark: int, offset: int) -> None:
        self._put(CLOCK, orjson.dumps([watermark, offset]))

    def sources(self) -> Sources:
        sources: Sources = self._json(SOURCES)
        return sources

    def set_sources(self, sources: Sources) -> None:
        """Written only when changed (ticks repeat the same report while nothing moves)."""
        encoded = orjson.dumps(sources, option=orjson.OPT_SORT_KEYS)
        if encoded != self._get(SOURCES):
            self._put(SOURCES, encoded)

    def backfilled(self) -> str | None:
        raw = self._get(BACKFILLED)
        return raw.decode() if raw else None

    def set_backfilled(self, fingerprint: str) -> None:
        self._put(BACKFILLED, fingerprint.encode())

    def peek_segment_sizes(self, partition: int) -> dict[str, int]:
        sizes: dict[str, int] = orjson.loads(self._peek(partition, SIZES) or b"{}")
        return sizes

    def peek_journey_stats(self, partition: int) -> dict[str, Any]:
        stats: dict[str, Any] = orjson.loads(self._peek(partition, JOURNEYS) or b"{}")
        return stats

    def peek_backfilled(self, partition: int) -> str | None:
        raw = self._peek(partition, BACKFILLED)
        return raw.decode() if raw else None


# --- the worker's implementation --------------------------------------------------------------


class TableState(MetaKeys):
    """State over the Faust tables (values are JSON bytes), through the write-back layer: reads
    and writes of a record stay in memory and are written per batch of records.

    A profile decoded while handling a record is handed to the next read of the same key once
    more (the routing check, then the handler), unless it was written in between: one decode
    per event. Any further read decodes afresh, so a change a processor makes to a profile
    without writing it back is never seen by a later read.
    """

    def __init__(self, writeback: Any, identities: Any, profiles: Any, meta: Any) -> None:
        self._wb = writeback
        self._identities, self._profiles, self._meta = identities, profiles, meta
        self._lent: dict[bytes, tuple[bytes, Profile]] = {}

    def _get(self, key: bytes) -> bytes | None:
        raw: bytes | None = self._wb.get(self._meta, key)
        return raw

    def _put(self, key: bytes, value: bytes | None) -> None:
        self._wb.put(self._meta, key, value)

    def _peek(self, partition: int, key: bytes) -> bytes | None:
        raw: bytes | None = self._wb.peek(self._meta, partition, key)
        return raw

    def begin(self, partition: int) -> None:
        """A new record starts (the previous one is done); its partition is Faust's."""
        self._lent.clear()
        self._wb.record_done()

    def flush(self) -> int:
        written: int = self._wb.flush()
        return written

    def flush_due(self) -> None:
        self._wb.flush_due()

    def identity(self, key: str) -> str | None:
        raw = self._wb.get(self._identities, key.encode())
        return raw.decode() if raw else None

    def set_identity(self, key: str, pid: str) -> None:
        self._wb.put(self._identities, key.encode(), pid.encode())

    def profile(self, pid: str) -> Profile | None:
        key = pid.encode()
        raw = self._wb.get(self._profiles, key)
        if not raw:
            return None
        lent = self._lent.pop(key, None)
        if lent is not None and lent[0] is raw:
            return lent[1]
        profile: Profile = orjson.loads(raw)
        self._lent[key] = (raw, profile)
        return profile

    def set_profile(self, pid: str, profile: Profile) -> None:
        key = pid.encode()
        self._lent.pop(key, None)
        self._wb.put(self._profiles, key, orjson.dumps(profile))

    def delete_profile(self, pid: str) -> None:
        key = pid.encode()
        self._lent.pop(key, None)
        self._wb.put(self._profiles, key, None)  # a tombstone on the changelog

    def delete_identity(self, key: str) -> None:
        self._wb.put(self._identities, key.encode(), None)

    def move_deadline(self, pid: str, old: int | None, new: int | None) -> None:
        if old is not None:
            self._wb.put(self._meta, due_key(old, pid), None)
        if new is not None:
            self._wb.put(self._meta, due_key(new, pid), b"")

    def due(self, now: int, limit: int) -> list[tuple[int, str]]:
        """Up to `limit` (deadline, profile id) of this partition due by `now`, earliest first
        (still indexed: the caller takes each off with `move_deadline` as it re-checks it)."""
        from stream.runtime.faust_adapter import current_partition, partition_db

        self._wb.flush()  # the deadline index is scanned in the database
        db = partition_db(self._meta, current_partition())
        found: list[tuple[bytes, int, str]] = []
        for k in db.keys(from_key=DUE):
            if not k.startswith(DUE) or len(found) >= limit:
                break
            at = int.from_bytes(k[1:9], "big")
            if at > now:
                break
            found.append((k, at, k[9:].decode()))
        return [(at, pid) for _, at, pid in found]

    def profile_ids(self, after: str | None, limit: int) -> list[str]:
        """Up to `limit` stored profile ids of this partition after `after`, in key order."""
        from stream.runtime.faust_adapter import current_partition, partition_db

        self._wb.flush()  # the profiles are listed from the database
        db = partition_db(self._profiles, current_partition())
        start = after.encode() if after else None
        out: list[str] = []
        for k in db.keys(from_key=start) if start else db.keys():
            if k == start or not is_table_key(k):
                continue
            out.append(k.decode())
            if len(out) >= limit:
                break
        return out

    def peek_quarantined(self, partition: int) -> list[tuple[str, dict[str, Any]]]:
        """Quarantined identifiers of an open partition, as written (flushed) to its database."""
        from stream.runtime.faust_adapter import open_db

        db = open_db(self._meta, partition)
        return [] if db is None else quarantined(db.items(from_key=QUARANTINE))

    def lookup_identity(self, key: str) -> str | None:
        """KeyError while partitions are being assigned (Faust's table.get)."""
        raw = self._wb.lookup(self._identities, key.encode())
        return raw.decode() if raw else None

    def lookup_profile(self, pid: str) -> bytes | None:
        raw: bytes | None = self._wb.lookup(self._profiles, pid.encode())
        return raw

    def stored_profiles(self, partition: int) -> Iterator[tuple[str, bytes]]:
        from stream.runtime.faust_adapter import partition_db

        for key, raw in partition_db(self._profiles, partition).items():
            if is_table_key(key) and raw:
                yield key.decode(), raw


# --- the in-memory implementation -------------------------------------------------------------


class _Partition:
    def __init__(self) -> None:
        self.identities: dict[str, str] = {}
        self.profiles: dict[str, bytes] = {}
        self.meta: dict[bytes, bytes] = {}
        self.deadlines: list[tuple[int, str]] = []  # sorted


class MemoryState(MetaKeys):
    """The same state in dictionaries, one set per partition; values are kept encoded (JSON),
    as in RocksDB, so a caller never aliases what is stored."""

    def __init__(self) -> None:
        self.partitions: dict[int, _Partition] = {}
        self.partition = 0
        self.records = 0

    def _p(self, partition: int | None = None) -> _Partition:
        p = self.partition if partition is None else partition
        part = self.partitions.get(p)
        if part is None:
            part = self.partitions[p] = _Partition()
        return part

    def begin(self, partition: int) -> None:
        self.partition = partition
        self.records += 1

    def flush(self) -> int:
        return 0

    def flush_due(self) -> None:
        pass

    def identity(self, key: str) -> str | None:
        return self._p().identities.get(key)

    def set_identity(self, key: str, pid: str) -> None:
        self._p().identities[key] = pid

    def profile(self, pid: str) -> Profile | None:
        raw = self._p().profiles.get(pid)
        return orjson.loads(raw) if raw else None

    def set_profile(self, pid: str, profile: Profile) -> None:
        self._p().profiles[pid] = orjson.dumps(profile)

    def delete_profile(self, pid: str) -> None:
        self._p().profiles.pop(pid, None)

    def delete_identity(self, key: str) -> None:
        self._p().identities.pop(key, None)

    def move_deadline(self, pid: str, old: int | None, new: int | None) -> None:
        deadlines = self._p().deadlines
        if old is not None:
            i = bisect.bisect_left(deadlines, (old, pid))
            if i < len(deadlines) and deadlines[i] == (old, pid):
                deadlines.pop(i)
        if new is not None:
            i = bisect.bisect_left(deadlines, (new, pid))
            if i == len(deadlines) or deadlines[i] != (new, pid):
                deadlines.insert(i, (new, pid))

    def due(self, now: int, limit: int) -> list[tuple[int, str]]:
        deadlines = self._p().deadlines
        n = 0
        while n < len(deadlines) and n < limit and deadlines[n][0] <= now:
            n += 1
        return deadlines[:n]

    def profile_ids(self, after: str | None, limit: int) -> list[str]:
        keys = sorted(self._p().profiles, key=str.encode)
        if after is not None:
            keys = [k for k in keys if k.encode() > after.encode()]
        return keys[:limit]

    def peek_quarantined(self, partition: int) -> list[tuple[str, dict[str, Any]]]:
        meta = self._p(partition).meta
        return quarantined(iter([(k, meta[k]) for k in sorted(meta) if k >= QUARANTINE]))

    def lookup_identity(self, key: str) -> str | None:
        for part in self.partitions.values():
            if key in part.identities:
                return part.identities[key]
        return None

    def lookup_profile(self, pid: str) -> bytes | None:
        for part in self.partitions.values():
            if pid in part.profiles:
                return part.profiles[pid]
        return None

    def stored_profiles(self, partition: int) -> Iterator[tuple[str, bytes]]:
        yield from sorted(self._p(partition).profiles.items(), key=lambda kv: kv[0].encode())

    def _get(self, key: bytes) -> bytes | None:
        return self._p().meta.get(key)

    def _put(self, key: bytes, value: bytes | None) -> None:
        if value is None:
            self._p().meta.pop(key, None)
        else:
            self._p().meta[key] = value

    def _peek(self, partition: int, key: bytes) -> bytes | None:
        return self._p(partition).meta.get(key)
