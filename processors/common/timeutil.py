"""Durations and instants: `30d` → milliseconds, ISO-8601 or epoch → milliseconds."""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime
from typing import Any, overload

_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d|w)$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
DAY_MS = 86_400_000
HOUR_MS = 3_600_000


def parse_duration_ms(text: str, name: str = "duration") -> int:
    """'30d' → 2592000000; ValueError naming `name` otherwise."""
    m = _DURATION.match(str(text).strip())
    if not m:
        raise ValueError(f"{name}={text!r}: expected a duration like 500ms, 30s, 5m, 24h, 30d or 2w.")
    return int(m.group(1)) * _UNIT_MS[m.group(2)]


def to_ms(value: Any) -> int | None:
    """An instant as epoch milliseconds: ints/floats are taken as ms, strings as ISO-8601."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            return None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return int(dt.timestamp() * 1000)
    return None


@overload
def iso(ms: int) -> str: ...
@overload
def iso(ms: None) -> None: ...
@overload
def iso(ms: int | None) -> str | None: ...


def iso(ms: int | None) -> str | None:
    """Epoch milliseconds as ISO-8601 UTC with milliseconds and `Z` (None stays None)."""
    if ms is None:
        return None
    return _iso(ms)


@functools.lru_cache(maxsize=4096)
def _iso(ms: int) -> str:
    # cached: one event's transitions, triggers and journey steps format the same few instants
    # (each entry/exit record carries `occurred_at`), and formatting costs ~3 µs a call
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")
