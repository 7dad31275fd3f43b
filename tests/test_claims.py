"""Claims verdicts on synthetic Datasets whose truth is known by construction."""

import numpy as np
import pytest
import xarray as xr

from analysis.claims import REGISTRY, VERDICTS, claims_markdown, evaluate_claims, write_claims
from engine.cli.main import main

N_SEEDS, N_ITER = 20, 10
VARIABLES = ["policy_quality", "judge_alignment", "policy_entropy", "judge_perceived_quality", "meta_judge_accuracy"]


def baseline_curves(rng, n_seeds=N_SEEDS, worse_share=0.2) -> dict:
    """(seed, iteration) curves shaped like the published baseline, with a lower final mode."""
    t = np.arange(N_ITER + 1)
    finals = np.where(np.arange(n_seeds) < round(worse_share * n_seeds), 0.98, 1.75)
    finals = finals + rng.normal(0, 0.01, n_seeds)
    start = -0.73 + rng.normal(0, 0.02, n_seeds)
    share = np.array([0.0, 0.86, 0.98] + [0.99 + 0.001 * k for k in range(N_ITER - 3)] + [1.0])
    quality = start[:, None] + (finals - start)[:, None] * share[None, :]
    alignment = 0.48 + 0.23 * np.exp(-1.2 * t)[None, :] + rng.normal(0, 0.005, (n_seeds, t.size))
    entropy = 8.3 * np.exp(-1.6 * t)[None, :] + rng.uniform(0, 0.01, (n_seeds, t.size))
    perceived = quality + 0.2 * t[None, :] + rng.normal(0, 0.01, (n_seeds, t.size))
    return {
        "policy_quality": quality,
        "judge_alignment": alignment,
        "policy_entropy": entropy,
        "judge_perceived_quality": perceived,
        "meta_judge_accuracy": np.full_like(quality, np.nan),
    }


ANCHOR_FRACTIONS = {"anchor_0.1": 0.1, "anchor_0.05": 0.05}  # the oracle conditions of the published study


def dataset(conditions: dict, anchor_fractions=ANCHOR_FRACTIONS) -> xr.Dataset:
    """conditions: name -> dict of (seed, iteration) curves (missing variables copied from baseline).

    Knob coordinates as `coevo run` writes them: here only anchor_fraction, which claims read.
    """
    names = list(conditions)
    base = conditions["baseline"] if "baseline" in conditions else next(iter(conditions.values()))
    data = {
        v: (("condition", "seed", "iteration"), np.stack([{**base, **conditions[c]}[v] for c in names]))
        for v in VARIABLES
    }
    quality = data["policy_quality"][1]
    n_seeds = quality.shape[1]
    data["final_quality"] = (("condition", "seed"), quality[..., -1])
    data["peak_iteration"] = (("condition", "seed"), quality.argmax(-1))
    data["diverged"] = (("condition", "seed"), np.zeros((len(names), n_seeds), bool))
    coords = {
        "condition": names,
        "seed": np.arange(n_seeds),
        "iteration": np.arange(N_ITER + 1),
        "anchor_fraction": ("condition", [anchor_fractions.get(c, 0.0) for c in names]),
    }
    return xr.Dataset(data, coords=coords)


@pytest.fixture
def base():
    return baseline_curves(np.random.default_rng(0))


def shifted(curves: dict, delta: float) -> dict:
    return {**curves, "policy_quality": curves["policy_quality"] + delta}


def verdicts(ds) -> dict:
    return {c.name.split(".")[0]: c.verdict for c in evaluate_claims(ds)}


def test_every_claim_has_a_valid_verdict_and_baseline_claims_hold(base):
    claims = evaluate_claims(dataset({"baseline": base}))
    assert [c.name for c in claims] == [name for name, *_ in REGISTRY]
    assert all(c.verdict in VERDICTS and c.measurement for c in claims)
    v = verdicts(dataset({"baseline": base}))
    assert [v[str(i)] for i in range(1, 6)] == ["holds"] * 5
    assert [v[str(i)] for i in range(6, 12)] == ["n/a"] * 6  # no other condition


def test_slower_judge_updates(base):
    assert verdicts(dataset({"baseline": base, "asymmetric_10": shifted(base, 0.5)}))["6"] == "holds"
    assert verdicts(dataset({"baseline": base, "asymmetric_10": shifted(base, 0.05)}))["6"] == "partly"
    assert verdicts(dataset({"baseline": base, "asymmetric_10": base}))["6"] == "does not hold"
    assert verdicts(dataset({"baseline": base, "asymmetric_5": shifted(base, 0.5)}))["6"] == "n/a"


def test_a_diverged_run_is_left_out_not_fatal(base):
    ds = dataset({"baseline": base, "asymmetric_10": shifted(base, 0.5)})
    ds["policy_quality"].loc[dict(condition="asymmetric_10", seed=3)] = np.nan
    ds["diverged"].loc[dict(condition="asymmetric_10", seed=3)] = True
    assert verdicts(ds)["6"] == "holds"


def test_worse_mode_needs_a_separate_lower_group():
    rng = np.random.default_rng(1)
    assert verdicts(dataset({"baseline": baseline_curves(rng, worse_share=0.2)}))["5"] == "holds"
    assert verdicts(dataset({"baseline": baseline_curves(rng, worse_share=0.5)}))["5"] == "partly"
    assert verdicts(dataset({"baseline": baseline_curves(rng, worse_share=0.0)}))["5"] == "does not hold"


