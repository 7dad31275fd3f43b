"""Where a baseline inner step's time goes: one record interval of a small baseline study traced
by JAX's profiler, its XLA operations' own (exclusive) time summed by kind.

`coevo bench` reports it next to the achieved GFLOP/s: matrix products are what the matmul rate
measures, the rest is work a matmul benchmark does not see.
"""

import gzip
import json
import re
import tempfile
from collections import defaultdict
from pathlib import Path

# An XLA operation's kind, from its name in the trace (first match wins). A fusion is named after
# the operations at its root ("bitcast_copy_fusion" may hold a GRU gate's sigmoid and tanh), so
# every fusion counts as fused work; only unfused copies and gathers count as data movement.
KINDS = (
    ("matrix products", re.compile(r"^(wrapped_)?dot")),
    (
        "fusions (GRU gates, softmax, Adam, reductions, with the copies and gathers fused into them)",
        re.compile("fusion"),
    ),
    (
        "data movement (copy, gather, scatter, concatenate)",
        re.compile(r"^(wrapped_)?(copy|gather|scatter|concat|transpose|slice|dynamic|pad|bitcast)"),
    ),
    ("loops (the PRNG's threefry rounds)", re.compile(r"^while")),
    ("control flow (cond)", re.compile(r"^(cond|conditional)")),
    ("other", re.compile(".")),
)
# Trace events that are not XLA operations: the runtime around them, Python, the host.
NOT_OPERATIONS = re.compile(r"^\$|Thunk|Pjit|ParseArguments|^end:|^begin:")


def exclusive_times(events: list[dict]) -> dict[str, float]:
    """Microseconds per event name, without the time of events nested inside it on its thread."""
    by_thread = defaultdict(list)
    for event in events:
        if event.get("ph") == "X" and "dur" in event:
            by_thread[(event.get("pid"), event.get("tid"))].append(event)
    totals: dict[str, float] = defaultdict(float)
    for thread_events in by_thread.values():
        thread_events.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack: list[list] = []  # [end, name, own time]
        for event in thread_events:
            while stack and stack[-1][0] <= event["ts"]:
                _, name, own = stack.pop()
                totals[name] += own
            if stack:
                stack[-1][2] -= event["dur"]
            stack.append([event["ts"] + event["dur"], event["name"], event["dur"]])
        for _, name, own in stack:
            totals[name] += own
    return totals


def time_by_kind(events: list[dict]) -> dict[str, float]:
    """Share of the XLA operations' time per KINDS entry (sums to 1)."""
    shares: dict[str, float] = defaultdict(float)
    for name, own in exclusive_times(events).items():
        if NOT_OPERATIONS.search(name):
            continue
        kind = next(kind for kind, pattern in KINDS if pattern.search(name.lower()))
        shares[kind] += own
    total = sum(shares.values())
    return {kind: shares[kind] / total for kind, _ in KINDS if shares[kind] > 0}


def profile_baseline(n_runs: int = 8, steps: int = 100) -> dict[str, float]:
    """Trace one interval of `steps` inner steps of `n_runs` baseline runs on one device, after a
    first interval has compiled and warmed it; returns `time_by_kind` of the traced interval."""
    import jax
    import numpy as np

    from engine.host.plan import make_plan
    from engine.host.program import compile_program, make_program
    from engine.host.study import resolve

    study = {"name": "profile", "seeds": list(range(n_runs)), "base": {"steps_per_iter": steps, "n_iterations": 2}}
    resolved = resolve({**study, "conditions": {"baseline": {}}})
    devices = jax.devices()[:1]
    plan = make_plan(resolved, resolved.seeds, len(devices))
    program = make_program(plan.variants, resolved.sizes, devices, plan.sub_batch)
    compiled = compile_program(program, plan.program_inputs())
    pretrain_inputs, group_inputs = plan.program_inputs()
    started = compiled.start(tuple(table.judge for table in compiled.pretrain(pretrain_inputs)), group_inputs)
    states = jax.block_until_ready(compiled.advance(started.states, started.runs, np.int32(0), np.int32(0)))
    with tempfile.TemporaryDirectory() as folder:
        with jax.profiler.trace(folder, create_perfetto_trace=True):
            jax.block_until_ready(compiled.advance(states, started.runs, np.int32(1), np.int32(0)))
        trace = next(Path(folder).rglob("*.trace.json.gz"))
        events = json.loads(gzip.decompress(trace.read_bytes()))["traceEvents"]
    return time_by_kind(events)
