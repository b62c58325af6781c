"""A worker brings topics made before it (or by hand) to Tusk's retention configs, and says so."""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from stream.kafka.clients import client_config
from tests.conftest import TuskEnv
from tests.integration.harness import Deployment, settings_from

pytestmark = pytest.mark.kafka

DAY = 86_400_000


def test_existing_topics_get_bounded_retention_at_worker_start(tusk_env: TuskEnv, tmp_path: Path) -> None:
    env = {**tusk_env, "TUSK_ERASE_WITHIN": "2d"}
    settings = settings_from(env)
    admin = AdminClient(client_config(settings))
    t = settings.topics
    # as an older Tusk (or an operator) made them: the broker's defaults, a long retention
    old = {t.touchpoints: {}, t.activations("email"): {"retention.ms": str(90 * DAY)},
           f"{settings.app_id}-profiles-changelog": {"cleanup.policy": "compact"}}
    made = admin.create_topics([NewTopic(n, settings.partitions, 1, config=c) for n, c in old.items()])
    for fut in made.values():
        fut.result(30)
    d = Deployment(env, tmp_path)
    try:
        w = d.add_worker()
        log = w.log.read_text(errors="replace")
        assert f"topic {t.activations('email')} brought to Tusk's retention configs: " in log
        assert f"retention.ms {90 * DAY} → {DAY}" in log  # half the erasure deadline
        assert f"topic {t.touchpoints} brought to Tusk's retention configs" in log
        names = [n for n in admin.list_topics(timeout=10).topics if n.startswith((t.prefix, settings.app_id))]
        described = admin.describe_configs([ConfigResource(ResourceType.TOPIC, n) for n in names])
        seen = {}
        for res, fut in described.items():
            conf = {k: e.value for k, e in fut.result(30).items()}
            seen[res.name] = conf
            if "compact" in conf["cleanup.policy"]:
                assert int(conf["max.compaction.lag.ms"]) <= 2 * DAY and int(conf["segment.ms"]) <= 2 * DAY
                assert int(conf["delete.retention.ms"]) <= 2 * DAY
            else:  # Faust's own leader topic too (the broker's default, 7 days)
                assert int(conf["retention.ms"]) <= 31 * DAY, (res.name, conf["retention.ms"])
        assert seen[t.touchpoints]["retention.ms"] == str(30 * DAY)
        assert seen[t.activations("email")]["retention.ms"] == str(DAY)
        assert seen[f"{settings.app_id}-profiles-changelog"]["max.compaction.lag.ms"] == str(2 * DAY // 8)
        assert {t.routed, t.dlq, t.privacy, t.privacy_results, t.profile_changes, t.segments} <= set(seen)
    finally:
        d.stop()
