"""gradient_estimator `exact` (docs/mean_field.md): every step takes the expectation of its sampled
sibling's gradient. The pair sums against float64 brute force; the mean of many sampled gradients
against the exact one (a z-test on projections, with its power shown); a run's states under `exact`
do not depend on its loop key; what `exact` refuses; `pretrain_batch_size`."""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import engine
from engine.core import exact
from engine.core.models import Judge, judge_model, make_judges
from engine.core.state import init_run, make_run_inputs
from engine.core.world import REFERENCE_WORLD as WORLD
from engine.core.world import all_sequences, reference_q_star
from engine.host.plan import group_variants
from engine.knobs import DEFAULTS, code, condition_arrays, sizes_of, variant_of
from engine.loop.batch import make_batch_run
from engine.mechanisms.grounding import expected_label_sums, labelled_pairs, noise_key
from engine.mechanisms.judge_data import fresh_pairs
from engine.mechanisms.judge_steps import (
    oracle_score_gradient,
    pair_loss,
    score_gradient_grads,
    self_labelled_score_gradient,
    self_labelled_slope,
)
from engine.mechanisms.policy_rules import expected_policy_gradient, reinforce_gradient
from engine.mechanisms.pretraining import PretrainInputs, pretrain_judge

Q_STAR = reference_q_star(WORLD)
SEQUENCES = jnp.asarray(all_sequences(WORLD))


def flat(tree) -> jax.Array:
    """Every array leaf of a gradient, raveled and joined: (parameters,)."""
    return jnp.concatenate([leaf.ravel() for leaf in jax.tree.leaves(tree)])


def first_row(tree):
    return jax.tree.map(lambda leaf: jnp.asarray(leaf[0]), tree)


def one_run(knobs: dict | None = None):
    """One run's inputs and state: untrained judges with their scores spread over ±3 (head × 8),
    and the policy sharpened after start (head × 12), so π is far from uniform and from π₀."""
    knobs = {**DEFAULTS, **(knobs or {})}
    n_judges = knobs["n_judges"]
    judges = make_judges(jax.random.PRNGKey(5), n_judges)
    judges = eqx.tree_at(lambda j: j.head.weight, judges, judges.head.weight * 8)
    condition = first_row(condition_arrays([knobs]))
    run = make_run_inputs(condition, jnp.int32(0), judges, jnp.arange(n_judges))
    state = init_run(run)
    state = eqx.tree_at(lambda s: s.policy.head.weight, state, state.policy.head.weight * 12)
    return run, state, knobs


def z_scores(sample, null, alternative, n_keys: int = 16384, n_random: int = 4):
    """z of the mean of sample(key) (a flat gradient) over n_keys keys against `null` and against
    `alternative`, along 2 + n_random directions: the null's, the alternative's difference from
    it, and fixed random ones. Each z is standard normal where its hypothesis holds."""
    null, alternative = np.asarray(null, np.float64), np.asarray(alternative, np.float64)
    directions = np.vstack([null, alternative - null, np.random.default_rng(0).standard_normal((n_random, null.size))])
    directions = jnp.asarray(directions / np.linalg.norm(directions, axis=1, keepdims=True), jnp.float32)
    keys = jax.random.split(jax.random.PRNGKey(11), n_keys).reshape(-1, 1024, 2)
    project = jax.jit(lambda keys: jax.lax.map(jax.vmap(lambda key: directions @ sample(key)), keys))
    projected = np.asarray(project(keys), np.float64).reshape(n_keys, -1)
    standard_error = projected.std(axis=0, ddof=1) / np.sqrt(n_keys)
    directions = np.asarray(directions, np.float64)
    return tuple((projected.mean(axis=0) - directions @ mean) / standard_error for mean in (null, alternative))


def assert_null_holds_and_alternative_does_not(sample, null, alternative, **kwargs):
    z_null, z_alternative = z_scores(sample, null, alternative, **kwargs)
    assert np.abs(z_null).max() < Z_LIMIT, z_null
    assert np.abs(z_alternative).max() > 2 * Z_LIMIT, z_alternative  # the test can tell them apart


Z_LIMIT = 4.5  # |z| beyond this on any of 6 projections: p < 4e-5 under the null


# ------------------------------------------------------------------ the pair sums, brute force


