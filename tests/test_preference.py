import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from engine.core.models import Policy
from engine.mechanisms.preference import (
    INITIAL,
    LOOKAHEAD,
    POLICY,
    anchored_rejection,
    best_worst_pairs,
    dpo_loss,
    future_chosen,
    gather_pairs,
    length_controlled_pairs,
)


def tokens_of(n):
    """Distinct token rows (batch, 4) so a pair member can be traced back to its draw."""
    return jnp.stack([jnp.arange(n) // 8 % 8, jnp.arange(n) % 8, jnp.zeros(n, int), jnp.zeros(n, int)], axis=1)


def test_best_worst_pairs_on_hand_made_scores():
    scores = jnp.array([0.1, 0.5, -0.2, 0.3, 1.0, 1.0, 1.0, 1.0, 2.0, -1.0, 2.0, 0.0, 7.0, 8.0])  # 2 left over
    index = best_worst_pairs(scores, 4)
    np.testing.assert_array_equal(index.chosen, [1, 4, 8])  # ties: the first candidate
    np.testing.assert_array_equal(index.rejected, [2, 4, 9])
    np.testing.assert_array_equal(index.keep, [True, False, True])  # the all-tie group is dropped


def test_ties_on_the_score_grid_are_dropped():
    scores = jnp.array([0.31, 0.29, 1.0, 0.0])
    np.testing.assert_array_equal(best_worst_pairs(scores, 2, 0.0).keep, [True, True])
    np.testing.assert_array_equal(best_worst_pairs(scores, 2, 0.5).keep, [False, True])  # round(.62) == round(.58)
    # score_grid is a per-run value: vmap over it.
    keeps = jax.vmap(lambda grid: best_worst_pairs(scores, 2, grid).keep)(jnp.array([0.0, 0.5, 2.0]))
    np.testing.assert_array_equal(keeps, [[True, True], [False, True], [False, False]])


def test_anchored_rejection_takes_the_initial_worst_only_when_lower():
    scores = jnp.array([1.0, 2.0, 3.0, 4.0, 1.0, 1.0, 1.0, 1.0, 5.0, 6.0, 7.0, 8.0])
    initial_scores = jnp.array([2.0, 0.5, 3.0, 3.0, 0.0, 2.0, 2.0, 2.0, 9.0, 5.0, 9.0, 9.0])
    tokens, initial_tokens = tokens_of(12), tokens_of(24)[12:]
    pairs = gather_pairs(tokens, scores, best_worst_pairs(scores, 4))
    np.testing.assert_array_equal(pairs.keep, [True, False, True])
    anchored = anchored_rejection(pairs, initial_tokens, initial_scores, 4)
    np.testing.assert_array_equal(anchored.rejected_score, [0.5, 0.0, 5.0])
    np.testing.assert_array_equal(anchored.rejected_source, [INITIAL, INITIAL, POLICY])
    np.testing.assert_array_equal(anchored.rejected, [initial_tokens[1], initial_tokens[4], tokens[8]])
    np.testing.assert_array_equal(anchored.keep, [True, True, True])  # the tied group is rescued
    np.testing.assert_array_equal(anchored.chosen, pairs.chosen)
    # An equal (not lower) initial worst leaves the rejected alone; a tie with the chosen is dropped.
    flat = jnp.array([1.0, 1.0])
    pairs = gather_pairs(tokens[:2], flat, best_worst_pairs(flat, 2))
    anchored = anchored_rejection(pairs, initial_tokens[:2], jnp.array([1.0, 3.0]), 2)
    assert int(anchored.rejected_source[0]) == POLICY and not bool(anchored.keep[0])


def test_future_chosen_takes_the_lookahead_best_only_when_the_judge_prefers_it():
    scores = jnp.array([1.0, 2.0, 3.0, 3.0, 0.0, 4.0])
    lookahead_scores = jnp.array([4.0, 0.0, 1.0, 3.0, 4.0, 0.0])
    tokens, lookahead_tokens = tokens_of(6), tokens_of(12)[6:]
    pairs = gather_pairs(tokens, scores, best_worst_pairs(scores, 2))
    np.testing.assert_array_equal(pairs.keep, [True, False, True])
    future = future_chosen(pairs, lookahead_tokens, lookahead_scores, 2)
    np.testing.assert_array_equal(future.chosen_score, [4.0, 3.0, 4.0])  # 3 vs 3 and 4 vs 4: not preferred
    np.testing.assert_array_equal(future.chosen_source, [LOOKAHEAD, POLICY, POLICY])
    np.testing.assert_array_equal(future.chosen, [lookahead_tokens[0], tokens[2], tokens[5]])
    np.testing.assert_array_equal(future.keep, [True, False, True])


def test_length_control_picks_short_chosen_and_long_rejected_in_its_windows():
    scores = jnp.array([0.0, 1.0, 2.0, 3.0, 0.0, 1.0, 2.0, 3.0])
    verbosity = jnp.array([3, 1, 0, 2, 2, 2, 1, 1])
    half = length_controlled_pairs(scores, verbosity, 4, 0.5)
    np.testing.assert_array_equal(half.chosen, [2, 7])  # group 2: verbosity tie 1-1 -> higher score
    np.testing.assert_array_equal(half.rejected, [0, 4])  # group 2: verbosity tie 2-2 -> lower score
    whole = length_controlled_pairs(scores, verbosity, 4, 1.0)  # every candidate is eligible
    np.testing.assert_array_equal(whole.chosen, [2, 7])
    np.testing.assert_array_equal(whole.rejected, [0, 4])
    # Windows overlap for rho > 1/2: a candidate paired with itself, or a chosen scored below
    # its rejected, is dropped.
    same = length_controlled_pairs(jnp.array([0.0, 1.0, 2.0]), jnp.array([0, 3, 5]), 3, 0.75)
    assert int(same.chosen[0]) == int(same.rejected[0]) == 1 and not bool(same.keep[0])
    inverted = length_controlled_pairs(jnp.array([0.0, 1.0]), jnp.array([0, 1]), 2, 1.0)
    assert (int(inverted.chosen[0]), int(inverted.rejected[0])) == (0, 1) and not bool(inverted.keep[0])


@pytest.mark.parametrize("score_grid", [0.0, 0.5])
def test_length_control_at_rho_zero_is_best_versus_worst(score_grid):
    rng = np.random.default_rng(0)
    scores = jnp.asarray(rng.normal(size=4000), jnp.float32)
    verbosity = jnp.asarray(rng.integers(0, 5, size=4000))  # many ties in verbosity
    plain = best_worst_pairs(scores, 4, score_grid)
    controlled = length_controlled_pairs(scores, verbosity, 4, 0.0, score_grid)
    for a, b in zip(plain, controlled):
        np.testing.assert_array_equal(a, b)
    # Tied extreme scores: possibly other candidates, but the same scores and keep decisions.
    tied = jnp.round(scores)
    plain = best_worst_pairs(tied, 4, score_grid)
    controlled = length_controlled_pairs(tied, verbosity, 4, 0.0, score_grid)
    np.testing.assert_array_equal(tied[plain.chosen], tied[controlled.chosen])
    np.testing.assert_array_equal(tied[plain.rejected], tied[controlled.rejected])
    np.testing.assert_array_equal(plain.keep, controlled.keep)
    assert 0 < np.mean(np.asarray(plain.keep)) < 1


def test_dpo_losses_match_their_formulas():
    rng = np.random.default_rng(1)
    pc, pr, rc, rr = (jnp.asarray(rng.normal(size=6) - 8, jnp.float32) for _ in range(4))
    keep = jnp.array([True, False, True, True, False, True])
    beta = 0.1
    h = np.asarray((pc - rc) - (pr - rr), np.float64)[np.asarray(keep)]
    np.testing.assert_allclose(
        dpo_loss(pc, pr, rc, rr, keep, beta, seq_len=4), np.mean(np.log1p(np.exp(-beta * h))), rtol=1e-6
    )
    np.testing.assert_allclose(
        dpo_loss(pc, pr, rc, rr, keep, beta, "ipo", seq_len=4), np.mean((h / 4 - 1 / (2 * beta)) ** 2), rtol=1e-6
    )
    # Equal log-probabilities (h = 0): ln 2 for sigmoid, (1/2β)² for ipo, at any beta.
    for b in (0.01, 0.1, 10.0):
        np.testing.assert_allclose(dpo_loss(pc, pc, rc, rc, keep, b, seq_len=4), np.log(2), rtol=1e-6)
        np.testing.assert_allclose(dpo_loss(pc, pc, rc, rc, keep, b, "ipo", seq_len=4), (1 / (2 * b)) ** 2, rtol=1e-6)
    # Dropped pairs get no gradient.
    grads = jax.grad(functools.partial(dpo_loss, seq_len=4), argnums=(0, 1))(pc, pr, rc, rr, keep, beta)
    for g in grads:
        np.testing.assert_array_equal(np.asarray(g)[~np.asarray(keep)], 0.0)
    with pytest.raises(ValueError):
        dpo_loss(pc, pr, rc, rr, keep, beta, "hinge", seq_len=4)


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_dpo_loss_without_kept_pairs_is_zero_with_zero_gradient(loss_type):
    pc = jnp.array([-1e30, 3.0])  # even absurd log-probabilities of dropped pairs do no harm
    none = jnp.zeros(2, bool)
    loss, grads = jax.value_and_grad(functools.partial(dpo_loss, seq_len=4), argnums=(0, 1))(
        pc, pc, pc, pc, none, 0.1, loss_type
    )
    assert float(loss) == 0.0
    for g in grads:
        np.testing.assert_array_equal(g, 0.0)


def test_one_dpo_step_raises_the_chosen_over_the_rejected():
    policy = Policy(key=jax.random.PRNGKey(0))
    reference = policy
    chosen, rejected = jnp.array([[1, 4, 0, 1], [2, 2, 2, 2]]), jnp.array([[0, 0, 0, 0], [7, 6, 5, 4]])
    keep = jnp.array([True, True])

    def loss(policy):
        log_prob = jax.vmap(policy.log_prob)
        ref = jax.vmap(reference.log_prob)
        return dpo_loss(log_prob(chosen), log_prob(rejected), ref(chosen), ref(rejected), keep, 0.1, seq_len=4)

    def margin(policy):
        return jax.vmap(policy.log_prob)(chosen) - jax.vmap(policy.log_prob)(rejected)

    @eqx.filter_jit
    def step(policy):
        grads = eqx.filter_grad(loss)(policy)
        stepped = eqx.apply_updates(policy, jax.tree.map(lambda g: -1.0 * g, grads))
        return loss(policy), margin(policy), margin(stepped)

    loss_before, margin_before, margin_after = step(policy)
    np.testing.assert_allclose(loss_before, np.log(2), rtol=1e-6)
    assert np.all(np.asarray(margin_after) > np.asarray(margin_before))
