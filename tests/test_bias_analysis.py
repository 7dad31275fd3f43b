"""analysis/bias.py on a synthetic Dataset with the bias records: grouping by knobs, the
amplification it derives, and the figures (also through `write_all`)."""

import numpy as np
import pytest
import xarray as xr

from analysis.bias import (
    OUTPUTS,
    amplification,
    amplification_of_mean,
    bias_figures,
    has_bias_records,
    mechanisms,
)
from analysis.report import write_all
from engine.knobs import DEFAULTS, KNOBS
from engine.loop.diagnostics import METRICS

MECHANISMS = {"baseline": {}, "frozen": {"freeze_judge": True}, "meta_judge": {"meta_source": "judge"}}
BIASES = {"b0": 0.0, "b0.3": 0.3, "b1": 1.0}


def synthetic(n_seeds=5, n_iterations=4) -> xr.Dataset:
    rows = {
        f"{bias_name}_{mechanism}": {**DEFAULTS, **knobs, "planted_bias": bias}
        for bias_name, bias in BIASES.items()
        for mechanism, knobs in MECHANISMS.items()
    }
    names = list(rows)
    rng = np.random.default_rng(0)
    shape = (len(names), n_seeds, n_iterations)
    data = {m: (("condition", "seed", "iteration"), rng.normal(0.5, 0.1, shape)) for m in METRICS}
    # judge_bias: starts at b + 0.05 and grows ×(1 + t/2) for the baseline, stays for the others
    bias = np.array([rows[c]["planted_bias"] + 0.05 for c in names])[:, None, None] + np.zeros(shape)
    growth = np.array([1.0 if c.endswith("_baseline") else 0.0 for c in names])[:, None, None]
    data["judge_bias"] = (("condition", "seed", "iteration"), bias * (1 + growth * np.arange(n_iterations) / 2))
    for name in ("diverged", "pretrain_reached"):
        data[name] = (("condition", "seed"), np.full(shape[:2], name == "pretrain_reached"))
    coords = {
        "condition": names,
        "seed": np.arange(n_seeds),
        "iteration": np.arange(n_iterations),
        **{k: ("condition", np.array([rows[c][k] for c in names], KNOBS[k].coordinate_dtype)) for k in KNOBS},
    }
    return xr.Dataset(data, coords=coords, attrs={"study_name": "tiny", "study": "{}"})


@pytest.fixture
def ds():
    return synthetic()


def test_mechanisms_are_grouped_by_knobs_not_names(ds):
    groups = mechanisms(ds)
    assert list(groups) == list(MECHANISMS)
    assert groups["frozen"] == {0.0: "b0_frozen", 0.3: "b0.3_frozen", 1.0: "b1_frozen"}
    renamed = ds.assign_coords(condition=["x", "y", "z", "p", "q", "r", "s", "t", "u"])
    assert [sorted(members.values()) for members in mechanisms(renamed).values()] == [
        ["p", "s", "x"],
        ["q", "t", "y"],
        ["r", "u", "z"],
    ]


def test_amplification_is_a_ratio_with_a_bias_and_a_difference_without(ds):
    amp = amplification(ds)
    np.testing.assert_allclose(amp.sel(condition="b1_baseline").isel(seed=0), [1, 1.5, 2, 2.5])
    np.testing.assert_allclose(amp.sel(condition="b0.3_frozen").isel(seed=0), [1, 1, 1, 1])
    np.testing.assert_allclose(amp.sel(condition="b0_baseline").isel(seed=0), [0, 0.025, 0.05, 0.075])


def test_amplification_of_the_mean_is_the_ratio_of_seed_means(ds):
    ds = ds.copy(deep=True)
    ds["judge_bias"].loc[dict(condition="b0.3_baseline", seed=0)] *= 1e-3  # one run's ratio would explode
    bias = ds.judge_bias.sel(condition="b0.3_baseline")
    amp = amplification_of_mean(ds).sel(condition="b0.3_baseline").mean("seed")
    np.testing.assert_allclose(amp, bias.mean("seed") / bias.isel(iteration=0).mean("seed"))
    np.testing.assert_allclose(amplification_of_mean(ds).sel(condition="b0_frozen"), 0)


def test_figures_are_written_only_for_a_dataset_with_bias_records(ds, tmp_path):
    written = bias_figures(ds, tmp_path, "tiny")
    assert [p.rsplit("tiny_", 1)[1] for p in map(str, written)] == list(OUTPUTS)
    assert all((tmp_path / f"tiny_{name}").stat().st_size > 20_000 for name in OUTPUTS)
    older = ds.drop_vars(["judge_bias"])
    assert not has_bias_records(older) and bias_figures(older, tmp_path / "old", "tiny") == []


def test_write_all_adds_the_bias_figures(ds, tmp_path):
    ds = ds.assign(
        peak_iteration=ds.policy_quality.argmax("iteration"),
        diverged_at=xr.full_like(ds.diverged, -1, dtype=int),
        final_quality=ds.policy_quality.isel(iteration=-1),
        peak_quality=ds.policy_quality.max("iteration"),
        degradation_pct=xr.zeros_like(ds.diverged, dtype=float),
        pretrain_steps=xr.full_like(ds.diverged, 100, dtype=int),
        pretrain_alignment=xr.full_like(ds.diverged, 0.7, dtype=float),
    )
    written = [str(p) for p in write_all(ds, tmp_path, "tiny", baseline="b0_baseline")]
    assert all(any(p.endswith(name) for p in written) for name in OUTPUTS)


def test_a_diverged_run_is_left_out(ds, tmp_path):
    ds = ds.copy(deep=True)
    ds["judge_bias"].loc[dict(condition="b1_baseline", seed=0)] = np.inf
    ds["diverged"].loc[dict(condition="b1_baseline", seed=0)] = True
    assert bias_figures(ds, tmp_path, "tiny")  # draws, the infinite run left out
