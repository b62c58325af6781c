"""Identifiers on a touchpoint: which ones, how normalised, in what priority.

An identifier is a (type, value) pair; its key on the wire and in tables is
"type:value". Invalid emails and phone numbers stay traits but never become
identifiers: joining two people on a typo is worse than not joining them.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import phonenumbers

from processors.common.predicates import at

Identifier = tuple[str, str]

DEFAULT_PRIORITY: tuple[str, ...] = (
    "user_id", "email", "phone", "device_id", "external", "anonymous_id",
)
"""Contract §3.2. `external` stands for every context.externalIds[] type."""

DEFAULT_BLOCKED: frozenset[str] = frozenset(
    {"", "null", "none", "nil", "undefined", "nan", "0", "-1", "unknown", "anonymous", "n/a"}
)

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
_TYPE = re.compile(r"[^a-z0-9_]+")


def key_of(ident: Identifier) -> str:
    return f"{ident[0]}:{ident[1]}"


def parse_key(key: str) -> Identifier:
    """'email:jo@example.com' → ('email', 'jo@example.com'); ValueError if no type."""
    kind, sep, value = key.partition(":")
    if not sep or not kind or not value:
        raise ValueError(f"expected TYPE:VALUE, got {key!r}")
    return kind, value


def normalise_email(raw: Any) -> str | None:
    if not isinstance(raw, str):
        return None
    value = raw.strip().lower()
    return value if _EMAIL.match(value) else None


def normalise_phone(raw: Any, default_region: str | None = None) -> str | None:
    """E.164, or None when the number cannot be a real one."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)
    if not isinstance(raw, str) or not raw.strip():
        return None
    try:
        number = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise_type(raw: str) -> str:
    return _TYPE.sub("_", raw.strip().lower()).strip("_")


def plain_id(raw: Any) -> str | None:
    """userId / anonymousId / device ids: strings, or integers as their digits."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return str(raw)
    if isinstance(raw, str):
        value = raw.strip()
        return value or None
    return None




def normalise(kind: str, value: Any, default_region: str | None = None) -> str | None:
    """Normalise a value of identifier type `kind` (used for lookups too)."""
    if kind == "email":
        return normalise_email(value)
    if kind == "phone":
        return normalise_phone(value, default_region)
    return plain_id(value)


@dataclass(frozen=True)
class IdentityRules:
    """Which identifier types count, in what order, and what values never count."""

    priority: tuple[str, ...] = DEFAULT_PRIORITY
    blocked: Mapping[str, frozenset[str]] = field(default_factory=dict)
    blocked_everywhere: frozenset[str] = DEFAULT_BLOCKED
    phone_region: str | None = None

    def rank(self, kind: str) -> int:
        found = self._ranks.get(kind)
        if found is not None:
            return found
        try:  # any other type is an external id (context.externalIds[])
            return self.priority.index("external")
        except ValueError:
            return len(self.priority)

    @functools.cached_property
    def _ranks(self) -> dict[str, int]:
        return {kind: i for i, kind in reversed(list(enumerate(self.priority)))}  # first wins

    def is_blocked(self, kind: str, value: str) -> bool:
        folded = value.casefold()
        return folded in self.blocked_everywhere or folded in self.blocked.get(kind, frozenset())


DEFAULT_RULES = IdentityRules()


def candidates(msg: Mapping[str, Any], region: str | None = None) -> Iterable[Identifier | None]:
    """Every identifier a Segment-shaped message carries, unranked, None for unusable ones."""
    yield _pair("user_id", plain_id(msg.get("userId")))
    traits = at(msg, "traits")
    context = at(msg, "context")
    context_traits = at(context, "traits")
    if traits is not None or context_traits is not None:  # most events carry no traits
        yield _pair("email", normalise_email(at(traits, "email")))
        yield _pair("email", normalise_email(at(context_traits, "email")))
        yield _pair("phone", normalise_phone(at(traits, "phone"), region))
        yield _pair("phone", normalise_phone(at(context_traits, "phone"), region))
    yield _pair("device_id", plain_id(at(at(context, "device"), "id")))
    externals = at(context, "externalIds")
    if isinstance(externals, list):
        for entry in externals:
            if isinstance(entry, Mapping) and isinstance(entry.get("type"), str):
                yield _pair(normalise_type(entry["type"]), plain_id(entry.get("id")))
    yield _pair("anonymous_id", plain_id(msg.get("anonymousId")))
    if msg.get("type") == "alias":
        # Segment's common case: previousId is the anonymous id the person had before
        yield _pair("anonymous_id", plain_id(msg.get("previousId")))


def _pair(kind: str, value: str | None) -> Identifier | None:
    return (kind, value) if value and kind else None


def extract(msg: Mapping[str, Any], rules: IdentityRules | None = None) -> list[Identifier]:
    """Usable identifiers of a message, deduplicated, highest priority first."""
    rules = rules or DEFAULT_RULES
    unused = len(rules.priority)
    seen: dict[Identifier, int] = {}  # → its rank
    for ident in candidates(msg, rules.phone_region):
        if ident is None or ident in seen or rules.is_blocked(*ident):
            continue
        rank = rules.rank(ident[0])
        if rank >= unused:
            continue  # a type the rules do not use
        seen[ident] = rank
    return sorted(seen, key=seen.__getitem__)


def routing_key(identifiers: list[Identifier]) -> str:
    """Where an event goes first: its highest-priority identifier."""
    return key_of(identifiers[0])


def input_key(msg: Any, rules: IdentityRules | None = None) -> bytes | None:
    """The Kafka key a producer gives a raw event: its routing identifier (`user_id:u1`).

    With Kafka's murmur2 partitioner the event then lands on the touchpoint partition whose
    number is its identity partition, and the worker that reads it resolves and applies it
    without an internal hop. None for what carries no usable identifier: it goes unkeyed,
    and the worker dead-letters it as it would anyway.
    """
    if not isinstance(msg, Mapping):
        return None
    identifiers = extract(msg, rules)
    return routing_key(identifiers).encode() if identifiers else None
