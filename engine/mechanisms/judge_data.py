"""Where the judges' self-labelled pairs come from (`judge_data`; docs/grounding.md).

`fresh` (the reference): two fresh batches from the current policy. `accumulate`: the mixture of
the policies of every inner step so far, equally weighted per inner step, the data every earlier
step would have drawn; `window`: that mixture over the last `judge_data_window` outer iterations
only. The mixture is exact: a run keeps Σ π over the inner steps (π of all N sequences by the
prefix tree, after each step's policy update) in `RunState.policy_sums`, one slot per outer
iteration of its window, slot j holding iteration t − j (a shift register: each outer iteration
shifts it by one and starts slot 0 at zero), or one slot never cleared under `accumulate`. The
pairs are drawn from the sum by inverse CDF; the judge still labels them itself.

Every function handles ONE run.
"""

import jax
import jax.numpy as jnp

from engine.core import exact
from engine.core.models import PolicyModel
from engine.core.state import RunState
from engine.core.world import World, all_sequences
from engine.knobs import Condition, Variant, code
from engine.mechanisms.best_response import policy_log_probs


def fresh_pairs(policy: PolicyModel, key, batch_size: int):
    """Two fresh batches (a, b) of batch_size sequences each from the policy, (batch_size, L) each."""
    tokens, _ = policy.sample(jax.random.uniform(key, (2 * batch_size, policy.world.seq_len)))
    return tokens[:batch_size], tokens[batch_size:]


def add_policy(policy_sums, log_probs):
    """Slot 0 (this outer iteration, or every step under `accumulate`) gains π of the policy now, from its
    log π of all N sequences (`best_response.policy_log_probs`).

    One pass over the prefix tree of all N sequences per inner step: the policy changes at every
    step (each takes an Adam step), and the mixture weighs every inner step equally.
    """
    return policy_sums.at[0].add(jnp.exp(jax.lax.stop_gradient(log_probs)))


def begin_iteration(policy_sums, condition: Condition):
    """Under `window` the slots shift by one outer iteration (the oldest drops out) and slot 0
    starts at zero; under `accumulate` nothing changes."""
    shifted = jnp.concatenate([jnp.zeros_like(policy_sums[:1]), policy_sums[:-1]])
    return jnp.where(condition.judge_data == code("judge_data", "window"), shifted, policy_sums)


def mixture(policy_sums, condition: Condition):
    """The unnormalised mixture of the run's past policies, (N,): Σ over its slots j < window
    (slot 0 alone under `accumulate`), summed in the order j = 0, 1, ... Slots beyond a run's
    window (a group keeps as many as its longest window) add exact zeros, last, so a run's bits do
    not depend on the group it runs in."""
    kept = jnp.where(condition.judge_data == code("judge_data", "window"), condition.judge_data_window, 1)
    total = policy_sums[0]
    for slot in range(1, len(policy_sums)):
        total = total + jnp.where(slot < kept, policy_sums[slot], 0.0)
    return total


def mixture_pairs(world: World, key, weights, batch_size: int):
    """Two batches (a, b) of batch_size sequences each, i.i.d. from the mixture (weights ∝ it)."""
    index = exact.sample_weighted(key, weights, 2 * batch_size)
    tokens = jnp.asarray(all_sequences(world))[index]
    return tokens[:batch_size], tokens[batch_size:]


def self_labelled_distribution(state: RunState, condition: Condition, variant: Variant):
    """The distribution (N,) the self-labelled pairs' sequences are drawn from, each independently:
    π where the run keeps no past policies (`fresh`; the best response under policy_response
    `best_response`), else the normalised mixture (gradient_estimator `exact` sums over it instead of
    drawing from it). Held fixed by the judges' steps, which differentiate in the judges only; not by
    `stop_gradient`, so a derivative of the whole step in the policy sees it (engine.host.stability)."""
    if state.policy_sums is None:
        return jnp.exp(policy_log_probs(state, condition, variant))
    weights = mixture(state.policy_sums, condition)
    return weights / weights.sum()


def self_labelled_pairs(state: RunState, condition: Condition, key, batch_size: int):
    """The pairs of the judges' self-labelled step (and a learning meta-judge's): fresh from the
    policy where the run keeps no past policies (`fresh`: the reference's code), else from the mixture."""
    if state.policy_sums is None:
        return fresh_pairs(state.policy, key, batch_size)
    return mixture_pairs(state.world, key, mixture(state.policy_sums, condition), batch_size)
