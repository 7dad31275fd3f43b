"""One compiled program for a whole study: pretraining, every shape group, every run.

Host side (`make_layout`): runs are placed into shape groups, and the judges they need
are listed once per (seed, ensemble member, pretraining settings). Device side
(`make_program`): one jitted function pretrains that list (vmapped, sharded), gathers
each run's judges, and advances each group's runs (vmapped, sharded over the "runs" mesh
axis: every CPU core or GPU is one device). Inputs are plain arrays, so chunks of a large
study with equal shapes reuse the same compiled program.
"""

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

import jax
import numpy as np
from jax.sharding import PartitionSpec

from engine.coevolution import RunInputs, make_batch_run, pretrain_judge
from engine.devices import fetch
from engine.knobs import PER_RUN, PRETRAIN_KNOBS, Condition, Shape, Spec
from engine.study import ResolvedStudy

RUN_AXIS = "runs"


@dataclass(frozen=True)
class Group:
    """Runs sharing one Shape. Arrays are indexed by run within the group."""

    shape: Shape
    condition_index: np.ndarray  # (R,) into study.condition_names
    seed_index: np.ndarray  # (R,) into the chunk's seeds
    pretrain_index: np.ndarray  # (R, n_judges) into the pretraining table
    inputs: dict  # per-run arrays: "seed" and every PER_RUN knob


@dataclass(frozen=True)
class Layout:
    """Where each run of (a chunk of) a study goes."""

    seeds: tuple[int, ...]
    pretrain_inputs: dict  # (U,) arrays: seed, member and every PRETRAIN_KNOBS value
    groups: tuple[Group, ...]


def make_layout(study: ResolvedStudy, seeds) -> Layout:
    """Group runs by shape; list each judge to pretrain once."""
    pretrain_rows: dict[tuple, int] = {}
    by_shape: dict[Shape, list] = {}
    for c, name in enumerate(study.condition_names):
        knobs = study.conditions[name]
        for s, seed in enumerate(seeds):
            settings = tuple(knobs[k] for k in PRETRAIN_KNOBS)
            members = [
                pretrain_rows.setdefault((seed, m, settings), len(pretrain_rows)) for m in range(knobs["n_judges"])
            ]
            by_shape.setdefault(study.shape(name), []).append((c, s, seed, members, knobs))

    pretrain_inputs = {
        "seed": np.array([row[0] for row in pretrain_rows], np.int32),
        "member": np.array([row[1] for row in pretrain_rows], np.int32),
    }
    for i, knob in enumerate(PRETRAIN_KNOBS):
        pretrain_inputs[knob] = _as_array(knob, [row[2][i] for row in pretrain_rows])

    groups = []
    for shape, runs in by_shape.items():
        inputs = {"seed": np.array([run[2] for run in runs], np.int32)}
        inputs.update({knob: _as_array(knob, [run[4][knob] for run in runs]) for knob in PER_RUN})
        groups.append(
            Group(
                shape=shape,
                condition_index=np.array([run[0] for run in runs]),
                seed_index=np.array([run[1] for run in runs]),
                pretrain_index=np.array([run[3] for run in runs], np.int32),
                inputs=inputs,
            )
        )
    return Layout(tuple(seeds), pretrain_inputs, tuple(groups))


def _as_array(knob: str, values) -> np.ndarray:
    dtype = {float: np.float32, int: np.int32, bool: np.bool_}[PER_RUN[knob].kind]
    return np.asarray(values, dtype)


# Every vmapped batch has at least MIN_BATCH runs: XLA compiles a batch of one into other
# kernels than a larger batch, which would change the last bits of a run's results with
# the size of the study it sits in.
MIN_BATCH = 2
MAX_SUB_BATCH = 32
# Judges pretrain in sub-batches of this size: a vmapped while_loop runs until its slowest
# member reaches the target, so small sub-batches stop early (and use little memory).
PRETRAIN_SUB_BATCH = 8


