"""`coevo run | merge | figures | claims | compare | verify | stability | knobs | bench`: the lab's command line.

Every input is checked before JAX compiles anything: a bad input prints one line on
stderr and exits with status 2, having written nothing. Results are written atomically
and no existing file is replaced without --force (see engine.host.output). Ctrl-C exits 130,
SIGTERM 143, each with one line saying what was lost, from the first moment: this module
and `engine` import nothing heavy, and `main` installs its signal handlers before JAX loads.
However many signals arrive, the first decides: the ones after it are ignored while the stop
unwinds (cleanup such as removing the output's lock runs to its end) and its line is printed,
and, when `main` is the program (no argv given), until the process has exited.
"""

import argparse
import os
import signal
import sys
import threading
from contextlib import nullcontext
from pathlib import Path

from engine.host.inputs import InputError, find_study, load_study, parse_seeds

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 128 + signal.SIGINT
EXIT_TERMINATED = 128 + signal.SIGTERM
HELD = (signal.SIGINT, signal.SIGTERM)  # held while the heavy modules load (import_engine)
WARNINGS_SHOWN = 10  # study warnings printed before a run; the results file's attrs keep them all
SUMMARY_ROWS = 20  # conditions listed at the end of a run; the table from `coevo figures` has all
FLAGGED_SHOWN = 10  # diverged or under-pretrained runs named at the end of a run


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised wherever Python is when it arrives, so it unwinds like Ctrl-C."""


class ArgumentParser(argparse.ArgumentParser):
    """Usage errors raise InputError, so they end in the same one line as every bad input."""

    def error(self, message):
        raise InputError(f"{message} (see {self.prog} --help)")


def summary_lines(ds) -> list[str]:
    """Per condition (the first SUMMARY_ROWS): final quality and alignment, mean ± std over seeds,
    diverged runs left out; then the runs that diverged or missed their pretraining target."""
    from engine.host.results import per_iteration

    final = per_iteration(ds).isel(iteration=-1).where(~ds.diverged)
    lines = [f"{'condition':<16} {'final quality':>18} {'final alignment':>18}  seeds"]
    for condition in ds.condition.values[:SUMMARY_ROWS]:
        row = final.sel(condition=condition)
        quality, alignment = row.policy_quality, row.judge_alignment
        n = int((~ds.diverged.sel(condition=condition)).sum())
        lines.append(
            f"{condition:<16} {float(quality.mean()):>9.3f} ± {float(quality.std(ddof=1)) if n > 1 else 0:<6.3f}"
            f" {float(alignment.mean()):>9.3f} ± {float(alignment.std(ddof=1)) if n > 1 else 0:<6.3f}  {n}"
        )
    hidden = ds.sizes["condition"] - SUMMARY_ROWS
    if hidden > 0:
        lines.append(f"… {hidden} more conditions (all are in the table written by `coevo figures`)")
    diverged = _flagged(ds, "diverged")
    missed = _flagged(ds, "pretrain_reached", flagged_when=False)
    lines.append(f"diverged runs (left out of the summary): {_listed(diverged)}")
    lines.append(f"runs whose judge pretraining missed its target: {_listed(missed)}")
    lines.append(f"compile {ds.attrs['compile_seconds']:.1f} s, run {ds.attrs['run_seconds']:.1f} s")
    return lines


def _flagged(ds, variable: str, flagged_when: bool = True) -> list[str]:
    flags = ds[variable].values == flagged_when
    return [f"{ds.condition.values[c]}/seed {ds.seed.values[s]}" for c, s in zip(*flags.nonzero())]


def _listed(runs: list[str]) -> str:
    more = f", … {len(runs) - FLAGGED_SHOWN} more" if len(runs) > FLAGGED_SHOWN else ""
    return f"{len(runs)} {', '.join(runs[:FLAGGED_SHOWN])}{more}".rstrip()


def _warn_leftovers(out: Path):
    from engine.host.output import leftover_temporaries

    leftovers = leftover_temporaries(out)
    if leftovers:
        names = ", ".join(str(path) for path in leftovers)
        print(
            f"coevo: warning: temporary files left by an earlier save that was killed: {names} (safe to delete)",
            file=sys.stderr,
        )


def bad_input() -> tuple[type[Exception], ...]:
    """The errors that mean a bad input (one line, exit 2); imported late, after the signal handlers."""
    from engine.host.checkpoint import CheckpointError
    from engine.host.merge import MergeError
    from engine.host.output import OutputError
    from engine.host.results import ResultsFileError
    from engine.host.study import StudyError

    return StudyError, InputError, OutputError, ResultsFileError, MergeError, CheckpointError, FileExistsError


def print_warnings(warnings) -> None:
    """The study's warnings (engine.host.study), the first WARNINGS_SHOWN of them, on stderr."""
    for warning in warnings[:WARNINGS_SHOWN]:
        print(f"coevo: warning: {warning}", file=sys.stderr)
    if len(warnings) > WARNINGS_SHOWN:
        print(
            f"coevo: warning: … {len(warnings) - WARNINGS_SHOWN} more (all are in the results file's "
            "attrs['warnings'])",
            file=sys.stderr,
        )