def dense_pair_sum(odd, x, weights) -> np.ndarray:
    x, weights = np.asarray(x, np.float64), np.asarray(weights, np.float64)
    return odd(x[:, None] - x[None, :]) @ weights


@pytest.mark.parametrize(
    ("name", "odd", "odd64"),
    [
        ("tanh", lambda d: jnp.tanh(d / 2), lambda d: np.tanh(d / 2)),
        ("sign", jnp.sign, np.sign),
        ("self-labelled slope", self_labelled_slope, lambda d: np.tanh(d / 2) - np.sign(d)),
    ],
)
def test_the_antisymmetric_pair_sum_is_the_dense_sum(name, odd, odd64):
    """Every one of the 4096² terms, in float64, with exact ties among the values."""
    x = 3 * jax.random.normal(jax.random.PRNGKey(0), (WORLD.n_sequences,))
    x = x.at[:300].set(x[300:600])  # 300 ties, in other tiles
    weights = jax.random.dirichlet(jax.random.PRNGKey(1), jnp.full(WORLD.n_sequences, 0.3))
    got = np.asarray(jax.jit(lambda x, w: exact.antisymmetric_pair_sum(odd, x, w))(x, weights))
    want = dense_pair_sum(odd64, x, weights)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * np.abs(want).max())


def test_the_expected_self_labelled_gradient_is_the_double_loop_over_its_pairs():
    """q on 30 sequences (and their twins, which the judge scores the same: exact ties), the loss
    Σ_ab q(a) q(b) ℓ(J(a) − J(b)) summed pair by pair with the judge's own labels: its derivative in
    J in float64 and its gradient in θ (the sampled step's code on all ordered pairs, weighted)
    equal the exact step's, which never enumerates pairs."""
    judge = Judge(key=jax.random.PRNGKey(2))
    judge = eqx.tree_at(lambda j: j.head.weight, judge, judge.head.weight * 8)
    judge = eqx.tree_at(
        lambda j: j.embedding.weight, judge, judge.embedding.weight.at[7].set(judge.embedding.weight[6])
    )
    chosen = np.random.default_rng(3).choice(WORLD.n_sequences, 30, replace=False)
    twins = all_sequences(WORLD)[chosen].copy()
    twins[twins == 6] = 7  # token 7 reads as token 6: the twin's score is bit for bit the same
    support = np.unique(np.concatenate([chosen, np.asarray(exact.sequence_index(WORLD, twins))]))
    assert len(support) > len(chosen)  # some twins are new sequences, so some pairs tie
    weights = np.random.default_rng(4).uniform(0.2, 1.0, len(support))
    probs = np.zeros(WORLD.n_sequences)
    probs[support] = weights / weights.sum()

    scores = np.asarray(judge.all_scores(), np.float64)
    assert len(np.unique(scores[support])) < len(support)
    slope = 1 / (1 + np.exp(-(scores[:, None] - scores[None, :]))) - (scores[:, None] > scores[None, :])  # ℓ'(d)
    brute = np.zeros(WORLD.n_sequences)
    for a in support:
        for b in support:
            brute[a] += probs[a] * probs[b] * slope[a, b]
            brute[b] -= probs[a] * probs[b] * slope[a, b]
    probs32 = jnp.asarray(probs, jnp.float32)
    got = np.asarray(jax.jit(self_labelled_score_gradient)(jnp.asarray(scores, jnp.float32), probs32))
    np.testing.assert_allclose(got, brute, rtol=0, atol=1e-6 * np.abs(brute).max())

    index_a, index_b = np.meshgrid(support, support, indexing="ij")
    pair_weights = jnp.asarray((probs[index_a] * probs[index_b]).ravel(), jnp.float32)

    def double_loop(judge):
        tokens_a, tokens_b = SEQUENCES[index_a.ravel()], SEQUENCES[index_b.ravel()]
        diff = judge.scores(tokens_a) - judge.scores(tokens_b)
        labels = jax.lax.stop_gradient(diff > 0).astype(diff.dtype)
        return jnp.sum(pair_weights * (jax.nn.softplus(diff) - labels * diff))  # optax's sigmoid BCE

    want = flat(jax.jit(lambda j: eqx.filter_grad(double_loop)(j))(judge))
    exact_grads = jax.jit(lambda j: flat(score_gradient_grads(j, lambda s: self_labelled_score_gradient(s, probs32))))
    np.testing.assert_allclose(exact_grads(judge), want, rtol=2e-4, atol=2e-5 * float(jnp.abs(want).max()))


