"""A small causal transformer, the `transformer` choice of the knobs policy_arch and judge_arch.

One pre-LayerNorm block (GPT-2's arrangement, Radford et al. 2019) of width d (the knob `policy_hidden`
or `judge_hidden`) with HEADS heads, over learned token and position embeddings:

    x⁰_t = E[input_t] + P[t]
    y_t  = x⁰_t + MHA(LN(x⁰))_t              attention of position t over positions ≤ t only
    x¹_t = y_t + W₂·gelu(W₁·LN(y_t) + b₁) + b₂   (W₁: 4d × d)
    h_t  = LN₀(x¹_t)                          LN₀ without scale or shift: the head's weights absorb both

The policy reads the start token V then x_0..x_{L−2} and predicts x_t from h_t: log_softmax(W·h_t + b).
The judge reads x_0..x_{L−1} and scores J(x) = w·h_{L−1} + c from the last position, the one that
attends to the whole sequence. LN₀ keeps ‖h‖² < d, so |J| ≤ (d + 1)·max|θ| as a tanh layer's
(engine.host.combinations.judge_score_bound).

Parameters, with n input tokens (V + 1 for the policy, V for the judge): (n + L)·d embeddings, 4d²
attention (query, key, value and output projections without biases), 2·2d
for the two LayerNorms, (4d² + 4d) + (4d² + d) for the MLP, and the head (d·V + V, or d + 1).
"""

import equinox as eqx
import jax
import jax.numpy as jnp

from engine.core.causal import CausalPolicy
from engine.core.world import REFERENCE_WORLD, World, all_sequences

HEADS = 2  # the width must be a multiple of it (engine.host.combinations refuses others)
MLP_RATIO = 4  # the MLP's hidden width over d


class CausalSelfAttention(eqx.Module):
    """Multi-head self-attention of one sequence (m, d), position t over positions ≤ t: query, key, value
    and output projections without biases around `jax.nn.dot_product_attention` (softmax(QKᵀ/√(d/HEADS))V
    per head). Equinox's MultiheadAttention computes the same but carries a dropout rate and flag as
    leaves, which the engine's per-run arrays (every leaf vmapped, selected, optimised) cannot hold."""

    query_proj: eqx.nn.Linear
    key_proj: eqx.nn.Linear
    value_proj: eqx.nn.Linear
    output_proj: eqx.nn.Linear

    def __init__(self, width: int, *, key):
        keys = jax.random.split(key, 4)
        self.query_proj, self.key_proj, self.value_proj, self.output_proj = (
            eqx.nn.Linear(width, width, use_bias=False, key=k) for k in keys
        )

    def __call__(self, x):
        def heads(projection):
            return (x @ projection.weight.T).reshape(len(x), HEADS, -1)  # (m, heads, d / heads)

        attended = jax.nn.dot_product_attention(
            heads(self.query_proj), heads(self.key_proj), heads(self.value_proj), is_causal=True
        )
        return attended.reshape(len(x), -1) @ self.output_proj.weight.T


class Block(eqx.Module):
    """One pre-LayerNorm transformer block over one sequence (m, d), causal."""

    attention_norm: eqx.nn.LayerNorm
    attention: CausalSelfAttention
    mlp_norm: eqx.nn.LayerNorm
    expand: eqx.nn.Linear  # W₁, b₁
    contract: eqx.nn.Linear  # W₂, b₂

    def __init__(self, width: int, *, key):
        key_attention, key_expand, key_contract = jax.random.split(key, 3)
        self.attention_norm = eqx.nn.LayerNorm(width)
        self.attention = CausalSelfAttention(width, key=key_attention)
        self.mlp_norm = eqx.nn.LayerNorm(width)
        self.expand = eqx.nn.Linear(width, MLP_RATIO * width, key=key_expand)
        self.contract = eqx.nn.Linear(MLP_RATIO * width, width, key=key_contract)

    def __call__(self, x):
        x = x + self.attention(jax.vmap(self.attention_norm)(x))
        return x + jax.vmap(lambda y: self.contract(jax.nn.gelu(self.expand(self.mlp_norm(y)))))(x)


class CausalTransformer(eqx.Module):
    """Token and position embeddings, one block, a final LayerNorm without parameters: one sequence of
    m ≤ max_length input tokens -> (m, d)."""

    tokens: eqx.nn.Embedding
    positions: eqx.nn.Embedding
    block: Block
    norm: eqx.nn.LayerNorm

    def __init__(self, n_tokens: int, max_length: int, width: int, *, key):
        key_tokens, key_positions, key_block = jax.random.split(key, 3)
        self.tokens = eqx.nn.Embedding(n_tokens, width, key=key_tokens)
        self.positions = eqx.nn.Embedding(max_length, width, key=key_positions)
        self.block = Block(width, key=key_block)
        self.norm = eqx.nn.LayerNorm(width, use_weight=False, use_bias=False)

    def __call__(self, inputs):
        x = self.tokens.weight[inputs] + self.positions.weight[: len(inputs)]
        return jax.vmap(self.norm)(self.block(x))


class TransformerPolicy(CausalPolicy):
    """Autoregressive π(x): position t reads the start token V and x_<t and gives log p(· | x_<t)."""

    trunk: CausalTransformer
    head: eqx.nn.Linear
    world: World = eqx.field(static=True)

    def __init__(self, *, key, hidden: int, world: World = REFERENCE_WORLD):
        key_trunk, key_head = jax.random.split(key)
        self.trunk = CausalTransformer(world.vocab + 1, world.seq_len, hidden, key=key_trunk)
        self.head = eqx.nn.Linear(hidden, world.vocab, key=key_head)
        self.world = world

    def _inputs(self, prefixes):
        """The start token V, then the prefix: (n, m) -> (n, m + 1)."""
        start = jnp.full((*prefixes.shape[:-1], 1), self.world.vocab, prefixes.dtype)
        return jnp.concatenate([start, prefixes], axis=-1)

    def conditionals(self, prefixes):
        hidden = jax.vmap(self.trunk)(self._inputs(prefixes))
        return jax.nn.log_softmax(hidden @ self.head.weight.T + self.head.bias, axis=-1)

    def log_prob(self, tokens):
        log_prob = 0.0
        for position in range(self.world.seq_len):
            hidden = self.trunk(self._inputs(tokens[:position]))[-1]  # reads the start token and x_<t only
            log_prob = log_prob + jax.nn.log_softmax(self.head(hidden))[tokens[position]]
        return log_prob


class TransformerJudge(eqx.Module):
    """Scalar scorer J(x) from the last position of a causal transformer over x."""

    trunk: CausalTransformer
    head: eqx.nn.Linear
    world: World = eqx.field(static=True)

    def __init__(self, *, key, hidden: int, world: World = REFERENCE_WORLD):
        key_trunk, key_head = jax.random.split(key)
        self.trunk = CausalTransformer(world.vocab, world.seq_len, hidden, key=key_trunk)
        self.head = eqx.nn.Linear(hidden, "scalar", key=key_head)
        self.world = world

    def __call__(self, tokens):
        """J(tokens) for ONE sequence (L,) int -> scalar."""
        return self.head(self.trunk(tokens)[-1])

    def scores(self, tokens):
        """J of a batch of sequences (n, L) -> (n,)."""
        return jax.vmap(self.trunk)(tokens)[:, -1] @ self.head.weight[0] + self.head.bias[0]

    def all_scores(self):
        """J of all V^L sequences, lexicographic, as one batch."""
        return self.scores(jnp.asarray(all_sequences(self.world)))
