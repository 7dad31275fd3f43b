"""Grid studies as labelled arrays: the `condition` dimension reshaped into one dimension per knob.

A grid study (conditions built by `engine.host.grid.grid`) varies a few knobs over a full product of
values, plus optional control conditions. Its Dataset already says which condition is which
cell: every knob is a coordinate along `condition`. So a grid is found from those coordinates,
never from condition names:

- the *varying* coordinates are those along `condition` with more than one value;
- for a candidate set of grid knobs, the *cells* are the conditions whose other varying
  coordinates all take their most common value (ties: the value seen first); a condition
  repeating a combination already seen (e.g. a `baseline` control equal to a grid cell) is a
  control, and so is a condition whose grid-knob value is off the product (a value of one knob
  seen with fewer values of the others than the rest are: pruned until the rest is complete);
- the candidate is a grid when its cells form the complete product of their values, each
  knob with at least two values; `find_grid` without `knobs` picks the candidate with the
  most cells (then the most knobs), and finds none when two candidates tie. Found knobs are
  ordered slowest-varying first in file order, which gives back the order of `grid()`'s
  keywords; given knobs keep the order they were given in.

Everything that is not a cell is a *control*: `unstack_grid` leaves controls out, `split_grid`
returns them too (still along `condition`). The unstacked Dataset has one dimension per grid
knob (values sorted ascending) in place of `condition`; the condition names and the other knob
coordinates become coordinates over those dimensions, so `grid.policy_quality.sel(
judge_update_every=10)` works and `stack_grid` turns it back into the original layout.
"""

import itertools
import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

CONDITION = "condition"
_NAMES = "_condition_name"  # the condition names while the condition index is rebuilt


@dataclass(frozen=True)
class GridLayout:
    """Where a grid sits in a Dataset: its knobs, its cells and the rest (controls), by condition name."""

    knobs: tuple  # grid knobs, in the order their dimensions take
    cells: tuple  # grid conditions, in file order
    controls: tuple  # every other condition, in file order

    def values(self, ds: xr.Dataset) -> dict:
        """knob -> sorted distinct values on the grid."""
        cells = ds.sel(condition=list(self.cells))
        return {knob: np.unique(cells[knob].values) for knob in self.knobs}


def knob_table(ds: xr.Dataset) -> pd.DataFrame:
    """One row per condition, one column per (non-index) coordinate along `condition`."""
    names = [name for name, coord in ds.coords.items() if coord.dims == (CONDITION,) and name != CONDITION]
    return pd.DataFrame({name: ds[name].values for name in names}, index=ds[CONDITION].values.tolist())


def varying_knobs(ds: xr.Dataset) -> list:
    """Coordinates along `condition` that take more than one value across conditions."""
    table = knob_table(ds)
    return [name for name in table if table[name].nunique(dropna=False) > 1]


def _modal(column: pd.Series):
    """Most common value; ties go to the value seen first."""
    counts = column.value_counts(sort=False)  # order of first appearance
    return counts.index[int(np.argmax(counts.to_numpy()))]


def _complete(combos: set, n_knobs: int) -> set:
    """Drop off-product values, the least complete first, until the rest is a complete product (or empty).

    A value's completeness is the share of the other knobs' combinations (among `combos`) seen with it.
    """
    while n_knobs > 1 and combos:
        worst = (1.0, None, set())
        for i in range(n_knobs):
            seen = defaultdict(set)
            for combo in combos:
                seen[combo[i]].add(combo[:i] + combo[i + 1 :])
            others = len(set().union(*seen.values()))
            shares = {value: len(rest) / others for value, rest in seen.items()}
            low = min(shares.values())
            if low < worst[0]:
                worst = (low, i, {value for value, share in shares.items() if share == low})
        if worst[1] is None:
            break
        combos = {combo for combo in combos if combo[worst[1]] not in worst[2]}
    return combos


def _cells(table: pd.DataFrame, knobs: tuple, modal: dict) -> list | None:
    """Conditions forming the complete product over `knobs`, or None when they do not.

    modal: the most common value of every varying coordinate; the other knobs must take it.
    """
    others = [k for k in modal if k not in knobs]
    first = {}  # combination of knob values -> first condition with it
    rows = table[[*knobs, *others]].itertuples(index=False, name=None)
    for name, row in zip(table.index, rows, strict=True):
        combo, rest = row[: len(knobs)], row[len(knobs) :]
        if combo not in first and all(value == modal[k] for k, value in zip(others, rest, strict=True)):
            first[combo] = name
    combos = _complete(set(first), len(knobs))
    sizes = [len({combo[i] for combo in combos}) for i in range(len(knobs))]
    if min(sizes, default=0) < 2 or len(combos) != math.prod(sizes):
        return None
    return [first[combo] for combo in combos]


