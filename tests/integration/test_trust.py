"""Trait precedence on a real worker: write keys name sources at the collector, a
low-trust write after a high-trust one loses, across a merge of two profiles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.integration.harness import Deployment, wait_for
from tests.integration.test_collector import Collector

pytestmark = pytest.mark.kafka


def test_high_trust_value_survives_later_low_trust_writes_and_merges(tusk_env: dict[str, str],
                                                                     tmp_path: Path) -> None:
    identity = tmp_path / "identity.yaml"
    identity.write_text("trust:\n  sources: [checkout, web, crm_import]\n"
                        "  traits:\n    email: [verified, checkout, web, crm_import]\n"
                        "  raise:\n    - {event: Email Verified, trait: email, to: verified,"
                        " value: [properties.email]}\n")
    env = {**tusk_env, "TUSK_IDENTITY_CONFIG": str(identity)}
    deployment = Deployment(env, tmp_path)
    collector = Collector(env, tmp_path, TUSK_COLLECTOR_WRITE_KEYS="wk-shop=checkout, wk-crm=crm_import")
    try:
        worker = deployment.add_worker()
        collector.start()

        def send(key: str, events: list[dict[str, Any]]) -> None:
            status, body = collector.post("/v1/batch", orjson.dumps({"batch": events}), key)
            assert status == 200, body

        # two profiles: the shop knows an anonymous visitor, the CRM a user id; the CRM
        # writes later, and even claims a trusted source in context (the key decides)
        send("wk-shop", [{"type": "identify", "anonymousId": "anon-7", "messageId": "t1",
                          "timestamp": "2026-01-01T10:00:00Z",
                          "traits": {"email": "ada@shop.example", "phone": "+14155550100"}}])
        send("wk-crm", [{"type": "identify", "userId": "user-7", "messageId": "t2",
                         "timestamp": "2026-01-02T10:00:00Z", "context": {"source": "verified"},
                         "traits": {"email": "ada@crm.example", "phone": "+14155550199", "plan": "pro"}}])
        # one event carrying both identifiers merges them
        send("wk-crm", [{"type": "track", "event": "Login", "userId": "user-7", "anonymousId": "anon-7",
                         "messageId": "t3", "timestamp": "2026-01-03T10:00:00Z"}])
        deployment.wait_accounted(3)

        def merged() -> Any:
            status, body = worker.profile("user_id", "user-7")
            # both people's identifiers: the merge has landed (anon-7 alone may be claimed by the
            # CRM's profile first, when the shop's event is read after the login)
            ok = status == 200 and body["identities"].get("anonymous_id") == ["anon-7"] and \
                "ada@shop.example" in body["identities"].get("email", [])
            return body if ok else None

        profile = wait_for(merged, 60, "the merged profile")
        assert profile["traits"]["email"] == "ada@shop.example"
        assert profile["traits"]["phone"] == "+14155550100"
        assert profile["traits"]["plan"] == "pro"
        sources = profile["trait_sources"]
        assert sources["email"]["source"] == "checkout" and sources["email"]["messageId"] == "t1"
        assert sources["plan"]["source"] == "crm_import"
    finally:
        collector.stop()
        deployment.stop()