def pad_rows(array: np.ndarray, multiple: int) -> np.ndarray:
    """Pad the leading axis to a multiple of `multiple` by repeating the last row (dropped afterwards)."""
    target = -(-len(array) // multiple) * multiple
    return array[np.minimum(np.arange(target), len(array) - 1)]


def sub_batch_size(layout: Layout, n_devices: int) -> int:
    """Runs per sub-batch: one condition's seeds where they fit (groups list runs condition by
    condition, so a sub-batch then shares its cadences and skips what none of it needs), else
    a device's share split into near-equal sub-batches of at most MAX_SUB_BATCH (little padding)."""
    per_device = -(-max(len(g.condition_index) for g in layout.groups) // n_devices)
    target = min(len(layout.seeds), per_device)
    n_sub_batches = -(-target // MAX_SUB_BATCH)
    return max(MIN_BATCH, -(-target // n_sub_batches))


def run_order(n_runs: int, n_devices: int, sub_batch: int) -> np.ndarray:
    """Run index at each position of the program's run axis (padding repeats the last run).

    Consecutive runs form sub-batches; sub-batches are dealt round-robin to the devices,
    so each device gets a similar mix of cheap and expensive conditions.
    """
    n_sub = -(-n_runs // sub_batch)
    n_sub += -n_sub % n_devices
    sub_batches = np.minimum(np.arange(n_sub * sub_batch), n_runs - 1).reshape(n_sub, sub_batch)
    return np.concatenate([sub_batches[device::n_devices] for device in range(n_devices)]).reshape(-1)


def program_inputs(layout: Layout, n_devices: int):
    """The arrays the compiled program takes: runs placed in device-dealt sub-batches."""
    pretrain = {k: pad_rows(v, PRETRAIN_SUB_BATCH * n_devices) for k, v in layout.pretrain_inputs.items()}
    sub_batch = sub_batch_size(layout, n_devices)
    groups = []
    for group in layout.groups:
        order = run_order(len(group.condition_index), n_devices, sub_batch)
        groups.append(({k: v[order] for k, v in group.inputs.items()}, group.pretrain_index[order]))
    return pretrain, groups


def take_rows(tree, index):
    """Rows `index` of every leaf: each run's judges out of the pretraining table."""
    return jax.tree.map(lambda leaf: leaf[index], tree)


class StudyProgram(NamedTuple):
    """The study's two jitted functions; every shape group runs inside each call.

    start(pretrain_inputs, group_inputs) -> (pretraining summary, runs, states, metrics)
    advance(states, runs, outer) -> (states, metrics)   (one outer iteration of every run)
    The host calls start once and advance once per outer iteration, so progress can be
    shown between calls and both executables can live in JAX's persistent cache (which
    refuses programs that call back to the host).
    """

    start: Callable
    advance: Callable


def in_sub_batches(batch_fn, sub_batch: int, n_batched: int = 1):
    """Apply a batch function to consecutive sub-batches of the run axis, one after another.

    A `lax.cond(any(due))` inside then sees one sub-batch (usually one condition), so a
    sub-batch whose runs need no judge or meta step this inner step skips it.
    """

    def split(tree):
        return jax.tree.map(lambda leaf: leaf.reshape((-1, sub_batch) + leaf.shape[1:]), tree)

    def merge(tree):
        return jax.tree.map(lambda leaf: leaf.reshape((-1,) + leaf.shape[2:]), tree)

    def mapped(*args):
        batched, shared = args[:n_batched], args[n_batched:]
        return merge(jax.lax.map(lambda xs: batch_fn(*xs, *shared), split(batched)))

    return mapped


def make_program(shapes: tuple[Shape, ...], spec: Spec, devices, sub_batch: int) -> StudyProgram:
    """Pretraining and each shape group vmapped over sub-batches of runs and sharded over `devices`."""
    mesh = jax.sharding.Mesh(np.asarray(devices), (RUN_AXIS,))
    runs_axis, replicated = PartitionSpec(RUN_AXIS), PartitionSpec()

    def sharded(fn, in_specs=runs_axis):
        return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=runs_axis, check_vma=False)

    def pretrain_batch(inputs):
        return jax.vmap(lambda seed, member, lr, target, alpha: pretrain_judge(seed, member, lr, target, alpha, spec))(
            inputs["seed"],
            inputs["member"],
            inputs["lr_judge"],
            inputs["judge_init_alignment"],
            inputs["transition_alpha"],
        )

    pretrain_all = sharded(in_sub_batches(pretrain_batch, PRETRAIN_SUB_BATCH))

    batch_runs = [make_batch_run(shape, spec) for shape in shapes]
    group_starts = [sharded(in_sub_batches(batch.start, sub_batch)) for batch in batch_runs]
    group_advances = [
        sharded(in_sub_batches(batch.advance, sub_batch, n_batched=2), (runs_axis, runs_axis, replicated))
        for batch in batch_runs
    ]

    def start(pretrain_inputs, group_inputs):
        pretrained = pretrain_all(pretrain_inputs)
        all_runs, all_states, all_metrics = [], [], []
        for group_start, (inputs, pretrain_index) in zip(group_starts, group_inputs):
            runs = RunInputs(
                condition=Condition(**{knob: inputs[knob] for knob in PER_RUN}),
                seed=inputs["seed"],
                pretrained=take_rows(pretrained.judge, pretrain_index),
            )
            states, metrics = group_start(runs)
            all_runs.append(runs)
            all_states.append(states)
            all_metrics.append(metrics)
        pretrain_summary = {"steps": pretrained.steps, "alignment": pretrained.alignment}
        return pretrain_summary, all_runs, all_states, all_metrics

    def advance(all_states, all_runs, outer):
        results = [
            group_advance(states, runs, outer)
            for group_advance, states, runs in zip(group_advances, all_states, all_runs)
        ]
        return [states for states, _ in results], [metrics for _, metrics in results]

    # Explicit shardings let `advance` be compiled from abstract shapes, alongside `start`.
    by_run = jax.sharding.NamedSharding(mesh, runs_axis)
    return StudyProgram(
        jax.jit(start, out_shardings=by_run),
        jax.jit(
            advance,
            in_shardings=(by_run, by_run, jax.sharding.NamedSharding(mesh, replicated)),
            out_shardings=by_run,
            donate_argnums=0,
        ),
    )


def compile_program(program: StudyProgram, inputs):
    """Lower both functions, then compile them concurrently (XLA compiles outside the GIL)."""
    lowered_start = program.start.lower(*inputs)
    _, runs, states, _ = lowered_start.out_info
    lowered_advance = program.advance.lower(states, runs, jax.ShapeDtypeStruct((), np.int32))
    with ThreadPoolExecutor(max_workers=2) as pool:
        start, advance = pool.map(lambda lowered: lowered.compile(), (lowered_start, lowered_advance))
    return StudyProgram(start, advance)


def gather_results(layout: Layout, n_conditions: int, n_devices: int, pretrain_out, metrics_out) -> dict:
    """Scatter the program's outputs back to (condition, seed[, iteration]) numpy arrays."""
    n_seeds = len(layout.seeds)
    pretrain_out = fetch(pretrain_out)
    sub_batch = sub_batch_size(layout, n_devices)
    arrays = {}
    for group, metrics in zip(layout.groups, metrics_out):
        order = run_order(len(group.condition_index), n_devices, sub_batch)
        position_of_run = np.unique(order, return_index=True)[1]
        where = (group.condition_index, group.seed_index)
        for name, values in metrics.items():
            values = np.asarray(values)[position_of_run]
            if name not in arrays:
                arrays[name] = np.empty((n_conditions, n_seeds) + values.shape[1:], values.dtype)
            arrays[name][where] = values
        steps = np.asarray(pretrain_out["steps"])[group.pretrain_index]
        alignment = np.asarray(pretrain_out["alignment"])[group.pretrain_index]
        for name, values in (("pretrain_steps", steps.max(axis=1)), ("pretrain_alignment", alignment.min(axis=1))):
            if name not in arrays:
                arrays[name] = np.empty((n_conditions, n_seeds), values.dtype)
            arrays[name][where] = values
    return arrays
