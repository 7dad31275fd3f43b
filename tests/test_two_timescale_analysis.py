"""analysis.two_timescale on synthetic files whose gaps follow known powers of ε: pairs found by their
knobs, the slopes recovered with intervals that hold the truth and exclude the wrong power, the breakdown
ratio, a phase diagram's collapse boundary in ε, and the outputs the report writes."""

import numpy as np
import pytest
import xarray as xr

from analysis.formatting import knob_value
from analysis.report import output_paths
from analysis.two_timescale import (
    DESCRIBES,
    breakdown,
    has_best_response_pairs,
    pair_gaps,
    phase_boundary,
    response_pairs,
    slope_of,
    timescale_markdown,
    timescale_outputs,
    timescale_ratio,
)

N_SEEDS, N_RECORDS, LR_POLICY = 12, 4, 3e-4
# setting: (judge_update_every, lr_judge, frozen) -> ε = 1, 0.1, 0.01, 0.333 (lr 1e-4 every step), 0
SETTINGS = {"a": (1, 3e-4, False), "b": (10, 3e-4, False), "c": (100, 3e-4, False), "d": (1, 1e-4, False)}
SETTINGS["e"] = (1, 3e-4, True)
FLOOR, KL_SCALE, ALIGNMENT_SCALE, QUALITY_SCALE = 0.3, 2.0, 0.3, 0.5


def timescale_results(seed: int = 0) -> xr.Dataset:
    """Paired trained / best_response runs (names say nothing of which is which) where, per seed:
    best_response_kl = floor + KL_SCALE·ε² (trained; 0 best_response), |Δ alignment| = ALIGNMENT_SCALE·ε,
    |Δ quality| = QUALITY_SCALE·ε^1.5, each times a seed's lognormal factor."""
    rng = np.random.default_rng(seed)
    names, rows = [], []
    for i, (setting, (every, lr, frozen)) in enumerate(SETTINGS.items()):
        for response in ("trained", "best_response"):
            names.append(f"{setting}{i if response == 'trained' else i + 10}")
            rows.append((response, every, lr, frozen))
    shape = (len(names), N_SEEDS, N_RECORDS)
    floor = FLOOR * np.exp(rng.normal(0, 0.1, N_SEEDS))
    kl, alignment, quality = np.zeros(shape), np.full(shape, 0.7), np.full(shape, 1.5)
    entropy = np.full(shape, 4.0) + rng.normal(0, 0.01, shape)
    for c, (response, every, lr, frozen) in enumerate(rows):
        ratio = 0.0 if frozen else lr / every / LR_POLICY
        if response == "trained":
            kl[c, :, 1:] = (floor + KL_SCALE * ratio**2 * np.exp(rng.normal(0, 0.1, N_SEEDS)))[:, None]
            alignment[c, :, -1] -= ALIGNMENT_SCALE * ratio * np.exp(rng.normal(0, 0.1, N_SEEDS))
            quality[c, :, -1] += QUALITY_SCALE * ratio**1.5 * np.exp(rng.normal(0, 0.1, N_SEEDS))
    kl[:, :, 0] = 11.0 * np.array([row[0] == "trained" for row in rows])[:, None]
    curves = ("condition", "seed", "iteration")
    coords = {
        "condition": names,
        "iteration": np.arange(N_RECORDS),
        "policy_response": ("condition", [row[0] for row in rows]),
        "judge_update_every": ("condition", [row[1] for row in rows]),
        "lr_judge": ("condition", [row[2] for row in rows]),
        "freeze_judge": ("condition", [row[3] for row in rows]),
        "lr_policy": ("condition", [LR_POLICY] * len(rows)),
    }
    data = {
        "best_response_kl": (curves, kl),
        "judge_alignment": (curves, alignment),
        "policy_quality": (curves, quality),
        "policy_entropy": (curves, entropy),
        "diverged": (("condition", "seed"), np.zeros(shape[:2], bool)),
    }
    return xr.Dataset(data, coords=coords, attrs={"study_name": "two_timescale"})


def test_the_ratio_and_the_pairs_come_from_the_knobs():
    ds = timescale_results()
    ratio = timescale_ratio(ds)
    np.testing.assert_allclose(ratio.values, np.repeat([1.0, 0.1, 0.01, 1 / 3, 0.0], 2))
    assert response_pairs(ds) == [("a0", "a10"), ("b1", "b11"), ("c2", "c12"), ("d3", "d13"), ("e4", "e14")]
    assert has_best_response_pairs(ds)
    assert not has_best_response_pairs(ds.sel(condition=["a0", "b1"]))


def test_the_gaps_and_their_slopes_recover_the_planted_powers():
    gaps = pair_gaps(timescale_results())
    assert [gap.ratio for gap in gaps] == sorted(gap.ratio for gap in gaps) and gaps[0].ratio == 0
    by_ratio = {round(gap.ratio, 3): gap for gap in gaps}
    np.testing.assert_allclose(by_ratio[0.0].summary("excess").mean, 0.0, atol=1e-12)
    np.testing.assert_allclose(by_ratio[1.0].summary("excess").mean, KL_SCALE, rtol=0.1)
    np.testing.assert_allclose(by_ratio[0.1].summary("judge_alignment").mean, ALIGNMENT_SCALE * 0.1, rtol=0.1)
    assert by_ratio[0.1].summary("judge_alignment").n == N_SEEDS
    for name, power, wrong in (("excess", 2, 1), ("judge_alignment", 1, 2), ("policy_quality", 1.5, 1)):
        slope = slope_of(gaps, name)
        assert slope.n == N_SEEDS and slope.ci_low < power < slope.ci_high, (name, slope)
        assert not slope.ci_low < wrong < slope.ci_high, (name, slope)
    raw = slope_of(gaps, "tracking")  # the frozen judge's floor flattens the raw KL's slope
    assert raw.ci_high < 2


