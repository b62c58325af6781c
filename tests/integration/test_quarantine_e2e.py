"""The over-merge guard on real workers: junk values quarantined, listed, counted, released."""

from __future__ import annotations

import urllib.request
from typing import Any

import orjson
import pytest

from stream.demo import junk_traffic as junk
from stream.demo.session import wait_quiet
from tests.conftest import TuskEnv
from tests.integration.harness import Deployment, wait_for

pytestmark = pytest.mark.kafka


def post(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=orjson.dumps(body), headers={"Content-Type": "application/json"},
                                 method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, orjson.loads(resp.read())


def test_junk_is_quarantined_listed_and_released(tusk_env: TuskEnv, tmp_path: Any) -> None:
    d = Deployment({**tusk_env, "TUSK_PARTITIONS": "3"}, tmp_path)
    try:
        d.add_worker()
        d.add_worker()
        traffic = junk.generate(people=120, seed=11)
        sent = d.produce([orjson.dumps(e) for e in traffic.events])
        d.wait_accounted(sent)
        wait_quiet(d.totals)
        junk_keys = {f"{k}:{v}" for k, v in junk.JUNK}
        status, body = d.workers[0].get("/identity/quarantine")
        assert status == 200
        listed = {f"{r['type']}:{r['value']}" for r in body["quarantined"]}
        assert listed and listed <= junk_keys, listed
        totals = d.totals()
        counted = sum(v for k, v in totals.items() if k.startswith("tusk_identifiers_quarantined_total"))
        assert counted == len(listed), totals
        records = [orjson.loads(m.value()) for m in d.read(d.settings.topics.profile_changes)]
        changes = [c for c in records if c.get("type") == "identifier_quarantined"]
        assert {f"{c['identifier_type']}:{c['identifier']}" for c in changes} == listed
        for worker in d.workers:  # explain answers from any worker, for every identifier
            status, report = worker.get("/profiles/user_id/user-0001/explain")
            assert status == 200, report
            assert report["identifiers"] and all(i["linked_by"] for i in report["identifiers"]), report
            status, plain = worker.get("/profiles/user_id/user-0001")
            assert status == 200 and report["profile_id"] == plain["id"]
            assert {m["merged"] for m in report["merges"]} == set(plain["merged_from"])
        released = sorted(listed)[0]
        status, reply = post(d.workers[1].url + "/identity/quarantine/release", {"identifier": released})
        assert status == 202 and reply["identifier"] == released

        def gone() -> bool:
            _, now = d.workers[1].get("/identity/quarantine")
            return released not in {f"{r['type']}:{r['value']}" for r in now["quarantined"]}

        wait_for(gone, timeout=60, what="the release")
    finally:
        d.stop()
