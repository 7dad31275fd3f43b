"""Do two results files of one study agree in distribution? Per condition and metric, a two-sample
comparison of the final values over seeds.

Two engines (or two kinds of device) that draw other random numbers give other runs of the same
seeds, so the runs are not paired: each file is a sample of the condition's outcome distribution.
Per condition and metric: Welch's t-test of the means, the two-sample Kolmogorov-Smirnov test of
the whole distribution (the outcomes are often bimodal: a worse mode), and the standardised
difference of the means (Cohen's d, pooled sd). With many tests, some reject by chance, so the
p-values are also given Holm-adjusted over the whole table (family-wise error 5%).
"""

import numpy as np
import xarray as xr
from scipy import stats

from analysis.data import mask_diverged
from analysis.formatting import fixed

METRICS = ("policy_quality", "judge_alignment", "policy_entropy")
ALPHA = 0.05


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (same shape, each ≤ 1)."""
    flat = np.asarray(p_values, float).ravel()
    order = np.argsort(flat)
    scaled = (len(flat) - np.arange(len(flat))) * flat[order]
    adjusted = np.empty_like(flat)
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return adjusted.reshape(np.shape(p_values))


def two_sample(a: np.ndarray, b: np.ndarray) -> dict:
    """Welch's t, its p, the KS p and Cohen's d of b against a (finite values only)."""
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    spread = np.sqrt((np.var(a, ddof=1) * (len(a) - 1) + np.var(b, ddof=1) * (len(b) - 1)) / (len(a) + len(b) - 2))
    if spread == 0:  # both constant: equal or not, no test is needed
        same = np.mean(a) == np.mean(b)
        return {
            "mean_a": np.mean(a),
            "mean_b": np.mean(b),
            "d": 0.0 if same else np.inf,
            "t_p": float(same),
            "ks_p": float(same),
            "n_a": len(a),
            "n_b": len(b),
        }
    welch = stats.ttest_ind(b, a, equal_var=False)
    return {
        "mean_a": np.mean(a),
        "mean_b": np.mean(b),
        "d": (np.mean(b) - np.mean(a)) / spread,
        "t_p": welch.pvalue,
        "ks_p": stats.ks_2samp(a, b).pvalue,
        "n_a": len(a),
        "n_b": len(b),
    }


def compare(a: xr.Dataset, b: xr.Dataset, metrics=METRICS) -> list[dict]:
    """One row per (condition, metric) of the conditions both files hold, at each file's last
    iteration, with Holm-adjusted p-values over all rows (`t_holm`, `ks_holm`)."""
    a, b = mask_diverged(a), mask_diverged(b)
    conditions = [c for c in a.condition.values if c in set(b.condition.values)]
    rows = []
    for condition in conditions:
        for metric in metrics:
            final_a = a[metric].sel(condition=condition).isel(iteration=-1).values
            final_b = b[metric].sel(condition=condition).isel(iteration=-1).values
            rows.append({"condition": str(condition), "metric": metric, **two_sample(final_a, final_b)})
    for test in ("t", "ks"):
        for row, adjusted in zip(rows, holm(np.array([row[f"{test}_p"] for row in rows]))):
            row[f"{test}_holm"] = adjusted
    return rows


def comparison_markdown(rows: list[dict], label_a: str, label_b: str) -> str:
    """The rows as a markdown table, then the largest standardised difference and what rejects."""
    lines = [
        f"| condition | metric | mean {label_a} | mean {label_b} | d | Welch p | KS p | Welch p (Holm) | KS p (Holm) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['condition']} | {r['metric']} | {fixed(r['mean_a'], 3)} | {fixed(r['mean_b'], 3)} | "
            f"{fixed(r['d'], 2)} | {r['t_p']:.3g} | {r['ks_p']:.3g} | {r['t_holm']:.3g} | {r['ks_holm']:.3g} |"
        )
    largest = max(rows, key=lambda r: abs(r["d"]))
    rejected = [f"{r['condition']} {r['metric']}" for r in rows if min(r["t_holm"], r["ks_holm"]) < ALPHA]
    unadjusted = sum(min(r["t_p"], r["ks_p"]) < ALPHA for r in rows)
    lines += [
        "",
        f"{len(rows)} comparisons, n = {rows[0]['n_a']} and {rows[0]['n_b']} seeds; largest standardised difference "
        f"|d| = {abs(largest['d']):.2f} ({largest['condition']}, {largest['metric']}; Welch p {largest['t_p']:.3g}, "
        f"KS p {largest['ks_p']:.3g}). Unadjusted p < {ALPHA}: {unadjusted} of {len(rows)} tests (either test); "
        f"after Holm's adjustment: {', '.join(rejected) if rejected else 'none'}.",
    ]
    return "\n".join(lines) + "\n"
