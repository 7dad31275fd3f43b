"""What the judge learns from, answered paired by seed (docs/grounding.md): a results file whose
conditions vary `judge_data`, `oracle_noise`, `oracle_bias` or `oracle_budget`.

Conditions are paired by their knob coordinates, never by name: a condition's partner is the
condition whose knobs are the same except the ones a question changes (back to their defaults).
Every comparison is the per-seed difference at the final iteration (or averaged over iterations
1..T, where drift over the whole run is asked), summarised by a Student-t interval over seeds
(`analysis.stats`); diverged runs drop their pair.

- `judge_data_effects`: accumulate and window against fresh, per loop;
- `noise_series` and `break_even_noise`: a grounded correction with a noisy labeller against a
  named reference (asymmetric_10), and the noise at which it stops being better;
- `bias_transfer`: a labeller biased towards verbosity against an unbiased one;
- `budget_effect`: a scarce budget against unlimited grounding;
- `grounding_markdown`, `grounding_figures`: every answer with n and interval.
"""

from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from analysis.data import mask_diverged
from analysis.figures import DPI, SIZE, XLABEL, mean_line, save
from analysis.formatting import estimate, fixed, knob_value
from analysis.grid import knob_table
from analysis.stats import paired_difference
from engine.host.output import write_atomically
from engine.knobs import DEFAULTS

GAP = "perception_gap"  # Σπ J − Σπ q*: how far the judge's view of the policy is from the truth, in J's units
SCALE = "judge_quality_weight"  # w of the fit J ≈ c + w·q* + β·σ(q*)·f: the judge's score scale
RELATIVE_BIAS = "relative_judge_bias"  # β/w: the judge's verbosity bias in σ(q*) per token, as a labeller's b
METRICS = ("policy_quality", "judge_alignment", GAP, SCALE, "policy_entropy")
BIAS_METRICS = (RELATIVE_BIAS, "judge_bias", "policy_verbosity", "bias_cost", "policy_quality", "judge_alignment")
REFERENCE = "fresh_asymmetric_10"  # the slow judge without grounding: what a grounded correction must beat
GROUNDING_KNOBS = ("judge_data", "oracle_noise", "oracle_bias", "oracle_budget")
OUTPUTS = ("judge_data.png", "break_even.png", "answers.md")


def has_grounding_conditions(ds: xr.Dataset) -> bool:
    """Does some condition set a grounding knob away from its default?"""
    table = knob_table(ds)
    return any(knob in table and (table[knob] != DEFAULTS[knob]).any() for knob in GROUNDING_KNOBS)


def with_gap(ds: xr.Dataset) -> xr.Dataset:
    """Diverged runs masked, plus the perception gap Σπ J − Σπ q* and, where the bias fit is recorded,
    the judge's bias relative to its scale, β/w (a judge scoring w·(q* + b·σ·f) has β/w = b)."""
    masked = mask_diverged(ds)
    masked = masked.assign({GAP: masked["judge_perceived_quality"] - masked["policy_quality"]})
    if "judge_bias" in masked and SCALE in masked:
        masked = masked.assign({RELATIVE_BIAS: masked["judge_bias"] / masked[SCALE]})
    return masked


def partner(ds: xr.Dataset, condition: str, **changes) -> str | None:
    """The condition whose knobs equal `condition`'s with `changes` applied, if the file has one."""
    table = knob_table(ds)
    wanted = table.loc[condition].copy()
    for knob, value in changes.items():
        wanted[knob] = value
    same = (table == wanted) | (table.isna() & wanted.isna())
    matches = [name for name in table.index[same.all(axis=1)] if name != condition]
    return matches[0] if matches else None


def _final(ds: xr.Dataset, condition: str, metric: str) -> np.ndarray:
    return ds[metric].sel(condition=condition).isel(iteration=-1).values


def _over_run(ds: xr.Dataset, condition: str, metric: str) -> np.ndarray:
    """Per seed, the metric's mean over iterations 1..T (iteration 0 is before any co-evolution)."""
    return ds[metric].sel(condition=condition).isel(iteration=slice(1, None)).mean("iteration").values


