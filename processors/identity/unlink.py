"""Unlink: take a wrong identifier out of the identity graph and split the profile it glued.

Semantics (README, "Unlinking a wrong identifier"):

* The identifier K is removed: its mapping is deleted on its own partition, and K is blocked
  there (a quarantine record with reason `unlinked`, listed and released like any quarantine).
  While blocked, K links nothing: an event routed by K is routed by its next identifier (K
  stripped; an event with no other identifier is dropped and counted), and a profile that
  takes K from an event is told to drop it again (U), as after a refused link.
* The live profile P that held K is rebuilt from the events it absorbed, its own and those of
  every profile merged into it: each is kept in a bounded event journal on the partition of
  the profile that applied it (one state key per event, `journal:<pid>/<slot>`, outside the
  hot profile; journals of older versions are chunks, `journal:<pid>:<chunk>`).
  Without K, those events fall into the connected components of their remaining identifiers
  (only identifiers P still lists count: values refused by limits or unlinked before stay out).
  Each component becomes one profile, rebuilt by applying its events in time order (traits,
  consent, counters, aggregates, computed traits) and evaluated by the catalog; segment
  transitions carry `reason: unlinked`. The component with the most events keeps P's id (its
  activation and journey state too); every other one gets a fresh id on its own partition,
  and its identifiers are repointed there. Events carrying K alone are dropped (a run that
  never saw K would not have had them either).
* Exactness: when the journals do not hold every event the profile counted (more than
  `JOURNAL_EVENTS` events on one profile id, or events applied before journals existed, or a
  merged profile erased meanwhile), no split is guessed: K is removed and blocked, P stays
  whole, and the `unlinked` record says `split: false, reason: journal_incomplete`.

Kinds (all on the internal topic, keyed as the partition that must act):

  N  key=identifier  the operator's unlink: block K, drop its mapping, ask its holder to split
  S  key=profile     split: follows redirects to the live holder, then gathers the journals
  J  key=profile id  a merged-away profile's journal, asked for by the splitting survivor
  W  key=profile     a journal answer; the split runs when every merged profile answered
  H  key=new id      a part of the split, stored on its own partition
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from processors.common import records
from processors.common.records import Handler, Handlers, Kind
from processors.identity import graph as idn
from processors.identity import quarantine
from processors.identity.partitioning import mint_profile_id
from processors.ingest.identifiers import key_of, parse_key
from processors.profile.unified import Outcome, apply, new_profile

UNLINK, SPLIT, JOURNAL_ASK, JOURNAL, BUILD = (Kind.UNLINK_REQUEST, Kind.SPLIT, Kind.JOURNAL_ASK,
                                              Kind.JOURNAL, Kind.BUILD)
"""The record kinds of unlink (see the module docstring)."""
KINDS = (UNLINK, SPLIT, JOURNAL_ASK, JOURNAL, BUILD)

JOURNAL_EVENTS = 512
"""Events kept per profile id for an exact split (older ones are forgotten: no exact split)."""
CHUNK = 16
"""Events per journal state key in the chunk format of older versions (still read and erased)."""
REASON = "unlinked"
JOURNAL_PREFIX = "journal:"
GATHER_PREFIX = "unlinking:"
DONE_PREFIX = "unlinked:"


# -- the journal -------------------------------------------------------------------------------
# Event i of a profile id (counted from 0) is kept under its own key, slot i % JOURNAL_EVENTS: a
# ring, so journaling an event is one write (no read, no rewrite of earlier events, and no delete:
# the write overwrites the event JOURNAL_EVENTS back). The profile counts its events in `_je`.
# Older versions kept chunks of CHUNK events (read, appended and rewritten per event) and counted
# them in `_jn`: a profile that has `_jn` keeps its first `_jn` events in those chunks (and
# `_je`, once set, counts them too); without `_je`, all its events are in chunks.

def _chunk_key(pid: str, n: int) -> str:
    return f"{JOURNAL_PREFIX}{pid}:{n}"


def _event_key(pid: str, i: int) -> str:
    return f"{JOURNAL_PREFIX}{pid}/{i % JOURNAL_EVENTS}"


def _counts(profile: idn.Profile) -> tuple[int, int]:
    """(events journaled, of which the first ones in the chunk format)."""
    chunked: int = profile.get("_jn", 0)
    return profile.get("_je", chunked), chunked


def _restart(profile: idn.Profile) -> None:
    """A rebuilt profile journals from scratch, one key per event."""
    profile.pop("_jn", None)
    profile["_je"] = 0


def record(store: idn.Store, profile: idn.Profile, ev: dict[str, Any]) -> None:
    """Journal an event just applied to `profile` (call before the profile is stored)."""
    n, chunked = _counts(profile)
    store.set_request(_event_key(profile["id"], n), ev)
    profile["_je"] = n + 1
    stale = n - JOURNAL_EVENTS  # the oldest event kept so far, forgotten now
    if 0 <= stale < chunked and stale % CHUNK == 0:  # in a chunk: the chunk goes as it did
        key = _chunk_key(profile["id"], stale // CHUNK)
        if store.request(key) is not None:
            store.set_request(key, None)


def journal(store: idn.Store, profile: idn.Profile) -> tuple[list[dict[str, Any]], bool]:
    """(the journaled events of one profile id, complete: nothing was forgotten)."""
    n, chunked = _counts(profile)
    # the window starts at a chunk boundary, as it did when every event was in a chunk
    first = ((n - JOURNAL_EVENTS) // CHUNK + 1) * CHUNK if n > JOURNAL_EVENTS else 0
    out: list[dict[str, Any]] = []
    for c in range(first // CHUNK, (chunked + CHUNK - 1) // CHUNK):
        out += (store.request(_chunk_key(profile["id"], c)) or {"ev": []})["ev"]
    for i in range(max(first, chunked), n):
        ev = store.request(_event_key(profile["id"], i))
        if ev is not None:
            out.append(ev)
    return out, first == 0


def forget(store: idn.Store, pid: str, profile: idn.Profile | None) -> None:
    """Erase a profile id's journal (privacy erase, or after a split rebuilt it)."""
    record_ = (profile or {}).get("snap", profile) or {}
    n, chunked = _counts(record_)
    keys = [_chunk_key(pid, c) for c in range((chunked + CHUNK - 1) // CHUNK)]
    keys += [_event_key(pid, i) for i in range(max(chunked, n - JOURNAL_EVENTS), n)]
    for prefix in (GATHER_PREFIX, DONE_PREFIX):  # they hold events too
        keys.append(prefix + pid)
    for key in keys:
        if store.request(key) is not None:
            store.set_request(key, None)


# -- blocking ----------------------------------------------------------------------------------

def is_blocked(store: idn.Store, key: str) -> bool:
    raw = store.request(quarantine.PREFIX + key)
    return bool(raw and (raw.get("quarantined") or {}).get("reason") == REASON)


def reroute_event(key: str, msg: idn.Message, store: idn.Store, fx: idn.Effects) -> bool:
    """E routed by a blocked identifier: route it by the next one, without K. True: handled."""
    if not is_blocked(store, key):
        return False
    ev = dict(msg["ev"])
    ev["ids"] = [i for i in ev["ids"] if key_of((i[0], i[1])) != key]
    fx.counts["unlinked_stripped"] += 1
    if not ev["ids"]:
        fx.counts["unlinked_dropped"] += 1
        return True
    fx.send.append((key_of((ev["ids"][0][0], ev["ids"][0][1])), {**msg, "ev": ev}))
    return True


def refuse_link(key: str, msg: idn.Message, store: idn.Store, fx: idn.Effects) -> bool:
    """L of a blocked identifier: the claimant drops it again. True: handled."""
    if not is_blocked(store, key):
        return False
    fx.counts["unlinked_refused"] += 1
    fx.send.append((msg["pid"], records.drop_link(key, None)))
    return True


MAX_MOVED = 1000
"""Identifiers a split profile remembers as moved to a split-off part (one profile's worth)."""


def forward_moved(pid: str, profile: idn.Profile, msg: idn.Message, fx: idn.Effects) -> bool:
    """A (an event) sent to a split profile for identifiers that moved to a split-off part
    before their repoint (R) landed: forward it there. True when forwarded."""
    moved: dict[str, str] = profile.get("_moved") or {}
    keys = [key_of((i[0], i[1])) for i in msg["ev"]["ids"]]
    mine = {key_of((k, v)) for k, vs in profile["identities"].items() for v in vs}
    target = next((moved[k] for k in keys if k in moved), None)
    if target is None or any(k in mine for k in keys):
        return False
    fx.counts["unlink_forwarded"] += 1
    fx.send.append((target, {**msg, "via": [], "known": []}))
    return True


def refuses_merge(profile: idn.Profile, msg: idn.Message) -> str | None:
    """"unlinked" when a merge in flight was asked for through an identifier unlinked here."""
    link = msg.get("link")
    if not link:
        return None
    for side in (profile, msg.get("snap") or {}):
        if link in side.get("_unlinked", ()):
            return REASON
        # asked for by an event that a split has since moved to another part: that part's
        # repoint of the key asks for the link again, from the part that holds it now
        kind, value = parse_key(link)
        if link in side.get("_moved", {}) and value not in side["identities"].get(kind, ()):
            return REASON
    return None


# -- N: the operator's request, on the identifier's partition -----------------------------------

def _on_unlink_request(key: str, msg: idn.Message, store: idn.Store, cfg: idn.IdentityConfig,
                       fx: idn.Effects, source: tuple[int, int] | None) -> None:
    holder = store.identity(key)
    st = quarantine.state(store, key)
    block = st.get("quarantined") or {}
    if block.get("reason") == REASON and block.get("op") == msg["op"]:
        holder = holder or block.get("holder")  # a replay: the first pass's S may be lost
    else:
        st["quarantined"] = {"at": fx.env.at(None), "distinct": 0, "threshold": 0, "holder": holder,
                             "people": [], "reason": REASON, "op": msg["op"]}
        store.set_request(quarantine.PREFIX + key, st)
    if holder is not None:
        store.delete_identity(key)
        fx.send.append((holder, records.split(key, msg["op"])))
    else:
        kind, value = parse_key(key)
        fx.changes.append({"type": "unlinked", "profile_id": key, "identifier_type": kind,
                           "identifier": value, "op": msg["op"], "split": False,
                           "reason": "not_linked", "parts": []})


# -- S, J, W: the holder gathers the journals -----------------------------------------------------

def _on_split(pid: str, msg: idn.Message, store: idn.Store, cfg: idn.IdentityConfig, fx: idn.Effects,
              source: tuple[int, int] | None) -> None:
    profile = store.profile(pid)
    if profile is None:
        # gone; if this split removed it (every event carried K alone), a replay of the record
        # that ran it re-sends what it sent and recorded
        _replayed_split(pid, msg, store, fx, source)
        return
    if idn.is_redirect(profile):
        # frozen, its merge in flight: the split resumes where the person ends up, here when
        # the merge is refused (restored), in the survivor when it lands (see resume())
        if "need" not in msg and profile["snap"].get("_unlinking") != {"op": msg["op"], "key": msg["key"]}:
            profile["snap"]["_unlinking"] = {"op": msg["op"], "key": msg["key"]}
            store.set_profile(pid, profile)
        # ... and if the merge has landed already (its M went ahead of this S on the same way),
        # the survivor splits now
        fx.send.append((profile["redirect"], {**msg, "need": msg.get("need", pid)}))
        return
    if msg.get("need") and msg["need"] not in profile["merged_from"]:
        return  # that merge was refused: the restored profile resumes the split itself
    if _replayed_split(pid, msg, store, fx, source):
        return
    state = store.request(GATHER_PREFIX + pid)
    if state is None or state["op"] != msg["op"]:
        state = {"op": msg["op"], "key": msg["key"], "got": {}}
        store.set_request(GATHER_PREFIX + pid, state)
    if profile.get("_unlinking") != {"op": msg["op"], "key": msg["key"]}:
        profile["_unlinking"] = {"op": msg["op"], "key": msg["key"]}
        store.set_profile(pid, profile)
    _ask_or_split(pid, profile, state, store, cfg, fx, source)


def _ask_or_split(pid: str, profile: idn.Profile, state: dict[str, Any], store: idn.Store,
                  cfg: idn.IdentityConfig, fx: idn.Effects, source: tuple[int, int] | None) -> None:
    missing = [m for m in profile["merged_from"] if m not in state["got"]]
    if missing:
        for m in missing:  # asked again on a replay (the first asks may be lost)
            fx.send.append((m, records.journal_ask(pid, state["op"])))
        return
    sends, changes = len(fx.send), len(fx.changes)
    _split(pid, profile, state, store, cfg, fx)
    store.set_request(DONE_PREFIX + pid, {"op": state["op"], "at": list(source) if source else None,
                                          "sends": fx.send[sends:], "changes": fx.changes[changes:]})


def _replayed_split(pid: str, msg: idn.Message, store: idn.Store, fx: idn.Effects,
                    source: tuple[int, int] | None) -> bool:
    """True when this op's split is done here; re-send what it sent if `source` is the record
    that ran it, replayed (its sends may have been lost in a crash)."""
    done = store.request(DONE_PREFIX + pid)
    if done is None or done["op"] != msg["op"]:
        return False
    if source is not None and done["at"] == list(source):
        fx.send.extend((k, m) for k, m in done["sends"])
        fx.changes.extend(done["changes"])
    return True


def _on_journal_ask(pid: str, msg: idn.Message, store: idn.Store, cfg: idn.IdentityConfig,
                    fx: idn.Effects, source: tuple[int, int] | None) -> None:
    record_ = store.profile(pid)
    if record_ is None:  # erased: its events are gone
        events: list[dict[str, Any]] = []
        complete, count = False, 0
    else:
        own = record_.get("snap", record_) if idn.is_redirect(record_) else record_
        events, complete = journal(store, own)
        count = len(events)
    fx.send.append((msg["to"], records.journal(pid, msg["op"], events, complete, count)))


def _on_journal(pid: str, msg: idn.Message, store: idn.Store, cfg: idn.IdentityConfig, fx: idn.Effects,
                source: tuple[int, int] | None) -> None:
    if _replayed_split(pid, msg, store, fx, source):
        return
    state = store.request(GATHER_PREFIX + pid)
    profile = store.profile(pid)
    if state is None or state["op"] != msg["op"] or profile is None:
        return  # done already (a replay), or superseded
    state["got"][msg["from"]] = {"events": msg["events"], "complete": msg["complete"]}
    store.set_request(GATHER_PREFIX + pid, state)
    if not idn.is_redirect(profile):  # frozen meanwhile: resume() goes on after the merge
        _ask_or_split(pid, profile, state, store, cfg, fx, source)


def resume(pid: str, profile: idn.Profile, fx: idn.Effects) -> None:
    """A profile that was splitting when it froze is live again (restored), or merged into
    `pid`: ask for the split again there (the journals it has are kept, or asked again)."""
    pending = profile.get("_unlinking")
    if pending:
        fx.send.append((pid, records.split(pending["key"], pending["op"])))


# -- the split ---------------------------------------------------------------------------------

def _components(events: list[tuple[str, dict[str, Any]]], allowed: set[str]) -> list[list[tuple[str, Any]]]:
    """Events (origin, ev) grouped by the connected components of their allowed identifiers."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    keyed: list[tuple[list[str], str, dict[str, Any]]] = []
    for origin, ev in events:
        keys = [k for k in (key_of((i[0], i[1])) for i in ev["ids"]) if k in allowed]
        for k in keys[1:]:
            parent[find(k)] = find(keys[0])
        keyed.append((keys, origin, ev))
    groups: dict[str, list[tuple[str, Any]]] = {}
    for keys, origin, ev in keyed:
        if keys:
            groups.setdefault(find(keys[0]), []).append((origin, {**ev, "ids": [
                i for i in ev["ids"] if key_of((i[0], i[1])) in allowed]}))
    return sorted(groups.values(), key=lambda g: (-len(g), min(e["m"]["messageId"] for _, e in g)))


def _rebuild(pid: str, events: list[tuple[str, Any]], base: idn.Profile | None, cfg: idn.IdentityConfig,
             fx: idn.Effects) -> tuple[idn.Profile, list[dict[str, Any]]]:
    """One part, applied event by event in time order; (profile, segment transitions)."""
    profile = new_profile(pid)
    keep = ("segments", "_pending", "_caps", "journeys", "_jdue", "_tx", "_t", "_src", "_refused",
            "_refused_by", "_merged_at", "_restored_at") if base is not None else ()
    for name in keep:
        if base is not None and name in base:
            profile[name] = base[name]
    now = 0
    for _, ev in sorted(events, key=lambda e: (e[1]["ts"], e[1]["m"]["messageId"])):
        tp = idn._touchpoint(ev)
        if apply(profile, tp, cfg.profile_limits) is Outcome.APPLIED:
            now = fx.env.clock(profile, ts=tp.ts)
            fx.env.catalog.observe(profile, tp, now, cfg.profile_limits.retention_ms)
    now = fx.env.clock(profile, ts=now)
    changes = [{**c, "reason": REASON} for c in fx.env.catalog.evaluate(profile, now, None, f"unlink:{pid}")]
    return profile, changes


def _split(pid: str, profile: idn.Profile, state: dict[str, Any], store: idn.Store,
           cfg: idn.IdentityConfig, fx: idn.Effects) -> None:
    key = state["key"]
    kind, value = parse_key(key)
    own, complete = journal(store, profile)
    events: dict[str, tuple[str, dict[str, Any]]] = {e["m"]["messageId"]: (pid, e) for e in own}
    for origin, got in sorted(state["got"].items()):
        complete = complete and got["complete"]
        for e in got["events"]:
            events.setdefault(e["m"]["messageId"], (origin, e))
    complete = complete and len(events) >= profile["event_count"]
    store.set_request(GATHER_PREFIX + pid, None)
    record_: dict[str, Any] = {"type": "unlinked", "profile_id": pid, "identifier_type": kind,
                               "identifier": value, "op": state["op"]}
    allowed = {key_of((k, v)) for k, vs in profile["identities"].items() for v in vs} - {key}
    if not complete:
        idn._drop_identifier(profile, {"key": key})
        store.set_profile(pid, profile)
        fx.counts["unlink_inexact"] += 1
        fx.changes.append({**record_, "split": False, "reason": "journal_incomplete",
                           "events_journaled": len(events), "event_count": profile["event_count"],
                           "parts": [{"profile_id": pid, "event_count": profile["event_count"],
                                      "identities": profile["identities"]}]})
        return
    groups = _components(list(events.values()), allowed)
    placed = {e["m"]["messageId"] for g in groups for _, e in g}
    rerouted = 0
    for mid, (_, ev) in sorted(events.items()):
        rest = [i for i in ev["ids"] if key_of((i[0], i[1])) != key]
        if mid not in placed and rest:
            # none of its identifiers is this person's (refused by a limit, say): the event is
            # routed again without K, as a new event would be, to wherever they belong
            fx.send.append((key_of((rest[0][0], rest[0][1])), idn.event_message({**ev, "ids": rest})))
            rerouted += 1
    dropped = len(events) - len(placed) - rerouted
    parts: list[dict[str, Any]] = []
    moved: dict[str, str] = {}
    first: idn.Profile = profile
    previous = profile.get("_next")
    for i, group in enumerate(groups or [[]]):
        part_id = pid if i == 0 else _part_id(pid, group, cfg)
        built, changes = _rebuild(part_id, group, profile if i == 0 else None, cfg, fx)
        origins = sorted({o for o, _ in group} - {pid, part_id})
        built["merged_from"] = origins if i == 0 else []
        built["_unlinked"] = [*[u for u in profile.get("_unlinked", []) if u != key], key][-MAX_MOVED:]
        if i > 0:
            changes = [{**c, "continued": False} for c in changes]
        idn._remember_changes(built, fx, changes, None, fx.env.clock(built), f"unlink:{key}")
        fx.transitions(changes)
        ordered = [e for _, e in sorted(group, key=lambda e: (e[1]["ts"], e[1]["m"]["messageId"]))]
        if i == 0:
            forget(store, pid, profile)
            _restart(built)
            for ev in ordered:
                record(store, built, ev)
            first = built
        else:
            fx.send.append((part_id, records.build(built, ordered)))
            for k, vs in sorted(built["identities"].items()):
                for v in vs:
                    fx.send.append((key_of((k, v)), records.repoint(pid, part_id)))
                    moved[key_of((k, v))] = part_id
        parts.append({"profile_id": part_id, "event_count": built["event_count"],
                      "identities": built["identities"]})
    kept = {k: v for k, v in profile.get("_moved", {}).items() if k not in allowed}
    first["_moved"] = dict(list({**kept, **moved}.items())[-MAX_MOVED:])
    if not groups:  # every event it had carried K alone: nobody is left
        forget(store, pid, first)
        store.delete_profile(pid)
        if previous is not None:
            fx.schedule.append((pid, previous, None))
        parts = []
    else:
        store.set_profile(pid, first)
        if first.get("_next") != previous:
            fx.schedule.append((pid, previous, first.get("_next")))
    fx.counts["unlinked"] += 1
    fx.changes.append({**record_, "split": len(parts) > 1, "exact": True, "events_dropped": dropped,
                       "events_rerouted": rerouted, "parts": parts})


def _part_id(pid: str, group: list[tuple[str, Any]], cfg: idn.IdentityConfig) -> str:
    """A fresh, deterministic id for a split-off part (a replay mints the same one)."""
    first = min(e["m"]["messageId"] for _, e in group)
    seed = hashlib.blake2b(f"{pid}/{first}".encode(), digest_size=8).hexdigest()
    return mint_profile_id(f"unlink:{seed}", cfg.partitions)


def _on_build(pid: str, msg: idn.Message, store: idn.Store, cfg: idn.IdentityConfig, fx: idn.Effects,
              source: tuple[int, int] | None) -> None:
    """B: store a part of a split on its own partition (idempotent: a replay stores it again
    only while no event has reached it since)."""
    current = store.profile(pid)
    built: idn.Profile = orjson.loads(orjson.dumps(msg["profile"]))
    if current is not None and not idn.is_redirect(current) \
            and current["event_count"] >= built["event_count"]:
        return
    _restart(built)
    for ev in msg["events"]:
        record(store, built, ev)
    store.set_profile(pid, built)
    if built.get("_next") is not None:
        fx.schedule.append((pid, None, built.get("_next")))


HANDLERS: dict[Kind, Handler] = {UNLINK: _on_unlink_request, SPLIT: _on_split, JOURNAL_ASK: _on_journal_ask,
                                 JOURNAL: _on_journal, BUILD: _on_build}
"""unlink's record kinds, registered beside identity's by processors/protocol.py"""
EXTENSION = idn.Extension(record=record, resume=resume, reroute_event=reroute_event, refuse_link=refuse_link,
                          forward_moved=forward_moved, refuses_merge=refuses_merge)
"""what unlink adds inside identity's own steps (journals, blocked identifiers, resumed splits)"""


def register(table: Handlers) -> None:
    table.register_all(HANDLERS)
    table.extension = EXTENSION
