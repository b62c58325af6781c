"""The distributed identity graph, as a pure state machine.

Two tables, both partitioned like the internal topic (murmur2 of the key):
  identities   identifier key ("email:jo@x.com") → profile id
  profiles     profile id → profile, or a redirect {"id", "redirect": survivor, ...}

Every message on the internal topic is keyed by the table key it must touch,
so a message only ever reads and writes keys of the partition it arrives on.
handle() takes one message and that partition's store and returns what to
send next. Kinds (named, with a constructor each, in processors/common/records.py):

  E  key=identifier  a validated event, routed by its highest-priority identifier:
                     look the identifier up (or mint a profile id on this partition)
  A  key=profile     apply the event; link identifiers the profile did not have yet
  L  key=identifier  "this identifier belongs to profile P": claim it, or, when it
                     already points at another profile, ask for a merge
  F  key=loser       freeze the loser (leave a redirect) and ship it to the survivor
  M  key=survivor    merge the shipped loser in, unless a per-profile limit would
                     break; then give the loser back (X) and unlink the identifier
  X  key=loser       restore a loser whose merge was refused
  U  key=profile     drop an identifier the profile had taken optimistically (a frozen
                     profile drops it from its snapshot; stale once it absorbed the holder)
  C  key=identifier  "P dropped me": if the identifier points at P after all, answer I
  I  key=profile     list an identifier its partition says points here
  R  key=identifier  repoint an identifier from a merged loser to its survivor (held by a
                     third profile: ask for that link, as an L would)
  O  key=identifier  an operator's quarantine release (processors/identity/quarantine.py)
  V  key=profile     "the loser of an M forwarded through you landed in S" (or was refused):
                     what waits here for that loser follows it (unlink's N S J W H:
                     processors/identity/unlink.py)
  G  key=account     group traits onto the account profile (and remember the member)
  K  key=profile     an account's traits, copied onto a member's membership

Segments and computed traits (processors/segments/catalog.py) run wherever a profile
changes: on A, M and K, and on re-checks (time passing, backfill) that the
stream layer asks for through recheck(). Their entries/exits are `changes`.

With per-profile limits a merge may be refused; then both sides ask every identifier
they list to confirm it (links decided while the merge was assumed), and an event that
came through a redirect ahead of that redirect's merge waits in the survivor (`_parked`)
until the merge lands or is refused (then it goes back to the restored loser).

The survivor of a merge is the smaller profile id, so redirect chains only
ever go downwards and cannot loop, and the outcome does not depend on which
worker saw what first. Every step is idempotent, because at-least-once
delivery may replay any of them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from processors.activation import policy as activation
from processors.activation.policy import ActivationConfig
from processors.common import records
from processors.common.config import ConfigError, line_of, load_yaml_with_nodes
from processors.common.counts import empty_counter
from processors.common.records import Handlers, Kind
from processors.common.timeutil import parse_duration_ms
from processors.identity import quarantine
from processors.identity.partitioning import mint_profile_id, partition_for
from processors.identity.quarantine import QuarantineConfig
from processors.identity.suppression import is_suppressed
from processors.ingest.events import Touchpoint
from processors.ingest.identifiers import (
    DEFAULT_BLOCKED,
    DEFAULT_PRIORITY,
    Identifier,
    IdentityRules,
    key_of,
    parse_key,
)
from processors.journeys import engine as journeys
from processors.profile import explain
from processors.profile.merge import merge
from processors.profile.trust import TrustError, parse_trust
from processors.profile.unified import Outcome, Profile, ProfileLimits, apply, is_duplicate, new_profile
from processors.segments.catalog import Catalog, transition

Message = dict[str, Any]
ACCOUNT_KEY = "group_id"
MEMBERSHIP_FIELDS = ("role", "title", "membership_status")
MAX_REFUSED = 32


@dataclass(frozen=True)
class IdentityConfig:
    partitions: int
    rules: IdentityRules = field(default_factory=IdentityRules)
    limits: Mapping[str, int] = field(default_factory=dict)
    """Most values of an identifier type one profile may hold (absent: no limit)."""
    exclusive_memberships: bool = False
    erased_suppression_ms: int = 30 * 86_400_000
    """How long an erased identifier's events are dropped (0: a later event starts afresh)."""
    profile_limits: ProfileLimits = field(default_factory=ProfileLimits)
    quarantine: QuarantineConfig = field(default_factory=QuarantineConfig)
    """The over-merge guard (processors/identity/quarantine.py)."""
    max_merges: int | None = 100
    """Most profiles merged into one (Segment's limit); a merge past it is refused."""
    max_identifiers: int | None = 1000
    """Most identifier values one profile holds, all types together."""
    journal: bool = True
    """Keep each profile's recent events (processors/identity/unlink.py) so that unlink can split exactly."""


class Store(Protocol):
    """One partition's view of the two tables."""

    def identity(self, key: str) -> str | None: ...
    def set_identity(self, key: str, pid: str) -> None: ...
    def profile(self, pid: str) -> Profile | None: ...
    def set_profile(self, pid: str, profile: Profile) -> None: ...
    def delete_profile(self, pid: str) -> None: ...
    def delete_identity(self, key: str) -> None: ...
    def request(self, rid: str) -> dict[str, Any] | None: ...
    def set_request(self, rid: str, state: dict[str, Any] | None) -> None: ...


MAX_HOPS = 32
"""A record forwarded or bounced more often than this is dead-lettered, not circulated."""
MAX_STALE = 1024
"""Round trips of a record bounced by an earlier refusal (see _arrived) before it counts hops."""


@dataclass(frozen=True)
class Env:
    """The clock and the definitions one call runs with (None: the event's own time)."""

    now: int | None = None
    catalog: Catalog = field(default_factory=Catalog)
    activation: ActivationConfig = field(default_factory=ActivationConfig)
    event_time: bool = False
    """Judge each profile by its own clock (`_t`: its latest event or fired deadline) and `now`
    as the watermark deadlines fire up to; a transition then depends on the profile's own
    events, not on how a run interleaved them with other profiles' events and ticks."""
    journeys: journeys.Book = field(default_factory=journeys.Book)
    journey_active: Callable[[str], int] | None = None
    """customers in a journey on this partition (journey caps); None: caps not enforced"""
    journey_partitions: int = 1
    """a journey's cap is shared out over this many partitions"""

    def at(self, ts: int | None) -> int:
        if self.now is not None:
            return self.now
        return ts or 0

    def clock(self, *profiles: Profile, ts: int | None = None) -> int:
        """The instant a profile (or a merge of several) is evaluated at."""
        if not self.event_time:
            return self.at(ts)
        own = max([p.get("_t") or 0 for p in profiles] + [ts or 0])
        return own or self.at(ts)


def _none(*_: Any) -> None:
    return None


def _false(*_: Any) -> bool:
    return False


@dataclass(frozen=True)
class Extension:
    """Steps a module built on the protocol adds inside identity's own handlers, registered with
    its record kinds (`register`; processors/identity/unlink.py); no-ops without it, so this
    module imports none of them."""

    record: Callable[..., None] = _none
    """(store, profile, event): an event was applied to the profile"""
    resume: Callable[..., None] = _none
    """(pid, profile, fx): a profile was restored or absorbed a loser: carry on what waited"""
    reroute_event: Callable[..., bool] = _false
    """(key, msg, store, fx): True when the event's routing identifier is not to be used"""
    refuse_link: Callable[..., bool] = _false
    """(key, msg, store, fx): True when the identifier must not be linked"""
    forward_moved: Callable[..., bool] = _false
    """(pid, profile, msg, fx): True when an APPLY was forwarded to where its events moved"""
    refuses_merge: Callable[..., str | None] = _none
    """(profile, msg): a reason to refuse the merge, or None"""


