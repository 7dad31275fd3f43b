"""The batch-size limit (studies/batch_limit.py): results files of one design run at several batch
sizes and under gradient_estimator exact, joined along a `batch` dimension ('16', '64', ...,
'exact' last), so a metric reads as batch × condition × seed × iteration."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.figure import Figure
from scipy import stats

from analysis.claims import split_modes
from analysis.data import mask_diverged
from analysis.figures import DPI, SIZE, save
from analysis.formatting import estimate, fixed, significant
from analysis.stats import Summary, paired_difference, seed_summary
from engine.host.output import write_atomically
from engine.host.results import load, world_of_dataset

EXACT = "exact"


def batch_label(ds: xr.Dataset) -> str:
    """'exact' where every condition ran under gradient_estimator exact, else its batch size ('16', ...)."""
    estimators = set(np.ravel(ds["gradient_estimator"].values).tolist())
    if estimators == {EXACT}:
        return EXACT
    if estimators != {"sampled"}:
        raise ValueError(f"study {ds.attrs.get('study_name')!r} mixes gradient estimators: it has no one batch label")
    return str(int(np.ravel(ds["batch_size"].values)[0]))  # study-wide: one value


def join_batches(datasets) -> xr.Dataset:
    """Datasets of the same conditions, seeds and records, one per batch size (or exact), along a new
    `batch` dimension ordered by batch size, exact last. Knob coordinates that differ between them
    (batch_size, gradient_estimator) become (batch, condition) coordinates; attrs["studies"] maps each
    label to its study (JSON). A ValueError names the first file that does not fit: a label seen twice,
    another world, other conditions, seeds or records, or other pretrained judges (pretrain_steps or
    pretrain_alignment not bit for bit the same: pretrain_batch_size keeps them across batch sizes)."""
    by_label = {}
    for ds in datasets:
        label = batch_label(ds)
        if label in by_label:
            raise ValueError(f"two results files at batch {label!r}")
        by_label[label] = ds
    labels = sorted(by_label, key=lambda label: (label == EXACT, 0 if label == EXACT else int(label)))
    first = by_label[labels[0]]
    time = "step" if "step" in first.dims else "iteration"
    for label in labels[1:]:
        ds = by_label[label]
        if world_of_dataset(ds) != world_of_dataset(first):
            raise ValueError(f"batch {label!r}: its world {world_of_dataset(ds)} differs from batch {labels[0]!r}'s")
        for dim in ("condition", "seed", time):
            if dim not in ds.dims or not np.array_equal(ds[dim].values, first[dim].values):
                raise ValueError(f"batch {label!r}: its {dim} values differ from batch {labels[0]!r}'s")
        for name in ("pretrain_steps", "pretrain_alignment"):
            if not np.array_equal(ds[name].values, first[name].values):
                raise ValueError(
                    f"batch {label!r}: its {name} differs from batch {labels[0]!r}'s: other pretrained judges "
                    "(set the same pretrain_batch_size in every study)"
                )
    joined = xr.concat(
        [by_label[label] for label in labels],
        dim=pd.Index(labels, name="batch"),
        coords="different",
        compat="equals",
        combine_attrs="drop_conflicts",
    )
    joined.attrs["studies"] = json.dumps({label: by_label[label].attrs["study"] for label in labels})
    return joined


def load_batch_limit(paths) -> xr.Dataset:
    """`join_batches` of the results files at `paths` (any order)."""
    return join_batches([load(path) for path in paths])


METRICS = {
    "policy_quality": "final quality [q*]",
    "judge_alignment": "final judge alignment [Spearman ρ]",
    "policy_entropy": "final policy entropy [nats]",
}
OUTPUTS = ("answers.md", "convergence.png")
FAMILY = "batch_limit"  # the stem of the joined outputs: data/batch_limit_answers.md, ...


def finals(joined: xr.Dataset, metric: str) -> xr.DataArray:
    """batch × condition × seed values of `metric` at the last outer iteration, diverged runs NaN."""
    values = mask_diverged(joined)[metric]
    time = "step" if "step" in values.dims else "iteration"
    return values.isel({time: -1})


def starts(joined: xr.Dataset, metric: str) -> xr.DataArray:
    time = "step" if "step" in joined[metric].dims else "iteration"
    return joined[metric].isel({time: 0})


def sampled_batches(joined: xr.Dataset) -> list[str]:
    return [label for label in joined["batch"].values.tolist() if label != EXACT]


def convergence_slope(joined: xr.Dataset, metric: str, condition: str) -> Summary:
    """Per seed, the least-squares slope of log |metric(B) − metric(exact)| against log B over the
    sampled batches; summarised over seeds. −1 would be a deviation ∝ 1/B, −½ one ∝ 1/√B."""
    final = finals(joined, metric).sel(condition=condition)
    batches = sampled_batches(joined)
    x = np.log([int(label) for label in batches])
    deviations = np.abs(final.sel(batch=batches) - final.sel(batch=EXACT)).values  # batch × seed
    with np.errstate(divide="ignore"):
        y = np.log(deviations)
    keep = np.all(np.isfinite(y), axis=0)
    slopes = np.polyfit(x, y[:, keep], 1)[0] if keep.any() else np.array([])
    return seed_summary(slopes)


def mode_rows(joined: xr.Dataset, condition: str) -> list[dict]:
    """Per batch, the worse-mode split of final quality (analysis.claims.split_modes) and how its
    seeds overlap the exact loop's lower group: a one-sided Fisher exact test of association."""
    final, start = finals(joined, "policy_quality").sel(condition=condition), starts(joined, "policy_quality")
    exact = split_modes(final.sel(batch=EXACT).values, start.sel(batch=EXACT, condition=condition).values)
    rows = []
    for label in joined["batch"].values.tolist():
        split = split_modes(final.sel(batch=label).values, start.sel(batch=label, condition=condition).values)
        both = int(np.sum(split.lower & exact.lower))
        table = [[both, split.k - both], [exact.k - both, split.n - split.k - exact.k + both]]
        p_value = stats.fisher_exact(table, alternative="greater").pvalue if label != EXACT else np.nan
        seeds = ", ".join(str(seed) for seed in joined["seed"].values[split.lower])
        rows.append({"batch": label, "split": split, "shared": both, "p": p_value, "seeds": seeds})
    return rows


