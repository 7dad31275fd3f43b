"""One row per condition: where it ends, how it compares with baseline seed for seed."""

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from analysis.data import mask_diverged, n_diverged
from analysis.formatting import fixed, interval
from analysis.stats import paired_difference, seed_summary
from engine.host.output import write_atomically

FINALS = {"quality": "policy_quality", "alignment": "judge_alignment"}


def condition_table(ds: xr.Dataset, baseline: str = "baseline", confidence: float = 0.95) -> pd.DataFrame:
    """Final quality/alignment (mean, std, t CI), mean peak iteration, paired Δ vs baseline.

    Finals are the last iteration. Diverged runs are left out and counted in `n_diverged`;
    the Δ columns are NaN when there is no baseline condition.
    """
    masked = mask_diverged(ds)
    final = masked.isel(iteration=-1)
    conditions = ds["condition"].values.tolist()
    has_baseline = baseline in conditions
    # Plain (condition, seed) arrays read once: selecting per condition costs seconds at 1000 conditions.
    finals = {name: final[var].transpose("condition", "seed").values for name, var in FINALS.items()}
    peaks = masked["peak_iteration"].transpose("condition", "seed").values
    left_out = ds["diverged"].astype(bool).transpose("condition", "seed").values.sum(axis=1)
    no_reference = np.full(ds.sizes["seed"], np.nan)
    references = {
        name: values[conditions.index(baseline)] if has_baseline else no_reference for name, values in finals.items()
    }
    rows = []
    for c, condition in enumerate(conditions):
        row = {"condition": condition, "n_seeds": ds.sizes["seed"] - int(left_out[c]), "n_diverged": int(left_out[c])}
        for name, values in finals.items():
            summary = seed_summary(values[c], confidence)
            row |= {
                f"final_{name}_mean": summary.mean,
                f"final_{name}_std": summary.std,
                f"final_{name}_ci_low": summary.ci_low,
                f"final_{name}_ci_high": summary.ci_high,
            }
        row["peak_iteration_mean"] = float(np.nanmean(peaks[c])) if np.isfinite(peaks[c]).any() else np.nan
        for name, values in finals.items():
            delta = paired_difference(values[c], references[name], confidence)
            row |= {
                f"delta_{name}_mean": delta.mean,
                f"delta_{name}_ci_low": delta.ci_low,
                f"delta_{name}_ci_high": delta.ci_high,
            }
        rows.append(row)
    table = pd.DataFrame(rows)
    table.attrs |= {
        "baseline": baseline if has_baseline else None,
        "confidence": confidence,
        "n_diverged": n_diverged(ds),
    }
    return table


def write_csv(table: pd.DataFrame, path, *, force: bool = False) -> str:
    """Full-precision numbers for downstream use (NaN written as empty cells)."""
    return str(write_atomically(path, lambda temporary: table.to_csv(temporary, index=False), force=force))


def write_markdown(table: pd.DataFrame, path, *, force: bool = False) -> str:
    """A human-readable table with a caption that says what the intervals are and what was left out."""
    percent = round(100 * table.attrs.get("confidence", 0.95))
    baseline = table.attrs.get("baseline")
    header = [
        "condition",
        "n",
        "left out",
        "final quality mean ± sd",
        f"{percent}% CI",
        "final alignment mean ± sd",
        f"{percent}% CI",
        "peak iter (mean)",
        f"Δ quality vs {baseline or 'baseline'}",
        f"{percent}% CI",
        f"Δ alignment vs {baseline or 'baseline'}",
        f"{percent}% CI",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table.to_dict("records"):
        cells = [row["condition"], str(row["n_seeds"]), str(row["n_diverged"])]
        for name in FINALS:
            cells += [
                f"{fixed(row[f'final_{name}_mean'])} ± {fixed(row[f'final_{name}_std'])}",
                interval(row[f"final_{name}_ci_low"], row[f"final_{name}_ci_high"]),
            ]
        cells.append(fixed(row["peak_iteration_mean"], 1))
        for name in FINALS:
            cells += [
                fixed(row[f"delta_{name}_mean"]),
                interval(row[f"delta_{name}_ci_low"], row[f"delta_{name}_ci_high"]),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    k = table.attrs.get("n_diverged", int(table["n_diverged"].sum()))
    caption = (
        f"Final = last outer iteration. Intervals: {percent}% Student-t CI of the mean over seeds "
        f"(of the per-seed differences for Δ). Δ = paired by seed (condition − {baseline or 'baseline'})"
        f"{'' if baseline else ', not computed: no baseline condition'}. "
        f"{k} diverged run{'s' if k != 1 else ''} left out."
    )
    text = "\n".join(lines) + "\n\n" + caption + "\n"
    return str(write_atomically(path, lambda temporary: Path(temporary).write_text(text), force=force))
