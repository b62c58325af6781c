"""Why a profile is what it is: which event linked each identifier, which merges made it,
and which conditions of each segment it is in hold, with the values that satisfy them.

Link provenance is kept in the profile (`_prov`: identifier key → [messageId, event ms,
event type, the identifier the event was routed by]) and merges in `_merges` (newest
MAX_MERGES_KEPT), both written by processors/identity/graph.py. Segment conditions are re-run
through the compiled evaluator (compile_node of processors/segments/rules.py, the catalog's
scope), leaf by leaf, in the compiler's order (so implicit counters resolve to the same state).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from processors.common.predicates import Ctx, get_path
from processors.ingest.identifiers import key_of
from processors.profile.unified import Profile, iso
from processors.segments.catalog import Catalog, _Scope
from processors.segments.rules import NODE_KINDS, Compiling, compile_node

MAX_MERGES_KEPT = 100


def record_links(profile: Profile, keys: list[str], mid: str, ts: int, etype: str, via: str | None) -> None:
    """Remember the event that linked each of `keys` (bounded by the identities themselves)."""
    prov: dict[str, Any] = profile.setdefault("_prov", {})
    for key in keys:
        prov.setdefault(key, [mid, ts, etype, via if via != key else None])


def merged_history(survivor: Profile, loser: Profile, entry: Mapping[str, Any]) -> dict[str, Any]:
    """The `_prov` and `_merges` of a merge of loser into survivor (call after merge())."""
    prov = {**loser.get("_prov", {}), **survivor.get("_prov", {})}
    merges = sorted(survivor.get("_merges", []) + loser.get("_merges", []), key=lambda m: m["at"] or 0)
    return {"_prov": prov, "_merges": [*merges, dict(entry)][-MAX_MERGES_KEPT:]}


def _identifiers(profile: Profile) -> list[dict[str, Any]]:
    prov = profile.get("_prov", {})
    out = []
    for kind in sorted(profile["identities"]):
        for value in profile["identities"][kind]:
            p = prov.get(key_of((kind, value)))
            linked = None if p is None else {"messageId": p[0], "time": iso(p[1]), "event_type": p[2]}
            out.append({"type": kind, "value": value, "linked_by": linked,
                        "through": None if p is None else p[3]})
    return out


def _merges(profile: Profile) -> list[dict[str, Any]]:
    out = []
    for m in profile.get("_merges", []):
        event = m.get("event")
        out.append({"survivor": m["survivor"], "merged": m["loser"], "through": m.get("link"),
                    "event": None if event is None else {**event, "time": iso(event["time"])},
                    "at": iso(m.get("at"))})
    return out


def _leaf_text(node: Mapping[str, Any], kind: str, value: Any) -> str:
    ops = ", ".join(f"{k} {v!r}" for k, v in node.items() if k != kind)
    shown = f" = {value!r}" if value is not None else ""
    return f"{kind} {node[kind]}{shown}" + (f" ({ops})" if ops else "")


def _walk(node: Any, path: list[str | int], c: Compiling, scope: _Scope, now: int,
          out: list[dict[str, Any]]) -> bool:
    """Evaluate `node` leaf by leaf through the compiler; collect the leaves that hold."""
    kind = next(k for k in NODE_KINDS if k in node)
    if kind in ("all", "any"):
        results = [_walk(sub, [*path, kind, i], c, scope, now, out) for i, sub in enumerate(node[kind])]
        return all(results) if kind == "all" else any(results)
    if kind == "not":
        inner: list[dict[str, Any]] = []
        held = not _walk(node["not"], [*path, "not"], c, scope, now, inner)
        if held:
            out.append({"condition": "not", "holds": True, "detail": [i["text"] for i in inner] or None,
                        "text": f"not ({node['not']})"})
        return held
    check = compile_node(node, path, c)
    scope.ctx = Ctx(now)
    holds = bool(check(scope))
    value: Any = None
    if kind == "trait":
        value = get_path(scope.profile["traits"], node[kind])
    elif kind == "computed":
        value = scope.computed(node[kind])
    elif kind == "field":
        value = get_path(scope.profile, node[kind])
    elif kind in ("consent", "subscription"):
        value = scope.profile.get("consent" if kind == "consent" else "subscriptions", {}).get(node[kind])
    if holds:
        out.append({"condition": kind, "holds": True, "value": value, "text": _leaf_text(node, kind, value)})
    return holds


def _segments(profile: Profile, catalog: Catalog, now: int) -> list[dict[str, Any]]:
    out = []
    for sid in sorted(profile.get("segments", {})):
        spec = catalog.segment_specs.get(sid)
        if spec is None:
            continue
        scope = _Scope(profile, Ctx(now), catalog)
        held: list[dict[str, Any]] = []
        inside = _walk(spec["condition"], ["condition"], Compiling(sid), scope, now, held)
        out.append({"segment": sid, "entered_at": iso(profile["segments"][sid].get("entered_at")),
                    "holds_now": inside, "conditions": held})
    return out


def explain(profile: Profile, catalog: Catalog, now: int) -> dict[str, Any]:
    return {"profile_id": profile["id"], "identifiers": _identifiers(profile),
            "merges": _merges(profile), "segments": _segments(profile, catalog, now)}
