"""The full exact loop against its reduced two-timescale dynamics (studies/two_timescale.py;
docs/mean_field.md §9): a results file whose conditions pair policy_response `trained` with
`best_response`, everything else equal.

The timescale ratio of a condition is ε = (lr_judge / judge_update_every) / lr_policy, 0 for a frozen
judge. Each trained condition is compared with its best-response partner (the condition whose knobs
differ only in policy_response: analysis.grounding.partner), per seed (the same π₀ and pretrained
judge), summarised by Student-t intervals over seeds (analysis.stats); diverged runs drop their pair.
The gap between the loop and its reduced dynamics is measured as
- the tracking error: the trained run's `best_response_kl` = KL(π‖π*(J)) averaged over its records
  after the first (the initial transient from π₀ included), and its excess over the frozen-judge trained
  run of the same seed (whose KL is the GRU's own approach to a π* that never moves);
- the slow player's deviation: |trained − best_response| of judge alignment, policy quality and entropy
  at the last record, per seed.
`loglog_slope` fits log gap against log ε per seed (ε > 0) and gives the t-interval of the seeds' slopes.
`breakdown` says from which ε on the reduced dynamics stop describing the loop (the |Δ alignment|
interval above DESCRIBES), and `phase_boundary` where data/phase.nc's collapse boundary lies in ε.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from analysis.data import mask_diverged
from analysis.figures import DPI, SIZE, save
from analysis.formatting import estimate, significant
from analysis.grid import knob_table
from analysis.grounding import partner
from analysis.phase import ALIGNMENT_DROP, phase_table
from analysis.stats import Summary, seed_summary
from engine.host.output import write_atomically
from engine.host.results import per_iteration

SLOW_METRICS = ("judge_alignment", "policy_quality", "policy_entropy")
NAMES = {"judge_alignment": "alignment", "policy_quality": "quality", "policy_entropy": "entropy"}
DESCRIBES = ALIGNMENT_DROP / 3  # |Δ alignment| the reduced dynamics may miss and still describe the loop: 0.05
PHASE_FILE = "phase.nc"
OUTPUTS = ("timescales.png", "timescale_answers.md")


def has_best_response_pairs(ds: xr.Dataset) -> bool:
    """Does the file pair some trained condition with a best-response one?"""
    return "policy_response" in ds.coords and bool(response_pairs(ds))


def timescale_ratio(ds: xr.Dataset) -> xr.DataArray:
    """ε = (lr_judge / judge_update_every) / lr_policy per condition; 0 where the judge is frozen."""
    ratio = ds["lr_judge"] / ds["judge_update_every"] / ds["lr_policy"]
    return xr.where(ds["freeze_judge"], 0.0, ratio).rename("timescale_ratio")


def response_pairs(ds: xr.Dataset) -> list[tuple[str, str]]:
    """(trained, best_response) condition names, paired by their knobs, in file order."""
    table = knob_table(ds)
    trained = table.index[table["policy_response"] == "trained"] if "policy_response" in table else []
    pairs = [(name, partner(ds, name, policy_response="best_response")) for name in trained]
    return [(a, b) for a, b in pairs if b is not None]


def _time(values: xr.DataArray) -> str:
    return "step" if "step" in values.dims else "iteration"


def over_run(values: xr.DataArray) -> np.ndarray:
    """Per seed, the mean over every record after the first (the first is before any co-evolution)."""
    time = _time(values)
    return values.isel({time: slice(1, None)}).mean(time).transpose("seed").values


def at_end(values: xr.DataArray) -> np.ndarray:
    """Per seed, the last record."""
    return values.isel({_time(values): -1}).transpose("seed").values


@dataclass(frozen=True)
class PairGap:
    """How far one trained condition is from its reduced dynamics, over seeds."""

    trained: str
    best_response: str
    ratio: float  # ε
    tracking: np.ndarray  # per seed: best_response_kl averaged over the run
    excess: np.ndarray  # per seed: tracking − the frozen-judge trained run's (NaN without that control)
    deviation: dict  # metric -> per seed |trained − best_response| at the last record
    difference: dict  # metric -> per seed trained − best_response at the last record (signed)

    def summary(self, name: str) -> Summary:
        """The seeds' mean and 95% t-interval of `tracking`, `excess` or a metric's |Δ|."""
        values = self.deviation[name] if name in self.deviation else getattr(self, name)
        return seed_summary(values)


def pair_gaps(ds: xr.Dataset) -> list[PairGap]:
    """Every (trained, best_response) pair's gaps, by ε (the frozen pair, ε = 0, first)."""
    data = mask_diverged(ds)
    ratios = timescale_ratio(ds)
    pairs = response_pairs(ds)
    frozen = [a for a, _ in pairs if bool(ds["freeze_judge"].sel(condition=a))]
    floor = over_run(data["best_response_kl"].sel(condition=frozen[0])) if frozen else None
    gaps = []
    for trained, responding in pairs:
        tracking = over_run(data["best_response_kl"].sel(condition=trained))
        excess = tracking - floor if floor is not None else np.full_like(tracking, np.nan)
        finals = {
            m: (at_end(data[m].sel(condition=trained)), at_end(data[m].sel(condition=responding))) for m in SLOW_METRICS
        }
        gaps.append(
            PairGap(
                trained,
                responding,
                float(ratios.sel(condition=trained)),
                tracking,
                excess,
                {m: np.abs(a - b) for m, (a, b) in finals.items()},
                {m: a - b for m, (a, b) in finals.items()},
            )
        )
    return sorted(gaps, key=lambda gap: gap.ratio)


