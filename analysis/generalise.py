"""Do the published findings hold away from the reference point? The `generalise` family
(studies/generalise.py): the reference world's file, whose conditions are named <condition>.<cell>,
and one file per world size, each a cell of its own.

Every cell is read by the lab's claim rules (`analysis.claims`) after its qualities are put on the
reference world's scale (`on_reference_scale`), so a threshold in q* units (MATERIAL) means the same
share of the gap to the optimum in every world. Across cells the baseline is compared by scale-free
readings (docs/worlds.md): its final `policy_quality_gap_share` (the ceiling), its judge's
alignment change from iteration 0 (the drift) and its final entropy as a share of ln N (the
collapse). Cells run in different worlds or with different judges share nothing seed by seed, so
differences between cells are Welch intervals, never paired.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from analysis.claims import REGISTRY, evaluate_claims
from analysis.data import mask_diverged, n_diverged
from analysis.figures import DPI, save
from analysis.formatting import estimate
from analysis.stats import Summary, seed_summary, welch_difference
from engine.core.world import LANDSCAPES, q_star_of
from engine.host.output import write_atomically
from engine.host.results import load, world_of_dataset

FAMILY = "generalise"  # data/generalise_<label>.nc; the joined outputs data/generalise_answers.md, ...
REFERENCE = "reference"  # the reference world's file and its cell at the reference point
OUTPUTS = ("answers.md", "cells.png")
AXES = {  # an axis and the knobs a cell on it moves away from the reference point
    "world size": ("vocab", "seq_len"),
    "ruggedness": ("landscape", "nk_k", "transition_alpha", "world_seed"),
    "judge": ("judge_hidden", "judge_arch"),
    "policy": ("policy_hidden", "policy_arch"),
}
READINGS = {  # the baseline's readings per cell: how each is read
    "ceiling": "final share of the gap to the optimum closed (policy_quality_gap_share)",
    "drift": "judge alignment change, final − iteration 0 (Spearman ρ)",
    "collapse": "final policy entropy as a share of ln N",
}
AXIS_LABELS = {"ceiling": "gap share", "drift": "Δρ, final − 0", "collapse": "entropy / ln N"}


@dataclass(frozen=True)
class Cell:
    """One cell: its Dataset (conditions under their blog names), the axis it moves along (None at the
    reference point) and its position there."""

    name: str
    ds: xr.Dataset
    axis: str | None

    def knob(self, name: str, condition: str = "baseline"):
        return self.ds[name].sel(condition=condition).values.item()

    @property
    def n_sequences(self) -> int:
        return world_of_dataset(self.ds).n_sequences


def file_label(ds: xr.Dataset) -> str:
    """'reference' or the world-size label ('n256', ...) of a family file, from its study name."""
    return str(ds.attrs.get("study_name", "")).removeprefix(f"{FAMILY}_")


def split_cells(ds: xr.Dataset) -> dict[str, xr.Dataset]:
    """A family file's cells: conditions named <condition>.<cell> grouped by cell and renamed to
    <condition>; a file without such names is one cell, named by `file_label`."""
    names = ds["condition"].values.tolist()
    if not all("." in name for name in names):
        return {file_label(ds): ds}
    cells = {}
    for name in names:
        cells.setdefault(name.rsplit(".", 1)[1], []).append(name)
    return {
        cell: ds.sel(condition=members).assign_coords(condition=[m.rsplit(".", 1)[0] for m in members])
        for cell, members in cells.items()
    }


def moved_knobs(ds: xr.Dataset, reference: xr.Dataset) -> set:
    """The knobs whose value for the baseline differs between two cells."""
    axis_knobs = {knob for knobs in AXES.values() for knob in knobs}
    return {
        knob
        for knob in axis_knobs
        if ds[knob].sel(condition="baseline").values.item() != reference[knob].sel(condition="baseline").values.item()
    }


def axis_of(ds: xr.Dataset, reference: xr.Dataset) -> str | None:
    """The axis a cell moves along from the reference cell (None: it is the reference cell). A cell that
    moves knobs of two axes is not one-axis-at-a-time: ValueError."""
    moved = moved_knobs(ds, reference)
    if not moved:
        return None
    axes = [axis for axis, knobs in AXES.items() if moved <= set(knobs)]
    if not axes:
        raise ValueError(f"a cell moves {sorted(moved)}: knobs of more than one axis")
    return axes[0]


def family_cells(datasets) -> list[Cell]:
    """The cells of the family's files (any order), the reference cell first, then by axis in AXES order
    and within one by the files' order. The reference world's file is required."""
    by_label = {file_label(ds): ds for ds in datasets}
    if REFERENCE not in by_label:
        raise ValueError(f"the family needs its reference world's file ({FAMILY}_{REFERENCE}.nc)")
    split = {}
    for label in [
        REFERENCE,
        *sorted(set(by_label) - {REFERENCE}, key=lambda lb: world_of_dataset(by_label[lb]).n_sequences),
    ]:
        split |= split_cells(by_label[label])
    reference = split[REFERENCE]
    cells = [Cell(name, ds, axis_of(ds, reference)) for name, ds in split.items()]
    order = [None, *AXES]
    return sorted(cells, key=lambda cell: order.index(cell.axis))


# ---------------------------------------------------------------- one scale for the claims


def quality_moments(ds: xr.Dataset) -> np.ndarray:
    """(condition, 2): the mean and the maximum of each condition's q* over all N sequences (float64)."""
    world = world_of_dataset(ds)
    rows = []
    for condition in ds["condition"].values.tolist():
        knobs = {k: ds[k].sel(condition=condition).values.item() for k in ("landscape", "nk_k", "world_seed")}
        alpha = ds["transition_alpha"].sel(condition=condition).values.item()
        q = np.asarray(
            q_star_of(world, LANDSCAPES.index(knobs["landscape"]), knobs["nk_k"], knobs["world_seed"], alpha),
            dtype=np.float64,
        )
        rows.append((q.mean(), q.max()))
    return np.array(rows)


