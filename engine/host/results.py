"""Results as one labelled xarray Dataset: (condition, seed, iteration), one variable per metric.

With `record_every` k below the iteration length, the time dimension is `step` instead (the
global inner step of each record: 0 = after pretraining, then k, 2k, ...), with a coordinate
`iteration` along it (the outer iteration a record falls in: ceil(step / steps_per_iter),
indexed, so `ds.sel(iteration=2)` gives that iteration's records); `per_iteration` gives back
the per-iteration layout. Run-level summaries (ceiling, divergence) are always per outer
iteration. Saved distributions (`save_distributions`) add `policy_probability` and
`judge_score` along a `sequence` dimension labelled with the arrows (`engine.core.world.render`).

Condition knobs are coordinates along `condition`, and the parameter counts of each condition's
models (`policy_parameters`, `judge_parameters`: of the policy and of one judge) variables along
it (not coordinates: a count varies with its width knob, and two coordinates varying together
would tie every grid over that knob in `analysis.grid`); the study, versions, git commit and
timings are attrs, so a file carries what is needed to rerun it. Files are written to a
temporary name and renamed into place, so a result file is never half-written.
"""

import functools
import json
from pathlib import Path

import jax
import numpy as np
import xarray as xr

from engine.core.models import judge_parameters, policy_parameters
from engine.core.world import REFERENCE_WORLD, World, all_sequences, render
from engine.host.output import write_atomically
from engine.host.provenance import provenance
from engine.host.study import ResolvedStudy
from engine.knobs import KNOBS, record_interval, records_per_iteration, world_of
from engine.loop.diagnostics import CORE_METRICS, DISTRIBUTIONS, METRICS, UNITS


@functools.cache
def sequence_names(world: World) -> np.ndarray:
    """Every sequence of `world` as its arrows (`render`), the labels of the `sequence` dimension."""
    return np.asarray([render(x) for x in all_sequences(world)], dtype=object)


def world_of_dataset(ds: xr.Dataset) -> World:
    """The world a results file's runs ran in (its `vocab` and `seq_len` coordinates, equal in every
    condition); a file without them ran in the reference world."""
    if "vocab" not in ds.coords:
        return REFERENCE_WORLD
    return World(int(np.ravel(ds["vocab"].values)[0]), int(np.ravel(ds["seq_len"].values)[0]))


def ceiling_summary(quality: np.ndarray) -> dict:
    """Peak iteration, peak, final and degradation % of quality trajectories (..., iteration).

    As the reference's `detect_ceiling`: over the outer iterations 1..n only, not the state
    after pretraining (iteration 0), which the reference never records. peak_iteration is
    our label (1 = after the first outer iteration).
    """
    trained = quality[..., 1:]
    peak_iteration = 1 + np.argmax(trained, axis=-1)
    peak = np.max(trained, axis=-1)
    final = quality[..., -1]
    with np.errstate(divide="ignore", invalid="ignore"):
        degradation = 100.0 * (peak - final) / np.abs(peak)
    return {
        "peak_iteration": peak_iteration.astype(np.int32),
        "peak_quality": peak,
        "final_quality": final,
        "degradation_pct": degradation,
    }


def divergence(healthy: np.ndarray) -> dict:
    """Which runs diverged (a core metric not finite, or a parameter not finite or beyond
    ±DIVERGED_PARAMETER: engine.loop.diagnostics), and the first iteration where they did (-1: never)."""
    diverged = ~healthy.all(axis=-1)
    first = np.where(diverged, np.argmin(healthy, axis=-1), -1)
    return {"diverged": diverged, "diverged_at": first.astype(np.int32)}


def parameter_counts(study: ResolvedStudy) -> dict:
    """(condition,) variables: the parameters of each condition's policy and of each of its judges
    (every member of an ensemble, and the meta-judge, has as many)."""
    conditions = [study.conditions[c] for c in study.condition_names]
    return {
        "policy_parameters": (
            ("condition",),
            np.array(
                [policy_parameters(k["policy_arch"], k["policy_hidden"], world_of(k)) for k in conditions], np.int64
            ),
            {"units": "parameters", "long_name": "parameters of the policy"},
        ),
        "judge_parameters": (
            ("condition",),
            np.array(
                [judge_parameters(knobs["judge_arch"], knobs["judge_hidden"], world_of(knobs)) for knobs in conditions],
                np.int64,
            ),
            {"units": "parameters", "long_name": "parameters of one judge (each ensemble member, the meta-judge)"},
        ),
    }