NO_EXTENSION = Extension()


@dataclass
class Effects:
    env: Env = field(default_factory=Env)
    ext: Extension = field(default_factory=lambda: NO_EXTENSION)
    """the steps modules built on the protocol add (processors/identity/unlink.py)"""
    send: list[tuple[str, Message]] = field(default_factory=list)
    dead: list[tuple[str, Message]] = field(default_factory=list)
    """(reason, record) the engine gives up on; they go to the DLQ, replayable."""
    changes: list[dict[str, Any]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=empty_counter)
    outcome: Outcome | None = None
    schedule: list[tuple[str, int | None, int | None]] = field(default_factory=list)
    """(profile id, old deadline, new deadline): the stream layer's re-check index"""
    sizes: Counter[str] = field(default_factory=empty_counter)
    """segment → change in member count"""
    triggers: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    """(channel, trigger) for tusk.activations.<channel>"""
    suppressed: Counter[str] = field(default_factory=empty_counter)
    """"channel:reason" → triggers not sent"""
    results: list[dict[str, Any]] = field(default_factory=list)
    """privacy results for tusk.privacy-results"""
    journey_counts: journeys.Counts = field(default_factory=empty_counter)
    """(journey, step, metric) → change in the live counts"""

    def transitions(self, changes: list[dict[str, Any]]) -> None:
        for t in changes:
            self.sizes[t["segment"]] += 1 if t["transition"] == "entered" else -1
        self.changes.extend(changes)


def load_identity_config(path: str | Path, partitions: int,
                         profile_limits: ProfileLimits | None = None) -> IdentityConfig:
    """IdentityConfig from identity.yaml (ConfigError with file and line when invalid)."""
    data, root = load_yaml_with_nodes(path, "identity")
    try:
        trust = parse_trust(data.get("trust"))
    except TrustError as e:
        raise ConfigError(f"{path}:{line_of(root, e.path)}: at {'.'.join(map(str, e.path))}: "
                          f"expected {e.expected}.") from None
    blocked = {kind: frozenset(str(v).casefold() for v in values)
               for kind, values in data.get("blocked", {}).items() if kind != "any"}
    anywhere = data.get("blocked", {}).get("any", [])
    everywhere = DEFAULT_BLOCKED | frozenset(str(v).casefold() for v in anywhere)
    rules = IdentityRules(priority=tuple(data.get("priority", DEFAULT_PRIORITY)), blocked=blocked,
                          blocked_everywhere=everywhere, phone_region=data.get("phone_region"))
    return IdentityConfig(partitions=partitions, rules=rules, limits=dict(data.get("limits", {})),
                          exclusive_memberships=bool(data.get("exclusive_memberships", False)),
                          erased_suppression_ms=parse_duration_ms(str(data.get("erased_suppression", "30d")))
                          if data.get("erased_suppression") not in (0, "0", False) else 0,
                          profile_limits=replace(profile_limits or ProfileLimits(),
                                                 trust=trust),
                          quarantine=quarantine.config_from(data.get("quarantine"), parse_duration_ms),
                          max_merges=data.get("max_merges", 100) or None,
                          max_identifiers=data.get("max_identifiers", 1000) or None,
                          journal=bool(data.get("journal", True)))


def event_message(encoded: Mapping[str, Any]) -> Message:
    return records.event(encoded)


def _touchpoint(ev: Mapping[str, Any]) -> Touchpoint:
    msg = ev["m"]
    return Touchpoint(msg, msg["type"], str(msg["messageId"]), ev["ts"],
                      [(k, v) for k, v in ev["ids"]])


def is_redirect(profile: Profile | None) -> bool:
    return profile is not None and "redirect" in profile


def account_id(group_id: str, partitions: int) -> str:
    return mint_profile_id(f"{ACCOUNT_KEY}:{group_id}", partitions)


def can_merge(a: Profile, b: Profile, limits: Mapping[str, int],
              max_merges: int | None = None, max_identifiers: int | None = None) -> str | None:
    """None when a and b may become one profile, else what forbids it: an identifier type
    whose limit would break, `max_merges` or `max_identifiers`."""
    for kind, most in limits.items():
        values = set(a["identities"].get(kind, ())) | set(b["identities"].get(kind, ()))
        if len(values) > most:
            return kind
    if max_merges is not None and len(set(a["merged_from"]) | set(b["merged_from"])) + 1 > max_merges:
        return "max_merges"
    if max_identifiers is not None:
        values = {(k, v) for p in (a, b) for k, vs in p["identities"].items() for v in vs}
        if len(values) > max_identifiers:
            return "max_identifiers"
    return None


def handle(key: str, msg: Message, store: Store, cfg: IdentityConfig,
           source: tuple[int, int] | None = None, env: Env | None = None,
           handlers: Handlers | None = None) -> Effects:
    """One record; `handlers`: the kinds it may be (processors/protocol.py: all; default: identity's)."""
    table = handlers or OWN
    fx = Effects(env or Env(), table.extension or NO_EXTENSION)
    fx.counts[f"msg:{msg['k']}"] += 1
    if msg["k"] in PROFILE_KEYED and not _arrived(key, msg, store, fx, source):
        return fx
    table[msg["k"]](key, msg, store, cfg, fx, source)
    return fx


def _arrived(pid: str, msg: Message, store: Store, fx: Effects,
             source: tuple[int, int] | None) -> bool:
    """Route a profile-keyed message to the live profile that holds `pid` now.

    Follows redirects (recording the way in `via`); a live profile that refused to
    absorb the last hop sends the message back there (the loser was restored
    first: per-partition order puts the refusal's X ahead of it).
    """
    profile = store.profile(pid)
    via: list[str] = msg.get("via") or []
    if msg.get("hops", 0) > MAX_HOPS:
        fx.dead.append(("identity_loop", msg))
        return False
    if is_redirect(profile) and profile is not None and msg.get("refused") == profile["nonce"]:
        # bounced by the survivor that refused this freeze: restore (X may be late or lost)
        _restore(pid, profile, store, fx, source)
        profile = store.profile(pid)  # live again: the checks below (home, refused, park) apply
    elif not is_redirect(profile):
        _replayed_restore(profile, fx, source)
    if is_redirect(profile):
        assert profile is not None
        if _is_replay_of(profile, source):
            # replaying the message that froze this profile: its M may have been lost
            fx.send.append(_merge_message(profile))
        if msg["k"] == "U":  # meant for this profile, not for the one it is merging into
            _unlink_frozen(pid, profile, msg, store, fx)
            return False
        fx.counts["redirect_followed"] += 1
        if msg.get("refused") and msg.get("stale", 0) < MAX_STALE:
            # sent back by a profile that refused an earlier freeze of this one; this freeze
            # leads there again, and its M will be refused there too: the round trips last
            # until that M arrives, and do not count as hops (a loop would)
            out = {**msg, "via": [*via, pid], "stale": msg.get("stale", 0) + 1}
            out.pop("refused")
            fx.send.append((profile["redirect"], out))
            return False
        fx.send.append((profile["redirect"], {**msg, "via": [*via, pid], "hops": msg.get("hops", 0) + 1}))
        return False
    refused: dict[str, str] = profile.get("_refused", {}) if profile is not None else {}
    if profile is not None and (_came_home(pid, profile, via) or _merged_here(profile, msg)):
        return True
    if profile is not None and msg["k"] == Kind.MERGE and _merge_went_elsewhere(pid, profile, msg, fx):
        return False
    for i, hop in enumerate(via):
        if hop in refused:  # aimed at a profile this one refused to absorb: send it back
            fx.send.append((hop, {**msg, "via": via[:i], "refused": refused[hop],
                                  "hops": msg.get("hops", 0) + 1}))
            return False
    if msg["k"] == "A" and profile is not None and "_moved" in profile \
            and fx.ext.forward_moved(pid, profile, msg, fx):
        return False
    if msg["k"] != "A" or profile is None or not via:  # the common event came straight here
        return True
    loser = next((h for h in via if h != pid and h not in profile["merged_from"]), None)
    if loser is None:  # every merge on its way has landed here
        return True
    return not (_follow_landed(loser, profile, msg, fx) or _park(pid, loser, profile, msg, store, fx))


