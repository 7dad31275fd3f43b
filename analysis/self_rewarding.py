"""The self-rewarding questions answered from results files, each with a 95% Student-t CI over seeds.

    from analysis.self_rewarding import answer_files
    print(answer_files("data/self_rewarding.nc", "data/regularisers.nc", out="data/self_rewarding_answers.md"))

Conditions are recognised by their knob coordinates, not their names: the reinforce baseline
is `baseline` (or else the condition closest to the defaults), "vanilla dpo" the condition that
differs from it only in update_rule = dpo, "anchored" only in update_rule = dpo and
anchored_rejection, a regulariser condition only in regulariser knobs. Every comparison is
paired by seed (same pretrained judge, initial policy and keys), diverged runs are left out
(a diverged run removes its pair), and "final" is the last recorded iteration.

The shrink factor of a gap g is F = mean_s g_s(first) / mean_s g_s(final), a ratio of means
over the seeds s where both are finite. Its interval is the delta method on the log scale:
with the paired sample (co)variances s₁², s_f², s₁f over n seeds,

    Var(log F) ≈ (s₁²/m₁² + s_f²/m_f² − 2 s₁f/(m₁ m_f)) / n,   F·exp(± t_{n−1} √Var),

which respects the pairing and keeps the interval positive. A ratio of means rather than a
mean of per-seed ratios, because a seed whose gap vanishes (a collapsed policy: best = worst)
has an infinite per-seed ratio but a finite contribution to the mean gap. The training-pair
gap is a mean over kept pairs and is NaN when an iteration keeps none; the "effective" gap
train_pair_gap × pair_keep_rate (with score_grid 0 a dropped pair ties exactly, so this is the
mean over all pairs, dropped ones counting 0) is defined whenever pairs were drawn.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from analysis.data import mask_diverged
from analysis.formatting import significant
from analysis.stats import finite_pairs, paired_difference, seed_summary, t_quantile
from engine.host.output import write_atomically
from engine.knobs import DEFAULTS, KNOBS, STUDY

REGULARISER_KNOBS = ("entropy_exact", "entropy_regulariser", "kl_penalty", "kl_estimator", "judge_anchor")
EFFECTIVE_GAP = "train_pair_gap_judge × pair_keep_rate"


@dataclass(frozen=True)
class Row:
    question: str
    measurement: str
    estimate: float
    ci_low: float
    ci_high: float
    n: int


# ---------------------------------------------------------------- finding conditions by their knobs


def _knobs(ds: xr.Dataset) -> list[str]:
    """The per-condition knobs the Dataset records (study-wide sizes are equal in every condition)."""
    return [name for name, knob in KNOBS.items() if name in ds.coords and knob.scope != STUDY]


def _value(ds: xr.Dataset, name: str, condition: str):
    value = ds[name].sel(condition=condition).values.item()
    return value.decode() if isinstance(value, bytes) else value


def differences(ds: xr.Dataset, condition: str, reference: str) -> dict:
    """{knob: value} of every recorded knob where `condition` differs from `reference`."""
    return {
        name: _value(ds, name, condition)
        for name in _knobs(ds)
        if _value(ds, name, condition) != _value(ds, name, reference)
    }


def baseline_of(ds: xr.Dataset, baseline: str = "baseline") -> str | None:
    """`baseline` if held, else the reinforce condition with the fewest knobs away from the defaults."""
    held = ds["condition"].values.tolist()
    if baseline in held:
        return baseline
    knobs = _knobs(ds)

    def distance(condition):
        return sum(_value(ds, name, condition) != DEFAULTS[name] for name in knobs)

    reinforce = [c for c in held if "update_rule" not in knobs or _value(ds, "update_rule", c) == "reinforce"]
    return min(reinforce, key=distance) if reinforce else None


def find(ds: xr.Dataset, reference: str, **changes) -> str | None:
    """The first condition that differs from `reference` in exactly the knobs `changes`, to those values."""
    for condition in ds["condition"].values.tolist():
        if differences(ds, condition, reference) == changes:
            return condition
    return None


def regulariser_conditions(ds: xr.Dataset, reference: str) -> list[str]:
    """Conditions that differ from `reference` only in regulariser knobs (entropy, KL, judge anchor)."""
    found = []
    for condition in ds["condition"].values.tolist():
        changed = differences(ds, condition, reference)
        if changed and set(changed) <= set(REGULARISER_KNOBS):
            found.append(condition)
    return found


# ---------------------------------------------------------------- statistics


def ratio_of_means(first, final, confidence: float = 0.95) -> tuple[float, float, float, int]:
    """mean(first)/mean(final) over paired finite seeds, with the log-scale delta-method interval."""
    first, final = finite_pairs(first, final)
    n = first.size
    if n < 2:
        return (float(first[0] / final[0]) if n and final[0] > 0 else np.nan), np.nan, np.nan, n
    m1, mf = first.mean(), final.mean()
    if m1 <= 0 or mf <= 0:
        return (np.inf if mf <= 0 < m1 else np.nan), np.nan, np.nan, n
    covariance = np.cov(first, final, ddof=1)
    variance = (covariance[0, 0] / m1**2 + covariance[1, 1] / mf**2 - 2 * covariance[0, 1] / (m1 * mf)) / n
    half = float(t_quantile(confidence, n - 1)) * np.sqrt(max(variance, 0.0))
    ratio = m1 / mf
    return float(ratio), float(ratio * np.exp(-half)), float(ratio * np.exp(half)), n


class _Reader:
    """Per-seed values of one Dataset, diverged runs masked (seed order is shared: pairs line up)."""

    def __init__(self, ds: xr.Dataset, final: int | None = None):
        self.ds = ds
        self.masked = mask_diverged(ds)
        self.iterations = ds["iteration"].values.tolist()
        self.final = self.iterations[-1] if final is None else min(final, self.iterations[-1])

    def has(self, *variables) -> bool:
        return all(v in self.ds.data_vars for v in variables)

    def at(self, variable: str, condition: str, iteration: int) -> np.ndarray:
        if variable == EFFECTIVE_GAP:  # no pair kept: the gap over kept pairs is NaN, over all pairs 0
            keep = self.at("pair_keep_rate", condition, iteration)
            return np.where(keep == 0, 0.0, self.at("train_pair_gap_judge", condition, iteration) * keep)
        return self.masked[variable].sel(condition=condition, iteration=iteration).values.astype(float)

    def shrink(self, question, variable, condition, first) -> Row:
        ratio, low, high, n = ratio_of_means(
            self.at(variable, condition, first), self.at(variable, condition, self.final)
        )
        what = f"{condition}: shrink factor of {variable} = mean at iteration {first} / mean at {self.final}"
        what += " (> 1: shrank)"
        return Row(question, what, ratio, low, high, n)

    def paired(self, question, variable, condition, reference, iteration) -> Row:
        s = paired_difference(self.at(variable, condition, iteration), self.at(variable, reference, iteration))
        what = f"Δ {variable} at iteration {iteration}: {condition} − {reference} (paired)"
        return Row(question, what, s.mean, s.ci_low, s.ci_high, s.n)

    def level(self, question, variable, condition, iteration) -> Row:
        s = seed_summary(self.at(variable, condition, iteration))
        return Row(question, f"{condition}: {variable} at iteration {iteration}", s.mean, s.ci_low, s.ci_high, s.n)


# ---------------------------------------------------------------- the questions

Q_SHRINK = "Does the chosen–rejected gap shrink under vanilla self-rewarding (dpo, π_ref = M_t), by what factor?"
Q_KEEP = "Does anchored rejection keep the gap?"
Q_BUY = "Does keeping the gap buy real quality, or only judge-perceived quality?"
Q_ENTROPY = "Which regulariser slows entropy collapse, and at what cost in quality?"


def answer_rows(
    ds: xr.Dataset, baseline: str = "baseline", first: int = 1, entropy_iteration: int = 2, final: int | None = None
) -> list[Row]:
    """Every answerable row for this Dataset (questions whose conditions or variables are absent are skipped).

    Gaps shrink from iteration `first` to `final` (default: the last; 4 compares with the paper's four
    iterations); entropy is compared at `entropy_iteration`, qualities at `final`.
    """
    read = _Reader(ds, final)
    reference = baseline_of(ds, baseline)
    if reference is None:
        return []
    first = min(first, read.final)
    rows = []
    vanilla = find(ds, reference, update_rule="dpo")
    anchored = find(ds, reference, update_rule="dpo", anchored_rejection=True)
    future = find(ds, reference, update_rule="dpo", anchored_rejection=True, future_chosen=True)
    gaps = [
        v for v in ("train_pair_gap_judge", EFFECTIVE_GAP, "best_worst_gap_judge") if v == EFFECTIVE_GAP or read.has(v)
    ]
    if not read.has("train_pair_gap_judge", "pair_keep_rate"):
        gaps = [v for v in gaps if v == "best_worst_gap_judge"]
    if vanilla is not None:
        for variable in gaps:
            rows.append(read.level(Q_SHRINK, variable, vanilla, first))
            rows.append(read.level(Q_SHRINK, variable, vanilla, read.final))
            rows.append(read.shrink(Q_SHRINK, variable, vanilla, first))
    if vanilla is not None and anchored is not None:
        for variable in gaps:
            rows.append(read.shrink(Q_KEEP, variable, anchored, first))
            rows.append(read.paired(Q_KEEP, variable, anchored, vanilla, read.final))
        if read.has("pair_keep_rate"):
            rows.append(read.paired(Q_KEEP, "pair_keep_rate", anchored, vanilla, read.final))
        for condition in (anchored, future):
            if condition is None:
                continue
            for variable in ("policy_quality", "judge_perceived_quality"):
                rows.append(read.paired(Q_BUY, variable, condition, vanilla, read.final))
    if vanilla is not None:
        rows.append(read.paired(Q_BUY, "policy_quality", vanilla, reference, read.final))
    regularised = regulariser_conditions(ds, reference)
    if regularised:
        at = min(entropy_iteration, read.final)
        rows.append(read.level(Q_ENTROPY, "policy_entropy", reference, at))
        for condition in regularised:
            rows.append(read.paired(Q_ENTROPY, "policy_entropy", condition, reference, at))
            rows.append(read.paired(Q_ENTROPY, "policy_quality", condition, reference, read.final))
    return rows


def markdown(rows: list[Row]) -> str:
    """rows as a markdown table: question (once per group), measurement, estimate, 95% CI, n."""
    lines = ["| question | measurement | estimate | 95% CI | n |", "| --- | --- | --- | --- | --- |"]
    previous = None
    for row in rows:
        question = row.question if row.question != previous else ""
        previous = row.question
        interval = f"[{significant(row.ci_low)}, {significant(row.ci_high)}]"
        lines.append(f"| {question} | {row.measurement} | {significant(row.estimate)} | {interval} | {row.n} |")
    return "\n".join(lines)


def answers(ds: xr.Dataset, baseline: str = "baseline", **options) -> str:
    """The markdown table of `answer_rows` (options: first, entropy_iteration, final); empty when nothing applies."""
    return markdown(answer_rows(ds, baseline, **options))


def answer_files(*paths, out=None, force: bool = False, **options) -> str:
    """One section per results file (its name, then its table); written to `out` when given.

    options: as `answer_rows` (first, entropy_iteration, final)."""
    import engine

    sections = []
    for path in paths:
        ds = engine.load(path)
        sections.append(
            f"### {Path(path).name}\n\n{answers(ds, **options)}\n\n"
            f"Intervals: 95% Student-t over seeds (paired by seed for Δ; log-scale delta method for shrink "
            f"factors, see analysis/self_rewarding.py); diverged runs left out."
        )
    text = "\n\n".join(sections) + "\n"
    if out is not None:
        write_atomically(out, lambda temporary: Path(temporary).write_text(text), force=force)
    return text
