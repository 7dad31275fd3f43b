"""Test setup: two CPU devices (so sharding is exercised), a private compilation cache,
and small studies that compile quickly.

Strict dtype promotion is not switched on: optax's Adam bias correction raises a weak
float to an int32 step count, which strict mode refuses."""

import os
import signal
import tempfile
from pathlib import Path

os.environ.setdefault("COEVO_CACHE_DIR", tempfile.mkdtemp(prefix="coevo-test-cache-"))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import xarray as xr  # noqa: E402

import engine  # noqa: E402, F401  (before any backend starts: it pins XLA's numerics)

jax.config.update("jax_num_cpu_devices", 2)

# A session started in the background (`pytest &` without job control) inherits Ctrl-C ignored,
# and so would every `coevo` it starts: the interrupt tests send SIGINT as a terminal does, so the
# session takes Ctrl-C back (a Python handler resets to the default in the processes it starts).
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

SMALL = {"steps_per_iter": 6, "n_iterations": 3, "batch_size": 32, "judge_init_alignment": 0.5}


def small_study(conditions: dict, seeds=(0, 1), name: str = "small", **base) -> dict:
    """A study a few seconds long: few steps, small batches, a low pretraining target."""
    return {"name": name, "seeds": list(seeds), "base": {**SMALL, **base}, "conditions": conditions}


@pytest.fixture(scope="session")
def small():
    return small_study


@pytest.fixture
def printed_before_running(monkeypatch, capsys):
    """`coevo run` stops (as by Ctrl-C) where it would start the study; the list this returns
    receives what it printed until then (capsys's (out, err)), one entry per `coevo run`."""
    import engine.cli.main

    seen = []

    def trap(resolved, **kwargs):
        seen.append(capsys.readouterr())
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "run_study", trap)
    monkeypatch.setattr(engine.cli.main, "use_all_cpu_cores", lambda: None)
    return seen


def write_results_file(path: Path, **drop) -> Path:
    """A minimal results file of the shape `coevo run` writes (variables in `drop` left out)."""
    curves = np.zeros((1, 3, 2))
    data = {
        name: (("condition", "seed", "iteration"), curves)
        for name in ("policy_quality", "judge_alignment", "policy_entropy", "judge_perceived_quality")
    }
    data |= {"peak_iteration": (("condition", "seed"), np.zeros((1, 3), int))}
    data |= {"diverged": (("condition", "seed"), np.zeros((1, 3), bool))}
    ds = xr.Dataset({k: v for k, v in data.items() if k not in drop}, coords={"condition": ["baseline"]})
    ds.to_netcdf(path, engine="netcdf4")
    return path


@pytest.fixture(scope="session")
def results_file():
    """`results_file(path, **drop)`: writes a minimal results file (see `write_results_file`), returns path."""
    return write_results_file
