"""RFM quintiles, per-customer predictions and the population fit, against clv and lifetimes' data."""

from datetime import UTC, date, datetime
from decimal import Decimal
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from services.scoring import clv
from services.scoring.population import NotEnoughData, PopulationRules, fit_population, occasions_log
from services.scoring.predictions import ModelParams, PredictionRules, band_of, customer_rfm, predict
from services.scoring.purchases import Occasion, OrderLine, local_day, occasions
from services.scoring.rfm import RfmCuts, population_cuts, rfm_scores
from shared.contracts import ChurnBand

PUBLISHED = (0.243, 4.414, 0.793, 2.426)  # Fader, Hardie & Lee (2005), CDNOW, weeks
RULES = PredictionRules(
    churn_horizon_days=90, churn_low=0.33, churn_high=0.66, clv_horizon_months=12, clv_discount_rate_monthly=0.01
)
PARAMS = ModelParams(bgnbd=PUBLISHED, gamma_gamma=(6.25, 3.74, 15.44), unit_days=7.0)
CALIBRATION_END = datetime(1997, 9, 30, tzinfo=UTC)


def cdnow_sample() -> pd.DataFrame:
    # lifetimes' data files, found without importing lifetimes (its import warns under pandas 3)
    path = Path(find_spec("lifetimes").origin).parent / "datasets" / "CDNOW_sample.txt"
    frame = pd.read_csv(path, sep=r"\s+", header=None, names=["customer", "id", "date", "cds", "amount"])
    frame["day"] = pd.to_datetime(frame["date"].astype(str)).dt.date.map(lambda d: (d - date(1970, 1, 1)).days)
    return frame


def test_rfm_scores_by_quintile_with_ties_sharing_the_lower_score():
    cuts = population_cuts(recency_days=[0, 10, 20, 30, 40, 50], frequency=[1, 1, 1, 1, 2, 5], monetary=range(6))
    assert cuts.frequency == (1.0, 1.0, 1.0, 2.0)
    assert rfm_scores(0, 1, 0, cuts) == (5, 1, 1)
    assert rfm_scores(50, 5, 5, cuts) == (1, 5, 5)
    assert rfm_scores(25, 2, 2.5, cuts)[1] == 4
    assert RfmCuts.from_json(cuts.as_json()) == cuts


def test_occasions_group_orders_per_local_day():
    shanghai = __import__("zoneinfo").ZoneInfo("Asia/Shanghai")
    orders = [
        OrderLine("a", datetime(2026, 1, 1, 15, 0, tzinfo=UTC), Decimal("10"), Decimal("2")),
        OrderLine("b", datetime(2026, 1, 1, 17, 0, tzinfo=UTC), Decimal("5")),  # 01:00 on the 2nd in Shanghai
        OrderLine("c", datetime(2026, 1, 1, 8, 0, tzinfo=UTC), Decimal("1"), Decimal("9")),  # refunded past zero
    ]
    in_utc = occasions(orders, UTC)
    assert [(o.day, o.net, o.orders) for o in in_utc] == [(local_day(orders[0].occurred_at, UTC), Decimal("13"), 3)]
    in_shanghai = occasions(orders, shanghai)
    assert [o.orders for o in in_shanghai] == [2, 1]


def test_margin_basis_uses_the_margin_where_given_and_shrinks_it_with_refunds():
    order = OrderLine("a", datetime(2026, 1, 1, tzinfo=UTC), Decimal("100"), Decimal("50"), Decimal("40"))
    assert order.value("margin") == Decimal("20")
    assert order.value("revenue") == Decimal("50")
    assert OrderLine("b", order.occurred_at, Decimal("100")).value("margin") == Decimal("100")


def test_customer_rfm_matches_clv_summarize():
    frame = cdnow_sample()
    as_of = local_day(CALIBRATION_END, UTC)
    summary = clv.summarize(
        frame["id"].to_numpy(), frame["day"].to_numpy(), frame["amount"].to_numpy(), as_of=as_of, unit_days=7.0
    )
    for index in (0, 1, 5, 100, 2000):
        customer = summary.customer[index]
        rows = frame[frame["id"] == customer]
        by_day: dict[int, Decimal] = {}
        for day, amount in zip(rows["day"], rows["amount"], strict=True):
            by_day[day] = by_day.get(day, Decimal(0)) + Decimal(str(amount))
        history = [Occasion(day, net, net, 1) for day, net in sorted(by_day.items())]
        rfm = customer_rfm(history, as_of, 7.0)
        assert rfm is not None
        assert rfm.frequency == summary.frequency[index]
        assert rfm.recency == pytest.approx(summary.recency[index])
        assert pytest.approx(summary.T[index]) == rfm.T
        assert rfm.monetary_value == pytest.approx(summary.monetary_value[index])


