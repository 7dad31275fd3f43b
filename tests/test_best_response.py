"""policy_response `best_response` and the `best_response_kl` record (docs/mean_field.md §9): π* is the
maximiser of E_π[J] − β·KL(π‖π₀) + c·H(π); under best_response the policy never moves, nothing depends on
the loop key, and the judges take the exact loop's step against π*; a trained policy facing a frozen judge
closes in on π*; what has no closed form is refused."""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import engine
from engine.core import exact
from engine.core.models import Judge, make_judges
from engine.core.state import make_run_inputs
from engine.core.world import REFERENCE_WORLD as WORLD
from engine.core.world import World, run_q_star
from engine.knobs import DEFAULTS, condition_arrays
from engine.loop.batch import make_batch_run
from engine.mechanisms.best_response import best_response_log_probs
from engine.mechanisms.judge_steps import score_gradient_step, self_labelled_score_gradient


def first_row(tree):
    return jax.tree.map(lambda leaf: jnp.asarray(leaf[0]), tree)


def objective(probs, scores, initial_log_probs, beta, c):
    """E_π[J] − β·KL(π‖π₀) + c·H(π) in float64, 0·log 0 = 0."""
    log_p = np.log(np.where(probs > 0, probs, 1.0))
    return probs @ scores - beta * probs @ (log_p - initial_log_probs) - c * probs @ log_p


@pytest.mark.parametrize(("beta", "c"), [(0.1, 0.0), (0.3, 0.05)])
def test_the_best_response_maximises_the_regularised_objective(beta, c):
    """The code's π* is the float64 formula (β log π₀ + J)/(β + c) − logsumexp, and its objective beats
    every random perturbation of it and every random distribution on the simplex."""
    rng = np.random.default_rng(0)
    scores = rng.normal(size=WORLD.n_sequences)
    initial = np.log(rng.dirichlet(np.full(WORLD.n_sequences, 0.5)))
    condition = first_row(condition_arrays([{**DEFAULTS, "kl_penalty": beta, "entropy_exact": c}]))
    got = np.asarray(jax.jit(best_response_log_probs)(jnp.float32(scores), jnp.float32(initial), condition), np.float64)
    logits = (beta * initial + scores) / (beta + c)
    want = logits - np.logaddexp.reduce(logits)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5)

    best = np.exp(got - np.logaddexp.reduce(got))  # renormalised in float64
    value = objective(best, scores, initial, beta, c)
    for scale in (1e-2, 1e-1, 1.0):
        for _ in range(20):
            moved = got + scale * rng.normal(size=WORLD.n_sequences)
            assert objective(np.exp(moved - np.logaddexp.reduce(moved)), scores, initial, beta, c) < value
    for _ in range(20):
        other = rng.dirichlet(np.full(WORLD.n_sequences, 0.5))
        gap = value - objective(other, scores, initial, beta, c)
        assert gap > 0
        # Gibbs: the objective falls short of its maximum by exactly (β + c)·KL(π‖π*)
        np.testing.assert_allclose(gap, (beta + c) * other @ (np.log(other) - np.log(best)), rtol=1e-6)
    assert objective(np.exp(initial), scores, initial, beta, c) < value  # π₀ itself
    point = np.zeros(WORLD.n_sequences)
    point[np.argmax(scores)] = 1.0
    assert objective(point, scores, initial, beta, c) < value  # the judge's favourite alone


# ------------------------------------------------------------------------- the loop under best_response

RESPONDING = {  # one group: the policy is the best response, c = 0 and c > 0
    "plain": {"kl_penalty": 0.1},
    "entropic": {"kl_penalty": 0.3, "entropy_exact": 0.05, "kl_estimator": "k1"},
}


