"""Every knob a study sets is read by the run, or warned about, or the study is refused: a
property over random combinations of knobs, checked by resolving only (nothing compiles).

"Read by the run" is derived from the declarations: a knob without a mechanism
(`Knob.mechanism` None) is read by every run; one with a mechanism is read where that
mechanism runs (`MECHANISMS[...].on`, which says what a frozen judge, meta off or a cadence
that never fires turns off). On top of that, this file states the values the run reads that
make their own mechanism do nothing (a cadence longer than an outer iteration, a reset beyond
the run, a held-out threshold of 0, a dpo score grid coarser than the pretrained judge's
scores); those must be warned about too. The last tests take rules out of
engine/host/combinations.py and show that the property then finds a study that breaks it.
"""

import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

import engine.host.combinations as combinations
from engine.cli.main import main
from engine.host.study import StudyError, resolve
from engine.knobs import DEFAULTS, KNOBS, MECHANISMS, STUDY_KNOBS

INTS = [0, 1, 2, 3, 4, 5, 7, 8, 10, 16, 20, 32, 50, 64, 100, 200]
FLOATS = [0.0, 1e-4, 3e-4, 0.01, 0.05, 0.1, 0.5, 1.0, 3.0, 10.0, 1e3, 1e8]
# the values where knobs meet: the loop's sizes small and varied, so that cadences and batch sizes
# cross; thresholds, fractions and grids at their edges (hypothesis draws the first value most often:
# a common one, refused by nothing)
EDGES = {
    "batch_size": [16, 2, 4, 8, 32, 64, 1],
    "steps_per_iter": [10, 1, 2, 5, 6, 20, 200],
    "n_iterations": [3, 1, 2, 10],
    "record_every": [0, 1, 2, 5, 3],
    "pretrain_check_every": [10, 1, 50],
    "pretrain_max_steps": [100, 50, 5000, 1],
    "judge_update_every": [1, 2, 7, 50],
    "meta_update_every": [10, 0, 1, 5, 200],
    "reset_every": [2, 0, 1, 5, 20],
    "meta_pairs": [8, 1, 16, 64],
    "n_judges": [1, 2, 3],
    "n_candidates": [4, 2, 3, 8],
    "meta_holdout_fraction": [0.05, 0.0, 3e-4, 1e-4],
    "meta_accuracy_threshold": [0.0, 0.5, 0.75, 1.0],
    "score_grid": [10.0, 0.0, 0.5, 1e3, 1e8],
    "anchor_fraction": [0.1, 0.0, 0.05],
    "judge_data_window": [2, 1, 3, 10],
    "oracle_budget": [0, 6, 3, 100, 204, 10_000],
    "oracle_noise": [0.0, 0.5, 1.0, 1e3],
    "oracle_bias": [0.0, 1.0, -1.0, 1e3],
    # small worlds, their edges (a filler token or nk_k outside the world, more than 2^16 sequences)
    "vocab": [8, 2, 4, 3, 16, 300],
    "seq_len": [4, 1, 2, 3, 5, 17],
    "nk_k": [0, 1, 3, 4],
    "world_seed": [42, 0, 7],
}


def in_range(name: str, value) -> bool:
    """Values inside a knob's declared range: out of range is refused by itself (tests/test_validation.py)."""
    knob = KNOBS[name]
    return (
        (not knob.positive or value > 0)
        and (knob.low is None or value >= knob.low)
        and (knob.high is None or value <= knob.high)
    )


def values(name: str):
    knob = KNOBS[name]
    if knob.choices:
        return st.sampled_from(knob.choices)
    if knob.kind is bool:
        return st.booleans()
    candidates = EDGES.get(name, INTS if knob.kind is int else FLOATS)
    return st.sampled_from([value for value in candidates if in_range(name, value)])


@st.composite
def studies(draw):
    """One condition: some study knobs in base, some run and group knobs, each at a random value."""
    base = draw(st.fixed_dictionaries({}, optional={name: values(name) for name in STUDY_KNOBS}))
    others = [name for name in KNOBS if name not in STUDY_KNOBS]
    condition = draw(st.fixed_dictionaries({}, optional={name: values(name) for name in others}))
    return {"name": "random", "seeds": [0], "base": base, "conditions": {"c": condition}}


def read_by_the_run(name: str, knobs: dict) -> bool:
    mechanism = KNOBS[name].mechanism
    return mechanism is None or MECHANISMS[mechanism].on(knobs)


