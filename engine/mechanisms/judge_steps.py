"""The judge's pair steps: self-labelled on policy pairs (`judge_data`), on q*-labelled oracle
pairs (`anchor_fraction`), and the pull back to the pretrained weights (`judge_anchor`) that
every judge step of a run can carry.

Every step here is one Adam step of every judge of the ensemble on the same pairs, kept per
judge where a mask says so; each handles ONE run.
"""

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from engine.core.models import JudgeModel
from engine.core.optim import adam_update, params, tree_select
from engine.core.state import RunInputs, RunState, ensemble_size
from engine.core.world import N_SEQUENCES
from engine.knobs import Condition, Variant
from engine.mechanisms.grounding import labelled_pairs, noise_key, spend
from engine.mechanisms.judge_data import self_labelled_pairs


class PullToPretrained(NamedTuple):
    """The `judge_anchor` regulariser of a run: c·‖θ_J − θ_J(pretrained)‖² in the judge's loss."""

    pretrained: JudgeModel  # stacked like the run's judges
    weight: jax.Array  # c


def pull_to_pretrained(run: RunInputs, variant: Variant) -> PullToPretrained | None:
    """The run's pull where its variant has one (None: the loss has no such term at all)."""
    return PullToPretrained(run.pretrained, run.condition.judge_anchor) if variant.judge_anchored else None


def pair_loss(judge: JudgeModel, tokens_a, tokens_b, labels=None):
    """Binary cross-entropy of sigmoid(J(a) - J(b)); labels=None means self-labelled.

    Self-labels y = [J(a) > J(b)] come from the very forward pass the loss uses, so the
    judge's labelling and its training share one evaluation. Returns (loss, accuracy of
    the judge's preferences against `labels`).
    """
    scores = judge.scores(jnp.concatenate([tokens_a, tokens_b]))
    diff = scores[: len(tokens_a)] - scores[len(tokens_a) :]
    prefers_a = diff > 0
    labels = jax.lax.stop_gradient(prefers_a) if labels is None else labels
    loss = optax.sigmoid_binary_cross_entropy(diff, labels.astype(diff.dtype)).mean()
    return loss, jnp.mean(prefers_a == labels)


def judge_pair_step(judge, opt_state, tokens_a, tokens_b, labels=None, pull=None):
    """One Adam step of one judge on pairs; returns (judge, opt_state, accuracy before).

    pull: None, or (pretrained judge, c) to add c·‖θ_J − θ_J(pretrained)‖² to the loss.
    """
    if pull is None:
        loss_fn = pair_loss
    else:

        def loss_fn(judge, *pairs):
            loss, accuracy = pair_loss(judge, *pairs)
            pretrained, weight = pull
            distance = sum(
                jnp.sum((a - b) ** 2)
                for a, b in zip(jax.tree.leaves(params(judge)), jax.tree.leaves(params(pretrained)))
            )
            return loss + weight * distance, accuracy

    (_, accuracy), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(judge, tokens_a, tokens_b, labels)
    updates, opt_state = adam_update(grads, opt_state)
    return eqx.apply_updates(judge, updates), opt_state, accuracy


def ensemble_pair_step(state: RunState, tokens_a, tokens_b, labels, step_mask, pull=None) -> RunState:
    """Every judge takes a pair step; judge m keeps it where step_mask[m] is true."""

    def one_judge(judge, opt_state, keep, pretrained):
        member_pull = None if pull is None else (pretrained, pull.weight)
        new_judge, new_opt, _ = judge_pair_step(judge, opt_state, tokens_a, tokens_b, labels, member_pull)
        return tree_select(keep, (new_judge, new_opt), (judge, opt_state))

    pretrained = None if pull is None else pull.pretrained
    judges, judge_opt = eqx.filter_vmap(one_judge)(state.judges, state.judge_opt, step_mask, pretrained)
    return eqx.tree_at(lambda s: (s.judges, s.judge_opt), state, (judges, judge_opt))


def self_labelled_update(state: RunState, condition: Condition, key, due, batch_size: int, pull=None) -> RunState:
    """The judges label and train on two batches: fresh from the (updated) policy, or drawn from
    the mixture of past policies (`judge_data`)."""
    mask = jnp.full((ensemble_size(state.judges),), due)
    return ensemble_pair_step(state, *self_labelled_pairs(state, condition, key, batch_size), None, mask, pull)


def oracle_pair_update(
    state: RunState, condition: Condition, key, due, q_star, variant: Variant, pull=None
) -> RunState:
    """One judge step on n_oracle_pairs uniform pairs labelled by the q* labeller (`anchor_fraction`),
    counted against `oracle_budget` (`due` says the step fits it: `engine.mechanisms.grounding`)."""
    n_oracle_pairs = variant.n_oracle_pairs
    index_a, index_b = jax.random.randint(key, (2, n_oracle_pairs), 0, N_SEQUENCES)
    pairs = labelled_pairs(q_star, condition, index_a, index_b, noise_key(key), variant.imperfect_labeller)
    mask = jnp.full((ensemble_size(state.judges),), due)
    state = ensemble_pair_step(state, *pairs, mask, pull)
    return spend(state, condition, due, n_oracle_pairs, variant.oracle_budgeted)
