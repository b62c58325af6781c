"""Privacy requests through the identity protocol: export and erase, by any identifier.

  P  key=identifier  a request: find the profile the identifier belongs to
  Q  key=profile     export it, or erase it: delete the profile and ask every other
                     partition holding the person's data to delete theirs (Z), counting
                     the answers (Y) in a request record on the profile's partition
  Z  key=identifier/ delete one identity mapping (leaving only a salted hash on the
     profile/account suppression list), one merged-away redirect, or a membership
                     on an account; then answer Y
  Y  key=profile id  one part done; when none is left, the result is published

The result says what was removed; it names the request's identifier only by a salted hash
(`identifier_sha256`, the hash the suppression list keeps), and an erase result names no
profile id: a record that outlives the erasure must not re-identify the person. An erased
identifier's later events are
dropped while it is on the suppression list (identity.yaml: erased_suppression),
unless the config allows a fresh profile.
"""

from __future__ import annotations

from typing import Any

from processors.common import records
from processors.identity import graph as idn
from processors.identity import quarantine, unlink
from processors.identity.suppression import identifier_hash, suppression_key
from processors.ingest.identifiers import key_of
from processors.journeys import engine as journeys
from processors.profile.unified import public_view


def export_view(profile: idn.Profile) -> dict[str, Any]:
    view = public_view(profile)
    view["consent_history"] = profile.get("consent_history", [])
    return view


def _on_request(key: str, msg: idn.Message, store: idn.Store, cfg: idn.IdentityConfig, fx: idn.Effects,
                source: tuple[int, int] | None) -> None:
    pid = store.identity(key)
    if pid is None:
        fx.results.append({"request_id": msg["rid"], "type": msg["op"], "status": "not_found",
                           "identifier_sha256": identifier_hash(key)})
        return
    fx.send.append((pid, records.profile_request(msg["op"], msg["rid"], identifier_hash(key))))


def _on_profile_request(pid: str, msg: idn.Message, store: idn.Store, cfg: idn.IdentityConfig,
                        fx: idn.Effects, source: tuple[int, int] | None) -> None:
    profile = store.profile(pid)
    rid = msg["rid"]
    if profile is None:
        if store.request(rid) is None:  # erased already (a replayed Q), or never existed
            fx.results.append({"request_id": rid, "type": msg["op"], "status": "not_found",
                               **({"identifier_sha256": msg["ih"]} if msg.get("ih") else {})})
        return
    if msg["op"] == "export":
        view = export_view(profile)
        view["computed"] = fx.env.catalog.computed_view(profile, fx.env.at(None))
        fx.results.append({"request_id": rid, "type": "export", "status": "done",
                           "profile_id": pid, "profile": view,
                           **({"identifier_sha256": msg["ih"]} if msg.get("ih") else {})})
        return
    now = fx.env.at(None)
    until = now + cfg.erased_suppression_ms
    pids = [pid, *profile.get("merged_from", [])]
    keys = sorted({key_of((k, v)) for k, vs in profile["identities"].items() for v in vs})
    accounts = sorted({m["account_id"] for m in profile.get("memberships", [])})
    parts: list[tuple[str, idn.Message]] = []
    parts += [(k, records.erase_part("identity", pids, until=until)) for k in keys]
    parts += [(p, records.erase_part("redirect", pids)) for p in pids[1:]]
    parts += [(a, records.erase_part("member", pids)) for a in accounts]
    for target, z in parts:
        fx.send.append((target, {**z, "rid": rid, "reply": pid}))
    for sid in profile.get("segments", {}):
        fx.sizes[sid] -= 1
    fx.journey_counts.update(journeys.forget(profile, fx.env.journeys))
    if profile.get("_next") is not None:
        fx.schedule.append((pid, profile["_next"], None))
    unlink.forget(store, pid, profile)
    store.delete_profile(pid)
    fx.changes.append({"type": "erased", "profile_id": pid, "request_id": rid})
    summary = {"profiles": len(pids), "identifiers": len(keys), "memberships": len(accounts),
               **({"identifier_sha256": msg["ih"]} if msg.get("ih") else {})}
    if parts:
        store.set_request(rid, {"pending": len(parts), "summary": summary})
    else:
        fx.results.append(_erased(rid, summary))


def _erased(rid: str, summary: dict[str, Any]) -> dict[str, Any]:
    return {"request_id": rid, "type": "erase", "status": "done", **summary,
            "removed": ["profile", "identity mappings", "merge redirects", "account memberships",
                        "computed state, windows, dedup state, schedules"]}


def _on_erase_part(key: str, msg: idn.Message, store: idn.Store, cfg: idn.IdentityConfig, fx: idn.Effects,
                   source: tuple[int, int] | None) -> None:
    pids = set(msg["pids"])
    if msg["what"] == "identity":
        if store.identity(key) in pids:
            store.delete_identity(key)
            quarantine.forget(store, key)
        if cfg.erased_suppression_ms > 0:
            store.set_identity(suppression_key(key), f"erased:{msg['until']}")
    elif msg["what"] == "redirect":
        record = store.profile(key)
        if idn.is_redirect(record):
            unlink.forget(store, key, record)
            store.delete_profile(key)
    elif msg["what"] == "member":
        account = store.profile(key)
        if account is not None and not idn.is_redirect(account):
            members = [m for m in account.get("_members", []) if m not in pids]
            if members != account.get("_members", []):
                account["_members"] = members
                store.set_profile(key, account)
    fx.send.append((msg["reply"], records.erase_ack(msg["rid"])))


def _on_erase_ack(key: str, msg: idn.Message, store: idn.Store, cfg: idn.IdentityConfig, fx: idn.Effects,
                  source: tuple[int, int] | None) -> None:
    state = store.request(msg["rid"])
    if state is None:
        return
    state["pending"] -= 1
    if state["pending"] > 0:
        store.set_request(msg["rid"], state)
        return
    store.set_request(msg["rid"], None)
    fx.results.append(_erased(msg["rid"], state["summary"]))


HANDLERS: dict[records.Kind, records.Handler] = {
    records.Kind.PRIVACY_REQUEST: _on_request, records.Kind.PROFILE_REQUEST: _on_profile_request,
    records.Kind.ERASE_PART: _on_erase_part, records.Kind.ERASE_ACK: _on_erase_ack,
}
"""privacy's record kinds, registered beside identity's by processors/protocol.py"""


def register(table: records.Handlers) -> None:
    table.register_all(HANDLERS)
