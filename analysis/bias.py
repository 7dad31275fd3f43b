"""Bias amplification figures, for a Dataset with the bias records (docs/bias.md).

Conditions are grouped by their knob coordinates, never by their names: a *mechanism* is a
set of conditions whose knobs agree except `planted_bias`; a *bias level* is a value of
`planted_bias`. Each mechanism keeps one colour in every figure. Diverged runs are left out.

- amplification over iterations, one column per bias level: the mean bias's
  mean_s judge_bias(t) / mean_s judge_bias(0) with the band of the paired change (see
  `amplification_of_mean`; at b = 0, where a ratio means nothing, judge_bias(t) −
  judge_bias(0)), and below it the judge's quality weight (to tell a growing score scale
  from a real shift);
- policy verbosity E_π[f] over iterations, one column per bias level, and below it bias_cost;
- final judge bias against final real quality, one point per run: colour the mechanism,
  marker the bias level.
"""

import os
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import xarray as xr
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from analysis.data import diverged_note, mask_diverged
from analysis.figures import BAND, SIZE, XLABEL, bottom_legend, legend_label, mean_line, save, seed_runs
from analysis.formatting import knob_value
from engine.host.output import check_output
from engine.knobs import KNOBS

OUTPUTS = ("bias_amplification.png", "bias_verbosity.png", "bias_scatter.png")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
UNIFORM_VERBOSITY = 0.5  # E[f] of the uniform policy: 4 positions × 1/8


def has_bias_records(ds: xr.Dataset) -> bool:
    """True for a Dataset with the bias records and a planted bias or a meta-judge in some
    condition: the bias figures say nothing about a study without either."""
    if "judge_bias" not in ds.data_vars or "planted_bias" not in ds.coords:
        return False
    meta_judge = "meta_source" in ds.coords and (ds["meta_source"].values.astype(str) == "judge").any()
    return bool((ds["planted_bias"] > 0).any() or meta_judge)


def bias_levels(ds: xr.Dataset) -> list[float]:
    return sorted({float(b) for b in ds["planted_bias"].values})


def mechanisms(ds: xr.Dataset) -> dict[str, dict[float, str]]:
    """Mechanism label → {planted bias → condition}, in the Dataset's order of first appearance.

    Conditions belong to one mechanism when every knob coordinate but `planted_bias` agrees.
    The label is what the mechanism's condition names share once the part naming the bias is
    taken away (`b0.3_anchor_0.1`, `b1_anchor_0.1` → `anchor_0.1`), or the one condition's name.
    """
    knobs = [name for name in KNOBS if name != "planted_bias" and name in ds.coords]
    groups: dict[tuple, dict[float, str]] = {}
    for condition in ds["condition"].values.tolist():
        row = ds.sel(condition=condition)
        key = tuple(row[name].item() for name in knobs)
        groups.setdefault(key, {})[float(row["planted_bias"])] = condition
    return {_label(list(members.values())): members for members in groups.values()}


def _label(names: list[str]) -> str:
    if len(names) == 1:
        return names[0]
    suffix = os.path.commonprefix([name[::-1] for name in names])[::-1]
    label = suffix.lstrip("_-.+ ")
    return label if label and not label[0].isdigit() else " / ".join(names)


def amplification(ds: xr.Dataset) -> xr.DataArray:
    """Per run and iteration: judge_bias(t) / judge_bias(0), or judge_bias(t) − judge_bias(0) at b = 0."""
    bias = ds["judge_bias"]
    start = bias.isel(iteration=0)
    unbiased = ds["planted_bias"] == 0
    return xr.where(unbiased, bias - start, bias / start)


def amplification_of_mean(ds: xr.Dataset) -> xr.DataArray:
    """Per run: 1 + (judge_bias(t) − judge_bias(0)) / mean over seeds of judge_bias(0); at b = 0
    judge_bias(t) − judge_bias(0).

    Its mean over seeds is the amplification of the mean bias, mean judge_bias(t) / mean
    judge_bias(0), and its t-band is the paired change's, rescaled. The per-run ratio
    (`amplification`) explodes wherever a run's pretrained judge happens to have a bias near
    0, as at small b it often does (b = 0.3: judge_bias(0) ≈ 0.07–0.23); the denominator here
    is one number per condition, shared by every mechanism of a bias level (their runs of a
    seed start from the same pretrained judge), so the band leaves its uncertainty out.
    """
    bias = ds["judge_bias"]
    start = bias.isel(iteration=0)
    change = bias - start
    return xr.where(ds["planted_bias"] == 0, change, 1 + change / start.mean("seed"))


def _colours(labels) -> dict[str, str]:
    return {label: f"C{i % 10}" for i, label in enumerate(labels)}


class Row(NamedTuple):
    """One row of a trajectory figure: what it draws per bias level, and how it is labelled."""

    values: Callable  # (masked Dataset) -> (condition, seed, iteration) DataArray
    ylabel: str  # on the left column only
    reference: Callable  # (bias level) -> y of a dashed reference line, or None
    heading: Callable = lambda level: ""  # (bias level) -> a second title line (top row only)


