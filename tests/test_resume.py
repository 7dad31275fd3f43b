"""A run that is stopped keeps what it finished, and `coevo run --resume` goes on from there to the same
bits as a run never stopped; a checkpoint is never silently reused, overwritten, or taken by another run."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import xarray as xr

import engine
import engine.cli.main
import engine.host.runner
from engine.cli.main import main
from engine.host.checkpoint import Checkpoint
from engine.host.output import leftover_temporaries

CONDITIONS = {"baseline": {}, "slow": {"judge_update_every": 2}}
MAX_RUNS = 2  # chunks of one seed: three chunks


@pytest.fixture(scope="module")
def study(small):
    """Two records per outer iteration and every record's distributions: all a checkpoint holds."""
    return small(CONDITIONS, seeds=[0, 1, 2], name="resumed", record_every=3, save_distributions="all")


@pytest.fixture(scope="module")
def uninterrupted(study):
    return engine.run_study(study, max_runs_per_chunk=MAX_RUNS)


class StopAfterSaving(Checkpoint):
    """A checkpoint saved after every outer iteration; the run stops (as by Ctrl-C) right after save `stop_at`."""

    def __init__(self, out, stop_at: int):
        super().__init__(out, every=0)
        self.stop_at, self.saves = stop_at, 0

    def save(self, progress):
        super().save(progress)
        self.saves += 1
        if self.saves == self.stop_at:
            raise KeyboardInterrupt


# Three outer iterations, three chunks: saves 1 and 2 within chunk 1, save 3 at its end, and so on;
# none at the end of the last (the results file follows).
STOPS = {
    1: "0 of 3 chunks of seeds, and chunk 1 up to outer iteration 1",
    3: "1 of 3 chunks of seeds",
    5: "1 of 3 chunks of seeds, and chunk 2 up to outer iteration 2",
    8: "2 of 3 chunks of seeds, and chunk 3 up to outer iteration 2",
}


@pytest.mark.parametrize("stop_at", STOPS)
def test_a_stopped_run_resumes_to_the_same_bits(study, uninterrupted, tmp_path, stop_at):
    out = tmp_path / "resumed.nc"
    with pytest.raises(KeyboardInterrupt):
        engine.run_study(study, max_runs_per_chunk=MAX_RUNS, checkpoint=StopAfterSaving(out, stop_at))
    checkpoint = Checkpoint(out)
    assert checkpoint.load().described() == STOPS[stop_at]
    resumed = engine.run_study(study, checkpoint=checkpoint)  # its chunk size is the checkpoint's
    xr.testing.assert_identical(resumed.drop_attrs(), uninterrupted.drop_attrs())
    assert resumed.attrs["max_runs_per_chunk"] == MAX_RUNS
    assert resumed.attrs["run_seconds"] > checkpoint.load().seconds["run_seconds"]  # both sessions'


def study_file(folder: Path, study: dict) -> Path:
    path = folder / f"{study['name']}.py"
    path.write_text(f"STUDY = {study!r}\n")
    return path


@pytest.fixture(scope="module")
def first_save(study, tmp_path_factory) -> bytes:
    """The checkpoint of the study's run, stopped after its first save."""
    out = tmp_path_factory.mktemp("first_save") / "resumed.nc"
    with pytest.raises(KeyboardInterrupt):
        engine.run_study(study, max_runs_per_chunk=MAX_RUNS, checkpoint=StopAfterSaving(out, 1))
    return Path(f"{out}.checkpoint").read_bytes()


@pytest.fixture
def stopped(study, first_save, tmp_path, monkeypatch):
    """A study file and, next to its output, the checkpoint of its stopped run; compiling is an error
    from here on, so a refusal is made before anything is compiled."""
    out = tmp_path / "resumed.nc"
    Path(f"{out}.checkpoint").write_bytes(first_save)

    def compiles(*args):
        raise AssertionError("compiled before refusing")

    monkeypatch.setattr(engine.host.runner, "compile_program", compiles)
    monkeypatch.setattr(engine.cli.main, "use_all_cpu_cores", lambda: None)
    return study_file(tmp_path, study), out


def _altered_engine(out: Path):
    checkpoint = Checkpoint(out)
    progress = checkpoint.load()
    progress.made_by = {**progress.made_by, "git_commit": "0" * 40}
    checkpoint.save(progress)


REFUSALS = {
    "without --resume": ([], None, "an earlier run to this output was stopped and kept what it finished here"),
    "other seeds": (
        ["--resume", "--seeds", "0-1"],
        None,
        "the checkpoint of a run of another study (its seeds differ)",
    ),
    "another layout": (
        ["--resume", "--max-runs-per-chunk", "4"],
        None,
        "written by a run on another layout (max_runs_per_chunk 2 there, 4 here)",
    ),
    "another engine": (
        ["--resume"],
        _altered_engine,
        f"written by a run on another machine or engine (git_commit '{'0' * 40}' there",
    ),
    "unreadable": (["--resume"], lambda out: Path(f"{out}.checkpoint").write_text("x"), "not a readable checkpoint"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_a_checkpoint_is_refused_with_one_line_unless_it_is_this_runs(stopped, capsys, case):
    source, out = stopped
    flags, alter, said = REFUSALS[case]
    if alter:
        alter(out)
    before = Path(f"{out}.checkpoint").read_bytes()
    assert main(["run", str(source), "--out", str(out), "--quiet", *flags]) == 2
    last = capsys.readouterr().err.splitlines()[-1]  # after any warning (an engine with uncommitted changes)
    assert last.startswith(f"coevo: error: {out}.checkpoint: ") and said in last, last
    assert Path(f"{out}.checkpoint").read_bytes() == before  # neither overwritten nor removed
    assert sorted(path.name for path in out.parent.iterdir()) == sorted([source.name, f"{out.name}.checkpoint"])


def test_a_run_killed_after_its_first_checkpoint_resumes_to_the_same_bits(small, tmp_path):
    """`coevo run` in a process of its own, sent SIGTERM once its first checkpoint (after one outer
    iteration: --checkpoint-every 0) is on disk; `--resume` then writes what a run never stopped writes."""
    study = small(CONDITIONS, seeds=range(6), name="killed", n_iterations=2)
    source, out = study_file(tmp_path, study), tmp_path / "killed.nc"
    checkpoint = Path(f"{out}.checkpoint")
    command = [sys.executable, "-m", "engine.cli.main", "run", str(source), "--out", str(out), "--quiet"]
    command += ["--max-runs-per-chunk", str(MAX_RUNS), "--checkpoint-every", "0"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "COEVO_CPU_DEVICES": "2"}  # the devices of this session
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 300
    while not checkpoint.exists():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    said = stderr.splitlines()[-1]
    assert said.startswith(f"coevo: terminated (SIGTERM): nothing written to {out}; what it finished (")
    assert said.endswith(f") is kept in {checkpoint}: add --resume to go on from it")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["killed.nc.checkpoint", "killed.py"]

    resumed = subprocess.run(command + ["--resume"], capture_output=True, text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from {checkpoint}: " in resumed.stdout
    assert sorted(path.name for path in tmp_path.iterdir()) == ["killed.nc", "killed.py"]  # no checkpoint, no lock
    assert not leftover_temporaries(out)
    uninterrupted = engine.run_study(study, max_runs_per_chunk=MAX_RUNS)
    xr.testing.assert_identical(engine.load(out).drop_attrs(), uninterrupted.drop_attrs())
