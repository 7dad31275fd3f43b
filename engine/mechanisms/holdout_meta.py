"""The held-out meta-correction (meta_source `holdout`): a fixed set of q*-labelled pairs on
which each judge is measured every `meta_update_every` inner steps, and trained once where
its accuracy is below `meta_accuracy_threshold`."""

import equinox as eqx
import jax
import jax.numpy as jnp

from engine.core.optim import tree_select
from engine.core.state import RunInputs, RunState
from engine.core.world import N_SEQUENCES
from engine.mechanisms.judge_steps import judge_pair_step, pair_loss, q_star_labelled_pairs

HOLDOUT_KEY = 0  # the held-out pairs are drawn once from this key: the same for every run


def holdout_pair_indices(n_holdout: int):
    """The fixed held-out pairs: two (n_holdout,) index arrays into the 4096."""
    key_a, key_b = jax.random.split(jax.random.PRNGKey(HOLDOUT_KEY))
    return (
        jax.random.randint(key_a, (n_holdout,), 0, N_SEQUENCES),
        jax.random.randint(key_b, (n_holdout,), 0, N_SEQUENCES),
    )


def holdout_accuracy(judges, q_star, holdout):
    """Mean over the ensemble of each judge's pairwise accuracy on the held-out pairs."""
    tokens_a, tokens_b, labels = q_star_labelled_pairs(q_star, *holdout)
    return jax.vmap(lambda judge: pair_loss(judge, tokens_a, tokens_b, labels)[1])(judges).mean()


def holdout_meta_update(state: RunState, run: RunInputs, due, q_star, holdout, pull=None) -> RunState:
    """Measure each judge on the held-out pairs; one q*-labelled step where it is below threshold.

    The accuracy and the step's gradient come from one forward pass over the held-out pairs.
    The step runs for a frozen judge too, as in the reference.
    """
    tokens_a, tokens_b, labels = q_star_labelled_pairs(q_star, *holdout)
    condition = run.condition

    def one_judge(judge, opt_state, pretrained):
        member_pull = None if pull is None else (pretrained, pull.weight)
        new_judge, new_opt, accuracy = judge_pair_step(judge, opt_state, tokens_a, tokens_b, labels, member_pull)
        keep = due & (accuracy < condition.meta_accuracy_threshold)
        judge, opt_state = tree_select(keep, (new_judge, new_opt), (judge, opt_state))
        return judge, opt_state, accuracy

    pretrained = None if pull is None else pull.pretrained
    judges, judge_opt, accuracy = eqx.filter_vmap(one_judge)(state.judges, state.judge_opt, pretrained)
    meta_accuracy = jnp.where(due, accuracy.mean(), state.meta_accuracy)
    return eqx.tree_at(lambda s: (s.judges, s.judge_opt, s.meta_accuracy), state, (judges, judge_opt, meta_accuracy))
