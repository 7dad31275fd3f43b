"""The enumerable world: every length-4 sequence over 8 arrow tokens, the hidden q*, and
the surface feature (verbosity) a judge can be biased towards.

Everything here is a constant of the lab. The judge never sees q*; diagnostics,
pretraining and the q*-labelled steps (oracle pairs, the held-out meta set) do.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np

SEQ_LEN = 4
VOCAB = 8
N_SEQUENCES = VOCAB**SEQ_LEN
UNIFORM_ENTROPY = float(np.log(N_SEQUENCES))  # nats: the entropy of the uniform policy
ARROWS = ("↑", "↗", "→", "↘", "↓", "↙", "←", "↖")

WORLD_KEY = 42
PAIR_ALPHA = 0.3


def all_sequences() -> np.ndarray:
    """All 4096 sequences, int32 (4096, 4), lexicographic (position 0 varies slowest)."""
    return np.array(list(itertools.product(range(VOCAB), repeat=SEQ_LEN)), dtype=np.int32)


def render(sequence) -> str:
    """A sequence of token ids as compass arrows, e.g. [1, 4, 0, 1] -> '↗ ↓ ↑ ↗'."""
    return " ".join(ARROWS[int(t)] for t in sequence)


def reference_q_star() -> jax.Array:
    """The reference ground truth, (4096,) float32, bit-identical to the published recipe.

    q*(x) = sum_i w_pos[i] w_tok[x_i] + sum_i w_pair[i, x_i]. Despite its name the pair
    term is per (position, token), so this q* is additive over positions (a named quirk).
    """
    key_pos, key_tok, key_pair = jax.random.split(jax.random.PRNGKey(WORLD_KEY), 3)
    w_pos = jax.random.normal(key_pos, (SEQ_LEN,))
    w_tok = jax.random.normal(key_tok, (VOCAB,))
    w_pair = PAIR_ALPHA * jax.random.normal(key_pair, (SEQ_LEN, VOCAB))
    x = jnp.asarray(all_sequences())
    positions = jnp.arange(SEQ_LEN)
    return (w_pos * w_tok[x]).sum(axis=1) + w_pair[positions, x].sum(axis=1)


def transition_term() -> jax.Array:
    """A genuine token-interaction term sum_i w_trans[x_i, x_{i+1}], (4096,) float32.

    Drawn from a key folded off the world key, so the reference draws stay untouched.
    Added to q* with weight `transition_alpha` (0 in the reference world).
    """
    w_trans = jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(WORLD_KEY), 3), (VOCAB, VOCAB))
    x = jnp.asarray(all_sequences())
    return w_trans[x[:, :-1], x[:, 1:]].sum(axis=1)


def q_star_of(transition_alpha) -> jax.Array:
    """The ground truth of one run: the reference q* plus `transition_alpha` times the transition term."""
    return reference_q_star() + transition_alpha * transition_term()


def verbosity(bias_token) -> jax.Array:
    """f(x) = how many positions of x hold `bias_token`, (4096,) float32 with values 0..4.

    `bias_token` is a token id (0..7), possibly traced. Float so that it enters targets and
    fits without casts; the values are small integers, exact in float32.
    """
    return jnp.sum(jnp.asarray(all_sequences()) == bias_token, axis=1).astype(jnp.float32)