def test_the_reduced_dynamics_describe_the_loop_up_to_the_ratio_where_the_alignment_gap_passes_the_tolerance():
    """|Δ alignment| = 0.3·ε: 0.003 at ε 0.01, 0.03 at 0.1, 0.1 at 1/3, 0.3 at 1, against 0.05."""
    assert DESCRIBES == pytest.approx(0.05)
    described, departs = breakdown(pair_gaps(timescale_results()))
    assert described == pytest.approx(0.1) and departs == pytest.approx(1 / 3)


def test_a_diverged_run_drops_its_pair():
    ds = timescale_results()
    ds["diverged"].loc[{"condition": "a10", "seed": 3}] = True
    gap = next(gap for gap in pair_gaps(ds) if gap.trained == "a0")
    assert gap.summary("judge_alignment").n == N_SEEDS - 1 and gap.summary("tracking").n == N_SEEDS


def phase_results(collapsed_cells) -> xr.Dataset:
    """A judge_update_every {1, 10} × lr_judge {1e-4, 1e-3} grid and a frozen control, 4 seeds: the cells
    in `collapsed_cells` lose their entropy and their judge's alignment."""
    cells = [(every, lr) for every in (1, 10) for lr in (1e-4, 1e-3)]
    rows = [(*cell, False) for cell in cells] + [(1, 3e-4, True)]
    shape = (len(rows), 4, 3)
    rng = np.random.default_rng(1)
    entropy, alignment = np.full(shape, 6.0), np.full(shape, 0.7)
    for c, (every, lr, _) in enumerate(rows):
        if (every, lr) in collapsed_cells:
            entropy[c, :, 1:], alignment[c, :, 1:] = 0.1, 0.2
    curves = ("condition", "seed", "iteration")
    coords = {
        "condition": [f"jue_{every}+lj_{lr:g}" for every, lr, _ in rows[:-1]] + ["frozen"],
        "judge_update_every": ("condition", [row[0] for row in rows]),
        "lr_judge": ("condition", [row[1] for row in rows]),
        "freeze_judge": ("condition", [row[2] for row in rows]),
        "lr_policy": ("condition", [LR_POLICY] * len(rows)),
    }
    data = {
        "policy_quality": (curves, 1.0 + rng.normal(0, 0.1, shape)),
        "judge_alignment": (curves, alignment),
        "policy_entropy": (curves, entropy),
        "judge_perceived_quality": (curves, np.ones(shape)),
        "diverged": (("condition", "seed"), np.zeros(shape[:2], bool)),
    }
    return xr.Dataset(data, coords=coords, attrs={"study_name": "phase"})


def test_the_phase_diagrams_collapse_boundary_is_placed_in_the_ratio():
    """ε of the cells: (1, 1e-4) 1/3, (1, 1e-3) 10/3, (10, 1e-4) 1/30, (10, 1e-3) 1/3."""
    boundary = phase_boundary(phase_results({(1, 1e-3)}))
    assert boundary.healthy_below == pytest.approx(1 / 3) and boundary.collapsed_from == pytest.approx(10 / 3)
    assert boundary.separated and len(boundary.cells) == 4
    mixed = phase_boundary(phase_results({(1, 1e-3), (10, 1e-3)}))
    assert mixed.collapsed_from == pytest.approx(1 / 3) and mixed.healthy_below == pytest.approx(1 / 3)
    assert not mixed.separated


def test_the_answers_and_the_figure_are_written(tmp_path):
    ds = timescale_results()
    phase = phase_results({(1, 1e-3)})
    written = timescale_outputs(ds, tmp_path, "two_timescale", phase)
    assert [path.rsplit("/", 1)[1] for path in written] == [
        "two_timescale_timescales.png",
        "two_timescale_timescale_answers.md",
    ]
    text = (tmp_path / "two_timescale_timescale_answers.md").read_text()
    assert "up to ε = 0.1; its interval lies above it from ε = 0.333 on" in text
    assert "collapsed cells start at ε = 3.33: ε alone separates them" in text
    assert text == timescale_markdown(ds, phase)
    names = {path.name for path in output_paths(tmp_path, "two_timescale", ds)}
    assert {"two_timescale_timescales.png", "two_timescale_timescale_answers.md"} <= names


def test_a_grid_over_a_categorical_knob_gets_its_choices_as_labels():
    """A study pairing the responses over judge_update_every reads as a 2-knob grid (analysis.phase draws it):
    its labels are the choices as they are."""
    assert knob_value("best_response") == "best_response"
    assert [knob_value(v) for v in (True, 10, 3e-4)] == ["true", "10", "0.0003"]
