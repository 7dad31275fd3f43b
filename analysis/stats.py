"""Seed-level statistics: one run per seed is the unit, so every interval is over seeds.

Intervals are Student-t intervals of the mean, paired differences t-intervals of the
per-seed differences. Their 95% coverage is exact for normal data at every n ≥ 2 and is
checked by simulation (tests/test_stats.py: 95% ± 2% at n = 3, 5, 10, 100). A bootstrap is
not used: it only knows the spread its few seeds show, so at the seed counts this lab runs it
is far too narrow (a BCa bootstrap covers 50% at 2 seeds and 83% at 5).
"""

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import special


@dataclass(frozen=True)
class Summary:
    """Mean, sample std (ddof=1) and Student-t CI of the mean of the finite values; n counts them."""

    mean: float
    std: float
    ci_low: float
    ci_high: float
    n: int


def t_quantile(confidence: float, df):
    """Two-sided Student-t critical value (scipy.special.stdtrit: t.ppf without its per-call overhead),
    shared by every interval in analysis so that all of them use the same quantile."""
    return special.stdtrit(df, 0.5 + confidence / 2)


def t_band(values, axis: int = 0, confidence: float = 0.95) -> tuple:
    """Nan-aware mean and Student-t interval along `axis` (seeds); NaN where fewer than 2 values.

    Vectorised: per-iteration bands for figures.
    """
    values = np.asarray(values, dtype=float)
    values = np.where(np.isfinite(values), values, np.nan)
    n = np.sum(np.isfinite(values), axis=axis)
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(values, axis=axis)
        sem = np.nanstd(values, axis=axis, ddof=1) / np.sqrt(n)
        half = t_quantile(confidence, n - 1) * sem
    return mean, mean - half, mean + half


def seed_summary(values, confidence: float = 0.95) -> Summary:
    """Summarise a 1-D array over seeds; NaN/inf entries (left-out runs) are dropped first."""
    values = np.asarray(values, dtype=float).ravel()
    values = values[np.isfinite(values)]
    n = values.size
    if n < 2:
        return Summary(float(values[0]) if n else np.nan, np.nan, np.nan, np.nan, n)
    mean, std = float(values.mean()), float(values.std(ddof=1))
    half = float(t_quantile(confidence, n - 1)) * std / np.sqrt(n)
    return Summary(mean, std, mean - half, mean + half, n)


def finite_pairs(x, y) -> tuple[np.ndarray, np.ndarray]:
    """The seeds where both paired values are finite, as two float arrays: a left-out run removes its pair."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def paired_difference(condition_values, baseline_values, confidence: float = 0.95) -> Summary:
    """Condition − baseline per seed (same seed = same pretrained judge and world), summarised.

    Seeds where either side is NaN are dropped, so a diverged run removes its pair.
    """
    difference = np.asarray(condition_values, dtype=float) - np.asarray(baseline_values, dtype=float)
    return seed_summary(difference, confidence)


def sd_ratio(x, y, confidence: float = 0.95) -> tuple:
    """sd(x)/sd(y) over paired seeds with the Pitman–Morgan interval; (NaN, NaN, NaN) below 3 pairs.

    For pairs, var(x) = θ·var(y) exactly when x + √θ·y and x − √θ·y are uncorrelated, so the
    t-test of that correlation (n − 2 degrees of freedom, exact for bivariate normal data)
    inverts into a closed-form interval for θ: F·(1 + K ± √(K(K + 2))) with F = s_x²/s_y²,
    K = 2·t²·(1 − r²)/(n − 2) and r the correlation of x and y.
    """
    x, y = finite_pairs(x, y)
    n = x.size
    if n < 3:
        return np.nan, np.nan, np.nan
    sx, sy = x.std(ddof=1), y.std(ddof=1)
    if sx == 0 or sy == 0:
        point = 1.0 if sx == sy else np.inf if sy == 0 else 0.0
        return point, np.nan, np.nan
    r = float(np.clip(np.corrcoef(x, y)[0, 1], -1, 1))
    f = (sx / sy) ** 2
    t = t_quantile(confidence, n - 2)
    k = 2 * t**2 * (1 - r**2) / (n - 2)
    spread = np.sqrt(k * (k + 2))
    return float(sx / sy), float(np.sqrt(f * (1 + k - spread))), float(np.sqrt(f * (1 + k + spread)))


def welch_difference(x, y, confidence: float = 0.95) -> Summary:
    """mean(x) − mean(y) of two independent samples (finite values) with Welch's t-interval
    (Welch–Satterthwaite degrees of freedom): for runs that share nothing seed by seed, such as runs
    in different worlds. `std` is the difference's standard error; `n` counts both samples' values.
    NaN bounds below 2 values on either side."""
    x, y = (np.asarray(v, dtype=float).ravel() for v in (x, y))
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    if x.size < 2 or y.size < 2:
        mean = x.mean() - y.mean() if x.size and y.size else np.nan
        return Summary(float(mean), np.nan, np.nan, np.nan, x.size + y.size)
    vx, vy = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    se = np.sqrt(vx + vy)
    mean = float(x.mean() - y.mean())
    if se == 0:
        return Summary(mean, 0.0, mean, mean, x.size + y.size)
    df = (vx + vy) ** 2 / (vx**2 / (x.size - 1) + vy**2 / (y.size - 1))
    half = float(t_quantile(confidence, df)) * se
    return Summary(mean, float(se), mean - half, mean + half, x.size + y.size)
