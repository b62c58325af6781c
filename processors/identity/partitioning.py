"""Key → partition, and profile ids that live on their identifier's partition.

Kafka's default partitioner (Java client, aiokafka, librdkafka's `murmur2_random`)
is murmur2 of the key bytes. Tusk sends every internal record with that same
function, so Faust's own router finds the owner of any key; and it mints each
profile id so that it hashes to the partition of the identifier that created
it. The common event then needs a single internal hop: identity lookup and
profile update happen on one partition.
"""

from __future__ import annotations

import hashlib
import struct
from functools import lru_cache

_M = 0x5BD1E995
# Precompiled little-endian word readers by word count (keys are short): no format string
# built and parsed per call.
_WORDS = [struct.Struct(f"<{n}I").unpack_from for n in range(64)]


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (seed 0x9747b28c), as a signed 32-bit int like Java's."""
    length = len(data)
    m = _M
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    n4 = length >> 2
    words = _WORDS[n4](data) if n4 < 64 else struct.unpack_from(f"<{n4}I", data)
    for k in words:
        k = (k * m) & 0xFFFFFFFF
        # h*m ^ k*m, masked once (masking commutes with xor)
        h = ((h * m) ^ ((k ^ (k >> 24)) * m)) & 0xFFFFFFFF
    tail = n4 * 4
    rest = length - tail
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


@lru_cache(maxsize=1 << 16)
def _partition_of(key: str, partitions: int) -> int:
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def partition_for(key: str | bytes, partitions: int) -> int:
    if isinstance(key, bytes):
        return (murmur2(key) & 0x7FFFFFFF) % partitions
    return _partition_of(key, partitions)


def mint_profile_id(seed: str, partitions: int, prefix: str = "p_") -> str:
    """Deterministic id for a new profile first seen under `seed`, on seed's partition.

    Same seed and partition count → same id, so a replay mints the same ids.
    Expected `partitions` hash tries.
    """
    target = partition_for(seed, partitions)
    # The candidates bypass partition_for's cache: they are unique, and would evict useful keys.
    # blake2b streams, so a copy of the hash of "seed#" updated with the salt is the same digest.
    stem = hashlib.blake2b(f"{seed}#".encode(), digest_size=10)
    salt = 0
    while True:
        h = stem.copy()
        h.update(str(salt).encode())
        candidate = f"{prefix}{h.hexdigest()}"
        if (murmur2(candidate.encode()) & 0x7FFFFFFF) % partitions == target:
            return candidate
        salt += 1
