"""The two ≈5K-parameter GRU models. Each handles ONE sequence; batching is vmap's job.

Policy: embedding(K+1 tokens, 16) -> GRUCell(16, 32) -> Linear(32, K). Autoregressive,
the first step reads the start token K. Judge: embedding(K, 16) -> GRUCell(16, 32) read
over the 4 tokens -> Linear(32, 1) from the final hidden state.

`Policy(key=...)` and `Judge(key=...)` keep Equinox's default initialisation;
`reference_init` re-draws every array the way the reference's Flax models start, and
`select_init` picks one of the two per run (docs/initialisation.md compares them).
"""

import equinox as eqx
import jax
import jax.numpy as jnp

from engine.core.world import SEQ_LEN, VOCAB

EMBED = 16
HIDDEN = 32
START_TOKEN = VOCAB


def token_gates(embedding: eqx.nn.Embedding, cell: eqx.nn.GRUCell):
    """Input-side gate pre-activations W_ih·emb[t] + b of every token t: (vocab, 3·HIDDEN).

    Inputs are always token embeddings, so the input half of the GRU is a row lookup in
    this small table. Under vmap over a batch it is computed once per model, not per
    sequence and step: a third of the GRU's multiply-adds disappear.
    """
    return jax.vmap(lambda e: cell.weight_ih @ e + cell.bias)(embedding.weight)


def gru_update(cell: eqx.nn.GRUCell, input_gates, hidden_gates, hidden):
    """`eqx.nn.GRUCell.__call__`'s equations from precomputed gate pre-activations.

    input_gates = W_ih·x + b and hidden_gates = W_hh·h, each (..., 3·HIDDEN); hidden (..., HIDDEN).
    Broadcasts over leading axes, so the prefix tree (`engine.core.exact`) can share one W_hh·h
    among a parent's children.
    """
    input_reset, input_update, input_new = jnp.split(input_gates, 3, axis=-1)
    hidden_reset, hidden_update, hidden_new = jnp.split(hidden_gates, 3, axis=-1)
    reset = jax.nn.sigmoid(input_reset + hidden_reset)
    update = jax.nn.sigmoid(input_update + hidden_update)
    new = jnp.tanh(input_new + reset * (hidden_new + cell.bias_n))
    return new + update * (hidden - new)


def gru_step(cell: eqx.nn.GRUCell, input_gates, hidden):
    """One GRU step of one sequence with its input gates precomputed (`token_gates`)."""
    return gru_update(cell, input_gates, cell.weight_hh @ hidden, hidden)


class Policy(eqx.Module):
    """Autoregressive sequence policy π(x)."""

    embedding: eqx.nn.Embedding
    cell: eqx.nn.GRUCell
    head: eqx.nn.Linear

    def __init__(self, *, key):
        key_embed, key_cell, key_head = jax.random.split(key, 3)
        self.embedding = eqx.nn.Embedding(VOCAB + 1, EMBED, key=key_embed)
        self.cell = eqx.nn.GRUCell(EMBED, HIDDEN, key=key_cell)
        self.head = eqx.nn.Linear(HIDDEN, VOCAB, key=key_head)

    def _next_log_probs(self, gates, token, hidden):
        hidden = gru_step(self.cell, gates[token], hidden)
        return jax.nn.log_softmax(self.head(hidden)), hidden

    def sample(self, gumbel_noise):
        """Draw one sequence by Gumbel-max and return it with its log-probability.

        gumbel_noise: (4, K) standard Gumbel draws. Returns (tokens (4,) int32, log π (,)).
        The log-probability is differentiable: the sampling pass is the teacher-forced
        pass, so no second forward is needed for the policy gradient.
        """
        gates = token_gates(self.embedding, self.cell)
        hidden = jnp.zeros(HIDDEN)
        token = jnp.array(START_TOKEN)
        tokens, log_prob = [], 0.0
        for position in range(SEQ_LEN):
            log_probs, hidden = self._next_log_probs(gates, token, hidden)
            token = jnp.argmax(log_probs + gumbel_noise[position]).astype(jnp.int32)
            tokens.append(token)
            log_prob = log_prob + log_probs[token]
        return jnp.stack(tokens), log_prob

    def log_prob(self, tokens):
        """Teacher-forced log π(tokens) for one sequence (4,) -> scalar."""
        gates = token_gates(self.embedding, self.cell)
        hidden = jnp.zeros(HIDDEN)
        previous = jnp.array(START_TOKEN)
        log_prob = 0.0
        for position in range(SEQ_LEN):
            log_probs, hidden = self._next_log_probs(gates, previous, hidden)
            previous = tokens[position]
            log_prob = log_prob + log_probs[previous]
        return log_prob


