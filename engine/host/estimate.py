"""Before compiling: will a study fit this machine's memory, and about how long will it run?

`coevo run` and `coevo bench` call `estimate_or_refuse` after validation and before anything is
compiled: a study whose estimated memory cannot fit is refused with a `StudyError` naming the
knob that drives it (`n_judges` 10⁶ would otherwise fail only after compiling, asking XLA for
4.2 TB; `record_every` 1 with `save_distributions` `all` over 10⁶ inner steps would fill the
host with 30 GiB of distributions), and a study estimated to run over a minute says so up front.
Nothing here compiles anything (the models' parameter counts come from their shapes alone).

The model is linear and deliberately simple; its constants are peak RSS and run times of
tiny studies measured with `/usr/bin/time -v` on the lab's 2-core CPU (under load), and the
bench records in data/bench_cpu_2core.json. Every knob that scales memory or time has a term:

  memory ≈ BASE                                        (JAX, XLA, compilation)
         + runs per chunk × (PER_RUN + PER_JUDGE_STATE · judges · p_J)  (every run's state)
         + runs per chunk × STATE_BYTES_PER_PARAMETER · (policy parameters − the reference's)
         + runs per chunk × policy_slot_bytes · judge_data slots      (past policies: judge_data)
         + live runs × (PER_JUDGE_ACTIVE · judges · a_J + PER_SEQUENCE · batch_size · (a_π + judges · a_J))
         + records in flight × runs per chunk × record bytes × 2       (device and host copies)
         + RECORD_BYTES · RECORD_COPIES · runs · records                 (the curves, on the host)
         + distribution_bytes · DISTRIBUTION_COPIES · runs · saved records   (save_distributions)
         + (N − 4096) · (runs per chunk · WORLD_STATE_VECTORS · 4 + L · (WORLD_BYTES_PER_POSITION
              + live runs · (WORLD_BYTES_PER_MODEL_POSITION · (a_π + judges · a_J)
                             + exact · EXACT_BYTES_PER_POSITION)))      (the world: seq_len)

`judges` counts a run's meta-judge (meta_source `judge`) with its ensemble; L is the world's sequence
length, `exact` 1 under gradient_estimator exact and 0 otherwise. `records` is every
record of a run, n_iterations · steps_per_iter / record_interval + 1 (`record_every`); `saved
records` is that with `save_distributions` `all`, 1 with `final` (the runner drops the others
as they arrive: engine.host.runner.DistributionStore), 0 with `none`. Records wait on the device
in batches of `engine.host.runner.records_per_fetch`. Runs advance in sub-batches of at most
MAX_SUB_BATCH per device (engine.host.plan), so only `live runs` = min(runs per chunk,
MAX_SUB_BATCH × devices) hold their working buffers at once (those of the condition that needs
the most). p_J is a judge's parameter count over the reference judge's; a_π and a_J are the models'
working memory at their widths against width 32 (`active_memory`, measured for GRU judges; the
policy, an MLP judge and every transformer are priced as a GRU judge of their width, an MLP judge's
one layer of activations being less than a GRU's four steps'; a transformer's working memory is not
measured). At width 32 every width term is 1 (or 0), so
the calibration above is unchanged.
A chunk holds at least one seed of every condition and at most `max_runs_per_chunk` runs
(engine.host.runner). On an accelerator the chunk's terms without BASE are compared with the
device's memory (uncalibrated there), the curves and distributions with the host's.

  time ≈ Σ over runs of inner steps · STEP_SECONDS · run_step_cost
         + iterations · STEP_SECONDS · ITERATION_PASS_COST · w_π · p         (π of all N at each iteration's start)
         + records · (judges · w_J · RECORD_SECONDS · p + RECORD_CALL_SECONDS / runs per chunk)
         + Σ over judges pretrained · STEP_SECONDS · w_J · (PRETRAIN_STEPS · PRETRAIN_STEP_COST · (pretrain batch / 64)
                                                            · (L / 4) + checks · PRETRAIN_CHECK_COST · p)

  run_step_cost = (batch_size / 64) · (L / 4) · (w_π + n_judges · w_J) / 2 · step_cost   (gradient_estimator sampled)
                = EXACT_POLICY_COST · p + n_judges · (EXACT_JUDGE_PASS_COST · p + EXACT_JUDGE_PAIR_COST · n²)
                  · judge steps per inner step + the held-out check's cost      (exact: no batch; no
                  EXACT_POLICY_COST under policy_response best_response, which has no policy step)

with L the world's sequence length (a sampled sequence costs L / 4 times the reference's), n = N / 4096
its sequences against the reference's (a sum over all N² pairs costs n² times), and p = `pass_scale`, an
exact pass over all N against the reference's: the prefix tree's Σ_{k ≤ L} V^k nodes times the sorts'
log N (step_cost prices the exact regularisers and judge_data's π of all N by p too). Judges are
pretrained once per seed, ensemble member and pretraining knobs (engine.host.plan), in sub-batches of
PRETRAIN_SUB_BATCH per device padded to whole ones, each for PRETRAIN_STEPS steps (its target is
reached at a step not known before it runs) and a check every pretrain_check_every.

The world factors and the pretraining, iteration-pass and exact-split constants were fitted to the
CPU seconds of each compiled function (pretrain, advance, measure) of a 2-seed baseline (2 iterations)
at 8⁴, 4⁸ and 2¹⁶ and a 2-seed exact run (20 inner steps) at 8⁴ and 2¹⁶, back to back (docs/worlds.md):
CPU seconds, not wall, as the machine was loaded 4× over.

All of it scaled by 2 / (CPU devices) and by this CPU's speed against the calibration machine's on the day
it was calibrated (`machine_slowdown`: a 50 ms NumPy probe of the engine's kind of work, 32-wide
float32 matmuls and tanh, timed before anything compiles; these machines differ 3-4× from day to
day). STEP_SECONDS and RECORD_SECONDS were fitted to `blog` end to end (85 runs × 2000 inner
steps, pretraining and 11 records included), `step_cost` the mechanisms' run-step costs against
the baseline (`coevo bench --mechanisms`, docs/performance.md), the exact costs measured against
the sampled baseline (`coevo bench --estimators`, docs/mean_field.md; at the reference's widths). w_π
and w_J are the policy's and each judge's cost at their widths against the reference's 32
(`policy_cost`, `judge_cost`; 1 at 32, so the reference's two models count 1 each), measured per
model and architecture (data/width_cost_cpu_2core.json, as a_J, and the bytes per
parameter; the MLP policy and the transformers at width 32 in data/arch_cost_cpu_2core.json); the
diagnostics' cost, mostly the judges' pass over all N sequences, is priced as a judge's step (not
measured apart). STEP_SECONDS is the rest of `blog`'s time once its pretraining and iteration passes
are priced apart. Compilation (10-100 s) comes on top. Time is estimated on CPU
only; a GPU runs the published study ≈ 10× faster per run in large batches.
"""

