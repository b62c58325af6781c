"""Every topic Tusk creates states how long it keeps personal data (TUSK_ERASE_WITHIN)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.kafka.topic_configs import config_of, differences, step_ms, topic_configs
from stream.runtime.settings import Settings, SettingsError

DAY = 86_400_000


def settings(**env: str) -> Settings:
    with pytest.MonkeyPatch.context() as mp:
        for k in [k for k in os.environ if k.startswith("TUSK_")]:
            mp.delenv(k)
        for k, v in env.items():
            mp.setenv(k, v)
        return Settings.from_env()


def test_defaults_bound_every_topic_by_31_days() -> None:
    s = settings()
    assert s.erase_within_ms == 7 * DAY
    configs = topic_configs(s)
    configs[s.topics.activations("email")] = config_of(s, s.topics.activations("email")) or {}
    assert len(configs) == 11
    for name, conf in configs.items():
        if conf["cleanup.policy"] == "compact":
            for key in ("segment.ms", "max.compaction.lag.ms", "delete.retention.ms"):
                assert int(conf[key]) <= 7 * DAY // 8, (name, key)
        else:
            assert conf["cleanup.policy"] == "delete"
            assert int(conf["retention.ms"]) <= 30 * DAY, name
            assert int(conf["segment.ms"]) <= int(conf["retention.ms"]) // 8 + 1, name
    assert configs["tusk.touchpoints"]["retention.ms"] == str(30 * DAY)
    assert configs["tusk.internal.events"]["retention.ms"] == str(7 * DAY // 2)
    assert configs["tusk.dlq"]["retention.ms"] == str(7 * DAY // 2)
    assert configs["tusk-profiles-changelog"]["cleanup.policy"] == "compact"
    assert configs["tusk.segments"]["cleanup.policy"] == "compact"
    assert config_of(s, "someone-elses-topic") is None


@given(seconds=st.integers(min_value=1, max_value=400 * 86_400))
def test_compacted_topics_keep_tombstones_and_shadowed_records_within_the_deadline(seconds: int) -> None:
    s = Settings(erase_within_ms=seconds * 1000)
    step = step_ms(s)
    for name, conf in topic_configs(s).items():
        if conf["cleanup.policy"] == "compact":
            # roll + compaction lag + tombstone retention + the next roll and compaction
            total = int(conf["segment.ms"]) * 2 + int(conf["max.compaction.lag.ms"]) * 2 + int(
                conf["delete.retention.ms"]) + step
            assert total <= s.erase_within_ms, name
        else:
            retention, segment = int(conf["retention.ms"]), int(conf["segment.ms"])
            if name != "tusk.touchpoints":  # the rest leaves half the deadline to the broker's checks
                assert retention + segment <= max(s.erase_within_ms * 5 // 8, 1000 + 125), name
            else:
                assert retention == 30 * DAY


def test_each_topic_retention_can_be_set() -> None:
    s = settings(TUSK_ERASE_WITHIN="2d", TUSK_TOUCHPOINTS_RETENTION="14d", TUSK_ACTIVATIONS_RETENTION="1h",
                 TUSK_DLQ_RETENTION="45d")
    assert config_of(s, "tusk.touchpoints") == {"cleanup.policy": "delete", "retention.ms": str(14 * DAY),
                                               "segment.ms": str(DAY)}
    assert config_of(s, "tusk.activations.sms")["retention.ms"] == str(3_600_000)  # type: ignore[index]
    assert config_of(s, "tusk.dlq")["retention.ms"] == str(45 * DAY)  # type: ignore[index]  # operator's word
    assert config_of(s, "tusk.privacy-results")["retention.ms"] == str(DAY)  # type: ignore[index]
    assert config_of(s, "tusk-identities-changelog")["max.compaction.lag.ms"] == str(2 * DAY // 8)  # type: ignore[index]


@pytest.mark.parametrize("env, message", [
    ({"TUSK_ERASE_WITHIN": "soon"}, "TUSK_ERASE_WITHIN='soon': expected a duration like"),
    ({"TUSK_ERASE_WITHIN": "10ms"}, "TUSK_ERASE_WITHIN='10ms': expected at least 1000 ms."),
    ({"TUSK_PRIVACY_RETENTION": "3 days"}, "TUSK_PRIVACY_RETENTION='3 days': expected a duration"),
])
def test_bad_durations_fail_at_load_with_a_sentence(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        settings(**env)


def test_differences_name_what_changes() -> None:
    wanted = {"retention.ms": "86400000", "cleanup.policy": "delete", "segment.ms": "10800000"}
    assert differences({"retention.ms": "604800000", "cleanup.policy": "delete"}, wanted) == {
        "retention.ms": ("604800000", "86400000"), "segment.ms": (None, "10800000")}
    assert differences({"a": "1"}, {"a": "1"}) == {}
