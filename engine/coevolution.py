"""The whole co-evolution loop in one place: pretrain → one step → scan → vmap.

Levels, innermost first:
- per-judge and per-run updates (`policy_update`, `judge_pair_step`, `meta_update`, and
  `meta_judge_update` for the meta-judge without ground truth);
- `batch_inner_step`: one inner step for a batch of runs. Optional sub-steps (judge
  update, anchor, meta) run under `lax.cond(any(due))` *outside* the vmap, so a step on
  which no run of the batch needs them costs nothing (inside a vmap, cond runs both
  branches);
- `make_batch_run`: `start` (fresh policy, pretrained judges), `step` (the batch inner
  step above), `advance` (a `lax.scan` of `step` over one outer iteration and the reset;
  with `record_every` k, over one chunk of k steps) and `measure` (the exact diagnostics of
  one record), all over a batch of runs sharing a `Variant`;
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

from engine import exact, preference
from engine.bias import biased_target, meta_pairs, verbosity
from engine.diagnostics import FINITE_METRICS, exact_metrics, judge_scores_all, spearman
from engine.knobs import Condition, Sizes, Variant, code, record_interval, records_per_iteration
from engine.models import Judge, Policy, ensemble_scores, select_init
from engine.world import N_SEQUENCES, SEQ_LEN, VOCAB, all_sequences, reference_q_star, transition_term

PRETRAIN_TARGET_NOISE = 0.1
HOLDOUT_KEY = 0
# The meta-judge (meta_source `judge`) is pretrained as ensemble member META_JUDGE_MEMBER
# ("meta" in ASCII, far above any ensemble size) and draws its meta steps' pairs from the
# step key folded with META_KEY_TAG: keys of their own, and every existing key unchanged.
META_JUDGE_MEMBER = 0x6D657461
META_KEY_TAG = 0x6D657461


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
    # issue 11: q* + b·σ(q*)·f(x); exactly q* (bit for bit) at planted_bias 0. The stop rule
    # below still measures Spearman against q* itself.
    target = biased_target(q_star, verbosity(job.condition.bias_token), job.condition.planted_bias)

    def train_step(carry, step):
        judge, opt_state = carry
        key_index, key_noise = jax.random.split(jax.random.fold_in(data_key, step))
        index = jax.random.randint(key_index, (sizes.batch_size,), 0, N_SEQUENCES)
        targets = target[index] + PRETRAIN_TARGET_NOISE * jax.random.normal(key_noise, (sizes.batch_size,))

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
    meta_pretrained: Judge | None  # the pretrained meta-judge (Variant.meta_judge), else None


def make_run_inputs(
    condition: Condition, seed, pretrained_table: Judge, pretrain_index, meta_pretrain_index=None
) -> RunInputs:
    """Runs' inputs with their judges taken out of the pretraining table.

    pretrain_index: (runs, n_judges) rows of `pretrained_table` (stacked judges, one per
    pretraining job); meta_pretrain_index: (runs,) the meta-judge's rows, or None for runs
    without one; works the same for one run or a batch.
    """

    def take(index):
        return jax.tree.map(lambda leaf: leaf[index], pretrained_table)

    meta = None if meta_pretrain_index is None else take(meta_pretrain_index)
    return RunInputs(condition, seed, take(pretrain_index), meta)


class PairStats(eqx.Module):
    """Sums over the current outer iteration's DPO training pairs (zeros under REINFORCE)."""

    offered: jax.Array  # pairs built
    kept: jax.Array  # pairs trained on
    judge_gap: jax.Array  # Σ over kept pairs of J(chosen) − J(rejected)
    true_gap: jax.Array  # Σ over kept pairs of q*(chosen) − q*(rejected)

    @staticmethod
    def zero():
        return PairStats(*(jnp.float32(0) for _ in range(4)))


