"""`coevo run | figures | claims | bench`: the lab's command line.

Every input is checked before JAX compiles anything; a bad study exits with status 2
and writes nothing. Results are written atomically, and an existing file is kept
unless --force.
"""

import argparse
import importlib.util
import os
import signal
import sys
from pathlib import Path

import jax

from engine.devices import join_cluster, use_all_cpu_cores

STUDIES_DIR = Path(__file__).resolve().parent.parent / "studies"
EXIT_BAD_INPUT = 2


class InputError(ValueError):
    """A command-line input that cannot be used (bad path, missing study, ...)."""


def load_study(reference: str) -> dict:
    """A study dict from a name in studies/ (e.g. 'blog') or a path to a .py file defining STUDY."""
    if reference.endswith(".py") or os.sep in reference:
        location = Path(reference)
        if not location.is_file():
            raise InputError(f"study file {reference!r} does not exist")
    else:
        location = STUDIES_DIR / f"{reference}.py"
        if not location.is_file():
            known = sorted(p.stem for p in STUDIES_DIR.glob("*.py") if not p.stem.startswith("_"))
            raise InputError(f"no study named {reference!r} in {STUDIES_DIR} (known: {', '.join(known)})")
    spec = importlib.util.spec_from_file_location(f"_coevo_study_{location.stem}", location)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # a study file may raise anything on import
        raise InputError(f"study {reference!r} raised on import: {type(error).__name__}: {error}") from None
    if not hasattr(module, "STUDY"):
        raise InputError(f"study {reference!r} does not define STUDY")
    return module.STUDY


def parse_seeds(text: str) -> list[int]:
    """'0-4' -> [0..4]; '0,3,7' -> [0, 3, 7]; '0-2,9' -> [0, 1, 2, 9]."""
    seeds = []
    try:
        for part in text.split(","):
            low, _, high = part.strip().partition("-")
            seeds.extend(range(int(low), int(high) + 1) if high else [int(low)])
    except ValueError:
        raise InputError(f"--seeds {text!r}: expected e.g. '0-4' or '0,3,7'") from None
    return seeds


def check_output(out: Path, force: bool):
    """Refuse an output path that cannot be written, before any compilation."""
    if not out.parent.is_dir():
        raise InputError(f"--out {out}: directory {out.parent} does not exist")
    if not os.access(out.parent, os.W_OK):
        raise InputError(f"--out {out}: directory {out.parent} is not writable")
    if out.is_dir():
        raise InputError(f"--out {out}: is a directory")
    if out.exists() and not force:
        raise InputError(f"--out {out}: exists; pass --force to overwrite it")


def summary_lines(ds) -> list[str]:
    """Per condition: final quality and alignment, mean ± std over seeds (diverged runs left out)."""
    final = ds.isel(iteration=-1).where(~ds.diverged)
    lines = [f"{'condition':<16} {'final quality':>18} {'final alignment':>18}  seeds"]
    for condition in ds.condition.values:
        row = final.sel(condition=condition)
        quality, alignment = row.policy_quality, row.judge_alignment
        n = int((~ds.diverged.sel(condition=condition)).sum())
        lines.append(
            f"{condition:<16} {float(quality.mean()):>9.3f} ± {float(quality.std(ddof=1)) if n > 1 else 0:<6.3f}"
            f" {float(alignment.mean()):>9.3f} ± {float(alignment.std(ddof=1)) if n > 1 else 0:<6.3f}  {n}"
        )
    diverged = _flagged(ds, "diverged")
    missed = _flagged(ds, "pretrain_reached", flagged_when=False)
    lines.append(f"diverged runs (left out of the summary): {len(diverged)} {', '.join(diverged)}".rstrip())
    lines.append(f"runs whose judge pretraining missed its target: {len(missed)} {', '.join(missed)}".rstrip())
    lines.append(f"compile {ds.attrs['compile_seconds']:.1f} s, run {ds.attrs['run_seconds']:.1f} s")
    return lines


def _flagged(ds, variable: str, flagged_when: bool = True) -> list[str]:
    flags = ds[variable].values == flagged_when
    return [f"{ds.condition.values[c]}/seed {ds.seed.values[s]}" for c, s in zip(*flags.nonzero())]


