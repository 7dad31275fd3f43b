import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from engine.core.exact import policy_log_probs_all
from engine.core.models import Judge, Policy, ensemble_scores, gru_step, make_judges, token_gates
from engine.core.world import all_sequences
from engine.loop.diagnostics import exact_metrics


def n_params(module):
    return sum(leaf.size for leaf in jax.tree.leaves(eqx.filter(module, eqx.is_array)))


def test_parameter_counts_are_about_5k():
    # policy: 9x16 embedding + GRU(16->32) 4736 + 32x8+8 head; judge: 8x16 + 4736 + 33
    assert n_params(Policy(key=jax.random.PRNGKey(0))) == 144 + 4736 + 264
    assert n_params(Judge(key=jax.random.PRNGKey(0))) == 128 + 4736 + 33


def test_sampling_pass_log_prob_equals_teacher_forced_log_prob():
    policy = Policy(key=jax.random.PRNGKey(1))
    noise = jax.random.gumbel(jax.random.PRNGKey(2), (32, 4, 8))
    tokens, log_prob = jax.vmap(policy.sample)(noise)
    np.testing.assert_array_equal(log_prob, jax.vmap(policy.log_prob)(tokens))


def test_policy_is_a_distribution_and_sampling_follows_it():
    policy = Policy(key=jax.random.PRNGKey(3))
    probs = np.exp(np.asarray(policy_log_probs_all(policy), np.float64))
    assert abs(probs.sum() - 1) < 1e-5
    noise = jax.random.gumbel(jax.random.PRNGKey(4), (20000, 4, 8))
    tokens, _ = jax.vmap(policy.sample)(noise)
    first = np.bincount(np.asarray(tokens[:, 0]), minlength=8) / len(tokens)
    expected = probs.reshape(8, -1).sum(axis=1)
    assert np.abs(first - expected).max() < 0.015


def test_ensemble_member_zero_is_the_single_judge():
    single = make_judges(jax.random.PRNGKey(5), 1)
    ensemble = make_judges(jax.random.PRNGKey(5), 3)
    x = jnp.asarray(all_sequences()[:50])
    np.testing.assert_array_equal(ensemble_scores(single, x)[0], ensemble_scores(ensemble, x)[0])
    assert not np.allclose(ensemble_scores(ensemble, x)[0], ensemble_scores(ensemble, x)[1])


def test_uniform_policy_has_entropy_ln_4096_and_mean_quality():
    policy = Policy(key=jax.random.PRNGKey(6))
    policy = eqx.tree_at(lambda p: (p.head.weight, p.head.bias), policy, (jnp.zeros((8, 32)), jnp.zeros(8)))
    judges = make_judges(jax.random.PRNGKey(7), 1)
    q = jnp.asarray(np.random.default_rng(0).normal(size=4096), jnp.float32)
    uniform = jnp.full(4096, -np.log(4096), jnp.float32)
    metrics = exact_metrics(policy, judges, q, uniform, 4)
    np.testing.assert_allclose(metrics["policy_entropy"], np.log(4096), rtol=1e-6)
    np.testing.assert_allclose(metrics["kl_to_initial"], 0.0, atol=1e-6)
    np.testing.assert_allclose(metrics["policy_quality"], np.asarray(q).mean(), atol=1e-6)


def test_gru_step_with_token_gates_equals_the_equinox_cell():
    policy = Policy(key=jax.random.PRNGKey(8))
    gates = token_gates(policy.embedding, policy.cell)
    hidden = jax.random.normal(jax.random.PRNGKey(9), (32,))
    for token in range(9):
        expected = policy.cell(policy.embedding(jnp.array(token)), hidden)
        np.testing.assert_allclose(gru_step(policy.cell, gates[token], hidden), expected, rtol=1e-6, atol=1e-6)
