"""Tests for services.scoring.clv: RFM summaries, BG/NBD, Gamma-Gamma, CLV, churn bands.

Reference values come from the ``lifetimes`` package (run side by side on the CDNOW data it
ships) and from the published BG/NBD estimates; the probability statements are checked against
Monte-Carlo simulations written independently of the module.
"""

from __future__ import annotations

import math
import warnings
from datetime import date, datetime, timedelta
from functools import cache
from importlib.resources import files
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import integrate

from services.scoring import clv

with warnings.catch_warnings():
    # lifetimes 0.11.3 sets a pandas option that pandas 3 deprecates (Pandas4Warning).
    warnings.simplefilter("ignore")
    from lifetimes import BetaGeoFitter, GammaGammaFitter
    from lifetimes.utils import summary_data_from_transaction_data

CDNOW_PUBLISHED = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}


def _dataset(name: str) -> Any:
    # Located directly: lifetimes.datasets needs pkg_resources, which newer setuptools drop.
    return files("lifetimes") / "datasets" / name


@cache
def cdnow_summary() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    df = pd.read_csv(_dataset("cdnow_customers_summary.csv"))
    return (
        df["frequency"].to_numpy(np.float64),
        df["recency"].to_numpy(np.float64),
        df["T"].to_numpy(np.float64),
    )


@cache
def cdnow_monetary() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    df = pd.read_csv(_dataset("cdnow_customers_summary_with_transactions.csv"))
    return (
        df["x"].to_numpy(np.float64),
        df["t_x"].to_numpy(np.float64),
        df["T"].to_numpy(np.float64),
        df["zbar"].to_numpy(np.float64),
    )


@cache
def cdnow_master() -> pd.DataFrame:
    df = pd.read_csv(
        _dataset("CDNOW_master.txt"),
        sep=r"\s+",
        header=None,
        skiprows=1,
        names=["customer_id", "date", "cds", "dollar_value"],
        dtype={"customer_id": np.int64, "date": str},
    )
    df["date"] = pd.to_datetime(df["date"], format="%Y%m%d")
    return df


@cache
def our_bgnbd() -> clv.BgNbdFit:
    return clv.fit_bgnbd(*cdnow_summary())


@cache
def lifetimes_bgnbd() -> Any:
    return BetaGeoFitter().fit(*cdnow_summary())


@cache
def gg_pair() -> tuple[clv.GammaGammaFit, Any]:
    x, _, _, m = cdnow_monetary()
    rep = x > 0
    return clv.fit_gamma_gamma(x, m), GammaGammaFitter().fit(x[rep], m[rep])


# ---------------------------------------------------------------------------------------------
# BG/NBD fit
# ---------------------------------------------------------------------------------------------


def test_bgnbd_recovers_published_cdnow_parameters():
    fit = our_bgnbd()
    assert fit.converged
    assert fit.n_customers == 2357
    assert round(fit.r, 3) == CDNOW_PUBLISHED["r"]
    assert round(fit.alpha, 3) == CDNOW_PUBLISHED["alpha"]
    assert round(fit.a, 3) == CDNOW_PUBLISHED["a"]
    assert round(fit.b, 3) == CDNOW_PUBLISHED["b"]
    # Fader, Hardie & Lee (2005) report LL = -9582.4 for this data.
    assert fit.log_likelihood == pytest.approx(-9582.4, abs=0.05)
    x, tx, T = cdnow_summary()
    assert fit.log_likelihood == pytest.approx(clv.bgnbd_log_likelihood(fit, x, tx, T).sum(), rel=1e-12)


def test_bgnbd_parameters_match_lifetimes():
    ours = np.array(our_bgnbd().params)
    theirs = lifetimes_bgnbd().params_[["r", "alpha", "a", "b"]].to_numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)


def test_bgnbd_log_likelihood_is_the_maximum():
    fit = our_bgnbd()
    x, tx, T = cdnow_summary()
    base = clv.bgnbd_log_likelihood(fit, x, tx, T).sum()
    for i in range(4):
        for factor in (0.99, 1.01):
            scaled = np.array(fit.params)
            scaled[i] *= factor
            r, alpha, a, b = (float(v) for v in scaled)
            assert clv.bgnbd_log_likelihood((r, alpha, a, b), x, tx, T).sum() < base


