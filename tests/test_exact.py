import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from engine.core.exact import (
    best_worst_gap,
    entropy,
    k1_terms,
    k3_terms,
    kl,
    kl_k1,
    kl_k3,
    order_statistic_weights,
    policy_log_probs_all,
    policy_log_probs_tree,
    policy_mode,
    sample_indices,
    sequence_index,
)
from engine.core.models import DEFAULT_HIDDEN, Policy
from engine.core.world import REFERENCE_WORLD as WORLD
from engine.core.world import all_sequences, reference_q_star

tree_log_probs = jax.jit(policy_log_probs_tree)
teacher_forced = jax.jit(policy_log_probs_all)
gap_of = jax.jit(best_worst_gap)
weights_of = jax.jit(order_statistic_weights)


def sharpened(policy: Policy, factor: float) -> Policy:
    """The policy with its output head scaled: log-probabilities spread over a wide range."""
    return eqx.tree_at(lambda p: p.head.weight, policy, policy.head.weight * factor)


def two_policies(hidden: int = DEFAULT_HIDDEN) -> tuple[Policy, Policy]:
    """A sharpened policy and a plain one of width `hidden` (a wider policy starts flatter, so it is
    sharpened more)."""
    return (
        sharpened(Policy(key=jax.random.PRNGKey(0), hidden=hidden), 8.0 * max(1, hidden / DEFAULT_HIDDEN)),
        Policy(key=jax.random.PRNGKey(1), hidden=hidden),
    )


@pytest.fixture(scope="module")
def policies():
    return two_policies()


@pytest.mark.parametrize("hidden", (8, DEFAULT_HIDDEN, 128))  # policy_hidden: the narrowest and widest studied
def test_prefix_tree_distribution_equals_teacher_forced_and_sums_to_one(hidden):
    policies = two_policies(hidden)
    for policy in policies:
        tree, forced = tree_log_probs(policy), teacher_forced(policy)
        assert tree.shape == (4096,)
        # log π within a few float32 ulps of values up to ~30 in size; π itself to 1e-6.
        np.testing.assert_allclose(tree, forced, rtol=1e-6, atol=1e-5)
        np.testing.assert_allclose(np.exp(tree), np.exp(forced), rtol=1e-5, atol=1e-6)
        assert abs(np.exp(np.asarray(tree, np.float64)).sum() - 1) < 1e-5
    # The sharpened policy is far from uniform, so the order of the 4096 is really tested.
    assert np.exp(tree_log_probs(policies[0])).max() > 0.05


def test_sequence_index_is_the_lexicographic_order():
    np.testing.assert_array_equal(sequence_index(WORLD, all_sequences(WORLD)), np.arange(4096))


def test_policy_mode_is_the_most_probable_sequence(policies):
    log_probs = tree_log_probs(policies[0])
    index, probability = policy_mode(log_probs)
    assert int(index) == int(np.argmax(log_probs))
    np.testing.assert_allclose(probability, np.exp(log_probs).max(), rtol=1e-6)


def test_inverse_cdf_draws_follow_the_distribution(policies):
    """Frequencies of 200 000 draws match π (a chi-square test over the sequences with expected
    count ≥ 20, the rest pooled); a point mass is drawn every time, at either end of the 4096."""
    log_probs = tree_log_probs(policies[0])
    draws = np.asarray(jax.jit(sample_indices, static_argnums=2)(jax.random.PRNGKey(3), log_probs, 200_000))
    expected = 200_000 * np.exp(np.asarray(log_probs, dtype=np.float64))
    counts = np.bincount(draws, minlength=4096)
    big = expected >= 20
    observed = np.append(counts[big], counts[~big].sum())
    expected = np.append(expected[big], expected[~big].sum())
    statistic, p_value = scipy.stats.chisquare(observed, expected * observed.sum() / expected.sum())
    assert big.sum() > 50 and p_value > 1e-3, (big.sum(), statistic, p_value)
    for index in (0, 1234, 4095):
        point_mass = jnp.full(4096, -jnp.inf).at[index].set(0.0)
        np.testing.assert_array_equal(sample_indices(jax.random.PRNGKey(0), point_mass, 64), index)


