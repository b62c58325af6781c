"""identity.yaml: valid files load, invalid ones fail with file, line and expectation."""

from __future__ import annotations

from pathlib import Path

import pytest

from processors.common.config import ConfigError
from processors.identity.graph import load_identity_config

REPO = Path(__file__).resolve().parents[2]


def test_shipped_example_loads() -> None:
    cfg = load_identity_config(REPO / "deploy/examples/identity.yaml", 8)
    assert cfg.limits == {"user_id": 1, "email": 5}
    assert cfg.rules.is_blocked("email", "TEST@test.com")
    assert cfg.rules.is_blocked("user_id", "n/a")
    assert cfg.rules.phone_region == "US"


@pytest.mark.parametrize("text,line,fragment", [
    ("priority: [user_id, email]\nlimits:\n  email: five\n", 3,
     "at limits.email: expected a value of type integer"),
    ("limits:\n  user_id: 0\n", 2, "at limits.user_id: expected a number >= 1"),
    ("priority: []\n", 1, "at priority: expected at least 1 item"),
    ("priority: [user_id, user_id]\n", 1, "no repeated items"),
    ("blocked:\n  email: nope\n", 2, "at blocked.email: expected a value of type array"),
    ("phone_region: usa\n", 1, "at phone_region: expected a value matching"),
    ("priorities: [user_id]\n", 1, "only the keys"),
    ("limits: {email: 2\n", 1, "not valid YAML"),
])
def test_bad_config_names_file_line_and_expectation(tmp_path: Path, text: str, line: int,
                                                    fragment: str) -> None:
    path = tmp_path / "identity.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_identity_config(path, 8)
    message = str(err.value)
    assert message.startswith(f"{path}:"), message
    if "not valid YAML" not in fragment:
        assert message.startswith(f"{path}:{line}: "), message
    assert fragment in message, message


def test_missing_file_is_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_identity_config(tmp_path / "absent.yaml", 8)


def test_named_channels_finds_every_channel_a_definition_names() -> None:
    from processors.segments.definitions import named_channels

    records = [
        {"id": "vip", "condition": {"trait": "plan", "equals": "gold"},
         "destinations": [{"channel": "email"}, {"channel": "ads", "on": ["exited"]}]},
        {"id": "onboarding", "steps": [{"id": "a", "send": {"channel": "push"}},
                                       {"id": "b", "branch": [{"then": [{"send": {"channel": "sms"}}]}]}]},
        {"id": "plain", "condition": {"trait": "channel", "equals": "web"}},  # a trait called channel
    ]
    assert named_channels(records) == {"email", "ads", "push", "sms"}
