"""The enumerable world: every length-L sequence over V arrow tokens, the hidden q*, and the
surface feature (verbosity) a judge can be biased towards.

A `World` is a static value (its sizes fix every shape of the compiled program); the reference
world is 8⁴ = 4096 sequences. The judge never sees q*; diagnostics, pretraining and the
q*-labelled steps (oracle pairs, the held-out meta set) do.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

ARROWS = ("↑", "↗", "→", "↘", "↓", "↙", "←", "↖")

WORLD_KEY = 42  # the published recipe's key: the default world_seed
PAIR_ALPHA = 0.3
LANDSCAPES = ("reference", "nk")  # the ground-truth families, the choices of the knob `landscape`


class World(NamedTuple):
    """The shape of a world: every sequence of `seq_len` tokens over a vocabulary of `vocab`."""

    vocab: int
    seq_len: int

    @property
    def n_sequences(self) -> int:
        return self.vocab**self.seq_len

    @property
    def uniform_entropy(self) -> float:
        """Nats: the entropy of the uniform policy, ln N."""
        return float(np.log(self.n_sequences))


REFERENCE_WORLD = World(vocab=8, seq_len=4)
# The most sequences a world may have: every diagnostic is an exact sum over all of them, and 2¹⁶
# (16⁴, 8⁵, 4⁸, 2¹⁶) runs on the lab's 2-core CPU (docs/worlds.md).
MAX_SEQUENCES = 2**16


@functools.cache
def all_sequences(world: World) -> np.ndarray:
    """All N sequences, int32 (N, L), lexicographic (position 0 varies slowest); read-only, cached."""
    digits = np.unravel_index(np.arange(world.n_sequences), (world.vocab,) * world.seq_len)
    sequences = np.stack(digits, axis=1).astype(np.int32)
    sequences.setflags(write=False)
    return sequences


def render(sequence) -> str:
    """A sequence of token ids as compass arrows, e.g. [1, 4, 0, 1] -> '↗ ↓ ↑ ↗'; tokens past the
    eight arrows as numbers."""
    return " ".join(ARROWS[int(t)] if int(t) < len(ARROWS) else str(int(t)) for t in sequence)


def reference_q_star(world: World, world_seed=WORLD_KEY) -> jax.Array:
    """The reference ground truth, (N,) float32, bit-identical to the published recipe at 8⁴ and the
    default world_seed (another seed, possibly traced, draws another q* of the family).

    q*(x) = sum_i w_pos[i] w_tok[x_i] + sum_i w_pair[i, x_i], with w_pos (L,), w_tok (V,) and
    w_pair (L, V) drawn as the recipe draws them. Despite its name the pair term is per
    (position, token), so this q* is additive over positions (a named quirk).
    """
    key_pos, key_tok, key_pair = jax.random.split(jax.random.PRNGKey(world_seed), 3)
    w_pos = jax.random.normal(key_pos, (world.seq_len,))
    w_tok = jax.random.normal(key_tok, (world.vocab,))
    w_pair = PAIR_ALPHA * jax.random.normal(key_pair, (world.seq_len, world.vocab))
    x = jnp.asarray(all_sequences(world))
    positions = jnp.arange(world.seq_len)
    return (w_pos * w_tok[x]).sum(axis=1) + w_pair[positions, x].sum(axis=1)


def transition_term(world: World, world_seed=WORLD_KEY) -> jax.Array:
    """A genuine token-interaction term sum_i w_trans[x_i, x_{i+1}], (N,) float32.

    Drawn from a key folded off the world key, so the reference draws stay untouched.
    Added to q* with weight `transition_alpha` (0 in the reference world).
    """
    key = jax.random.fold_in(jax.random.PRNGKey(world_seed), 3)
    w_trans = jax.random.normal(key, (world.vocab, world.vocab))
    x = jnp.asarray(all_sequences(world))
    return w_trans[x[:, :-1], x[:, 1:]].sum(axis=1)


def nk_q_star(world: World, nk_k, world_seed) -> jax.Array:
    """Kauffman's NK landscape, (N,) float32: q*(x) = (1/L) Σ_i f_i(x_i, x_{i+1}, …, x_{i+K}), the
    neighbours cyclic (position i + j mod L) and each f_i a table of i.i.d. U(0, 1) values, one per
    window of K + 1 tokens, drawn from `world_seed` (Kauffman 1993, The Origins of Order, ch. 2).

    K = `nk_k` in 0..L−1, possibly traced: window w is the index Σ_{j ≤ K} x_{i+j}·V^j into row i of an
    (L, V^L) table, of which a landscape of order K reads the first V^(K+1) entries. K = 0 is additive,
    K = L − 1 a random function of the whole sequence (the roughest).
    """
    vocab, seq_len = world
    x = jnp.asarray(all_sequences(world))
    window = jnp.zeros_like(x)
    for j in range(seq_len):
        window = window + jnp.where(j <= nk_k, jnp.roll(x, -j, axis=1) * vocab**j, 0)
    key = jax.random.fold_in(jax.random.PRNGKey(world_seed), len(LANDSCAPES))
    table = jax.random.uniform(key, (seq_len, world.n_sequences))
    return table[jnp.arange(seq_len), window].mean(axis=1)


def q_star_of(world: World, landscape, nk_k, world_seed, transition_alpha) -> jax.Array:
    """The ground truth of one run, (N,) float32: its `landscape` (a code of LANDSCAPES: the
    reference recipe or an NK landscape of order `nk_k`), drawn from `world_seed`, plus
    `transition_alpha` times the transition term. Every argument but the world may be traced."""
    reference = reference_q_star(world, world_seed)
    nk = nk_q_star(world, nk_k, world_seed)
    family = jnp.where(landscape == LANDSCAPES.index("nk"), nk, reference)
    return family + transition_alpha * transition_term(world, world_seed)


def run_q_star(world: World, condition) -> jax.Array:
    """`q_star_of` a run's knobs (a `Condition` of one run, or of a batch under vmap)."""
    return q_star_of(world, condition.landscape, condition.nk_k, condition.world_seed, condition.transition_alpha)


def verbosity(world: World, bias_token) -> jax.Array:
    """f(x) = how many positions of x hold `bias_token`, (N,) float32 with values 0..L.

    `bias_token` is a token id (0..V−1), possibly traced. Float so that it enters targets and
    fits without casts; the values are small integers, exact in float32.
    """
    return jnp.sum(jnp.asarray(all_sequences(world)) == bias_token, axis=1).astype(jnp.float32)
