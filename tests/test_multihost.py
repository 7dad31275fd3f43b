"""Two processes joined with jax.distributed (one CPU device each) equal one process with two devices."""

import os
import socket
import subprocess
import sys

import xarray as xr

import engine

STUDY = (
    'STUDY = {"name": "mh", "seeds": [0, 1, 2], "base": {"steps_per_iter": 5, "n_iterations": 2,'
    ' "judge_init_alignment": 0.5}, "conditions": {"baseline": {}, "asym_2": {"judge_update_every": 2}}}\n'
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one_process_with_two_devices(tmp_path):
    study = tmp_path / "mh.py"
    study.write_text(STUDY)
    coordinator = f"localhost:{free_port()}"
    env = {**os.environ, "COEVO_CPU_DEVICES": "1"}

    def coevo(*args, **kwargs):
        return subprocess.Popen([sys.executable, "-m", "engine.cli", "run", str(study), "--quiet", *args], **kwargs)

    cluster = [
        coevo(
            "--out",
            str(tmp_path / "multi.nc"),
            "--coordinator",
            coordinator,
            "--num-processes",
            "2",
            "--process-id",
            str(i),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for i in (0, 1)
    ]
    for process in cluster:
        assert process.wait(timeout=300) == 0, process.stderr.read()
    single = coevo("--out", str(tmp_path / "single.nc"), stdout=subprocess.DEVNULL)
    assert single.wait(timeout=300) == 0
    multi, one = engine.load(tmp_path / "multi.nc"), engine.load(tmp_path / "single.nc")
    xr.testing.assert_identical(multi.drop_attrs(), one.drop_attrs())
