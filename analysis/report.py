"""Everything for one results file, written side by side under one stem."""

from pathlib import Path

import xarray as xr

from analysis.bias import bias_figures, has_bias_records
from analysis.bias import output_paths as bias_output_paths
from analysis.figures import BEST, BOUNDS, comparison, headline, perception_gap, small_multiples
from analysis.overoptimisation import overoptimisation, pair_gap
from analysis.tables import condition_table, write_csv, write_markdown
from engine.output import check_output

OUTPUTS = ("headline.png", "best.png", "quality_by_condition.png", "gap.png", "table.md", "table.csv")
OUTPUTS += ("overoptimisation.png", "pair_gap.png")  # only for Datasets with kl_to_initial / with dpo conditions


def output_paths(out_dir, stem: str) -> list[Path]:
    """Every file `write_all` may write, so a command can check them all before drawing any."""
    return [Path(out_dir) / f"{stem}_{name}" for name in OUTPUTS]


def write_all(ds: xr.Dataset, out_dir, stem: str, baseline: str = "baseline", *, force: bool = False) -> list:
    """Write the figures and both tables; return the paths written (skipped figures are not listed).

    Every output is checked first, so an existing file (without `force`) stops the whole set,
    not its fifth file. The headline shows `baseline`, or the first condition when the Dataset
    has no baseline.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = dict(zip(OUTPUTS, output_paths(out, stem), strict=True))
    bias_paths = bias_output_paths(out, stem) if has_bias_records(ds) else []  # issue 11
    for path in [*paths.values(), *bias_paths]:
        check_output(path, force=force)
    conditions = ds["condition"].values.tolist()
    focus = baseline if baseline in conditions else conditions[0]
    table = condition_table(ds, baseline)
    written = [
        headline(ds, paths["headline.png"], focus, force=force),
        comparison(ds, BEST, paths["best.png"], BOUNDS, force=force),
        small_multiples(ds, paths["quality_by_condition.png"], "policy_quality", baseline, force=force),
        perception_gap(ds, paths["gap.png"], force=force),
        write_markdown(table, paths["table.md"], force=force),
        write_csv(table, paths["table.csv"], force=force),
        overoptimisation(ds, paths["overoptimisation.png"], force=force),
        pair_gap(ds, paths["pair_gap.png"], force=force),
        *bias_figures(ds, out, stem, force=force),
    ]
    return [path for path in written if path is not None]
