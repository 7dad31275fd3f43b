"""`coevo stability FILE`: is a run's end state a stable fixed point of the exact loop?

Under gradient_estimator `exact` a run is a deterministic map of its state (docs/mean_field.md).
This module reruns chosen runs of a results file to their final state (with the file's own
estimator), then linearises there the exact loop's map F over one judge period, with the run's
own knobs, and finds the leading eigenvalues of its Jacobian by ARPACK without forming it: each
product J·v is one `jax.jvp` of F. The map, the method and what the numbers mean:
docs/mean_field.md §11.
"""

import functools
import math
import time
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse.linalg
import xarray as xr
from jax.flatten_util import ravel_pytree

from engine.core import exact
from engine.core.world import run_q_star
from engine.host.inputs import InputError, parse_seeds
from engine.host.merge import parts_of
from engine.host.plan import make_plan
from engine.host.program import compile_program, make_program
from engine.host.results import study_of
from engine.host.study import ResolvedStudy, StudyError, resolve
from engine.host.verify import part_run
from engine.knobs import Sizes, Variant, records_per_iteration
from engine.loop.batch import begin_iteration, make_batch_run

DEFAULT_K = 6
RUNS_PER_CONDITION = 2  # runs linearised per condition when --runs is not given: the file's first seeds
# ARPACK's relative tolerance: the products are float32, exact to about 1e-6 of |J·v|.
TOLERANCE = 1e-5
MAX_RESTARTS = 300
# The policy's head bias direction u is deflated only if F maps it to itself: ‖J·u − u‖ below this.
SYMMETRY_TOLERANCE = 1e-4


class RunChoice(NamedTuple):
    condition: str
    seed: int


def parse_runs(text: str | None, ds: xr.Dataset) -> list[RunChoice]:
    """'baseline:0,frozen:1' -> the runs it names, each checked against the file; None: every
    condition at the file's first RUNS_PER_CONDITION seeds."""
    conditions, seeds = [str(c) for c in ds.condition.values], [int(s) for s in ds.seed.values]
    if text is None:
        return [RunChoice(c, s) for c in conditions for s in seeds[:RUNS_PER_CONDITION]]
    runs = []
    for part in text.split(","):
        condition, colon, seed = part.strip().rpartition(":")
        if not colon or not condition or not seed.strip().isdecimal():
            raise InputError(f"--runs {text!r}: cannot read {part.strip()!r}; expected condition:seed, e.g. baseline:0")
        if condition not in conditions:
            raise InputError(
                f"--runs: no condition {condition!r} in the file (its conditions: {', '.join(conditions)})"
            )
        if int(seed) not in seeds:
            raise InputError(f"--runs: seed {int(seed)} is not in the file (its seeds: {', '.join(map(str, seeds))})")
        runs.append(RunChoice(condition, int(seed)))
    return list(dict.fromkeys(runs))


def period(knobs: dict) -> int:
    """Inner steps of the map: one judge period (`judge_update_every`; 1 for a frozen judge), and a
    whole number of meta periods where the run has a meta step."""
    steps = 1 if knobs["freeze_judge"] else knobs["judge_update_every"]
    return math.lcm(steps, knobs["meta_update_every"]) if knobs["meta_update_every"] else steps


def judges_move(knobs: dict) -> bool:
    """Do the judges step within the map (a frozen judge still takes meta steps, as in the reference)?"""
    return not knobs["freeze_judge"] or knobs["meta_update_every"] > 0


def rerun_plan(ds: xr.Dataset, runs: list[RunChoice]) -> ResolvedStudy:
    """The file's study restricted to the chosen runs' conditions and seeds, resolved under
    gradient_estimator exact (and as it ran): every problem one line before anything is compiled."""
    if "study" not in ds.attrs:
        raise InputError("the file records no study (it was not written by `coevo run`): it cannot be rerun")
    study = study_of(ds)
    names = list(dict.fromkeys(run.condition for run in runs))
    study["conditions"] = {name: study["conditions"][name] for name in names}
    seeds = sorted({run.seed for run in runs})
    resolve(study, seeds=seeds)
    as_exact = {
        **study,
        "conditions": {n: {**k, "gradient_estimator": "exact"} for n, k in study["conditions"].items()},
    }
    exact_resolved = resolve(as_exact, seeds=seeds)
    for name in names:
        knobs = exact_resolved.conditions[name]
        if knobs["judge_data"] != "fresh":
            raise StudyError(
                f"condition {name!r}: judge_data {knobs['judge_data']!r} keeps a growing sum of past policies "
                "in the run's state (no fixed point to linearise at); stability needs judge_data 'fresh'"
            )
        if knobs["policy_response"] == "best_response":
            raise StudyError(
                f"condition {name!r}: policy_response 'best_response' holds the judges' scores fixed inside π* by "
                "stop_gradient, so a derivative of the step would miss π*'s dependence on the judges"
            )
        if period(knobs) > exact_resolved.sizes.steps_per_iter:
            raise StudyError(
                f"condition {name!r}: one judge period ({period(knobs)} inner steps) is longer than an outer "
                f"iteration ({exact_resolved.sizes.steps_per_iter})"
            )
    return exact_resolved


