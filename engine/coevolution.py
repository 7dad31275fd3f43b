"""The whole co-evolution loop in one place: pretrain → one step → scan → vmap.

Levels, innermost first:
- per-judge and per-run updates (`policy_update`, `judge_pair_step`, `meta_update`);
- `batch_inner_step`: one inner step for a batch of runs. Optional sub-steps (judge
  update, anchor, meta) run under `lax.cond(any(due))` *outside* the vmap, so a step on
  which no run of the batch needs them costs nothing (inside a vmap, cond runs both
  branches);
- `make_batch_run`: `start` (fresh policy, pretrained judges, iteration-0 diagnostics),
  `step` (the batch inner step above) and `advance` (a `lax.scan` of `step` over one outer
  iteration, the reset, exact diagnostics; with `record_every` k, a scan over chunks of k
  steps with diagnostics after each), all over a batch of runs sharing a `Variant`;
- `pretrain_judge`: a `lax.while_loop` with an early stop, vmapped over judges.
`engine.plan` places runs on the program's run axis; `engine.program` stitches the groups
of runs into one jitted, sharded program.
"""

from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from engine.diagnostics import DISTRIBUTIONS, exact_metrics, judge_scores_all, spearman
from engine.knobs import Condition, Sizes, Variant, code, record_interval, records_per_iteration
from engine.models import Judge, Policy, ensemble_scores, select_init
from engine.world import N_SEQUENCES, SEQ_LEN, VOCAB, all_sequences, reference_q_star, transition_term

PRETRAIN_TARGET_NOISE = 0.1
HOLDOUT_KEY = 0


# Adam with its learning rate in the optimiser state, so it can differ per run.
ADAM = optax.inject_hyperparams(optax.adam, static_args=("b1", "b2", "eps", "eps_root"))


def adam_init(params, learning_rate):
    return ADAM(learning_rate).init(params)


def adam_update(grads, opt_state):
    """One Adam update; the learning rate is read from `opt_state` (set by `adam_init`)."""
    return ADAM(learning_rate=jnp.nan).update(grads, opt_state)


def run_keys(seed):
    """Named keys of one seed. Every condition of a seed gets the same ones (paired design)."""
    policy, judges, pretrain, loop = jax.random.split(jax.random.PRNGKey(seed), 4)
    return {"policy": policy, "judges": judges, "pretrain": pretrain, "loop": loop}


def q_star_of(transition_alpha):
    """The ground truth of one run: the reference q* plus an optional transition term."""
    return reference_q_star() + transition_alpha * transition_term()


def holdout_pairs(n_holdout: int):
    """The fixed meta held-out pairs (indices into the 4096), the same for every run."""
    key_a, key_b = jax.random.split(jax.random.PRNGKey(HOLDOUT_KEY))
    return (
        jax.random.randint(key_a, (n_holdout,), 0, N_SEQUENCES),
        jax.random.randint(key_b, (n_holdout,), 0, N_SEQUENCES),
    )


def initial_model(model_class, key, condition: Condition):
    """A fresh Policy or Judge, initialised as the run's `init` knob says (the reference's Flax
    defaults, or Equinox's); both draws come from the same key."""
    return select_init(model_class(key=key), key=key, reference=condition.init == code("init", "reference"))


def tree_select(mask, new, old):
    """`new` where mask (a scalar bool) is true, else `old`, leaf by leaf."""
    return jax.tree.map(lambda n, o: jnp.where(mask, n, o), new, old)


def _params(module):
    return eqx.filter(module, eqx.is_array)


def ensemble_size(judges: Judge) -> int:
    return jax.tree.leaves(judges)[0].shape[0]


# ----------------------------------------------------------------------------------------
# Pretraining: one judge, regressed on noisy q* until its Spearman reaches the target.


class PretrainResult(eqx.Module):
    judge: Judge
    steps: jax.Array
    alignment: jax.Array


class PretrainInputs(eqx.Module):
    """One judge to pretrain: its seed, its ensemble member index, and a condition that
    uses it (only the knobs declared `pretrain=True` are read)."""

    seed: jax.Array
    member: jax.Array
    condition: Condition


