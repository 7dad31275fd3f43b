"""The run plan of a chunk of a study: where each run sits on the program's run axis.

`make_plan` groups a chunk's runs by `Variant` (`group_variants`), lists each judge to pretrain once (per
seed, ensemble member and pretraining knobs) in the pretraining table of its model (`judge_models`:
judges of one architecture and width stack into one array), orders each group's runs into sub-batches
dealt round-robin to the devices, and keeps the inverse permutation. The compiled
program takes `ChunkPlan.program_inputs()`; `ChunkPlan.scatter` puts its outputs back
at (condition, seed). Nothing else re-derives the order.
"""

from dataclasses import dataclass
from typing import NamedTuple

import jax
import numpy as np

from engine.host.study import ResolvedStudy
from engine.knobs import PRETRAIN_KNOBS, Condition, Variant, condition_arrays
from engine.mechanisms.meta_judge import META_JUDGE_MEMBER
from engine.mechanisms.pretraining import PretrainInputs

# Every vmapped batch has at least MIN_BATCH runs: XLA compiles a batch of one into other
# kernels than a larger batch, which would change the last bits of a run's results with
# the size of the study it sits in.
MIN_BATCH = 2
MAX_SUB_BATCH = 32
# Judges pretrain in sub-batches of this size: a vmapped while_loop runs until its slowest
# member reaches the target, so small sub-batches stop early (and use little memory).
PRETRAIN_SUB_BATCH = 8


class GroupInputs(NamedTuple):
    """What the program takes for one group, in run-axis order (padding repeats the last run)."""

    condition: Condition
    seed: np.ndarray  # (positions,) int32
    pretrain_index: np.ndarray  # (positions, n_judges) rows of the pretraining table of the group's judge model
    meta_pretrain_index: np.ndarray | None  # (positions,) the meta-judge's rows (Variant.meta_judge), else None


@dataclass(frozen=True)
class GroupPlan:
    """The runs of one Variant: program inputs in run-axis order, and where each run came from."""

    variant: Variant
    inputs: GroupInputs
    condition_index: np.ndarray  # (runs,) into the study's conditions
    seed_index: np.ndarray  # (runs,) into the chunk's seeds
    position: np.ndarray  # (runs,) each run's position on the run axis


@dataclass(frozen=True)
class ChunkPlan:
    seeds: tuple[int, ...]
    n_conditions: int
    n_devices: int
    sub_batch: int  # runs per vmapped sub-batch
    # one table per judge model (`judge_models(variants)`): host arrays, one row per judge to pretrain (padded)
    pretrain: tuple[PretrainInputs, ...]
    groups: tuple[GroupPlan, ...]

    @property
    def variants(self) -> tuple[Variant, ...]:
        return tuple(group.variant for group in self.groups)

    @property
    def judge_models(self) -> tuple[tuple[str, int], ...]:
        return judge_models(self.variants)

    @property
    def n_runs(self) -> int:
        return sum(len(group.condition_index) for group in self.groups)

    def program_inputs(self) -> tuple[PretrainInputs, tuple[GroupInputs, ...]]:
        return self.pretrain, tuple(group.inputs for group in self.groups)

    def scatter(self, per_group: list[dict]) -> dict:
        """Per-group dicts of (positions, ...) arrays -> dicts of (condition, seed, ...) arrays."""
        out = {}
        for group, values in zip(self.groups, per_group, strict=True):
            for name, array in values.items():
                array = np.asarray(array)[group.position]
                if name not in out:
                    out[name] = np.empty((self.n_conditions, len(self.seeds)) + array.shape[1:], array.dtype)
                out[name][group.condition_index, group.seed_index] = array
        return out

    def pretrain_outcome(self, results) -> dict:
        """Per run: the most steps any of its judges took, and the lowest alignment reached.

        results: (steps, alignment) host arrays of each pretraining table, in `pretrain`'s order.
        """
        per_group = []
        for group in self.groups:
            steps, alignment = results[self.judge_models.index(judge_model_of(group.variant))]
            rows = group.inputs.pretrain_index
            if group.inputs.meta_pretrain_index is not None:  # the meta-judge is one of the run's judges
                rows = np.column_stack([rows, group.inputs.meta_pretrain_index])
            per_group.append(
                {"pretrain_steps": steps[rows].max(axis=1), "pretrain_alignment": alignment[rows].min(axis=1)}
            )
        return self.scatter(per_group)


