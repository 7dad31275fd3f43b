"""Overoptimisation and the chosen–rejected gap, from a results file.

`overoptimisation`: real and judge-perceived quality against √KL(π‖π₀), in the style of
Gao, Schulman & Hilton (2022, "Scaling Laws for Reward Model Overoptimization", their
figure 1): the proxy (here the co-evolving judge) keeps rising with distance from the
initial policy while the gold score (here q*) flattens or falls. Both axes are exact sums
over all N outputs of the file's world (`kl_to_initial`, `policy_quality`, `judge_perceived_quality`).

`pair_gap`: the chosen–rejected gap over outer iterations, the quantity Temporal
Self-Rewarding (Wang et al. 2025) reports shrinking: the gap of the pairs actually trained
on, the exact best-vs-worst-of-N gap, and the fraction of pairs kept.

Each function writes one PNG (1600×1100 px at 150 dpi) and returns its path, or None when
the Dataset lacks what it draws. matplotlib.figure.Figure only, never pyplot.
"""

import numpy as np
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from analysis.data import diverged_note, mask_diverged, present
from analysis.figures import SIZE, XLABEL, bottom_legend, legend_label, n_kept, save, seed_runs
from analysis.stats import t_band
from engine.host.results import world_of_dataset

MAX_CONDITIONS = 12  # lines beyond this are unreadable; the first 12 in the Dataset's order are drawn
# tab10, then two more that stay distinct from it
COLOURS = tuple(f"C{i}" for i in range(10)) + ("black", "#b8860b")
OVEROPT_VARIABLES = ("kl_to_initial", "policy_quality", "judge_perceived_quality")
PAIR_VARIABLES = ("train_pair_gap_judge", "train_pair_gap_true", "best_worst_gap_judge", "best_worst_gap_true")


def _choose(ds: xr.Dataset, conditions) -> tuple[list, str]:
    """The conditions to draw (at most MAX_CONDITIONS) and a note saying what was left out."""
    held = ds["condition"].values.tolist()
    chosen = present(ds, held if conditions is None else conditions)[:MAX_CONDITIONS]
    asked = len(held) if conditions is None else len(present(ds, conditions))
    note = f"; first {len(chosen)} of {asked} conditions" if len(chosen) < asked else ""
    return chosen, note


def _has(ds: xr.Dataset, names) -> bool:
    return all(name in ds.data_vars for name in names)


def overoptimisation(ds: xr.Dataset, path, conditions=None, *, force: bool = False):
    """Real (left) and judge-perceived (right) quality against √KL(π‖π₀), one line per condition.

    Each point is one outer iteration: the mean over seeds of √KL (x) and of the quality (y),
    each with its 95% Student-t interval drawn as a thin cross bar; points are joined in
    iteration order from iteration 0 (√KL = 0 exactly) and the final iteration is ringed.
    Diverged runs are left out. At most MAX_CONDITIONS conditions are drawn (the first of
    `conditions`, or of the Dataset's, in order; the title says when some are left out).
    None when the Dataset has no `kl_to_initial`.
    """
    if not _has(ds, OVEROPT_VARIABLES):
        return None
    conditions, shown = _choose(ds, conditions)
    if not conditions:
        return None
    masked = mask_diverged(ds)
    # KL is ≥ 0 exactly; float32 rounding can leave −1e-8 at iteration 0, hence the clip
    distance = np.sqrt(masked["kl_to_initial"].clip(min=0.0))
    n_sequences = world_of_dataset(ds).n_sequences
    fig = Figure(figsize=SIZE, layout="constrained")
    axes = fig.subplots(1, 2, sharex=True)
    panels = (
        ("policy_quality", "real quality Σπ q*  [q*]", "gold: real quality (q*)"),
        ("judge_perceived_quality", "judge-perceived quality Σπ J  [judge score]", "proxy: the co-evolving judge (J)"),
    )
    for ax, (variable, ylabel, title) in zip(axes, panels, strict=True):
        for i, condition in enumerate(conditions):
            colour = COLOURS[i]
            x, x_low, x_high = t_band(seed_runs(distance, condition), axis=0)
            y, y_low, y_high = t_band(seed_runs(masked[variable], condition), axis=0)
            ax.errorbar(
                x,
                y,
                xerr=_half_widths(x, x_low, x_high),
                yerr=_half_widths(y, y_low, y_high),
                color=colour,
                marker="o",
                markersize=3.5,
                linewidth=1.8,
                elinewidth=0.7,
                capsize=1.5,
                label=legend_label(f"{condition} (n={n_kept(ds, condition)})"),
            )
            last = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
            if last.size:
                ax.plot(x[last[-1]], y[last[-1]], "o", markersize=9, markerfacecolor="none", color=colour)
        ax.set_xlabel(f"√KL(π ‖ π₀)  [√nats], exact over the {n_sequences:,} outputs")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=11)
        ax.grid(alpha=0.3)
        ax.set_xlim(left=0)
    fig.suptitle(
        f"Overoptimisation: quality against distance from π₀{diverged_note(ds, conditions)}{shown}", fontsize=13
    )
    handles, labels = axes[0].get_legend_handles_labels()
    caption = (
        "one point per outer iteration, joined in order from iteration 0 (√KL = 0), final iteration ringed; "
        "point = mean over seeds of √KL and of quality;\n"
        "cross bars: 95% t-intervals of both means over seeds; "
        f"both axes are exact sums over all {n_sequences:,} sequences"
    )
    bottom_legend(fig, handles, labels, caption)
    return save(fig, path, force)