def pretrain_judge(job: PretrainInputs, sizes: Sizes) -> PretrainResult:
    """Pretrain member `job.member` of seed `job.seed`; stops at the first check >= target."""
    keys = run_keys(job.seed)
    judge = initial_model(Judge, jax.random.fold_in(keys["judges"], job.member), job.condition)
    data_key = jax.random.fold_in(keys["pretrain"], job.member)
    sequences = jnp.asarray(all_sequences())
    q_star = q_star_of(job.condition.transition_alpha)

    def train_step(carry, step):
        judge, opt_state = carry
        key_index, key_noise = jax.random.split(jax.random.fold_in(data_key, step))
        index = jax.random.randint(key_index, (sizes.batch_size,), 0, N_SEQUENCES)
        targets = q_star[index] + PRETRAIN_TARGET_NOISE * jax.random.normal(key_noise, (sizes.batch_size,))

        def loss_fn(judge):
            return jnp.mean((jax.vmap(judge)(sequences[index]) - targets) ** 2)

        grads = eqx.filter_grad(loss_fn)(judge)
        updates, opt_state = adam_update(grads, opt_state)
        return (eqx.apply_updates(judge, updates), opt_state), None

    def train_until_check(carry):
        judge, opt_state, steps, _ = carry
        (judge, opt_state), _ = jax.lax.scan(
            train_step, (judge, opt_state), steps + jnp.arange(sizes.pretrain_check_every)
        )
        alignment = spearman(judge_scores_all(jax.tree.map(lambda a: a[None], judge)), q_star)
        return judge, opt_state, steps + sizes.pretrain_check_every, alignment

    def below_target(carry):
        _, _, steps, alignment = carry
        return (alignment < job.condition.judge_init_alignment) & (steps < sizes.pretrain_max_steps)

    rate = jnp.where(job.condition.lr_judge_pretrain > 0, job.condition.lr_judge_pretrain, job.condition.lr_judge)
    start = (judge, adam_init(_params(judge), rate), jnp.int32(0), jnp.float32(-jnp.inf))
    judge, _, steps, alignment = jax.lax.while_loop(below_target, train_until_check, start)
    return PretrainResult(judge, steps, alignment)


# ----------------------------------------------------------------------------------------
# One run's state and its updates.


class RunInputs(eqx.Module):
    """Per-run constants: the condition, the seed, and the pretrained judges."""

    condition: Condition
    seed: jax.Array
    pretrained: Judge  # stacked (n_judges, ...)


def make_run_inputs(condition: Condition, seed, pretrained_table: Judge, pretrain_index) -> RunInputs:
    """Runs' inputs with their judges taken out of the pretraining table.

    pretrain_index: (runs, n_judges) rows of `pretrained_table` (stacked judges, one per
    pretraining job); works the same for one run or a batch.
    """
    return RunInputs(condition, seed, jax.tree.map(lambda leaf: leaf[pretrain_index], pretrained_table))


class RunState(eqx.Module):
    """Everything a run carries from step to step."""

    policy: Policy
    policy_opt: optax.OptState
    judges: Judge  # stacked (n_judges, ...)
    judge_opt: optax.OptState  # stacked (n_judges, ...)
    meta_accuracy: jax.Array  # last holdout accuracy measured this outer iteration (NaN: none)


def init_run(run: RunInputs) -> RunState:
    policy = initial_model(Policy, run_keys(run.seed)["policy"], run.condition)
    return RunState(
        policy=policy,
        policy_opt=adam_init(_params(policy), run.condition.lr_policy),
        judges=run.pretrained,
        judge_opt=fresh_judge_opt(run.pretrained, run.condition.lr_judge),
        meta_accuracy=jnp.float32(jnp.nan),
    )


def fresh_judge_opt(judges: Judge, lr_judge):
    return eqx.filter_vmap(lambda judge: adam_init(_params(judge), lr_judge))(judges)


