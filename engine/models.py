"""The two ≈5K-parameter GRU models. Each handles ONE sequence; batching is vmap's job.

Policy: embedding(K+1 tokens, 16) -> GRUCell(16, 32) -> Linear(32, K). Autoregressive,
the first step reads the start token K. Judge: embedding(K, 16) -> GRUCell(16, 32) read
over the 4 tokens -> Linear(32, 1) from the final hidden state. Library-default init.
"""

import equinox as eqx
import jax
import jax.numpy as jnp

from engine.world import SEQ_LEN, VOCAB

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


def gru_step(cell: eqx.nn.GRUCell, input_gates, hidden):
    """`eqx.nn.GRUCell.__call__` with the input gates precomputed (same equations)."""
    input_reset, input_update, input_new = jnp.split(input_gates, 3)
    hidden_reset, hidden_update, hidden_new = jnp.split(cell.weight_hh @ hidden, 3)
    reset = jax.nn.sigmoid(input_reset + hidden_reset)
    update = jax.nn.sigmoid(input_update + hidden_update)
    new = jnp.tanh(input_new + reset * (hidden_new + cell.bias_n))
    return new + update * (hidden - new)


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


def make_judges(key, n_judges: int) -> Judge:
    """An ensemble of judges stacked along a leading axis of size n_judges.

    Member m is built from fold_in(key, m), so member 0 of any ensemble is the same
    judge a single-judge condition of that seed gets (paired design).
    """
    return eqx.filter_vmap(lambda member: Judge(key=jax.random.fold_in(key, member)))(jnp.arange(n_judges))


def ensemble_scores(judges: Judge, tokens):
    """Scores of every judge on a batch: (n_judges, batch) for tokens (batch, 4)."""
    return eqx.filter_vmap(lambda judge: jax.vmap(judge)(tokens))(judges)
