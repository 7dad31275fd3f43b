"""Results as one labelled xarray Dataset: (condition, seed, iteration), one variable per metric.

Condition knobs are coordinates along `condition`; the study, versions, git commit and
timings are attrs, so a file carries what is needed to rerun it. Files are written to a
temporary name and renamed into place, so a result file is never half-written.
"""

import json
import subprocess
from pathlib import Path

import jax
import jaxlib
import numpy as np
import xarray as xr

from engine.diagnostics import CORE_METRICS, METRICS, UNITS
from engine.knobs import KNOBS
from engine.output import write_atomically
from engine.study import ResolvedStudy

ENGINE_VERSION = "0.1.0"


def ceiling_summary(quality: np.ndarray) -> dict:
    """Peak iteration, peak, final and degradation % of quality trajectories (..., iteration)."""
    peak_iteration = np.argmax(quality, axis=-1)
    peak = np.max(quality, axis=-1)
    final = quality[..., -1]
    with np.errstate(divide="ignore", invalid="ignore"):
        degradation = 100.0 * (peak - final) / np.abs(peak)
    return {
        "peak_iteration": peak_iteration.astype(np.int32),
        "peak_quality": peak,
        "final_quality": final,
        "degradation_pct": degradation,
    }


def divergence(finite: np.ndarray) -> dict:
    """Which runs turned NaN/inf, and the first iteration where they did (-1: never)."""
    diverged = ~finite.all(axis=-1)
    first = np.where(diverged, np.argmin(finite, axis=-1), -1)
    return {"diverged": diverged, "diverged_at": first.astype(np.int32)}


def git_commit() -> str:
    """The engine's git commit, with '-dirty' when its working tree has uncommitted changes."""

    def git(*args):
        folder = Path(__file__).resolve().parent
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True, cwd=folder, timeout=10).stdout

    try:
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return git("rev-parse", "HEAD").strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def make_dataset(study: ResolvedStudy, arrays: dict, timings: dict) -> xr.Dataset:
    """Assemble the program's (condition, seed[, iteration]) arrays into the Dataset."""
    coords = {
        "condition": study.condition_names,
        "seed": np.array(study.seeds, np.int32),
        "iteration": np.arange(study.sizes.n_iterations + 1, dtype=np.int32),
    }
    for name, knob in KNOBS.items():
        values = [study.conditions[c][name] for c in study.condition_names]
        attrs = {"description": knob.doc, **({"units": knob.unit} if knob.unit else {})}
        coords[name] = ("condition", np.array(values, knob.coordinate_dtype), attrs)
    data = {}
    for metric in METRICS:
        data[metric] = (
            ("condition", "seed", "iteration"),
            arrays[metric],
            {"units": UNITS[metric], "long_name": metric.replace("_", " ")},
        )
    run_level = {
        **ceiling_summary(arrays["policy_quality"]),
        **divergence(arrays["finite"]),
        "pretrain_steps": arrays["pretrain_steps"],
        "pretrain_alignment": arrays["pretrain_alignment"],
    }
    target = np.array([[study.conditions[c]["judge_init_alignment"]] for c in study.condition_names])
    run_level["pretrain_reached"] = arrays["pretrain_alignment"] >= target
    for name, values in run_level.items():
        data[name] = (("condition", "seed"), values)
    attrs = {
        "study_name": study.name,
        "study": study.to_json(),
        "engine_version": ENGINE_VERSION,
        "jax_version": jax.__version__,
        "jaxlib_version": jaxlib.__version__,
        "git_commit": git_commit(),
        "devices": ", ".join(sorted({f"{d.platform}:{d.device_kind}" for d in jax.devices()}))
        + f" x{jax.device_count()}",
        **{key: float(value) for key, value in timings.items()},
    }
    return xr.Dataset(data, coords=coords, attrs=attrs)


def save(ds: xr.Dataset, path, *, force: bool = False) -> Path:
    """Write netCDF atomically (a temporary file in the same folder, then a rename); see engine.output."""
    return write_atomically(path, lambda temporary: ds.to_netcdf(temporary, engine="netcdf4"), force=force)


class ResultsFileError(ValueError):
    """A file that is not a readable coevo results file."""


# What analysis reads, with its dimensions: a file without them was not written by coevo.
REQUIRED = {
    **{metric: ("condition", "seed", "iteration") for metric in CORE_METRICS},
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
    wrong = [name for name, dims in REQUIRED.items() if name not in ds or ds[name].dims != dims]
    if wrong:
        raise ResultsFileError(
            f"{path}: not a coevo results file: no {', '.join(wrong)} over (condition, seed[, iteration])"
        )
    empty = [dim for dim in ("condition", "seed", "iteration") if ds.sizes[dim] == 0]
    if empty:
        raise ResultsFileError(f"{path}: holds no {' and no '.join(empty)}")
    return ds


def study_of(ds: xr.Dataset) -> dict:
    """The study dict a Dataset was produced from (to rerun it)."""
    return json.loads(ds.attrs["study"])
