"""BG/NBD and Gamma-Gamma: fitting them, and each customer's predictions from them.

Models (the customer summaries come from processors/predict/rfm.py):

  BG/NBD (Fader, Hardie & Lee 2005, "Counting your customers the easy way"): while
  alive, a customer buys at Poisson rate λ ~ Gamma(r, alpha); after each purchase
  they drop out with probability p ~ Beta(a, b).
  Gamma-Gamma (Fader, Hardie & Lee 2005, "RFM and CLV"; Fader & Hardie's note on the
  gamma-gamma spend model): the values of one customer's repeat purchases are
  Gamma(p, ν) with ν ~ Gamma(q, v), independent of how often they buy.

Times are in the fitted unit (`week`: days / 7, `day`): x = frequency, t_x = recency,
T = age. Predictions per customer, at the instant their profile is read:

  p_alive              1 / (1 + a/(b+x-1) · ((alpha+T)/(alpha+t_x))^(r+x)), 1 when x = 0
  expected_orders_90d  E[Y(t) | x, t_x, T] with t = 90 days (90/7 weeks), FHL eq. (10)
  clv_12m              Σ_{m=1..12} (E[Y(m·M)] − E[Y((m−1)·M)]) · E[Z | x, m_x] / (1 + d)^m,
                       M = 365.25/12 days, d the monthly discount rate (default 0.01),
                       E[Z | x, m_x] the Gamma-Gamma expected spend per occasion
                       (the population mean v·p/(q−1) for a customer without repeats).
                       This is the discounted expected-transactions × expected-spend
                       sum of the `lifetimes` package, not the DERL closed form.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import optimize, special

from processors.common.errors import TuskError
from processors.predict.rfm import DAY_MS, RfmConfig, Summary

TRAITS = ("p_alive", "expected_orders_90d", "clv_12m")
UNIT_DAYS = {"day": 1.0, "week": 7.0}
MONTH_DAYS = 365.25 / 12
HORIZON_DAYS = 100 * 366
"""Deadlines are searched this far ahead of a customer's current age."""


class FitError(TuskError, ValueError):
    """The data cannot be fitted (too few customers, no repeat purchases, no convergence)."""


@dataclass(frozen=True)
class Model:
    r: float
    alpha: float
    a: float
    b: float
    p: float | None
    q: float | None
    v: float | None
    unit: str = "week"
    version: str = ""

    @property
    def days(self) -> float:
        return UNIT_DAYS[self.unit]

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> Model:
        bg, gg = rec["bg_nbd"], rec.get("gamma_gamma") or {}
        return cls(float(bg["r"]), float(bg["alpha"]), float(bg["a"]), float(bg["b"]),
                   _opt(gg.get("p")), _opt(gg.get("q")), _opt(gg.get("v")), str(rec.get("unit", "week")),
                   str(rec.get("fitted_at", "")))


def _opt(v: Any) -> float | None:
    return None if v is None else float(v)


@dataclass(frozen=True)
class Setup:
    """What a catalog needs for predictions: how summaries are kept, and the model in force."""

    rfm: RfmConfig = field(default_factory=RfmConfig)
    discount_rate: float = 0.01
    """per month, for clv_12m"""
    model: Model | None = None

    @property
    def version(self) -> str:
        m = self.model
        if m is None:
            return "none"
        return f"{m.r}|{m.alpha}|{m.a}|{m.b}|{m.p}|{m.q}|{m.v}|{m.unit}|{self.discount_rate}"


# --- log-likelihoods and fitting -------------------------------------------------------------


def bgnbd_loglik(r: float, alpha: float, a: float, b: float,
                 x: np.ndarray, tx: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Each customer's BG/NBD log-likelihood (FHL 2005, eq. 6), computed in log space."""
    a1 = special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha)
    a2 = special.betaln(a, b + x) - special.betaln(a, b) - (r + x) * np.log(alpha + T)
    with np.errstate(divide="ignore", invalid="ignore"):
        a3 = np.where(x > 0, special.betaln(a + 1, b + np.maximum(x, 1) - 1) - special.betaln(a, b)
                      - (r + x) * np.log(alpha + tx), -np.inf)
    result: np.ndarray = a1 + np.logaddexp(a2, a3)
    return result


