"""The exact diagnostics of one record: sums over all N outputs, computed in JAX inside
the program, for ONE run; and the names and units of everything a record holds."""

import jax
import jax.numpy as jnp

from engine.core import exact
from engine.core.exact import judge_scores_all, spearman
from engine.core.models import JudgeModel, PolicyModel
from engine.core.optim import params
from engine.core.state import RunInputs, RunState
from engine.core.world import verbosity
from engine.mechanisms.bias import bias_metrics
from engine.mechanisms.meta_judge import meta_judge_metrics


def exact_metrics(
    policy: PolicyModel,
    judges: JudgeModel,
    q_star,
    initial_log_probs,
    n_candidates: int,
    verbosity=None,
    distributions: bool = False,
) -> dict:
    """The per-iteration diagnostics of one run, each exact over all outputs.

    initial_log_probs: log π₀ over the N (for the KL); n_candidates: the N of the
    best/worst-of-N gaps (order statistics of N i.i.d. draws from π, ranked by the judge).
    With `verbosity` (f over the N, `engine.core.world.verbosity`), the bias records too
    (`BIAS_METRICS`, `engine.mechanisms.bias.bias_metrics`), from the same π and J. With `distributions`,
    also the (N,) arrays they are sums over, `policy_probability` π(x) and `judge_score` J(x)
    (ensemble mean), in `engine.core.world.all_sequences(world)` order.
    """
    log_probs = exact.policy_log_probs_tree(policy)
    probs = jnp.exp(log_probs)
    scores = judge_scores_all(judges)
    top, top_probability = exact.policy_mode(log_probs)
    # Elementwise product then sum, not a dot: a vmapped dot may pick a different kernel
    # for a different number of runs, and the last bit would then depend on the batch.
    quality = jnp.sum(probs * q_star)
    metrics = {
        "policy_quality": quality,
        "judge_alignment": spearman(scores, q_star),
        "policy_entropy": -jnp.sum(probs * log_probs),
        "judge_perceived_quality": jnp.sum(probs * scores),
        "kl_to_initial": exact.kl(log_probs, initial_log_probs),
        "best_worst_gap_judge": exact.best_worst_gap(scores, scores, probs, n_candidates),
        "best_worst_gap_true": exact.best_worst_gap(scores, q_star, probs, n_candidates),
        "top_sequence": top,
        "top_probability": top_probability,
        **world_readings(quality, q_star),
    }
    if verbosity is not None:
        metrics.update(bias_metrics(policy.world, probs, scores, q_star, verbosity))
    if distributions:
        metrics |= {"policy_probability": probs, "judge_score": scores}
    return metrics


def world_readings(quality, q_star) -> dict:
    """The world's optimum and the policy quality read free of the world's q* scale (docs/worlds.md):
    its quantile among the N sequences' q* (the share at or below it) and its share of the gap from
    the uniform policy's quality (the mean q*, 0) to the optimum (1)."""
    best, mean = jnp.max(q_star), jnp.mean(q_star)
    return {
        "q_star_max": best,
        "policy_quality_quantile": jnp.mean(q_star <= quality),
        "policy_quality_gap_share": (quality - mean) / (best - mean),
    }


# What every results file holds, from the first version of the lab on (what analysis needs).
CORE_METRICS = ("policy_quality", "judge_alignment", "policy_entropy", "judge_perceived_quality")
# Metrics whose non-finite value marks a run as diverged (the others may be NaN by design).
FINITE_METRICS = (*CORE_METRICS, "kl_to_initial")
# A parameter beyond this magnitude marks a run as diverged even where it stayed finite: far past
# where float32 training means anything (the models' weights are O(1); every logit saturates), and
# whether a blow-up reaches inf or NaN depends on the CPU's rounding, this bound does not.
DIVERGED_PARAMETER = 1e6
SELF_REWARDING_METRICS = (
    "kl_to_initial",
    "best_worst_gap_judge",
    "best_worst_gap_true",
    "top_sequence",
    "top_probability",
    "pair_keep_rate",
    "train_pair_gap_judge",
    "train_pair_gap_true",
)
BIAS_METRICS = ("judge_bias", "judge_quality_weight", "policy_verbosity", "bias_cost")
META_JUDGE_METRICS = ("meta_judge_alignment", "meta_agreement")
WORLD_METRICS = ("q_star_max", "policy_quality_quantile", "policy_quality_gap_share")
METRICS = (
    *CORE_METRICS,
    *WORLD_METRICS,
    "meta_judge_accuracy",
    *SELF_REWARDING_METRICS,
    *BIAS_METRICS,
    *META_JUDGE_METRICS,
)

