"""`coevo bench`: what a study costs, compile and run time apart, against the machine's peak.

Each measurement runs in a fresh subprocess with the compilation cache off, so compile
seconds are real and peak RSS belongs to that measurement alone. Every study it will measure
is first resolved and estimated as `coevo run` does (engine.host.estimate): one that cannot fit
this machine is refused before any measurement starts, and a long one says so on stderr.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from engine.cli.profile import profile_baseline
from engine.host.inputs import load_study

DEFAULT_SIZES = (1, 17, 85, 340)
SEQUENTIAL_MAX = 17

# `--mechanisms`: one condition per mechanism (each a group of runs of its own, so its own code,
# but the two exact regularisers, which share one),
# priced against the baseline; the curve adds them to one study in this order.
MECHANISM_CONDITIONS = {
    "baseline": {},
    "ensemble_3": {"n_judges": 3},
    "anchor_0.1": {"anchor_fraction": 0.1},
    "meta_10": {"meta_holdout_fraction": 0.05, "meta_update_every": 10},
    "meta_judge": {"meta_source": "judge", "meta_update_every": 1, "meta_pairs": 16},
    "kl_exact_0.1": {"kl_penalty": 0.1},
    "entropy_exact_0.1": {"entropy_exact": 0.1},
    "judge_anchor_1": {"judge_anchor": 1.0},
    "dpo": {"update_rule": "dpo"},
    "dpo_lc0.4": {"update_rule": "dpo", "length_control": 0.4},
    "dpo_temporal": {"update_rule": "dpo", "anchored_rejection": True, "future_chosen": True},
}
MECHANISM_SEEDS = 8
CURVE_POINTS = (1, 2, 4, 8, len(MECHANISM_CONDITIONS))
# `--estimators`: conditions priced under gradient_estimator sampled and exact (docs/mean_field.md)
ESTIMATOR_CONDITIONS = {
    "baseline": {},
    "asymmetric_10": {"judge_update_every": 10},
    "anchor_0.1": {"anchor_fraction": 0.1},
    "ensemble_3": {"n_judges": 3},
}
ESTIMATOR_RUNS = 8


def run_counts(text: str) -> tuple[int, ...]:
    """--sizes: comma-separated positive run counts, e.g. '1,17,85'."""
    parts = [part.strip() for part in text.split(",")]
    if not all(part.isdecimal() and part.isascii() and int(part) > 0 for part in parts):
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated positive run counts, e.g. '1,17,85'")
    return tuple(int(part) for part in parts)


def positive_int(text: str) -> int:
    if not (text.strip().isdecimal() and text.strip().isascii() and int(text) > 0):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive integer")
    return int(text)


def measurement(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not JSON ({error})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


def engine_tree(text: str) -> Path:
    """A checkout of this project (another commit's engine), for --against."""
    tree = Path(text).resolve()
    if not (tree / "engine" / "__init__.py").is_file():
        raise argparse.ArgumentTypeError(f"{text}: not a checkout of this project (no engine/__init__.py)")
    return tree


def add_arguments(parser):
    """Every argument is checked while parsing: a bad one ends in one line and exit status 2."""
    parser.add_argument("--study", default="blog", help="study measured end to end (default: blog)")
    parser.add_argument("--sizes", type=run_counts, default=DEFAULT_SIZES, help="baseline run counts, e.g. 1,17,85")
    parser.add_argument("--steps-per-iter", type=positive_int, help="shorten runs (default: the study's)")
    parser.add_argument("--iterations", type=positive_int, help="shorten runs (default: the study's)")
    parser.add_argument("--no-sequential", action="store_true", help="skip the one-run-at-a-time comparison")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument(
        "--mechanisms",
        action="store_true",
        help="instead: each mechanism's compile seconds and cost per run-step against the baseline, "
        "and compile seconds against the number of mechanisms in one study",
    )
    parser.add_argument(
        "--estimators",
        action="store_true",
        help="instead: µs per run-step of a few conditions under gradient_estimator sampled and exact, each "
        "compiled apart, then timed alternately in one process",
    )
    parser.add_argument(
        "--against",
        type=engine_tree,
        metavar="TREE",
        help="instead: the study end to end from an empty cache by TREE's engine (a checkout of another "
        "commit, e.g. from `git worktree add`) and by this one, alternately, --repeat times; with their ratios",
    )
    parser.add_argument(
        "--repeat", type=positive_int, help="rounds of --against (default 1) or of --estimators (default 5)"
    )
    parser.add_argument("--measure", type=measurement, help=argparse.SUPPRESS)  # one measurement, as JSON


def baseline_study(n_runs: int, base: dict) -> dict:
    return {"name": f"baseline_x{n_runs}", "seeds": list(range(n_runs)), "base": base, "conditions": {"baseline": {}}}


def mechanisms_study(names, base: dict) -> dict:
    conditions = {name: MECHANISM_CONDITIONS[name] for name in names}
    return {"name": "mechanisms", "seeds": list(range(MECHANISM_SEEDS)), "base": base, "conditions": conditions}


def matmul_peak_gflops(size: int = 2048, repeats: int = 10) -> float:
    """Measured float32 matmul throughput of all of this machine's devices at once, GFLOP/s (best
    of 3): one size² product per device, as the engine runs one share of the runs per device
    (on CPU one device per core, each single-threaded under the numerics pin)."""
    import jax
    import jax.numpy as jnp

    devices = jax.devices()
    sharding = jax.sharding.NamedSharding(jax.sharding.Mesh(devices, ("d",)), jax.sharding.PartitionSpec("d"))
    a = jax.device_put(jax.random.normal(jax.random.PRNGKey(0), (len(devices), size, size)), sharding)
    matmul = jax.jit(lambda x: x @ x / jnp.float32(size))
    matmul(a).block_until_ready()
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(repeats):
            a = matmul(a)
        a.block_until_ready()
        best = max(best, 2 * size**3 * len(devices) * repeats / (time.perf_counter() - t0) / 1e9)
    return best


def flops_per_inner_step(study: dict) -> float:
    """XLA's cost analysis of one inner step of a study's first group of runs, per run."""
    import functools

    import jax

    from engine.core.models import judge_model, make_judges
    from engine.core.state import make_run_inputs
    from engine.core.world import run_q_star
    from engine.host.plan import judge_model_of, make_plan
    from engine.host.study import resolve
    from engine.knobs import world_of
    from engine.loop.batch import make_batch_run

    resolved = resolve(study)
    world = world_of(resolved.sizes)
    plan = make_plan(resolved, resolved.seeds, n_devices=1)
    group, inputs = plan.groups[0], plan.groups[0].inputs
    model = judge_model_of(group.variant)
    rows = len(plan.pretrain[plan.judge_models.index(model)].seed)
    table = make_judges(jax.random.PRNGKey(0), rows, judge_model(*model, world))  # untrained: pretraining's stand-in
    runs = make_run_inputs(inputs.condition, inputs.seed, table, inputs.pretrain_index, inputs.meta_pretrain_index)
    batch = make_batch_run(group.variant, resolved.sizes)
    states = batch.start(runs)
    q_stars = jax.vmap(functools.partial(run_q_star, world))(runs.condition)
    step = batch.step
    cost = jax.jit(step).lower(states, runs, q_stars, 0, 0).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost["flops"]) / len(inputs.seed)


