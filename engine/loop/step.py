"""One inner step for a batch of runs sharing a `Variant`, as a list of stages:

1. the policy's update (its rule, plus the exact regularisers where a run has them); none under
   policy_response `best_response`, where the policy is the best response to the judges now
   (`engine.mechanisms.best_response`) wherever the loop reads it;
2. the updated policy joins the mixture of past policies (judge_data `accumulate`, `window`);
3. the judges' self-labelled step, every `judge_update_every` inner steps (not when frozen), on
   fresh policy pairs or pairs from that mixture;
4. the oracle-pair step (`anchor_fraction`), with the self-labelled step's cadence, where it
   fits the iteration's `oracle_budget`;
5. the meta-judge's steps (meta_source `judge`): its own self-labelled step (`meta_learns`),
   then the meta step on its labels, every `meta_update_every` inner steps;
6. the held-out meta-correction (meta_source `holdout`), every `meta_update_every` steps.

A stage a run's variant lacks is not in its program at all. A stage some runs of the batch
skip runs under `when_any_due`: outside the vmap, so a step on which no run of the batch is
due costs nothing (inside a vmap, `lax.cond` would run both branches).

Under gradient_estimator `exact` (docs/mean_field.md) stages 1, 3 and 4 take the expectation of
their sampled gradient, exactly, and the step draws no random numbers at all (the meta-judge and
dpo have no exact mode: engine.host.combinations refuses them); stage 6 is the same in both modes.
"""

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp

from engine.core.keys import run_keys
from engine.core.optim import is_due
from engine.core.state import PairStats
from engine.knobs import Sizes, Variant
from engine.mechanisms.best_response import policy_log_probs
from engine.mechanisms.grounding import within_budget
from engine.mechanisms.holdout_meta import holdout_meta_update
from engine.mechanisms.judge_data import add_policy
from engine.mechanisms.judge_steps import (
    expected_oracle_pair_update,
    expected_self_labelled_update,
    oracle_pair_update,
    pull_to_pretrained,
    self_labelled_update,
)
from engine.mechanisms.meta_judge import META_KEY_TAG, meta_judge_self_labelled_update, meta_judge_update
from engine.mechanisms.policy_rules import (
    apply_policy_gradient,
    dpo_gradient,
    exact_regulariser_gradient,
    expected_policy_gradient,
    reinforce_gradient,
    uses_exact_regulariser,
)


def when_any_due(due, per_run_step, batch, *per_run_args):
    """`per_run_step(item, *args)` vmapped over the batch where any run is due, else `batch` as is.

    `due` is (runs,) bool; the step itself decides what a run that is not due keeps.
    """
    return jax.lax.cond(due.any(), lambda b: jax.vmap(per_run_step)(b, *per_run_args), lambda b: b, batch)


class StepKeys(NamedTuple):
    """The keys of one inner step, (runs, 2) each: every stage draws from its own."""

    policy: jax.Array
    judge: jax.Array  # the self-labelled step (and the meta-judge's, on the same pairs)
    oracle: jax.Array
    meta: jax.Array  # the meta-judge's meta step


def step_keys(seeds, global_step) -> StepKeys:
    loop_keys = jax.vmap(lambda seed: run_keys(seed)["loop"])(seeds)
    split = jax.vmap(lambda key: jax.random.split(jax.random.fold_in(key, global_step), 3))(loop_keys)
    meta = jax.vmap(lambda key: jax.random.fold_in(jax.random.fold_in(key, global_step), META_KEY_TAG))(loop_keys)
    return StepKeys(split[:, 0], split[:, 1], split[:, 2], meta)


def policy_stage(states, runs, q_stars, keys: StepKeys | None, variant: Variant, sizes: Sizes):
    """Every run's policy step under its rule, with the exact regularisers where a run has them
    (under gradient_estimator `exact`: the rule's expected gradient, its regularisers included)."""
    if variant.gradient_estimator == "exact":
        grads = jax.vmap(expected_policy_gradient)(states, runs.condition)
        return jax.vmap(lambda s, g: apply_policy_gradient(s, g, PairStats.zero()))(states, grads)
    if variant.update_rule == "dpo":
        grads, pair_stats = jax.vmap(lambda s, r, k, q: dpo_gradient(s, r, k, variant, sizes, q))(
            states, runs, keys.policy, q_stars
        )
    else:
        grads, pair_stats = jax.vmap(lambda s, r, k: reinforce_gradient(s, r, k, variant, sizes))(
            states, runs, keys.policy
        )
    if variant.policy_regularised:
        grads = when_any_due(
            uses_exact_regulariser(runs.condition),
            lambda g, s, c: jax.tree.map(jnp.add, g, exact_regulariser_gradient(s.policy, s, c)),
            grads,
            states,
            runs.condition,
        )
    return jax.vmap(apply_policy_gradient)(states, grads, pair_stats)


