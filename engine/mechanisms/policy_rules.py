"""The policy's update rules and regularisers, for ONE run.

- `reinforce_gradient`: REINFORCE on the ensemble's mean score (the reference rule);
- `dpo_gradient`: DPO on the judge's own preference pairs (`engine.mechanisms.preference`);
- `entropy_terms`, `sampled_kl_term`: the terms every rule adds on its own batch;
- `exact_regulariser_gradient`: ∇ of the exact KL(π‖π₀) and −H(π) over all N outputs;
- `exact_entropy_weight`: the weight c of −c·H(π) in the exact loss;
- `expected_policy_gradient`: REINFORCE's and its terms' expected gradient in the large-batch limit,
  exact over all N outputs (gradient_estimator `exact`; docs/mean_field.md);
- `apply_policy_gradient`: one Adam step, and the step's dpo pairs joining the iteration's sums.
docs/self_rewarding.md defines each with its paper.
"""

import equinox as eqx
import jax
import jax.numpy as jnp

from engine.core import exact
from engine.core.models import PolicyModel, ensemble_scores
from engine.core.optim import adam_update
from engine.core.state import PairStats, RunInputs, RunState
from engine.core.world import all_sequences
from engine.knobs import Condition, Sizes, Variant, code
from engine.mechanisms import preference


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
    initial = state.initial_log_probs[exact.sequence_index(state.world, tokens)]
    k1 = jnp.mean(jax.lax.stop_gradient(log_prob - initial) * log_prob)
    k3 = exact.kl_k3(log_prob, initial)
    estimator = condition.kl_estimator
    term = jnp.where(
        estimator == code("kl_estimator", "k1"), k1, jnp.where(estimator == code("kl_estimator", "k3"), k3, 0.0)
    )
    return condition.kl_penalty * term


def policy_uniforms(key, batch_size: int, seq_len: int):
    """The uniforms of one batch of policy samples, one per position (`Policy.sample`)."""
    return jax.random.uniform(key, (batch_size, seq_len))


def reinforce_gradient(state: RunState, run: RunInputs, key, variant: Variant, sizes: Sizes):
    """REINFORCE on the ensemble's mean score: sample a batch, reward it, return the gradient.

    loss = −mean((r − mean r) log π) + entropy terms (+ a sampled KL term when regularised).
    """
    condition = run.condition
    uniforms = policy_uniforms(key, sizes.batch_size, state.world.seq_len)

    def loss_fn(policy):
        tokens, log_prob = policy.sample(uniforms)
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
        initial_tokens = jnp.asarray(all_sequences(state.world))[index]
        pairs = preference.anchored_rejection(pairs, initial_tokens, scores_of(initial_tokens), n, condition.score_grid)
    if variant.future_chosen:
        grads = eqx.filter_grad(policy_dpo_loss)(state.policy, state, condition, pairs)
        updates, _ = adam_update(grads, state.policy_opt)
        lookahead = eqx.apply_updates(state.policy, updates)
        lookahead_tokens, _ = lookahead.sample(
            policy_uniforms(keys["lookahead"], sizes.batch_size, state.world.seq_len)
        )
        pairs = preference.future_chosen(pairs, lookahead_tokens, scores_of(lookahead_tokens), n, condition.score_grid)
    return pairs


def policy_dpo_loss(policy: PolicyModel, state: RunState, condition: Condition, pairs: preference.Pairs):
    """The DPO (or IPO) loss of `pairs` (mean over kept pairs) against the run's reference policy."""
    reference = jnp.where(
        condition.dpo_reference == code("dpo_reference", "initial"),
        state.initial_log_probs,
        state.reference_log_probs,
    )
    chosen, rejected = policy.log_prob_batch(pairs.chosen), policy.log_prob_batch(pairs.rejected)
    reference_chosen = reference[exact.sequence_index(state.world, pairs.chosen)]
    reference_rejected = reference[exact.sequence_index(state.world, pairs.rejected)]

    def loss(loss_type):
        return preference.dpo_loss(
            chosen,
            rejected,
            reference_chosen,
            reference_rejected,
            pairs.keep,
            condition.dpo_beta,
            loss_type,
            seq_len=policy.world.seq_len,
        )

    return jnp.where(condition.dpo_loss == code("dpo_loss", "ipo"), loss("ipo"), loss("sigmoid"))