def measure(measurement: dict) -> dict:
    """Run one measurement in this process (called in a subprocess, so that no two hold a GPU)."""
    import jax

    import engine

    if measurement.get("kind") == "machine":
        return {"matmul_peak_gflops": matmul_peak_gflops(), "device": str(jax.devices()[0].device_kind)}
    if measurement.get("kind") == "flops":
        return {"flops_per_inner_step": flops_per_inner_step(measurement["study"])}
    if measurement.get("kind") == "inner_steps":
        return inner_step_cost(measurement["study"])
    if measurement.get("kind") == "profile":
        return {"time_by_kind": profile_baseline()}
    study = measurement["study"]
    one_at_a_time = measurement.get("one_at_a_time")
    studies = [{**study, "seeds": [seed]} for seed in study["seeds"]] if one_at_a_time else [study]
    compile_s = run_s = 0.0
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        for one in studies:
            ds = engine.run_study(one)  # later runs of the same shapes hit the compilation cache
            engine.save(ds, Path(folder) / "bench.nc", force=True)
            compile_s += ds.attrs["compile_seconds"]
            run_s += ds.attrs["run_seconds"]
    resolved = engine.resolve(study)
    return {
        "runs": len(resolved.conditions) * len(resolved.seeds),
        "inner_steps_per_run": resolved.sizes.steps_per_iter * resolved.sizes.n_iterations,
        "compile_s": compile_s,
        "run_s": run_s,
        "wall_s": time.perf_counter() - t0,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "devices": len(jax.devices()),
    }


