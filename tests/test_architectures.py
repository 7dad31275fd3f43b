"""The model architectures (`policy_arch`, `judge_arch`: gru, mlp, transformer): parameter counts as each
architecture's formula says; every policy's exact π over all N against brute force (the product of its
conditionals, one sequence at a time, in float64 NumPy) and against its sampler; every judge's scores of
all N against brute force; the reference init of the new layers; studies with every architecture, sampled
and exact, with the mechanisms; and the bad combinations refused in one line."""

import functools
import json
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import engine
from engine.core.exact import entropy, policy_log_probs_all, policy_log_probs_tree, sequence_index
from engine.core.models import (
    EMBED,
    JUDGE_ARCHITECTURES,
    POLICY_ARCHITECTURES,
    MLPJudge,
    judge_model,
    parameter_count,
    policy_model,
    reference_init,
)
from engine.core.transformer import HEADS, MLP_RATIO
from engine.core.world import REFERENCE_WORLD, World, all_sequences
from engine.host.estimate import JUDGE_WIDTH_COSTS, POLICY_WIDTH_COSTS
from engine.loop.diagnostics import CORE_METRICS

TINY = World(vocab=3, seq_len=3)  # 27 sequences: brute force over every one
WIDTH = 8


def formula(model: str, arch: str, hidden: int, world: World) -> int:
    """Parameters as docs/models.md counts them."""
    vocab, seq_len = world
    inputs = vocab + (model == "policy")  # the policy's start token
    head = hidden * vocab + vocab if model == "policy" else hidden + 1
    if arch == "gru":
        return inputs * EMBED + 3 * (EMBED * hidden + hidden) + 3 * hidden * hidden + hidden + head
    if arch == "mlp":
        return (seq_len - (model == "policy")) * vocab * hidden + hidden + head
    attention, norms = 4 * hidden**2, 2 * 2 * hidden
    mlp = (MLP_RATIO * hidden**2 + MLP_RATIO * hidden) + (MLP_RATIO * hidden**2 + hidden)
    return (inputs + seq_len) * hidden + attention + norms + mlp + head


@pytest.mark.parametrize("world", (REFERENCE_WORLD, TINY, World(16, 5)))
@pytest.mark.parametrize("hidden", (2, 8, 32, 128))
def test_parameter_counts_follow_each_architectures_formula(hidden, world):
    for arch in POLICY_ARCHITECTURES:
        assert parameter_count(policy_model(arch, hidden, world)) == formula("policy", arch, hidden, world), arch
    for arch in JUDGE_ARCHITECTURES:
        assert parameter_count(judge_model(arch, hidden, world)) == formula("judge", arch, hidden, world), arch


# ----------------------------------------------------------------------------------------
# Brute force in float64 NumPy, one sequence at a time, from each model's arrays.


def arrays(module):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), module)


def log_softmax(z):
    z = z - z.max()
    return z - np.log(np.exp(z).sum())


def gru_state(cell, embedding, tokens) -> np.ndarray:
    """Equinox's GRUCell read over `tokens` from h = 0."""
    h = np.zeros(cell.weight_hh.shape[1])
    for token in tokens:
        i_r, i_z, i_n = np.split(cell.weight_ih @ embedding[token] + cell.bias, 3)
        h_r, h_z, h_n = np.split(cell.weight_hh @ h, 3)
        r, z = 1 / (1 + np.exp(-(i_r + h_r))), 1 / (1 + np.exp(-(i_z + h_z)))
        n = np.tanh(i_n + r * (h_n + cell.bias_n))
        h = (1 - z) * n + z * h
    return h


def layer_norm(x, weight=None, bias=None):
    normed = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    return normed if weight is None else normed * weight + bias


def gelu(y):
    return 0.5 * y * (1 + np.tanh(np.sqrt(2 / np.pi) * (y + 0.044715 * y**3)))


