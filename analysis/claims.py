"""The published study's qualitative claims, each turned into a test on a results Dataset.

One function per claim returns (measurement text, verdict, key): the key is the number the verdict
turns on, short enough for a table with a column per study. A verdict is computed from the
numbers by the rule in the claim's `rule` text, never written by hand:

- "holds": every part of the rule is met; "partly": some part; "does not hold": none
  (or the claim's core part fails, where the rule says so); "n/a": the Dataset lacks a
  condition or iteration the claim needs.
- Intervals are 95% Student-t CIs over seeds (`analysis.stats`, coverage checked by
  simulation); condition comparisons are paired by seed (same seed = same pretrained judge
  and policy initialisation).
- A claim needs at least MIN_SEEDS seeds (WORSE_MODE_MIN_SEEDS for the worse mode) in every
  condition and pair it reads; with fewer its verdict is "not enough seeds".
  "CI > 0" means the interval's lower bound is above TOLERANCE (float32 residue of collapsed
  policies); a material Δ quality is ≥ MATERIAL.
- "Final" is the last outer iteration; iteration 0 is the state right after judge pretraining.
- The iteration axis: the reference records after outer iteration t = 0..9 and labels that t;
  our iteration k ≥ 1 is "after outer iteration k" (k = t + 1), so a published "iteration ≈3"
  is our iteration 4 (`ours`).
- Diverged runs are left out (`mask_diverged`); a left-out run removes its pairs.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr
from scipy import stats

from analysis.data import mask_diverged, n_diverged
from analysis.formatting import estimate, fixed
from analysis.stats import Summary, paired_difference, sd_ratio, seed_summary
from engine.host.output import write_atomically
from engine.host.results import world_of_dataset

MATERIAL = 0.1  # smallest Δ final quality (q* units; q* over all outputs has sd ≈ 1.31) called material
COLLAPSED = 0.05  # entropy below this share of ln N (the uniform policy's) counts as collapsed
ALIGNMENT_KEPT = 0.05  # an alignment change whose CI stays above −this counts as kept
WORSE_MODE_SHARE = 0.2  # published: one of five seeds in the worse mode
ASYMMETRIC = ["asymmetric_2", "asymmetric_5", "asymmetric_10"]
META_ALONE = ["meta_1", "meta_10", "meta_200"]
ENSEMBLES = ["ensemble_3", "ensemble_5"]
RESETS = ["reinit_3", "reinit_5"]
VERDICTS = ("holds", "partly", "does not hold", "n/a", "not enough seeds")
# Below 3 seeds a 95% t-interval spans ±12.7 standard errors: honest, but a verdict from it would
# report the seed count, not the claim.
MIN_SEEDS = 3
WORSE_MODE_MIN_SEEDS = 5  # the published mode holds one seed in five: fewer seeds cannot show it
TOLERANCE = 5e-4  # bounds within this of 0 count as 0: float32 residue of collapsed policies, below display
LESS_SPREAD = 0.9  # an sd ratio at or below this (≥ 10% smaller sd) is a material reduction


@dataclass(frozen=True)
class Claim:
    name: str
    statement: str  # what the published study said
    rule: str  # how it is tested and how the verdict follows from the numbers
    measurement: str  # our numbers
    verdict: str  # one of VERDICTS
    key: str  # the number the verdict turns on (the measurement's reason where there is none)


def ours(published_iteration: int) -> int:
    """Our iteration label of the reference's iteration t (its t = 0 is our 1)."""
    return published_iteration + 1


class _Missing(LookupError):
    """The Dataset lacks something a claim needs: its verdict is n/a."""


class _TooFewSeeds(LookupError):
    """Too few seeds to decide a claim: its verdict is "not enough seeds"."""

    def __init__(self, n: int, needed: int = MIN_SEEDS):
        super().__init__(f"not enough seeds (n = {n}; this claim needs at least {needed})")
        self.n = n


