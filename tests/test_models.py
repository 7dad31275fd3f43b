import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from engine.core.exact import judge_scores_all, policy_log_probs_all, policy_log_probs_tree, sequence_index
from engine.core.models import (
    DEFAULT_HIDDEN,
    Judge,
    Policy,
    ensemble_scores,
    gru_step,
    inverse_cdf_token,
    make_judges,
    shared_levels,
    token_gates,
)
from engine.core.world import REFERENCE_WORLD as WORLD
from engine.core.world import all_sequences
from engine.loop.diagnostics import exact_metrics

# The batched passes against the one-sequence definitions at these widths (policy_hidden, judge_hidden):
# the narrowest and the widest studied, and the reference's.
WIDTHS = (8, DEFAULT_HIDDEN, 128)


def n_params(module):
    return sum(leaf.size for leaf in jax.tree.leaves(eqx.filter(module, eqx.is_array)))


def test_parameter_counts_are_about_5k():
    # policy: 9x16 embedding + GRU(16->32) 4736 + 32x8+8 head; judge: 8x16 + 4736 + 33
    assert n_params(Policy(key=jax.random.PRNGKey(0))) == 144 + 4736 + 264
    assert n_params(Judge(key=jax.random.PRNGKey(0))) == 128 + 4736 + 33


@pytest.mark.parametrize("hidden", WIDTHS)
def test_sampling_pass_log_prob_equals_teacher_forced_log_prob(hidden):
    policy = Policy(key=jax.random.PRNGKey(1), hidden=hidden)
    for n in (1, 7, 64, 200):  # fewer, as many and more sequences than shared prefixes
        uniforms = jax.random.uniform(jax.random.PRNGKey(n), (n, 4))
        tokens, log_prob = policy.sample(uniforms)
        np.testing.assert_allclose(log_prob, jax.vmap(policy.log_prob)(tokens), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(policy.log_prob_batch(tokens), log_prob, rtol=1e-6, atol=1e-6)


def test_sampling_draws_from_the_exact_distribution():
    """A chi-square test of 200,000 draws against π over all 4096 sequences (cells with an
    expected count under 5 pooled): a sampler off by one token, or reading the wrong prefix's
    probabilities, fails it by hundreds of standard deviations."""
    policy = Policy(key=jax.random.PRNGKey(3))
    probs = np.exp(np.asarray(policy_log_probs_all(policy), np.float64))
    assert abs(probs.sum() - 1) < 1e-5
    n = 200_000
    tokens, _ = eqx.filter_jit(lambda p, u: p.sample(u))(policy, jax.random.uniform(jax.random.PRNGKey(4), (n, 4)))
    counts = np.bincount(np.asarray(sequence_index(WORLD, tokens)), minlength=4096)
    expected = n * probs / probs.sum()
    small = expected < 5
    observed = np.append(counts[~small], counts[small].sum()) if small.any() else counts
    expected = np.append(expected[~small], expected[small].sum()) if small.any() else expected
    statistic, p_value = scipy.stats.chisquare(observed, expected)
    assert p_value > 1e-3, (statistic, len(observed))


def test_inverse_cdf_never_draws_a_token_of_probability_zero():
    log_probs = jnp.log(jnp.array([[0.5, 0.5, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0.25, 0.75]] * 3))
    uniforms = jnp.array([0.0, 0.0, 0.5, 0.5, 1 - 2**-24, 1 - 2**-24])
    tokens = inverse_cdf_token(log_probs, uniforms)
    np.testing.assert_array_equal(tokens, [0, 6, 1, 7, 1, 7])


@pytest.mark.parametrize("hidden", WIDTHS)
def test_judge_batch_scores_equal_the_one_sequence_definition(hidden):
    judge = Judge(key=jax.random.PRNGKey(11), hidden=hidden)
    for n in (1, 7, 64, 128, 700):
        tokens = jax.random.randint(jax.random.PRNGKey(n), (n, 4), 0, 8)
        np.testing.assert_allclose(judge.scores(tokens), jax.vmap(judge)(tokens), rtol=1e-5, atol=1e-5)
    everything = jnp.asarray(all_sequences(WORLD))
    np.testing.assert_allclose(judge.all_scores(), jax.vmap(judge)(everything), rtol=1e-5, atol=1e-5)
    shuffled = everything[np.random.default_rng(0).permutation(4096)]
    np.testing.assert_array_equal(judge.scores(shuffled), judge.all_scores()[sequence_index(WORLD, shuffled)])


def test_shared_levels_follow_the_batch_size():
    assert [shared_levels(WORLD, n) for n in (1, 7, 8, 63, 64, 128, 511, 512, 4096)] == [0, 0, 1, 1, 2, 2, 2, 3, 4]


def test_ensemble_member_zero_is_the_single_judge():
    single = make_judges(jax.random.PRNGKey(5), 1)
    ensemble = make_judges(jax.random.PRNGKey(5), 3)
    x = jnp.asarray(all_sequences(WORLD)[:50])
    np.testing.assert_array_equal(ensemble_scores(single, x)[0], ensemble_scores(ensemble, x)[0])
    assert not np.allclose(ensemble_scores(ensemble, x)[0], ensemble_scores(ensemble, x)[1])


def test_uniform_policy_has_entropy_ln_4096_and_mean_quality():
    policy = Policy(key=jax.random.PRNGKey(6))
    policy = eqx.tree_at(lambda p: (p.head.weight, p.head.bias), policy, (jnp.zeros((8, 32)), jnp.zeros(8)))
    judges = make_judges(jax.random.PRNGKey(7), 1)
    q = jnp.asarray(np.random.default_rng(0).normal(size=4096), jnp.float32)
    uniform = jnp.full(4096, -np.log(4096), jnp.float32)
    metrics = exact_metrics(WORLD, policy_log_probs_tree(policy), judge_scores_all(judges), q, uniform, 4)
    np.testing.assert_allclose(metrics["policy_entropy"], np.log(4096), rtol=1e-6)
    np.testing.assert_allclose(metrics["kl_to_initial"], 0.0, atol=1e-6)
    np.testing.assert_allclose(metrics["policy_quality"], np.asarray(q).mean(), atol=1e-6)


@pytest.mark.parametrize("width", WIDTHS)
def test_gru_step_with_token_gates_equals_the_equinox_cell(width):
    policy = Policy(key=jax.random.PRNGKey(8), hidden=width)
    gates = token_gates(policy.embedding, policy.cell)
    hidden = jax.random.normal(jax.random.PRNGKey(9), (width,))
    for token in range(9):
        expected = policy.cell(policy.embedding(jnp.array(token)), hidden)
        np.testing.assert_allclose(gru_step(policy.cell, gates[token], hidden), expected, rtol=1e-6, atol=1e-6)
