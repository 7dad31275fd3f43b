"""Ctrl-C / SIGTERM during a run: no partial file, and a message saying what was lost."""

import signal
import subprocess
import sys
import time


def test_sigterm_during_a_run_leaves_no_file(tmp_path):
    study = tmp_path / "slow.py"
    study.write_text(
        'STUDY = {"name": "slow", "seeds": [0, 1], "base": {"steps_per_iter": 200, "n_iterations": 50},'
        ' "conditions": {"baseline": {}}}\n'
    )
    out = tmp_path / "slow.nc"
    process = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "run", str(study), "--out", str(out), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert "2 runs" in process.stdout.readline()  # validated; now compiling or running
    time.sleep(2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130
    assert "interrupted: nothing written" in stderr and "2 runs" in stderr
    assert list(tmp_path.iterdir()) == [study]
