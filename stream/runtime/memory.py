"""glibc allocator settings that keep a worker's resident memory flat, and a garbage collector
that does not stop it for long.

librdkafka (the outbox producer, the bulk-restore and definitions readers) allocates in its
own threads, and glibc gives each thread its own malloc arena; freed memory in those arenas
stays resident. Two arenas and a trim after a bulk restore keep RSS to what is in use.

Handling events frees memory in the middle of the main heap too (profile values, fetch
batches): glibc returns only the top of a heap by itself, so a worker trims every few seconds.
Measured at 1M profiles after 30 s of events on top (my harness, suite.state_at_scale): 383,
427 and 444 MB resident without it, 300 MB with a trim every 5 s; fixed mmap and trim thresholds
(MALLOC_MMAP_THRESHOLD_) gave 408 MB, so the freed memory is in small blocks.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import threading
import time

log = logging.getLogger(__name__)

M_ARENA_MAX = -8


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL("libc.so.6")


def limit_arenas(count: int = 2) -> None:
    """Call before any thread allocates (the first thing `tusk worker` does): glibc settles the
    arena limit once, when a second thread first needs an arena. Measured: called after the
    topic check's admin client had started, it left 6 arenas where MALLOC_ARENA_MAX=2 left 1."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        _libc().mallopt(M_ARENA_MAX, count)


def release_freed_memory() -> None:
    """Hand freed memory back to the OS (after a bulk restore's fetch buffers)."""
    with contextlib.suppress(OSError, AttributeError):
        _libc().malloc_trim(0)


TRIM_EVERY_S = 5.0
"""How often `trim_periodically` trims. A trim of a ~200 MB fragmented heap took 10-34 ms, holding
each arena's lock (allocations of more than 512 bytes wait; Python's small objects do not)."""


def trim_periodically(every_s: float = TRIM_EVERY_S) -> threading.Thread:
    """A daemon thread that hands freed memory back to the OS every `every_s` seconds (ctypes
    releases the GIL during the call: the event loop goes on)."""

    def loop() -> None:
        while True:
            time.sleep(every_s)
            started = time.monotonic()
            release_freed_memory()
            took = time.monotonic() - started
            if took > 0.05:
                log.info("malloc_trim took %.0f ms", took * 1000)

    thread = threading.Thread(target=loop, name="tusk-malloc-trim", daemon=True)
    thread.start()
    return thread


def freeze_startup_objects() -> None:
    """Exempt what exists before the worker starts (modules, the app, definitions) from the
    collector's full collections, which otherwise walk them all.

    Measured on CDNOW (my harness, one worker draining the backlog, collections timed with
    gc.callbacks over 30 s, two runs each): 4 full collections took 369 and 370 ms, the longest
    110 to 123 ms, every record waiting meanwhile; frozen here, 1 full collection of 6 and
    13 ms. Young collections are unchanged. Garbage is collected first, so none is kept for
    good; it runs before Faust starts, so no partition database is frozen (Faust relies on the
    collector to close a revoked one)."""
    gc.collect()
    gc.freeze()
