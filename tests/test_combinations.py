"""No silent different experiment: a knob combination that would make a
knob a no-op or change what it means is refused, or resolves with a warning that `coevo run`
prints and the Dataset keeps in attrs['warnings']."""

import numpy as np
import pytest

from engine.cli.main import main
from engine.host.results import make_dataset
from engine.host.study import StudyError, resolve
from engine.loop.diagnostics import METRICS
from studies.blog import STUDY as BLOG


def study(base=None, **condition) -> dict:
    return {"name": "combo", "seeds": [0], "base": base or {}, "conditions": {"c": condition}}


# name -> (study, field named, words in the message)
ERRORS = {
    "batch of one": (study({"batch_size": 1}), "batch_size", ["advantage", "exactly 0", "at least 2"]),
    "pretraining block beyond its budget": (
        study({"pretrain_check_every": 100, "pretrain_max_steps": 20}),
        "pretrain_check_every",
        ["100 > pretrain_max_steps 20", "would run 100 steps"],
    ),
    "learning rate 0 in float32": (study(lr_policy=1e-50), "lr_policy", ["rounds to 0", "float32"]),
    "learning rate subnormal in float32": (study(lr_judge=1e-40), "lr_judge", ["rounds to 0", "subnormal"]),
    "learning rate inf in float32": (study(lr_policy=1e39), "lr_policy", ["overflows float32"]),
    "regulariser 0 in float32": (study(entropy_regulariser=1e-46), "entropy_regulariser", ["rounds to 0"]),
    "transition inf in float32": (study(transition_alpha=3.5e38), "transition_alpha", ["overflows float32"]),
    "meta cadence without holdout": (study(meta_update_every=10), "meta_holdout_fraction", ["held-out pair"]),
}


@pytest.mark.parametrize(("given", "field", "words"), ERRORS.values(), ids=ERRORS)
def test_refused(given, field, words):
    with pytest.raises(StudyError) as caught:
        resolve(given)
    message = str(caught.value)
    assert message.startswith("study 'combo'") and f"field {field!r}" in message and "\n" not in message
    for word in words:
        assert word in message, message


META = {"meta_holdout_fraction": 0.05}
# name -> (study, field named, words in the warning)
WARNINGS = {
    "judge cadence beyond an iteration": (
        study({"steps_per_iter": 20}, judge_update_every=50),
        "judge_update_every",
        ["50 > steps_per_iter 20", "never updates", "freeze_judge"],
    ),
    "judge cadence not dividing an iteration": (
        study({"steps_per_iter": 20}, judge_update_every=7),
        "judge_update_every",
        ["not a multiple of 7", "2 times per iteration"],
    ),
    "meta cadence beyond an iteration": (
        study({"steps_per_iter": 20}, meta_update_every=200, **META),
        "meta_update_every",
        ["200 > steps_per_iter 20", "never runs"],
    ),
    "meta cadence not dividing an iteration": (
        study({"steps_per_iter": 20}, meta_update_every=3, **META),
        "meta_update_every",
        ["not a multiple of 3", "6 times per iteration"],
    ),
    "reset beyond the run": (
        study({"n_iterations": 4}, reset_every=5),
        "reset_every",
        ["5 > n_iterations 4", "never reset"],
    ),
    "holdout without a meta cadence": (study(**META), "meta_holdout_fraction", ["no effect", "meta is off"]),
    "threshold without a meta cadence": (
        study(meta_accuracy_threshold=0.9),
        "meta_accuracy_threshold",
        ["no effect", "meta is off"],
    ),
    "threshold 0": (
        study(meta_update_every=10, meta_accuracy_threshold=0.0, **META),
        "meta_accuracy_threshold",
        ["never runs"],
    ),
    "pretraining budget not a multiple of its block": (
        study({"pretrain_check_every": 30, "pretrain_max_steps": 100}),
        "pretrain_max_steps",
        ["up to 120 steps"],
    ),
    "frozen with an anchor": (study(freeze_judge=True, anchor_fraction=0.1), "anchor_fraction", ["no effect"]),
    "frozen with resets": (study(freeze_judge=True, reset_every=2), "reset_every", ["no effect"]),
    "frozen with a judge cadence": (
        study(freeze_judge=True, judge_update_every=5),
        "judge_update_every",
        ["no effect"],
    ),
    "frozen with meta": (
        study(freeze_judge=True, meta_update_every=10, **META),
        "meta_update_every",
        ["meta step still updates the judge", "as in the reference"],
    ),
}


@pytest.mark.parametrize(("given", "field", "words"), WARNINGS.values(), ids=WARNINGS)
def test_warned(given, field, words):
    warnings = resolve(given).warnings
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("study 'combo'") and f"field {field!r}" in warnings[0] and "\n" not in warnings[0]
    for word in words:
        assert word in warnings[0], warnings[0]


def test_the_published_study_and_a_baseline_resolve_without_warnings():
    assert resolve(BLOG).warnings == ()
    assert resolve(study()).warnings == ()
    assert resolve(study(meta_update_every=10, **META)).warnings == ()


def test_a_shortened_blog_study_warns_but_runs():
    """Why the cadence cases are warnings: a shortened copy of a real study produces them."""
    warnings = resolve({**BLOG, "base": {"steps_per_iter": 20}}).warnings
    assert len(warnings) == 3 and all("200 > steps_per_iter 20" in w for w in warnings)


def test_warnings_are_kept_in_the_dataset():
    resolved = resolve({**study(**META), "seeds": [0, 1]})
    shape = (1, 2, resolved.sizes.n_iterations + 1)
    arrays = {metric: np.zeros(shape, np.int32 if metric == "top_sequence" else np.float32) for metric in METRICS}
    arrays |= {"healthy": np.ones(shape, bool), "pretrain_steps": np.zeros(shape[:2], np.int32)}
    arrays |= {"pretrain_alignment": np.ones(shape[:2], np.float32)}
    ds = make_dataset(resolved, arrays, {"compile_seconds": 0.0, "run_seconds": 0.0})
    assert ds.attrs["warnings"] == resolved.warnings[0]


def test_coevo_run_prints_warnings_before_compiling(tmp_path, printed_before_running):
    source = tmp_path / "warned.py"
    source.write_text(f"STUDY = {study(**META)!r}\n")
    assert main(["run", str(source), "--out", str(tmp_path / "x.nc"), "--quiet"]) == 130
    assert [printed.err for printed in printed_before_running] == [
        f"coevo: warning: {resolve(study(**META)).warnings[0]}\n"
    ]