def command_run(args) -> int:
    import jax

    import engine
    from engine.host.checkpoint import Checkpoint
    from engine.host.estimate import estimate_or_refuse
    from engine.host.output import check_output, reserve

    if args.max_runs_per_chunk is not None and args.max_runs_per_chunk < 1:
        raise InputError(f"--max-runs-per-chunk {args.max_runs_per_chunk}: must be at least 1")
    if args.checkpoint_every < 0:
        raise InputError(f"--checkpoint-every {args.checkpoint_every:g}: must be at least 0 (seconds)")
    multi_host = jax.process_count() > 1
    if args.resume and multi_host:
        raise InputError(
            "--resume: a multi-host run keeps no checkpoint (process 0's would not reach the others); "
            "run seed ranges apart and `coevo merge` them"
        )
    source = find_study(args.study)
    study = load_study(args.study)
    seeds = parse_seeds(args.seeds) if args.seeds is not None else None
    resolved = engine.resolve(study, seeds)
    print_warnings(resolved.warnings)
    out = Path(args.out) if args.out else Path("data") / f"{resolved.name}.nc"
    checkpoint = None if multi_host else Checkpoint(out, every=args.checkpoint_every)
    resumed_chunks = checkpoint.chunk_size() if args.resume and checkpoint is not None else None
    for line in estimate_or_refuse(resolved, args.max_runs_per_chunk or resumed_chunks):
        print(line)
    if not args.out:
        out.parent.mkdir(exist_ok=True)
    check_output(out, force=args.force, inputs={source: "the study's source file"})
    writer = jax.process_index() == 0  # multi-host: every process holds the whole Dataset; one writes it
    n_runs = len(resolved.conditions) * len(resolved.seeds)
    with reserve(out) if writer else nullcontext():
        _warn_leftovers(out)
        resumed = _checkpoint_to_resume(checkpoint, args.resume)
        print(f"{resolved.name}: {len(resolved.conditions)} conditions x {len(resolved.seeds)} seeds = {n_runs} runs")
        if resumed:
            print(f"resuming from {checkpoint.path}: {checkpoint.kept} finished")
        try:
            ds = engine.run_study(
                resolved, progress=not args.quiet, max_runs_per_chunk=args.max_runs_per_chunk, checkpoint=checkpoint
            )
            if not writer:
                return 0
            engine.save(ds, out, force=args.force)
            if checkpoint is not None:
                checkpoint.remove()
        except KeyboardInterrupt as stop:
            lost = f"the {n_runs} runs in progress are lost"
            if checkpoint is not None and checkpoint.kept:
                lost = (
                    f"what it finished ({checkpoint.kept}) is kept in {checkpoint.path}: add --resume to go on from it"
                )
            stop.add_note(f"nothing written to {out}; {lost}")
            raise
    print("\n".join(summary_lines(ds)))
    print(f"wrote {out}")
    return 0


def _checkpoint_to_resume(checkpoint, resume: bool):
    """The progress saved by an earlier run to the same output, if --resume; refused without it
    (neither silently reused nor overwritten)."""
    from engine.host.checkpoint import CheckpointError
    from engine.host.provenance import commit_is_uncertain

    if checkpoint is None or not checkpoint.exists():
        if resume:
            print(
                "coevo: note: --resume: no checkpoint of an earlier run; starting from the beginning", file=sys.stderr
            )
        return None
    if not resume:
        raise CheckpointError(
            f"{checkpoint.path}: an earlier run to this output was stopped and kept what it finished here; "
            "add --resume to go on from it, or delete it to start over"
        )
    resumed = checkpoint.load()
    commit = resumed.made_by.get("git_commit", "unknown")
    if commit_is_uncertain(commit):
        print(
            f"coevo: warning: the checkpoint was made by engine {commit!r}, which does not pin its code: "
            "the code running now may differ",
            file=sys.stderr,
        )
    return resumed


