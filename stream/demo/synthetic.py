"""A synthetic shop's touchpoint stream, for the demo, tests and benchmarks.

People browse anonymously on one to three devices, some sign up (identify with
userId, email, phone, subscriptions and consent), order, sometimes refund, and come back on another
device. A few producer retries repeat a messageId, and a few inputs are
malformed. Deterministic for a given seed.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

FIRST = ["Ada", "Ben", "Chloe", "Dev", "Eva", "Femi", "Gus", "Hana", "Ivo", "Jo", "Kai", "Lea",
         "Mo", "Nia", "Oskar", "Pia", "Quinn", "Ravi", "Sana", "Tom", "Uma", "Vik", "Wen", "Yara"]
LAST = ["Okafor", "Smith", "Nguyen", "Garcia", "Müller", "Rossi", "Kowalski", "Haddad", "Tanaka",
        "Silva", "Dubois", "Larsen", "Ivanova", "Mensah", "O'Brien", "Patel"]
PRODUCTS = [("sku-101", "Trail Shoes", 89.0), ("sku-102", "Rain Jacket", 129.0),
            ("sku-103", "Wool Socks", 12.5), ("sku-104", "Headlamp", 34.0),
            ("sku-105", "Water Bottle", 18.0), ("sku-106", "Daypack", 74.0)]
PAGES = ["Home", "Shoes", "Jackets", "Sale", "About", "Help"]
PLATFORMS = [("web", "Mozilla/5.0"), ("ios", "ShopApp/3.2 iOS"), ("android", "ShopApp/3.2 Android")]

MALFORMED: list[bytes] = [
    b"this is not json",
    b"\xff\xfe\x00garbage",
    b"[1, 2, 3]",
    b'{"type": "track", "event": "Order Completed", "userId": "x"}',
    b'{"type": "track", "messageId": "bad-1", "userId": "u-bad"}',
    b'{"type": "explode", "messageId": "bad-2", "userId": "u-bad"}',
    b'{"type": "identify", "messageId": "bad-3", "userId": "undefined"}',
    b'{"type": "identify", "messageId": "bad-4", "traits": {"first_name": "Nobody"}}',
    b'{"type": "page", "messageId": "bad-5", "anonymousId": "a-bad", "timestamp": "yesterday"}',
    b'{"type": "identify", "messageId": "bad-6", "userId": "u-bad", "traits": ["not", "an", "object"]}',
]


@dataclass
class Person:
    n: int
    first: str
    last: str
    devices: list[tuple[str, str, str]]  # (anonymous id, device id, platform)
    signs_up: bool
    orders: int
    user_id: str = ""
    email: str = ""
    phone: str = ""
    seq: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _person(rng: random.Random, n: int) -> Person:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    devices = []
    for d in range(rng.choice((1, 1, 2, 2, 3))):
        platform = rng.choice(PLATFORMS)[0]
        devices.append((f"anon-{n}-{d}-{rng.randrange(16**6):06x}", f"dev-{n}-{d}", platform))
    p = Person(n, first, last, devices, signs_up=rng.random() < 0.6, orders=0)
    if p.signs_up:
        p.user_id = f"user-{n:06d}"
        p.email = f"{first}.{last}.{n}@example.com".lower().replace("'", "").replace("ü", "ue")
        p.phone = f"+1415555{n % 10000:04d}" if rng.random() < 0.5 else ""
        p.orders = rng.choice((0, 1, 1, 2, 3, 5))
    return p


def _ts(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _event(p: Person, kind: str, t: datetime, device: tuple[str, str, str], known: bool,
           **body: Any) -> dict[str, Any]:
    p.seq += 1
    anon, device_id, platform = device
    msg: dict[str, Any] = {
        "type": kind, "messageId": f"msg-{p.n}-{p.seq}", "timestamp": _ts(t),
        "anonymousId": anon,
        "context": {"device": {"id": device_id, "type": platform}, "locale": "en-US",
                    "ip": f"203.0.113.{p.n % 250}"},
    }
    if known:
        msg["userId"] = p.user_id
    msg.update(body)
    return msg


def person_events(rng: random.Random, p: Person, start: datetime, span: timedelta) -> list[dict[str, Any]]:
    t = start + span * rng.random() * 0.5
    out: list[dict[str, Any]] = []
    known = False

    def tick(max_minutes: float = 90) -> datetime:
        nonlocal t
        t = t + timedelta(minutes=rng.uniform(0.2, max_minutes))
        return t

    for device in p.devices:
        for _ in range(rng.randint(1, 4)):
            out.append(_event(p, "page", tick(), device, False, name=rng.choice(PAGES),
                              properties={"path": "/" + rng.choice(PAGES).lower()}))
        sku, name, price = rng.choice(PRODUCTS)
        out.append(_event(p, "track", tick(), device, False, event="Product Viewed",
                          properties={"product_id": sku, "name": name, "price": price}))
    if not p.signs_up:
        return out
    device = p.devices[0]
    # marketing is opt-in: sign-up subscribes to email (and SMS with a phone); two in three
    # accept advertising cookies, the others decline
    subscriptions = {"email": "subscribed", "sms": "subscribed" if p.phone else "did_not_subscribe"}
    traits = {"email": p.email, "first_name": p.first, "last_name": p.last, "subscriptions": subscriptions}
    if p.phone:
        traits["phone"] = p.phone
    signup = _event(p, "identify", tick(), device, True, traits=traits)
    signup["context"]["consent"] = {"categoryPreferences": {"Marketing": True, "Advertising": p.n % 3 != 0}}
    out.append(signup)
    known = True
    for _ in range(p.orders):
        device = rng.choice(p.devices)
        items = rng.sample(PRODUCTS, rng.randint(1, 3))
        products: list[dict[str, Any]] = [
            {"product_id": s, "name": nm, "price": pr, "quantity": rng.randint(1, 2)}
            for s, nm, pr in items]
        out.append(_event(p, "track", tick(60 * 24 * 3), device, known, event="Product Added",
                          properties={"product_id": products[0]["product_id"]}))
        out.append(_event(p, "track", tick(30), device, known, event="Checkout Started",
                          properties={"value": sum(x["price"] * x["quantity"] for x in products)}))
        order_id = f"order-{p.n}-{p.seq}"
        revenue = round(sum(x["price"] * x["quantity"] for x in products), 2)
        out.append(_event(p, "track", tick(10), device, known, event="Order Completed",
                          properties={"order_id": order_id, "revenue": revenue,
                                      "currency": "EUR", "products": products}))
        if rng.random() < 0.1:
            out.append(_event(p, "track", tick(60 * 24 * 5), device, known, event="Order Refunded",
                              properties={"order_id": order_id, "revenue": revenue, "currency": "EUR"}))
    if rng.random() < 0.2:
        out.append(_event(p, "identify", tick(), p.devices[-1], True,
                          traits={"plan": rng.choice(["free", "plus", "pro"]),
                                  "subscriptions": {"email": "unsubscribed"}}))
    return out


def shop_stream(profiles: int, seed: int = 7, days: int = 30, malformed: bool = True,
                duplicates: float = 0.01, end: datetime | None = None) -> Iterator[bytes]:
    """Encoded events in event-time order (JSON lines, one per record)."""
    rng = random.Random(seed)
    end = end or datetime.now(UTC).replace(microsecond=0)
    span = timedelta(days=days)
    start = end - span
    events: list[dict[str, Any]] = []
    for n in range(profiles):
        events.extend(person_events(rng, _person(rng, n), start, span))
    events.sort(key=lambda e: (e["timestamp"], e["messageId"]))
    bad = list(MALFORMED) if malformed else []
    every = max(1, len(events) // (len(bad) + 1)) if bad else 0
    for i, msg in enumerate(events):
        raw = orjson.dumps(msg)
        yield raw
        if rng.random() < duplicates:
            yield raw  # a producer retry: same messageId again
        if bad and every and i % every == every - 1:
            yield bad.pop(0)
    yield from bad


def people(profiles: int, seed: int = 7) -> list[Person]:
    """The people behind shop_stream(profiles, seed), for examples in reports."""
    rng = random.Random(seed)
    out = []
    for n in range(profiles):
        p = _person(rng, n)
        person_events(rng, p, datetime(2000, 1, 1, tzinfo=UTC), timedelta(days=1))
        out.append(p)
    return out
