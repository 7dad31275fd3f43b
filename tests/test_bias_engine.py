"""In the engine: a planted bias in pretraining, the bias records of every iteration,
and the meta-judge without ground truth (meta_source `judge`). The pure pieces are tested in
tests/test_bias.py; here, what the wiring adds."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import engine
from engine.core.exact import judge_scores_all, policy_log_probs_all, spearman
from engine.core.models import ensemble_scores, make_judges
from engine.core.optim import params
from engine.core.state import init_run, make_run_inputs
from engine.core.world import REFERENCE_WORLD as WORLD
from engine.core.world import run_q_star, verbosity
from engine.host.plan import make_plan
from engine.host.program import make_program
from engine.knobs import condition_arrays, sizes_of
from engine.loop.diagnostics import BIAS_METRICS, CORE_METRICS, META_JUDGE_METRICS
from engine.loop.step import make_inner_step
from engine.mechanisms import preference
from engine.mechanisms.bias import bias_cost, judge_fit, policy_verbosity
from engine.mechanisms.judge_steps import pull_to_pretrained
from engine.mechanisms.meta_judge import META_JUDGE_MEMBER, meta_judge_update
from engine.mechanisms.policy_rules import dpo_pairs

META = {"meta_source": "judge", "meta_update_every": 2, "meta_pairs": 8}
CONDITIONS = {
    "baseline": {},
    # b = 0 with another filler token: pretrained separately (bias_token changes pretraining),
    # through biased_target's `+ 0.0` path, and must still equal the baseline bit for bit
    "b0_token5": {"planted_bias": 0.0, "bias_token": 5},
    "biased": {"planted_bias": 1.0},
    "meta_frozen": {**META, "planted_bias": 1.0},
    "meta_learns": {**META, "planted_bias": 1.0, "meta_learns": True},
}
# The stop rule of the reference (0.7): the small tests' 0.5 leaves a judge too unfitted to
# show its planted bias reliably.
BASE = {"judge_init_alignment": 0.7}


@pytest.fixture(scope="module")
def study(small):
    return small(CONDITIONS, **BASE)


@pytest.fixture(scope="module")
def ds(study):
    return engine.run_study(study)


def test_records_are_dataset_variables(ds):
    for metric in BIAS_METRICS + META_JUDGE_METRICS:
        assert ds[metric].dims == ("condition", "seed", "iteration")
        assert ds[metric].attrs["units"]
    assert ds.planted_bias.sel(condition="biased") == 1.0 and ds.bias_token.sel(condition="b0_token5") == 5
    assert list(ds.meta_source.values) == ["holdout"] * 3 + ["judge"] * 2


def test_zero_planted_bias_is_bit_identical_to_no_bias(ds, study):
    plan = make_plan(engine.resolve(study), [0], n_devices=1)
    rows = {c: None for c in CONDITIONS}
    for group in plan.groups:
        for c, position in zip(group.condition_index, group.position, strict=True):
            rows[list(CONDITIONS)[c]] = int(group.inputs.pretrain_index[position, 0])
    assert rows["b0_token5"] != rows["baseline"]  # its own pretraining job: the test is not trivial
    for metric in CORE_METRICS + ("pretrain_steps", "pretrain_alignment"):
        np.testing.assert_array_equal(ds[metric].sel(condition="b0_token5"), ds[metric].sel(condition="baseline"))


def test_a_planted_bias_shows_in_the_pretrained_judge(ds):
    start = ds.isel(iteration=0)
    biased, unbiased = start.judge_bias.sel(condition="biased"), start.judge_bias.sel(condition="baseline")
    assert (biased > 0.5).all() and (biased > unbiased + 0.5).all()
    assert (start.judge_quality_weight > 0).all()
    assert ds.pretrain_reached.all()


def take_rows(table, row: int):
    """Row `row` of a stacked table of judges, as a stack of one."""
    return jax.tree.map(lambda leaf: leaf[row : row + 1], table)


def test_records_equal_engine_bias_of_the_runs_own_judge_and_policy(ds, study):
    """Iteration 0 recomputed outside the program: the pretrained judges (the study program's own
    pretraining, from the compilation cache), the initial policy, and the meta-judge from its own tag."""
    resolved = engine.resolve(study)
    plan = make_plan(resolved, resolved.seeds, n_devices=len(jax.devices()))
    program = make_program(plan.variants, resolved.sizes, jax.devices(), plan.sub_batch)
    (pretrained,), (table,) = program.pretrain(plan.pretrain), plan.pretrain  # one judge width: one table
    assert META_JUDGE_MEMBER in table.member
    start = ds.isel(iteration=0)
    for group in plan.groups:
        for c, s, position in zip(group.condition_index, group.seed_index, group.position, strict=True):
            name, run = resolved.condition_names[c], start.isel(condition=c, seed=s)
            knobs = resolved.conditions[name]
            q, f = (
                run_q_star(WORLD, jax.tree.map(lambda leaf: jnp.asarray(leaf[0]), condition_arrays([knobs]))),
                verbosity(WORLD, knobs["bias_token"]),
            )
            row = int(group.inputs.pretrain_index[position, 0])
            judge = take_rows(pretrained.judge, row)
            assert run.pretrain_steps.item() >= int(pretrained.steps[row])  # the same pretraining
            fit = judge_fit(judge_scores_all(judge), q, f)
            np.testing.assert_allclose(run.judge_bias, fit.bias, rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(run.judge_quality_weight, fit.quality_weight, rtol=1e-4, atol=1e-5)
            condition = jax.tree.map(lambda leaf: jnp.asarray(leaf[0]), condition_arrays([knobs]))
            inputs = make_run_inputs(condition, jnp.int32(resolved.seeds[s]), judge, jnp.zeros(1, jnp.int32))
            probs = jnp.exp(policy_log_probs_all(init_run(inputs).policy))
            np.testing.assert_allclose(run.policy_verbosity, policy_verbosity(probs, f), rtol=1e-5)
            np.testing.assert_allclose(run.bias_cost, bias_cost(WORLD, probs, q, f), rtol=1e-4, atol=1e-6)
            if group.variant.meta_judge:
                meta_row = int(group.inputs.meta_pretrain_index[position])
                assert int(table.member[meta_row]) == META_JUDGE_MEMBER
                meta = take_rows(pretrained.judge, meta_row)
                alignment = spearman(judge_scores_all(meta), q)
                np.testing.assert_allclose(run.meta_judge_alignment, alignment, atol=1e-6)
                assert run.meta_judge_alignment != run.judge_alignment  # a judge of its own
            else:
                assert np.isnan(run.meta_judge_alignment)


def test_meta_judge_records(ds):
    frozen = ds.meta_judge_alignment.sel(condition="meta_frozen").values
    assert np.isfinite(frozen).all() and (frozen == frozen[:, :1]).all()  # never trained
    learns = ds.meta_judge_alignment.sel(condition="meta_learns").values
    np.testing.assert_array_equal(learns[:, 0], frozen[:, 0])  # the same pretrained meta-judge
    assert (learns[:, -1] != frozen[:, -1]).all()  # then it trains on its own labels
    agreement = ds.meta_agreement.sel(condition=["meta_frozen", "meta_learns"]).values
    assert np.isnan(agreement[..., 0]).all()  # no meta step before iteration 1
    assert ((agreement[..., 1:] >= 0) & (agreement[..., 1:] <= 1)).all()
    others = ds.sel(condition=["baseline", "b0_token5", "biased"])
    assert others.meta_judge_alignment.isnull().all() and others.meta_agreement.isnull().all()
    assert ds.meta_judge_accuracy.sel(condition=["meta_frozen", "meta_learns"]).isnull().all()  # no holdout
    # the meta step moves the judge: same pretraining and policy start as `biased`, other judge path
    alignment = ds.judge_alignment
    assert not np.array_equal(alignment.sel(condition="meta_frozen"), alignment.sel(condition="biased"))


# ------------------------------------------------------------- one meta step, unit by unit


def one_run(small, meta_row: int, **knobs):
    """A meta-judge run built by hand: judge row 0 of two untrained judges, meta-judge `meta_row`."""
    resolved = engine.resolve(small({"m": {**META, **knobs}}, seeds=[0]))
    condition = jax.tree.map(lambda leaf: jnp.asarray(leaf[0]), condition_arrays([resolved.conditions["m"]]))
    table = make_judges(jax.random.PRNGKey(3), 2)
    run = make_run_inputs(condition, jnp.int32(0), table, jnp.zeros(1, jnp.int32), jnp.int32(meta_row))
    return run, init_run(run), sizes_of(resolved.conditions["m"])


def meta_step(state, run, sizes, due=True):
    step = jax.jit(meta_judge_update, static_argnums=(4, 5))
    return step(state, run, jax.random.PRNGKey(7), jnp.bool_(due), sizes.batch_size, META["meta_pairs"])


def same(a, b) -> bool:
    """Bit-equal pytrees (NaN equal to NaN: RunState.meta_accuracy is NaN without a holdout)."""
    leaves = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    return all(np.array_equal(x, y, equal_nan=np.issubdtype(np.asarray(x).dtype, np.floating)) for x, y in leaves)


def test_a_meta_judge_equal_to_the_judge_agrees_on_every_pair(small):
    run, state, sizes = one_run(small, meta_row=0)
    after = meta_step(state, run, sizes)
    assert float(after.meta.agreement_sum) == 1.0 and int(after.meta.steps) == 1
    assert not same(eqx.filter(after.judges, eqx.is_array), eqx.filter(state.judges, eqx.is_array))  # it stepped
    other_run, other_state, _ = one_run(small, meta_row=1)
    assert float(meta_step(other_state, other_run, sizes).meta.agreement_sum) < 1.0


def test_a_meta_step_is_skipped_when_not_due_or_frozen(small):
    run, state, sizes = one_run(small, meta_row=1)
    assert same(meta_step(state, run, sizes, due=False), state)
    run, state, sizes = one_run(small, meta_row=1, freeze_judge=True)
    after = meta_step(state, run, sizes)
    assert same(after.judges, state.judges) and int(after.meta.steps) == 1  # judged, recorded, not trained


def test_the_meta_step_never_sees_q_star(small):
    """The only way to q* from a run is its condition (`run_q_star`): a different
    q* leaves the meta step unchanged bit for bit."""
    run, state, sizes = one_run(small, meta_row=1)
    other_world = eqx.tree_at(lambda r: r.condition.transition_alpha, run, jnp.float32(1.0))
    assert not np.array_equal(run_q_star(WORLD, run.condition), run_q_star(WORLD, other_world.condition))
    assert same(meta_step(state, run, sizes), meta_step(state, other_world, sizes))


def test_meta_knobs_are_checked(small):
    with pytest.raises(engine.StudyError, match="'meta_pairs': .* must be <= batch_size"):
        engine.resolve(small({"m": {**META, "meta_pairs": 33}}))  # small studies: batch 32
    resolved = engine.resolve(small({"m": {**META, "meta_holdout_fraction": 0.0}}))  # no holdout needed
    variant = resolved.variant("m")
    assert variant.meta_judge and variant.n_meta_pairs == 8 and variant.n_holdout == 0
    off = engine.resolve(small({"m": {**META, "meta_update_every": 0}})).variant("m")
    assert not off.meta_judge and off.n_meta_pairs == 0
    holdout = engine.resolve(small({"m": {"meta_holdout_fraction": 0.05, "meta_update_every": 2}})).variant("m")
    assert not holdout.meta_judge and holdout.n_meta_pairs == 0 and holdout.n_holdout == 204


# ------------------------------------------------------------- length control in the dpo rule


def test_dpo_pairs_use_length_control_with_the_runs_filler_token_and_rho(small):
    """A dpo run with length_control ρ picks `length_controlled_pairs` of its own batch, with
    verbosity = its bias_token count; ρ = 0 compiles the plain best-vs-worst code."""
    knobs = {"update_rule": "dpo", "length_control": 0.4, "bias_token": 5}
    resolved = engine.resolve(small({"lc": knobs, "plain": {"update_rule": "dpo"}}, seeds=[0]))
    assert resolved.variant("lc").length_controlled and not resolved.variant("plain").length_controlled
    condition = jax.tree.map(lambda leaf: jnp.asarray(leaf[0]), condition_arrays([resolved.conditions["lc"]]))
    run = make_run_inputs(condition, jnp.int32(0), make_judges(jax.random.PRNGKey(3), 1), jnp.zeros(1, jnp.int32))
    state, sizes, variant = init_run(run), sizes_of(resolved.conditions["lc"]), resolved.variant("lc")
    # a batch where filler-token counts vary inside every group
    tokens = jax.random.randint(jax.random.PRNGKey(1), (sizes.batch_size, 4), 0, 8).at[::3, :2].set(5)
    keys = {"initial": jax.random.PRNGKey(4), "lookahead": jax.random.PRNGKey(5)}
    pairs = dpo_pairs(state, run, keys, tokens, variant, sizes)
    scores = ensemble_scores(state.judges, tokens).mean(axis=0)
    wordiness = jnp.sum(tokens == 5, axis=1)
    expected = preference.length_controlled_pairs(scores, wordiness, variant.n_candidates, 0.4)
    np.testing.assert_array_equal(pairs.chosen, tokens[expected.chosen])
    np.testing.assert_array_equal(pairs.rejected, tokens[expected.rejected])
    plain = preference.best_worst_pairs(scores, variant.n_candidates)
    assert not np.array_equal(expected.chosen, plain.chosen)  # the test can tell the two apart
    with pytest.raises(engine.StudyError, match="length_control"):
        engine.resolve(small({"x": {"update_rule": "dpo", "length_control": 1.5}}))


# ------------------------------------------------------------- judge_anchor on the meta-judge's labelled steps


def distance_to(judges, pretrained) -> float:
    return float(
        sum(jnp.sum((a - b) ** 2) for a, b in zip(jax.tree.leaves(params(judges)), jax.tree.leaves(params(pretrained))))
    )


def test_the_meta_step_pulls_the_judge_to_its_pretrained_weights(small):
    """judge_anchor is in every judge step's loss, the meta-judge-labelled one too: with a strong pull
    the meta step ends nearer the pretrained judge than without it."""
    run, state, sizes = one_run(small, meta_row=1, judge_anchor=1e3)
    state = meta_step(state, run, sizes)  # away from the pretrained weights, where the pull has a gradient
    variant = engine.resolve(small({"m": {**META, "judge_anchor": 1e3}}, seeds=[0])).variant("m")
    pull = pull_to_pretrained(run, variant)
    step = jax.jit(meta_judge_update, static_argnums=(4, 5))
    key, due = jax.random.PRNGKey(8), jnp.bool_(True)
    pulled = step(state, run, key, due, sizes.batch_size, META["meta_pairs"], pull)
    free = step(state, run, key, due, sizes.batch_size, META["meta_pairs"])
    before = distance_to(state.judges, run.pretrained)
    assert distance_to(pulled.judges, run.pretrained) < before < distance_to(free.judges, run.pretrained)
    assert int(pulled.meta.steps) == int(free.meta.steps) == 2


def test_the_inner_step_hands_the_pull_to_the_meta_step(small):
    """Two runs of one variant (meta-judge, judge anchored) that differ only in judge_anchor (0 and 1e3),
    whose only judge step is the meta step (judge_update_every beyond the iteration): one inner step
    leaves their judges different, nearer the pretrained ones where the pull is on."""
    knobs = {**META, "meta_update_every": 1, "judge_update_every": 50}
    resolved = engine.resolve(small({"a0": {**knobs, "judge_anchor": 0.0}, "a1": {**knobs, "judge_anchor": 1e3}}))
    variant, sizes = resolved.variant("a1"), resolved.sizes
    assert variant.meta_judge and variant.judge_anchored
    variant = variant._replace(n_oracle_pairs=0)
    rows = [resolved.conditions["a0"], resolved.conditions["a1"]]
    table = make_judges(jax.random.PRNGKey(3), 3)
    runs = make_run_inputs(
        condition_arrays(rows), jnp.zeros(2, jnp.int32), table, jnp.zeros((2, 1), jnp.int32), jnp.full(2, 2, jnp.int32)
    )
    states = jax.vmap(init_run)(runs)
    moved = jax.tree.map(lambda leaf: jnp.stack([leaf[1:2], leaf[1:2]]), table)  # not the pretrained judge
    states = eqx.tree_at(lambda s: s.judges, states, moved)
    q_stars = jax.vmap(lambda condition: run_q_star(WORLD, condition))(runs.condition)
    after = jax.jit(make_inner_step(variant, sizes, None))(states, runs, q_stars, 0, 0)
    free, pulled = (jax.tree.map(lambda leaf, i=i: leaf[i], after.judges) for i in (0, 1))
    pretrained = jax.tree.map(lambda leaf: leaf[0], runs.pretrained)
    assert distance_to(pulled, pretrained) < distance_to(free, pretrained)