import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.core.models import DEFAULT_HIDDEN, judge_parameters, policy_parameters
from engine.core.world import REFERENCE_WORLD, World
from engine.host.chunks import max_runs_per_chunk as chunk_size_rule
from engine.host.chunks import seeds_per_chunk
from engine.host.plan import MAX_SUB_BATCH, PRETRAIN_SUB_BATCH
from engine.host.runner import distribution_bytes, records_per_fetch
from engine.host.study import ResolvedStudy, StudyError
from engine.knobs import (
    MECHANISMS,
    PRETRAIN_KNOBS,
    has_meta_judge,
    judge_data_slots,
    n_holdout_pairs,
    policy_regularised,
    pretrain_batch,
    records_per_iteration,
    sizes_of,
    world_of,
)
from engine.loop.diagnostics import METRICS

MIB = 2**20
GIB = 2**30
# Calibration: peak RSS of `coevo run` on the 2-core CPU (see the module docstring).
BASE = 1.7 * GIB  # 1 baseline run (bench: 1540 MiB); 2 runs, batch 32: 1754 MiB
PER_RUN = 0.7 * MIB  # 2 → 256 runs (batch 32, one judge): +182 MB
PER_JUDGE_STATE = 0.1 * MIB  # a judge's parameters, Adam moments and pretrained copy, ≈ 5k float32 each
PER_JUDGE_ACTIVE = 4.9 * MIB  # 2 runs, batch 32: 1 → 64 judges add 618 MB
PER_SEQUENCE = 0.012 * MIB  # 2 runs, one judge: batch 32 → 1024 adds 46 MB
RECORD_BYTES = 4 * (len(METRICS) + 1)  # one run's record: every metric and `healthy`, 4 bytes each
# The curves are held as the records arrive, joined, scattered per chunk, then every chunk's and their
# concatenation (engine.host.runner), and top_sequence once more as strings (engine.host.results).
RECORD_COPIES = 5
# Kept once, in place (DistributionStore), then written: 800 runs × 11 records with `all` (275 MiB)
# peaked 299 MB above the same study saving none (1059 against 760 MB, warm compilation cache).
DISTRIBUTION_COPIES = 1.1
# A world of N sequences other than the reference's 4096 (docs/worlds.md). Each run keeps
# WORLD_STATE_VECTORS float32 vectors over all N (log π₀, log π at the iteration's start, the exact
# oracle-pair step's label sums: counted); the passes over all N (pretraining's checks, the
# diagnostics, exact steps) add memory per sequence and position that hardly depends on the runs
# and models, a little per live run and model, and per live exact run. Fitted to peak RSS of
# 2-seed studies (2 × 20 inner steps; exact 5) at 2¹⁶ = 65,536 sequences of length 16, against 851 MiB
# at 8⁴: baseline 1842 MiB, ensemble_5 2132 MiB (+290 MiB for 4 more models in 2 live runs), exact
# baseline 2267 MiB (+425 MiB); checked at 16⁴ = 65,536 of length 4 (baseline 1032, 8 seeds 1008,
# ensemble_5 1060, exact 1000 MiB: all priced above) and at 2¹⁶ with 8 seeds (2008 MiB, priced above).
WORLD_STATE_VECTORS = 3
WORLD_BYTES_PER_POSITION = 900
WORLD_BYTES_PER_MODEL_POSITION = 39
EXACT_BYTES_PER_POSITION = 227
# Fitted to `blog` at engine commit dddbccd (run 59.1 s on 2 CPU devices, 85 runs × 2000 inner steps,
# 11 records) on a day the probe took PROBE_SECONDS; the diagnostics measured apart (3.6 ms per run
# and record on one core) give RECORD_SECONDS, the inner steps the rest.
# STEP_SECONDS is the rest of blog's 59.2 s once its pretraining and iteration passes (3%) are priced apart.
STEP_SECONDS = 0.223e-3  # per run and inner step, baseline (batch 64, one judge), 2 CPU devices
RECORD_SECONDS = 0.002  # per run, record and judge: the exact diagnostics over all 4096 sequences
# In baseline run-steps, from each compiled function's CPU seconds at 8⁴ (docs/worlds.md): π of all N at an
# iteration's start, 3% of an iteration of 200 steps; a judge pretraining job of 300 steps and 6 checks cost
# 64 run-steps, of which 20% the checks (the split that fits 4⁸ and 2¹⁶). A sub-batch of PRETRAIN_SUB_BATCH
# judges runs until its slowest: blog's took 300-500 steps at judge_init_alignment 0.7, priced as PRETRAIN_STEPS.
ITERATION_PASS_COST = 6.0
PRETRAIN_STEP_COST = 0.17
PRETRAIN_CHECK_COST = 2.1
PRETRAIN_STEPS = 400
PROBE_SECONDS = 3.4e-3  # `probe_seconds()` on the calibration machine, the day of the fit
RECORD_CALL_SECONDS = 2e-3  # per record and chunk: the host's call of `measure`, and the fetch
CALIBRATED_CPU_DEVICES = 2
SAY_TIME_ABOVE = 60.0  # seconds: shorter runs print no estimate
# Run-step cost of each mechanism against the baseline's (`coevo bench --mechanisms`, docs/performance.md):
# the cost it adds per run-step where it runs at every step.
DPO_COST = 0.4  # dpo 1.41x
TEMPORAL_DPO_COST = 0.3  # anchored rejection and future-chosen: 1.69x with dpo
EXACT_REGULARISER_COST = 0.6  # kl_penalty (exact) or entropy_exact: 1.52-1.66x
JUDGE_ANCHOR_COST = 0.25  # 1.25x
META_JUDGE_COST = 1.3  # meta_update_every 1: 2.27x
HOLDOUT_CHECK_COST = 2.1  # one held-out check of 204 pairs (meta_10: 1.21x), per 204 pairs
# judge_data accumulate or window: π of all 4096 sequences at every inner step (+0.075 ms per run-step), less
# the policy's sampling of each judge step's pairs it replaces (about as much): 1.0x at judge_update_every 1,
# 1.33x an asymmetric_10 step (docs/grounding.md), so 0.14 of a baseline step times (1 − 1/judge_update_every)
JUDGE_DATA_COST = 0.14