def time_coordinates(sizes) -> tuple[str, dict]:
    """The time dimension of a study's records and its coordinates.

    One record per outer iteration: `iteration` 0..n_iterations. Finer: `step` (the global
    inner step of each record) with `iteration` along it (ceil(step / steps_per_iter)).
    """
    if records_per_iteration(sizes) == 1:
        return "iteration", {"iteration": np.arange(sizes.n_iterations + 1, dtype=np.int32)}
    step = record_interval(sizes) * np.arange(sizes.n_iterations * records_per_iteration(sizes) + 1, dtype=np.int32)
    iteration = (-(-step // sizes.steps_per_iter)).astype(np.int32)
    return "step", {
        "step": (("step",), step, {"long_name": "global inner step of the record (0 = after pretraining)"}),
        "iteration": (("step",), iteration, {"long_name": "outer iteration the record falls in"}),
    }


def make_dataset(
    study: ResolvedStudy, arrays: dict, timings: dict, layout: dict | None = None, devices=None, made_by=None
) -> xr.Dataset:
    """Assemble the program's (condition, seed[, record][, N]) arrays into the Dataset.

    layout: how the runs were placed (n_devices, max_runs_per_chunk, sub_batch), which a rerun
    needs to reproduce their bits; devices: those that ran them (default: every device JAX sees);
    made_by: their `provenance`, taken when the run started (default: now).
    """
    time, time_coords = time_coordinates(study.sizes)
    coords = {
        "condition": study.condition_names,
        "seed": np.array(study.seeds, np.int32),
        **time_coords,
    }
    for name, knob in KNOBS.items():
        values = [study.conditions[c][name] for c in study.condition_names]
        attrs = {"description": knob.doc, **({"units": knob.unit} if knob.unit else {})}
        coords[name] = ("condition", np.array(values, knob.coordinate_dtype), attrs)
    data = {}
    for metric in METRICS:
        values = arrays[metric]
        if metric == "top_sequence":  # an index into the N, stored as its arrows
            values = sequence_names(world_of(study.sizes))[values]
        data[metric] = (
            ("condition", "seed", time),
            values,
            {"units": UNITS[metric], "long_name": metric.replace("_", " ")},
        )
    if study.sizes.save_distributions != "none":
        coords["sequence"] = (
            "sequence",
            sequence_names(world_of(study.sizes)).tolist(),
            {"long_name": "tokens as arrows"},
        )
        final = study.sizes.save_distributions == "final"
        when = {"recorded": "at the final record only"} if final else {}
        for name in DISTRIBUTIONS:
            values = arrays[name][:, :, -1] if final else arrays[name]
            dims = ("condition", "seed", *(() if final else (time,)), "sequence")
            data[name] = (dims, values, {"units": UNITS[name], "long_name": name.replace("_", " "), **when})
    boundaries = slice(None, None, records_per_iteration(study.sizes))  # the record ending each outer iteration
    run_level = {
        **ceiling_summary(arrays["policy_quality"][..., boundaries]),
        **divergence(arrays["healthy"][..., boundaries]),
        "pretrain_steps": arrays["pretrain_steps"],
        "pretrain_alignment": arrays["pretrain_alignment"],
    }
    target = np.array([[study.conditions[c]["judge_init_alignment"]] for c in study.condition_names])
    run_level["pretrain_reached"] = arrays["pretrain_alignment"] >= target
    for name, values in run_level.items():
        data[name] = (("condition", "seed"), values)
    data.update(parameter_counts(study))
    attrs = {
        "study_name": study.name,
        "study": study.to_json(),
        "warnings": "\n".join(study.warnings),  # engine.host.study: combinations that ran, but not quite as written
        **(made_by or provenance(devices or jax.devices())),
        **{key: int(value) for key, value in (layout or {}).items()},
        **{key: float(value) for key, value in timings.items()},
    }
    return _indexed(xr.Dataset(data, coords=coords, attrs=attrs))


def _indexed(ds: xr.Dataset) -> xr.Dataset:
    """A step-resolved Dataset with `iteration` indexed (netCDF does not keep the index)."""
    if "step" in ds.dims and "iteration" in ds.coords and "iteration" not in ds.xindexes:
        return ds.set_xindex("iteration")
    return ds


def per_iteration(ds: xr.Dataset) -> xr.Dataset:
    """The records that end each outer iteration, over an `iteration` dimension: a step-resolved
    Dataset in the per-iteration layout (the `step` coordinate dropped); any other unchanged."""
    if "step" not in ds.dims:
        return ds
    ends = ds.isel(step=(ds["step"].values % int(np.ravel(ds["steps_per_iter"].values)[0])) == 0)
    return ends.drop_indexes("iteration").swap_dims(step="iteration").drop_vars("step")


def save(ds: xr.Dataset, path, *, force: bool = False) -> Path:
    """Write netCDF atomically (a temporary file in the same folder, then a rename); see engine.host.output."""
    return write_atomically(path, lambda temporary: ds.to_netcdf(temporary, engine="netcdf4"), force=force)


class ResultsFileError(ValueError):
    """A file that is not a readable coevo results file."""


# What analysis reads, with its dimensions: a file without them was not written by coevo.
# TIME stands for the time dimension: `iteration`, or `step` in a step-resolved file.
TIME = "time"
REQUIRED = {
    **{metric: ("condition", "seed", TIME) for metric in CORE_METRICS},
    "peak_iteration": ("condition", "seed"),
    "diverged": ("condition", "seed"),
}


def load(path) -> xr.Dataset:
    """Read a results file fully into memory (the file is closed afterwards).

    Anything that is not a complete coevo results file (missing, empty, truncated, not
    netCDF, or netCDF without the lab's variables) raises ResultsFileError.
    """
    path = Path(path)
    if not path.is_file():
        raise ResultsFileError(f"{path}: does not exist or is not a file")
    try:
        with xr.open_dataset(path, engine="netcdf4") as ds:
            ds = ds.load()
    except Exception as error:  # netCDF4/HDF5 raise OSError, ValueError, RuntimeError, ... by where the damage is
        raise ResultsFileError(f"{path}: not a readable netCDF file ({type(error).__name__}: {error})") from None
    time = "step" if "step" in ds.dims else "iteration"
    wrong = [
        name
        for name, dims in REQUIRED.items()
        if name not in ds or ds[name].dims != tuple(time if dim == TIME else dim for dim in dims)
    ]
    if wrong:
        raise ResultsFileError(
            f"{path}: not a coevo results file: no {', '.join(wrong)} over (condition, seed[, iteration or step])"
        )
    empty = [dim for dim in ("condition", "seed", time) if ds.sizes[dim] == 0]
    if empty:
        raise ResultsFileError(f"{path}: holds no {' and no '.join(empty)}")
    return _indexed(ds)


def study_of(ds: xr.Dataset) -> dict:
    """The study dict a Dataset was produced from (to rerun it)."""
    return json.loads(ds.attrs["study"])