def on_reference_scale(ds: xr.Dataset, reference: np.ndarray) -> xr.Dataset:
    """`ds` with policy_quality and judge_perceived_quality (J is regressed on q*, so it shares its units)
    mapped per condition by the affine map that takes the condition's mean q* to `reference`'s mean and its
    maximum to `reference`'s maximum (`reference`: (mean, max), the reference cell's). A condition whose
    q* has the reference's moments is left as it is, bit for bit."""
    moments = quality_moments(ds)
    mean, best = moments[:, 0], moments[:, 1]
    same = (mean == reference[0]) & (best == reference[1])
    scale = np.where(same, 1.0, (reference[1] - reference[0]) / (best - mean))
    scaled = ds.copy()
    for name in ("policy_quality", "judge_perceived_quality"):
        values = ds[name]
        mapped = reference[0] + (values - xr.DataArray(mean, dims="condition")) * xr.DataArray(scale, dims="condition")
        scaled[name] = values.where(xr.DataArray(same, dims="condition"), mapped)
    return scaled


def cell_claims(cells: list[Cell]) -> dict[str, list]:
    """Per cell, `evaluate_claims` on its Dataset put on the reference cell's q* scale."""
    reference = quality_moments(cells[0].ds.sel(condition=["baseline"]))[0]
    return {cell.name: evaluate_claims(on_reference_scale(cell.ds, reference)) for cell in cells}


# ---------------------------------------------------------------- the baseline's readings per cell


def readings(cell: Cell, condition: str = "baseline") -> dict[str, np.ndarray]:
    """Per seed: the ceiling, drift and collapse of READINGS (NaN for diverged runs)."""
    ds = mask_diverged(cell.ds).sel(condition=condition)
    alignment = ds["judge_alignment"].values
    return {
        "ceiling": ds["policy_quality_gap_share"].values[:, -1],
        "drift": alignment[:, -1] - alignment[:, 0],
        "collapse": ds["policy_entropy"].values[:, -1] / world_of_dataset(cell.ds).uniform_entropy,
    }


def position(cell: Cell, axis: str) -> float | str:
    """Where a cell sits on `axis`: N, the judge's or the policy's parameters, or its name (ruggedness)."""
    if axis == "world size":
        return cell.n_sequences
    if axis == "policy":
        return cell.knob("policy_parameters")
    if axis == "judge":
        return cell.knob("judge_parameters")
    return cell.name


