"""Phase diagrams: which cells are hatched, which regime each cell gets, and the order of events in time."""

import json

import numpy as np
import pytest
import xarray as xr
from matplotlib.image import imread
from scipy import stats

import engine
from analysis.claims import COLLAPSED
from analysis.phase import (
    ALIGNMENT_DROP,
    half_change_order,
    half_change_step,
    phase_figures,
    phase_table,
    spans_zero,
)
from engine.core.world import REFERENCE_WORLD as WORLD
from engine.host.output import OutputError

JUE = [1, 5, 20]  # 3 values
LRJ = [1e-4, 3e-4, 1e-3, 3e-3]  # 4 values; the reference cell is (1, 3e-4)
METRICS = ("policy_quality", "judge_alignment", "policy_entropy", "judge_perceived_quality")


def grid_dataset(n_seeds: int = 5, n_iterations: int = 4, frozen: bool = True, base: dict | None = None, seed=0):
    """A 3×4 judge_update_every × lr_judge grid (plus a frozen control), built by hand, random values."""
    cells = [(j, lr, False) for j in JUE for lr in LRJ] + ([(1, 3e-4, True)] if frozen else [])
    names = [f"c{i}" for i in range(len(cells) - frozen)] + (["frozen"] if frozen else [])
    rng = np.random.default_rng(seed)
    shape = (len(cells), n_seeds, n_iterations)
    ds = xr.Dataset(
        {metric: (("condition", "seed", "iteration"), rng.normal(size=shape)) for metric in METRICS},
        coords={
            "condition": names,
            "seed": np.arange(n_seeds),
            "iteration": np.arange(n_iterations),
            "judge_update_every": ("condition", np.array([c[0] for c in cells])),
            "lr_judge": ("condition", np.array([c[1] for c in cells])),
            "freeze_judge": ("condition", np.array([c[2] for c in cells])),
            "n_judges": ("condition", np.ones(len(cells), int)),
        },
    )
    ds["diverged"] = (("condition", "seed"), np.zeros(shape[:2], bool))
    study = {"name": "synthetic", "seeds": list(range(n_seeds)), "base": base or {}, "conditions": {}}
    ds.attrs["study"] = json.dumps(study)
    return ds


def _cell(ds, j, lr):
    return ((ds["judge_update_every"] == j) & (ds["lr_judge"] == lr) & ~ds["freeze_judge"]).values.nonzero()[0][0]


def _row(table, j, lr):
    return table[(table["judge_update_every"] == j) & (table["lr_judge"] == lr)].iloc[0]


def test_spans_zero_with_tolerance_and_undefined_intervals():
    low = np.array([-0.1, 0.1, -0.3, 1e-4, np.nan, 0.0])
    high = np.array([0.1, 0.3, -0.1, 0.2, np.nan, 0.0])
    np.testing.assert_array_equal(spans_zero(low, high), [True, False, False, True, True, True])
    np.testing.assert_array_equal(spans_zero(low, high, tolerance=0.0), [True, False, False, False, True, True])


def test_hatched_cells_are_those_whose_paired_t_interval_spans_zero():
    ds = grid_dataset()
    final = ds["policy_quality"].isel(iteration=-1)
    base = final.isel(condition=_cell(ds, 1, 3e-4)).values
    # designed cells: a clear shift (not hatched) and a zero-mean paired difference (hatched)
    ds["policy_quality"][_cell(ds, 20, 1e-4), :, -1] = base + 2.0 + 0.05 * np.arange(5)
    ds["policy_quality"][_cell(ds, 5, 3e-3), :, -1] = base + np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
    table = phase_table(ds)
    assert table.attrs["baseline"] == {"judge_update_every": 1, "lr_judge": 3e-4}
    assert not _row(table, 20, 1e-4)["delta_spans_zero"]
    assert _row(table, 5, 3e-3)["delta_spans_zero"]
    assert _row(table, 1, 3e-4)["delta_spans_zero"]  # the baseline against itself: Δ ≡ 0
    final = ds["policy_quality"].isel(iteration=-1)
    base = final.isel(condition=_cell(ds, 1, 3e-4)).values
    for j in JUE:
        for lr in LRJ:
            difference = final.isel(condition=_cell(ds, j, lr)).values - base
            row = _row(table, j, lr)
            assert row["mean"] == pytest.approx(final.isel(condition=_cell(ds, j, lr)).values.mean())
            if (j, lr) == (1, 3e-4):
                continue
            ci = stats.ttest_1samp(difference, 0.0).confidence_interval(0.95)  # independent t-interval
            assert (row["delta_ci_low"], row["delta_ci_high"]) == pytest.approx((ci.low, ci.high))
            assert row["delta_spans_zero"] == bool(ci.low <= 5e-4 and ci.high >= -5e-4)
    assert table["delta_spans_zero"].sum() < len(table)  # random data at n = 5 still resolves some cells


