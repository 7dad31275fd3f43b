"""Model sizes (`policy_hidden`, `judge_hidden`) and the MLP judge (`judge_arch` `mlp`): parameter
counts as the architecture says, every model of a run at its size, judges of different models
pretrained apart, pretraining flagged where it misses its target, and every mechanism running with
other models than the reference's. The GRUs' batched and prefix-tree passes against their
one-sequence definitions at several widths are in tests/test_models.py and tests/test_exact.py
(parametrised over width); the MLP judge's are here."""

import functools
from pathlib import Path

import equinox as eqx
import jax
import numpy as np
import pytest

import engine
from analysis.grid import find_grid
from analysis.report import write_all
from engine.cli.main import summary_lines
from engine.core.models import EMBED, Judge, MLPJudge, Policy, judge_model, parameter_count, reference_init
from engine.core.world import REFERENCE_WORLD as WORLD
from engine.core.world import all_sequences
from engine.host.plan import make_plan
from engine.host.program import make_program
from engine.loop.diagnostics import CORE_METRICS

VOCAB, SEQ_LEN = WORLD

# pretraining runs at most this many steps (a multiple of the default check every 50 steps)
PRETRAIN_BUDGET = 500
WIDTHS_STUDY = {
    "reference": {},
    "narrow": {"policy_hidden": 8, "judge_hidden": 8},
    # the same width as `narrow` (one group, one pretraining table), a target no width-8 judge reaches
    "narrow_missed": {"policy_hidden": 8, "judge_hidden": 8, "judge_init_alignment": 0.99},
    "wide_judge": {"judge_hidden": 128},
    "mlp_judge": {"judge_arch": "mlp"},
}
# Every mechanism, each at widths other than the reference's.
MECHANISMS_STUDY = {
    "dpo_temporal": {
        "policy_hidden": 8,
        "judge_hidden": 16,
        "update_rule": "dpo",
        "anchored_rejection": True,
        "future_chosen": True,
        "length_control": 0.4,
        "kl_penalty": 0.1,
    },
    "ensemble_reset_anchor": {
        "policy_hidden": 64,
        "judge_arch": "mlp",
        "judge_hidden": 8,
        "n_judges": 2,
        "reset_every": 1,
        "anchor_fraction": 0.1,
        "judge_anchor": 0.5,
        "entropy_exact": 0.1,
        "judge_data": "window",
        "judge_data_window": 2,
    },
    "meta_judge_biased": {
        "policy_hidden": 16,
        "judge_arch": "mlp",
        "judge_hidden": 64,
        "meta_source": "judge",
        "meta_update_every": 2,
        "meta_pairs": 8,
        "meta_learns": True,
        "planted_bias": 1.0,
    },
    "holdout_grounded": {
        "policy_hidden": 128,
        "judge_hidden": 8,
        "meta_holdout_fraction": 0.05,
        "meta_update_every": 2,
        "anchor_fraction": 0.1,
        "oracle_noise": 0.5,
        "oracle_budget": 250,
        "kl_penalty": 0.1,
        "kl_estimator": "k3",
        "entropy_regulariser": 0.1,
    },
}


def architecture_parameters(model: type, hidden: int) -> int:
    """The count the architecture gives. GRU models: the embedding, the GRU (three gates' input and
    recurrent weights, the input biases and the new gate's recurrent bias) and the head; the MLP
    judge: its layer over the one-hot sequence and its head."""
    if model is MLPJudge:
        return SEQ_LEN * VOCAB * hidden + hidden + hidden + 1
    gru = 3 * (EMBED * hidden + hidden) + 3 * hidden * hidden + hidden
    if model is Policy:
        return (VOCAB + 1) * EMBED + gru + hidden * VOCAB + VOCAB
    return VOCAB * EMBED + gru + hidden + 1


def n_params(module) -> int:
    return sum(leaf.size for leaf in jax.tree.leaves(eqx.filter(module, eqx.is_array)))


