"""Inside the outer iterations: the four diagnostics against the global inner step, and which moves first.

Reads a step-resolved Dataset (`record_every` below the iteration length: dims condition, seed,
step). The figure draws, per condition, the seed-mean of quality, alignment, entropy and
perceived quality over `step` with its 95% t-band, dotted lines at the outer-iteration
boundaries, and, on the alignment and entropy panels, the mean step at which each run covers half
of that metric's change over the window (`analysis.phase.half_change_step`) with its 95%
t-interval over seeds. `order_table` gives those numbers and the paired difference
(entropy step − alignment step): an interval above 0 says alignment falls first.
"""

import textwrap

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from analysis.data import diverged_note, mask_diverged
from analysis.figures import BAND, PANELS, SIZE, bottom_legend, legend_label, save
from analysis.formatting import fixed, interval
from analysis.phase import CAPTION_WIDTH, half_change_order, half_change_step, t_interval
from analysis.stats import t_band
from engine.host.results import world_of_dataset

FIRST, SECOND = "judge_alignment", "policy_entropy"
MAX_CONDITIONS = 8  # lines per panel that stay readable


def order_table(ds: xr.Dataset, start=None, end=None, confidence: float = 0.95) -> pd.DataFrame:
    """Per condition: the half-change steps of alignment and entropy over the window [start, end] of
    `step`, their t-intervals over seeds, and (entropy − alignment) paired by seed.

    Columns: condition, n, judge_alignment_mean / _ci_low / _ci_high, policy_entropy_mean /
    _ci_low / _ci_high, difference_mean / _ci_low / _ci_high, first (which crosses first, or
    'neither' when the difference's interval spans 0). attrs: the window (first and last step).
    """
    table = half_change_order(ds, FIRST, SECOND, "step", start, end, confidence)
    masked = mask_diverged(ds) if "diverged" in ds else ds
    for name in (FIRST, SECOND):
        steps = half_change_step(masked[name], "step", start, end).transpose("condition", "seed").values
        _, low, high, _ = t_interval(steps, confidence=confidence)
        table[f"{name}_ci_low"], table[f"{name}_ci_high"] = low, high
    table["first"] = np.where(
        table["difference_ci_low"] > 0,
        "alignment",
        np.where(table["difference_ci_high"] < 0, "entropy", "neither"),
    )
    window = ds["step"].sel(step=slice(start, end)).values
    table.attrs["window"] = (int(window[0]), int(window[-1]))
    order = ["condition", "n"]
    order += [f"{name}_{part}" for name in (FIRST, SECOND) for part in ("mean", "ci_low", "ci_high")]
    order += ["difference_mean", "difference_ci_low", "difference_ci_high", "first"]
    return table[order]


def within_figure(ds: xr.Dataset, path, conditions=None, start=None, end=None, *, force: bool = False):
    """The four diagnostics over the global inner step, one colour per condition (the first
    MAX_CONDITIONS unless `conditions` is given); None when the Dataset has no `step` dimension.

    A window of one record is drawn as one point per condition, and the title says there is no
    change to show (no record interval, no half-change step)."""
    if "step" not in ds.dims:
        return None
    held = ds["condition"].values.tolist()
    conditions = list(conditions) if conditions is not None else held[:MAX_CONDITIONS]
    window = mask_diverged(ds).sel(step=slice(start, end))
    steps = window["step"].values
    one_record = steps.size == 1
    table = order_table(ds, start, end).set_index("condition")
    spi = int(np.ravel(ds["steps_per_iter"].values)[0])

    fig = Figure(figsize=SIZE, layout="constrained")
    axes = fig.subplots(2, 2, sharex=True)
    for ax, (var, label) in zip(axes.flat, PANELS.items(), strict=True):
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        for boundary in range(spi * -(-int(steps[0]) // spi), int(steps[-1]) + 1, spi):
            ax.axvline(boundary, color="black", linestyle=":", linewidth=1)
        for i, condition in enumerate(conditions):
            runs = window[var].sel(condition=condition).transpose("seed", "step").values
            mean, low, high = t_band(runs, axis=0)
            n = int(np.isfinite(runs[:, -1]).sum())
            marker = "o" if one_record else None
            ax.plot(steps, mean, color=f"C{i}", linewidth=2, marker=marker, label=legend_label(f"{condition} (n={n})"))
            ax.fill_between(steps, low, high, color=f"C{i}", alpha=0.2, linewidth=0)
            if var in (FIRST, SECOND):
                row = table.loc[condition]
                middle, lo, hi = row[f"{var}_mean"], row[f"{var}_ci_low"], row[f"{var}_ci_high"]
                if np.isfinite(middle):
                    ax.axvline(middle, color=f"C{i}", linestyle="--", linewidth=1.2)
                    if np.isfinite(lo) and np.isfinite(hi):
                        ax.axvspan(*np.clip([lo, hi], steps[0], steps[-1]), color=f"C{i}", alpha=0.12, linewidth=0)
        if one_record:
            ax.set_xlim(steps[0] - 1, steps[0] + 1)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        else:
            ax.set_xlim(steps[0], steps[-1])
    axes.flat[2].axhline(world_of_dataset(ds).uniform_entropy, color="grey", linestyle="--", linewidth=1)
    for ax in axes[1]:
        ax.set_xlabel("global inner step (0 = after pretraining; dotted: ends of outer iterations)")
    if one_record:
        records = f"one record (step {int(steps[0])}): no change to show"
        caption = f"{BAND}. One record per run: no change, so no half-change step."
    else:
        records = f"a record every {int(steps[1] - steps[0])} inner steps"
        caption = "\n".join([_caption(table.attrs["window"]), *(_order_line(c, table.loc[c]) for c in conditions)])
    fig.suptitle(f"Inside the outer iterations: mean over seeds, {records}{diverged_note(ds, conditions)}", fontsize=13)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    bottom_legend(fig, handles, labels, caption, fontsize=9, title_fontsize=9)
    return save(fig, path, force)


def _caption(window: tuple) -> str:
    """What the bands, dashed lines and shading of the within figure mean."""
    return textwrap.fill(
        f"{BAND}; dashed line and shading on the alignment and entropy panels: the step where a run covers half "
        f"its change over steps {window[0]}–{window[1]}, mean and 95% t-interval over seeds (clipped to the window).",
        CAPTION_WIDTH,
    )


def _order_line(condition: str, row) -> str:
    """One condition's half-change steps and their paired difference, as the caption states them."""
    return (
        f"{condition}: half of the change at step {fixed(row[f'{FIRST}_mean'], 0)} (alignment) vs "
        f"{fixed(row[f'{SECOND}_mean'], 0)} (entropy); entropy − alignment = "
        f"{fixed(row['difference_mean'], 0, signed=True)} "
        f"{interval(row['difference_ci_low'], row['difference_ci_high'], 0, signed=True)} steps"
    )
