"""The gao studies analysed (studies/gao.py, gao_alignment.py, gao_best_of_n.py): Gao, Schulman &
Hilton's forms (analysis/gao.py) fitted per run to exact RL and best-of-n curves, summarised over
seeds with t-intervals, their trends with the judge's size and quality, co-evolving against
frozen, and the iterated form over outer iterations. docs/overoptimisation.md states the design.

Definitions, all exact sums over the 4096 sequences:

- RL curve of a run: at every record, d = √kl_to_initial = √KL(π‖π₀), the gold gain
  R = policy_quality − its value at record 0 (π₀) and the proxy gain = judge_perceived_quality −
  its value at record 0, i.e. E_π[J_t] − E_π₀[J_0]: the judge of that record, which for a
  co-evolving judge is not the one that scored π₀.
- round k: the records of outer iteration k, steps in ((k − 1)·S, k·S] with S = steps_per_iter.
  The RL fits read two windows (WINDOWS): round 1, Gao's fine curve, and the whole run (k = 1).
- points with d ≤ 0 (KL at rounding, only possible at the first records) are left out of a fit:
  the log forms need d > 0.
- best-of-n curve: `analysis.best_of_n.best_of_n_curves` of π₀ and the pretrained judge, n from
  2 to BEST_OF_N_MAX (before the exact KL saturates; docs/overoptimisation.md).
- a trend: per seed, the least-squares slope of a coefficient against x over the conditions of a
  series, then the mean slope over seeds with its t-interval. x is log(judge_parameters) along
  judge width, and each run's realised pretrain_alignment along judge quality (pretraining stops
  at the first check past the target, so the realised ρ overshoots it by up to one check's gain).
- iterated: k = the round a record belongs to, d its √KL to π₀ (the run's start, not the
  round's: per-round KL is not recorded). A frozen judge is never refreshed and a co-evolving
  one every inner step, so neither has rounds in Gao's sense; the outer iteration is the lab's
  round (DPO's π_ref is refreshed there, and reset_every 1 returns the judge to its pretrained
  weights there). The iterated form with that k is compared with the plain RL form (k = 1) on the
  same records.
"""

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib import colormaps
from matplotlib.figure import Figure

from analysis.best_of_n import best_of_n_curves, n_grid
from analysis.data import mask_diverged
from analysis.figures import DPI, save
from analysis.formatting import estimate, fixed, significant
from analysis.gao import BEST_OF_N, RL, Fit, Form, fit, rl_form
from analysis.grid import knob_table
from analysis.stats import Summary, paired_difference, seed_summary
from engine.host.output import write_atomically
from engine.knobs import KNOBS

BEST_OF_N_FILE = "gao_best_of_n.nc"  # the distributions study, looked for next to the results file
BEST_OF_N_MAX = 10**4  # n beyond this piles up where the exact KL saturates (docs/overoptimisation.md)
FORMS = {"bon": BEST_OF_N, "rl": RL}  # both of Gao's forms, fitted to every curve
EQUATIONS = {"bon": BEST_OF_N.equation, "rl": "R = d(α − β·log d)"}  # RL's own reads the iterated form's
LOOP_KNOBS = ("freeze_judge", "update_rule", "reset_every")
REFERENCE = {knob: KNOBS[knob].default for knob in ("judge_hidden", "judge_init_alignment")}
FIELDS = ("alpha", "beta", "r_squared", "rmse", "peak_d", "fall", "data_peak")
AXES = {
    "width": ("judge_hidden", "judge_init_alignment", "log judge parameters"),
    "alignment": ("judge_init_alignment", "judge_hidden", "pretrained judge's Spearman ρ with q*"),
}
OUTPUTS = ("curves.png", "coefficients.png", "iterated.png", "fits.csv", "answers.md")


# ---------------------------------------------------------------------------------------------
# Curves


def rl_curves(ds: xr.Dataset) -> xr.Dataset:
    """d, gold and proxy gains and the round of every record, (condition, seed, step); diverged runs NaN."""
    if "step" not in ds.dims:
        raise ValueError("RL curves need a step-resolved results file (record_every > 0; docs/phase.md)")
    masked = mask_diverged(ds)
    start = masked.isel(step=0)
    steps_per_iter = int(np.ravel(ds["steps_per_iter"].values)[0])
    kl = masked["kl_to_initial"]
    return xr.Dataset(
        {
            "d": np.sqrt(kl.where(kl > 0)),
            "gold": masked["policy_quality"] - start["policy_quality"],
            "proxy": masked["judge_perceived_quality"] - start["judge_perceived_quality"],
            "round": np.ceil(ds["step"] / steps_per_iter).astype(int),
        }
    ).transpose("condition", "seed", "step")