def policy_slot_bytes(world: World) -> int:
    """One slot of past policies' mass (judge_data): π of all N sequences, float32 (16 KiB at 8⁴)."""
    return world.n_sequences * 4


# gradient_estimator exact, in sampled baseline run-steps: from two runs of `coevo bench --estimators`
# (docs/mean_field.md), baseline exact = P + J and asymmetric_10 exact = P + J/10 gave P 2.3, 2.0 and J 14.5, 21.8;
# J = 18 split into the judge's pass over all N and the pair sums over all N², the split that fits an exact run
# at 2¹⁶ (3816 run-steps of 8⁴'s per run-step, measured against 22 at 8⁴: docs/worlds.md)
EXACT_POLICY_COST = 2.1  # the policy's exact step (and the judges' scores of all N it reads)
EXACT_JUDGE_PASS_COST = 4.0  # one judge's exact step: its pass over all N, forward and backward
EXACT_JUDGE_PAIR_COST = 14.0  # one judge's exact step: the pair sums over all N², self-labelled or oracle-pair
# A model's cost per run-step at its width against width 32 (`width_cost`), data/width_cost_cpu_2core.json:
# CPU seconds (the machine was shared, and its load moved wall times by 2x) per run-step of the inner loop
# alone with one model at width H and the other at 32, as a ratio r to both at 32; a model's cost is 2r − 1,
# as the time model prices the reference's policy and judge alike. Two measurements of one point differed
# by up to 0.6 at widths 8 and 16 (their mean is taken); one each above.
# The other architectures at 32 (data/arch_cost_cpu_2core.json), the same 2r − 1 from one process's best times of
# `advance`; other widths as the narrowest (below) and width² (above) of what was measured.
POLICY_WIDTH_COSTS = {
    "gru": {8: 0.65, 16: 0.88, 32: 1.0, 64: 1.18, 128: 4.78},
    "mlp": {32: 2.03},  # its conditionals recomputed at every position it samples, the GRU's prefixes shared
    "transformer": {32: 20.53},  # 4 calls of lengths 1-4 per sample, each a block of 12d² multiply-adds per token
}
JUDGE_WIDTH_COSTS = {
    "gru": {8: 0.44, 16: 0.84, 32: 1.0, 64: 2.8, 128: 7.76, 256: 22.39},
    "mlp": {32: 0.05, 128: 0.46},  # the inner step is then almost all the policy's
    "transformer": {32: 10.58},
}
# A GRU judge's working memory at its width against width 32 (`active_memory`): peak RSS with 64 judges
# less that with 1 (2 runs, batch 32), per judge, over the same at 32 (+277 MiB): +31 MiB at 8, +1028 at 128.
ACTIVE_MEMORY = {8: 0.11, 32: 1.0, 128: 3.71}
# A model's state per parameter and run: parameters, gradients, Adam's moments and copies of them. 128 runs of a
# policy of width 128 peaked 157 MiB above those of width 32: 24.8 bytes for each of the 51 840 parameters it adds
# (PER_JUDGE_STATE is 21 bytes per parameter of the reference judge).
STATE_BYTES_PER_PARAMETER = 24


