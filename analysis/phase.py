"""Phase diagrams of grid studies, the regime of each cell, and the order of events in time.

A *phase diagram* is a heatmap over a 2-knob grid (`analysis.grid`): each cell shows the
seed-mean of a metric at the final (or a chosen) iteration. The seed-level spread is shown by
hatching: a cell is hatched when the 95% Student-t interval over seeds of its paired difference
from the grid's baseline cell (same seed = same pretrained judge and initial policy) reaches
within TOLERANCE of zero, i.e. the cell is not distinguishable from the baseline.

Regimes, from the seed-means of a cell at the chosen iteration (docs/phase.md):
- *collapsed*: mean policy entropy < COLLAPSED (5%) of ln N nats and mean judge-alignment
  drop from iteration 0 to the chosen iteration > ALIGNMENT_DROP (0.15);
- *healthy*: not collapsed, and final quality above the frozen-judge control, paired by seed,
  with the 95% t-interval's lower bound > TOLERANCE; only when the Dataset holds a frozen
  control (a condition off the grid whose `freeze_judge` coordinate is true);
- otherwise no label.

The *baseline cell* is the cell at the study's reference configuration (the study's `base`
over the engine's knob defaults, read from the Dataset's `study` attr), or the one passed as
`baseline={knob: value}`; when that cell is not on the grid, the first grid condition in file
order. Diverged runs are left out (`mask_diverged`) and a left-out run removes its pair.

Time: a metric is taken at the last point of its time dimension (`step` when the variable has
one, else `iteration`) unless `iteration=` (a label of the `iteration` dimension) or `step=`
(a label of `step`) is given. The alignment drop is measured from the first point.
"""

import json
import textwrap
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from analysis.claims import COLLAPSED, TOLERANCE, collapsed_entropy
from analysis.data import mask_diverged
from analysis.figures import PANELS, SIZE, save
from analysis.formatting import TRUE_MINUS, fixed, knob_value
from analysis.grid import GridLayout, find_grid, split_grid
from analysis.stats import t_band
from analysis.tables import write_csv
from engine.host.output import check_output

ALIGNMENT_DROP = 0.15  # mean alignment drop (Spearman ρ, iteration 0 → chosen) above this is part of collapse
CONFIDENCE = 0.95
PHASE_METRICS = ("policy_quality", "judge_alignment", "policy_entropy", "judge_perceived_quality")
REGIMES = ("collapsed", "healthy", "")
CAPTION_WIDTH = 150  # characters per caption line at 9 pt on a 1600 px wide figure


# ---------------------------------------------------------------- statistics


def t_interval(values, axis: int = -1, confidence: float = CONFIDENCE) -> tuple:
    """(mean, low, high, n) over `axis` (seeds), NaN-aware, with a Student-t interval of the mean.

    The interval is NaN when fewer than two finite values remain.
    """
    values = np.asarray(values, dtype=float)
    mean, low, high = t_band(values, axis=axis, confidence=confidence)
    return mean, low, high, np.sum(np.isfinite(values), axis=axis)


def spans_zero(low, high, tolerance: float = TOLERANCE):
    """Whether an interval [low, high] reaches within `tolerance` of 0; an undefined (NaN) interval does."""
    low, high = np.asarray(low, float), np.asarray(high, float)
    return ~((low > tolerance) | (high < -tolerance))


def _time_dim(values: xr.DataArray) -> str:
    return "step" if "step" in values.dims else "iteration"


def at_time(values: xr.DataArray, iteration=None, step=None) -> xr.DataArray:
    """The values at an `iteration` label or a `step` label; the last recorded point when neither is given."""
    if step is not None:
        return values.sel(step=step)
    if iteration is not None and iteration != -1:
        if "iteration" not in values.dims:
            raise ValueError(f"{values.name} has no iteration dimension (dims {values.dims}); pass step=")
        return values.sel(iteration=iteration)
    return values.isel({_time_dim(values): -1})


def _first(values: xr.DataArray) -> xr.DataArray:
    return values.isel({_time_dim(values): 0})


# ---------------------------------------------------------------- the table behind a phase diagram


