"""What a run has finished, kept next to its output (`<out>.checkpoint`) so that a stopped run
(Ctrl-C, SIGTERM, a lost machine) loses little: `coevo run ... --resume` goes on from it.

The runner saves the checkpoint after every chunk of seeds but the last, and after an outer
iteration once `every` seconds have passed since the last save; `coevo run` removes it once the
results file is written. It is an .npz archive written atomically (engine.host.output), so a stop while it is
written leaves the one before. It holds the finished chunks' records and pretraining outcomes,
the saved distributions so far, and, of the chunk in progress, its records and every run's state
after its last finished outer iteration. A resumed run repeats that chunk's judge pretraining and
start (deterministic: the same bits, and the inputs `advance` takes besides the states), puts the
saved states in place of the fresh ones and goes on, so its file equals an uninterrupted run's
bit for bit.

A checkpoint resumes only the run that wrote it: the same study (seeds included), machine and
engine (every fact `provenance` records) and layout (devices, chunks, sub-batch size), on which
a run's bits and its file's record of what made it depend.
"""

import json
import os
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import jax
import numpy as np

from engine.host.output import write_atomically

CHECKPOINT_SUFFIX = ".checkpoint"
CHECKPOINT_SECONDS = 300.0  # default least time between two saves within a chunk


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that another run wrote."""


@dataclass
class Progress:
    """What a run has finished, as host arrays."""

    study: str  # ResolvedStudy.to_json(), seeds included
    made_by: dict  # `provenance` at the run's start
    layout: dict  # n_devices, max_runs_per_chunk, sub_batch
    n_chunks: int
    seconds: dict  # compile_seconds and run_seconds spent so far, every session together
    chunks: int = 0  # finished chunks
    finished: dict = field(default_factory=dict)  # name -> (condition, their seeds[, ...]): records, pretraining
    distributions: dict = field(default_factory=dict)  # name -> (condition, seeds begun[, record], N)
    iterations: int = 0  # finished outer iterations of the chunk in progress
    history: list = field(default_factory=list)  # its records so far, per group: name -> (positions, records)
    states: list = field(default_factory=list)  # every run's state after them: the leaves of the states' pytree

    def described(self) -> str:
        """What it holds, in words."""
        text = f"{self.chunks} of {self.n_chunks} chunks of seeds"
        if self.iterations:
            text += f", and chunk {self.chunks + 1} up to outer iteration {self.iterations}"
        return text

    def history_records(self) -> list[list[dict]]:
        """The chunk in progress's records as the runner keeps them: per record, per group, name -> (positions,)."""
        n_records = next(iter(self.history[0].values())).shape[1]
        return [
            [{name: values[:, r] for name, values in group.items()} for group in self.history] for r in range(n_records)
        ]

    def states_like(self, fresh):
        """The saved states in the structure, on the devices and with the shardings of `fresh`: the
        chunk's states as its `start` returns them."""
        leaves, tree = jax.tree.flatten(fresh)
        shapes = [(leaf.shape, leaf.dtype) for leaf in leaves]
        if shapes != [(saved.shape, saved.dtype) for saved in self.states]:
            raise CheckpointError(
                "the checkpoint's run states do not fit this run's program (the engine's code changed uncommitted?)"
            )
        return jax.tree.unflatten(
            tree, [jax.device_put(saved, leaf.sharding) for saved, leaf in zip(self.states, leaves, strict=True)]
        )


META = "meta"
SECTIONS = ("finished", "distributions")


def _archive(progress: Progress) -> dict:
    """The .npz entries of a Progress: its scalars as JSON, its arrays under dotted names."""
    meta = {key: getattr(progress, key) for key in ("study", "made_by", "layout", "n_chunks", "seconds")}
    meta |= {"chunks": progress.chunks, "iterations": progress.iterations, "groups": len(progress.history)}
    arrays = {META: np.array(json.dumps(meta))}
    for section in SECTIONS:
        arrays |= {f"{section}.{name}": values for name, values in getattr(progress, section).items()}
    for g, group in enumerate(progress.history):
        arrays |= {f"history.{g}.{name}": values for name, values in group.items()}
    arrays |= {f"state.{i}": leaf for i, leaf in enumerate(progress.states)}
    return arrays


