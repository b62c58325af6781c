"""Unlogged table writes survive a crash as a prefix (stream/runtime/faust_adapter.py, UNLOGGED).

A child process writes a real RocksDB database (Faust's options, small memtables so that some
are flushed on their own) the way the worker does: write-back batches and recorded changelog
offsets without the write-ahead log, a memtable flush before Faust's logged writes. It is killed
with SIGKILL; the database reopened must equal the state after some prefix of its writes, so the
recorded offset never claims a value the database lost.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from faust.stores.rocksdb import RocksDBOptions
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

OFFSET_KEY = b"__faust\0offset__"  # Faust 0.15.3's Store.offset_key

CHILD = r"""
import json, sys, time
import rocksdict
from faust.stores.rocksdb import RocksDBOptions
from stream.runtime.faust_adapter import flush_memtable, write_unlogged, UNLOGGED
path, ops = sys.argv[1], json.loads(sys.argv[2])
db = RocksDBOptions(write_buffer_size=64 * 1024, max_write_buffer_number=2).open(path)
for kind, n in ops:
    if kind == "batch":  # a write-back flush: a few keys, one 3 KB profile among them
        batch = rocksdict.WriteBatch(raw_mode=True)
        batch.put(b"p%d" % (n % 7), b"%d:" % n + b"x" * 3000)
        batch.put(b"d%d" % (n % 3), b"%d" % n)
        write_unlogged(db, batch)
    elif kind == "offset":  # Outbox.poll: the changelog offset acknowledged, unlogged
        db.put(b"__faust\0offset__", b"%d" % n, UNLOGGED)
    elif kind == "memflush":
        flush_memtable(db)
    else:  # "faust": a logged write, as Faust's standby or recovery makes
        db.put(b"f%d" % n, b"%d" % n)
print("written", flush=True)
time.sleep(60)
"""


def replay(ops: list[tuple[str, int]]) -> list[dict[bytes, bytes]]:
    """The database's content after each prefix of `ops` (the empty prefix first)."""
    state: dict[bytes, bytes] = {}
    out = [dict(state)]
    for kind, n in ops:
        if kind == "batch":
            state[b"p%d" % (n % 7)] = b"%d:" % n + b"x" * 3000
            state[b"d%d" % (n % 3)] = b"%d" % n
        elif kind == "offset":
            state[OFFSET_KEY] = b"%d" % n
        elif kind == "faust":
            state[b"f%d" % n] = b"%d" % n
        out.append(dict(state))
    return out


def crash_after(path: Path, ops: list[tuple[str, int]]) -> dict[bytes, bytes]:
    """Run `ops` in a child, SIGKILL it once they are written, reopen the database."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), json.dumps(ops)],
                             stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "written"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    db: Any = RocksDBOptions().open(path)
    try:
        return {bytes(k): bytes(v) for k, v in db.items()}
    finally:
        db.close()


@st.composite
def worker_writes(draw: st.DrawFn) -> list[tuple[str, int]]:
    """Batches, each acknowledged offset after the batch it covers, memtable flushes; Faust's
    logged writes only right after a memtable flush (what the worker does at a rebalance)."""
    ops: list[tuple[str, int]] = []
    batches = 0
    for step in draw(st.lists(st.sampled_from(["batch", "batch", "batch", "offset", "memflush",
                                               "faust"]), min_size=1, max_size=60)):
        if step == "batch":
            ops.append(("batch", batches))
            batches += 1
        elif step == "offset" and batches:
            ops.append(("offset", draw(st.integers(0, batches - 1))))
        elif step == "memflush":
            ops.append(("memflush", 0))
        elif step == "faust":
            ops += [("memflush", 0), ("faust", len(ops))]
    return ops


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=worker_writes())
def test_a_killed_worker_leaves_a_prefix_of_its_unlogged_writes(tmp_path_factory: Any,
                                                                   ops: list[tuple[str, int]]) -> None:
    path = Path(tmp_path_factory.mktemp("db")) / "profiles-0.db"
    got = crash_after(path, ops)
    prefixes = replay(ops)
    assert got in prefixes, (len(got), ops)
    # and nothing written before the last memtable flush is lost
    kept = max(i for i, state in enumerate(prefixes) if state == got)
    flushed = max((i for i, (kind, _) in enumerate(ops) if kind == "memflush"), default=0)
    assert kept >= flushed, (kept, flushed, ops)


def test_a_logged_write_after_unflushed_unlogged_ones_survives_them(tmp_path: Path) -> None:
    """Why a rebalance flushes the memtables before Faust writes: without it, a crash keeps
    Faust's logged write and loses the unlogged writes made before it (not a prefix)."""
    ops = [("batch", 0), ("offset", 0), ("faust", 2)]
    got = crash_after(tmp_path / "meta-0.db", ops)
    assert got == {b"f2": b"2"}
    assert got not in replay(ops)