def policy_update(state: RunState, run: RunInputs, key, sizes: Sizes) -> RunState:
    """Sample a batch, reward it with the ensemble's mean score, take one REINFORCE step.

    loss = -mean((r - mean r) log π) + entropy_bonus mean(log π)   [reference; the second
    term has zero expected gradient: a quirk]
         + entropy_regulariser mean((log π - mean log π)|const · log π)   [a real entropy
    regulariser: its gradient estimates -∇H].
    """
    condition = run.condition
    noise = jax.random.gumbel(key, (sizes.batch_size, SEQ_LEN, VOCAB))

    def loss_fn(policy):
        tokens, log_prob = jax.vmap(policy.sample)(noise)
        reward = ensemble_scores(state.judges, tokens).mean(axis=0)
        advantage = reward - reward.mean()
        surprise = jax.lax.stop_gradient(log_prob - log_prob.mean())
        return (
            -jnp.mean(advantage * log_prob)
            + condition.entropy_bonus * jnp.mean(log_prob)
            + condition.entropy_regulariser * jnp.mean(surprise * log_prob)
        )

    grads = eqx.filter_grad(loss_fn)(state.policy)
    updates, policy_opt = adam_update(grads, state.policy_opt)
    return eqx.tree_at(
        lambda s: (s.policy, s.policy_opt), state, (eqx.apply_updates(state.policy, updates), policy_opt)
    )


def pair_loss(judge: Judge, tokens_a, tokens_b, labels=None):
    """Binary cross-entropy of sigmoid(J(a) - J(b)); labels=None means self-labelled.

    Self-labels y = [J(a) > J(b)] come from the very forward pass the loss uses, so the
    judge's labelling and its training share one evaluation. Returns (loss, accuracy of
    the judge's preferences against `labels`).
    """
    scores = jax.vmap(judge)(jnp.concatenate([tokens_a, tokens_b]))
    diff = scores[: len(tokens_a)] - scores[len(tokens_a) :]
    prefers_a = diff > 0
    labels = jax.lax.stop_gradient(prefers_a) if labels is None else labels
    loss = optax.sigmoid_binary_cross_entropy(diff, labels.astype(diff.dtype)).mean()
    return loss, jnp.mean(prefers_a == labels)


def judge_pair_step(judge, opt_state, tokens_a, tokens_b, labels=None):
    """One Adam step of one judge on pairs; returns (judge, opt_state, accuracy before)."""
    (_, accuracy), grads = eqx.filter_value_and_grad(pair_loss, has_aux=True)(judge, tokens_a, tokens_b, labels)
    updates, opt_state = adam_update(grads, opt_state)
    return eqx.apply_updates(judge, updates), opt_state, accuracy


def ensemble_pair_step(state: RunState, tokens_a, tokens_b, labels, step_mask) -> RunState:
    """Every judge takes a pair step; judge m keeps it where step_mask[m] is true."""

    def one_judge(judge, opt_state, keep):
        new_judge, new_opt, _ = judge_pair_step(judge, opt_state, tokens_a, tokens_b, labels)
        return tree_select(keep, (new_judge, new_opt), (judge, opt_state))

    judges, judge_opt = eqx.filter_vmap(one_judge)(state.judges, state.judge_opt, step_mask)
    return eqx.tree_at(lambda s: (s.judges, s.judge_opt), state, (judges, judge_opt))


def self_labelled_update(state: RunState, key, due, sizes: Sizes) -> RunState:
    """Judges label and train on two fresh batches from the (updated) policy."""
    noise = jax.random.gumbel(key, (2 * sizes.batch_size, SEQ_LEN, VOCAB))
    tokens, _ = jax.vmap(state.policy.sample)(noise)
    mask = jnp.full((ensemble_size(state.judges),), due)
    return ensemble_pair_step(state, tokens[: sizes.batch_size], tokens[sizes.batch_size :], None, mask)


def anchor_update(state: RunState, key, due, q_star, n_anchor: int) -> RunState:
    """One judge step on n_anchor uniform pairs labelled by q* (the oracle anchor)."""
    tokens_a, tokens_b, labels = labelled_pairs(q_star, *jax.random.randint(key, (2, n_anchor), 0, N_SEQUENCES))
    mask = jnp.full((ensemble_size(state.judges),), due)
    return ensemble_pair_step(state, tokens_a, tokens_b, labels, mask)


