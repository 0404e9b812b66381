"""Predictive customer-lifetime-value maths: RFM summaries, BG/NBD, Gamma-Gamma and CLV.

Pure functions over numpy arrays (numpy + scipy only, no I/O).  The models and their
parameterisations follow the literature and the ``lifetimes`` package so that results can be
checked against both:

* BG/NBD — Fader, Hardie & Lee (2005), "Counting Your Customers the Easy Way: An Alternative to
  the Pareto/NBD Model", Marketing Science 24(2).  Transactions of an alive customer follow a
  Poisson process with rate λ ~ Gamma(r, α) (shape r, *rate* α); after every repeat purchase the
  customer drops out with probability p ~ Beta(a, b).
* Gamma-Gamma — Fader, Hardie & Lee (2005), "RFM and CLV: Using Iso-Value Curves for Customer
  Base Analysis", and Hardie's note 025: the spend of a transaction is z ~ Gamma(p, ν) with
  ν ~ Gamma(q, v) across customers.

Inputs of the models are the usual RFM summary per customer, all in one *time unit* (days by
default; weeks for the CDNOW reference data):

* ``frequency`` (x): number of *repeat* purchase occasions (days with at least one order, minus
  the first one);
* ``recency`` (t_x): time from the first to the last purchase occasion;
* ``T``: time from the first purchase occasion to the end of the observation (``as_of``);
* ``monetary_value``: mean amount of the repeat occasions (0 when x = 0).

Prediction functions are vectorised and broadcast their customer arguments; when every argument
is a scalar (or a 0-d array) they return a plain ``float``.  Model arguments accept either a
fitted result (:class:`BgNbdFit`, :class:`GammaGammaFit`) or a bare parameter tuple
(``(r, alpha, a, b)`` / ``(p, q, v)``), so stored parameters can be used without refitting.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import optimize, special

__all__ = [
    "BgNbdFit",
    "BgNbdParams",
    "ChurnBand",
    "CustomerRfm",
    "GammaGammaFit",
    "GammaGammaParams",
    "RfmSummary",
    "bgnbd_log_likelihood",
    "churn_band",
    "conditional_expected_average_profit",
    "customer_lifetime_value",
    "day_number",
    "expected_purchases",
    "expected_time_to_next_purchase",
    "fit_bgnbd",
    "fit_gamma_gamma",
    "gamma_gamma_log_likelihood",
    "p_alive",
    "p_no_purchase",
    "periods_per_month",
    "simulate_bgnbd",
    "summarize",
    "summarize_customer",
    "unconditional_expected_purchases",
]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BgNbdParams = tuple[float, float, float, float]
"""``(r, alpha, a, b)``."""
GammaGammaParams = tuple[float, float, float]
"""``(p, q, v)``."""
ChurnBand = Literal["low", "medium", "high"]
DayLike = date | np.datetime64 | int

_EPOCH = date(1970, 1, 1)
# Bounds on the log-parameters during optimisation: keeps exp() finite while leaving the
# practically relevant range (1e-13 .. 1e13) untouched.
_LOG_BOUND = 30.0
# Below this distance from a = 1 the closed forms (a+b+x-1)/(a-1)·[…] are 0/0; see
# ``_bgnbd_cond_expected``.
_A_ONE_EPS = 1e-6


# --------------------------------------------------------------------------------------------
# RFM summaries
# --------------------------------------------------------------------------------------------


def day_number(value: DayLike) -> int:
    """Calendar day of ``value`` as days since 1970-01-01.

    ``datetime`` values use their own wall-clock date (an aware datetime is *not* converted to
    UTC first — convert it to the business time zone before calling).  ``np.datetime64`` values
    are floored to the day; integers are returned unchanged (they are taken to be day numbers).
    """
    if isinstance(value, datetime):
        return (value.date() - _EPOCH).days
    if isinstance(value, date):
        return (value - _EPOCH).days
    if isinstance(value, np.datetime64):
        if np.isnat(value):
            raise ValueError("as_of/day is NaT")
        return int(value.astype("datetime64[D]").astype(np.int64))
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        return int(value)
    raise TypeError(f"cannot interpret {value!r} as a calendar day")


def _day_numbers(day: ArrayLike) -> IntArray:
    arr = np.asarray(day)
    if arr.dtype.kind == "M":
        if np.isnat(arr).any():
            raise ValueError("day contains NaT")
        return arr.astype("datetime64[D]").astype(np.int64)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise ValueError("day contains non-finite values")
        floored: IntArray = np.floor(arr).astype(np.int64)
        return floored
    if arr.dtype.kind == "O":
        flat = [day_number(v) for v in arr.ravel()]
        return np.asarray(flat, dtype=np.int64).reshape(arr.shape)
    raise TypeError(f"unsupported dtype for day: {arr.dtype}")


@dataclass(frozen=True, slots=True)
class RfmSummary:
    """RFM summary of many customers (one entry per customer with a purchase on/before as_of).

    ``customer`` holds the customer identifiers in ascending order; all other arrays are aligned
    with it.  Times are in units of ``unit_days`` days.
    """

    customer: NDArray[Any]
    frequency: FloatArray
    recency: FloatArray
    T: FloatArray
    monetary_value: FloatArray
    first_day: IntArray
    """Day number (days since 1970-01-01 for calendar input) of the first purchase occasion."""
    last_day: IntArray
    as_of_day: int
    unit_days: float

    def __len__(self) -> int:
        return int(self.customer.shape[0])


def summarize(
    customer: ArrayLike,
    day: ArrayLike,
    amount: ArrayLike | None = None,
    *,
    as_of: DayLike | None = None,
    unit_days: float = 1.0,
) -> RfmSummary:
    """Summarise a transaction log into per-customer (frequency, recency, T, monetary_value).

    Same definition as ``lifetimes.utils.summary_data_from_transaction_data(..., freq="D",
    freq_multiplier=unit_days)``: orders are grouped into purchase *occasions* per calendar day
    (amounts of one day are summed), transactions after ``as_of`` are ignored, customers whose
    first purchase is after ``as_of`` are left out, frequency = occasions − 1, recency = last −
    first occasion, T = as_of − first occasion, monetary_value = mean amount of the repeat
    occasions (0 when frequency is 0).

    Args:
        customer: one customer identifier per transaction.  Integer codes are fastest; any other
            sortable dtype (e.g. strings) is factorised with ``np.unique`` first.
        day: transaction day per transaction — integer day numbers (any origin, but days since
            1970-01-01 if ``as_of`` is given as a date), floats (floored) or ``datetime64``
            values (floored to the day).
        amount: transaction amounts; when omitted monetary_value is all zeros.
        as_of: end of the observation period (inclusive), as a day number, date, datetime or
            ``np.datetime64``.  Defaults to the last transaction day.
        unit_days: length of the time unit in days (1.0 for days, 7.0 for weeks).
    """
    if not (math.isfinite(unit_days) and unit_days > 0):
        raise ValueError("unit_days must be a positive finite number")
    cust = np.asarray(customer)
    days = _day_numbers(day)
    if cust.ndim != 1 or days.ndim != 1 or cust.shape != days.shape:
        raise ValueError("customer and day must be 1-D arrays of the same length")
    amt: FloatArray | None = None
    if amount is not None:
        amt = np.asarray(amount, dtype=np.float64)
        if amt.shape != days.shape:
            raise ValueError("amount must have the same length as day")

    labels: NDArray[Any] | None = None
    if cust.dtype.kind in "iu":
        codes = cust.astype(np.int64)
    else:
        labels, inverse = np.unique(cust, return_inverse=True)
        codes = inverse.astype(np.int64).reshape(-1)

    if as_of is None:
        if days.size == 0:
            raise ValueError("as_of is required for an empty transaction log")
        as_of_day = int(days.max())
    else:
        as_of_day = day_number(as_of)

    keep = days <= as_of_day
    if not keep.all():
        codes, days = codes[keep], days[keep]
        amt = None if amt is None else amt[keep]
    n = int(days.size)
    if n == 0:
        empty_f = np.zeros(0, dtype=np.float64)
        empty_i = np.zeros(0, dtype=np.int64)
        return RfmSummary(
            customer=cust[:0],
            frequency=empty_f,
            recency=empty_f.copy(),
            T=empty_f.copy(),
            monetary_value=empty_f.copy(),
            first_day=empty_i,
            last_day=empty_i.copy(),
            as_of_day=as_of_day,
            unit_days=float(unit_days),
        )

    # Sort by (customer, day).  One int64 key + argsort beats lexsort when it cannot overflow.
    cmin, cmax = int(codes.min()), int(codes.max())
    dmin, dmax = int(days.min()), int(days.max())
    span = dmax - dmin + 1
    if (cmax - cmin + 1) * span < 2**62:
        key = (codes - cmin) * span + (days - dmin)
        order = np.argsort(key, kind="stable")
    else:
        order = np.lexsort((days, codes))
    cs = codes[order]
    ds = days[order]

    new_occasion = np.empty(n, dtype=bool)
    new_occasion[0] = True
    np.logical_or(cs[1:] != cs[:-1], ds[1:] != ds[:-1], out=new_occasion[1:])
    occ_start = np.flatnonzero(new_occasion)
    occ_cust = cs[occ_start]
    occ_day = ds[occ_start]
    n_occ = int(occ_start.size)

    new_customer = np.empty(n_occ, dtype=bool)
    new_customer[0] = True
    np.not_equal(occ_cust[1:], occ_cust[:-1], out=new_customer[1:])
    cust_start = np.flatnonzero(new_customer)
    cust_end = np.append(cust_start[1:], n_occ)  # exclusive
    occasions = cust_end - cust_start

    first_day = occ_day[cust_start]
    last_day = occ_day[cust_end - 1]
    frequency = (occasions - 1).astype(np.float64)
    recency = (last_day - first_day).astype(np.float64) / unit_days
    age = (as_of_day - first_day).astype(np.float64) / unit_days

    if amt is None:
        monetary = np.zeros(cust_start.size, dtype=np.float64)
    else:
        occ_amount = np.add.reduceat(amt[order], occ_start)
        occ_amount[cust_start] = 0.0  # first occasions do not count
        repeat_sum = np.add.reduceat(occ_amount, cust_start)
        monetary = np.where(frequency > 0, repeat_sum / np.maximum(frequency, 1.0), 0.0)

    ids = occ_cust[cust_start]
    customer_out: NDArray[Any] = ids if labels is None else labels[ids]
    return RfmSummary(
        customer=customer_out,
        frequency=frequency,
        recency=recency,
        T=age,
        monetary_value=monetary.astype(np.float64),
        first_day=first_day,
        last_day=last_day,
        as_of_day=as_of_day,
        unit_days=float(unit_days),
    )


@dataclass(frozen=True, slots=True)
class CustomerRfm:
    """RFM summary of one customer; times in units of ``unit_days`` days."""

    frequency: int
    recency: float
    T: float
    monetary_value: float
    first_purchase: date
    last_purchase: date


def _as_date(value: date) -> date:
    return value.date() if isinstance(value, datetime) else value


def summarize_customer(
    purchases: Iterable[tuple[date, float]],
    as_of: date,
    *,
    unit_days: float = 1.0,
) -> CustomerRfm | None:
    """RFM summary of one customer from ``(date or datetime, amount)`` pairs (any order).

    Same definition as :func:`summarize` (datetimes count on their wall-clock date, purchases
    after ``as_of`` are ignored).  Returns ``None`` when there is no purchase on or before
    ``as_of``.
    """
    if not (math.isfinite(unit_days) and unit_days > 0):
        raise ValueError("unit_days must be a positive finite number")
    end = _as_date(as_of)
    by_day: dict[date, float] = {}
    for when, amount in purchases:
        d = _as_date(when)
        if d <= end:
            by_day[d] = by_day.get(d, 0.0) + float(amount)
    if not by_day:
        return None
    occasions = sorted(by_day)
    first, last = occasions[0], occasions[-1]
    frequency = len(occasions) - 1
    monetary = 0.0
    if frequency > 0:
        total = 0.0
        for d in occasions[1:]:
            total += by_day[d]
        monetary = total / frequency
    return CustomerRfm(
        frequency=frequency,
        recency=(last - first).days / unit_days,
        T=(end - first).days / unit_days,
        monetary_value=monetary,
        first_purchase=first,
        last_purchase=last,
    )


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------


def _out(value: FloatArray) -> Any:
    """0-d results become ``float``; everything else stays an array."""
    if value.ndim == 0:
        return float(value)
    return value


def _vec(value: ArrayLike, name: str) -> FloatArray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains non-finite values")
    return arr


def _weights(weights: ArrayLike | None, n: int) -> FloatArray:
    if weights is None:
        return np.ones(n, dtype=np.float64)
    w = _vec(weights, "weights")
    if w.shape[0] != n:
        raise ValueError("weights must have one entry per customer")
    if (w < 0).any() or not w.sum() > 0:
        raise ValueError("weights must be non-negative with a positive sum")
    return w


def _projected_gradient_norm(res: optimize.OptimizeResult) -> float:
    grad = np.asarray(res.jac, dtype=np.float64)
    at_lower = (res.x <= -_LOG_BOUND + 1e-9) & (grad > 0)
    at_upper = (res.x >= _LOG_BOUND - 1e-9) & (grad < 0)
    return float(np.max(np.abs(np.where(at_lower | at_upper, 0.0, grad))))


def _minimize(
    objective: Callable[[FloatArray], tuple[float, FloatArray]],
    starts: list[FloatArray],
) -> tuple[optimize.OptimizeResult, bool]:
    """Minimise over log-parameters boxed to ±_LOG_BOUND; later starts only if needed.

    BFGS first: since SciPy 1.15 the L-BFGS-B driver calls LAPACK (dpotrf/dtrtrs) every
    iteration, and with a multi-threaded OpenBLAS on a busy machine each call can take tens of
    milliseconds (scipy/scipy#22438, #23191) — more than a whole objective evaluation on CDNOW.
    BFGS keeps its 4×4 algebra in numpy.  The box is enforced by clipping (zero gradient
    outside it); if BFGS does not converge — typically because the optimum is on the box —
    L-BFGS-B with explicit bounds takes over from where BFGS stopped.  A run counts as
    converged when the (projected) gradient of the mean objective is below 1e-6.
    """

    def boxed(theta: FloatArray) -> tuple[float, FloatArray]:
        inside = np.abs(theta) <= _LOG_BOUND
        value, grad = objective(np.clip(theta, -_LOG_BOUND, _LOG_BOUND))
        return value, np.where(inside, grad, 0.0)

    best: optimize.OptimizeResult | None = None
    best_ok = False
    for x0 in starts:
        res = optimize.minimize(boxed, x0, jac=True, method="BFGS", options={"gtol": 1e-8, "maxiter": 5000})
        res.x = np.clip(res.x, -_LOG_BOUND, _LOG_BOUND)
        ok = _projected_gradient_norm(res) < 1e-6
        if not ok:
            nit = int(res.nit)
            res = optimize.minimize(
                objective,
                res.x,
                jac=True,
                method="L-BFGS-B",
                bounds=[(-_LOG_BOUND, _LOG_BOUND)] * x0.size,
                options={"maxiter": 5000, "ftol": 1e-13, "gtol": 1e-8, "maxcor": 20},
            )
            res.nit = nit + int(res.nit)
            ok = bool(res.success) or _projected_gradient_norm(res) < 1e-6
        if best is None or (ok and not best_ok) or (ok == best_ok and res.fun < best.fun):
            best, best_ok = res, ok
        if best_ok:
            break
    assert best is not None
    return best, best_ok


# --------------------------------------------------------------------------------------------
# BG/NBD
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BgNbdFit:
    """Maximum-likelihood BG/NBD parameters.

    λ ~ Gamma(shape r, rate alpha) in the time unit of the data, dropout p ~ Beta(a, b).
    ``log_likelihood`` is the total (weighted) log-likelihood at the optimum, without the
    penalty term.
    """

    r: float
    alpha: float
    a: float
    b: float
    log_likelihood: float
    n_customers: int
    """Number of customers (sum of the weights when weighted)."""
    converged: bool
    penalizer: float = 0.0
    n_iterations: int = 0
    message: str = ""

    @property
    def params(self) -> BgNbdParams:
        return (self.r, self.alpha, self.a, self.b)

    @property
    def mean_log_likelihood(self) -> float:
        return self.log_likelihood / self.n_customers if self.n_customers else math.nan


BgNbdModel = BgNbdFit | BgNbdParams


def _bg(model: BgNbdModel) -> BgNbdParams:
    if isinstance(model, BgNbdFit):
        return model.params
    r, alpha, a, b = (float(v) for v in model)
    return (r, alpha, a, b)


def _check_rfm(frequency: FloatArray, recency: FloatArray, age: FloatArray) -> None:
    if not (frequency.shape == recency.shape == age.shape):
        raise ValueError("frequency, recency and T must have the same length")
    if frequency.size == 0:
        raise ValueError("no customers")
    if (frequency < 0).any() or (frequency != np.round(frequency)).any():
        raise ValueError("frequency must hold non-negative integers")
    if (recency < 0).any():
        raise ValueError("recency must be non-negative")
    if (recency > age).any():
        raise ValueError("recency must not exceed T")
    if (recency[frequency == 0] != 0).any():
        raise ValueError("recency must be 0 when frequency is 0")


def bgnbd_log_likelihood(model: BgNbdModel, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> FloatArray:
    """Per-customer BG/NBD log-likelihood ln L(r, α, a, b | x, t_x, T) (FHL 2005, eq. 6)."""
    r, alpha, a, b = _bg(model)
    x, tx, age = np.broadcast_arrays(
        np.asarray(frequency, dtype=np.float64),
        np.asarray(recency, dtype=np.float64),
        np.asarray(T, dtype=np.float64),
    )
    a1 = special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha)
    a2 = special.gammaln(a + b) + special.gammaln(b + x) - special.gammaln(b) - special.gammaln(a + b + x)
    a3 = -(r + x) * np.log(alpha + age)
    d = np.log(a) - np.log(b + np.maximum(x, 1.0) - 1.0) - (r + x) * np.log(alpha + tx) - a3
    ll = a1 + a2 + a3 + np.where(x > 0, np.logaddexp(0.0, d), 0.0)
    return np.asarray(ll, dtype=np.float64)


class _BgNbdObjective:
    """Mean negative log-likelihood (+ penalty) and its analytic gradient in log-parameters.

    Time is scaled so that max(T) = 1 (as lifetimes does); per-x terms (gammaln/digamma of
    r + x, b + x, a + b + x) are evaluated once per distinct x and weighted by counts.
    """

    def __init__(
        self,
        frequency: FloatArray,
        recency: FloatArray,
        age: FloatArray,
        weights: FloatArray,
        scale: float,
        penalizer: float,
    ) -> None:
        self.penalizer = penalizer
        self.w_total = float(weights.sum())
        ux, inverse = np.unique(frequency, return_inverse=True)
        self.ux = ux
        self.nu = np.bincount(inverse.reshape(-1), weights=weights, minlength=ux.size)
        zero = frequency == 0
        self.T0 = age[zero] * scale
        self.w0 = weights[zero]
        rep = ~zero
        self.x1 = frequency[rep]
        self.t1 = recency[rep] * scale
        self.T1 = age[rep] * scale
        self.w1 = weights[rep]
        # For repeaters: index into ux to gather per-x quantities.
        self.inv1 = inverse.reshape(-1)[rep]

    def __call__(self, theta: FloatArray) -> tuple[float, FloatArray]:
        r, al, a, b = np.exp(theta)
        ux, nu, w_total = self.ux, self.nu, self.w_total

        # Terms depending on x only.
        ll = float(
            nu @ (special.gammaln(r + ux) - special.gammaln(r))
            + w_total * r * math.log(al)
            + nu @ (special.gammaln(a + b) + special.gammaln(b + ux) - special.gammaln(b) - special.gammaln(a + b + ux))
        )
        g_r = float(nu @ (special.digamma(r + ux) - special.digamma(r))) + w_total * math.log(al)
        g_al = w_total * r / al
        psi_ab = special.digamma(a + b)
        psi_abx = special.digamma(a + b + ux)
        g_a = float(nu @ (psi_ab - psi_abx))
        g_b = float(nu @ (psi_ab + special.digamma(b + ux) - special.digamma(b) - psi_abx))

        # Customers without repeat purchases: only exp(-λT) survives.
        if self.T0.size:
            l_t0 = np.log(al + self.T0)
            ll -= r * float(self.w0 @ l_t0)
            g_r -= float(self.w0 @ l_t0)
            g_al -= r * float(self.w0 @ (1.0 / (al + self.T0)))

        # Repeaters: mixture of "alive at T" and "dropped out right after t_x".
        if self.x1.size:
            rx = r + self.x1
            l_big = np.log(al + self.T1)
            l_small = np.log(al + self.t1)
            log_bx1 = np.log(b + self.ux - 1.0, where=self.ux > 0, out=np.zeros_like(self.ux))
            d = (math.log(a) - log_bx1[self.inv1]) + rx * (l_big - l_small)
            w1 = self.w1
            ll += float(w1 @ (np.logaddexp(0.0, d) - rx * l_big))
            pi = special.expit(d)  # posterior weight of the dropped-out branch
            g_r -= float(w1 @ (l_big + pi * (l_small - l_big)))
            g_al -= float(w1 @ (rx * ((1.0 - pi) / (al + self.T1) + pi / (al + self.t1))))
            g_a += float(w1 @ pi) / a
            g_b -= float(w1 @ (pi / (b + self.x1 - 1.0)))

        params = np.array([r, al, a, b])
        grad_nat = np.array([g_r, g_al, g_a, g_b])
        value = -ll / w_total + self.penalizer * float(params @ params)
        grad = -grad_nat * params / w_total + 2.0 * self.penalizer * params * params
        return value, grad

    def log_likelihood(self, theta: FloatArray) -> float:
        """Total log-likelihood on the *scaled* time axis."""
        value, _ = self(theta)
        r, al, a, b = np.exp(theta)
        pen = self.penalizer * (r * r + al * al + a * a + b * b)
        return float(-(value - pen) * self.w_total)


def fit_bgnbd(
    frequency: ArrayLike,
    recency: ArrayLike,
    T: ArrayLike,
    penalizer: float = 0.0,
    *,
    weights: ArrayLike | None = None,
) -> BgNbdFit:
    """Fit the BG/NBD model by maximum likelihood.

    Minimises the mean negative log-likelihood plus ``penalizer · (r² + α'² + a² + b²)`` with a
    quasi-Newton method (BFGS, L-BFGS-B fallback; see ``_minimize``) on log-parameters and an
    analytic gradient, where α' is α on a time axis scaled so that max(T) = 1 — the same
    objective as ``lifetimes.BetaGeoFitter(penalizer_coef=…)``, so penalised fits agree with
    lifetimes too.  ``weights`` (optional) counts identical customers.

    Customers with x = 0 are fine (they only contribute exp(-λT)); a data set where *nobody*
    repurchased does not identify a and b, which then stay near their starting values.
    """
    if not (math.isfinite(penalizer) and penalizer >= 0):
        raise ValueError("penalizer must be a non-negative finite number")
    x = _vec(frequency, "frequency")
    tx = _vec(recency, "recency")
    age = _vec(T, "T")
    _check_rfm(x, tx, age)
    w = _weights(weights, x.shape[0])
    t_max = float(age.max())
    if t_max <= 0:
        raise ValueError("at least one customer needs T > 0")
    scale = 1.0 / t_max
    objective = _BgNbdObjective(x, tx, age, w, scale, penalizer)

    # Start: r = 1 and α matching the crude purchase rate Σx / ΣT; a = b = 1 (E[p] = 1/2).
    w_total = float(w.sum())
    mean_x = float(w @ x) / w_total
    mean_t = float(w @ age) * scale / w_total
    alpha0 = max(mean_t, 1e-3) / max(mean_x, 1e-3)
    starts = [
        np.log(np.array([1.0, alpha0, 1.0, 1.0])),
        np.full(4, 0.1),  # lifetimes' default start
        np.log(np.array([0.5, 10.0 * alpha0, 0.5, 5.0])),
    ]
    res, ok = _minimize(objective, starts)
    r, al, a, b = (float(v) for v in np.exp(res.x))
    # Back on the data's time axis: α scales with time, the likelihood gains a Jacobian term
    # of -x·ln(scale) per customer (density of t_x and the exponential waiting times).
    ll = float(objective.log_likelihood(res.x) + float(w @ x) * math.log(scale))
    return BgNbdFit(
        r=r,
        alpha=al / scale,
        a=a,
        b=b,
        log_likelihood=ll,
        n_customers=round(w_total),
        converged=ok,
        penalizer=float(penalizer),
        n_iterations=int(res.nit),
        message=str(res.message),
    )


def _bgnbd_log_p_alive_odds(params: BgNbdParams, x: FloatArray, tx: FloatArray, age: FloatArray) -> FloatArray:
    """ln of P(dead)/P(alive) for repeaters (meaningless where x = 0)."""
    r, alpha, a, b = params
    return np.asarray(
        np.log(a / (b + np.maximum(x, 1.0) - 1.0)) + (r + x) * np.log1p((age - tx) / (alpha + tx)),
        dtype=np.float64,
    )


def _p_alive(params: BgNbdParams, x: FloatArray, tx: FloatArray, age: FloatArray) -> FloatArray:
    d = _bgnbd_log_p_alive_odds(params, x, tx, age)
    return np.asarray(np.where(x > 0, special.expit(-d), 1.0), dtype=np.float64)


def _rfm3(frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:
    x, tx, age = np.broadcast_arrays(
        np.asarray(frequency, dtype=np.float64),
        np.asarray(recency, dtype=np.float64),
        np.asarray(T, dtype=np.float64),
    )
    return x, tx, age


@overload
def p_alive(model: BgNbdModel, frequency: float, recency: float, T: float) -> float: ...
@overload
def p_alive(model: BgNbdModel, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> FloatArray: ...
def p_alive(model: BgNbdModel, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> Any:
    """P(customer still alive at T | x, t_x, T) (Fader, Hardie & Lee, note 021).

    1 for x = 0 (in BG/NBD a customer can only drop out right after a repeat purchase).
    """
    x, tx, age = _rfm3(frequency, recency, T)
    return _out(_p_alive(_bg(model), x, tx, age))


def _bgnbd_cond_expected(
    params: BgNbdParams, t: FloatArray, x: FloatArray, tx: FloatArray, age: FloatArray
) -> FloatArray:
    r, alpha, a, b = params
    if abs(a - 1.0) < _A_ONE_EPS:
        # (a+b+x-1)/(a-1)·[1 - …] is 0/0 at a = 1; the function is smooth in a, so the mean of
        # the two neighbours a = 1 ± 2ε is accurate to O(ε²) (plus ~1e-10 cancellation error).
        lo = _bgnbd_cond_expected((r, alpha, 1.0 - 2.0 * _A_ONE_EPS, b), t, x, tx, age)
        hi = _bgnbd_cond_expected((r, alpha, 1.0 + 2.0 * _A_ONE_EPS, b), t, x, tx, age)
        return np.asarray(0.5 * (lo + hi), dtype=np.float64)
    # FHL (2005) eq. (10), evaluated as in lifetimes (with the Euler-transformed 2F1 when the
    # direct series overflows).
    big_a = r + x
    big_b = b + x
    big_c = a + b + x - 1.0
    z = t / (alpha + age + t)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ln_hyp = np.log(special.hyp2f1(big_a, big_b, big_c, z))
        ln_hyp_alt = np.log(special.hyp2f1(big_c - big_a, big_c - big_b, big_c, z)) + (
            big_c - big_a - big_b
        ) * np.log1p(-z)
    ln_hyp = np.where(np.isinf(ln_hyp), ln_hyp_alt, ln_hyp)
    first = (a + b + x - 1.0) / (a - 1.0)
    second = -np.expm1(ln_hyp - (r + x) * np.log1p(t / (alpha + age)))
    return np.asarray(first * second * _p_alive(params, x, tx, age), dtype=np.float64)


@overload
def expected_purchases(model: BgNbdModel, t: float, frequency: float, recency: float, T: float) -> float: ...
@overload
def expected_purchases(
    model: BgNbdModel, t: ArrayLike, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
) -> FloatArray: ...
def expected_purchases(model: BgNbdModel, t: ArrayLike, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> Any:
    """E[number of purchases in (T, T+t] | x, t_x, T] (FHL 2005 eq. 10).

    Same quantity as lifetimes' ``conditional_expected_number_of_purchases_up_to_time``.
    """
    tt, x, tx, age = np.broadcast_arrays(
        np.asarray(t, dtype=np.float64),
        np.asarray(frequency, dtype=np.float64),
        np.asarray(recency, dtype=np.float64),
        np.asarray(T, dtype=np.float64),
    )
    if (tt < 0).any():
        raise ValueError("t must be non-negative")
    return _out(_bgnbd_cond_expected(_bg(model), tt, x, tx, age))


def _bgnbd_uncond_expected(params: BgNbdParams, t: FloatArray) -> FloatArray:
    r, alpha, a, b = params
    if abs(a - 1.0) < _A_ONE_EPS:
        lo = _bgnbd_uncond_expected((r, alpha, 1.0 - 2.0 * _A_ONE_EPS, b), t)
        hi = _bgnbd_uncond_expected((r, alpha, 1.0 + 2.0 * _A_ONE_EPS, b), t)
        return np.asarray(0.5 * (lo + hi), dtype=np.float64)
    hyp = special.hyp2f1(r, b, a + b - 1.0, t / (alpha + t))
    value = (a + b - 1.0) / (a - 1.0) * (1.0 - hyp * (alpha / (alpha + t)) ** r)
    return np.asarray(value, dtype=np.float64)


@overload
def unconditional_expected_purchases(model: BgNbdModel, t: float) -> float: ...
@overload
def unconditional_expected_purchases(model: BgNbdModel, t: ArrayLike) -> FloatArray: ...
def unconditional_expected_purchases(model: BgNbdModel, t: ArrayLike) -> Any:
    """E[X(t)]: expected repeat purchases in (0, t] of a new customer (FHL 2005 eq. 9)."""
    tt = np.asarray(t, dtype=np.float64)
    if (tt < 0).any():
        raise ValueError("t must be non-negative")
    return _out(_bgnbd_uncond_expected(_bg(model), tt))


@overload
def p_no_purchase(model: BgNbdModel, t: float, frequency: float, recency: float, T: float) -> float: ...
@overload
def p_no_purchase(
    model: BgNbdModel, t: ArrayLike, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
) -> FloatArray: ...
def p_no_purchase(model: BgNbdModel, t: ArrayLike, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> Any:
    """P(no purchase in (T, T+t] | x, t_x, T) — the churn probability over the next t.

    Derivation: the customer is either dead at T (probability 1 − P(alive), no purchase ever
    again) or alive; in BG/NBD an alive customer stays alive until the next purchase, so the
    next purchase arrives after an Exp(λ) wait, and conditional on the history and on being
    alive λ ~ Gamma(r + x, α + T).  Hence
    P = (1 − P(alive)) + P(alive) · E[e^{−λt}] = (1 − P(alive)) + P(alive) · ((α+T)/(α+T+t))^(r+x).
    Equals 1 at t = 0 and tends to 1 − P(alive) as t → ∞.
    """
    params = _bg(model)
    r, alpha, _, _ = params
    tt, x, tx, age = np.broadcast_arrays(
        np.asarray(t, dtype=np.float64),
        np.asarray(frequency, dtype=np.float64),
        np.asarray(recency, dtype=np.float64),
        np.asarray(T, dtype=np.float64),
    )
    if (tt < 0).any():
        raise ValueError("t must be non-negative")
    alive = _p_alive(params, x, tx, age)
    survive = np.exp(-(r + x) * np.log1p(tt / (alpha + age)))
    return _out(np.asarray((1.0 - alive) + alive * survive, dtype=np.float64))


@overload
def expected_time_to_next_purchase(
    model: BgNbdModel,
    frequency: float,
    recency: float,
    T: float,
    *,
    fallback: Literal["median", "inf"] = "median",
) -> float: ...
@overload
def expected_time_to_next_purchase(
    model: BgNbdModel,
    frequency: ArrayLike,
    recency: ArrayLike,
    T: ArrayLike,
    *,
    fallback: Literal["median", "inf"] = "median",
) -> FloatArray: ...
def expected_time_to_next_purchase(
    model: BgNbdModel,
    frequency: ArrayLike,
    recency: ArrayLike,
    T: ArrayLike,
    *,
    fallback: Literal["median", "inf"] = "median",
) -> Any:
    """Expected wait from T to the next purchase *given the customer is alive*.

    With λ | history, alive ~ Gamma(r + x, α + T) and an Exp(λ) wait, the expectation is
    E[1/λ] = (α + T) / (r + x − 1), finite only when r + x > 1.  Otherwise the mean is infinite
    and the ``fallback`` decides: ``"median"`` (default) returns the median wait
    (α + T)·(2^{1/(r+x)} − 1) — the wait W has survival ((α+T)/(α+T+w))^(r+x) — and ``"inf"``
    returns ``inf``.  Note the switch at r + x = 1 is not continuous (the mean grows without
    bound as r + x ↓ 1).  Combine with :func:`p_alive` — dead customers never come back.
    """
    if fallback not in ("median", "inf"):
        raise ValueError("fallback must be 'median' or 'inf'")
    r, alpha, _, _ = _bg(model)
    x, _, age = _rfm3(frequency, recency, T)
    shape = r + x
    scale = alpha + age
    safe = np.where(shape > 1.0, shape - 1.0, 1.0)
    mean = scale / safe
    alt = scale * np.expm1(math.log(2.0) / shape) if fallback == "median" else np.inf
    return _out(np.asarray(np.where(shape > 1.0, mean, alt), dtype=np.float64))


def simulate_bgnbd(
    n: int,
    model: BgNbdModel,
    T: ArrayLike,
    rng: np.random.Generator,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Draw (frequency, recency, T) for ``n`` customers from the BG/NBD generative process.

    Vectorised: λ ~ Gamma(r, rate α), p ~ Beta(a, b); the customer drops out right after the
    J-th repeat purchase with J ~ Geometric(p); the Poisson process has N ~ Poisson(λT) events
    in (0, T], so x = min(N, J) and, the event times being ordered uniforms, t_x is T times the
    x-th of N uniform order statistics, i.e. T·Beta(x, N − x + 1).
    """
    r, alpha, a, b = _bg(model)
    age = np.broadcast_to(np.asarray(T, dtype=np.float64), (n,)).copy()
    lam = rng.gamma(shape=r, scale=1.0 / alpha, size=n)
    p = np.clip(rng.beta(a, b, size=n), 1e-12, 1.0)
    dropout_after = rng.geometric(p)
    events = rng.poisson(lam * age)
    x = np.minimum(events, dropout_after)
    tx = np.zeros(n, dtype=np.float64)
    pos = x > 0
    xp = x[pos]
    tx[pos] = age[pos] * rng.beta(xp, events[pos] - xp + 1)
    return x.astype(np.float64), tx, age


# --------------------------------------------------------------------------------------------
# Gamma-Gamma
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GammaGammaFit:
    """Maximum-likelihood Gamma-Gamma spend-model parameters (fitted on repeaters only).

    ``log_likelihood`` is the total log-likelihood of the repeaters' mean spends, without the
    penalty; ``n`` is the number of repeaters used (sum of weights when weighted).
    """

    p: float
    q: float
    v: float
    log_likelihood: float
    n: int
    converged: bool
    penalizer: float = 0.0
    n_iterations: int = 0
    message: str = ""

    @property
    def params(self) -> GammaGammaParams:
        return (self.p, self.q, self.v)

    @property
    def population_mean_spend(self) -> float:
        """E[spend per transaction] = v·p/(q − 1); ``inf`` when q ≤ 1."""
        return self.v * self.p / (self.q - 1.0) if self.q > 1.0 else math.inf


GammaGammaModel = GammaGammaFit | GammaGammaParams


def _gg(model: GammaGammaModel) -> GammaGammaParams:
    if isinstance(model, GammaGammaFit):
        return model.params
    p, q, v = (float(val) for val in model)
    return (p, q, v)


def gamma_gamma_log_likelihood(model: GammaGammaModel, frequency: ArrayLike, monetary_value: ArrayLike) -> FloatArray:
    """Per-customer log-density of the mean spend m̄ of x ≥ 1 transactions (Hardie note 025)."""
    p, q, v = _gg(model)
    x, m = np.broadcast_arrays(np.asarray(frequency, dtype=np.float64), np.asarray(monetary_value, dtype=np.float64))
    px = p * x
    ll = (
        special.gammaln(px + q)
        - special.gammaln(px)
        - special.gammaln(q)
        + q * math.log(v)
        + (px - 1.0) * np.log(m)
        + px * np.log(x)
        - (px + q) * np.log(x * m + v)
    )
    return np.asarray(ll, dtype=np.float64)


class _GammaGammaObjective:
    """Mean negative log-likelihood (+ lifetimes' penalty) with an analytic gradient.

    Spends are divided by their mean for conditioning (v scales with the spend unit, the
    likelihood changes by a constant); per-x gamma-function terms are computed once per x.
    """

    def __init__(self, x: FloatArray, m: FloatArray, w: FloatArray, scale: float, pen: float):
        self.scale = scale
        self.pen = pen
        self.w_total = float(w.sum())
        ux, inverse = np.unique(x, return_inverse=True)
        self.ux = ux
        self.nu = np.bincount(inverse.reshape(-1), weights=w, minlength=ux.size)
        self.x = x
        self.m = m / scale
        self.w = w
        log_m = np.log(self.m)
        self.s_xlogm = float(w @ (x * log_m))
        self.s_logm = float(w @ log_m)
        self.s_xlogx = float(w @ (x * np.log(x)))

    def __call__(self, theta: FloatArray) -> tuple[float, FloatArray]:
        p, q, v = np.exp(theta)
        ux, nu, w, x, w_total = self.ux, self.nu, self.w, self.x, self.w_total
        pu = p * ux
        l_xmv = np.log(x * self.m + v)
        ll = (
            float(nu @ (special.gammaln(pu + q) - special.gammaln(pu)))
            - w_total * float(special.gammaln(q))
            + w_total * q * math.log(v)
            + p * self.s_xlogm
            - self.s_logm
            + p * self.s_xlogx
            - float(w @ ((p * x + q) * l_xmv))
        )
        psi_puq = special.digamma(pu + q)
        g_p = float(nu @ (ux * (psi_puq - special.digamma(pu)))) + self.s_xlogm + self.s_xlogx - float(w @ (x * l_xmv))
        g_q = float(nu @ psi_puq) - w_total * float(special.digamma(q)) + w_total * math.log(v) - float(w @ l_xmv)
        g_v = w_total * q / v - float(w @ ((p * x + q) / (x * self.m + v)))
        params = np.array([p, q, v])
        pen_params = np.array([p, q, v * self.scale])
        value = -ll / w_total + self.pen * float(pen_params @ pen_params)
        grad = -np.array([g_p, g_q, g_v]) * params / w_total + 2.0 * self.pen * pen_params**2
        return value, grad


def fit_gamma_gamma(
    frequency: ArrayLike,
    monetary_value: ArrayLike,
    penalizer: float = 0.0,
    *,
    weights: ArrayLike | None = None,
) -> GammaGammaFit:
    """Fit the Gamma-Gamma spend model on the repeat customers (frequency > 0).

    Customers with frequency 0 are ignored (their monetary_value carries no information);
    repeaters must have monetary_value > 0.  The objective is lifetimes' (mean negative
    log-likelihood + ``penalizer · (p² + q² + v²)``).
    """
    if not (math.isfinite(penalizer) and penalizer >= 0):
        raise ValueError("penalizer must be a non-negative finite number")
    x_all = _vec(frequency, "frequency")
    m_all = _vec(monetary_value, "monetary_value")
    if x_all.shape != m_all.shape:
        raise ValueError("frequency and monetary_value must have the same length")
    if (x_all < 0).any() or (x_all != np.round(x_all)).any():
        raise ValueError("frequency must hold non-negative integers")
    w_all = _weights(weights, x_all.shape[0])
    rep = (x_all > 0) & (w_all > 0)
    x, m, w = x_all[rep], m_all[rep], w_all[rep]
    if x.size == 0:
        raise ValueError("no repeat customers to fit the Gamma-Gamma model on")
    if (m <= 0).any():
        raise ValueError("monetary_value must be positive for repeat customers")
    scale = float(w @ m) / float(w.sum())
    objective = _GammaGammaObjective(x, m, w, scale, penalizer)
    # Start at p = 1, q = 2, v = mean spend (population mean v·p/(q−1) = observed mean).
    starts = [np.log(np.array([1.0, 2.0, 1.0])), np.full(3, 0.1) - np.array([0, 0, np.log(scale)])]
    res, ok = _minimize(objective, starts)
    p, q, v_scaled = (float(val) for val in np.exp(res.x))
    v = v_scaled * scale
    ll = float(w @ gamma_gamma_log_likelihood((p, q, v), x, m))
    return GammaGammaFit(
        p=p,
        q=q,
        v=v,
        log_likelihood=ll,
        n=round(float(w.sum())),
        converged=ok,
        penalizer=float(penalizer),
        n_iterations=int(res.nit),
        message=str(res.message),
    )


@overload
def conditional_expected_average_profit(model: GammaGammaModel, frequency: float, monetary_value: float) -> float: ...
@overload
def conditional_expected_average_profit(
    model: GammaGammaModel, frequency: ArrayLike, monetary_value: ArrayLike
) -> FloatArray: ...
def conditional_expected_average_profit(model: GammaGammaModel, frequency: ArrayLike, monetary_value: ArrayLike) -> Any:
    """E[spend per transaction | x, m̄] (Hardie note 025, eq. 5).

    A credibility-weighted mix of the population mean v·p/(q−1) and the customer's own mean
    m̄ with weight p·x/(p·x + q − 1); customers with x = 0 get the population mean.  Requires
    q > 1 (otherwise the population mean is infinite) and raises ``ValueError`` if not.
    """
    p, q, v = _gg(model)
    if q <= 1.0:
        raise ValueError("Gamma-Gamma q <= 1: the expected spend is infinite")
    x, m = np.broadcast_arrays(np.asarray(frequency, dtype=np.float64), np.asarray(monetary_value, dtype=np.float64))
    weight = p * x / (p * x + q - 1.0)
    population_mean = v * p / (q - 1.0)
    return _out(np.asarray((1.0 - weight) * population_mean + weight * m, dtype=np.float64))


# lifetimes' months-to-periods factors: {"D": 30, "W": 4.345, "H": 720, "M": 1}.  Note the
# weekly factor implies 30.4 days a month while the daily one uses 30; kept for parity.
_LIFETIMES_PERIODS_PER_MONTH = ((1.0, 30.0), (7.0, 4.345), (1.0 / 24.0, 720.0), (30.0, 1.0))


def periods_per_month(freq_unit_days: float) -> float:
    """Model time units per month, as lifetimes' CLV uses them.

    1 day → 30, 7 days → 4.345, 1 hour → 720, 30 days → 1 (lifetimes' table); any other unit
    → 30 / freq_unit_days.
    """
    if not (math.isfinite(freq_unit_days) and freq_unit_days > 0):
        raise ValueError("freq_unit_days must be a positive finite number")
    for unit, factor in _LIFETIMES_PERIODS_PER_MONTH:
        if math.isclose(freq_unit_days, unit, rel_tol=1e-9):
            return factor
    return 30.0 / freq_unit_days


@overload
def customer_lifetime_value(
    bgnbd: BgNbdModel,
    gg: GammaGammaModel,
    frequency: float,
    recency: float,
    T: float,
    monetary_value: float,
    *,
    time_months: int = 12,
    discount_rate: float = 0.01,
    freq_unit_days: float = 1.0,
    periods_per_month_override: float | None = None,
) -> float: ...
@overload
def customer_lifetime_value(
    bgnbd: BgNbdModel,
    gg: GammaGammaModel,
    frequency: ArrayLike,
    recency: ArrayLike,
    T: ArrayLike,
    monetary_value: ArrayLike,
    *,
    time_months: int = 12,
    discount_rate: float = 0.01,
    freq_unit_days: float = 1.0,
    periods_per_month_override: float | None = None,
) -> FloatArray: ...
def customer_lifetime_value(
    bgnbd: BgNbdModel,
    gg: GammaGammaModel,
    frequency: ArrayLike,
    recency: ArrayLike,
    T: ArrayLike,
    monetary_value: ArrayLike,
    *,
    time_months: int = 12,
    discount_rate: float = 0.01,
    freq_unit_days: float = 1.0,
    periods_per_month_override: float | None = None,
) -> Any:
    """Discounted expected value of the next ``time_months`` months (lifetimes' definition).

    CLV = Σ_{k=1..time_months} E[spend] · (E[X(k·f)] − E[X((k−1)·f)]) / (1 + d)^k, where
    E[X(·)] is :func:`expected_purchases` for the customer's history, E[spend] is
    :func:`conditional_expected_average_profit`, d the *monthly* discount rate and f the model
    periods per month (:func:`periods_per_month` of ``freq_unit_days`` unless overridden).
    Matches ``GammaGammaFitter.customer_lifetime_value(bgf, …, time, discount_rate, freq)``.
    """
    if time_months < 0:
        raise ValueError("time_months must be non-negative")
    if not (math.isfinite(discount_rate) and discount_rate > -1.0):
        raise ValueError("discount_rate must be > -1")
    factor = (
        periods_per_month(freq_unit_days) if periods_per_month_override is None else float(periods_per_month_override)
    )
    params = _bg(bgnbd)
    x, tx, age, m = np.broadcast_arrays(
        np.asarray(frequency, dtype=np.float64),
        np.asarray(recency, dtype=np.float64),
        np.asarray(T, dtype=np.float64),
        np.asarray(monetary_value, dtype=np.float64),
    )
    spend = np.asarray(conditional_expected_average_profit(gg, x, m), dtype=np.float64)
    clv = np.zeros(x.shape, dtype=np.float64)
    previous = np.zeros(x.shape, dtype=np.float64)
    for k in range(1, time_months + 1):
        horizon = np.full(x.shape, k * factor)
        cumulative = _bgnbd_cond_expected(params, horizon, x, tx, age)
        clv += spend * (cumulative - previous) / (1.0 + discount_rate) ** k
        previous = cumulative
    return _out(clv)


# --------------------------------------------------------------------------------------------
# Churn bands
# --------------------------------------------------------------------------------------------


def churn_band(p_no_purchase_90d: float, low: float = 0.33, high: float = 0.66) -> ChurnBand:
    """Bucket a 90-day no-purchase probability: ``low`` (< low), ``high`` (> high), else
    ``medium`` (the bounds themselves are medium)."""
    if not (0.0 <= low <= high <= 1.0):
        raise ValueError("need 0 <= low <= high <= 1")
    p = float(p_no_purchase_90d)
    if not (0.0 <= p <= 1.0):
        raise ValueError(f"probability out of range: {p_no_purchase_90d!r}")
    if p < low:
        return "low"
    if p > high:
        return "high"
    return "medium"
