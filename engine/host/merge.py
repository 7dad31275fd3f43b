"""`coevo merge A.nc B.nc ... --out ALL.nc`: a study run in parts (seed ranges, machines, days) as one file.

Files merge when they are
- the same study: the same name and conditions, in the same order, with every knob equal (the files'
  knob coordinates: the values each run used, however the study spelled them), hence the same sizes;
  the same record layout (every coordinate but `seed` equal) and the same variables;
- made by the same engine: the recorded `ENGINE_FACTS` equal (engine commit and version, jax and
  jaxlib, the instruction-set pin, XLA's flags);
- of disjoint seeds.
The machine (devices, CPU), the layout (device count, chunk and sub-batch sizes) and the timings may
differ: attrs["parts"] keeps each part's (JSON: per part its path, its seeds and every attr its file
carried besides the study), and the top level the timings' totals.

Every variable of a results file is per run (records, pretraining outcome, ceiling, divergence), along
`seed`, or per condition (the models' parameter counts, equal in every part and kept once), so the
merged Dataset is the parts concatenated along `seed` and sorted by seed: what one run
of all their seeds gives, bit for bit where each run had the same sub-batch size in its part as it
would have there (docs/ARCHITECTURE.md, "Invariants").
"""

import json
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import xarray as xr

from engine.host.inputs import parse_seeds, seed_ranges
from engine.host.provenance import ENGINE_FACTS, commit_is_uncertain
from engine.host.results import ResultsFileError, load, study_of

STUDY_ATTRS = ("study_name", "study", "warnings")
TIMINGS = ("compile_seconds", "run_seconds")
SEEDS_SHOWN = 10  # overlapping seeds named in a refusal


class MergeError(ValueError):
    """Files that are not parts of one study made by one engine."""


class Merged(NamedTuple):
    dataset: xr.Dataset
    warnings: list[str]  # what merging could not check (an engine with uncommitted changes)


def _plain(value):
    """An attr as JSON holds it (netCDF gives numpy scalars)."""
    return value.item() if isinstance(value, np.generic) else value


def parts_of(ds: xr.Dataset, path=None) -> list[dict]:
    """What made each part of a results file: its seeds (as ranges) and every attr it carried besides
    the study (engine, machine, layout, timings), with its path where known. A merged file lists its
    parts in attrs["parts"]; any other file is one part."""
    if "parts" in ds.attrs:
        return json.loads(ds.attrs["parts"])
    own = {key: _plain(value) for key, value in ds.attrs.items() if key not in STUDY_ATTRS}
    return [{**({"path": str(path)} if path is not None else {}), "seeds": seed_ranges(ds.seed.values), **own}]


def _check_is_a_run(path: Path, ds: xr.Dataset):
    """A results file written by `coevo run` (or merged): it records its study and engine, and every
    variable is per run or per condition (the models' parameter counts)."""
    missing = [key for key in ("study_name", "study", *ENGINE_FACTS) if key not in ds.attrs]
    if missing:
        raise ResultsFileError(
            f"{path}: does not record {', '.join(missing)}: cannot tell which study or engine made it"
        )
    seedless = [name for name in ds.data_vars if "seed" not in ds[name].dims and ds[name].dims != ("condition",)]
    if seedless:
        raise ResultsFileError(
            f"{path}: variables without a seed dimension ({', '.join(seedless)}): not a results file"
        )


