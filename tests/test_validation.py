"""Study validation happens before anything is compiled: every bad input gets one clear
message naming the study, the condition and the field, a StudyError (a ValueError) from
`resolve`, exit status 2 from `coevo run`, and nothing written."""

import copy
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import engine
import engine.cli.main
import engine.host.runner
from engine.cli.main import main
from engine.host.study import MAX_NAME_LENGTH, StudyError, resolve
from engine.knobs import DEFAULTS, KNOBS, STUDY_KNOBS

NAME = "probe"
QUICK = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def probe(**top) -> dict:
    """A valid two-condition study; keyword arguments replace top-level keys."""
    study = {
        "name": NAME,
        "description": "a study for validation tests",
        "seeds": [0, 1],
        "base": {"steps_per_iter": 6},
        "conditions": {"ctrl": {}, "treat": {"judge_update_every": 2}},
    }
    return {**study, **top}


def treat(**knobs) -> dict:
    """The probe study with `knobs` set in condition 'treat'."""
    return probe(conditions={"ctrl": {}, "treat": knobs})


def base(**knobs) -> dict:
    """The probe study with `knobs` set in 'base'."""
    return probe(base=knobs)


def without(key: str) -> dict:
    study = probe()
    del study[key]
    return study


def refused(study: dict, seeds=None) -> str:
    with pytest.raises(StudyError) as caught:
        resolve(study, seeds)
    assert isinstance(caught.value, ValueError)
    return str(caught.value)


