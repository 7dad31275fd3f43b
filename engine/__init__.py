"""The exact lab for judge–policy co-evolution.

world → models → one step → scan → vmap → Dataset:
`engine.world`, `engine.models`, `engine.coevolution`, `engine.program`, `engine.results`.
"""

from engine.results import load, save
from engine.runner import run_study
from engine.study import StudyError, resolve

__all__ = ["StudyError", "load", "resolve", "run_study", "save"]