def _check_same_study(first: Path, a: xr.Dataset, path: Path, b: xr.Dataset):
    """Same name, conditions, knobs (the knob coordinates), record layout (every other coordinate) and variables."""
    if a.attrs["study_name"] != b.attrs["study_name"]:
        raise MergeError(
            f"{path}: study {b.attrs['study_name']!r}, {first} study {a.attrs['study_name']!r}: not one study"
        )
    conditions = [[str(c) for c in ds.condition.values] for ds in (a, b)]
    if conditions[0] != conditions[1]:
        raise MergeError(f"{path}: conditions {conditions[1]}, {first} {conditions[0]}: not one study")
    for name in {**b.coords, **a.coords}:
        if "seed" in (a.coords[name] if name in a.coords else b.coords[name]).dims:
            continue
        if name not in a.coords or name not in b.coords:
            has, lacks = (path, first) if name in b.coords else (first, path)
            raise MergeError(f"{path}: coordinate {name!r} is in {has}, not in {lacks}: not one study")
        if a[name].variable.equals(b[name].variable):
            continue
        if a[name].dims == ("condition",):
            condition = next(str(c) for c, x, y in zip(a.condition.values, a[name].values, b[name].values) if x != y)
            raise MergeError(
                f"{path}: condition {condition!r} has {name} = {b[name].sel(condition=condition).item()!r}, "
                f"in {first} {a[name].sel(condition=condition).item()!r}: not one study"
            )
        raise MergeError(f"{path}: its {name!r} coordinate differs from {first}'s: not one study")
    if set(a.data_vars) != set(b.data_vars):
        only = sorted(set(b.data_vars) ^ set(a.data_vars))
        raise MergeError(f"{path}: variables {', '.join(only)} are in only one of it and {first}: not one study")
    per_condition = [name for name in a.data_vars if "seed" not in a[name].dims]
    differing = [name for name in per_condition if not a[name].equals(b[name])]
    if differing:
        raise MergeError(f"{path}: {', '.join(differing)} differ from {first}'s: not one study")


def _check_same_engine(first: Path, a: xr.Dataset, path: Path, b: xr.Dataset):
    differ = [fact for fact in ENGINE_FACTS if str(a.attrs[fact]) != str(b.attrs[fact])]
    if differ:
        facts = "; ".join(f"{fact} {b.attrs[fact]!r}, in {first} {a.attrs[fact]!r}" for fact in differ)
        raise MergeError(f"{path}: made by another engine than {first}: {facts}")


def _check_disjoint(paths: list[Path], datasets: list[xr.Dataset]):
    owner: dict[int, Path] = {}
    for path, ds in zip(paths, datasets, strict=True):
        seeds = [int(seed) for seed in ds.seed.values]
        shared = sorted(seed for seed in seeds if seed in owner)
        if shared:
            more = f", … {len(shared) - SEEDS_SHOWN} more" if len(shared) > SEEDS_SHOWN else ""
            named = ", ".join(map(str, shared[:SEEDS_SHOWN])) + more
            raise MergeError(f"{path}: seeds {named} are also in {owner[shared[0]]}: parts must not overlap")
        owner.update(dict.fromkeys(seeds, path))


def merge(paths) -> Merged:
    """The results files at `paths`, parts of one study, as one Dataset (see the module's docstring).

    Anything that is not such a part raises, with one line naming the file and the problem:
    ResultsFileError (not a results file of a run), MergeError (another study or engine, overlapping seeds).
    """
    paths = [Path(path) for path in paths]
    if len(paths) < 2:
        raise MergeError("merge needs at least two results files")
    datasets = [load(path) for path in paths]
    for i, path in enumerate(paths):
        twice = next((other for other in paths[:i] if os.path.samefile(path, other)), None)
        if twice is not None:
            raise MergeError(f"{path}: given twice (also as {twice})")
        _check_is_a_run(path, datasets[i])
    for path, ds in zip(paths[1:], datasets[1:]):
        _check_same_study(paths[0], datasets[0], path, ds)
        _check_same_engine(paths[0], datasets[0], path, ds)
    _check_disjoint(paths, datasets)

    merged = xr.concat(datasets, dim="seed", data_vars="minimal", coords="minimal", join="exact", combine_attrs="drop")
    merged = merged.isel(seed=np.argsort(merged.seed.values, kind="stable")).drop_encoding()
    parts = sorted(
        (part for path, ds in zip(paths, datasets, strict=True) for part in parts_of(ds, path)),
        key=lambda part: min(parse_seeds(part["seeds"])),
    )
    first = datasets[0].attrs
    study = {**study_of(datasets[0]), "seeds": [int(seed) for seed in merged.seed.values]}
    merged.attrs = {
        "study_name": first["study_name"],
        "study": json.dumps(study, sort_keys=True),
        "warnings": first.get("warnings", ""),
        **{fact: first[fact] for fact in ENGINE_FACTS},
        **{timing: float(sum(part[timing] for part in parts)) for timing in TIMINGS if all(timing in p for p in parts)},
        "parts": json.dumps(parts),
    }
    commit = str(first["git_commit"])
    uncertain = f"the parts record engine {commit!r}: whether they ran the same code is not recorded"
    return Merged(merged, [uncertain] if commit_is_uncertain(commit) else [])
