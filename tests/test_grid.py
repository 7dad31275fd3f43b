"""Grid studies: names built from knob values, and the condition dimension reshaped per knob."""

import numpy as np
import pytest
import xarray as xr

import engine
from analysis.grid import find_grid, split_grid, stack_grid, unstack_grid
from engine.host.grid import ABBREVIATIONS, format_value, grid
from engine.host.study import MAX_NAME_LENGTH, NAME_PATTERN
from engine.knobs import KNOBS

JUE = [1, 2, 5, 10, 20, 50, 100]
LRJ = [1e-4, 3e-4, 1e-3, 3e-3]
CONTROLS = {"frozen": {"freeze_judge": True}, "baseline": {}, "slow_200": {"judge_update_every": 200}}


def _dataset(study: dict, n_seeds: int = 3, n_iterations: int = 4, seed: int = 0) -> xr.Dataset:
    """A Dataset laid out like engine.host.results.make_dataset (knob coordinates from `resolve`), random values."""
    resolved = engine.resolve(study)
    names = resolved.condition_names
    rng = np.random.default_rng(seed)
    coords = {"condition": names, "seed": np.arange(n_seeds, dtype=np.int32), "iteration": np.arange(n_iterations)}
    for knob, spec in KNOBS.items():
        coords[knob] = ("condition", np.array([resolved.conditions[c][knob] for c in names], spec.coordinate_dtype))
    shape = (len(names), n_seeds, n_iterations)
    data = {
        "policy_quality": (("condition", "seed", "iteration"), rng.normal(size=shape).astype(np.float32)),
        "judge_alignment": (("condition", "seed", "iteration"), rng.uniform(size=shape).astype(np.float32)),
        "peak_iteration": (("condition", "seed"), rng.integers(0, n_iterations, shape[:2]).astype(np.int32)),
        "diverged": (("condition", "seed"), np.zeros(shape[:2], bool)),
    }
    return xr.Dataset(data, coords=coords, attrs={"study_name": resolved.name, "study": resolved.to_json()})


def _study(conditions: dict) -> dict:
    return {"name": "grid_test", "seeds": [0, 1, 2], "base": {}, "conditions": conditions}


def test_grid_size_order_and_names_pass_the_validator():
    conditions = grid(judge_update_every=JUE, lr_judge=LRJ, controls=CONTROLS)
    assert len(conditions) == len(JUE) * len(LRJ) + len(CONTROLS)
    names = list(conditions)
    assert names[0] == "judge_update_every_1+lr_judge_0.0001"
    assert names[1] == "judge_update_every_1+lr_judge_0.0003"  # the last knob varies fastest
    assert names[-3:] == list(CONTROLS)
    assert len({name.casefold() for name in names}) == len(names)
    assert conditions["judge_update_every_10+lr_judge_0.003"] == {"judge_update_every": 10, "lr_judge": 3e-3}
    resolved = engine.resolve(_study(conditions))  # every name and value passes the study validator
    cells = {(k["judge_update_every"], k["lr_judge"]) for k in list(resolved.conditions.values())[: -len(CONTROLS)]}
    assert cells == {(j, lr) for j in JUE for lr in LRJ}


def test_fixed_knobs_go_to_grid_cells_only():
    conditions = grid(lr_judge=[1e-4, 1e-3], fixed={"n_judges": 3}, controls={"frozen": {"freeze_judge": True}})
    assert conditions == {
        "lr_judge_0.0001": {"n_judges": 3, "lr_judge": 1e-4},
        "lr_judge_0.001": {"n_judges": 3, "lr_judge": 1e-3},
        "frozen": {"freeze_judge": True},
    }


def test_values_are_written_exactly():
    assert [format_value(v) for v in (10, np.int64(3), 3e-4, 1e-5, 0.5, 1.0, True, np.bool_(False))] == [
        "10",
        "3",
        "0.0003",
        "1e-05",
        "0.5",
        "1",
        "true",
        "false",
    ]
    close = 0.1 + 0.2  # %g would print 0.3 for both
    names = list(grid(entropy_regulariser=[0.3, close]))
    assert len(set(names)) == 2 and float(names[1].split("_")[-1]) == close


def test_long_names_are_abbreviated_for_the_whole_grid():
    assert len(set(ABBREVIATIONS.values())) == len(ABBREVIATIONS)  # abbreviations never collide
    conditions = grid(
        judge_update_every=[1, 100],
        meta_update_every=[10],
        meta_accuracy_threshold=[0.75, 0.123456789],
        fixed={"meta_holdout_fraction": 0.05},
    )
    names = list(conditions)
    assert names[0] == "jue_1+mue_10+mat_0.75"
    assert all(len(n) <= MAX_NAME_LENGTH and NAME_PATTERN.fullmatch(n) for n in names)
    engine.resolve(_study(conditions))


def test_grid_refuses_bad_input():
    with pytest.raises(ValueError, match="unknown knob"):
        grid(lr_judges=[1e-4])
    with pytest.raises(ValueError, match="duplicate"):
        grid(lr_judge=[1e-4, 1e-4])
    with pytest.raises(ValueError, match="non-empty list"):
        grid(lr_judge=[])
    with pytest.raises(ValueError, match="both a grid axis and fixed"):
        grid(lr_judge=[1e-4], fixed={"lr_judge": 1e-3})
    with pytest.raises(ValueError, match="clash"):
        grid(lr_judge=[1e-4], controls={"LR_JUDGE_0.0001": {}})