@pytest.mark.parametrize("hidden", (2, 8, 32, 128, 512))
@pytest.mark.parametrize("model", (Policy, Judge, MLPJudge))
def test_parameter_counts_follow_the_architecture(model, hidden):
    built = model(key=jax.random.PRNGKey(0), hidden=hidden)
    assert (built.layer.out_features if model is MLPJudge else built.cell.hidden_size) == hidden
    expected = architecture_parameters(model, hidden)
    assert n_params(built) == parameter_count(functools.partial(model, hidden=hidden)) == expected


@pytest.mark.parametrize("hidden", (8, 128))
def test_the_reference_init_draws_orthogonal_recurrent_blocks_at_every_width(hidden):
    key = jax.random.PRNGKey(4)
    judge = reference_init(Judge(key=key, hidden=hidden), key=key)
    blocks = np.asarray(judge.cell.weight_hh, np.float64).reshape(3, hidden, hidden)
    for block in blocks:
        np.testing.assert_allclose(block @ block.T, np.eye(hidden), atol=1e-5)
    assert judge.head.weight.shape == (1, hidden) and not np.any(judge.head.bias)


@pytest.mark.parametrize("hidden", (8, 128))
def test_the_mlp_judges_batched_scores_equal_its_definition_and_brute_force(hidden):
    """`scores` gathers W's columns; `__call__` multiplies the one-hot vector; brute force is the
    same network in float64 NumPy over all 4096 one-hot sequences."""
    judge = MLPJudge(key=jax.random.PRNGKey(hidden), hidden=hidden)
    everything = all_sequences(WORLD)
    one_hot = np.eye(VOCAB)[everything].reshape(len(everything), SEQ_LEN * VOCAB)
    weight, bias = (np.asarray(a, np.float64) for a in (judge.layer.weight, judge.layer.bias))
    head, head_bias = (np.asarray(a, np.float64) for a in (judge.head.weight[0], judge.head.bias[0]))
    brute = np.tanh(one_hot @ weight.T + bias) @ head + head_bias
    np.testing.assert_allclose(judge.all_scores(), brute, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jax.vmap(judge)(everything), brute, rtol=1e-5, atol=1e-6)
    for n in (1, 7, 700):
        index = np.random.default_rng(n).integers(0, len(everything), n)
        np.testing.assert_allclose(judge.scores(everything[index]), brute[index], rtol=1e-5, atol=1e-6)
    assert np.std(brute) > 0.05  # the scores differ: the order of the 4096 is really tested


def test_the_mlp_judges_reference_init_is_flax_dense():
    """Flax's `nn.Dense` defaults: LeCun normal kernels (truncated at ±2 σ of the underlying normal,
    std 1/√fan-in), zero biases."""
    key = jax.random.PRNGKey(5)
    judge = reference_init(MLPJudge(key=key, hidden=256), key=key)
    assert not np.any(judge.layer.bias) and not np.any(judge.head.bias)
    for kernel, fan_in in ((judge.layer.weight, SEQ_LEN * VOCAB), (judge.head.weight, 256)):
        kernel = np.asarray(kernel, np.float64)
        assert abs(kernel.std() * np.sqrt(fan_in) - 1) < 0.1
        assert np.abs(kernel).max() <= 2 / np.sqrt(fan_in) / 0.87962566 * (1 + 1e-6)


@pytest.mark.parametrize(
    "value, message",
    [(1, "must be >= 2, got 1"), (1024, "must be <= 512, got 1024"), (8.0, "expected an integer, got 8.0 (float)")],
)
def test_widths_out_of_range_are_refused_in_one_line(small, value, message):
    for knob in ("policy_hidden", "judge_hidden"):
        with pytest.raises(engine.StudyError) as caught:
            engine.resolve(small({"c": {knob: value}}))
        assert str(caught.value) == f"study 'small', condition 'c', field {knob!r}: {message}"