def command_merge(args) -> int:
    import engine
    from engine.host.merge import merge, parts_of
    from engine.host.output import check_output

    paths = [Path(p) for p in args.paths]
    check_output(args.out, force=args.force, inputs={path: "an input results file" for path in paths})
    merged = merge(paths)
    for warning in merged.warnings:
        print(f"coevo: warning: {warning}", file=sys.stderr)
    ds = merged.dataset
    engine.save(ds, args.out, force=args.force)
    n_parts = len(parts_of(ds))
    print(f"{ds.attrs['study_name']}: {ds.sizes['condition']} conditions x {ds.sizes['seed']} seeds, {n_parts} parts")
    print(f"wrote {args.out}")
    return 0


def command_figures(args) -> int:
    import engine
    from analysis.report import output_paths, write_all
    from engine.host.output import check_output

    path = Path(args.path)
    ds = engine.load(path)
    for output in output_paths(path.parent, path.stem, ds):
        check_output(output, force=args.force, inputs={path: "the results file"})
    try:
        written = write_all(ds, path.parent, path.stem, force=args.force)
    except KeyboardInterrupt as stop:
        stop.add_note(f"some outputs next to {path} may be written (each complete, none half-written)")
        raise
    for output in written:
        print(f"wrote {output}")
    return 0


def command_claims(args) -> int:
    import engine
    from analysis.claims import claims_markdown, write_claims
    from engine.host.output import check_output
    from engine.host.results import per_iteration

    paths = [Path(p) for p in args.paths]
    if args.out:
        check_output(args.out, force=args.force, inputs={path: "an input results file" for path in paths})
    loaded = [per_iteration(engine.load(path)) for path in paths]
    counts = [ds.sizes["seed"] for ds in loaded]
    labels = [f"{n} seeds" if counts.count(n) == 1 else path.stem for n, path in zip(counts, paths)]
    if len(set(labels)) < len(labels):
        raise InputError("two results files would get the same label; rename one")
    datasets = dict(zip(labels, loaded))
    print(claims_markdown(datasets), end="")
    if args.out:
        print(f"wrote {write_claims(datasets, args.out, force=args.force)}")
    return 0


def command_compare(args) -> int:
    import engine
    from analysis.compare import compare, comparison_markdown
    from engine.host.output import check_output, write_atomically
    from engine.host.results import per_iteration

    paths = [Path(p) for p in (args.a, args.b)]
    if args.out:
        check_output(args.out, force=args.force, inputs={path: "an input results file" for path in paths})
    a, b = (per_iteration(engine.load(path)) for path in paths)
    if a.attrs.get("study_name") != b.attrs.get("study_name"):
        raise InputError(f"{paths[0]} and {paths[1]} are results of different studies")
    text = comparison_markdown(compare(a, b), paths[0].stem, paths[1].stem)
    print(text, end="")
    if args.out:
        written = write_atomically(args.out, lambda temporary: Path(temporary).write_text(text), force=args.force)
        print(f"wrote {written}")
    return 0


def command_verify(args) -> int:
    import engine
    from engine.host.verify import file_layouts

    if args.iterations < 1:
        raise InputError(f"--iterations {args.iterations}: must be at least 1")
    path = Path(args.path)
    ds = engine.load(path)
    layouts = file_layouts(ds)
    labels = [str(path)]
    if len(layouts) > 1:  # a merged file
        parts = [layout.recorded for layout in layouts]
        labels = [f"{path}, part {i} of {len(parts)} ({p['path']}, seeds {p['seeds']})" for i, p in enumerate(parts, 1)]
    verdicts = [_verify_part(ds, layout, label, args.iterations) for layout, label in zip(layouts, labels, strict=True)]
    return 0 if all(verdicts) else 1


