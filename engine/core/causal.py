"""What every policy whose next-token distribution is one function of the prefix shares: sampling, teacher
forcing and the exact distribution over all N, all from `conditionals`.

A `CausalPolicy` (`MLPPolicy`, `TransformerPolicy`) computes, for a batch of prefixes of length m ≤ L − 1,
log p(· | x_<t) at every position t = 0..m at once, reading only x_<t. So:

- teacher forcing a batch of whole sequences is one call on their first L − 1 tokens;
- sampling calls it on the prefix drawn so far, position by position, and sums the drawn tokens'
  log-probabilities as it goes (the sampling pass is the policy-gradient pass, as the GRU's);
- π of all N = V^L sequences is one call on the V^(L−1) prefixes of length L − 1: prefix p's
  conditionals at positions 0..L−2 give log π(p), its last one the V children p·V + t, so every node of
  the prefix tree is read (the inner ones once per descendant prefix), in the lexicographic order of
  `engine.core.world.all_sequences`.

`log_prob` of one sequence (each architecture's own, position by position) is the definition these are
tested against (tests/test_architectures.py).
"""

import abc

import equinox as eqx
import jax
import jax.numpy as jnp

from engine.core.world import World, all_sequences


def inverse_cdf_token(log_probs, uniform):
    """One token per row drawn from exp(log_probs) (n, V) by inverse CDF with uniforms (n,).

    The token is the first whose cumulative mass exceeds u·total; where rounding leaves none,
    the last token with positive mass (never a token of probability zero).
    """
    probs = jnp.exp(log_probs)
    cdf = jnp.cumsum(probs, axis=-1)
    below = jnp.sum(cdf <= (uniform * cdf[:, -1])[:, None], axis=-1)
    last_positive = log_probs.shape[-1] - 1 - jnp.argmax(probs[:, ::-1] > 0, axis=-1)
    return jnp.minimum(below, last_positive).astype(jnp.int32)


def all_prefixes(world: World) -> jax.Array:
    """The V^(L−1) prefixes of length L − 1, lexicographic: (V^(L−1), L − 1) int32."""
    return jnp.asarray(all_sequences(World(world.vocab, world.seq_len - 1)))


class CausalPolicy(eqx.Module):
    """An autoregressive policy π(x) = Π_t p(x_t | x_<t) given by `conditionals`."""

    world: eqx.AbstractVar[World]

    @abc.abstractmethod
    def conditionals(self, prefixes):
        """log p(· | x_<t) at t = 0..m of a batch of prefixes (n, m), m ≤ L − 1 -> (n, m + 1, V)."""

    @abc.abstractmethod
    def log_prob(self, tokens):
        """log π(tokens) of ONE sequence (L,), position by position: the model's definition."""

    def sample(self, uniforms):
        """Draw a batch of sequences with their log-probabilities, by inverse CDF per position.

        uniforms: (n, L) in [0, 1). Returns (tokens (n, L) int32, log π (n,)), the log-probability
        differentiable in the policy.
        """
        tokens = jnp.zeros((len(uniforms), 0), jnp.int32)
        log_prob = 0.0
        for position in range(self.world.seq_len):
            log_probs = self.conditionals(tokens)[:, -1]
            token = inverse_cdf_token(log_probs, uniforms[:, position])
            log_prob = log_prob + jnp.take_along_axis(log_probs, token[:, None], axis=-1)[:, 0]
            tokens = jnp.concatenate([tokens, token[:, None]], axis=-1)
        return tokens, log_prob

    def log_prob_batch(self, tokens):
        """Teacher-forced log π of a batch of sequences (n, L) -> (n,), in one call of `conditionals`."""
        log_probs = self.conditionals(tokens[:, :-1])
        return jnp.take_along_axis(log_probs, tokens[..., None], axis=-1)[..., 0].sum(axis=-1)

    def all_log_probs(self):
        """log π(x) of all N sequences, (N,) lexicographic, from the V^(L−1) prefixes of length L − 1."""
        prefixes = all_prefixes(self.world)
        log_probs = self.conditionals(prefixes)  # (V^(L−1), L, V)
        prefix_log_probs = jnp.take_along_axis(log_probs[:, :-1], prefixes[..., None], axis=-1)[..., 0].sum(axis=-1)
        return (prefix_log_probs[:, None] + log_probs[:, -1]).reshape(-1)
