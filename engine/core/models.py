"""The policy and the judges, each one run's. `Policy.sample`, `Policy.log_prob_batch`
and `Judge.scores` take a batch of sequences and evaluate the prefixes the batch shares once;
`Policy.log_prob` and `Judge.__call__` read one sequence step by step, the models' definition
the batched passes are tested against. Batching over runs is vmap's job.

Policy: embedding(K+1 tokens, 16) -> GRUCell(16, H) -> Linear(H, K). Autoregressive,
the first step reads the start token K. Judge: embedding(K, 16) -> GRUCell(16, H) read
over the 4 tokens -> Linear(H, 1) from the final hidden state. The width H is each model's
own (`hidden=`, the knobs `policy_hidden` and `judge_hidden`), kept by the cell as its static
`hidden_size`; at the reference's H = 32 each model has about 5K parameters (`parameter_count`).
`MLPJudge` (`judge_arch` `mlp`) scores the one-hot sequence instead: Linear(L·K, H) -> tanh ->
Linear(H, 1); `MLPPolicy` (`policy_arch` `mlp`) gives each next token's logits from the one-hot
prefix: Linear((L−1)·K, H) -> tanh -> Linear(H, K), sampled and evaluated as every `CausalPolicy`
(engine/core/causal.py). The `transformer` choices are in engine/core/transformer.py;
`policy_model` and `judge_model` build any (docs/models.md).

`Policy(key=...)` and `Judge(key=...)` keep Equinox's default initialisation;
`reference_init` re-draws every array the way the reference's Flax models start, and
`select_init` picks one of the two per run (docs/initialisation.md compares them).
"""

import functools
import math

import equinox as eqx
import jax
import jax.numpy as jnp

from engine.core.causal import CausalPolicy, inverse_cdf_token
from engine.core.transformer import TransformerJudge, TransformerPolicy
from engine.core.world import REFERENCE_WORLD, World, all_sequences

EMBED = 16
DEFAULT_HIDDEN = 32  # the reference's width, the default of the knobs policy_hidden and judge_hidden


def token_gates(embedding: eqx.nn.Embedding, cell: eqx.nn.GRUCell):
    """Input-side gate pre-activations W_ih·emb[t] + b of every token t: (vocab, 3·H).

    Inputs are always token embeddings, so the input half of the GRU is a row lookup in
    this small table. Under vmap over a batch it is computed once per model, not per
    sequence and step: a third of the GRU's multiply-adds disappear.
    """
    return jax.vmap(lambda e: cell.weight_ih @ e + cell.bias)(embedding.weight)