def _enough(n: int, needed: int = MIN_SEEDS):
    if n < needed:
        raise _TooFewSeeds(n, needed)


# ---------------------------------------------------------------- helpers


def _curve(ds: xr.Dataset, condition: str, var: str = "policy_quality") -> np.ndarray:
    """(seed, iteration) values of one condition; NaN rows for diverged runs."""
    if condition not in ds["condition"].values:
        raise _Missing(f"needs condition {condition} (not in this dataset)")
    curve = np.asarray(ds[var].sel(condition=condition).values, dtype=float)
    _enough(int(np.isfinite(curve).any(axis=1).sum()))
    return curve


def _at(ds: xr.Dataset, condition: str, var: str = "policy_quality", iteration: int = -1) -> np.ndarray:
    """Per-seed values at an iteration label (−1: final)."""
    if iteration >= 0 and iteration not in ds["iteration"].values:
        raise _Missing(f"needs iteration {iteration} (not in this dataset)")
    curve = _curve(ds, condition, var)
    return curve[:, -1] if iteration < 0 else curve[:, list(ds["iteration"].values).index(iteration)]


def _delta(ds: xr.Dataset, condition: str, reference: str = "baseline", var: str = "policy_quality") -> Summary:
    """Paired Δ of the final value, condition − reference, over seeds."""
    return _paired(_at(ds, condition, var), _at(ds, reference, var))


def _paired(a, b) -> Summary:
    """paired_difference, refused when left-out runs leave too few pairs."""
    delta = paired_difference(a, b)
    _enough(delta.n)
    return delta


def _positive(s: Summary) -> bool:
    return bool(s.ci_low > TOLERANCE)


def _grade(parts: list[bool]) -> str:
    return "holds" if all(parts) else "partly" if any(parts) else "does not hold"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


# ---------------------------------------------------------------- one function per claim


def jump_then_plateau(ds):
    q = _curve(ds, "baseline")
    q0, q1, q2, qf = (_at(ds, "baseline", iteration=i) for i in (0, 1, 2, -1))
    total = _paired(qf, q0)
    jump, after = _paired(q1, q0), _paired(qf, q2)
    with np.errstate(divide="ignore", invalid="ignore"):
        share1, share2 = (np.nanmean(qi - q0) / total.mean for qi in (q1, q2))
    bound = 0.1 * total.mean
    jumps = _positive(jump) and share1 >= 0.5
    plateaus = bool(after.ci_high < bound)
    text = (
        f"gain 0→1 {estimate(jump, signed=True)}; gain 0→final {estimate(total, signed=True)}; "
        f"share of it by iteration 1: {share1:.0%}, by 2: {share2:.0%}; "
        f"gain 2→final {estimate(after, signed=True)} (plateau bound {fixed(bound)}, "
        f"{q.shape[1] - 1} iterations). Jump: {_yes(jumps)}; plateau: {_yes(plateaus)}"
    )
    key = f"{share1:.0%} of the gain by 1; 2→final ≤ {fixed(after.ci_high, signed=True)} (bound {fixed(bound)})"
    return text, _grade([jumps, plateaus]), key


def alignment_falls(ds):
    a = _curve(ds, "baseline", "judge_alignment")
    if a.shape[1] < 4:
        raise _Missing("needs at least 3 outer iterations")
    start, change = seed_summary(a[:, 0]), _paired(a[:, -1], a[:, 0])
    drops = a[:, :-1] - a[:, 1:]  # drops[:, t-1] = a[t-1] − a[t]
    later = 1 + int(np.nanargmax(np.nanmean(drops[:, 1:], axis=0)))
    first_vs_later = _paired(drops[:, 0], drops[:, later])
    trough = np.nanmin(a[:, 1:], axis=1)
    recovery = np.nanmean(a[:, -1] - trough) / np.nanmean(a[:, 0] - trough)
    falls, sharpest, stays = change.ci_high < -TOLERANCE, _positive(first_vs_later), recovery <= 0.25
    text = (
        f"alignment at 0 {estimate(start)} → final {estimate(seed_summary(a[:, -1]))}, "
        f"paired change {estimate(change, signed=True)}; "
        f"drop 0→1 minus the largest later mean drop ({later}→{later + 1}) {estimate(first_vs_later, signed=True)}; "
        f"recovery from the trough {recovery:.0%} of the fall. Falls: {_yes(falls)}; sharpest first: "
        f"{_yes(sharpest)}; stays low: {_yes(stays)}"
    )
    return text, ("does not hold" if not falls else _grade([sharpest, stays])), f"Δρ {estimate(change, signed=True)}"


