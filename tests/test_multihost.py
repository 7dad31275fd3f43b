"""Two processes joined with jax.distributed (one CPU device each) equal one process with two devices
(this one: conftest gives the test process two CPU devices). The study is test_engine's sharding
study, so the one-process program usually comes from the session's compilation cache."""

import os
import socket
import subprocess
import sys

import jax
import xarray as xr

import engine

CONDITIONS = {"baseline": {}, "asym_2": {"judge_update_every": 2}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one_process_with_two_devices(tmp_path, small):
    one_process = small(CONDITIONS, seeds=[0, 1, 2])
    study = tmp_path / "mh.py"
    study.write_text(f"STUDY = {one_process!r}\n")
    coordinator = f"localhost:{free_port()}"
    env = {**os.environ, "COEVO_CPU_DEVICES": "1"}

    def coevo(*args, **kwargs):
        return subprocess.Popen(
            [sys.executable, "-m", "engine.cli.main", "run", str(study), "--quiet", *args], **kwargs
        )

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
    assert len(jax.devices()) == 2
    engine.save(engine.run_study(one_process), tmp_path / "one.nc")
    multi, one = engine.load(tmp_path / "multi.nc"), engine.load(tmp_path / "one.nc")
    xr.testing.assert_identical(multi.drop_attrs(), one.drop_attrs())
