"""Predictions: summaries kept in the stream, the fitters against the literature, the
in-stream predictions against independent implementations, deadlines, laws."""

from __future__ import annotations

import csv
import functools
import math
import random
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lifetimes import BetaGeoFitter
from scipy import integrate
from scipy import stats as sps

from processors.common.config import ConfigError
from processors.common.predicates import DefinitionError
from processors.ingest.events import Touchpoint
from processors.predict import models as pr
from processors.predict import rfm
from processors.profile.merge import merge
from processors.profile.unified import Outcome, apply, new_profile
from processors.segments.catalog import Catalog
from processors.segments.definitions import parse_record

DAY = rfm.DAY_MS
DATA = resources.files("lifetimes.datasets")
EPOCH = date(1970, 1, 1)
CALIBRATION_END = "1997-09-30"  # 39 weeks after the cohort's first day, as in FHL 2005
# Fader, Hardie & Lee (2005), "Counting your customers the easy way", CDNOW sample, 39 weeks
PUBLISHED_BG = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
# the Gamma-Gamma fit on the same customers' repeat spend (lifetimes docs; Fader & Hardie's note)
PUBLISHED_GG = {"p": 6.25, "q": 3.74, "v": 15.44}
BG = (PUBLISHED_BG["r"], PUBLISHED_BG["alpha"], PUBLISHED_BG["a"], PUBLISHED_BG["b"])
MODEL = pr.Model(**PUBLISHED_BG, **PUBLISHED_GG, unit="week", version="test")


def day_number(text: str) -> int:
    return (date(int(text[:4]), int(text[4:6]), int(text[6:8])) - EPOCH).days


@functools.cache
def cdnow_sample() -> list[tuple[str, int, float]]:
    """(customer, day, dollars) of the 2,357 CDNOW sample customers, from the lifetimes package."""
    rows = []
    for line in DATA.joinpath("CDNOW_sample.txt").read_text().splitlines():
        _master, cid, when, _cds, dollars = line.split()
        rows.append((str(int(cid)), day_number(when), float(dollars)))
    return rows


@functools.cache
def published_summary() -> dict[str, dict[str, float]]:
    with DATA.joinpath("cdnow_customers_summary_with_transactions.csv").open() as f:
        return {r["ID"]: {k: float(v) for k, v in r.items() if k != "ID"} for r in csv.DictReader(f)}


def order(i: int, cid: str, day: int, dollars: float, hour: int = 10, name: str = "Order Completed",
          key: str = "revenue") -> Touchpoint:
    msg = {"type": "track", "event": name, "messageId": f"m{i}", "userId": cid,
           "properties": {key: dollars}}
    return Touchpoint(msg, "track", f"m{i}", day * DAY + hour * 3_600_000, [("user_id", cid)])


def assert_close(got: dict[str, float], want: dict[str, float], rel: float) -> None:
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=rel), (k, got[k], v)


# --- the fitters against the literature -------------------------------------------------------


def test_fit_reproduces_the_published_cdnow_parameters_from_the_packaged_summary() -> None:
    rows = published_summary().values()
    summaries = [rfm.Summary(0, int(r["x"]), round(r["t_x"] * 7), round(r["T"] * 7),
                             r["zbar"] if r["x"] > 0 else None, 0) for r in rows]
    result = pr.fit(summaries, "week")
    assert result["customers"] == 2357
    assert_close(result["bg_nbd"], PUBLISHED_BG, rel=2e-3)
    assert_close(result["gamma_gamma"], PUBLISHED_GG, rel=2e-3)
    assert result["log_likelihood"] == pytest.approx(-9582.4, abs=0.5)  # FHL 2005 report -9582.4


