"""Everything for one results file, written side by side under one stem."""

from pathlib import Path

import xarray as xr

from analysis.figures import BEST, BOUNDS, comparison, headline, perception_gap, small_multiples
from analysis.tables import condition_table, write_csv, write_markdown


def write_all(ds: xr.Dataset, out_dir, stem: str, baseline: str = "baseline") -> list:
    """Write the figures and both tables; return the paths written (skipped figures are not listed).

    The headline shows `baseline`, or the first condition when the Dataset has no baseline.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    conditions = ds["condition"].values.tolist()
    focus = baseline if baseline in conditions else conditions[0]
    table = condition_table(ds, baseline)
    written = [
        headline(ds, out / f"{stem}_headline.png", focus),
        comparison(ds, BEST, out / f"{stem}_best.png", BOUNDS),
        small_multiples(ds, out / f"{stem}_quality_by_condition.png", "policy_quality", baseline),
        perception_gap(ds, out / f"{stem}_gap.png"),
        write_markdown(table, out / f"{stem}_table.md"),
        write_csv(table, out / f"{stem}_table.csv"),
    ]
    return [path for path in written if path is not None]