def _follow_landed(hop: str, profile: Profile, msg: Message, fx: Effects) -> bool:
    """An event that came through the redirect of a loser (`hop`) whose M this profile
    forwarded while it was frozen, and has been told where that M went (V: `_landed`): it
    follows the M now instead of waiting here for it (it came after the V: the way was longer)."""
    landing = profile.get("_landed", {}).get(hop)
    if landing is None:
        return False
    fx.send.append(_follow(hop, landing, msg))
    fx.counts["followed_landed"] += 1
    return True


def _merged_here(profile: Profile, msg: Message) -> bool:
    """A merge of a loser this profile has absorbed already: a duplicate (the loser's freeze was
    delivered twice) that took another way; handled here as the replay it is, never bounced to
    a profile that would absorb the same loser a second time."""
    return msg["k"] == Kind.MERGE and msg["snap"]["id"] in profile["merged_from"]


def _merge_went_elsewhere(pid: str, profile: Profile, msg: Message, fx: Effects) -> bool:
    """A duplicate M (its loser's freeze was delivered twice) of a merge this profile forwarded
    while frozen, and was told about since (V: `_landed`): absorbed here, the loser's events
    would count twice. One that landed goes where it did, which handles it as the replay it
    is; one that was refused is dropped (the loser was restored from this same snapshot)."""
    loser = msg["snap"]["id"]
    landing = profile.get("_landed", {}).get(loser)
    if landing is None or landing == pid:
        return False
    if isinstance(landing, dict):
        if landing["refused"] != msg["nonce"]:
            return False  # a later freeze of the loser's: a merge like any other
        fx.counts["merge_refused_before"] += 1
        return True
    fx.send.append((landing, {**msg, "via": [*(msg.get("via") or []), pid], "hops": msg.get("hops", 0) + 1}))
    fx.counts["merge_landed_before"] += 1
    return True


def _came_home(pid: str, profile: Profile, via: list[str]) -> bool:
    """True when the record's addressee (the first hop of its way) is this profile now: it
    merged here, whatever became of the redirects it was forwarded through after it."""
    return bool(via) and (via[0] == pid or via[0] in profile["merged_from"])


MAX_PARKED = 256
"""Events held by one profile while the merges they came through are in flight."""


def _park(pid: str, hop: str, profile: Profile, msg: Message, store: Store, fx: Effects) -> bool:
    """Hold an event that came through a redirect (`hop`'s) whose merge has not landed here yet.

    It overtook its M (the M took a detour through a survivor that was frozen itself):
    applied now, it would count here even if that merge is refused, and a redelivered
    copy that arrives after the refusal would count on the restored loser too. It waits
    for the M: applied when the merge lands, sent back when it is refused."""
    parked: dict[str, list[Message]] = profile.setdefault("_parked", {})
    if sum(len(q) for q in parked.values()) >= MAX_PARKED:
        fx.counts["park_full"] += 1
        return False
    mid = msg["ev"]["m"]["messageId"]
    queue = parked.setdefault(hop, [])
    if all(m["ev"]["m"]["messageId"] != mid for m in queue):
        queue.append({k: v for k, v in msg.items() if k != "refused"})
    store.set_profile(pid, profile)
    fx.counts["parked"] += 1
    return True


def _release_parked(pid: str, store: Store, cfg: IdentityConfig, fx: Effects,
                    source: tuple[int, int] | None) -> None:
    """After a merge landed or was refused here (the record at `source`): apply the parked
    events whose merges have all landed (deduplicated by messageId; their links are re-sent by
    _verify_links if the record is replayed), send back those that came through a profile
    refused since (through _arrived, as any record would be), keep the rest. What was sent
    back is kept (`_bounced`), to be sent again if the record is replayed (`_resend_bounced`)."""
    profile = store.profile(pid)
    if profile is None or not profile.get("_parked"):
        return
    merged, refused = set(profile["merged_from"]), profile.get("_refused", {})
    waiting: dict[str, list[Message]] = {}
    ready: list[Message] = []
    for queue in profile.pop("_parked").values():
        for m in queue:
            via = m.get("via") or []
            hop = next((h for h in via if h != pid and h not in merged), None)
            if hop is None or _came_home(pid, profile, via) or any(h in refused for h in via):
                ready.append(m)
            else:
                waiting.setdefault(hop, []).append(m)
    if not ready:
        return
    if waiting:
        profile["_parked"] = waiting
    store.set_profile(pid, profile)
    before = len(fx.send)
    for m in ready:
        if _arrived(pid, m, store, fx, None):
            _on_apply(pid, m, store, cfg, fx, None)
    bounced = [out for out in fx.send[before:] if out[1].get("refused")]
    if bounced:
        released = store.profile(pid)
        assert released is not None
        released["_bounced"] = {"at": list(source) if source else None, "sends": bounced}
        store.set_profile(pid, released)


def _resend_bounced(profile: Profile, source: tuple[int, int] | None, fx: Effects) -> bool:
    """The record at `source` is replayed: send again what its _release_parked sent back."""
    kept = profile.get("_bounced")
    if source is None or kept is None or kept["at"] != list(source):
        return False
    fx.send.extend((k, m) for k, m in kept["sends"])
    return True


def _restore(pid: str, redirect: Profile, store: Store, fx: Effects,
             source: tuple[int, int] | None) -> None:
    restored = redirect["snap"]
    refused_by = [r for r in restored.get("_refused_by", []) if r != redirect["redirect"]]
    restored["_refused_by"] = [*refused_by[-MAX_REFUSED + 1:], redirect["redirect"]]
    restored["_restored_at"] = list(source) if source else None
    landed: dict[str, Landing] = restored.get("_landed", {})  # kept: later events follow too
    follow = [_follow(h, landed[h], m)
              for h in restored.get("_parked", {}) if h in landed for m in restored["_parked"][h]]
    if follow:  # events waiting for merges that landed elsewhere while this was frozen
        restored["_parked"] = {h: q for h, q in restored["_parked"].items() if h not in landed}
        if not restored["_parked"]:
            del restored["_parked"]
        restored["_forwarded"] = follow
        fx.send.extend(follow)
    store.set_profile(pid, restored)
    fx.ext.resume(pid, restored, fx)
    fx.counts["restored"] += 1
    _verify_links(restored, fx)


def _verify_links(profile: Profile, fx: Effects) -> None:
    """Ask every identifier a profile lists to confirm it, after a refused merge.

    Both sides of a refused merge may list identifiers whose links were decided on the
    assumption that the merge would happen: the loser's own (a freeze that reached the
    survivor through the loser's redirect is dropped there), and the survivor's (a record
    forwarded through the loser's redirect got ahead of the merge and was applied there).
    Each identifier that points elsewhere answers with a freeze toward its holder, which
    the known refusal turns into an unlink (U); one that points nowhere is claimed."""
    for kind, values in sorted(profile["identities"].items()):
        for value in values:
            fx.send.append((key_of((kind, value)), records.link(profile["id"])))