# (study, condition named in the message or None, field named in the message, other expected substrings)
CASES = {
    # top level
    "unknown top-level key": (probe(seed=[0]), None, "seed", ["unknown top-level key", "did you mean 'seeds'"]),
    "misspelt conditions": (probe(condtions={}), None, "condtions", ["did you mean 'conditions'"]),
    "missing seeds": (without("seeds"), None, "seeds", ["missing"]),
    "missing conditions": (without("conditions"), None, "conditions", ["missing"]),
    "base not a dict": (probe(base=[("lr_policy", 1e-3)]), None, "base", ["expected a dict", "list"]),
    "base None": (probe(base=None), None, "base", ["expected a dict", "NoneType"]),
    "description not a string": (probe(description=3), None, "description", ["expected a string", "int"]),
    # unknown knobs
    "unknown knob in condition": (treat(n_judge=3), "treat", "n_judge", ["unknown knob", "did you mean 'n_judges'"]),
    "unknown knob in base": (base(lr_polcy=1e-3), None, "lr_polcy", ["unknown knob", "did you mean 'lr_policy'"]),
    "unknown knob, nothing close": (treat(zzzz=1), "treat", "zzzz", ["unknown knob", "valid knobs", "n_judges"]),
    "non-string knob name": (probe(conditions={"treat": {7: 1}}), "treat", "7", ["unknown knob"]),
    # wrong types
    "string learning rate": (treat(lr_policy="3e-4"), "treat", "lr_policy", ["expected float", "str"]),
    "float n_judges": (treat(n_judges=2.0), "treat", "n_judges", ["expected an integer", "float"]),
    "numpy float n_judges": (treat(n_judges=np.float64(3)), "treat", "n_judges", ["expected an integer"]),
    "string n_judges": (treat(n_judges="3"), "treat", "n_judges", ["expected int", "str"]),
    "bool for int": (treat(reset_every=True), "treat", "reset_every", ["expected int", "bool"]),
    "numpy bool for int": (treat(meta_update_every=np.bool_(True)), "treat", "meta_update_every", ["expected int"]),
    "bool for float": (treat(lr_judge=False), "treat", "lr_judge", ["expected float", "bool"]),
    "int for bool": (treat(freeze_judge=1), "treat", "freeze_judge", ["true/false"]),
    "string for bool": (treat(freeze_judge="yes"), "treat", "freeze_judge", ["true/false"]),
    "None value": (treat(lr_judge=None), "treat", "lr_judge", ["expected float", "NoneType"]),
    "list value": (treat(anchor_fraction=[0.1]), "treat", "anchor_fraction", ["expected float", "list"]),
    "NaN learning rate": (treat(lr_policy=math.nan), "treat", "lr_policy", ["finite"]),
    "inf learning rate": (treat(lr_judge=math.inf), "treat", "lr_judge", ["finite"]),
    "-inf entropy bonus": (treat(entropy_bonus=-math.inf), "treat", "entropy_bonus", ["finite"]),
    "int too large for a float": (treat(lr_policy=10**400), "treat", "lr_policy", ["finite"]),
    "int too large for int32": (base(n_iterations=2**40), None, "n_iterations", ["2**31"]),
    "huge int for a float, abbreviated": (
        treat(entropy_exact=10**400),
        "treat",
        "entropy_exact",
        ["must be finite, got 1e+400 (an integer of 401 digits)"],
    ),
    "huge int for an int, abbreviated": (
        treat(n_judges=-(10**400)),
        "treat",
        "n_judges",
        ["-1e+400 (an integer of 401 digits)"],
    ),
    "huge seed, abbreviated": (probe(seeds=[0, 10**400]), None, "seeds", ["1e+400 (an integer of 401 digits)"]),
    # values far beyond sense, each bounded in its declaration (engine/knobs.py says why)
    "planted bias overflowing the pretraining target": (
        treat(planted_bias=1e38),
        "treat",
        "planted_bias",
        ["<= 1000.0"],
    ),
    "transition term swamping q*": (treat(transition_alpha=1e4), "treat", "transition_alpha", ["<= 1000.0"]),
    "dpo beta overflowing its loss": (treat(dpo_beta=3e38), "treat", "dpo_beta", ["<= 1000000.0"]),
    "KL weight beyond float32 resolution": (treat(kl_penalty=1e7), "treat", "kl_penalty", ["<= 1000000.0"]),
    "entropy weight beyond float32 resolution": (treat(entropy_exact=1e9), "treat", "entropy_exact", ["<= 1000000.0"]),
    "judge anchor beyond float32 resolution": (treat(judge_anchor=1e30), "treat", "judge_anchor", ["<= 1000000.0"]),
    "entropy bonus beyond float32 resolution": (base(entropy_bonus=1e7), None, "entropy_bonus", ["<= 1000000.0"]),
    "regulariser beyond float32 resolution": (
        treat(entropy_regulariser=1e7),
        "treat",
        "entropy_regulariser",
        ["<= 1000000.0"],
    ),
    # ranges
    "fraction above 1": (treat(anchor_fraction=1.5), "treat", "anchor_fraction", ["<= 1.0", "1.5"]),
    "fraction below 0": (treat(meta_holdout_fraction=-0.1), "treat", "meta_holdout_fraction", [">= 0.0"]),
    "threshold above 1": (treat(meta_accuracy_threshold=2), "treat", "meta_accuracy_threshold", ["<= 1.0"]),
    "alignment above 1": (base(judge_init_alignment=1.01), None, "judge_init_alignment", ["<= 1.0"]),
    "zero judge interval": (treat(judge_update_every=0), "treat", "judge_update_every", ["> 0"]),
    "negative reset interval": (treat(reset_every=-3), "treat", "reset_every", [">= 0"]),
    "negative meta interval": (treat(meta_update_every=-1), "treat", "meta_update_every", [">= 0"]),
    "zero learning rate": (treat(lr_policy=0.0), "treat", "lr_policy", ["> 0"]),
    "negative learning rate": (treat(lr_judge=-1e-3), "treat", "lr_judge", ["> 0"]),
    "zero batch size": (base(batch_size=0), None, "batch_size", ["> 0"]),
    "negative steps per iteration": (base(steps_per_iter=-5), None, "steps_per_iter", ["> 0"]),
    "zero pretraining check interval": (base(pretrain_check_every=0), None, "pretrain_check_every", ["> 0"]),
    "n_judges 0": (treat(n_judges=0), "treat", "n_judges", [">= 1"]),
    "negative n_judges": (treat(n_judges=-2), "treat", "n_judges", [">= 1"]),
    "negative entropy regulariser": (treat(entropy_regulariser=-0.1), "treat", "entropy_regulariser", [">= 0"]),
    # combinations
    "study-wide knob differs": (treat(batch_size=16), "treat", "batch_size", ["equal in every condition", "base"]),
    "record interval set in base that does not divide the iteration": (
        base(steps_per_iter=6, record_every=4),
        None,
        "record_every",
        ["must divide steps_per_iter (6)"],
    ),
    "judge_data not a choice": (treat(judge_data="replace"), "treat", "judge_data", ["'fresh', 'accumulate'"]),
    "zero judge_data window": (treat(judge_data="window", judge_data_window=0), "treat", "judge_data_window", ["> 0"]),
    "negative label noise": (treat(oracle_noise=-0.5), "treat", "oracle_noise", [">= 0.0"]),
    "label bias beyond q*'s scale": (treat(oracle_bias=-1e4), "treat", "oracle_bias", [">= -1000.0"]),
    "negative oracle budget": (treat(oracle_budget=-1), "treat", "oracle_budget", [">= 0"]),
    "meta without holdout pairs": (
        treat(meta_update_every=10, meta_holdout_fraction=0.0001),
        "treat",
        "meta_holdout_fraction",
        ["held-out"],
    ),
    # seeds
    "empty seeds": (probe(seeds=[]), None, "seeds", ["empty"]),
    "duplicate seeds": (probe(seeds=[0, 1, 1]), None, "seeds", ["duplicate", "[1]"]),
    "negative seed": (probe(seeds=[0, -1]), None, "seeds", ["-1"]),
    "seed too large": (probe(seeds=[2**31]), None, "seeds", ["2**31"]),
    "seeds as a string": (probe(seeds="0-4"), None, "seeds", ["expected a list", "str"]),
    "seeds as an int": (probe(seeds=5), None, "seeds", ["expected a list", "int"]),
    "seeds as a set": (probe(seeds={0, 1}), None, "seeds", ["expected a list", "set"]),
    "seeds None": (probe(seeds=None), None, "seeds", ["expected a list"]),
    "float seed": (probe(seeds=[0, 1.0]), None, "seeds", ["integers", "float"]),
    "bool seed": (probe(seeds=[True]), None, "seeds", ["integers", "bool"]),
    # conditions
    "no conditions": (probe(conditions={}), None, "conditions", ["no conditions"]),
    "conditions as a list": (probe(conditions=["ctrl"]), None, "conditions", ["expected a dict"]),
    "duplicate after case-folding": (probe(conditions={"ctrl": {}, "CTRL": {}}), "CTRL", "conditions", ["'ctrl'"]),
    "condition name with a space": (probe(conditions={"my cond": {}}), "my cond", "conditions", ["netCDF"]),
    "condition name with a slash": (probe(conditions={"a/b": {}}), "a/b", "conditions", ["netCDF"]),
    "empty condition name": (probe(conditions={"": {}}), "", "conditions", ["netCDF"]),
    "condition name with a newline": (probe(conditions={"ctrl\n": {}}), "ctrl\n", "conditions", ["netCDF"]),
    "condition name too long": (probe(conditions={"x" * 65: {}}), "x" * 65, "conditions", [f"1-{MAX_NAME_LENGTH}"]),
    "non-ASCII condition name": (probe(conditions={"bäse": {}}), "bäse", "conditions", ["netCDF"]),
    "non-string condition name": (probe(conditions={3: {}}), 3, "conditions", ["must be strings", "int"]),
    "condition knobs not a dict": (probe(conditions={"treat": [1]}), "treat", "conditions", ["expected a dict"]),
}