def responding_runs(small, world=WORLD, **base):
    """The RESPONDING conditions as one group at seeds 0, 1 in `world`, with untrained judges whose scores
    spread over about ±3 (head × 8), so π* is far from π₀; (variant, sizes, runs)."""
    conditions = {
        name: {"gradient_estimator": "exact", "policy_response": "best_response", **knobs}
        for name, knobs in RESPONDING.items()
    }
    study = small(
        conditions, seeds=[0], steps_per_iter=3, n_iterations=1, vocab=world.vocab, seq_len=world.seq_len, **base
    )
    resolved = engine.resolve(study)
    variants = {resolved.variant(name) for name in conditions}
    assert len(variants) == 1
    judges = make_judges(jax.random.PRNGKey(3), 1, functools.partial(Judge, world=world))
    judges = eqx.tree_at(lambda j: j.head.weight, judges, judges.head.weight * 8)
    rows = [resolved.conditions[name] for name in conditions]
    seeds = jnp.arange(len(rows), dtype=jnp.int32)
    runs = make_run_inputs(condition_arrays(rows), seeds, judges, jnp.zeros((len(rows), 1), int))
    return variants.pop(), resolved.sizes, runs


def leaves_equal(a, b) -> bool:
    """Every array leaf bit for bit the same (NaN where NaN)."""
    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    return all(np.array_equal(x, y, equal_nan=np.issubdtype(np.asarray(x).dtype, np.inexact)) for x, y in pairs)


def test_under_best_response_the_policy_never_moves_and_nothing_depends_on_the_loop_key(small):
    """One outer iteration: the policy and its optimiser are the start's bit for bit, the judges moved,
    and every leaf of the states is the same with the runs' seeds replaced after start."""
    variant, sizes, runs = responding_runs(small)
    batch = make_batch_run(variant, sizes)
    start = jax.jit(batch.start)(runs)
    advance = jax.jit(batch.advance)
    after = advance(start, runs, 0, 0)
    assert leaves_equal(after.policy, start.policy) and leaves_equal(after.policy_opt, start.policy_opt)
    for run in range(2):
        moved_judge = jax.tree.map(lambda a, b, r=run: np.array_equal(a[r], b[r]), after.judges, start.judges)
        assert not all(jax.tree.leaves(moved_judge)), run
    moved = eqx.tree_at(lambda r: r.seed, runs, runs.seed + 1000)
    assert leaves_equal(advance(start, moved, 0, 0), after)


