"""A family of worlds (`vocab`, `seq_len`): every pass over the prefix tree equals brute force in
worlds other than 8⁴, a study runs in each, and a world the lab cannot enumerate is refused before
anything compiles (docs/worlds.md)."""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import engine
from engine.core import exact
from engine.core.models import Judge, MLPJudge, Policy, make_judges
from engine.core.state import init_run, make_run_inputs
from engine.core.world import (
    LANDSCAPES,
    MAX_SEQUENCES,
    REFERENCE_WORLD,
    WORLD_KEY,
    World,
    all_sequences,
    nk_q_star,
    q_star_of,
    reference_q_star,
    render,
)
from engine.knobs import DEFAULTS, condition_arrays
from engine.mechanisms.grounding import expected_label_sums
from engine.mechanisms.judge_steps import oracle_score_gradient, score_gradient_grads, self_labelled_score_gradient
from engine.mechanisms.policy_rules import expected_policy_gradient

# 16⁴, 4⁸, 2¹⁶: the shapes the lab's limit admits, each with another branching and depth
WORLDS = [World(16, 4), World(4, 8), World(2, 16)]


@pytest.mark.parametrize("world", WORLDS, ids=str)
def test_the_sequences_are_every_one_in_lexicographic_order(world):
    sequences = all_sequences(world)
    assert sequences.shape == (world.n_sequences, world.seq_len)
    weights = world.vocab ** np.arange(world.seq_len - 1, -1, -1)
    np.testing.assert_array_equal(sequences @ weights, np.arange(world.n_sequences))
    np.testing.assert_array_equal(exact.sequence_index(world, sequences), np.arange(world.n_sequences))