@pytest.fixture(scope="module")
def functionals(policies):
    """Exact functionals of the first policy and their gradients, in one compiled call.

    Rows: KL(π‖π₀), H(π), KL(π‖π) with π held fixed, E_π[k1] and E_π[k3] as loss terms
    (weights π held fixed), KL(π₀‖π). Gradients by one reverse-mode Jacobian.
    """
    policy, initial = policies
    reference = teacher_forced(initial)
    fixed = tree_log_probs(policy)

    def exact(policy):
        log_probs = policy_log_probs_tree(policy)
        weights = jnp.exp(fixed)
        return jnp.stack(
            [
                kl(log_probs, reference),
                entropy(log_probs),
                kl(log_probs, fixed),
                jnp.sum(weights * k1_terms(log_probs, reference)),
                jnp.sum(weights * k3_terms(log_probs, reference)),
                kl(reference, log_probs),
            ]
        )

    def direct(policy):  # KL and entropy written out on the teacher-forced distribution
        log_p = policy_log_probs_all(policy)
        p = jnp.exp(log_p)
        return jnp.stack([jnp.sum(p * (log_p - reference)), -jnp.sum(p * log_p)])

    values_and_grads = jax.jit(lambda p: (exact(p), jax.jacrev(exact)(p), jax.jacrev(direct)(p)))
    values, grads, direct_grads = values_and_grads(policy)
    return {"policy": policy, "reference": reference, "values": values, "grads": grads, "direct_grads": direct_grads}


def row(grads, i):
    return [leaf[i] for leaf in jax.tree.leaves(grads)]


def test_exact_kl_and_entropy_equal_direct_sums_and_so_do_their_gradients(functionals):
    log_p = np.asarray(teacher_forced(functionals["policy"]), np.float64)
    reference = np.asarray(functionals["reference"], np.float64)
    kl_value, entropy_value = functionals["values"][:2]
    np.testing.assert_allclose(kl_value, np.sum(np.exp(log_p) * (log_p - reference)), rtol=1e-5)
    np.testing.assert_allclose(entropy_value, -np.sum(np.exp(log_p) * log_p), rtol=1e-5)
    for i in (0, 1):
        exact_grads, direct_grads = row(functionals["grads"], i), row(functionals["direct_grads"], i)
        assert max(np.abs(leaf).max() for leaf in exact_grads) > 1e-2  # a real gradient
        for exact_leaf, direct_leaf in zip(exact_grads, direct_grads):
            np.testing.assert_allclose(exact_leaf, direct_leaf, rtol=1e-4, atol=1e-6)


def test_kl_of_a_policy_to_itself_is_exactly_zero(functionals, policies):
    log_probs = tree_log_probs(policies[0])
    assert float(kl(log_probs, log_probs)) == 0.0
    assert max(np.abs(leaf).max() for leaf in row(functionals["grads"], 2)) < 1e-5


def test_sampled_estimators_are_unbiased_values_but_not_gradients_of_the_kl(functionals, policies):
    """Exactly, over the 4096: E_π[k1] = E_π[k3] = KL(π‖π₀); E_π[∇k1] = 0, E_π[∇k3] = ∇KL(π₀‖π)."""
    kl_value, _, _, k1_mean, k3_mean, _ = functionals["values"]
    np.testing.assert_allclose(k1_mean, kl_value, rtol=1e-5)
    np.testing.assert_allclose(k3_mean, kl_value, rtol=1e-4)
    for leaf in row(functionals["grads"], 3):
        np.testing.assert_allclose(leaf, 0.0, atol=1e-5)
    for k3_leaf, forward_leaf in zip(row(functionals["grads"], 4), row(functionals["grads"], 5)):
        np.testing.assert_allclose(k3_leaf, forward_leaf, rtol=1e-3, atol=1e-5)
    # The batch functions are the means of the per-sample terms; k3 is never negative.
    log_probs, reference = tree_log_probs(policies[0])[:5], functionals["reference"][:5]
    np.testing.assert_allclose(kl_k1(log_probs, reference), jnp.mean(log_probs - reference))
    r = np.exp(np.asarray(reference, np.float64) - np.asarray(log_probs, np.float64))
    np.testing.assert_allclose(kl_k3(log_probs, reference), np.mean(r - 1 - np.log(r)), rtol=1e-5)
    assert float(jnp.min(k3_terms(log_probs, reference))) >= 0.0