class RunState(eqx.Module):
    """Everything a run carries from step to step."""

    policy: Policy
    policy_opt: optax.OptState
    judges: Judge  # stacked (n_judges, ...)
    judge_opt: optax.OptState  # stacked (n_judges, ...)
    meta_accuracy: jax.Array  # last holdout accuracy measured this outer iteration (NaN: none)
    initial_log_probs: jax.Array  # (4096,) log π₀: the KL anchor, dpo's `initial` reference, anchored rejection
    reference_log_probs: jax.Array  # (4096,) log π at the start of this outer iteration: dpo's `iteration` reference
    pairs: PairStats  # this outer iteration's dpo training pairs
    meta: "MetaJudgeState | None"  # the meta-judge (meta_source `judge`), else None


def init_run(run: RunInputs) -> RunState:
    policy = initial_model(Policy, run_keys(run.seed)["policy"], run.condition)
    initial_log_probs = jax.lax.stop_gradient(exact.policy_log_probs_tree(policy))
    return RunState(
        policy=policy,
        policy_opt=adam_init(_params(policy), run.condition.lr_policy),
        judges=run.pretrained,
        judge_opt=fresh_judge_opt(run.pretrained, run.condition.lr_judge),
        meta_accuracy=jnp.float32(jnp.nan),
        initial_log_probs=initial_log_probs,
        reference_log_probs=initial_log_probs,
        pairs=PairStats.zero(),
        meta=None if run.meta_pretrained is None else init_meta_judge(run.meta_pretrained, run.condition.lr_judge),
    )


def fresh_judge_opt(judges: Judge, lr_judge):
    return eqx.filter_vmap(lambda judge: adam_init(_params(judge), lr_judge))(judges)


def entropy_terms(condition: Condition, log_prob):
    """The reference's 'entropy bonus' c·mean(log π) (zero expected gradient: a quirk) and the
    sampled entropy regulariser c·mean((log π − mean log π)|const · log π) (its gradient
    estimates −∇H), on the policy's own batch: part of the policy loss under every rule."""
    surprise = jax.lax.stop_gradient(log_prob - log_prob.mean())
    return condition.entropy_bonus * jnp.mean(log_prob) + condition.entropy_regulariser * jnp.mean(surprise * log_prob)


def sampled_kl_term(state: RunState, condition: Condition, tokens, log_prob):
    """c·KL(π‖π₀) estimated on the batch, for kl_estimator k1 or k3 (0 for `exact`, handled apart).

    k1: the score-function form c·mean((log π − log π₀)|const · log π), whose gradient is an
    unbiased estimate of ∇KL(π‖π₀) (the RLHF reward penalty); k3: c·mean((r − 1) − log r),
    r = π₀/π, differentiated through log π with the samples fixed (as GRPO uses it), whose
    expected gradient is ∇KL(π₀‖π), the forward KL.
    """
    initial = state.initial_log_probs[exact.sequence_index(tokens)]
    k1 = jnp.mean(jax.lax.stop_gradient(log_prob - initial) * log_prob)
    k3 = exact.kl_k3(log_prob, initial)
    estimator = condition.kl_estimator
    term = jnp.where(
        estimator == code("kl_estimator", "k1"), k1, jnp.where(estimator == code("kl_estimator", "k3"), k3, 0.0)
    )
    return condition.kl_penalty * term


def reinforce_gradient(state: RunState, run: RunInputs, key, variant: Variant, sizes: Sizes):
    """REINFORCE on the ensemble's mean score: sample a batch, reward it, return the gradient.

    loss = −mean((r − mean r) log π) + entropy terms (+ a sampled KL term when regularised).
    """
    condition = run.condition
    noise = jax.random.gumbel(key, (sizes.batch_size, SEQ_LEN, VOCAB))

    def loss_fn(policy):
        tokens, log_prob = jax.vmap(policy.sample)(noise)
        reward = ensemble_scores(state.judges, tokens).mean(axis=0)
        advantage = reward - reward.mean()
        loss = -jnp.mean(advantage * log_prob) + entropy_terms(condition, log_prob)
        if variant.policy_regularised:
            loss = loss + sampled_kl_term(state, condition, tokens, log_prob)
        return loss

    return eqx.filter_grad(loss_fn)(state.policy), PairStats.zero()