def _slowest_first(cells: pd.DataFrame, knobs: tuple) -> tuple:
    """Knobs ordered by how seldom their value changes from one cell to the next in file order."""
    changes = {knob: int((cells[knob].to_numpy()[1:] != cells[knob].to_numpy()[:-1]).sum()) for knob in knobs}
    return tuple(sorted(knobs, key=changes.get))


def find_grid(ds: xr.Dataset, knobs=None, n_knobs=None) -> GridLayout | None:
    """The grid in a Dataset: over `knobs` when given, else the best candidate (see the module doc).

    n_knobs restricts the automatic search to grids of that many knobs (e.g. 2 for phase diagrams).
    Returns None when there is no such grid, or when two candidates tie.
    """
    table = knob_table(ds)
    varying = varying_knobs(ds)
    modal = {knob: _modal(table[knob]) for knob in varying}
    given = knobs
    if knobs is not None:
        knobs = tuple(knobs)
        missing = [k for k in knobs if k not in table]
        if missing:
            raise KeyError(f"no coordinate along condition named {missing}; coordinates: {list(table)}")
        candidates = [knobs]
    else:
        sizes = [n_knobs] if n_knobs is not None else range(1, len(varying) + 1)
        candidates = [c for size in sizes for c in itertools.combinations(varying, size)]
    found = []
    for candidate in candidates:
        cells = _cells(table, candidate, modal)
        if cells is not None:
            found.append(((len(cells), len(candidate)), candidate, cells))
    if not found:
        return None
    found.sort(key=lambda item: item[0], reverse=True)
    if len(found) > 1 and found[0][0] == found[1][0]:
        return None
    _, knobs, cells = found[0]
    members = set(cells)
    order = table.index.tolist()
    cells = [c for c in order if c in members]
    return GridLayout(
        knobs=_slowest_first(table.loc[cells], knobs) if given is None else knobs,
        cells=tuple(cells),
        controls=tuple(c for c in order if c not in members),
    )


def _layout(ds: xr.Dataset, knobs) -> GridLayout:
    layout = find_grid(ds, knobs, n_knobs=None)
    if layout is None:
        what = f"over {list(knobs)}" if knobs is not None else "(none found, or two candidates tie; pass knobs=)"
        raise ValueError(
            f"the Dataset holds no complete grid {what}; varying coordinates along condition: {varying_knobs(ds)}"
        )
    return layout


def split_grid(ds: xr.Dataset, knobs=None) -> tuple:
    """(grid, controls): the grid cells with one dimension per knob, and the other conditions as they are."""
    layout = _layout(ds, knobs)
    cells = ds.sel(condition=list(layout.cells))
    renamed = cells.assign_coords({_NAMES: (CONDITION, cells[CONDITION].values)}).drop_vars(CONDITION)
    grid = renamed.set_index({CONDITION: list(layout.knobs)}).unstack(CONDITION)
    grid = grid.rename_vars({_NAMES: CONDITION}).transpose(*layout.knobs, ...)
    return grid, ds.sel(condition=list(layout.controls))


def unstack_grid(ds: xr.Dataset, knobs=None) -> xr.Dataset:
    """The grid cells with `condition` replaced by one dimension per grid knob; controls are left out.

    knobs: the grid's knobs (their order is the order of the new dimensions); found when omitted.
    """
    return split_grid(ds, knobs)[0]


def stack_grid(grid: xr.Dataset) -> xr.Dataset:
    """The inverse of `unstack_grid`: the knob dimensions folded back into `condition`.

    Conditions come back in product order of the sorted knob values (the first knob slowest);
    `.sel(condition=original.condition)` restores any other order.
    """
    knobs = list(grid[CONDITION].dims)
    stacked = grid.stack({_NAMES: knobs}).reset_index(_NAMES).drop_vars(_NAMES, errors="ignore")
    stacked = stacked.swap_dims({_NAMES: CONDITION})
    return stacked.transpose(CONDITION, ...)