def test_bgnbd_predictions_match_lifetimes():
    fit, ref = our_bgnbd(), lifetimes_bgnbd()
    x, tx, T = cdnow_summary()
    np.testing.assert_allclose(clv.p_alive(fit, x, tx, T), ref.conditional_probability_alive(x, tx, T), atol=1e-3)
    for t in (1.0, 39.0, 104.0):
        np.testing.assert_allclose(
            clv.expected_purchases(fit, t, x, tx, T),
            ref.conditional_expected_number_of_purchases_up_to_time(t, x, tx, T),
            atol=1e-3,
        )
    ts = np.array([1.0, 10.0, 39.0, 78.0])
    np.testing.assert_allclose(
        clv.unconditional_expected_purchases(fit, ts), ref.expected_number_of_purchases_up_to_time(ts), atol=1e-3
    )
    # Not trivially satisfied: the quantities vary a lot across customers.
    assert np.ptp(clv.p_alive(fit, x, tx, T)) > 0.9


def test_penalized_fit_matches_lifetimes_penalizer():
    x, tx, T = cdnow_summary()
    ours = clv.fit_bgnbd(x, tx, T, penalizer=0.01)
    theirs = BetaGeoFitter(penalizer_coef=0.01).fit(x, tx, T).params_[["r", "alpha", "a", "b"]].to_numpy()
    np.testing.assert_allclose(np.array(ours.params), theirs, rtol=1e-4)
    assert ours.penalizer == 0.01
    assert abs(ours.a - our_bgnbd().a) > 0.05  # the penalty really acts


def test_bgnbd_gradient_matches_finite_differences():
    x, tx, T = cdnow_summary()
    obj = clv._BgNbdObjective(x, tx, T, np.ones_like(x), 1.0 / T.max(), 0.003)
    theta = np.log(np.array([0.4, 0.7, 1.3, 3.0]))
    _, grad = obj(theta)
    h = 1e-6
    numeric = np.array([(obj(theta + e)[0] - obj(theta - e)[0]) / (2 * h) for e in np.eye(4) * h])
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


def test_weights_equal_repeated_rows():
    x, tx, T = cdnow_summary()
    sub = slice(0, 600)
    w = np.arange(600) % 3 + 1.0
    weighted = clv.fit_bgnbd(x[sub], tx[sub], T[sub], weights=w)
    reps = w.astype(int)
    expanded = clv.fit_bgnbd(np.repeat(x[sub], reps), np.repeat(tx[sub], reps), np.repeat(T[sub], reps))
    np.testing.assert_allclose(np.array(weighted.params), np.array(expanded.params), rtol=1e-5)
    assert weighted.n_customers == expanded.n_customers == int(w.sum())
    assert weighted.log_likelihood == pytest.approx(expanded.log_likelihood, rel=1e-9)


def test_fit_survives_nobody_repurchasing_and_rejects_bad_input():
    T = np.linspace(5.0, 40.0, 500)
    fit = clv.fit_bgnbd(np.zeros(500), np.zeros(500), T)
    assert all(math.isfinite(v) and v > 0 for v in fit.params)
    assert math.isfinite(fit.log_likelihood) and fit.log_likelihood <= 0
    assert clv.p_alive(fit, 0, 0, 10.0) == 1.0
    with pytest.raises(ValueError, match="recency"):
        clv.fit_bgnbd([1, 2], [5.0, 30.0], [10.0, 20.0])
    with pytest.raises(ValueError, match="integers"):
        clv.fit_bgnbd([1.5, 2], [5.0, 10.0], [10.0, 20.0])
    with pytest.raises(ValueError, match="frequency is 0"):
        clv.fit_bgnbd([0, 2], [5.0, 10.0], [10.0, 20.0])


def test_simulation_and_fit_recover_known_parameters():
    rng = np.random.default_rng(20240611)
    true = (0.5, 6.0, 0.6, 3.0)
    n = 200_000
    x, tx, T = clv.simulate_bgnbd(n, true, rng.uniform(20.0, 80.0, n), rng)
    assert (tx <= T).all() and (tx[x == 0] == 0).all() and (tx[x > 0] > 0).all()
    # Closed forms for the simulated process: P(X(T) = 0) = (α/(α+T))^r and E[X(T)].
    p0 = (true[1] / (true[1] + T)) ** true[0]
    assert abs((x == 0).mean() - p0.mean()) < 4 * math.sqrt(0.25 / n)
    expected = clv.unconditional_expected_purchases(true, T)
    assert abs(x.mean() - expected.mean()) < 4 * x.std() / math.sqrt(n)
    fit = clv.fit_bgnbd(x, tx, T)
    assert fit.converged
    np.testing.assert_allclose(np.array(fit.params), np.array(true), rtol=0.06)