def test_grid_takes_arrays_and_says_what_it_got_otherwise():
    conditions = grid(lr_judge=np.logspace(-4, -3, 3), n_judges=np.arange(1, 3))
    assert list(conditions)[:2] == ["lr_judge_0.0001+n_judges_1", "lr_judge_0.0001+n_judges_2"]
    assert all(type(knobs["lr_judge"]) is float and type(knobs["n_judges"]) is int for knobs in conditions.values())
    engine.resolve(_study(conditions))
    for given, said in [
        (np.zeros((2, 2)), "got a 2-D array of shape (2, 2)"),
        (np.array([]), "got a 1-D array of shape (0,)"),
        ((), "got an empty tuple"),
        (3e-4, "got 0.0003 (float)"),
        ("1e-4", "got '1e-4' (str)"),
        ({1e-4}, "got {0.0001} (set)"),
    ]:
        with pytest.raises(ValueError) as caught:
            grid(lr_judge=given)
        assert str(caught.value) == f"grid(): lr_judge needs a non-empty list (or 1-D array) of values, {said}"
    with pytest.raises(TypeError, match=r"grid\(\): lr_judge: .* got 'x' \(str\)"):
        grid(lr_judge=[1e-4, "x"])


def test_grid_refuses_values_that_are_one_experiment():
    """-0.0 and 0.0 (and 1 and 1.0) would name two conditions that run the same experiment."""
    for values, said in [([0.0, -0.0], "-0.0"), ([1, 1.0, 2], "1.0"), (np.array([0.5, 0.5]), "0.5")]:
        with pytest.raises(ValueError, match=f"kl_penalty has duplicate values {said} in"):
            grid(kl_penalty=values)


def test_a_huge_value_is_abbreviated_in_the_message():
    with pytest.raises(ValueError) as caught:
        grid(n_judges=[1, 10**400])
    assert "1e+400 (an integer of 401 digits)" in str(caught.value) and len(str(caught.value)) < 200


def test_find_grid_reads_knob_coordinates_and_sets_controls_aside():
    ds = _dataset(_study(grid(judge_update_every=JUE, lr_judge=LRJ, controls=CONTROLS)))
    layout = find_grid(ds)
    assert layout.knobs == ("judge_update_every", "lr_judge")  # grid() keyword order, recovered
    assert len(layout.cells) == 28
    assert layout.controls == ("frozen", "baseline", "slow_200")  # duplicate cell and off-grid value included
    blog = engine.load("data/blog.nc")
    assert find_grid(blog, n_knobs=2) is None  # the published study is no 2-knob grid
    assert find_grid(blog).knobs == ("judge_update_every",)  # baseline and asymmetric_2/5/10 are a 1-knob grid


def test_unstack_gives_one_dimension_per_knob_and_round_trips():
    ds = _dataset(_study(grid(judge_update_every=JUE, lr_judge=LRJ, controls=CONTROLS)))
    cells, controls = split_grid(ds)
    assert dict(cells.sizes) == {"judge_update_every": 7, "lr_judge": 4, "seed": 3, "iteration": 4}
    assert controls["condition"].values.tolist() == ["frozen", "baseline", "slow_200"]
    assert cells["peak_iteration"].dtype == np.int32 and cells["diverged"].dtype == bool  # no NaN fill
    row = cells["policy_quality"].sel(judge_update_every=10)
    assert row.dims == ("lr_judge", "seed", "iteration")
    name = "judge_update_every_10+lr_judge_0.0003"
    assert row["condition"].sel(lr_judge=3e-4).item() == name
    np.testing.assert_array_equal(row.sel(lr_judge=3e-4).values, ds["policy_quality"].sel(condition=name).values)

    back = stack_grid(cells)
    grid_part = ds.sel(condition=list(find_grid(ds).cells))
    assert back["condition"].values.tolist() == grid_part["condition"].values.tolist()  # ascending values given
    xr.testing.assert_identical(back, grid_part)
    xr.testing.assert_identical(
        stack_grid(unstack_grid(ds, ["lr_judge", "judge_update_every"])).sel(condition=grid_part["condition"]),
        grid_part,
    )


def test_unsorted_values_round_trip_up_to_order():
    ds = _dataset(_study(grid(lr_judge=[3e-3, 1e-4], judge_update_every=[10, 1, 5])))
    cells = unstack_grid(ds)
    assert cells["lr_judge"].values.tolist() == [1e-4, 3e-3]  # dimensions come sorted
    back = stack_grid(cells)
    xr.testing.assert_identical(back.sel(condition=ds["condition"]), ds)


def test_incomplete_grid_is_refused():
    conditions = grid(judge_update_every=[1, 10], lr_judge=[1e-4, 1e-3])
    del conditions["judge_update_every_10+lr_judge_0.001"]
    ds = _dataset(_study(conditions))
    with pytest.raises(ValueError, match="no complete grid"):
        unstack_grid(ds, ["judge_update_every", "lr_judge"])


def test_a_three_knob_grid_is_found_whole():
    conditions = grid(judge_update_every=[1, 10], lr_judge=[1e-4, 1e-3, 3e-3], n_judges=[1, 3])
    ds = _dataset(_study(conditions))
    layout = find_grid(ds)
    assert layout.knobs == ("judge_update_every", "lr_judge", "n_judges") and not layout.controls
    assert dict(unstack_grid(ds)["policy_quality"].sizes) == {
        "judge_update_every": 2,
        "lr_judge": 3,
        "n_judges": 2,
        "seed": 3,
        "iteration": 4,
    }
    assert find_grid(ds, n_knobs=2) is None  # three 2-knob slices would tie in cell count: refused, not guessed
