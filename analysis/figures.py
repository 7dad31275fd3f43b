"""Figures over outer iterations: mean over seeds with a 95% t-interval band, diverged runs left out.

Each function writes one PNG (1600×1100 px) and returns its path, or None when nothing it asks for is present.
Figures are built with matplotlib.figure.Figure (rendered by Agg), never pyplot: no global state, no display.
"""

import math

import numpy as np
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from analysis.data import diverged_note, mask_diverged, present
from analysis.stats import t_band
from engine.host.output import write_atomically
from engine.host.results import world_of_dataset

DPI = 150
SIZE = (1600 / DPI, 1100 / DPI)
PANELS = {
    "policy_quality": "real quality Σπ q*  [q*]",
    "judge_alignment": "judge alignment  [Spearman ρ with q*]",
    "policy_entropy": "policy entropy  [nats]",
    "judge_perceived_quality": "judge-perceived quality Σπ J  [judge score]",
}
XLABEL = "outer iteration (0 = after pretraining)"
BAND = "band: 95% t-interval of the mean over seeds"
BEST = ("baseline", "asymmetric_10", "ensemble_5", "reinit_5", "asym_meta_10")
BOUNDS = ("frozen", "anchor_0.1")
MAX_PANELS = 30  # small multiples beyond this are unreadable and slow (1000 panels took > 400 s)


def seed_runs(values: xr.DataArray, condition: str) -> np.ndarray:
    """(seed, iteration) array of one condition: what `mean_line` and the figure modules draw from."""
    return values.sel(condition=condition).transpose("seed", "iteration").values


def mean_line(ax, x, runs, color, label, linestyle="-", band_alpha=0.2):
    """The seed-mean of (seed, x) `runs` with its 95% t-band: the line every figure module draws."""
    mean, low, high = t_band(runs, axis=0)
    ax.plot(x, mean, color=color, linestyle=linestyle, linewidth=2.5 if linestyle == ":" else 2, label=label)
    ax.fill_between(x, low, high, color=color, alpha=band_alpha, linewidth=0)


def _axes_2x2(title: str, uniform_entropy: float):
    fig = Figure(figsize=SIZE, layout="constrained")
    axes = fig.subplots(2, 2, sharex=True)
    fig.suptitle(title, fontsize=13)
    for ax, label in zip(axes.flat, PANELS.values(), strict=True):
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes[1]:
        ax.set_xlabel(XLABEL)
    axes.flat[2].axhline(uniform_entropy, color="grey", linestyle="--", linewidth=1, label="uniform policy (ln N)")
    return fig, axes


def bottom_legend(fig, handles, labels, title: str, max_columns: int = 4, **style):
    """The figure's legend under its panels, frameless, in at most `max_columns` columns."""
    fig.legend(
        handles,
        labels,
        loc="outside lower center",
        ncol=min(max_columns, len(labels)),
        title=title,
        frameon=False,
        **style,
    )


def save(fig, path, force: bool) -> str:
    """Write `fig` as a PNG through the atomic, force-checked writer; every figure module saves with it."""
    return str(write_atomically(path, lambda temporary: fig.savefig(temporary, dpi=DPI, format="png"), force=force))


def legend_label(text: str) -> str:
    """matplotlib leaves out legend labels that start with '_'; a zero-width space keeps them."""
    return "\u200b" + text if text.startswith("_") else text


def n_kept(ds: xr.Dataset, condition: str) -> int:
    """Seeds of `condition` that did not diverge: the n that figure legends show."""
    return int((~ds["diverged"].astype(bool).sel(condition=condition)).sum())


def _condition_line(ax, x, runs, i: int, ds: xr.Dataset, condition: str, bound: bool, bound_note: str = ""):
    """The i-th condition's mean line, labelled with its seed count; a bound condition dotted and fainter."""
    label = legend_label(f"{condition} (n={n_kept(ds, condition)}){bound_note if bound else ''}")
    style = {"linestyle": ":", "band_alpha": 0.08} if bound else {"band_alpha": 0.15}
    mean_line(ax, x, runs, f"C{i}", label, **style)


def headline(ds: xr.Dataset, path, condition: str = "baseline", *, force: bool = False):
    """The four diagnostics of one condition: every seed thinly, their mean and its band."""
    masked = mask_diverged(ds)
    x = ds["iteration"].values
    fig, axes = _axes_2x2(
        f"{condition}: judge–policy co-evolution, {n_kept(ds, condition)} seeds{diverged_note(ds, [condition])}",
        world_of_dataset(ds).uniform_entropy,
    )
    for ax, var in zip(axes.flat, PANELS, strict=True):
        runs = seed_runs(masked[var], condition)
        ax.plot(x, runs.T, color="grey", alpha=0.45, linewidth=0.8)[0].set_label("individual seeds")
        mean_line(ax, x, runs, "C0", "mean over seeds")
    handles, labels = axes.flat[2].get_legend_handles_labels()
    bottom_legend(fig, handles, labels, BAND, max_columns=len(labels))
    return save(fig, path, force)