def test_the_score_grid_bound_follows_the_judge_width(small):
    """A judge of width H scores at most (H + 1)·10⁶ in size before its run is flagged diverged:
    a dpo score grid beyond twice that is refused for that width only."""
    grid = 2 * (8 + 1) * 1e6 * 1.5
    with pytest.raises(engine.StudyError, match=r"field 'score_grid'.*judge_hidden 8 \+ 1"):
        engine.resolve(small({"c": {"update_rule": "dpo", "score_grid": grid, "judge_hidden": 8}}))
    resolved = engine.resolve(small({"c": {"update_rule": "dpo", "score_grid": grid}}))  # width 32: reachable
    assert any("field 'score_grid'" in warning for warning in resolved.warnings)


def test_judges_of_different_widths_are_pretrained_in_tables_of_their_own(small):
    resolved = engine.resolve(small(WIDTHS_STUDY))
    plan = make_plan(resolved, resolved.seeds, n_devices=2)
    models = (("gru", 32), ("gru", 8), ("gru", 128), ("mlp", 32))
    assert plan.judge_models == models and len(plan.pretrain) == 4
    groups = {(group.variant.judge_arch, group.variant.judge_hidden): group for group in plan.groups}
    assert len(plan.groups) == 4 and set(groups) == set(models)  # narrow and narrow_missed: one group
    # per table: each seed's judge of each pretraining setting once (padded to whole sub-batches)
    for model, table in zip(plan.judge_models, plan.pretrain, strict=True):
        rows = groups[model].inputs.pretrain_index
        assert rows.max() < len(table.seed)
        np.testing.assert_array_equal(table.seed[rows[:, 0]], groups[model].inputs.seed)
    narrow = groups[("gru", 8)].inputs.pretrain_index
    assert len(np.unique(narrow)) == 4  # two targets × two seeds: four width-8 judges


@pytest.fixture(scope="module")
def widths_ds(small):
    return engine.run_study(small(WIDTHS_STUDY, pretrain_max_steps=PRETRAIN_BUDGET))


def test_the_dataset_records_each_conditions_parameter_counts(widths_ds):
    judges = {"gru": Judge, "mlp": MLPJudge}
    for variable in ("policy_parameters", "judge_parameters"):
        assert widths_ds[variable].dims == ("condition",) and widths_ds[variable].attrs["units"] == "parameters"
    for condition in widths_ds.condition.values:
        knobs = widths_ds.sel(condition=condition)
        policy = architecture_parameters(Policy, int(knobs.policy_hidden))
        judge = architecture_parameters(judges[str(knobs.judge_arch.values)], int(knobs.judge_hidden))
        assert (knobs.policy_parameters, knobs.judge_parameters) == (policy, judge), condition
    assert widths_ds.policy_parameters.sel(condition="reference") == 5144
    assert widths_ds.judge_parameters.sel(condition="wide_judge") == 56065
    assert widths_ds.judge_parameters.sel(condition="mlp_judge") == 34 * 32 + 1


def test_every_width_runs_and_pretraining_reaches_its_target_or_is_flagged(widths_ds):
    assert widths_ds.diverged.sum() == 0
    for metric in CORE_METRICS:
        assert np.isfinite(widths_ds[metric]).all(), metric
    reached, alignment = widths_ds.pretrain_reached, widths_ds.pretrain_alignment
    np.testing.assert_array_equal(reached, alignment >= widths_ds.judge_init_alignment)
    # missing the target means the whole budget was spent; reaching it, stopping at the first check past it
    assert (widths_ds.pretrain_steps.where(~reached) == PRETRAIN_BUDGET).sum() == (~reached).sum()
    assert reached.sel(condition="narrow").all() and not reached.sel(condition="narrow_missed").any()
    flagged = next(line for line in summary_lines(widths_ds) if line.startswith("runs whose judge pretraining"))
    assert flagged.endswith(": 2 narrow_missed/seed 0, narrow_missed/seed 1")


def test_a_reference_condition_does_not_depend_on_the_other_widths_of_its_study(widths_ds, small):
    alone = engine.run_study(small({"reference": WIDTHS_STUDY["reference"]}, pretrain_max_steps=PRETRAIN_BUDGET))
    for name, values in alone.data_vars.items():
        np.testing.assert_array_equal(widths_ds[name].sel(condition="reference"), values.sel(condition="reference"))