@pytest.mark.parametrize(("study", "condition", "field", "expected"), list(CASES.values()), ids=list(CASES))
def test_bad_study_is_refused_with_study_condition_and_field(study, condition, field, expected):
    original = copy.deepcopy(study)
    message = refused(study)
    assert f"study {NAME!r}" in message
    if condition is not None:
        assert f"condition {condition!r}" in message
    assert repr(field) in message or f"field {field}" in message
    for text in expected:
        assert text in message, (text, message)
    assert "\n" not in message.replace("\\n", "")  # one line
    assert len(message) < 1000, message  # huge values are abbreviated
    if condition is None:  # a base or top-level value: no condition named
        assert ", condition " not in message, message
    assert str(study) == str(original)  # resolve never mutates its input


@pytest.mark.parametrize(
    ("name", "expected"),
    [(None, "None"), (3, "3"), ("", "''"), ("my study", "'my study'"), ("a/b", "'a/b'"), ("x\n", "'x\\n'")],
)
def test_bad_study_name(name, expected):
    message = refused(probe(name=name))
    assert f"study {expected}" in message and "field 'name'" in message


def test_a_study_must_be_a_dict():
    assert "must be a dict" in refused([("name", NAME)])


def test_bad_seed_override_is_refused():
    assert "duplicate" in refused(probe(), seeds=[3, 3])
    assert "empty" in refused(probe(), seeds=[])
    assert "1-D list of seeds, got a 0-D array" in refused(probe(seeds=np.array(3)))
    assert "at most 1000000" in refused(probe(), seeds=range(1_000_001))


def test_seed_validation_is_linear():
    """100k seeds took 63 s with the quadratic duplicate check; the linear one takes well under a second."""
    started = time.perf_counter()
    assert len(resolve(probe(), seeds=range(100_000)).seeds) == 100_000
    assert "duplicate seeds [7]" in refused(probe(), seeds=[*range(100_000), 7])
    assert time.perf_counter() - started < 10


def test_placeholder_seeds_of_a_chunked_study_stay_valid_int32():
    """Placeholders were max(seeds) + 1, …: past 2**31 - 1 they overflowed int32."""
    seeds = [2**31 - 1, 2**31 - 2, 2**31 - 3, 0, 1]
    chunks = engine.host.chunks.seed_chunks(seeds, n_conditions=1, max_runs=3)
    assert chunks == [[2**31 - 1, 2**31 - 2, 2**31 - 3], [0, 1, 2]]  # 2: the smallest seed not in the study


# ---------------------------------------------------------------- hypothesis

FRACTIONS = sorted(name for name, knob in KNOBS.items() if knob.kind is float and knob.high == 1.0)
POSITIVE_INTS = sorted(name for name, knob in KNOBS.items() if knob.kind is int and (knob.positive or knob.low == 1))
POSITIVE_FLOATS = sorted(name for name, knob in KNOBS.items() if knob.kind is float and knob.positive)


def with_knob(name: str, value) -> tuple[dict, str | None]:
    """A probe study with one knob set where it may be set: study-wide knobs only in 'base'."""
    if name in STUDY_KNOBS:
        return base(**{name: value}), None
    return treat(**{name: value}), "treat"


def test_knob_groups_are_not_empty():
    assert len(FRACTIONS) == 5 and "n_judges" in POSITIVE_INTS and "batch_size" in POSITIVE_INTS
    assert POSITIVE_FLOATS == ["dpo_beta", "lr_judge", "lr_policy"]


