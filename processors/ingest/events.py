"""Touchpoint validation: raw bytes in, a normalised Touchpoint or a Reject out.

Checks mirror schemas/touchpoint.schema.json (a unit test holds the two
together); they are written out by hand because a generic JSON Schema
validator costs more than the rest of the pipeline per event. Each reject
carries a stable machine reason (`missing_<field>`, `invalid_<field>`, ...) and
the JSON path of the offending field.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from processors.ingest.identifiers import DEFAULT_RULES, Identifier, IdentityRules, candidates, extract

EVENT_TYPES = frozenset({"identify", "track", "page", "screen", "group", "alias"})
DEFAULT_MAX_BYTES = 32 * 1024  # Segment's per-event limit

REQUIRED_BY_TYPE: dict[str, tuple[str, ...]] = {
    "track": ("event",),
    "group": ("groupId",),
    "alias": ("previousId",),
}
TIME_FIELDS = ("timestamp", "originalTimestamp", "sentAt", "receivedAt")


@dataclass(frozen=True, slots=True)
class Reject:
    reason: str
    field: str | None
    detail: str


@dataclass(slots=True)
class Touchpoint:
    msg: dict[str, Any]
    type: str
    message_id: str
    ts: int
    """Event time, epoch milliseconds."""
    identifiers: list[Identifier]

    @property
    def name(self) -> str:
        """What the event is called in counts: the track event name, else the type."""
        if self.type == "track":
            return str(self.msg["event"])
        return self.type


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _is_id(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    return isinstance(v, int) or (isinstance(v, str) and 0 < len(v) <= 512)


def _is_str(v: Any) -> bool:
    return isinstance(v, str) and 0 < len(v) <= 512


def _is_obj(v: Any) -> bool:
    return isinstance(v, dict)


def _is_time(v: Any) -> bool:
    return isinstance(v, str) and 10 <= len(v) <= 64


TOP_LEVEL: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("userId", _is_id, "a non-empty string or an integer"),
    ("anonymousId", _is_id, "a non-empty string or an integer"),
    ("groupId", _is_id, "a non-empty string or an integer"),
    ("previousId", _is_id, "a non-empty string or an integer"),
    ("event", _is_str, "a non-empty string of at most 512 characters"),
    ("name", lambda v: v is None or isinstance(v, str), "a string"),
    ("traits", _is_obj, "an object"),
    ("properties", _is_obj, "an object"),
    ("integrations", _is_obj, "an object"),
    ("context", _is_obj, "an object"),
    *((f, _is_time, "an ISO-8601 date-time string") for f in TIME_FIELDS),
)


def parse_time(value: str) -> int | None:
    """ISO-8601 → epoch ms (UTC assumed when no offset is given)."""
    try:
        dt = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def _check_context(ctx: Mapping[str, Any]) -> Reject | None:
    def bad(path: str, want: str) -> Reject:
        return Reject("invalid_context", f"context.{path}", f"context.{path} must be {want}")

    if ctx.get("traits") is not None and not _is_obj(ctx["traits"]):
        return bad("traits", "an object")
    device = ctx.get("device")
    if device is not None:
        if not _is_obj(device):
            return bad("device", "an object")
        if device.get("id") is not None and not _is_id(device["id"]):
            return bad("device.id", "a non-empty string or an integer")
    externals = ctx.get("externalIds")
    if externals is not None:
        if not isinstance(externals, list):
            return bad("externalIds", "an array")
        for i, entry in enumerate(externals):
            if not _is_obj(entry) or not _is_id(entry.get("id")) or not _is_str(entry.get("type")):
                return bad(f"externalIds.{i}", "an object with string `id` and `type`")
    consent = ctx.get("consent")
    if consent is not None:
        if not _is_obj(consent):
            return bad("consent", "an object")
        prefs = consent.get("categoryPreferences")
        if prefs is not None and (
            not _is_obj(prefs) or not all(isinstance(v, bool) for v in prefs.values())
        ):
            return bad("consent.categoryPreferences", "an object of booleans")
    return None


def check(msg: Any) -> Reject | None:
    """Structural checks of a decoded message (the schema's rules)."""
    if not isinstance(msg, dict):
        kind = type(msg).__name__ if msg is not None else "null"
        return Reject("not_an_object", None, f"an event must be a JSON object, got {kind}")
    if "type" not in msg:
        return Reject("missing_type", "type", "`type` is required")
    kind = msg["type"]
    if kind not in EVENT_TYPES:
        return Reject("unknown_type", "type", f"`type` must be one of {sorted(EVENT_TYPES)}")
    if "messageId" not in msg:
        return Reject("missing_message_id", "messageId", "`messageId` is required")
    if not _is_str(msg["messageId"]):
        return Reject("invalid_message_id", "messageId",
                      "`messageId` must be a non-empty string of at most 512 characters")
    for field in REQUIRED_BY_TYPE.get(kind, ()):
        if msg.get(field) is None:
            return Reject(f"missing_{snake(field)}", field, f"`{field}` is required on {kind}")
    for field, ok, want in TOP_LEVEL:
        value = msg.get(field)
        if value is not None and not ok(value):  # null counts as absent, as in Segment
            return Reject(f"invalid_{snake(field)}", field, f"`{field}` must be {want}")
    if isinstance(msg.get("context"), dict):
        return _check_context(msg["context"])
    return None


def event_time(msg: Mapping[str, Any], fallback_ms: int) -> int | Reject:
    for field in TIME_FIELDS[:2]:
        value = msg.get(field)
        if value is not None:
            ms = parse_time(value)
            if ms is None:
                return Reject("invalid_timestamp", field, f"`{field}` is not an ISO-8601 date-time")
            return ms
    return fallback_ms


def validate(raw: bytes | None, *, record_ts_ms: int, max_bytes: int = DEFAULT_MAX_BYTES,
             rules: IdentityRules | None = None) -> Touchpoint | Reject:
    if not raw:
        return Reject("empty", None, "the record has no value")
    if len(raw) > max_bytes:
        return Reject("too_large", None, f"event is {len(raw)} bytes, the limit is {max_bytes}")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return Reject("invalid_utf8", None, f"not UTF-8 at byte {e.start}")
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        return Reject("invalid_json", None, f"not JSON: {e}")
    problem = check(msg)
    if problem:
        return problem
    ts = event_time(msg, record_ts_ms)
    if isinstance(ts, Reject):
        return ts
    rules = rules or DEFAULT_RULES
    identifiers = extract(msg, rules)
    if not identifiers:
        if any(c is not None for c in candidates(msg, rules.phone_region)):
            return Reject("blocked_identifier", None,
                          "every identifier on the event is on the blocked list")
        return Reject("no_identifier", None,
                      "the event carries no usable identifier (userId, anonymousId, email, ...)")
    return Touchpoint(msg, msg["type"], str(msg["messageId"]), ts, identifiers)


def encode(tp: Touchpoint) -> bytes:
    """The validated event as it travels between stages."""
    return orjson.dumps({"m": tp.msg, "ts": tp.ts, "ids": tp.identifiers})
