"""glibc allocator settings that keep a worker's resident memory flat.

librdkafka (the outbox producer, the bulk-restore and definitions readers) allocates in its
own threads, and glibc gives each thread its own malloc arena; freed memory in those arenas
stays resident. Two arenas and a trim after a bulk restore keep RSS to what is in use.
"""

from __future__ import annotations

import contextlib
import ctypes

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
