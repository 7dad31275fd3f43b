import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from engine.core.world import REFERENCE_WORLD as WORLD
from engine.core.world import all_sequences, reference_q_star, transition_term, verbosity
from engine.mechanisms.bias import (
    DEFAULT_BIAS_TOKEN,
    bias_cost,
    biased_target,
    judge_bias,
    judge_fit,
    level_ceiling,
    policy_verbosity,
    verbosity_facts,
    within_level_gap,
)
from engine.mechanisms.meta_judge import least_certain_pairs, meta_agreement, meta_labels, meta_pairs, meta_select

Q = reference_q_star(WORLD)
SIGMA = float(np.std(np.asarray(Q)))
F = verbosity(WORLD, DEFAULT_BIAS_TOKEN)
BEST = int(np.argmax(np.asarray(Q)))  # ↗ ↓ ↑ ↗


def point_mass(index):
    return jnp.zeros(4096).at[index].set(1.0)


UNIFORM = jnp.full(4096, 1 / 4096)


# ---------------------------------------------------------------------------- verbosity


@pytest.mark.parametrize("token", range(8))
def test_verbosity_counts_the_token_and_sums_to_2048(token):
    f = np.asarray(verbosity(WORLD, token))
    assert f.dtype == np.float32 and f.shape == (4096,)
    np.testing.assert_array_equal(f, (all_sequences(WORLD) == token).sum(axis=1))
    assert f.sum() == 2048  # 4096 sequences × 4 positions × 1/8
    assert np.bincount(f.astype(int)).tolist() == [2401, 1372, 294, 28, 1]  # binomial(4, 1/8) × 4096


def test_verbosity_accepts_a_traced_token():
    np.testing.assert_array_equal(jax.jit(lambda token: verbosity(WORLD, token))(jnp.int32(5)), verbosity(WORLD, 5))
    assert jax.vmap(lambda token: verbosity(WORLD, token))(jnp.arange(8)).sum() == 8 * 2048
    assert float(F[BEST]) == 0 and float(F[all_sequences(WORLD).tolist().index([2, 2, 2, 2])]) == 4


# ---------------------------------------------------------------------- planted bias


def test_zero_planted_bias_is_q_star_bit_for_bit():
    for q in (Q, Q + 0.7 * transition_term(WORLD)):
        for fn in (biased_target, jax.jit(biased_target)):
            for b in (0.0, jnp.float32(0.0), 0):
                out = fn(q, F, b)
                assert out.dtype == q.dtype
                np.testing.assert_array_equal(np.asarray(out).view(np.int32), np.asarray(q).view(np.int32))
    batched = jax.vmap(biased_target, in_axes=(None, None, 0))(Q, F, jnp.array([0.0, 0.3]))
    np.testing.assert_array_equal(np.asarray(batched[0]).view(np.int32), np.asarray(Q).view(np.int32))
    assert not np.array_equal(batched[1], Q)


def test_planted_bias_adds_b_sigma_per_filler_token():
    b = 0.25
    expected = np.asarray(Q, np.float64) + b * SIGMA * np.asarray(F, np.float64)
    np.testing.assert_allclose(biased_target(Q, F, b), expected, rtol=0, atol=1e-5)


# ----------------------------------------------------------------------- judge_bias


@pytest.mark.parametrize("k", [0.0, 0.05, 0.5, 2.0, -0.3, -1.0])
def test_judge_bias_of_an_exactly_biased_judge_is_k(k):
    # A judge scoring exactly q* + k·σ(q*)·f: bias k in units of σ(q*), quality weight 1.
    scores = biased_target(Q, F, k)
    fit = judge_fit(scores, Q, F)
    assert abs(float(fit.bias) - k) < 1e-4
    assert abs(float(fit.quality_weight) - 1) < 1e-4
    assert abs(float(fit.intercept)) < 1e-4
    # In raw units: J = q* + k·f has bias k / σ(q*).
    assert abs(float(judge_bias(Q + k * F, Q, F)) - k / SIGMA) < 1e-4


def test_judge_bias_of_q_star_itself_is_zero_for_every_token():
    for token in range(8):
        assert abs(float(judge_bias(Q, Q, verbosity(WORLD, token)))) < 1e-5


def test_judge_bias_equals_float64_least_squares_on_a_messy_judge():
    rng = np.random.default_rng(0)
    scores = 3.0 + 0.4 * np.asarray(Q) - 0.8 * np.asarray(F) + rng.normal(size=4096)
    design = np.column_stack([np.ones(4096), np.asarray(Q, np.float64), np.asarray(F, np.float64)])
    coef = np.linalg.lstsq(design, scores, rcond=None)[0]
    fit = judge_fit(jnp.asarray(scores, jnp.float32), Q, F)
    np.testing.assert_allclose(
        [fit.intercept, fit.quality_weight, fit.bias], [coef[0], coef[1], coef[2] / SIGMA], atol=1e-4
    )


