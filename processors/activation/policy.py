"""Activation policy: which segment transitions become triggers for which channels.

A segment's `destinations` name channels; a channel (activation.yaml, or the
defaults below) maps to the consent category and subscription that govern it
and to the identifiers it delivers to. Marketing is opt-in by default: a
channel with a subscription sends only to profiles `subscribed` to it
(`send_to`), and `require_consent` asks for the consent category recorded as
true (the `ads` default). A trigger is suppressed, and counted by reason, when
the profile unsubscribed from the channel (`unsubscribed`), never subscribed
where the channel sends to subscribers only (`not_subscribed`), the channel's
consent category is false, or missing where consent is required
(`no_consent`), the profile has no address for it (`no_address`), or the
destination's frequency cap is reached (`capped`). A delayed destination is
re-checked when the delay has passed: a profile that left the segment by then
gets nothing (`left_segment`).

trigger_id hashes what caused the trigger (profile, segment, transition,
channel, the causing messageId or deadline), so a replay produces the same id.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from processors.activation.audiences import ADDRESS_FORMS, hashed
from processors.common.config import load_yaml
from processors.common.counts import empty_counter
from processors.common.predicates import get_path
from processors.common.timeutil import iso, parse_duration_ms

Profile = dict[str, Any]


@dataclass(frozen=True)
class Channel:
    name: str
    consent: str | None = None
    subscription: str | None = None
    address: tuple[str, ...] = ()
    """identifier types (or traits) a trigger is delivered to; empty: needs none"""
    send_to: str = "subscribed"
    """who, by subscription state, may get a trigger (SEND_TO); ignored without a subscription"""
    require_consent: bool = False
    """True: the consent category must be recorded as true; False: only a recorded false suppresses"""
    address_as: str = "raw"
    """raw addresses in `to`, `hashed` SHA-256 of normalised values, or `both`"""

    def __post_init__(self) -> None:
        if self.send_to not in SEND_TO:
            raise ValueError(f"channel {self.name}: send_to must be one of {sorted(SEND_TO)}")
        if self.address_as not in ADDRESS_FORMS:
            raise ValueError(f"channel {self.name}: address_as must be one of {list(ADDRESS_FORMS)}")


SEND_TO = {  # the legal meaning of each choice (README, schemas/activation.schema.json)
    "subscribed": "opt-in: only profiles whose subscription state is `subscribed` (GDPR/ePrivacy "
                  "marketing, express consent for SMS)",
    "not_unsubscribed": "opt-out: everyone but profiles that unsubscribed (where the law allows "
                        "marketing until the person objects, e.g. CAN-SPAM email)",
    "anyone": "transactional: the subscription state is not consulted (receipts, password resets, "
              "service messages the person needs whatever their marketing choices)",
}

DEFAULT_CHANNELS = {
    "email": Channel("email", "Marketing", "email", ("email",)),
    "sms": Channel("sms", "Marketing", "sms", ("phone",)),
    "push": Channel("push", "Marketing", "push", ("device_id",)),
    "ads": Channel("ads", "Advertising", None, ("email", "phone", "device_id"), send_to="anyone",
                   require_consent=True, address_as="hashed"),
    "webhook": Channel("webhook", None, None, (), send_to="anyone"),
}


@dataclass(frozen=True)
class ActivationConfig:
    channels: Mapping[str, Channel] = field(default_factory=lambda: dict(DEFAULT_CHANNELS))

    def channel(self, name: str) -> Channel:
        """A declared channel; an undeclared one is governed, opt-in, by a subscription of its own name."""
        return self.channels.get(name) or Channel(name, None, name, ())


def load_activation_config(path: str | Path) -> ActivationConfig:
    data = load_yaml(path, "activation")
    channels = dict(DEFAULT_CHANNELS)
    for name, spec in (data.get("channels") or {}).items():
        base = DEFAULT_CHANNELS.get(name) or Channel(name, None, name, ())
        address = spec.get("address", list(base.address))
        channels[name] = Channel(name, spec.get("consent", base.consent),
                                 spec.get("subscription", base.subscription),
                                 tuple([address] if isinstance(address, str) else address),
                                 send_to=spec.get("send_to", base.send_to),
                                 require_consent=bool(spec.get("require_consent", base.require_consent)),
                                 address_as=spec.get("address_as", base.address_as))
    return ActivationConfig(channels)


def trigger_id(pid: str, segment: str, transition: str, channel: str, cause: str) -> str:
    return hashlib.sha1(f"{pid}|{segment}|{transition}|{channel}|{cause}".encode()).hexdigest()[:32]


def suppression(profile: Profile, channel: Channel) -> str | None:
    """Why a channel may not reach this profile by its subscription and consent, or None."""
    if channel.subscription and channel.send_to != "anyone":
        state = profile.get("subscriptions", {}).get(channel.subscription)
        if state == "unsubscribed":
            return "unsubscribed"
        if channel.send_to == "subscribed" and state != "subscribed":
            return "not_subscribed"
    if channel.consent:
        granted = profile.get("consent", {}).get(channel.consent)
        if granted is False or (channel.require_consent and granted is not True):
            return "no_consent"
    return None


def _address(profile: Profile, channel: Channel) -> dict[str, Any]:
    to: dict[str, Any] = {}
    for kind in channel.address:
        values = profile["identities"].get(kind) or []
        preferred = profile["traits"].get(kind)
        if values:
            # the newest value the person gave, when it is one of the profile's identities
            to[kind] = preferred if isinstance(preferred, str) and preferred.strip().lower() in values \
                else values[0]
            if kind == "email":
                to[kind] = to[kind].strip().lower()
        elif preferred is not None:
            to[kind] = preferred
    return to


ComputedView = Callable[[], Mapping[str, Any]]


def _traits(profile: Profile, names: list[str], computed: ComputedView | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in names:
        if name.startswith("computed."):
            out[name] = (computed() if computed else {}).get(name[len("computed."):])
        else:
            out[name] = get_path(profile["traits"], name)
    return out


def _capped(profile: Profile, key: str, cap: Mapping[str, Any] | None, now: int) -> bool:
    if not cap:
        return False
    per = parse_duration_ms(cap["per"])
    sent = [t for t in profile.get("_caps", {}).get(key, []) if t > now - per]
    return len(sent) >= int(cap["max"])


def _record_cap(profile: Profile, key: str, cap: Mapping[str, Any] | None, now: int) -> None:
    if not cap:
        return
    per = parse_duration_ms(cap["per"])
    caps: dict[str, list[int]] = profile.setdefault("_caps", {})
    caps[key] = [t for t in caps.get(key, []) if t > now - per][-int(cap["max"]):] + [now]


@dataclass
class Decisions:
    triggers: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    suppressed: Counter[str] = field(default_factory=empty_counter)
    """"channel:reason" → count"""


def decide(profile: Profile, change: Mapping[str, Any], dest: Mapping[str, Any], cfg: ActivationConfig,
           now: int, out: Decisions, computed: ComputedView | None = None) -> None:
    """One destination of one transition: a trigger, or a counted suppression."""
    channel = cfg.channel(dest["channel"])
    reason = suppression(profile, channel)
    to = _address(profile, channel)
    digests = hashed(to) if channel.address_as != "raw" else {}
    if channel.address_as == "hashed":
        to = {}
    if reason is None and channel.address and not to and not digests:
        reason = "no_address"
    cap_key = f"{change['segment']}|{channel.name}"
    if reason is None and _capped(profile, cap_key, dest.get("cap"), now):
        reason = "capped"
    if reason is not None:
        out.suppressed[f"{channel.name}:{reason}"] += 1
        return
    _record_cap(profile, cap_key, dest.get("cap"), now)
    trigger: dict[str, Any] = {
        "trigger_id": trigger_id(profile["id"], change["segment"], change["transition"], channel.name,
                                 change["caused_by"]),
        "profile_id": profile["id"], "segment": change["segment"], "transition": change["transition"],
        "channel": channel.name, "occurred_at": iso(change["at"]), "caused_by": change["caused_by"],
        "to": to, "traits": _traits(profile, list(dest.get("traits") or []), computed),
    }
    if channel.address_as != "raw":
        trigger["hashed"] = digests
    out.triggers.append((channel.name, trigger))


def activate(profile: Profile, changes: list[dict[str, Any]], segment_specs: Mapping[str, Mapping[str, Any]],
             cfg: ActivationConfig, now: int, computed: ComputedView | None = None) -> Decisions:
    """Triggers for the transitions of this profile (in place: caps and delayed triggers)."""
    out = Decisions()
    for change in changes:
        if change.get("type") != "segment" or change["profile_id"] != profile["id"]:
            continue
        spec = segment_specs.get(change["segment"]) or {}
        for dest in spec.get("destinations") or []:
            if change["transition"] not in (dest.get("on") or ["entered"]):
                continue
            if change.get("continued"):  # a merge: the person was already in the segment
                out.suppressed[f"{dest['channel']}:already_member"] += 1
                continue
            if dest.get("delay"):
                due = now + parse_duration_ms(dest["delay"])
                profile.setdefault("_pending", []).append({"due": due, "change": change, "dest": dest})
                continue
            decide(profile, change, dest, cfg, now, out, computed)
    return out


def release_due(profile: Profile, cfg: ActivationConfig, now: int,
                computed: ComputedView | None = None) -> Decisions:
    """Delayed triggers whose time has come, if the profile is still where it went."""
    out = Decisions()
    pending = profile.get("_pending", [])
    keep = []
    for item in pending:
        if item["due"] > now:
            keep.append(item)
            continue
        change = item["change"]
        inside = change["segment"] in profile.get("segments", {})
        if inside != (change["transition"] == "entered"):
            out.suppressed[f"{item['dest']['channel']}:left_segment"] += 1
            continue
        decide(profile, change, item["dest"], cfg, now, out, computed)
    if pending:
        profile["_pending"] = keep
    return out


def next_release(profile: Profile) -> int | None:
    return min((p["due"] for p in profile.get("_pending", [])), default=None)