@pytest.mark.parametrize("world", WORLDS, ids=str)
def test_the_prefix_tree_passes_equal_brute_force(world):
    """log π of all N by the tree against teacher forcing one sequence at a time, and J of all N by
    the tree (GRU) or one batch (MLP) against each judge's definition, at width 8."""
    key = jax.random.PRNGKey(3)
    everything = jnp.asarray(all_sequences(world))
    policy = Policy(key=key, hidden=8, world=world)
    tree = exact.policy_log_probs_tree(policy)
    np.testing.assert_allclose(tree, exact.policy_log_probs_all(policy), rtol=0, atol=2e-5)
    assert abs(float(jax.scipy.special.logsumexp(tree))) < 1e-4
    for build in (Judge, MLPJudge):
        judge = build(key=key, hidden=8, world=world)
        np.testing.assert_allclose(judge.all_scores(), jax.vmap(judge)(everything), rtol=0, atol=2e-5)
        batch = everything[:: max(1, world.n_sequences // 64)]
        np.testing.assert_allclose(judge.scores(batch), jax.vmap(judge)(batch), rtol=0, atol=2e-5)
    tokens, log_prob = policy.sample(jax.random.uniform(jax.random.PRNGKey(4), (64, world.seq_len)))
    np.testing.assert_allclose(log_prob, tree[exact.sequence_index(world, tokens)], rtol=0, atol=2e-5)


@pytest.mark.parametrize("world", WORLDS, ids=str)
def test_a_two_seed_study_runs_in_each_world(small, world):
    """Two seeds, one iteration, distributions saved: π sums to 1 over all N and gives back the
    recorded policy quality against the world's q*."""
    study = small(
        {"baseline": {}},
        name="world",
        vocab=world.vocab,
        seq_len=world.seq_len,
        bias_token=1,
        n_iterations=1,
        save_distributions="final",
        pretrain_max_steps=100,
    )
    ds = engine.run_study(study)
    assert ds.sizes["sequence"] == world.n_sequences
    assert ds["sequence"].values[1] == render([0] * (world.seq_len - 1) + [1])
    probs = ds["policy_probability"].isel(condition=0).values.astype(np.float64)  # the final record
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, rtol=1e-5)
    q_star = np.asarray(reference_q_star(world), np.float64)
    quality = ds["policy_quality"].isel(condition=0, iteration=-1).values
    np.testing.assert_allclose(quality, probs @ q_star, rtol=1e-4, atol=1e-5)
    assert not bool(ds["diverged"].any())
    assert int(ds["vocab"].values[0]) == world.vocab and int(ds["seq_len"].values[0]) == world.seq_len


@pytest.mark.parametrize(
    ("base", "field", "message"),
    [
        ({"vocab": 3, "seq_len": 11}, "seq_len", r"3\^11 sequences, more than the 65,536"),
        ({"vocab": 2, "seq_len": 2**31 - 1}, "seq_len", r"more than the 65,536"),
        ({"vocab": 4, "seq_len": 8, "bias_token": 4}, "bias_token", r"0\.\.3 \(vocab 4\), got 4"),
        ({"vocab": 1}, "vocab", r"must be >= 2"),
    ],
)
def test_a_world_the_lab_cannot_hold_is_refused_in_one_line(base, field, message):
    study = {"name": "w", "seeds": [0], "base": base, "conditions": {"c": {}}}
    with pytest.raises(engine.StudyError, match=rf"field '{field}': .*{message}") as refused:
        engine.resolve(study)
    assert "\n" not in str(refused.value)


def test_the_largest_world_is_the_limit():
    assert MAX_SEQUENCES == 2**16 == World(2, 16).n_sequences == World(16, 4).n_sequences
    engine.resolve({"name": "w", "seeds": [0], "base": {"vocab": 256, "seq_len": 2}, "conditions": {"c": {}}})


def additive_residual(world: World, values) -> float:
    """max |q − its additive (main-effects) part| over all N: 0 exactly when q is additive over positions."""
    table = np.asarray(values, np.float64).reshape((world.vocab,) * world.seq_len)
    additive = np.full(table.shape, -(world.seq_len - 1) * table.mean())
    for position in range(world.seq_len):
        others = tuple(axis for axis in range(world.seq_len) if axis != position)
        additive = additive + table.mean(axis=others, keepdims=True)
    return float(np.abs(table - additive).max())


@pytest.mark.parametrize("world", [REFERENCE_WORLD, World(4, 5)], ids=str)
def test_nk_is_kauffmans_definition_and_additive_only_at_k_0(world):
    """Each sequence's q* is the mean over positions of its window's table entry, the window
    cyclic; K = 0 is additive, K >= 1 is not; K may be traced."""
    seed = 7
    table = np.asarray(
        jax.random.uniform(jax.random.fold_in(jax.random.PRNGKey(seed), 2), (world.seq_len, world.n_sequences))
    )
    sequences = all_sequences(world)
    for k in range(world.seq_len):
        q = np.asarray(nk_q_star(world, k, seed))
        for x in sequences[:: max(1, world.n_sequences // 50)]:
            windows = [
                sum(int(x[(i + j) % world.seq_len]) * world.vocab**j for j in range(k + 1))
                for i in range(world.seq_len)
            ]
            expected = np.mean([table[i, w] for i, w in enumerate(windows)], dtype=np.float32)
            np.testing.assert_allclose(q[exact.sequence_index(world, x)], expected, rtol=1e-6)
        residual = additive_residual(world, q)
        assert residual < 1e-6 if k == 0 else residual > 0.01, (k, residual)
        traced = jax.jit(nk_q_star, static_argnums=0)(world, jnp.int32(k), jnp.int32(seed))
        np.testing.assert_array_equal(traced, q)


def test_the_default_world_seed_is_the_reference_world_and_another_seed_another_world():
    reference = np.asarray(reference_q_star(REFERENCE_WORLD))
    nk = LANDSCAPES.index("nk")
    np.testing.assert_array_equal(q_star_of(REFERENCE_WORLD, 0, 0, WORLD_KEY, 0.0), reference)
    other = np.asarray(q_star_of(REFERENCE_WORLD, 0, 0, WORLD_KEY + 1, 0.0))
    assert np.abs(other - reference).max() > 0.1 and additive_residual(REFERENCE_WORLD, other) < 1e-5
    landscapes = [np.asarray(q_star_of(REFERENCE_WORLD, nk, 2, seed, 0.0)) for seed in (1, 2)]
    assert np.abs(landscapes[0] - landscapes[1]).max() > 0.1


def test_an_nk_run_records_the_brute_force_optimum_and_the_scale_free_readings(small):
    world = World(4, 5)
    knobs = {"landscape": "nk", "nk_k": 2, "world_seed": 3}
    study = small(
        {"nk": knobs, "reference": {}},
        name="nk",
        vocab=world.vocab,
        seq_len=world.seq_len,
        n_iterations=1,
        save_distributions="final",
        pretrain_max_steps=100,
    )
    ds = engine.run_study(study)
    for condition, q_star in (
        ("nk", nk_q_star(world, 2, 3)),
        ("reference", reference_q_star(world)),
    ):
        q_star = np.asarray(q_star, np.float64)
        run = ds.sel(condition=condition).isel(iteration=-1)
        np.testing.assert_allclose(run["q_star_max"], q_star.max(), rtol=1e-6)
        probs = run["policy_probability"].values.astype(np.float64)
        quality = probs @ q_star
        np.testing.assert_allclose(run["policy_quality"], quality, rtol=1e-4, atol=1e-6)
        share = (run["policy_quality"].values - q_star.mean()) / (q_star.max() - q_star.mean())
        np.testing.assert_allclose(run["policy_quality_gap_share"], share, rtol=1e-3, atol=1e-5)
        quantile = (q_star[None, :] <= run["policy_quality"].values[:, None]).mean(axis=1)
        np.testing.assert_allclose(run["policy_quality_quantile"], quantile, atol=1.5 / world.n_sequences)
    start = ds.isel(iteration=0)
    assert (np.abs(start["policy_quality_gap_share"]) < 0.2).all()  # π₀ is near uniform: near 0
    assert ((start["policy_quality_quantile"] > 0.2) & (start["policy_quality_quantile"] < 0.8)).all()


def test_nk_k_beyond_the_sequence_is_refused():
    study = {"name": "w", "seeds": [0], "conditions": {"c": {"landscape": "nk", "nk_k": 4}}}
    with pytest.raises(engine.StudyError, match=r"field 'nk_k': .*at most seq_len - 1 = 3, got 4"):
        engine.resolve(study)


MECHANISMS_IN_ANOTHER_WORLD = {
    "dpo_ipo": {"update_rule": "dpo", "dpo_loss": "ipo", "anchored_rejection": True},
    "kl_mlp": {"kl_penalty": 0.1, "judge_arch": "mlp"},
    "ensemble_reset": {"n_judges": 3, "reset_every": 1, "judge_anchor": 0.1},
    "holdout_meta": {"meta_update_every": 1, "meta_holdout_fraction": 0.05, "oracle_noise": 0.5},
    "meta_judge": {"meta_source": "judge", "meta_update_every": 1},
    "window_anchor": {"judge_data": "window", "judge_data_window": 2, "anchor_fraction": 0.25},
    "biased_nk": {"planted_bias": 0.5, "length_control": 0.5, "landscape": "nk", "nk_k": 1},
    "exact": {"gradient_estimator": "exact", "anchor_fraction": 0.25, "transition_alpha": 0.5},
}


def test_every_mechanism_runs_in_another_world(small):
    """One study in a 4⁵ world with the update rules, regularisers, ensembles, resets, anchors,
    meta-corrections, the planted bias and the exact estimator: every run stays finite and the
    core readings lie in their ranges."""
    study = small(
        MECHANISMS_IN_ANOTHER_WORLD, name="mechanisms", vocab=4, seq_len=5, bias_token=1, n_iterations=2, record_every=3
    )
    ds = engine.run_study(study)
    assert not bool(ds["diverged"].any())
    assert ds.sizes["step"] == 2 * 6 // 3 + 1
    for name in ("policy_quality", "judge_alignment", "policy_entropy", "policy_quality_gap_share"):
        assert np.isfinite(ds[name].values).all(), name
    assert (ds["policy_entropy"] <= World(4, 5).uniform_entropy + 1e-4).all()
    assert ((ds["policy_quality_quantile"] >= 0) & (ds["policy_quality_quantile"] <= 1)).all()


# ------------------------------------------------- gradient_estimator exact off the tile size

# 4³ = 64 sequences, fewer than one tile of the pair sums (engine.core.exact.PAIR_BLOCK), and 3⁵ = 243,
# not a multiple of it
WORLDS_OFF_THE_TILE = [World(4, 3), World(3, 5)]


@pytest.mark.parametrize("world", WORLDS_OFF_THE_TILE, ids=str)
@pytest.mark.parametrize("odd", [jnp.sign, lambda d: jnp.tanh(d / 2)], ids=["sign", "tanh"])
def test_the_pair_sums_of_a_world_off_the_tile_size_are_the_dense_sums(world, odd):
    """Every one of the N² terms in float64, a quarter of the values tied with others."""
    n = world.n_sequences
    x = 3 * jax.random.normal(jax.random.PRNGKey(0), (n,))
    x = x.at[: n // 4].set(x[n // 4 : 2 * (n // 4)])
    weights = jax.random.dirichlet(jax.random.PRNGKey(1), jnp.full(n, 0.3))
    got = np.asarray(jax.jit(lambda x, w: exact.antisymmetric_pair_sum(odd, x, w))(x, weights))
    x64, weights64 = np.asarray(x, np.float64), np.asarray(weights, np.float64)
    want = np.asarray(odd(x64[:, None] - x64[None, :])) @ weights64
    assert got.shape == (n,)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * np.abs(want).max())


def flat(tree) -> np.ndarray:
    return np.concatenate([np.asarray(leaf, np.float64).ravel() for leaf in jax.tree.leaves(tree)])


@pytest.fixture(scope="module")
def small_world_run():
    """One run in the 4³ world, two untrained judges (scores spread by head × 8) and a policy
    sharpened after start (head × 12), so π is far from uniform."""
    world = WORLDS_OFF_THE_TILE[0]
    knobs = {**DEFAULTS, "n_judges": 2, "bias_token": 1}
    judges = make_judges(jax.random.PRNGKey(5), 2, functools.partial(Judge, world=world))
    judges = eqx.tree_at(lambda j: j.head.weight, judges, judges.head.weight * 8)
    condition = jax.tree.map(lambda leaf: jnp.asarray(leaf[0]), condition_arrays([knobs]))
    run = make_run_inputs(condition, jnp.int32(0), judges, jnp.arange(2))
    state = init_run(run)
    state = eqx.tree_at(lambda s: s.policy.head.weight, state, state.policy.head.weight * 12)
    return world, run, state


def test_the_exact_policy_gradient_in_a_small_world_is_the_score_function_sum(small_world_run):
    """−∇E_π[J̄] = −Σ_x π(x)·J̄(x)·∇log π(x), one sequence at a time over all 64 (teacher-forced
    log π, each judge's own forward pass), against the exact step's prefix-tree gradient."""
    world, run, state = small_world_run
    sequences = jnp.asarray(all_sequences(world))
    log_prob_grads = jax.vmap(lambda x: eqx.filter_grad(lambda p: p.log_prob(x))(state.policy))(sequences)
    per_sequence = np.stack(
        [flat(jax.tree.map(lambda leaf, i=i: leaf[i], log_prob_grads)) for i in range(len(sequences))]
    )
    probs = np.exp(np.asarray(jax.vmap(state.policy.log_prob)(sequences), np.float64))
    assert probs.max() > 10 / world.n_sequences  # far from uniform
    mean_score = np.mean(
        [np.asarray(jax.vmap(jax.tree.map(lambda leaf, m=m: leaf[m], state.judges))(sequences)) for m in range(2)],
        axis=0,
    )
    want = -(probs * mean_score) @ per_sequence
    got = flat(jax.jit(expected_policy_gradient)(state, run.condition))
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * np.abs(want).max())


def test_the_exact_judge_gradients_in_a_small_world_are_the_sums_over_all_pairs(small_world_run):
    """The self-labelled step (pairs a, b ~ π, the judge's own labels) and the oracle-pair step
    (uniform pairs labelled by q*) against the gradient of their losses summed over all 64² ordered
    pairs, each pair through the judge's own forward pass."""
    world, run, state = small_world_run
    sequences = jnp.asarray(all_sequences(world))
    judge = jax.tree.map(lambda leaf: leaf[0], state.judges)
    probs = jnp.exp(exact.policy_log_probs_tree(state.policy))
    q_star = reference_q_star(world)
    index_a, index_b = (i.ravel() for i in np.meshgrid(np.arange(world.n_sequences), np.arange(world.n_sequences)))

    def summed(judge, weights, labels):
        difference = jax.vmap(judge)(sequences[index_a]) - jax.vmap(judge)(sequences[index_b])
        labels = jax.lax.stop_gradient(difference > 0) if labels is None else labels
        return jnp.sum(weights * optax.sigmoid_binary_cross_entropy(difference, labels.astype(difference.dtype)))

    def brute(weights, labels=None):
        return flat(eqx.filter_jit(eqx.filter_grad(summed))(judge, weights, labels))

    def exact_step(score_gradient):
        return flat(eqx.filter_jit(score_gradient_grads)(judge, score_gradient))

    label_sums = expected_label_sums(world, q_star, run.condition, False)
    for got, want in (
        (exact_step(lambda s: self_labelled_score_gradient(s, probs)), brute(probs[index_a] * probs[index_b])),
        (
            exact_step(lambda s: oracle_score_gradient(s, label_sums)),
            brute(jnp.full(len(index_a), world.n_sequences**-2.0), q_star[index_a] > q_star[index_b]),
        ),
    ):
        assert np.abs(want).max() > 0
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * np.abs(want).max())


@pytest.mark.parametrize("world", WORLDS_OFF_THE_TILE, ids=str)
def test_an_exact_study_runs_in_a_world_off_the_tile_size(small, world):
    """Self-labelled, oracle-pair and held-out steps, all exact: the policy moves, every run stays finite."""
    knobs = {"gradient_estimator": "exact", "anchor_fraction": 0.25, "meta_update_every": 1}
    study = small(
        {"exact": {**knobs, "meta_holdout_fraction": 0.1}},
        seeds=[0],
        name="exact",
        vocab=world.vocab,
        seq_len=world.seq_len,
        bias_token=1,
        n_iterations=1,
        pretrain_max_steps=100,
    )
    ds = engine.run_study(study)
    assert not bool(ds["diverged"].any())
    assert np.isfinite(ds["judge_alignment"].values).all()
    assert (ds["policy_entropy"] <= world.uniform_entropy + 1e-4).all()
    quality = ds["policy_quality"].values.ravel()
    assert abs(quality[-1] - quality[0]) > 1e-4
