"""explain(): every identifier and merge of a merged profile accounted for, every segment
membership with conditions that hold, on simulated partitions."""

from __future__ import annotations

import operator
import random
from typing import Any

import orjson

from processors.identity.graph import Env, IdentityConfig, event_message
from processors.identity.quarantine import QuarantineConfig
from processors.ingest import events as ev
from processors.ingest.identifiers import key_of, routing_key
from processors.profile.explain import explain
from tests.unit.test_identity_protocol import Cluster
from tests.unit.test_segments import catalog

DAY = 86_400_000
OPS = {"gte": operator.ge, "gt": operator.gt, "lte": operator.le, "lt": operator.lt, "eq": operator.eq}


def shop_stream(seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for p in range(6):
        for d in range(rng.randint(2, 6)):
            base = {"messageId": f"{p}-{d}", "timestamp": f"2024-03-{1 + d * 3:02d}T10:00:00Z"}
            anon = f"anon-{p}-{d % 2}"
            out.append({**base, "type": "page", "anonymousId": anon, "messageId": f"{p}-{d}-page"})
            out.append({**base, "type": "identify", "anonymousId": anon, "userId": f"user-{p}",
                        "traits": {"email": f"p{p}@shop.io", "first_name": f"P{p}"}})
            out.append({**base, "type": "track", "userId": f"user-{p}", "event": "Order Completed",
                        "messageId": f"{p}-{d}-order", "properties": {"revenue": rng.randint(50, 400)}})
    rng.shuffle(out)
    return out


def test_explain_accounts_for_every_identifier_merge_and_membership() -> None:
    cat = catalog()
    cluster = Cluster(IdentityConfig(partitions=4, quarantine=QuarantineConfig(enabled=False)),
                      random.Random(2))
    cluster.env = Env(catalog=cat, event_time=True)
    for raw in shop_stream(3):
        tp = ev.validate(orjson.dumps(raw), record_ts_ms=0)
        assert isinstance(tp, ev.Touchpoint), tp
        cluster.send(routing_key(tp.identifiers), event_message(orjson.loads(ev.encode(tp))))
        cluster.step()
    cluster.run()
    now = 1_709_900_000_000
    merged_seen = members_seen = 0
    for prof in cluster.live_profiles().values():
        report = explain(prof, cat, now)
        held = {key_of((k, v)) for k, vs in prof["identities"].items() for v in vs}
        assert {key_of((i["type"], i["value"])) for i in report["identifiers"]} == held
        for ident in report["identifiers"]:
            assert ident["linked_by"] is not None, ident  # every identifier has its event
            assert ident["linked_by"]["messageId"] in prof["_seen"]
            assert ident["through"] is None or ident["through"] in held
        assert {m["merged"] for m in report["merges"]} == set(prof["merged_from"])
        for m in report["merges"]:
            assert m["through"] is None or m["through"] in held
            merged_seen += 1
        for seg in report["segments"]:
            members_seen += 1
            assert seg["holds_now"] and seg["conditions"], seg
            for cond in seg["conditions"]:
                assert cond["holds"]
                node = cat.segment_specs[seg["segment"]]["condition"]
                leaves = node.get("all", [node])
                for leaf in leaves:
                    if cond["condition"] in leaf and cond["condition"] in ("computed", "trait"):
                        for op, fn in OPS.items():
                            if op in leaf:  # the value shown satisfies the operator, independently
                                assert fn(cond["value"], leaf[op]), (cond, leaf)
    assert merged_seen > 0 and members_seen > 0