def probe_seconds(repeats: int = 5) -> float:
    """Best of `repeats` timings of a fixed NumPy workload like the engine's inner step (a 256 × 32
    hidden state through 32 × 96 float32 matmuls and tanh, 100 times): this CPU's speed now."""
    rng = np.random.default_rng(0)
    weight = (rng.standard_normal((32, 96)) / 6).astype(np.float32)
    start = rng.standard_normal((256, 32)).astype(np.float32)
    best = float("inf")
    for _ in range(repeats):
        hidden, t0 = start, time.perf_counter()
        for _ in range(100):
            gates = hidden @ weight
            hidden = np.tanh(gates[:, :32] + gates[:, 32:64]) * gates[:, 64:]
        best = min(best, time.perf_counter() - t0)
    return best


def machine_slowdown() -> float:
    """How much slower this CPU runs the probe than the calibration machine did (<1: faster)."""
    return probe_seconds() / PROBE_SECONDS


def measured_scale(measured: dict, width: int, power: int) -> float:
    """A quantity at `width` from its values at measured widths (width -> value, 1 at 32): linear
    between them, the narrowest's below them (fixed costs do not shrink further), and growing as
    width**power beyond the widest."""
    widths = sorted(measured)
    if width > widths[-1]:
        return measured[widths[-1]] * (width / widths[-1]) ** power
    return float(np.interp(width, widths, [measured[w] for w in widths]))


def policy_cost(knobs: dict) -> float:
    """The policy's cost per run-step at its architecture and width against the reference's GRU of 32 (beyond
    the widest measured: as width², its matmuls)."""
    return measured_scale(POLICY_WIDTH_COSTS[knobs["policy_arch"]], knobs["policy_hidden"], 2)


def judge_cost(knobs: dict) -> float:
    """One judge's cost per run-step (the meta-judge's too) at its architecture and width against the
    reference's GRU of 32 (beyond the widest measured: as width²)."""
    return measured_scale(JUDGE_WIDTH_COSTS[knobs["judge_arch"]], knobs["judge_hidden"], 2)


def active_memory(width: int) -> float:
    """A model's working memory at `width` against width 32 (beyond 128: as width, its activations)."""
    return measured_scale(ACTIVE_MEMORY, width, 1)


def world_scale(knobs: dict) -> float:
    """The world's sequences against the reference's 4096: a sum over all N² pairs costs its square."""
    return world_of(knobs).n_sequences / REFERENCE_WORLD.n_sequences


def prefix_tree_nodes(world: World) -> int:
    """The prefixes of every length 0..L, Σ_k V^k: the nodes of an exact pass's prefix tree."""
    return (world.vocab ** (world.seq_len + 1) - 1) // (world.vocab - 1)