def test_judge_bias_invariant_to_a_constant_and_proportional_to_scale():
    rng = np.random.default_rng(1)
    scores = jnp.asarray(np.asarray(Q) + 0.3 * np.asarray(F) + rng.normal(size=4096), jnp.float32)
    base = float(judge_bias(scores, Q, F))
    assert abs(float(judge_bias(scores + 100.0, Q, F)) - base) < 1e-4
    assert abs(float(judge_bias(-7.0 + scores, Q, F)) - base) < 1e-4
    assert abs(float(judge_bias(5.0 * scores, Q, F)) - 5 * base) < 1e-3


def test_judge_bias_under_jit_and_vmap_over_tokens():
    scores = biased_target(Q, verbosity(WORLD, 6), 0.4)
    fn = jax.jit(jax.vmap(lambda t: judge_bias(scores, Q, verbosity(WORLD, t))))
    out = np.asarray(fn(jnp.arange(8)))
    assert abs(out[6] - 0.4) < 1e-4


# ------------------------------------------------------------- policy verbosity, cost


def test_policy_verbosity_uniform_and_point_masses():
    assert abs(float(policy_verbosity(UNIFORM, F)) - 0.5) < 1e-6
    for index in (0, BEST, 2 * 512 + 2 * 64 + 2 * 8 + 2, 1234):
        assert float(policy_verbosity(point_mass(index), F)) == float(F[index])


def test_level_ceiling_matches_brute_force():
    q, f = np.asarray(Q), np.asarray(F)
    np.testing.assert_array_equal(level_ceiling(WORLD, Q, F), [q[f == v].max() for v in range(5)])


def test_bias_cost_zero_at_the_global_best_and_at_its_verbosity_level():
    assert float(bias_cost(WORLD, point_mass(BEST), Q, F)) == 0
    # Any policy at verbosity 0 (the best's level for →) costs nothing, however bad.
    zero_level = np.flatnonzero(np.asarray(F) == 0)
    worst_of_level = zero_level[np.asarray(Q)[zero_level].argmin()]
    assert float(bias_cost(WORLD, point_mass(worst_of_level), Q, F)) == 0
    assert float(within_level_gap(WORLD, point_mass(worst_of_level), Q, F)) > 5


def test_bias_cost_of_full_verbosity_and_the_regret_decomposition():
    all_filler = 2 * 512 + 2 * 64 + 2 * 8 + 2  # → → → →
    q = np.asarray(Q, np.float64)
    assert abs(float(bias_cost(WORLD, point_mass(all_filler), Q, F)) - (q.max() - q[all_filler])) < 1e-5
    for probs in (UNIFORM, jax.nn.softmax(jax.random.normal(jax.random.PRNGKey(0), (4096,)) * 3)):
        regret = q.max() - float(np.asarray(probs, np.float64) @ q)
        total = float(bias_cost(WORLD, probs, Q, F) + within_level_gap(WORLD, probs, Q, F))
        assert abs(total - regret) < 1e-4
        assert float(bias_cost(WORLD, probs, Q, F)) > 0 and float(within_level_gap(WORLD, probs, Q, F)) > 0


def test_bias_cost_moves_with_verbosity_mass():
    # A point mass on the best sequence of level v costs exactly max q* − m(v); for → in the
    # reference world m is decreasing in v, so the cost grows with every filler token.
    ceiling = np.asarray(level_ceiling(WORLD, Q, F))
    f = np.asarray(F)
    costs = []
    for v in range(5):
        index = int(np.flatnonzero(f == v)[np.asarray(Q)[f == v].argmax()])
        costs.append(float(bias_cost(WORLD, point_mass(index), Q, F)))
    np.testing.assert_allclose(costs, ceiling.max() - ceiling, atol=1e-6)
    assert costs == sorted(costs)


# ----------------------------------------------------------------------- meta-judge


def test_least_certain_pairs_picks_the_smallest_gaps():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(2, 64)).astype(np.float32)
    index = np.asarray(least_certain_pairs(jnp.asarray(a), jnp.asarray(b), 8))
    gaps = np.abs(a - b)
    assert index.dtype == np.int32 and len(set(index.tolist())) == 8
    np.testing.assert_array_equal(np.sort(gaps[index]), np.sort(gaps)[:8])
    assert gaps[index].tolist() == sorted(gaps[index].tolist())  # smallest first


