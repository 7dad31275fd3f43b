"""What the declarations say a run does not read, the engine indeed does not read: a condition
that differs from another only in knobs warned about as having no effect gives the same numbers,
bit for bit (one small study, two groups of runs; tests/test_read_by_the_run.py checks the rules
against the declarations without compiling)."""

import numpy as np
import pytest

import engine
from engine.knobs import KNOBS, MECHANISMS

FROZEN = {"freeze_judge": True, "lr_judge_pretrain": 3e-4}  # pretraining at lr_judge's default rate
META_JUDGE = {"meta_source": "judge", "meta_update_every": 2, "meta_pairs": 8, **FROZEN}
# condition -> (the condition it must equal, the knobs it adds that the run does not read)
SAME = {
    "frozen_lr_judge": ("frozen", {"lr_judge": 1e-3}),
    "frozen_reset": ("frozen", {"reset_every": 1}),
    "frozen_cadence": ("frozen", {"judge_update_every": 5}),
    "frozen_anchor": ("frozen", {"anchor_fraction": 0.1, "judge_anchor": 1.0}),
    "frozen_judge_data": ("frozen", {"judge_data": "window", "judge_data_window": 2}),
    "frozen_noisy_anchor": (
        "frozen",
        {"anchor_fraction": 0.1, "oracle_noise": 1.0, "oracle_bias": 1.0, "oracle_budget": 6},
    ),
    "window_knob_when_fresh": ("baseline", {"judge_data_window": 2}),
    "labeller_knobs_without_labels": ("baseline", {"oracle_noise": 1.0, "oracle_bias": -0.5, "oracle_budget": 10}),
    "kl_estimator_without_kl": ("baseline", {"kl_estimator": "k1"}),
    "nk_k_without_nk": ("baseline", {"nk_k": 2}),
    "dpo_knobs_under_reinforce": (
        "baseline",
        {"score_grid": 0.5, "dpo_beta": 0.5, "dpo_loss": "ipo", "dpo_reference": "initial", "length_control": 0.4},
    ),
    "meta_knobs_without_meta": (
        "baseline",
        {
            "meta_source": "judge",
            "meta_pairs": 8,
            "meta_select": "random",
            "meta_learns": True,
            "meta_holdout_fraction": 0.05,
            "meta_accuracy_threshold": 0.5,
        },
    ),
    "meta_judge_frozen_learns": ("meta_judge_frozen", {"meta_learns": True}),
    "meta_judge_frozen_holdout_knobs": (
        "meta_judge_frozen",
        {"meta_holdout_fraction": 0.05, "meta_accuracy_threshold": 0.0},
    ),
    "meta_judge_frozen_lr_reset": ("meta_judge_frozen", {"lr_judge": 1e-3, "reset_every": 1}),
    "meta_judge_frozen_labeller": ("meta_judge_frozen", {"oracle_noise": 1.0, "judge_data": "accumulate"}),
    "best_response_lr_policy": ("best_response", {"lr_policy": 1e-3}),
}
BEST_RESPONSE = {"gradient_estimator": "exact", "kl_penalty": 0.1, "policy_response": "best_response"}
BASES = {"baseline": {}, "frozen": FROZEN, "meta_judge_frozen": META_JUDGE, "best_response": BEST_RESPONSE}


@pytest.fixture(scope="module")
def study(small):
    conditions = {**BASES, **{name: {**BASES[base], **knobs} for name, (base, knobs) in SAME.items()}}
    conditions["judge_never_steps"] = {"judge_update_every": 50, "lr_judge_pretrain": 3e-4}  # > steps_per_iter 6
    return small(conditions, seeds=[0], n_iterations=2)


@pytest.fixture(scope="module")
def ds(study):
    return engine.run_study(study)


def read(name: str, knobs: dict) -> bool:
    mechanism = KNOBS[name].mechanism
    return mechanism is None or MECHANISMS[mechanism].on(knobs)


def test_the_knobs_added_are_declared_unread_and_warned_about(study):
    resolved = engine.resolve(study)
    for condition, (_, added) in SAME.items():
        knobs = resolved.conditions[condition]
        warned = [w for w in resolved.warnings if f"condition {condition!r}" in w and "has no effect" in w]
        for name in added:
            assert not read(name, knobs), (condition, name)
            assert any(f"field {name!r}" in w for w in warned), (condition, name, warned)


@pytest.mark.parametrize("condition", list(SAME))
def test_knobs_the_run_does_not_read_change_no_number(ds, condition):
    base = SAME[condition][0]
    for name, values in ds.data_vars.items():
        np.testing.assert_array_equal(
            values.sel(condition=condition).values, values.sel(condition=base).values, err_msg=f"{condition}: {name}"
        )


def test_a_judge_cadence_beyond_the_iteration_is_bit_identical_to_a_frozen_judge(ds, study):
    """As its warning says (engine.host.combinations.judge_never_stepping)."""
    warning = next(w for w in engine.resolve(study).warnings if "condition 'judge_never_steps'" in w)
    assert "bit-identical to freeze_judge: true" in warning
    for name, values in ds.data_vars.items():
        np.testing.assert_array_equal(
            values.sel(condition="judge_never_steps").values, values.sel(condition="frozen").values, err_msg=name
        )