@dataclass(frozen=True)
class _Run:
    condition_index: int
    seed_index: int
    seed: int
    knobs: dict
    pretrain_rows: tuple[int, ...]
    meta_pretrain_row: int | None  # the meta-judge's row (meta_source `judge`), else None


# Sizes of optional steps a run without them (size 0) can share: such a run joins the group of
# the largest size among the conditions that differ from it only there, where `lax.cond` skips
# those steps on its sub-batches (the q* anchor, the held-out meta step). Fewer groups, less to compile.
SHAREABLE_SIZES = ("n_oracle_pairs", "n_holdout")
# Sizes a run that has the mechanism can take larger: its runs keep the largest among their class, and
# a run without it (0) keeps its own program. The slots of past policies beyond a run's judge_data window
# hold exact zeros, added last (engine.mechanisms.judge_data.mixture), so its bits do not change.
RAISABLE_SIZES = ("judge_data_slots",)


def group_variants(variants: list[Variant]) -> list[Variant]:
    """The Variant of the group each condition runs in: its own, except that each size in
    SHAREABLE_SIZES that is 0 (off) and each in RAISABLE_SIZES that is not becomes the largest
    among its class (the conditions equal to it once the shareable sizes are set to 0 and the
    raisable ones to whether they are on). Different nonzero shareable sizes stay apart: a 3-pair
    anchor draws other random pairs than a 6-pair one, and padding would change its numbers."""
    classes = [
        variant._replace(
            **dict.fromkeys(SHAREABLE_SIZES, 0), **{name: getattr(variant, name) > 0 for name in RAISABLE_SIZES}
        )
        for variant in variants
    ]
    names = SHAREABLE_SIZES + RAISABLE_SIZES
    largest: dict[Variant, dict[str, int]] = {}
    for variant, cls in zip(variants, classes, strict=True):
        sizes = largest.setdefault(cls, dict.fromkeys(names, 0))
        for name in names:
            sizes[name] = max(sizes[name], getattr(variant, name))
    return [
        variant._replace(
            **{name: getattr(variant, name) or largest[cls][name] for name in SHAREABLE_SIZES},
            **{name: largest[cls][name] if getattr(variant, name) else 0 for name in RAISABLE_SIZES},
        )
        for variant, cls in zip(variants, classes, strict=True)
    ]


def judge_model_of(variant: Variant) -> tuple[str, int]:
    """The (architecture, width) of every judge of a group's runs (`engine.core.models.judge_model`)."""
    return variant.judge_arch, variant.judge_hidden


def judge_models(variants) -> tuple[tuple[str, int], ...]:
    """The judge models among groups of runs, in group order: one pretraining table each."""
    return tuple(dict.fromkeys(judge_model_of(variant) for variant in variants))