def axis_cells(cells: list[Cell], axis: str) -> list[Cell]:
    """The reference cell and the cells of `axis`, in order along it (ruggedness: the files' order)."""
    members = [cells[0], *(cell for cell in cells if cell.axis == axis)]
    return members if axis == "ruggedness" else sorted(members, key=lambda cell: position(cell, axis))


def comparison(cells: list[Cell], a: str, b: str, reading: str, condition: str = "baseline") -> Summary:
    """Welch difference of a reading between two cells (cell a − cell b) for one condition."""
    named = {cell.name: cell for cell in cells}
    return welch_difference(readings(named[a], condition)[reading], readings(named[b], condition)[reading])


# ---------------------------------------------------------------- the answers


def _verdict_cell(claim) -> str:
    return f"**{claim.verdict}**<br>{claim.key}".replace("|", "\\|")


def claims_table(cells: list[Cell], claims: dict[str, list]) -> list[str]:
    """Markdown rows: a row per claim decided somewhere, a column per cell (verdict and key number)."""
    header = "| claim | " + " | ".join(f"{cell.name}" for cell in cells) + " |"
    lines = [header, "|---|" + "---|" * len(cells)]
    for i, (name, *_) in enumerate(REGISTRY):
        row = [claims[cell.name][i] for cell in cells]
        if all(claim.verdict == "n/a" for claim in row):
            continue
        lines.append(f"| {name} | " + " | ".join(_verdict_cell(claim) for claim in row) + " |")
    return lines


def generalisation(cells: list[Cell], claims: dict[str, list]) -> list[str]:
    """Per claim decided somewhere: the same verdict in every cell, or the cells where it differs from the
    reference cell's."""
    lines = []
    for i, (name, *_) in enumerate(REGISTRY):
        verdicts = {cell.name: claims[cell.name][i].verdict for cell in cells}
        if set(verdicts.values()) == {"n/a"}:
            continue
        at_reference = verdicts[cells[0].name]
        differ = {cell: verdict for cell, verdict in verdicts.items() if verdict != at_reference}
        if not differ:
            lines.append(f"- {name}: **{at_reference}** in all {len(cells)} cells.")
        else:
            moved = "; ".join(f"{cell}: {verdict}" for cell, verdict in differ.items())
            lines.append(
                f"- {name}: **{at_reference}** at the reference point and in {len(cells) - len(differ)} of "
                f"{len(cells)} cells; differs in {len(differ)} ({moved})."
            )
    return lines