class EndState(NamedTuple):
    """One rerun run at its final state: a batch of one."""

    run: RunChoice
    knobs: dict  # its condition's, resolved under gradient_estimator exact
    variant: Variant  # its group's, under gradient_estimator exact
    sizes: Sizes
    state: object  # RunState, leaves (1, ...)
    inputs: object  # RunInputs, leaves (1, ...)
    largest_difference: float  # |final record − the file's| over its compared metrics (0: bit-identical)


def rerun_to_end(ds: xr.Dataset, runs: list[RunChoice], devices) -> list[EndState]:
    """Every chosen run rerun to its final state as the file ran it: the whole chunk of seeds it ran in,
    every condition, the file's device count and sub-batch size (a run's bits depend on them), its
    last record compared with the file's."""
    exact_resolved = rerun_plan(ds, runs)
    ends = []
    for part in parts_of(ds):
        ran = part_run(ds, part)
        resolved = resolve(study_of(ds), seeds=parse_seeds(part["seeds"]))
        for chunk in ran.chunks:
            mine = [run for run in runs if run.seed in chunk and run.seed in resolved.seeds]
            if mine:  # on fewer devices than the file's, if this machine has fewer (the comparison says so)
                n_devices = min(ran.n_devices, len(devices))
                plan = make_plan(resolved, chunk, n_devices, ran.sub_batch)
                ends += _rerun_chunk(ds, plan, resolved, exact_resolved, mine, devices[:n_devices])
    return sorted(ends, key=lambda end: runs.index(end.run))


def _rerun_chunk(ds, plan, resolved: ResolvedStudy, exact_resolved: ResolvedStudy, runs, devices) -> list[EndState]:
    compiled = compile_program(
        make_program(plan.variants, resolved.sizes, devices, plan.sub_batch), plan.program_inputs()
    )
    pretrain_inputs, group_inputs = plan.program_inputs()
    pretrained = compiled.pretrain(pretrain_inputs)
    started = compiled.start(tuple(table.judge for table in pretrained), group_inputs)
    states = started.states
    for outer in range(resolved.sizes.n_iterations):
        for interval in range(records_per_iteration(resolved.sizes)):
            states = compiled.advance(states, started.runs, np.int32(outer), np.int32(interval))
    record = plan.scatter([jax.device_get(group) for group in compiled.measure(states, started.runs)])
    names = list(resolved.conditions)
    ends = []
    for run in runs:
        c, s = names.index(run.condition), plan.seeds.index(run.seed)
        g, at = next(
            (g, group.position[i])
            for g, group in enumerate(plan.groups)
            for i in range(len(group.condition_index))
            if group.condition_index[i] == c and group.seed_index[i] == s
        )

        def one(tree, at=at):
            return jax.tree.map(lambda leaf: jax.device_put(np.asarray(leaf[at : at + 1]), devices[0]), tree)

        variant = plan.groups[g].variant._replace(gradient_estimator="exact")
        difference = _difference(ds, record, run, c, s)
        knobs, sizes = exact_resolved.conditions[run.condition], exact_resolved.sizes
        ends.append(EndState(run, knobs, variant, sizes, one(states[g]), one(started.runs[g]), difference))
    return ends


def _difference(ds: xr.Dataset, record: dict, run: RunChoice, c: int, s: int) -> float:
    """Largest |difference| between the rerun's final record and the file's, over the numbers both hold
    (NaN equal to NaN)."""
    time_dim = "step" if "step" in ds.dims else "iteration"
    largest = 0.0
    for name, values in record.items():
        if name not in ds or ds[name].dims != ("condition", "seed", time_dim) or ds[name].dtype.kind not in "biuf":
            continue
        theirs = ds[name].sel(condition=run.condition, seed=run.seed).isel({time_dim: -1}).values.astype(np.float64)
        mine = np.float64(values[c, s])
        if theirs != mine and not (np.isnan(theirs) and np.isnan(mine)):
            largest = max(largest, float(abs(theirs - mine)))
    return largest