def _verify_part(ds, layout, label: str, iterations: int) -> bool:
    """Rerun one part of a file (the whole file unless it was merged) and say whether it is bit-identical."""
    import jax

    from engine.host.provenance import provenance
    from engine.host.verify import compare, likely_causes, rerun

    devices = jax.devices()
    if len(devices) < layout.n_devices:
        print(f"coevo: warning: {label} ran on {layout.n_devices} devices, this machine exposes {len(devices)}")
    devices = devices[: layout.n_devices]
    n_runs = ds.sizes["condition"] * len(layout.seeds)
    print(
        f"{label}: rerunning {ds.sizes['condition']} conditions x {len(layout.seeds)} seeds = {n_runs} runs, "
        f"{iterations} iterations, sub-batches of {layout.sub_batch} on {len(devices)} devices"
    )
    verdict = compare(ds, rerun(ds, layout, devices, iterations))
    if verdict.not_in_file:
        print(f"not in the file, so not compared: {', '.join(verdict.not_in_file)}")
    if verdict.identical:
        print(f"bit-identical ({verdict.compared} values)")
        return True
    print(f"differs: {verdict.differing_runs} runs, largest difference {verdict.largest:.3g}, first at {verdict.first}")
    causes = likely_causes(layout.recorded, provenance(devices))
    print("likely cause: " + ("; ".join(causes) if causes else "none recorded differs (please report it)"))
    return False


def command_stability(args) -> int:
    import jax

    import engine
    from engine.host.stability import linearise, parse_runs, report_lines, rerun_plan, rerun_to_end

    if args.k < 1:
        raise InputError(f"--k {args.k}: must be at least 1")
    ds = engine.load(args.path)
    runs = parse_runs(args.runs, ds)
    rerun_plan(ds, runs)  # every problem of the file or the runs, before compiling
    print(
        f"{args.path}: rerunning the chunks of seeds that hold {len(runs)} runs to their final state, "
        "then linearising the exact loop there"
    )
    for end in rerun_to_end(ds, runs, jax.devices()):
        print("\n".join(report_lines(linearise(end, args.k))), flush=True)
    return 0


def command_knobs(args) -> int:
    from engine.host.output import write_atomically
    from engine.knobs import knobs_page

    if not args.write:
        print(knobs_page(), end="")
        return 0
    path = write_atomically(args.write, lambda temporary: Path(temporary).write_text(knobs_page()), force=True)
    print(f"wrote {path}")
    return 0


def command_bench(args) -> int:
    from engine.cli.bench import main as bench_main

    return bench_main(args)


