"""Tests of the analysis package on a tiny synthetic results Dataset (schema of engine/host/results.py)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import analysis.figures
from analysis import (
    comparison,
    condition_table,
    headline,
    mask_diverged,
    paired_difference,
    perception_gap,
    seed_summary,
    small_multiples,
    write_all,
    write_markdown,
)
from analysis.figures import MAX_PANELS
from engine.host.output import OutputError

CONDITIONS = ["baseline", "asymmetric_10", "frozen"]
METRICS = ["policy_quality", "judge_alignment", "policy_entropy", "judge_perceived_quality", "meta_judge_accuracy"]


def synthetic(conditions=CONDITIONS, n_seeds=6, n_iterations=4, seed=0) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    shape = (len(conditions), n_seeds, n_iterations)
    data = {}
    for metric in METRICS:
        values = rng.normal(0.5, 0.1, shape).astype(np.float32)
        data[metric] = (("condition", "seed", "iteration"), values, {"units": "u", "long_name": metric})
    data["meta_judge_accuracy"][1][:] = np.nan
    quality = data["policy_quality"][1]
    run_level = {
        "peak_iteration": quality.argmax(-1).astype(np.int32),
        "peak_quality": quality.max(-1),
        "final_quality": quality[..., -1],
        "degradation_pct": 100 * (quality.max(-1) - quality[..., -1]) / np.abs(quality.max(-1)),
        "pretrain_steps": np.full(shape[:2], 100, np.int32),
        "pretrain_alignment": np.full(shape[:2], 0.7),
        "pretrain_reached": np.ones(shape[:2], bool),
        "diverged": np.zeros(shape[:2], bool),
        "diverged_at": np.full(shape[:2], -1, np.int32),
    }
    for name, values in run_level.items():
        data[name] = (("condition", "seed"), values)
    coords = {
        "condition": conditions,
        "seed": np.arange(n_seeds),
        "iteration": np.arange(n_iterations),
        "judge_update_every": ("condition", np.arange(1, len(conditions) + 1)),
    }
    return xr.Dataset(data, coords=coords, attrs={"study_name": "tiny", "study": "{}"})


@pytest.fixture
def ds():
    return synthetic()


@pytest.fixture
def ds_diverged(ds):
    """Baseline seed 2 diverged: its metrics are NaN and it is flagged."""
    ds = ds.copy(deep=True)
    for metric in METRICS:
        ds[metric].loc[dict(condition="baseline", seed=2)] = np.nan
    ds["diverged"].loc[dict(condition="baseline", seed=2)] = True
    ds["diverged_at"].loc[dict(condition="baseline", seed=2)] = 1
    return ds


def test_t_interval_covers_known_mean():
    values = np.random.default_rng(1).normal(1.0, 1.0, 200)
    summary = seed_summary(values)
    assert summary.ci_low < 1.0 < summary.ci_high
    assert 0.15 < summary.ci_high - summary.ci_low < 0.4  # ≈ 2·1.96/√200 = 0.28
    assert summary.mean == pytest.approx(values.mean())
    assert summary.std == pytest.approx(values.std(ddof=1))
    assert summary.n == 200


def test_seed_summary_is_deterministic():
    values = np.random.default_rng(2).normal(size=7)
    assert seed_summary(values) == seed_summary(values)


def test_seed_summary_degenerate_cases():
    constant = seed_summary(np.full(5, 0.3))
    assert (constant.ci_low, constant.ci_high, constant.std) == (0.3, 0.3, 0.0)
    single = seed_summary([0.3])
    assert single.mean == 0.3 and np.isnan(single.std) and np.isnan(single.ci_low) and np.isnan(single.ci_high)
    empty = seed_summary([np.nan, np.nan])
    assert empty.n == 0 and np.isnan(empty.mean)
    assert np.isfinite(seed_summary([0.1, 0.2]).ci_low)  # two seeds still give a CI


def test_paired_difference_with_itself_is_exactly_zero():
    values = np.random.default_rng(3).normal(size=6)
    delta = paired_difference(values, values)
    assert (delta.mean, delta.ci_low, delta.ci_high) == (0.0, 0.0, 0.0)


def test_paired_difference_recovers_constant_shift():
    baseline = np.random.default_rng(4).normal(size=6)
    delta = paired_difference(baseline + 0.5, baseline)
    assert delta.mean == pytest.approx(0.5)
    assert delta.ci_low <= 0.5 + 1e-12 and delta.ci_high >= 0.5 - 1e-12


def test_paired_difference_pairs_by_seed():
    """A shift hidden under large between-seed spread is still found: the pairing removes the spread."""
    rng = np.random.default_rng(5)
    baseline = rng.normal(0, 10, 8)
    delta = paired_difference(baseline + 0.5 + rng.normal(0, 0.01, 8), baseline)
    assert 0.45 < delta.ci_low < delta.ci_high < 0.55


def test_condition_table_rows_and_baseline(ds):
    table = condition_table(ds)
    assert table["condition"].tolist() == CONDITIONS
    final = ds["policy_quality"].isel(iteration=-1)
    for row in table.itertuples():
        assert row.final_quality_mean == pytest.approx(float(final.sel(condition=row.condition).mean()))
        assert row.n_seeds == 6 and row.n_diverged == 0
    base = table.set_index("condition").loc["baseline"]
    assert (base.delta_quality_mean, base.delta_quality_ci_low, base.delta_quality_ci_high) == (0.0, 0.0, 0.0)
    assert table["peak_iteration_mean"].between(0, 3).all()


def test_condition_table_without_baseline(ds):
    table = condition_table(ds.sel(condition=["asymmetric_10", "frozen"]))
    assert table["delta_quality_mean"].isna().all() and table["delta_alignment_ci_high"].isna().all()
    assert table["final_quality_mean"].notna().all()


def test_diverged_run_is_left_out(ds_diverged):
    table = condition_table(ds_diverged).set_index("condition")
    others = ds_diverged["policy_quality"].sel(condition="baseline", seed=[0, 1, 3, 4, 5]).isel(iteration=-1)
    assert table.loc["baseline", "final_quality_mean"] == pytest.approx(float(others.mean()))
    assert table.loc["baseline", "n_seeds"] == 5 and table.loc["baseline", "n_diverged"] == 1
    assert table.loc["frozen", "n_diverged"] == 0
    masked = mask_diverged(ds_diverged)
    assert masked["peak_iteration"].sel(condition="baseline", seed=2).isnull()
    assert masked["policy_quality"].sel(condition="frozen").notnull().all()


def test_diverged_run_left_out_even_if_finite(ds_diverged):
    """The flag, not NaN, decides: a run that diverged late has finite early values that must not count."""
    ds = ds_diverged.copy(deep=True)
    ds["policy_quality"].loc[dict(condition="baseline", seed=2)] = 100.0
    table = condition_table(ds).set_index("condition")
    assert table.loc["baseline", "final_quality_mean"] < 1


def test_markdown_has_a_row_per_condition_and_the_left_out_count(ds_diverged, tmp_path):
    path = write_markdown(condition_table(ds_diverged), tmp_path / "t.md")
    text = Path(path).read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| condition")]
    assert [row.split("|")[1].strip() for row in rows] == CONDITIONS
    assert "1 diverged run left out" in text


def test_write_all_writes_everything(ds_diverged, tmp_path):
    paths = write_all(ds_diverged, tmp_path, "tiny")
    names = sorted(p.split("/")[-1] for p in paths)
    assert names == sorted(
        f"tiny_{n}"
        for n in ("headline.png", "best.png", "quality_by_condition.png", "gap.png", "table.md", "table.csv")
    )
    for path in paths:
        head = Path(path).read_bytes()[:8]
        assert head, path
        if path.endswith(".png"):
            assert head == b"\x89PNG\r\n\x1a\n"
    csv = pd.read_csv(tmp_path / "tiny_table.csv")
    assert csv["condition"].tolist() == CONDITIONS and csv["n_diverged"].sum() == 1


def test_write_all_with_one_condition(ds, tmp_path):
    paths = write_all(ds.sel(condition=["frozen"]), tmp_path, "one")
    assert any(p.endswith("one_headline.png") for p in paths)
    assert (tmp_path / "one_table.md").exists()


def test_figures_skip_absent_conditions(ds, tmp_path):
    assert comparison(ds, ["nope"], tmp_path / "c.png", bounds=("also_nope",)) is None
    assert not (tmp_path / "c.png").exists()
    assert perception_gap(ds, tmp_path / "g.png", conditions=["nope"]) is None
    assert comparison(ds, ["baseline", "nope"], tmp_path / "c.png") == str(tmp_path / "c.png")


def test_individual_figures(ds, tmp_path):
    for path in (
        headline(ds, tmp_path / "h.png"),
        small_multiples(ds, tmp_path / "s.png", "judge_alignment"),
        perception_gap(ds, tmp_path / "g.png"),
    ):
        assert (tmp_path / path.split("/")[-1]).stat().st_size > 10_000


def test_write_all_refuses_existing_outputs_without_force(ds, tmp_path):
    existing = tmp_path / "tiny_table.csv"
    existing.write_text("earlier table")
    existing.chmod(0o640)
    with pytest.raises(OutputError, match="exists; pass --force"):
        write_all(ds, tmp_path, "tiny")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny_table.csv"]  # checked before drawing anything
    write_all(ds, tmp_path, "tiny", force=True)
    assert existing.read_text().startswith("condition,") and existing.stat().st_mode & 0o777 == 0o640


@pytest.fixture
def drawn(monkeypatch):
    """Figures drawn but not written: the Figure objects, to inspect."""
    figures = []
    monkeypatch.setattr(analysis.figures, "save", lambda fig, path, force: figures.append(fig) or str(path))
    return figures


def test_small_multiples_of_a_thousand_conditions_are_capped(drawn, tmp_path):
    conditions = ["baseline"] + [f"c{i}" for i in range(999)]
    small_multiples(synthetic(conditions=conditions, n_seeds=3), tmp_path / "s.png")
    (fig,) = drawn
    assert sum(ax.axison for ax in fig.axes) == MAX_PANELS
    assert f"first {MAX_PANELS} of 1000 conditions" in fig._suptitle.get_text()


def test_condition_names_starting_with_underscore_stay_in_legends(drawn, ds, tmp_path):
    ds = ds.assign_coords(condition=["_baseline", "_asym", "frozen"])
    comparison(ds, ["_baseline", "_asym"], tmp_path / "c.png")
    perception_gap(ds, tmp_path / "g.png")
    small_multiples(ds, tmp_path / "s.png", baseline="_baseline")
    for fig in drawn:
        labels = [text.get_text() for legend in fig.legends for text in legend.get_texts()]
        assert any("_baseline" in label for label in labels), labels
    assert sum("_asym" in text.get_text() for text in drawn[0].legends[0].get_texts()) == 1