def _replayed_restore(profile: Profile | None, fx: Effects, source: tuple[int, int] | None) -> None:
    """The record that restored `profile` is replayed: its verifications may have been lost."""
    if profile is not None and source is not None and profile.get("_restored_at") == list(source):
        _verify_links(profile, fx)
        fx.send.extend((k, m) for k, m in profile.get("_forwarded", []))
        fx.ext.resume(profile["id"], profile, fx)


def _on_event(key: str, msg: Message, store: Store, cfg: IdentityConfig, fx: Effects,
              source: tuple[int, int] | None) -> None:
    if fx.ext.reroute_event(key, msg, store, fx):  # an unlinked (blocked) identifier
        return
    if cfg.quarantine.threshold(parse_key(key)[0]) is not None and quarantine.is_quarantined(store, key):
        # a quarantined value says nothing about who this is: route by the next identifier
        keys = [key_of((k, v)) for k, v in msg["ev"]["ids"]]
        rest = keys[keys.index(key) + 1:] if key in keys else []
        if rest:
            fx.counts["quarantine_rerouted"] += 1
            fx.send.append((rest[0], msg))
            return
    pid = store.identity(key)
    if pid is None and cfg.erased_suppression_ms and is_suppressed(
            key, store, fx.env.at(msg["ev"]["ts"])):
        fx.counts["erased_suppressed"] += 1
        return
    if pid is None:
        pid = mint_profile_id(key, cfg.partitions)
        store.set_identity(key, pid)
        fx.counts["profile_created"] += 1
    fx.send.append((pid, records.apply(msg["ev"], [key], [])))


def _limit_of(reason: str, cfg: IdentityConfig) -> int | None:
    if reason == "max_merges":
        return cfg.max_merges
    if reason == "max_identifiers":
        return cfg.max_identifiers
    return cfg.limits.get(reason)


def _allowed_identifiers(profile: Profile, tp: Touchpoint, cfg: IdentityConfig,
                         fx: Effects) -> tuple[list[Identifier], list[Identifier]]:
    """(identifiers the profile keeps, those of them that are new to it), limits applied."""
    have: dict[str, list[str]] = profile["identities"]
    added: dict[str, int] = {}
    keep: list[Identifier] = []
    new: list[Identifier] = []
    total = sum(len(vs) for vs in have.values())
    for kind, value in tp.identifiers:
        if value in have.get(kind, ()):
            keep.append((kind, value))
            continue
        most = cfg.limits.get(kind)
        if most is not None and len(have.get(kind, ())) + added.get(kind, 0) >= most:
            fx.counts[f"limit_refused:{kind}"] += 1
            _refused_identifier(profile, kind, value, kind, most, tp, fx)
            continue
        if cfg.max_identifiers is not None and total + sum(added.values()) >= cfg.max_identifiers:
            fx.counts["limit_refused:max_identifiers"] += 1
            _refused_identifier(profile, kind, value, "max_identifiers", cfg.max_identifiers, tp, fx)
            continue
        added[kind] = added.get(kind, 0) + 1
        keep.append((kind, value))
        new.append((kind, value))
    return keep, new


def _refused_identifier(profile: Profile, kind: str, value: str, reason: str, limit: int,
                        tp: Touchpoint, fx: Effects) -> None:
    fx.changes.append({"type": "identifier_refused", "profile_id": profile["id"], "identifier_type": kind,
                       "identifier": value, "reason": reason, "limit": limit, "messageId": tp.message_id})


def _on_apply(pid: str, msg: Message, store: Store, cfg: IdentityConfig, fx: Effects,
              source: tuple[int, int] | None) -> None:
    profile = store.profile(pid)
    if profile is None:
        profile = new_profile(pid)
    tp = _touchpoint(msg["ev"])
    known = set(msg.get("known", ()))
    keep, new = _allowed_identifiers(profile, tp, cfg, fx)
    previous = profile.get("_next")
    now = fx.env.clock(profile, ts=tp.ts)
    caught_up = [] if is_duplicate(profile, tp, source) else _catch_up(profile, now, fx, source)
    # the usual event keeps every identifier: no copy of the touchpoint (replace() costs ~3 µs)
    kept = tp if keep == tp.identifiers else replace(tp, identifiers=keep)
    outcome = apply(profile, kept, cfg.profile_limits, source)
    fx.outcome = outcome
    if outcome is not Outcome.APPLIED:  # refusals were recorded when the event was applied
        fx.changes[:] = [c for c in fx.changes if c.get("type") != "identifier_refused"]
    if outcome is Outcome.APPLIED:
        links = [i for i in new if key_of(i) not in known]
        explain.record_links(profile, [key_of(i) for i in new], tp.message_id, tp.ts, tp.type,
                             msg["known"][0] if msg.get("known") else None)
        if tp.type == "group":
            _join_group(profile, tp, cfg, fx)
        tags = fx.env.catalog.observe(profile, tp, now, cfg.profile_limits.retention_ms)
        changes = caught_up + fx.env.catalog.evaluate(profile, now, tags, tp.message_id)
        _remember_changes(profile, fx, changes[len(caught_up):], source, now, tp.message_id, tp)
        _tick_clock(profile, now, fx.env)
        _schedule_expiry(profile, cfg)
        if cfg.journal:
            fx.ext.record(store, profile, msg["ev"])  # for an exact split if a link is undone
        store.set_profile(pid, profile)
        _settled(profile, previous, changes, fx)
    else:
        # a replay: the first pass may have died before its links were sent
        links = [i for i in tp.identifiers
                 if i[1] in profile["identities"].get(i[0], ()) and key_of(i) not in known]
        if tp.type == "group":
            fx.send.append(_group_traits_message(tp, cfg, pid))
        _replay_changes(profile, fx, source)
    for ident in links:
        fx.send.append((key_of(ident), _link_message(pid, profile, ident, tp.ts, cfg)))


def _link_message(pid: str, profile: Profile, ident: Identifier, ts: int, cfg: IdentityConfig) -> Message:
    """L, with who claims (the profile's anchor) and when, where the over-merge guard counts."""
    msg: Message = records.link(pid)
    if cfg.quarantine.threshold(ident[0]) is not None:
        msg["w"] = quarantine.anchor(profile["identities"], ident[0], cfg.rules)
        msg["ts"] = ts
    return msg


RECENT_CHANGES = 4


def _remember_changes(profile: Profile, fx: Effects, changes: list[dict[str, Any]],
                      source: tuple[int, int] | None, now: int, cause: str | None = None,
                      event: Touchpoint | None = None) -> None:
    """Decide activations (before the profile is stored: caps live in it), and keep the
    transitions and triggers of the last few sources, to re-send them if a crash replays one.
    With a `cause`, the profile's journeys take their steps at this instant too."""
    specs = fx.env.catalog.segment_specs
    view: list[Mapping[str, Any]] = []

    def computed() -> Mapping[str, Any]:  # only when a destination sends computed traits
        if not view:
            view.append(fx.env.catalog.computed_view(profile, now))
        return view[0]

    decided = activation.activate(profile, changes, specs, fx.env.activation, now, computed)
    released = activation.release_due(profile, fx.env.activation, now, computed) \
        if profile.get("_pending") else activation.Decisions()
    triggers = decided.triggers + released.triggers
    steps: list[dict[str, Any]] = []
    if cause is not None and (fx.env.journeys or profile.get("journeys")):
        walked = journeys.advance(profile, fx.env.journeys, fx.env.catalog, now, cause, event, changes,
                                  fx.env.activation, computed, fx.env.journey_active,
                                  fx.env.journey_partitions)
        steps, triggers = walked.records, triggers + walked.triggers
        fx.changes.extend(steps)
        fx.journey_counts.update(walked.counts)
        fx.suppressed.update(walked.suppressed)
    fx.triggers.extend(triggers)
    fx.suppressed.update(decided.suppressed + released.suppressed)
    pending = activation.next_release(profile)
    for at in (pending, profile.get("_jdue")):
        if at is not None and (profile.get("_next") is None or at < profile["_next"]):
            profile["_next"] = at
    changes = changes + steps
    if (changes or triggers) and source is not None:
        # one source may decide in steps (deadlines caught up, then its event): keep them all
        same = [t for t in profile.get("_tx", []) if t["at"] == list(source)]
        kept = [t for t in profile.get("_tx", []) if t["at"] != list(source)][-RECENT_CHANGES + 1:]
        before = same[0] if same else {"changes": [], "triggers": []}
        pid = profile["id"]
        profile["_tx"] = [*kept, {"at": list(source),
                                  "changes": _pack_onto(before["changes"], changes, pid),
                                  "triggers": before["triggers"] + triggers}]