# ---------------------------------------------------------------------------------------------
# Predictions: identities and Monte-Carlo checks
# ---------------------------------------------------------------------------------------------


def test_scalar_inputs_give_floats_equal_to_vector_results():
    fit = our_bgnbd()
    x, tx, T = cdnow_summary()
    i = 0  # customer 1: x=2, t_x=30.43, T=38.86
    pa = clv.p_alive(fit, float(x[i]), float(tx[i]), float(T[i]))
    assert isinstance(pa, float)
    assert pa == pytest.approx(clv.p_alive(fit, x, tx, T)[i], rel=1e-14)
    assert pa == pytest.approx(0.7266, abs=1e-3)  # lifetimes: 0.72661
    e = clv.expected_purchases(fit, 39.0, 2, 30.43, 38.86)
    assert isinstance(e, float) and e == pytest.approx(1.2259, abs=1e-3)
    assert isinstance(clv.p_no_purchase(fit, 13.0, 2, 30.43, 38.86), float)
    assert clv.p_alive(fit.params, 2, 30.43, 38.86) == pa  # bare tuples work too


def test_p_no_purchase_limits_and_small_t_identity():
    fit = our_bgnbd()
    x, tx, T = cdnow_summary()
    np.testing.assert_array_equal(clv.p_no_purchase(fit, 0.0, x, tx, T), 1.0)
    np.testing.assert_allclose(clv.p_no_purchase(fit, 1e60, x, tx, T), 1.0 - clv.p_alive(fit, x, tx, T), atol=1e-6)
    # Over a short window, P(at least one purchase) = E[purchases] + O(h²) — ties p_no_purchase
    # to the independently coded hypergeometric formula for the conditional expectation.
    h = 1e-4
    p_any = 1.0 - clv.p_no_purchase(fit, h, x, tx, T)
    # (atol: 1 − p_no_purchase cannot resolve below ~1e-16 for almost surely dead customers)
    np.testing.assert_allclose(p_any, clv.expected_purchases(fit, h, x, tx, T), rtol=1e-4, atol=1e-13)
    # Monotone in t.
    ts = np.array([1.0, 4.0, 13.0, 52.0])
    curve = clv.p_no_purchase(fit, ts, 3.0, 20.0, 38.0)
    assert (np.diff(curve) < 0).all()


@pytest.mark.parametrize(
    ("x", "tx", "T"), [(1.0, 5.0, 38.0), (2.0, 30.43, 38.86), (4.0, 10.0, 38.0), (7.0, 36.0, 38.86)]
)
def test_p_no_purchase_matches_importance_sampling(x, tx, T):
    """Integrate over the prior of (λ, p) by Monte Carlo, weighting draws by the likelihood of
    the history split into its 'alive at T' and 'dropped out after t_x' branches."""
    fit = our_bgnbd()
    r, alpha, a, b = fit.params
    rng = np.random.default_rng(int(100 * x + tx))
    n = 1_000_000
    lam = rng.gamma(r, 1.0 / alpha, n)
    p = rng.beta(a, b, n)
    with np.errstate(divide="ignore"):
        log_alive = x * np.log(lam) - lam * T + x * np.log1p(-p)
        log_dead = np.log(p) + (x - 1) * np.log1p(-p) + x * np.log(lam) - lam * tx
    shift = max(log_alive.max(), log_dead.max())
    w_alive, w_dead = np.exp(log_alive - shift), np.exp(log_dead - shift)
    w = w_alive + w_dead
    t = 13.0
    f = (w_dead + w_alive * np.exp(-lam * t)) / w  # P(no purchase | λ, p, history)
    mu = float((w * f).sum() / w.sum())
    se = float(np.sqrt((w**2 * (f - mu) ** 2).sum()) / w.sum())
    assert se < 0.01  # enough effective samples for the test to mean something
    assert abs(clv.p_no_purchase(fit, t, x, tx, T) - mu) < 4 * se + 1e-4
    alive_mc = float(w_alive.sum() / w.sum())
    assert clv.p_alive(fit, x, tx, T) == pytest.approx(alive_mc, abs=4 * se + 1e-4)