def best_of_n_table(bon: xr.Dataset, n_max: int = BEST_OF_N_MAX) -> xr.Dataset:
    """The exact best-of-n curves of every condition of the distributions study, (condition, seed, n):
    d and the gold and proxy gains over π₀."""
    n = n_grid(n_max)[1:]  # n = 1 is π₀ itself: d = 0
    per_condition = []
    for condition in bon["condition"].values:
        curves = best_of_n_curves(bon.sel(condition=condition), n)
        per_condition.append(
            xr.Dataset(
                {
                    "d": curves["d"],
                    "gold": curves["gold"] - curves["initial_gold"],
                    "proxy": curves["perceived"] - curves["initial_perceived"],
                }
            )
        )
    return xr.concat(per_condition, dim="condition").assign_coords(condition=bon["condition"].values)


# ---------------------------------------------------------------------------------------------
# Fits per run


def iterated_form(k) -> Form:
    """Gao's iterated RL form with k given per point (k aligned with the d it is fitted to)."""
    k = np.asarray(k, dtype=float)
    last = rl_form(float(k.max()))
    return Form("iterated RL", last.equation, lambda d: d * (np.log(d) - np.log(k)), last.turnover, log=True)


def fit_points(d, gain, form: Form, k=None) -> Fit | None:
    """`analysis.gao.fit` on one run's finite points with d > 0 (k per point for the iterated form);
    None when fewer than 3 points are left (nothing to fit a 2-parameter form to)."""
    d, gain = np.asarray(d, dtype=float), np.asarray(gain, dtype=float)
    kept = np.isfinite(d) & np.isfinite(gain) & (d > 0)
    if kept.sum() < 3:
        return None
    if k is not None:
        form = iterated_form(np.asarray(k)[kept])
    with np.errstate(over="ignore"):  # d* = k·exp(α/β − 1) overflows to inf for β ≪ α: no turnover in sight
        return fit(d[kept], gain[kept], form)


def fit_table(curves: xr.Dataset, form: Form, points: str, keep=None, iterated: bool = False) -> xr.Dataset:
    """One fit per (condition, seed) of `form` to the gold gain against d along `points`; FIELDS plus
    d_max (the largest d fitted), NaN where a run has too few points. `keep`: a boolean mask along
    `points` (round 1, say); `iterated`: k per point from the curves' `round`."""
    if keep is not None:
        curves = curves.isel({points: np.flatnonzero(np.asarray(keep))})
    d = curves["d"].transpose("condition", "seed", points).values
    gold = curves["gold"].transpose("condition", "seed", points).values
    k = curves["round"].values if iterated else None
    shape = d.shape[:2]
    out = {name: np.full(shape, np.nan) for name in (*FIELDS, "d_max")}
    for index in np.ndindex(shape):
        result = fit_points(d[index], gold[index], form, k)
        if result is None:
            continue
        for name in FIELDS:
            out[name][index] = float(getattr(result, name))
        out["d_max"][index] = np.nanmax(np.where(d[index] > 0, d[index], np.nan))
    coords = {"condition": curves["condition"].values, "seed": curves["seed"].values}
    return xr.Dataset({name: (("condition", "seed"), value) for name, value in out.items()}, coords=coords)


# The records an RL fit reads: Gao's fine curve of outer iteration 1, and the whole run (every
# round with k = 1: for a frozen judge under REINFORCE nothing changes between outer iterations).
WINDOWS = {"iteration 1": lambda rounds: rounds == 1, "whole run": lambda rounds: rounds >= 1}


def window(curves: xr.Dataset, name: str) -> np.ndarray:
    """The records of a WINDOWS entry, as a mask along `step`."""
    return WINDOWS[name](curves["round"].values)


def rl_fits(curves: xr.Dataset) -> dict:
    """{window: {form key: fit table}}: both forms on each window of every run."""
    return {
        name: {key: fit_table(curves, form, "step", window(curves, name)) for key, form in FORMS.items()}
        for name in WINDOWS
    }