UNITS = {
    "policy_quality": "q* (expected under the policy)",
    "q_star_max": "q*: the world's optimum, max over all N sequences",
    "policy_quality_quantile": "fraction of the N sequences whose q* <= policy_quality (uniform policy ~0.5)",
    "policy_quality_gap_share": "(policy_quality - mean q*) / (max q* - mean q*): 0 uniform, 1 optimal",
    "judge_alignment": "Spearman rho",
    "policy_entropy": "nats",
    "judge_perceived_quality": "J (expected under the policy)",
    "meta_judge_accuracy": "fraction of held-out pairs",
    "kl_to_initial": "nats: KL(pi || pi_0), exact",
    "best_worst_gap_judge": "J: E[J(best of N) - J(worst of N)], N = n_candidates draws from pi, ranked by J",
    "best_worst_gap_true": "q*: E[q*(best of N) - q*(worst of N)], ranked by J",
    "top_sequence": "the policy's most probable sequence (arrows)",
    "top_probability": "probability of top_sequence",
    "pair_keep_rate": "fraction of this iteration's dpo pairs trained on (NaN: no pairs)",
    "train_pair_gap_judge": "J: mean J(chosen) - J(rejected) over this iteration's kept dpo pairs",
    "train_pair_gap_true": "q*: mean q*(chosen) - q*(rejected) over this iteration's kept dpo pairs",
    # docs/bias.md: the least-squares fit J ≈ c + w·q* + β·σ(q*)·f over the N outputs
    "judge_bias": "J per filler token / sigma(q*) (the fit's f coefficient; b for a judge scoring q* + b sigma f)",
    "judge_quality_weight": "J per unit of q* (the fit's q* coefficient; 1 for a judge scoring q* + b sigma f)",
    "policy_verbosity": "filler tokens (expected under the policy; uniform policy 0.5)",
    "bias_cost": "q* (expected max q* - best q* at the policy's verbosity level)",
    "meta_judge_alignment": "Spearman rho (meta-judge with q*)",
    "meta_agreement": "fraction of the meta-labelled pairs (mean over the iteration's meta steps)",
    "policy_probability": "probability π(x)",
    "judge_score": "J(x) (ensemble mean)",
}

# Saved with `save_distributions`, along a `sequence` dimension (engine.host.results).
DISTRIBUTIONS = ("policy_probability", "judge_score")


def run_metrics(state: RunState, run: RunInputs, q_star, n_candidates: int, distributions: bool = False) -> dict:
    """One record of one run: the exact diagnostics (with π(x) and J(x) when `distributions`),
    the iteration's meta and dpo-pair records, and `healthy` (every core metric finite and every
    parameter finite and within ±DIVERGED_PARAMETER)."""
    f = verbosity(state.world, run.condition.bias_token)
    metrics = exact_metrics(state.policy, state.judges, q_star, state.initial_log_probs, n_candidates, f, distributions)
    models = (state.policy, state.judges) + (() if state.meta is None else (state.meta.judge,))
    params_bounded = jnp.all(
        jnp.stack([jnp.all(jnp.abs(leaf) <= DIVERGED_PARAMETER) for leaf in jax.tree.leaves(params(models))])
    )  # false for NaN too
    values_finite = jnp.all(jnp.isfinite(jnp.stack([metrics[name] for name in FINITE_METRICS])))
    pairs = state.pairs
    with_pairs = pairs.kept / jnp.where(pairs.kept > 0, pairs.kept, jnp.nan)  # 1, or NaN without kept pairs
    return {
        **metrics,
        "meta_judge_accuracy": state.meta_accuracy,
        **meta_judge_metrics(state.meta, q_star),
        "pair_keep_rate": pairs.kept / jnp.where(pairs.offered > 0, pairs.offered, jnp.nan),
        "train_pair_gap_judge": with_pairs * pairs.judge_gap / jnp.maximum(pairs.kept, 1),
        "train_pair_gap_true": with_pairs * pairs.true_gap / jnp.maximum(pairs.kept, 1),
        "healthy": params_bounded & values_finite,
    }