def test_the_label_sums_are_the_expected_labels_of_every_pair():
    """ℓ(c) = (1/N) Σ_b E[y(c, b) − y(b, c)]: sign(Δq*) without noise, erf(Δv/(2s)) with it."""
    q = np.asarray(Q_STAR, np.float64)
    perfect = jax.jit(lambda q: expected_label_sums(WORLD, q, first_row(condition_arrays([DEFAULTS])), False))(Q_STAR)
    np.testing.assert_allclose(perfect, np.sign(q[:, None] - q[None, :]).mean(axis=1), atol=1e-6)
    knobs = {**DEFAULTS, "oracle_noise": 0.7, "oracle_bias": 0.5}
    noisy = jax.jit(lambda q: expected_label_sums(WORLD, q, first_row(condition_arrays([knobs])), True))(Q_STAR)
    import scipy.special

    verbosity = (all_sequences(WORLD) == knobs["bias_token"]).sum(axis=1)
    values = q + 0.5 * q.std() * verbosity
    want = scipy.special.erf((values[:, None] - values[None, :]) / (2 * 0.7 * q.std())).mean(axis=1)
    np.testing.assert_allclose(noisy, want, atol=1e-6)


# ------------------------------------------------------------ sampled means against the exact


@pytest.mark.parametrize("batch_size", [4, 16])
def test_the_mean_sampled_reinforce_gradient_is_1_minus_1_over_b_of_the_exact(batch_size):
    """E[(r − r̄)∇log π] = (1 − 1/B)∇E_π[J] for a batch of B, the entropy bonus adding 0; the exact
    gradient without the factor is rejected (the test has the power to see it)."""
    run, state, knobs = one_run({"n_judges": 2})
    sizes, variant = sizes_of({**knobs, "batch_size": batch_size}), variant_of(knobs)
    expected = flat(jax.jit(expected_policy_gradient)(state, run.condition))
    assert_null_holds_and_alternative_does_not(
        lambda key: flat(reinforce_gradient(state, run, key, variant, sizes)[0]),
        (1 - 1 / batch_size) * expected,
        expected,
    )


@pytest.mark.parametrize("kl_estimator", ["k1", "k3"])
def test_the_sampled_regularisers_converge_to_their_exact_limits(kl_estimator):
    """The entropy regulariser's term has REINFORCE's (1 − 1/B) (a batch-mean baseline); k1's and
    k3's have none: k1 → ∇KL(π‖π₀), k3 → ∇KL(π₀‖π), as the exact step takes them; the other
    estimator's limit is rejected."""
    run, state, knobs = one_run({"kl_penalty": 1.0, "kl_estimator": kl_estimator, "entropy_regulariser": 1.0})
    batch_size = 8
    sizes, variant = sizes_of({**knobs, "batch_size": batch_size}), variant_of(knobs)
    gradient = jax.jit(lambda condition: flat(expected_policy_gradient(state, condition)))
    without_kl = gradient(eqx.tree_at(lambda c: c.kl_penalty, run.condition, jnp.float32(0)))
    other_estimator = code("kl_estimator", "k3" if kl_estimator == "k1" else "k1")
    other = gradient(eqx.tree_at(lambda c: c.kl_estimator, run.condition, jnp.int32(other_estimator)))
    assert_null_holds_and_alternative_does_not(
        lambda key: flat(reinforce_gradient(state, run, key, variant, sizes)[0]),
        gradient(run.condition) - without_kl / batch_size,
        other - without_kl / batch_size,
        n_keys=65536,
    )


def test_the_mean_sampled_self_labelled_gradient_is_the_exact():
    """Pairs of fresh policy batches, each judge labelling them itself: no (1 − 1/B) here, the
    pairs are independent and nothing is subtracted."""
    _, state, _ = one_run()
    judge = first_row(state.judges)
    probs = jnp.exp(exact.policy_log_probs_tree(state.policy))
    assert float(probs.max()) > 30 / WORLD.n_sequences  # far from uniform
    batch_size = 4

    def sampled(key):
        tokens_a, tokens_b = fresh_pairs(state.policy, key, batch_size)
        return flat(eqx.filter_grad(lambda j: pair_loss(j, tokens_a, tokens_b)[0])(judge))

    expected = flat(jax.jit(lambda j: score_gradient_grads(j, lambda s: self_labelled_score_gradient(s, probs)))(judge))
    assert_null_holds_and_alternative_does_not(sampled, expected, (1 - 1 / batch_size) * expected)


