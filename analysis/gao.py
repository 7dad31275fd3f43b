"""Gao, Schulman & Hilton's functional forms for gold score against distance, fitted by least squares.

With d = √KL(π‖π₀) and R the gold score gained over π₀ (R(0) = 0 by definition), Gao et al.
(2022, arXiv 2210.10760) find

    best-of-n   R(d) = d(α − β·d)
    RL          R(d) = d(α − β·log d)

and, for RL iterated k times with a fresh reward model each time, R(d) = d(α − β·log d + β·log k),
which is k copies of the RL form at distance d/k: k·(d/k)(α − β·log(d/k)). Each form is
R = α·d − β·g(d), linear in (α, β) for a known d (and k), so one `numpy.linalg.lstsq` of R on
the columns (d, −g(d)) fits it: no intercept, since every form is 0 at d = 0.

Per run: α, β, R² (1 − SS_res/SS_tot with SS_tot about the mean of R, so a curve worse than a
flat line scores below 0), RMSE (√(SS_res/points)), the peak d* of the fitted curve and whether
the data themselves peak. Over runs (seeds): the mean α and β with Student-t intervals
(`analysis.stats.seed_summary`): a per-run α̂ is linear in the run's gold scores, and the
t-interval's coverage is exact at every number of runs for normal per-run estimates
(tests/test_stats.py checks it by simulation; tests/test_gao.py does for these fits).
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import xarray as xr

from analysis.stats import Summary, seed_summary


@dataclass(frozen=True)
class Form:
    """R(d) = α·d − β·g(d). turnover(α, β): the curve's maximiser over d ≥ 0 when β > 0."""

    name: str
    equation: str
    g: Callable[[np.ndarray], np.ndarray]
    turnover: Callable[[float, float], float]
    log: bool  # g involves log d, so every d must be > 0

    def curve(self, d, alpha: float, beta: float) -> np.ndarray:
        """The fitted gold score at distances d."""
        d = np.asarray(d, dtype=float)
        return alpha * d - beta * self.g(d)

    def peak(self, alpha: float, beta: float) -> float:
        """d* = argmax over d ≥ 0 of the curve: α/(2β) (best-of-n), k·exp(α/β − 1) (RL), for β > 0.

        Without a turnover (β ≤ 0) the curve grows without bound (inf) unless β = 0 and α ≤ 0,
        where it never rises (0).
        """
        if beta <= 0:
            return np.inf if beta < 0 or alpha > 0 else 0.0
        return float(self.turnover(alpha, beta))


# α/(2β) < 0 (α < 0 < β): the curve falls from d = 0, so its maximum over d ≥ 0 is at 0
BEST_OF_N = Form("best-of-n", "R = d(α − β·d)", lambda d: d * d, lambda a, b: max(a / (2 * b), 0.0), log=False)


def rl_form(k: float = 1.0) -> Form:
    """Gao's RL form iterated k times (k = 1: plain RL): R = d(α − β·log d + β·log k), d* = k·exp(α/β − 1)."""
    if not (np.isfinite(k) and k > 0):
        raise ValueError(f"the number of iterations k must be a positive number, got {k}")
    return Form(
        "RL" if k == 1 else f"iterated RL (k={k:g})",
        "R = d(α − β·log d + β·log k)",
        lambda d: d * (np.log(d) - np.log(k)),
        lambda a, b: k * np.exp(a / b - 1),
        log=True,
    )


RL = rl_form()


# A fall in R smaller than this part of max |R| is rounding: a curve that has flattened out (best-of-n
# past n ≈ 1/π₀(top), where d stops moving) does not peak.
ROUNDING = 1e-9


@dataclass(frozen=True)
class Fit:
    """One run's least-squares fit of a form, and what the data do.

    fall: max R − R at the largest d (0 when R is largest there); data_peak: fall exceeds rounding
    (ROUNDING·max |R|), so the gold score turns over within the data.
    """

    alpha: float
    beta: float
    r_squared: float
    rmse: float
    peak_d: float
    fall: float
    data_peak: bool
    n_points: int


