"""Gao's functional forms (analysis/gao.py): recovery of known α, β from noisy synthetic curves, the
peaks, the interval's coverage over runs, and bad input."""

import numpy as np
import pytest
import xarray as xr

from analysis.gao import BEST_OF_N, RL, fit, fit_best_of_n, fit_runs, rl_form

D = np.linspace(0.2, 3.0, 15)


@pytest.mark.parametrize(("form", "alpha", "beta"), [(BEST_OF_N, 1.2, 0.3), (RL, 0.8, 0.25), (rl_form(3), 0.5, 0.2)])
def test_fits_recover_known_coefficients_from_noisy_curves(form, alpha, beta):
    rng = np.random.default_rng(0)
    curve = form.curve(D, alpha, beta)
    exact = fit(D, curve, form)
    assert exact.alpha == pytest.approx(alpha, rel=1e-12) and exact.beta == pytest.approx(beta, rel=1e-12)
    assert exact.r_squared == pytest.approx(1.0) and exact.rmse < 1e-12
    noisy = fit(D, curve + rng.normal(0, 0.02, D.size), form)
    assert noisy.alpha == pytest.approx(alpha, abs=0.05) and noisy.beta == pytest.approx(beta, abs=0.05)
    assert 0.9 < noisy.r_squared < 1 and 0.01 < noisy.rmse < 0.04
    assert noisy.n_points == D.size


def test_the_two_forms_are_told_apart():
    """A best-of-n curve fits its own form better than the RL form, and the other way round."""
    bon, rl = BEST_OF_N.curve(D, 1.0, 0.3), RL.curve(D, 1.0, 0.5)
    assert fit(D, bon, BEST_OF_N).rmse < fit(D, bon, RL).rmse / 100
    assert fit(D, rl, RL).rmse < fit(D, rl, BEST_OF_N).rmse / 100


def test_peaks():
    assert BEST_OF_N.peak(1.2, 0.3) == pytest.approx(2.0)
    assert RL.peak(0.8, 0.4) == pytest.approx(np.exp(1.0))
    assert rl_form(4).peak(0.8, 0.4) == pytest.approx(4 * np.exp(1.0))
    for form in (BEST_OF_N, RL):
        grid = np.linspace(1e-3, 10, 200_001)
        assert grid[np.argmax(form.curve(grid, 1.0, 0.35))] == pytest.approx(form.peak(1.0, 0.35), abs=1e-3)
        assert form.peak(1.0, -0.1) == np.inf and form.peak(1.0, 0.0) == np.inf and form.peak(-1.0, 0.0) == 0.0
    assert BEST_OF_N.peak(-1.0, 0.5) == 0.0  # falls from the start


def test_iterated_rl_is_k_copies_of_rl_at_a_kth_of_the_distance():
    k = 5
    np.testing.assert_allclose(rl_form(k).curve(D, 0.7, 0.2), k * RL.curve(D / k, 0.7, 0.2), rtol=1e-13)


def test_data_peak_reads_the_data_not_the_fit():
    rising = fit(D, BEST_OF_N.curve(D, 1.2, 0.1), BEST_OF_N)  # d* = 6, beyond the data
    turning = fit(D, BEST_OF_N.curve(D, 1.2, 0.4), BEST_OF_N)  # d* = 1.5, inside
    assert not rising.data_peak and rising.peak_d == pytest.approx(6.0)
    assert turning.data_peak and turning.peak_d == pytest.approx(1.5)
    shuffled = np.random.default_rng(1).permutation(D.size)  # the order of the points does not matter
    again = fit(D[shuffled], BEST_OF_N.curve(D, 1.2, 0.4)[shuffled], BEST_OF_N)
    assert again.data_peak and again.alpha == pytest.approx(turning.alpha, rel=1e-12)
    curve = BEST_OF_N.curve(D, 1.2, 0.4)
    assert again.fall == pytest.approx(turning.fall) and turning.fall == pytest.approx(curve.max() - curve[-1])


def test_a_curve_that_flattens_out_does_not_peak_but_a_small_real_fall_does():
    """Best-of-n past n ≈ 1/π₀(top): d stops moving and R with it, up to rounding."""
    d = np.concatenate([D, np.full(5, D[-1])])
    plateau = np.concatenate([np.sqrt(D), np.sqrt(D[-1]) * (1 + 1e-15 * np.arange(-2, 3))])
    flat = fit(d, plateau, BEST_OF_N)
    assert not flat.data_peak and flat.fall < 1e-14
    plateau[-1] -= 1e-3
    assert fit(d, plateau, BEST_OF_N).data_peak