def inner_step_cost(study: dict) -> dict:
    """Compile seconds (cold) and seconds per run-step of the inner loop alone: the same study at
    1 and at 3 outer iterations (the iteration count is not part of the program, so the second
    call reuses the first's compilation); the difference is 2 iterations of inner steps, with
    pretraining, start-up and the first iteration's diagnostics cancelled out."""
    import engine

    timings = []
    for n_iterations in (1, 3):
        ds = engine.run_study({**study, "base": {**study.get("base", {}), "n_iterations": n_iterations}})
        timings.append((ds.attrs["compile_seconds"], ds.attrs["run_seconds"]))
    resolved = engine.resolve(study)
    run_steps = len(resolved.conditions) * len(resolved.seeds) * 2 * resolved.sizes.steps_per_iter
    return {"compile_s": timings[0][0], "s_per_run_step": (timings[1][1] - timings[0][1]) / run_steps}


def estimator_costs(steps: int, repeats: int) -> dict:
    """Per ESTIMATOR_CONDITIONS entry and gradient estimator: compile seconds of one record interval
    (`advance`) of ESTIMATOR_RUNS runs (untrained judges: the cost does not depend on their weights),
    and its best time per run-step over `repeats` rounds, the programs timed in turn in each round
    (the machine's speed drifts; alternating spreads the drift over all of them)."""
    import jax
    import numpy as np

    from engine.core.models import make_judges
    from engine.core.state import make_run_inputs
    from engine.host.study import resolve
    from engine.knobs import condition_arrays
    from engine.loop.batch import make_batch_run

    programs, report = {}, {}
    for name, knobs in ESTIMATOR_CONDITIONS.items():
        for estimator in ("sampled", "exact"):
            condition = {**knobs, "gradient_estimator": estimator}
            study = {
                "name": "estimators",
                "seeds": [0],
                "base": {"steps_per_iter": steps},
                "conditions": {"c": condition},
            }
            resolved = resolve(study)
            n_judges = resolved.conditions["c"]["n_judges"]
            runs = make_run_inputs(
                condition_arrays([resolved.conditions["c"]] * ESTIMATOR_RUNS),
                np.arange(ESTIMATOR_RUNS, dtype=np.int32),
                make_judges(jax.random.PRNGKey(0), n_judges),
                np.tile(np.arange(n_judges, dtype=np.int32), (ESTIMATOR_RUNS, 1)),
            )
            batch = make_batch_run(resolved.variant("c"), resolved.sizes)
            states = jax.block_until_ready(jax.jit(batch.start)(runs))
            t0 = time.perf_counter()
            advance = jax.jit(batch.advance).lower(states, runs, 0, 0).compile()
            report[(name, estimator)] = {"compile_s": time.perf_counter() - t0, "us_per_run_step": float("inf")}
            programs[(name, estimator)] = (advance, states, runs)
    for _ in range(repeats):
        for key, (advance, states, runs) in programs.items():
            t0 = time.perf_counter()
            jax.block_until_ready(advance(states, runs, 0, 0))
            seconds = (time.perf_counter() - t0) / (ESTIMATOR_RUNS * steps)
            report[key]["us_per_run_step"] = min(report[key]["us_per_run_step"], 1e6 * seconds)
    return {
        "runs": ESTIMATOR_RUNS,
        "steps": steps,
        "repeats": repeats,
        "rows": [{"condition": name, "estimator": estimator, **row} for (name, estimator), row in report.items()],
    }


