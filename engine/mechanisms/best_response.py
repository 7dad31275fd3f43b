"""The policy's exact best response to the judges, for ONE run (docs/mean_field.md §9).

Under gradient_estimator `exact` the policy's loss is −E_π[J] + β·KL(π‖π₀) − c·H(π) (β = kl_penalty with
kl_estimator exact or k1, c = entropy_regulariser + entropy_exact). Over the whole simplex its minimiser
for the judges held fixed is closed-form (Gibbs' variational principle):

    log π*(x) = (β·log π₀(x) + J(x))/(β + c) − logsumexp over the N of the same,

J the ensemble's mean score. `policy_log_probs` is the policy's distribution as the rest of the loop
reads it: the policy's own, or under policy_response `best_response` π* of the judges now, so the
judges step against the fast player's equilibrium (the slow player's reduced dynamics).
"""

import jax
import jax.numpy as jnp

from engine.core import exact
from engine.core.state import RunState
from engine.knobs import Condition, Variant, code
from engine.mechanisms.policy_rules import exact_entropy_weight


def closed_form_applies(condition: Condition):
    """Does the run's exact policy loss have the closed-form best response: β > 0 on KL(π‖π₀) (kl_estimator
    exact or k1; k3's penalty is the forward KL(π₀‖π), whose best response has none)?"""
    return (condition.kl_penalty > 0) & (condition.kl_estimator != code("kl_estimator", "k3"))


def best_response_log_probs(scores, initial_log_probs, condition: Condition):
    """log π* of all N, (N,), the maximiser of E_π[J] − β·KL(π‖π₀) + c·H(π) for these (N,) scores J
    and log π₀; meaningful where `closed_form_applies`."""
    beta = condition.kl_penalty
    return jax.nn.log_softmax((beta * initial_log_probs + scores) / (beta + exact_entropy_weight(condition)))


def policy_log_probs(state: RunState, condition: Condition, variant: Variant):
    """log π of all N as the loop reads it: π* of the judges now under policy_response best_response,
    else the policy's own (by the prefix tree)."""
    if variant.policy_response == "best_response":
        scores = jax.lax.stop_gradient(exact.judge_scores_all(state.judges))
        return best_response_log_probs(scores, state.initial_log_probs, condition)
    return exact.policy_log_probs_tree(state.policy)


def best_response_kl(log_probs, response_log_probs, condition: Condition):
    """KL(π‖π*) of the policy's log π against the best response's: how far the fast player is from
    best-responding; NaN where the closed form does not apply."""
    return jnp.where(closed_form_applies(condition), exact.kl(log_probs, response_log_probs), jnp.nan)
