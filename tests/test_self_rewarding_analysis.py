"""analysis.self_rewarding on a hand-built Dataset whose answers are known by construction."""

import numpy as np
import pytest
import xarray as xr

from analysis.self_rewarding import (
    EFFECTIVE_GAP,
    Q_BUY,
    Q_ENTROPY,
    Q_KEEP,
    Q_SHRINK,
    answer_files,
    answer_rows,
    answers,
    baseline_of,
    find,
    ratio_of_means,
    regulariser_conditions,
)
from engine.knobs import DEFAULTS

N_SEEDS, N_ITERATIONS = 8, 5
# name: knobs away from the defaults; the synthetic values below depend on the knobs only
CONDITIONS = {
    "baseline": {},
    "vanilla": {"update_rule": "dpo"},
    "anchored": {"update_rule": "dpo", "anchored_rejection": True},
    "anchored_future": {"update_rule": "dpo", "anchored_rejection": True, "future_chosen": True},
    "frozen": {"update_rule": "dpo", "freeze_judge": True},
    "ent": {"entropy_exact": 0.1},
    "kl_k1": {"kl_penalty": 0.1, "kl_estimator": "k1"},
}
KNOBS = ("update_rule", "anchored_rejection", "future_chosen", "freeze_judge", "entropy_exact", "kl_penalty")
KNOBS += ("kl_estimator", "judge_anchor", "steps_per_iter")


def synthetic(noise: float = 0.01, seed: int = 0) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    shape = (len(CONDITIONS), N_SEEDS, N_ITERATIONS)
    iteration = np.arange(N_ITERATIONS)
    gap = np.empty(shape)
    quality = np.ones(shape) + rng.normal(0, noise, shape)
    perceived = np.ones(shape) + rng.normal(0, noise, shape)
    entropy = np.broadcast_to(8.0 * 0.25**iteration, shape).copy()
    for i, name in enumerate(CONDITIONS):
        # vanilla's gap falls 8× from iteration 1 to 4 (2 → 0.25); anchored's stays at 2
        decay = 2.0 * 0.5 ** np.maximum(iteration - 1, 0)
        gap[i] = (2.0 if "anchored" in name else decay) * (1 + rng.normal(0, noise, (N_SEEDS, N_ITERATIONS)))
    index = list(CONDITIONS).index
    quality[index("anchored")] += 0.3  # anchoring buys 0.3 of real quality ...
    perceived[index("anchored")] += 0.5  # ... and 0.5 of perceived
    entropy[index("ent"), :, 2] += 1.0  # the exact entropy regulariser keeps 1 nat at iteration 2 ...
    quality[index("ent"), :, -1] -= 0.2  # ... at a cost of 0.2 in final quality
    keep = np.full(shape, 0.5)
    data = {
        "train_pair_gap_judge": gap,
        "best_worst_gap_judge": gap / 2,
        "pair_keep_rate": keep,
        "policy_quality": quality,
        "judge_perceived_quality": perceived,
        "policy_entropy": entropy,
    }
    variables = {name: (("condition", "seed", "iteration"), values.astype(np.float32)) for name, values in data.items()}
    variables["diverged"] = (("condition", "seed"), np.zeros(shape[:2], bool))
    coords = {"condition": list(CONDITIONS), "seed": np.arange(N_SEEDS), "iteration": iteration}
    for knob in KNOBS:
        values = [CONDITIONS[c].get(knob, DEFAULTS[knob]) for c in CONDITIONS]
        coords[knob] = ("condition", np.array(values, object if isinstance(values[0], str) else None))
    return xr.Dataset(variables, coords=coords)


@pytest.fixture(scope="module")
def ds():
    return synthetic()


def _row(rows, question, *parts):
    found = [r for r in rows if r.question == question and all(p in r.measurement for p in parts)]
    assert len(found) == 1, (parts, [r.measurement for r in rows])
    return found[0]


def test_conditions_are_found_by_their_knobs(ds):
    assert baseline_of(ds) == "baseline"
    assert baseline_of(ds.drop_sel(condition="baseline"), "baseline") == "ent"  # reinforce, closest to defaults
    assert find(ds, "baseline", update_rule="dpo") == "vanilla"
    assert find(ds, "baseline", update_rule="dpo", anchored_rejection=True) == "anchored"
    assert find(ds, "baseline", update_rule="dpo", dpo_beta=0.5) is None
    assert regulariser_conditions(ds, "baseline") == ["ent", "kl_k1"]


def test_ratio_of_means_and_its_interval():
    rng = np.random.default_rng(1)
    first = 4 + rng.normal(0, 0.5, 200)
    final = 1 + rng.normal(0, 0.2, 200)
    ratio, low, high, n = ratio_of_means(first, final)
    assert n == 200 and ratio == pytest.approx(first.mean() / final.mean()) and low < 4 < high
    assert ratio / low == pytest.approx(high / ratio)  # symmetric on the log scale
    first[3] = np.nan
    assert ratio_of_means(first, final)[3] == 199  # a missing seed removes its pair
    assert ratio_of_means([1.0, 2.0], [0.0, 0.0])[0] == np.inf  # a gap that vanished: infinite shrink


