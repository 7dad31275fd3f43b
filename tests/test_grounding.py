"""Where the judge's pairs come from (`judge_data`) and an imperfect q* labeller with a budget
(`oracle_noise`, `oracle_bias`, `oracle_budget`): docs/grounding.md. The labeller's pure
functions first, then a group's state step by step (untrained judges: no pretraining), then
two small studies."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import engine
from engine.core.exact import policy_log_probs_tree, sample_weighted, sequence_index
from engine.core.models import make_judges
from engine.core.state import make_run_inputs
from engine.core.world import REFERENCE_WORLD as WORLD
from engine.core.world import all_sequences, reference_q_star, run_q_star, verbosity
from engine.host.plan import group_variants
from engine.knobs import DEFAULTS, condition_arrays
from engine.loop.batch import begin_iteration, make_batch_run
from engine.mechanisms import judge_data
from engine.mechanisms.grounding import labeller_values, noisy_preferences
from engine.mechanisms.holdout_meta import holdout_labelled_pairs, holdout_pair_indices
from engine.mechanisms.judge_steps import ensemble_pair_step, self_labelled_update

Q_STAR = np.asarray(reference_q_star(WORLD))
SIGMA = float(np.std(Q_STAR.astype(np.float64)))


def random_pairs(n: int, seed: int = 0):
    """n uniform pairs of distinct q* values: (index_a, index_b) int32."""
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, 4096, (2, 3 * n))
    keep = Q_STAR[a] != Q_STAR[b]
    return a[keep][:n].astype(np.int32), b[keep][:n].astype(np.int32)


def labeller(noise: float, bias: float, index_a, index_b, key):
    """The labeller's preferences [v(a) + s·ε_a > v(b) + s·ε_b] for a run with these knobs."""
    condition = condition_arrays([{**DEFAULTS, "oracle_noise": noise, "oracle_bias": bias}])
    condition = jax.tree.map(lambda leaf: jnp.asarray(leaf[0]), condition)
    values = labeller_values(WORLD, jnp.asarray(Q_STAR), condition)
    scale = condition.oracle_noise * jnp.std(jnp.asarray(Q_STAR))
    return noisy_preferences(values, index_a, index_b, scale, key)


def labels(noise: float, bias: float, index_a, index_b, key=0):
    return np.asarray(labeller(noise, bias, index_a, index_b, jax.random.PRNGKey(key)))


# ------------------------------------------------------------- the labeller


def test_a_perfect_labeller_is_q_star_bit_for_bit():
    index_a, index_b = random_pairs(20_000)
    expected = Q_STAR[index_a] > Q_STAR[index_b]
    np.testing.assert_array_equal(labels(0.0, 0.0, index_a, index_b), expected)
    jitted = jax.jit(labeller, static_argnums=(0, 1))(0.0, 0.0, index_a, index_b, jax.random.PRNGKey(0))
    np.testing.assert_array_equal(jitted, expected)


@pytest.mark.parametrize("noise", [0.25, 1.0, 2.0])
def test_noise_flips_a_pair_with_probability_phi_of_its_gap(noise):
    """One noisy comparison of each of 60 000 pairs: the flips against [q*(a) > q*(b)] match
    P(flip) = Φ(−|Δq*| / (√2·noise·σ)) in total and in ten bins of that probability (chi-square)."""
    index_a, index_b = random_pairs(60_000)
    gap = Q_STAR[index_a].astype(np.float64) - Q_STAR[index_b]
    flip_probability = scipy.stats.norm.cdf(-np.abs(gap) / (np.sqrt(2) * noise * SIGMA))
    flipped = labels(noise, 0.0, index_a, index_b, key=1) != (gap > 0)
    edges = np.quantile(flip_probability, np.linspace(0, 1, 11))
    bins = np.clip(np.searchsorted(edges, flip_probability, side="right") - 1, 0, 9)
    observed = np.bincount(bins, flipped, minlength=10)
    expected = np.bincount(bins, flip_probability, minlength=10)
    variance = np.bincount(bins, flip_probability * (1 - flip_probability), minlength=10)
    statistic = np.sum((observed - expected) ** 2 / variance)
    assert scipy.stats.chi2.sf(statistic, df=10) > 1e-3, (observed, expected)
    assert abs(flipped.sum() - flip_probability.sum()) < 4.5 * np.sqrt(variance.sum())
    assert flipped.mean() > 0.02  # the noise flips something at every level tested