def _unarchive(arrays: dict) -> Progress:
    meta = json.loads(str(arrays[META]))
    groups, n_states = meta.pop("groups"), sum(name.startswith("state.") for name in arrays)

    def section(prefix: str) -> dict:
        return {name.removeprefix(prefix): values for name, values in arrays.items() if name.startswith(prefix)}

    return Progress(
        **meta,
        finished=section("finished."),
        distributions=section("distributions."),
        history=[section(f"history.{g}.") for g in range(groups)],
        states=[arrays[f"state.{i}"] for i in range(n_states)],
    )


class Checkpoint:
    """The checkpoint of the run that writes `out`, and when to save it."""

    def __init__(self, out, every: float = CHECKPOINT_SECONDS):
        self.path = Path(f"{out}{CHECKPOINT_SUFFIX}")
        self.every = every
        self.kept = ""  # what the checkpoint on disk holds, in words ("": none yet)
        self._last_save = time.monotonic()
        self._loaded: Progress | None = None

    def exists(self) -> bool:
        return os.path.lexists(self.path)

    def load(self) -> Progress:
        """The run's progress as saved (read once)."""
        if self._loaded is None:
            try:
                with np.load(self.path, allow_pickle=False) as archive:
                    self._loaded = _unarchive(dict(archive))
            except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as error:
                raise CheckpointError(
                    f"{self.path}: not a readable checkpoint ({type(error).__name__}: {error}); delete it to start over"
                ) from None
            self.kept = self._loaded.described()
        return self._loaded

    def chunk_size(self) -> int | None:
        """The chunk size (max_runs_per_chunk) of the run that wrote the checkpoint, read without its
        arrays; None where there is none or it cannot be read (`load` says why)."""
        try:
            with np.load(self.path, allow_pickle=False) as archive:
                return int(json.loads(str(archive[META]))["layout"]["max_runs_per_chunk"])
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile):
            return None

    def due(self) -> bool:
        """Whether `every` seconds have passed since the last save (or since the run began)."""
        return time.monotonic() - self._last_save >= self.every

    def save(self, progress: Progress):
        def write(temporary):
            with open(temporary, "wb") as handle:
                np.savez(handle, **_archive(progress))

        write_atomically(self.path, write, force=True)
        self._last_save = time.monotonic()
        self.kept = progress.described()

    def remove(self):
        self.path.unlink(missing_ok=True)


def check_resumable(path: Path, saved: Progress, study: str, made_by: dict, layout: dict):
    """Refuse (CheckpointError, one line) a checkpoint that another run wrote: another study or seeds,
    another machine or engine, another layout."""
    theirs, mine = json.loads(saved.study), json.loads(study)
    differ = sorted(key for key in theirs.keys() | mine.keys() if theirs.get(key) != mine.get(key))
    if differ:
        raise CheckpointError(
            f"{path}: the checkpoint of a run of another study (its {', '.join(differ)} differ); "
            "delete it, or run to another --out"
        )
    advice = {
        "machine or engine": "resume it where it ran",
        "layout": "resume it with the devices and --max-runs-per-chunk it ran with",
    }
    for recorded, here, what in ((saved.made_by, made_by, "machine or engine"), (saved.layout, layout, "layout")):
        differ = sorted(key for key in recorded.keys() | here.keys() if recorded.get(key) != here.get(key))
        if differ:
            facts = "; ".join(f"{key} {recorded.get(key)!r} there, {here.get(key)!r} here" for key in differ)
            raise CheckpointError(
                f"{path}: written by a run on another {what} ({facts}): {advice[what]}, or delete it to start over"
            )