def test_meta_with_slow_updates(base):
    conditions = {"baseline": base, "meta_1": shifted(base, 0.1), "asymmetric_10": shifted(base, 0.3)}
    assert verdicts(dataset(conditions | {"asym_meta_10": shifted(base, 0.5)}))["7"] == "holds"
    assert verdicts(dataset(conditions | {"asym_meta_10": shifted(base, 0.3)}))["7"] == "partly"
    assert verdicts(dataset(conditions | {"asym_meta_10": base}))["7"] == "does not hold"


def test_ensembles_and_frozen_and_anchor(base):
    q = base["policy_quality"]
    narrow = {**base, "policy_quality": q.mean(0) + 0.8 * (q - q.mean(0))}
    frozen = {**base, "judge_alignment": np.repeat(base["judge_alignment"][:, :1], N_ITER + 1, axis=1)}
    ds = dataset({"baseline": base, "ensemble_5": narrow, "frozen": frozen, "anchor_0.1": shifted(base, 1.0)})
    v = verdicts(ds)
    assert (v["8"], v["10"], v["11"]) == ("holds", "holds", "holds")
    v = verdicts(dataset({"baseline": base, "ensemble_5": shifted(base, 0.5), "frozen": shifted(frozen, 0.5)}))
    assert (v["8"], v["10"], v["11"]) == ("does not hold", "partly", "n/a")


def test_resets_help_noisily(base):
    q = base["policy_quality"]
    noisy = {**base, "policy_quality": q + 0.2 + np.random.default_rng(2).normal(0, 0.3, (N_SEEDS, 1))}
    v = verdicts(dataset({"baseline": base, "reinit_3": noisy, "asymmetric_10": shifted(base, 0.5)}))
    assert v["9"] == "holds"
    assert verdicts(dataset({"baseline": base, "reinit_3": shifted(base, -0.2)}))["9"] == "does not hold"


def test_markdown_has_every_claim_and_label(base, tmp_path):
    datasets = {"20 seeds": dataset({"baseline": base}), "other": dataset({"baseline": shifted(base, 0.1)})}
    text = claims_markdown(datasets)
    for name, statement, *_ in REGISTRY:
        assert name in text and statement in text
    assert "measurement (20 seeds)" in text and "verdict (other)" in text
    write_claims(datasets, tmp_path / "c.md")
    assert (tmp_path / "c.md").read_text() == text


def test_cli_claims(base, tmp_path, capsys):
    path = tmp_path / "r.nc"
    dataset({"baseline": base}).to_netcdf(path, engine="netcdf4")
    assert main(["claims", str(path), "--out", str(tmp_path / "claims.md")]) == 0
    assert "verdict (20 seeds)" in capsys.readouterr().out
    assert "1. Quality jumps" in (tmp_path / "claims.md").read_text()
    assert main(["claims", str(tmp_path / "missing.nc")]) == 2


def test_too_few_seeds_to_decide(base):
    two = {k: v[:2] for k, v in base.items()}
    claims = evaluate_claims(dataset({"baseline": two, "asymmetric_10": shifted(two, 0.5)}))
    decided = [c for c in claims if c.verdict not in ("not enough seeds", "n/a")]
    assert not decided, decided
    assert claims[0].measurement.startswith("not enough seeds (n = 2; this claim needs at least 3)")
    assert "**not enough seeds**" in claims_markdown({"2 seeds": dataset({"baseline": two})})


def test_worse_mode_needs_five_seeds():
    four = baseline_curves(np.random.default_rng(1), n_seeds=4, worse_share=0.25)
    five = baseline_curves(np.random.default_rng(1), n_seeds=5, worse_share=0.2)
    assert verdicts(dataset({"baseline": four}))["5"] == "not enough seeds"
    assert verdicts(dataset({"baseline": five}))["5"] == "holds"
    assert verdicts(dataset({"baseline": four}))["1"] == "holds"  # other claims decide from 3 seeds


def test_diverged_runs_can_leave_too_few_pairs(base):
    ds = dataset({"baseline": base, "asymmetric_10": shifted(base, 0.5)}).isel(seed=slice(0, 4))
    ds["policy_quality"].loc[dict(condition="asymmetric_10", seed=[0])] = np.nan
    ds["policy_quality"].loc[dict(condition="baseline", seed=[1])] = np.nan
    assert verdicts(ds)["6"] == "not enough seeds"  # 3 seeds each, but only 2 complete pairs


def test_oracle_conditions_are_told_by_their_anchor_fraction_not_their_name(base):
    conditions = {"baseline": base, "anchor_0.1": shifted(base, 1.0), "anchored_name": shifted(base, 2.0)}
    assert verdicts(dataset(conditions))["11"] == "does not hold"  # anchored_name has no anchor: it is a rival
    oracles = {**ANCHOR_FRACTIONS, "anchored_name": 0.3}
    assert verdicts(dataset(conditions, anchor_fractions=oracles))["11"] == "holds"
    assert verdicts(dataset(conditions).drop_vars("anchor_fraction"))["11"] == "n/a"