@pytest.mark.parametrize("world", [WORLD, World(4, 3)], ids=str)
def test_the_judges_take_the_exact_self_labelled_step_against_the_best_response(small, world):
    """One inner step of each run equals one exact self-labelled step of its judge on pairs from
    π* of the judge before the step, built here from its parts; in the reference world and in 4³,
    whose 64 sequences are fewer than one tile of the pair sums."""
    variant, sizes, runs = responding_runs(small, world)
    batch = make_batch_run(variant, sizes)
    start = jax.jit(batch.start)(runs)
    assert start.initial_log_probs.shape == (2, world.n_sequences)
    q_stars = jax.vmap(lambda condition: run_q_star(world, condition))(runs.condition)
    after = jax.jit(batch.step)(start, runs, q_stars, 0, 0)

    @jax.jit
    def by_hand(state, condition):
        scores = exact.judge_scores_all(state.judges)
        probs = jnp.exp(best_response_log_probs(scores, state.initial_log_probs, condition))
        judge, opt = first_row(state.judges), first_row(state.judge_opt)
        return score_gradient_step(judge, opt, lambda s: self_labelled_score_gradient(s, probs))[0]

    for run in range(2):
        state, condition = (jax.tree.map(lambda leaf, r=run: leaf[r], tree) for tree in (start, runs.condition))
        want = by_hand(state, condition)
        got = jax.tree.map(lambda leaf, r=run: leaf[r, 0], after.judges)
        for a, b in zip(jax.tree.leaves(eqx.filter(got, eqx.is_array)), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
        assert not leaves_equal(eqx.filter(got, eqx.is_array), eqx.filter(first_row(state.judges), eqx.is_array))


def test_judge_data_accumulates_the_best_response(small):
    """Under judge_data accumulate the mixture gains π* of the judges at each step, not π₀."""
    variant, sizes, runs = responding_runs(small, judge_data="accumulate")
    assert variant.judge_data_slots == 1
    batch = make_batch_run(variant, sizes)
    start = jax.jit(batch.start)(runs)
    q_stars = jax.vmap(lambda condition: run_q_star(WORLD, condition))(runs.condition)
    after = jax.jit(batch.step)(start, runs, q_stars, 0, 0)
    response = jax.vmap(
        lambda judges, initial, condition: jnp.exp(
            best_response_log_probs(exact.judge_scores_all(judges), initial, condition)
        )
    )(start.judges, start.initial_log_probs, runs.condition)
    np.testing.assert_allclose(after.policy_sums[:, 0], response, rtol=1e-5, atol=1e-9)
    assert not np.allclose(response, np.exp(start.initial_log_probs), atol=1e-4)


# ---------------------------------------------------------------------------------- best_response_kl

RECORDED = {
    "trained_frozen": {"gradient_estimator": "exact", "kl_penalty": 0.1, "freeze_judge": True, "lr_policy": 3e-3},
    "best_response": {"gradient_estimator": "exact", "kl_penalty": 0.1, "policy_response": "best_response"},
    "forward_kl": {"gradient_estimator": "exact", "kl_penalty": 0.1, "kl_estimator": "k3"},
    "unregularised": {"gradient_estimator": "exact"},
    "sampled": {"kl_penalty": 0.1},
}


@pytest.fixture(scope="module")
def recorded():
    study = {
        "name": "recorded",
        "seeds": [0, 1],
        "base": {"steps_per_iter": 10, "n_iterations": 2, "record_every": 2, "judge_init_alignment": 0.5},
        "conditions": RECORDED,
    }
    return engine.run_study(study)


def test_a_trained_policy_closes_in_on_the_best_response_to_a_frozen_judge(recorded):
    """The frozen judge's π* is fixed: the exact policy's KL to it falls at every record (2 steps each)."""
    kl = recorded.best_response_kl.sel(condition="trained_frozen").transpose("seed", "step").values
    assert np.all(np.isfinite(kl)) and np.all(kl > 0)
    assert np.all(np.diff(kl, axis=1) < 0), kl


def test_best_response_kl_is_0_under_best_response_and_nan_without_the_closed_form(recorded):
    np.testing.assert_array_equal(recorded.best_response_kl.sel(condition="best_response"), 0.0)
    for condition in ("forward_kl", "unregularised", "sampled"):
        assert np.isnan(recorded.best_response_kl.sel(condition=condition)).all(), condition
    assert (recorded.judge_alignment.sel(condition="best_response").diff("step") != 0).any()


# ------------------------------------------------------------------------------- refusals and warnings


@pytest.mark.parametrize(
    ("knobs", "words"),
    [
        ({"kl_penalty": 0.1}, "needs gradient_estimator exact"),
        ({"gradient_estimator": "exact"}, "needs kl_penalty > 0"),
        ({"gradient_estimator": "exact", "kl_penalty": 0.1, "kl_estimator": "k3"}, "needs kl_estimator exact or k1"),
    ],
)
def test_best_response_without_its_closed_form_is_refused_in_one_line(knobs, words):
    study = {"name": "r", "seeds": [0], "conditions": {"c": {"policy_response": "best_response", **knobs}}}
    with pytest.raises(engine.StudyError) as caught:
        engine.resolve(study)
    message = str(caught.value)
    assert message.startswith("study 'r', condition 'c', field 'policy_response': ") and "\n" not in message
    assert words in message, message


def test_lr_policy_has_no_effect_under_best_response():
    knobs = {"policy_response": "best_response", "gradient_estimator": "exact", "kl_penalty": 0.1, "lr_policy": 1e-3}
    warnings = engine.resolve({"name": "r", "seeds": [0], "conditions": {"c": knobs}}).warnings
    assert len(warnings) == 1 and "field 'lr_policy': has no effect" in warnings[0], warnings
    assert "policy_response is best_response" in warnings[0]
