"""The pure functions of one group of runs sharing a `Variant`, each over a batch of runs:
`start`, `advance` (a `lax.scan` of the inner step over one record interval), `measure`.
`engine.host.program` stitches the groups into one jitted, sharded program."""

import functools
from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp

from engine.core import exact
from engine.core.state import RunInputs, init_run
from engine.core.world import run_q_star
from engine.knobs import Sizes, Variant, record_interval, records_per_iteration, world_of
from engine.loop.diagnostics import run_metrics
from engine.loop.step import make_inner_step
from engine.mechanisms import judge_data
from engine.mechanisms.grounding import expected_label_sums
from engine.mechanisms.holdout_meta import holdout_accuracy, holdout_pair_indices
from engine.mechanisms.judge_reset import reset_judges


class BatchRun(NamedTuple):
    """The pure functions of one group of runs; each takes and returns a batch of runs.

    start(runs) -> states right after pretraining
    step(states, runs, q_stars, outer, inner) -> states after one inner step
    advance(states, runs, outer, interval) -> states after the `interval`-th run of
        `record_every` inner steps of outer iteration `outer` (the whole iteration by default)
    measure(states, runs) -> one record: dicts of (runs,) arrays, plus (runs, N) arrays
        π(x) and J(x) when the study saves distributions
    The host measures after start and after every advance, so the diagnostics (an exact pass
    over the N outputs) are one piece of code that both share, compiled once.
    """

    start: Callable
    step: Callable
    advance: Callable
    measure: Callable


def begin_iteration(states, runs: RunInputs):
    """`meta_accuracy` starts each outer iteration as NaN, so a record holds the last accuracy
    measured so far in it; π_ref (dpo's `iteration` reference) is the policy now; the
    iteration's pair and meta-judge sums and its q*-labelled comparisons start at zero; a
    judge_data window moves on by one iteration."""
    states = eqx.tree_at(
        lambda s: (s.meta_accuracy, s.reference_log_probs, s.pairs, s.oracle_spent),
        states,
        (
            jnp.full_like(states.meta_accuracy, jnp.nan),
            jax.lax.stop_gradient(jax.vmap(exact.policy_log_probs_tree)(states.policy)),
            jax.tree.map(jnp.zeros_like, states.pairs),
            jnp.zeros_like(states.oracle_spent),
        ),
    )
    if states.meta is not None:
        zeros = (jnp.zeros_like(states.meta.agreement_sum), jnp.zeros_like(states.meta.steps))
        states = eqx.tree_at(lambda s: (s.meta.agreement_sum, s.meta.steps), states, zeros)
    if states.policy_sums is not None:
        sums = jax.vmap(judge_data.begin_iteration)(states.policy_sums, runs.condition)
        states = eqx.tree_at(lambda s: s.policy_sums, states, sums)
    return states


def make_batch_run(variant: Variant, sizes: Sizes) -> BatchRun:
    """Vmapped start, step, advance and measure for a group of runs sharing `variant`."""
    world = world_of(sizes)
    holdout = holdout_pair_indices(world, variant.n_holdout) if variant.n_holdout else None
    inner_step = make_inner_step(variant, sizes, holdout)
    every, n_records = record_interval(sizes), records_per_iteration(sizes)
    distributions = sizes.save_distributions != "none"  # the host keeps every record's or the last

    def q_stars_of(runs: RunInputs):
        return jax.vmap(functools.partial(run_q_star, world))(runs.condition)

    def start(runs: RunInputs):
        states = jax.vmap(
            lambda run: init_run(run, variant.judge_data_slots, variant.policy_arch, variant.policy_hidden)
        )(runs)
        if holdout is not None:  # NaN for runs of the group without meta steps (engine.host.plan.group_variants)
            accuracy = jax.vmap(
                lambda judges, r, q: holdout_accuracy(judges, r, q, holdout, variant.imperfect_labeller)
            )(states.judges, runs, q_stars_of(runs))
            accuracy = jnp.where(runs.condition.meta_update_every > 0, accuracy, states.meta_accuracy)
            states = eqx.tree_at(lambda s: s.meta_accuracy, states, accuracy)
        if variant.gradient_estimator == "exact" and variant.n_oracle_pairs:
            label_sums = jax.vmap(lambda q, c: expected_label_sums(world, q, c, variant.imperfect_labeller))(
                q_stars_of(runs), runs.condition
            )
            states = eqx.tree_at(lambda s: s.oracle_label_sums, states, label_sums, is_leaf=lambda x: x is None)
        return states

    def measure(states, runs: RunInputs):
        return jax.vmap(lambda s, r, q: run_metrics(s, r, q, variant, distributions))(states, runs, q_stars_of(runs))

    def advance(states, runs: RunInputs, outer, interval):
        """`every` inner steps of outer iteration `outer`, from inner step interval·every; the first
        interval begins the iteration, the last ends it with the reset (docs/reference.md)."""
        q_stars = q_stars_of(runs)

        def reset(states):
            return jax.vmap(reset_judges, in_axes=(0, 0, None))(states, runs, outer)

        def inner_body(states, inner):
            return inner_step(states, runs, q_stars, outer, inner), None

        def when(condition, update, states):
            """update(states) where `condition` holds; with one record per iteration it always does."""
            return update(states) if n_records == 1 else jax.lax.cond(condition, update, lambda s: s, states)

        states = when(interval == 0, lambda s: begin_iteration(s, runs), states)
        states, _ = jax.lax.scan(inner_body, states, interval * every + jnp.arange(every))
        return when(interval == n_records - 1, reset, states)

    return BatchRun(start, inner_step, advance, measure)