def test_every_model_of_a_run_has_its_width(small):
    """Shapes only (traced, not compiled): the policy, its Adam moments, the judges, their pretrained
    copies and the meta-judge of every group of the mechanisms study, each of its architecture."""
    resolved = engine.resolve(small(MECHANISMS_STUDY))
    plan = make_plan(resolved, resolved.seeds, n_devices=len(jax.devices()))
    program = make_program(plan.variants, resolved.sizes, jax.devices(), plan.sub_batch)
    pretrained = jax.eval_shape(program.pretrain, plan.pretrain)
    started = jax.eval_shape(program.start, tuple(table.judge for table in pretrained), plan.program_inputs()[1])

    def size(model) -> int:
        return sum(leaf.size for leaf in jax.tree.leaves(model))

    for variant, runs, states in zip(plan.variants, started.runs, started.states, strict=True):
        policy, judge, positions = variant.policy_hidden, variant.judge_hidden, len(runs.seed)
        judge_class = judge_model(variant.judge_arch, judge, WORLD).func
        assert states.policy.cell.weight_hh.shape[1:] == (3 * policy, policy)
        assert size(states.policy) == positions * architecture_parameters(Policy, policy)
        shapes = {leaf.shape for leaf in jax.tree.leaves(states.policy)}
        assert shapes <= {leaf.shape for leaf in jax.tree.leaves(states.policy_opt)}  # Adam's moments
        for judges in (states.judges, runs.pretrained):
            assert isinstance(judges, judge_class)
            assert size(judges) == positions * variant.n_judges * architecture_parameters(judge_class, judge)
        if variant.meta_judge:
            for meta in (states.meta.judge, runs.meta_pretrained):
                assert isinstance(meta, judge_class)
                assert size(meta) == positions * architecture_parameters(judge_class, judge)
    assert {variant.judge_arch for variant in plan.variants} == {"gru", "mlp"}


@pytest.fixture(scope="module")
def mechanisms_ds(small):
    return engine.run_study(small(MECHANISMS_STUDY, record_every=2, save_distributions="final"))


def test_every_mechanism_runs_at_other_widths(mechanisms_ds):
    ds = mechanisms_ds
    assert ds.diverged.sum() == 0
    for metric in CORE_METRICS + ("kl_to_initial",):
        assert np.isfinite(ds[metric]).all(), metric
    np.testing.assert_allclose(ds.policy_probability.sum("sequence"), 1.0, atol=1e-5)
    final = ds.isel(step=-1)
    np.testing.assert_allclose(
        (ds.policy_probability * ds.judge_score).sum("sequence"), final.judge_perceived_quality, rtol=1e-4, atol=1e-5
    )
    assert np.isfinite(ds.meta_judge_alignment.sel(condition="meta_judge_biased")).all()
    assert np.isfinite(ds.train_pair_gap_judge.sel(condition="dpo_temporal").isel(step=-1)).all()
    # the policies moved from π₀, at every width
    assert (ds.kl_to_initial.isel(step=-1) > 0).all()


def test_a_grid_over_a_width_is_found_and_the_figures_drawn(widths_ds, tmp_path):
    """The parameter counts are variables, not coordinates, so a width is the only coordinate that
    varies with it and a grid over it does not tie with its count; the saved file draws every figure."""
    two_widths = widths_ds.sel(condition=["reference", "wide_judge"])
    assert find_grid(two_widths).knobs == ("judge_hidden",)
    path = engine.save(widths_ds, tmp_path / "widths.nc")
    loaded = engine.load(path)
    np.testing.assert_array_equal(loaded.judge_parameters, widths_ds.judge_parameters)
    written = write_all(loaded, tmp_path / "figures", "widths", baseline="reference")
    assert written and all(Path(p).stat().st_size > 0 for p in written)