def makes_its_mechanism_do_nothing(name: str, knobs: dict) -> bool:
    """Values the run reads that make their own mechanism do nothing, or almost nothing."""
    steps = knobs["steps_per_iter"]
    if name == "judge_update_every":  # a judge that is not frozen never steps on its own
        return knobs[name] > steps
    if name == "meta_update_every":
        return knobs[name] > steps
    if name == "reset_every":
        return knobs[name] > knobs["n_iterations"]
    if name == "meta_accuracy_threshold":
        return knobs[name] == 0
    if name == "score_grid":  # scores of a judge fitted to its pretraining target all round to 0
        return knobs[name] > 2 * combinations.pretraining_target_extent(knobs)
    if name == "judge_data_window":  # the window holds every iteration: accumulate's mixture
        return knobs[name] >= knobs["n_iterations"]
    if name == "oracle_budget":  # no q*-labelled step fits it, or it never binds
        costs = combinations.oracle_step_costs(knobs)
        never_fits = all(cost > knobs[name] for _, cost, _ in costs)
        return knobs[name] > 0 and (never_fits or knobs[name] >= sum(cost * most for _, cost, most in costs))
    return False


def warned_fields(warnings) -> dict:
    fields = {}
    for warning in warnings:
        field = next(name for name in KNOBS if f"field {name!r}:" in warning)
        fields.setdefault(field, []).append(warning)
    return fields


def violations(study: dict) -> list[str]:
    """What breaks the property for one study (empty: it holds)."""
    try:
        resolved = resolve(study)
    except StudyError:
        return []  # refused before compiling: `coevo run` exits 2
    knobs = resolved.conditions["c"]
    warned = warned_fields(resolved.warnings)
    found = []
    for name in KNOBS:
        if knobs[name] == DEFAULTS[name]:
            continue
        if not read_by_the_run(name, knobs) and name not in warned:
            found.append(f"{name} = {knobs[name]!r} is not read by the run, and nothing says so")
        if read_by_the_run(name, knobs) and makes_its_mechanism_do_nothing(name, knobs) and name not in warned:
            found.append(f"{name} = {knobs[name]!r} makes its mechanism do nothing, and nothing says so")
    for name, texts in warned.items():  # a warning cannot say something false
        if any("has no effect" in text for text in texts) and read_by_the_run(name, knobs):
            found.append(f"{name} is read by the run, but a warning says it has no effect: {texts}")
        if len(texts) > 1 and name != "meta_update_every":
            found.append(f"{name} is warned about {len(texts)} times: {texts}")
    return found


PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SEARCH = settings(max_examples=5000, deadline=None, database=None, derandomize=True)


@PROPERTY
@given(study=studies())
def test_every_knob_set_is_read_or_warned_about_or_the_study_refused(study):
    assert violations(study) == [], study


def test_the_studies_drawn_reach_the_rules():
    """The strategy draws studies that resolve, set knobs their mechanism does not read, and that
    the rules warn about: the property is not vacuous."""
    find(studies(), lambda study: "has no effect" in " ".join(warnings_of(study)), settings=SEARCH)
    find(studies(), lambda study: any("never" in warning for warning in warnings_of(study)), settings=SEARCH)
    find(studies(), lambda study: "nearly every dpo pair ties" in " ".join(warnings_of(study)), settings=SEARCH)
    budget = ("so it never runs", "neither ever runs", "never binds")
    find(studies(), lambda study: any(text in " ".join(warnings_of(study)) for text in budget), settings=SEARCH)


def test_a_refused_combination_ends_coevo_run_with_exit_2_before_compiling(tmp_path, printed_before_running, capsys):
    source = tmp_path / "refused.py"
    study = {"name": "refused", "seeds": [0], "conditions": {"c": {"update_rule": "dpo", "score_grid": 1e30}}}
    source.write_text(f"STUDY = {study!r}\n")
    assert main(["run", str(source), "--out", str(tmp_path / "x.nc")]) == 2
    assert printed_before_running == []  # never reached the run
    err = capsys.readouterr().err
    assert err.startswith("coevo: error: study 'refused', condition 'c', field 'score_grid': ") and err.count("\n") == 1


def warnings_of(study) -> tuple:
    try:
        return resolve(study).warnings
    except StudyError:
        return ()


@pytest.mark.parametrize(
    "missing",
    ["mechanism_off_warnings", "cadence_warnings", "value_warnings", "a mechanism's own reason"],
)
def test_the_property_fails_where_a_rule_is_missing(monkeypatch, missing):
    """Take one rule out of engine/host/combinations.py: the property finds a study it then breaks."""
    if missing == "a mechanism's own reason":  # every knob of the judges' training reported, but no other
        original = combinations.mechanism_off_warnings
        monkeypatch.setattr(
            combinations,
            "mechanism_off_warnings",
            lambda knobs: [(f, t) for f, t in original(knobs) if KNOBS[f].mechanism != "judge_training"],
        )
    else:
        monkeypatch.setattr(combinations, missing, lambda knobs: [])
    counterexample = find(studies(), lambda study: bool(violations(study)), settings=SEARCH)
    assert violations(counterexample)
