"""Seed-level statistics: one run per seed is the unit, so every interval is over seeds."""

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats

N_RESAMPLES = 9999
BOOTSTRAP_SEED = 0  # fixed so tables are reproducible byte for byte


@dataclass(frozen=True)
class Summary:
    """Mean, sample std (ddof=1) and bootstrap CI of the finite values; n counts them."""

    mean: float
    std: float
    ci_low: float
    ci_high: float
    n: int


def _bootstrap_ci(values: np.ndarray, confidence: float) -> tuple:
    """BCa bootstrap CI of the mean; percentile where BCa degenerates; a point where data are constant."""
    if values.size < 2:
        return np.nan, np.nan
    mean = float(values.mean())
    if np.allclose(values, mean, rtol=1e-12, atol=1e-12):
        return mean, mean
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ci = stats.bootstrap(
                (values,),
                np.mean,
                n_resamples=N_RESAMPLES,
                confidence_level=confidence,
                method=method,
                rng=np.random.default_rng(BOOTSTRAP_SEED),
            ).confidence_interval
        if np.isfinite(ci.low) and np.isfinite(ci.high):
            return float(ci.low), float(ci.high)
    return np.nan, np.nan


def seed_summary(values, confidence: float = 0.95) -> Summary:
    """Summarise a 1-D array over seeds; NaN entries (left-out runs) are dropped first."""
    values = np.asarray(values, dtype=float).ravel()
    values = values[np.isfinite(values)]
    n = values.size
    mean = float(values.mean()) if n else np.nan
    std = float(values.std(ddof=1)) if n > 1 else np.nan
    return Summary(mean, std, *_bootstrap_ci(values, confidence), n)


def paired_difference(condition_values, baseline_values, confidence: float = 0.95) -> Summary:
    """Condition − baseline per seed (same seed = same pretrained judge and world), summarised.

    Seeds where either side is NaN are dropped, so a diverged run removes its pair.
    """
    difference = np.asarray(condition_values, dtype=float) - np.asarray(baseline_values, dtype=float)
    return seed_summary(difference, confidence)


def t_band(values, axis: int = 0, confidence: float = 0.95) -> tuple:
    """Nan-aware mean and Student-t interval along `axis` (seeds): cheap per-iteration bands for figures."""
    values = np.asarray(values, dtype=float)
    n = np.sum(np.isfinite(values), axis=axis)
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(values, axis=axis)
        sem = np.nanstd(values, axis=axis, ddof=1) / np.sqrt(n)
        half = stats.t.ppf(0.5 + confidence / 2, n - 1) * sem
    return mean, mean - half, mean + half