def judge_data_effects(ds: xr.Dataset) -> list[dict]:
    """Per condition drawing its judge's pairs from past policies: the paired Δ against the same
    loop on fresh pairs, of each metric at the final iteration and averaged over the run."""
    data = with_gap(ds)
    table = knob_table(ds)
    rows = []
    for condition in table.index[table["judge_data"] != "fresh"] if "judge_data" in table else []:
        fresh = partner(ds, condition, judge_data="fresh", judge_data_window=DEFAULTS["judge_data_window"])
        if fresh is None:
            continue
        row = {"condition": condition, "against": fresh}
        for metric in (m for m in METRICS if m in data):
            row[f"final_{metric}"] = paired_difference(_final(data, condition, metric), _final(data, fresh, metric))
            row[f"mean_{metric}"] = paired_difference(
                _over_run(data, condition, metric), _over_run(data, fresh, metric)
            )
        rows.append(row)
    return rows


def noise_series(ds: xr.Dataset, reference: str = REFERENCE, metric: str = "policy_quality") -> dict:
    """{series label: (noise levels, [paired Δ against `reference` at each level])} for the conditions
    that differ only in `oracle_noise` (unbiased labeller, no budget), final `metric`."""
    data = with_gap(ds)
    table = knob_table(ds)
    if "oracle_noise" not in table or reference not in table.index:
        return {}
    noisy = table[(table["oracle_bias"] == 0) & (table["oracle_budget"] == 0)]
    others = [knob for knob in table if knob != "oracle_noise"]
    series = {}
    for _, group in noisy.groupby(others, dropna=False, sort=False):
        if group["oracle_noise"].nunique() < 2:
            continue
        group = group.sort_values("oracle_noise")
        noises = group["oracle_noise"].to_numpy(float)
        deltas = [
            paired_difference(_final(data, name, metric), _final(data, reference, metric)) for name in group.index
        ]
        series[_series_label(group.index[0], noises[0])] = (noises, deltas)
    return series


def _series_label(condition: str, noise: float) -> str:
    """A noise series is named by its first condition's name less its noise suffix."""
    suffix = f"_noise{knob_value(noise)}"
    return condition[: -len(suffix)] if condition.endswith(suffix) else condition


def _crossing(x: np.ndarray, y: np.ndarray) -> float:
    """The first x at which y, linearly interpolated, falls to 0 or below: -inf if y[0] ≤ 0 already,
    +inf if y stays above 0 over the whole grid."""
    if y[0] <= 0:
        return -np.inf
    for i in range(1, len(x)):
        if y[i] <= 0:
            return float(x[i - 1] + (x[i] - x[i - 1]) * y[i - 1] / (y[i - 1] - y[i]))
    return np.inf


def break_even_noise(noises: np.ndarray, deltas: list) -> tuple[float, float, float]:
    """Where a grounded correction stops beating the reference: (point, low, high) in σ(q*).

    point: the noise at which the mean Δ, interpolated linearly between the measured levels, first
    reaches 0. The interval inverts the paired t-tests level by level: below `low` the correction is
    significantly better (the Δ band's lower edge > 0), beyond `high` significantly worse (its upper
    edge < 0), each edge interpolated the same way. Exact at the measured levels only: in between it
    assumes Δ linear in the noise. ±inf: the crossing lies outside the grid.
    """
    mean = np.array([d.mean for d in deltas])
    low = np.array([d.ci_low for d in deltas])
    high = np.array([d.ci_high for d in deltas])
    return _crossing(noises, mean), _crossing(noises, low), _crossing(noises, high)


def bias_transfer(ds: xr.Dataset) -> list[dict]:
    """Per condition with a biased labeller: the paired Δ against the same condition unbiased."""
    data = with_gap(ds)
    table = knob_table(ds)
    rows = []
    for condition in table.index[table["oracle_bias"] != 0] if "oracle_bias" in table else []:
        unbiased = partner(ds, condition, oracle_bias=0.0)
        if unbiased is None:
            continue
        row = {"condition": condition, "against": unbiased, "bias": float(table.loc[condition, "oracle_bias"])}
        for metric in BIAS_METRICS:
            if metric in data:
                row[metric] = paired_difference(_final(data, condition, metric), _final(data, unbiased, metric))
        rows.append(row)
    return rows


