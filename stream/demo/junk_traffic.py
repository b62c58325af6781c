"""Real-looking traffic with junk identifiers mixed in, and the truth behind it.

True people browse anonymously (an anonymousId and a device each session), identify
(userId, email, sometimes a phone) and buy. Junk glues strangers together the way it does
in real stores: a shop kiosk's device id used by one customer after another, placeholder
emails typed into forms (test@test.com, noreply@…), a call-centre phone number entered for
customers who gave none, and an SDK that reuses one anonymousId on every install.

`generate` returns the events and, for each messageId, the true person who sent it;
`figures` measures a run's profiles against that truth.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from processors.common.timeutil import iso

KIOSK_DEVICE = "kiosk-store-12-ipad"
PLACEHOLDER_EMAILS = ("test@test.com", "noreply@example.com")
CALL_CENTRE_PHONE = "+14155550100"
REUSED_ANONYMOUS_ID = "a6f1c2d0-sdk-default"
JUNK = {("device_id", KIOSK_DEVICE), ("phone", CALL_CENTRE_PHONE), ("anonymous_id", REUSED_ANONYMOUS_ID),
        *(("email", e) for e in PLACEHOLDER_EMAILS)}
DAY_MS = 86_400_000


@dataclass(frozen=True)
class Traffic:
    events: list[dict[str, Any]]
    truth: dict[str, str]
    """messageId → true person"""


def generate(people: int = 40, seed: int = 7, junk_share: float = 0.3, days: int = 30,
             start_ms: int = 1_704_067_200_000) -> Traffic:
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    truth: dict[str, str] = {}
    n = 0

    def emit(person: str, ev: dict[str, Any], day: int) -> None:
        nonlocal n
        n += 1
        mid = f"{person}-{n}"
        ev = {**ev, "messageId": mid, "timestamp": iso(start_ms + day * DAY_MS + n * 1000)}
        events.append(ev)
        truth[mid] = person

    for i in range(people):
        person = f"person-{i}"
        uid, email = f"user-{i:04d}", f"customer{i}@mail{i % 7}.com"
        junky = rng.random() < junk_share
        phone = CALL_CENTRE_PHONE if junky and rng.random() < 0.5 else f"+1415555{1000 + i:04d}"
        form_email = rng.choice(PLACEHOLDER_EMAILS) if junky and rng.random() < 0.5 else email
        device = f"device-{i}"
        for s in range(rng.randint(2, 4)):
            day = rng.randrange(days)
            anon = REUSED_ANONYMOUS_ID if junky and rng.random() < 0.3 else f"anon-{i}-{s}"
            dev = KIOSK_DEVICE if junky and rng.random() < 0.5 else device
            ctx = {"device": {"id": dev}}
            emit(person, {"type": "page", "anonymousId": anon, "context": ctx, "name": "Home"}, day)
            if rng.random() < 0.7:
                traits = {"email": form_email if s == 0 else email}
                if rng.random() < 0.5:
                    traits["phone"] = phone
                emit(person, {"type": "identify", "anonymousId": anon, "userId": uid,
                              "traits": traits, "context": ctx}, day)
                emit(person, {"type": "track", "userId": uid, "event": "Order Completed",
                              "properties": {"revenue": rng.randint(10, 400)}}, day)
    return Traffic(events, truth)


@dataclass(frozen=True)
class Figures:
    true_people: int
    split: int
    """true people whose events ended in more than one profile"""
    wrongly_joined: int
    """true people who share a profile with someone else"""
    profiles_joining_people: int
    quarantined: int


def figures(profiles: Iterable[Mapping[str, Any]], truth: Mapping[str, str], quarantined: int) -> Figures:
    where: dict[str, set[str]] = defaultdict(set)
    joined: set[str] = set()
    gluing = 0
    for prof in profiles:
        people = {truth[m] for m in prof["_seen"] if m in truth}
        for person in people:
            where[person].add(prof["id"])
        if len(people) > 1:
            joined |= people
            gluing += 1
    return Figures(true_people=len(set(truth.values())), split=sum(len(p) > 1 for p in where.values()),
                   wrongly_joined=len(joined), profiles_joining_people=gluing, quarantined=quarantined)
