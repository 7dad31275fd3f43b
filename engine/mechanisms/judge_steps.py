"""The judge's pair steps: self-labelled on policy pairs (`judge_data`), on q*-labelled oracle
pairs (`anchor_fraction`), and the pull back to the pretrained weights (`judge_anchor`) that
every judge step of a run can carry.

Every step here is one Adam step of every judge of the ensemble on the same pairs, kept per
judge where a mask says so; each handles ONE run. The `expected_*` steps are the same steps
under gradient_estimator `exact`: each takes the expectation of its sampled sibling's gradient
over the pairs (and the labeller's noise), summed over all N² pairs (docs/mean_field.md).
"""

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from engine.core import exact
from engine.core.models import JudgeModel
from engine.core.optim import adam_update, params, tree_select
from engine.core.state import RunInputs, RunState, ensemble_size
from engine.knobs import Condition, Variant
from engine.mechanisms.grounding import labelled_pairs, noise_key, spend
from engine.mechanisms.judge_data import self_labelled_distribution, self_labelled_pairs


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


def squared_distance(judge: JudgeModel, pretrained: JudgeModel):
    """‖θ_J − θ_J(pretrained)‖², the pull's distance."""
    return sum(
        jnp.sum((a - b) ** 2) for a, b in zip(jax.tree.leaves(params(judge)), jax.tree.leaves(params(pretrained)))
    )


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
            return loss + weight * squared_distance(judge, pretrained), accuracy

    (_, accuracy), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(judge, tokens_a, tokens_b, labels)
    updates, opt_state = adam_update(grads, opt_state)
    return eqx.apply_updates(judge, updates), opt_state, accuracy


def ensemble_step(state: RunState, judge_step, step_mask, pull=None, per_judge=None) -> RunState:
    """Every judge takes `judge_step(judge, opt_state, pull, inputs) -> (judge, opt_state)`, its pull (None,
    or (its pretrained judge, c)) as the run has one and its row of `per_judge` (arrays stacked like the
    judges, or None); judge m keeps the step where step_mask[m] is true."""

    def one_judge(judge, opt_state, keep, pretrained, inputs):
        member_pull = None if pull is None else (pretrained, pull.weight)
        new_judge, new_opt = judge_step(judge, opt_state, member_pull, inputs)
        return tree_select(keep, (new_judge, new_opt), (judge, opt_state))

    pretrained = None if pull is None else pull.pretrained
    judges, judge_opt = eqx.filter_vmap(one_judge)(state.judges, state.judge_opt, step_mask, pretrained, per_judge)
    return eqx.tree_at(lambda s: (s.judges, s.judge_opt), state, (judges, judge_opt))


def ensemble_pair_step(state: RunState, tokens_a, tokens_b, labels, step_mask, pull=None) -> RunState:
    """Every judge takes a pair step on the same pairs; judge m keeps it where step_mask[m] is true."""

    def pair_step(judge, opt_state, member_pull, _):
        return judge_pair_step(judge, opt_state, tokens_a, tokens_b, labels, member_pull)[:2]

    return ensemble_step(state, pair_step, step_mask, pull)


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
    index_a, index_b = jax.random.randint(key, (2, n_oracle_pairs), 0, state.world.n_sequences)
    pairs = labelled_pairs(state.world, q_star, condition, index_a, index_b, noise_key(key), variant.imperfect_labeller)
    mask = jnp.full((ensemble_size(state.judges),), due)
    state = ensemble_pair_step(state, *pairs, mask, pull)
    return spend(state, condition, due, n_oracle_pairs, variant.oracle_budgeted)


# ----------------------------------------------------------------------------------------
# The expected steps (gradient_estimator `exact`).


def score_gradient_grads(judge: JudgeModel, score_gradient, pull=None):
    """∇θ of Σ_x g_x·J(x) (+ the pull), g = score_gradient(J) of the judge's scores J of all N
    sequences, held fixed: the gradient of a loss over pairs of the N whose derivative in J is g.
    One pass over the judge's prefix tree, forward and backward. pull: None, or (pretrained judge, c).

    g is held fixed by entering the surrogate as an argument it is not differentiated in, not by
    `stop_gradient`: a derivative of the whole step (engine.host.stability) sees g's dependence on
    the judge and the policy."""

    def surrogate(judge, weights):
        loss = jnp.sum(weights * judge.all_scores())
        return loss if pull is None else loss + pull[1] * squared_distance(judge, pull[0])

    return eqx.filter_grad(surrogate)(judge, score_gradient(judge.all_scores()))