def _simulate_events(n: int, params: tuple[float, float, float, float], T: np.ndarray, horizon: float, rng):
    """Event-by-event BG/NBD simulation, independent of clv.simulate_bgnbd.

    Returns x and t_x over (0, T], purchases in (T, T + horizon] and whether alive at T.
    """
    r, alpha, a, b = params
    lam = np.maximum(rng.gamma(r, 1.0 / alpha, n), 1e-300)
    p = rng.beta(a, b, n)
    x = np.zeros(n, dtype=np.int64)
    tx = np.zeros(n)
    window = np.zeros(n, dtype=np.int64)
    alive_at_T = np.ones(n, dtype=bool)
    now = np.zeros(n)
    idx = np.arange(n)
    while idx.size:
        when = now[idx] + rng.exponential(1.0 / lam[idx])
        keep = when <= T[idx] + horizon
        idx, when = idx[keep], when[keep]
        before = when <= T[idx]
        x[idx[before]] += 1
        tx[idx[before]] = when[before]
        window[idx[~before]] += 1
        now[idx] = when
        drop = rng.random(idx.size) < p[idx]
        alive_at_T[idx[drop & before]] = False
        idx = idx[~drop]
    return x, tx, window, alive_at_T


def test_predictions_match_forward_simulation_by_frequency_cohort():
    """Law of total probability: within each frequency cohort, the average predicted
    P(no purchase in the next t), P(alive) and E[purchases] must equal the simulated rates."""
    fit = our_bgnbd()
    rng = np.random.default_rng(7)
    n = 150_000
    T = rng.uniform(27.0, 39.0, n)
    t = 13.0
    x, tx, window, alive = _simulate_events(n, fit.params, T, t, rng)
    p_none = clv.p_no_purchase(fit, t, x, tx, T)
    pa = clv.p_alive(fit, x, tx, T)
    ex = clv.expected_purchases(fit, t, x, tx, T)
    for lo, hi in [(0, 0), (1, 1), (2, 3), (4, 10**9)]:
        c = (x >= lo) & (x <= hi)
        m = int(c.sum())
        assert m > 2000
        none_obs = (window[c] == 0).astype(float)
        z = (none_obs - p_none[c]).mean() / (none_obs.std() / math.sqrt(m))
        assert abs(z) < 4, (lo, hi, z)
        if lo > 0:  # x = 0 customers are alive with certainty
            a_obs = alive[c].astype(float)
            z = (a_obs - pa[c]).mean() / (a_obs.std() / math.sqrt(m))
            assert abs(z) < 4, (lo, hi, z)
        z = (window[c] - ex[c]).mean() / (window[c].std() / math.sqrt(m))
        assert abs(z) < 4, (lo, hi, z)


def test_expected_time_to_next_purchase():
    fit = our_bgnbd()
    r, alpha, _, _ = fit.params
    x, tx, T = 5.0, 30.0, 38.86
    mean = clv.expected_time_to_next_purchase(fit, x, tx, T)
    assert mean == pytest.approx((alpha + T) / (r + x - 1.0), rel=1e-12)
    # E[W | alive] = ∫ P(W > w | alive) dw, with the conditional survival recovered from
    # p_no_purchase = (1 − P(alive)) + P(alive)·S(w).
    pa = clv.p_alive(fit, x, tx, T)

    def survival(w: float) -> float:
        return (clv.p_no_purchase(fit, w, x, tx, T) - (1.0 - pa)) / pa

    integral, _ = integrate.quad(survival, 0.0, np.inf, limit=200)
    assert mean == pytest.approx(integral, rel=1e-4)
    # r + x <= 1 (every x = 0 customer here): median fallback, or inf on request.
    median = clv.expected_time_to_next_purchase(fit, 0.0, 0.0, T)
    assert survival_at(fit, median, T) == pytest.approx(0.5, abs=1e-9)
    assert clv.expected_time_to_next_purchase(fit, 0.0, 0.0, T, fallback="inf") == math.inf
    vec = clv.expected_time_to_next_purchase(fit, np.array([0.0, 5.0]), np.array([0.0, 30.0]), T)
    np.testing.assert_allclose(vec, [median, mean])


