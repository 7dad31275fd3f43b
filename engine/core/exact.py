"""The policy's whole distribution, exactly, and exact functionals of it.

The world is enumerable, so π over all N sequences costs one pass over the prefix
tree: the prefixes of length 0..L−1, each with its next-token log-softmax (a GRU policy at 8⁴:
1 + 8 + 64 + 512 = 585 GRU steps, instead of teacher-forcing 4096 sequences × 4 steps).
Everything here handles ONE run (one policy, one set of scores); batching over runs is vmap's
job. Functions of log-probabilities take the (N,) vector in the lexicographic order of
`engine.core.world.all_sequences(world)` (position 0 varies slowest).

- `policy_log_probs_tree`: log π of all N sequences, differentiable;
- `entropy`, `kl`: exact H(π) and KL(π‖π₀); their `jax.grad` is the exact gradient;
- `k1_terms`, `k3_terms`, `kl_k1`, `kl_k3`: the sampled KL estimators (Schulman's k1, k3,
  as TRL uses them) on a batch of samples x ~ π, for comparison with the exact KL;
- `order_statistic_weights`, `best_worst_gap`: exact best-of-N / worst-of-N expectations;
- `sequence_index`, `policy_mode`: tokens → index into the N, and the policy's mode;
- `sample_indices`, `sample_weighted`: draws from a distribution over the N (or from
  weights in proportion) by inverse CDF;
- `judge_scores_all`, `spearman`: the judge's scores of all N and their rank correlation;
- `antisymmetric_pair_sum`: Σ_b w_b·f(x_c − x_b) over all pairs, f odd: the expected pair losses'
  gradients (docs/mean_field.md);
- `policy_log_probs_all`: log π by teacher forcing, the slow reference the tests hold the tree to.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.stats
import numpy as np

from engine.core.models import JudgeModel, PolicyModel, prefix_index
from engine.core.world import World, all_sequences

# ----------------------------------------------------------------------------------------
# The distribution.


def policy_log_probs_tree(policy: PolicyModel) -> jax.Array:
    """log π(x) of all N = V^L sequences, (N,), by one pass over the prefix tree.

    A GRU policy's level k holds the V^k prefixes of length k in lexicographic order with their
    next-token log-softmax (`Policy.prefix_levels`); child p·V + t of prefix p reads token t. At 8⁴,
    1 + 8 + 64 + 512 GRU steps instead of 4096 × 4, and W_hh·h once per parent. An MLP or transformer
    policy reads every level from one pass over the V^(L−1) prefixes of length L − 1
    (`engine.core.causal.CausalPolicy.all_log_probs`). Equal to the teacher-forced
    `policy_log_probs_all` up to float rounding (a few ulps of log π). Differentiable in the policy.
    """
    return policy.all_log_probs()


def sequence_index(world: World, tokens) -> jax.Array:
    """Index into the N (lexicographic) of sequences (..., L) int -> (...,) int32."""
    return prefix_index(tokens, world.seq_len, world.vocab)


def sample_indices(key, log_probs, n: int) -> jax.Array:
    """n independent draws (indices into the N) from exp(log_probs), by inverse CDF.

    n uniforms and a binary search in the cumulative sum: `jax.random.categorical` would draw
    n × N Gumbels (Gumbel-max), which cost a dpo run with anchored rejection 3× its step.
    """
    return sample_weighted(key, jnp.exp(log_probs), n)


def sample_weighted(key, weights, n: int) -> jax.Array:
    """n independent draws (indices into the N) in proportion to weights ≥ 0, which need not
    sum to 1 (a sum of several distributions, say), by inverse CDF."""
    cdf = jnp.cumsum(weights)
    u = jax.random.uniform(key, (n,), dtype=cdf.dtype) * cdf[-1]
    return jnp.minimum(jnp.searchsorted(cdf, u, side="right"), cdf.size - 1).astype(jnp.int32)


def policy_mode(log_probs):
    """The policy's most probable sequence: (index into the N, its probability π)."""
    index = jnp.argmax(log_probs)
    return index, jnp.exp(log_probs[index])


# ----------------------------------------------------------------------------------------
# Exact functionals. The reference is whatever the caller passes: to penalise toward a fixed
# π₀, pass π₀'s log-probabilities computed outside the differentiated function.


def entropy(log_probs):
    """H(π) = −Σ π log π, nats (uniform over N: ln N, ln 4096 ≈ 8.318 at 8⁴)."""
    return -jnp.sum(jnp.exp(log_probs) * log_probs)