def test_stream_fold_of_the_cdnow_log_equals_the_published_summary_and_fit() -> None:
    """The CDNOW transactions through the catalog's fold, one profile per customer, shuffled."""
    cat = Catalog()
    events = cdnow_sample()
    shuffled = list(range(len(events)))
    random.Random(16).shuffle(shuffled)
    profiles: dict[str, dict[str, Any]] = {}
    for i in shuffled:
        cid, day, dollars = events[i]
        tp = order(i, cid, day, dollars, hour=i % 24)
        profile = profiles.setdefault(cid, new_profile(f"p_{cid}"))
        assert apply(profile, tp) is Outcome.APPLIED
        cat.observe(profile, tp, tp.ts)
    until = rfm.parse_day(CALIBRATION_END)
    summaries = {cid: cat.summary(p, until * DAY + 5) for cid, p in profiles.items()}
    published = published_summary()
    assert set(summaries) == set(published)
    for cid, want in published.items():
        s = summaries[cid]
        assert s is not None
        assert (s.frequency, s.recency_days / 7, s.age_days / 7) == (
            want["x"], pytest.approx(want["t_x"], abs=0.006), pytest.approx(want["T"], abs=0.006)), cid
        if want["x"] > 0:
            assert s.monetary == pytest.approx(want["zbar"], abs=0.006), cid
        else:
            assert s.monetary is None
    result = pr.fit([s for s in summaries.values() if s is not None], "week")
    assert_close(result["bg_nbd"], PUBLISHED_BG, rel=2e-3)
    assert_close(result["gamma_gamma"], PUBLISHED_GG, rel=2e-3)


def test_fit_in_days_is_the_same_model_in_another_unit() -> None:
    rows = published_summary().values()
    summaries = [rfm.Summary(0, int(r["x"]), round(r["t_x"] * 7), round(r["T"] * 7), None, 0) for r in rows]
    weeks, days = pr.fit(summaries, "week")["bg_nbd"], pr.fit(summaries, "day")["bg_nbd"]
    assert days["alpha"] == pytest.approx(weeks["alpha"] * 7, rel=2e-3)
    for k in ("r", "a", "b"):
        assert days[k] == pytest.approx(weeks[k], rel=2e-3)


def test_fit_refuses_data_without_repeat_purchases() -> None:
    with pytest.raises(pr.FitError, match="repeat"):
        pr.fit([rfm.Summary(0, 0, 0, 10, None, 10)] * 5)
    with pytest.raises(pr.FitError, match="unit"):
        pr.fit([rfm.Summary(0, 1, 3, 10, 5.0, 10)] * 5, "month")


# --- predictions against independent implementations -------------------------------------------


def independent_p_alive(r: float, alpha: float, a: float, b: float, x: int, tx: float, T: float) -> float:
    if x == 0:
        return 1.0
    return 1.0 / (1.0 + (a / (b + x - 1)) * ((alpha + T) / (alpha + tx)) ** (r + x))


def independent_expected(r: float, alpha: float, a: float, b: float, t: float, x: int, tx: float,
                         T: float) -> float:
    """E[Y(t) | x, t_x, T] by integrating over the posterior of the dropout probability p:
    alive with λ ~ Gamma(r+x, alpha+T) and p ~ Beta(a, b+x), a customer makes
    (1 - E[exp(-λ p t)]) / p purchases on average before dropping out (no hypergeometric function)."""
    alive = independent_p_alive(r, alpha, a, b, x, tx, T)

    def integrand(p: float) -> float:
        return (1 - ((alpha + T) / (alpha + T + p * t)) ** (r + x)) / p * sps.beta.pdf(p, a, b + x)

    value, _err = integrate.quad(integrand, 0, 1, limit=200)
    return alive * value


def lifetimes_model() -> BetaGeoFitter:
    """The lifetimes package's implementation, with the published parameters set."""
    bg = BetaGeoFitter()
    bg.params_ = pd.Series(PUBLISHED_BG)
    return bg


histories = st.lists(st.tuples(st.integers(0, 400), st.integers(1, 300)), min_size=1, max_size=15)


def model_catalog(unit: str = "week") -> Catalog:
    record = {"bg_nbd": PUBLISHED_BG, "gamma_gamma": PUBLISHED_GG, "unit": unit,
              "fitted_at": "2026-11-30T00:00:00+00:00"}
    return Catalog().put("predict_model", parse_record("predict_model", {**record, "id": "model"}))