# ----------------------------------------------------------------------------------------
# The map and its linearisation.


def _adam(opt_state):
    """Adam's own state (count, mu, nu) inside the lab's optimiser state (engine.core.optim.ADAM)."""
    return opt_state.inner_state[0]


PARTS = ("policy", "policy Adam m", "policy Adam v", "judges", "judges' Adam m", "judges' Adam v")


def moving_parts(state, with_judges: bool) -> tuple:
    """The map's state: the policy's parameters and Adam moments, the judges' too where they step."""
    policy = (state.policy, _adam(state.policy_opt).mu, _adam(state.policy_opt).nu)
    return policy + ((state.judges, _adam(state.judge_opt).mu, _adam(state.judge_opt).nu) if with_judges else ())


def with_moving_parts(state, parts: tuple):
    def where(s):
        return moving_parts(s, len(parts) == len(PARTS))

    return eqx.tree_at(where, state, parts)


class OneStepMap(NamedTuple):
    """F as a function of a flat float32 vector, at the base point x0."""

    x0: jax.Array
    step: object  # x -> F(x)
    outputs: object  # x -> (log π of all N, each judge's scores less their mean), flat
    part_sizes: tuple[int, ...]  # entries of each of PARTS present, in order
    symmetry: np.ndarray  # the unit vector along the policy's head bias: π does not see it
    unread: np.ndarray  # bool, the entries nothing else reads: the judges' head biases and their moments


def one_step_map(end: EndState, inner_steps: int, with_judges: bool, outer: int) -> OneStepMap:
    """F: `inner_steps` inner steps of the exact loop from the start of outer iteration `outer`
    (the run's next), everything but the moving parts held as the run left it (Adam's step count,
    π₀, the pretrained judges)."""
    base = begin_iteration(end.state, end.inputs)
    parts = moving_parts(base, with_judges)
    x0, unravel = ravel_pytree(parts)
    sizes = tuple(ravel_pytree(part)[0].size for part in parts)
    inner_step = make_batch_run(end.variant, end.sizes).step
    q_stars = jax.vmap(functools.partial(run_q_star, end.state.world))(end.inputs.condition)

    def step(x):
        def body(state, inner):
            return inner_step(state, end.inputs, q_stars, outer, inner), None

        state, _ = jax.lax.scan(body, with_moving_parts(base, unravel(x)), jnp.arange(inner_steps))
        return ravel_pytree(moving_parts(state, with_judges))[0]

    def outputs(x):
        state = with_moving_parts(base, unravel(x))
        log_probs = jax.vmap(exact.policy_log_probs_tree)(state.policy)
        scores = eqx.filter_vmap(eqx.filter_vmap(lambda judge: judge.all_scores()))(state.judges)
        return jnp.concatenate([log_probs.ravel(), (scores - scores.mean(axis=-1, keepdims=True)).ravel()])

    unread = _judges_head_biases(parts) if with_judges and not end.variant.judge_anchored else np.zeros(x0.size, bool)
    return OneStepMap(x0, step, outputs, sizes, _policy_head_bias(parts), unread)


def _policy_head_bias(parts) -> np.ndarray:
    """The unit vector adding a constant to the policy's logits: π stays as it is, so F(s + εu) =
    F(s) + εu, an eigenvalue 1 of every state that says nothing."""
    marked = jax.tree.map(jnp.zeros_like, parts)
    marked = eqx.tree_at(lambda p: p[0].head.bias, marked, jnp.ones_like(parts[0].head.bias))
    vector = np.asarray(ravel_pytree(marked)[0], np.float64)
    return vector / np.linalg.norm(vector)


def _judges_head_biases(parts) -> np.ndarray:
    """The entries of the judges' head biases and of their Adam moments. A constant added to a
    judge's scores leaves every score difference, which is all the judges' steps read, and the
    policy's gradient (Σ_x ∇π(x) = 0): nothing but the bias's own Adam state reads the bias, and
    its gradient is 0 up to rounding, so its v is tiny and ∂θ/∂v (∝ v^(−3/2)) reaches 1e13."""
    marked = jax.tree.map(lambda leaf: jnp.zeros(leaf.shape, bool), parts)
    for index in (3, 4, 5):
        marked = eqx.tree_at(lambda p, i=index: p[i].head.bias, marked, jnp.ones_like(parts[index].head.bias, bool))
    return np.asarray(jnp.concatenate([leaf.ravel() for leaf in jax.tree.leaves(marked)]))