def command_run(args) -> int:
    import engine

    study = load_study(args.study)
    seeds = parse_seeds(args.seeds) if args.seeds else None
    resolved = engine.resolve(study, seeds)
    out = Path(args.out) if args.out else Path("data") / f"{resolved.name}.nc"
    if not args.out:
        out.parent.mkdir(exist_ok=True)
    check_output(out, args.force)
    n_runs = len(resolved.conditions) * len(resolved.seeds)
    print(f"{resolved.name}: {len(resolved.conditions)} conditions x {len(resolved.seeds)} seeds = {n_runs} runs")
    try:
        ds = engine.run_study(resolved, progress=not args.quiet, max_runs_per_chunk=args.max_runs_per_chunk)
        if jax.process_index() != 0:  # multi-host: every process holds the whole Dataset; one writes it
            return 0
        engine.save(ds, out, force=args.force)
    except KeyboardInterrupt:
        print(f"\ninterrupted: nothing written to {out}; the {n_runs} runs in progress are lost", file=sys.stderr)
        return 130
    print("\n".join(summary_lines(ds)))
    print(f"wrote {out}")
    return 0


def command_figures(args) -> int:
    import engine
    from analysis import write_all

    path = Path(args.path)
    if not path.is_file():
        raise InputError(f"{path} does not exist")
    ds = engine.load(path)
    for written in write_all(ds, path.parent, path.stem):
        print(f"wrote {written}")
    return 0


def command_claims(args) -> int:
    import engine
    from analysis.claims import claims_markdown, write_claims

    paths = [Path(p) for p in args.paths]
    for path in paths:
        if not path.is_file():
            raise InputError(f"{path} does not exist")
    if args.out and not Path(args.out).parent.is_dir():
        raise InputError(f"--out {args.out}: directory {Path(args.out).parent} does not exist")
    loaded = [engine.load(path) for path in paths]
    counts = [ds.sizes["seed"] for ds in loaded]
    labels = [f"{n} seeds" if counts.count(n) == 1 else path.stem for n, path in zip(counts, paths)]
    if len(set(labels)) < len(labels):
        raise InputError("two results files would get the same label; rename one")
    datasets = dict(zip(labels, loaded))
    print(claims_markdown(datasets), end="")
    if args.out:
        print(f"wrote {write_claims(datasets, args.out)}")
    return 0


def command_knobs(args) -> int:
    from engine.knobs import knob_table, with_knob_table

    if not args.write:
        print(knob_table())
        return 0
    path = Path(args.write)
    if not path.is_file():
        raise InputError(f"--write {path}: no such file")
    path.write_text(with_knob_table(path.read_text()))
    print(f"rewrote the knob table in {path}")
    return 0


def command_bench(args) -> int:
    from engine.bench import main as bench_main

    return bench_main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coevo", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run a study into data/<name>.nc")
    run.add_argument("study", help="a name in studies/ (e.g. blog) or a path to a .py file defining STUDY")
    run.add_argument("--seeds", help="override the study's seeds, e.g. '0-4' or '0,3,7'")
    run.add_argument("--out", help="output netCDF path (default data/<study>.nc)")
    run.add_argument("--force", action="store_true", help="overwrite an existing output file")
    run.add_argument("--max-runs-per-chunk", type=int, default=None, help="split larger studies into chunks")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument("--coordinator", help="multi-host: address HOST:PORT of process 0 (see README)")
    run.add_argument("--num-processes", type=int, default=1, help="multi-host: number of processes")
    run.add_argument("--process-id", type=int, default=0, help="multi-host: this process's index")
    run.set_defaults(handler=command_run)

    figures = commands.add_parser("figures", help="figures and tables next to a results file")
    figures.add_argument("path", help="a results file written by 'coevo run'")
    figures.set_defaults(handler=command_figures)

    claims = commands.add_parser("claims", help="test the published study's claims on results files")
    claims.add_argument("paths", nargs="+", metavar="FILE", help="results files written by 'coevo run'")
    claims.add_argument("--out", help="also write the markdown table here")
    claims.set_defaults(handler=command_claims)

    knobs = commands.add_parser("knobs", help="print every knob as a markdown table")
    knobs.add_argument("--write", metavar="FILE", help="rewrite the table between the knob markers in FILE")
    knobs.set_defaults(handler=command_knobs)

    bench = commands.add_parser("bench", help="measure compile and run time")
    from engine.bench import add_arguments

    add_arguments(bench)
    bench.set_defaults(handler=command_bench)
    return parser


def _terminate(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    use_all_cpu_cores()
    if getattr(args, "coordinator", None):
        join_cluster(args.coordinator, args.num_processes, args.process_id)
    signal.signal(signal.SIGTERM, _terminate)
    from engine.study import StudyError

    try:
        return args.handler(args)
    except (StudyError, InputError, FileExistsError) as error:
        print(f"coevo: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