def labelled_pairs(q_star, index_a, index_b):
    """Sequence pairs (by index into the 4096) with their q* labels [q*(a) > q*(b)]."""
    sequences = jnp.asarray(all_sequences())
    return sequences[index_a], sequences[index_b], q_star[index_a] > q_star[index_b]


def holdout_accuracy(judges: Judge, q_star, holdout):
    """Mean over the ensemble of each judge's pairwise accuracy on the held-out pairs."""
    tokens_a, tokens_b, labels = labelled_pairs(q_star, *holdout)
    return jax.vmap(lambda judge: pair_loss(judge, tokens_a, tokens_b, labels)[1])(judges).mean()


def meta_update(state: RunState, run: RunInputs, due, q_star, holdout) -> RunState:
    """Measure each judge on the held-out pairs; one q*-labelled step where it is below threshold.

    The accuracy and the step's gradient come from one forward pass over the holdout.
    """
    tokens_a, tokens_b, labels = labelled_pairs(q_star, *holdout)
    condition = run.condition

    def one_judge(judge, opt_state):
        new_judge, new_opt, accuracy = judge_pair_step(judge, opt_state, tokens_a, tokens_b, labels)
        keep = due & (accuracy < condition.meta_accuracy_threshold) & ~condition.freeze_judge
        judge, opt_state = tree_select(keep, (new_judge, new_opt), (judge, opt_state))
        return judge, opt_state, accuracy

    judges, judge_opt, accuracy = eqx.filter_vmap(one_judge)(state.judges, state.judge_opt)
    meta_accuracy = jnp.where(due, accuracy.mean(), state.meta_accuracy)
    return eqx.tree_at(lambda s: (s.judges, s.judge_opt, s.meta_accuracy), state, (judges, judge_opt, meta_accuracy))


def reset_judges(state: RunState, run: RunInputs, outer) -> RunState:
    """Back to the pretrained judges and a fresh optimiser at the end of every k-th iteration."""
    due = is_due(run.condition.reset_every, outer)
    fresh = (run.pretrained, fresh_judge_opt(run.pretrained, run.condition.lr_judge))
    judges, judge_opt = tree_select(due, fresh, (state.judges, state.judge_opt))
    return eqx.tree_at(lambda s: (s.judges, s.judge_opt), state, (judges, judge_opt))


def is_due(every, index):
    """True at 0-based step or iteration `index` when (index + 1) % every == 0; never when every == 0."""
    return (every > 0) & ((index + 1) % jnp.maximum(every, 1) == 0)


def run_metrics(state: RunState, q_star, distributions: bool = False) -> dict:
    """One record of one run: the exact diagnostics (with π(x) and J(x) when `distributions`)."""
    metrics = exact_metrics(state.policy, state.judges, q_star, distributions)
    params_finite = jnp.all(
        jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(_params((state.policy, state.judges)))])
    )
    values_finite = jnp.all(
        jnp.isfinite(jnp.stack([value for name, value in metrics.items() if name not in DISTRIBUTIONS]))
    )
    return {**metrics, "meta_judge_accuracy": state.meta_accuracy, "finite": params_finite & values_finite}


# ----------------------------------------------------------------------------------------
# A batch of runs sharing one Variant: one inner step, then scan, scan.


class BatchRun(NamedTuple):
    """The pure functions of one group of runs; each takes and returns a batch of runs.

    start(runs) -> (states, metrics at iteration 0, right after pretraining)
    step(states, runs, q_stars, outer, inner) -> states after one inner step
    advance(states, runs, outer) -> (states, the records of outer iteration `outer`)
    start's metrics are dicts of (runs,) arrays; advance's of (runs, records) arrays, one
    record every `record_every` inner steps (`records_per_iteration(sizes)`, 1 by default),
    the last one at the end of the iteration. Saved distributions add (runs, [records,] 4096)
    arrays: at start and every record with save_distributions "all", only advance's last
    record (as (runs, 1, 4096)) with "final".
    """

    start: Callable
    step: Callable
    advance: Callable