def _reference_cell(ds: xr.Dataset, layout: GridLayout, baseline) -> dict:
    """The baseline cell {knob: value} (see the module doc)."""
    values = layout.values(ds)

    def on_grid(cell):
        return all(np.any(values[knob] == value) for knob, value in cell.items())

    if baseline is not None:
        if set(baseline) != set(layout.knobs) or not on_grid(baseline):
            raise ValueError(f"baseline must be a cell of the grid {values}, got {baseline}")
        return {knob: baseline[knob] for knob in layout.knobs}
    if "study" in ds.attrs:
        from engine.knobs import DEFAULTS  # the knob table is the engine's; imported only when needed

        base = json.loads(ds.attrs["study"]).get("base", {})
        reference = {knob: base.get(knob, DEFAULTS.get(knob)) for knob in layout.knobs}
        if on_grid(reference):
            return reference
    first = ds.sel(condition=layout.cells[0])
    return {knob: first[knob].item() for knob in layout.knobs}


def reference_condition(ds: xr.Dataset, knobs=None) -> str | None:
    """The condition name of the grid's baseline cell (see `phase_table`); None without a grid."""
    layout = find_grid(ds, knobs)
    if layout is None:
        return None
    cell = _reference_cell(ds, layout, None)
    cells = ds.sel(condition=list(layout.cells))
    match = np.logical_and.reduce([cells[knob].values == value for knob, value in cell.items()])
    return str(cells["condition"].values[match][0])


def _frozen_control(ds: xr.Dataset, layout: GridLayout):
    """The first control condition with freeze_judge true, or None."""
    if "freeze_judge" not in ds.coords or "freeze_judge" in layout.knobs:
        return None
    frozen = [c for c in layout.controls if bool(ds["freeze_judge"].sel(condition=c))]
    return frozen[0] if frozen else None


def phase_table(
    ds: xr.Dataset,
    metric: str = "policy_quality",
    knobs=None,
    baseline: dict | None = None,
    iteration=None,
    step=None,
    confidence: float = CONFIDENCE,
) -> pd.DataFrame:
    """One row per grid cell: the metric's seed-mean, its paired Δ vs the baseline cell, the regime.

    Columns: the grid knobs, condition, n (seeds kept), mean, sd, delta_mean / delta_ci_low /
    delta_ci_high (cell − baseline cell, paired by seed, Student-t), delta_spans_zero (hatched),
    entropy_mean, alignment_drop_mean, collapsed, vs_frozen_mean / _ci_low / _ci_high (final
    quality − frozen control, paired; NaN without a frozen control), healthy, regime.
    attrs: metric, knobs, baseline (cell), baseline_condition, frozen_condition, time, confidence,
    collapsed_entropy (nats).
    """
    layout = find_grid(ds, knobs)
    if layout is None:
        raise ValueError("the Dataset holds no complete grid (analysis.grid.find_grid); pass knobs=")
    reference = _reference_cell(ds, layout, baseline)
    masked = mask_diverged(ds) if "diverged" in ds else ds
    cells, controls = split_grid(masked, layout.knobs)
    dims = (*layout.knobs, "seed")

    def final(data):
        return at_time(data, iteration, step).transpose(*dims).values.astype(float)

    values = final(cells[metric])
    mean, _, _, n = t_interval(values, confidence=confidence)
    with _quiet():
        sd = np.nanstd(values, axis=-1, ddof=1)
    base = at_time(cells[metric].sel(reference), iteration, step).transpose("seed").values.astype(float)
    delta = t_interval(values - base, confidence=confidence)

    entropy = _nanmean(final(cells["policy_entropy"]))
    alignment = cells["judge_alignment"]
    drop = _nanmean(_first(alignment).transpose(*dims).values.astype(float) - final(alignment))
    collapsed = (entropy < collapsed_entropy(ds)) & (drop > ALIGNMENT_DROP)

    frozen = _frozen_control(ds, layout)
    vs_frozen = (np.full(mean.shape, np.nan),) * 3
    if frozen is not None:
        frozen_quality = at_time(controls["policy_quality"].sel(condition=frozen), iteration, step)
        paired = final(cells["policy_quality"]) - frozen_quality.transpose("seed").values.astype(float)
        vs_frozen = t_interval(paired, confidence=confidence)[:3]
    healthy = ~collapsed & (vs_frozen[1] > TOLERANCE)
    regime = np.where(collapsed, "collapsed", np.where(healthy, "healthy", ""))

    columns = {
        "condition": cells["condition"].transpose(*layout.knobs).values,
        "n": n,
        "mean": mean,
        "sd": sd,
        "delta_mean": delta[0],
        "delta_ci_low": delta[1],
        "delta_ci_high": delta[2],
        "delta_spans_zero": spans_zero(delta[1], delta[2]),
        "entropy_mean": entropy,
        "alignment_drop_mean": drop,
        "collapsed": collapsed,
        "vs_frozen_mean": vs_frozen[0],
        "vs_frozen_ci_low": vs_frozen[1],
        "vs_frozen_ci_high": vs_frozen[2],
        "healthy": healthy,
        "regime": regime,
    }
    index = pd.MultiIndex.from_product([cells[k].values for k in layout.knobs], names=list(layout.knobs))
    table = pd.DataFrame({name: np.ravel(column) for name, column in columns.items()}, index=index).reset_index()
    table.attrs |= {
        "metric": metric,
        "knobs": layout.knobs,
        "baseline": reference,
        "baseline_condition": cells["condition"].sel(reference).item(),
        "frozen_condition": frozen,
        "time": _time_text(cells[metric], iteration, step),
        "confidence": confidence,
        "collapsed_entropy": collapsed_entropy(ds),
    }
    return table