_PACKED = ("type", "transition", "profile_id", "segment", "occurred_at", "at", "caused_by", "transition_id")


def _pack(change: dict[str, Any], pid: str) -> Any:
    """A remembered segment transition (built by catalog.transition) as [segment, transition,
    at, cause, extra?]: the profile holds a few sources' worth of them (several per event with
    many segments) and is read and written on every event; a replay derives the rest again."""
    if change.get("type") != "segment" or change.get("profile_id") != pid:
        return change
    packed = [change["segment"], change["transition"], change["at"], change["caused_by"]]
    if len(change) == len(_PACKED):  # catalog.transition's keys, and no other
        return packed
    extra = {k: v for k, v in change.items() if k not in _PACKED}
    return [*packed, extra] if extra else packed


def _pack_onto(packed: list[Any], changes: list[dict[str, Any]], pid: str) -> list[Any]:
    """`packed` and then `changes`, packed; a transition at the instant and of the cause of the
    one packed before it keeps only [segment, transition] (one evaluation's transitions share
    them: a new profile enters most of 50 segments at once)."""
    out = list(packed)
    stamp = _stamps(out)[-1] if out else None
    for change in changes:
        p = _pack(change, pid)
        if isinstance(p, list):
            if len(p) == 4 and (p[2], p[3]) == stamp:
                p = p[:2]
            else:
                stamp = (p[2], p[3])
        out.append(p)
    return out


def _stamps(packed: list[Any]) -> list[tuple[int, str] | None]:
    """The (instant, cause) each packed entry stands for (None: not a packed transition)."""
    out: list[tuple[int, str] | None] = []
    stamp = None
    for p in packed:
        if isinstance(p, list):
            if len(p) > 2:
                stamp = (p[2], p[3])
            out.append(stamp)
        else:
            out.append(None)
    return out


def _unpack_all(packed: list[Any], pid: str) -> list[dict[str, Any]]:
    out = []
    for p, stamp in zip(packed, _stamps(packed), strict=True):
        if stamp is None:
            out.append(p)
            continue
        segment, kind, *rest = p
        extra = rest[2] if len(rest) > 2 else {}
        out.append({**transition(pid, segment, kind, *stamp), **extra})
    return out


MAX_CATCH_UP = 10_000
"""Deadlines fired in one go; a profile's deadlines always move forward, this only bounds a bug."""


def _tick_clock(profile: Profile, now: int, env: Env) -> None:
    if env.event_time:
        profile["_t"] = max(profile.get("_t") or 0, now)


def _segment_next(profile: Profile) -> int | None:
    due = [*profile.get("_due", {}).values()]
    for at in (activation.next_release(profile), profile.get("_jdue")):
        if at is not None:
            due.append(at)
    return min(due, default=None)


def _catch_up(profile: Profile, upto: int, fx: Effects,
              source: tuple[int, int] | None) -> list[dict[str, Any]]:
    """Event time: fire the profile's deadlines up to `upto` in order, each at its own instant.

    Whether a tick or the profile's next event reaches a deadline first then changes nothing:
    both evaluate it at the same instant with the same state, under the same cause."""
    if not fx.env.event_time:
        return []
    out: list[dict[str, Any]] = []
    for _ in range(MAX_CATCH_UP):
        at = _segment_next(profile)
        if at is None or at > upto:
            break
        at = max(at, profile.get("_t") or 0)
        changes = fx.env.catalog.evaluate(profile, at, set(), f"time:{at}")
        _remember_changes(profile, fx, changes, source, at, f"time:{at}")
        profile["_t"] = at
        out += changes
    return out


def _replay_changes(profile: Profile, fx: Effects, source: tuple[int, int] | None) -> None:
    if source is None:
        return
    for t in profile.get("_tx", []):
        if t["at"] == list(source):
            fx.changes.extend(_unpack_all(t["changes"], profile["id"]))
            fx.triggers.extend((ch, trig) for ch, trig in t.get("triggers", []))


def _settled(profile: Profile, previous: int | None, changes: list[dict[str, Any]], fx: Effects) -> None:
    """After a profile was evaluated and stored: count transitions, move its deadline."""
    fx.transitions(changes)
    if profile.get("_next") != previous:
        fx.schedule.append((profile["id"], previous, profile.get("_next")))


def _schedule_expiry(profile: Profile, cfg: IdentityConfig) -> None:
    ttl = cfg.profile_limits.ttl_ms
    if ttl is None or profile.get("last_seen") is None:
        return
    expiry = profile["last_seen"] + ttl
    if profile.get("_next") is None or expiry < profile["_next"]:
        profile["_next"] = expiry


def recheck(pid: str, store: Store, env: Env, cause: str, everything: bool = False,
            cfg: IdentityConfig | None = None) -> Effects:
    """Re-evaluate a stored profile: its due segments (time passed), or all (backfill).

    A profile past its TTL (identity config) is erased instead, like a privacy request."""
    fx = Effects(env)
    profile = store.profile(pid)
    if profile is None or is_redirect(profile):
        return fx
    now = env.at(None)
    ttl = cfg.profile_limits.ttl_ms if cfg is not None else None
    if ttl is not None and profile.get("last_seen") is not None and profile["last_seen"] + ttl <= now:
        fx.send.append((pid, records.profile_request("erase", f"expired:{pid}:{profile['last_seen']}")))
        fx.counts["expired"] += 1
        return fx
    previous = profile.get("_next")
    if env.event_time:  # the profile's own instant; then its deadlines up to the watermark
        changes = env.catalog.evaluate(profile, env.clock(profile), None, cause) if everything else []
        _remember_changes(profile, fx, changes, None, env.clock(profile), cause if everything else None)
        changes += _catch_up(profile, now, fx, None)
    else:
        changes = env.catalog.evaluate(profile, now, None if everything else set(), cause)
        _remember_changes(profile, fx, changes, None, now, cause)
    if cfg is not None:
        _schedule_expiry(profile, cfg)
    if changes or fx.changes or fx.triggers or profile.get("_next") != previous or fx.suppressed:
        store.set_profile(pid, profile)
    _settled(profile, previous, changes, fx)
    return fx


def _group_traits_message(tp: Touchpoint, cfg: IdentityConfig, member: str) -> tuple[str, Message]:
    gid = str(tp.msg["groupId"])
    traits = {k: v for k, v in (tp.msg.get("traits") or {}).items() if k not in MEMBERSHIP_FIELDS}
    return account_id(gid, cfg.partitions), records.group_traits(gid, traits, tp.ts, tp.message_id,
                                                                        member)