def judge_stages(states, runs, q_stars, keys: StepKeys | None, judge_due, pull, variant: Variant, sizes: Sizes):
    """The self-labelled step, then the oracle-pair step (runs of the group without oracle pairs
    skip it: engine.host.plan.group_variants); under gradient_estimator `exact`, their expected steps."""
    condition = runs.condition
    exact = variant.gradient_estimator == "exact"
    if exact:
        states = when_any_due(
            judge_due,
            lambda s, c, d, p: expected_self_labelled_update(s, c, d, variant, p),
            states,
            condition,
            judge_due,
            pull,
        )
    else:
        states = when_any_due(
            judge_due,
            lambda s, c, k, d, p: self_labelled_update(s, c, k, d, sizes.batch_size, p),
            states,
            condition,
            keys.judge,
            judge_due,
            pull,
        )
    if not variant.n_oracle_pairs:
        return states
    fits = within_budget(states, condition, variant.n_oracle_pairs, variant.oracle_budgeted)
    oracle_due = judge_due & (condition.anchor_fraction > 0) & fits
    if exact:
        return when_any_due(
            oracle_due,
            lambda s, c, d, p: expected_oracle_pair_update(s, c, d, variant, p),
            states,
            condition,
            oracle_due,
            pull,
        )
    return when_any_due(
        oracle_due,
        lambda s, c, k, d, q, p: oracle_pair_update(s, c, k, d, q, variant, p),
        states,
        condition,
        keys.oracle,
        oracle_due,
        q_stars,
        pull,
    )


def meta_judge_stages(states, runs, keys: StepKeys, judge_due, meta_due, pull, variant: Variant, sizes: Sizes):
    """The meta-judge's own self-labelled step (`meta_learns`), then its meta step (the judges' step
    on the meta-judge's labels, with their pull to pretrained weights where the variant has one)."""
    learns = judge_due & runs.condition.meta_learns
    states = when_any_due(
        learns,
        lambda s, c, k, d: meta_judge_self_labelled_update(s, c, k, d, sizes.batch_size),
        states,
        runs.condition,
        keys.judge,
        learns,
    )
    return when_any_due(
        meta_due,
        lambda s, r, k, d, p: meta_judge_update(s, r, k, d, sizes.batch_size, variant.n_meta_pairs, p),
        states,
        runs,
        keys.meta,
        meta_due,
        pull,
    )


def make_inner_step(variant: Variant, sizes: Sizes, holdout):
    """`inner_step(states, runs, q_stars, outer, inner) -> states` for a batch of runs sharing `variant`.

    holdout: the held-out pairs (`holdout_pair_indices`) when the variant has them, else None.
    """

    def inner_step(states, runs, q_stars, outer, inner):
        condition = runs.condition
        exact = variant.gradient_estimator == "exact"
        keys = None if exact else step_keys(runs.seed, outer * sizes.steps_per_iter + inner)
        if variant.policy_response == "trained":
            states = policy_stage(states, runs, q_stars, keys, variant, sizes)
        if variant.judge_data_slots:
            log_probs = jax.vmap(lambda s, c: policy_log_probs(s, c, variant))(states, condition)
            states = eqx.tree_at(lambda s: s.policy_sums, states, jax.vmap(add_policy)(states.policy_sums, log_probs))
        judge_due = is_due(condition.judge_update_every, inner) & ~condition.freeze_judge
        pull = jax.vmap(lambda r: pull_to_pretrained(r, variant))(runs) if variant.judge_anchored else None
        states = judge_stages(states, runs, q_stars, keys, judge_due, pull, variant, sizes)
        meta_due = is_due(condition.meta_update_every, inner)
        if variant.meta_judge:
            states = meta_judge_stages(states, runs, keys, judge_due, meta_due, pull, variant, sizes)
        if variant.n_holdout:
            states = when_any_due(
                meta_due,
                lambda s, r, d, q, p: holdout_meta_update(s, r, d, q, holdout, variant, p),
                states,
                runs,
                meta_due,
                q_stars,
                pull,
            )
        return states

    return inner_step
