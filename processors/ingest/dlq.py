"""The dead-letter record (CONTRACT §3.4): the rejected bytes kept whole, with why."""

from __future__ import annotations

import base64
from typing import Any

from processors.ingest.events import Reject


def original_text(raw: bytes) -> tuple[str, str]:
    """(text, encoding): the bytes as UTF-8 text when they are, else base64."""
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), "base64"


def dlq_record(reject: Reject, raw: bytes, *, topic: str, partition: int, offset: int,
               received_at: int) -> dict[str, Any]:
    text, encoding = original_text(raw)
    return {
        "reason": reject.reason,
        "field": reject.field,
        "detail": reject.detail,
        "received_at": received_at,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "original": text,
        "original_encoding": encoding,
    }