def test_the_interval_over_runs_covers_the_mean_coefficient_95_percent_of_the_time():
    """Runs with their own α ~ N(1, 0.2²), β ~ N(0.3, 0.05²) plus noise: at 4 runs the t-interval of
    the mean α (β) covers 1 (0.3) in 95% ± 2% of 2000 replications."""
    rng = np.random.default_rng(2)
    replications, runs = 2000, 4
    covered = np.zeros((2, replications), bool)
    for i in range(replications):
        alpha = rng.normal(1.0, 0.2, (runs, 1))
        beta = rng.normal(0.3, 0.05, (runs, 1))
        gain = alpha * D - beta * D**2 + rng.normal(0, 0.05, (runs, D.size))
        summary = fit_runs(np.broadcast_to(D, gain.shape), gain, BEST_OF_N)
        covered[0, i] = summary.alpha.ci_low <= 1.0 <= summary.alpha.ci_high
        covered[1, i] = summary.beta.ci_low <= 0.3 <= summary.beta.ci_high
    assert np.all(np.abs(covered.mean(axis=1) - 0.95) < 0.02), covered.mean(axis=1)


def test_fit_runs_summarises_and_names_a_bad_run():
    gain = np.stack([BEST_OF_N.curve(D, a, 0.4) for a in (1.0, 1.2, 1.4)])
    summary = fit_runs(np.broadcast_to(D, gain.shape), gain, BEST_OF_N)
    assert summary.alpha.mean == pytest.approx(1.2) and summary.alpha.n == 3
    assert summary.peak_d == pytest.approx(1.5) and summary.runs_peaking == 3
    gain[1, 3] = np.nan
    with pytest.raises(ValueError, match="run 1: best-of-n fit: d and the gold gain must be finite"):
        fit_runs(np.broadcast_to(D, gain.shape), gain, BEST_OF_N)


@pytest.mark.parametrize(
    ("d", "gain", "form", "message"),
    [
        ([1.0], [0.5], BEST_OF_N, "2 parameters .* need at least 2 points, got 1"),
        ([0.0, 1.0, 2.0], [0.0, 0.5, 0.7], RL, "d must be > 0 for a form with log d"),
        ([-1.0, 1.0, 2.0], [0.0, 0.5, 0.7], BEST_OF_N, r"d = √KL must be ≥ 0"),
        ([1.0, 1.0, 1.0], [0.4, 0.5, 0.6], BEST_OF_N, "cannot separate α from β"),
        ([1.0, 2.0], [0.4, 0.5, 0.6], BEST_OF_N, "1-D of one length"),
        ([1.0, np.inf], [0.4, 0.5], BEST_OF_N, "must be finite"),
    ],
)
def test_bad_input_raises_one_clear_error(d, gain, form, message):
    with pytest.raises(ValueError, match=message):
        fit(d, gain, form)


def test_rl_form_needs_a_positive_k():
    with pytest.raises(ValueError, match="positive number, got 0"):
        rl_form(0)


def test_fit_best_of_n_reads_the_curves_dataset():
    """A curves Dataset shaped as analysis.best_of_n.best_of_n_curves writes it, with n = 1 at d = 0
    (left out of the fit) and one diverged seed (NaN, left out)."""
    n = np.array([1, 2, 4, 8, 16, 32])
    d = np.stack([np.sqrt(np.log(n) - (n - 1) / n)] * 3)
    gold = 0.5 + BEST_OF_N.curve(d, 1.0, 0.4)
    gold[2] = np.nan
    curves = xr.Dataset(
        {"d": (("seed", "n"), d), "gold": (("seed", "n"), gold), "initial_gold": (("seed",), [0.5, 0.5, 0.5])},
        coords={"seed": [0, 1, 2], "n": n},
    )
    curves["d"][2] = np.nan
    result = fit_best_of_n(curves)
    assert len(result.runs) == 2 and all(run.n_points == 5 for run in result.runs)
    assert result.alpha.mean == pytest.approx(1.0) and result.beta.mean == pytest.approx(0.4)
