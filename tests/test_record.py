"""Fine time resolution (`record_every`), saved distributions (`save_distributions`), and a real grid.

One tiny grid study (judge_update_every × lr_judge with pretraining held at 3e-4: one Variant,
two seeds) is run three ways: today's
default; `record_every` equal to the iteration length with the final distributions saved; and
records every 2 inner steps with every distribution saved. Identical keys and steps: only what
is recorded may differ. (Three compiled programs: the file's cost.)
"""

import numpy as np
import pytest
import xarray as xr

import engine
from analysis.grid import stack_grid, unstack_grid
from analysis.report import output_paths, write_all
from engine.core.world import REFERENCE_WORLD as WORLD
from engine.core.world import reference_q_star, render
from engine.host.grid import grid
from engine.knobs import KNOBS

STEPS_PER_ITER = 6  # conftest.SMALL
RECORDING_KNOBS = ("record_every", "save_distributions")


@pytest.fixture(scope="module")
def tiny_grid(small):
    conditions = grid(judge_update_every=[1, 2], lr_judge=[3e-4, 1e-3], fixed={"lr_judge_pretrain": 3e-4})
    return lambda **base: small(conditions, name="tiny_grid", **base)


@pytest.fixture(scope="module")
def default(tiny_grid):
    return engine.run_study(tiny_grid())


@pytest.fixture(scope="module")
def fine(tiny_grid, tmp_path_factory):
    """Records every 2 inner steps, distributions at every record, through a file and back."""
    path = tmp_path_factory.mktemp("record") / "fine.nc"
    engine.save(engine.run_study(tiny_grid(record_every=2, save_distributions="all")), path)
    return engine.load(path)


def without_recording_knobs(ds: xr.Dataset) -> xr.Dataset:
    """Everything but the two recording knobs' coordinates and the attrs (study, timings, commit)."""
    return ds.drop_vars(RECORDING_KNOBS).drop_attrs(deep=False)


@pytest.fixture(scope="module")
def final(tiny_grid):
    """record_every equal to the iteration length, distributions of the last record only."""
    return engine.run_study(tiny_grid(record_every=STEPS_PER_ITER, save_distributions="final"))


def test_record_every_equal_to_the_iteration_length_is_todays_dataset(default, final):
    assert "step" not in final.dims
    assert int(final["record_every"][0]) == STEPS_PER_ITER and int(default["record_every"][0]) == 0
    metrics_only = final.drop_vars(["policy_probability", "judge_score", "sequence"])
    xr.testing.assert_identical(without_recording_knobs(default), without_recording_knobs(metrics_only))


def test_the_default_adds_only_the_two_knob_coordinates(default):
    assert set(default.dims) == {"condition", "seed", "iteration"}
    assert all(default[name].dims == ("condition",) for name in RECORDING_KNOBS)
    assert "policy_probability" not in default and "sequence" not in default.dims


def test_fine_records_sit_on_a_step_axis_with_the_iteration_recoverable(fine):
    n_iterations = fine.sizes["step"] // (STEPS_PER_ITER // 2)
    np.testing.assert_array_equal(fine["step"], 2 * np.arange(fine.sizes["step"]))
    np.testing.assert_array_equal(fine["iteration"], -(-fine["step"].values // STEPS_PER_ITER))
    assert fine.policy_quality.dims == ("condition", "seed", "step")
    assert fine.sel(step=slice(0, 4)).sizes["step"] == 3
    np.testing.assert_array_equal(fine.sel(iteration=1)["step"], [2, 4, 6])
    assert engine.per_iteration(fine).sizes["iteration"] == n_iterations + 1


def test_iteration_boundaries_equal_the_per_iteration_records_bit_for_bit(default, fine):
    boundaries = engine.per_iteration(fine)
    for name, values in default.data_vars.items():
        assert boundaries[name].dims == values.dims, name
        np.testing.assert_array_equal(boundaries[name].values, values.values, err_msg=name)


def test_saved_distributions_sum_to_one_and_give_back_the_metrics(fine):
    probability, score = fine["policy_probability"], fine["judge_score"]
    assert probability.dims == ("condition", "seed", "step", "sequence") == score.dims
    assert fine.sizes["sequence"] == WORLD.n_sequences and fine["sequence"].values[1] == render([0, 0, 0, 1])
    p = probability.values.astype(np.float64)
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)
    q_star = np.asarray(reference_q_star(WORLD), np.float64)
    np.testing.assert_allclose((p * q_star).sum(-1), fine.policy_quality, atol=1e-5)
    entropy = -np.sum(p * np.log(np.where(p > 0, p, 1.0)), axis=-1)
    np.testing.assert_allclose(entropy, fine.policy_entropy, atol=1e-5)
    np.testing.assert_allclose((p * score.values).sum(-1), fine.judge_perceived_quality, atol=1e-5)


def test_a_real_grid_study_unstacks_and_stacks_back(fine):
    cells = unstack_grid(fine)
    assert cells.policy_quality.dims == ("judge_update_every", "lr_judge", "seed", "step")
    one = cells.policy_quality.sel(judge_update_every=2, lr_judge=1e-3)
    np.testing.assert_array_equal(one, fine.policy_quality.sel(condition="judge_update_every_2+lr_judge_0.001"))
    back = stack_grid(cells).sel(condition=fine.condition)
    for name in fine.data_vars:
        np.testing.assert_array_equal(back[name].transpose(*fine[name].dims), fine[name], err_msg=name)
    for name in KNOBS:
        np.testing.assert_array_equal(back[name], fine[name], err_msg=name)


def test_record_every_must_divide_the_iteration(small):
    with pytest.raises(engine.StudyError, match="field 'record_every': must divide steps_per_iter"):
        engine.resolve(small({"a": {}}, record_every=4))
    with pytest.raises(engine.StudyError, match="expected one of 'none', 'final', 'all'"):
        engine.resolve(small({"a": {}}, save_distributions="some"))


def test_final_distributions_are_the_last_record(fine, final):
    assert final["policy_probability"].dims == ("condition", "seed", "sequence")
    for name in ("policy_probability", "judge_score"):
        np.testing.assert_array_equal(final[name], fine[name].isel(step=-1).drop_vars(["step", "iteration"]))


def test_lr_judge_pretrain_holds_the_starting_judge_across_lr_judge(default):
    """Pretraining at 3e-4 in every cell: the same pretrained judge for both lr_judge values of a
    seed (iteration 0 equal bit for bit), different co-evolution afterwards."""
    cells = unstack_grid(default)
    for name in ("pretrain_steps", "pretrain_alignment"):
        np.testing.assert_array_equal(cells[name].sel(lr_judge=3e-4), cells[name].sel(lr_judge=1e-3))
    alignment = cells.judge_alignment.sel(judge_update_every=1)
    np.testing.assert_array_equal(alignment.sel(lr_judge=3e-4, iteration=0), alignment.sel(lr_judge=1e-3, iteration=0))
    assert (alignment.sel(lr_judge=3e-4, iteration=1) != alignment.sel(lr_judge=1e-3, iteration=1)).all()


def test_a_step_resolved_grid_gets_every_figure(fine, tmp_path):
    written = write_all(fine, tmp_path, "fine")
    names = sorted(path.split("/")[-1] for path in written)
    skipped = {"fine_best.png", "fine_pair_gap.png"}  # no published condition, no dpo condition
    assert names == sorted(path.name for path in output_paths(tmp_path, "fine", fine) if path.name not in skipped)
    assert {"fine_within.png", "fine_order.csv", "fine_phase_policy_quality.png"} <= set(names)
