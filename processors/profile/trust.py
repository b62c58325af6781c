"""Which source's value a trait keeps: ranked sources, then the latest by event time.

Every event names its source: `context.source` (the collector sets it from the write
key's name; producers writing to Kafka set it themselves), else `default`. The
`trust` section of identity.yaml ranks sources, highest first, globally and per trait:

    trust:
      sources: [checkout, app, web, crm_import]
      traits:
        email: [verified, double_opt_in, checkout, app, web, crm_import]
      raise:
        - {event: Email Verified, trait: email, to: verified, value: [properties.email]}

A source not in a trait's list ranks below every listed one (all unlisted sources share
that rank, `default` included unless listed). A trait keeps the value of the
highest-ranked source that has given one, and within a rank the latest by (event time,
messageId). That is a maximum over every value ever written, so the result depends
neither on arrival order nor on which side of a merge survived. A `raise` event writes
the trait again under the `to` source: the value at `value` on the event when it
carries one, else the value the profile holds when the event is applied (then the
event must arrive after the value it confirms). Without a `trust` section every source
has the same rank: plain last-write-wins, as before.

A trait's stamp (profile["_tt"][name]) is [event ms, messageId, source]; stamps written
before sources existed have no third element and count as `default`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from processors.common.errors import TuskError
from processors.common.predicates import get_path

DEFAULT_SOURCE = "default"


@dataclass(frozen=True)
class Raise:
    event: str
    trait: str
    to: str
    value: tuple[str, ...] = ()


@dataclass(frozen=True)
class TrustConfig:
    sources: tuple[str, ...] = ()
    traits: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    raises: tuple[Raise, ...] = ()

    def rank(self, trait: str, source: str) -> int:
        """0 is the most trusted; a source not listed ranks after every listed one."""
        order = self.traits.get(trait, self.sources)
        try:
            return order.index(source)
        except ValueError:
            return len(order)

    def key(self, trait: str, stamp: Sequence[Any]) -> tuple[int, int, str]:
        """What a stamp is ordered by: the larger key keeps its value."""
        source = stamp[2] if len(stamp) > 2 else DEFAULT_SOURCE
        return (-self.rank(trait, source), int(stamp[0]), str(stamp[1]))

    def raised_by(self, name: str) -> tuple[Raise, ...]:
        return self._raises_by_event.get(name, ())

    @functools.cached_property
    def _raises_by_event(self) -> dict[str, tuple[Raise, ...]]:
        """The rules by event name, in order: asked on every event, so no scan per event."""
        index: dict[str, tuple[Raise, ...]] = {}
        for r in self.raises:
            index[r.event] = (*index.get(r.event, ()), r)
        return index


NO_TRUST = TrustConfig()


def source_of(msg: Mapping[str, Any]) -> str:
    ctx = msg.get("context")
    # decoded JSON: a dict, checked as such (an ABC check costs ~1 µs per event)
    source = ctx.get("source") if isinstance(ctx, dict) else None
    return source if isinstance(source, str) and source else DEFAULT_SOURCE


def raised_value(rule: Raise, msg: Mapping[str, Any]) -> Any:
    for path in rule.value:
        value = get_path(msg, path)
        if value is not None:
            return value
    return None


class TrustError(TuskError, ValueError):
    """A trust section that passes the schema but cannot work: where, and what was expected."""

    def __init__(self, path: list[Any], expected: str) -> None:
        super().__init__(expected)
        self.path, self.expected = path, expected


def parse_trust(data: Mapping[str, Any] | None) -> TrustConfig:
    """The `trust` section of identity.yaml, already checked against its schema (TrustError
    when a `raise` names a source its trait's ranking does not list: it would rank last)."""
    if not data:
        return NO_TRUST
    for i, r in enumerate(data.get("raise", ())):
        order = data.get("traits", {}).get(r["trait"], data.get("sources", ()))
        if r["to"] not in order:
            raise TrustError(["trust", "raise", i, "to"],
                             f"a source ranked for {r['trait']!r} (one of {list(order)}), got {r['to']!r}")
    raises = tuple(Raise(str(r["event"]), str(r["trait"]), str(r["to"]), tuple(r.get("value", ())))
                   for r in data.get("raise", ()))
    return TrustConfig(tuple(data.get("sources", ())),
                       {str(k): tuple(v) for k, v in data.get("traits", {}).items()}, raises)


def provenance(stamps: Mapping[str, Sequence[Any]]) -> dict[str, dict[str, Any]]:
    """trait → {source, at (ms), messageId}: where each kept value came from."""
    return {name: {"source": s[2] if len(s) > 2 else DEFAULT_SOURCE, "at": s[0], "messageId": s[1]}
            for name, s in sorted(stamps.items())}
