"""`coevo bench --mechanisms` and `--estimators`: their studies are valid and price what they say they price."""

import engine
from engine.cli.bench import (
    CURVE_POINTS,
    ESTIMATOR_CONDITIONS,
    MECHANISM_CONDITIONS,
    format_estimators,
    format_mechanisms,
    mechanisms_study,
    n_groups,
)
from engine.cli.profile import KINDS, time_by_kind


def test_every_mechanism_study_resolves_and_differs_from_the_baseline_in_its_program():
    baseline = engine.resolve(mechanisms_study(["baseline"], {})).variant("baseline")
    for name in MECHANISM_CONDITIONS:
        resolved = engine.resolve(mechanisms_study([name], {}))
        changed = resolved.variant(name) != baseline or resolved.conditions[name]["meta_update_every"] > 0
        assert changed == (name != "baseline"), name


def test_the_curve_counts_groups_after_sharing():
    names = list(MECHANISM_CONDITIONS)
    # the anchor and the held-out meta step share the baseline's group; each other mechanism adds one
    assert [n_groups(mechanisms_study(names[:k], {})) for k in (1, 2, 3, 4, 5)] == [1, 2, 2, 2, 3]
    assert max(CURVE_POINTS) == len(MECHANISM_CONDITIONS)


def test_the_report_prints_every_mechanism_relative_to_the_baseline():
    single = {
        name: {"compile_s": 10.0, "s_per_run_step": 1e-3 * (i + 1)} for i, name in enumerate(MECHANISM_CONDITIONS)
    }
    curve = {1: {"mechanisms": ["baseline"], "groups": 1, "compile_s": 10.0}}
    text = format_mechanisms({"seeds": 8, "steps_per_iter": 100, "single": single, "curve": curve})
    assert "ensemble_3" in text and "2.00x" in text and "1 mechanisms (1 groups): 10.0 s" in text


def test_the_estimators_report_prices_each_condition_against_both_baselines():
    rows = [
        {"condition": name, "estimator": estimator, "compile_s": 10.0, "us_per_run_step": 100.0 * (i + 1) * factor}
        for i, name in enumerate(ESTIMATOR_CONDITIONS)
        for estimator, factor in (("sampled", 1), ("exact", 20))
    ]
    text = format_estimators({"runs": 8, "steps": 20, "repeats": 5, "rows": rows})
    assert len(text.splitlines()) == 2 + 2 * len(ESTIMATOR_CONDITIONS)
    line = next(line for line in text.splitlines() if line.startswith("asymmetric_10") and "exact" in line)
    assert line.split()[-2:] == ["40.00x", "20.00x"]  # against the sampled baseline, and its own sampled step


def test_time_by_kind_counts_each_operation_without_what_runs_inside_it():
    events = [
        {"ph": "X", "pid": 1, "tid": 1, "ts": 0, "dur": 100, "name": "ThunkExecutor::Execute"},
        {"ph": "X", "pid": 1, "tid": 1, "ts": 0, "dur": 40, "name": "while.3"},  # a loop around ...
        {"ph": "X", "pid": 1, "tid": 1, "ts": 5, "dur": 30, "name": "xor_shift_fusion.1"},  # ... its body
        {"ph": "X", "pid": 1, "tid": 1, "ts": 40, "dur": 20, "name": "dot.7"},
        {"ph": "X", "pid": 1, "tid": 1, "ts": 60, "dur": 10, "name": "bitcast_gather_fusion.2"},
        {"ph": "X", "pid": 1, "tid": 1, "ts": 70, "dur": 5, "name": "wrapped_scatter"},
        {"ph": "X", "pid": 1, "tid": 2, "ts": 0, "dur": 10, "name": "dot_general.1"},  # another thread
        {"ph": "X", "pid": 1, "tid": 2, "ts": 20, "dur": 10, "name": "$python.py:1 call"},
    ]
    shares = time_by_kind(events)
    fused, moved = (kind for kind, _ in KINDS[1:3])
    assert shares == {
        "matrix products": 30 / 85,
        fused: 40 / 85,
        moved: 5 / 85,
        "loops (the PRNG's threefry rounds)": 10 / 85,
    }


def test_against_needs_a_checkout_of_this_project(tmp_path, capsys):
    from engine.cli.main import main

    assert main(["bench", "--against", str(tmp_path)]) == 2
    assert "not a checkout of this project" in capsys.readouterr().err
