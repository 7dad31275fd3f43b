"""One declaration per knob: everything derived from `KNOBS` agrees with it, the run plan
puts every run back where it came from, and the committed results still reproduce."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

import engine
from engine.host.plan import group_variants, make_plan
from engine.knobs import (
    DEFAULTS,
    GROUP_KNOBS,
    KNOBS,
    MECHANISMS,
    RUN_KNOBS,
    STUDY_KNOBS,
    VARIANT_KNOBS,
    Condition,
    Sizes,
    Variant,
    condition_arrays,
    knob_table,
    knobs_page,
)
from studies.blog import CONDITIONS as BLOG_CONDITIONS

ROOT = Path(__file__).resolve().parent.parent


def test_the_knobs_page_is_generated_from_the_declarations():
    page = (ROOT / "docs" / "knobs.md").read_text()
    assert page == knobs_page(), "docs/knobs.md is stale: run `coevo knobs --write docs/knobs.md`"
    for name, knob in KNOBS.items():
        assert f"| `{name}` |" in knob_table()
        assert knob.mechanism is None or knob.mechanism in MECHANISMS


def test_derived_classes_have_one_field_per_declared_knob():
    assert [f.name for f in dataclasses.fields(Condition)] == list(RUN_KNOBS)
    assert Sizes._fields == STUDY_KNOBS
    assert len(Variant._fields) == len(VARIANT_KNOBS) >= len(GROUP_KNOBS)
    assert set(RUN_KNOBS) | set(GROUP_KNOBS) | set(STUDY_KNOBS) == set(KNOBS)


def test_every_declaration_is_consistent_and_its_default_valid():
    for name, knob in KNOBS.items():
        assert knob.scope in ("run", "group", "study"), name
        assert knob.doc, name
        if knob.choices:
            assert knob.default in knob.choices, name
        else:
            assert type(knob.default) is knob.kind, name
    resolved = engine.resolve({"name": "defaults", "seeds": [0], "conditions": {"all_defaults": {}}})
    assert resolved.conditions["all_defaults"] == DEFAULTS


def test_dataset_coordinates_carry_every_knob(small):
    # test_engine.ONE_GROUP's shapes: its program is usually compiled already
    ds = engine.run_study(small({"baseline": {}, "slow": {"judge_update_every": 2}}, n_iterations=1))
    for name, knob in KNOBS.items():
        assert ds[name].dims == ("condition",)
        assert ds[name].attrs["description"] == knob.doc


def test_runs_without_an_anchor_or_held_out_set_join_the_group_that_has_one(small):
    conditions = {
        "baseline": {},
        "anchor_0.05": {"anchor_fraction": 0.05},
        "anchor_0.1": {"anchor_fraction": 0.1},
        "meta": {"meta_holdout_fraction": 0.05, "meta_update_every": 2},
        "ensemble_2": {"n_judges": 2},
        "ensemble_2_meta": {"n_judges": 2, "meta_holdout_fraction": 0.02, "meta_update_every": 2},
        "dpo": {"update_rule": "dpo"},
    }
    study = engine.resolve(small(conditions, seeds=[0]))
    own = {name: study.variant(name) for name in conditions}
    grouped = dict(zip(conditions, group_variants(list(own.values())), strict=True))
    assert own["baseline"].n_oracle_pairs == own["baseline"].n_holdout == 0
    # the largest anchor and held-out set of their class; a 3-pair anchor keeps its own group
    assert (
        grouped["baseline"]
        == grouped["anchor_0.1"]
        == grouped["meta"]
        == own["baseline"]._replace(n_oracle_pairs=own["anchor_0.1"].n_oracle_pairs, n_holdout=own["meta"].n_holdout)
    )
    assert grouped["anchor_0.05"] == own["anchor_0.05"]._replace(n_holdout=own["meta"].n_holdout)
    assert grouped["ensemble_2"] == grouped["ensemble_2_meta"] == own["ensemble_2_meta"]
    assert grouped["dpo"] == own["dpo"]  # another update rule: a class of its own
    assert len(make_plan(study, study.seeds, n_devices=2).groups) == 4


def test_plan_places_every_run_once_and_scatters_it_back(small):
    conditions = {
        "baseline": {},
        "ensemble_3": {"n_judges": 3},
        "slow": {"judge_update_every": 7},
        "anchor": {"anchor_fraction": 0.2},
        "ensemble_2": {"n_judges": 2, "judge_update_every": 3},
    }
    study = engine.resolve(small(conditions, seeds=[11, 12, 13]))
    plan = make_plan(study, study.seeds, n_devices=2)
    assert plan.n_runs == 15 and len(plan.groups) == 3  # baseline and slow join the anchor's group
    per_group = [
        {
            "seed": g.inputs.seed,
            "every": g.inputs.condition.judge_update_every,
            "member0": g.inputs.pretrain_index[:, 0],
        }
        for g in plan.groups
    ]
    back = plan.scatter(per_group)
    np.testing.assert_array_equal(back["seed"], np.broadcast_to([11, 12, 13], (5, 3)))
    expected_every = [[conditions[c].get("judge_update_every", 1)] * 3 for c in conditions]
    np.testing.assert_array_equal(back["every"], expected_every)
    assert (back["member0"] == back["member0"][:1]).all()  # every condition of a seed shares member 0's judge
    assert len(np.unique(back["member0"])) == 3
    ensemble = next(g for g in plan.groups if g.variant.n_judges == 3).inputs.pretrain_index
    assert len(np.unique(ensemble)) == 9  # three distinct pretrained judges per seed
    for group in plan.groups:
        assert len(group.inputs.seed) % (2 * plan.sub_batch) == 0  # whole sub-batches on each device


def test_committed_blog_results_reproduce_bit_for_bit():
    """Three published conditions, all five seeds, the first 2 of 10 iterations (a run's first
    iterations do not depend on how many follow), equal the committed data/blog.nc bit for bit.
    A condition's numbers do not depend on the rest of the study as long as its sub-batches keep
    their size (XLA picks kernels by batch size): the file's are five runs, one condition's seeds."""
    committed = engine.load(ROOT / "data" / "blog.nc")
    study = engine.host.results.study_of(committed)
    chosen, iterations = ["baseline", "asymmetric_10", "meta_10"], 2
    study = {
        **study,
        "base": {**study.get("base", {}), "n_iterations": iterations},
        "conditions": {c: study["conditions"][c] for c in chosen},
    }
    assert all(study["conditions"][c] == BLOG_CONDITIONS[c] for c in chosen)
    ds = engine.run_study(study)
    for metric in ("policy_quality", "judge_alignment", "policy_entropy", "judge_perceived_quality"):
        expected = committed[metric].sel(condition=chosen, iteration=slice(0, iterations))
        np.testing.assert_array_equal(ds[metric], expected)


def test_a_categorical_knob_takes_only_its_choices():
    study = {"name": "c", "seeds": [0], "conditions": {"flax": {"init": "flax"}}}
    with pytest.raises(
        engine.StudyError, match=r"condition 'flax', field 'init': expected one of 'reference', 'equinox'"
    ):
        engine.resolve(study)
    with pytest.raises(engine.StudyError, match="expected one of"):
        engine.resolve({**study, "conditions": {"one": {"init": 1}}})
    resolved = engine.resolve({**study, "conditions": {"eqx": {"init": "equinox"}}})
    assert resolved.conditions["eqx"]["init"] == "equinox"
    assert int(condition_arrays([resolved.conditions["eqx"]]).init[0]) == KNOBS["init"].code("equinox") == 1
