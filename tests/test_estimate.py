"""Fail fast on impossible sizes: memory and time are estimated before
anything compiles; what cannot fit is refused naming the knob, a long study says how long."""

import math
import time

import pytest

from engine.cli.main import main
from engine.host.estimate import GIB, available_memory, check, estimate
from engine.host.study import StudyError, resolve
from studies.blog import STUDY as BLOG


def cost(study: dict, seeds=None, max_runs: int = 256):
    resolved = resolve(study, seeds)
    return resolved, estimate(resolved, max_runs_per_chunk=max_runs, n_devices=2, on_cpu=True)


def one(conditions: dict, seeds=(0, 1), **base) -> dict:
    return {"name": "sizes", "seeds": list(seeds), "base": base, "conditions": conditions}


def refused(study: dict, available: float, seeds=None) -> str:
    resolved, estimated = cost(study, seeds)
    with pytest.raises(StudyError) as caught:
        check(resolved, estimated, available, "a test's memory")
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_a_million_judges_is_refused_at_once_naming_the_knob():
    started = time.perf_counter()
    message = refused(one({"ensemble": {"n_judges": 10**6}, "baseline": {}}), available=64 * GIB)
    assert time.perf_counter() - started < 1
    assert message.startswith("study 'sizes', condition 'ensemble', field 'n_judges': one chunk of 4 runs needs ≈")
    assert "TiB (estimated), this machine has 64.0 GiB (a test's memory)" in message and "fewer judges" in message


def test_a_huge_batch_is_refused_naming_batch_size():
    message = refused(one({"baseline": {}}, batch_size=2**28), available=64 * GIB)
    assert "field 'batch_size'" in message and "smaller batch" in message


def test_many_conditions_are_refused_naming_the_chunk():
    conditions = {f"c{i}": {"lr_policy": 1e-4 * (1 + i)} for i in range(5000)}
    message = refused(one(conditions, seeds=[0]), available=4 * GIB)
    assert "field 'conditions'" in message and "at least one seed of each of the 5000 conditions" in message


def test_curves_that_cannot_be_held_are_refused_naming_n_iterations():
    message = refused(one({"baseline": {}}, n_iterations=2**31 - 1), available=64 * GIB)
    assert "field 'n_iterations'" in message and "fewer runs or iterations" in message


def test_a_million_runs_are_estimated_at_once():
    started = time.perf_counter()
    resolved, estimated = cost(one({"baseline": {}}), seeds=range(10**6))
    lines = check(resolved, estimated, 16 * GIB, "a test's memory")
    assert time.perf_counter() - started < 30  # resolving 10⁶ seeds is linear; estimating is arithmetic
    assert estimated.runs_per_chunk == 256 and estimated.chunk_bytes < 16 * GIB
    assert len(lines) == 1 and lines[0].startswith("estimated run time ≈ ") and "days for 1000000 runs" in lines[0]


def test_the_published_study_is_estimated_near_its_measured_cost():
    """85 runs: 64 s of run time and 3.7 GiB peak RSS measured on the 2-core CPU (README, Speed)."""
    _, estimated = cost(BLOG)
    assert 30 < estimated.seconds < 130
    assert 2 * GIB < estimated.chunk_bytes < 5 * GIB


def test_a_short_study_says_nothing():
    resolved, estimated = cost(one({"baseline": {}}, steps_per_iter=6, n_iterations=3))
    assert check(resolved, estimated, 16 * GIB, "a test's memory") == []


def test_chunks_follow_max_runs_per_chunk():
    assert cost(BLOG, seeds=range(100), max_runs=17)[1].runs_per_chunk == 17  # one seed of every condition
    assert cost(BLOG, seeds=range(100), max_runs=4096)[1].runs_per_chunk == 1700


def test_available_memory_is_a_positive_number_with_its_source():
    available, source = available_memory()
    assert 0 < available < math.inf and source


def test_coevo_run_prints_the_estimate_before_compiling(tmp_path, printed_before_running):
    source = tmp_path / "long.py"
    source.write_text(f"STUDY = {one({'baseline': {}})!r}\n")
    assert main(["run", str(source), "--seeds", "0-99999", "--out", str(tmp_path / "x.nc"), "--quiet"]) == 130
    seen = [printed.out for printed in printed_before_running]
    assert len(seen) == 1 and "estimated run time ≈ " in seen[0] and "for 100000 runs" in seen[0]