@QUICK
@given(
    name=st.sampled_from(FRACTIONS),
    value=st.one_of(
        st.floats(max_value=0.0, exclude_max=True),
        st.floats(min_value=1.0, exclude_min=True),
        st.just(math.nan),
        st.integers(min_value=2),
        st.integers(max_value=-1),
    ),
)
def test_any_fraction_outside_unit_interval_is_refused(name, value):
    study, condition = with_knob(name, value)
    message = refused(study)
    assert f"study {NAME!r}" in message and f"field {name!r}" in message
    assert condition is None or f"condition {condition!r}" in message


@QUICK
@given(
    name=st.sampled_from(FRACTIONS),
    value=st.floats(min_value=0.0, max_value=1.0, width=32, allow_subnormal=False),  # float32 values (see
    # tests/test_combinations.py: a per-run float that rounds to 0 in float32 is refused)
)
def test_any_fraction_inside_unit_interval_is_accepted(name, value):
    study, _ = with_knob(name, value)
    resolved = resolve(study)
    assert resolved.conditions["treat"][name] == value
    assert type(resolved.conditions["treat"][name]) is float


@QUICK
@given(name=st.sampled_from(POSITIVE_INTS), value=st.integers(max_value=0))
def test_any_non_positive_count_or_interval_is_refused(name, value):
    study, condition = with_knob(name, value)
    message = refused(study)
    assert f"field {name!r}" in message and ("> 0" in message or ">= 1" in message)
    assert condition is None or f"condition {condition!r}" in message


# Combinations refused whatever else the study says (tests/test_combinations.py): a batch of one,
# a pretraining block longer than the pretraining budget (default 5000 steps, blocks of 50), a world of
# more than 65,536 sequences (8^6 and beyond at the default vocabulary: tests/test_worlds.py).
REFUSED_COUNTS = {
    "batch_size": range(1, 2),
    "pretrain_check_every": range(5001, 2**31),
    "pretrain_max_steps": range(50),
    "seq_len": range(6, 2**31),
}


@QUICK
@given(name=st.sampled_from(POSITIVE_INTS), value=st.integers(min_value=1, max_value=2**31 - 1))
def test_any_positive_count_is_accepted(name, value):
    assume(value not in REFUSED_COUNTS.get(name, ()))
    study, _ = with_knob(name, value)
    assert resolve(study).conditions["ctrl" if name in STUDY_KNOBS else "treat"][name] == value


@QUICK
@given(name=st.sampled_from(POSITIVE_FLOATS), value=st.floats(max_value=0.0))
def test_any_non_positive_learning_rate_is_refused(name, value):
    message = refused(treat(**{name: value}))
    assert "condition 'treat'" in message and f"field {name!r}" in message


@QUICK
@given(name=st.sampled_from(sorted(KNOBS)), value=st.one_of(st.none(), st.text(), st.lists(st.integers(), max_size=2)))
def test_any_non_number_is_refused_for_every_knob(name, value):
    study, _ = with_knob(name, value)
    assert f"field {name!r}" in refused(study)


@QUICK
@given(
    name=st.sampled_from(sorted(n for n, k in KNOBS.items() if k.kind is int)),
    value=st.floats(allow_nan=True, allow_infinity=True) | st.booleans(),
)
def test_floats_and_bools_are_refused_for_int_knobs(name, value):
    study, _ = with_knob(name, value)
    assert f"field {name!r}" in refused(study)


@QUICK
@given(
    name=st.sampled_from(sorted(n for n, k in KNOBS.items() if k.kind is bool)),
    value=st.integers() | st.floats(),
)
def test_numbers_are_refused_for_bool_knobs(name, value):
    assert "true/false" in refused(treat(**{name: value}))


@QUICK
@given(knob=st.text(min_size=1, max_size=30).filter(lambda text: text not in KNOBS))
def test_any_unknown_knob_name_is_refused(knob):
    message = refused(probe(conditions={"treat": {knob: 1}}))
    assert "unknown knob" in message and "condition 'treat'" in message and repr(knob) in message
    assert "did you mean" in message or "valid knobs" in message


@QUICK
@given(condition=st.from_regex(r"[A-Za-z0-9_.+\-]{1,64}", fullmatch=True))
def test_any_allowed_condition_name_is_accepted(condition):
    assert resolve(probe(conditions={condition: {}})).condition_names == [condition]


def allowed_in_names(character: str) -> bool:
    return character.isascii() and (character.isalnum() or character in "_.+-")


@QUICK
@given(
    prefix=st.from_regex(r"[A-Za-z0-9_]{0,10}", fullmatch=True),
    bad=st.characters(blacklist_categories=("Cs",)).filter(lambda character: not allowed_in_names(character)),
)
def test_any_condition_name_with_a_forbidden_character_is_refused(prefix, bad):
    condition = prefix + bad
    message = refused(probe(conditions={"ctrl": {}, condition: {}}))
    assert f"condition {condition!r}" in message and "netCDF" in message


