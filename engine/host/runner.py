"""Run a study: resolve → plan each chunk → compile once → pretrain + start + advance per chunk → Dataset."""

import os
import time
from pathlib import Path

import jax
import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from engine.core.world import World
from engine.host.checkpoint import Checkpoint, Progress, check_resumable
from engine.host.chunks import max_runs_per_chunk as chunk_size_rule
from engine.host.chunks import seed_chunks
from engine.host.devices import fetch
from engine.host.plan import make_plan
from engine.host.program import compile_program, make_program
from engine.host.provenance import provenance
from engine.host.results import make_dataset
from engine.host.study import ResolvedStudy, resolve
from engine.knobs import records_per_iteration, world_of
from engine.loop.diagnostics import DISTRIBUTIONS

# Runs per chunk by default: bounds host memory on CPU; accelerators take much larger chunks.


def enable_compilation_cache(directory=None):
    """Keep compiled programs on disk so a second run of the same shapes skips compilation.

    COEVO_CACHE_DIR overrides the folder; COEVO_CACHE_DIR=off turns the cache off.
    """
    directory = (
        directory
        or os.environ.get("COEVO_CACHE_DIR")
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "coevo" / "jax"
    )
    if str(directory) == "off":
        return
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def drop_distributions(record: dict) -> dict:
    return {name: values for name, values in record.items() if name not in DISTRIBUTIONS}


# Records are fetched from the device once per outer iteration, or once MAX_RECORDS_PER_FETCH are
# waiting (each is a score of small device arrays), or, where they carry distributions (π and J of
# all N sequences, 32 KiB per run at 8⁴), once those reach FETCH_DISTRIBUTIONS_BYTES.
MAX_RECORDS_PER_FETCH = 100
FETCH_DISTRIBUTIONS_BYTES = 64 * 2**20


def distribution_bytes(world: World) -> int:
    """The saved distributions of one run and record: π and J of all N sequences, float32."""
    return len(DISTRIBUTIONS) * world.n_sequences * 4