def gru_update(cell: eqx.nn.GRUCell, input_gates, hidden_gates, hidden):
    """`eqx.nn.GRUCell.__call__`'s equations from precomputed gate pre-activations.

    input_gates = W_ih·x + b and hidden_gates = W_hh·h, each (..., 3·H); hidden (..., H).
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


def shared_levels(world: World, batch_size: int) -> int:
    """How many leading positions a batch of `batch_size` sequences evaluates once per prefix
    rather than once per sequence: the prefixes of length k are V^k, so sharing pays while
    V^k ≤ batch_size (at 8⁴, 64 sequences share their first two positions; 4096 all four)."""
    depth = 0
    while depth < world.seq_len and world.vocab ** (depth + 1) <= batch_size:
        depth += 1
    return depth


def child_hidden(cell: eqx.nn.GRUCell, input_gates, parent_hidden):
    """Hidden states of every (parent, token) child: (n, m, H) from parents (n, H).

    input_gates: (m, 3·H) rows of `token_gates`. W_hh·h is computed once per parent and
    shared by its m children.
    """
    return gru_update(cell, input_gates[None], (parent_hidden @ cell.weight_hh.T)[:, None], parent_hidden[:, None])


def prefix_index(tokens, length: int, vocab: int):
    """Index of each sequence's first `length` tokens among the vocab^length prefixes
    (lexicographic): (..., L) int -> (...,) int32."""
    weights = vocab ** jnp.arange(length - 1, -1, -1)
    return (jnp.asarray(tokens)[..., :length] * weights).sum(axis=-1).astype(jnp.int32)


class Policy(eqx.Module):
    """Autoregressive sequence policy π(x)."""

    embedding: eqx.nn.Embedding  # V tokens and the start token V
    cell: eqx.nn.GRUCell
    head: eqx.nn.Linear
    world: World = eqx.field(static=True)

    def __init__(self, *, key, hidden: int = DEFAULT_HIDDEN, world: World = REFERENCE_WORLD):
        key_embed, key_cell, key_head = jax.random.split(key, 3)
        self.embedding = eqx.nn.Embedding(world.vocab + 1, EMBED, key=key_embed)
        self.cell = eqx.nn.GRUCell(EMBED, hidden, key=key_cell)
        self.head = eqx.nn.Linear(hidden, world.vocab, key=key_head)
        self.world = world

    def _next_log_probs(self, hidden):
        return jax.nn.log_softmax(hidden @ self.head.weight.T + self.head.bias, axis=-1)

    def prefix_levels(self, depth: int):
        """Hidden states and next-token log-probabilities of every prefix of length 0..depth.

        Level k: (V^k, H) hidden states after the start token and k tokens, and their
        (V^k, V) next-token log-softmax, prefixes in lexicographic order (child
        p·V + t of prefix p reads token t). Returns (hidden per level, log-probs per level).
        """
        width = self.cell.hidden_size
        gates = token_gates(self.embedding, self.cell)
        hidden = child_hidden(self.cell, gates[self.world.vocab][None], jnp.zeros((1, width))).reshape(1, width)
        hiddens, log_probs = [hidden], [self._next_log_probs(hidden)]
        for _ in range(depth):
            hidden = child_hidden(self.cell, gates[: self.world.vocab], hidden).reshape(-1, width)
            hiddens.append(hidden)
            log_probs.append(self._next_log_probs(hidden))
        return hiddens, log_probs

    def all_log_probs(self):
        """log π(x) of all N = V^L sequences, (N,) lexicographic, by one pass over the prefix tree
        (`prefix_levels`): log π of level k + 1 is log π of its parent plus the parent's next-token
        log-softmax."""
        _, level_log_probs = self.prefix_levels(self.world.seq_len - 1)
        prefix_log_probs = jnp.zeros((1,))
        for next_log_probs in level_log_probs:
            prefix_log_probs = (prefix_log_probs[:, None] + next_log_probs).reshape(-1)  # (V^(k+1),)
        return prefix_log_probs

    def _batch(self, n: int, next_token):
        """The autoregressive pass over a batch of n sequences, shared per prefix where it pays.

        next_token(position, log_probs (n, V)) -> the tokens read at `position` (n,).
        Returns (tokens (n, L) int32, log π (n,)), differentiable in the policy.
        """
        vocab, seq_len = self.world
        shared = min(shared_levels(self.world, n), seq_len - 1)
        gates = token_gates(self.embedding, self.cell)
        hiddens, level_log_probs = self.prefix_levels(shared)
        tokens, log_prob, prefix = [], 0.0, jnp.zeros(n, jnp.int32)
        hidden = None
        for position in range(seq_len):
            if position <= shared:
                log_probs = level_log_probs[position][prefix]
            else:
                if hidden is None:
                    hidden = hiddens[shared][prefix // vocab]
                hidden = gru_step_batch(self.cell, gates[tokens[-1]], hidden)
                log_probs = self._next_log_probs(hidden)
            token = next_token(position, log_probs)
            tokens.append(token)
            log_prob = log_prob + jnp.take_along_axis(log_probs, token[:, None], axis=-1)[:, 0]
            prefix = prefix * vocab + token
        return jnp.stack(tokens, axis=-1), log_prob

    def sample(self, uniforms):
        """Draw a batch of sequences with their log-probabilities, by inverse CDF per position.

        uniforms: (n, L) in [0, 1). Returns (tokens (n, L) int32, log π (n,)); the
        log-probability is differentiable, so the sampling pass is the policy-gradient pass.
        """

        def draw(position, log_probs):
            return inverse_cdf_token(log_probs, uniforms[:, position])

        return self._batch(len(uniforms), draw)

    def log_prob_batch(self, tokens):
        """Teacher-forced log π of a batch of sequences (n, L) -> (n,)."""
        return self._batch(len(tokens), lambda position, _: tokens[:, position])[1]

    def log_prob(self, tokens):
        """Teacher-forced log π(tokens) of ONE sequence (L,), step by step: the model's
        definition, which the batched and prefix-tree passes are tested against."""
        gates = token_gates(self.embedding, self.cell)
        hidden = jnp.zeros(self.cell.hidden_size)
        previous = jnp.array(self.world.vocab)  # the start token
        log_prob = 0.0
        for position in range(self.world.seq_len):
            hidden = gru_step(self.cell, gates[previous], hidden)
            log_probs = jax.nn.log_softmax(self.head(hidden))
            previous = tokens[position]
            log_prob = log_prob + log_probs[previous]
        return log_prob


def gru_step_batch(cell: eqx.nn.GRUCell, input_gates, hidden):
    """`gru_step` for a batch: input_gates (n, 3·H), hidden (n, H)."""
    return gru_update(cell, input_gates, hidden @ cell.weight_hh.T, hidden)


class Judge(eqx.Module):
    """Scalar scorer J(x) read left to right over the sequence."""

    embedding: eqx.nn.Embedding
    cell: eqx.nn.GRUCell
    head: eqx.nn.Linear
    world: World = eqx.field(static=True)

    def __init__(self, *, key, hidden: int = DEFAULT_HIDDEN, world: World = REFERENCE_WORLD):
        key_embed, key_cell, key_head = jax.random.split(key, 3)
        self.embedding = eqx.nn.Embedding(world.vocab, EMBED, key=key_embed)
        self.cell = eqx.nn.GRUCell(EMBED, hidden, key=key_cell)
        self.head = eqx.nn.Linear(hidden, "scalar", key=key_head)
        self.world = world

    def __call__(self, tokens):
        """J(tokens) for ONE sequence (L,) int -> scalar: the model's definition, which
        `scores` is tested against."""
        gates = token_gates(self.embedding, self.cell)
        hidden = jnp.zeros(self.cell.hidden_size)
        for position in range(self.world.seq_len):
            hidden = gru_step(self.cell, gates[tokens[position]], hidden)
        return self.head(hidden)

    def prefix_hidden(self, depth: int):
        """Hidden states after every prefix of length `depth`: (V^depth, H), lexicographic."""
        width = self.cell.hidden_size
        gates = token_gates(self.embedding, self.cell)
        hidden = jnp.zeros((1, width))
        for _ in range(depth):
            hidden = child_hidden(self.cell, gates, hidden).reshape(-1, width)
        return hidden

    def _head(self, hidden):
        return hidden @ self.head.weight[0] + self.head.bias[0]

    def scores(self, tokens):
        """J of a batch of sequences (n, L) -> (n,): the leading positions once per prefix
        (`shared_levels`), the rest per sequence."""
        shared = shared_levels(self.world, len(tokens))
        gates = token_gates(self.embedding, self.cell)
        hidden = self.prefix_hidden(shared)[prefix_index(tokens, shared, self.world.vocab)]
        for position in range(shared, self.world.seq_len):
            hidden = gru_step_batch(self.cell, gates[tokens[:, position]], hidden)
        return self._head(hidden)

    def all_scores(self):
        """J of all V^L sequences, lexicographic, by one pass over the prefix tree."""
        return self._head(self.prefix_hidden(self.world.seq_len))


class MLPJudge(eqx.Module):
    """Scalar scorer J(x) = w·tanh(W·onehot(x) + b) + c of the whole sequence at once: W reads the
    L·V one-hot inputs, so it has one column per (position, token)."""

    layer: eqx.nn.Linear
    head: eqx.nn.Linear
    world: World = eqx.field(static=True)

    def __init__(self, *, key, hidden: int = DEFAULT_HIDDEN, world: World = REFERENCE_WORLD):
        key_layer, key_head = jax.random.split(key)
        self.layer = eqx.nn.Linear(world.seq_len * world.vocab, hidden, key=key_layer)
        self.head = eqx.nn.Linear(hidden, "scalar", key=key_head)
        self.world = world

    def __call__(self, tokens):
        """J(tokens) for ONE sequence (L,) int -> scalar, from its one-hot vector: the model's
        definition, which `scores` is tested against."""
        return self.head(jnp.tanh(self.layer(jax.nn.one_hot(tokens, self.world.vocab).reshape(-1))))

    def scores(self, tokens):
        """J of a batch of sequences (n, L) -> (n,): W·onehot(x) is the sum of the columns
        of W that x's tokens select, one per position, so it is gathered rather than multiplied."""
        vocab, seq_len = self.world
        columns = self.layer.weight.T.reshape(seq_len, vocab, -1)  # (position, token, H)
        hidden = jnp.tanh(self.layer.bias + columns[jnp.arange(seq_len), tokens].sum(axis=-2))
        return hidden @ self.head.weight[0] + self.head.bias[0]

    def all_scores(self):
        """J of all V^L sequences, lexicographic, as one batch."""
        return self.scores(jnp.asarray(all_sequences(self.world)))


