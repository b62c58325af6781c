"""Opt-in by default and hashed ad audiences: the suppression rules as properties."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

import schemas
from processors.activation.audiences import hashed, sha256_of
from processors.activation.policy import (
    DEFAULT_CHANNELS,
    ActivationConfig,
    Channel,
    Decisions,
    activate,
    decide,
    load_activation_config,
)
from processors.common.config import ConfigError
from processors.profile.unified import new_profile

STATES = st.sampled_from([None, "subscribed", "unsubscribed", "did_not_subscribe"])
CONSENT = st.sampled_from([None, True, False])
TRIGGER = Draft202012Validator(schemas.load("trigger"))


def person(email_sub: str | None = None, sms_sub: str | None = None, push_sub: str | None = None,
           marketing: bool | None = None, advertising: bool | None = None,
           addresses: bool = True) -> dict[str, Any]:
    p = new_profile("p1")
    if addresses:
        p["identities"] = {"email": ["jo@example.com"], "phone": ["+14155552671"], "device_id": ["dev-1"]}
        p["traits"] = {"email": " Jo@Example.COM ", "first_name": "Jo"}
    for channel, state in (("email", email_sub), ("sms", sms_sub), ("push", push_sub)):
        if state is not None:
            p["subscriptions"][channel] = state
    for category, granted in (("Marketing", marketing), ("Advertising", advertising)):
        if granted is not None:
            p["consent"][category] = granted
    return p


def one(profile: dict[str, Any], channel: str, cfg: ActivationConfig | None = None) -> Decisions:
    out = Decisions()
    change = {"segment": "s", "transition": "entered", "caused_by": "m1", "at": 1_700_000_000_000,
              "profile_id": profile["id"], "type": "segment"}
    decide(profile, change, {"channel": channel}, cfg or ActivationConfig(), 1_700_000_000_000, out)
    for _, trigger in out.triggers:
        assert not list(TRIGGER.iter_errors(trigger)), trigger
    return out


@given(email=STATES, sms=STATES, push=STATES, marketing=CONSENT, advertising=CONSENT)
def test_marketing_channels_reach_only_subscribers(email: str | None, sms: str | None, push: str | None,
                                                   marketing: bool | None, advertising: bool | None) -> None:
    for channel, state in (("email", email), ("sms", sms), ("push", push)):
        out = one(person(email, sms, push, marketing, advertising), channel)
        if state == "unsubscribed":
            assert out.suppressed == {f"{channel}:unsubscribed": 1}
        elif state != "subscribed":
            assert out.suppressed == {f"{channel}:not_subscribed": 1}
        elif marketing is False:
            assert out.suppressed == {f"{channel}:no_consent": 1}
        else:
            assert not out.suppressed and [c for c, _ in out.triggers] == [channel]


@given(email=STATES, sms=STATES, marketing=CONSENT, advertising=CONSENT)
def test_ads_only_with_advertising_consent_and_only_hashes(email: str | None, sms: str | None,
                                                           marketing: bool | None,
                                                           advertising: bool | None) -> None:
    out = one(person(email, sms, None, marketing, advertising), "ads")
    if advertising is not True:
        assert out.suppressed == {"ads:no_consent": 1} and not out.triggers
        return
    [(_, trigger)] = out.triggers
    assert trigger["to"] == {}
    assert trigger["hashed"]["email_sha256"] == hashlib.sha256(b"jo@example.com").hexdigest()
    assert trigger["hashed"]["phone_sha256"] == hashlib.sha256(b"+14155552671").hexdigest()
    assert "jo@example.com" not in str(trigger).lower() and "4155552671" not in str(trigger)


@given(state=STATES, send_to=st.sampled_from(["subscribed", "not_unsubscribed", "anyone"]),
       require=st.booleans(), granted=CONSENT)
def test_send_to_and_require_consent_per_channel(state: str | None, send_to: str, require: bool,
                                                 granted: bool | None) -> None:
    cfg = ActivationConfig({**DEFAULT_CHANNELS, "email": Channel(
        "email", "Marketing", "email", ("email",), send_to=send_to, require_consent=require)})
    out = one(person(email_sub=state, marketing=granted), "email", cfg)
    if send_to != "anyone" and state == "unsubscribed":
        want: str | None = "unsubscribed"
    elif send_to == "subscribed" and state != "subscribed":
        want = "not_subscribed"
    elif granted is False or (require and granted is not True):
        want = "no_consent"
    else:
        want = None
    assert out.suppressed == ({f"email:{want}": 1} if want else {})
    assert len(out.triggers) == (0 if want else 1)


def test_nothing_known_gets_no_marketing_but_webhooks_flow() -> None:
    p = person()
    for channel in ("email", "sms", "push"):
        assert one(p, channel).suppressed == {f"{channel}:not_subscribed": 1}
    assert one(p, "ads").suppressed == {"ads:no_consent": 1}
    assert len(one(p, "webhook").triggers) == 1
    # an undeclared channel is governed, opt-in, by a subscription of its own name
    assert one(p, "whatsapp").suppressed == {"whatsapp:not_subscribed": 1}
    p["subscriptions"]["whatsapp"] = "subscribed"
    assert len(one(p, "whatsapp").triggers) == 1


def test_hashed_ads_without_a_hashable_address_is_no_address() -> None:
    p = person(advertising=True, addresses=False)
    assert one(p, "ads").suppressed == {"ads:no_address": 1}


@given(local=st.from_regex(r"[a-z0-9.]{1,12}", fullmatch=True), pad=st.sampled_from(["", " ", "\t", "  "]),
       flips=st.lists(st.booleans(), min_size=40, max_size=40))
def test_email_hash_ignores_case_and_surrounding_space(local: str, pad: str, flips: list[bool]) -> None:
    email = f"{local}@example.com"
    varied = "".join(c.upper() if f else c for c, f in zip(email, flips + [False] * len(email), strict=False))
    assert sha256_of("email", pad + varied + pad) == hashlib.sha256(email.encode()).hexdigest()


@pytest.mark.parametrize("raw", ["+1 415 555 2671", "+1 (415) 555-2671", "+14155552671", " +1-415-555-2671 "])
def test_phone_hash_is_of_e164(raw: str) -> None:
    assert sha256_of("phone", raw) == hashlib.sha256(b"+14155552671").hexdigest()


def test_values_that_do_not_normalise_give_no_hash() -> None:
    assert hashed({"email": "not an email", "phone": "12"}) == {}


def test_both_carries_raw_and_hashed(tmp_path: Path) -> None:
    f = tmp_path / "activation.yaml"
    f.write_text("channels:\n  ads: {address_as: both}\n  email: {send_to: not_unsubscribed}\n"
                 "  receipts: {subscription: null, consent: null, address: email}\n")
    cfg = load_activation_config(f)
    [(_, trigger)] = one(person(advertising=True), "ads", cfg).triggers
    assert trigger["to"]["email"] == "jo@example.com" and trigger["hashed"]["email_sha256"]
    assert cfg.channel("ads").require_consent  # keys not given keep the channel's default
    assert len(one(person(), "email", cfg).triggers) == 1  # opt-out: nothing known is enough
    [(_, receipt)] = one(person(email_sub="unsubscribed", marketing=False), "receipts", cfg).triggers
    assert receipt["to"] == {"email": "jo@example.com"} and "hashed" not in receipt


def test_bad_channel_setting_fails_with_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "activation.yaml"
    f.write_text("channels:\n  email:\n    send_to: everybody\n")
    with pytest.raises(ConfigError, match=r"activation.yaml:3: at channels.email.send_to: expected one of"):
        load_activation_config(f)
    f.write_text("require_consent: true\n")
    with pytest.raises(ConfigError, match=r"activation.yaml:1"):
        load_activation_config(f)


def test_activate_respects_opt_in_for_every_destination() -> None:
    p = person(email_sub="subscribed", sms_sub="did_not_subscribe", advertising=True)
    changes = [{"type": "segment", "profile_id": "p1", "segment": "vip", "transition": "entered",
                "caused_by": "m9", "at": 1}]
    spec = {"vip": {"destinations": [{"channel": c} for c in ("email", "sms", "push", "ads", "webhook")]}}
    out = activate(p, changes, spec, ActivationConfig(), 1)
    assert sorted(c for c, _ in out.triggers) == ["ads", "email", "webhook"]
    assert out.suppressed == {"sms:not_subscribed": 1, "push:not_subscribed": 1}


def test_example_activation_file_loads() -> None:
    example = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "activation.yaml"
    cfg = load_activation_config(example)
    assert cfg.channel("receipts").send_to == "anyone" and cfg.channel("ads").address_as == "hashed"
    [(_, receipt)] = one(person(email_sub="unsubscribed"), "receipts", cfg).triggers
    assert receipt["to"] == {"email": "jo@example.com"}


def test_a_channel_refuses_unknown_choices() -> None:
    with pytest.raises(ValueError, match="send_to must be one of"):
        Channel("email", send_to="everyone")
    with pytest.raises(ValueError, match="address_as must be one of"):
        Channel("ads", address_as="salted")