def _half_widths(mean, low, high) -> np.ndarray:
    """(2, n) error-bar half widths; 0 where the interval is undefined (fewer than 2 seeds)."""
    return np.nan_to_num(np.stack([mean - low, high - mean]), nan=0.0)


def has_dpo(ds: xr.Dataset) -> bool:
    """Does the Dataset hold a condition trained by dpo (by its `update_rule` coordinate)?"""
    return "update_rule" in ds.coords and bool((ds["update_rule"].astype(str) == "dpo").any())


def _relative_to_first(runs: np.ndarray, first: int) -> np.ndarray:
    """Per-seed log(gap_t / gap_first); NaN where either is not a positive finite number."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.log(runs / runs[:, [first]])
    return np.where(np.isfinite(ratio), ratio, np.nan)


def pair_gap(ds: xr.Dataset, path, conditions=None, *, force: bool = False):
    """The chosen–rejected gap over iterations, per condition: does it shrink, and does anchoring keep it?

    Panels: the judge gap J(chosen) − J(rejected) and the real gap q*(chosen) − q*(rejected) of
    the pairs trained on in each iteration (`train_pair_gap_*`: dpo only); the exact
    best-vs-worst-of-N gap of the policy at the end of each iteration (`best_worst_gap_*`,
    N = n_candidates, defined for every rule, so the reinforce baseline is drawn too); the
    fraction of pairs kept (`pair_keep_rate`); and the training-pair judge gap relative to
    iteration 1, as a geometric mean over seeds on a log axis (the shrink factor).
    None unless the Dataset has a dpo condition (`update_rule` coordinate) and these variables.
    """
    if not (_has(ds, PAIR_VARIABLES + ("pair_keep_rate",)) and has_dpo(ds)):
        return None
    conditions, shown = _choose(ds, conditions)
    if not conditions:
        return None
    masked = mask_diverged(ds)
    iterations = ds["iteration"].values
    fig = Figure(figsize=SIZE, layout="constrained")
    axes = fig.subplots(2, 3, sharex=True)
    panels = {
        (0, 0): ("train_pair_gap_judge", "training pairs: J(chosen) − J(rejected)", "judge score J"),
        (0, 1): ("best_worst_gap_judge", "exact best − worst of N by J: J gap", "judge score J"),
        (0, 2): ("pair_keep_rate", "pairs kept (chosen, rejected scores differ)", "fraction of pairs"),
        (1, 0): ("train_pair_gap_true", "training pairs: q*(chosen) − q*(rejected)", "q*"),
        (1, 1): ("best_worst_gap_true", "exact best − worst of N by J: q* gap", "q*"),
    }
    for (row, col), (variable, title, unit) in panels.items():
        ax = axes[row, col]
        for i, condition in enumerate(conditions):
            mean, low, high = t_band(seed_runs(masked[variable], condition), axis=0)
            if not np.isfinite(mean).any():
                continue
            ax.plot(iterations, mean, color=COLOURS[i], marker="o", markersize=3, linewidth=1.8)
            ax.fill_between(iterations, low, high, color=COLOURS[i], alpha=0.15, linewidth=0)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(unit)
        ax.axhline(0, color="black", linewidth=0.6)
    ax = axes[1, 2]
    first = 1 if len(iterations) > 1 else 0
    for i, condition in enumerate(conditions):
        log_ratio = _relative_to_first(seed_runs(masked["train_pair_gap_judge"], condition), first)
        mean, low, high = t_band(log_ratio, axis=0)
        if not np.isfinite(mean).any():
            continue
        ax.plot(iterations, np.exp(mean), color=COLOURS[i], marker="o", markersize=3, linewidth=1.8)
        ax.fill_between(iterations, np.exp(low), np.exp(high), color=COLOURS[i], alpha=0.15, linewidth=0)
    ax.set_yscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:g}")  # 0.5, 2, 3 rather than 5×10⁻¹, 2×10⁰
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.axhline(1, color="black", linewidth=0.6)
    ax.set_title(f"training-pair J gap relative to iteration {first}", fontsize=10)
    ax.set_ylabel(f"gap_t / gap_{first}  (log scale)")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes[1]:
        ax.set_xlabel(XLABEL)
    handles = [
        axes[0, 0].plot([], [], color=COLOURS[i], marker="o", markersize=3, linewidth=1.8)[0]
        for i in range(len(conditions))
    ]
    labels = [legend_label(f"{c} (n={n_kept(ds, c)})") for c in conditions]
    caption = (
        "mean over seeds, band: 95% t-interval over seeds. Training pairs (dpo only): mean over the kept pairs "
        "of the iteration ending at that point.\n"
        "Best − worst of N: exact order statistics of N = n_candidates draws from π, ranked by the judge "
        "(every rule).\nRatio panel: geometric mean over seeds of gap_t / gap_1, band on the log scale."
    )
    bottom_legend(fig, handles, labels, caption)
    fig.suptitle(f"The chosen–rejected gap over iterations{diverged_note(ds, conditions)}{shown}", fontsize=13)
    return save(fig, path, force)
