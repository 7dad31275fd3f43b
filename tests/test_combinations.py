"""No silent different experiment: a knob combination that would make a
knob a no-op or change what it means is refused, or resolves with a warning that `coevo run`
prints and the Dataset keeps in attrs['warnings']."""

import numpy as np
import pytest

from engine.cli.main import main
from engine.host.results import make_dataset
from engine.host.study import StudyError, resolve
from engine.knobs import KNOBS, STUDY_KNOBS
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
    "a score grid no judge score can reach": (
        study(update_rule="dpo", score_grid=1e30),
        "score_grid",
        ["1e+30 > 2 x 3.3e+07", "(-1, 1)", "flagged diverged", "every dpo pair ties", "never takes a step"],
    ),
    "a record interval set in base that does not divide the iteration": (
        study({"steps_per_iter": 20, "record_every": 7}),
        "record_every",
        ["must divide steps_per_iter (20)", "got 7"],
    ),
}


@pytest.mark.parametrize(("given", "field", "words"), ERRORS.values(), ids=ERRORS)
def test_refused(given, field, words):
    with pytest.raises(StudyError) as caught:
        resolve(given)
    message = str(caught.value)
    assert message.startswith("study 'combo'") and f"field {field!r}" in message and "\n" not in message
    if field in STUDY_KNOBS:  # set in base: the message names no condition
        assert message.startswith(f"study 'combo', field {field!r}"), message
    for word in words:
        assert word in message, message