def test_predictions_equal_the_clv_module():
    history = [
        Occasion(day, Decimal(amount), Decimal(amount), 1) for day, amount in ((0, "20"), (30, "35"), (80, "40"))
    ]
    rfm = customer_rfm(history, 120, 7.0)
    assert rfm is not None
    found = predict(rfm, 120, PARAMS, RULES)
    x, tx, age, m = rfm.frequency, rfm.recency, rfm.T, rfm.monetary_value
    assert found.p_alive == pytest.approx(clv.p_alive(PUBLISHED, x, tx, age))
    assert found.p_no_purchase == pytest.approx(clv.p_no_purchase(PUBLISHED, 90 / 7, x, tx, age))
    assert found.expected_purchases_90d == pytest.approx(clv.expected_purchases(PUBLISHED, 90 / 7, x, tx, age))
    assert found.expected_purchases_365d == pytest.approx(clv.expected_purchases(PUBLISHED, 365 / 7, x, tx, age))
    expected_clv = clv.customer_lifetime_value(
        PUBLISHED, PARAMS.gamma_gamma, x, tx, age, m, time_months=12, discount_rate=0.01, freq_unit_days=7.0
    )
    assert float(found.clv_365) == pytest.approx(expected_clv, abs=0.006)
    assert found.next_order_in_days == pytest.approx(clv.expected_time_to_next_purchase(PUBLISHED, x, tx, age) * 7)
    assert found.churn_band is band_of(found.p_no_purchase, RULES)


def test_churn_bands_use_the_configured_bounds():
    assert [band_of(p, RULES) for p in (0.0, 0.3299, 0.33, 0.66, 0.6601, 1.0)] == [
        ChurnBand.LOW,
        ChurnBand.LOW,
        ChurnBand.MEDIUM,
        ChurnBand.MEDIUM,
        ChurnBand.HIGH,
        ChurnBand.HIGH,
    ]


def test_band_change_day_is_the_first_day_silence_moves_the_band():
    history = [Occasion(day, Decimal(10), Decimal(10), 1) for day in (0, 7, 14, 21)]
    rfm = customer_rfm(history, 21, 7.0)
    assert rfm is not None
    now = predict(rfm, 21, PARAMS, RULES)
    assert now.band_change_day is not None
    before = customer_rfm(history, now.band_change_day - 1, 7.0)
    after = customer_rfm(history, now.band_change_day, 7.0)
    assert before is not None and after is not None
    assert predict(before, now.band_change_day - 1, PARAMS, RULES).churn_band is now.churn_band
    assert predict(after, now.band_change_day, PARAMS, RULES).churn_band is not now.churn_band


def population_log(frame: pd.DataFrame):
    return occasions_log(
        frame["id"].to_numpy(np.int64),
        frame["day"].to_numpy(np.int64),
        frame["amount"].to_numpy(np.float64),
        frame["amount"].to_numpy(np.float64),
    )


POPULATION = PopulationRules(
    a_share=0.8,
    b_share=0.95,
    window_days=365,
    margin_quantiles=(0.5, 0.8),
    unit_days=7.0,
    penalizer=0.0,
    min_customers=20,
)


def test_population_fit_on_cdnow_gives_the_published_parameters():
    frame = cdnow_sample()
    model = fit_population(
        population_log(frame),
        as_of=CALIBRATION_END,
        as_of_day=local_day(CALIBRATION_END, UTC),
        rules=POPULATION,
        fitted_at=CALIBRATION_END,
        trigger="test",
    )
    bg = model.bgnbd
    assert [round(v, 3) for v in (bg.r, bg.alpha, bg.a, bg.b)] == list(PUBLISHED)
    assert model.n_customers == 2357 and bg.log_likelihood == pytest.approx(-9582.43, abs=0.01)
    assert model.gamma_gamma is not None and model.gamma_gamma.q > 1
    assert model.tier_thresholds is not None and model.tier_thresholds.a > model.tier_thresholds.b > 0
    assert model.typical_gap_days is not None and model.typical_gap_days > 0
    assert (
        type(model).from_row(
            model_id=1,
            fitted_at=model.fitted_at,
            as_of=model.as_of,
            trigger=model.trigger,
            time_unit_days=7.0,
            n_customers=model.n_customers,
            n_repeaters=model.n_repeaters,
            statistics=model.statistics_json(),
        )
        == model
    )


def test_population_fit_needs_enough_customers_and_a_repeat_purchase():
    frame = cdnow_sample()
    once = frame.drop_duplicates("id").head(50)
    with pytest.raises(NotEnoughData, match="one repeat purchase"):
        fit_population(
            population_log(once),
            as_of=CALIBRATION_END,
            as_of_day=local_day(CALIBRATION_END, UTC),
            rules=POPULATION,
            fitted_at=CALIBRATION_END,
            trigger="test",
        )
    with pytest.raises(NotEnoughData, match="at least 20"):
        fit_population(
            population_log(frame.head(10)),
            as_of=CALIBRATION_END,
            as_of_day=local_day(CALIBRATION_END, UTC),
            rules=POPULATION,
            fitted_at=CALIBRATION_END,
            trigger="test",
        )


def test_typical_gap_is_the_median_of_each_repeaters_median_gap():
    log = occasions_log(np.array([0, 0, 0, 1, 1, 2]), np.array([0, 10, 30, 0, 4, 0]), np.ones(6), np.ones(6))
    # customer 0: gaps 10, 20 → 15; customer 1: gap 4; customer 2: none → median(15, 4) = 9.5
    many = PopulationRules(**{**POPULATION.__dict__, "min_customers": 2})
    model = fit_population(
        log, as_of=CALIBRATION_END, as_of_day=40, rules=many, fitted_at=CALIBRATION_END, trigger="test"
    )
    assert model.typical_gap_days == 9.5