class Eigenpair(NamedTuple):
    value: complex  # an eigenvalue of J (of the map over `period` inner steps)
    error: float  # ‖J·u − λ·u‖ for its unit eigenvector u (relative coordinates): how far off λ may be
    output_motion: float  # ‖Dφ·D·u‖, φ = (log π of all N, each judge's centred scores): what the outputs see of u
    shares: tuple[float, ...]  # |u|² on each part of the state (PARTS, those present)


class Stability(NamedTuple):
    """The linearisation of one run's map at its final state."""

    run: RunChoice
    period: int  # inner steps of the map
    part_sizes: tuple[int, ...]  # entries of each of PARTS present
    unread: int  # entries left out: the judges' head biases and their moments (nothing else reads them)
    residual: float  # ‖F(s) − s‖ / ‖s‖ over the whole state
    parameter_residual: float  # the same over the parameters alone
    deflated: bool  # the policy's head bias direction passed J·u = u and was deflated
    eigenpairs: tuple[Eigenpair, ...]  # converged, by decreasing |λ|
    k: int  # eigenvalues asked for
    matvecs: int
    compile_seconds: float
    seconds: float  # every product J·v and ARPACK's own work, after compiling
    largest_difference: float  # the rerun's final record against the file's (0: bit-identical)

    @property
    def spectral_radius(self) -> float:
        return max((abs(pair.value) for pair in self.eigenpairs), default=float("nan"))

    @property
    def verdict(self) -> str:
        """The spectral radius against 1, with the leading eigenvalue's error."""
        if not self.eigenpairs:
            return "no eigenvalue converged"
        leading = max(self.eigenpairs, key=lambda pair: abs(pair.value))
        radius, error = abs(leading.value), leading.error
        if radius + error < 1:
            return "< 1: locally contracting (a stable fixed point, if F(s) = s)"
        if radius - error > 1:
            return "> 1: locally expanding"
        return "= 1 within its error: undecided"


def linearise(end: EndState, k: int = DEFAULT_K) -> Stability:
    """The k eigenvalues of largest modulus of J = DF at the run's final state, by ARPACK on products
    J·v = jax.jvp(F). The judges' head biases and their moments are left out: nothing else reads
    them, so J is block-triangular there and the rest of its spectrum is that of the other entries
    (left in where a pull to the pretrained judge reads them). The policy's head bias direction u,
    an eigenvalue 1 that says nothing, is deflated once J·u = u is checked: ARPACK works on
    (I − uuᵀ)·J·(I − uuᵀ), whose nonzero spectrum is J's without it.

    ARPACK sees J in relative coordinates δx_i/|x_i|, D⁻¹·J·D with D = diag|x| (a similarity: the
    same eigenvalues). In absolute ones a parameter whose gradient is near 0 has a tiny Adam v and
    ∂θ/∂v ∝ v^(−3/2) up to 1e10: so non-normal a J that ARPACK, even in float64, misses its leading
    eigenvalue (tests/test_stability.py's tiny run). The price: float32's rounding of J·v, divided
    by a small |x_i|, is the floor of the reported errors. Eigenvectors, errors and shares are in
    these coordinates."""
    steps, with_judges = period(end.knobs), judges_move(end.knobs)
    the_map = one_step_map(end, steps, with_judges, end.sizes.n_iterations)
    x0 = the_map.x0
    start = time.perf_counter()
    image = jax.jit(the_map.step).lower(x0).compile()
    tangent = jax.jit(lambda v: jax.jvp(the_map.step, (x0,), (v,))[1]).lower(x0).compile()
    output_tangent = jax.jit(lambda v: jax.jvp(the_map.outputs, (x0,), (v,))[1]).lower(x0).compile()
    compile_seconds = time.perf_counter() - start

    start = time.perf_counter()
    matvecs = 0
    kept = ~the_map.unread
    part_of = np.repeat(np.arange(len(the_map.part_sizes)), the_map.part_sizes)[kept]

    def embedded(vector: np.ndarray) -> jax.Array:
        full = np.zeros(x0.size, np.float32)
        full[kept] = vector
        return jnp.asarray(full)

    x0_host = np.asarray(x0, np.float64)
    scale = np.where(x0_host == 0, 1.0, np.abs(x0_host))[kept]

    def absolute_product(vector: np.ndarray) -> np.ndarray:
        nonlocal matvecs
        matvecs += 1
        return np.asarray(tangent(embedded(vector)), np.float64)[kept]

    def product(vector: np.ndarray) -> np.ndarray:
        """D⁻¹·J·D·vector, D = diag|x0|: J in relative coordinates δx_i/|x_i|."""
        return absolute_product(scale * vector) / scale

    change = np.asarray(image(x0), np.float64) - x0_host
    parameters = np.isin(np.repeat(np.arange(len(the_map.part_sizes)), the_map.part_sizes), (0, 3))
    residual = np.linalg.norm(change) / np.linalg.norm(x0_host)
    parameter_residual = np.linalg.norm(change[parameters]) / np.linalg.norm(x0_host[parameters])

    symmetry = the_map.symmetry[kept]
    fixed = np.linalg.norm(absolute_product(symmetry) - symmetry) <= SYMMETRY_TOLERANCE
    relative_symmetry = symmetry / scale
    basis = (relative_symmetry / np.linalg.norm(relative_symmetry))[:, None] if fixed else np.zeros((kept.sum(), 0))

    def project(vector):
        return vector - basis @ (basis.T @ vector)

    def deflated_product(vector):
        return project(product(project(np.asarray(vector, np.float64).ravel())))

    n = int(kept.sum())
    operator = scipy.sparse.linalg.LinearOperator((n, n), matvec=deflated_product, dtype=np.float64)
    v0 = project(np.random.default_rng(0).standard_normal(n))
    try:
        values, vectors = scipy.sparse.linalg.eigs(
            operator, k=k, which="LM", v0=v0, tol=TOLERANCE, ncv=max(2 * k + 1, 20), maxiter=MAX_RESTARTS
        )
    except scipy.sparse.linalg.ArpackNoConvergence as partial:
        values, vectors = partial.eigenvalues, partial.eigenvectors

    pairs = []
    for value, vector in zip(values, vectors.T, strict=True):
        vector = vector / np.linalg.norm(vector)
        image_of = deflated_product(vector.real) + 1j * deflated_product(vector.imag)
        motion = np.hypot(
            *(np.linalg.norm(np.asarray(output_tangent(embedded(scale * part)))) for part in (vector.real, vector.imag))
        )
        shares = np.bincount(part_of, np.abs(vector) ** 2, minlength=len(the_map.part_sizes))
        error = float(np.linalg.norm(image_of - value * vector))
        pairs.append(Eigenpair(complex(value), error, float(motion), tuple(float(share) for share in shares)))
    pairs.sort(key=lambda pair: -abs(pair.value))
    return Stability(
        end.run,
        steps,
        the_map.part_sizes,
        int(the_map.unread.sum()),
        float(residual),
        float(parameter_residual),
        bool(fixed),
        tuple(pairs),
        k,
        matvecs,
        compile_seconds,
        time.perf_counter() - start,
        end.largest_difference,
    )


