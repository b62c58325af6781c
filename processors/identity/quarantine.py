"""Over-merge guard: an identifier value claimed by too many distinct people is quarantined.

Decided on the identifier's own partition, from the links (L) that claim it, in the order
of that partition's log: deterministic under replays and rebalances, and kept in the
partition's changelogged state (Store.request/set_request under "quarantine:<key>").

Who counts as a distinct person: a claiming profile's *anchor*, its best identifier of a
type ranked strictly above the claimed one (user_id above email above phone above device_id
above anonymous_id, identity.yaml's priority). A kiosk device claimed by profiles anchored
by six different user_ids or emails is junk; an email claimed by four anonymous sessions of
one person is not (their anonymous ids rank below email and do not count). Claims are
counted over a window of event time (default 90 days, before the newest claim).

A quarantined value stops causing merges: a profile that carries it keeps it as a plain
attribute (listed in its identities), but no link through it asks for a merge any more.
Merges made through it before it crossed the threshold are not undone (that is unlink).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from processors.ingest.identifiers import IdentityRules, parse_key

DEFAULT_THRESHOLDS: Mapping[str, int] = {"device_id": 5, "anonymous_id": 5, "email": 3, "phone": 3}
DEFAULT_WINDOW_MS = 90 * 86_400_000
PREFIX = "quarantine:"


@dataclass(frozen=True)
class QuarantineConfig:
    enabled: bool = True
    thresholds: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    """Most distinct people one value of the type may link (absent type: never quarantined)."""
    window_ms: int = DEFAULT_WINDOW_MS

    def threshold(self, kind: str) -> int | None:
        return self.thresholds.get(kind) if self.enabled else None


class StateStore(Protocol):
    def request(self, rid: str) -> dict[str, Any] | None: ...
    def set_request(self, rid: str, state: dict[str, Any] | None) -> None: ...


def anchor(identities: Mapping[str, list[str]], kind: str, rules: IdentityRules) -> str | None:
    """The claiming profile's best identifier ranked above `kind`, if any, as a short hash
    (the guard's state names no one: an erased person leaves no identifier in it)."""
    rank = rules.rank(kind)
    best = sorted((rules.rank(k), k, min(vs)) for k, vs in identities.items() if vs and rules.rank(k) < rank)
    if not best:
        return None
    return hashlib.blake2b(f"{best[0][1]}:{best[0][2]}".encode(), digest_size=8).hexdigest()


def forget(store: StateStore, key: str) -> None:
    """An erased identifier: drop its guard state with it."""
    if store.request(PREFIX + key) is not None:
        store.set_request(PREFIX + key, None)


def state(store: StateStore, key: str) -> dict[str, Any]:
    return store.request(PREFIX + key) or {"claims": {}, "quarantined": None}


def is_quarantined(store: StateStore, key: str) -> bool:
    raw = store.request(PREFIX + key)
    return bool(raw and raw.get("quarantined"))


def claim(store: StateStore, key: str, who: str | None, ts: int | None, cfg: QuarantineConfig,
          holder: str | None) -> dict[str, Any] | None:
    """Count one claim of `key` by a person anchored `who` at event time `ts`.

    Returns the quarantine record when this claim crosses the threshold (else None)."""
    kind, _ = parse_key(key)
    most = cfg.threshold(kind)
    if most is None or who is None:
        return None
    st = state(store, key)
    if st["quarantined"]:
        return None
    claims: dict[str, int] = st["claims"]
    at = ts or 0
    if who in claims and claims[who] >= at:
        return None  # nothing new (a replay, or an older event of a known person)
    claims[who] = max(at, claims.get(who, at))
    newest = max(claims.values())
    claims = {w: t for w, t in claims.items() if t >= newest - cfg.window_ms}
    st["claims"] = claims
    if len(claims) > most:
        st["quarantined"] = {"at": newest, "distinct": len(claims), "threshold": most,
                             "holder": holder, "people": sorted(claims)}
    store.set_request(PREFIX + key, st)
    return st["quarantined"]  # type: ignore[no-any-return]


def release(store: StateStore, key: str) -> bool:
    """Lift a quarantine (and forget the claims: counting starts afresh)."""
    if store.request(PREFIX + key) is None:
        return False
    store.set_request(PREFIX + key, None)
    return True


def change_record(key: str, record: Mapping[str, Any]) -> dict[str, Any]:
    kind, value = parse_key(key)
    return {"type": "identifier_quarantined", "profile_id": record.get("holder") or key,
            "identifier_type": kind, "identifier": value, "distinct_people": record["distinct"],
            "threshold": record["threshold"], "at": record["at"], "people": record["people"]}


def config_from(data: Mapping[str, Any] | None, parse_duration_ms: Any) -> QuarantineConfig:
    """QuarantineConfig from identity.yaml's `quarantine` block (already schema-valid)."""
    if not data:
        return QuarantineConfig()
    thresholds = {**DEFAULT_THRESHOLDS, **{k: int(v) for k, v in (data.get("thresholds") or {}).items()}}
    thresholds = {k: v for k, v in thresholds.items() if v}
    window = parse_duration_ms(str(data["window"])) if data.get("window") else DEFAULT_WINDOW_MS
    return QuarantineConfig(enabled=bool(data.get("enabled", True)), thresholds=thresholds, window_ms=window)
