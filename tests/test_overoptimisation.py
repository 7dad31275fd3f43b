"""The overoptimisation and pair-gap figures on a tiny hand-built Dataset (no engine runs)."""

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from analysis.overoptimisation import MAX_CONDITIONS, has_dpo, overoptimisation, pair_gap
from analysis.report import write_all

PNG = b"\x89PNG\r\n\x1a\n"
RULES = {"baseline": "reinforce", "dpo_iteration": "dpo", "dpo_anchored": "dpo"}


def synthetic(conditions=RULES, n_seeds=4, n_iterations=4, seed=0) -> xr.Dataset:
    """The variables the two figures read, shaped as engine/host/results.py writes them."""
    rng = np.random.default_rng(seed)
    shape = (len(conditions), n_seeds, n_iterations)
    iteration = np.arange(n_iterations)
    kl = np.abs(rng.normal(1.0, 0.2, shape)) * iteration  # 0 at iteration 0, growing
    kl[..., 0] = 0.0
    data = {
        "kl_to_initial": kl,
        "policy_quality": 1.0 + np.sqrt(kl) - 0.3 * kl + rng.normal(0, 0.05, shape),
        "judge_perceived_quality": 1.0 + np.sqrt(kl) + rng.normal(0, 0.05, shape),
        "policy_entropy": 8.3 - kl,
        "best_worst_gap_judge": np.exp(-iteration) + rng.uniform(0, 0.1, shape),
        "best_worst_gap_true": 0.5 * np.exp(-iteration) + rng.uniform(0, 0.1, shape),
        "train_pair_gap_judge": 2.0 * np.exp(-iteration) + rng.uniform(0, 0.1, shape),
        "train_pair_gap_true": np.exp(-iteration) + rng.uniform(0, 0.1, shape),
        "pair_keep_rate": np.clip(1 - 0.2 * iteration + rng.uniform(0, 0.05, shape), 0, 1),
    }
    dpo = np.array([rule == "dpo" for rule in conditions.values()])
    for name in ("train_pair_gap_judge", "train_pair_gap_true", "pair_keep_rate"):
        data[name][~dpo] = np.nan  # reinforce trains on no pairs
        data[name][..., 0] = np.nan  # nor does pretraining
    variables = {name: (("condition", "seed", "iteration"), values.astype(np.float32)) for name, values in data.items()}
    diverged = np.zeros(shape[:2], bool)
    diverged[1, 0] = True
    variables["diverged"] = (("condition", "seed"), diverged)
    coords = {
        "condition": list(conditions),
        "seed": np.arange(n_seeds),
        "iteration": iteration,
        "update_rule": ("condition", np.array(list(conditions.values()), object)),
    }
    return xr.Dataset(variables, coords=coords)


def _is_png(path) -> bool:
    return Path(path).read_bytes()[:8] == PNG and Path(path).stat().st_size > 10_000


def test_figures_return_their_path_and_write_a_png(tmp_path):
    ds = synthetic()
    assert has_dpo(ds)
    for draw, name in ((overoptimisation, "o.png"), (pair_gap, "p.png")):
        path = draw(ds, tmp_path / name)
        assert path == str(tmp_path / name) and _is_png(path)


def test_figures_skip_datasets_without_their_variables(tmp_path):
    ds = synthetic()
    assert overoptimisation(ds.drop_vars("kl_to_initial"), tmp_path / "o.png") is None
    assert pair_gap(ds.drop_vars("train_pair_gap_judge"), tmp_path / "p.png") is None
    reinforce_only = synthetic({"baseline": "reinforce", "other": "reinforce"})
    assert not has_dpo(reinforce_only)
    assert pair_gap(reinforce_only, tmp_path / "p.png") is None
    assert pair_gap(ds.drop_vars("update_rule"), tmp_path / "p.png") is None
    assert overoptimisation(ds, tmp_path / "o.png", conditions=["nope"]) is None
    assert not list(tmp_path.iterdir())


def test_single_seed_and_all_nan_conditions_still_draw(tmp_path):
    ds = synthetic(n_seeds=1)  # no interval at one seed: points without bars
    assert _is_png(overoptimisation(ds, tmp_path / "o.png"))
    assert _is_png(pair_gap(ds, tmp_path / "p.png"))


def test_conditions_are_capped(tmp_path):
    many = {f"c{i}": "dpo" for i in range(MAX_CONDITIONS + 3)}
    ds = synthetic(many, n_seeds=2, n_iterations=3)
    assert _is_png(overoptimisation(ds, tmp_path / "o.png"))
    assert _is_png(pair_gap(ds, tmp_path / "p.png", conditions=["c3", "c1"]))


def test_write_all_draws_both_when_the_dataset_has_them(tmp_path, monkeypatch):
    # write_all's other figures and tables need the full schema; here only the hook is checked
    import analysis.report as report

    for name in ("headline", "comparison", "small_multiples", "perception_gap", "write_markdown", "write_csv"):
        monkeypatch.setattr(report, name, lambda *args, **kwargs: None)
    monkeypatch.setattr(report, "condition_table", lambda *args, **kwargs: None)
    written = write_all(synthetic(), tmp_path, "tiny")
    assert sorted(Path(p).name for p in written) == ["tiny_overoptimisation.png", "tiny_pair_gap.png"]
    assert write_all(synthetic().drop_vars("kl_to_initial"), tmp_path / "other", "tiny") == [
        str(tmp_path / "other" / "tiny_pair_gap.png")
    ]


@pytest.mark.parametrize("draw", [overoptimisation, pair_gap])
def test_existing_output_needs_force(tmp_path, draw):
    path = tmp_path / "f.png"
    path.write_bytes(b"old")
    with pytest.raises(FileExistsError):
        draw(synthetic(), path)
    assert _is_png(draw(synthetic(), path, force=True))