def test_meta_select_random_is_the_first_pairs_and_switches_per_run():
    rng = np.random.default_rng(3)
    a, b = jnp.asarray(rng.normal(size=(2, 32)), jnp.float32)
    np.testing.assert_array_equal(meta_select(a, b, 5, False), np.arange(5))
    np.testing.assert_array_equal(meta_select(a, b, 5, True), least_certain_pairs(a, b, 5))
    batched = jax.jit(jax.vmap(lambda u: meta_select(a, b, 5, u)))(jnp.array([True, False]))
    np.testing.assert_array_equal(batched[0], least_certain_pairs(a, b, 5))
    np.testing.assert_array_equal(batched[1], np.arange(5))


def test_a_meta_judge_equal_to_the_judge_agrees_on_every_pair():
    rng = np.random.default_rng(4)
    a, b = jnp.asarray(rng.normal(size=(2, 64)), jnp.float32)
    b = b.at[:3].set(a[:3])  # ties too
    assert float(meta_agreement(a, b, a, b)) == 1.0
    assert float(meta_agreement(a, b, b, a)) < 0.1  # the reversed meta-judge agrees only on ties
    tokens_a, tokens_b = jnp.asarray(rng.integers(0, 8, size=(2, 64, 4)), jnp.int32)
    for uncertain in (True, False):
        pairs = meta_pairs(tokens_a, tokens_b, a, b, a, b, 16, uncertain)
        assert float(pairs.agreement) == 1.0
        index = meta_select(a, b, 16, uncertain)
        np.testing.assert_array_equal(pairs.tokens_a, tokens_a[index])
        np.testing.assert_array_equal(pairs.tokens_b, tokens_b[index])
        np.testing.assert_array_equal(pairs.labels, a[index] > b[index])


def test_meta_labels_and_agreement_with_an_independent_meta_judge():
    rng = np.random.default_rng(5)
    ja, jb, ma, mb = rng.normal(size=(4, 1000)).astype(np.float32)
    np.testing.assert_array_equal(meta_labels(jnp.asarray(ma), jnp.asarray(mb)), ma > mb)
    expected = np.mean((ja > jb) == (ma > mb))
    assert float(meta_agreement(*map(jnp.asarray, (ja, jb, ma, mb)))) == pytest.approx(expected)
    assert 0.4 < expected < 0.6


# ------------------------------------------------------------ reference-world facts


def test_reference_facts_quoted_in_docs():
    facts = verbosity_facts(WORLD, Q, DEFAULT_BIAS_TOKEN)
    f, q = np.asarray(F, np.float64), np.asarray(Q, np.float64)
    assert float(facts.pearson) == pytest.approx(np.corrcoef(f, q)[0, 1], abs=1e-5)
    assert float(facts.spearman) == pytest.approx(scipy.stats.spearmanr(f, q).statistic, abs=1e-5)
    assert round(float(facts.pearson), 4) == -0.1656
    assert round(float(facts.spearman), 4) == -0.1619
    assert np.round(np.asarray(facts.level_ceiling, np.float64), 3).tolist() == [3.266, 3.231, 2.583, 0.567, -1.874]
    assert int(facts.best_verbosity) == 0
    # The global best contains ↑ once and ↗ twice; no other token.
    best_verbosity = [int(verbosity_facts(WORLD, Q, t).best_verbosity) for t in range(8)]
    assert best_verbosity == [1, 2, 0, 0, 1, 0, 0, 0]


def test_batched_over_runs_equals_one_run_at_a_time():
    keys = jax.random.split(jax.random.PRNGKey(7), 3)
    probs = jax.vmap(lambda k: jax.nn.softmax(3 * jax.random.normal(k, (4096,))))(keys)
    scores = jax.vmap(lambda k: Q + jax.random.normal(k, (4096,)))(keys)
    tokens = jnp.array([2, 5, 0])
    planted = jnp.array([0.0, 0.2, 1.0])

    def one_run(probs, scores, token, b):
        f = verbosity(WORLD, token)
        return (
            biased_target(Q, f, b),
            judge_bias(scores, Q, f),
            policy_verbosity(probs, f),
            bias_cost(WORLD, probs, Q, f),
            within_level_gap(WORLD, probs, Q, f),
        )

    batched = jax.jit(jax.vmap(one_run))(probs, scores, tokens, planted)
    for run in range(3):
        single = jax.jit(one_run)(probs[run], scores[run], tokens[run], planted[run])
        for got, want in zip(batched, single, strict=True):
            np.testing.assert_allclose(got[run], want, rtol=1e-6, atol=1e-6)
