"""The unified profile: a plain dict, stored as JSON, changed only through apply().

Every rule here is order-independent, so the profile after a set of events does
not depend on the order they arrived in: traits are last-write-wins per trait
by (event time, messageId); counters add; first/last seen are min/max; the
recent-event list keeps the newest N by (time, messageId); identity values
are kept sorted.

Bookkeeping that users do not see lives under keys starting with "_":
  _tt    trait → [event ms, messageId, source] of the value kept (ranked sources, then
         last-write-wins; processors/profile/trust.py)
  _seen  messageId → event ms, the dedup window (bounded by time and count)
  _src   source partition → last offset applied (redelivery is a no-op)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from processors.common.timeutil import iso
from processors.ingest.events import Touchpoint
from processors.ingest.identifiers import Identifier
from processors.profile.trust import NO_TRUST, TrustConfig, provenance, raised_value, source_of

Profile = dict[str, Any]

HOUR_MS = 3_600_000
EVENT_BUCKETS = 64
"""Per event name and profile: buckets of the occurrence index (_ev) behind `performed`."""


@dataclass(frozen=True)
class ProfileLimits:
    dedup_window_ms: int = 24 * HOUR_MS  # Segment deduplicates over about a day
    dedup_max_ids: int = 1000
    recent_events: int = 20
    retention_ms: int = 105 * 7 * 24 * HOUR_MS
    """Recent events and occurrence buckets older than this (before the newest) are dropped."""
    ttl_ms: int | None = None
    """A profile with no event for this long is erased (None: never)."""
    trust: TrustConfig = NO_TRUST
    """Source ranking of traits (identity.yaml `trust`); none: last-write-wins."""


class Outcome(Enum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    REDELIVERED = "redelivered"


def new_profile(pid: str, kind: str = "person") -> Profile:
    return {
        "id": pid, "kind": kind, "identities": {}, "traits": {}, "computed": {},
        "consent": {}, "subscriptions": {}, "memberships": [], "segments": {},
        "first_seen": None, "last_seen": None, "event_count": 0, "event_counts": {},
        "recent_events": [], "merged_from": [],
        "_tt": {}, "_seen": {}, "_src": {},
    }


def add_identities(profile: Profile, identifiers: Iterable[Identifier]) -> bool:
    """Attach identifiers; True when something new was added."""
    ids: dict[str, list[str]] = profile["identities"]
    changed = False
    for kind, value in identifiers:
        values = ids.setdefault(kind, [])
        if value not in values:
            values.append(value)
            values.sort()
            changed = True
    return changed


def set_trait(profile: Profile, name: str, value: Any, ts: int, mid: str, source: str | None = None,
              trust: TrustConfig = NO_TRUST) -> None:
    stamp = [ts, mid] if source is None else [ts, mid, source]
    current = profile["_tt"].get(name)
    if current is None or trust.key(name, stamp) >= trust.key(name, current):
        profile["traits"][name] = value
        profile["_tt"][name] = stamp


def person_traits(tp: Touchpoint) -> Mapping[str, Any]:
    """Traits an event sets on the person: context.traits, then identify traits."""
    merged: dict[str, Any] = {}
    ctx = tp.msg.get("context")
    if isinstance(ctx, dict) and isinstance(ctx.get("traits"), dict):
        merged.update(ctx["traits"])
    if tp.type == "identify" and isinstance(tp.msg.get("traits"), dict):
        merged.update(tp.msg["traits"])
    return merged


def consent_of(tp: Touchpoint) -> dict[str, bool]:
    """context.consent.categoryPreferences: category → granted (booleans only)."""
    ctx = tp.msg.get("context")
    consent = ctx.get("consent") if isinstance(ctx, dict) else None
    prefs = consent.get("categoryPreferences") if isinstance(consent, dict) else None
    if not isinstance(prefs, dict):
        return {}
    return {str(k): v for k, v in prefs.items() if isinstance(v, bool)}


CONSENT_HISTORY = 200
SUBSCRIPTION_STATES = frozenset({"subscribed", "unsubscribed", "did_not_subscribe"})


def subscriptions_of(traits: Mapping[str, Any]) -> dict[str, str]:
    subs = traits.get("subscriptions")
    if not isinstance(subs, dict):
        return {}
    return {str(k): v for k, v in subs.items() if v in SUBSCRIPTION_STATES}


def _set_stamped(profile: Profile, field: str, stamps: str, name: str, value: Any,
                 ts: int, mid: str) -> bool:
    """Last-write-wins by (event time, messageId); True when the value kept changed."""
    held = profile.setdefault(stamps, {})
    current = held.get(name)
    if current is None or (ts, mid) >= (current[0], current[1]):
        changed = profile[field].get(name) != value
        profile[field][name] = value
        held[name] = [ts, mid]
        return changed
    return False


def trim_seen(seen: dict[str, int], limits: ProfileLimits, keep: int) -> dict[str, int]:
    """The dedup window (`_seen`) once it holds more than dedup_max_ids messageIds: the `keep`
    newest within dedup_window_ms of the newest (ties by messageId); else `seen` itself."""
    if len(seen) <= limits.dedup_max_ids:
        return seen
    newest = max(seen.values())
    kept = sorted(((t, m) for m, t in seen.items() if t >= newest - limits.dedup_window_ms),
                  reverse=True)[:keep]
    return {m: t for t, m in kept}


def _remember(profile: Profile, mid: str, ts: int, limits: ProfileLimits) -> None:
    seen: dict[str, int] = profile["_seen"]
    seen[mid] = ts
    # trimmed to three quarters, so that the next events do not trim again at once
    profile["_seen"] = trim_seen(seen, limits, max(1, limits.dedup_max_ids * 3 // 4))


def _record_recent(profile: Profile, tp: Touchpoint, limits: ProfileLimits) -> None:
    entry: dict[str, Any] = {"ts": tp.ts, "messageId": tp.message_id, "type": tp.type}
    if tp.type == "track":
        entry["event"] = tp.msg["event"]
    elif tp.msg.get("name"):
        entry["name"] = tp.msg["name"]
    if isinstance(tp.msg.get("properties"), dict) and tp.msg["properties"]:
        entry["properties"] = tp.msg["properties"]
    recent: list[dict[str, Any]] = profile["recent_events"]
    # newest first, by (ts, messageId): the common event is the newest, so a scan from the front
    # places it at once, where sorting the list again cost a key call per entry
    key, i = (tp.ts, tp.message_id), 0
    while i < len(recent) and (recent[i]["ts"], recent[i]["messageId"]) >= key:
        i += 1
    recent.insert(i, entry)
    del recent[limits.recent_events:]
    horizon = recent[0]["ts"] - limits.retention_ms
    while recent and recent[-1]["ts"] < horizon:
        recent.pop()


def is_duplicate(profile: Profile, tp: Touchpoint, source: tuple[int, int] | None = None) -> Outcome | None:
    if source is not None:
        last = profile["_src"].get(str(source[0]))
        if last is not None and source[1] <= last:
            return Outcome.REDELIVERED
    if tp.message_id in profile["_seen"]:
        return Outcome.DUPLICATE
    return None


def apply(profile: Profile, tp: Touchpoint, limits: ProfileLimits | None = None,
          source: tuple[int, int] | None = None) -> Outcome:
    """Fold one event into the profile (in place). `source` is (partition, offset)."""
    limits = limits or ProfileLimits()
    dup = is_duplicate(profile, tp, source)
    if dup is not None:
        return dup
    if source is not None:
        profile["_src"][str(source[0])] = source[1]
    _remember(profile, tp.message_id, tp.ts, limits)
    add_identities(profile, tp.identifiers)
    traits = person_traits(tp)
    origin = source_of(tp.msg)
    for name, value in traits.items():
        if name != "subscriptions":
            set_trait(profile, name, value, tp.ts, tp.message_id, origin, limits.trust)
    for rule in limits.trust.raised_by(tp.name):  # e.g. Email Verified: the email is `verified`
        value = raised_value(rule, tp.msg)
        if value is None:
            value = profile["traits"].get(rule.trait)
        if value is not None:
            set_trait(profile, rule.trait, value, tp.ts, tp.message_id, rule.to, limits.trust)
    history: list[dict[str, Any]] = profile.setdefault("consent_history", [])
    for channel, state in subscriptions_of(traits).items():
        _set_stamped(profile, "subscriptions", "_st", channel, state, tp.ts, tp.message_id)
        history.append({"at": iso(tp.ts), "subscription": channel, "state": state,
                        "messageId": tp.message_id})
    for category, granted in consent_of(tp).items():
        _set_stamped(profile, "consent", "_ct", category, granted, tp.ts, tp.message_id)
        history.append({"at": iso(tp.ts), "consent": category, "granted": granted,
                        "messageId": tp.message_id})
    if len(history) > CONSENT_HISTORY:
        history.sort(key=lambda h: (h["at"], h["messageId"]))
        del history[:-CONSENT_HISTORY]
    first, last = profile["first_seen"], profile["last_seen"]
    profile["first_seen"] = tp.ts if first is None else min(first, tp.ts)
    profile["last_seen"] = tp.ts if last is None else max(last, tp.ts)
    profile["event_count"] += 1
    counts: dict[str, int] = profile["event_counts"]
    counts[tp.name] = counts.get(tp.name, 0) + 1
    _record_recent(profile, tp, limits)
    return Outcome.APPLIED


def public_view(profile: Profile) -> Profile:
    """The profile as users see it (CONTRACT §4): no bookkeeping, times as ISO-8601."""
    view = {k: v for k, v in profile.items() if not k.startswith("_")}
    view["trait_sources"] = {name: {**p, "at": iso(p["at"])}
                             for name, p in provenance(profile.get("_tt", {})).items()}
    view["first_seen"] = iso(profile["first_seen"])
    view["last_seen"] = iso(profile["last_seen"])
    view["recent_events"] = [
        {**e, "ts": iso(e["ts"])} for e in profile["recent_events"]
    ]
    view["segments"] = {sid: {**s, "entered_at": iso(s.get("entered_at"))}
                        for sid, s in profile.get("segments", {}).items()}
    view["memberships"] = [{k: (iso(v) if k in ("since", "until") else v) for k, v in m.items()
                            if k != "account_stamp"} for m in profile.get("memberships", [])]
    return view
