"""The exact lab for judge–policy co-evolution.

world → models → one step → scan → vmap → Dataset:
`engine.world`, `engine.models`, `engine.coevolution`, `engine.program`, `engine.results`.
"""

import jax

# Full float32 matmuls everywhere: on GPUs JAX would otherwise use TF32 (10-bit mantissa)
# for float32 products, and the lab's numbers would silently depend on the hardware.
jax.config.update("jax_default_matmul_precision", "highest")

from engine.results import load, per_iteration, save  # noqa: E402
from engine.runner import run_study  # noqa: E402
from engine.study import StudyError, resolve  # noqa: E402

__all__ = ["StudyError", "load", "per_iteration", "resolve", "run_study", "save"]