class MLPPolicy(CausalPolicy):
    """Autoregressive π(x) whose next-token logits at position t are W₂·tanh(W₁·u_t + b₁) + b₂, u_t the
    one-hot prefix x_<t zero-padded to L − 1 positions: W₁ has one column per (position, token)."""

    layer: eqx.nn.Linear
    head: eqx.nn.Linear
    world: World = eqx.field(static=True)

    def __init__(self, *, key, hidden: int = DEFAULT_HIDDEN, world: World = REFERENCE_WORLD):
        key_layer, key_head = jax.random.split(key)
        self.layer = eqx.nn.Linear((world.seq_len - 1) * world.vocab, hidden, key=key_layer)
        self.head = eqx.nn.Linear(hidden, world.vocab, key=key_head)
        self.world = world

    def conditionals(self, prefixes):
        """W₁·u_t is b₁ plus the columns the prefix's tokens select, so position t's pre-activation is
        position t − 1's plus one gathered column: a running sum over the prefix."""
        vocab, seq_len = self.world
        m = prefixes.shape[-1]
        columns = self.layer.weight.T.reshape(seq_len - 1, vocab, -1)[jnp.arange(m), prefixes]  # (n, m, H)
        start = jnp.zeros((len(prefixes), 1, columns.shape[-1]), columns.dtype)
        read = jnp.concatenate([start, jnp.cumsum(columns, axis=1)], axis=1)
        hidden = jnp.tanh(self.layer.bias + read)  # (n, m + 1, H)
        return jax.nn.log_softmax(hidden @ self.head.weight.T + self.head.bias, axis=-1)

    def log_prob(self, tokens):
        vocab, seq_len = self.world
        log_prob = 0.0
        for position in range(seq_len):
            prefix = jax.nn.one_hot(tokens[:position], vocab).reshape(-1)
            padded = jnp.pad(prefix, (0, (seq_len - 1 - position) * vocab))
            log_probs = jax.nn.log_softmax(self.head(jnp.tanh(self.layer(padded))))
            log_prob = log_prob + log_probs[tokens[position]]
        return log_prob