def records_per_fetch(n_records: int, n_runs: int, distribution_bytes: int) -> int:
    """Records measured before one fetch: an outer iteration's, fewer where they would pile up.
    distribution_bytes: the distributions one run's record carries (0: none saved)."""
    most = MAX_RECORDS_PER_FETCH
    if distribution_bytes:
        most = min(most, FETCH_DISTRIBUTIONS_BYTES // (n_runs * distribution_bytes))
    return max(1, min(n_records, most))


class DistributionStore:
    """The saved distributions of the whole study, kept as they arrive: each record's (runs, N)
    arrays are put at their (condition, seed, record) place at once, and a record that is not saved
    (all but the last with `save_distributions` `final`) is dropped at once. So the host holds the
    saved distributions once, never a chunk's every record, whatever is saved."""

    def __init__(self, resolved: ResolvedStudy, total_records: int):
        self.final = resolved.sizes.save_distributions == "final"
        self.total_records = total_records
        self.shape = (
            len(resolved.conditions),
            len(resolved.seeds),
            1 if self.final else total_records,
            world_of(resolved.sizes).n_sequences,
        )
        self.arrays: dict = {}

    def keep(self, plan, seed_offset: int, record: int, groups: list[dict]) -> list[dict]:
        """Store record number `record` of a chunk whose first seed is seed `seed_offset` of the study;
        returns the groups' records without their distributions."""
        if record == self.total_records - 1 or not self.final:
            scattered = plan.scatter([{name: group[name] for name in DISTRIBUTIONS} for group in groups])
            n_seeds = min(len(plan.seeds), self.shape[1] - seed_offset)  # the last chunk's padding is dropped
            for name, values in scattered.items():
                stored = self.arrays.setdefault(name, np.empty(self.shape, values.dtype))
                stored[:, seed_offset : seed_offset + n_seeds, 0 if self.final else record] = values[:, :n_seeds]
        return [drop_distributions(group) for group in groups]

    def first_seeds(self, n_seeds: int) -> dict:
        """The arrays at the study's first `n_seeds` seeds (what a checkpoint keeps)."""
        return {name: values[:, :n_seeds] for name, values in self.arrays.items()}

    def restore(self, arrays: dict):
        """Put back what `first_seeds` gave."""
        for name, values in arrays.items():
            self.arrays.setdefault(name, np.empty(self.shape, values.dtype))[:, : values.shape[1]] = values


def join_records(records: list[dict]) -> dict:
    """One group's records, in time order, each a dict of (runs[, N]) arrays, stacked along
    axis 1. A variable missing from the earlier records (distributions saved at the final
    record only) keeps just its last record."""
    names = records[-1]
    return {
        name: np.stack([r[name] for r in records], axis=1) if name in records[0] else records[-1][name][:, None]
        for name in names
    }


def trajectories(history: list) -> list[dict]:
    """A chunk's records so far (per record, per group, name -> (positions,)) as per group, name ->
    (positions, records)."""
    return [join_records([records[g] for records in history]) for g in range(len(history[0]))] if history else []


def concatenate_chunks(per_chunk: list[dict], n_seeds: int) -> dict:
    """The scattered arrays of consecutive chunks as one (condition, seed, ...) array each, the first
    `n_seeds` seeds (the last chunk's placeholder seeds dropped)."""
    return {name: np.concatenate([c[name] for c in per_chunk], axis=1)[:, :n_seeds] for name in per_chunk[0]}


def collect(history: list, records: list, store: DistributionStore | None, plan, seed_offset: int) -> None:
    """Fetch device records onto the end of a chunk's `history`, their distributions into `store`."""
    for groups in fetch(records):
        history.append(store.keep(plan, seed_offset, len(history), groups) if store else groups)


def run_study(
    study,
    *,
    seeds=None,
    devices=None,
    max_runs_per_chunk=None,
    progress=False,
    sub_batch=None,
    checkpoint: Checkpoint | None = None,
) -> xr.Dataset:
    """Run every condition × seed of a study dict; returns the results Dataset.

    The study is checked before anything is compiled. Runs are sharded over `devices`
    (default: every device JAX sees) and split into chunks of at most
    `max_runs_per_chunk` runs (bounded memory; results identical to one call). `sub_batch`
    fixes the runs per sub-batch (default: chosen by `engine.host.plan.sub_batch_size`).
    `checkpoint`: where the run saves what it has finished (engine.host.checkpoint); if that
    exists, the run goes on from it (with its chunk size unless `max_runs_per_chunk` is given),
    and refuses it, before compiling, if another run wrote it.
    """
    resolved = study if isinstance(study, ResolvedStudy) else resolve(study, seeds)
    enable_compilation_cache()
    devices = list(devices or jax.devices())
    made_by = provenance(devices)  # the engine commit that runs, not the one checked out when it ends
    saved = checkpoint.load() if checkpoint is not None and checkpoint.exists() else None
    on_cpu = devices[0].platform == "cpu"
    max_runs = chunk_size_rule(on_cpu, max_runs_per_chunk or (saved.layout["max_runs_per_chunk"] if saved else None))
    chunks = seed_chunks(resolved.seeds, len(resolved.conditions), max_runs)
    plans = [make_plan(resolved, chunk, len(devices), sub_batch) for chunk in chunks]
    layout = {"n_devices": len(devices), "max_runs_per_chunk": max_runs, "sub_batch": plans[0].sub_batch}
    if saved:
        check_resumable(checkpoint.path, saved, resolved.to_json(), made_by, layout)
    done = saved or Progress(resolved.to_json(), made_by, layout, len(plans), {"compile_seconds": 0, "run_seconds": 0})

    program = make_program(plans[0].variants, resolved.sizes, devices, plans[0].sub_batch)
    n_runs = plans[0].n_runs
    n_seeds = len(resolved.seeds)
    n_iterations = resolved.sizes.n_iterations
    n_records = records_per_iteration(resolved.sizes)
    saves_distributions = resolved.sizes.save_distributions != "none"
    store = DistributionStore(resolved, n_iterations * n_records + 1) if saves_distributions else None
    if store:
        store.restore(done.distributions)
    per_fetch = records_per_fetch(n_records, n_runs, saves_distributions * distribution_bytes(world_of(resolved.sizes)))
    offsets = np.cumsum([0] + [len(plan.seeds) for plan in plans])  # each chunk's first seed in the study
    compile_start = time.perf_counter()
    compiled = compile_program(program, plans[0].program_inputs())
    compile_seconds = time.perf_counter() - compile_start

    per_chunk = [done.finished] if done.chunks else []
    run_start = time.perf_counter()

    def seconds() -> dict:
        """Compile and run seconds of every session of the run so far."""
        return {
            "compile_seconds": done.seconds["compile_seconds"] + compile_seconds,
            "run_seconds": done.seconds["run_seconds"] + time.perf_counter() - run_start,
        }

    def progress_now(chunks: int, iterations: int = 0, history=(), states=None) -> Progress:
        """What the run has finished: `chunks` chunks, and `iterations` outer iterations of the next
        (its `history` of records and its `states`)."""
        seeds_done, seeds_begun = (min(int(offsets[chunks + i]), n_seeds) for i in (0, bool(iterations)))
        return Progress(
            study=done.study,
            made_by=done.made_by,
            layout=layout,
            n_chunks=len(plans),
            seconds=seconds(),
            chunks=chunks,
            finished=concatenate_chunks(per_chunk, seeds_done) if per_chunk else {},
            distributions=store.first_seeds(seeds_begun) if store else {},
            iterations=iterations,
            history=trajectories(history),
            states=jax.tree.leaves(fetch(states)) if states is not None else [],
        )

    total = len(plans) * n_runs * (n_iterations + 1)
    initial = (done.chunks * (n_iterations + 1) + (done.iterations + 1 if done.iterations else 0)) * n_runs
    with tqdm(
        total=total, initial=initial, unit="run-iter", desc=resolved.name, disable=not progress, smoothing=0
    ) as bar:
        for index in range(done.chunks, len(plans)):
            plan, seed_offset = plans[index], int(offsets[index])
            pretrain_inputs, group_inputs = plan.program_inputs()
            pretrained = compiled.pretrain(pretrain_inputs)
            started = compiled.start(tuple(table.judge for table in pretrained), group_inputs)
            first = done.iterations if index == done.chunks else 0
            if first:  # resumed within this chunk: its records and states so far from the checkpoint
                history, states = done.history_records(), done.states_like(started.states)
            else:
                history, states = [], started.states
                collect(history, [compiled.measure(states, started.runs)], store, plan, seed_offset)
                bar.update(n_runs)
            for outer in range(first, n_iterations):
                records = []  # fetched in batches: the device need not wait for the host per record
                for interval in range(n_records):
                    states = compiled.advance(states, started.runs, np.int32(outer), np.int32(interval))
                    records.append(compiled.measure(states, started.runs))
                    if len(records) == per_fetch or interval == n_records - 1:
                        collect(history, records, store, plan, seed_offset)
                        records = []
                bar.update(n_runs)
                if checkpoint is not None and outer < n_iterations - 1 and checkpoint.due():
                    checkpoint.save(progress_now(index, outer + 1, history, states))
            outcome = plan.pretrain_outcome(fetch([(table.steps, table.alignment) for table in pretrained]))
            per_chunk.append({**plan.scatter(trajectories(history)), **outcome})
            if checkpoint is not None and index < len(plans) - 1:  # after the last, the results file
                checkpoint.save(progress_now(index + 1))
    arrays = {**concatenate_chunks(per_chunk, n_seeds), **(store.arrays if store else {})}
    return make_dataset(resolved, arrays, seconds(), layout, devices, done.made_by)