def make_batch_run(variant: Variant, sizes: Sizes) -> BatchRun:
    """Vmapped start, step and advance for a group of runs sharing `variant`."""
    holdout = holdout_pairs(variant.n_holdout) if variant.n_holdout else None

    def batch_inner_step(states, runs, q_stars, outer, inner):
        global_step = outer * sizes.steps_per_iter + inner
        loop_keys = jax.vmap(lambda seed: run_keys(seed)["loop"])(runs.seed)
        step_keys = jax.vmap(lambda key: jax.random.split(jax.random.fold_in(key, global_step), 3))(loop_keys)
        key_policy, key_judge, key_anchor = step_keys[:, 0], step_keys[:, 1], step_keys[:, 2]
        condition = runs.condition

        states = jax.vmap(lambda s, r, k: policy_update(s, r, k, sizes))(states, runs, key_policy)

        judge_due = is_due(condition.judge_update_every, inner) & ~condition.freeze_judge

        def judge_steps(states):
            states = jax.vmap(lambda s, k, d: self_labelled_update(s, k, d, sizes))(states, key_judge, judge_due)
            if variant.n_anchor:
                states = jax.vmap(lambda s, k, d, q: anchor_update(s, k, d, q, variant.n_anchor))(
                    states, key_anchor, judge_due, q_stars
                )
            return states

        states = jax.lax.cond(judge_due.any(), judge_steps, lambda s: s, states)

        if variant.n_holdout:
            meta_due = is_due(condition.meta_update_every, inner)
            states = jax.lax.cond(
                meta_due.any(),
                lambda s: jax.vmap(lambda s, r, d, q: meta_update(s, r, d, q, holdout))(s, runs, meta_due, q_stars),
                lambda s: s,
                states,
            )
        return states

    every, n_records = record_interval(sizes), records_per_iteration(sizes)
    every_record = sizes.save_distributions == "all"  # π and J at every record
    last_record = sizes.save_distributions != "none"  # ... or at the last one only

    def start(runs: RunInputs):
        q_stars = jax.vmap(q_star_of)(runs.condition.transition_alpha)
        states = jax.vmap(init_run)(runs)
        if holdout is not None:
            accuracy = jax.vmap(lambda judges, q: holdout_accuracy(judges, q, holdout))(states.judges, q_stars)
            states = eqx.tree_at(lambda s: s.meta_accuracy, states, accuracy)
        return states, jax.vmap(lambda s, q: run_metrics(s, q, every_record))(states, q_stars)

    def advance(states, runs: RunInputs, outer):
        """One outer iteration. Records inside it are taken after every `every` inner steps, the
        last one after the reset (REFERENCE.md); `meta_accuracy` starts each outer iteration
        as NaN, so a record holds the last accuracy measured so far in this outer iteration."""
        q_stars = jax.vmap(q_star_of)(runs.condition.transition_alpha)
        states = eqx.tree_at(lambda s: s.meta_accuracy, states, jnp.full_like(states.meta_accuracy, jnp.nan))

        def inner_body(states, inner):
            return batch_inner_step(states, runs, q_stars, outer, inner), None

        def record(states, distributions):
            return jax.vmap(lambda s, q: run_metrics(s, q, distributions))(states, q_stars)

        def chunk_then_record(states, first):
            states, _ = jax.lax.scan(inner_body, states, first + jnp.arange(every))
            return states, record(states, every_record)

        # Records before the last are stacked along a leading axis by the scan; only they
        # leave it. The default (one record per iteration) is exactly the plain scan below.
        within = None
        if n_records > 1:
            states, within = jax.lax.scan(chunk_then_record, states, every * jnp.arange(n_records - 1))
        states, _ = jax.lax.scan(inner_body, states, every * (n_records - 1) + jnp.arange(every))
        states = jax.vmap(reset_judges, in_axes=(0, 0, None))(states, runs, outer)
        last = jax.tree.map(lambda leaf: leaf[:, None], record(states, last_record))
        if within is None:
            return states, last
        within = {name: jnp.moveaxis(values, 0, 1) for name, values in within.items()}
        return states, {
            name: jnp.concatenate([within[name], values], axis=1) if name in within else values
            for name, values in last.items()
        }

    return BatchRun(start, batch_inner_step, advance)