def format_estimators(report: dict) -> str:
    rows = {(row["condition"], row["estimator"]): row for row in report["rows"]}
    baseline = rows[("baseline", "sampled")]["us_per_run_step"]
    lines = [
        f"{report['runs']} runs, one record interval of {report['steps']} inner steps, best of {report['repeats']} "
        "rounds (untrained judges, one device)",
        f"{'condition':<16} {'estimator':<9} {'compile s':>10} {'µs/run-step':>12} {'x sampled baseline':>19} "
        f"{'x its sampled':>14}",
    ]
    for (name, estimator), row in rows.items():
        cost = row["us_per_run_step"]
        own = rows[(name, "sampled")]["us_per_run_step"]
        lines.append(
            f"{name:<16} {estimator:<9} {row['compile_s']:>10.1f} {cost:>12.0f} {cost / baseline:>18.2f}x "
            f"{cost / own:>13.2f}x"
        )
    return "\n".join(lines)


def n_groups(study: dict) -> int:
    """Groups of runs (each compiled on its own) in a study's program."""
    from engine.host.plan import make_plan
    from engine.host.study import resolve

    resolved = resolve(study)
    return len(make_plan(resolved, resolved.seeds[:1], n_devices=1).groups)


def mechanisms_report(base: dict) -> dict:
    """Per-mechanism prices and the compile curve, each point in a fresh process."""
    base = {"steps_per_iter": 100, **base}
    single = {
        name: in_subprocess({"kind": "inner_steps", "study": mechanisms_study([name], base)})
        for name in MECHANISM_CONDITIONS
    }
    names = list(MECHANISM_CONDITIONS)
    curve = {
        k: in_subprocess({"study": mechanisms_study(names[:k], {**base, "n_iterations": 1})}) for k in CURVE_POINTS
    }
    return {
        "seeds": MECHANISM_SEEDS,
        "steps_per_iter": base["steps_per_iter"],
        "single": single,
        "curve": {
            k: {
                "mechanisms": names[:k],
                "groups": n_groups(mechanisms_study(names[:k], base)),
                "compile_s": row["compile_s"],
            }
            for k, row in curve.items()
        },
    }


def format_mechanisms(report: dict) -> str:
    baseline = report["single"]["baseline"]
    lines = [
        f"each mechanism alone: one condition, {report['seeds']} seeds, cold compilation; run-step cost from "
        f"2 iterations of {report['steps_per_iter']} inner steps",
        f"{'mechanism':<20} {'compile s':>10} {'ms/run-step':>12} {'x baseline':>11}",
    ]
    for name, row in report["single"].items():
        relative = row["s_per_run_step"] / baseline["s_per_run_step"]
        lines.append(f"{name:<20} {row['compile_s']:>10.1f} {1e3 * row['s_per_run_step']:>12.3f} {relative:>10.2f}x")
    lines.append("compile seconds against the number of mechanisms in one study (in the order above):")
    lines += [
        f"{k:>3} mechanisms ({row['groups']} groups): {row['compile_s']:.1f} s" for k, row in report["curve"].items()
    ]
    return "\n".join(lines)