@contextmanager
def _quiet():
    """Silence the 'mean of empty slice' warnings of all-NaN (all diverged) cells."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _nanmean(values: np.ndarray) -> np.ndarray:
    with _quiet():
        return np.nanmean(values, axis=-1)


def _time_text(values: xr.DataArray, iteration, step) -> str:
    if step is not None:
        return f"step {step}"
    if iteration is not None and iteration != -1:
        return f"iteration {iteration}"
    dim = _time_dim(values)
    return f"final {dim} ({values[dim].values[-1]})"


# ---------------------------------------------------------------- the figure


def _text_colour(rgba) -> str:
    r, g, b = to_rgb(rgba)
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


def _label(metric: str) -> str:
    return PANELS.get(metric, metric)


def _boundaries(ax, mask: np.ndarray, **style):
    """Lines along the cell edges that separate True from False cells of a (y, x) mask."""
    ny, nx = mask.shape
    for y in range(ny):
        for x in range(nx):
            if x + 1 < nx and mask[y, x] != mask[y, x + 1]:
                ax.plot([x + 0.5, x + 0.5], [y - 0.5, y + 0.5], **style)
            if y + 1 < ny and mask[y, x] != mask[y + 1, x]:
                ax.plot([x - 0.5, x + 0.5], [y + 0.5, y + 0.5], **style)


def caption(table: pd.DataFrame) -> str:
    """What the cells, hatching and labels of a phase diagram mean, thresholds included."""
    percent = round(100 * table.attrs["confidence"])
    cell = ", ".join(f"{k}={knob_value(v)}" for k, v in table.attrs["baseline"].items())
    low, high = int(table["n"].min()), int(table["n"].max())
    n = f"{low}" if low == high else f"{low}–{high}"
    text = (
        f"Cell: mean over seeds (n = {n}) at the {table.attrs['time']}, "
        f"and its paired Δ vs the baseline cell ({cell}, framed). Hatched: the {percent}% Student-t interval of that "
        f"Δ over seeds reaches within {TOLERANCE:g} of 0.\n"
        f"collapsed: mean entropy < {COLLAPSED:.0%} of ln N ({fixed(table.attrs['collapsed_entropy'])} nats) and mean "
        f"alignment drop from the first point > {ALIGNMENT_DROP}; red line: its boundary. "
    )
    frozen = table.attrs["frozen_condition"]
    if frozen is None:
        return text + "healthy: needs a frozen-judge control, none in this Dataset."
    return text + (
        f"healthy: not collapsed and quality − frozen control '{frozen}' (paired) has its {percent}% t-interval "
        f"above {TOLERANCE:g}."
    )


def phase_diagram(
    ds: xr.Dataset,
    path,
    metric: str = "policy_quality",
    knobs=None,
    baseline: dict | None = None,
    iteration=None,
    step=None,
    *,
    force: bool = False,
) -> str:
    """Write the phase diagram of `metric` over a 2-knob grid to `path` (PNG, 1600×1100 px); return the path.

    The knob with more values runs along x. Cells are evenly spaced whatever the values
    (log-spaced grids read naturally) and ticks show the grid's actual values.
    """
    table = phase_table(ds, metric, knobs, baseline, iteration, step)
    knobs = table.attrs["knobs"]
    if len(knobs) != 2:
        raise ValueError(f"a phase diagram needs a 2-knob grid, this one has {knobs}")
    sizes = {k: table[k].nunique() for k in knobs}
    x_knob, y_knob = sorted(knobs, key=lambda k: -sizes[k]) if sizes[knobs[1]] > sizes[knobs[0]] else knobs
    table = table.sort_values([y_knob, x_knob])
    xs, ys = np.sort(table[x_knob].unique()), np.sort(table[y_knob].unique())
    shape = (len(ys), len(xs))

    def grid_of(column):
        return table[column].to_numpy().reshape(shape)

    mean = grid_of("mean")
    fig = Figure(figsize=SIZE, layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(mean, origin="lower", aspect="auto", cmap="viridis", interpolation="nearest")
    colourbar = fig.colorbar(image, ax=ax, shrink=0.9)
    colourbar.set_label(f"{_label(metric)}, mean over seeds")

    hatched, regime = grid_of("delta_spans_zero"), grid_of("regime")
    delta_mean, delta_low, delta_high = grid_of("delta_mean"), grid_of("delta_ci_low"), grid_of("delta_ci_high")
    base = table.attrs["baseline"]
    small = 8 if len(xs) > 6 else 9
    digits = 2 if np.nanmax(np.abs(mean), initial=0) >= 1 else 3
    for iy, ix in np.ndindex(*shape):
        y, x = ys[iy], xs[ix]
        colour = _text_colour(image.cmap(image.norm(mean[iy, ix])))
        if hatched[iy, ix]:
            ax.add_patch(
                Rectangle((ix - 0.5, iy - 0.5), 1, 1, fill=False, hatch="//", edgecolor=colour, alpha=0.35, lw=0)
            )
        if base[x_knob] == x and base[y_knob] == y:
            ax.add_patch(Rectangle((ix - 0.47, iy - 0.47), 0.94, 0.94, fill=False, edgecolor="black", lw=3))
            ax.add_patch(Rectangle((ix - 0.42, iy - 0.42), 0.84, 0.84, fill=False, edgecolor="white", lw=1.5))
            second = "baseline"
        else:
            half = (delta_high[iy, ix] - delta_low[iy, ix]) / 2
            delta = fixed(delta_mean[iy, ix], digits, signed=True, minus=TRUE_MINUS)
            second = f"Δ {delta} ± {fixed(half, digits, minus=TRUE_MINUS)}"
        ax.text(
            ix,
            iy + 0.17,
            fixed(mean[iy, ix], digits, minus=TRUE_MINUS),
            ha="center",
            va="center",
            color=colour,
            fontsize=12,
            fontweight="bold",
        )
        ax.text(ix, iy - 0.08, second, ha="center", va="center", color=colour, fontsize=small)
        if regime[iy, ix]:
            ax.text(
                ix, iy - 0.3, regime[iy, ix], ha="center", va="center", color=colour, fontsize=small, fontstyle="italic"
            )
    _boundaries(ax, grid_of("collapsed"), color="tab:red", lw=3, solid_capstyle="round")

    ax.set_xticks(range(len(xs)), [knob_value(v) for v in xs])
    ax.set_yticks(range(len(ys)), [knob_value(v) for v in ys])
    ax.set_xlabel(f"{x_knob}  (grid values, evenly spaced cells)")
    ax.set_ylabel(f"{y_knob}  (grid values, evenly spaced cells)")
    ax.tick_params(length=0)
    n_left = int(ds["diverged"].sum()) if "diverged" in ds else 0
    left = f"; {n_left} diverged run{'s' if n_left != 1 else ''} left out" if n_left else ""
    fig.suptitle(
        f"Phase diagram: {_label(metric).split('  [')[0]} at the {table.attrs['time']}, {y_knob} × {x_knob}{left}",
        fontsize=13,
    )
    handles = [
        Patch(facecolor="lightgrey", edgecolor="dimgrey", hatch="//", label="Δ vs baseline: CI includes 0"),
        Patch(facecolor="none", edgecolor="black", lw=2.5, label="baseline cell"),
        Patch(facecolor="none", edgecolor="tab:red", lw=2.5, label="collapse boundary"),
    ]
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncol=3,
        frameon=False,
        title="\n".join(textwrap.fill(part, CAPTION_WIDTH) for part in caption(table).split("\n")),
        title_fontsize=9,
        fontsize=9,
    )
    return save(fig, path, force)


def phase_figures(ds: xr.Dataset, out_dir, stem: str, metrics=PHASE_METRICS, *, force: bool = False) -> list:
    """Phase diagrams and their table when `ds` is a 2-knob grid study, else [].

    A Dataset is a 2-knob grid when `find_grid` (knob coordinates along condition) finds its best
    grid to have exactly two knobs. Writes `{stem}_phase_{metric}.png` per metric present and
    `{stem}_phase_table.csv` (the policy_quality table), each atomically; every one is checked
    (`check_output`) before any is drawn, and an existing one is replaced only with `force`.
    Returns the paths written.
    """
    layout = find_grid(ds)
    if layout is None or len(layout.knobs) != 2:
        return []
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = {metric: out / f"{stem}_phase_{metric}.png" for metric in metrics if metric in ds}
    table_path = out / f"{stem}_phase_table.csv"
    for path in (*figures.values(), table_path):
        check_output(path, force=force)
    written = [phase_diagram(ds, path, metric, layout.knobs, force=force) for metric, path in figures.items()]
    table = phase_table(ds, "policy_quality", layout.knobs)
    return [*written, write_csv(table, table_path, force=force)]


# ---------------------------------------------------------------- order of events in time


def _half_crossing(values: np.ndarray, times: np.ndarray) -> np.ndarray:
    """First time each trajectory (last axis) covers half its change from first to last point.

    Linear interpolation between the two recorded points that bracket the crossing; NaN when the
    trajectory does not change or is not finite at its ends.
    """
    values = np.asarray(values, float)
    times = np.asarray(times, float)
    total = values[..., -1:] - values[..., :1]
    with np.errstate(invalid="ignore", divide="ignore"):
        share = (values - values[..., :1]) / total
    reached = share >= 0.5
    after = np.clip(np.argmax(reached, axis=-1), 1, values.shape[-1] - 1)[..., None]
    s0, s1 = np.take_along_axis(share, after - 1, -1)[..., 0], np.take_along_axis(share, after, -1)[..., 0]
    t0, t1 = times[after[..., 0] - 1], times[after[..., 0]]
    with np.errstate(invalid="ignore", divide="ignore"):
        crossing = t0 + (0.5 - s0) / (s1 - s0) * (t1 - t0)
    valid = reached.any(axis=-1) & np.isfinite(total[..., 0]) & (total[..., 0] != 0)
    return np.where(valid, crossing, np.nan)


def half_change_step(values: xr.DataArray, dim: str = "step", start=None, end=None) -> xr.DataArray:
    """Per trajectory, the `dim` coordinate at which `values` first covers half its change from `start` to `end`.

    Every other dimension (condition, seed, ...) is kept. The window is `values.sel({dim: slice(start, end)})`;
    its first and last points define the total change; the crossing is interpolated linearly between the
    recorded points that bracket it. NaN where the value does not change over the window.
    """
    window = values.sel({dim: slice(start, end)})
    return xr.apply_ufunc(
        _half_crossing,
        window,
        window[dim],
        input_core_dims=[[dim], [dim]],
        output_dtypes=[float],
    ).rename(f"{values.name}_half_change_{dim}")


def half_change_order(
    ds: xr.Dataset,
    first: str = "judge_alignment",
    second: str = "policy_entropy",
    dim: str = "step",
    start=None,
    end=None,
    confidence: float = CONFIDENCE,
) -> pd.DataFrame:
    """Per condition: when `first` and `second` cross half their change, and (second − first) paired by seed.

    A positive difference whose interval is above 0 says `first` moves first (e.g. alignment falls
    before entropy collapses). Columns: condition, n, <first>_mean, <second>_mean, difference_mean,
    difference_ci_low, difference_ci_high (Student-t over seeds). Diverged runs are left out.
    """
    masked = mask_diverged(ds) if "diverged" in ds else ds
    steps = {name: half_change_step(masked[name], dim, start, end) for name in (first, second)}
    rows = []
    for condition in masked["condition"].values.tolist():
        a, b = (steps[name].sel(condition=condition).transpose("seed").values for name in (first, second))
        mean, low, high, n = t_interval(b - a, confidence=confidence)
        rows.append(
            {
                "condition": condition,
                "n": int(n),
                f"{first}_mean": _nanmean(a),
                f"{second}_mean": _nanmean(b),
                "difference_mean": mean,
                "difference_ci_low": low,
                "difference_ci_high": high,
            }
        )
    table = pd.DataFrame(rows)
    table.attrs |= {"first": first, "second": second, "dim": dim, "window": (start, end), "confidence": confidence}
    return table
