"""studies/batch_limit.py and analysis.batch_limit: five studies, one per batch size and exact, that
start from the same pretrained judges, joined along a `batch` dimension."""

import numpy as np
import pytest
import xarray as xr

import engine
from analysis.batch_limit import answers_markdown, convergence_slope, join_batches, mode_rows
from studies.batch_limit import STUDIES


def test_the_five_studies_resolve_without_warnings_and_pretrain_alike():
    labels = {label: engine.resolve(study) for label, study in STUDIES.items()}
    assert list(labels) == ["16", "64", "256", "1024", "exact"]
    for label, resolved in labels.items():
        assert resolved.warnings == (), (label, resolved.warnings)
        assert len(resolved.seeds) == 30 and resolved.sizes.pretrain_batch_size == 64
        assert set(resolved.conditions) == {"baseline", "asymmetric_10", "frozen"}
        estimators = {knobs["gradient_estimator"] for knobs in resolved.conditions.values()}
        assert estimators == ({"exact"} if label == "exact" else {"sampled"})
        assert label == "exact" or resolved.sizes.batch_size == int(label)


@pytest.fixture(scope="module")
def smoke():
    """Batch 16 and exact, 2 seeds, 2 short outer iterations."""
    short = {"steps_per_iter": 4, "n_iterations": 2, "judge_init_alignment": 0.5}
    return {
        label: engine.run_study({**STUDIES[label], "seeds": [0, 1], "base": {**STUDIES[label]["base"], **short}})
        for label in ("16", "exact")
    }


def test_the_batches_join_along_batch_from_the_same_pretrained_judges(smoke):
    joined = join_batches([smoke["exact"], smoke["16"]])
    assert list(joined["batch"].values) == ["16", "exact"]
    assert joined["policy_quality"].dims == ("batch", "condition", "seed", "iteration")
    assert joined["gradient_estimator"].dims == ("batch", "condition")
    assert (joined["gradient_estimator"].sel(batch="exact") == "exact").all()
    start = joined["judge_alignment"].isel(iteration=0)
    np.testing.assert_array_equal(start.sel(batch="16"), start.sel(batch="exact"))  # the same judges
    moved = joined["policy_quality"].isel(iteration=-1)
    assert not np.array_equal(moved.sel(batch="16"), moved.sel(batch="exact"))


def test_files_that_do_not_fit_are_refused_naming_the_batch(smoke):
    with pytest.raises(ValueError, match="two results files at batch '16'"):
        join_batches([smoke["16"], smoke["16"]])
    other = smoke["exact"].copy()
    other["pretrain_alignment"] = other["pretrain_alignment"] + 0.01
    with pytest.raises(ValueError, match="batch 'exact': its pretrain_alignment differs .* other pretrained judges"):
        join_batches([smoke["16"], other])
    with pytest.raises(ValueError, match="batch 'exact': its seed values differ"):
        join_batches([smoke["16"], smoke["exact"].isel(seed=[0])])


def planted(n_seeds=12):
    """A joined batch_limit Dataset with known answers: per seed, quality(B) − quality(exact) = c_s / B
    (so the log–log slope is −1), and the three lowest exact seeds form a separate worse mode that
    batch 16 shares and batch 64 does not."""
    batches = ["16", "64", "256", "exact"]
    rng = np.random.default_rng(0)
    exact = 1.0 + 0.01 * rng.standard_normal(n_seeds)
    exact[:3] = 0.2  # the worse mode: seeds 0, 1, 2
    offsets = 1.0 + rng.random(n_seeds)
    quality = np.stack([exact + offsets / int(b) for b in batches[:-1]] + [exact])
    quality[1, :3], quality[1, 3:6] = 1.0, 0.2  # batch 64: the worse mode strikes seeds 3, 4, 5 instead
    start = np.zeros_like(quality)
    coords = {"batch": batches, "condition": ["baseline"], "seed": np.arange(n_seeds), "iteration": [0, 1]}
    dims = ("batch", "condition", "seed", "iteration")

    def metric(final):
        return (dims, np.stack([start, final], axis=-1)[:, None])

    return xr.Dataset(
        {
            "policy_quality": metric(quality),
            "judge_alignment": metric(0.5 + 0.1 * quality),
            "policy_entropy": metric(8.0 - quality),
            "diverged": (("batch", "condition", "seed"), np.zeros((4, 1, n_seeds), bool)),
        },
        coords=coords,
    )


def test_the_convergence_slope_recovers_a_planted_one_over_b():
    joined = planted().sel(batch=["16", "256", "exact"])  # batch 64 carries the moved mode
    slope = convergence_slope(joined, "policy_quality", "baseline")
    assert slope.n == 12
    np.testing.assert_allclose(slope.mean, -1.0, atol=1e-9)


def test_the_worse_mode_is_matched_seed_by_seed_against_the_exact_loop():
    rows = {row["batch"]: row for row in mode_rows(planted(), "baseline")}
    assert rows["exact"]["split"].separate and rows["exact"]["split"].k == 3
    assert rows["16"]["shared"] == 3 and rows["16"]["p"] < 0.01  # the same seeds
    assert rows["64"]["shared"] == 0 and rows["64"]["p"] == 1.0  # other seeds
    text = answers_markdown(planted())
    assert "| baseline | 16 | 3/12 | 0, 1, 2 |" in text and "| 3/3 |" in text
