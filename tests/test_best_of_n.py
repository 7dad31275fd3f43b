"""Exact best-of-n (analysis/best_of_n.py): against sampling, exact rational arithmetic, the lab's
own order statistics, the KL bound, and on a tiny study saved with its distributions."""

from fractions import Fraction
from math import log

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import engine
from analysis.best_of_n import best_of_n, best_of_n_curves, best_of_n_weights, kl_bound, n_grid
from engine.core.exact import order_statistic_weights

# A small world with ties: scores 0..3, so every score is shared, with unequal π inside each tie.
TIED_SCORES = np.array([2.0, 0.0, 3.0, 1.0, 3.0, 2.0, 0.0, 1.0, 3.0, 2.0])
TIED_PROBS = np.array([5, 9, 1, 7, 3, 2, 8, 4, 6, 10]) / 55.0
TIED_GOLD = np.array([0.3, -1.2, 2.5, 0.1, -0.7, 1.9, 0.4, -2.0, 1.1, 0.6])


def naive_weights(scores, probs, n) -> np.ndarray:
    """P_n(x) = π(x)·(F(B)^n − F(B⁻)^n)/π(B) written out directly: fine for small n, nothing else."""
    probs = probs / probs.sum()
    through = np.array([probs[scores <= s].sum() for s in scores])
    before = np.array([probs[scores < s].sum() for s in scores])
    return probs * (through**n - before**n) / (through - before)


def exact_reference(scores, probs, gold, n) -> dict:
    """P_n by exact rational arithmetic (probs must be exact binary fractions), then E[gold] and KL."""
    masses = [Fraction(p) for p in probs]
    total = sum(masses)
    masses = [m / total for m in masses]
    levels = sorted(set(scores))
    block = {s: sum(m for m, t in zip(masses, scores, strict=True) if t == s) for s in levels}
    below = {s: sum(block[t] for t in levels if t < s) for s in levels}
    best = {s: (below[s] + block[s]) ** n - below[s] ** n for s in levels}
    gold_value = sum(
        float(best[s] * m / block[s]) * g for m, s, g in zip(masses, scores, gold, strict=True) if block[s] > 0
    )
    ratio = {s: best[s] / block[s] for s in levels if best[s] > 0}  # logs of the integers: no underflow
    kl = sum(float(best[s]) * (log(r.numerator) - log(r.denominator)) for s, r in ratio.items())
    return {"gold": gold_value, "kl": kl, "best_of_top": float(best[levels[-1]])}


def test_n_equal_1_is_the_base_policy_with_zero_kl():
    weights = best_of_n_weights(TIED_SCORES, TIED_PROBS, 1)[0]
    np.testing.assert_allclose(weights, TIED_PROBS, rtol=1e-14)
    curve = best_of_n(TIED_SCORES, TIED_PROBS, TIED_GOLD, 1)
    assert abs(curve["kl"][0]) < 1e-15 and curve["kl_bound"][0] == 0.0
    assert curve["gold"][0] == pytest.approx(TIED_PROBS @ TIED_GOLD, rel=1e-14)
    assert curve["perceived"][0] == pytest.approx(TIED_PROBS @ TIED_SCORES, rel=1e-14)


@pytest.mark.parametrize("n", [2, 3, 7, 25])
def test_weights_equal_the_formula_written_out(n):
    np.testing.assert_allclose(
        best_of_n_weights(TIED_SCORES, TIED_PROBS, n)[0], naive_weights(TIED_SCORES, TIED_PROBS, n), rtol=1e-12
    )


def test_ties_resolve_as_the_labs_order_statistics_do():
    """engine.core.exact.order_statistic_weights (float32, JAX) gives the same P_n, ties included."""
    for n in (2, 4, 9):
        lab, _ = order_statistic_weights(TIED_SCORES.astype(np.float32), TIED_PROBS.astype(np.float32), n)
        np.testing.assert_allclose(best_of_n_weights(TIED_SCORES, TIED_PROBS, n)[0], lab, atol=2e-7)


@pytest.mark.parametrize("n", [1, 2, 5, 20])
def test_monte_carlo_agrees_within_a_few_standard_errors(n):
    """Draw n from π, keep the first draw with the highest J (numpy's argmax), many times over."""
    rng = np.random.default_rng(n)
    trials = 200_000
    draws = rng.choice(TIED_SCORES.size, size=(trials, n), p=TIED_PROBS)
    winners = draws[np.arange(trials), np.argmax(TIED_SCORES[draws], axis=1)]
    exact = best_of_n_weights(TIED_SCORES, TIED_PROBS, n)[0]
    frequency = np.bincount(winners, minlength=TIED_SCORES.size) / trials
    se = np.sqrt(exact * (1 - exact) / trials)
    assert np.all(np.abs(frequency - exact) <= 4.5 * se + 1e-12), (frequency, exact)
    curve = best_of_n(TIED_SCORES, TIED_PROBS, TIED_GOLD, n)
    for values, name in ((TIED_GOLD, "gold"), (TIED_SCORES, "perceived")):
        sample = values[winners]
        assert abs(sample.mean() - curve[name][0]) <= 4.5 * sample.std() / np.sqrt(trials)