def transformer_output(trunk, inputs) -> np.ndarray:
    """The last position's output of the causal transformer over `inputs` (the whole input is the
    context: no mask needed)."""
    m = len(inputs)
    x = trunk.tokens.weight[inputs] + trunk.positions.weight[:m]
    block = trunk.block
    a = layer_norm(x, block.attention_norm.weight, block.attention_norm.bias)
    attention = block.attention

    def heads(projection):
        return (a @ projection.weight.T).reshape(m, HEADS, -1)

    q, k, v = heads(attention.query_proj), heads(attention.key_proj), heads(attention.value_proj)
    logits = np.einsum("thd,shd->hts", q, k) / np.sqrt(q.shape[-1])
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    x = x + np.einsum("hts,shd->thd", weights, v).reshape(m, -1) @ attention.output_proj.weight.T
    y = layer_norm(x, block.mlp_norm.weight, block.mlp_norm.bias)
    x = x + gelu(y @ block.expand.weight.T + block.expand.bias) @ block.contract.weight.T + block.contract.bias
    return layer_norm(x)[-1]


def brute_conditional(arch: str, policy, prefix) -> np.ndarray:
    """log p(· | prefix) of the policy's arrays `policy` (float64), from the prefix alone."""
    vocab, seq_len = TINY
    if arch == "gru":
        hidden = gru_state(policy.cell, policy.embedding.weight, [vocab, *prefix])
    elif arch == "mlp":
        one_hot = np.zeros((seq_len - 1) * vocab)
        one_hot[[position * vocab + token for position, token in enumerate(prefix)]] = 1
        hidden = np.tanh(policy.layer.weight @ one_hot + policy.layer.bias)
    else:
        hidden = transformer_output(policy.trunk, np.array([vocab, *prefix], int))
    return log_softmax(policy.head.weight @ hidden + policy.head.bias)


def brute_score(arch: str, judge, tokens) -> float:
    vocab = TINY.vocab
    if arch == "gru":
        hidden = gru_state(judge.cell, judge.embedding.weight, tokens)
    elif arch == "mlp":
        hidden = np.tanh(judge.layer.weight @ np.eye(vocab)[tokens].reshape(-1) + judge.layer.bias)
    else:
        hidden = transformer_output(judge.trunk, np.asarray(tokens))
    return float(judge.head.weight[0] @ hidden + judge.head.bias[0])


def sharpened(model, factor: float = 2.0):
    """Every array scaled: a distribution (and scores) far from uniform, so the order of the N is tested."""
    return jax.tree.map(lambda a: a * factor, model)


def tiny_policy(arch: str, seed: int = 0):
    key = jax.random.PRNGKey(seed)
    return sharpened(reference_init(policy_model(arch, WIDTH, TINY)(key=key), key=key))