@pytest.mark.parametrize(
    ("labeller", "imperfect"),
    [({}, False), ({"oracle_noise": 1.0}, True), ({"oracle_noise": 0.3, "oracle_bias": 1.0}, True)],
    ids=["q*", "noisy", "noisy and biased"],
)
def test_the_mean_sampled_oracle_pair_gradient_is_the_exact(labeller, imperfect):
    """Uniform pairs labelled by the q* labeller, its noise drawn per comparison: the mean gradient
    is the exact step's, over all pairs with the expected labels; with labels of q* itself (a
    perfect labeller) it is rejected, and for a perfect labeller the noisy one's limit is."""
    _, state, knobs = one_run(labeller)
    judge, condition = first_row(state.judges), first_row(condition_arrays([knobs]))
    n_pairs = 8

    def sampled(key):
        index_a, index_b = jax.random.randint(key, (2, n_pairs), 0, WORLD.n_sequences)
        pairs = labelled_pairs(WORLD, Q_STAR, condition, index_a, index_b, noise_key(key), imperfect)
        return flat(eqx.filter_grad(lambda j: pair_loss(j, *pairs)[0])(judge))

    @functools.partial(jax.jit, static_argnums=1)
    def exact_gradient(condition, imperfect: bool):
        label_sums = expected_label_sums(WORLD, Q_STAR, condition, imperfect)
        return flat(score_gradient_grads(judge, lambda s: oracle_score_gradient(s, label_sums)))

    expected = exact_gradient(condition, imperfect)
    if imperfect:
        alternative = exact_gradient(condition, False)
    else:
        alternative = exact_gradient(first_row(condition_arrays([{**knobs, "oracle_noise": 1.0}])), True)
    assert_null_holds_and_alternative_does_not(sampled, expected, alternative)


# ---------------------------------------------------------------------- the loop under exact

EXACT_GROUP = {  # one group of runs under exact, two judges each (the ensemble's code)
    "plain": {},
    "plain_bonus": {"entropy_bonus": 0.5},
    "anchored": {"anchor_fraction": 0.25, "oracle_noise": 1.0, "oracle_bias": 0.5, "judge_anchor": 1.0},
    "regularised": {"kl_penalty": 0.1, "kl_estimator": "k3", "entropy_regulariser": 0.05, "judge_update_every": 2},
    "held_out": {"meta_holdout_fraction": 0.05, "meta_update_every": 2, "meta_accuracy_threshold": 1.0},
}
UNION_FLAGS = ("n_oracle_pairs", "n_holdout", "imperfect_labeller", "judge_anchored", "policy_regularised")


@pytest.fixture(scope="module")
def exact_group(small):
    """The conditions as one group (their variant's flags and sizes the union of theirs), started at seed 0."""
    conditions = {name: {"gradient_estimator": "exact", "n_judges": 2, **knobs} for name, knobs in EXACT_GROUP.items()}
    resolved = engine.resolve(small(conditions, seeds=[0], steps_per_iter=3, n_iterations=1))
    variants = group_variants([resolved.variant(name) for name in conditions])
    variant = variants[0]._replace(**{flag: max(getattr(v, flag) for v in variants) for flag in UNION_FLAGS})
    rows = [resolved.conditions[name] for name in conditions]
    n = len(rows)
    runs = make_run_inputs(
        condition_arrays(rows),
        jnp.zeros(n, jnp.int32),
        make_judges(jax.random.PRNGKey(3), 2),
        jnp.tile(jnp.arange(2), (n, 1)),
    )
    return variant, resolved.sizes, runs


def per_run(tree) -> np.ndarray:
    """A batch of runs' arrays as (runs, parameters)."""
    leaves = jax.tree.leaves(tree)
    return np.concatenate([np.asarray(leaf).reshape(len(leaves[0]), -1) for leaf in leaves], axis=1)


