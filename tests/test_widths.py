"""Model widths (`policy_hidden`, `judge_hidden`): parameter counts as the architecture says, every
model of a run at its width, judges of different widths pretrained apart, pretraining flagged where
it misses its target, and every mechanism running at other widths than the reference's 32. The
batched and prefix-tree passes against the one-sequence definitions at several widths are in
tests/test_models.py and tests/test_exact.py (parametrised over width)."""

import functools

import equinox as eqx
import jax
import numpy as np
import pytest

import engine
from engine.cli.main import summary_lines
from engine.core.models import EMBED, Judge, Policy, parameter_count, reference_init
from engine.core.world import VOCAB
from engine.host.plan import make_plan
from engine.host.program import make_program
from engine.loop.diagnostics import CORE_METRICS

# pretraining runs at most this many steps (a multiple of the default check every 50 steps)
PRETRAIN_BUDGET = 500
WIDTHS_STUDY = {
    "reference": {},
    "narrow": {"policy_hidden": 8, "judge_hidden": 8},
    # the same width as `narrow` (one group, one pretraining table), a target no width-8 judge reaches
    "narrow_missed": {"policy_hidden": 8, "judge_hidden": 8, "judge_init_alignment": 0.99},
    "wide_judge": {"judge_hidden": 128},
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
    """The count the architecture gives: the embedding, the GRU (three gates' input and recurrent
    weights, the input biases and the new gate's recurrent bias) and the head."""
    gru = 3 * (EMBED * hidden + hidden) + 3 * hidden * hidden + hidden
    if model is Policy:
        return (VOCAB + 1) * EMBED + gru + hidden * VOCAB + VOCAB
    return VOCAB * EMBED + gru + hidden + 1


def n_params(module) -> int:
    return sum(leaf.size for leaf in jax.tree.leaves(eqx.filter(module, eqx.is_array)))


@pytest.mark.parametrize("hidden", (2, 8, 32, 128, 512))
@pytest.mark.parametrize("model", (Policy, Judge))
def test_parameter_counts_follow_the_architecture(model, hidden):
    built = model(key=jax.random.PRNGKey(0), hidden=hidden)
    assert built.cell.hidden_size == hidden
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
    assert plan.judge_widths == (32, 8, 128) and len(plan.pretrain) == 3
    widths = {group.variant.judge_hidden: group for group in plan.groups}
    assert set(widths) == {32, 8, 128} and len(plan.groups) == 3  # narrow and narrow_missed: one group
    # per table: each seed's judge of each pretraining setting once (padded to whole sub-batches)
    for width, table in zip(plan.judge_widths, plan.pretrain, strict=True):
        rows = widths[width].inputs.pretrain_index
        assert rows.max() < len(table.seed)
        np.testing.assert_array_equal(table.seed[rows[:, 0]], widths[width].inputs.seed)
    narrow = widths[8].inputs.pretrain_index
    assert len(np.unique(narrow)) == 4  # two targets × two seeds: four width-8 judges


@pytest.fixture(scope="module")
def widths_ds(small):
    return engine.run_study(small(WIDTHS_STUDY, pretrain_max_steps=PRETRAIN_BUDGET))


def test_the_dataset_records_each_conditions_parameter_counts(widths_ds):
    for variable, model, knob in (
        ("policy_parameters", Policy, "policy_hidden"),
        ("judge_parameters", Judge, "judge_hidden"),
    ):
        assert widths_ds[variable].dims == ("condition",) and widths_ds[variable].attrs["units"] == "parameters"
        expected = [architecture_parameters(model, int(width)) for width in widths_ds[knob].values]
        np.testing.assert_array_equal(widths_ds[variable], expected)
    assert widths_ds.policy_parameters.sel(condition="reference") == 5144
    assert widths_ds.judge_parameters.sel(condition="wide_judge") == 56065


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
    copies and the meta-judge of every group of the mechanisms study."""
    resolved = engine.resolve(small(MECHANISMS_STUDY))
    plan = make_plan(resolved, resolved.seeds, n_devices=len(jax.devices()))
    program = make_program(plan.variants, resolved.sizes, jax.devices(), plan.sub_batch)
    pretrained = jax.eval_shape(program.pretrain, plan.pretrain)
    started = jax.eval_shape(program.start, tuple(table.judge for table in pretrained), plan.program_inputs()[1])
    for variant, runs, states in zip(plan.variants, started.runs, started.states, strict=True):
        policy, judge = variant.policy_hidden, variant.judge_hidden
        assert states.policy.cell.weight_hh.shape[1:] == (3 * policy, policy)
        assert states.policy.head.weight.shape[1:] == (VOCAB, policy)
        shapes = {leaf.shape for leaf in jax.tree.leaves(states.policy)}
        assert shapes <= {leaf.shape for leaf in jax.tree.leaves(states.policy_opt)}  # Adam's moments
        for judges in (states.judges, runs.pretrained):
            assert judges.cell.weight_hh.shape[1:] == (variant.n_judges, 3 * judge, judge)
        if variant.meta_judge:
            for meta in (states.meta.judge, runs.meta_pretrained):
                assert meta.cell.weight_hh.shape[1:] == (3 * judge, judge)
        size = sum(leaf.size for leaf in jax.tree.leaves(states.policy))
        assert size == len(runs.seed) * architecture_parameters(Policy, policy)


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
