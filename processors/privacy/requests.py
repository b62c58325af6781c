"""Privacy requests on the wire (schemas/privacy-request.schema.json)."""

from __future__ import annotations

from typing import Any

import orjson

from processors.ingest.identifiers import key_of, normalise, parse_key

TYPES = ("export", "erase")


def privacy_request(raw: bytes | None) -> dict[str, Any]:
    """{"request_id", "type", "identifier": "email:jo@x.com"} → normalised; ValueError naming the problem."""
    try:
        req = orjson.loads(raw or b"")
    except orjson.JSONDecodeError:
        raise ValueError("the request is not JSON") from None
    if not isinstance(req, dict):
        raise ValueError("the request is not a JSON object")
    rid = req.get("request_id")
    if not isinstance(rid, str) or not rid:
        raise ValueError("request_id: expected a non-empty string")
    if req.get("type") not in TYPES:
        raise ValueError(f"type: expected one of {list(TYPES)}")
    ident = req.get("identifier")
    if not isinstance(ident, str):
        raise ValueError("identifier: expected TYPE:VALUE, e.g. email:jo@example.com")
    try:
        kind, value = parse_key(ident)
    except ValueError:
        raise ValueError("identifier: expected TYPE:VALUE, e.g. email:jo@example.com") from None
    norm = normalise(kind, value)
    if norm is None:
        raise ValueError(f"identifier: not a valid {kind}")
    return {"request_id": rid, "type": req["type"], "identifier": key_of((kind, norm))}
