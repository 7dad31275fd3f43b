"""The gao studies and their analysis (studies/gao*.py, analysis/gao_study.py): planted α, β and trend
slopes recovered from synthetic results files, the iterated form told from the plain one, the study
files' conditions and shared judges, and a small run of both studies through the analysis."""

import numpy as np
import pytest
import xarray as xr

import engine
from analysis.gao_study import (
    RL,
    analyse,
    gao_outputs,
    has_gao_conditions,
    iterated_form,
    reference_conditions,
    series,
    summary_row,
    trend,
)
from engine.cli.main import load_study
from engine.knobs import KNOBS

STEPS_PER_ITER = 20
RECORD_EVERY = 2
WIDTHS = (8, 32, 128)
PARAMETERS = {8: 745, 32: 4897, 128: 56065}  # the lab's judge parameter counts at these widths
ALPHA0, ALPHA_SLOPE, BETA0, BETA_SLOPE = 1.5, -0.08, 0.2, 0.03


def synthetic(n_seeds: int = 6, rounds: int = 2, k_of_round=None, seed: int = 0) -> tuple[xr.Dataset, dict]:
    """A step-resolved results file over the judge widths, frozen and co-evolving, whose gold gain is
    d(α − β·log d + β·log k) exactly, with α, β = a line in log parameters + a seed's offset + noise.

    k_of_round: k of each record from its outer iteration (None: k = 1, the plain RL form).
    Returns the Dataset and the planted (condition, seed) α and β.
    """
    rng = np.random.default_rng(seed)
    steps = np.arange(0, rounds * STEPS_PER_ITER + 1, RECORD_EVERY)
    names, knobs = [], []
    for frozen in (True, False):
        for width in WIDTHS:
            names.append(f"{'frozen' if frozen else 'coevolving'}_w{width}")
            knobs.append({"freeze_judge": frozen, "judge_hidden": width})
    x = np.log([PARAMETERS[k["judge_hidden"]] for k in knobs])
    shift = np.array([0.0 if k["freeze_judge"] else -0.1 for k in knobs])  # co-evolving: α lower by 0.1
    alpha = ALPHA0 + shift[:, None] + ALPHA_SLOPE * x[:, None] + rng.normal(0, 0.05, n_seeds)[None, :]
    alpha = alpha + rng.normal(0, 0.01, (len(names), n_seeds))
    beta = BETA0 + BETA_SLOPE * x[:, None] + rng.normal(0, 0.02, (len(names), n_seeds))
    speed = rng.uniform(0.8, 1.2, (len(names), n_seeds, 1))
    d = speed * 2.5 * np.sqrt(steps / steps[-1])[None, None, :]  # d = 0 at step 0 only
    rounds_of = np.ceil(steps / STEPS_PER_ITER)
    k = np.ones_like(rounds_of) if k_of_round is None else np.maximum(rounds_of, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = np.where(d > 0, d * (alpha[..., None] - beta[..., None] * (np.log(d) - np.log(k))), 0.0)
    dims = ("condition", "seed", "step")
    ds = xr.Dataset(
        {
            "kl_to_initial": (dims, d**2),
            "policy_quality": (dims, 0.3 + gain),
            "judge_perceived_quality": (dims, 0.1 + 0.8 * gain),
            "pretrain_alignment": (("condition", "seed"), rng.uniform(0.7, 0.75, (len(names), n_seeds))),
            "diverged": (("condition", "seed"), np.zeros((len(names), n_seeds), bool)),
        },
        coords={
            "condition": names,
            "seed": np.arange(n_seeds),
            "step": steps,
            "freeze_judge": ("condition", [k["freeze_judge"] for k in knobs]),
            "judge_hidden": ("condition", [k["judge_hidden"] for k in knobs]),
            "judge_init_alignment": ("condition", [0.7] * len(names)),
            "update_rule": ("condition", ["reinforce"] * len(names)),
            "reset_every": ("condition", [0] * len(names)),
            "steps_per_iter": ("condition", [STEPS_PER_ITER] * len(names)),
            "judge_parameters": ("condition", [PARAMETERS[k["judge_hidden"]] for k in knobs]),
        },
        attrs={"study_name": "synthetic"},
    )
    return ds, {"alpha": alpha, "beta": beta}


def test_planted_coefficients_and_their_trend_slopes_are_recovered():
    ds, planted = synthetic()
    analysis = analyse(ds)
    for window in ("iteration 1", "whole run"):
        fits = analysis.rl[window]["rl"]
        for field in ("alpha", "beta"):
            np.testing.assert_allclose(fits[field].values, planted[field], rtol=1e-9)
        assert np.all(fits["r_squared"].values > 1 - 1e-12)
    assert [(s.loop, s.axis) for s in analysis.series] == [
        ("frozen reinforce", "width"),
        ("co-evolving reinforce", "width"),
    ]
    fits = analysis.rl["whole run"]["rl"]
    for s in analysis.series:
        x = np.log(ds["judge_parameters"].sel(condition=list(s.conditions)).astype(float)).broadcast_like(
            ds["pretrain_alignment"].sel(condition=list(s.conditions))
        )
        for field, slope in (("alpha", ALPHA_SLOPE), ("beta", BETA_SLOPE)):
            summary = trend(fits, field, x, s.conditions)
            # the per-seed slope of planted values, exactly: the mean of the seeds' own regressions
            per_seed = [
                np.polyfit(
                    x.values[:, i], planted[field][[ds.indexes["condition"].get_loc(c) for c in s.conditions], i], 1
                )[0]
                for i in range(ds.sizes["seed"])
            ]
            assert summary.mean == pytest.approx(np.mean(per_seed), rel=1e-9)
            assert summary.ci_low < slope < summary.ci_high and summary.n == ds.sizes["seed"]


def test_coevolution_shift_is_recovered_paired_by_seed():
    ds, planted = synthetic()
    analysis = analyse(ds)
    fits = analysis.rl["iteration 1"]["rl"]
    for width in WIDTHS:
        delta = fits["alpha"].sel(condition=f"coevolving_w{width}") - fits["alpha"].sel(condition=f"frozen_w{width}")
        assert float(delta.mean()) == pytest.approx(-0.1, abs=0.02)


def test_the_trend_slope_is_zero_without_a_planted_trend():
    """Not a property of any data: a flat α gives a slope interval around 0, so the test above can fail."""
    ds, _ = synthetic()
    ds = ds.assign(policy_quality=0.3 + np.sqrt(ds["kl_to_initial"]))  # R = d: α = 1, β = 0 everywhere
    analysis = analyse(ds)
    s = analysis.series[0]
    x = np.log(ds["judge_parameters"].sel(condition=list(s.conditions)).astype(float)).broadcast_like(
        ds["pretrain_alignment"].sel(condition=list(s.conditions))
    )
    assert abs(trend(analysis.rl["whole run"]["rl"], "alpha", x, s.conditions).mean) < 1e-9


def test_the_iterated_form_is_recovered_and_fits_better_than_the_plain_one():
    ds, planted = synthetic(rounds=3, k_of_round=True)
    analysis = analyse(ds)
    np.testing.assert_allclose(analysis.iterated["alpha"].values, planted["alpha"], rtol=1e-9)
    np.testing.assert_allclose(analysis.iterated["beta"].values, planted["beta"], rtol=1e-9)
    plain = analysis.rl["whole run"]["rl"]
    assert np.all(plain["rmse"].values > 100 * analysis.iterated["rmse"].values + 1e-6)
    # and a curve with k = 1 throughout is the plain form's, which the iterated form then fits worse
    ds1, planted1 = synthetic(rounds=3)
    analysis1 = analyse(ds1)
    np.testing.assert_allclose(analysis1.rl["whole run"]["rl"]["alpha"].values, planted1["alpha"], rtol=1e-9)
    assert np.all(analysis1.iterated["rmse"].values > 100 * analysis1.rl["whole run"]["rl"]["rmse"].values + 1e-6)


def test_iterated_form_is_rl_form_with_k_per_point():
    d = np.linspace(0.1, 3, 7)
    k = np.array([1, 1, 2, 2, 3, 3, 3])
    expected = 1.1 * d - 0.3 * d * (np.log(d) - np.log(k))
    np.testing.assert_allclose(iterated_form(k).curve(d, 1.1, 0.3), expected, rtol=1e-12)


def test_a_diverged_run_is_left_out():
    ds, _ = synthetic()
    ds["diverged"][0, 0] = True
    ds["policy_quality"][0, 0, 3] = np.nan
    fits = analyse(ds).rl["iteration 1"]["rl"]
    assert np.isnan(fits["alpha"].values[0, 0]) and np.isfinite(fits["alpha"].values[0, 1:]).all()
    assert summary_row(fits, ds["condition"].values[0], RL)["n"] == ds.sizes["seed"] - 1


def test_rl_curves_refuse_a_per_iteration_file():
    ds, _ = synthetic()
    per_iteration = ds.isel(step=[0, -1]).rename(step="iteration")
    assert not has_gao_conditions(per_iteration)
    with pytest.raises(ValueError, match="step-resolved"):
        analyse(per_iteration)


# ---------------------------------------------------------------------------------------------
# The study files


def resolved(name: str):
    return engine.resolve(load_study(name), None)


PRETRAINING = [name for name, knob in KNOBS.items() if knob.pretrain] + ["policy_hidden"]


def judge_of(knobs: dict) -> tuple:
    """What π₀ and the pretrained judge depend on besides the seed and the study's sizes."""
    return tuple(knobs[name] for name in PRETRAINING)


def test_the_study_files_hold_the_intended_conditions():
    gao, alignment, bon = resolved("gao"), resolved("gao_alignment"), resolved("gao_best_of_n")
    assert len(gao.conditions) == 20 and len(alignment.conditions) == 18 and len(bon.conditions) == 8
    cells = {(k["freeze_judge"], k["update_rule"], k["judge_hidden"]) for k in gao.conditions.values()}
    assert cells == {(f, r, w) for f in (True, False) for r in ("reinforce", "dpo") for w in (8, 16, 32, 64, 128)}
    assert {k["judge_init_alignment"] for k in gao.conditions.values()} == {KNOBS["judge_init_alignment"].default}
    cells = {
        (k["freeze_judge"], k["update_rule"], k["judge_init_alignment"], k["reset_every"])
        for k in alignment.conditions.values()
    }
    expected = {(f, r, a, 0) for f in (True, False) for r in ("reinforce", "dpo") for a in (0.3, 0.5, 0.7, 0.9)}
    assert cells == expected | {(False, "reinforce", 0.7, 1), (False, "dpo", 0.7, 1)}
    assert {k["judge_hidden"] for k in alignment.conditions.values()} == {32}
    for study in (gao, alignment):
        assert study.seeds == tuple(range(30))
        assert study.sizes.steps_per_iter // study.sizes.record_every >= 50  # records in outer iteration 1
        assert study.sizes.n_iterations == 5
    # the best-of-n study holds exactly the judges of both, with their seeds and pretraining sizes
    judges = {judge_of(k) for study in (gao, alignment) for k in study.conditions.values()}
    assert {judge_of(k) for k in bon.conditions.values()} == judges
    assert bon.seeds == gao.seeds and bon.sizes.save_distributions == "all"
    for size in ("batch_size", "pretrain_check_every", "pretrain_max_steps"):
        assert getattr(bon.sizes, size) == getattr(gao.sizes, size) == getattr(alignment.sizes, size)


# ---------------------------------------------------------------------------------------------
# A small run of both studies, through the analysis


SMALL_SIZES = {"batch_size": 32, "steps_per_iter": 8, "n_iterations": 2, "pretrain_check_every": 50}
SMALL_CONDITIONS = [f"{judge}_reinforce_align{a}" for judge in ("frozen", "coevolving") for a in (0.3, 0.5)]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """gao_alignment's reinforce conditions at ρ 0.3, 0.5 and gao_best_of_n's judges of them, 2 seeds,
    8 inner steps per iteration: one compiled group each (judge_init_alignment is a run knob)."""
    rl_study, bon_study = load_study("gao_alignment"), load_study("gao_best_of_n")
    rl = engine.run_study(
        {
            "name": "gao_alignment",
            "seeds": [0, 1],
            "base": {**rl_study["base"], **SMALL_SIZES, "record_every": 2},
            "conditions": {name: rl_study["conditions"][name] for name in SMALL_CONDITIONS},
        }
    )
    bon = engine.run_study(
        {
            "name": "gao_best_of_n",
            "seeds": [0, 1],
            "base": {**bon_study["base"], "batch_size": SMALL_SIZES["batch_size"]},
            "conditions": {name: bon_study["conditions"][name] for name in ("align0.3", "align0.5")},
        }
    )
    return rl, bon, tmp_path_factory.mktemp("gao")


def test_both_studies_start_from_the_same_policy_and_judges(small_run):
    rl, bon, _ = small_run
    for a in (0.3, 0.5):
        first = rl.sel(condition=f"frozen_reinforce_align{a}").isel(step=0)
        saved = bon.sel(condition=f"align{a}")
        for name in ("pretrain_steps", "pretrain_alignment"):
            np.testing.assert_array_equal(first[name].values, saved[name].values)
        start = saved.isel(iteration=0)
        for name in ("policy_quality", "judge_perceived_quality", "judge_alignment"):
            np.testing.assert_allclose(first[name].values, start[name].values, rtol=1e-6)


def test_a_small_run_goes_through_the_analysis(small_run):
    rl, bon, out = small_run
    assert has_gao_conditions(rl)
    assert [(s.loop, s.axis) for s in series(rl)] == [
        ("frozen reinforce", "alignment"),
        ("co-evolving reinforce", "alignment"),
    ]
    assert reference_conditions(rl) == {}  # no 0.7 judge in this small run: no iterated figure
    written = gao_outputs(rl, out, "small", bon)
    names = sorted(p.rsplit("/", 1)[-1] for p in written)
    assert names == ["small_answers.md", "small_coefficients.png", "small_curves.png", "small_fits.csv"]
    answers = (out / "small_answers.md").read_text()
    assert all(name in answers for name in SMALL_CONDITIONS) and "Best-of-n" in answers
