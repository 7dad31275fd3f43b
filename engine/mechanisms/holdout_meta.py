"""The held-out meta-correction (meta_source `holdout`): a fixed set of q*-labelled pairs on
which each judge is measured every `meta_update_every` inner steps, and trained once where
its accuracy is below `meta_accuracy_threshold` (and the correction fits `oracle_budget`).

The set is a dataset labelled once: its pairs are the same for every run, and the q* labeller
(`engine.mechanisms.grounding`) labels them once per run, its noise drawn from the run's own
key, so every measurement and correction of a run reads the same labels and the conditions of
a seed share them."""

import equinox as eqx
import jax
import jax.numpy as jnp

from engine.core.keys import run_keys
from engine.core.optim import tree_select
from engine.core.state import RunInputs, RunState
from engine.core.world import World
from engine.knobs import Variant
from engine.mechanisms.grounding import labelled_pairs, noise_key, spend, within_budget
from engine.mechanisms.judge_steps import judge_pair_step, pair_loss

HOLDOUT_KEY = 0  # the held-out pairs are drawn once from this key: the same for every run


def holdout_pair_indices(world: World, n_holdout: int):
    """The fixed held-out pairs: two (n_holdout,) index arrays into the N."""
    key_a, key_b = jax.random.split(jax.random.PRNGKey(HOLDOUT_KEY))
    return (
        jax.random.randint(key_a, (n_holdout,), 0, world.n_sequences),
        jax.random.randint(key_b, (n_holdout,), 0, world.n_sequences),
    )


def holdout_labelled_pairs(run: RunInputs, q_star, holdout, imperfect: bool):
    """The held-out pairs with the run's labels (the labeller's noise from the run's loop key;
    q* itself where the variant has no imperfect labeller)."""
    return labelled_pairs(run.world, q_star, run.condition, *holdout, noise_key(run_keys(run.seed)["loop"]), imperfect)


def holdout_accuracy(judges, run: RunInputs, q_star, holdout, imperfect: bool):
    """Mean over the ensemble of each judge's pairwise accuracy on the held-out pairs."""
    tokens_a, tokens_b, labels = holdout_labelled_pairs(run, q_star, holdout, imperfect)
    return jax.vmap(lambda judge: pair_loss(judge, tokens_a, tokens_b, labels)[1])(judges).mean()


def holdout_meta_update(state: RunState, run: RunInputs, due, q_star, holdout, variant: Variant, pull=None) -> RunState:
    """Measure each judge on the held-out pairs; one step on them where it is below threshold and
    the correction fits what is left of the iteration's `oracle_budget`.

    The accuracy and the step's gradient come from one forward pass over the held-out pairs.
    The step runs for a frozen judge too, as in the reference.
    """
    tokens_a, tokens_b, labels = holdout_labelled_pairs(run, q_star, holdout, variant.imperfect_labeller)
    condition = run.condition
    n_holdout = len(labels)
    fits = within_budget(state, condition, n_holdout, variant.oracle_budgeted)

    def one_judge(judge, opt_state, pretrained):
        member_pull = None if pull is None else (pretrained, pull.weight)
        new_judge, new_opt, accuracy = judge_pair_step(judge, opt_state, tokens_a, tokens_b, labels, member_pull)
        keep = due & (accuracy < condition.meta_accuracy_threshold) & fits
        judge, opt_state = tree_select(keep, (new_judge, new_opt), (judge, opt_state))
        return judge, opt_state, accuracy, keep

    pretrained = None if pull is None else pull.pretrained
    judges, judge_opt, accuracy, kept = eqx.filter_vmap(one_judge)(state.judges, state.judge_opt, pretrained)
    meta_accuracy = jnp.where(due, accuracy.mean(), state.meta_accuracy)
    state = eqx.tree_at(lambda s: (s.judges, s.judge_opt, s.meta_accuracy), state, (judges, judge_opt, meta_accuracy))
    return spend(state, condition, kept.any(), n_holdout, variant.oracle_budgeted)
