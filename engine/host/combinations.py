"""Knob combinations of one resolved condition: an error where no study means them, else
warnings that say which knob became a no-op and why.

One rule for no-ops: a knob set away from its default while the mechanism that reads it
(`Knob.mechanism`, an entry of `engine.knobs.MECHANISMS`) does not run is reported, with the
reason that mechanism's declaration derives from the resolved knobs (frozen judge, meta off,
a cadence that never fires, ...). No other warning says that a knob has no effect, so none can
say it of a knob the run reads. The other warnings say what a value the run does read makes
of its mechanism: a cadence that never fires or does not divide an outer iteration, a held-out
threshold of 0, a dpo score grid coarser than the pretrained judge's scores, the meta step of a
frozen judge. A value that makes its mechanism do nothing whatever happens in the run (a score
grid no judge score can reach) is refused.

Cadences longer than a run are warnings, not errors: a shortened copy of a real study
(fewer steps or iterations, e.g. `coevo bench --steps-per-iter 20` on the blog study)
produces them legitimately.
"""

import functools

import numpy as np

from engine.core.transformer import HEADS
from engine.core.world import World, all_sequences, nk_q_star, reference_q_star, transition_term
from engine.knobs import DEFAULTS, KNOBS, MECHANISMS, RESTARTS, n_holdout_pairs, n_oracle_pairs, world_of
from engine.loop.diagnostics import DIVERGED_PARAMETER


class StudyError(ValueError):
    """A study that cannot run, with a message naming where the problem is."""


def where(study: str, condition: str | None, field: str) -> str:
    place = f"study {study!r}"
    if condition is not None:
        place += f", condition {condition!r}"
    return f"{place}, field {field!r}"


def on(mechanism: str, knobs: dict) -> bool:
    return MECHANISMS[mechanism].on(knobs)


def judge_score_bound(knobs: dict) -> float:
    """The largest score a judge of a run not flagged diverged can give: its hidden state h lies in
    (−1, 1) (a GRU's: each step mixes tanh values and the previous state, from 0; an MLP's: a tanh)
    or is a LayerNorm's output without scale or shift (a transformer's: ‖h‖² < d, so Σ|h_i| < d),
    so |J(x)| = |w·h + b| is at most (judge_hidden + 1)·max|θ|, and a run with a parameter beyond
    DIVERGED_PARAMETER is flagged diverged."""
    return (knobs["judge_hidden"] + 1) * DIVERGED_PARAMETER