def profile_of(history: list[tuple[int, int]], cat: Catalog, pid: str = "p_1",
               start: int = 0) -> dict[str, Any]:
    profile = new_profile(pid)
    for i, (day, dollars) in enumerate(history):
        tp = order(start + i, "u1", 10_000 + day, float(dollars))
        apply(profile, tp)
        cat.observe(profile, tp, tp.ts)
    return profile


@settings(max_examples=40, deadline=None)
@given(histories, st.integers(0, 800))
def test_profile_predictions_match_independent_formulas(history: list[tuple[int, int]], later: int) -> None:
    cat = model_catalog()
    profile = profile_of(history, cat)
    days = sorted({d for d, _ in history})
    now = (10_000 + days[-1] + later) * DAY + 7
    view = cat.predictions_view(profile, now)
    assert view is not None
    x, tx, T = len(days) - 1, (days[-1] - days[0]) / 7, (days[-1] + later - days[0]) / 7
    assert (view["frequency"], view["recency"], view["age"]) == (x, pytest.approx(tx), pytest.approx(T))
    want_alive = independent_p_alive(*BG, x, tx, T)
    assert view["p_alive"] == pytest.approx(want_alive, rel=1e-9, abs=1e-12)
    want_orders = independent_expected(*BG, 90 / 7, x, tx, T)
    assert view["expected_orders_90d"] == pytest.approx(want_orders, rel=1e-6, abs=1e-9)
    bg = lifetimes_model()
    assert view["expected_orders_90d"] == pytest.approx(
        float(bg.conditional_expected_number_of_purchases_up_to_time(90 / 7, x, tx, T)), rel=1e-6)
    gp, gq, gv = PUBLISHED_GG["p"], PUBLISHED_GG["q"], PUBLISHED_GG["v"]
    mean = gp * gv / (gq - 1)
    weight = gp * x / (gp * x + gq - 1)
    spend = mean if x == 0 else (1 - weight) * mean + weight * view["monetary"]
    month = 365.25 / 12 / 7
    cumulative = [independent_expected(*BG, i * month, x, tx, T) if i else 0.0
                  for i in range(13)]
    want_clv = sum((cumulative[i] - cumulative[i - 1]) * spend / 1.01 ** i for i in range(1, 13))
    assert view["clv_12m"] == pytest.approx(want_clv, rel=1e-6)
    computed = cat.computed_view(profile, now)
    assert computed["p_alive"] == view["p_alive"]
    orjson.dumps(computed)  # plain floats on the wire


def test_profile_without_a_model_keeps_the_summary_and_shows_no_prediction() -> None:
    cat = Catalog()
    profile = profile_of([(0, 10), (3, 20), (3, 5), (10, 7)], cat)
    view = cat.predictions_view(profile, (10_000 + 20) * DAY)
    assert view is not None and view["unit"] == "day"
    assert (view["frequency"], view["recency"], view["age"], view["monetary"]) == (2, 10, 20, 16.0)
    assert "p_alive" not in view and "p_alive" not in cat.computed_view(profile, 0)


# --- the summary: occasions, refunds, values, --until ------------------------------------------


def test_occasions_refunds_and_until() -> None:
    cfg = rfm.RfmConfig()
    state: dict[str, Any] = {}
    for day, name, props in [(5, "Order Completed", {"revenue": 10}), (5, "Order Completed", {"total": 5}),
                             (8, "Order Completed", {"revenue": "20.5"}), (9, "Order Refunded", {"total": 4}),
                             (20, "Order Completed", {}), (3, "Order Refunded", {"revenue": 99}),
                             (21, "Product Viewed", {"revenue": 1})]:
        rfm.observe(state, cfg, name, day * DAY + 1, {"properties": props})
    s = rfm.summary(state, 30)
    assert s == rfm.Summary(5, 2, 15, 25, ((20.5 - 4) + 0) / 2, 30)
    assert rfm.summary(state, 8) == rfm.Summary(5, 1, 3, 3, 20.5, 8)  # orders and refunds after: ignored
    assert rfm.summary(state, 4) is None
    assert rfm.parse_day("1970-01-03") == 2 and rfm.parse_day("1970-01-03T23:00:00Z") == 2
    with pytest.raises(ValueError, match="date"):
        rfm.parse_day("yesterday")