META = {"meta_holdout_fraction": 0.05}
JUDGE_META = {"meta_source": "judge", "meta_update_every": 10}  # a meta-judge, meta step every 10
SHORT = {"steps_per_iter": 20}
# name -> (study, {field: words in its warning}): exactly these fields are warned about, once each
WARNINGS = {
    "judge cadence beyond an iteration": (
        study(SHORT, judge_update_every=50),
        {"judge_update_every": ["50 > steps_per_iter 20", "never updates", "bit-identical to freeze_judge"]},
    ),
    "judge cadence beyond an iteration, held-out meta": (
        study(SHORT, judge_update_every=50, meta_update_every=10, **META),
        {"judge_update_every": ["only the held-out meta step updates it", "bit-identical to freeze_judge"]},
    ),
    "judge cadence beyond an iteration, meta-judge": (
        study(SHORT, judge_update_every=50, **JUDGE_META),
        {"judge_update_every": ["meta-judge's meta steps still update it", "unlike freeze_judge"]},
    ),
    "judge cadence not dividing an iteration": (
        study(SHORT, judge_update_every=7),
        {"judge_update_every": ["not a multiple of 7", "2 times per iteration"]},
    ),
    "meta cadence beyond an iteration": (
        study(SHORT, meta_update_every=200, **META),
        {"meta_update_every": ["200 > steps_per_iter 20", "meta check never runs", "meta_judge_accuracy"]},
    ),
    "meta-judge cadence beyond an iteration": (
        study(SHORT, meta_source="judge", meta_update_every=200),
        {"meta_update_every": ["200 > steps_per_iter 20", "meta step never runs", "meta_agreement is NaN"]},
    ),
    "meta cadence not dividing an iteration": (
        study(SHORT, meta_update_every=3, **META),
        {"meta_update_every": ["not a multiple of 3", "6 times per iteration"]},
    ),
    "reset beyond the run": (study({"n_iterations": 4}, reset_every=5), {"reset_every": ["5 > n_iterations 4"]}),
    "holdout without a meta cadence": (study(**META), {"meta_holdout_fraction": ["no effect", "meta is off"]}),
    "threshold without a meta cadence": (
        study(meta_accuracy_threshold=0.9),
        {"meta_accuracy_threshold": ["no effect", "meta is off"]},
    ),
    "threshold 0": (
        study(meta_update_every=10, meta_accuracy_threshold=0.0, **META),
        {"meta_accuracy_threshold": ["0: no accuracy is below it", "never trains the judge"]},
    ),
    "threshold with a meta step that never runs": (
        study(SHORT, meta_update_every=200, meta_accuracy_threshold=0.5, **META),
        {"meta_update_every": ["never runs"], "meta_accuracy_threshold": ["no effect", "200 > steps_per_iter 20"]},
    ),
    "pretraining budget not a multiple of its block": (
        study({"pretrain_check_every": 30, "pretrain_max_steps": 100}),
        {"pretrain_max_steps": ["up to 120 steps"]},
    ),
    "frozen with an anchor": (
        study(freeze_judge=True, anchor_fraction=0.1),
        {"anchor_fraction": ["no effect", "freeze_judge is true"]},
    ),
    "frozen with resets": (
        study(freeze_judge=True, reset_every=2),
        {"reset_every": ["no effect", "freeze_judge is true", "meta is off"]},
    ),
    "frozen with a judge cadence": (
        study(freeze_judge=True, judge_update_every=5),
        {"judge_update_every": ["no effect", "freeze_judge is true"]},
    ),
    "frozen with meta": (
        study(freeze_judge=True, meta_update_every=10, **META),
        {"meta_update_every": ["meta step still updates the judge", "as in the reference"]},
    ),
    "frozen with meta whose threshold is 0": (
        study(freeze_judge=True, meta_update_every=10, meta_accuracy_threshold=0.0, **META),
        {"meta_accuracy_threshold": ["never trains the judge"]},
    ),
    # the meta-judge (meta_source judge)
    "frozen with a meta-judge": (
        study(freeze_judge=True, **JUDGE_META),
        {"meta_update_every": ["meta-judge's labels never update the judge", "only measure meta_agreement"]},
    ),
    "threshold 0 under a meta-judge": (
        study(meta_accuracy_threshold=0.0, **JUDGE_META),
        {"meta_accuracy_threshold": ["no effect", "meta_source is judge"]},
    ),
    "held-out fraction under a meta-judge": (
        study(**META, **JUDGE_META),
        {"meta_holdout_fraction": ["no effect", "meta_source is judge"]},
    ),
    "meta_source judge without a meta cadence": (
        study(meta_source="judge"),
        {"meta_source": ["no effect", "meta is off (meta_update_every 0)"]},
    ),
    "meta_pairs without a meta cadence": (study(meta_pairs=8), {"meta_pairs": ["no effect", "meta is off"]}),
    "meta_pairs under held-out meta": (
        study(meta_pairs=8, meta_update_every=10, **META),
        {"meta_pairs": ["no effect", "meta_source is holdout"]},
    ),
    "meta_select under held-out meta": (
        study(meta_select="random", meta_update_every=10, **META),
        {"meta_select": ["no effect", "meta_source is holdout"]},
    ),
    "meta_learns without a meta cadence": (study(meta_learns=True), {"meta_learns": ["no effect", "meta is off"]}),
    "meta_select labelling the whole batch": (
        study({"batch_size": 16}, meta_select="random", meta_pairs=16, **JUDGE_META),
        {"meta_select": ["no effect", "meta_pairs 16 equals batch_size"]},
    ),
    "meta_pairs with a meta step that never runs": (
        study(SHORT, meta_source="judge", meta_update_every=200, meta_pairs=8),
        {"meta_update_every": ["never runs"], "meta_pairs": ["no effect", "200 > steps_per_iter 20"]},
    ),
    # what a frozen judge makes no-ops
    "frozen with a judge anchor": (
        study(freeze_judge=True, judge_anchor=1.0),
        {"judge_anchor": ["no effect", "no judge step ever runs", "freeze_judge is true"]},
    ),
    "frozen with a judge anchor and a meta-judge": (
        study(freeze_judge=True, judge_anchor=1.0, **JUDGE_META),
        {
            "judge_anchor": ["no effect", "a frozen judge takes no meta-judge-labelled step"],
            "meta_update_every": ["only measure meta_agreement"],
        },
    ),
    "frozen with a learning meta-judge": (
        study(freeze_judge=True, meta_learns=True, **JUDGE_META),
        {"meta_learns": ["no effect", "freeze_judge is true"], "meta_update_every": ["only measure"]},
    ),
    "frozen with a judge rate that pretraining does not use": (
        study(freeze_judge=True, lr_judge_pretrain=3e-4, lr_judge=1e-3),
        {"lr_judge": ["no effect", "lr_judge_pretrain sets pretraining's rate", "freeze_judge is true"]},
    ),
    "frozen with resets and a meta-judge that cannot learn": (
        study(freeze_judge=True, reset_every=2, meta_learns=True, **JUDGE_META),
        {"reset_every": ["no effect"], "meta_learns": ["no effect"], "meta_update_every": ["only measure"]},
    ),
    "an anchor whose judge steps never run": (
        study(SHORT, judge_update_every=50, anchor_fraction=0.1),
        {
            "judge_update_every": ["never updates"],
            "anchor_fraction": ["no effect", "judge_update_every 50 > steps_per_iter 20"],
        },
    ),
    # the policy's rules
    "kl_estimator without a KL penalty": (study(kl_estimator="k1"), {"kl_estimator": ["no effect", "kl_penalty is 0"]}),
    "score_grid under reinforce": (study(score_grid=0.5), {"score_grid": ["no effect", "uses reinforce"]}),
    "score_grid coarser than the pretrained judge's scores": (
        study(update_rule="dpo", score_grid=10.0),
        {"score_grid": ["10 > 2 x 4.22", "round to 0", "nearly every dpo pair ties and is dropped"]},
    ),
    "dpo_reference with one iteration": (
        study({"n_iterations": 1}, update_rule="dpo", dpo_reference="initial"),
        {"dpo_reference": ["no effect", "n_iterations is 1", "both references are π₀"]},
    ),
}


