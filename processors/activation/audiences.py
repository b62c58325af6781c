"""Addresses for ad audiences: normalised, SHA-256-hashed emails and phones.

Ad platforms (Google Customer Match, Meta custom audiences) match people on
the SHA-256 hex digest of a normalised value: an email lower-cased and
trimmed, a phone in E.164 (`+14155552671`). Other identifier types (device
ids) are hashed as they are stored (trimmed). A value that does not
normalise (an invalid email or phone) gives no hash: a hash of a typo would
match nobody, or the wrong person.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from processors.ingest.identifiers import normalise

ADDRESS_FORMS = ("raw", "hashed", "both")
"""A channel's `address_as`: raw addresses in `to`, hashes in `hashed`, or both."""


def sha256_of(kind: str, value: Any) -> str | None:
    """The hex SHA-256 of a value normalised for its identifier type, or None."""
    norm = normalise(kind, value)
    return hashlib.sha256(norm.encode("utf-8")).hexdigest() if norm else None


def hashed(to: Mapping[str, Any]) -> dict[str, str]:
    """{"email_sha256": …, "phone_sha256": …} of the raw addresses a trigger would carry."""
    out: dict[str, str] = {}
    for kind, value in to.items():
        digest = sha256_of(kind, value)
        if digest:
            out[f"{kind}_sha256"] = digest
    return out