def test_bias_shifts_labels_toward_the_verbose_sequence():
    """Without noise a biased labeller ranks q* + b·σ(q*)·f exactly; the share of pairs (of different
    verbosity) it labels in favour of the more verbose sequence grows with b, to all of them."""
    index_a, index_b = random_pairs(40_000)
    f = np.asarray(verbosity(WORLD, 2))
    differ = f[index_a] != f[index_b]
    a_more_verbose = f[index_a] > f[index_b]
    shares = []
    for bias in (0.0, 0.5, 1.0, 1e3):
        got = labels(0.0, bias, index_a, index_b)
        values = Q_STAR.astype(np.float64) + bias * SIGMA * f
        gap = values[index_a] - values[index_b]
        clear = np.abs(gap) > 1e-3 * max(1.0, bias)  # float32 rounding decides only near-ties
        np.testing.assert_array_equal(got[clear], gap[clear] > 0)
        shares.append(np.mean(got[differ] == a_more_verbose[differ]))
    assert shares[0] < shares[1] < shares[2] < shares[3] == 1.0, shares
    negative = labels(0.0, -1.0, index_a, index_b)
    assert np.mean(negative[differ] == a_more_verbose[differ]) < shares[0]


def test_the_held_out_labels_are_drawn_once_per_run(small):
    """The same labels at every measurement of a run; another seed, another draw; without noise, q*'s."""
    holdout = holdout_pair_indices(WORLD, 204)
    resolved = engine.resolve(small({"noisy": {"oracle_noise": 1.0}, "perfect": {}}, seeds=[0]))

    def run(name, seed):
        condition = jax.tree.map(lambda leaf: jnp.asarray(leaf[0]), condition_arrays([resolved.conditions[name]]))
        return make_run_inputs(
            condition, jnp.int32(seed), make_judges(jax.random.PRNGKey(0), 1), jnp.zeros(1, jnp.int32)
        )

    def held_out_labels(name, seed):
        return np.asarray(holdout_labelled_pairs(run(name, seed), jnp.asarray(Q_STAR), holdout, imperfect=True)[2])

    first = held_out_labels("noisy", 0)
    np.testing.assert_array_equal(held_out_labels("noisy", 0), first)
    truth = Q_STAR[np.asarray(holdout[0])] > Q_STAR[np.asarray(holdout[1])]
    np.testing.assert_array_equal(held_out_labels("perfect", 0), truth)
    np.testing.assert_array_equal(held_out_labels("perfect", 1), truth)
    assert 0.05 < np.mean(first != truth) < 0.45
    assert not np.array_equal(held_out_labels("noisy", 1), first)


# ------------------------------------------------------------- a group's state, step by step


def one_group(small, conditions: dict, **base):
    """The runs of `conditions` (seed 0, untrained judges) as one group, started. Runs with and without
    a budget run together under the budgeted code, where a budget of 0 is unlimited."""
    resolved = engine.resolve(small(conditions, seeds=[0], **base))
    variants = group_variants([resolved.variant(name) for name in conditions])
    budgeted = any(variant.oracle_budgeted for variant in variants)
    variants = [variant._replace(oracle_budgeted=budgeted) for variant in variants]
    assert len(set(variants)) == 1
    n = len(conditions)
    condition = condition_arrays([resolved.conditions[name] for name in conditions])
    table = make_judges(jax.random.PRNGKey(3), 1)
    runs = make_run_inputs(condition, jnp.zeros(n, jnp.int32), table, jnp.zeros((n, 1), jnp.int32))
    batch = make_batch_run(variants[0], resolved.sizes)
    return variants[0], batch, runs, jax.vmap(lambda condition: run_q_star(WORLD, condition))(runs.condition)


LOG_PROBS = jax.jit(jax.vmap(policy_log_probs_tree))
MIXTURES = jax.jit(jax.vmap(judge_data.mixture))


def probabilities(policies) -> np.ndarray:
    """π over the 4096 of each run's policy, (runs, 4096) float64."""
    return np.exp(np.asarray(LOG_PROBS(policies), np.float64))


def run_at(tree, i: int):
    return jax.tree.map(lambda leaf: leaf[i], tree)


def chi_square_p(indices, weights) -> float:
    """p-value of draws `indices` against weights over the 4096 (expected counts < 20 pooled)."""
    expected = len(indices) * weights / weights.sum()
    counts = np.bincount(indices, minlength=4096)
    big = expected >= 20
    observed = np.append(counts[big], counts[~big].sum())
    expected = np.append(expected[big], expected[~big].sum())
    assert big.sum() > 50
    return scipy.stats.chisquare(observed, expected * observed.sum() / expected.sum())[1]


JUDGE_DATA = {
    "accumulate": {"judge_data": "accumulate"},
    "window_1": {"judge_data": "window", "judge_data_window": 1},
    "window_2": {"judge_data": "window", "judge_data_window": 2},
}