def loglog_slope(ratios, per_seed) -> Summary:
    """d log(gap)/d log(ε): each seed's least-squares slope over the ε > 0 where its gap is finite and > 0
    (at least two), summarised over seeds. per_seed: (ratios, seeds)."""
    x = np.log(np.asarray(ratios, float))
    values = np.asarray(per_seed, float)
    slopes = []
    for column in values.T:
        keep = np.isfinite(x) & np.isfinite(column) & (column > 0)
        if keep.sum() >= 2 and np.ptp(x[keep]) > 0:
            slopes.append(np.polyfit(x[keep], np.log(column[keep]), 1)[0])
    return seed_summary(np.array(slopes))


def slope_of(gaps: list[PairGap], name: str) -> Summary:
    """`loglog_slope` of a gap (`tracking`, `excess` or a metric's |Δ|) over the pairs with ε > 0."""
    moving = [gap for gap in gaps if gap.ratio > 0]
    values = [gap.deviation[name] if name in gap.deviation else getattr(gap, name) for gap in moving]
    return loglog_slope([gap.ratio for gap in moving], values)


def breakdown(gaps: list[PairGap], metric: str = "judge_alignment", tolerance: float = DESCRIBES) -> tuple:
    """(largest ε at which the |Δ metric| interval lies below `tolerance`, smallest ε at which it lies above):
    up to the first the reduced dynamics describe the loop, from the second on they do not (NaN: none)."""
    below = [gap.ratio for gap in gaps if gap.summary(metric).ci_high < tolerance]
    above = [gap.ratio for gap in gaps if gap.summary(metric).ci_low > tolerance]
    return (max(below) if below else np.nan, min(above) if above else np.nan)


@dataclass(frozen=True)
class PhaseBoundary:
    """Where a phase diagram's collapsed cells lie in ε."""

    healthy_below: float  # the largest ε of a cell that did not collapse
    collapsed_from: float  # the smallest ε of a collapsed cell
    cells: list  # (ε, judge_update_every, lr_judge, collapsed), by ε

    @property
    def separated(self) -> bool:
        """Does ε alone tell collapsed cells from the rest (every collapsed cell above every other)?"""
        return self.collapsed_from > self.healthy_below


def phase_boundary(phase: xr.Dataset) -> PhaseBoundary:
    """The collapse regime of each cell of a judge_update_every × lr_judge phase diagram (analysis.phase,
    at its last record), placed at its ε."""
    table = phase_table(per_iteration(phase), knobs=("judge_update_every", "lr_judge"))
    lr_policy = knob_table(phase)["lr_policy"]
    ratio = table["lr_judge"] / table["judge_update_every"] / lr_policy.loc[table["condition"]].to_numpy()
    cells = sorted(
        (float(r), int(every), float(lr), bool(collapsed))
        for r, every, lr, collapsed in zip(ratio, table["judge_update_every"], table["lr_judge"], table["collapsed"])
    )
    healthy = [cell[0] for cell in cells if not cell[3]]
    collapsed = [cell[0] for cell in cells if cell[3]]
    return PhaseBoundary(max(healthy) if healthy else np.nan, min(collapsed) if collapsed else np.nan, cells)


def load_phase(out_dir) -> xr.Dataset | None:
    """The phase study next to the results file (PHASE_FILE), if it is there."""
    import engine

    path = Path(out_dir) / PHASE_FILE
    return engine.load(path) if path.is_file() else None