def fit(d, gold_gain, form: Form) -> Fit:
    """Fit `form` to one run's curve: d (√KL, ≥ 0; > 0 for the log forms) and R = gold − gold(π₀).

    Raises ValueError for bad input, before fitting: shapes that differ, non-finite values, d < 0
    (or d ≤ 0 for a log form), fewer points than the two parameters, or d that cannot tell α from β.
    """
    d = np.asarray(d, dtype=float)
    r = np.asarray(gold_gain, dtype=float)
    if d.ndim != 1 or d.shape != r.shape:
        raise ValueError(f"d and the gold gain must be 1-D of one length, got shapes {d.shape} and {r.shape}")
    if not (np.all(np.isfinite(d)) and np.all(np.isfinite(r))):
        raise ValueError(f"{form.name} fit: d and the gold gain must be finite")
    if form.log and np.any(d <= 0):
        raise ValueError(f"{form.name} fit: d must be > 0 for a form with log d, got min d = {d.min():g}")
    if np.any(d < 0):
        raise ValueError(f"{form.name} fit: d = √KL must be ≥ 0, got min d = {d.min():g}")
    if d.size < 2:
        raise ValueError(f"{form.name} fit: 2 parameters (α, β) need at least 2 points, got {d.size}")
    design = np.stack([d, -form.g(d)], axis=1)
    (alpha, beta), _, rank, _ = np.linalg.lstsq(design, r, rcond=None)
    if rank < 2:
        raise ValueError(f"{form.name} fit: these d cannot separate α from β (the design has rank {rank})")
    residual = r - design @ np.array([alpha, beta])
    total = np.sum((r - r.mean()) ** 2)
    ss_res = float(residual @ residual)
    fall = float(r.max() - r[np.argsort(d, kind="stable")[-1]])
    return Fit(
        alpha=float(alpha),
        beta=float(beta),
        r_squared=1.0 - ss_res / total if total > 0 else np.nan,
        rmse=float(np.sqrt(ss_res / d.size)),
        peak_d=float(form.peak(alpha, beta)),
        fall=fall,
        data_peak=fall > ROUNDING * np.abs(r).max(),
        n_points=int(d.size),
    )


@dataclass(frozen=True)
class RunsFit:
    """A form fitted per run, and over runs: mean α and β with 95% Student-t intervals over runs.

    peak_d: d* of the curve with the mean α and β; runs_peaking: the runs whose data peak.
    """

    form: Form
    runs: tuple[Fit, ...]
    alpha: Summary
    beta: Summary
    peak_d: float
    runs_peaking: int


def fit_runs(d, gold_gain, form: Form, confidence: float = 0.95) -> RunsFit:
    """Fit each run (row) of d and gold_gain, (runs, points), then summarise over runs.

    Every run must be fittable (`fit` raises, naming the run, otherwise); leave out a diverged run
    before calling.
    """
    d = np.asarray(d, dtype=float)
    r = np.asarray(gold_gain, dtype=float)
    if d.ndim != 2 or d.shape != r.shape:
        raise ValueError(f"d and the gold gain must be (runs, points) of one shape, got {d.shape} and {r.shape}")
    runs = []
    for i, (run_d, run_r) in enumerate(zip(d, r, strict=True)):
        try:
            runs.append(fit(run_d, run_r, form))
        except ValueError as error:
            raise ValueError(f"run {i}: {error}") from None
    alpha = seed_summary([run.alpha for run in runs], confidence)
    beta = seed_summary([run.beta for run in runs], confidence)
    return RunsFit(
        form=form,
        runs=tuple(runs),
        alpha=alpha,
        beta=beta,
        peak_d=float(form.peak(alpha.mean, beta.mean)),
        runs_peaking=sum(run.data_peak for run in runs),
    )


def fit_best_of_n(curves: xr.Dataset, form: Form = BEST_OF_N, confidence: float = 0.95) -> RunsFit:
    """Fit `form` to the best-of-n curves of `analysis.best_of_n.best_of_n_curves`, one run per seed.

    R = gold − initial_gold against d, at the n with d > 0 (n = 1 is π₀ itself, where every
    form is 0 by definition). Seeds with NaN curves (diverged runs) are left out. Past n ≈ 1/π₀(top
    block) the exact KL saturates, so those n pile up at one d and weigh on the fit as repeats:
    pass `curves.sel(n=slice(None, n_max))` to fit the range before that.
    """
    kept = curves.isel(seed=np.flatnonzero(np.isfinite(curves["d"]).all("n").values))
    if kept.sizes["seed"] == 0:
        raise ValueError("no seed has a finite best-of-n curve")
    moved = (kept["d"] > 0).all("seed").values
    kept = kept.isel(n=np.flatnonzero(moved))
    gain = kept["gold"] - kept["initial_gold"]
    return fit_runs(kept["d"].values, gain.transpose("seed", "n").values, form, confidence)
