"""Test setup: two CPU devices (so sharding is exercised), a private compilation cache,
and small studies that compile quickly.

Strict dtype promotion is not switched on: optax's Adam bias correction raises a weak
float to an int32 step count, which strict mode refuses."""

import os
import tempfile

os.environ.setdefault("COEVO_CACHE_DIR", tempfile.mkdtemp(prefix="coevo-test-cache-"))

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_num_cpu_devices", 2)

SMALL = {"steps_per_iter": 6, "n_iterations": 3, "batch_size": 32, "judge_init_alignment": 0.5}


def small_study(conditions: dict, seeds=(0, 1), name: str = "small", **base) -> dict:
    """A study a few seconds long: few steps, small batches, a low pretraining target."""
    return {"name": name, "seeds": list(seeds), "base": {**SMALL, **base}, "conditions": conditions}


@pytest.fixture(scope="session")
def small():
    return small_study