def comparison(ds: xr.Dataset, conditions, path, bounds=BOUNDS, *, force: bool = False):
    """The four diagnostics, one solid line per condition and the bound conditions dotted."""
    bounds = present(ds, bounds)
    solid = [c for c in present(ds, conditions) if c not in bounds]
    if not solid + bounds:
        return None
    masked = mask_diverged(ds)
    x = ds["iteration"].values
    fig, axes = _axes_2x2(
        f"Mitigations compared: mean over seeds{diverged_note(ds, solid + bounds)}",
        world_of_dataset(ds).uniform_entropy,
    )
    for ax, var in zip(axes.flat, PANELS, strict=True):
        for i, condition in enumerate(solid + bounds):
            _condition_line(
                ax, x, seed_runs(masked[var], condition), i, ds, condition, condition in bounds, "  — bound"
            )
    handles, labels = axes.flat[0].get_legend_handles_labels()
    bottom_legend(fig, handles, labels, f"{BAND}; dotted: bounds (frozen judge, q*-anchor oracle)")
    return save(fig, path, force)


def small_multiples(
    ds: xr.Dataset, path, metric: str = "policy_quality", baseline: str = "baseline", *, force: bool = False
):
    """One panel per condition on a shared y axis, with the baseline mean in grey for reference.

    Only the first MAX_PANELS conditions get a panel (the title says so); the table has every one.
    """
    masked = mask_diverged(ds)
    x = ds["iteration"].values
    held = ds["condition"].values.tolist()
    conditions = held[:MAX_PANELS]
    ncols = math.ceil(math.sqrt(1.45 * len(conditions)))
    nrows = math.ceil(len(conditions) / ncols)
    fig = Figure(figsize=SIZE, layout="constrained")
    axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False)
    reference = t_band(seed_runs(masked[metric], baseline))[0] if baseline in held else None
    for ax, condition in zip(axes.flat[: len(conditions)], conditions, strict=True):
        if reference is not None:
            ax.plot(x, reference, color="grey", linewidth=1.5, label=legend_label(f"{baseline} mean"))
        mean_line(ax, x, seed_runs(masked[metric], condition), "C0", "mean over seeds")
        # Grid names (knob_value+knob_value) get a line per knob, so neighbouring titles do not overlap.
        title = condition.replace("+", "\n") if len(conditions) > 12 else condition
        ax.set_title(f"{title}{diverged_note(ds, [condition])}", fontsize=10 if "\n" not in title else 8)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes.flat[len(conditions) :]:
        ax.set_axis_off()
    fig.supxlabel(XLABEL)
    fig.supylabel(PANELS.get(metric, metric))
    shown = f"; first {len(conditions)} of {len(held)} conditions" if len(conditions) < len(held) else ""
    title = PANELS.get(metric, metric).split("  [")[0]
    fig.suptitle(f"{title} by condition{diverged_note(ds)}{shown}", fontsize=13)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower right", ncol=len(labels), title=BAND, frameon=False)
    return save(fig, path, force)


def perception_gap(ds: xr.Dataset, path, conditions=None, bounds=BOUNDS, *, force: bool = False):
    """Perceived − real quality per iteration: how far the judge's view of the policy drifts from the truth.

    With more than eight conditions only the headline mitigations and bounds are drawn, to stay readable.
    """
    held = ds["condition"].values.tolist()
    if conditions is None:
        conditions = held if len(held) <= 8 else BEST + tuple(bounds)
    conditions = present(ds, conditions)
    if not conditions:
        return None
    masked = mask_diverged(ds)
    gap = masked["judge_perceived_quality"] - masked["policy_quality"]
    x = ds["iteration"].values
    fig = Figure(figsize=SIZE, layout="constrained")
    ax = fig.subplots()
    ax.axhline(0, color="black", linewidth=0.8)
    for i, condition in enumerate(conditions):
        _condition_line(ax, x, seed_runs(gap, condition), i, ds, condition, condition in bounds)
    ax.set_xlabel(XLABEL)
    ax.set_ylabel("perceived − real quality  [Σπ J − Σπ q*]")
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(f"Perception gap: judge-perceived minus real quality{diverged_note(ds, conditions)}", fontsize=13)
    shown = "" if len(conditions) == len(held) else f"; {len(conditions)} of {len(held)} conditions shown"
    fig.legend(
        loc="outside lower center", ncol=min(4, len(conditions)), frameon=False, title=f"{BAND}; dotted: bounds{shown}"
    )
    return save(fig, path, force)