def _join_group(profile: Profile, tp: Touchpoint, cfg: IdentityConfig, fx: Effects) -> None:
    gid = str(tp.msg["groupId"])
    traits = tp.msg.get("traits") or {}
    aid = account_id(gid, cfg.partitions)
    memberships: list[dict[str, Any]] = profile["memberships"]
    open_here = [m for m in memberships if m["group_id"] == gid and m["until"] is None]
    if traits.get("membership_status") == "left":
        for m in open_here:
            m["until"] = tp.ts
        fx.changes.append({"type": "membership_ended", "profile_id": profile["id"],
                           "account_id": aid, "group_id": gid, "at": tp.ts})
    else:
        if cfg.exclusive_memberships:
            for m in memberships:
                if m["group_id"] != gid and m["until"] is None and m["since"] <= tp.ts:
                    m["until"] = tp.ts
        if open_here:
            for m in open_here:
                for f in ("role", "title"):
                    if f in traits:
                        m[f] = traits[f]
        else:
            memberships.append({"account_id": aid, "group_id": gid, "role": traits.get("role"),
                                "title": traits.get("title"), "since": tp.ts, "until": None})
            memberships.sort(key=lambda m: (m["group_id"], m["since"]))
    fx.send.append(_group_traits_message(tp, cfg, profile["id"]))


def _on_group_traits(aid: str, msg: Message, store: Store, cfg: IdentityConfig, fx: Effects,
                     source: tuple[int, int] | None) -> None:
    from processors.profile.unified import set_trait

    account = store.profile(aid) or new_profile(aid, kind="account")
    ident = (ACCOUNT_KEY, msg["gid"])
    if msg["gid"] not in account["identities"].get(ACCOUNT_KEY, []):
        account["identities"].setdefault(ACCOUNT_KEY, []).append(msg["gid"])
        store.set_identity(key_of(ident), aid)
    members: list[str] = account.setdefault("_members", [])
    joined = msg.get("pid") is not None and msg["pid"] not in members
    if joined:
        members.append(msg["pid"])
    if msg["mid"] in account["_seen"]:
        if joined:
            store.set_profile(aid, account)
            fx.send.append((msg["pid"], _account_message(account)))
        return
    account["_seen"][msg["mid"]] = msg["ts"]
    before = dict(account["traits"])
    for name, value in msg["traits"].items():
        set_trait(account, name, value, msg["ts"], msg["mid"])
    first, last = account["first_seen"], account["last_seen"]
    account["first_seen"] = msg["ts"] if first is None else min(first, msg["ts"])
    account["last_seen"] = msg["ts"] if last is None else max(last, msg["ts"])
    account["event_count"] += 1
    store.set_profile(aid, account)
    to = members if account["traits"] != before else ([msg["pid"]] if joined else [])
    for member in to:
        fx.send.append((member, _account_message(account)))


def _account_message(account: Profile) -> Message:
    return records.account_traits(account["id"], account["traits"], account["_tt"])


def _on_account_traits(pid: str, msg: Message, store: Store, cfg: IdentityConfig, fx: Effects,
                       source: tuple[int, int] | None) -> None:
    """A member's copy of its account's traits (newest stamp wins: K may arrive out of order)."""
    profile = store.profile(pid)
    if profile is None:
        return
    stamp = max((tuple(v) for v in msg["tt"].values()), default=(0, ""))
    changed = False
    for m in profile["memberships"]:
        if m["account_id"] == msg["aid"] and tuple(m.get("account_stamp") or (0, "")) <= stamp \
                and m.get("account_traits") != msg["traits"]:
            m["account_traits"] = msg["traits"]
            m["account_stamp"] = list(stamp)
            changed = True
    if not changed:
        return
    now = fx.env.clock(profile)
    previous = profile.get("_next")
    cause = f"account:{msg['aid']}@{stamp[0]}"
    changes = fx.env.catalog.evaluate(profile, now, {"account"}, cause)
    _remember_changes(profile, fx, changes, source, now, cause)
    store.set_profile(pid, profile)
    _settled(profile, previous, changes, fx)


def _on_link(key: str, msg: Message, store: Store, cfg: IdentityConfig, fx: Effects,
             source: tuple[int, int] | None) -> None:
    pid = msg["pid"]
    current = store.identity(key)
    if current is None and cfg.erased_suppression_ms and is_suppressed(key, store, fx.env.at(None)):
        fx.counts["erased_suppressed"] += 1
        return
    if fx.ext.refuse_link(key, msg, store, fx):  # an unlinked (blocked) identifier
        return
    if cfg.quarantine.enabled and _quarantined(key, msg, current, store, cfg, fx):
        return
    if current is None:
        store.set_identity(key, pid)
        fx.counts["identity_linked"] += 1
    elif current != pid:
        survivor, loser = sorted((current, pid))
        fx.send.append((loser, records.freeze(survivor, key, pid)))


def _quarantined(key: str, msg: Message, current: str | None, store: Store, cfg: IdentityConfig,
                 fx: Effects) -> bool:
    """Count this claim for the over-merge guard; True when the key may not merge any more
    (the claimant keeps it as a plain attribute; the holder keeps the key)."""
    record = quarantine.claim(store, key, msg.get("w"), msg.get("ts"), cfg.quarantine, current or msg["pid"])
    if record is not None:
        fx.changes.append(quarantine.change_record(key, record))
        fx.counts[f"quarantined:{parse_key(key)[0]}"] += 1
    if current is None or current == msg["pid"] or not quarantine.is_quarantined(store, key):
        return False
    fx.counts[f"quarantine_blocked:{parse_key(key)[0]}"] += 1
    return True


def _on_quarantine_op(key: str, msg: Message, store: Store, cfg: IdentityConfig, fx: Effects,
                      source: tuple[int, int] | None) -> None:
    """O: an operator's release of a quarantined identifier (on its own partition)."""
    if msg.get("op") == "release" and quarantine.release(store, key):
        fx.counts["quarantine_released"] += 1
        kind, value = parse_key(key)
        fx.changes.append({"type": "identifier_released", "profile_id": store.identity(key) or key,
                           "identifier_type": kind, "identifier": value})


def _on_freeze(holder: str, msg: Message, store: Store, cfg: IdentityConfig, fx: Effects,
               source: tuple[int, int] | None) -> None:
    """`holder` (the live profile now holding the F's target) and msg["s"] are one person."""
    other = msg["s"]
    profile = store.profile(holder)
    if profile is None or holder == other or other in profile["merged_from"]:
        return
    if other in (msg.get("via") or ()):
        # the F came through `other`'s redirect: the profile it was sent to merges into `other`
        # already, which is all it asks (a refusal re-verifies both sides), as when it finds
        # `other` live. Passed on, it would pair `other`'s survivor with `other` over a key of
        # `other`'s own and, that merge refused, tell `other` to drop the key (U)
        return
    survivor, loser = sorted((holder, other))
    if other in profile.get("_refused", ()) or other in profile.get("_refused_by", ()):
        # this pair was refused before (a limit): do not freeze again, just unlink
        fx.counts["merge_refused:known"] += 1
        if msg.get("req") and msg.get("link"):
            fx.send.append((msg["req"], _unlink_message(msg["link"], msg["req"], holder, other)))
        return
    if loser != holder:  # the other one must freeze toward us
        fx.send.append((loser, records.freeze(survivor, msg.get("link"),
                                               msg.get("req"))))
        return
    nonce = f"{loser}>{survivor}@{source[0]}:{source[1]}" if source else f"{loser}>{survivor}"
    redirect = {"id": loser, "redirect": survivor, "nonce": nonce, "snap": profile,
                "link": msg.get("link"), "req": msg.get("req"),
                "at": list(source) if source else None}
    store.set_profile(loser, redirect)
    fx.send.append(_merge_message(redirect))
    fx.counts["frozen"] += 1


def _merge_message(redirect: Profile) -> tuple[str, Message]:
    """The M that ships a frozen loser to its survivor (re-sent on replays)."""
    return redirect["redirect"], records.merge(redirect["snap"], redirect["nonce"],
                                                redirect.get("link"), redirect.get("req"))