def survival_at(fit: clv.BgNbdFit, w: float, T: float) -> float:
    return clv.p_no_purchase(fit, w, 0.0, 0.0, T)  # x = 0: alive for sure, so this is S(w)


def test_expected_purchases_is_continuous_through_a_equal_one():
    params = (0.3, 5.0, 1.0, 2.5)
    at_one = clv.expected_purchases(params, 26.0, 3.0, 20.0, 30.0)
    below = clv.expected_purchases((0.3, 5.0, 1.0 - 1e-3, 2.5), 26.0, 3.0, 20.0, 30.0)
    above = clv.expected_purchases((0.3, 5.0, 1.0 + 1e-3, 2.5), 26.0, 3.0, 20.0, 30.0)
    assert math.isfinite(at_one)
    assert min(below, above) - 1e-6 <= at_one <= max(below, above) + 1e-6
    assert at_one == pytest.approx(0.5 * (below + above), rel=1e-5)
    uncond = clv.unconditional_expected_purchases(params, 26.0)
    ub = clv.unconditional_expected_purchases((0.3, 5.0, 1.0 - 1e-3, 2.5), 26.0)
    ua = clv.unconditional_expected_purchases((0.3, 5.0, 1.0 + 1e-3, 2.5), 26.0)
    assert uncond == pytest.approx(0.5 * (ub + ua), rel=1e-5)


# ---------------------------------------------------------------------------------------------
# Gamma-Gamma and CLV
# ---------------------------------------------------------------------------------------------


def test_gamma_gamma_matches_lifetimes():
    ours, theirs = gg_pair()
    x, _, _, m = cdnow_monetary()
    assert ours.converged
    assert ours.n == int((x > 0).sum()) == 946
    np.testing.assert_allclose(np.array(ours.params), theirs.params_[["p", "q", "v"]].to_numpy(), rtol=1e-3)
    # Published (Fader, Hardie & Lee 2005, "RFM and CLV"): p = 6.25, q = 3.74, v = 15.44.
    assert (round(ours.p, 2), round(ours.q, 2), round(ours.v, 1)) == (6.25, 3.74, 15.4)
    # lifetimes' objective is the unscaled mean negative log-likelihood.
    assert ours.log_likelihood == pytest.approx(-theirs._negative_log_likelihood_ * ours.n, rel=1e-9)
    np.testing.assert_allclose(
        clv.conditional_expected_average_profit(ours, x, m),
        theirs.conditional_expected_average_profit(x, m),
        rtol=1e-3,
    )
    assert clv.conditional_expected_average_profit(ours, 0, 0.0) == pytest.approx(ours.population_mean_spend)


def test_gamma_gamma_gradient_matches_finite_differences():
    x, _, _, m = cdnow_monetary()
    rep = x > 0
    obj = clv._GammaGammaObjective(x[rep], m[rep], np.ones(int(rep.sum())), 20.0, 0.002)
    theta = np.log(np.array([3.0, 2.5, 0.6]))
    _, grad = obj(theta)
    h = 1e-6
    numeric = np.array([(obj(theta + e)[0] - obj(theta - e)[0]) / (2 * h) for e in np.eye(3) * h])
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


def test_gamma_gamma_ignores_non_repeaters_and_validates():
    x, _, _, m = cdnow_monetary()
    ours, _ = gg_pair()
    again = clv.fit_gamma_gamma(x[x > 0], m[x > 0])
    np.testing.assert_allclose(np.array(again.params), np.array(ours.params), rtol=1e-6)
    with pytest.raises(ValueError, match="positive"):
        clv.fit_gamma_gamma([1.0, 2.0], [10.0, 0.0])
    with pytest.raises(ValueError, match="no repeat"):
        clv.fit_gamma_gamma([0.0, 0.0], [0.0, 0.0])
    with pytest.raises(ValueError, match="q <= 1"):
        clv.conditional_expected_average_profit((2.0, 0.9, 10.0), 1.0, 5.0)


