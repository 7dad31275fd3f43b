"""Exact diagnostics: sums over all 4096 outputs, computed in JAX inside the program."""

import jax
import jax.numpy as jnp
import jax.scipy.stats
import numpy as np

from engine.bias import bias_metrics
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


def exact_metrics(policy: Policy, judges: Judge, q_star, verbosity=None) -> dict:
    """The per-iteration diagnostics of one run, each exact over all outputs.

    With `verbosity` (f over the 4096, `engine.bias.verbosity`), the bias records too
    (`BIAS_METRICS`, `engine.bias.bias_metrics`), from the same π and J.
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
    if verbosity is not None:
        metrics.update(bias_metrics(probs, scores, q_star, verbosity))
    return metrics


CORE_METRICS = ("policy_quality", "judge_alignment", "policy_entropy", "judge_perceived_quality")
BIAS_METRICS = ("judge_bias", "judge_quality_weight", "policy_verbosity", "bias_cost")
META_JUDGE_METRICS = ("meta_judge_alignment", "meta_agreement")
METRICS = (*CORE_METRICS, "meta_judge_accuracy", *BIAS_METRICS, *META_JUDGE_METRICS)

UNITS = {
    "policy_quality": "q* (expected under the policy)",
    "judge_alignment": "Spearman rho",
    "policy_entropy": "nats",
    "judge_perceived_quality": "J (expected under the policy)",
    "meta_judge_accuracy": "fraction of held-out pairs",
    # docs/bias.md: the least-squares fit J ≈ c + w·q* + β·σ(q*)·f over the 4096 outputs
    "judge_bias": "J per filler token / sigma(q*) (the fit's f coefficient; b for a judge scoring q* + b sigma f)",
    "judge_quality_weight": "J per unit of q* (the fit's q* coefficient; 1 for a judge scoring q* + b sigma f)",
    "policy_verbosity": "filler tokens (expected under the policy; uniform policy 0.5)",
    "bias_cost": "q* (expected max q* - best q* at the policy's verbosity level)",
    "meta_judge_alignment": "Spearman rho (meta-judge with q*)",
    "meta_agreement": "fraction of the meta-labelled pairs (mean over the iteration's meta steps)",
}

UNIFORM_ENTROPY = float(np.log(4096))