def test_ratio_interval_covers_95_percent():
    rng = np.random.default_rng(2)
    hits = 0
    for _ in range(1000):
        first = rng.normal(3, 0.6, 10)
        final = 0.5 * first + rng.normal(0, 0.2, 10)  # correlated, as paired seeds are
        _, low, high, _ = ratio_of_means(first, final)
        hits += low <= 2.0 <= high  # mean 3 / mean 1.5
    assert 0.92 <= hits / 1000 <= 0.98


def test_answers_recover_the_constructed_effects(ds):
    rows = answer_rows(ds, entropy_iteration=2)
    shrink = _row(rows, Q_SHRINK, "vanilla: shrink factor of train_pair_gap_judge =")
    assert shrink.estimate == pytest.approx(8.0, rel=0.02) and shrink.ci_low < 8 < shrink.ci_high
    assert shrink.n == N_SEEDS
    effective = _row(rows, Q_SHRINK, f"vanilla: shrink factor of {EFFECTIVE_GAP}")
    assert effective.estimate == pytest.approx(8.0, rel=0.02)
    assert _row(rows, Q_SHRINK, "vanilla: shrink factor of best_worst").estimate == pytest.approx(8.0, rel=0.02)
    assert _row(rows, Q_KEEP, "anchored: shrink factor of train_pair_gap_judge =").estimate == pytest.approx(
        1, rel=0.02
    )
    kept = _row(rows, Q_KEEP, "Δ train_pair_gap_judge at iteration 4: anchored − vanilla")
    assert kept.estimate == pytest.approx(1.75, rel=0.02) and kept.ci_low > 0
    real = _row(rows, Q_BUY, "Δ policy_quality at iteration 4: anchored − vanilla")
    perceived = _row(rows, Q_BUY, "Δ judge_perceived_quality at iteration 4: anchored − vanilla")
    assert real.estimate == pytest.approx(0.3, abs=0.02) and perceived.estimate == pytest.approx(0.5, abs=0.02)
    assert real.ci_low < 0.3 < real.ci_high
    assert _row(rows, Q_BUY, "anchored_future − vanilla", "policy_quality").n == N_SEEDS
    entropy = _row(rows, Q_ENTROPY, "Δ policy_entropy at iteration 2: ent − baseline")
    cost = _row(rows, Q_ENTROPY, "Δ policy_quality at iteration 4: ent − baseline")
    assert entropy.estimate == pytest.approx(1.0, abs=1e-5) and cost.estimate == pytest.approx(-0.2, abs=0.02)
    assert _row(rows, Q_ENTROPY, "kl_k1 − baseline", "policy_entropy").estimate == pytest.approx(0, abs=1e-6)
    assert not [r for r in rows if "frozen" in r.measurement]  # not asked about
    early = _row(answer_rows(ds, final=2), Q_SHRINK, "vanilla: shrink factor of train_pair_gap_judge =")
    assert early.estimate == pytest.approx(2.0, rel=0.02) and "iteration 1 / mean at 2" in early.measurement


def test_effective_gap_is_zero_when_no_pair_is_kept(ds):
    collapsed = ds.copy(deep=True)
    vanilla = list(CONDITIONS).index("vanilla")
    collapsed["pair_keep_rate"][vanilla, :, -1] = 0.0
    collapsed["train_pair_gap_judge"][vanilla, :, -1] = np.nan  # a mean over no pairs
    rows = answer_rows(collapsed)
    assert _row(rows, Q_SHRINK, "vanilla: shrink factor of train_pair_gap_judge =").n == 0
    effective = _row(rows, Q_SHRINK, f"vanilla: {EFFECTIVE_GAP} at iteration 4")
    assert effective.estimate == 0 and effective.n == N_SEEDS
    assert _row(rows, Q_SHRINK, f"vanilla: shrink factor of {EFFECTIVE_GAP}").estimate == np.inf


def test_markdown_table_and_missing_pieces(ds):
    text = answers(ds)
    lines = text.splitlines()
    assert lines[0] == "| question | measurement | estimate | 95% CI | n |"
    assert all(line.count("|") == 6 for line in lines)
    assert sum(Q_SHRINK in line for line in lines) == 1  # the question is written once per group
    only_regularisers = ds.sel(condition=["baseline", "ent"])
    assert {r.question for r in answer_rows(only_regularisers)} == {Q_ENTROPY}
    no_pairs = answer_rows(ds.drop_vars(["train_pair_gap_judge", "pair_keep_rate"]))
    assert not [r for r in no_pairs if "train_pair" in r.measurement]
    assert [r for r in no_pairs if "best_worst" in r.measurement]


def test_diverged_runs_are_left_out(ds):
    broken = ds.copy(deep=True)
    broken["diverged"][list(CONDITIONS).index("anchored"), 0] = True
    row = _row(answer_rows(broken), Q_BUY, "Δ policy_quality at iteration 4: anchored − vanilla")
    assert row.n == N_SEEDS - 1


def test_answer_files_writes_one_section_per_file(ds, tmp_path):
    path = tmp_path / "sr.nc"
    full = ds.assign_coords(update_rule=ds["update_rule"].astype(str))
    full["judge_alignment"] = full["policy_quality"]  # what engine.load requires of a results file
    full["peak_iteration"] = full["policy_quality"].argmax("iteration").astype(np.int32)
    full.to_netcdf(path)
    text = answer_files(path, out=tmp_path / "answers.md")
    assert text.startswith("### sr.nc") and (tmp_path / "answers.md").read_text() == text
    with pytest.raises(FileExistsError):
        answer_files(path, out=tmp_path / "answers.md")