def make_plan(study: ResolvedStudy, seeds, n_devices: int, sub_batch: int | None = None) -> ChunkPlan:
    """Place the runs of `seeds` × every condition of `study` on a run axis over `n_devices`.

    sub_batch: runs per sub-batch; None chooses it (`sub_batch_size`). A run's bits depend on
    its sub-batch's size, so rerunning part of a study (`coevo verify`) passes the original's.
    """
    # per judge model: (seed, member, pretraining knobs) -> row of its table, and the knobs of each row
    pretrain_rows: dict[tuple, dict[tuple, int]] = {}
    pretrain_knobs: dict[tuple, list[dict]] = {}
    by_variant: dict[Variant, list[_Run]] = {}
    groups = group_variants([study.variant(name) for name in study.condition_names])
    for c, (name, variant) in enumerate(zip(study.condition_names, groups, strict=True)):
        knobs = study.conditions[name]
        settings = tuple(knobs[k] for k in PRETRAIN_KNOBS)
        table_rows = pretrain_rows.setdefault(judge_model_of(variant), {})
        table_knobs = pretrain_knobs.setdefault(judge_model_of(variant), [])
        for s, seed in enumerate(seeds):
            rows = []
            # the meta-judge (meta_source `judge`) is pretrained as one more member, under its own tag
            members = list(range(knobs["n_judges"])) + ([META_JUDGE_MEMBER] if variant.meta_judge else [])
            for member in members:
                key = (seed, member, settings)
                if key not in table_rows:
                    table_rows[key] = len(table_rows)
                    table_knobs.append(knobs)
                rows.append(table_rows[key])
            meta_row = rows.pop() if variant.meta_judge else None
            by_variant.setdefault(variant, []).append(_Run(c, s, seed, knobs, tuple(rows), meta_row))

    pretrain = tuple(
        pretrain_table(pretrain_rows[model], pretrain_knobs[model], n_devices) for model in judge_models(by_variant)
    )
    sub_batch = sub_batch or sub_batch_size(max(len(runs) for runs in by_variant.values()), len(seeds), n_devices)
    groups = tuple(_group_plan(variant, runs, n_devices, sub_batch) for variant, runs in by_variant.items())
    return ChunkPlan(tuple(seeds), len(study.condition_names), n_devices, sub_batch, pretrain, groups)


def pretrain_table(rows: dict[tuple, int], knobs: list[dict], n_devices: int) -> PretrainInputs:
    """The pretraining jobs of one judge model, row by row, padded to whole sub-batches on every device."""
    table = PretrainInputs(
        seed=np.array([key[0] for key in rows], np.int32),
        member=np.array([key[1] for key in rows], np.int32),
        condition=condition_arrays(knobs),
    )
    return jax.tree.map(lambda leaf: pad_rows(leaf, PRETRAIN_SUB_BATCH * n_devices), table)


def _group_plan(variant: Variant, runs: list[_Run], n_devices: int, sub_batch: int) -> GroupPlan:
    order = run_order(len(runs), n_devices, sub_batch)
    placed = [runs[i] for i in order]
    inputs = GroupInputs(
        condition=condition_arrays([run.knobs for run in placed]),
        seed=np.array([run.seed for run in placed], np.int32),
        pretrain_index=np.array([run.pretrain_rows for run in placed], np.int32),
        meta_pretrain_index=(
            np.array([run.meta_pretrain_row for run in placed], np.int32) if variant.meta_judge else None
        ),
    )
    return GroupPlan(
        variant=variant,
        inputs=inputs,
        condition_index=np.array([run.condition_index for run in runs]),
        seed_index=np.array([run.seed_index for run in runs]),
        position=np.unique(order, return_index=True)[1],  # first position of each run
    )


def pad_rows(array: np.ndarray, multiple: int) -> np.ndarray:
    """Pad the leading axis to a multiple of `multiple` by repeating the last row (dropped afterwards)."""
    target = -(-len(array) // multiple) * multiple
    return array[np.minimum(np.arange(target), len(array) - 1)]


def sub_batch_size(largest_group: int, n_seeds: int, n_devices: int) -> int:
    """Runs per sub-batch: one condition's seeds where they fit (groups list runs condition by
    condition, so a sub-batch then shares its cadences and skips what none of it needs), else
    a device's share split into near-equal sub-batches of at most MAX_SUB_BATCH (little padding)."""
    per_device = -(-largest_group // n_devices)
    target = min(n_seeds, per_device)
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