# ---------------------------------------------------------------- the answers as markdown


def _ratio(x: float) -> str:
    return "none" if not np.isfinite(x) else significant(x)


def timescale_markdown(ds: xr.Dataset, phase: xr.Dataset | None = None) -> str:
    """Every answer: the gaps per ε with n and 95% t-intervals, their log–log slopes, the ε from which the
    reduced dynamics stop describing the loop, and where the phase diagram's collapse lies in ε."""
    gaps = pair_gaps(ds)
    n = ds.sizes["seed"]
    lines = [
        f"# The loop against its reduced dynamics: answers from {ds.attrs.get('study_name', 'this file')} ({n} seeds)",
        "",
        "ε = (lr_judge / judge_update_every) / lr_policy (0: frozen judge). Tracking: the trained run's KL(π‖π*(J)) "
        "averaged over its records after the first; excess: less the frozen-judge trained run's, paired by seed. "
        "|Δ|: |trained − best_response| at the last record, paired by seed. mean [95% t-interval] over seeds; "
        "n = pairs with neither run diverged. docs/mean_field.md §9 defines the two dynamics.",
        "",
        "## The gap at each timescale ratio",
        "",
        "| trained | ε | n | tracking KL [nats] | excess over frozen [nats] | "
        + " | ".join(f"\\|Δ {NAMES[m]}\\|" for m in SLOW_METRICS)
        + " | "
        + " | ".join(f"Δ {NAMES[m]} (signed)" for m in SLOW_METRICS)
        + " |",
        "|" + " --- |" * (5 + 2 * len(SLOW_METRICS)),
    ]
    for gap in gaps:
        cells = [estimate(gap.summary("tracking")), estimate(gap.summary("excess"))]
        cells += [estimate(gap.summary(m)) for m in SLOW_METRICS]
        cells += [estimate(seed_summary(gap.difference[m]), signed=True) for m in SLOW_METRICS]
        n_pairs = gap.summary("judge_alignment").n
        lines.append(f"| {gap.trained} | {_ratio(gap.ratio)} | {n_pairs} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Does the gap shrink in proportion to ε?",
        "",
        "Each seed's least-squares slope of log gap against log ε over the ε > 0 (its gap finite and > 0), "
        "mean [95% t-interval] over seeds. To first order the policy's lag behind π* is O(ε), so KL(π‖π*), "
        "quadratic in it, is O(ε²): slope 2 for the KL, 1 for its square root; the slow player's deviation is "
        "O(ε) per unit of slow time, and a fixed number of steps spans slow time ∝ ε (docs/mean_field.md §9).",
        "",
        "| gap | slope | seeds |",
        "| --- | --- | --- |",
    ]
    for name, label in (("tracking", "tracking KL"), ("excess", "excess tracking KL over frozen")):
        slope = slope_of(gaps, name)
        lines.append(f"| {label} | {estimate(slope)} | {slope.n} |")
    for metric in SLOW_METRICS:
        slope = slope_of(gaps, metric)
        lines.append(f"| \\|Δ {NAMES[metric]}\\| | {estimate(slope)} | {slope.n} |")
    described, departs = breakdown(gaps)
    lines += [
        "",
        "## Where the reduced dynamics stop describing the loop",
        "",
        f"The reduced dynamics describe the loop where the |Δ alignment| interval lies below {DESCRIBES:g} "
        f"(a third of the {ALIGNMENT_DROP:g} alignment drop a collapsed phase-diagram cell shows): up to ε = "
        f"{_ratio(described)}; its interval lies above it from ε = {_ratio(departs)} on.",
    ]
    if phase is not None:
        boundary = phase_boundary(phase)
        lines += [
            "",
            f"## The collapse boundary of {phase.attrs.get('study_name', 'the phase study')} in ε",
            "",
            f"Cells that did not collapse reach ε = {_ratio(boundary.healthy_below)}; collapsed cells start at "
            f"ε = {_ratio(boundary.collapsed_from)}: ε "
            + ("alone separates them." if boundary.separated else "alone does not separate them (cells below).")
            + " The phase study runs the sampled loop without a KL penalty: its ε is the same ratio of rates, "
            "not the same dynamics.",
            "",
            "| ε | judge_update_every | lr_judge | collapsed |",
            "| --- | --- | --- | --- |",
        ]
        for ratio, every, lr, collapsed in boundary.cells:
            lines.append(f"| {significant(ratio)} | {every} | {lr:g} | {'yes' if collapsed else 'no'} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the figure


def _errorbar(ax, gaps, name, colour, label):
    summaries = [gap.summary(name) for gap in gaps]
    x = np.array([gap.ratio for gap in gaps])
    mean = np.array([s.mean for s in summaries])
    low = np.array([s.ci_low for s in summaries])
    high = np.array([s.ci_high for s in summaries])
    errors = np.clip(np.vstack([mean - low, high - mean]), 0, None)
    ax.errorbar(x, mean, yerr=np.nan_to_num(errors), color=colour, marker="o", capsize=3, label=label)


def _slope_guides(ax, x, y, powers):
    """Dotted lines of slope `powers` through the geometric middle of the points (x, y)."""
    x0, y0 = np.exp(np.mean(np.log(x))), np.exp(np.mean(np.log(y)))
    span = np.array([x.min(), x.max()])
    for power in powers:
        ax.plot(span, y0 * (span / x0) ** power, color="grey", linestyle=":", linewidth=1)
        ax.annotate(f"slope {power}", (span[1], y0 * (span[1] / x0) ** power), fontsize=8, color="grey")


def timescale_figure(ds: xr.Dataset, path, phase: xr.Dataset | None = None, *, force: bool = False):
    """Log–log: the tracking KL (left) and the slow player's |Δ| (right) against ε, with 95% t-intervals,
    slope-1 and slope-2 guides, and the phase diagram's collapse boundary in ε where it is given."""
    gaps = [gap for gap in pair_gaps(ds) if gap.ratio > 0]
    if not gaps:
        return None
    fig = Figure(figsize=(SIZE[0] * 1.2, SIZE[1] * 0.8), dpi=DPI, layout="constrained")
    left, right = fig.subplots(1, 2)
    _errorbar(left, gaps, "tracking", "tab:blue", "KL(π‖π*) over the run")
    _errorbar(left, gaps, "excess", "tab:orange", "less the frozen judge's")
    for colour, metric in zip(("tab:green", "tab:red", "tab:purple"), SLOW_METRICS, strict=True):
        _errorbar(right, gaps, metric, colour, f"|Δ {NAMES[metric]}| at the end")
    right.axhline(DESCRIBES, color="tab:green", linestyle="--", linewidth=1, label=f"{DESCRIBES:g}: describes")
    x = np.array([gap.ratio for gap in gaps])
    for ax, name in ((left, "tracking"), (right, "judge_alignment")):
        y = np.array([gap.summary(name).mean for gap in gaps])
        if np.all(y > 0):
            _slope_guides(ax, x, y, (1, 2))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("ε = (lr_judge / judge_update_every) / lr_policy")
        ax.grid(alpha=0.3, which="both")
    if phase is not None:
        boundary = phase_boundary(phase)
        for ax in (left, right):
            if np.isfinite(boundary.healthy_below) and np.isfinite(boundary.collapsed_from):
                low, high = sorted((boundary.healthy_below, boundary.collapsed_from))
                label = f"{phase.attrs.get('study_name', 'phase')}: collapse boundary"
                if low < high:
                    ax.axvspan(low, high, color="tab:red", alpha=0.1, label=label)
                else:
                    ax.axvline(low, color="tab:red", linewidth=2, alpha=0.5, label=label)
    left.set_ylabel("tracking error [nats]")
    right.set_ylabel("|trained − best response|, paired by seed")
    left.legend(fontsize=8, frameon=False)
    right.legend(fontsize=8, frameon=False)
    fig.suptitle(f"The loop against its reduced dynamics ({ds.sizes['seed']} seeds; bars: 95% t-interval)")
    return save(fig, path, force)


def output_paths(out_dir, stem: str) -> list[Path]:
    return [Path(out_dir) / f"{stem}_{name}" for name in OUTPUTS]


def timescale_outputs(ds: xr.Dataset, out_dir, stem: str, phase: xr.Dataset | None = None, *, force=False) -> list:
    """The figure and the answers' markdown, for a file pairing trained and best-response conditions."""
    figure_path, answers_path = output_paths(out_dir, stem)
    written = [timescale_figure(ds, figure_path, phase, force=force)]
    text = timescale_markdown(ds, phase)
    written.append(str(write_atomically(answers_path, lambda temporary: Path(temporary).write_text(text), force=force)))
    return [path for path in written if path is not None]
