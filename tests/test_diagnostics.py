import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from engine.diagnostics import exact_metrics, judge_scores_all, policy_log_probs_all, spearman
from engine.models import Policy, make_judges
from engine.world import reference_q_star


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
    q = reference_q_star()
    initial = policy_log_probs_all(Policy(key=jax.random.PRNGKey(2)))
    metrics = exact_metrics(policy, judges, q, initial, 4)
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