def test_within_a_tie_the_pick_follows_pi_not_the_index():
    """The top block {2, 4, 8} (π 1, 3, 6 over 55): the pick splits 1 : 3 : 6 at every n."""
    top = TIED_SCORES == 3.0
    for n in (1, 10, 10**6):
        weights = best_of_n_weights(TIED_SCORES, TIED_PROBS, n)[0][top]
        np.testing.assert_allclose(weights / weights.sum(), [0.1, 0.3, 0.6], rtol=1e-12)


@pytest.mark.parametrize("n", [1, 2, 7, 100, 10**4])
def test_large_n_matches_exact_rational_arithmetic(n):
    probs = np.array([3, 1, 7, 2, 11, 5, 1, 2]) / 32.0  # exact in binary
    scores = np.array([0.5, 2.0, 1.0, 2.0, -1.0, 1.5, 3.0, 3.0])
    gold = np.linspace(-1.0, 2.0, 8)
    reference = exact_reference(scores, probs, gold, n)
    curve = best_of_n(scores, probs, gold, n)
    assert curve["gold"][0] == pytest.approx(reference["gold"], rel=1e-12, abs=1e-15)
    assert curve["kl"][0] == pytest.approx(reference["kl"], rel=1e-12, abs=1e-15)
    top = best_of_n_weights(scores, probs, n)[0][scores == 3.0].sum()
    assert top == pytest.approx(reference["best_of_top"], rel=1e-13)


def test_huge_n_concentrates_on_the_top_block_without_overflow():
    n = np.array([1e4, 1e6, 1e9, 1e12, 1e15])
    weights = best_of_n_weights(TIED_SCORES, TIED_PROBS, n)
    assert np.all(np.isfinite(weights)) and np.allclose(weights.sum(axis=1), 1.0, rtol=1e-13)
    top = TIED_SCORES == 3.0
    curve = best_of_n(TIED_SCORES, TIED_PROBS, TIED_GOLD, n)
    # once the top block is certain, P_n = π restricted to it: KL = −log π(top), E[J] = 3
    assert curve["kl"][-1] == pytest.approx(-np.log(TIED_PROBS[top].sum()), rel=1e-13)
    assert curve["perceived"][-1] == pytest.approx(3.0, rel=1e-14)
    assert np.all(np.diff(curve["perceived"]) >= 0)


def test_kl_approaches_the_bound_from_below_in_the_continuous_limit():
    """Uniform π over N distinct scores: KL < log n − (n−1)/n at every N, the gap shrinking towards 0."""
    n = np.array([2, 4, 16])
    gaps = []
    for size in (10, 100, 1_000, 10_000):
        scores = np.arange(size, dtype=float)
        curve = best_of_n(scores, np.full(size, 1.0 / size), scores, n)
        gaps.append(curve["kl_bound"] - curve["kl"])
    gaps = np.array(gaps)
    assert np.all(gaps > 0) and np.all(np.diff(gaps, axis=0) < 0)
    assert np.all(gaps[-1] < 2e-7)


def test_far_past_the_size_of_the_world_the_bound_is_far_off():
    """4096 equally likely distinct outputs: the exact KL saturates at log 4096, the bound grows as log n."""
    scores = np.arange(4096, dtype=float)
    curve = best_of_n(scores, np.full(4096, 1 / 4096), scores, [10**4, 10**8])
    assert curve["kl"][0] < np.log(4096) and curve["kl"][1] == pytest.approx(np.log(4096), rel=1e-12)
    assert curve["kl_bound"][1] > 2 * curve["kl"][1]


# ---------------------------------------------------------------- properties

worlds = st.integers(2, 40).flatmap(
    lambda size: st.tuples(
        st.lists(st.integers(0, 6), min_size=size, max_size=size),  # few distinct scores: many ties
        st.lists(st.floats(0.0, 1.0), min_size=size, max_size=size).filter(lambda p: sum(p) > 1e-6),
    )
)


@settings(max_examples=200, deadline=None)
@given(worlds, st.lists(st.integers(1, 10**9), min_size=1, max_size=6))
def test_kl_lies_between_0_and_the_bound_and_weights_sum_to_1(world, n):
    scores, probs = np.array(world[0], float), np.array(world[1])
    curve = best_of_n(scores, probs, scores, n)
    assert np.all(curve["kl"] >= 0)
    assert np.all(curve["kl"] <= curve["kl_bound"] + 1e-12)
    np.testing.assert_allclose(best_of_n_weights(scores, probs, n).sum(axis=1), 1.0, rtol=1e-12)


