"""Everything for one results file, written side by side under one stem.

Per-iteration figures and tables read the records that end each outer iteration
(`engine.host.results.per_iteration`), so a step-resolved file gets them too. A step-resolved file
also gets the within-iteration figure and its order-of-events table (`analysis.within`); a
2-knob grid study gets its phase diagrams and their table (`analysis.phase`); a study with
self-rewarding or bias records gets their figures (`analysis.overoptimisation`,
`analysis.bias`), one with grounding conditions its answers and figures (`analysis.grounding`), and a
step-resolved one that varies the judge's width or pretraining target Gao's fits, figures and
answers (`analysis.gao_study`, with the best-of-n study `gao_best_of_n.nc` when it lies next to
the results file); the exact file of the batch-size family (`batch_limit_exact.nc`, its sampled
siblings next to it) also writes the family's joined answers and figure (`analysis.batch_limit`),
one pairing trained and best-response policies the gap between the loop and its reduced
dynamics (`analysis.two_timescale`, with the phase study `phase.nc` when it lies next to it), and the
reference world's file of the generalise family (`generalise_reference.nc`, its world-size siblings
next to it) the family's claims in every cell, answers and figure (`analysis.generalise`).
The published-condition comparisons (`best.png`, and `gap.png` beyond eight conditions) are
drawn only when some of those conditions are present; a grid study's headline and table use its
reference cell as the baseline.

A set is written whole or not at all: every output is checked first (an existing file stops the
set unless `force`), every figure and table is drawn into a hidden staging folder next to them,
and only when all are drawn are they moved into place (each atomically, `write_atomically`).
A failure while drawing leaves the folder as it was.
"""

import os
import tempfile
from pathlib import Path

import xarray as xr

from analysis.batch_limit import batch_limit_outputs, family_paths, has_batch_limit_family, load_batch_limit
from analysis.batch_limit import output_paths as batch_limit_output_paths
from analysis.bias import bias_figures, has_bias_records
from analysis.bias import output_paths as bias_output_paths
from analysis.data import present
from analysis.figures import BEST, BOUNDS, comparison, headline, perception_gap, small_multiples
from analysis.gao_study import gao_outputs, has_gao_conditions, load_best_of_n
from analysis.gao_study import output_paths as gao_output_paths
from analysis.generalise import generalise_outputs, has_generalise_family, load_family
from analysis.generalise import output_paths as generalise_output_paths
from analysis.grid import find_grid
from analysis.grounding import grounding_outputs, has_grounding_conditions
from analysis.grounding import output_paths as grounding_output_paths
from analysis.overoptimisation import overoptimisation, pair_gap
from analysis.phase import PHASE_METRICS, phase_figures, reference_condition
from analysis.tables import condition_table, write_csv, write_markdown
from analysis.two_timescale import has_best_response_pairs, load_phase, timescale_outputs
from analysis.two_timescale import output_paths as timescale_output_paths
from analysis.within import order_table, within_figure
from engine.host.output import TEMPORARY_SUFFIX, check_output, write_atomically
from engine.host.results import per_iteration

OUTPUTS = ("headline.png", "best.png", "quality_by_condition.png", "gap.png", "table.md", "table.csv")
OUTPUTS += ("overoptimisation.png", "pair_gap.png")  # only for Datasets with kl_to_initial / with dpo conditions
PHASE_OUTPUTS = (*(f"phase_{metric}.png" for metric in PHASE_METRICS), "phase_table.csv")
WITHIN_OUTPUTS = ("within.png", "order.csv")
MAX_UNNAMED_GAP = 8  # perception_gap draws every condition up to this many, else the published ones


def is_phase_grid(ds: xr.Dataset) -> bool:
    """Whether `ds` gets phase diagrams: its grid (`analysis.grid.find_grid`) has exactly two knobs."""
    layout = find_grid(ds)
    return layout is not None and len(layout.knobs) == 2


def output_paths(out_dir, stem: str, ds: xr.Dataset | None = None) -> list[Path]:
    """Every file `write_all` may write, so a command can check them all before drawing any.

    With `ds`, also the phase-diagram, within-iteration and bias outputs that this Dataset gets.
    """
    names = list(OUTPUTS)
    if ds is not None and is_phase_grid(ds):
        names += PHASE_OUTPUTS
    if ds is not None and "step" in ds.dims:
        names += WITHIN_OUTPUTS
    paths = [Path(out_dir) / f"{stem}_{name}" for name in names]
    if ds is not None and has_bias_records(ds):
        paths += bias_output_paths(out_dir, stem)
    if ds is not None and has_grounding_conditions(ds):
        paths += grounding_output_paths(out_dir, stem)
    if ds is not None and has_gao_conditions(ds):
        paths += gao_output_paths(out_dir, stem)
    if ds is not None and has_batch_limit_family(ds, out_dir):
        paths += batch_limit_output_paths(out_dir)
    if ds is not None and has_best_response_pairs(ds):
        paths += timescale_output_paths(out_dir, stem)
    if ds is not None and has_generalise_family(ds):
        paths += generalise_output_paths(out_dir)
    return paths


