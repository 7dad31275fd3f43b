"""One compiled program for a whole study: pretraining, every group of runs, every run.

Given a chunk's `ChunkPlan` (engine.host.plan), four jitted functions: `pretrain` pretrains the
listed judges (vmapped, sharded; one table per judge model); `start` gathers each run's judges and starts each group's
runs (vmapped, sharded over the "runs" mesh axis: every CPU core or GPU is one device);
`advance` advances every run by one record interval (an outer iteration by default);
`measure` takes every run's exact diagnostics. Pretraining is a program of its own
because it depends only on the number of judges and the pretraining sizes: studies that
share those share its compilation through the persistent cache. Inputs are plain arrays,
so chunks of a large study with equal shapes reuse the same compiled programs.
"""

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import numpy as np
from jax.sharding import PartitionSpec

from engine.core.models import judge_model
from engine.core.state import make_run_inputs
from engine.host.plan import PRETRAIN_SUB_BATCH, judge_model_of, judge_models
from engine.knobs import Sizes, Variant, world_of
from engine.loop.batch import make_batch_run
from engine.mechanisms.pretraining import pretrain_judge

RUN_AXIS = "runs"


class Started(NamedTuple):
    """What `start` returns: per group the runs' inputs and their states."""

    runs: list
    states: list


class StudyProgram(NamedTuple):
    """The study's four jitted functions; every group of runs runs inside each call.

    pretrain(pretrain_inputs) -> a PretrainResult per judge model   (stacked judges; steps, alignment per row)
    start(pretrained_judges, group_inputs) -> Started   (pretrained_judges: each result's `judge`)
    advance(states, runs, outer, interval) -> states   (the interval-th record interval of outer iteration `outer`)
    measure(states, runs) -> per group a dict of metrics   (one record of every run)
    The host calls pretrain and start once, then advance and measure once per record, so
    progress can be shown between calls and the executables can live in JAX's persistent
    cache (which refuses programs that call back to the host).
    """

    pretrain: Callable
    start: Callable
    advance: Callable
    measure: Callable


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


def make_program(variants: tuple[Variant, ...], sizes: Sizes, devices, sub_batch: int) -> StudyProgram:
    """Pretraining and each group vmapped over sub-batches of runs and sharded over `devices`."""
    mesh = jax.sharding.Mesh(np.asarray(devices), (RUN_AXIS,))
    runs_axis, replicated = PartitionSpec(RUN_AXIS), PartitionSpec()

    def sharded(fn, in_specs=runs_axis):
        return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=runs_axis, check_vma=False)

    models = judge_models(variants)
    pretrain_tables = [
        sharded(
            in_sub_batches(
                jax.vmap(functools.partial(pretrain_judge, sizes=sizes, build=judge_model(*model, world_of(sizes)))),
                PRETRAIN_SUB_BATCH,
            )
        )
        for model in models
    ]

    def pretrain_all(tables):
        return tuple(pretrain(table) for pretrain, table in zip(pretrain_tables, tables, strict=True))

    batch_runs = [make_batch_run(variant, sizes) for variant in variants]
    group_starts = [sharded(in_sub_batches(batch.start, sub_batch)) for batch in batch_runs]
    group_advances = [
        sharded(in_sub_batches(batch.advance, sub_batch, n_batched=2), (runs_axis, runs_axis, replicated, replicated))
        for batch in batch_runs
    ]
    group_measures = [sharded(in_sub_batches(batch.measure, sub_batch, n_batched=2)) for batch in batch_runs]

    def start(pretrained_judges, group_inputs) -> Started:
        all_runs = [
            make_run_inputs(
                group.condition,
                group.seed,
                pretrained_judges[models.index(judge_model_of(variant))],
                group.pretrain_index,
                group.meta_pretrain_index,
            )
            for variant, group in zip(variants, group_inputs, strict=True)
        ]
        return Started(all_runs, [group_start(runs) for group_start, runs in zip(group_starts, all_runs, strict=True)])

    def advance(all_states, all_runs, outer, interval):
        return [
            group_advance(states, runs, outer, interval)
            for group_advance, states, runs in zip(group_advances, all_states, all_runs, strict=True)
        ]

    def measure(all_states, all_runs):
        return [
            group_measure(states, runs)
            for group_measure, states, runs in zip(group_measures, all_states, all_runs, strict=True)
        ]

    # Explicit shardings let `start`, `advance` and `measure` be compiled from abstract shapes
    # (`start` takes the sharding of its judges from `pretrain`'s output shapes; host arrays are
    # replicated).
    by_run = jax.sharding.NamedSharding(mesh, runs_axis)
    scalar = jax.sharding.NamedSharding(mesh, replicated)
    return StudyProgram(
        jax.jit(pretrain_all, out_shardings=by_run),
        jax.jit(start, out_shardings=by_run),
        jax.jit(advance, in_shardings=(by_run, by_run, scalar, scalar), out_shardings=by_run, donate_argnums=0),
        jax.jit(measure, in_shardings=(by_run, by_run), out_shardings=by_run),
    )


def compile_program(program: StudyProgram, inputs):
    """Lower the four functions from the chunk's input shapes and compile them one after another.

    XLA's CPU compiler already keeps the cores busy most of the time. Measured on 2 cores, cold,
    one at a time / two at a time / all four at once: blog's compile 52.5 / 46.4 / 53.0 s, an
    8-group study's 86.6 / 70.5 / 74.7 s; but blog end to end peaks at 1.8 GiB one at a time and
    2.3 GiB two at a time (3.2 GiB all at once): one at a time keeps a study's peak within 2 GiB.
    """
    pretrain_inputs, group_inputs = inputs
    lowered_pretrain = program.pretrain.lower(pretrain_inputs)
    lowered_start = program.start.lower(tuple(table.judge for table in lowered_pretrain.out_info), group_inputs)
    started = lowered_start.out_info
    index = jax.ShapeDtypeStruct((), np.int32)
    lowered_advance = program.advance.lower(started.states, started.runs, index, index)
    lowered_measure = program.measure.lower(started.states, started.runs)
    lowered = (lowered_pretrain, lowered_start, lowered_advance, lowered_measure)
    return StudyProgram(*(program.compile() for program in lowered))