def test_customer_lifetime_value_matches_lifetimes():
    x, tx, T, m = cdnow_monetary()
    ours_gg, theirs_gg = gg_pair()
    bg = lifetimes_bgnbd()
    for months, rate in [(12, 0.01), (3, 0.05)]:
        expected = theirs_gg.customer_lifetime_value(
            bg, pd.Series(x), pd.Series(tx), pd.Series(T), pd.Series(m), time=months, discount_rate=rate, freq="W"
        ).to_numpy()
        got = clv.customer_lifetime_value(
            our_bgnbd(), ours_gg, x, tx, T, m, time_months=months, discount_rate=rate, freq_unit_days=7.0
        )
        np.testing.assert_allclose(got, expected, rtol=1e-3)


def test_customer_lifetime_value_identities():
    fit, (gg, _) = our_bgnbd(), gg_pair()
    x, tx, T, m = cdnow_monetary()
    spend = clv.conditional_expected_average_profit(gg, x, m)
    # Without discounting the cash flows telescope to spend × E[purchases over the horizon].
    undiscounted = clv.customer_lifetime_value(fit, gg, x, tx, T, m, time_months=6, discount_rate=0.0, freq_unit_days=7)
    np.testing.assert_allclose(undiscounted, spend * clv.expected_purchases(fit, 6 * 4.345, x, tx, T), rtol=1e-10)
    discounted = clv.customer_lifetime_value(fit, gg, x, tx, T, m, time_months=6, discount_rate=0.02, freq_unit_days=7)
    assert (discounted < undiscounted).all()
    assert clv.customer_lifetime_value(fit, gg, 2, 30.43, 38.86, 22.35, time_months=0) == 0.0
    assert clv.periods_per_month(1.0) == 30.0
    assert clv.periods_per_month(7.0) == 4.345
    assert clv.periods_per_month(14.0) == pytest.approx(30.0 / 14.0)
    # The override replaces the unit-derived factor.
    one = clv.customer_lifetime_value(fit, gg, 2, 30.43, 38.86, 22.35, periods_per_month_override=30.0 / 7.0)
    other = clv.customer_lifetime_value(fit, gg, 2, 30.43, 38.86, 22.35, freq_unit_days=7.0)
    assert isinstance(one, float) and one < other


# ---------------------------------------------------------------------------------------------
# RFM summaries
# ---------------------------------------------------------------------------------------------


def _lifetimes_summary(df: pd.DataFrame, as_of: str | None, multiplier: float) -> pd.DataFrame:
    return summary_data_from_transaction_data(
        df,
        "customer_id",
        "date",
        monetary_value_col="dollar_value",
        observation_period_end=as_of,
        freq="D",
        freq_multiplier=multiplier,
    )


def _assert_summary_equal(ours: clv.RfmSummary, ref: pd.DataFrame) -> None:
    assert len(ours) == len(ref)
    ref = ref.loc[ours.customer]
    np.testing.assert_array_equal(ours.frequency, ref["frequency"].to_numpy())
    np.testing.assert_array_equal(ours.recency, ref["recency"].to_numpy())
    np.testing.assert_array_equal(ours.T, ref["T"].to_numpy())
    np.testing.assert_allclose(ours.monetary_value, ref["monetary_value"].to_numpy(), rtol=1e-12, atol=0)


@pytest.mark.parametrize(("as_of", "unit_days"), [(None, 1.0), ("1997-09-30", 7.0), ("1997-02-15", 1.0)])
def test_summarize_matches_lifetimes_on_cdnow_master(as_of, unit_days):
    df = cdnow_master()
    ref = _lifetimes_summary(df, as_of, unit_days)
    ours = clv.summarize(
        df["customer_id"].to_numpy(),
        df["date"].to_numpy(),
        df["dollar_value"].to_numpy(),
        as_of=None if as_of is None else date.fromisoformat(as_of),
        unit_days=unit_days,
    )
    _assert_summary_equal(ours, ref)
    # Same-day orders are merged: CDNOW has many (e.g. customer 2 bought twice on 1997-01-12).
    assert (ours.frequency < df.groupby("customer_id").size().loc[ours.customer].to_numpy() - 1).any()


