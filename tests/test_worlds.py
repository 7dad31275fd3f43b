"""A family of worlds (`vocab`, `seq_len`): every pass over the prefix tree equals brute force in
worlds other than 8⁴, a study runs in each, and a world the lab cannot enumerate is refused before
anything compiles (docs/worlds.md)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import engine
from engine.core import exact
from engine.core.models import Judge, MLPJudge, Policy
from engine.core.world import MAX_SEQUENCES, World, all_sequences, q_star_of, render

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
    probs = ds["policy_probability"].isel(condition=0, iteration=0).values.astype(np.float64)
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, rtol=1e-5)
    q_star = np.asarray(q_star_of(world, 0.0), np.float64)
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