def write_all(ds: xr.Dataset, out_dir, stem: str, baseline: str = "baseline", *, force: bool = False) -> list:
    """Write the figures and both tables; return the paths written (skipped figures are not listed).

    Every output is checked before any is drawn, and none is written until all are drawn (see the
    module doc), so neither an existing file (without `force`) nor a failure part-way leaves a
    partial set. The headline shows `baseline`, or the first condition when the Dataset has no
    baseline.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for path in output_paths(out, stem, ds):
        check_output(path, force=force)
    best_of_n = load_best_of_n(out) if has_gao_conditions(ds) else None
    batches = load_batch_limit(family_paths(out)) if has_batch_limit_family(ds, out) else None
    phase = load_phase(out) if has_best_response_pairs(ds) else None
    cells = load_family(out) if has_generalise_family(ds) else None
    with tempfile.TemporaryDirectory(prefix=f".{stem}_figures.", suffix=TEMPORARY_SUFFIX, dir=out) as staging:
        drawn = _draw_all(ds, Path(staging), stem, baseline, best_of_n, batches, phase, cells)
        return [str(_move(Path(path), out / Path(path).name, force)) for path in drawn]


def _move(staged: Path, path: Path, force: bool) -> Path:
    """Put a drawn file in place through the atomic, force-checked writer (a rename, no copy)."""
    return write_atomically(path, lambda temporary: os.replace(staged, temporary), force=force)


def _draw_all(
    ds: xr.Dataset,
    out: Path,
    stem: str,
    baseline: str,
    best_of_n: xr.Dataset | None = None,
    batches: xr.Dataset | None = None,
    phase: xr.Dataset | None = None,
    cells: list | None = None,
) -> list:
    """Draw every output `write_all` writes into the empty folder `out`; return the paths drawn.
    best_of_n: the gao best-of-n study, for a file with Gao's conditions; batches: the batch_limit
    family joined (`analysis.batch_limit`), for its exact file; phase: the phase study, for a file
    pairing trained and best-response policies; cells: the generalise family's cells
    (`analysis.generalise`), for its reference world's file."""
    paths = {path.name.removeprefix(f"{stem}_"): path for path in output_paths(out, stem, ds)}
    conditions = ds["condition"].values.tolist()
    if baseline not in conditions:
        baseline = reference_condition(ds) or baseline
    focus = baseline if baseline in conditions else conditions[0]
    by_iteration = per_iteration(ds)
    table = condition_table(by_iteration, baseline)
    published = [c for c in present(ds, BEST) if c not in BOUNDS]
    written = [
        headline(by_iteration, paths["headline.png"], focus),
        comparison(by_iteration, BEST, paths["best.png"], BOUNDS) if published else None,
        small_multiples(by_iteration, paths["quality_by_condition.png"], "policy_quality", baseline),
        perception_gap(by_iteration, paths["gap.png"]) if published or len(conditions) <= MAX_UNNAMED_GAP else None,
        write_markdown(table, paths["table.md"]),
        write_csv(table, paths["table.csv"]),
        overoptimisation(by_iteration, paths["overoptimisation.png"]),
        pair_gap(by_iteration, paths["pair_gap.png"]),
        *bias_figures(by_iteration, out, stem),
    ]
    if "within.png" in paths:
        written.append(within_figure(ds, paths["within.png"]))
        written.append(write_csv(order_table(ds), paths["order.csv"]))
    if "phase_table.csv" in paths:
        written += phase_figures(by_iteration, out, stem)
    if has_grounding_conditions(ds):
        written += grounding_outputs(by_iteration, out, stem)
    if has_gao_conditions(ds):
        written += gao_outputs(ds, out, stem, best_of_n)
    if batches is not None:
        written += batch_limit_outputs(batches, out)
    if has_best_response_pairs(ds):
        written += timescale_outputs(ds, out, stem, phase)
    if cells is not None:
        written += generalise_outputs(cells, out)
    return [path for path in written if path is not None]