def dpo_pairs(state: RunState, run: RunInputs, keys, tokens, variant: Variant, sizes: Sizes) -> preference.Pairs:
    """Self-Rewarding's pairs from the batch (the judge's best vs worst of each group of
    n_candidates, or Meta-Rewarding's length-controlled pairs), with Temporal Self-Rewarding's
    anchored rejection and future-guided chosen where the run's variant has them."""
    condition, n = run.condition, variant.n_candidates

    def scores_of(tokens):
        return jax.lax.stop_gradient(ensemble_scores(state.judges, tokens).mean(axis=0))

    scores = scores_of(tokens)
    if variant.length_controlled:
        wordiness = jnp.sum(tokens == condition.bias_token, axis=1)
        index = preference.length_controlled_pairs(scores, wordiness, n, condition.length_control, condition.score_grid)
    else:
        index = preference.best_worst_pairs(scores, n, condition.score_grid)
    pairs = preference.gather_pairs(tokens, scores, index)
    if variant.anchored_rejection:
        index = exact.sample_indices(keys["initial"], state.initial_log_probs, sizes.batch_size)
        initial_tokens = jnp.asarray(all_sequences())[index]
        pairs = preference.anchored_rejection(pairs, initial_tokens, scores_of(initial_tokens), n, condition.score_grid)
    if variant.future_chosen:
        grads = eqx.filter_grad(dpo_loss)(state.policy, state, condition, pairs)
        updates, _ = adam_update(grads, state.policy_opt)
        lookahead = eqx.apply_updates(state.policy, updates)
        noise = jax.random.gumbel(keys["lookahead"], (sizes.batch_size, SEQ_LEN, VOCAB))
        lookahead_tokens, _ = jax.vmap(lookahead.sample)(noise)
        pairs = preference.future_chosen(pairs, lookahead_tokens, scores_of(lookahead_tokens), n, condition.score_grid)
    return pairs


def dpo_loss(policy: Policy, state: RunState, condition: Condition, pairs: preference.Pairs):
    """The DPO loss of `pairs` (mean over kept pairs) against the run's reference policy."""
    reference = jnp.where(
        condition.dpo_reference == code("dpo_reference", "initial"),
        state.initial_log_probs,
        state.reference_log_probs,
    )
    chosen, rejected = jax.vmap(policy.log_prob)(pairs.chosen), jax.vmap(policy.log_prob)(pairs.rejected)
    reference_chosen = reference[exact.sequence_index(pairs.chosen)]
    reference_rejected = reference[exact.sequence_index(pairs.rejected)]

    def loss(loss_type):
        return preference.dpo_loss(
            chosen, rejected, reference_chosen, reference_rejected, pairs.keep, condition.dpo_beta, loss_type
        )

    return jnp.where(condition.dpo_loss == code("dpo_loss", "ipo"), loss("ipo"), loss("sigmoid"))


def dpo_gradient(state: RunState, run: RunInputs, key, variant: Variant, sizes: Sizes, q_star):
    """DPO on the judge's own preference pairs over a batch of the policy's samples.

    loss = dpo_loss(pairs) + entropy terms on the batch (+ a sampled KL term when regularised).
    Returns the gradient and the pairs' statistics (for the iteration's records).
    """
    condition = run.condition
    noise = jax.random.gumbel(key, (sizes.batch_size, SEQ_LEN, VOCAB))  # REINFORCE's batch of the same step
    tokens, _ = jax.vmap(state.policy.sample)(noise)
    keys = {"initial": jax.random.fold_in(key, 1), "lookahead": jax.random.fold_in(key, 2)}
    pairs = dpo_pairs(state, run, keys, tokens, variant, sizes)

    def loss_fn(policy):
        log_prob = jax.vmap(policy.log_prob)(tokens)
        loss = dpo_loss(policy, state, condition, pairs) + entropy_terms(condition, log_prob)
        if variant.policy_regularised:
            loss = loss + sampled_kl_term(state, condition, tokens, log_prob)
        return loss

    keep = pairs.keep.astype(jnp.float32)
    true_gap = q_star[exact.sequence_index(pairs.chosen)] - q_star[exact.sequence_index(pairs.rejected)]
    stats = PairStats(
        offered=jnp.float32(keep.size),
        kept=keep.sum(),
        judge_gap=jnp.sum(keep * (pairs.chosen_score - pairs.rejected_score)),
        true_gap=jnp.sum(keep * true_gap),
    )
    return eqx.filter_grad(loss_fn)(state.policy), stats