PolicyModel = Policy | MLPPolicy | TransformerPolicy
JudgeModel = Judge | MLPJudge | TransformerJudge
# the choices of the knobs policy_arch and judge_arch
POLICY_ARCHITECTURES = {"gru": Policy, "mlp": MLPPolicy, "transformer": TransformerPolicy}
JUDGE_ARCHITECTURES = {"gru": Judge, "mlp": MLPJudge, "transformer": TransformerJudge}


def policy_model(arch: str, hidden: int, world: World):
    """The builder `build(key=...)` of a policy of architecture `arch` (a `policy_arch` choice) and width
    `hidden` in `world`."""
    return functools.partial(POLICY_ARCHITECTURES[arch], hidden=hidden, world=world)


def judge_model(arch: str, hidden: int, world: World):
    """The builder `build(key=...)` of a judge of architecture `arch` (a `judge_arch` choice) and width
    `hidden` in `world`."""
    return functools.partial(JUDGE_ARCHITECTURES[arch], hidden=hidden, world=world)


# Flax `nn.Embed`'s default initialiser
_EMBED_INIT = jax.nn.initializers.variance_scaling(1.0, "fan_in", "normal", out_axis=0)


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


def reference_init(model: PolicyModel | JudgeModel, *, key) -> PolicyModel | JudgeModel:
    """`model` with every array re-drawn as the reference's Flax defaults draw it.

    Works for a single model of any architecture and width H (not a stacked ensemble: map it per
    member). Pure and cheap (three H×H Gram–Schmidt passes), so it traces under jit/vmap with
    traced keys.

    - embedding (n, 16): `nn.Embed`'s `variance_scaling(1, "fan_in", "normal", out_axis=0)`,
      which for an (n, 16) table has fan-in 16: untruncated normal, std 1/4.
    - GRU input kernels: `lecun_normal()`, truncated at ±2 of the underlying normal and
      rescaled so the std is 1/√16 (so |w| ≤ 2·0.25/0.8796 ≈ 0.569); input biases zero.
    - GRU recurrent kernels: `orthogonal()`, one independent H×H block per gate;
      the new-gate recurrent bias zero.
    - head: `lecun_normal()` kernel (std 1/√H), bias zero.

    Flax's `GRUCell` and Equinox's are the same cell with the same parameters, so this
    is a re-draw, not a re-parameterisation. Flax (kernels in (in, out) layout, x @ K):

        r  = σ(x K_ir + b_ir + h K_hr)          z = σ(x K_iz + b_iz + h K_hz)
        n  = tanh(x K_in + b_in + r ⊙ (h K_hn + b_hn))      h' = (1 − z) ⊙ n + z ⊙ h

    Equinox (`weight @ x`, gates split in the order reset, update, new):

        weight_ih = [K_ir; K_iz; K_in]ᵀ blocks (3H, 16)   bias   = [b_ir; b_iz; b_in] (3H,)
        weight_hh = [K_hr; K_hz; K_hn]ᵀ blocks (3H, H)    bias_n = b_hn (H,)
        h' = n + z ⊙ (h − n), the same as (1 − z) ⊙ n + z ⊙ h.

    Flax's hr and hz have no bias and neither has Equinox's weight_hh, so both cells
    have 3·(16·H + H) + 3·H·H + H parameters: 4736 at H = 32.

    The other architectures (the reference has none) get what Flax draws for their layers, each from
    its own key in the order of the model's fields: every Linear as `nn.Dense` (a `lecun_normal()`
    kernel, std 1/√fan-in, and a zero bias), every Embedding (the transformer's tokens and positions)
    as `nn.Embed`; LayerNorms start at scale 1 and shift 0 in both libraries.
    """
    if not isinstance(model, Policy | Judge):
        return _reference_layers(model, key)
    key_embed, key_input, key_recurrent, key_head = jax.random.split(key, 4)
    embedding, cell, head = model.embedding.weight, model.cell, model.head
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
            _EMBED_INIT(key_embed, embedding.shape, embedding.dtype),
            _lecun_normal(key_input, cell.weight_ih.shape, cell.weight_ih.dtype),
            jnp.zeros_like(cell.bias),
            _orthogonal_gate_blocks(key_recurrent, cell.hidden_size, cell.weight_hh.dtype),
            jnp.zeros_like(cell.bias_n),
            _lecun_normal(key_head, head.weight.shape, head.weight.dtype),
            jnp.zeros_like(head.bias),
        ),
    )