def collapsed_entropy(ds) -> float:
    """Nats: COLLAPSED of the uniform policy's entropy ln N in the Dataset's world."""
    return COLLAPSED * world_of_dataset(ds).uniform_entropy


def entropy_collapses(ds):
    world = world_of_dataset(ds)
    uniform, collapsed = world.uniform_entropy, collapsed_entropy(ds)
    e = _curve(ds, "baseline", "policy_entropy")
    e3 = seed_summary(_at(ds, "baseline", "policy_entropy", ours(3)))
    iterations = ds["iteration"].values
    first = next((int(t) for i, t in enumerate(iterations) if seed_summary(e[:, i]).ci_high < collapsed), None)
    text = (
        f"entropy at our iteration {ours(3)} (published t = 3) {estimate(e3)} nats = {e3.mean / uniform:.1%} "
        f"of ln {world.n_sequences} = {fixed(uniform)}; "
        f"final {estimate(seed_summary(e[:, -1]))}; first iteration whose CI upper bound is below "
        f"{COLLAPSED:.0%} of ln {world.n_sequences} ({fixed(collapsed)} nats): {first if first is not None else 'none'}"
    )
    final = seed_summary(e[:, -1]).mean / uniform
    key = f"first {first if first is not None else 'never'}; final {final:.1%} of ln N"
    return text, ("does not hold" if first is None else "holds" if first <= ours(3) else "partly"), key


def perceived_keeps_rising(ds):
    p3, pf = _at(ds, "baseline", "judge_perceived_quality", ours(3)), _at(ds, "baseline", "judge_perceived_quality")
    q3, qf = _at(ds, "baseline", iteration=ours(3)), _at(ds, "baseline")
    rise, real, gap = _paired(pf, p3), _paired(qf, q3), _paired(pf, qf)
    text = (
        f"perceived final − perceived at our {ours(3)} (published t = 3) {estimate(rise, signed=True)} "
        "(real quality over the same span "
        f"{estimate(real, signed=True)}); perceived − real at final {estimate(gap, signed=True)}. "
        f"Still rising: {_yes(_positive(rise))}; "
        f"judge overrates: {_yes(_positive(gap))}"
    )
    return text, _grade([_positive(rise), _positive(gap)]), f"rise {estimate(rise, signed=True)}"


@dataclass(frozen=True)
class ModeSplit:
    """Final values split at the largest gap between sorted values, the lower group at most half of
    the seeds: `lower` marks its seeds (False where the value is not finite)."""

    lower: np.ndarray
    k: int
    n: int
    lower_mean: float
    upper_mean: float
    ashman: float  # Ashman's D: √2·gap / √(var_lower + var_upper)
    given_up: float  # the gap as a share of the upper mode's mean gain over the start

    @property
    def separate(self) -> bool:
        """A separate, much worse mode: Ashman's D > 2 and it gives up ≥ 25% of the upper mode's gain."""
        return self.ashman > 2 and self.given_up >= 0.25