def test_summarize_string_ids_intraday_times_and_cutoff():
    rows = [
        ("bob", datetime(2024, 1, 3, 9, 0), 10.0),
        ("amy", datetime(2024, 1, 1, 23, 59), 5.0),
        ("bob", datetime(2024, 1, 3, 18, 30), 2.5),  # same day as bob's first: one occasion
        ("amy", datetime(2024, 1, 10, 0, 0), 7.0),
        ("bob", datetime(2024, 2, 1, 12, 0), 4.0),
        ("amy", datetime(2024, 1, 10, 8, 0), 1.0),
        ("bob", datetime(2024, 3, 5, 1, 0), 100.0),  # after as_of
        ("cat", datetime(2024, 3, 1, 0, 0), 9.0),  # first purchase after as_of: left out
        ("amy", datetime(2024, 1, 20, 10, 0), 3.0),
    ]
    df = pd.DataFrame(rows, columns=["customer_id", "date", "dollar_value"])
    as_of = datetime(2024, 2, 20, 17, 45)
    ref = summary_data_from_transaction_data(
        df, "customer_id", "date", monetary_value_col="dollar_value", observation_period_end=as_of, freq="D"
    )
    ours = clv.summarize(
        df["customer_id"].to_numpy(), df["date"].to_numpy(), df["dollar_value"].to_numpy(), as_of=as_of
    )
    assert list(ours.customer) == ["amy", "bob"]
    _assert_summary_equal(ours, ref)
    # amy: occasions 01-01, 01-10 (7 + 1), 01-20 → x = 2, m = (8 + 3) / 2
    assert ours.frequency.tolist() == [2.0, 1.0]
    assert ours.monetary_value.tolist() == [5.5, 4.0]
    assert ours.recency.tolist() == [19.0, 29.0]
    assert ours.T.tolist() == [50.0, 48.0]


def test_summarize_customer_matches_array_version():
    df = cdnow_master()
    df = df[df["customer_id"] <= 600]
    as_of = date(1997, 6, 30)
    many = clv.summarize(
        df["customer_id"].to_numpy(), df["date"].to_numpy(), df["dollar_value"].to_numpy(), as_of=as_of, unit_days=7.0
    )
    by_customer = {
        cid: [(d.date(), v) for d, v in zip(g["date"], g["dollar_value"], strict=True)]
        for cid, g in df.groupby("customer_id")
    }
    for i, cid in enumerate(many.customer):
        one = clv.summarize_customer(reversed(by_customer[cid]), as_of, unit_days=7.0)
        assert one is not None
        assert one.frequency == many.frequency[i]
        assert one.recency == many.recency[i]
        assert many.T[i] == one.T
        assert one.monetary_value == pytest.approx(many.monetary_value[i], rel=1e-12)
        assert clv.day_number(one.first_purchase) == many.first_day[i]
    assert clv.summarize_customer([(date(1997, 7, 1), 3.0)], as_of) is None
    assert clv.summarize_customer([], as_of) is None


def test_summarize_accepts_integer_day_numbers_and_empty_logs():
    cust = np.array([5, 5, 5, 9])
    days = np.array([100, 100, 130, 120])
    out = clv.summarize(cust, days, np.array([1.0, 2.0, 4.0, 8.0]), as_of=140)
    assert out.customer.tolist() == [5, 9]
    assert out.frequency.tolist() == [1.0, 0.0]
    assert out.recency.tolist() == [30.0, 0.0]
    assert out.T.tolist() == [40.0, 20.0]
    assert out.monetary_value.tolist() == [4.0, 0.0]
    empty = clv.summarize(cust, days, as_of=50)
    assert len(empty) == 0
    assert clv.day_number(date(1970, 1, 1) + timedelta(days=100)) == 100
    assert clv.day_number(np.datetime64("1970-01-01T23:59")) == 0
    assert clv.day_number(datetime(1969, 12, 31, 23, 0)) == -1


# ---------------------------------------------------------------------------------------------
# Churn bands
# ---------------------------------------------------------------------------------------------


def test_churn_band_thresholds():
    assert clv.churn_band(0.0) == "low"
    assert clv.churn_band(0.3299) == "low"
    assert clv.churn_band(0.33) == "medium"
    assert clv.churn_band(0.5) == "medium"
    assert clv.churn_band(0.66) == "medium"
    assert clv.churn_band(0.6601) == "high"
    assert clv.churn_band(1.0) == "high"
    assert clv.churn_band(0.5, low=0.6, high=0.8) == "low"
    with pytest.raises(ValueError):
        clv.churn_band(float("nan"))
    with pytest.raises(ValueError):
        clv.churn_band(1.2)
    with pytest.raises(ValueError):
        clv.churn_band(0.5, low=0.7, high=0.6)