events_st = st.lists(st.tuples(st.sampled_from(["Order Completed", "Order Refunded", "Page"]),
                               st.integers(0, 60), st.integers(0, 23), st.integers(0, 10_000)),
                     max_size=30)


def fold(events: list[tuple[str, int, int, int]], cap: int = 2000) -> dict[str, Any]:
    cfg = rfm.RfmConfig(max_days=cap)
    state: dict[str, Any] = {}
    for name, day, hour, cents in events:
        rfm.observe(state, cfg, name, day * DAY + hour * 3_600_000, {"properties": {"revenue": cents / 100}})
    return state


def normal(state: dict[str, Any]) -> dict[str, Any]:
    return {k: (dict(sorted(v.items())) if isinstance(v, dict) else v) for k, v in sorted(state.items())}


@settings(max_examples=150, deadline=None)
@given(events_st, st.randoms(use_true_random=False))
def test_summary_state_does_not_depend_on_arrival_order(events: list[Any], rnd: random.Random) -> None:
    shuffled = list(events)
    rnd.shuffle(shuffled)
    assert normal(fold(events)) == normal(fold(shuffled))


@settings(max_examples=150, deadline=None)
@given(events_st, events_st, st.integers(0, 70))
def test_merge_law_and_commutativity(left: list[Any], right: list[Any], as_of: int) -> None:
    a, b = fold(left), fold(right)
    assert normal(rfm.merge(a, b)) == normal(fold(left + right))
    assert normal(rfm.merge(a, b)) == normal(rfm.merge(b, a))
    assert rfm.summary(rfm.merge(a, b), as_of) == rfm.summary(fold(right + left), as_of)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.just("Order Completed"), st.integers(0, 60), st.just(1), st.integers(0, 99)),
                min_size=1, max_size=30))
def test_bounded_state_keeps_the_summary_after_the_folded_days(events: list[Any]) -> None:
    in_order = sorted(events, key=lambda e: e[1])  # in day order: the documented exact case
    small, full = fold(in_order, cap=4), fold(in_order)
    assert len(small.get("o", {})) <= 4
    last = max(e[1] for e in events)
    _same(rfm.summary(small, last + 5), rfm.summary(full, last + 5))


def _same(a: rfm.Summary | None, b: rfm.Summary | None) -> None:
    assert a is not None and b is not None
    assert (a.first_day, a.frequency, a.recency_days, a.age_days) == \
        (b.first_day, b.frequency, b.recency_days, b.age_days)
    assert (a.monetary is None) == (b.monetary is None)
    if a.monetary is not None:
        assert a.monetary == pytest.approx(b.monetary)


@settings(max_examples=60, deadline=None)
@given(histories, histories)
def test_profile_merge_combines_summaries_whichever_side_survives(h1: list[Any], h2: list[Any]) -> None:
    cat = model_catalog()
    a, b = profile_of(h1, cat, "p_a"), profile_of(h2, cat, "p_b", start=100)
    both = profile_of(h1 + h2, cat, "p_c")
    now = (10_000 + 500) * DAY
    assert cat.predictions_view(merge(a, b), now) == cat.predictions_view(both, now)
    assert cat.predictions_view(merge(b, a), now) == cat.predictions_view(both, now)


# --- deadlines: p_alive < 0.3 flips at its instant without an event ---------------------------


@settings(max_examples=60, deadline=None)
@given(histories, st.sampled_from([("lt", 0.3), ("lte", 0.5), ("gte", 0.2), ("lt", 0.05)]),
       st.sampled_from(["p_alive", "expected_orders_90d", "clv_12m"]))