def budget_effect(ds: xr.Dataset, reference: str = REFERENCE) -> list[dict]:
    """Per condition with an oracle budget: the paired Δ against unlimited grounding and against `reference`."""
    data = with_gap(ds)
    table = knob_table(ds)
    rows = []
    for condition in table.index[table["oracle_budget"] > 0] if "oracle_budget" in table else []:
        unlimited = partner(ds, condition, oracle_budget=0)
        row = {"condition": condition, "budget": int(table.loc[condition, "oracle_budget"]), "unlimited": unlimited}
        for metric in ("policy_quality", "judge_alignment"):
            final = _final(data, condition, metric)
            if unlimited is not None:
                row[f"{metric}_vs_unlimited"] = paired_difference(final, _final(data, unlimited, metric))
            if reference in table.index:
                row[f"{metric}_vs_reference"] = paired_difference(final, _final(data, reference, metric))
        rows.append(row)
    return rows


# ---------------------------------------------------------------- the answers as markdown

NAMES = {
    "policy_quality": "quality",
    "judge_alignment": "alignment",
    GAP: "perceived − real",
    SCALE: "judge scale w",
    RELATIVE_BIAS: "judge bias β/w",
    "policy_entropy": "entropy",
    "judge_bias": "judge bias",
    "policy_verbosity": "verbosity",
    "bias_cost": "bias cost",
}


def _bound(x: float) -> str:
    return "below the grid" if x == -np.inf else "beyond the grid" if x == np.inf else fixed(x, 2)