@functools.cache
def _world(world: World, landscape: str, nk_k: int, world_seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The landscape's q* (before the transition term), the transition term and the N sequences of
    `world`, as host arrays (float64)."""
    family = reference_q_star(world, world_seed) if landscape == "reference" else nk_q_star(world, nk_k, world_seed)
    return (
        np.asarray(family, np.float64),
        np.asarray(transition_term(world, world_seed), np.float64),
        all_sequences(world),
    )


def pretraining_target_extent(knobs: dict) -> float:
    """max |T(x)| over the N outputs of the target T = q* + b·σ(q*)·f(x) that judge pretraining
    regresses (engine.mechanisms.pretraining): a pretrained judge's scores lie within about ±this."""
    reference, transition, sequences = _world(world_of(knobs), knobs["landscape"], knobs["nk_k"], knobs["world_seed"])
    q_star = reference + knobs["transition_alpha"] * transition
    verbosity = np.sum(sequences == knobs["bias_token"], axis=1)
    return float(np.max(np.abs(q_star + knobs["planted_bias"] * np.std(q_star) * verbosity)))


def refuse_without_exact_mode(study: str, condition: str, knobs: dict) -> None:
    """gradient_estimator `exact` with a mechanism that has no exact mode (docs/mean_field.md)."""
    if knobs["gradient_estimator"] != "exact":
        return
    place = where(study, condition, "gradient_estimator")
    if on("dpo", knobs):
        raise StudyError(
            f"{place}: exact has no mode for update_rule dpo: its pairs are the best and worst of groups of the "
            "batch and its loss a mean over the pairs it keeps, whose expectation the lab does not compute; "
            "use gradient_estimator sampled"
        )
    if on("meta_judge", knobs):
        raise StudyError(
            f"{place}: exact has no mode for the meta-judge (meta_source judge): its meta step labels meta_pairs "
            "of a batch of fresh pairs (under meta_select uncertain the least certain, an order statistic of the "
            "batch), whose expectation the lab does not compute; use gradient_estimator sampled, or meta_source "
            "holdout"
        )


def refuse_best_response_without_closed_form(study: str, condition: str, knobs: dict) -> None:
    """policy_response `best_response` where the policy's loss has no closed-form best response
    (docs/mean_field.md §9): it needs the exact loss, with β·KL(π‖π₀), β > 0."""
    if knobs["policy_response"] != "best_response":
        return
    place = where(study, condition, "policy_response")
    if knobs["gradient_estimator"] != "exact":
        raise StudyError(
            f"{place}: best_response needs gradient_estimator exact: the closed form is the best response to "
            "the exact policy loss, while a sampled step's expectation carries the batch's factor 1 - 1/B"
        )
    if knobs["kl_penalty"] == 0:
        raise StudyError(
            f"{place}: best_response needs kl_penalty > 0: pi* is proportional to "
            "pi_0^(beta/(beta+c))·exp(J/(beta+c)), and the lab offers it for a policy loss with beta·KL(pi || pi_0)"
        )
    if knobs["kl_estimator"] == "k3":
        raise StudyError(
            f"{place}: best_response needs kl_estimator exact or k1: k3's penalty is the forward "
            "KL(pi_0 || pi), whose best response has no closed form"
        )


def refuse_impossible(study: str, condition: str, knobs: dict) -> None:
    """Combinations that cannot run as written, whatever the study's length."""
    if knobs["bias_token"] >= knobs["vocab"]:
        raise StudyError(
            f"{where(study, condition, 'bias_token')}: the filler token must be a token of the vocabulary, "
            f"0..{knobs['vocab'] - 1} (vocab {knobs['vocab']}), got {knobs['bias_token']}"
        )
    if knobs["nk_k"] >= knobs["seq_len"]:
        raise StudyError(
            f"{where(study, condition, 'nk_k')}: each position reads its own token and the next nk_k (cyclic), so "
            f"nk_k must be at most seq_len - 1 = {knobs['seq_len'] - 1}, got {knobs['nk_k']}"
        )
    for model in ("policy", "judge"):
        width = knobs[f"{model}_hidden"]
        if knobs[f"{model}_arch"] == "transformer" and width % HEADS:
            raise StudyError(
                f"{where(study, condition, f'{model}_hidden')}: a transformer's width is split among its {HEADS} "
                f"attention heads, so it must be a multiple of {HEADS}, got {width}"
            )
    refuse_without_exact_mode(study, condition, knobs)
    refuse_best_response_without_closed_form(study, condition, knobs)
    if on("meta_judge", knobs) and knobs["meta_pairs"] > knobs["batch_size"]:
        raise StudyError(
            f"{where(study, condition, 'meta_pairs')}: the meta-judge labels meta_pairs of batch_size fresh "
            f"pairs, so meta_pairs must be <= batch_size ({knobs['batch_size']}), got {knobs['meta_pairs']}"
        )
    if on("dpo", knobs) and knobs["batch_size"] % knobs["n_candidates"]:
        raise StudyError(
            f"{where(study, condition, 'n_candidates')}: the batch is read as groups of n_candidates, so it must "
            f"divide batch_size ({knobs['batch_size']}), got {knobs['n_candidates']}"
        )
    fraction = knobs["meta_holdout_fraction"]
    n_sequences = world_of(knobs).n_sequences
    if on("holdout_meta", knobs) and int(n_sequences * fraction) == 0:
        raise StudyError(
            f"{where(study, condition, 'meta_holdout_fraction')}: meta_update_every > 0 needs at least one "
            f"held-out pair, but int({n_sequences} * {fraction}) = 0"
        )
    grid, bound = knobs["score_grid"], judge_score_bound(knobs)
    if on("dpo", knobs) and grid > 2 * bound:
        raise StudyError(
            f"{where(study, condition, 'score_grid')}: {grid:g} > 2 x {bound:g}: a judge's score is at "
            f"most (judge_hidden {knobs['judge_hidden']} + 1) x max|parameter| = {bound:g} in size (its hidden "
            f"state lies in (-1, 1); a run with a parameter beyond {DIVERGED_PARAMETER:g} is flagged "
            "diverged), so every score rounds to 0 on this grid, every dpo pair ties and is dropped, and the policy "
            "never takes a step"
        )


def mechanism_off_warnings(knobs: dict) -> list[tuple[str, str]]:
    """(field, text) for every knob set away from its default while the mechanism that reads it is off."""
    found = []
    for name, knob in KNOBS.items():
        mechanism = MECHANISMS.get(knob.mechanism)
        if mechanism is None or knobs[name] == DEFAULTS[name]:
            continue
        why = mechanism.why_off(knobs)
        if why:
            found.append((name, f"has no effect: it is a knob of {mechanism.name}, and {why}"))
    return found


def cadence_warning(field: str, every: int, steps: int, what: str, never: str) -> list[tuple[str, str]]:
    """A cadence longer than an outer iteration (it never fires), or one that does not divide it."""
    if every > steps:
        return [(field, f"{every} > steps_per_iter {steps} and {RESTARTS}, so {never}")]
    if steps % every:
        return [
            (
                field,
                f"steps_per_iter {steps} is not a multiple of {every} and {RESTARTS}, so {what} "
                f"{steps // every} times per iteration, not once every {every} inner steps throughout",
            )
        ]
    return []


def holdout_corrects(knobs: dict) -> bool:
    """Does the held-out meta step ever train the judge (it runs, and an accuracy can be below 0 < threshold)?"""
    return on("holdout_steps", knobs) and knobs["meta_accuracy_threshold"] > 0


def judge_never_stepping(knobs: dict) -> str:
    """What a judge cadence that never fires leaves of the judge's training, for its warning."""
    if on("meta_judge_steps", knobs):  # not frozen here: its labels still train the judge
        return (
            "the judge's self-labelled and oracle-pair steps never run; the meta-judge's meta steps still "
            "update it (unlike freeze_judge: true)"
        )
    if holdout_corrects(knobs):
        return (
            "the judge's self-labelled and oracle-pair steps never run; only the held-out meta step updates it "
            "(bit-identical to freeze_judge: true)"
        )
    return "the judge never updates (bit-identical to freeze_judge: true)"


def cadence_warnings(knobs: dict) -> list[tuple[str, str]]:
    """Judge, meta and reset cadences, read by the run, that do not fit its length."""
    steps, iterations = knobs["steps_per_iter"], knobs["n_iterations"]
    judge_every, meta_every, reset_every = knobs["judge_update_every"], knobs["meta_update_every"], knobs["reset_every"]
    found = []
    if on("unfrozen", knobs):
        found += cadence_warning(
            "judge_update_every", judge_every, steps, "the judge steps", judge_never_stepping(knobs)
        )
    if on("meta_judge", knobs):
        never = "the meta step never runs (meta_agreement is NaN after iteration 0; the meta-judge never labels)"
        found += cadence_warning("meta_update_every", meta_every, steps, "the meta step runs", never)
    elif on("holdout_meta", knobs):
        never = "the meta check never runs (meta_judge_accuracy is NaN after iteration 0; the judge is never corrected)"
        found += cadence_warning("meta_update_every", meta_every, steps, "the meta check runs", never)
    if on("judge_changes", knobs) and reset_every > iterations:
        found.append(
            (
                "reset_every",
                f"{reset_every} > n_iterations {iterations}, so the judges are never reset (the same as reset_every 0)",
            )
        )
    return found


def frozen_judge_warnings(knobs: dict) -> list[tuple[str, str]]:
    """What a frozen judge's meta steps still do (the knobs it makes no-ops are `mechanism_off_warnings`')."""
    if not knobs["freeze_judge"]:
        return []
    if holdout_corrects(knobs):
        return [
            (
                "meta_update_every",
                "with freeze_judge the held-out meta step still updates the judge, as in the reference: "
                "the judge is frozen except for its meta corrections",
            )
        ]
    if on("meta_judge_steps", knobs):
        return [
            (
                "meta_update_every",
                "with freeze_judge the meta-judge's labels never update the judge: its meta steps only "
                "measure meta_agreement",
            )
        ]
    return []


def oracle_step_costs(knobs: dict) -> list[tuple[str, int, int]]:
    """(step, comparisons it costs, most steps per outer iteration) of each q*-labelled judge step
    the run takes: the oracle-pair step and the held-out correction (`oracle_budget`'s accounting)."""
    steps = knobs["steps_per_iter"]
    found = []
    if MECHANISMS["judge_steps"].on(knobs) and knobs["anchor_fraction"] > 0:
        found.append(("the oracle-pair step", n_oracle_pairs(knobs), steps // knobs["judge_update_every"]))
    if holdout_corrects(knobs):
        found.append(("the held-out correction", n_holdout_pairs(knobs), steps // knobs["meta_update_every"]))
    return found


def budget_warning(knobs: dict) -> list[tuple[str, str]]:
    """An oracle_budget that some q*-labelled step never fits, or one that never binds."""
    budget, costs = knobs["oracle_budget"], oracle_step_costs(knobs)
    if budget == 0 or not costs:
        return []
    never = [f"{step} ({cost} comparisons)" for step, cost, _ in costs if cost > budget]
    if never:
        outcome = "it never runs" if len(never) == 1 else "neither ever runs"
        return [("oracle_budget", f"{budget} comparisons cannot pay for {' nor '.join(never)}, so {outcome}")]
    most = sum(cost * count for _, cost, count in costs)
    if budget >= most:
        return [
            (
                "oracle_budget",
                f"{budget} >= {most}, the most q*-labelled comparisons an outer iteration can use, so it never "
                "binds (the same as 0: unlimited)",
            )
        ]
    return []


def value_warnings(knobs: dict) -> list[tuple[str, str]]:
    """Values the run reads that make their own mechanism do nothing, or almost nothing."""
    found = budget_warning(knobs)
    window, iterations = knobs["judge_data_window"], knobs["n_iterations"]
    if on("judge_data_window", knobs) and window >= iterations:
        found.append(
            (
                "judge_data_window",
                f"{window} >= n_iterations {iterations}: the window holds every outer iteration, so the pairs come "
                "from the mixture judge_data accumulate draws from (summed per iteration: equal up to rounding)",
            )
        )
    if on("holdout_steps", knobs) and knobs["meta_accuracy_threshold"] == 0:
        found.append(
            (
                "meta_accuracy_threshold",
                "0: no accuracy is below it, so the held-out meta step never trains the judge (it only measures)",
            )
        )
    grid = knobs["score_grid"]
    if on("dpo", knobs) and grid > 0:
        extent = pretraining_target_extent(knobs)
        if grid > 2 * extent:
            found.append(
                (
                    "score_grid",
                    f"{grid:g} > 2 x {extent:.3g}: the judge is pretrained to regress q* + b·σ(q*)·f, whose values "
                    f"lie within ±{extent:.3g}, so the pretrained judge's scores round to 0 on this grid and nearly "
                    "every dpo pair ties and is dropped: the policy takes almost no dpo step unless the judge's "
                    f"scores spread beyond ±{grid / 2:g}",
                )
            )
    return found


def check_combination(study: str, condition: str, knobs: dict) -> list[str]:
    """Refuse what cannot run; return one warning line per knob that runs, but not as written."""
    refuse_impossible(study, condition, knobs)
    found = mechanism_off_warnings(knobs)
    found += cadence_warnings(knobs)
    found += frozen_judge_warnings(knobs)
    found += value_warnings(knobs)
    return [f"{where(study, condition, field)}: {text}" for field, text in found]
