"""The q* labeller of every q*-labelled comparison (the oracle pairs of `anchor_fraction`, the
held-out meta set) and the budget of such comparisons per outer iteration (docs/grounding.md).

The labeller may be imperfect: it prefers a over b where

  v(a) + s·ε_a > v(b) + s·ε_b,   v = q* + oracle_bias·σ(q*)·f,   s = oracle_noise·σ(q*),

f the verbosity of `bias_token`, σ(q*) the population std of the run's q* over the N, and
ε ~ N(0, 1) drawn afresh for every comparison. At oracle_noise 0 and oracle_bias 0 both added
terms are exactly +0.0 (or −0.0), so the labels are [q*(a) > q*(b)] bit for bit.

Under gradient_estimator `exact` the oracle-pair step trains on the expectation over uniform pairs
and over the labeller's noise: `expected_label_sums` is the labeller's side of it.

`oracle_budget` > 0 caps the comparisons the judges train on per outer iteration: an oracle-pair
step costs its pairs, a held-out correction all the held-out pairs (once, however many judges
of the ensemble take it); a step runs only where its whole cost fits what is left.

Every function handles ONE run.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.special

from engine.core import exact
from engine.core.state import RunState
from engine.core.world import World, all_sequences, verbosity
from engine.knobs import Condition
from engine.mechanisms.bias import biased_target

# The labeller's noise of a step is drawn from the step's key folded with NOISE_TAG ("nois" in
# ASCII), so the pairs drawn from the key itself are those of a perfect labeller.
NOISE_TAG = 0x6E6F6973


def noise_key(key):
    return jax.random.fold_in(key, NOISE_TAG)


def labeller_values(world: World, q_star, condition: Condition):
    """v = q* + oracle_bias·σ(q*)·f over the N: what the labeller ranks (q* itself at bias 0)."""
    return biased_target(q_star, verbosity(world, condition.bias_token), condition.oracle_bias)


def noisy_preferences(values, index_a, index_b, noise_scale, key):
    """[v(a) + s·ε_a > v(b) + s·ε_b] for each pair (n,) bool, ε ~ N(0, 1) fresh per comparison.

    A pair is labelled against [v(a) > v(b)] with probability Φ(−|v(a) − v(b)| / (√2·s)).
    """
    noise = noise_scale * jax.random.normal(key, (2, len(index_a)), values.dtype)
    return values[index_a] + noise[0] > values[index_b] + noise[1]


def labelled_pairs(world: World, q_star, condition: Condition, index_a, index_b, key, imperfect: bool):
    """Sequence pairs (by index into the N) with the labeller's labels, noise from `key`;
    [q*(a) > q*(b)] where the run's variant has no imperfect labeller (`imperfect` false)."""
    sequences = jnp.asarray(all_sequences(world))
    if not imperfect:
        return sequences[index_a], sequences[index_b], q_star[index_a] > q_star[index_b]
    scale = condition.oracle_noise * jnp.std(q_star)
    labels = noisy_preferences(labeller_values(world, q_star, condition), index_a, index_b, scale, key)
    return sequences[index_a], sequences[index_b], labels


def expected_label_sums(world: World, q_star, condition: Condition, imperfect: bool):
    """ℓ(c) = (1/N) Σ_b E[y(c, b) − y(b, c)] for every c, (N,): how much the labeller prefers c
    to a uniform b, on average over its noise; the exact oracle-pair step (gradient_estimator `exact`)
    trains towards it.

    E[y(c, b) − y(b, c)] = sign(v(c) − v(b)) for a noiseless labeller (sign(q*(c) − q*(b)) where
    `imperfect` is false), and 2Φ(Δv/(√2·s)) − 1 = erf(Δv/(2s)) with noise of scale s > 0
    (`noisy_preferences`); 0 for c = b, and for a tie of a noiseless labeller, as it labels either
    order 0. A constant of the run, computed once (N² terms).
    """
    uniform = jnp.full(world.n_sequences, 1.0 / world.n_sequences)
    if not imperfect:
        return exact.antisymmetric_pair_sum(jnp.sign, q_star, uniform)
    scale = condition.oracle_noise * jnp.std(q_star)
    noisy = scale > 0
    divisor = 2 * jnp.where(noisy, scale, 1.0)

    def expected_preference(difference):
        return jnp.where(noisy, jax.scipy.special.erf(difference / divisor), jnp.sign(difference))

    return exact.antisymmetric_pair_sum(expected_preference, labeller_values(world, q_star, condition), uniform)


def within_budget(state: RunState, condition: Condition, cost: int, budgeted: bool):
    """Does a q*-labelled step of `cost` comparisons fit what is left of this iteration's budget?
    (One run, or a batch of runs: elementwise; always, with no code, where the variant has no budget.)"""
    if not budgeted:
        return True
    budget = condition.oracle_budget
    return (budget == 0) | (cost <= budget - state.oracle_spent)


def spend(state: RunState, condition: Condition, taken, cost: int, budgeted: bool) -> RunState:
    """Count a step of `cost` comparisons against the budget where it was taken (under a budget
    only, so the count never passes it; nothing at all where the variant has no budget)."""
    if not budgeted:
        return state
    spent = state.oracle_spent + jnp.where(taken & (condition.oracle_budget > 0), cost, 0)
    return eqx.tree_at(lambda s: s.oracle_spent, state, spent)
