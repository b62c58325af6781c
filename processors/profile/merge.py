"""Merging two profiles of one person into one.

merge(a, b) is commutative and associative on everything users see: the
survivor id is the smaller id, identities and sets are unions, counters add,
traits keep the newest value by (event time, messageId), first/last seen are
min/max, the recent-event list keeps the newest N of both.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import orjson

from processors.predict.rfm import merge as merge_rfm
from processors.profile.aggregates import bucket_merge
from processors.profile.computed import merge_states
from processors.profile.trust import TrustConfig
from processors.profile.unified import CONSENT_HISTORY, EVENT_BUCKETS, Profile, ProfileLimits, trim_seen


def _newest(a: list[Any] | None, b: list[Any] | None,
            key: Callable[[list[Any]], tuple[Any, ...]] | None = None) -> int:
    """-1 when stamp a wins, 1 when b wins (ties go to the larger stamp → deterministic)."""
    if a is None:
        return 1
    if b is None:
        return -1
    if key is not None:
        return -1 if key(a) >= key(b) else 1
    return -1 if (a[0], a[1]) >= (b[0], b[1]) else 1


Stamped = dict[str, Any]


def _merge_stamped(values_a: Stamped, stamps_a: Stamped, values_b: Stamped, stamps_b: Stamped,
                   trust: TrustConfig | None = None) -> tuple[Stamped, Stamped]:
    values: dict[str, Any] = {}
    stamps: dict[str, Any] = {}
    for name in sorted(set(values_a) | set(values_b)):
        key = None if trust is None else functools.partial(trust.key, name)
        if name not in values_b or (name in values_a and
                                    _newest(stamps_a.get(name), stamps_b.get(name), key) < 0):
            values[name], stamp = values_a[name], stamps_a.get(name)
        else:
            values[name], stamp = values_b[name], stamps_b.get(name)
        if stamp is not None:
            stamps[name] = stamp
    return values, stamps


def _add_counts(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + v
    return out


def _min(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def _max(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


def merge(a: Profile, b: Profile, limits: ProfileLimits | None = None) -> Profile:
    """One profile holding both; neither input is changed."""
    limits = limits or ProfileLimits()
    if b["id"] < a["id"]:
        a, b = b, a
    out = orjson.loads(orjson.dumps(a))  # a deep copy, several times faster than copy's
    ids: dict[str, list[str]] = {}
    for kind in sorted(set(a["identities"]) | set(b["identities"])):
        ids[kind] = sorted(set(a["identities"].get(kind, [])) | set(b["identities"].get(kind, [])))
    out["identities"] = ids
    out["traits"], out["_tt"] = _merge_stamped(a["traits"], a["_tt"], b["traits"], b["_tt"], limits.trust)
    for field, stamps in (("consent", "_ct"), ("subscriptions", "_st")):
        out[field], out[stamps] = _merge_stamped(a.get(field, {}), a.get(stamps, {}),
                                                 b.get(field, {}), b.get(stamps, {}))
    out["first_seen"] = _min(a["first_seen"], b["first_seen"])
    out["last_seen"] = _max(a["last_seen"], b["last_seen"])
    out["event_count"] = a["event_count"] + b["event_count"]
    out["event_counts"] = dict(sorted(_add_counts(a["event_counts"], b["event_counts"]).items()))
    recent = {e["messageId"]: e for e in a["recent_events"] + b["recent_events"]}
    out["recent_events"] = sorted(recent.values(), key=lambda e: (e["ts"], e["messageId"]),
                                  reverse=True)[: limits.recent_events]
    members = {(m["group_id"], m["since"]): m for m in a["memberships"] + b["memberships"]}
    out["memberships"] = [members[k] for k in sorted(members)]
    out["merged_from"] = sorted(set(a["merged_from"]) | set(b["merged_from"]) | {b["id"]})
    out["_seen"] = trim_seen({**a["_seen"], **b["_seen"]}, limits, limits.dedup_max_ids)
    src = dict(a["_src"])
    for p, off in b["_src"].items():
        src[p] = max(src.get(p, off), off)
    out["_src"] = src
    history = {(h["at"], h["messageId"], h.get("consent") or h.get("subscription")): h
               for h in a.get("consent_history", []) + b.get("consent_history", [])}
    out["consent_history"] = [history[k] for k in sorted(history)][-CONSENT_HISTORY:]
    out["_agg"] = merge_states(a.get("_agg", {}), b.get("_agg", {}))
    index = dict(a.get("_ev", {}))
    for name, buckets in b.get("_ev", {}).items():
        index[name] = bucket_merge(index.get(name, {}), buckets, _add, EVENT_BUCKETS)
    out["_ev"] = dict(sorted(index.items()))
    if "_rfm" in a or "_rfm" in b:
        out["_rfm"] = merge_rfm(a.get("_rfm", {}), b.get("_rfm", {}))
    # memberships, deadlines and computed values are the survivor's until the catalog
    # re-evaluates the merged profile (identity._on_merge does at once)
    return out


def _add(x: Any, y: Any) -> Any:
    return y if x is None else x if y is None else x + y