class Judge(eqx.Module):
    """Scalar scorer J(x) read left to right over the sequence."""

    embedding: eqx.nn.Embedding
    cell: eqx.nn.GRUCell
    head: eqx.nn.Linear

    def __init__(self, *, key):
        key_embed, key_cell, key_head = jax.random.split(key, 3)
        self.embedding = eqx.nn.Embedding(VOCAB, EMBED, key=key_embed)
        self.cell = eqx.nn.GRUCell(EMBED, HIDDEN, key=key_cell)
        self.head = eqx.nn.Linear(HIDDEN, "scalar", key=key_head)

    def __call__(self, tokens):
        """J(tokens) for one sequence (4,) int -> scalar."""
        gates = token_gates(self.embedding, self.cell)
        hidden = jnp.zeros(HIDDEN)
        for position in range(SEQ_LEN):
            hidden = gru_step(self.cell, gates[tokens[position]], hidden)
        return self.head(hidden)


def _lecun_normal(key, shape, dtype):
    """LeCun normal on Equinox's (out, in) layout: truncated normal, std 1/√in after truncation."""
    return jax.nn.initializers.lecun_normal(in_axis=-1, out_axis=-2)(key, shape, dtype)


def _haar_orthogonal(key, n: int, dtype):
    """An n×n orthogonal matrix from the Haar measure, as `jax.nn.initializers.orthogonal()`
    draws it: the Q of a Gaussian matrix's QR with R's diagonal made positive.

    That Q is what Gram–Schmidt produces, so it is computed here by classical Gram–Schmidt
    applied twice per column ("twice is enough": orthogonal to float32 rounding) in plain
    jnp. LAPACK's QR (what `orthogonal()` calls) deadlocks inside a CPU program sharded over
    several devices (seen with jax 0.10.2), and this runs inside the sharded program.
    """
    gaussian = jax.random.normal(key, (n, n), dtype)

    def add_column(j, q):
        column = gaussian[:, j]
        for _ in range(2):
            column = column - q @ (q.T @ column)
        return q.at[:, j].set(column / jnp.linalg.norm(column))

    return jax.lax.fori_loop(0, n, add_column, jnp.zeros((n, n), dtype))


def _orthogonal_gate_blocks(key, hidden: int, dtype):
    """Three independent hidden×hidden orthogonal blocks stacked as (3·hidden, hidden).

    Flax draws each recurrent kernel (hr, hz, hn) with `orthogonal()` in its (in, out)
    layout; Equinox multiplies `weight_hh @ h`, so each block is that kernel transposed.
    """
    kernels = jax.vmap(lambda k: _haar_orthogonal(k, hidden, dtype))(jax.random.split(key, 3))
    return jnp.swapaxes(kernels, 1, 2).reshape(3 * hidden, hidden)


