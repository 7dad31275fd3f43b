"""How a study's seeds are split into chunks: each chunk is compiled once and run through the
program in turn, so memory is bounded by a chunk, whatever the number of seeds."""

import itertools

CPU_MAX_RUNS_PER_CHUNK = 256
ACCELERATOR_MAX_RUNS_PER_CHUNK = 4096


def max_runs_per_chunk(on_cpu: bool, given: int | None = None) -> int:
    """`given` (the --max-runs-per-chunk flag), else the device kind's default."""
    return given or (CPU_MAX_RUNS_PER_CHUNK if on_cpu else ACCELERATOR_MAX_RUNS_PER_CHUNK)


def seeds_per_chunk(n_seeds: int, n_conditions: int, max_runs: int) -> int:
    """Seeds in each chunk: as few equal chunks as keep each near max_runs runs (at least one seed)."""
    if max_runs < 1:
        raise ValueError(f"max_runs must be at least 1, got {max_runs}")
    n_chunks = -(-n_seeds * n_conditions // max_runs)
    return -(-n_seeds // n_chunks)


def seed_chunks(seeds, n_conditions: int, max_runs: int) -> list[list[int]]:
    """The seeds split into chunks of `seeds_per_chunk` seeds each (a chunk holds at least one
    seed of every condition).

    The last chunk is padded with placeholder seeds (their runs are dropped), so every chunk
    has the same shapes and reuses one compiled program. Placeholders are the smallest
    non-negative integers not in the study: distinct (a repeated seed would share pretrained
    judges and shrink the pretraining table) and valid int32 whatever the study's seeds.
    """
    per_chunk = seeds_per_chunk(len(seeds), n_conditions, max_runs)
    chunks = [list(seeds[i : i + per_chunk]) for i in range(0, len(seeds), per_chunk)]
    used = set(seeds)
    unused = (candidate for candidate in itertools.count() if candidate not in used)
    chunks[-1].extend(itertools.islice(unused, per_chunk - len(chunks[-1])))
    return chunks