def answers_markdown(joined: xr.Dataset) -> str:
    """The batch-limit answers: the collapse per batch, convergence to the exact loop, the worse mode."""
    conditions = joined["condition"].values.tolist()
    batches = joined["batch"].values.tolist()
    n_seeds = joined.sizes["seed"]
    lines = [
        "# The batch-size limit: batch_limit",
        "",
        f"Written by analysis/batch_limit.py from the {len(batches)} results files batch_limit_<label>.nc "
        f"({len(conditions)} conditions × {n_seeds} seeds each; batches {', '.join(batches)}). Every file starts "
        "from the same pretrained judges and π₀, seed by seed, so differences are paired by seed. Intervals: 95% "
        "Student-t over seeds; diverged runs left out. Definitions: docs/mean_field.md.",
        "",
        "## The collapse at each batch size (final outer iteration)",
        "",
        "| condition | batch | quality | quality − start | alignment − start | entropy | entropy / ln N |",
        "|---|---|---|---|---|---|---|",
    ]
    quality, alignment, entropy = (finals(joined, m) for m in METRICS)
    uniform_entropy = world_of_dataset(joined).uniform_entropy
    for condition in conditions:
        for label in batches:
            at = {"condition": condition, "batch": label}
            q, a, e = (v.sel(at).values for v in (quality, alignment, entropy))
            q0, a0 = (starts(joined, m).sel(at).values for m in ("policy_quality", "judge_alignment"))
            lines.append(
                f"| {condition} | {label} | {estimate(seed_summary(q))} "
                f"| {estimate(paired_difference(q, q0), signed=True)} "
                f"| {estimate(paired_difference(a, a0), signed=True)} | {estimate(seed_summary(e))} "
                f"| {seed_summary(e).mean / uniform_entropy:.1%} |"
            )
    lines += [
        "",
        "## Convergence to the exact loop: metric(B) − metric(exact), paired by seed",
        "",
        "Mean: the difference of the means (does the distribution converge?); RMS: the root mean square of the "
        "per-seed differences (does each seed's run converge to its exact run?); slope: per seed, log |difference| "
        "against log B over the sampled batches (−1: ∝ 1/B, −½: ∝ 1/√B), over the n seeds whose difference is "
        "nonzero at every batch (a seed whose run ends on the exact run's values at some batch has no slope).",
        "",
        "| condition | metric | " + " | ".join(f"B = {b}: mean; RMS" for b in sampled_batches(joined)) + " | slope |",
        "|---|---|" + "---|" * len(sampled_batches(joined)) + "---|",
    ]
    for condition in conditions:
        for metric in METRICS:
            final = finals(joined, metric).sel(condition=condition)
            cells = []
            for label in sampled_batches(joined):
                difference = final.sel(batch=label).values - final.sel(batch=EXACT).values
                rms = float(np.sqrt(np.nanmean(difference**2)))
                cells.append(f"{estimate(seed_summary(difference), signed=True)}; {fixed(rms)}")
            slope = convergence_slope(joined, metric, condition)
            slope_text = f"{estimate(slope, signed=True)} (n = {slope.n})" if slope.n else "–"
            lines.append(f"| {condition} | {metric} | " + " | ".join(cells) + f" | {slope_text} |")
    lines += [
        "",
        "## The worse mode: the same seeds as under exact?",
        "",
        "Final quality split as claim 5 splits it (analysis.claims.split_modes): the lower group at the largest gap "
        "between sorted values, at most half the seeds; separate when Ashman's D > 2 and it gives up ≥ 25% of the "
        "upper mode's gain. Shared: lower-group seeds also in the exact loop's lower group; p: one-sided Fisher "
        "exact test that the two lower groups share more seeds than chance.",
        "",
        "| condition | batch | lower group k/n | its seeds | means lower; upper | Ashman's D | gives up | separate "
        "| shared with exact | p |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for condition in conditions:
        for row in mode_rows(joined, condition):
            split = row["split"]
            ashman = "> 100" if split.ashman > 100 else fixed(split.ashman, 1)
            p_text = "" if row["batch"] == EXACT else significant(row["p"])
            shared = "" if row["batch"] == EXACT else f"{row['shared']}/{split.k}"
            lines.append(
                f"| {condition} | {row['batch']} | {split.k}/{split.n} | {row['seeds']} | {fixed(split.lower_mean)}; "
                f"{fixed(split.upper_mean)} | {ashman} | {split.given_up:.0%} | {'yes' if split.separate else 'no'} "
                f"| {shared} | {p_text} |"
            )
    return "\n".join(lines) + "\n"


def convergence_figure(joined: xr.Dataset, path, *, force: bool = False) -> str:
    """Per metric, the final value's mean and 95% t-interval against the batch size, one line per
    condition, the exact loop's mean and interval as a band."""
    fig = Figure(figsize=SIZE, dpi=DPI, layout="constrained")
    axes = fig.subplots(1, len(METRICS))
    batches = sampled_batches(joined)
    x = np.array([int(label) for label in batches])
    colours = ("tab:red", "tab:blue", "tab:grey", "tab:green", "tab:orange")
    for ax, (metric, label) in zip(axes, METRICS.items(), strict=True):
        final = finals(joined, metric)
        for i, condition in enumerate(joined["condition"].values.tolist()):
            colour = colours[i % len(colours)]
            summaries = [seed_summary(final.sel(condition=condition, batch=b).values) for b in batches]
            mean = np.array([s.mean for s in summaries])
            errors = np.array([[s.mean - s.ci_low for s in summaries], [s.ci_high - s.mean for s in summaries]])
            ax.errorbar(x, mean, yerr=errors, color=colour, marker="o", capsize=3, label=condition)
            exact = seed_summary(final.sel(condition=condition, batch=EXACT).values)
            ax.axhspan(exact.ci_low, exact.ci_high, color=colour, alpha=0.15)
            ax.axhline(exact.mean, color=colour, linestyle="--", linewidth=1)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size B")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0].legend(frameon=False)
    fig.suptitle(
        f"Does the collapse survive the noise-free limit? ({joined.sizes['seed']} seeds, 95% t-intervals; "
        "dashed line and band: gradient_estimator exact)"
    )
    return save(fig, path, force)


def family_paths(out_dir) -> list[Path]:
    """The family's results files in `out_dir` (batch_limit_<label>.nc), or [] unless the exact one and
    at least two sampled ones are there."""
    paths = sorted(Path(out_dir).glob(f"{FAMILY}_*.nc"))
    labels = [path.stem.removeprefix(f"{FAMILY}_") for path in paths]
    sampled = [label for label in labels if label.isdecimal()]
    return paths if EXACT in labels and len(sampled) >= 2 else []


def output_paths(out_dir) -> list[Path]:
    return [Path(out_dir) / f"{FAMILY}_{name}" for name in OUTPUTS]


def has_batch_limit_family(ds: xr.Dataset, out_dir) -> bool:
    """Whether `ds` is the family's exact file and its siblings lie next to it in `out_dir`: the
    joined outputs are written once, with the exact file's figures."""
    name = str(ds.attrs.get("study_name", ""))
    return name == f"{FAMILY}_{EXACT}" and bool(family_paths(out_dir))


def batch_limit_outputs(joined: xr.Dataset, out_dir, *, force: bool = False) -> list:
    """The answers and the convergence figure of the family's joined files (`load_batch_limit`)."""
    answers_path, figure_path = output_paths(out_dir)
    text = answers_markdown(joined)
    answers = write_atomically(answers_path, lambda temporary: Path(temporary).write_text(text), force=force)
    return [str(answers), convergence_figure(joined, figure_path, force=force)]