def best_of_n_fits(table: xr.Dataset) -> dict:
    """{form key: fit table} of both forms on every run's best-of-n curve."""
    return {key: fit_table(table, form, "n") for key, form in FORMS.items()}


def iterated_fits(curves: xr.Dataset) -> xr.Dataset:
    """The iterated form (k = round) on the whole run; its k = 1 twin is rl_fits' whole-run RL fit."""
    return fit_table(curves, RL, "step", window(curves, "whole run"), iterated=True)


# ---------------------------------------------------------------------------------------------
# Conditions: loops and series


def loop_name(row: pd.Series) -> str:
    """'frozen reinforce', 'co-evolving dpo', 'co-evolving dpo, reset every 1', from a knob-table row."""
    judge = "frozen" if bool(row.get("freeze_judge", False)) else "co-evolving"
    name = f"{judge} {row.get('update_rule', 'reinforce')}"
    reset = int(row.get("reset_every", 0))
    return f"{name}, reset every {reset}" if reset and judge == "co-evolving" else name


def loops(ds: xr.Dataset) -> dict:
    """{loop name: its conditions, in file order}."""
    table = knob_table(ds)
    out: dict[str, list] = {}
    for condition, row in table.iterrows():
        out.setdefault(loop_name(row), []).append(condition)
    return out


@dataclass(frozen=True)
class Series:
    """Conditions of one loop that differ only along one judge axis ('width' or 'alignment')."""

    loop: str
    axis: str
    conditions: tuple


def series(ds: xr.Dataset) -> list[Series]:
    """Every loop's width series (at the reference alignment) and alignment series (at the reference
    width), where the file has at least two conditions along the axis."""
    table = knob_table(ds)
    found = []
    for loop, conditions in loops(ds).items():
        for axis, (knob, held, _) in AXES.items():
            rows = table.loc[conditions]
            at_reference = rows[np.isclose(rows[held].astype(float), REFERENCE[held])]
            if at_reference[knob].nunique() >= 2:
                ordered = at_reference.sort_values(knob).index.tolist()
                found.append(Series(loop, axis, tuple(ordered)))
    return found


def axis_values(ds: xr.Dataset, axis: str, conditions) -> xr.DataArray:
    """x of each (condition, seed): log judge_parameters (width) or realised pretrain_alignment."""
    cells = ds.sel(condition=list(conditions))
    if axis == "width":
        return np.log(cells["judge_parameters"].astype(float)).broadcast_like(cells["pretrain_alignment"])
    return cells["pretrain_alignment"].astype(float)


# ---------------------------------------------------------------------------------------------
# Summaries