def _reference_layer(layer, key):
    """A Linear as Flax's `nn.Dense` draws it (LeCun normal kernel, zero bias), an Embedding as `nn.Embed`."""
    if isinstance(layer, eqx.nn.Embedding):
        return eqx.tree_at(lambda e: e.weight, layer, _EMBED_INIT(key, layer.weight.shape, layer.weight.dtype))
    weight = _lecun_normal(key, layer.weight.shape, layer.weight.dtype)
    if layer.bias is None:
        return eqx.tree_at(lambda linear: linear.weight, layer, weight)
    return eqx.tree_at(lambda linear: (linear.weight, linear.bias), layer, (weight, jnp.zeros_like(layer.bias)))


def _is_layer(node) -> bool:
    return isinstance(node, eqx.nn.Linear | eqx.nn.Embedding)


def _layers(model) -> list:
    """The model's Linear and Embedding layers, in the order of its fields."""
    return [node for node in jax.tree.leaves(model, is_leaf=_is_layer) if _is_layer(node)]


def _reference_layers(model, key):
    """Every Linear and Embedding of `model` re-drawn (`_reference_layer`), each from its own key."""
    layers = _layers(model)
    keys = jax.random.split(key, len(layers))
    return eqx.tree_at(_layers, model, [_reference_layer(layer, k) for layer, k in zip(layers, keys, strict=True)])


