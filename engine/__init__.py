"""The exact lab for judge–policy co-evolution.

world → models → one step → scan → vmap → Dataset:
`engine.world`, `engine.models`, `engine.coevolution`, `engine.program`, `engine.results`.

Importing `engine` is light (no JAX): the command line installs its Ctrl-C / SIGTERM
handling before anything heavy loads. `engine.run_study` and the other names below load
on first use.
"""

import importlib
import os
import sys

# Full float32 matmuls everywhere: on GPUs JAX would otherwise use TF32 (10-bit mantissa)
# for float32 products, and the lab's numbers would silently depend on the hardware.
# Set before any computation: through the variable JAX reads when it is imported, or at
# once if it already is.
if "jax" in sys.modules:
    sys.modules["jax"].config.update("jax_default_matmul_precision", "highest")
else:
    os.environ["JAX_DEFAULT_MATMUL_PRECISION"] = "highest"

_PUBLIC = {
    "StudyError": "engine.study",
    "resolve": "engine.study",
    "load": "engine.results",
    "per_iteration": "engine.results",
    "save": "engine.results",
    "run_study": "engine.runner",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    """A public name, or a submodule (`engine.results` after a bare `import engine`), on first use."""
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as error:
        if error.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