@QUICK
@given(seeds=st.lists(st.integers(min_value=0, max_value=2**31 - 1), min_size=1, max_size=8, unique=True))
def test_any_distinct_non_negative_seeds_are_accepted(seeds):
    assert resolve(probe(seeds=seeds)).seeds == tuple(seeds)


@QUICK
@given(seeds=st.lists(st.integers(min_value=-(2**40), max_value=2**40), min_size=1, max_size=8))
def test_seeds_with_a_negative_or_a_duplicate_are_refused(seeds):
    bad = any(s < 0 or s >= 2**31 for s in seeds) or len(set(seeds)) < len(seeds)
    if bad:
        assert "field 'seeds'" in refused(probe(seeds=seeds))
    else:
        assert resolve(probe(seeds=seeds)).seeds == tuple(seeds)


# ---------------------------------------------------------------- valid studies


@pytest.mark.parametrize(
    ("module", "n_conditions", "n_seeds"),
    [
        ("blog", 17, 5),
        ("headline", 1, 5),
        ("blog100", 17, 100),
        ("corrections", 5, 5),
    ],
)
def test_shipped_studies_resolve(module, n_conditions, n_seeds):
    study = __import__(f"studies.{module}", fromlist=["STUDY"]).STUDY
    resolved = resolve(study)
    assert resolved.name == module
    assert len(resolved.conditions) == n_conditions and len(resolved.seeds) == n_seeds
    for knobs in resolved.conditions.values():
        assert set(knobs) == set(KNOBS)
    assert resolved.conditions["baseline"] == DEFAULTS
    resolved.to_json()


def test_defaults_are_filled_in_and_overrides_applied():
    resolved = resolve(probe(conditions={"ctrl": None, "treat": {"judge_update_every": 2, "n_judges": np.int64(3)}}))
    assert resolved.conditions["ctrl"] == {**DEFAULTS, "steps_per_iter": 6}
    assert resolved.conditions["treat"] == {**DEFAULTS, "steps_per_iter": 6, "judge_update_every": 2, "n_judges": 3}
    assert type(resolved.conditions["treat"]["n_judges"]) is int
    assert resolved.sizes.steps_per_iter == 6 and resolved.variant("treat").n_judges == 3


def test_numpy_values_resolve_to_plain_python_and_json():
    study = probe(seeds=np.arange(3), base={"lr_policy": np.float32(1e-3), "batch_size": np.int32(16)})
    resolved = resolve(study)
    assert resolved.seeds == (0, 1, 2)
    assert type(resolved.conditions["ctrl"]["lr_policy"]) is float
    assert '"batch_size": 16' in resolved.to_json()


def test_seed_override_and_optional_keys():
    study = probe()
    del study["description"], study["base"]
    assert resolve(study, seeds=range(4)).seeds == (0, 1, 2, 3)


def test_int_is_accepted_for_a_float_knob():
    assert resolve(treat(lr_policy=1)).conditions["treat"]["lr_policy"] == 1.0


# ---------------------------------------------------------------- command line


class Compiled(Exception):
    """Raised by the stand-in for run_study: the CLI got past validation."""


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    """`coevo run ARGS` in-process, in an empty folder, with run_study and save replaced by traps.

    Returns a function that runs the CLI and checks nothing was compiled or written.
    """
    calls = []

    def trap(*args, **kwargs):
        calls.append(args)
        raise Compiled

    for target in (engine, engine.host.runner):
        monkeypatch.setattr(target, "run_study", trap)
    monkeypatch.setattr(engine, "save", trap)
    monkeypatch.setattr(engine.cli.main, "use_all_cpu_cores", lambda *args, **kwargs: None)  # keep the test's devices
    previous = signal.getsignal(signal.SIGTERM)
    monkeypatch.chdir(tmp_path)

    def snapshot():
        return {path: path.read_bytes() if path.is_file() else None for path in tmp_path.rglob("*")}

    def run(*args) -> str:
        before = snapshot()
        code = main(["run", *map(str, args), "--quiet"])
        err = capsys.readouterr().err
        assert code == 2, err
        assert err.startswith("coevo: error: ") and err.count("\n") == 1, err
        assert not calls, "run_study was called: validation came after compilation"
        assert snapshot() == before, "something was written"
        assert not list(tmp_path.rglob("*.tmp"))
        return err

    run.calls = calls
    yield run
    signal.signal(signal.SIGTERM, previous)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


BAD_STUDY = "STUDY = {'name': 'badfile', 'seeds': [0], 'conditions': {'ctrl': {'n_judge': 2}}}\n"
GOOD_STUDY = "STUDY = {'name': 'goodfile', 'seeds': [0], 'conditions': {'ctrl': {}}}\n"


def test_cli_study_file_does_not_exist(cli, tmp_path):
    assert "does not exist" in cli(tmp_path / "missing.py", "--out", tmp_path / "x.nc")


def test_cli_study_name_not_in_studies(cli, tmp_path):
    err = cli("no_such_study", "--out", tmp_path / "x.nc")
    assert "no study named 'no_such_study'" in err and "blog" in err