def report_lines(result: Stability) -> list[str]:
    """A run's linearisation as text: the map, the fixed-point residual, the eigenvalues, the verdict, the cost."""
    parts = ", ".join(f"{name} {size:,}" for name, size in zip(PARTS, result.part_sizes, strict=False))
    rerun = (
        "bit-identical to the file's"
        if result.largest_difference == 0
        else f"differs from the file's by up to {result.largest_difference:.3g}"
    )
    lines = [
        f"{result.run.condition} seed {result.run.seed}: F = {result.period} inner step(s) of the exact loop, "
        f"state of {sum(result.part_sizes):,} ({parts})",
        f"  the rerun's final record: {rerun}",
        f"  ‖F(s) − s‖/‖s‖ = {result.residual:.3g} (parameters alone: {result.parameter_residual:.3g})",
        f"  left out: {result.unread} entries of the judges' head biases and their moments (nothing else reads them); "
        + ("deflated" if result.deflated else "NOT deflated (J·u ≠ u)")
        + ": the policy's head bias direction (eigenvalue 1, π does not see it)",
        f"  {'|λ|':>10} {'λ':>24} {'per step':>10} {'error':>9} {'outputs':>9}  |u|² on the parts",
    ]
    for pair in result.eigenpairs:
        per_step = abs(pair.value) ** (1 / result.period)
        shares = " ".join(f"{share:.2f}" for share in pair.shares)
        lines.append(
            f"  {abs(pair.value):>10.6f} {pair.value.real:>11.6f}{pair.value.imag:+.6f}i {per_step:>10.6f}"
            f" {pair.error:>9.2g} {pair.output_motion:>9.3g}  {shares}"
        )
    lines.append(
        f"  spectral radius {result.spectral_radius:.6f} ({len(result.eigenpairs)} of {result.k} converged) "
        f"{result.verdict}"
    )
    per_product = 1000 * result.seconds / max(result.matvecs, 1)
    lines.append(
        f"  cost: compile {result.compile_seconds:.1f} s; {result.matvecs} products J·v in {result.seconds:.1f} s "
        f"({per_product:.0f} ms each, ARPACK included)"
    )
    return lines