def test_the_mixture_is_every_policy_of_the_window_and_the_pairs_are_drawn_from_it(small):
    """Three outer iterations of three inner steps, π computed apart after each: accumulate keeps the sum
    of all of them, a window only those of its last iterations (it forgets); pairs drawn for the judges'
    step follow the running average (chi-square), not the current policy."""
    variant, batch, runs, q_stars = one_group(small, JUDGE_DATA, steps_per_iter=3, n_iterations=3, lr_policy=0.03)
    assert variant.judge_data_slots == 2
    states, step = batch.start(runs), jax.jit(batch.step)
    per_iteration = []
    for outer in range(3):
        states = begin_iteration(states, runs)
        total = 0.0
        for inner in range(3):
            states = step(states, runs, q_stars, outer, inner)
            total = total + probabilities(states.policy)
        per_iteration.append(total)
        mixtures = np.asarray(MIXTURES(states.policy_sums, runs.condition))
        expected = [sum(per_iteration)[0], per_iteration[-1][1], sum(per_iteration[-2:])[2]]  # the runs in order
        np.testing.assert_allclose(mixtures, np.stack(expected), rtol=2e-5, atol=1e-9)
        np.testing.assert_allclose(mixtures.sum(axis=1), [3 * (outer + 1), 3, 3 * min(outer + 1, 2)], rtol=1e-5)
    average, current = per_iteration[0] + per_iteration[1] + per_iteration[2], probabilities(states.policy)
    pairs = jax.jit(judge_data.self_labelled_pairs, static_argnums=3)
    tokens = pairs(run_at(states, 0), run_at(runs.condition, 0), jax.random.PRNGKey(0), 100_000)
    draws = np.asarray(sequence_index(WORLD, jnp.concatenate(tokens)))
    assert chi_square_p(draws, average[0]) > 1e-3
    assert chi_square_p(draws, current[0]) < 1e-6  # the policy moved: its own draws would differ
    assert chi_square_p(draws, per_iteration[-1][0]) < 1e-6  # so would window_1's
    # the judges' step trains on pairs drawn from the sum by inverse CDF, not on fresh policy pairs
    state, condition, key, mask = run_at(states, 0), run_at(runs.condition, 0), jax.random.PRNGKey(9), jnp.array([True])
    index = sample_weighted(key, jnp.asarray(average[0], jnp.float32), 32)
    tokens = jnp.asarray(all_sequences(WORLD))[index]
    stepped = jax.jit(self_labelled_update, static_argnums=4)(state, condition, key, jnp.bool_(True), 16)
    pair_step = jax.jit(lambda tokens_a, tokens_b: ensemble_pair_step(state, tokens_a, tokens_b, None, mask))
    expected = pair_step(tokens[:16], tokens[16:])
    fresh = pair_step(*judge_data.fresh_pairs(state.policy, key, 16))
    for got, want in zip(jax.tree.leaves(stepped.judges), jax.tree.leaves(expected.judges), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(stepped.judges), jax.tree.leaves(fresh.judges)))


def test_fresh_runs_keep_no_past_policies(small):
    """judge_data fresh (or a knob of a frozen judge) compiles no judge-data code at all."""
    resolved = engine.resolve(
        small({"fresh": {}, "frozen": {"judge_data": "accumulate", "freeze_judge": True}, **JUDGE_DATA})
    )
    slots = {name: resolved.variant(name).judge_data_slots for name in resolved.conditions}
    assert slots == {"fresh": 0, "frozen": 0, "accumulate": 1, "window_1": 1, "window_2": 2}
    grouped = group_variants([resolved.variant(name) for name in resolved.conditions])
    assert [variant.judge_data_slots for variant in grouped] == [0, 0, 2, 2, 2]  # one ring, the longest window
    _, batch, runs, _ = one_group(small, {"fresh": {}, "slow": {"judge_update_every": 2}})
    assert batch.start(runs).policy_sums is None


BUDGET = {  # batch 16: an oracle-pair step costs 4 comparisons; 0.02 of 4096: a held-out correction 81
    "anchor": {"anchor_fraction": 0.25},
    "anchor_8": {"anchor_fraction": 0.25, "oracle_budget": 8},
    "anchor_24": {"anchor_fraction": 0.25, "oracle_budget": 24},  # 6 steps × 4: never binds
    "meta": {"meta_holdout_fraction": 0.02, "meta_update_every": 1, "meta_accuracy_threshold": 1.0},
    "meta_162": {
        "meta_holdout_fraction": 0.02,
        "meta_update_every": 1,
        "meta_accuracy_threshold": 1.0,
        "oracle_budget": 162,
    },
    "meta_486": {
        "meta_holdout_fraction": 0.02,
        "meta_update_every": 1,
        "meta_accuracy_threshold": 1.0,
        "oracle_budget": 486,
    },
    "both_85": {
        "anchor_fraction": 0.25,
        "meta_holdout_fraction": 0.02,
        "meta_update_every": 1,
        "meta_accuracy_threshold": 1.0,
        "oracle_budget": 85,
    },
}