# ----------------------------------------------------------------------------------------
# Order statistics.


def brute_force_weights(scores, probs, n):
    """P(best = x), P(worst = x) by enumerating all ordered n-tuples (ties: first draw wins)."""
    best, worst = np.zeros(len(scores)), np.zeros(len(scores))
    for draw in itertools.product(range(len(scores)), repeat=n):
        weight = np.prod(probs[list(draw)])
        drawn = scores[list(draw)]
        best[draw[int(np.argmax(drawn))]] += weight
        worst[draw[int(np.argmin(drawn))]] += weight
    return best, worst


def test_order_statistic_weights_equal_enumeration_on_a_small_world_with_ties():
    scores = np.array([0.3, -1.0, 0.3, 2.0, -1.0, 0.3, 5.0])
    probs = np.array([0.2, 0.1, 0.25, 0.05, 0.15, 0.25, 0.0])  # a zero-mass top sequence too
    for n in (1, 2, 3, 4):
        best, worst = weights_of(jnp.asarray(scores), jnp.asarray(probs), n)
        expected_best, expected_worst = brute_force_weights(scores, probs, n)
        np.testing.assert_allclose(best, expected_best, atol=1e-6)
        np.testing.assert_allclose(worst, expected_worst, atol=1e-6)


@pytest.mark.parametrize("tied", [False, True])
def test_best_worst_gap_equals_monte_carlo_of_best_and_worst_of_n(policies, tied):
    probs = np.exp(np.asarray(tree_log_probs(policies[0]), np.float64))
    probs /= probs.sum()
    q_star = np.asarray(reference_q_star(WORLD), np.float64)
    scores = q_star + np.random.default_rng(0).normal(size=4096)  # an imperfect judge
    if tied:
        scores = np.round(scores)  # blocks of tied scores
    n, trials = 4, 200_000
    draws = np.random.default_rng(1).choice(4096, size=(trials, n), p=probs)
    rows = np.arange(trials)
    best = draws[rows, np.argmax(scores[draws], axis=1)]
    worst = draws[rows, np.argmin(scores[draws], axis=1)]
    for values in (scores, q_star):
        sampled = values[best] - values[worst]
        exact = float(gap_of(*(jnp.asarray(a, jnp.float32) for a in (scores, values, probs)), n))
        standard_error = sampled.std() / np.sqrt(trials)
        assert abs(exact - sampled.mean()) < 3 * standard_error, (exact, sampled.mean(), standard_error)


def test_best_worst_gap_of_one_draw_is_zero_and_weights_are_distributions(policies):
    probs = jnp.exp(tree_log_probs(policies[1]))
    scores = jnp.asarray(reference_q_star(WORLD))
    assert float(gap_of(scores, scores, probs, 1)) == 0.0
    best, worst = weights_of(scores, probs, 8)
    np.testing.assert_allclose([best.sum(), worst.sum()], 1.0, atol=1e-5)
    assert float(jnp.min(best)) >= 0 and float(jnp.min(worst)) >= 0
    # n may be a traced per-run value: vmap over n equals one call per n.
    gaps = jax.jit(jax.vmap(best_worst_gap, in_axes=(None, None, None, 0)))(scores, scores, probs, jnp.array([1, 2, 4]))
    np.testing.assert_allclose(gaps, [gap_of(scores, scores, probs, n) for n in (1, 2, 4)], rtol=1e-6)
    assert 0 == gaps[0] < gaps[1] < gaps[2]