def test_diverged_run_removes_its_pair():
    ds = grid_dataset()
    ds["diverged"][_cell(ds, 5, 1e-3), 2] = True
    ds["policy_quality"][_cell(ds, 5, 1e-3), 2, -1] = np.nan
    table = phase_table(ds)
    assert _row(table, 5, 1e-3)["n"] == 4 and _row(table, 5, 3e-4)["n"] == 5


def test_regimes_follow_the_stated_thresholds():
    ds = grid_dataset(frozen=True)
    ds["policy_entropy"][:] = 5.0
    ds["judge_alignment"][:] = 0.7
    frozen_quality = ds["policy_quality"].sel(condition="frozen").isel(iteration=-1).values
    collapsed, borderline, healthy = _cell(ds, 1, 3e-3), _cell(ds, 1, 1e-3), _cell(ds, 20, 1e-4)
    ds["policy_entropy"][collapsed, :, -1] = 0.5 * COLLAPSED * WORLD.uniform_entropy
    ds["judge_alignment"][collapsed, :, -1] = 0.7 - 2 * ALIGNMENT_DROP
    ds["policy_entropy"][borderline, :, -1] = (
        0.5 * COLLAPSED * WORLD.uniform_entropy
    )  # entropy low, alignment kept: not collapsed
    ds["judge_alignment"][borderline, :, -1] = 0.7 - 0.5 * ALIGNMENT_DROP
    ds["policy_quality"][healthy, :, -1] = frozen_quality + 1.0 + 0.01 * np.arange(5)
    ds["policy_quality"][collapsed, :, -1] = frozen_quality + 1.0 + 0.01 * np.arange(5)  # collapse wins
    table = phase_table(ds)
    assert table.attrs["frozen_condition"] == "frozen"
    assert _row(table, 1, 3e-3)["regime"] == "collapsed"
    assert _row(table, 1, 1e-3)["regime"] != "collapsed"
    assert _row(table, 20, 1e-4)["regime"] == "healthy"
    assert _row(table, 20, 1e-4)["alignment_drop_mean"] == pytest.approx(0.0)
    assert set(table["regime"]) <= {"collapsed", "healthy", ""}
    assert (table["collapsed"] == (table["regime"] == "collapsed")).all()
    without = phase_table(ds.drop_sel(condition="frozen"))
    assert without.attrs["frozen_condition"] is None and not without["healthy"].any()


def test_baseline_cell_is_the_reference_configuration_or_given():
    ds = grid_dataset(base={"lr_judge": 1e-3})
    assert phase_table(ds).attrs["baseline"] == {"judge_update_every": 1, "lr_judge": 1e-3}
    given = phase_table(ds, baseline={"judge_update_every": 20, "lr_judge": 1e-4})
    assert given.attrs["baseline"] == {"judge_update_every": 20, "lr_judge": 1e-4}
    assert _row(given, 20, 1e-4)["delta_mean"] == 0.0
    off_grid = grid_dataset(base={"lr_judge": 0.5})  # reference not on the grid: the first cell in file order
    assert phase_table(off_grid).attrs["baseline"] == {"judge_update_every": 1, "lr_judge": 1e-4}


def test_any_iteration_can_be_drawn():
    ds = grid_dataset()
    table = phase_table(ds, iteration=1)
    assert table.attrs["time"] == "iteration 1"
    expected = ds["policy_quality"].sel(iteration=1).isel(condition=_cell(ds, 5, 1e-3)).mean().item()
    assert _row(table, 5, 1e-3)["mean"] == pytest.approx(expected)


