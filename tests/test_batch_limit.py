"""studies/batch_limit.py and analysis.batch_limit: five studies, one per batch size and exact, that
start from the same pretrained judges, joined along a `batch` dimension."""

import numpy as np
import pytest

import engine
from analysis.batch_limit import join_batches
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