@settings(max_examples=200, deadline=None)
@given(worlds, st.integers(1, 10**6))
def test_ties_lower_the_kl_and_more_draws_raise_the_judged_score(world, n):
    """Merging neighbouring scores into ties coarsens the pick (data processing: KL can only fall);
    one more draw can only raise E[J] of the best."""
    scores, probs = np.array(world[0], float), np.array(world[1])
    fine = best_of_n(scores, probs, scores, [n, n + 1])
    coarse = best_of_n(np.floor(scores / 2), probs, scores, [n, n + 1])
    assert np.all(coarse["kl"] <= fine["kl"] + 1e-12)
    assert fine["perceived"][1] >= fine["perceived"][0] - 1e-12 * max(1.0, np.abs(scores).max())


def test_bad_input_names_the_problem():
    with pytest.raises(ValueError, match="whole numbers ≥ 1"):
        best_of_n(TIED_SCORES, TIED_PROBS, TIED_GOLD, 0)
    with pytest.raises(ValueError, match="whole numbers ≥ 1"):
        best_of_n(TIED_SCORES, TIED_PROBS, TIED_GOLD, [2, 2.5])
    with pytest.raises(ValueError, match="1-D of one length"):
        best_of_n(TIED_SCORES, TIED_PROBS[:-1], TIED_GOLD, 2)
    with pytest.raises(ValueError, match="≥ 0 with a positive sum"):
        best_of_n(TIED_SCORES, -TIED_PROBS, TIED_GOLD, 2)
    with pytest.raises(ValueError, match="finite"):
        best_of_n(TIED_SCORES, TIED_PROBS, np.full(10, np.nan), 2)
    assert kl_bound([1, 2])[1] == pytest.approx(np.log(2) - 0.5)
    grid = n_grid(10**4, per_decade=4)
    assert grid[0] == 1 and grid[-1] == 10**4 and np.all(np.diff(grid) > 0)


# ---------------------------------------------------------------- from a results file


@pytest.fixture(scope="module")
def saved(small):
    """Two conditions (the reference q* and one with a transition term), two seeds, one outer
    iteration, π and J saved at every record."""
    conditions = {"reference": {}, "transition": {"transition_alpha": 0.5}}
    return engine.run_study(small(conditions, n_iterations=1, save_distributions="all"))


@pytest.mark.parametrize("condition", ["reference", "transition"])
def test_curves_from_a_study_agree_with_its_own_diagnostics(saved, condition):
    one = saved.sel(condition=[condition])
    n_candidates = int(one["n_candidates"].values[0])
    curves = best_of_n_curves(one, n=[1, n_candidates, 100, 10**5])
    assert curves["gold"].dims == ("seed", "n") and curves.sizes == {"seed": 2, "n": 4}
    start = one.isel(condition=0, iteration=0)
    # n = 1 is π₀ itself: the lab's own exact (float32) policy_quality and judge_perceived_quality
    np.testing.assert_allclose(curves["kl"].sel(n=1), 0.0, atol=1e-15)
    np.testing.assert_allclose(curves["gold"].sel(n=1), start["policy_quality"], rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(curves["initial_gold"], start["policy_quality"], rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(curves["perceived"].sel(n=1), start["judge_perceived_quality"], rtol=2e-5)
    # the best of N minus the worst of N (the best by −J) is the lab's best_worst_gap at iteration 0
    worst = best_of_n_curves(one.assign(judge_score=-one["judge_score"]), n=[n_candidates])
    gap_judge = curves["perceived"].sel(n=n_candidates) + worst["perceived"].sel(n=n_candidates)
    gap_true = curves["gold"].sel(n=n_candidates) - worst["gold"].sel(n=n_candidates)
    np.testing.assert_allclose(gap_judge, start["best_worst_gap_judge"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(gap_true, start["best_worst_gap_true"], rtol=1e-4, atol=1e-6)
    assert np.all(curves["kl"] <= curves["kl_bound"] + 1e-12)
    np.testing.assert_allclose(curves["d"], np.sqrt(curves["kl"]))


def test_curves_with_the_final_judge(saved):
    one = saved.sel(condition="reference")
    final = best_of_n_curves(one, n=[1, 64], judge_record=-1)
    first = best_of_n_curves(one, n=[1, 64])
    assert final.attrs["judge_record"] == "iteration 1" and first.attrs["judge_record"] == "iteration 0"
    np.testing.assert_allclose(final["gold"].sel(n=1), first["gold"].sel(n=1), rtol=1e-13)  # the same π₀
    assert not np.array_equal(final["perceived"].sel(n=64), first["perceived"].sel(n=64))


def test_curves_refuse_what_they_cannot_use(saved):
    with pytest.raises(ValueError, match="one condition, this Dataset holds 2"):
        best_of_n_curves(saved)
    one = saved.sel(condition="reference")
    last_only = one.assign(policy_probability=one["policy_probability"].isel(iteration=-1))
    with pytest.raises(ValueError, match="only the final record's distributions"):
        best_of_n_curves(last_only)
    with pytest.raises(ValueError, match="policy_probability and judge_score"):
        best_of_n_curves(one.drop_vars("judge_score"))
    with pytest.raises(ValueError, match="judge_record 2 is outside the 2 records"):
        best_of_n_curves(one, judge_record=2)