def _trajectory_figure(ds, path, rows: tuple[Row, Row], title: str, dashed: str, *, force: bool):
    """Two rows × one column per bias level; one line (mean over seeds, t-band) per mechanism."""
    levels, groups = bias_levels(ds), mechanisms(ds)
    colours = _colours(groups)
    masked = mask_diverged(ds)
    x = ds["iteration"].values
    fig = Figure(figsize=SIZE, layout="constrained")
    axes = fig.subplots(2, len(levels), sharex=True, squeeze=False)
    for r, row in enumerate(rows):
        values = row.values(masked)
        for column, level in enumerate(levels):
            ax = axes[r, column]
            reference = row.reference(level)
            if reference is not None:
                ax.axhline(reference, color="black", linewidth=0.8, linestyle="--")
            for label, members in groups.items():
                if level in members:
                    mean_line(
                        ax, x, seed_runs(values, members[level]), colours[label], legend_label(label), band_alpha=0.12
                    )
            ax.grid(alpha=0.3)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes[r, 0].set_ylabel(row.ylabel)
    for column, level in enumerate(levels):
        heading = rows[0].heading(level)
        axes[0, column].set_title(
            f"planted bias b = {knob_value(level)}" + (f"\n{heading}" if heading else ""), fontsize=10
        )
        axes[1, column].set_xlabel(XLABEL)
    fig.suptitle(f"{title}{diverged_note(ds)}", fontsize=13)
    handles = [Line2D([], [], color=colours[label], linewidth=2) for label in groups]
    labels = [legend_label(label) for label in groups]
    bottom_legend(fig, handles, labels, f"{BAND}, {ds.sizes['seed']} seeds; dashed: {dashed}", max_columns=6)
    return save(fig, path, force)


def amplification_figure(ds: xr.Dataset, path, *, force: bool = False):
    """Amplification of the judge's bias per bias level, and the judge's quality weight below it."""
    top = Row(
        amplification_of_mean,
        "judge bias, relative to iteration 0",
        lambda level: 0.0 if level == 0 else 1.0,
        lambda level: (
            "change: bias(t) − bias(0)  [σ(q*)/token]" if level == 0 else "amplification: mean bias(t) / mean bias(0)"
        ),
    )
    bottom = Row(lambda masked: masked["judge_quality_weight"], "judge quality weight  [J per unit q*]", _none)
    title = "Does co-evolution amplify a planted verbosity bias?"
    return _trajectory_figure(ds, path, (top, bottom), title, "no change since pretraining", force=force)


def verbosity_figure(ds: xr.Dataset, path, *, force: bool = False):
    """The policy's verbosity E_π[f] per bias level, and what its verbosity costs (bias_cost) below it."""
    top = Row(
        lambda masked: masked["policy_verbosity"],
        "policy verbosity E_π[f]  [filler tokens]",
        lambda level: UNIFORM_VERBOSITY,
    )
    bottom = Row(lambda masked: masked["bias_cost"], "bias cost  [q*]", lambda level: 0.0)
    title = "Does the policy's verbosity run away, and what does it cost?"
    return _trajectory_figure(ds, path, (top, bottom), title, "the uniform policy (0.5); no cost", force=force)


def _none(level):
    return None


def scatter_figure(ds: xr.Dataset, path, *, force: bool = False):
    """Final judge bias against final real quality, one point per run (diverged runs left out)."""
    levels, groups = bias_levels(ds), mechanisms(ds)
    colours = _colours(groups)
    final = mask_diverged(ds).isel(iteration=-1)
    fig = Figure(figsize=SIZE, layout="constrained")
    ax = fig.subplots()
    for label, members in groups.items():
        for level, condition in members.items():
            run = final.sel(condition=condition)
            ax.scatter(
                run["judge_bias"].values,
                run["policy_quality"].values,
                color=colours[label],
                marker=MARKERS[levels.index(level) % len(MARKERS)],
                s=28,
                alpha=0.75,
                edgecolors="white",
                linewidths=0.4,
            )
    for level in levels:
        if level > 0:
            ax.axvline(level, color="grey", linewidth=0.8, linestyle=":")
    ax.axvline(0, color="black", linewidth=0.8)
    last = int(ds["iteration"].values[-1])
    ax.set_xlabel(f"judge bias at iteration {last}  [σ(q*) per filler token; dotted: planted b]")
    ax.set_ylabel(f"real quality Σπ q* at iteration {last}  [q*]")
    ax.grid(alpha=0.3)
    fig.suptitle(f"Final judge bias and real quality, one point per run{diverged_note(ds)}", fontsize=13)
    colour_handles = [
        Line2D([], [], color=colours[label], marker="o", linestyle="", label=legend_label(label)) for label in groups
    ]
    marker_handles = [
        Line2D([], [], color="grey", marker=MARKERS[i % len(MARKERS)], linestyle="", label=f"b = {knob_value(level)}")
        for i, level in enumerate(levels)
    ]
    fig.legend(
        handles=colour_handles + marker_handles,
        loc="outside right center",
        frameon=False,
        title="mechanism (colour)\nplanted bias (marker)",
    )
    return save(fig, path, force)


def bias_figures(ds: xr.Dataset, out_dir, stem: str, *, force: bool = False) -> list:
    """The three bias figures next to a results file; [] for a Dataset without bias records.

    Every one is checked (`check_output`) before any is drawn; an existing one is replaced only with `force`.
    """
    if not has_bias_records(ds):
        return []
    paths = output_paths(out_dir, stem)
    for path in paths:
        check_output(path, force=force)
    return [
        amplification_figure(ds, paths[0], force=force),
        verbosity_figure(ds, paths[1], force=force),
        scatter_figure(ds, paths[2], force=force),
    ]


def output_paths(out_dir, stem: str) -> list[Path]:
    """Every file `bias_figures` writes, so a command can check them before drawing any."""
    return [Path(out_dir) / f"{stem}_{name}" for name in OUTPUTS]