def kl(log_probs, reference_log_probs):
    """KL(π‖π₀) = Σ π (log π − log π₀), exact. KL(π‖π) is exactly 0 (the difference is 0)."""
    return jnp.sum(jnp.exp(log_probs) * (log_probs - reference_log_probs))


# ----------------------------------------------------------------------------------------
# Sampled KL estimators, on a batch of samples x ~ π with their log-probabilities under π
# (log_probs, differentiable) and under π₀ (reference_log_probs), as in Schulman's note
# "Approximating KL divergence" (2020) and TRL. Both are unbiased for KL(π‖π₀) as values.
# As *loss terms* (samples held fixed, gradient through log π only) they are not:
#   E_π[∇k1] = E_π[∇ log π] = 0                       (k1 adds noise, no pull toward π₀);
#   E_π[∇k3] = E_π[(1 − π₀/π) ∇ log π] = ∇ KL(π₀‖π)    (k3 pulls along the *forward* KL).
# tests/test_exact.py checks both identities exactly over the N.


def k1_terms(log_probs, reference_log_probs):
    """Per-sample k1 = log π(x) − log π₀(x) = −log r, with r = π₀(x)/π(x)."""
    return log_probs - reference_log_probs


def k3_terms(log_probs, reference_log_probs):
    """Per-sample k3 = (r − 1) − log r, r = π₀(x)/π(x); ≥ 0, computed with expm1."""
    log_ratio = reference_log_probs - log_probs
    return jnp.expm1(log_ratio) - log_ratio


def kl_k1(log_probs, reference_log_probs):
    """Batch mean of k1 over samples x ~ π: the `kl_estimator` = `k1` term."""
    return jnp.mean(k1_terms(log_probs, reference_log_probs))


def kl_k3(log_probs, reference_log_probs):
    """Batch mean of k3 over samples x ~ π: the `kl_estimator` = `k3` term."""
    return jnp.mean(k3_terms(log_probs, reference_log_probs))


KL_ESTIMATORS = {"k1": kl_k1, "k3": kl_k3}


# ----------------------------------------------------------------------------------------
# Order statistics: best and worst of N i.i.d. draws from π, exactly.


def _power_difference_quotient(a, b, n):
    """(a^n − b^n) / (a − b) = Σ_{k<n} a^k b^(n−1−k), summed without cancellation.

    a ≥ b ≥ 0 elementwise; n a non-negative int (Python or traced). Recurrence
    S_(m+1) = b·S_m + a^m from S_0 = 0.
    """

    def body(_, carry):
        total, a_power = carry
        return b * total + a_power, a_power * a

    total, _ = jax.lax.fori_loop(0, n, body, (jnp.zeros_like(a), jnp.ones_like(a)))
    return total


def order_statistic_weights(scores, probs, n):
    """P(best of n = x) and P(worst of n = x), each (N,), for n i.i.d. draws x ~ probs.

    Best and worst are by `scores` (the judge J). In score order with CDF F:
    P(best ∈ block B) = F(B)^n − F(B⁻)^n, and P(worst ∈ B) = S(B)^n − S(B⁺)^n with S(B) =
    P(score ≥ B), S(B⁺) = P(score > B).
    Ties: sequences with exactly equal scores form one block. Within a block the best is
    drawn in proportion to π — what argmax (first index) over i.i.d. draws does, since
    each draw that lands in the block is a π|B draw, independent of its position. So
    P(best = x) = π(x)·(F(B)^n − F(B⁻)^n)/π(B) = π(x)·Σ_{k<n} F(B)^k F(B⁻)^(n−1−k), which
    needs no division, no cancellation, and no special case for zero-mass blocks.
    n: int, static or traced (n = 0 gives zero weights).
    """
    order = jnp.argsort(scores)
    sorted_scores = scores[order]
    sorted_probs = probs[order]
    below = jnp.concatenate([jnp.zeros(1, probs.dtype), jnp.cumsum(sorted_probs)[:-1]])  # P(score < x), by rank
    above = jnp.concatenate([jnp.cumsum(sorted_probs[::-1])[::-1][1:], jnp.zeros(1, probs.dtype)])  # P(score > x)
    starts_block = jnp.concatenate([jnp.array([True]), sorted_scores[1:] != sorted_scores[:-1]])
    ends_block = jnp.concatenate([sorted_scores[1:] != sorted_scores[:-1], jnp.array([True])])
    # Each rank gets the cumulative masses at its block's edges: F(B⁻) is `below` at the
    # block's first rank (the running max over block starts, `below` rising), S(B⁺) is
    # `above` at its last rank (a reverse running max over block ends).
    cdf_before = jax.lax.cummax(jnp.where(starts_block, below, -jnp.inf))
    survival_after = jax.lax.cummax(jnp.where(ends_block, above, -jnp.inf), reverse=True)
    block_mass = jax.ops.segment_sum(sorted_probs, jnp.cumsum(starts_block) - 1, num_segments=len(scores))
    mass_of_rank = block_mass[jnp.cumsum(starts_block) - 1]
    cdf_through = cdf_before + mass_of_rank  # F(B)
    survival_from = survival_after + mass_of_rank  # S(B)
    best = sorted_probs * _power_difference_quotient(cdf_through, cdf_before, n)
    worst = sorted_probs * _power_difference_quotient(survival_from, survival_after, n)
    unsort = jnp.argsort(order)
    return best[unsort], worst[unsort]


