"""Before compiling: will a study fit this machine's memory, and about how long will it run?

`coevo run` calls `check` after validation and before anything is compiled: a study whose
estimated memory cannot fit is refused with a `StudyError` naming the knob that drives it
(`n_judges` 10⁶ would otherwise fail only after compiling, asking XLA for 4.2 TB), and a study
estimated to run over a minute says so up front. Nothing here compiles or traces anything.

The model is linear and deliberately simple; its constants are peak RSS and run times of
tiny studies measured with `/usr/bin/time -v` on the lab's 2-core CPU (under load), and the
bench records in data/bench_cpu_2core.json:

  memory ≈ BASE                                        (JAX, XLA, compilation)
         + runs per chunk × (PER_RUN + PER_JUDGE_STATE · n_judges)       (every run's state)
         + live runs × (PER_JUDGE_ACTIVE · n_judges + PER_SEQUENCE · batch_size · (1 + n_judges))
         + RESULTS_PER_RECORD · runs · (n_iterations + 1)   (the whole study's curves, kept
                                                             on the host, copied once to save)

Runs advance in sub-batches of at most MAX_SUB_BATCH per device (engine.host.plan), so only
`live runs` = min(runs per chunk, MAX_SUB_BATCH × devices) hold their working buffers at
once (n_judges: the largest of the study). A chunk holds at least one seed of every
condition and at most `max_runs_per_chunk` runs (engine.host.runner). On an accelerator the
same terms without BASE are compared with the device's memory (uncalibrated there).

  time ≈ Σ over runs of inner steps · STEP_SECONDS · (batch_size / 64) · (1 + n_judges) / 2
         + records · n_judges · RECORD_SECONDS              (exact diagnostics: 4096 sequences)

scaled by 2 / (CPU devices); STEP_SECONDS is the bench's baseline (340 runs × 2000 inner
steps in 178 s, pretraining included). Compilation (10-100 s) comes on top. Time is
estimated on CPU only; a GPU runs the published study ≈ 10× faster per run in large batches.
"""

import os
import resource
from dataclasses import dataclass
from pathlib import Path

from engine.host.chunks import seeds_per_chunk
from engine.host.plan import MAX_SUB_BATCH
from engine.host.study import ResolvedStudy, StudyError

MIB = 2**20
GIB = 2**30
# Calibration: peak RSS of `coevo run` on the 2-core CPU (see the module docstring).
BASE = 1.7 * GIB  # 1 baseline run (bench: 1540 MiB); 2 runs, batch 32: 1754 MiB
PER_RUN = 0.7 * MIB  # 2 → 256 runs (batch 32, one judge): +182 MB
PER_JUDGE_STATE = 0.1 * MIB  # a judge's parameters, Adam moments and pretrained copy, ≈ 5k float32 each
PER_JUDGE_ACTIVE = 4.9 * MIB  # 2 runs, batch 32: 1 → 64 judges add 618 MB
PER_SEQUENCE = 0.012 * MIB  # 2 runs, one judge: batch 32 → 1024 adds 46 MB
RESULTS_PER_RECORD = 2 * 4 * 10  # bytes: ~10 float32 values per run and record, held twice
STEP_SECONDS = 0.26e-3  # per run and inner step, baseline (batch 64, one judge), 2 CPU devices
RECORD_SECONDS = 0.01  # per run, record and judge: the exact diagnostics over all 4096 sequences
CALIBRATED_CPU_DEVICES = 2
SAY_TIME_ABOVE = 60.0  # seconds: shorter runs print no estimate


@dataclass(frozen=True)
class Estimate:
    """What a study will cost: memory of its largest chunk, and run time (None off CPU)."""

    runs: int
    runs_per_chunk: int
    chunk_bytes: float  # peak memory while one chunk runs (host on CPU; device otherwise)
    results_bytes: float  # the study's curves on the host
    seconds: float | None
    terms: dict  # the part of chunk_bytes each knob drives: "n_judges", "batch_size", "runs"
    largest_judges: tuple[str, int]  # (condition, n_judges) of the condition with most judges


