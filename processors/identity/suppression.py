"""The erased-identifier suppression list: salted hashes of identifiers an erasure removed.

Identity (processors/identity/graph.py) checks it before it mints a profile for an identifier;
privacy (processors/privacy/protocol.py) writes it when it erases one. Neither imports the other for it.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

SALT = b"tusk-erased-v1"


class Identities(Protocol):
    def identity(self, key: str) -> str | None: ...


def suppression_key(key: str) -> str:
    """The suppression-list entry of an identifier key: a hash, never the value itself."""
    return "x:" + hashlib.sha256(SALT + key.encode()).hexdigest()


def identifier_hash(key: str) -> str:
    """The salted SHA-256 of an identifier key ("email:jo@example.com") that results carry."""
    return suppression_key(key)[2:]


def is_suppressed(key: str, store: Identities, now: int) -> bool:
    entry = store.identity(suppression_key(key))
    return entry is not None and entry.startswith("erased:") and int(entry[7:]) > now