@pytest.mark.parametrize("arch", tuple(POLICY_ARCHITECTURES))
def test_each_policys_exact_distribution_is_the_product_of_its_conditionals(arch):
    """π of all 27 sequences (the prefix tree, as the lab computes it) sums to 1 and equals, sequence by
    sequence, the product of the conditionals brute force computes from each prefix alone."""
    policy = tiny_policy(arch)
    exact = np.asarray(policy_log_probs_tree(policy), np.float64)
    numpy_policy = arrays(policy)
    brute = [
        sum(brute_conditional(arch, numpy_policy, x[:t])[x[t]] for t in range(TINY.seq_len))
        for x in all_sequences(TINY)
    ]
    np.testing.assert_allclose(exact, brute, rtol=1e-5, atol=1e-5)
    assert abs(np.exp(exact).sum() - 1) < 1e-5
    assert entropy(exact) < 0.95 * TINY.uniform_entropy  # far from uniform: the order of the N matters
    # the model's own one-sequence definition and the teacher-forced batch agree with both
    everything = jnp.asarray(all_sequences(TINY))
    np.testing.assert_allclose(policy_log_probs_all(policy), brute, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(policy.log_prob_batch(everything[::-1]), brute[::-1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", tuple(POLICY_ARCHITECTURES))
def test_each_policys_sampler_draws_from_its_exact_distribution(arch):
    """A chi-square test of 30,000 draws against the exact π over the 27 sequences (cells expecting under 5
    pooled), and the sampling pass's log π against the exact one of each draw."""
    policy = tiny_policy(arch, seed=1)
    probs = np.exp(np.asarray(policy_log_probs_tree(policy), np.float64))
    n = 30_000
    uniforms = jax.random.uniform(jax.random.PRNGKey(2), (n, TINY.seq_len))
    tokens, log_prob = eqx.filter_jit(lambda p, u: p.sample(u))(policy, uniforms)
    index = np.asarray(sequence_index(TINY, tokens))
    np.testing.assert_allclose(np.exp(log_prob), probs[index], rtol=1e-4)
    counts = np.bincount(index, minlength=TINY.n_sequences)
    expected = n * probs / probs.sum()
    small = expected < 5  # pooled into one cell
    if small.any():
        counts = np.append(counts[~small], counts[small].sum())
        expected = np.append(expected[~small], expected[small].sum())
    assert scipy.stats.chisquare(counts, expected).pvalue > 1e-3


@pytest.mark.parametrize("arch", tuple(JUDGE_ARCHITECTURES))
def test_each_judges_scores_of_all_sequences_equal_brute_force(arch):
    key = jax.random.PRNGKey(3)
    judge = sharpened(reference_init(judge_model(arch, WIDTH, TINY)(key=key), key=key))
    numpy_judge = arrays(judge)
    brute = np.array([brute_score(arch, numpy_judge, x) for x in all_sequences(TINY)])
    np.testing.assert_allclose(judge.all_scores(), brute, rtol=1e-5, atol=1e-5)
    shuffled = np.random.default_rng(0).permutation(TINY.n_sequences)
    np.testing.assert_allclose(judge.scores(all_sequences(TINY)[shuffled]), brute[shuffled], rtol=1e-5, atol=1e-5)
    assert np.std(brute) > 0.05


@pytest.mark.parametrize("arch", ("mlp", "transformer"))
def test_at_the_reference_world_the_batched_passes_equal_the_definitions(arch):
    """At 8⁴: exact π against teacher forcing one sequence at a time; the judge's scores of all N
    against the one-sequence definition."""
    key = jax.random.PRNGKey(4)
    policy = reference_init(policy_model(arch, 32, REFERENCE_WORLD)(key=key), key=key)
    np.testing.assert_allclose(policy_log_probs_tree(policy), policy_log_probs_all(policy), rtol=1e-5, atol=1e-5)
    judge = reference_init(judge_model(arch, 32, REFERENCE_WORLD)(key=key), key=key)
    everything = jnp.asarray(all_sequences(REFERENCE_WORLD))
    np.testing.assert_allclose(judge.all_scores(), jax.vmap(judge)(everything), rtol=1e-5, atol=1e-5)


def test_the_reference_init_draws_each_layer_from_its_own_key_in_field_order():
    """Every Linear a LeCun normal kernel and a zero bias, every Embedding `nn.Embed`'s normal, each layer
    from split(key, layers)[its index in field order]: the MLP judge's two layers get what they got when
    they were the only architecture besides the GRU's."""
    key = jax.random.PRNGKey(6)
    judge = reference_init(MLPJudge(key=key, hidden=16), key=key)
    key_layer, key_head = jax.random.split(key)
    lecun = jax.nn.initializers.lecun_normal(in_axis=-1, out_axis=-2)
    np.testing.assert_array_equal(judge.layer.weight, lecun(key_layer, judge.layer.weight.shape))
    np.testing.assert_array_equal(judge.head.weight, lecun(key_head, judge.head.weight.shape))
    transformer = reference_init(judge_model("transformer", 64, REFERENCE_WORLD)(key=key), key=key)
    block = transformer.trunk.block
    for linear, fan_in in ((block.attention.query_proj, 64), (block.expand, 64), (block.contract, 256)):
        weight = np.asarray(linear.weight, np.float64)
        assert abs(weight.std() * np.sqrt(fan_in) - 1) < 0.1
        assert linear.bias is None or not np.any(linear.bias)
    assert np.all(block.attention_norm.weight == 1) and not np.any(block.attention_norm.bias)
    flax_embed = jax.nn.initializers.variance_scaling(1.0, "fan_in", "normal", out_axis=0)
    tokens = transformer.trunk.tokens.weight
    keys = jax.random.split(key, 9)  # tokens, positions, 4 projections, expand, contract, head
    np.testing.assert_array_equal(tokens, flax_embed(keys[0], tokens.shape))


# ----------------------------------------------------------------------------------------
# Studies.

SMALL_WORLD = {"vocab": 4, "seq_len": 3, "n_iterations": 1, "pretrain_max_steps": 500}
ARCHITECTURES_STUDY = {
    "mlp_dpo_temporal": {
        "policy_arch": "mlp",
        "judge_arch": "transformer",
        "update_rule": "dpo",
        "anchored_rejection": True,
        "future_chosen": True,
        "kl_penalty": 0.1,
    },
    "transformer_ensemble_reset_anchor": {
        "policy_arch": "transformer",
        "judge_arch": "mlp",
        "n_judges": 2,
        "reset_every": 1,
        "anchor_fraction": 0.1,
        "judge_anchor": 0.5,
        "entropy_exact": 0.1,
        "judge_data": "window",
        "judge_data_window": 2,
    },
    "transformer_meta_judge_biased": {
        "policy_arch": "transformer",
        "judge_arch": "transformer",
        "policy_hidden": 16,
        "meta_source": "judge",
        "meta_update_every": 2,
        "meta_pairs": 8,
        "meta_learns": True,
        "planted_bias": 1.0,
    },
    "mlp_holdout": {"policy_arch": "mlp", "meta_holdout_fraction": 0.05, "meta_update_every": 2},
    "transformer_exact": {
        "policy_arch": "transformer",
        "judge_arch": "transformer",
        "gradient_estimator": "exact",
        "anchor_fraction": 0.1,
    },
    "mlp_exact": {"policy_arch": "mlp", "judge_arch": "mlp", "gradient_estimator": "exact", "judge_hidden": 8},
}


@pytest.fixture(scope="module")
def architectures_ds(small):
    study = small(ARCHITECTURES_STUDY, record_every=2, save_distributions="final", **SMALL_WORLD)
    return engine.run_study(study)


def test_every_architecture_runs_every_mechanism_sampled_and_exact(architectures_ds):
    ds = architectures_ds
    assert ds.diverged.sum() == 0
    for metric in CORE_METRICS + ("kl_to_initial",):
        assert np.isfinite(ds[metric]).all(), metric
    np.testing.assert_allclose(ds.policy_probability.sum("sequence"), 1.0, atol=1e-5)
    final = ds.isel(step=-1)
    np.testing.assert_allclose(
        (ds.policy_probability * ds.judge_score).sum("sequence"), final.judge_perceived_quality, rtol=1e-4, atol=1e-5
    )
    assert (final.kl_to_initial > 0).all()  # every policy moved from π₀
    assert np.isfinite(ds.meta_judge_alignment.sel(condition="transformer_meta_judge_biased")).all()
    assert np.isfinite(ds.train_pair_gap_judge.sel(condition="mlp_dpo_temporal").isel(step=-1)).all()


def test_the_dataset_records_every_architectures_parameter_counts(architectures_ds):
    ds, world = architectures_ds, World(SMALL_WORLD["vocab"], SMALL_WORLD["seq_len"])
    for condition in ds.condition.values:
        knobs = ds.sel(condition=condition)
        policy = formula("policy", str(knobs.policy_arch.values), int(knobs.policy_hidden), world)
        judge = formula("judge", str(knobs.judge_arch.values), int(knobs.judge_hidden), world)
        assert (int(knobs.policy_parameters), int(knobs.judge_parameters)) == (policy, judge), condition
    reached = ds.pretrain_reached
    np.testing.assert_array_equal(reached, ds.pretrain_alignment >= ds.judge_init_alignment)


def test_a_transformer_judge_reaches_the_default_target_with_the_default_budget(small):
    """At 8⁴, the default pretraining (target Spearman 0.7, at most 5000 steps of 64 sequences) and a
    one-iteration study of transformer models."""
    study = small({"transformer": {"policy_arch": "transformer", "judge_arch": "transformer"}}, n_iterations=1)
    del study["base"]["judge_init_alignment"]  # the default target
    ds = engine.run_study(study)
    assert ds.pretrain_reached.all() and (ds.pretrain_alignment >= 0.7).all()
    assert ds.diverged.sum() == 0 and np.isfinite(ds.judge_alignment).all()


@pytest.mark.parametrize(
    "knobs, field, message",
    [
        (
            {"policy_arch": "transformer", "policy_hidden": 9},
            "policy_hidden",
            "a transformer's width is split among its 2 attention heads, so it must be a multiple of 2, got 9",
        ),
        (
            {"judge_arch": "transformer", "judge_hidden": 33},
            "judge_hidden",
            "a transformer's width is split among its 2 attention heads, so it must be a multiple of 2, got 33",
        ),
        ({"policy_arch": "lstm"}, "policy_arch", "expected one of 'gru', 'mlp', 'transformer', got 'lstm' (str)"),
        (
            {"policy_arch": "transformer", "update_rule": "dpo", "gradient_estimator": "exact"},
            "gradient_estimator",
            "exact has no mode for update_rule dpo",
        ),
    ],
)
def test_bad_combinations_are_refused_in_one_line(small, knobs, field, message):
    with pytest.raises(engine.StudyError) as caught:
        engine.resolve(small({"c": knobs}))
    text = str(caught.value)
    assert text.startswith(f"study 'small', condition 'c', field {field!r}: {message}") and "\n" not in text


def test_an_odd_width_is_fine_for_the_other_architectures(small):
    resolved = engine.resolve(small({"c": {"policy_arch": "mlp", "policy_hidden": 9, "judge_hidden": 33}}))
    assert resolved.conditions["c"]["policy_hidden"] == 9


def test_parameter_counts_from_shapes_are_the_built_models(small):
    """`parameter_count` (shapes only) against the arrays of a built model of each architecture."""
    for arch, build in [(a, functools.partial(policy_model, a)) for a in POLICY_ARCHITECTURES] + [
        (a, functools.partial(judge_model, a)) for a in JUDGE_ARCHITECTURES
    ]:
        model = build(16, TINY)(key=jax.random.PRNGKey(0))
        built = sum(leaf.size for leaf in jax.tree.leaves(eqx.filter(model, eqx.is_array)))
        assert built == parameter_count(build(16, TINY)), arch


def test_the_architectures_costs_follow_from_their_measurements():
    """data/arch_cost_cpu_2core.json holds the raw times; each new architecture's cost at 32 is 2r − 1 of its
    time over the GRU baseline's (the MLP judge keeps its constant from data/width_cost_cpu_2core.json)."""
    record = json.loads((Path(__file__).parents[1] / "data" / "arch_cost_cpu_2core.json").read_text())
    rows = {(row["policy_arch"], row["judge_arch"]): row["us_per_run_step"] for row in record["rows"]}
    baseline = rows[("gru", "gru")]
    for arch in ("mlp", "transformer"):
        assert POLICY_WIDTH_COSTS[arch] == {32: pytest.approx(2 * rows[(arch, "gru")] / baseline - 1, abs=0.006)}
    assert JUDGE_WIDTH_COSTS["transformer"] == {
        32: pytest.approx(2 * rows[("gru", "transformer")] / baseline - 1, abs=0.006)
    }