def test_deadline_is_the_first_instant_the_condition_flips(history: list[Any], cond: tuple[str, float],
                                                           trait: str) -> None:
    op, level = cond
    level = level if trait == "p_alive" else level * 3
    cat = model_catalog().put("segment", {"id": "s", "condition": {"computed": trait, op: level}})
    profile = profile_of(history, cat)
    days = sorted({d for d, _ in history})
    now = (10_000 + days[-1]) * DAY + 3_600_000
    cat.evaluate(profile, now, None, "test")
    inside = "s" in profile["segments"]
    due = profile["_due"].get("s")
    x, tx = len(days) - 1, (days[-1] - days[0]) / 7
    ops = {"lt": lambda v: v < level, "lte": lambda v: v <= level, "gte": lambda v: v >= level}

    def holds(day: int) -> bool:
        T = (day - days[0]) / 7
        if trait == "p_alive":
            return bool(ops[op](independent_p_alive(*BG, x, tx, T)))
        probe = profile_of(history, Catalog())
        value = model_catalog().computed_view(probe, (10_000 + day) * DAY)[trait]
        return bool(ops[op](value))

    today = days[-1]
    assert inside == holds(today)
    if due is None:  # never flips within the horizon: check a year and a decade ahead
        assert holds(today + 365) == inside and holds(today + 3650) == inside
        return
    flip = due // DAY - 10_000
    assert due == (10_000 + flip) * DAY and flip > today
    assert holds(flip) != inside and holds(flip - 1) == inside
    cat.evaluate(profile, due - 1, set(), "time")
    assert ("s" in profile["segments"]) == inside
    cat.evaluate(profile, due, set(), "time")
    assert ("s" in profile["segments"]) != inside


def test_p_alive_crossing_in_closed_form() -> None:
    m = MODEL
    T = pr.age_at_p_alive(m, 3, 10.0, 0.3)
    assert T is not None and T > 10
    assert pr.p_alive(m, 3, 10.0, T) == pytest.approx(0.3, rel=1e-12)
    assert pr.age_at_p_alive(m, 0, 0.0, 0.3) is None


# --- configuration ----------------------------------------------------------------------------


def test_config_file_and_its_errors(tmp_path: Path) -> None:
    good = tmp_path / "predict.yaml"
    good.write_text("purchase:\n  events: [Purchase]\n  value: [properties.amount]\ndiscount_rate: 0.02\n")
    setup = pr.load_config(good)
    assert setup.rfm.purchase_events == ("Purchase",) and setup.rfm.refund_events == ("Order Refunded",)
    assert setup.discount_rate == 0.02
    cat = Catalog(predict=setup)
    profile = new_profile("p_1")
    for i, (name, amount) in enumerate([("Purchase", 7), ("Order Completed", 100), ("Purchase", 9)]):
        tp = order(i, "u1", 100 + i, amount, name=name, key="amount")
        apply(profile, tp)
        cat.observe(profile, tp, tp.ts)
    assert cat.summary(profile, 200 * DAY) == rfm.Summary(100, 1, 2, 100, 9.0, 200)
    bad = tmp_path / "bad.yaml"
    bad.write_text("purchase:\n  events: []\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:2: at purchase.events"):
        pr.load_config(bad)


def test_predictive_trait_names_are_reserved_and_model_records_checked() -> None:
    with pytest.raises(DefinitionError, match="predictive"):
        Catalog.build([{"id": "p_alive", "aggregate": "count", "event": "x"}])
    with pytest.raises(DefinitionError):
        parse_record("predict_model", {"id": "model", "bg_nbd": {"r": -1, "alpha": 1, "a": 1, "b": 1},
                                       "unit": "week"})
    cat = Catalog.build([{"id": "double", "formula": "clv_12m * 2"}],
                        [{"id": "s", "condition": {"computed": "p_alive", "lt": 0.3}}])
    assert cat.computed_view(new_profile("p_1"), 0) == {"double": None}
    assert np.isfinite(pr.expected_orders(MODEL, 90 / 7, 0, 0, 0))
    assert math.isclose(pr.p_alive(MODEL, 0, 0, 50), 1.0)