def pass_scale(knobs: dict) -> float:
    """An exact pass over all N sequences (π or J of all of them by the prefix tree, and the records'
    sorts) against the reference's: the tree's nodes times log N. Measured records cost 21× and 34×
    the reference's at 4⁸ and 2¹⁶, this gives 25× and 37× (docs/worlds.md)."""
    world = world_of(knobs)
    nodes = prefix_tree_nodes(world) / prefix_tree_nodes(REFERENCE_WORLD)
    return nodes * np.log(world.n_sequences) / np.log(REFERENCE_WORLD.n_sequences)


def length_scale(knobs: dict) -> float:
    """The world's sequence length against the reference's 4: what a sampled sequence's pass costs."""
    return world_of(knobs).seq_len / REFERENCE_WORLD.seq_len


def world_bytes(knobs: dict, judges: int, live: int, per_chunk: int) -> float:
    """The memory a world of N sequences adds to (or saves from) the reference's: the per-run vectors
    over all N of `per_chunk` runs, and the passes over all N, per sequence and position: their own,
    and those of `live` runs' policy and `judges` judges and, under exact gradients, their pair sums."""
    world = world_of(knobs)
    extra = world.n_sequences - REFERENCE_WORLD.n_sequences
    models = active_memory(knobs["policy_hidden"]) + judges * active_memory(knobs["judge_hidden"])
    exact = knobs["gradient_estimator"] == "exact"
    per_live_run = WORLD_BYTES_PER_MODEL_POSITION * models + exact * EXACT_BYTES_PER_POSITION
    passes = world.seq_len * (WORLD_BYTES_PER_POSITION + live * per_live_run)
    return extra * (per_chunk * WORLD_STATE_VECTORS * 4 + passes)


def state_bytes(knobs: dict, judges: int) -> float:
    """One run's state: PER_RUN (the reference's policy and the rest), its policy's parameters beyond the
    reference's, and `judges` judges as PER_JUDGE_STATE is to the reference judge."""
    world = world_of(knobs)
    policy = policy_parameters(knobs["policy_arch"], knobs["policy_hidden"], world)
    extra_policy = policy - policy_parameters("gru", DEFAULT_HIDDEN, REFERENCE_WORLD)
    judge_scale = judge_parameters(knobs["judge_arch"], knobs["judge_hidden"], world) / judge_parameters(
        "gru", DEFAULT_HIDDEN, REFERENCE_WORLD
    )
    return PER_RUN + STATE_BYTES_PER_PARAMETER * extra_policy + PER_JUDGE_STATE * judges * judge_scale


def judges_of(knobs: dict) -> int:
    """Judges a run holds and measures: its ensemble, and its meta-judge where it has one."""
    return knobs["n_judges"] + MECHANISMS["meta_judge"].on(knobs)


def step_cost(knobs: dict) -> float:
    """A run-step's cost against the baseline's, from the mechanisms it runs (1: none)."""
    cost, world = 1.0, pass_scale(knobs)
    if knobs["update_rule"] == "dpo":
        cost += DPO_COST + TEMPORAL_DPO_COST * (knobs["anchored_rejection"] or knobs["future_chosen"])
    if policy_regularised(knobs):
        cost += EXACT_REGULARISER_COST * world
    if knobs["judge_anchor"] > 0:
        cost += JUDGE_ANCHOR_COST
    if MECHANISMS["meta_judge"].on(knobs):
        cost += META_JUDGE_COST / knobs["meta_update_every"]
    if MECHANISMS["holdout_meta"].on(knobs):
        cost += HOLDOUT_CHECK_COST * n_holdout_pairs(knobs) / 204 / knobs["meta_update_every"]
    if judge_data_slots(knobs):
        cost += JUDGE_DATA_COST * world * (1 - 1 / knobs["judge_update_every"])
    return cost


def exact_step_cost(knobs: dict) -> float:
    """A run-step's cost under gradient_estimator exact against the sampled baseline's: the policy's
    exact step at every inner step (none under policy_response best_response: its π* is one pass of the
    judges over the N where a judge steps, priced within the judge's step, unmeasured), each judge's
    exact steps (self-labelled, and oracle-pair where anchor_fraction > 0) at their cadence, and the
    held-out check as in the sampled loop."""
    judge_steps = 0.0
    if MECHANISMS["judge_steps"].on(knobs):
        judge_steps = (1 + (knobs["anchor_fraction"] > 0)) / knobs["judge_update_every"]
    passes, pairs = pass_scale(knobs), world_scale(knobs) ** 2
    policy = EXACT_POLICY_COST * passes if MECHANISMS["policy_steps"].on(knobs) else 0.0
    judge_step = EXACT_JUDGE_PASS_COST * passes + EXACT_JUDGE_PAIR_COST * pairs
    cost = policy + knobs["n_judges"] * judge_step * judge_steps
    if MECHANISMS["holdout_meta"].on(knobs):
        cost += HOLDOUT_CHECK_COST * n_holdout_pairs(knobs) / 204 / knobs["meta_update_every"]
    return cost