def in_subprocess(measurement: dict, cache: str | None = None, tree: Path | None = None) -> dict:
    """One measurement in a fresh process, with its own peak RSS: cold compilation (a private,
    empty cache), or with the compilation cache `cache` (warm when an earlier one filled it).
    tree: another checkout whose engine measures (its command line module, wherever it lives)."""
    environment = {} if tree is None else {"PYTHONPATH": str(tree)}
    module = "engine.cli.main" if tree is None or (tree / "engine" / "cli" / "main.py").exists() else "engine.cli"
    with tempfile.TemporaryDirectory() as empty:
        out = subprocess.run(
            [sys.executable, "-m", module, "bench", "--measure", json.dumps(measurement)],
            capture_output=True,
            text=True,
            cwd=tree,
            env={**os.environ, **environment, "COEVO_CACHE_DIR": cache or empty},
        )
    if out.returncode != 0:
        raise RuntimeError(f"measurement failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def side_by_side(study: dict, tree: Path, repeat: int) -> dict:
    """The study cold, by `tree`'s engine and by this one, alternately `repeat` times (the machine's
    speed drifts: alternating spreads the drift over both), with this engine's speed-ups."""
    rounds = [
        {"against": in_subprocess({"study": study}, tree=tree), "this": in_subprocess({"study": study})}
        for _ in range(repeat)
    ]
    for pair in rounds:
        pair["speedup"] = {
            part: pair["against"][part] / pair["this"][part] for part in ("compile_s", "run_s", "wall_s")
        }
    return {"study": study["name"], "against": str(tree), "rounds": rounds}


def format_side_by_side(report: dict) -> str:
    lines = [f"study {report['study']} from an empty cache; against = {report['against']}, this = this checkout"]
    for i, pair in enumerate(report["rounds"]):
        for who in ("against", "this"):
            m = pair[who]
            lines.append(
                f"round {i + 1} {who:>7}: compile {m['compile_s']:7.1f} s  run {m['run_s']:7.1f} s  "
                f"wall {m['wall_s']:7.1f} s  peak RSS {m['peak_rss_mib']:.0f} MiB"
            )
        speedup = pair["speedup"]
        lines.append(
            f"round {i + 1} speed-up: compile {speedup['compile_s']:.2f}x  run {speedup['run_s']:.2f}x  "
            f"wall {speedup['wall_s']:.2f}x"
        )
    return "\n".join(lines)


def cold_then_warm(measurement: dict) -> dict:
    """The measurement from an empty compilation cache, then again in a new process with the
    cache the first one filled (what a second `coevo run` of the same study finds)."""
    with tempfile.TemporaryDirectory() as cache:
        cold = in_subprocess(measurement, cache)
        warm = in_subprocess(measurement, cache)
    return {**cold, **{f"warm_{name}": warm[name] for name in ("compile_s", "run_s", "wall_s", "peak_rss_mib")}}


def checked(studies) -> None:
    """Resolve and estimate every study before measuring any (StudyError: one line, exit 2)."""
    from engine.host.estimate import estimate_or_refuse
    from engine.host.study import resolve

    for study in studies:
        for line in estimate_or_refuse(resolve(study)):
            print(f"coevo: note: {study['name']}: {line}", file=sys.stderr)


def main(args) -> int:
    from engine.host.study import resolve

    if args.measure:
        print(json.dumps(measure(args.measure)))
        return 0
    base = {}
    if args.steps_per_iter:
        base["steps_per_iter"] = args.steps_per_iter
    if args.iterations:
        base["n_iterations"] = args.iterations
    if args.estimators:
        report = estimator_costs(args.steps_per_iter or 20, args.repeat or 5)
        print(json.dumps(report, indent=2) if args.json else format_estimators(report))
        return 0
    if args.mechanisms:
        names, measured = list(MECHANISM_CONDITIONS), {"steps_per_iter": 100, **base}  # as mechanisms_report
        checked(mechanisms_study([name], measured) for name in names)
        checked(mechanisms_study(names[:k], {**measured, "n_iterations": 1}) for k in CURVE_POINTS)
        report = mechanisms_report(base)
        print(json.dumps(report, indent=2) if args.json else format_mechanisms(report))
        return 0
    study = load_study(args.study)
    resolve(study)  # a StudyError here is one line, not a traceback from a measurement subprocess
    study = {**study, "base": {**study.get("base", {}), **base}}
    if args.against:
        checked([study])
        report = side_by_side(study, args.against, args.repeat or 1)
        print(json.dumps(report, indent=2) if args.json else format_side_by_side(report))
        return 0
    checked([study, *(baseline_study(n_runs, base) for n_runs in args.sizes)])
    report = {
        **in_subprocess({"kind": "machine"}),
        **in_subprocess({"kind": "flops", "study": baseline_study(2, base)}),
        **in_subprocess({"kind": "profile"}),
        "study": {"name": study["name"], **cold_then_warm({"study": study})},
    }
    rows = []
    for n_runs in args.sizes:
        row = in_subprocess({"study": baseline_study(n_runs, base)})
        if n_runs <= SEQUENTIAL_MAX and not args.no_sequential:
            sequential = in_subprocess({"study": baseline_study(n_runs, base), "one_at_a_time": True})
            row["sequential_run_s"] = sequential["run_s"]
            row["sequential_wall_s"] = sequential["wall_s"]
            row["speedup_vs_sequential"] = sequential["wall_s"] / row["wall_s"]
        rows.append(row)
    flops = report["flops_per_inner_step"]
    for row in rows:
        row["gflops_achieved"] = flops * row["runs"] * row["inner_steps_per_run"] / row["run_s"] / 1e9
        row["runs_per_s"] = row["runs"] / row["run_s"]
        row["inner_steps_per_s"] = row["runs"] * row["inner_steps_per_run"] / row["run_s"]
    report["baseline"] = rows
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def format_report(report: dict) -> str:
    s = report["study"]
    lines = [
        f"machine: float32 2048² matmul on every device at once {report['matmul_peak_gflops']:.0f} GFLOP/s; "
        f"one baseline inner step = {report['flops_per_inner_step'] / 1e6:.1f} MFLOP (XLA cost analysis)",
        f"study {s['name']}: {s['runs']} runs, compile {s['compile_s']:.1f} s + run {s['run_s']:.1f} s "
        f"= {s['wall_s']:.1f} s wall (netCDF included), peak RSS {s['peak_rss_mib']:.0f} MiB; "
        f"warm (second run, compilation cache filled): compile {s['warm_compile_s']:.1f} s + run "
        f"{s['warm_run_s']:.1f} s = {s['warm_wall_s']:.1f} s, peak RSS {s['warm_peak_rss_mib']:.0f} MiB",
        "where a baseline inner step's time goes (XLA operations, profiled): "
        + ", ".join(f"{kind} {100 * share:.0f}%" for kind, share in report["time_by_kind"].items()),
        f"{'runs':>5} {'compile s':>10} {'run s':>8} {'runs/s':>8} {'steps/s':>9} {'RSS MiB':>8} "
        f"{'GFLOP/s':>8} {'% peak':>7} {'one-at-a-time s':>16} {'speedup':>8}",
    ]
    for r in report["baseline"]:
        sequential = (
            f"{r['sequential_wall_s']:>16.1f} {r['speedup_vs_sequential']:>7.1f}x" if "sequential_wall_s" in r else ""
        )
        lines.append(
            f"{r['runs']:>5} {r['compile_s']:>10.1f} {r['run_s']:>8.1f} {r['runs_per_s']:>8.2f} "
            f"{r['inner_steps_per_s']:>9.0f} {r['peak_rss_mib']:>8.0f} {r['gflops_achieved']:>8.1f} "
            f"{100 * r['gflops_achieved'] / report['matmul_peak_gflops']:>6.1f}% {sequential}"
        )
    return "\n".join(lines)