def test_the_budget_caps_the_q_star_labelled_comparisons_of_every_iteration(small):
    """Two outer iterations of six inner steps: a budget counts each oracle-pair step's pairs and each
    held-out correction's, first come first served (in a step, the oracle pairs first), skips what does
    not fit, starts again every iteration; one that never binds is unlimited bit for bit."""
    _, batch, runs, _ = one_group(small, BUDGET, batch_size=16, n_iterations=2)
    names = list(BUDGET)
    states, advance = batch.start(runs), jax.jit(batch.advance)
    for outer in range(2):
        states = advance(states, runs, outer, 0)
        spent = dict(zip(names, np.asarray(states.oracle_spent).tolist(), strict=True))
        assert spent == {"anchor": 0, "anchor_8": 8, "anchor_24": 24, "meta": 0, "meta_162": 162, "meta_486": 486,
                         "both_85": 85}  # fmt: skip
    judges = {name: run_at(states.judges, i) for i, name in enumerate(names)}

    def same(a, b):
        return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(judges[a]), jax.tree.leaves(judges[b])))

    assert same("anchor_24", "anchor") and same("meta_486", "meta")
    assert not same("anchor_8", "anchor") and not same("meta_162", "meta") and not same("both_85", "anchor_8")


def test_knob_values_that_change_nothing_are_warned_about(small):
    conditions = {
        "window_3": {"judge_data": "window", "judge_data_window": 3},
        "never_fits": {
            "anchor_fraction": 0.25,
            "oracle_budget": 7,
            "meta_holdout_fraction": 0.05,
            "meta_update_every": 3,
        },
        "never_binds": {"anchor_fraction": 0.25, "oracle_budget": 48},  # 6 steps × 8 pairs (batch 32)
        "no_labeller": {"oracle_noise": 1.0, "oracle_bias": 0.5, "oracle_budget": 10},
        "fresh_window": {"judge_data_window": 2},
    }
    warnings = "\n".join(engine.resolve(small(conditions)).warnings)
    assert "'window_3', field 'judge_data_window': 3 >= n_iterations 3" in warnings
    assert (
        "'never_fits', field 'oracle_budget': 7 comparisons cannot pay for the oracle-pair step (8 comparisons) "
        "nor the held-out correction (204 comparisons), so neither ever runs"
    ) in warnings
    assert "'never_binds', field 'oracle_budget': 48 >= 48, the most" in warnings
    for field in ("oracle_noise", "oracle_bias", "oracle_budget"):
        assert f"'no_labeller', field '{field}': has no effect" in warnings
    assert "'fresh_window', field 'judge_data_window': has no effect" in warnings and "judge_data is fresh" in warnings
    with pytest.raises(engine.StudyError, match="judge_data_window': must be > 0"):
        engine.resolve(small({"w": {"judge_data": "window", "judge_data_window": 0}}))
    with pytest.raises(engine.StudyError, match="oracle_noise': must be >= 0"):
        engine.resolve(small({"n": {"oracle_noise": -1.0}}))


def test_the_grounding_study_resolves_without_warnings():
    """Its reference loop is the defaults, its noiseless grounded loops the published study's."""
    from studies.blog import CONDITIONS as BLOG
    from studies.grounding import STUDY

    resolved = engine.resolve(STUDY)
    assert len(resolved.conditions) == 21 and resolved.seeds == tuple(range(100)) and not resolved.warnings
    assert resolved.conditions["fresh_baseline"] == DEFAULTS
    for name in ("anchor_0.1", "asym_meta_10"):
        assert resolved.conditions[f"{name}_noise0"] == {**DEFAULTS, **BLOG[name]}


def test_a_runs_bits_do_not_depend_on_its_ring_and_every_mixture_starts_the_same(small):
    """The same three runs in a ring of 2 slots (their own) and of 3 (a group with a longer window): bit
    for bit the same after three outer iterations; and accumulate and both windows (one seed) are the
    same run until the first outer iteration ends, when the windows start to forget."""
    variant, batch, runs, _ = one_group(small, JUDGE_DATA, n_iterations=3)
    sizes = engine.resolve(small(JUDGE_DATA, n_iterations=3)).sizes
    longer = make_batch_run(variant._replace(judge_data_slots=3), sizes)
    finals = []
    for run_batch in (batch, longer):
        states, advance = run_batch.start(runs), jax.jit(run_batch.advance)
        for outer in range(3):
            states = advance(states, runs, outer, 0)
            if outer == 0:
                leaves = jax.tree.leaves(eqx.filter((states.policy, states.judges), eqx.is_array))
                assert all((leaf == leaf[:1]).all() for leaf in leaves)
        finals.append(jax.tree.leaves(eqx.filter((states.policy, states.judges), eqx.is_array)))
        assert not all((leaf == leaf[:1]).all() for leaf in finals[-1])
    for short, long in zip(*finals, strict=True):
        np.testing.assert_array_equal(short, long)