def test_cli_study_file_without_study(cli, tmp_path):
    path = write(tmp_path / "empty.py", "CONDITIONS = {}\n")
    assert "does not define STUDY" in cli(path, "--out", tmp_path / "x.nc")


def test_cli_study_file_raises_on_import(cli, tmp_path):
    path = write(tmp_path / "boom.py", "raise RuntimeError('boom at import')\n")
    err = cli(path, "--out", tmp_path / "x.nc")
    assert "raised on import" in err and "RuntimeError: boom at import" in err


def test_cli_study_file_with_syntax_error(cli, tmp_path):
    path = write(tmp_path / "broken.py", "STUDY = {\n")
    assert "SyntaxError" in cli(path, "--out", tmp_path / "x.nc")


def test_cli_study_file_with_unknown_knob(cli, tmp_path):
    err = cli(write(tmp_path / "bad.py", BAD_STUDY), "--out", tmp_path / "x.nc")
    assert "study 'badfile', condition 'ctrl', field 'n_judge'" in err and "did you mean 'n_judges'" in err


def test_cli_study_that_is_not_a_dict(cli, tmp_path):
    assert "must be a dict" in cli(write(tmp_path / "notdict.py", "STUDY = [1]\n"), "--out", tmp_path / "x.nc")


def test_cli_out_in_missing_directory(cli, tmp_path):
    study = write(tmp_path / "good.py", GOOD_STUDY)
    err = cli(study, "--out", tmp_path / "nowhere" / "x.nc")
    assert "does not exist" in err and "nowhere" in err
    assert not (tmp_path / "nowhere").exists()


def test_cli_out_under_a_regular_file(cli, tmp_path):
    study = write(tmp_path / "good.py", GOOD_STUDY)
    blocker = write(tmp_path / "afile", "not a directory")
    assert "does not exist" in cli(study, "--out", blocker / "x.nc")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write to any directory")
def test_cli_out_in_read_only_directory(cli, tmp_path):
    study = write(tmp_path / "good.py", GOOD_STUDY)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert "not writable" in cli(study, "--out", locked / "x.nc")
    finally:
        locked.chmod(0o700)


def test_cli_existing_output_without_force(cli, tmp_path):
    study = write(tmp_path / "good.py", GOOD_STUDY)
    existing = write(tmp_path / "x.nc", "previous results")
    assert "--force" in cli(study, "--out", existing)
    assert existing.read_text() == "previous results"


@pytest.mark.parametrize(
    ("seeds", "expected"),
    [
        ("abc", "--seeds 'abc'"),
        ("1-x", "--seeds"),
        ("0,,2", "--seeds"),
        ("1-2-3", "--seeds"),
        ("-1", "--seeds"),
        ("5-2", "empty"),
        ("1,1", "duplicate"),
        ("0,2147483648", "2**31"),
    ],
)
def test_cli_malformed_seeds(cli, tmp_path, seeds, expected):
    study = write(tmp_path / "good.py", GOOD_STUDY)
    assert expected in cli(study, f"--seeds={seeds}", "--out", tmp_path / "x.nc")


def test_cli_valid_study_gets_past_validation(cli, tmp_path):
    """The control: a good study and output path reach run_study (here a trap), once."""
    study = write(tmp_path / "good.py", GOOD_STUDY)
    with pytest.raises(Compiled):
        main(["run", str(study), "--seeds", "0-2", "--out", str(tmp_path / "x.nc"), "--quiet"])
    assert len(cli.calls) == 1 and cli.calls[0][0].seeds == (0, 1, 2)
    assert not (tmp_path / "x.nc").exists()


def test_cli_default_output_folder_is_created(cli, tmp_path):
    with pytest.raises(Compiled):
        main(["run", str(write(tmp_path / "good.py", GOOD_STUDY)), "--quiet"])


def test_cli_out_is_a_directory(cli, tmp_path):
    study = write(tmp_path / "good.py", GOOD_STUDY)
    (tmp_path / "results.nc").mkdir()
    cli(study, "--out", tmp_path / "results.nc", "--force")