def estimate(study: ResolvedStudy, *, max_runs_per_chunk: int, n_devices: int, on_cpu: bool) -> Estimate:
    """The model of the module docstring, from the resolved knobs alone."""
    sizes, n_seeds = study.sizes, len(study.seeds)
    per_chunk = seeds_per_chunk(n_seeds, len(study.conditions), max_runs_per_chunk)
    judges = {condition: knobs["n_judges"] for condition, knobs in study.conditions.items()}
    total_judges = sum(judges.values())
    batch = sizes.batch_size
    runs_per_chunk = per_chunk * len(judges)
    live = min(runs_per_chunk, MAX_SUB_BATCH * n_devices)
    most = max(judges.values())
    terms = {
        "runs": runs_per_chunk * PER_RUN,
        "n_judges": per_chunk * total_judges * PER_JUDGE_STATE + live * most * PER_JUDGE_ACTIVE,
        "batch_size": live * PER_SEQUENCE * batch * (1 + most),
    }
    runs = n_seeds * len(judges)
    records = sizes.n_iterations + 1
    results_bytes = RESULTS_PER_RECORD * runs * records
    seconds = None
    if on_cpu:
        steps = sizes.steps_per_iter * sizes.n_iterations
        per_seed = sum(
            steps * STEP_SECONDS * (batch / 64) * (1 + j) / 2 + records * j * RECORD_SECONDS for j in judges.values()
        )
        seconds = n_seeds * per_seed * CALIBRATED_CPU_DEVICES / n_devices
    largest = max(judges.items(), key=lambda item: item[1])
    chunk_bytes = (BASE if on_cpu else 0) + sum(terms.values())
    return Estimate(runs, runs_per_chunk, chunk_bytes, results_bytes, seconds, terms, largest)


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


def check(study: ResolvedStudy, cost: Estimate, available: float, source: str) -> list[str]:
    """Refuse (StudyError) what cannot fit `available` bytes; else the lines to print (maybe none)."""
    where = f"study {study.name!r}"
    if cost.results_bytes > available / 2:
        raise StudyError(
            f"{where}, field 'n_iterations': the curves of {cost.runs} runs × {study.sizes.n_iterations + 1} "
            f"records alone need ≈ {size(cost.results_bytes)}, this machine has {size(available)} ({source}); "
            "use fewer runs or iterations"
        )
    if cost.chunk_bytes > available:
        driver = max(cost.terms, key=cost.terms.get)
        need = f"one chunk of {cost.runs_per_chunk} runs needs ≈ {size(cost.chunk_bytes)} (estimated)"
        have = f"this machine has {size(available)} ({source})"
        if driver == "n_judges":
            condition, n_judges = cost.largest_judges
            raise StudyError(
                f"{where}, condition {condition!r}, field 'n_judges': {need}, {have}; n_judges {n_judges} costs "
                f"≈ {size(PER_JUDGE_ACTIVE)} per judge per run in flight: use fewer judges"
            )
        if driver == "batch_size":
            raise StudyError(
                f"{where}, field 'batch_size': {need}, {have}; batch_size {study.sizes.batch_size} costs "
                f"≈ {size(PER_SEQUENCE)} per sequence per model per run: use a smaller batch"
            )
        raise StudyError(
            f"{where}, field 'conditions': {need}, {have}; a chunk holds at least one seed of each of the "
            f"{len(study.conditions)} conditions: use fewer conditions, or a smaller --max-runs-per-chunk"
        )
    if cost.seconds is not None and cost.seconds > SAY_TIME_ABOVE:
        return [
            f"estimated run time ≈ {duration(cost.seconds)} for {cost.runs} runs, compilation not included "
            "(a rough model calibrated on a 2-core CPU; engine/host/estimate.py); "
            f"peak memory ≈ {size(cost.chunk_bytes)}"
        ]
    return []