def reference_init(model: Policy | Judge, *, key) -> Policy | Judge:
    """`model` with every array re-drawn as the reference's Flax defaults draw it.

    Works for a single `Policy` or `Judge` (not a stacked ensemble: map it per member).
    Pure and cheap (three 32×32 Gram–Schmidt passes), so it traces under jit/vmap with traced keys.

    - embedding (n, 16): `nn.Embed`'s `variance_scaling(1, "fan_in", "normal", out_axis=0)`,
      which for an (n, 16) table has fan-in 16: untruncated normal, std 1/4.
    - GRU input kernels: `lecun_normal()`, truncated at ±2 of the underlying normal and
      rescaled so the std is 1/√16 (so |w| ≤ 2·0.25/0.8796 ≈ 0.569); input biases zero.
    - GRU recurrent kernels: `orthogonal()`, one independent 32×32 block per gate;
      the new-gate recurrent bias zero.
    - head: `lecun_normal()` kernel (std 1/√32), bias zero.

    Flax's `GRUCell` and Equinox's are the same cell with the same parameters, so this
    is a re-draw, not a re-parameterisation. Flax (kernels in (in, out) layout, x @ K):

        r  = σ(x K_ir + b_ir + h K_hr)          z = σ(x K_iz + b_iz + h K_hz)
        n  = tanh(x K_in + b_in + r ⊙ (h K_hn + b_hn))      h' = (1 − z) ⊙ n + z ⊙ h

    Equinox (`weight @ x`, gates split in the order reset, update, new):

        weight_ih = [K_ir; K_iz; K_in]ᵀ blocks (96, 16)   bias   = [b_ir; b_iz; b_in] (96,)
        weight_hh = [K_hr; K_hz; K_hn]ᵀ blocks (96, 32)   bias_n = b_hn (32,)
        h' = n + z ⊙ (h − n), the same as (1 − z) ⊙ n + z ⊙ h.

    Flax's hr and hz have no bias and neither has Equinox's weight_hh, so both cells
    have 3·(16·32 + 32) + 3·32·32 + 32 = 4736 parameters.
    """
    key_embed, key_input, key_recurrent, key_head = jax.random.split(key, 4)
    embedding, cell, head = model.embedding.weight, model.cell, model.head
    embed_init = jax.nn.initializers.variance_scaling(1.0, "fan_in", "normal", out_axis=0)
    return eqx.tree_at(
        lambda m: (
            m.embedding.weight,
            m.cell.weight_ih,
            m.cell.bias,
            m.cell.weight_hh,
            m.cell.bias_n,
            m.head.weight,
            m.head.bias,
        ),
        model,
        (
            embed_init(key_embed, embedding.shape, embedding.dtype),
            _lecun_normal(key_input, cell.weight_ih.shape, cell.weight_ih.dtype),
            jnp.zeros_like(cell.bias),
            _orthogonal_gate_blocks(key_recurrent, cell.hidden_size, cell.weight_hh.dtype),
            jnp.zeros_like(cell.bias_n),
            _lecun_normal(key_head, head.weight.shape, head.weight.dtype),
            jnp.zeros_like(head.bias),
        ),
    )


def select_init(model: Policy | Judge, *, key, reference) -> Policy | Judge:
    """`reference_init(model, key=key)` where `reference` is true, else `model` unchanged.

    `reference` is a bool, possibly traced (one per run under vmap). Both are computed and
    chosen leaf by leaf, so the result is exactly one or the other, bit for bit.
    """
    redrawn = reference_init(model, key=key)
    return jax.tree.map(lambda new, old: jnp.where(reference, new, old), redrawn, model)


def make_judges(key, n_judges: int) -> Judge:
    """An ensemble of judges stacked along a leading axis of size n_judges.

    Member m is built from fold_in(key, m), so member 0 of any ensemble is the same
    judge a single-judge condition of that seed gets (paired design).
    """
    return eqx.filter_vmap(lambda member: Judge(key=jax.random.fold_in(key, member)))(jnp.arange(n_judges))


def ensemble_scores(judges: Judge, tokens):
    """Scores of every judge on a batch: (n_judges, batch) for tokens (batch, 4)."""
    return eqx.filter_vmap(lambda judge: jax.vmap(judge)(tokens))(judges)