def run_step_cost(knobs: dict) -> float:
    """A run-step's time in units of STEP_SECONDS (the sampled baseline's, batch 64, one judge)."""
    if knobs["gradient_estimator"] == "exact":
        return exact_step_cost(knobs)
    models = policy_cost(knobs) + knobs["n_judges"] * judge_cost(knobs)
    return (knobs["batch_size"] / 64) * length_scale(knobs) * models / 2 * step_cost(knobs)


def pretraining_cost(knobs: dict) -> float:
    """One judge's pretraining in baseline run-steps (`PRETRAIN_STEPS`, as far as pretrain_max_steps
    allows, and a check every pretrain_check_every) at its architecture and width."""
    every = knobs["pretrain_check_every"]
    checks = -(-min(PRETRAIN_STEPS, knobs["pretrain_max_steps"]) // every)
    batch = pretrain_batch(sizes_of(knobs)) / 64
    steps = checks * every * PRETRAIN_STEP_COST * batch * length_scale(knobs)
    return judge_cost(knobs) * (steps + checks * PRETRAIN_CHECK_COST * pass_scale(knobs))


def pretraining_jobs(study: ResolvedStudy, seeds: int, n_devices: int) -> dict:
    """Judges pretrained in a chunk of `seeds` seeds, per judge model (architecture, width) -> (jobs
    padded to whole sub-batches on every device, the knobs of one of them): as engine.host.plan
    lists them, one per seed, ensemble member (the meta-judge one more) and pretraining knobs."""
    members: dict = {}
    for knobs in study.conditions.values():
        model = (knobs["judge_arch"], knobs["judge_hidden"])
        settings = tuple(knobs[name] for name in PRETRAIN_KNOBS)
        n_judges, meta, _ = members.get((model, settings), (0, False, knobs))
        members[(model, settings)] = (max(n_judges, knobs["n_judges"]), meta or has_meta_judge(knobs), knobs)
    block = PRETRAIN_SUB_BATCH * n_devices
    jobs: dict = {}
    for (model, _), (n_judges, meta, knobs) in members.items():
        count = jobs.get(model, (0, knobs))[0] + seeds * (n_judges + meta)
        jobs[model] = (count, knobs)
    return {model: (-(-count // block) * block, knobs) for model, (count, knobs) in jobs.items()}


@dataclass(frozen=True)
class Estimate:
    """What a study will cost: memory of its largest chunk and of its results, and run time (None off CPU)."""

    runs: int
    runs_per_chunk: int
    records: int  # per run: after pretraining, then every record interval
    chunk_bytes: float  # peak memory while one chunk runs (host on CPU; device otherwise), BASE included on CPU
    results_bytes: float  # the study's curves and saved distributions, on the host
    seconds: float | None
    terms: dict  # the part of chunk_bytes each knob drives: "runs", "n_judges", "batch_size", "records", ...
    results_terms: dict  # the part of results_bytes each knob drives: "records", "save_distributions"
    largest_judges: tuple[str, int, float]  # (condition, n_judges, working bytes per judge) of the condition whose
    # judges need the most working memory
    on_cpu: bool = True


def estimate(
    study: ResolvedStudy, *, max_runs_per_chunk: int, n_devices: int, on_cpu: bool, slowdown: float = 1.0
) -> Estimate:
    """The model of the module docstring, from the resolved knobs alone; `slowdown` scales the time
    to this CPU (`machine_slowdown`; 1: the calibration machine)."""
    sizes, n_seeds = study.sizes, len(study.seeds)
    per_chunk = seeds_per_chunk(n_seeds, len(study.conditions), max_runs_per_chunk)
    judges = {condition: judges_of(knobs) for condition, knobs in study.conditions.items()}
    batch = sizes.batch_size
    runs_per_chunk = per_chunk * len(judges)
    live = min(runs_per_chunk, MAX_SUB_BATCH * n_devices)
    # per condition: the working memory of one judge, and the models' working memory per sequence (in PER_SEQUENCE)
    per_judge = {c: PER_JUDGE_ACTIVE * active_memory(k["judge_hidden"]) for c, k in study.conditions.items()}
    per_sequence = {
        c: active_memory(k["policy_hidden"]) + judges[c] * active_memory(k["judge_hidden"])
        for c, k in study.conditions.items()
    }
    largest = max(study.conditions, key=lambda c: judges[c] * per_judge[c])
    saving = sizes.save_distributions != "none"
    per_iteration = records_per_iteration(sizes)
    records = sizes.n_iterations * per_iteration + 1
    saved_bytes = distribution_bytes(world_of(sizes))
    in_flight = records_per_fetch(per_iteration, runs_per_chunk, saved_bytes * saving)
    record = RECORD_BYTES + saved_bytes * saving
    terms = {
        "runs": per_chunk * sum(state_bytes(knobs, 0) for knobs in study.conditions.values()),
        "n_judges": per_chunk * sum(state_bytes(k, judges[c]) - state_bytes(k, 0) for c, k in study.conditions.items())
        + live * judges[largest] * per_judge[largest],
        "batch_size": live * PER_SEQUENCE * batch * max(per_sequence.values()),
        "records": 2 * in_flight * runs_per_chunk * record,
        "judge_data_window": per_chunk
        * policy_slot_bytes(world_of(sizes))
        * sum(map(judge_data_slots, study.conditions.values())),
        "seq_len": max(world_bytes(k, judges[c], live, per_chunk * len(judges)) for c, k in study.conditions.items()),
    }
    runs = n_seeds * len(judges)
    saved = {"none": 0, "final": 1, "all": records}[sizes.save_distributions]
    results_terms = {
        "records": RECORD_BYTES * RECORD_COPIES * runs * records,
        "save_distributions": saved_bytes * DISTRIBUTION_COPIES * runs * saved,
    }
    seconds = None
    if on_cpu:
        steps = sizes.steps_per_iter * sizes.n_iterations
        per_seed = sum(
            steps * STEP_SECONDS * run_step_cost(knobs)
            + sizes.n_iterations * STEP_SECONDS * ITERATION_PASS_COST * policy_cost(knobs) * pass_scale(knobs)
            + records
            * (
                judges[condition] * judge_cost(knobs) * RECORD_SECONDS * pass_scale(knobs)
                + RECORD_CALL_SECONDS / runs_per_chunk
            )
            for condition, knobs in study.conditions.items()
        )
        n_chunks = -(-n_seeds // per_chunk)
        pretraining = n_chunks * sum(
            jobs * STEP_SECONDS * pretraining_cost(knobs)
            for jobs, knobs in pretraining_jobs(study, per_chunk, n_devices).values()
        )
        seconds = (n_seeds * per_seed + pretraining) * CALIBRATED_CPU_DEVICES / n_devices * slowdown
    chunk_bytes = (BASE if on_cpu else 0) + sum(terms.values())
    return Estimate(
        runs,
        runs_per_chunk,
        records,
        chunk_bytes,
        sum(results_terms.values()),
        seconds,
        terms,
        results_terms,
        (largest, study.conditions[largest]["n_judges"], per_judge[largest]),
        on_cpu,
    )


def available_memory(devices=None) -> tuple[float, str]:
    """Bytes this process may still use, and where that number comes from.

    On CPU: the least of MemAvailable (/proc/meminfo, else physical memory), a cgroup limit
    and RLIMIT_AS; on an accelerator: the first device's memory limit (if it reports one).
    """
    if devices and devices[0].platform != "cpu":
        stats = devices[0].memory_stats() or {}
        limit = stats.get("bytes_limit")
        return (float(limit), f"{devices[0].device_kind} memory") if limit else (float("inf"), "unknown")
    candidates = []
    try:
        meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        candidates.append((int(meminfo["MemAvailable"].split()[0]) * 1024, "MemAvailable in /proc/meminfo"))
    except (OSError, KeyError, ValueError):
        candidates.append((os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "physical memory"))
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdecimal() and int(text) < 2**60:
            candidates.append((int(text), f"the cgroup limit in {path}"))
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        candidates.append((soft, "the address-space limit, ulimit -v"))
    return min(candidates)


def size(nbytes: float) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", GIB), ("MiB", MIB)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes:.0f} B"


def duration(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400 * 2:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


def _records_field(study: ResolvedStudy) -> str:
    """The knob that sets how many records a run takes: record_every where it records within iterations."""
    return "record_every" if records_per_iteration(study.sizes) > 1 else "n_iterations"


def _refusal(study: ResolvedStudy, cost: Estimate, driver: str, need: str, have: str, term: float) -> StudyError:
    """The refusal naming the knob that drives the largest part of what does not fit."""
    where = f"study {study.name!r}"
    sizes = study.sizes
    world = world_of(sizes)
    if driver == "n_judges":
        condition, n_judges, per_judge = cost.largest_judges
        return StudyError(
            f"{where}, condition {condition!r}, field 'n_judges': {need}, {have}; n_judges {n_judges} costs "
            f"≈ {size(per_judge)} per judge per run in flight: use fewer or narrower judges"
        )
    if driver == "batch_size":
        return StudyError(
            f"{where}, field 'batch_size': {need}, {have}; batch_size {sizes.batch_size} costs "
            f"≈ {size(PER_SEQUENCE)} per sequence per model of width 32 per run: use a smaller batch"
        )
    if driver == "save_distributions":
        return StudyError(
            f"{where}, field 'save_distributions': {need}, {have}; {sizes.save_distributions!r} keeps π and J of "
            f"all {world.n_sequences} sequences ({distribution_bytes(world) // 1024} KiB per run and record) for "
            f"{cost.runs} runs × "
            f"{cost.records if sizes.save_distributions == 'all' else 1} records, ≈ {size(term)}: save 'final' or "
            "'none', record less often (record_every), or use fewer runs"
        )
    if driver == "judge_data_window":
        return StudyError(
            f"{where}, field 'judge_data_window': {need}, {have}; judge_data keeps π of all "
            f"{world.n_sequences} sequences per outer iteration of its window ({policy_slot_bytes(world) // 1024} KiB "
            "per run and iteration): use a shorter window, accumulate (one slot), or fewer runs"
        )
    if driver == "seq_len":
        return StudyError(
            f"{where}, field 'seq_len': {need}, {have}; a world of vocab^seq_len = {world.n_sequences:,} sequences "
            f"adds ≈ {size(term)} (every exact pass runs over all of them): use a smaller world, fewer or "
            "narrower judges, or fewer runs"
        )
    if driver == "records":
        field = _records_field(study)
        every = f" (record_every {sizes.record_every})" if field == "record_every" else ""
        advice = "record less often (a larger record_every), or use fewer runs or iterations"
        return StudyError(
            f"{where}, field {field!r}: {need}, {have}; the curves of {cost.runs} runs × {cost.records} "
            f"records{every} take ≈ {size(term)}: "
            f"{advice if field == 'record_every' else 'use fewer runs or iterations'}"
        )
    return StudyError(
        f"{where}, field 'conditions': {need}, {have}; a chunk holds at least one seed of each of the "
        f"{len(study.conditions)} conditions: use fewer conditions, or a smaller --max-runs-per-chunk"
    )


def _summed(*parts: dict) -> dict:
    total: dict = {}
    for part in parts:
        for name, value in part.items():
            total[name] = total.get(name, 0.0) + value
    return total


def check(
    study: ResolvedStudy, cost: Estimate, available: float, source: str, host: tuple[float, str] | None = None
) -> list[str]:
    """Refuse (StudyError) what cannot fit; else the lines to print (maybe none).

    available, source: the memory the chunk runs in (the host's on CPU, the device's otherwise);
    host: the host's memory and its source, for the results, where they differ (default: the same).
    """
    chunk = f"one chunk of {cost.runs_per_chunk} runs"
    if cost.on_cpu:  # one memory holds a chunk and the results so far
        peaks = [
            (
                f"{chunk} needs",
                cost.chunk_bytes + cost.results_bytes,
                ", the study's results included",
                (available, source),
                _summed(cost.terms, cost.results_terms),
            )
        ]
    else:
        peaks = [
            (f"{chunk} needs", cost.chunk_bytes, "", (available, source), cost.terms),
            ("the study's results need", cost.results_bytes, "", host or (available, source), cost.results_terms),
        ]
    for what, need, note, (have, have_source), terms in peaks:
        if need > have:
            driver = max(terms, key=terms.get)
            raise _refusal(
                study,
                cost,
                driver,
                f"{what} ≈ {size(need)} (estimated{note})",
                f"this machine has {size(have)} ({have_source})",
                terms[driver],
            )
    if cost.seconds is not None and cost.seconds > SAY_TIME_ABOVE:
        records = f" of {cost.records} records each" if records_per_iteration(study.sizes) > 1 else ""
        return [
            f"estimated run time ≈ {duration(cost.seconds)} for {cost.runs} runs{records}, compilation not included "
            "(a rough model calibrated on a 2-core CPU and scaled to this one's speed; engine/host/estimate.py); "
            f"peak memory ≈ {size(cost.chunk_bytes + cost.results_bytes)}"
        ]
    return []


def estimate_or_refuse(resolved: ResolvedStudy, max_runs_per_chunk: int | None = None, devices=None) -> list[str]:
    """Refuse what cannot fit this machine (StudyError), else what to say about its cost: the check
    `coevo run` and `coevo bench` make before compiling anything."""
    import jax

    devices = list(devices or jax.local_devices())
    on_cpu = devices[0].platform == "cpu"
    max_runs = chunk_size_rule(on_cpu, max_runs_per_chunk)
    slowdown = machine_slowdown() if on_cpu else 1.0
    cost = estimate(resolved, max_runs_per_chunk=max_runs, n_devices=len(devices), on_cpu=on_cpu, slowdown=slowdown)
    host = None if on_cpu else available_memory()
    return check(resolved, cost, *available_memory(devices), host=host)
