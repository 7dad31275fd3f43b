"""Ctrl-C / SIGTERM at any moment: no partial file, one line saying what was lost, exit 130 / 143."""

import os
import signal
import subprocess
import sys
import time

import pytest

import analysis.report
from engine.cli.main import main

SLOW_IMPORT = (
    "import time\n"
    "print('importing', flush=True)\n"
    "time.sleep(60)\n"
    'STUDY = {"name": "never", "seeds": [0], "conditions": {"baseline": {}}}\n'
)


def slow_study(folder):
    """A study file whose run takes minutes: long enough for any signal to arrive mid-run."""
    study = folder / "slow.py"
    study.write_text(
        'STUDY = {"name": "slow", "seeds": [0, 1], "base": {"steps_per_iter": 200, "n_iterations": 50},'
        ' "conditions": {"baseline": {}}}\n'
    )
    return study


def coevo(*args) -> subprocess.Popen:
    """`coevo ARGS` in a process of its own, on the CPU backend only: JAX's probe for other backends
    can stall for a minute after an early signal and then warns on stderr, which the tests read."""
    return subprocess.Popen(
        [sys.executable, "-m", "engine.cli.main", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )


def test_sigterm_during_a_run_leaves_no_file(tmp_path):
    study = slow_study(tmp_path)
    out = tmp_path / "slow.nc"
    process = coevo("run", study, "--out", out, "--quiet")
    assert "2 runs" in process.stdout.readline()  # validated; now compiling or running
    time.sleep(2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143
    assert stderr.splitlines()[-1].startswith("coevo: terminated (SIGTERM): nothing written to")
    assert "2 runs" in stderr and "Traceback" not in stderr
    assert list(tmp_path.iterdir()) == [study]  # no file, no temporary, no lock


@pytest.mark.parametrize(
    ("signum", "status", "said"), [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")]
)
def test_a_signal_during_the_study_import(tmp_path, signum, status, said):
    study = tmp_path / "slow_import.py"
    study.write_text(SLOW_IMPORT)
    process = coevo("run", study, "--out", tmp_path / "x.nc")
    assert process.stdout.readline() == "importing\n"
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == status
    assert stderr == f"coevo: {said} ({'SIGTERM' if status == 143 else 'Ctrl-C'}): nothing written\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["slow_import.py"]


def test_the_command_line_imports_no_jax_until_its_handlers_are_in_place():
    """`python -m engine.cli.main` runs engine/__init__.py and engine/cli/main.py before main(): both stay light,
    and the full-precision matmul setting still reaches JAX when it loads later."""
    check = (
        "import sys, engine.cli.main\n"
        "assert 'jax' not in sys.modules, 'engine.cli.main imported JAX'\n"
        "import jax\n"
        "assert jax.config.jax_default_matmul_precision == 'highest'\n"
    )
    subprocess.run([sys.executable, "-c", check], check=True)


def wait_for_main(process: subprocess.Popen, timeout: float = 60.0):
    """Wait until the child's `main` runs: its first act is to catch SIGTERM (Linux: the SigCgt
    mask of /proc/PID/status; Python itself catches SIGINT from start-up, so that bit says
    nothing). A signal before that reaches the interpreter's own start-up, which no code of ours
    can catch; waiting for the mask, not a fixed time, keeps the test right on a loaded machine."""
    signum = signal.SIGTERM
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(f"/proc/{process.pid}/status") as status:
            caught = next(line for line in status if line.startswith("SigCgt:"))
        if int(caught.split()[1], 16) >> (signum - 1) & 1:
            return
        time.sleep(0.005)
    raise TimeoutError("the child never reached main()")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/status")
@pytest.mark.parametrize(
    ("signum", "status", "said"),
    [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")],
)
def test_a_signal_in_the_first_seconds(tmp_path, signum, status, said):
    """From the first moment our code runs (JAX importing, backends starting, the study loading,
    compiling): one line, exit 130 / 143, no traceback, nothing written. A signal raised inside JAX's
    import would leave it half-initialised: a swallowed Ctrl-C, an AttributeError, a segfault."""
    study = slow_study(tmp_path)
    for delay in (0.0, 0.3, 1.0, 2.0):
        process = coevo("run", study, "--out", tmp_path / "slow.nc", "--quiet")
        wait_for_main(process)
        time.sleep(delay)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == status, (delay, stderr)
        assert stderr.startswith(f"coevo: {said} (") and stderr.count("\n") == 1, (delay, stderr)
        assert sorted(path.name for path in tmp_path.iterdir()) == ["slow.py"]


SIGNAL_INSIDE_A_GC_CALLBACK = """
import gc, os, signal

def _signal_inside_a_gc_callback(phase, info):
    gc.callbacks.remove(_signal_inside_a_gc_callback)
    os.kill(os.getpid(), signal.{name})
    for _ in range(10_000):  # the Python handler runs here, inside the callback
        pass

gc.callbacks.append(_signal_inside_a_gc_callback)
gc.collect()
STUDY = {{"name": "tiny", "seeds": [0], "base": {{"steps_per_iter": 2, "n_iterations": 1}},
         "conditions": {{"baseline": {{}}}}}}
"""


@pytest.mark.parametrize(
    ("signum", "status", "said"), [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")]
)
def test_a_signal_inside_a_garbage_collection_callback_still_stops_the_run(tmp_path, signum, status, said):
    """Python drops an exception raised inside a gc callback (JAX registers one); the stop must not be
    lost with it, or a Ctrl-C a few seconds in is swallowed and the run ends with 0."""
    study = tmp_path / "gc_signal.py"
    study.write_text(SIGNAL_INSIDE_A_GC_CALLBACK.format(name=signum.name))
    process = coevo("run", study, "--out", tmp_path / "tiny.nc")
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == status, stderr
    assert stderr.startswith(f"coevo: {said} (") and stderr.count("\n") == 1, stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["gc_signal.py"]


def test_ctrl_c_while_drawing_figures_says_what_may_be_written(tmp_path, monkeypatch, capsys, results_file):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(analysis.report, "write_all", interrupted)
    results = results_file(tmp_path / "r.nc")
    assert main(["figures", str(results)]) == 130
    said = f"some outputs next to {results} may be written (each complete, none half-written)"
    assert capsys.readouterr().err == f"coevo: interrupted (Ctrl-C): {said}\n"


SIGNAL_AT_EVERY_WRITE = """
import os, signal, sys

import engine.cli.main


class SignalAtEveryWrite:
    '''stderr that receives {later} before every write: a signal arriving while the stop's line prints.'''

    def __init__(self, stream):
        self.stream = stream

    def write(self, text):
        for name in {later}:
            os.kill(os.getpid(), getattr(signal, name))
            for _ in range(10_000):  # its handler runs here, inside the write
                pass
        return self.stream.write(text)

    def flush(self):
        self.stream.flush()


sys.stderr = SignalAtEveryWrite(sys.stderr)
sys.argv = ["coevo", "run", sys.argv[1], "--out", sys.argv[2]]
sys.exit(engine.cli.main.main())
"""

FIRST_SIGNAL_AT_IMPORT = 'import os, signal\nos.kill(os.getpid(), signal.{first})\nSTUDY = {{"name": "x"}}\n'


@pytest.mark.parametrize(
    ("first", "later", "status", "said"),
    [
        ("SIGTERM", ["SIGTERM"], 143, "terminated (SIGTERM)"),
        ("SIGTERM", ["SIGINT", "SIGTERM", "SIGTERM"], 143, "terminated (SIGTERM)"),
        ("SIGINT", ["SIGINT", "SIGTERM"], 130, "interrupted (Ctrl-C)"),
    ],
)
def test_signals_while_the_stop_is_said_change_nothing(tmp_path, first, later, status, said):
    """The first signal decides: more signals, even one at every write of the stop's line (where a
    second exception used to end in a traceback and exit 1), leave one line and its status."""
    study = tmp_path / "stopped.py"
    study.write_text(FIRST_SIGNAL_AT_IMPORT.format(first=first))
    driver = tmp_path / "driver.py"
    driver.write_text(SIGNAL_AT_EVERY_WRITE.format(later=later))
    process = subprocess.run(
        [sys.executable, str(driver), str(study), str(tmp_path / "x.nc")], capture_output=True, text=True, timeout=120
    )
    assert process.returncode == status, process.stderr
    assert process.stderr == f"coevo: {said}: nothing written\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["driver.py", "stopped.py"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/status")
@pytest.mark.parametrize(
    ("spacing", "signals"),
    [(0.0, ["SIGTERM"] * 2), (0.002, ["SIGTERM"] * 5), (0.05, ["SIGTERM"] * 5), (0.002, ["SIGTERM", "SIGINT"] * 3)],
)
def test_a_burst_of_signals_during_compilation(tmp_path, spacing, signals):
    """As `kill -TERM -- -PGID` on `setsid timeout 90 coevo run ...` (timeout passes its own SIGTERM on):
    several signals while the program compiles: one line, exit 143 (or 130 where a Ctrl-C is among
    them: Python runs the handlers of signals that arrived during one call into XLA in signal-number
    order, SIGINT first), nothing left."""
    study = slow_study(tmp_path)
    out = tmp_path / "slow.nc"
    process = coevo("run", study, "--out", out, "--quiet")
    assert "2 runs" in process.stdout.readline()  # validated, the lock taken; now compiling
    time.sleep(0.5)
    for name in signals:
        process.send_signal(getattr(signal, name))
        time.sleep(spacing)
    _, stderr = process.communicate(timeout=120)
    said = {143: "terminated (SIGTERM)", 130: "interrupted (Ctrl-C)"}
    assert process.returncode in (143 if set(signals) == {"SIGTERM"} else 130, 143), stderr
    assert stderr.startswith(f"coevo: {said[process.returncode]}: nothing written to") and stderr.count("\n") == 1
    assert "Traceback" not in stderr
    assert list(tmp_path.iterdir()) == [study]  # no file, no temporary, no lock