def _is_replay_of(record: Profile, source: tuple[int, int] | None) -> bool:
    """True when `source` is the message that wrote `record`, or an earlier one, replayed."""
    at = record.get("at")
    return bool(source and at and source[0] == at[0] and source[1] <= at[1])


def _on_merge(survivor: str, msg: Message, store: Store, cfg: IdentityConfig, fx: Effects,
              source: tuple[int, int] | None) -> None:
    snap: Profile = msg["snap"]
    loser = snap["id"]
    profile = store.profile(survivor)
    if profile is not None and loser in profile["merged_from"]:
        if source is not None and profile.get("_merged_at") == list(source):
            # replayed: the repoints and the links of unparked events may have been lost
            _repoint(snap, loser, survivor, msg, fx)
            _verify_links(profile, fx)
            _merged_via(loser, survivor, msg, fx)
            fx.ext.resume(survivor, snap, fx)
            _resend_bounced(profile, source, fx)
        return  # replayed merge
    if profile is not None and loser in profile.get("_refused", ()):
        refused_by: str | None = "replayed"  # send X and U again: they may have been lost
    else:
        refused_by = "erased" if profile is None else fx.ext.refuses_merge(profile, msg) or can_merge(
            profile, snap, cfg.limits, cfg.max_merges, cfg.max_identifiers)
    if refused_by is not None:
        if refused_by != "replayed":
            fx.counts[f"merge_refused:{refused_by}"] += 1
            fx.changes.append({"type": "merge_refused", "profile_id": survivor, "merged_id": loser,
                               "reason": refused_by, "link": msg.get("link"),
                               "limit": _limit_of(refused_by, cfg)})
        if profile is not None and refused_by != "replayed":
            refused = {r: n for r, n in profile.get("_refused", {}).items() if r != loser}
            while len(refused) >= MAX_REFUSED:
                refused.pop(next(iter(refused)))
            profile["_refused"] = {**refused, loser: msg["nonce"]}
            store.set_profile(survivor, profile)
            _release_parked(survivor, store, cfg, fx, source)
        elif profile is not None and _resend_bounced(profile, source, fx):
            pass
        elif profile is not None and profile["_refused"].get(loser) != msg["nonce"]:
            # the loser froze again toward a profile that had refused it (or inherited that
            # refusal): records bounced from here must carry this freeze's nonce, or the
            # frozen loser forwards them straight back until they die of hops
            profile["_refused"][loser] = msg["nonce"]
            store.set_profile(survivor, profile)
        fx.send.append((loser, records.restore(snap, msg["nonce"])))
        # the profiles this M came through may hold events of the loser that wait for it to
        # land there: it lands nowhere, so they go back to the loser (restored by the X)
        _merged_via(loser, loser, msg, fx, refused=msg["nonce"])
        if msg.get("req") and msg.get("link"):
            fx.send.append((msg["req"], _unlink_message(msg["link"], msg["req"], survivor, loser)))
        if profile is not None:
            # records that came through the loser's redirect before this refusal may have
            # left identifiers here that belong to the loser: have each confirmed
            _verify_links(profile, fx)
        return
    assert profile is not None
    # deadlines either side has not reached yet fire first, at their own instants, as a tick would
    fx.transitions(_catch_up(snap, fx.env.clock(profile, snap), fx, source)
                   + _catch_up(profile, fx.env.clock(profile, snap), fx, source))
    merged = merge(profile, snap, cfg.profile_limits)
    merged["id"] = survivor
    # the loser's refusals are the survivor's now: it holds what made the loser refuse, and
    # records aimed at a refused profile may still arrive through the loser's redirect
    refused = {**snap.get("_refused", {}), **profile.get("_refused", {})}
    merged["_refused"] = {r: n for r, n in refused.items() if r not in (loser, survivor)}
    if profile.get("journeys") or snap.get("journeys"):
        merged["journeys"], dropped = journeys.merge_positions(profile.get("journeys"), snap.get("journeys"),
                                                               fx.env.journeys)
        fx.journey_counts.update(dropped)
    parked = {**snap.get("_parked", {})}
    for hop, queue in profile.get("_parked", {}).items():
        parked[hop] = parked.get(hop, []) + queue
    if parked:
        merged["_parked"] = parked
    merged["_merged_at"] = list(source) if source else None
    link_prov = {**snap.get("_prov", {}), **profile.get("_prov", {})}.get(msg.get("link") or "")
    merged.update(explain.merged_history(profile, snap, {
        "survivor": survivor, "loser": loser, "link": msg.get("link"), "at": fx.env.clock(profile, snap),
        "event": None if link_prov is None else {"messageId": link_prov[0], "time": link_prov[1],
                                                 "event_type": link_prov[2]}}))
    now = fx.env.clock(profile, snap)
    _tick_clock(merged, now, fx.env)
    previous = merged.get("_next")
    changes = [{**transition(loser, sid, "exited", now, f"merged_into:{survivor}"), "reason": "merged"}
               for sid in sorted(snap.get("segments", {}))]
    was_in = set(snap.get("segments", {}))
    changes += [{**c, "continued": True} if c["transition"] == "entered" and c["segment"] in was_in else c
                for c in fx.env.catalog.evaluate(merged, now, None, f"merge:{loser}")]
    _remember_changes(merged, fx, changes, source, now, f"merge:{loser}")
    store.set_profile(survivor, merged)
    _settled(merged, previous, changes, fx)
    fx.counts["merged"] += 1
    fx.changes.append({"type": "merged", "profile_id": survivor, "merged_id": loser})
    _repoint(snap, loser, survivor, msg, fx)
    _merged_via(loser, survivor, msg, fx)
    fx.ext.resume(survivor, snap, fx)
    _release_parked(survivor, store, cfg, fx, source)


def _merged_via(loser: str, survivor: str, msg: Message, fx: Effects, refused: str | None = None) -> None:
    """Tell the profiles this M was forwarded through that `loser` landed in `survivor` (or,
    with the `refused` freeze's nonce, nowhere): one of them may hold events of the loser that
    wait for this M (restored since, it would wait for ever); they follow it (V)."""
    for hop in dict.fromkeys(msg.get("via") or []):
        if hop != survivor:
            fx.send.append((hop, records.merged_via(loser, survivor, refused)))


Landing = str | dict[str, str]
"""Where a loser's M went, as a profile it was forwarded through remembers it (`_landed`, from
V): the survivor's id, or {"refused": nonce} when it was refused."""


def _follow(loser: str, landing: Landing, m: Message) -> tuple[str, Message]:
    """An event parked for `loser`, sent where its M went: to the survivor, addressed as to
    the loser; after a refusal, back to the loser as a bounce (its nonce restores the loser
    if the X has not yet, and its empty way applies it there)."""
    out = {k: v for k, v in m.items() if k != "refused"}
    out["hops"] = m.get("hops", 0) + 1
    if isinstance(landing, dict):
        return loser, {**out, "via": [], "refused": landing["refused"]}
    return landing, {**out, "via": [loser]}