@pytest.fixture(scope="module")
def one_iteration(exact_group):
    """gradient_estimator -> (the states at start, then after one outer iteration with the runs' seeds as
    they are, and with every seed moved by 1000 after start)."""
    variant, sizes, runs = exact_group
    found = {}
    for estimator in ("exact", "sampled"):
        batch = make_batch_run(variant._replace(gradient_estimator=estimator), sizes)
        start, advance = jax.jit(batch.start)(runs), jax.jit(batch.advance)
        moved = eqx.tree_at(lambda r: r.seed, runs, runs.seed + 1000)
        found[estimator] = (start, advance(start, runs, 0, 0), advance(start, moved, 0, 0))
    return found


def test_under_exact_a_runs_states_do_not_depend_on_its_loop_key(exact_group, one_iteration):
    """Policy, judges, optimisers, budgets: bit for bit the same whatever the loop key (the run's seed
    replaced after start); under `sampled` the same replacement moves every run."""
    variant = exact_group[0]
    assert variant.gradient_estimator == "exact" and variant.n_oracle_pairs and variant.n_holdout
    start, same, moved = one_iteration["exact"]
    for a, b in zip(jax.tree.leaves(same), jax.tree.leaves(moved), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not (per_run(same.policy) == per_run(start.policy)).all(axis=1).any()  # the iteration moved every run
    assert not (per_run(same.judges) == per_run(start.judges)).all(axis=1).any()
    _, same, moved = one_iteration["sampled"]
    assert not (per_run(same.policy) == per_run(moved.policy)).all(axis=1).any()


def test_the_entropy_bonus_changes_nothing_under_exact(one_iteration):
    """Its expected gradient is 0: the run with entropy_bonus 0.5 is the run with 0.01, bit for bit."""
    _, states, _ = one_iteration["exact"]
    names = list(EXACT_GROUP)
    plain, bonus = names.index("plain"), names.index("plain_bonus")
    for leaf in jax.tree.leaves(states):
        np.testing.assert_array_equal(leaf[plain], leaf[bonus])


# --------------------------------------------------------------- what exact refuses, and warns


def study_of(**condition) -> dict:
    return {"name": "exact", "seeds": [0], "conditions": {"c": {"gradient_estimator": "exact", **condition}}}


@pytest.mark.parametrize(
    ("condition", "words"),
    [
        ({"update_rule": "dpo"}, ["no mode for update_rule dpo", "best and worst"]),
        ({"meta_source": "judge", "meta_update_every": 10}, ["no mode for the meta-judge", "order statistic"]),
    ],
)
def test_mechanisms_without_an_exact_mode_are_refused_in_one_line(condition, words):
    with pytest.raises(engine.StudyError) as caught:
        engine.resolve(study_of(**condition))
    message = str(caught.value)
    assert message.startswith("study 'exact', condition 'c', field 'gradient_estimator': ") and "\n" not in message
    assert all(word in message for word in words), message


def test_what_exact_does_not_read_is_warned_about_and_the_rest_runs():
    warnings = engine.resolve(study_of(entropy_bonus=0.1)).warnings
    assert len(warnings) == 1 and "field 'entropy_bonus': has no effect" in warnings[0], warnings
    assert "gradient_estimator is exact" in warnings[0]
    assert engine.resolve(study_of(kl_penalty=0.1, judge_data="window", anchor_fraction=0.1)).warnings == ()


# ----------------------------------------------------------------------- pretrain_batch_size


def pretrained(batch_size: int, pretrain_batch_size: int):
    knobs = {**DEFAULTS, "batch_size": batch_size, "pretrain_batch_size": pretrain_batch_size}
    knobs |= {"judge_init_alignment": 0.5, "pretrain_check_every": 10}
    job = PretrainInputs(jnp.int32(0), jnp.int32(0), first_row(condition_arrays([knobs])))
    build = judge_model(knobs["judge_arch"], knobs["judge_hidden"], WORLD)
    result = jax.jit(pretrain_judge, static_argnums=(1, 2))(job, sizes_of(knobs), build)
    return result.steps, flat(result.judge)


def test_pretrain_batch_size_keeps_the_pretrained_judges_across_batch_sizes():
    """batch 16 with pretrain_batch_size 32 pretrains the judge batch 32 pretrains (0: batch_size)."""
    steps, judge = pretrained(32, 0)
    for other in (pretrained(16, 32), pretrained(32, 32)):
        assert other[0] == steps
        np.testing.assert_array_equal(other[1], judge)
    assert not np.array_equal(pretrained(16, 0)[1], judge)