def gamma_gamma_loglik(p: float, q: float, v: float, x: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Each repeat customer's Gamma-Gamma log-likelihood of their mean spend m over x occasions."""
    px = p * x
    result: np.ndarray = (special.gammaln(px + q) - special.gammaln(px) - special.gammaln(q)
                          + q * np.log(v) + (px - 1) * np.log(m) + px * np.log(x)
                          - (px + q) * np.log(x * m + v))
    return result


def _minimise(neg: Callable[[np.ndarray], float], start: Sequence[float]) -> np.ndarray:
    """Maximum likelihood over log-parameters: Nelder-Mead, then polished with BFGS.

    `neg` is the mean negative log-likelihood per customer, so the tolerances do not
    depend on how many customers there are."""
    x0 = np.log(np.asarray(start, dtype=float))
    first = optimize.minimize(neg, x0, method="Nelder-Mead",
                              options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": 20_000, "maxfev": 20_000})
    best = first.x
    polished = optimize.minimize(neg, best, method="BFGS", options={"gtol": 1e-10})
    if np.isfinite(polished.fun) and polished.fun <= first.fun:
        best = polished.x
    if not np.all(np.isfinite(best)) or not np.isfinite(neg(best)):
        raise FitError("the likelihood did not converge to finite parameters")
    out: np.ndarray = np.exp(best)
    return out


def fit_bgnbd(x: np.ndarray, tx: np.ndarray, T: np.ndarray) -> tuple[dict[str, float], float]:
    """(r, alpha, a, b) by maximum likelihood, and the total log-likelihood."""
    if len(x) < 2:
        raise FitError(f"BG/NBD needs customers to fit, got {len(x)}")
    if not np.any(x > 0):
        raise FitError("BG/NBD needs at least one customer with a repeat purchase")
    scale = max(float(np.mean(T)), 1e-9)

    def neg(logp: np.ndarray) -> float:
        r, alpha, a, b = np.exp(logp)
        value = -float(np.mean(bgnbd_loglik(r, alpha * scale, a, b, x, tx, T)))
        return value if math.isfinite(value) else 1e300

    r, alpha, a, b = _minimise(neg, [1.0, 1.0, 1.0, 1.0])
    alpha *= scale
    ll = float(np.sum(bgnbd_loglik(r, alpha, a, b, x, tx, T)))
    return {"r": float(r), "alpha": float(alpha), "a": float(a), "b": float(b)}, ll


def fit_gamma_gamma(x: np.ndarray, m: np.ndarray) -> tuple[dict[str, float], float]:
    """(p, q, v) by maximum likelihood over customers with repeats and a positive mean spend."""
    keep = (x > 0) & (m > 0)
    x, m = x[keep], m[keep]
    if len(x) < 2:
        raise FitError(f"Gamma-Gamma needs repeat customers with positive spend, got {len(x)}")
    scale = max(float(np.mean(m)), 1e-9)

    def neg(logp: np.ndarray) -> float:
        p, q, v = np.exp(logp)
        value = -float(np.mean(gamma_gamma_loglik(p, q, v * scale, x, m)))
        return value if math.isfinite(value) else 1e300

    p, q, v = _minimise(neg, [1.0, 1.0, 1.0])
    v *= scale
    return {"p": float(p), "q": float(q), "v": float(v)}, float(np.sum(gamma_gamma_loglik(p, q, v, x, m)))


def fit(summaries: Sequence[Summary], unit: str = "week") -> dict[str, Any]:
    """Both models over the customers' summaries; the JSON `tusk predict fit` prints."""
    if unit not in UNIT_DAYS:
        raise FitError(f"unit must be one of {sorted(UNIT_DAYS)}, got {unit!r}")
    days = UNIT_DAYS[unit]
    x = np.array([s.frequency for s in summaries], dtype=float)
    tx = np.array([s.recency_days for s in summaries], dtype=float) / days
    T = np.array([s.age_days for s in summaries], dtype=float) / days
    m = np.array([s.monetary if s.monetary is not None else 0.0 for s in summaries], dtype=float)
    bg, ll = fit_bgnbd(x, tx, T)
    try:
        gg, gg_ll = fit_gamma_gamma(x, m)
        gamma: dict[str, Any] | None = {**gg, "customers": int(np.sum((x > 0) & (m > 0))),
                                        "log_likelihood": gg_ll}
    except FitError:
        gamma = None
    return {"bg_nbd": bg, "gamma_gamma": gamma, "customers": len(summaries), "log_likelihood": ll,
            "unit": unit}


# --- predictions ----------------------------------------------------------------------------


def p_alive(m: Model, x: float, tx: float, T: float) -> float:
    if x == 0:
        return 1.0
    log_ratio = math.log(m.a / (m.b + x - 1)) + (m.r + x) * math.log((m.alpha + T) / (m.alpha + tx))
    if log_ratio > 700:
        return 0.0
    return 1.0 / (1.0 + math.exp(log_ratio))


def age_at_p_alive(m: Model, x: float, tx: float, level: float) -> float | None:
    """The age T (model units) at which p_alive falls to `level`, in closed form (None: never)."""
    if x == 0 or not 0.0 < level < 1.0:
        return None
    # (a/(b+x-1)) ((alpha+T)/(alpha+t_x))^(r+x) = 1/level - 1
    ratio = (1.0 / level - 1.0) * (m.b + x - 1) / m.a
    return (m.alpha + tx) * ratio ** (1.0 / (m.r + x)) - m.alpha


def expected_orders(m: Model, t: float, x: float, tx: float, T: float) -> float:
    """E[Y(t) | x, t_x, T]: expected occasions in the next t (FHL 2005, eq. 10)."""
    if t <= 0:
        return 0.0
    a = m.a if abs(m.a - 1.0) > 1e-9 else 1.0 + 1e-9
    ha, hb, hc = m.r + x, m.b + x, a + m.b + x - 1
    z = t / (m.alpha + T + t)
    hyp = float(special.hyp2f1(ha, hb, hc, z))
    if math.isfinite(hyp) and hyp > 0:
        ln_hyp = math.log(hyp)
    else:  # Euler's transformation keeps it finite for z near 1
        ln_hyp = math.log(float(special.hyp2f1(hc - ha, hc - hb, hc, z))) + (hc - ha - hb) * math.log1p(-z)
    first = (a + m.b + x - 1) / (a - 1)
    second = 1.0 - math.exp(ln_hyp + (m.r + x) * math.log((m.alpha + T) / (m.alpha + T + t)))
    denominator = 1.0
    if x > 0:
        denominator += (a / (m.b + x - 1)) * ((m.alpha + T) / (m.alpha + tx)) ** (m.r + x)
    return first * second / denominator


def expected_spend(m: Model, x: float, monetary: float | None) -> float | None:
    """Gamma-Gamma E[Z | x, m_x]; the population mean for a customer without repeats."""
    if m.p is None or m.q is None or m.v is None or m.q <= 1:
        return None
    mean = m.v * m.p / (m.q - 1)
    if x == 0 or monetary is None:
        return mean
    weight = m.p * x / (m.p * x + m.q - 1)
    return (1 - weight) * mean + weight * max(monetary, 0.0)  # refunds may net a mean below 0


def clv(m: Model, x: float, tx: float, T: float, monetary: float | None, discount: float,
        months: int = 12) -> float | None:
    spend = expected_spend(m, x, monetary)
    if spend is None:
        return None
    step = MONTH_DAYS / m.days
    total, before = 0.0, 0.0
    for i in range(1, months + 1):
        upto = expected_orders(m, i * step, x, tx, T)
        total += (upto - before) * spend / (1 + discount) ** i
        before = upto
    return total


class Forecast(float):
    """A predicted value that changes as the customer ages without buying.

    `at_age(days)` is the value at another age (whole days since the first occasion),
    monotone in it; `age` the current age and `origin` the first occasion's day. A
    segment condition on it finds the instant its answer flips (segments.py) instead
    of re-checking the profile every day.
    """

    at_age: Callable[[int], float]
    age: int
    origin: int
    crossing: Callable[[float], float | None] | None

    def __new__(cls, value: float, at_age: Callable[[int], float], age: int, origin: int,
                crossing: Callable[[float], float | None] | None = None) -> Forecast:
        obj = super().__new__(cls, value)
        obj.at_age, obj.age, obj.origin, obj.crossing = at_age, age, origin, crossing
        return obj

    def flip_at(self, holds: Callable[[float], bool], level: float | None) -> int | None:
        """The first instant (ms) at which `holds(value)` changes, or None within the horizon."""
        now = holds(float(self))

        def differs(age: int) -> bool:
            return holds(self.at_age(age)) != now

        if level is not None and self.crossing is not None:
            guess = self.crossing(level)
            if guess is not None:
                day = max(self.age + 1, math.ceil(guess))
                for d in (day - 1, day, day + 1):  # the closed form, checked against the grid
                    if d > self.age and differs(d) and (d - 1 == self.age or not differs(d - 1)):
                        return (self.origin + d) * DAY_MS
        lo, hi = self.age, self.age + HORIZON_DAYS
        if not differs(hi):
            return None
        while hi - lo > 1:  # a monotone value crosses a threshold once
            mid = (lo + hi) // 2
            if differs(mid):
                hi = mid
            else:
                lo = mid
        return (self.origin + hi) * DAY_MS


def predict(setup: Setup, name: str, s: Summary | None) -> Forecast | float | None:
    """One predictive trait of a customer from their summary (None without model or purchase)."""
    m = setup.model
    if m is None or s is None:
        return None
    u = m.days
    x, tx = float(s.frequency), s.recency_days / u
    if name == "p_alive":
        def fn(age: int) -> float:
            return p_alive(m, x, tx, age / u)

        def crossing(level: float) -> float | None:
            t = age_at_p_alive(m, x, tx, level)
            return None if t is None else t * u
        return Forecast(fn(s.age_days), fn, s.age_days, s.first_day, crossing)
    if name == "expected_orders_90d":
        def fn(age: int) -> float:
            return expected_orders(m, 90 / u, x, tx, age / u)
        return Forecast(fn(s.age_days), fn, s.age_days, s.first_day)
    if name == "clv_12m":
        value: float | None = clv(m, x, tx, s.age_days / u, s.monetary, setup.discount_rate)
        if value is None:
            return None

        def fn_clv(age: int) -> float:
            return clv(m, x, tx, age / u, s.monetary, setup.discount_rate) or 0.0
        return Forecast(value, fn_clv, s.age_days, s.first_day)
    raise KeyError(name)


def load_config(path: str | Path) -> Setup:
    """Setup from predict.yaml (schema `predict`); ConfigError with file and line when invalid."""
    from processors.common.config import load_yaml

    data = load_yaml(path, "predict")
    base = RfmConfig()
    purchase, refund = data.get("purchase", {}), data.get("refund", {})
    cfg = RfmConfig(
        purchase_events=tuple(purchase.get("events", base.purchase_events)),
        purchase_value=tuple(purchase.get("value", base.purchase_value)),
        refund_events=tuple(refund.get("events", base.refund_events)),
        refund_value=tuple(refund.get("value", base.refund_value)),
        max_days=int(data.get("max_days", base.max_days)))
    return Setup(cfg, float(data.get("discount_rate", 0.01)))