def split_modes(final, start) -> ModeSplit:
    """The lower and upper mode of per-seed `final` values (`start`: the same seeds' values at iteration 0)."""
    final = np.asarray(final, dtype=float)
    finite = np.isfinite(final)
    finals = np.sort(final[finite])
    n = finals.size
    k = 1 + int(np.argmax(np.diff(finals)[: n // 2]))  # lower group: at most half of the seeds
    lower, upper = finals[:k], finals[k:]
    gap, spread = upper.mean() - lower.mean(), np.sqrt(lower.var() + upper.var())
    ashman = np.inf if spread == 0 and gap > 0 else np.sqrt(2) * gap / spread if spread > 0 else 0.0
    given_up = gap / (upper.mean() - np.nanmean(start))
    mask = finite & (final <= lower[-1])
    return ModeSplit(mask, k, n, float(lower.mean()), float(upper.mean()), float(ashman), float(given_up))


def worse_mode(ds):
    q0, qf = _at(ds, "baseline", iteration=0), _at(ds, "baseline")
    n = int(np.isfinite(qf).sum())
    _enough(n, WORSE_MODE_MIN_SEEDS)
    split = split_modes(qf, q0)
    k = split.k
    ci = stats.binomtest(k, n).proportion_ci(0.95, method="wilson")
    d_text = "> 100" if split.ashman > 100 else fixed(split.ashman, 1)
    text = (
        f"baseline finals split at the largest gap between sorted values (lower group ≤ half the seeds): "
        f"lower mode {k}/{n} = {k / n:.0%} [Wilson {ci.low:.0%}, {ci.high:.0%}], mean {fixed(split.lower_mean)} vs "
        f"{fixed(split.upper_mean)}; Ashman's D {d_text}; it gives up {split.given_up:.0%} of the upper mode's gain "
        f"over iteration 0. Separate, much worse mode: {_yes(split.separate)}"
    )
    key = f"{k}/{n}, D {d_text}, gives up {split.given_up:.0%}"
    if not split.separate:
        return text, "does not hold", key
    return text, ("holds" if ci.low <= WORSE_MODE_SHARE <= ci.high else "partly"), key


def slower_judge_helps(ds):
    d10 = _delta(ds, "asymmetric_10")
    held = [c for c in ASYMMETRIC if c in ds["condition"].values]
    deltas = {c: _delta(ds, c) for c in held}
    means = [deltas[c].mean for c in held]
    trend = ", ".join(f"{c} {estimate(deltas[c], signed=True)}" for c in held)
    text = f"Δ final quality vs baseline: {trend}"
    if len(held) > 1:
        text += f"; mean Δ rises with the update interval: {_yes(bool(np.all(np.diff(means) > 0)))}"
    verdict = "does not hold" if not _positive(d10) else "holds" if d10.mean >= MATERIAL else "partly"
    return text, verdict, f"Δ {estimate(d10, signed=True)}"


def meta_with_slow_updates(ds):
    metas = [c for c in META_ALONE if c in ds["condition"].values]
    if not metas:
        raise _Missing("needs a meta_* condition (none in this dataset)")
    combined, alone = _delta(ds, "asym_meta_10"), {c: _delta(ds, c) for c in metas}
    best = max(metas, key=lambda c: alone[c].mean)
    vs_meta, on_top = _delta(ds, "asym_meta_10", best), _delta(ds, "asym_meta_10", "asymmetric_10")
    text = (
        f"Δ vs baseline: {', '.join(f'{c} {estimate(alone[c], signed=True)}' for c in metas)}; asym_meta_10 "
        f"{estimate(combined, signed=True)}. asym_meta_10 − {best} (best meta alone) {estimate(vs_meta, signed=True)}; "
        f"asym_meta_10 − asymmetric_10 (meta on top of slow updates) {estimate(on_top, signed=True)}"
    )
    return text, _grade([_positive(vs_meta), _positive(on_top)]), f"on top {estimate(on_top, signed=True)}"


def ensembles_reduce_variance(ds):
    held = [c for c in ENSEMBLES if c in ds["condition"].values]
    if not held:
        raise _Missing("needs an ensemble_* condition (none in this dataset)")
    deltas = {c: _delta(ds, c) for c in held}
    ratio = sd_ratio(_at(ds, held[-1]), _at(ds, "baseline"))
    no_lift = all(d.ci_high < MATERIAL for d in deltas.values())
    less_spread = bool(ratio[2] < 1 and ratio[0] <= LESS_SPREAD)
    text = (
        f"Δ final quality vs baseline: {', '.join(f'{c} {estimate(d, signed=True)}' for c, d in deltas.items())}; "
        f"sd of final quality {held[-1]}/baseline {estimate(ratio)}. No material lift: {_yes(no_lift)}; "
        f"less spread: {_yes(less_spread)}"
    )
    key = f"sd ratio {estimate(ratio, 2)}; Δ ≤ {fixed(max(d.ci_high for d in deltas.values()), signed=True)}"
    return text, _grade([less_spread, no_lift]), key


def resets_help_a_little(ds):
    held = [c for c in RESETS if c in ds["condition"].values]
    if not held:
        raise _Missing("needs a reinit_* condition (none in this dataset)")
    base = _at(ds, "baseline")
    parts, helping, noisy = [], [], []
    reference = _delta(ds, "asymmetric_10").mean if "asymmetric_10" in ds["condition"].values else np.inf
    for c in held:
        d, per_seed = _delta(ds, c), _at(ds, c) - base
        share = np.mean(per_seed[np.isfinite(per_seed)] > 0)
        parts.append(
            f"{c}: Δ {estimate(d, signed=True)}, sd of per-seed Δ {fixed(d.std)}, better in {share:.0%} of seeds, "
            f"sd ratio vs baseline {estimate(sd_ratio(_at(ds, c), base))}"
        )
        if _positive(d):
            helping.append(d.mean)
            noisy.append(d.std > d.mean)
    little = all(m < reference for m in helping)
    text = "; ".join(parts) + f". Helps (CI > 0): {_yes(bool(helping))}; noisy: {_yes(any(noisy))}"
    if np.isfinite(reference):
        text += f"; less than asymmetric_10 (Δ {fixed(reference, signed=True)}): {_yes(little)}"
    key = ", ".join(f"Δ {estimate(_delta(ds, c), signed=True)}" for c in held)
    if helping:
        return text, ("holds" if any(noisy) and little else "partly"), key
    means = [_delta(ds, c).mean for c in held]
    return text, ("partly" if max(means) > 0 else "does not hold"), key


def frozen_keeps_alignment(ds):
    change = _paired(_at(ds, "frozen", "judge_alignment"), _at(ds, "frozen", "judge_alignment", 0))
    gain = _paired(_at(ds, "frozen"), _at(ds, "frozen", iteration=0))
    vs_base = _delta(ds, "frozen")
    kept, little = change.ci_low >= -ALIGNMENT_KEPT, vs_base.ci_high < MATERIAL
    text = (
        f"frozen alignment final − 0 {estimate(change, signed=True)}; "
        f"quality gain 0→final {estimate(gain, signed=True)}; "
        f"Δ vs baseline {estimate(vs_base, signed=True)}"
    )
    if "asymmetric_10" in ds["condition"].values:
        text += f"; Δ vs asymmetric_10 {estimate(_delta(ds, 'frozen', 'asymmetric_10'), signed=True)}"
    text += f". Alignment kept: {_yes(kept)}; no material gain over baseline: {_yes(little)}"
    return text, _grade([kept, little]), f"Δρ {estimate(change, signed=True)}; Δ {estimate(vs_base, signed=True)}"


def anchor_upper_bound(ds):
    anchor = _at(ds, "anchor_0.1")
    if "anchor_fraction" not in ds.coords:
        raise _Missing("needs the anchor_fraction knob coordinate to tell oracle conditions apart")
    oracle = ds["anchor_fraction"].values > 0  # q*-labelled anchor pairs: the oracle's information
    others = [c for c, is_oracle in zip(ds["condition"].values.tolist(), oracle, strict=True) if not is_oracle]
    if not others:
        raise _Missing("needs a non-oracle condition")
    finals = {c: np.nanmean(_at(ds, c)) for c in others}
    best = max(others, key=finals.get)
    deltas = {c: _paired(anchor, _at(ds, c)) for c in others}
    beaten = sum(_positive(d) for d in deltas.values())
    text = (
        f"anchor_0.1 final quality {estimate(seed_summary(anchor))}; best non-oracle {best} {fixed(finals[best])}; "
        f"paired Δ anchor_0.1 − {best} {estimate(deltas[best], signed=True)}; beats {beaten}/{len(others)} non-oracle "
        "conditions with CI > 0"
    )
    key = f"beats {beaten}/{len(others)}; − {best} {estimate(deltas[best], signed=True)}"
    if beaten == len(others):
        return text, "holds", key
    return text, ("partly" if all(d.mean > 0 for d in deltas.values()) else "does not hold"), key


# ---------------------------------------------------------------- registry

REGISTRY = [
    (
        "1. Quality jumps, then plateaus",
        "Baseline: real quality jumps in the first outer iteration, then plateaus.",
        "Jump: gain 0→1 CI > 0 and ≥ 50% of the mean 0→final gain. Plateau: CI upper bound of the gain "
        "2→final < 10% of the 0→final gain. Both: holds; one: partly.",
        jump_then_plateau,
    ),
    (
        "2. Alignment falls, sharpest first, stays low",
        "Baseline: judge alignment falls from ≈0.7 (sharpest drop first) and stays low.",
        "Falls: paired change final − 0 CI < 0 (else does not hold). Sharpest first: paired (drop 0→1 − the "
        "largest later mean drop) CI > 0. Stays low: mean recovery from the per-seed trough ≤ 25% of the fall. "
        "Falls and both: holds; falls: partly.",
        alignment_falls,
    ),
    (
        "3. Entropy collapses by ≈3",
        "Baseline: policy entropy collapses to near zero by iteration ≈3 (published t; our iteration 4).",
        f"Collapsed: CI upper bound of the mean entropy < {COLLAPSED:.0%} of ln N (the uniform policy's). First "
        "collapsed iteration ≤ 4 (ours; the published t = 3): holds; later: partly; never: does not hold.",
        entropy_collapses,
    ),
    (
        "4. Perceived quality keeps rising",
        "Baseline: judge-perceived quality keeps rising.",
        "Rising: paired perceived final − perceived at our iteration 4 (published t = 3) CI > 0. "
        "Overrating: paired perceived − real at final "
        "CI > 0. Both: holds; one: partly.",
        perceived_keeps_rising,
    ),
    (
        "5. A much worse mode",
        "Baseline: one of five seeds settles in a much worse mode.",
        "Split the sorted baseline finals at their largest gap with ≤ half the seeds below. A separate, much "
        "worse mode: Ashman's D > 2 and it gives up ≥ 25% of the upper mode's gain over iteration 0 (else "
        "does not hold). Wilson 95% CI of its share contains 1/5: holds; else partly.",
        worse_mode,
    ),
    (
        "6. Slower judge updates help",
        "Slower judge updates (every 10 policy steps) help materially.",
        f"Paired Δ final quality asymmetric_10 − baseline: CI > 0 and mean ≥ {MATERIAL} (material): holds; "
        "CI > 0 but smaller: partly; else does not hold.",
        slower_judge_helps,
    ),
    (
        "7. Meta helps mainly with slow updates",
        "Meta-correction helps mainly when combined with slower updates.",
        "Paired asym_meta_10 − the best meta-alone condition CI > 0; paired asym_meta_10 − asymmetric_10 "
        "CI > 0 (meta adds to slow updates). Both: holds; one: partly.",
        meta_with_slow_updates,
    ),
    (
        "8. Ensembles: less variance, same ceiling",
        "Ensembles reduce variance but do not lift the ceiling.",
        f"Less variance: sd(ensemble_5)/sd(baseline) of final quality ≤ {LESS_SPREAD} with Pitman–Morgan "
        "CI < 1. Same "
        f"ceiling: CI upper bound of every ensemble's paired Δ final quality < {MATERIAL}. Both: holds; "
        "one: partly.",
        ensembles_reduce_variance,
    ),
    (
        "9. Resets help a little, noisily",
        "Periodic resets help a little and noisily.",
        "Helps: some reinit's paired Δ final quality CI > 0; noisily: its per-seed Δ sd > its mean Δ; a "
        "little: mean Δ below asymmetric_10's. All three: holds; helps, or mean Δ > 0 without CI > 0: "
        "partly; else does not hold.",
        resets_help_a_little,
    ),
    (
        "10. Frozen judge: alignment kept, little quality",
        "The frozen judge keeps alignment but gains little quality.",
        f"Kept: paired alignment change final − 0 has CI lower bound ≥ −{ALIGNMENT_KEPT}. Little: CI upper "
        f"bound of paired Δ final quality frozen − baseline < {MATERIAL}. Both: holds; one: partly.",
        frozen_keeps_alignment,
    ),
    (
        "11. The q*-anchor is an upper bound",
        "The q*-anchor (oracle) is an upper bound, not a practical method.",
        "Paired Δ final quality anchor_0.1 − each non-oracle condition (anchor_fraction = 0): all CI > 0: "
        "holds; all means > 0: partly; else does not hold.",
        anchor_upper_bound,
    ),
]


def evaluate_claims(ds: xr.Dataset) -> list[Claim]:
    """One Claim per published observation; claims whose conditions are missing get verdict n/a."""
    masked = mask_diverged(ds)
    claims = []
    for name, statement, rule, test in REGISTRY:
        try:
            measurement, verdict, key = test(masked)
        except _Missing as missing:
            measurement, verdict, key = str(missing), "n/a", "n/a"
        except _TooFewSeeds as few:
            measurement, verdict, key = str(few), "not enough seeds", f"n = {few.n}"
        claims.append(Claim(name, statement, rule, measurement, verdict, key))
    return claims


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def claims_markdown(datasets: dict) -> str:
    """One table: claim, published statement, test, then measurement and verdict per labelled Dataset."""
    evaluated = {label: evaluate_claims(ds) for label, ds in datasets.items()}
    header = ["claim", "published statement", "test and verdict rule"]
    for label in datasets:
        header += [f"measurement ({label})", f"verdict ({label})"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, (name, statement, rule, _) in enumerate(REGISTRY):
        cells = [name, statement, rule]
        for claims in evaluated.values():
            cells += [claims[i].measurement, f"**{claims[i].verdict}**"]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    left_out = ", ".join(f"{label}: {n_diverged(ds)}" for label, ds in datasets.items())
    footer = (
        "Intervals: 95% Student-t CIs of the mean over seeds (of the per-seed differences for Δ; coverage "
        "checked by simulation); Δ = paired by seed (same pretrained judge and policy initialisation); sd "
        "ratios: Pitman–Morgan interval for paired samples; mode share: Wilson score interval. "
        f"Verdicts need ≥ {MIN_SEEDS} seeds (≥ {WORSE_MODE_MIN_SEEDS} for the worse mode), else "
        '"not enough seeds". '
        f'"CI > 0" = lower bound above {TOLERANCE} (float32 residue). Final = last outer iteration; '
        "iteration 0 = right after judge pretraining; our iteration k = the reference's t = k − 1 (its "
        f"records start after its first outer iteration). Material Δ quality: "
        f"≥ {MATERIAL} (q* over all 4096 outputs has sd ≈ 1.31). "
        f"Diverged runs left out ({left_out})."
    )
    return "\n".join(lines) + "\n\n" + footer + "\n"


def write_claims(datasets: dict, path, *, force: bool = False) -> str:
    """claims_markdown written to `path` (an existing file only with `force`)."""
    text = claims_markdown(datasets)
    return str(write_atomically(path, lambda temporary: Path(temporary).write_text(text), force=force))
