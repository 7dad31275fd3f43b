"""analysis.grounding: conditions paired by their knobs, the break-even noise and its interval."""

import numpy as np
import pytest
import xarray as xr

from analysis.grounding import (
    bias_transfer,
    break_even_noise,
    budget_effect,
    grounding_markdown,
    has_grounding_conditions,
    judge_data_effects,
    noise_series,
    partner,
)
from analysis.stats import Summary
from engine.knobs import DEFAULTS

N_SEEDS, N_ITERATIONS = 40, 4
# name: (knobs away from their defaults, shift of the final quality, shift of the judge's alignment)
CONDITIONS = {
    "fresh_baseline": ({}, 0.0, 0.0),
    "accumulate_baseline": ({"judge_data": "accumulate"}, -0.2, 0.3),
    "fresh_asymmetric_10": ({"judge_update_every": 10}, 0.5, 0.0),
    "window2_asymmetric_10": ({"judge_update_every": 10, "judge_data": "window", "judge_data_window": 2}, 0.5, 0.1),
    **{
        f"anchor_0.1_noise{noise:g}": ({"anchor_fraction": 0.1, "oracle_noise": noise}, 1.5 - noise, 0.0)
        for noise in (0.0, 0.5, 1.0, 2.0)
    },
    "anchor_0.1_bias1": ({"anchor_fraction": 0.1, "oracle_bias": 1.0}, 1.0, 0.0),
    "anchor_0.1_budget204": ({"anchor_fraction": 0.1, "oracle_budget": 204}, 0.7, 0.0),
}
KNOBS = ("judge_data", "judge_data_window", "judge_update_every", "anchor_fraction", "oracle_noise")
KNOBS += ("oracle_bias", "oracle_budget")


def grounding_results(seed: int = 0, noise_sd: float = 0.1) -> xr.Dataset:
    """Final quality = the condition's shift + noise shared by a seed (pairing removes it) + small noise."""
    rng = np.random.default_rng(seed)
    shared = rng.normal(0, 1.0, size=(1, N_SEEDS, 1))
    shape = (len(CONDITIONS), N_SEEDS, N_ITERATIONS)
    quality = shared + rng.normal(0, noise_sd, size=shape)
    alignment = 0.5 + rng.normal(0, noise_sd, size=shape)
    for c, (_, shift, drift) in enumerate(CONDITIONS.values()):
        quality[c, :, 1:] += shift
        alignment[c, :, 1:] += drift
    coords = {"condition": list(CONDITIONS)}
    coords |= {
        knob: ("condition", [spec.get(knob, DEFAULTS[knob]) for spec, _, _ in CONDITIONS.values()]) for knob in KNOBS
    }
    curves = ("condition", "seed", "iteration")
    data = {
        "policy_quality": (curves, quality),
        "judge_perceived_quality": (curves, quality + alignment),
        "judge_alignment": (curves, alignment),
        "policy_entropy": (curves, np.ones(shape)),
        "judge_bias": (curves, np.zeros(shape)),
        "diverged": (("condition", "seed"), np.zeros(shape[:2], bool)),
    }
    data["judge_bias"][1][list(CONDITIONS).index("anchor_0.1_bias1")] += 0.4
    return xr.Dataset(data, coords=coords, attrs={"study_name": "grounding"})


def test_partners_differ_only_in_the_changed_knobs():
    ds = grounding_results()
    assert partner(ds, "accumulate_baseline", judge_data="fresh") == "fresh_baseline"
    assert partner(ds, "window2_asymmetric_10", judge_data="fresh", judge_data_window=1) == "fresh_asymmetric_10"
    assert partner(ds, "window2_asymmetric_10", judge_data="fresh") is None  # its window still differs
    assert partner(ds, "anchor_0.1_bias1", oracle_bias=0.0) == "anchor_0.1_noise0"
    assert has_grounding_conditions(ds)
    assert not has_grounding_conditions(ds.sel(condition=["fresh_baseline", "fresh_asymmetric_10"]))


def test_judge_data_effects_are_paired_differences_against_fresh():
    rows = {row["condition"]: row for row in judge_data_effects(grounding_results())}
    assert set(rows) == {"accumulate_baseline", "window2_asymmetric_10"}
    accumulate = rows["accumulate_baseline"]
    assert accumulate["against"] == "fresh_baseline"
    assert accumulate["final_policy_quality"].mean == pytest.approx(-0.2, abs=0.06)
    # pairing removes the seed's shared noise (sd 1): the interval is as narrow as the small noise allows
    assert accumulate["final_policy_quality"].ci_high - accumulate["final_policy_quality"].ci_low < 0.15
    assert accumulate["final_judge_alignment"].mean == pytest.approx(0.3, abs=0.06)
    assert accumulate["final_policy_quality"].n == N_SEEDS


def test_a_diverged_run_drops_its_pair():
    ds = grounding_results()
    ds["diverged"][list(CONDITIONS).index("fresh_baseline"), 3] = True
    rows = {row["condition"]: row for row in judge_data_effects(ds)}
    assert rows["accumulate_baseline"]["final_policy_quality"].n == N_SEEDS - 1


def test_the_noise_series_crosses_the_reference_where_it_was_planted():
    series = noise_series(grounding_results())
    assert list(series) == ["anchor_0.1"]
    noises, deltas = series["anchor_0.1"]
    np.testing.assert_array_equal(noises, [0.0, 0.5, 1.0, 2.0])
    # Δ(noise) = (1.5 − noise) − 0.5 = 1 − noise: zero at noise 1
    point, low, high = break_even_noise(noises, deltas)
    assert point == pytest.approx(1.0, abs=0.05)
    assert low < point < high and high - low < 0.2


def test_break_even_bounds_outside_the_grid_are_infinite():
    def summary(mean, half):
        return Summary(mean, 1.0, mean - half, mean + half, 10)

    noises = np.array([0.0, 1.0, 2.0])
    # always significantly better: no crossing on the grid
    assert break_even_noise(noises, [summary(1.0, 0.1)] * 3) == (np.inf, np.inf, np.inf)
    # never significantly better, never significantly worse: the lower end is below the grid
    point, low, high = break_even_noise(noises, [summary(0.1, 0.5), summary(-0.1, 0.5), summary(-0.2, 0.5)])
    assert point == pytest.approx(0.5) and low == -np.inf and high == np.inf


def test_bias_and_budget_rows_name_their_partners():
    ds = grounding_results()
    (bias,) = bias_transfer(ds)
    assert bias["against"] == "anchor_0.1_noise0" and bias["judge_bias"].mean == pytest.approx(0.4, abs=1e-9)
    (budget,) = budget_effect(ds)
    assert budget["unlimited"] == "anchor_0.1_noise0"
    assert budget["policy_quality_vs_unlimited"].mean == pytest.approx(-0.8, abs=0.06)
    assert budget["policy_quality_vs_reference"].mean == pytest.approx(0.2, abs=0.06)


def test_the_answers_carry_n_and_intervals():
    text = grounding_markdown(grounding_results())
    assert f"({N_SEEDS} seeds)" in text
    for heading in ("against fresh", "break-even noise", "biased towards verbosity", "scarce oracle budget"):
        assert heading in text
    assert "| anchor_0.1 |" in text and "(n 40)" in text