def best_worst_gap(scores, values, probs, n):
    """E[values(best of n) − values(worst of n)], best and worst by `scores`, exact.

    For n i.i.d. draws from π (`probs` over the N). values = scores: the judge's gap
    (`best_worst_gap_judge`); values = q*: the true gap (`best_worst_gap_true`). n = 1
    gives exactly 0. Ties in score: see `order_statistic_weights`.
    """
    best, worst = order_statistic_weights(scores, probs, n)
    return jnp.sum((best - worst) * values)


# ----------------------------------------------------------------------------------------
# The judge over all outputs, and rank correlation.


def judge_scores_all(judges: JudgeModel):
    """Ensemble-mean score J(x) of every one of the N sequences (by the prefix tree for a GRU judge)."""
    return eqx.filter_vmap(lambda judge: judge.all_scores())(judges).mean(axis=0)


def policy_log_probs_all(policy: PolicyModel):
    """log π(x) of every one of the N sequences by teacher forcing (the slow reference for
    `policy_log_probs_tree`, which the lab uses)."""
    return jax.vmap(policy.log_prob)(jnp.asarray(all_sequences(policy.world)))


def spearman(x, y):
    """Spearman rank correlation of two vectors (average ranks for ties, like scipy)."""
    rank_x = jax.scipy.stats.rankdata(x)
    rank_y = jax.scipy.stats.rankdata(y)
    return jnp.corrcoef(rank_x, rank_y)[0, 1]


# ----------------------------------------------------------------------------------------
# Sums over all ordered pairs.

# Tiles of PAIR_BLOCK² pairs (64 KiB of float32 per run, a vmapped batch of runs' tiles still in a
# core's L2 cache): the fastest size tried on the lab's CPU (docs/mean_field.md).
PAIR_BLOCK = 128


def antisymmetric_pair_sum(odd, x, weights):
    """v_c = Σ_b weights_b · odd(x_c − x_b) for every c, (n,), for an odd function odd(−d) = −odd(d).

    x, weights: (n,). The n² terms are visited one tile of PAIR_BLOCK² pairs at a time, only the
    tiles on and above the diagonal of blocks: a tile above it gives its rows' sums (tile · w) and,
    by the antisymmetry, its columns' too (−tileᵀ · w), so `odd` is evaluated about n²/2 times and
    no n × n array is ever held. A world whose n is not a multiple of PAIR_BLOCK is padded to one
    with weight 0 (adding nothing to any sum) and the padding's own sums dropped.
    """
    n = len(x)
    padding = -n % PAIR_BLOCK
    x, weights = jnp.pad(x, (0, padding)), jnp.pad(weights, (0, padding))
    n_blocks = len(x) // PAIR_BLOCK
    x_blocks = x.reshape(n_blocks, PAIR_BLOCK)
    weight_blocks = weights.reshape(n_blocks, PAIR_BLOCK)
    rows, columns = np.triu_indices(n_blocks)

    def add_tile(sums, tile_index):
        i, j = tile_index
        tile = odd(x_blocks[i][:, None] - x_blocks[j][None, :])
        sums = sums.at[i].add(tile @ weight_blocks[j])
        return sums.at[j].add(jnp.where(i == j, 0.0, -(weight_blocks[i] @ tile))), None

    sums, _ = jax.lax.scan(add_tile, jnp.zeros_like(weight_blocks), (rows, columns))
    return sums.reshape(-1)[:n]