def build_parser() -> argparse.ArgumentParser:
    from engine.host.checkpoint import CHECKPOINT_SECONDS
    from engine.host.devices import JOIN_TIMEOUT
    from engine.host.verify import ITERATIONS as VERIFY_ITERATIONS

    parser = ArgumentParser(prog="coevo", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run a study into data/<name>.nc")
    run.add_argument("study", help="a name in studies/ (e.g. blog) or a path to a .py file defining STUDY")
    run.add_argument("--seeds", help="override the study's seeds, e.g. '0-4' or '0,3,7'")
    run.add_argument("--out", help="output netCDF path (default data/<study>.nc)")
    run.add_argument("--force", action="store_true", help="overwrite an existing output file")
    run.add_argument("--max-runs-per-chunk", type=int, default=None, help="split larger studies into chunks")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument(
        "--resume", action="store_true", help="go on from the checkpoint <out>.checkpoint of a run that was stopped"
    )
    run.add_argument(
        "--checkpoint-every",
        type=float,
        default=CHECKPOINT_SECONDS,
        metavar="SECONDS",
        help="save progress after an outer iteration once SECONDS have passed since the last save "
        f"(default {CHECKPOINT_SECONDS:g}; it is saved after every chunk of seeds as well)",
    )
    run.add_argument("--coordinator", help="multi-host: address HOST:PORT of process 0 (see docs/performance.md)")
    run.add_argument("--num-processes", type=int, help="multi-host: number of processes")
    run.add_argument("--process-id", type=int, help="multi-host: this process's index")
    run.add_argument(
        "--join-timeout", type=float, default=JOIN_TIMEOUT, help=f"multi-host: seconds to wait (default {JOIN_TIMEOUT})"
    )
    run.set_defaults(handler=command_run)

    merge = commands.add_parser("merge", help="merge results files of one study's seed ranges into one file")
    merge.add_argument("paths", nargs="+", metavar="FILE", help="results files of one study and engine, seeds disjoint")
    merge.add_argument("--out", required=True, help="the merged results file")
    merge.add_argument("--force", action="store_true", help="overwrite an existing output file")
    merge.set_defaults(handler=command_merge)

    figures = commands.add_parser("figures", help="figures and tables next to a results file")
    figures.add_argument("path", help="a results file written by 'coevo run'")
    figures.add_argument("--force", action="store_true", help="overwrite existing figures and tables")
    figures.set_defaults(handler=command_figures)

    claims = commands.add_parser("claims", help="test the published study's claims on results files")
    claims.add_argument("paths", nargs="+", metavar="FILE", help="results files written by 'coevo run'")
    claims.add_argument("--out", help="also write the markdown table here")
    claims.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    claims.set_defaults(handler=command_claims)

    compare = commands.add_parser(
        "compare", help="do two results files of one study agree in distribution? (per condition, final values)"
    )
    compare.add_argument("a", metavar="FILE_A", help="a results file written by 'coevo run'")
    compare.add_argument("b", metavar="FILE_B", help="another results file of the same study")
    compare.add_argument("--out", help="also write the markdown table here")
    compare.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    compare.set_defaults(handler=command_compare)

    verify = commands.add_parser("verify", help="rerun part of a results file and compare it bit for bit")
    verify.add_argument("path", help="a results file written by 'coevo run'")
    verify.add_argument(
        "--iterations", type=int, default=VERIFY_ITERATIONS, help=f"outer iterations to rerun ({VERIFY_ITERATIONS})"
    )
    verify.set_defaults(handler=command_verify)

    from engine.host.stability import DEFAULT_K

    stability = commands.add_parser(
        "stability", help="leading eigenvalues of the exact loop's map at runs' final states (docs/mean_field.md)"
    )
    stability.add_argument("path", help="a results file written by 'coevo run'")
    stability.add_argument("--runs", help="condition:seed,... (default: every condition at the first two seeds)")
    stability.add_argument("--k", type=int, default=DEFAULT_K, help=f"eigenvalues per run ({DEFAULT_K})")
    stability.set_defaults(handler=command_stability)

    knobs = commands.add_parser("knobs", help="print docs/knobs.md: every knob as a markdown table")
    knobs.add_argument("--write", metavar="FILE", help="write that page to FILE (docs/knobs.md)")
    knobs.set_defaults(handler=command_knobs)

    bench = commands.add_parser("bench", help="measure compile and run time")
    from engine.cli.bench import add_arguments

    add_arguments(bench)
    bench.set_defaults(handler=command_bench)
    return parser


def _join_if_asked(args):
    """Multi-host flags are used together or not at all."""
    from engine.host.devices import join_cluster

    cluster = (args.num_processes, args.process_id)
    if args.coordinator is None:
        if cluster != (None, None):
            raise InputError("--num-processes and --process-id need --coordinator HOST:PORT (multi-host runs)")
        return
    if None in cluster:
        raise InputError("--coordinator needs both --num-processes and --process-id")
    join_cluster(args.coordinator, args.num_processes, args.process_id, args.join_timeout)


def _run_in_float32():
    """The lab's numbers are float32 by design: JAX_ENABLE_X64=1 would change every dtype."""
    import jax

    if jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", False)
        print("coevo: note: JAX_ENABLE_X64 is ignored; the lab runs in float32", file=sys.stderr)


def use_all_cpu_cores():
    """engine.host.devices.use_all_cpu_cores, imported when called (it imports JAX); tests replace this."""
    from engine.host.devices import use_all_cpu_cores as expose

    expose()


class _Stop:
    """The stop of this `main`: the first SIGINT or SIGTERM (or KeyboardInterrupt raised by code)."""

    signum: int | None = None
    owed = False  # the first stop's exception was swallowed (`_resend_a_swallowed_stop`): raise it again
    finished = False  # `main` has its exit status: a signal changes nothing any more
    resend: threading.Timer | None = None

    @classmethod
    def reset(cls):
        cls.signum, cls.owed, cls.finished, cls.resend = None, False, False, None


def _stop_exception(signum: int) -> KeyboardInterrupt:
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _on_stop_signal(signum, frame):
    """SIGINT and SIGTERM inside `main`: the first raises (Terminated for SIGTERM, KeyboardInterrupt
    for Ctrl-C) wherever Python is; any later one is ignored, so that the stop's unwinding, its
    cleanup and its one line are not cut short by a second exception (a traceback and exit 1)."""
    if _Stop.finished or (_Stop.signum is not None and not _Stop.owed):
        return
    if _Stop.signum is None:
        _Stop.signum = signum
    _Stop.owed = False
    raise _stop_exception(_Stop.signum)


def _resend_a_swallowed_stop(unraisable, default=sys.unraisablehook):
    """A signal arriving while JAX's garbage-collection callback runs raises its KeyboardInterrupt /
    Terminated inside that callback, where Python can only print it and drop it ("Exception ignored
    in: _xla_gc_callback"), and the run went on to exit 0. Send the signal again from a helper
    thread instead, so that its handler raises at the main thread's next bytecode, outside the callback."""
    if not isinstance(unraisable.exc_value, KeyboardInterrupt):
        return default(unraisable)
    if _Stop.signum is None:
        _Stop.signum = signal.SIGTERM if isinstance(unraisable.exc_value, Terminated) else signal.SIGINT
    _Stop.owed = True
    _Stop.resend = threading.Timer(0.01, os.kill, (os.getpid(), _Stop.signum))
    _Stop.resend.daemon = True
    _Stop.resend.start()


def _forget_the_stop_in_exec():
    """CPython remembers a KeyboardInterrupt that left code run by `exec` or `eval` of a string (numpy and
    scipy import through such code) and, however `main` returns, ends the process by SIGINT (status -2)
    instead. A string run to completion clears that memory; here the stop has been handled."""
    exec("None")


def import_engine():
    """The heavy modules (JAX, XLA's backends, xarray, netCDF, scipy), with Ctrl-C and SIGTERM held until they
    are loaded: an exception raised inside those imports can leave them half-initialised (seen: a
    Ctrl-C swallowed and the run going on, an AttributeError traceback, a segfault). A signal that
    arrived meanwhile is raised as soon as they are loaded (1-2 s at most)."""
    held = []
    caught = [signum for signum in HELD if signal.getsignal(signum) != signal.SIG_IGN]
    previous = {signum: signal.signal(signum, lambda signum, frame: held.append(signum)) for signum in caught}
    try:
        import engine.host.devices  # noqa: F401  (JAX)
        import engine.host.results  # noqa: F401  (xarray, netCDF)
        import engine.host.runner  # noqa: F401  (the program)
        import engine.host.stability  # noqa: F401  (scipy)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if held:
        _Stop.signum = signal.SIGTERM if signal.SIGTERM in held else signal.SIGINT
        raise _stop_exception(_Stop.signum)


def _run(argv) -> int:
    try:
        import_engine()
        args = build_parser().parse_args(argv)
        _run_in_float32()
        use_all_cpu_cores()
        if args.command == "run":
            _join_if_asked(args)
        return args.handler(args)
    except Exception as error:
        if not isinstance(error, bad_input()):
            raise
        print(f"coevo: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT


def main(argv=None) -> int:
    """The `coevo` command. argv None: the program's own arguments; then SIGINT and SIGTERM are
    ignored from its return on (the process exits at once; Python's shutdown resets a handler of its
    own to the default, which a signal then meets and dies of, but not an ignored signal)."""
    _Stop.reset()
    # first: everything heavy is imported below; Ctrl-C stays ignored where it was (a background job)
    handled = [signum for signum in HELD if signum == signal.SIGTERM or signal.getsignal(signum) != signal.SIG_IGN]
    previous = {signum: signal.signal(signum, _on_stop_signal) for signum in handled}
    previous_hook, sys.unraisablehook = sys.unraisablehook, _resend_a_swallowed_stop
    try:
        try:
            status = _run(argv)
            _Stop.finished = True
            return status
        except KeyboardInterrupt as stop:  # a signal's, or raised by code: either way the stop
            if _Stop.signum is None:  # raised by code: a signal from here on is the second one
                _Stop.signum = signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT
            terminated = _Stop.signum == signal.SIGTERM
            what = "terminated (SIGTERM)" if terminated else "interrupted (Ctrl-C)"
            lost = "; ".join(getattr(stop, "__notes__", [])) or "nothing written"
            print(f"coevo: {what}: {lost}", file=sys.stderr)
            _Stop.finished = True
            _forget_the_stop_in_exec()
            return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    finally:
        _Stop.finished = True
        if _Stop.resend is not None:
            _Stop.resend.cancel()
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_IGN if argv is None else handler)
        sys.unraisablehook = previous_hook


if __name__ == "__main__":
    sys.exit(main())