def exact_regulariser_gradient(policy: Policy, state: RunState, condition: Condition):
    """∇ of c_kl·KL(π‖π₀) (kl_estimator exact) − c_H·H(π), both exact over all 4096 outputs."""

    def loss_fn(policy):
        log_probs = exact.policy_log_probs_tree(policy)
        kl_weight = jnp.where(condition.kl_estimator == code("kl_estimator", "exact"), condition.kl_penalty, 0.0)
        return kl_weight * exact.kl(log_probs, state.initial_log_probs) - condition.entropy_exact * exact.entropy(
            log_probs
        )

    return eqx.filter_grad(loss_fn)(policy)


def apply_policy_gradient(state: RunState, grads, pair_stats: PairStats) -> RunState:
    """One Adam step of the policy; the step's training pairs join the iteration's sums."""
    updates, policy_opt = adam_update(grads, state.policy_opt)
    pairs = jax.tree.map(jnp.add, state.pairs, pair_stats)
    return eqx.tree_at(
        lambda s: (s.policy, s.policy_opt, s.pairs),
        state,
        (eqx.apply_updates(state.policy, updates), policy_opt, pairs),
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


def judge_pair_step(judge, opt_state, tokens_a, tokens_b, labels=None, anchor=None):
    """One Adam step of one judge on pairs; returns (judge, opt_state, accuracy before).

    anchor: None, or (pretrained judge, c) to add c·‖θ_J − θ_J(pretrained)‖² to the loss
    (the `judge_anchor` regulariser).
    """
    if anchor is None:
        loss_fn = pair_loss
    else:

        def loss_fn(judge, *pairs):
            loss, accuracy = pair_loss(judge, *pairs)
            pretrained, weight = anchor
            distance = sum(
                jnp.sum((a - b) ** 2)
                for a, b in zip(jax.tree.leaves(_params(judge)), jax.tree.leaves(_params(pretrained)))
            )
            return loss + weight * distance, accuracy

    (_, accuracy), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(judge, tokens_a, tokens_b, labels)
    updates, opt_state = adam_update(grads, opt_state)
    return eqx.apply_updates(judge, updates), opt_state, accuracy


class JudgeAnchor(NamedTuple):
    """The `judge_anchor` regulariser of a run: its pretrained judges (stacked) and c."""

    pretrained: Judge
    weight: jax.Array


def judge_anchor_of(run: RunInputs, variant: Variant) -> JudgeAnchor | None:
    """The run's judge anchor where its variant has one (None: no anchor code at all)."""
    return JudgeAnchor(run.pretrained, run.condition.judge_anchor) if variant.judge_anchored else None


def ensemble_pair_step(state: RunState, tokens_a, tokens_b, labels, step_mask, anchor=None) -> RunState:
    """Every judge takes a pair step; judge m keeps it where step_mask[m] is true."""

    def one_judge(judge, opt_state, keep, pretrained):
        member_anchor = None if anchor is None else (pretrained, anchor.weight)
        new_judge, new_opt, _ = judge_pair_step(judge, opt_state, tokens_a, tokens_b, labels, member_anchor)
        return tree_select(keep, (new_judge, new_opt), (judge, opt_state))

    pretrained = None if anchor is None else anchor.pretrained
    judges, judge_opt = eqx.filter_vmap(one_judge)(state.judges, state.judge_opt, step_mask, pretrained)
    return eqx.tree_at(lambda s: (s.judges, s.judge_opt), state, (judges, judge_opt))


def fresh_pairs(policy: Policy, key, batch_size: int):
    """Two fresh batches (a, b) of batch_size sequences each from the policy, (batch_size, 4) each."""
    noise = jax.random.gumbel(key, (2 * batch_size, SEQ_LEN, VOCAB))
    tokens, _ = jax.vmap(policy.sample)(noise)
    return tokens[:batch_size], tokens[batch_size:]


def self_labelled_update(state: RunState, key, due, sizes: Sizes, anchor=None) -> RunState:
    """Judges label and train on two fresh batches from the (updated) policy."""
    mask = jnp.full((ensemble_size(state.judges),), due)
    return ensemble_pair_step(state, *fresh_pairs(state.policy, key, sizes.batch_size), None, mask, anchor)


def anchor_update(state: RunState, key, due, q_star, n_anchor: int, anchor=None) -> RunState:
    """One judge step on n_anchor uniform pairs labelled by q* (the oracle anchor)."""
    tokens_a, tokens_b, labels = labelled_pairs(q_star, *jax.random.randint(key, (2, n_anchor), 0, N_SEQUENCES))
    mask = jnp.full((ensemble_size(state.judges),), due)
    return ensemble_pair_step(state, tokens_a, tokens_b, labels, mask, anchor)


def labelled_pairs(q_star, index_a, index_b):
    """Sequence pairs (by index into the 4096) with their q* labels [q*(a) > q*(b)]."""
    sequences = jnp.asarray(all_sequences())
    return sequences[index_a], sequences[index_b], q_star[index_a] > q_star[index_b]


def holdout_accuracy(judges: Judge, q_star, holdout):
    """Mean over the ensemble of each judge's pairwise accuracy on the held-out pairs."""
    tokens_a, tokens_b, labels = labelled_pairs(q_star, *holdout)
    return jax.vmap(lambda judge: pair_loss(judge, tokens_a, tokens_b, labels)[1])(judges).mean()


def meta_update(state: RunState, run: RunInputs, due, q_star, holdout, anchor=None) -> RunState:
    """Measure each judge on the held-out pairs; one q*-labelled step where it is below threshold.

    The accuracy and the step's gradient come from one forward pass over the holdout.
    """
    tokens_a, tokens_b, labels = labelled_pairs(q_star, *holdout)
    condition = run.condition

    def one_judge(judge, opt_state, pretrained):
        member_anchor = None if anchor is None else (pretrained, anchor.weight)
        new_judge, new_opt, accuracy = judge_pair_step(judge, opt_state, tokens_a, tokens_b, labels, member_anchor)
        keep = due & (accuracy < condition.meta_accuracy_threshold)  # also for a frozen judge, as the reference
        judge, opt_state = tree_select(keep, (new_judge, new_opt), (judge, opt_state))
        return judge, opt_state, accuracy

    pretrained = None if anchor is None else anchor.pretrained
    judges, judge_opt, accuracy = eqx.filter_vmap(one_judge)(state.judges, state.judge_opt, pretrained)
    meta_accuracy = jnp.where(due, accuracy.mean(), state.meta_accuracy)
    return eqx.tree_at(lambda s: (s.judges, s.judge_opt, s.meta_accuracy), state, (judges, judge_opt, meta_accuracy))


def reset_judges(state: RunState, run: RunInputs, outer) -> RunState:
    """Back to the pretrained judges and a fresh optimiser at the end of every k-th iteration
    (the meta-judge too, where there is one: a no-op unless it learns)."""
    due = is_due(run.condition.reset_every, outer)
    fresh = (run.pretrained, fresh_judge_opt(run.pretrained, run.condition.lr_judge))
    judges, judge_opt = tree_select(due, fresh, (state.judges, state.judge_opt))
    state = eqx.tree_at(lambda s: (s.judges, s.judge_opt), state, (judges, judge_opt))
    if state.meta is not None:
        fresh_meta = (run.meta_pretrained, adam_init(_params(run.meta_pretrained), run.condition.lr_judge))
        meta_judge, meta_opt = tree_select(due, fresh_meta, (state.meta.judge, state.meta.opt))
        state = eqx.tree_at(lambda s: (s.meta.judge, s.meta.opt), state, (meta_judge, meta_opt))
    return state


def is_due(every, index):
    """True at 0-based step or iteration `index` when (index + 1) % every == 0; never when every == 0."""
    return (every > 0) & ((index + 1) % jnp.maximum(every, 1) == 0)


# ----------------------------------------------------------------------------------------
# A meta-judge without ground truth (issue 11, meta_source `judge`; docs/bias.md).


class MetaJudgeState(eqx.Module):
    """The meta-judge a run carries: a second pretrained judge that never sees q*."""

    judge: Judge  # one judge (not stacked)
    opt: optax.OptState
    agreement_sum: jax.Array  # Σ judge–meta-judge agreement over this outer iteration's meta steps
    steps: jax.Array  # meta steps taken this outer iteration (int32)


def init_meta_judge(judge: Judge, lr_judge) -> MetaJudgeState:
    return MetaJudgeState(judge, adam_init(_params(judge), lr_judge), jnp.float32(0.0), jnp.int32(0))


def meta_judge_update(state: RunState, run: RunInputs, key, due, sizes: Sizes, n_pairs: int) -> RunState:
    """The meta step of meta_source `judge`: the meta-judge labels n_pairs of batch_size fresh
    policy pairs (`meta_select`: the judge's least certain, or a uniform subset); every judge
    takes one step on its labels (unless frozen); the agreement is accumulated for the record."""
    condition = run.condition
    tokens_a, tokens_b = fresh_pairs(state.policy, key, sizes.batch_size)
    tokens = jnp.concatenate([tokens_a, tokens_b])
    scores = ensemble_scores(state.judges, tokens).mean(axis=0)
    meta_scores = jax.vmap(state.meta.judge)(tokens)
    half = sizes.batch_size
    uncertain = condition.meta_select == code("meta_select", "uncertain")
    pairs = meta_pairs(
        tokens_a, tokens_b, scores[:half], scores[half:], meta_scores[:half], meta_scores[half:], n_pairs, uncertain
    )
    mask = jnp.full((ensemble_size(state.judges),), due & ~condition.freeze_judge)
    state = ensemble_pair_step(state, pairs.tokens_a, pairs.tokens_b, pairs.labels, mask)
    record = (state.meta.agreement_sum + jnp.where(due, pairs.agreement, 0.0), state.meta.steps + due)
    return eqx.tree_at(lambda s: (s.meta.agreement_sum, s.meta.steps), state, record)


def meta_judge_self_labelled_update(state: RunState, key, due, sizes: Sizes) -> RunState:
    """meta_learns: the meta-judge takes the judge's self-labelled step, on the same fresh
    pairs (same key, same policy), labelled by itself; kept where `due`."""
    new_judge, new_opt, _ = judge_pair_step(
        state.meta.judge, state.meta.opt, *fresh_pairs(state.policy, key, sizes.batch_size)
    )
    judge, opt = tree_select(due, (new_judge, new_opt), (state.meta.judge, state.meta.opt))
    return eqx.tree_at(lambda s: (s.meta.judge, s.meta.opt), state, (judge, opt))


def meta_judge_metrics(meta: MetaJudgeState | None, q_star) -> dict:
    """meta_judge_alignment (Spearman of the meta-judge with q*) and meta_agreement (mean over
    this outer iteration's meta steps); NaN without a meta-judge or without a meta step."""
    if meta is None:
        return {"meta_judge_alignment": jnp.float32(jnp.nan), "meta_agreement": jnp.float32(jnp.nan)}
    alignment = spearman(judge_scores_all(jax.tree.map(lambda a: a[None], meta.judge)), q_star)
    agreement = jnp.where(meta.steps > 0, meta.agreement_sum / jnp.maximum(meta.steps, 1), jnp.nan)
    return {"meta_judge_alignment": alignment, "meta_agreement": agreement}


def run_metrics(state: RunState, run: RunInputs, q_star, n_candidates: int, distributions: bool = False) -> dict:
    """One record of one run: the exact diagnostics (with π(x) and J(x) when `distributions`)."""
    f = verbosity(run.condition.bias_token)
    metrics = exact_metrics(state.policy, state.judges, q_star, state.initial_log_probs, n_candidates, f, distributions)
    models = (state.policy, state.judges) + (() if state.meta is None else (state.meta.judge,))
    params_finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(_params(models))]))
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
        "finite": params_finite & values_finite,
    }