def per_seed_slopes(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Least-squares slope of y on x per seed, both (conditions, seeds); NaN where a seed has fewer
    than two finite points with distinct x."""
    slopes = np.full(y.shape[1], np.nan)
    for seed in range(y.shape[1]):
        ok = np.isfinite(y[:, seed]) & np.isfinite(x[:, seed])
        if ok.sum() >= 2 and np.ptp(x[ok, seed]) > 0:
            slopes[seed] = np.polyfit(x[ok, seed], y[ok, seed], 1)[0]
    return slopes


def trend(fits: xr.Dataset, field: str, x: xr.DataArray, conditions) -> Summary:
    """The mean over seeds of the per-seed slope of `field` against x, with its t-interval."""
    y = fits[field].sel(condition=list(conditions)).transpose("condition", "seed").values
    return seed_summary(per_seed_slopes(y, x.transpose("condition", "seed").values))


def summary_row(fits: xr.Dataset, condition: str, form: Form) -> dict:
    """A condition's fits over seeds: α, β with t-intervals, R², d* of the mean, peaks, d reached."""
    one = fits.sel(condition=condition)
    alpha, beta = seed_summary(one["alpha"].values), seed_summary(one["beta"].values)
    with np.errstate(over="ignore"):  # d* = k·exp(α/β − 1) overflows to inf for β ≪ α: no turnover in sight
        peak = float(form.peak(alpha.mean, beta.mean)) if alpha.n else np.nan
    return {
        "n": alpha.n,
        "alpha": alpha,
        "beta": beta,
        "r_squared": seed_summary(one["r_squared"].values),
        "r_squared_min": float(np.nanmin(one["r_squared"].values)) if alpha.n else np.nan,
        "peak_d": peak,
        "d_max": seed_summary(one["d_max"].values),
        "fall": seed_summary(one["fall"].values),
        "runs_peaking": int(np.nansum(one["data_peak"].values)),
    }


SUMMARY_PARTS = ("mean", "ci_low", "ci_high")


def fits_frame(ds: xr.Dataset, fits: dict, curve: str) -> pd.DataFrame:
    """One row per (condition, form) of one curve's {form key: fit table}: the rows of gao_fits.csv."""
    table = knob_table(ds)
    rows = []
    for key, form in FORMS.items():
        for condition in fits[key]["condition"].values.tolist():
            s = summary_row(fits[key], condition, form)
            rows.append(
                {
                    "curve": curve,
                    "condition": condition,
                    "loop": "best-of-n" if curve == "best-of-n" else loop_name(table.loc[condition]),
                    "judge_parameters": int(ds["judge_parameters"].sel(condition=condition)),
                    "pretrain_alignment": float(ds["pretrain_alignment"].sel(condition=condition).mean()),
                    "form": form.name,
                    "seeds": s["n"],
                    **{
                        f"{name}_{part}": getattr(s[name], part) for name in ("alpha", "beta") for part in SUMMARY_PARTS
                    },
                    "r_squared_mean": s["r_squared"].mean,
                    "r_squared_min": s["r_squared_min"],
                    "peak_d_of_mean": s["peak_d"],
                    "d_max_mean": s["d_max"].mean,
                    "runs_peaking": s["runs_peaking"],
                    "fall_mean": s["fall"].mean,
                }
            )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# The analysis of one results file


@dataclass(frozen=True)
class GaoAnalysis:
    """Everything the figures and the answers read, for one RL results file (and its best-of-n file).

    rl: {window: {form key: fit table}}; iterated: the iterated form's fit table (whole run);
    bon: {form key: fit table} of the best-of-n curves, None without the distributions study.
    """

    ds: xr.Dataset
    curves: xr.Dataset
    rl: dict
    iterated: xr.Dataset
    series: tuple
    bon_ds: xr.Dataset | None
    bon_curves: xr.Dataset | None
    bon: dict | None


def analyse(ds: xr.Dataset, bon_ds: xr.Dataset | None = None) -> GaoAnalysis:
    """Fit every run of `ds` (step-resolved) and, with the distributions study, every best-of-n curve."""
    curves = rl_curves(ds)
    bon_curves = best_of_n_table(bon_ds) if bon_ds is not None else None
    return GaoAnalysis(
        ds=ds,
        curves=curves,
        rl=rl_fits(curves),
        iterated=iterated_fits(curves),
        series=tuple(series(ds)),
        bon_ds=bon_ds,
        bon_curves=bon_curves,
        bon=best_of_n_fits(bon_curves) if bon_curves is not None else None,
    )


def matching_judges(analysis: GaoAnalysis, conditions) -> list:
    """The best-of-n conditions with the judges (width, target) of `conditions`, in their order;
    a condition without one is left out."""
    if analysis.bon_ds is None:
        return []
    bon = knob_table(analysis.bon_ds)
    rl = knob_table(analysis.ds)
    out = []
    for condition in conditions:
        same = np.ones(len(bon), bool)
        for knob in REFERENCE:
            same &= np.isclose(bon[knob].astype(float), float(rl.loc[condition, knob]))
        if same.any():
            out.append(bon.index[np.flatnonzero(same)[0]])
    return out


def reference_conditions(ds: xr.Dataset) -> dict:
    """{loop: its condition with the reference judge (width 32, target 0.7)}."""
    table = knob_table(ds)
    out = {}
    for loop, conditions in loops(ds).items():
        for condition in conditions:
            if all(np.isclose(float(table.loc[condition, knob]), value) for knob, value in REFERENCE.items()):
                out[loop] = condition
                break
    return out


def has_gao_conditions(ds: xr.Dataset) -> bool:
    """A step-resolved file with exact KL whose conditions vary the judge's width or pretraining target."""
    if "step" not in ds.dims or "kl_to_initial" not in ds:
        return False
    table = knob_table(ds)
    return any(knob in table and table[knob].nunique() > 1 for knob in REFERENCE)


# ---------------------------------------------------------------------------------------------
# Figures


def _judge_label(ds: xr.Dataset, condition: str, axis: str) -> str:
    if axis == "alignment":
        return f"ρ target {float(ds['judge_init_alignment'].sel(condition=condition)):g}"
    return f"{int(ds['judge_parameters'].sel(condition=condition))} params"


def _mean_curve(curves: xr.Dataset, condition: str, points: str, keep=None) -> tuple:
    """Seed means of d and of the gold and proxy gains at each point (record or n)."""
    one = curves.sel(condition=condition)
    if keep is not None:
        one = one.isel({points: np.flatnonzero(keep)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a point no seed has (d ≤ 0 at rounding): NaN
        return tuple(np.nanmean(one[name].transpose("seed", points).values, axis=0) for name in ("d", "gold", "proxy"))


def _colours(n: int):
    return [colormaps["viridis"](v) for v in np.linspace(0.0, 0.9, n)]


def _main_axis(analysis: GaoAnalysis) -> str | None:
    axes = [s.axis for s in analysis.series]
    return "width" if "width" in axes else (axes[0] if axes else None)


def curves_figure(analysis: GaoAnalysis, path, *, force: bool = False):
    """Gao's Figure 1 in the lab: gold (solid) and proxy (dashed) gain against d per judge, one row
    per loop (the whole run) and one for best-of-n, with the fitted curve of the mean α, β (dotted)."""
    axis = _main_axis(analysis)
    if axis is None:
        return None
    rows = [s for s in analysis.series if s.axis == axis]
    bon_conditions = matching_judges(analysis, rows[0].conditions)
    run = window(analysis.curves, "whole run")
    panels = [
        (f"{s.loop} (RL)", s.conditions, analysis.ds, analysis.curves, run, "rl", analysis.rl["whole run"])
        for s in rows
    ]
    if bon_conditions:
        panels.append(
            ("best-of-n from π₀", bon_conditions, analysis.bon_ds, analysis.bon_curves, None, "bon", analysis.bon)
        )
    fig = Figure(figsize=(1600 / DPI, (300 * len(panels) + 200) / DPI), layout="constrained")
    axes = fig.subplots(len(panels), 2, sharex=True, squeeze=False)
    fig.suptitle("Gold and proxy gain against √KL(π‖π₀), per judge (Gao et al.'s Figure 1, exact)")
    for (title, conditions, ds, curves, keep, key, fits), (gold_ax, proxy_ax) in zip(panels, axes, strict=True):
        points = "n" if keep is None else "step"
        form = FORMS[key]
        for colour, condition in zip(_colours(len(conditions)), conditions, strict=True):
            d, gold, proxy = _mean_curve(curves, condition, points, keep)
            gold_ax.plot(d, gold, color=colour, label=_judge_label(ds, condition, axis))
            proxy_ax.plot(d, proxy, color=colour, linestyle="--")
            s = summary_row(fits[key], condition, form)
            if np.isfinite(d).any() and s["n"]:
                grid = np.linspace(np.nanmin(d[d > 0]), np.nanmax(d), 100)
                gold_ax.plot(grid, form.curve(grid, s["alpha"].mean, s["beta"].mean), color=colour, linestyle=":")
        gold_ax.set_title(f"{title}: gold gain [q*]; dotted: {EQUATIONS[key]} at the mean α, β", fontsize=8)
        proxy_ax.set_title(f"{title}: proxy gain E_π[J] − E_π₀[J₀]", fontsize=8)
        gold_ax.legend(fontsize=6)
        for ax in (gold_ax, proxy_ax):
            ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("d = √KL(π‖π₀)  [√nats], mean over seeds at each record (each n)")
    return save(fig, path, force)


def coefficients_figure(analysis: GaoAnalysis, path, *, force: bool = False):
    """Gao's Figure 3 in the lab: α and β of the RL form (each loop, whole run) and of the best-of-n
    form (π₀ with the pretrained judge) against the judge axis, seed means with 95% t-intervals."""
    axis = _main_axis(analysis)
    if axis is None:
        return None
    rows = [s for s in analysis.series if s.axis == axis]
    fig = Figure(figsize=(1600 / DPI, 1100 / DPI), layout="constrained")
    axes = fig.subplots(2, 2, sharex=True)
    fig.suptitle(f"Gao's coefficients against the judge's {axis} (95% t-intervals over seeds)")
    lines = [(s.loop, s.conditions, analysis.ds, analysis.rl["whole run"]) for s in rows]
    bon_conditions = matching_judges(analysis, rows[0].conditions)
    if bon_conditions:
        lines.append(("best-of-n", bon_conditions, analysis.bon_ds, analysis.bon))
    panels = {(0, 0): ("rl", "alpha"), (0, 1): ("rl", "beta"), (1, 0): ("bon", "alpha"), (1, 1): ("bon", "beta")}
    for i, (label, conditions, ds, fits) in enumerate(lines):
        x = axis_values(ds, axis, conditions).mean("seed").values
        style = {"color": "black", "linestyle": "--"} if label == "best-of-n" else {"color": f"C{i}"}
        for (row, column), (key, field) in panels.items():
            summaries = [summary_row(fits[key], c, FORMS[key])[field] for c in conditions]
            mean = np.array([s.mean for s in summaries])
            errors = np.array([[s.mean - s.ci_low for s in summaries], [s.ci_high - s.mean for s in summaries]])
            axes[row, column].errorbar(x, mean, yerr=errors, marker="o", capsize=3, label=label, **style)
    for (row, column), (key, field) in panels.items():
        symbol = "α" if field == "alpha" else "β"
        title = f"{symbol} of the {FORMS[key].name} form {EQUATIONS[key]} (RL: whole run)"
        axes[row, column].set_title(title, fontsize=8)
        axes[row, column].grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel(AXES[axis][2] + (" (realised, mean over seeds)" if axis == "alignment" else ""))
    axes[0, 0].legend(fontsize=7)
    return save(fig, path, force)


def iterated_figure(analysis: GaoAnalysis, path, *, force: bool = False):
    """Every outer iteration a round: the reference judge's mean gold gain against d under each loop,
    coloured by round, with the whole-run RL fit (k = 1, dotted) and the iterated fit (k = round,
    dashed) at the mean coefficients."""
    reference = reference_conditions(analysis.ds)
    if not reference:
        return None
    fig = Figure(figsize=(1600 / DPI, 1100 / DPI), layout="constrained")
    axes = fig.subplots(2, math.ceil(len(reference) / 2), squeeze=False).ravel()
    fig.suptitle("Every outer iteration a round: gold gain against √KL(π‖π₀), reference judge")
    rounds = analysis.curves["round"].values
    run = window(analysis.curves, "whole run")
    for ax, (loop, condition) in zip(axes, reference.items(), strict=False):
        d, gold, _ = _mean_curve(analysis.curves, condition, "step")
        for k in np.unique(rounds[run]):
            on = rounds == k
            ax.plot(d[on], gold[on], color=f"C{(k - 1) % 10}", label=f"round {k}")
        plain = summary_row(analysis.rl["whole run"]["rl"], condition, RL)
        iterated = summary_row(analysis.iterated, condition, RL)
        ax.plot(d[run], RL.curve(d[run], plain["alpha"].mean, plain["beta"].mean), "k:", label="RL fit, k = 1")
        fitted = iterated_form(rounds[run]).curve(d[run], iterated["alpha"].mean, iterated["beta"].mean)
        ax.plot(d[run], fitted, "k--", label="iterated fit, k = round")
        ax.set_title(loop, fontsize=9)
        ax.set_xlabel("d = √KL(π‖π₀), mean over seeds")
        ax.set_ylabel("gold gain [q*]")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[len(reference) :]:
        ax.set_visible(False)
    return save(fig, path, force)


# ---------------------------------------------------------------------------------------------
# Answers


def _coefficient_table(fits: dict, ds: xr.Dataset, conditions, loop_of) -> list[str]:
    lines = [
        "| loop | judge | ρ₀ realised | form | α | β | R² mean (min) | d* of mean α, β | d reached | "
        "runs peaking | fall |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for condition in conditions:
        for key, form in FORMS.items():
            s = summary_row(fits[key], condition, form)
            lines.append(
                f"| {loop_of(condition)} | {int(ds['judge_parameters'].sel(condition=condition))} params | "
                f"{fixed(float(ds['pretrain_alignment'].sel(condition=condition).mean()))} | {form.name} | "
                f"{estimate(s['alpha'])} | {estimate(s['beta'])} | {fixed(s['r_squared'].mean)} "
                f"({fixed(s['r_squared_min'])}) | {significant(s['peak_d'])} | {fixed(s['d_max'].mean)} | "
                f"{s['runs_peaking']}/{s['n']} | {estimate(s['fall'])} |"
            )
    return lines


def _form_comparison(fits: dict, conditions) -> list[str]:
    """Which of Gao's two forms fits each condition's curves better: paired R² difference over seeds."""
    lines = ["| condition | R²(RL form) − R²(best-of-n form), paired over seeds | better |", "|---|---|---|"]
    for condition in conditions:
        diff = paired_difference(
            fits["rl"]["r_squared"].sel(condition=condition).values,
            fits["bon"]["r_squared"].sel(condition=condition).values,
        )
        better = (
            "RL form" if diff.ci_low > 0 else "best-of-n form" if diff.ci_high < 0 else "neither (interval spans 0)"
        )
        lines.append(f"| {condition} | {estimate(diff, signed=True)} | {better} |")
    return lines


def _trend_row(label: str, loop: str, axis: str, fits: xr.Dataset, x: xr.DataArray, conditions) -> str:
    slopes = [estimate(trend(fits, field, x, conditions), signed=True) for field in ("alpha", "beta")]
    return f"| {label} | {loop} | {AXES[axis][2]} | {slopes[0]} | {slopes[1]} |"


def _trend_lines(analysis: GaoAnalysis) -> list[str]:
    lines = ["| curve, form | loop | against | slope of α | slope of β |", "|---|---|---|---|---|"]
    for name, fits in analysis.rl.items():
        for s in analysis.series:
            x = axis_values(analysis.ds, s.axis, s.conditions)
            for key, form in FORMS.items():
                lines.append(_trend_row(f"RL {name}, {form.name}", s.loop, s.axis, fits[key], x, s.conditions))
    for axis in dict.fromkeys(s.axis for s in analysis.series):
        first = next(s for s in analysis.series if s.axis == axis)
        conditions = matching_judges(analysis, first.conditions)
        if len(conditions) < 2:
            continue
        x = axis_values(analysis.bon_ds, axis, conditions)
        for key, form in FORMS.items():
            lines.append(
                _trend_row(f"best-of-n, {form.name}", "π₀, pretrained judge", axis, analysis.bon[key], x, conditions)
            )
    return lines


def frozen_partners(ds: xr.Dataset) -> dict:
    """{co-evolving condition (no resets): the frozen condition with its rule and judge}."""
    table = knob_table(ds)
    same_judge = ["update_rule", *REFERENCE]
    frozen = table[table["freeze_judge"].astype(bool)]
    out = {}
    for condition, row in table.iterrows():
        if bool(row["freeze_judge"]) or int(row.get("reset_every", 0)) != 0:
            continue
        match = frozen.index[(frozen[same_judge] == row[same_judge]).all(axis=1)]
        if len(match):
            out[condition] = match[0]
    return out


def _coevolution_lines(analysis: GaoAnalysis) -> list[str]:
    """Co-evolving − frozen, paired by seed (same π₀, same pretrained judge), RL form, per window."""
    lines = ["| co-evolving condition | − frozen condition | records | Δα | Δβ |", "|---|---|---|---|---|"]
    for name, fits in analysis.rl.items():
        for coevolving, frozen in frozen_partners(analysis.ds).items():
            deltas = [
                paired_difference(
                    fits["rl"][field].sel(condition=coevolving).values, fits["rl"][field].sel(condition=frozen).values
                )
                for field in ("alpha", "beta")
            ]
            lines.append(
                f"| {coevolving} | {frozen} | {name} | {estimate(deltas[0], signed=True)} | "
                f"{estimate(deltas[1], signed=True)} |"
            )
    return lines


def _iterated_lines(analysis: GaoAnalysis) -> list[str]:
    lines = [
        "| condition | iterated α | iterated β | RL α, iteration 1 | RL β, iteration 1 | "
        "RMSE(k = 1) − RMSE(k = round) | R², k = 1 and k = round |",
        "|---|---|---|---|---|---|---|",
    ]
    plain, first = analysis.rl["whole run"]["rl"], analysis.rl["iteration 1"]["rl"]
    for condition in reference_conditions(analysis.ds).values():
        iterated = summary_row(analysis.iterated, condition, RL)
        one = summary_row(first, condition, RL)
        gain = paired_difference(
            plain["rmse"].sel(condition=condition).values, analysis.iterated["rmse"].sel(condition=condition).values
        )
        lines.append(
            f"| {condition} | {estimate(iterated['alpha'])} | {estimate(iterated['beta'])} | "
            f"{estimate(one['alpha'])} | {estimate(one['beta'])} | {estimate(gain, 4, signed=True)} | "
            f"{fixed(summary_row(plain, condition, RL)['r_squared'].mean)}, {fixed(iterated['r_squared'].mean)} |"
        )
    return lines


def answers_markdown(analysis: GaoAnalysis) -> str:
    """The answers, from the data: fits per condition and window, which form fits, peaks, trends,
    co-evolving against frozen, iterated."""
    ds = analysis.ds
    conditions = ds["condition"].values.tolist()
    loop_of = {c: loop for loop, names in loops(ds).items() for c in names}.get
    records = int(window(analysis.curves, "iteration 1").sum())
    out = [
        f"# Gao's laws in the exact lab: {ds.attrs.get('study_name', 'results')}",
        "",
        f"Written by analysis/gao_study.py from the results file ({ds.sizes['condition']} conditions × "
        f"{ds.sizes['seed']} seeds; {records} records in outer iteration 1, "
        f"{int(analysis.curves['round'].max())} outer iterations). Definitions: docs/overoptimisation.md. "
        "Intervals: 95% Student-t over seeds; diverged runs left out.",
        "",
        "d*: the maximiser of the curve with the mean α, β (∞: no turnover, β ≤ 0, or beyond float range). "
        "Runs peaking: the gold gain at the last fitted point is below its maximum by more than rounding; "
        "fall: that drop [q*]. d reached: the largest d fitted, mean over seeds.",
    ]
    for name, fits in analysis.rl.items():
        out += [
            "",
            f"## RL, {name}: both forms fitted per run",
            "",
            *_coefficient_table(fits, ds, conditions, loop_of),
            "",
            *_form_comparison(fits, conditions),
        ]
    if analysis.bon is not None:
        bon_conditions = analysis.bon_ds["condition"].values.tolist()
        out += [
            "",
            f"## Best-of-n from π₀ with the pretrained judge (n = 2 … {BEST_OF_N_MAX}, exact)",
            "",
            *_coefficient_table(analysis.bon, analysis.bon_ds, bon_conditions, lambda condition: "best-of-n"),
            "",
            *_form_comparison(analysis.bon, bon_conditions),
        ]
    out += [
        "",
        "## Trends with the judge (per-seed least-squares slope, then its mean over seeds)",
        "",
        *_trend_lines(analysis),
        "",
        "## Co-evolving − frozen (paired by seed: same π₀, same pretrained judge), RL form",
        "",
        *_coevolution_lines(analysis),
        "",
        "## Iterated: every outer iteration a round (reference judge, whole run)",
        "",
        *_iterated_lines(analysis),
        "",
        "RMSE(k = 1) − RMSE(k = round) > 0: the iterated form (k = the record's outer iteration, d = √KL to π₀) "
        "fits the whole run better than the plain RL form. Gao's prediction is also that its α, β are a "
        "single round's.",
        "",
    ]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# Hook for `coevo figures`


def output_paths(out_dir, stem: str) -> list[Path]:
    return [Path(out_dir) / f"{stem}_{name}" for name in OUTPUTS]


def load_best_of_n(out_dir) -> xr.Dataset | None:
    """The distributions study next to the results file (BEST_OF_N_FILE), if it is there."""
    import engine

    path = Path(out_dir) / BEST_OF_N_FILE
    return engine.load(path) if path.is_file() else None


def gao_outputs(ds: xr.Dataset, out_dir, stem: str, bon_ds: xr.Dataset | None = None, *, force: bool = False) -> list:
    """The figures, the long fits table and the answers of a gao results file (step-resolved `ds`)."""
    analysis = analyse(ds, bon_ds)
    curves_path, coefficients_path, iterated_path, csv_path, answers_path = output_paths(out_dir, stem)
    frames = [fits_frame(ds, fits, f"RL, {name}") for name, fits in analysis.rl.items()]
    if analysis.bon is not None:
        frames.append(fits_frame(analysis.bon_ds, analysis.bon, "best-of-n"))
    table = pd.concat(frames, ignore_index=True)
    text = answers_markdown(analysis)
    written = [
        curves_figure(analysis, curves_path, force=force),
        coefficients_figure(analysis, coefficients_path, force=force),
        iterated_figure(analysis, iterated_path, force=force),
        str(write_atomically(csv_path, lambda temporary: table.to_csv(temporary, index=False), force=force)),
        str(write_atomically(answers_path, lambda temporary: Path(temporary).write_text(text), force=force)),
    ]
    return [path for path in written if path is not None]
