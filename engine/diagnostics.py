"""Exact diagnostics: sums over all 4096 outputs, computed in JAX inside the program."""

import jax
import jax.numpy as jnp
import jax.scipy.stats
import numpy as np

from engine.exact import policy_log_probs_tree
from engine.models import Judge, Policy, ensemble_scores
from engine.world import all_sequences


def spearman(x, y):
    """Spearman rank correlation of two vectors (average ranks for ties, like scipy)."""
    rank_x = jax.scipy.stats.rankdata(x)
    rank_y = jax.scipy.stats.rankdata(y)
    return jnp.corrcoef(rank_x, rank_y)[0, 1]


def judge_scores_all(judges: Judge):
    """Ensemble-mean score J(x) of every one of the 4096 sequences."""
    return ensemble_scores(judges, jnp.asarray(all_sequences())).mean(axis=0)


def policy_log_probs_all(policy: Policy):
    """log π(x) of every one of the 4096 sequences by teacher forcing (the slow reference for
    `engine.exact.policy_log_probs_tree`, which the diagnostics use)."""
    return jax.vmap(policy.log_prob)(jnp.asarray(all_sequences()))


def exact_metrics(policy: Policy, judges: Judge, q_star, distributions: bool = False) -> dict:
    """The per-iteration diagnostics of one run, each exact over all outputs.

    distributions: also return the (4096,) arrays they are sums over, `policy_probability`
    π(x) and `judge_score` J(x) (ensemble mean), in `engine.world.all_sequences` order.
    """
    log_probs = policy_log_probs_tree(policy)
    probs = jnp.exp(log_probs)
    scores = judge_scores_all(judges)
    # Elementwise product then sum, not a dot: a vmapped dot may pick a different kernel
    # for a different number of runs, and the last bit would then depend on the batch.
    metrics = {
        "policy_quality": jnp.sum(probs * q_star),
        "judge_alignment": spearman(scores, q_star),
        "policy_entropy": -jnp.sum(probs * log_probs),
        "judge_perceived_quality": jnp.sum(probs * scores),
    }
    if distributions:
        metrics |= {"policy_probability": probs, "judge_score": scores}
    return metrics


METRICS = (
    "policy_quality",
    "judge_alignment",
    "policy_entropy",
    "judge_perceived_quality",
    "meta_judge_accuracy",
)

UNITS = {
    "policy_quality": "q* (expected under the policy)",
    "judge_alignment": "Spearman rho",
    "policy_entropy": "nats",
    "judge_perceived_quality": "J (expected under the policy)",
    "meta_judge_accuracy": "fraction of held-out pairs",
    "policy_probability": "probability π(x)",
    "judge_score": "J(x) (ensemble mean)",
}

# Saved with `save_distributions`, along a `sequence` dimension (engine.results).
DISTRIBUTIONS = ("policy_probability", "judge_score")

UNIFORM_ENTROPY = float(np.log(4096))