@pytest.mark.parametrize(("given", "expected"), WARNINGS.values(), ids=WARNINGS)
def test_warned(given, expected):
    warnings = resolve(given).warnings
    fields = [next(f for f in KNOBS if f"field {f!r}:" in warning) for warning in warnings]
    assert sorted(fields) == sorted(expected), warnings
    for field, warning in zip(fields, warnings):
        assert warning.startswith("study 'combo'") and "\n" not in warning
        for word in expected[field]:
            assert word in warning, warning


# name -> (study, the only warnings' fields): knobs these combinations still read are not warned about
READ = {
    "judge rate of a frozen judge, pretraining with it": (study(freeze_judge=True, lr_judge=1e-3), []),
    "judge rate of a frozen judge that held-out meta trains": (
        study(freeze_judge=True, lr_judge_pretrain=3e-4, lr_judge=1e-3, meta_update_every=10, **META),
        ["meta_update_every"],
    ),
    "judge anchor of a frozen judge that held-out meta trains": (
        study(freeze_judge=True, judge_anchor=1.0, meta_update_every=10, **META),
        ["meta_update_every"],
    ),
    "judge anchor on the meta-judge's labelled steps": (
        study(SHORT, judge_update_every=50, judge_anchor=1.0, **JUDGE_META),
        ["judge_update_every"],
    ),
    "resets of a frozen judge that held-out meta trains": (
        study(freeze_judge=True, reset_every=2, meta_update_every=10, **META),
        ["meta_update_every"],
    ),
    "resets of a learning meta-judge": (study(reset_every=2, meta_learns=True, **JUDGE_META), []),
    "meta_select with fewer pairs than the batch": (study(meta_select="random", **JUDGE_META), []),
    "score_grid finer than the pretrained judge's scores": (study(update_rule="dpo", score_grid=1.0), []),
    "a planted bias widens the target": (study(update_rule="dpo", score_grid=10.0, planted_bias=3.0), []),
}


@pytest.mark.parametrize(("given", "fields"), READ.values(), ids=READ)
def test_what_the_run_reads_is_not_warned_about(given, fields):
    warnings = resolve(given).warnings
    assert sorted(next(f for f in KNOBS if f"field {f!r}:" in w) for w in warnings) == sorted(fields), warnings
    assert not any("has no effect" in warning for warning in warnings), warnings


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