def test_coevo_script_exits_with_status_2(tmp_path):
    script = Path(sys.executable).with_name("coevo")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "engine.cli.main"]
    out = tmp_path / "x.nc"
    result = subprocess.run(
        [*command, "run", str(write(tmp_path / "bad.py", BAD_STUDY)), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("coevo: error: study 'badfile'") and "did you mean 'n_judges'" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.py"]


# ---------------------------------------------------------------- every command, every bad input


def truncated(path: Path, results_file) -> Path:
    whole = results_file(path).read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    return path


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


# name -> (argv from the test folder, environment, expected part of the one-line message)
GOOD = "good.py"
BAD_INPUTS = {
    "study path without .py": (lambda d: ["run", str(d / "good")], {}, "expected a path ending in .py"),
    "study path with another suffix": (lambda d: ["run", str(d / "good.txt")], {}, "expected a path ending in .py"),
    "study that calls sys.exit(0)": (lambda d: ["run", str(d / "exits.py")], {}, "called sys.exit(0) on import"),
    "seeds a 0-d array": (lambda d: ["run", str(d / "scalar_seeds.py")], {}, "got a 0-D array"),
    "max runs per chunk 0": (lambda d: ["run", GOOD, "--max-runs-per-chunk", "0"], {}, "must be at least 1"),
    "max runs per chunk negative": (lambda d: ["run", GOOD, "--max-runs-per-chunk=-4"], {}, "must be at least 1"),
    "max runs per chunk not a number": (lambda d: ["run", GOOD, "--max-runs-per-chunk", "x"], {}, "invalid int"),
    "seeds 5-1": (lambda d: ["run", GOOD, "--seeds", "5-1"], {}, "the range 5-1 is empty"),
    "seeds 0-": (lambda d: ["run", GOOD, "--seeds", "0-"], {}, "cannot read '0-'"),
    "seeds empty": (lambda d: ["run", GOOD, "--seeds", ""], {}, "no seeds given"),
    "seeds 1_000": (lambda d: ["run", GOOD, "--seeds", "1_000"], {}, "cannot read '1_000'"),
    "seeds +3": (lambda d: ["run", GOOD, "--seeds", "+3"], {}, "cannot read '+3'"),
    "seeds in full-width digits": (lambda d: ["run", GOOD, "--seeds", "５"], {}, "plain digits"),
    "seeds 0-99999999": (
        lambda d: ["run", GOOD, "--seeds", "0-99999999"],
        {},
        "100000000 seeds; a study takes at most",
    ),
    "out is the study file": (lambda d: ["run", GOOD, "--out", GOOD, "--force"], {}, "is the study's source file"),
    "unknown option": (lambda d: ["run", GOOD, "--sedes", "1"], {}, "unrecognized arguments: --sedes"),
    "COEVO_CPU_DEVICES not a number": (lambda d: ["run", GOOD], {"COEVO_CPU_DEVICES": "two"}, "positive integer"),
    "COEVO_CPU_DEVICES 0": (lambda d: ["run", GOOD], {"COEVO_CPU_DEVICES": "0"}, "positive integer"),
    "COEVO_CPU_DEVICES negative": (lambda d: ["run", GOOD], {"COEVO_CPU_DEVICES": "-2"}, "positive integer"),
    "process id out of range": (
        lambda d: ["run", GOOD, "--coordinator", "localhost:1", "--num-processes", "2", "--process-id", "2"],
        {},
        "--process-id 2: must be in 0..1",
    ),
    "negative process id": (
        lambda d: ["run", GOOD, "--coordinator", "localhost:1", "--num-processes", "2", "--process-id=-1"],
        {},
        "must be in 0..1",
    ),
    "no processes": (
        lambda d: ["run", GOOD, "--coordinator", "localhost:1", "--num-processes", "0", "--process-id", "0"],
        {},
        "must be at least 1",
    ),
    "cluster flags without a coordinator": (
        lambda d: ["run", GOOD, "--num-processes", "2", "--process-id", "1"],
        {},
        "need --coordinator",
    ),
    "coordinator without cluster flags": (
        lambda d: ["run", GOOD, "--coordinator", "localhost:1"],
        {},
        "needs both --num-processes and --process-id",
    ),
    "coordinator without a port": (
        lambda d: ["run", GOOD, "--coordinator", "localhost", "--num-processes", "2", "--process-id", "1"],
        {},
        "expected HOST:PORT",
    ),
    "unreachable coordinator": (
        lambda d: [
            *("run", GOOD, "--coordinator", f"localhost:{free_port()}", "--num-processes", "2", "--process-id", "1"),
            *("--join-timeout", "1"),
        ],
        {},
        "not reachable within 1 s",
    ),
    "coordinator address not of this machine": (
        lambda d: ["run", GOOD, "--coordinator", "192.0.2.1:4321", "--num-processes", "2", "--process-id", "0"],
        {},
        "process 0 cannot serve there",
    ),
    "figures on a missing file": (lambda d: ["figures", str(d / "missing.nc")], {}, "does not exist"),
    "figures on a folder": (lambda d: ["figures", str(d)], {}, "is not a file"),
    "figures on an empty file": (lambda d: ["figures", str(d / "empty.nc")], {}, "not a readable netCDF file"),
    "figures on a truncated file": (lambda d: ["figures", str(d / "truncated.nc")], {}, "not a readable netCDF"),
    "figures on a text file": (lambda d: ["figures", str(d / "text.nc")], {}, "not a readable netCDF file"),
    "figures on a foreign netCDF": (lambda d: ["figures", str(d / "foreign.nc")], {}, "not a coevo results file"),
    "claims on a missing file": (lambda d: ["claims", str(d / "missing.nc")], {}, "does not exist"),
    "claims on an empty file": (lambda d: ["claims", str(d / "empty.nc")], {}, "not a readable netCDF file"),
    "claims on a truncated file": (lambda d: ["claims", str(d / "truncated.nc")], {}, "not a readable netCDF"),
    "claims on a text file": (lambda d: ["claims", str(d / "text.nc")], {}, "not a readable netCDF file"),
    "claims on a foreign netCDF": (lambda d: ["claims", str(d / "foreign.nc")], {}, "no diverged"),
    "claims --out its own input": (
        lambda d: ["claims", str(d / "r.nc"), "--out", str(d / "r.nc"), "--force"],
        {},
        "is an input results file",
    ),
    "claims --out an existing file": (
        lambda d: ["claims", str(d / "r.nc"), "--out", str(d / "text.nc")],
        {},
        "exists; pass --force",
    ),
    "claims --out a missing folder": (
        lambda d: ["claims", str(d / "r.nc"), "--out", str(d / "nowhere" / "c.md")],
        {},
        "does not exist",
    ),
    "bench with an unknown study": (lambda d: ["bench", "--study", "no_such_study"], {}, "no study named"),
    "bench --sizes not a number": (lambda d: ["bench", "--sizes", "x"], {}, "expected comma-separated positive"),
    "bench --sizes 0": (lambda d: ["bench", "--sizes", "1,0"], {}, "expected comma-separated positive"),
    "bench --sizes empty": (lambda d: ["bench", "--sizes", ""], {}, "expected comma-separated positive"),
    "bench --sizes with a gap": (lambda d: ["bench", "--sizes", "1,,2"], {}, "expected comma-separated positive"),
    "bench --steps-per-iter 0": (lambda d: ["bench", "--steps-per-iter", "0"], {}, "expected a positive integer"),
    "bench --iterations -2": (lambda d: ["bench", "--iterations=-2"], {}, "expected a positive integer"),
    "bench --iterations a float": (lambda d: ["bench", "--iterations", "2.5"], {}, "expected a positive integer"),
    "bench --measure not JSON": (lambda d: ["bench", "--measure", "{"], {}, "not JSON"),
    "bench on a bad study": (lambda d: ["bench", "--study", str(d / "bad.py")], {}, "did you mean 'n_judges'"),
    "bench on a study without .py": (lambda d: ["bench", "--study", str(d / "good.txt")], {}, "ending in .py"),
    "run with a million judges": (lambda d: ["run", str(d / "huge.py")], {}, "field 'n_judges': one chunk of 2 runs"),
    "run with curves too long": (lambda d: ["run", str(d / "long.py")], {}, "field 'n_iterations'"),
}


class TestEveryBadInputEndsInOneLine:
    """Exit status 2, one line on stderr, no traceback, nothing written, nothing compiled."""

    @pytest.fixture
    def folder(self, tmp_path, monkeypatch, results_file):
        write(tmp_path / GOOD, GOOD_STUDY)
        write(tmp_path / "good", GOOD_STUDY)
        write(tmp_path / "good.txt", GOOD_STUDY)
        write(tmp_path / "exits.py", "import sys\nsys.exit(0)\n")
        write(tmp_path / "bad.py", BAD_STUDY)
        write(tmp_path / "huge.py", GOOD_STUDY + "STUDY['seeds'] = [0, 1]; STUDY['base'] = {'n_judges': 10**6}\n")
        write(tmp_path / "long.py", GOOD_STUDY + "STUDY['base'] = {'n_iterations': 2**31 - 1}\n")
        write(tmp_path / "scalar_seeds.py", GOOD_STUDY + "import numpy\nSTUDY['seeds'] = numpy.array(3)\n")
        write(tmp_path / "empty.nc", "")
        write(tmp_path / "text.nc", "condition,seed\nbaseline,0\n")
        results_file(tmp_path / "r.nc")
        results_file(tmp_path / "foreign.nc", diverged=True)
        truncated(tmp_path / "truncated.nc", results_file)
        monkeypatch.chdir(tmp_path)
        return tmp_path

    @pytest.mark.parametrize("case", BAD_INPUTS)
    def test_bad_input(self, case, folder, monkeypatch, capsys):
        argv, environment, expected = BAD_INPUTS[case]
        argv = argv(folder)
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        for target in (engine, engine.host.runner):
            monkeypatch.setattr(target, "run_study", lambda *a, **k: pytest.fail("compiled"))
        before = {path: path.read_bytes() if path.is_file() else None for path in folder.rglob("*")}
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("coevo: error: ") and err.count("\n") == 1, err
        assert expected in err, err
        assert {path: path.read_bytes() if path.is_file() else None for path in folder.rglob("*")} == before


def test_x64_in_the_environment_still_runs_float32(cli, tmp_path, capsys):
    import jax

    jax.config.update("jax_enable_x64", True)
    try:
        with pytest.raises(Compiled):
            main(["run", str(write(tmp_path / "good.py", GOOD_STUDY)), "--out", str(tmp_path / "x.nc"), "--quiet"])
        assert not jax.config.jax_enable_x64
    finally:
        jax.config.update("jax_enable_x64", False)
    assert "JAX_ENABLE_X64 is ignored; the lab runs in float32" in capsys.readouterr().err