def select_init(model: PolicyModel | JudgeModel, *, key, reference) -> PolicyModel | JudgeModel:
    """`reference_init(model, key=key)` where `reference` is true, else `model` unchanged.

    `reference` is a bool, possibly traced (one per run under vmap). Both are computed and
    chosen leaf by leaf, so the result is exactly one or the other, bit for bit.
    """
    redrawn = reference_init(model, key=key)
    return jax.tree.map(lambda new, old: jnp.where(reference, new, old), redrawn, model)


def make_judges(key, n_judges: int, build=Judge) -> JudgeModel:
    """An ensemble of judges `build(key=...)` (default: the reference's) stacked along a leading
    axis of size n_judges.

    Member m is built from fold_in(key, m), so member 0 of any ensemble is the same
    judge a single-judge condition of that seed gets (paired design).
    """
    return eqx.filter_vmap(lambda member: build(key=jax.random.fold_in(key, member)))(jnp.arange(n_judges))


def parameter_count(build) -> int:
    """Parameters of the model `build(key=...)` makes (say `functools.partial(Judge, hidden=8)`),
    from its shapes alone: nothing is drawn or computed."""
    shapes = eqx.filter_eval_shape(build, key=jax.random.key(0))
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(shapes) if isinstance(leaf, jax.ShapeDtypeStruct))


@functools.cache
def policy_parameters(arch: str, hidden: int, world: World) -> int:
    """Parameters of a policy of architecture `arch` (a `policy_arch` choice) and width `hidden` in `world`."""
    return parameter_count(policy_model(arch, hidden, world))


@functools.cache
def judge_parameters(arch: str, hidden: int, world: World) -> int:
    """Parameters of one judge of architecture `arch` (a `judge_arch` choice) and width `hidden` in `world`."""
    return parameter_count(judge_model(arch, hidden, world))


def ensemble_scores(judges: JudgeModel, tokens):
    """Scores of every judge on a batch: (n_judges, batch) for tokens (batch, L)."""
    return eqx.filter_vmap(lambda judge: judge.scores(tokens))(judges)