def dpo_gradient(state: RunState, run: RunInputs, key, variant: Variant, sizes: Sizes, q_star):
    """DPO on the judge's own preference pairs over a batch of the policy's samples.

    loss = policy_dpo_loss(pairs) + entropy terms on the batch (+ a sampled KL term when
    regularised). Returns the gradient and the pairs' statistics (for the iteration's records).
    """
    condition = run.condition
    tokens, _ = state.policy.sample(
        policy_uniforms(key, sizes.batch_size, state.world.seq_len)
    )  # REINFORCE's batch of the step
    keys = {"initial": jax.random.fold_in(key, 1), "lookahead": jax.random.fold_in(key, 2)}
    pairs = dpo_pairs(state, run, keys, tokens, variant, sizes)

    def loss_fn(policy):
        log_prob = policy.log_prob_batch(tokens)
        loss = policy_dpo_loss(policy, state, condition, pairs) + entropy_terms(condition, log_prob)
        if variant.policy_regularised:
            loss = loss + sampled_kl_term(state, condition, tokens, log_prob)
        return loss

    keep = pairs.keep.astype(jnp.float32)
    true_gap = (
        q_star[exact.sequence_index(state.world, pairs.chosen)]
        - q_star[exact.sequence_index(state.world, pairs.rejected)]
    )
    stats = PairStats(
        offered=jnp.float32(keep.size),
        kept=keep.sum(),
        judge_gap=jnp.sum(keep * (pairs.chosen_score - pairs.rejected_score)),
        true_gap=jnp.sum(keep * true_gap),
    )
    return eqx.filter_grad(loss_fn)(state.policy), stats


def exact_regulariser_gradient(policy: PolicyModel, state: RunState, condition: Condition):
    """∇ of c_kl·KL(π‖π₀) (kl_estimator exact) − c_H·H(π), both exact over all N outputs."""

    def loss_fn(policy):
        log_probs = exact.policy_log_probs_tree(policy)
        kl_weight = jnp.where(condition.kl_estimator == code("kl_estimator", "exact"), condition.kl_penalty, 0.0)
        return kl_weight * exact.kl(log_probs, state.initial_log_probs) - condition.entropy_exact * exact.entropy(
            log_probs
        )

    return eqx.filter_grad(loss_fn)(policy)


def exact_entropy_weight(condition: Condition):
    """c of the −c·H(π) in the exact policy loss: entropy_regulariser (the sampled regulariser's limit) +
    entropy_exact."""
    return condition.entropy_regulariser + condition.entropy_exact


def expected_policy_gradient(state: RunState, condition: Condition):
    """The limit of `reinforce_gradient`'s expectation as the batch grows, every term exact over all N:

    −∇E_π[J]  (E[(r − r̄)∇log π] = (1 − 1/B)·∇E_π[J] over a batch of B, J the ensemble's mean score)
    − c_H·∇H(π), c_H = entropy_regulariser + entropy_exact  (the sampled regulariser's limit is −∇H)
    + c_KL·∇KL(π‖π₀) for kl_estimator exact or k1, c_KL·∇KL(π₀‖π) for k3  (what k1 and k3 estimate)

    and nothing of entropy_bonus, whose expected gradient E_π[∇log π] is 0. J is held fixed by
    being outside `loss_fn`, not by `stop_gradient`: the step as a map of the whole state has the
    judges' effect on it as a derivative (engine.host.stability linearises it).
    """
    scores = exact.judge_scores_all(state.judges)
    forward_kl = condition.kl_estimator == code("kl_estimator", "k3")
    entropy_weight = exact_entropy_weight(condition)

    def loss_fn(policy):
        log_probs = exact.policy_log_probs_tree(policy)
        initial = state.initial_log_probs
        kl = jnp.where(forward_kl, exact.kl(initial, log_probs), exact.kl(log_probs, initial))
        regulariser = condition.kl_penalty * kl - entropy_weight * exact.entropy(log_probs)
        return -jnp.sum(jnp.exp(log_probs) * scores) + regulariser

    return eqx.filter_grad(loss_fn)(state.policy)


def uses_exact_regulariser(condition: Condition):
    """Does the run's loss carry an exact term (KL with kl_estimator exact, or entropy_exact)?"""
    exact_kl = (condition.kl_penalty > 0) & (condition.kl_estimator == code("kl_estimator", "exact"))
    return exact_kl | (condition.entropy_exact > 0)


def apply_policy_gradient(state: RunState, grads, pair_stats: PairStats) -> RunState:
    """One Adam step of the policy; the step's training pairs join the iteration's sums."""
    updates, policy_opt = adam_update(grads, state.policy_opt)
    pairs = jax.tree.map(jnp.add, state.pairs, pair_stats)
    return eqx.tree_at(
        lambda s: (s.policy, s.policy_opt, s.pairs),
        state,
        (eqx.apply_updates(state.policy, updates), policy_opt, pairs),
    )