def baseline_table(cells: list[Cell]) -> list[str]:
    lines = [
        "| cell | axis | N | judge parameters | policy parameters | pretraining reached | alignment at 0 | drift "
        "| ceiling (gap share) | quantile | entropy / ln N | diverged |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cell in cells:
        values = readings(cell)
        ds = mask_diverged(cell.ds).sel(condition="baseline")
        start = seed_summary(ds["judge_alignment"].values[:, 0])
        reached = cell.ds["pretrain_reached"].sel(condition="baseline").values
        quantile = seed_summary(ds["policy_quality_quantile"].values[:, -1])
        lines.append(
            f"| {cell.name} | {cell.axis or '—'} | {cell.n_sequences:,} | {cell.knob('judge_parameters'):,} "
            f"({cell.knob('judge_arch')}) | {cell.knob('policy_parameters'):,} ({cell.knob('policy_arch')}) "
            f"| {int(reached.sum())}/{reached.size} | {estimate(start)} "
            f"| {estimate(seed_summary(values['drift']), signed=True)} "
            f"| {estimate(seed_summary(values['ceiling']))} | {estimate(quantile)} "
            f"| {estimate(seed_summary(values['collapse']))} | {n_diverged(cell.ds)} |"
        )
    return lines


def _trend(cells: list[Cell], axis: str, reading: str) -> str:
    """The reading along an axis, and the Welch difference between its two ends."""
    members = axis_cells(cells, axis)
    along = "; ".join(
        f"{cell.name} {estimate(seed_summary(readings(cell)[reading]), signed=reading == 'drift')}" for cell in members
    )
    ends = comparison(cells, members[-1].name, members[0].name, reading)
    return f"{along}. {members[-1].name} − {members[0].name}: {estimate(ends, signed=True)}"


def answers(cells: list[Cell], claims: dict[str, list]) -> list[str]:
    """The three questions the family is run for, each from the cells' numbers."""
    lines = []
    judges = [cell for cell in axis_cells(cells, "judge") if cell.knob("judge_arch") == cells[0].knob("judge_arch")]
    if len(judges) > 1:
        widths = [cell.name for cell in judges]
        ends = comparison(cells, widths[-1], widths[0], "drift")
        along = "; ".join(
            f"{cell.name} ({cell.knob('judge_parameters'):,} parameters) "
            f"{estimate(seed_summary(readings(cell)['drift']), signed=True)}"
            for cell in judges
        )
        less = "yes" if ends.ci_low > 0 else "no" if ends.ci_high < 0 else "not resolved at this n"
        lines.append(
            f"- **Does a wider judge drift less?** {less}. Baseline drift (alignment final − 0) by width: {along}; "
            f"widest − narrowest {estimate(ends, signed=True)} (Welch; > 0: the wider drifts less)."
        )
    rugged = axis_cells(cells, "ruggedness")
    if len(rugged) > 1:
        along = "; ".join(f"{cell.name} {estimate(seed_summary(readings(cell)['ceiling']))}" for cell in rugged)
        moves = [
            f"{cell.name} − {cells[0].name} "
            + estimate(comparison(cells, cell.name, cells[0].name, "ceiling"), signed=True)
            for cell in rugged[1:]
        ]
        lines.append(
            f"- **Does a more rugged world move the ceiling?** Baseline ceiling (final gap share): {along}. "
            f"Against the reference (Welch): {'; '.join(moves)}."
        )
    slow = [i for i, (name, *_) in enumerate(REGISTRY) if name.startswith("6.")][0]
    verdicts = {cell.name: claims[cell.name][slow] for cell in cells}
    by_verdict = {
        verdict: [f"{cell} ({claim.key})" for cell, claim in verdicts.items() if claim.verdict == verdict]
        for verdict in ("holds", "partly", "does not hold")
    }
    counted = [
        f"{verdict} in {len(held)} of {len(cells)} cells" + (f": {', '.join(held)}" if held else "")
        for verdict, held in by_verdict.items()
    ]
    lines.append(f'- **Does "slow judge updates help" survive everywhere?** {"; ".join(counted)}.')
    if "world size" in {cell.axis for cell in cells}:
        for reading in READINGS:
            lines.append(f"- World size, {reading}: {_trend(cells, 'world size', reading)}.")
    return lines


def answers_markdown(cells: list[Cell]) -> str:
    claims = cell_claims(cells)
    n_seeds = sorted({cell.ds.sizes["seed"] for cell in cells})
    lines = [
        f"# Do the findings generalise? {FAMILY}",
        "",
        f"Written by analysis/generalise.py from the family's results files ({len(cells)} cells; "
        f"{' or '.join(map(str, n_seeds))} seeds per condition). Each cell moves one axis from the reference "
        "point (8⁴ sequences, the reference landscape, GRU policy and judge of width 32). Claims: the rules of "
        "analysis/claims.py (docs/results.md), with each cell's qualities mapped affinely onto the reference "
        "world's q* scale (its mean q* to the reference's mean, its optimum to the reference's optimum), so the "
        "material Δ means the same share of the gap in every world. Intervals: 95% Student-t over seeds (paired "
        "by seed within a cell; Welch between cells). Diverged runs left out.",
        "",
        "## The claims in every cell",
        "",
        *claims_table(cells, claims),
        "",
        "## Which findings generalise",
        "",
        *generalisation(cells, claims),
        "",
        "## Answers",
        "",
        *answers(cells, claims),
        "",
        "## The baseline in every cell",
        "",
        "Pretraining reached: seeds whose judge reached the pretraining target (judge_init_alignment) within "
        "pretrain_max_steps; alignment at 0: where pretraining left it. Drift: "
        + READINGS["drift"]
        + "; ceiling: "
        + READINGS["ceiling"]
        + "; quantile: the final policy_quality_quantile; entropy / ln N: "
        + READINGS["collapse"]
        + ".",
        "",
        *baseline_table(cells),
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the figure


def cells_figure(cells: list[Cell], path, *, force: bool = False) -> str:
    """Rows: the axes with cells beyond the reference; columns: the baseline's ceiling, drift and
    collapse with 95% t-intervals over seeds. Judge and policy rows mark each architecture apart."""
    axes_present = [axis for axis in AXES if any(cell.axis == axis for cell in cells)]
    fig = Figure(figsize=(12, 2.8 * max(len(axes_present), 1) + 0.6), dpi=DPI, layout="constrained")
    grid = fig.subplots(max(len(axes_present), 1), len(READINGS), squeeze=False)
    markers = {"gru": "o", "mlp": "s", "transformer": "^"}
    for row, axis in zip(grid, axes_present, strict=False):
        members = axis_cells(cells, axis)
        for ax, reading in zip(row, READINGS, strict=True):
            summaries = [seed_summary(readings(cell)[reading]) for cell in members]
            x = (
                np.arange(len(members))
                if axis == "ruggedness"
                else np.array([position(c, axis) for c in members], float)
            )
            arch_knob = {"judge": "judge_arch", "policy": "policy_arch"}.get(axis)
            groups = {}
            for i, cell in enumerate(members):
                groups.setdefault(cell.knob(arch_knob) if arch_knob else "", []).append(i)
            for arch, index in groups.items():
                mean = np.array([summaries[i].mean for i in index])
                err = np.array(
                    [
                        [summaries[i].mean - summaries[i].ci_low for i in index],
                        [summaries[i].ci_high - summaries[i].mean for i in index],
                    ]
                )
                ax.errorbar(
                    x[index],
                    mean,
                    yerr=err,
                    marker=markers.get(arch, "o"),
                    capsize=3,
                    linestyle="-" if len(index) > 1 else "none",
                    label=arch or None,
                )
            if axis == "ruggedness":
                ax.set_xticks(x, [cell.name for cell in members], rotation=30)
            else:
                ax.set_xscale("log")
            ax.set_xlabel(
                {
                    "world size": "N sequences",
                    "judge": "judge parameters",
                    "policy": "policy parameters",
                    "ruggedness": "landscape",
                }[axis]
            )
            ax.set_title(reading)
            ax.set_ylabel(AXIS_LABELS[reading])
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.grid(alpha=0.3)
            if arch_knob and len(groups) > 1 and reading == "ceiling":
                ax.legend(frameon=False, fontsize=8)
    n_seeds = cells[0].ds.sizes["seed"]
    fig.suptitle(f"The baseline away from the reference point ({n_seeds} seeds per cell, 95% t-intervals)")
    return save(fig, path, force)


# ---------------------------------------------------------------- files


def family_paths(out_dir) -> list[Path]:
    """The family's results files in `out_dir` (generalise_<label>.nc), or [] without the reference world's."""
    paths = sorted(Path(out_dir).glob(f"{FAMILY}_*.nc"))
    return paths if any(path.stem == f"{FAMILY}_{REFERENCE}" for path in paths) else []


def output_paths(out_dir) -> list[Path]:
    return [Path(out_dir) / f"{FAMILY}_{name}" for name in OUTPUTS]


def has_generalise_family(ds: xr.Dataset) -> bool:
    """Whether `ds` is the family's reference world's file: the joined outputs are written with its figures."""
    return str(ds.attrs.get("study_name", "")) == f"{FAMILY}_{REFERENCE}"


def load_family(out_dir) -> list[Cell]:
    return family_cells([load(path) for path in family_paths(out_dir)])


def generalise_outputs(cells: list[Cell], out_dir, *, force: bool = False) -> list:
    """The answers (with the claim table) and the figure of the family's cells."""
    answers_path, figure_path = output_paths(out_dir)
    text = answers_markdown(cells)
    written = write_atomically(answers_path, lambda temporary: Path(temporary).write_text(text), force=force)
    return [str(written), cells_figure(cells, figure_path, force=force)]