def _on_merged_via(pid: str, msg: Message, store: Store, cfg: IdentityConfig, fx: Effects,
                   source: tuple[int, int] | None) -> None:
    """V: the events parked here (or in the snapshot of this frozen profile) for msg["loser"]
    go where its M went (`_follow`): the profile it merged into, or back to it, refused. The
    profile remembers it (`_landed`): an event of the loser's that comes later follows too.

    A live profile here was frozen when the loser's M came through, and restored since: its
    links to the loser's identifiers were decided on the assumption that the loser merges into
    it (a freeze that reached it through the loser's redirect stops there), and the restore's
    verification ran before the repoints. Those repoints were sent before this V, so links
    verified now find each identifier where the merge left it."""
    record = store.profile(pid)
    landing = _landing(msg)
    if is_redirect(record):  # frozen: remembered, the parked events follow when it is restored
        assert record is not None
        if _remember_landing(record["snap"], msg["loser"], landing):
            store.set_profile(pid, record)
        return
    holder = record
    if holder is not None and _remember_landing(holder, msg["loser"], landing):  # for later events
        store.set_profile(pid, holder)
    if holder is not None and msg["into"] != pid and not msg.get("refused"):
        _verify_links(holder, fx)
    if holder is not None and source is not None and holder.get("_unparked", {}).get("at") == list(source):
        fx.send.extend((k, m) for k, m in holder["_unparked"]["sends"])  # replayed: sends may be lost
        return
    if holder is None or msg["loser"] not in holder.get("_parked", {}):
        return
    sends = [_follow(msg["loser"], landing, m) for m in holder["_parked"].pop(msg["loser"])]
    fx.send.extend(sends)
    holder["_unparked"] = {"at": list(source) if source else None, "sends": sends}
    if not holder["_parked"]:
        del holder["_parked"]
    assert record is not None
    store.set_profile(pid, record)
    fx.counts["unparked_via"] += 1


def _remember_landing(profile: Profile, loser: str, landing: Landing) -> bool:
    """Keep where V says the loser's M went (the last MAX_REFUSED losers); True if new."""
    landed: dict[str, Landing] = profile.setdefault("_landed", {})
    if landed.get(loser) == landing:
        return False
    landed.pop(loser, None)
    landed[loser] = landing
    while len(landed) > MAX_REFUSED:
        landed.pop(next(iter(landed)))
    return True


def _landing(msg: Message) -> Landing:
    return {"refused": msg["refused"]} if msg.get("refused") else str(msg["into"])


def _repoint(snap: Profile, loser: str, survivor: str, msg: Message, fx: Effects) -> None:
    keys = {key_of((k, v)) for k, vs in snap["identities"].items() for v in vs}
    if msg.get("link"):
        keys.add(msg["link"])
    for k in sorted(keys):
        fx.send.append((k, records.repoint(loser, survivor)))


def _on_restore(loser: str, msg: Message, store: Store, cfg: IdentityConfig, fx: Effects,
                source: tuple[int, int] | None) -> None:
    profile = store.profile(loser)
    if is_redirect(profile) and profile is not None and profile.get("nonce") == msg["nonce"]:
        _restore(loser, profile, store, fx, source)
    elif not is_redirect(profile):
        _replayed_restore(profile, fx, source)


def _unlink_message(key: str, req: str, a: str, b: str) -> Message:
    """U: `req` drops `key`, which belongs to the other of the refused pair (a, b)."""
    return records.drop_link(key, b if req == a else a)


def _drop_identifier(profile: Profile, msg: Message) -> bool:
    """Remove msg["key"] from the profile, unless the U is stale: the profile has since
    absorbed the key's holder (the key is legitimately its own now)."""
    holder = msg.get("h")
    if holder is not None and (holder == profile["id"] or holder in profile["merged_from"]):
        return False
    kind, value = parse_key(msg["key"])
    values = profile["identities"].get(kind, [])
    if value not in values:
        return False
    values.remove(value)
    if not values:
        del profile["identities"][kind]
    return True


def _unlink_frozen(pid: str, redirect: Profile, msg: Message, store: Store, fx: Effects) -> None:
    """U for a frozen profile: drop the key from the snapshot a refusal would restore. (If
    the merge goes through, the M carried the key already: the survivor's R finds the key
    held by a third profile and asks for that link like an L would.)"""
    if _drop_identifier(redirect["snap"], msg):
        store.set_profile(pid, redirect)
        fx.counts["identity_unlinked"] += 1


def _on_drop_link(pid: str, msg: Message, store: Store, cfg: IdentityConfig, fx: Effects,
               source: tuple[int, int] | None) -> None:
    profile = store.profile(pid)
    if profile is None:
        return
    if _drop_identifier(profile, msg):
        store.set_profile(pid, profile)
        fx.counts["identity_unlinked"] += 1
    # the key's own partition decides: if it points here after all (a claim or a repoint
    # sent before this drop, FIFO ahead of the check), it gives the key back. Sent even
    # when nothing was dropped: this may be a replay whose first check was lost.
    fx.send.append((msg["key"], records.check(pid)))


def _on_check(key: str, msg: Message, store: Store, cfg: IdentityConfig, fx: Effects,
              source: tuple[int, int] | None) -> None:
    """C: a profile dropped this key; if the key points at it, it must list the key."""
    if store.identity(key) == msg["pid"]:
        fx.send.append((msg["pid"], records.identity_back(key)))


def _on_identity_back(pid: str, msg: Message, store: Store, cfg: IdentityConfig, fx: Effects,
                      source: tuple[int, int] | None) -> None:
    """I: the key points at this profile (its partition says so): list it."""
    from processors.profile.unified import add_identities

    profile = store.profile(pid)
    if profile is not None and add_identities(profile, [parse_key(msg["key"])]):
        store.set_profile(pid, profile)
        fx.counts["identity_relinked"] += 1




def _on_repoint(key: str, msg: Message, store: Store, cfg: IdentityConfig, fx: Effects,
                source: tuple[int, int] | None) -> None:
    current = store.identity(key)
    if current is None and fx.ext.refuse_link(key, {"pid": msg["to"]}, store, fx):
        return
    if current == msg["from"] or current is None:
        store.set_identity(key, msg["to"])
    elif current != msg["to"]:
        # the merged snapshot listed a key a third profile holds (a link the loser had
        # taken optimistically, or one unlinked from it after it froze): the survivor
        # lists it now, so ask for that link as the loser's L would have
        _on_link(key, records.link(msg["to"]), store, cfg, fx, source)


PROFILE_KEYED = frozenset({Kind.APPLY, Kind.FREEZE, Kind.MERGE, Kind.DROP_LINK, Kind.ACCOUNT_TRAITS,
                           Kind.PROFILE_REQUEST, Kind.IDENTITY_BACK})
HANDLERS: dict[Kind, records.Handler] = {
    Kind.EVENT: _on_event, Kind.APPLY: _on_apply, Kind.LINK: _on_link, Kind.FREEZE: _on_freeze,
    Kind.MERGE: _on_merge, Kind.RESTORE: _on_restore, Kind.DROP_LINK: _on_drop_link,
    Kind.REPOINT: _on_repoint,
    Kind.GROUP_TRAITS: _on_group_traits, Kind.ACCOUNT_TRAITS: _on_account_traits, Kind.CHECK: _on_check,
    Kind.IDENTITY_BACK: _on_identity_back, Kind.QUARANTINE_OP: _on_quarantine_op,
    Kind.MERGED_VIA: _on_merged_via,
}
"""identity's own record kinds (privacy's: processors/privacy/protocol.py; all: processors/protocol.py)"""


def register(table: Handlers) -> None:
    table.register_all(HANDLERS)


OWN = Handlers()
register(OWN)


def home(key: str, cfg: IdentityConfig) -> int:
    return partition_for(key, cfg.partitions)


def runs_inline(msg: Message, out_key: str, out: Message, partition: int, cfg: IdentityConfig) -> bool:
    """May `out`, sent while handling `msg` on `partition`, be handled at once, without Kafka?

    Only the E → A step of the common event: it creates no redirect. Every other
    step travels as its own record, so a replay of that record (at-least-once)
    reaches the state it wrote and can re-send what a crash may have lost.
    """
    return msg["k"] == Kind.EVENT and out["k"] == Kind.APPLY and home(out_key, cfg) == partition
