import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from engine.core.exact import judge_scores_all, policy_log_probs_all, policy_log_probs_tree, spearman
from engine.core.models import Policy, make_judges
from engine.core.state import init_run, make_run_inputs
from engine.core.world import REFERENCE_WORLD as WORLD
from engine.core.world import reference_q_star
from engine.knobs import DEFAULTS, condition_arrays, variant_of
from engine.loop.diagnostics import DIVERGED_PARAMETER, exact_metrics, run_metrics


def test_spearman_equals_scipy_including_ties():
    rng = np.random.default_rng(0)
    x = rng.normal(size=4096).astype(np.float32)
    y = (x + rng.normal(size=4096)).astype(np.float32)
    tied = np.round(y, 1)
    for a, b in ((x, y), (x, tied), (tied, tied)):
        expected = scipy.stats.spearmanr(a, b).statistic
        np.testing.assert_allclose(float(spearman(jnp.asarray(a), jnp.asarray(b))), expected, atol=1e-5)


def test_exact_metrics_equal_brute_force_sums():
    policy = Policy(key=jax.random.PRNGKey(0))
    judges = make_judges(jax.random.PRNGKey(1), 3)
    q = reference_q_star(WORLD)
    initial = policy_log_probs_all(Policy(key=jax.random.PRNGKey(2)))
    metrics = exact_metrics(WORLD, policy_log_probs_tree(policy), judge_scores_all(judges), q, initial, 4)
    log_p = np.asarray(policy_log_probs_all(policy), np.float64)
    p = np.exp(log_p)
    scores = np.asarray(judge_scores_all(judges), np.float64)
    np.testing.assert_allclose(metrics["policy_quality"], p @ np.asarray(q), rtol=1e-5)
    np.testing.assert_allclose(metrics["policy_entropy"], -(p @ log_p), rtol=1e-5)
    np.testing.assert_allclose(metrics["judge_perceived_quality"], p @ scores, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        metrics["judge_alignment"], scipy.stats.spearmanr(scores, np.asarray(q)).statistic, atol=1e-5
    )
    kl = p @ (log_p - np.asarray(initial, np.float64))
    np.testing.assert_allclose(metrics["kl_to_initial"], kl, rtol=1e-4, atol=1e-6)
    assert np.isclose(float(metrics["top_probability"]), p.max(), rtol=1e-5)
    assert int(metrics["top_sequence"]) == int(p.argmax())


def with_first_entries(tree, value):
    """`tree` with the first entry of every array set to `value`."""
    return jax.tree.map(lambda x: x.at[(0,) * x.ndim].set(value) if eqx.is_array(x) else x, tree)


def test_a_run_is_unhealthy_once_a_parameter_leaves_float32_sense_finite_or_not():
    """`diverged` must not hinge on whether a CPU's rounding turns a blow-up into NaN: a parameter
    beyond DIVERGED_PARAMETER counts even while finite."""
    condition = jax.tree.map(lambda a: jnp.asarray(a[0]), condition_arrays([DEFAULTS]))
    run = make_run_inputs(condition, jnp.int32(0), make_judges(jax.random.PRNGKey(0), 1), jnp.zeros(1, jnp.int32))
    state = init_run(run)
    healthy = jax.jit(lambda s: run_metrics(s, run, reference_q_star(WORLD), variant_of(DEFAULTS))["healthy"])
    assert bool(healthy(state))
    for value in (10 * DIVERGED_PARAMETER, -10 * DIVERGED_PARAMETER, jnp.nan, jnp.inf):
        broken = eqx.tree_at(lambda s: s.policy, state, with_first_entries(state.policy, value))
        assert not bool(healthy(broken)), value
    large = eqx.tree_at(lambda s: s.judges, state, with_first_entries(state.judges, 0.5 * DIVERGED_PARAMETER))
    assert bool(healthy(large))  # large, but within the bound
