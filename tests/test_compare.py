"""`coevo compare`: two results files of one study, compared in distribution per condition."""

import numpy as np
import pytest
import xarray as xr
from scipy import stats

from analysis.compare import METRICS, compare, comparison_markdown, holm
from engine.cli.main import main


def results(shift: float, n_seeds: int = 60, seed: int = 0, study: str = "s") -> xr.Dataset:
    """Two conditions; in `moved` every metric's final value is shifted by `shift` sds."""
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(2, n_seeds, 2))
    values[1, :, -1] += shift
    data = {name: (("condition", "seed", "iteration"), values) for name in (*METRICS, "judge_perceived_quality")}
    data["peak_iteration"] = (("condition", "seed"), np.zeros((2, n_seeds), int))
    data["diverged"] = (("condition", "seed"), np.zeros((2, n_seeds), bool))
    return xr.Dataset(data, coords={"condition": ["same", "moved"]}, attrs={"study_name": study})


def test_holm_matches_its_definition():
    p = np.array([0.01, 0.04, 0.03, 0.5])
    # sorted 0.01, 0.03, 0.04, 0.5 scaled by 4, 3, 2, 1 -> 0.04, 0.09, 0.08 -> running max 0.09, 0.5
    np.testing.assert_allclose(holm(p), [0.04, 0.09, 0.09, 0.5])


def test_a_shifted_condition_is_found_and_an_unchanged_one_is_not():
    rows = compare(results(0.0, seed=1), results(1.0, seed=2))
    by = {(r["condition"], r["metric"]): r for r in rows}
    for metric in METRICS:
        assert by["moved", metric]["t_holm"] < 1e-3 and by["moved", metric]["d"] == pytest.approx(1.0, abs=0.4)
        assert by["same", metric]["t_holm"] > 0.05 and abs(by["same", metric]["d"]) < 0.5
    welch = stats.ttest_ind(
        results(1.0, seed=2).policy_quality.values[1, :, -1],
        results(0.0, seed=1).policy_quality.values[1, :, -1],
        equal_var=False,
    )
    assert by["moved", "policy_quality"]["t_p"] == pytest.approx(welch.pvalue)
    text = comparison_markdown(rows, "old", "new")
    assert "largest standardised difference" in text and "moved policy_quality" in text


def test_the_command_refuses_files_of_two_studies(tmp_path, capsys):
    results(0.0).to_netcdf(tmp_path / "a.nc")
    results(0.0, study="other").to_netcdf(tmp_path / "b.nc")
    assert main(["compare", str(tmp_path / "a.nc"), str(tmp_path / "b.nc")]) == 2
    assert "different studies" in capsys.readouterr().err
