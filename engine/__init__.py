"""The exact lab for judge–policy co-evolution.

world → models → one step → scan → vmap → Dataset:
`engine.core` (world, models, exact sums), `engine.mechanisms`, `engine.loop`, `engine.host`, `engine.cli`
(docs/ARCHITECTURE.md).

Importing `engine` is light (no JAX): the command line installs its Ctrl-C / SIGTERM
handling before anything heavy loads. `engine.run_study` and the other names below load
on first use.
"""

import importlib

from engine import numerics

numerics.pin()  # portable float bits (engine/numerics.py), before any computation

_PUBLIC = {
    "StudyError": "engine.host.study",
    "resolve": "engine.host.study",
    "load": "engine.host.results",
    "per_iteration": "engine.host.results",
    "save": "engine.host.results",
    "run_study": "engine.host.runner",
    "grid": "engine.host.grid",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    """A public name, or a sub-package (`engine.host` after a bare `import engine`), on first use."""
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
