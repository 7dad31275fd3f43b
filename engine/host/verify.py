"""`coevo verify FILE`: rerun part of a results file and compare it bit for bit.

The part is chosen to be quick and still exact: every condition, the seeds of the file's
first chunk (in a merged file, of each part's first chunk: each part may come from another
machine), the first `iterations` outer iterations (a run's first iterations do not depend on
how many follow), on as many devices and with as many runs per sub-batch as the file (or the
part) records (a run's bits depend on its sub-batch's size). A difference comes with the
recorded facts that differ between the file's machine and this one: its likely causes.
"""

from typing import NamedTuple

import numpy as np
import xarray as xr

from engine.host.chunks import max_runs_per_chunk, seed_chunks
from engine.host.inputs import parse_seeds
from engine.host.merge import parts_of
from engine.host.plan import make_plan
from engine.host.results import study_of
from engine.host.study import resolve

ITERATIONS = 2
# The recorded facts that decide a run's bits, in the order a cause is most likely.
CAUSES = (
    ("git_commit", "another engine commit"),
    ("jaxlib_version", "another jaxlib"),
    ("jax_version", "another jax"),
    ("isa_pin", "another instruction-set pin"),
    ("xla_flags", "other XLA flags"),
    ("devices", "another device kind or count"),
    ("cpu_features", "a CPU with other instruction sets"),
    ("cpu_model", "another CPU model"),
)


class Layout(NamedTuple):
    """How a part of the file (the whole file, unless it was merged) ran its first chunk: what a
    rerun must repeat, and what the part records about what made it."""

    seeds: list[int]
    n_devices: int
    sub_batch: int
    recorded: dict  # the part's attrs (engine.host.merge.parts_of)


def file_layouts(ds: xr.Dataset) -> list[Layout]:
    """Per part of the file: its first chunk's seeds, its device count and sub-batch size, recorded
    in files that carry them, else derived as the engine derives them."""
    return [_part_layout(ds, part) for part in parts_of(ds)]


class PartRun(NamedTuple):
    """How a part of the file (the whole file, unless it was merged) ran all its seeds."""

    chunks: list[list[int]]  # its seeds' chunks, in the order it ran them, the last padded with placeholder seeds
    n_devices: int
    sub_batch: int


def part_run(ds: xr.Dataset, part: dict) -> PartRun:
    """The part's chunks, device count and sub-batch size, recorded in files that carry them, else
    derived as the engine derives them."""
    seeds = parse_seeds(part["seeds"])  # in the order the part ran them
    resolved = resolve(study_of(ds), seeds=seeds)
    devices = part.get("devices", "cpu:cpu x1")
    n_devices = int(part.get("n_devices", devices.rpartition(" x")[2] or 1))
    on_cpu = devices.startswith("cpu")
    given = part.get("max_runs_per_chunk")
    max_runs = max_runs_per_chunk(on_cpu, int(given) if given is not None else None)
    chunks = seed_chunks(seeds, len(resolved.conditions), max_runs)
    sub_batch = part.get("sub_batch")
    if sub_batch is None:
        sub_batch = make_plan(resolved, chunks[0], n_devices).sub_batch
    return PartRun(chunks, n_devices, int(sub_batch))


def _part_layout(ds: xr.Dataset, part: dict) -> Layout:
    ran = part_run(ds, part)
    seeds = set(parse_seeds(part["seeds"]))
    first = [s for s in ran.chunks[0] if s in seeds]
    return Layout(first, ran.n_devices, ran.sub_batch, {**ds.attrs, **part})


def rerun(ds: xr.Dataset, layout: Layout, devices, iterations: int = ITERATIONS) -> xr.Dataset:
    """The file's study at a part's first chunk's seeds, `iterations` outer iterations, its sub-batch size."""
    from engine.host.runner import run_study

    study = study_of(ds)
    length = resolve(study).sizes.n_iterations
    study["base"] = {**study.get("base", {}), "n_iterations": min(iterations, length)}
    return run_study(study, seeds=layout.seeds, devices=devices, sub_batch=layout.sub_batch)


def compared_variables(ds: xr.Dataset) -> list[str]:
    """What a shortened rerun reproduces: every record over time, and pretraining's outcome
    (not the run summaries over all iterations, nor distributions saved at the final record only)."""
    time = "step" if "step" in ds.dims else "iteration"
    return [name for name in ds.data_vars if time in ds[name].dims or name.startswith("pretrain_")]


class Verdict(NamedTuple):
    identical: bool
    compared: int  # values compared
    differing_runs: int
    largest: float  # largest |difference| among float values (0 when identical)
    first: str  # where the first difference is (variable, condition, seed, time), or ""
    not_in_file: tuple[str, ...]  # records this engine makes that the file lacks (not compared)


def compare(original: xr.Dataset, rerun: xr.Dataset) -> Verdict:
    """The rerun's `compared_variables` at its runs and records, bit for bit (NaN equal to NaN).

    A file written by an engine that made fewer records is compared on the records it has;
    the verdict names the others."""
    time = "step" if "step" in rerun.dims else "iteration"
    index = {"condition": rerun.condition.values, "seed": rerun.seed.values, time: rerun[time].values}
    compared = differing = 0
    largest, first = 0.0, ""
    runs = np.zeros((rerun.sizes["condition"], rerun.sizes["seed"]), bool)
    names = compared_variables(rerun)
    not_in_file = tuple(name for name in names if name not in original.data_vars)
    for name in names:
        if name in not_in_file:
            continue
        mine = rerun[name]
        theirs = original[name].sel({dim: index[dim] for dim in mine.dims if dim in index})
        a, b = np.asarray(theirs.values), np.asarray(mine.values)
        floats = a.dtype.kind == "f"
        same = (a == b) | (np.isnan(a) & np.isnan(b)) if floats else a == b
        compared += same.size
        if same.all():
            continue
        differing += int((~same).sum())
        if floats:
            largest = max(largest, float(np.nanmax(np.abs(a - b)[~same])))
        runs |= (~same).reshape(same.shape[:2] + (-1,)).any(axis=-1)
        if not first:
            at = tuple(int(i[0]) for i in np.nonzero(~same))
            coordinates = {dim: mine[dim].values[i] for dim, i in zip(mine.dims, at, strict=False)}
            first = f"{name} at " + ", ".join(f"{dim} {value}" for dim, value in coordinates.items())
    return Verdict(differing == 0, compared, int(runs.sum()), largest, first, not_in_file)


def likely_causes(recorded: dict, here: dict) -> list[str]:
    """The recorded facts that differ between the file's machine and this one."""
    causes = []
    for key, cause in CAUSES:
        theirs, mine = recorded.get(key), here.get(key)
        if theirs is None:
            causes.append(f"the file does not record {key} (made by an engine that did not)")
        elif str(theirs) != str(mine):
            causes.append(f"{cause}: {key} {theirs!r} in the file, {mine!r} here")
    return causes