def grounding_markdown(ds: xr.Dataset, reference: str = REFERENCE) -> str:
    """Every answer as a markdown table: paired Δ, mean [95% t-interval], with n seeds."""
    n = ds.sizes["seed"]
    lines = [
        f"# Grounding: answers from {ds.attrs.get('study_name', 'this file')} ({n} seeds)",
        "",
        "Paired by seed: Δ = condition − its partner, mean [95% t-interval] over seeds; n = pairs with "
        "neither run diverged. docs/grounding.md defines the knobs.",
    ]
    effects = judge_data_effects(ds)
    if effects:
        lines += ["", "## Accumulated or windowed judge data against fresh", ""]
        finals = [m for m in METRICS if f"final_{m}" in effects[0]]
        header = [f"final Δ {NAMES[m]}" for m in finals] + [f"Δ {NAMES[m]} over iterations 1..T" for m in METRICS[1:3]]
        lines += ["| condition | against | n | " + " | ".join(header) + " |", "|" + " --- |" * (3 + len(header))]
        for row in effects:
            cells = [estimate(row[f"final_{m}"]) for m in finals] + [estimate(row[f"mean_{m}"]) for m in METRICS[1:3]]
            n_pairs = row["final_policy_quality"].n
            lines.append(f"| {row['condition']} | {row['against']} | {n_pairs} | " + " | ".join(cells) + " |")
    series = noise_series(ds, reference)
    if series:
        lines += ["", f"## Noisy grounding against {reference}: final quality Δ, and the break-even noise", ""]
        levels = sorted({float(x) for noises, _ in series.values() for x in noises})
        lines += [
            "| correction | "
            + " | ".join(f"noise {knob_value(x)}·σ" for x in levels)
            + " | break-even noise [interval] |",
            "|" + " --- |" * (2 + len(levels)),
        ]
        for label, (noises, deltas) in series.items():
            by_level = dict(zip(noises.tolist(), deltas, strict=True))
            cells = [estimate(by_level[x]) + f" (n {by_level[x].n})" if x in by_level else "" for x in levels]
            point, low, high = break_even_noise(noises, deltas)
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {_bound(point)} [{_bound(low)}, {_bound(high)}] |")
    transfer = bias_transfer(ds)
    if transfer:
        lines += ["", "## A labeller biased towards verbosity, against the unbiased one (final Δ)", ""]
        metrics = [m for m in BIAS_METRICS if m in transfer[0]]
        lines += [
            "| condition | against | n | " + " | ".join(f"Δ {NAMES[m]}" for m in metrics) + " |",
            "|" + " --- |" * (3 + len(metrics)),
        ]
        for row in transfer:
            cells = [estimate(row[m]) for m in metrics]
            lines.append(f"| {row['condition']} | {row['against']} | {row[metrics[0]].n} | " + " | ".join(cells) + " |")
    budgets = budget_effect(ds, reference)
    if budgets:
        lines += ["", "## A scarce oracle budget (final Δ)", ""]
        columns = [key for key in budgets[0] if key.endswith(("_vs_unlimited", "_vs_reference"))]
        titles = [
            f"Δ {NAMES[c.split('_vs_')[0]]} vs {budgets[0]['unlimited'] if c.endswith('unlimited') else reference}"
            for c in columns
        ]
        lines += ["| condition | budget | " + " | ".join(titles) + " |", "|" + " --- |" * (2 + len(columns))]
        for row in budgets:
            cells = [estimate(row[c]) + f" (n {row[c].n})" for c in columns]
            lines.append(f"| {row['condition']} | {row['budget']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- figures


def judge_data_figure(ds: xr.Dataset, path, *, force: bool = False):
    """Alignment and perception gap over iterations: each loop (column) on fresh, accumulated and
    windowed judge data (lines), seed means with 95% t-bands."""
    effects = judge_data_effects(ds)
    if not effects:
        return None
    data = with_gap(ds)
    loops = {}
    for row in effects:
        loops.setdefault(row["against"], [row["against"]]).append(row["condition"])
    x = ds["iteration"].values
    fig = Figure(figsize=(SIZE[0] * 1.2, SIZE[1]), layout="constrained")
    axes = fig.subplots(2, len(loops), squeeze=False, sharex=True)
    colours = ("black", "tab:blue", "tab:orange", "tab:green", "tab:red")
    for column, conditions in enumerate(loops.values()):
        for row, metric in enumerate(("judge_alignment", GAP)):
            ax = axes[row, column]
            for i, condition in enumerate(conditions):
                runs = data[metric].sel(condition=condition).transpose("seed", "iteration").values
                mean_line(ax, x, runs, colours[i % len(colours)], condition)
            ax.grid(alpha=0.3)
            if column == 0:
                ax.set_ylabel("judge alignment [Spearman ρ]" if row == 0 else "perceived − real [Σπ J − Σπ q*]")
            if row == 1:
                ax.set_xlabel(XLABEL)
            else:
                ax.legend(fontsize=8, frameon=False)
    fig.suptitle(f"Where the judge's pairs come from: fresh, accumulated, windowed ({ds.sizes['seed']} seeds)")
    return save(fig, path, force)


def break_even_figure(ds: xr.Dataset, path, reference: str = REFERENCE, *, force: bool = False):
    """Final-quality Δ against `reference` per labeller noise level, one line per grounded correction,
    with the paired 95% t-intervals and the break-even noise marked."""
    series = noise_series(ds, reference)
    if not series:
        return None
    fig = Figure(figsize=SIZE, dpi=DPI, layout="constrained")
    ax = fig.subplots()
    ax.axhline(0, color="black", linewidth=0.8)
    for i, (label, (noises, deltas)) in enumerate(series.items()):
        colour = ("tab:blue", "tab:orange", "tab:green")[i % 3]
        mean = np.array([d.mean for d in deltas])
        errors = np.array([[d.mean - d.ci_low for d in deltas], [d.ci_high - d.mean for d in deltas]])
        ax.errorbar(noises + 0.02 * i, mean, yerr=errors, color=colour, marker="o", capsize=4, label=label)
        point, _, _ = break_even_noise(noises, deltas)
        if np.isfinite(point):
            ax.axvline(point, color=colour, linestyle=":", linewidth=1)
    ax.set_xlabel("labeller noise  [σ(q*) per comparison]")
    ax.set_ylabel(f"final quality − {reference}  [q*, paired by seed]")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, title="bars: 95% t-interval; dotted: break-even")
    fig.suptitle(f"How noisy can grounding be and still beat the slow judge? ({ds.sizes['seed']} seeds)")
    return save(fig, path, force)


def output_paths(out_dir, stem: str) -> list[Path]:
    return [Path(out_dir) / f"{stem}_{name}" for name in OUTPUTS]


def grounding_outputs(ds: xr.Dataset, out_dir, stem: str, *, force: bool = False) -> list:
    """The two figures and the answers' markdown, for a file with grounding conditions."""
    figure_path, break_even_path, answers_path = output_paths(out_dir, stem)
    written = [judge_data_figure(ds, figure_path, force=force), break_even_figure(ds, break_even_path, force=force)]
    text = grounding_markdown(ds)
    written.append(str(write_atomically(answers_path, lambda temporary: Path(temporary).write_text(text), force=force)))
    return [path for path in written if path is not None]


__all__ = [
    "bias_transfer",
    "break_even_noise",
    "budget_effect",
    "grounding_markdown",
    "grounding_outputs",
    "has_grounding_conditions",
    "judge_data_effects",
    "noise_series",
    "partner",
]