def test_phase_figures_write_pngs_for_a_grid_and_nothing_otherwise(tmp_path):
    written = phase_figures(grid_dataset(), tmp_path, "synthetic")
    assert [p.rsplit("/", 1)[1] for p in written] == [
        *(f"synthetic_phase_{metric}.png" for metric in METRICS),
        "synthetic_phase_table.csv",
    ]
    image = imread(written[0])
    assert image.shape[:2] == (1100, 1600)
    assert phase_figures(engine.load("data/blog.nc"), tmp_path, "blog") == []


def test_phase_figures_replace_an_existing_file_only_with_force(tmp_path):
    table = tmp_path / "synthetic_phase_table.csv"
    table.write_text("earlier table")
    table.chmod(0o640)
    with pytest.raises(OutputError, match="exists; pass --force"):
        phase_figures(grid_dataset(), tmp_path, "synthetic", metrics=("policy_quality",))
    assert table.read_text() == "earlier table" and len(list(tmp_path.iterdir())) == 1  # checked before drawing
    phase_figures(grid_dataset(), tmp_path, "synthetic", metrics=("policy_quality",), force=True)
    assert table.read_text().startswith("judge_update_every,") and table.stat().st_mode & 0o777 == 0o640


def _ramps(turn: np.ndarray, width: float, steps: np.ndarray, high: float, low: float) -> np.ndarray:
    """Linear ramps from high to low over [turn, turn + width]: half the change is reached at turn + width / 2."""
    share = np.clip((steps[None, :] - turn[:, None]) / width, 0.0, 1.0)
    return high + (low - high) * share


def test_half_change_steps_on_known_curves():
    steps = np.arange(0, 401, 10)
    alignment_turn = np.array([37.0, 52.0, 41.0, 60.0, 45.0])
    entropy_turn = np.array([101.0, 96.0, 133.0, 117.0, 128.0])
    alignment = _ramps(alignment_turn, 100.0, steps, 0.7, 0.3)
    entropy = _ramps(entropy_turn, 60.0, steps, 8.3, 0.4)
    flat = np.full((5, steps.size), 0.5)
    ds = xr.Dataset(
        {
            "judge_alignment": (("condition", "seed", "step"), np.stack([alignment, alignment])),
            "policy_entropy": (("condition", "seed", "step"), np.stack([entropy, flat])),
        },
        coords={"condition": ["baseline", "flat"], "seed": np.arange(5), "step": steps},
    )
    crossed = half_change_step(ds["judge_alignment"])
    assert crossed.dims == ("condition", "seed")
    np.testing.assert_allclose(crossed.sel(condition="baseline"), alignment_turn + 50.0)
    np.testing.assert_allclose(half_change_step(ds["policy_entropy"]).sel(condition="baseline"), entropy_turn + 30.0)
    assert np.isnan(half_change_step(ds["policy_entropy"]).sel(condition="flat")).all()  # no change, no crossing
    late = half_change_step(ds["judge_alignment"], start=100)  # window 100..400: the rest of the ramp
    expected = 100 + (alignment_turn + 100 - 100) / 2  # ramp covers [100, turn + 100] linearly
    np.testing.assert_allclose(late.sel(condition="baseline"), expected)

    order = half_change_order(ds).set_index("condition")
    difference = (entropy_turn + 30.0) - (alignment_turn + 50.0)
    ci = stats.ttest_1samp(difference, 0.0).confidence_interval(0.95)
    row = order.loc["baseline"]
    assert row["n"] == 5
    assert row["difference_mean"] == pytest.approx(difference.mean())
    assert (row["difference_ci_low"], row["difference_ci_high"]) == pytest.approx((ci.low, ci.high))
    assert row["difference_ci_low"] > 0  # alignment moves first
    assert order.loc["flat", "n"] == 0 and np.isnan(order.loc["flat", "difference_mean"])


def test_half_change_interpolates_between_recorded_points():
    steps = np.array([0, 10, 20, 30])
    values = xr.DataArray([[1.0, 0.9, 0.3, 0.0]], dims=("seed", "step"), coords={"step": steps})
    # share of the change: 0, 0.1, 0.7, 1 -> crosses 0.5 between 10 and 20, at 10 + 10 * (0.4 / 0.6)
    assert half_change_step(values).item() == pytest.approx(10 + 10 * 0.4 / 0.6)


def test_a_baseline_off_the_grid_is_refused():
    with pytest.raises(ValueError, match="baseline must be a cell"):
        phase_table(grid_dataset(), baseline={"judge_update_every": 2, "lr_judge": 1e-4})