def score_gradient_step(judge: JudgeModel, opt_state, score_gradient, pull=None):
    """One Adam step of one judge along `score_gradient_grads`."""
    updates, opt_state = adam_update(score_gradient_grads(judge, score_gradient, pull), opt_state)
    return eqx.apply_updates(judge, updates), opt_state


def self_labelled_slope(difference):
    """ℓ'(d) − ℓ'(−d) of a self-labelled pair at score difference d = J(a) − J(b): ℓ(d) is the binary
    cross-entropy of σ(d) against the judge's own label [d > 0], so ℓ'(d) = σ(d) − [d > 0] and this is
    tanh(d/2) − sign(d) = −2·sign(d)·σ(−|d|), odd, 0 at a tie (computed without cancellation)."""
    return -2 * jnp.sign(difference) * jax.nn.sigmoid(-jnp.abs(difference))


def self_labelled_score_gradient(scores, probs):
    """∂L/∂J(c) = q(c)·Σ_b q(b)·(tanh((J(c) − J(b))/2) − sign(J(c) − J(b))), (N,), of the expected
    self-labelled loss L = Σ_ab q(a) q(b) ℓ(J(a) − J(b)) over pairs a, b ~ q independently, the labels
    [J(a) > J(b)] held fixed (a tie's two orders cancel)."""
    return probs * exact.antisymmetric_pair_sum(self_labelled_slope, scores, probs)


def expected_self_labelled_update(state: RunState, condition: Condition, due, variant: Variant, pull=None) -> RunState:
    """`self_labelled_update`'s expected step: each judge labels every pair of the N² by its own
    scores and trains on them weighted by q(a)·q(b), q the policy (its best response under
    policy_response `best_response`) or the mixture of past policies.

    q is handed to each judge as its own row: a q shared by the vmapped judges (batched over the runs
    but not over the judges) makes XLA's CPU code for the tiles' products slower, twice the time for
    three judges (docs/mean_field.md)."""
    n_judges = ensemble_size(state.judges)
    probs = jnp.broadcast_to(self_labelled_distribution(state, condition, variant), (n_judges, state.world.n_sequences))

    def judge_step(judge, opt_state, member_pull, probs):
        return score_gradient_step(
            judge, opt_state, lambda scores: self_labelled_score_gradient(scores, probs), member_pull
        )

    return ensemble_step(state, judge_step, jnp.full((n_judges,), due), pull, probs)


def oracle_score_gradient(scores, label_sums):
    """∂L/∂J(c) = (1/N)·((1/N)·Σ_b tanh((J(c) − J(b))/2) − ℓ(c)), (N,), of the expected oracle-pair
    loss over uniform pairs and the labeller's noise, ℓ its label sums (`grounding.expected_label_sums`)."""
    n_sequences = scores.shape[-1]
    uniform = jnp.full(n_sequences, 1.0 / n_sequences)
    return uniform * (exact.antisymmetric_pair_sum(lambda d: jnp.tanh(d / 2), scores, uniform) - label_sums)


def expected_oracle_pair_update(state: RunState, condition: Condition, due, variant: Variant, pull=None) -> RunState:
    """`oracle_pair_update`'s expected step, over every pair of the N² and the labeller's noise;
    counted against `oracle_budget` as the n_oracle_pairs comparisons whose expectation it takes."""

    def judge_step(judge, opt_state, member_pull, _):
        return score_gradient_step(
            judge, opt_state, lambda scores: oracle_score_gradient(scores, state.oracle_label_sums), member_pull
        )

    state = ensemble_step(state, judge_step, jnp.full((ensemble_size(state.judges),), due), pull)
    return spend(state, condition, due, variant.n_oracle_pairs, variant.oracle_budgeted)
