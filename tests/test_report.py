"""`coevo figures` (analysis.report.write_all): a step-resolved file of one record, and a set that is
written whole or not at all."""

import numpy as np
import pytest
import xarray as xr

import analysis.report
from analysis.report import output_paths, write_all
from engine.cli.main import main
from engine.host.results import load

METRICS = ("policy_quality", "judge_alignment", "policy_entropy", "judge_perceived_quality")


def step_resolved(steps=(0,), steps_per_iter: int = 6, n_seeds: int = 3) -> xr.Dataset:
    """A results Dataset over `step` (as `record_every` writes it and `engine.load` reads it), built by
    hand: one condition."""
    steps = np.asarray(steps, np.int32)
    rng = np.random.default_rng(0)
    shape = (1, n_seeds, steps.size)
    data = {name: (("condition", "seed", "step"), rng.normal(0.5, 0.1, shape)) for name in METRICS}
    data["peak_iteration"] = (("condition", "seed"), np.ones(shape[:2], np.int32))
    data["diverged"] = (("condition", "seed"), np.zeros(shape[:2], bool))
    coords = {
        "condition": ["baseline"],
        "seed": np.arange(n_seeds),
        "step": steps,
        "iteration": ("step", -(-steps // steps_per_iter)),
        "steps_per_iter": ("condition", [steps_per_iter]),
    }
    return xr.Dataset(data, coords=coords, attrs={"study": "{}"}).set_xindex("iteration")


def test_a_step_resolved_file_of_one_record_gets_every_output(tmp_path, capsys):
    path = tmp_path / "one.nc"
    step_resolved().to_netcdf(path, engine="netcdf4")
    assert main(["figures", str(path)]) == 0
    written = sorted(line.removeprefix("wrote ") for line in capsys.readouterr().out.splitlines())
    expected = output_paths(tmp_path, "one", load(path))
    skipped = {"one_overoptimisation.png", "one_pair_gap.png"}  # no kl_to_initial, no dpo condition
    assert written == sorted(str(p) for p in expected if p.name not in skipped)
    assert {"one_within.png", "one_order.csv"} <= {p.name for p in tmp_path.iterdir()}


def test_a_failure_while_drawing_writes_nothing(tmp_path, monkeypatch):
    ds = step_resolved(steps=(0, 2, 4, 6, 8, 10, 12))

    def broken(*args, **kwargs):
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(analysis.report, "within_figure", broken)  # drawn after the per-iteration outputs
    with pytest.raises(RuntimeError, match="drawing failed"):
        write_all(ds, tmp_path, "fine")
    assert list(tmp_path.iterdir()) == []  # no partial set, and no staging folder left behind


def test_a_forced_rewrite_that_fails_keeps_the_earlier_set(tmp_path, monkeypatch):
    ds = step_resolved(steps=(0, 2, 4, 6, 8, 10, 12))
    first = {path: open(path, "rb").read() for path in write_all(ds, tmp_path, "fine")}
    monkeypatch.setattr(analysis.report, "order_table", lambda *args, **kwargs: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        write_all(ds.isel(seed=[0, 1]), tmp_path, "fine", force=True)
    assert {str(path) for path in tmp_path.iterdir()} == set(first)
    assert all(open(path, "rb").read() == content for path, content in first.items())