# ----------------------------------------------------------------------------------------
# A batch of runs sharing one Variant: one inner step, then scan, scan.


class BatchRun(NamedTuple):
    """The pure functions of one group of runs; each takes and returns a batch of runs.

    start(runs) -> states right after pretraining
    step(states, runs, q_stars, outer, inner) -> states after one inner step
    advance(states, runs, outer, chunk) -> states after the `chunk`-th run of `record_every`
        inner steps of outer iteration `outer` (the whole iteration by default)
    measure(states, runs) -> one record: dicts of (runs,) arrays, plus (runs, 4096) arrays
        π(x) and J(x) when the study saves distributions
    The host measures after start and after every advance, so the diagnostics (an exact pass
    over the 4096 outputs) are one piece of code that both share, compiled once.
    """

    start: Callable
    step: Callable
    advance: Callable
    measure: Callable


def make_batch_run(variant: Variant, sizes: Sizes) -> BatchRun:
    """Vmapped start, step and advance for a group of runs sharing `variant`."""
    holdout = holdout_pairs(variant.n_holdout) if variant.n_holdout else None

    def batch_inner_step(states, runs, q_stars, outer, inner):
        global_step = outer * sizes.steps_per_iter + inner
        loop_keys = jax.vmap(lambda seed: run_keys(seed)["loop"])(runs.seed)
        step_keys = jax.vmap(lambda key: jax.random.split(jax.random.fold_in(key, global_step), 3))(loop_keys)
        key_policy, key_judge, key_anchor = step_keys[:, 0], step_keys[:, 1], step_keys[:, 2]
        condition = runs.condition

        if variant.update_rule == "dpo":
            grads, pair_stats = jax.vmap(lambda s, r, k, q: dpo_gradient(s, r, k, variant, sizes, q))(
                states, runs, key_policy, q_stars
            )
        else:
            grads, pair_stats = jax.vmap(lambda s, r, k: reinforce_gradient(s, r, k, variant, sizes))(
                states, runs, key_policy
            )
        if variant.policy_regularised:
            exact_kl = (condition.kl_penalty > 0) & (condition.kl_estimator == code("kl_estimator", "exact"))
            grads = jax.lax.cond(
                (exact_kl | (condition.entropy_exact > 0)).any(),
                lambda g: jax.tree.map(
                    jnp.add, g, jax.vmap(exact_regulariser_gradient)(states.policy, states, condition)
                ),
                lambda g: g,
                grads,
            )
        states = jax.vmap(apply_policy_gradient)(states, grads, pair_stats)

        judge_due = is_due(condition.judge_update_every, inner) & ~condition.freeze_judge
        anchors = jax.vmap(lambda r: judge_anchor_of(r, variant))(runs) if variant.judge_anchored else None

        def self_labelled_steps(states):
            return jax.vmap(lambda s, k, d, a: self_labelled_update(s, k, d, sizes, a))(
                states, key_judge, judge_due, anchors
            )

        states = jax.lax.cond(judge_due.any(), self_labelled_steps, lambda s: s, states)

        if variant.n_anchor:  # runs of the group without an anchor (engine.plan.group_variants) skip it
            anchor_due = judge_due & (condition.anchor_fraction > 0)
            states = jax.lax.cond(
                anchor_due.any(),
                lambda s: jax.vmap(lambda s, k, d, q, a: anchor_update(s, k, d, q, variant.n_anchor, a))(
                    s, key_anchor, anchor_due, q_stars, anchors
                ),
                lambda s: s,
                states,
            )

        if variant.meta_judge:  # meta_source `judge` (issue 11)
            learns = judge_due & condition.meta_learns
            states = jax.lax.cond(
                learns.any(),
                lambda s: jax.vmap(lambda s, k, d: meta_judge_self_labelled_update(s, k, d, sizes))(
                    s, key_judge, learns
                ),
                lambda s: s,
                states,
            )
            key_meta = jax.vmap(lambda key: jax.random.fold_in(jax.random.fold_in(key, global_step), META_KEY_TAG))(
                loop_keys
            )
            meta_due = is_due(condition.meta_update_every, inner)
            states = jax.lax.cond(
                meta_due.any(),
                lambda s: jax.vmap(lambda s, r, k, d: meta_judge_update(s, r, k, d, sizes, variant.n_meta_pairs))(
                    s, runs, key_meta, meta_due
                ),
                lambda s: s,
                states,
            )

        if variant.n_holdout:
            meta_due = is_due(condition.meta_update_every, inner)
            states = jax.lax.cond(
                meta_due.any(),
                lambda s: jax.vmap(lambda s, r, d, q, a: meta_update(s, r, d, q, holdout, a))(
                    s, runs, meta_due, q_stars, anchors
                ),
                lambda s: s,
                states,
            )
        return states

    every, n_records = record_interval(sizes), records_per_iteration(sizes)
    distributions = sizes.save_distributions != "none"  # the host keeps every record's or the last

    def start(runs: RunInputs):
        q_stars = jax.vmap(q_star_of)(runs.condition.transition_alpha)
        states = jax.vmap(init_run)(runs)
        if holdout is not None:  # NaN for runs of the group without meta steps (engine.plan.group_variants)
            accuracy = jax.vmap(lambda judges, q: holdout_accuracy(judges, q, holdout))(states.judges, q_stars)
            accuracy = jnp.where(runs.condition.meta_update_every > 0, accuracy, states.meta_accuracy)
            states = eqx.tree_at(lambda s: s.meta_accuracy, states, accuracy)
        return states

    def measure(states, runs: RunInputs):
        q_stars = jax.vmap(q_star_of)(runs.condition.transition_alpha)
        return jax.vmap(lambda s, r, q: run_metrics(s, r, q, variant.n_candidates, distributions))(
            states, runs, q_stars
        )

    def begin_iteration(states):
        """`meta_accuracy` starts each outer iteration as NaN, so a record holds the last accuracy
        measured so far in it; π_ref (dpo's `iteration` reference) is the policy now; the
        iteration's pair and meta-judge sums start at zero."""
        states = eqx.tree_at(
            lambda s: (s.meta_accuracy, s.reference_log_probs, s.pairs),
            states,
            (
                jnp.full_like(states.meta_accuracy, jnp.nan),
                jax.lax.stop_gradient(jax.vmap(exact.policy_log_probs_tree)(states.policy)),
                jax.tree.map(jnp.zeros_like, states.pairs),
            ),
        )
        if states.meta is not None:
            zeros = (jnp.zeros_like(states.meta.agreement_sum), jnp.zeros_like(states.meta.steps))
            states = eqx.tree_at(lambda s: (s.meta.agreement_sum, s.meta.steps), states, zeros)
        return states

    def advance(states, runs: RunInputs, outer, chunk):
        """`every` inner steps of outer iteration `outer`, from inner step chunk·every; the first
        chunk begins the iteration, the last ends it with the reset (REFERENCE.md)."""
        q_stars = jax.vmap(q_star_of)(runs.condition.transition_alpha)

        def reset(states):
            return jax.vmap(reset_judges, in_axes=(0, 0, None))(states, runs, outer)

        def inner_body(states, inner):
            return batch_inner_step(states, runs, q_stars, outer, inner), None

        def when(condition, update, states):
            """update(states) where `condition` holds; with one record per iteration it always does."""
            return update(states) if n_records == 1 else jax.lax.cond(condition, update, lambda s: s, states)

        states = when(chunk == 0, begin_iteration, states)
        states, _ = jax.lax.scan(inner_body, states, chunk * every + jnp.arange(every))
        return when(chunk == n_records - 1, reset, states)

    return BatchRun(start, batch_inner_step, advance, measure)
