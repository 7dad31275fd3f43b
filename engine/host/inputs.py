"""What a command reads from its user: a study file or name, and a seed list.

Shared by `coevo run` and `coevo bench`; every problem is an `InputError` with a
message that names the input, so the command line can print one line and exit 2.
Importing this module is light (no JAX), so the command line can use it before its
signal handlers are in place.
"""

import importlib.util
import os
import re
from pathlib import Path

STUDIES_DIR = Path(__file__).resolve().parents[2] / "studies"

# One seed or a range, plain ASCII digits only: int() would also read '1_000', '+5' and
# non-ASCII digits such as '５', so one seed could be spelled several ways, and a typo
# like '1_000' for '1,000' would silently become seed 1000.
_SEED_PART = re.compile(r"\s*([0-9]+)\s*(?:-\s*([0-9]+)\s*)?")
_SEEDS_FORM = "expected seeds and ranges like '0-4' or '0,3,7' (plain digits)"


class InputError(ValueError):
    """A command-line input that cannot be used (bad path, missing study, malformed seeds, ...)."""


def find_study(reference: str) -> Path:
    """The .py file a study reference names: a path (has a '/' or a suffix), else a name in studies/."""
    as_path = Path(reference)
    if os.sep in reference or (os.altsep and os.altsep in reference) or as_path.suffix:
        if as_path.suffix != ".py":
            raise InputError(f"study file {reference!r}: expected a path ending in .py, or a study name")
        if not as_path.is_file():
            raise InputError(f"study file {reference!r} does not exist or is not a file")
        return as_path
    location = STUDIES_DIR / f"{reference}.py"
    if not reference or not location.is_file():
        known = sorted(p.stem for p in STUDIES_DIR.glob("*.py") if not p.stem.startswith("_"))
        raise InputError(f"no study named {reference!r} in {STUDIES_DIR} (known: {', '.join(known)})")
    return location


def load_study(reference: str) -> dict:
    """A study dict from a name in studies/ (e.g. 'blog') or a path to a .py file defining STUDY."""
    location = find_study(reference)
    spec = importlib.util.spec_from_file_location(f"_coevo_study_{location.stem}", location)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SystemExit as exit_:  # a study that exits must not end the command without a result
        raise InputError(f"study {reference!r} called sys.exit({exit_.code!r}) on import") from None
    except Exception as error:  # a study file may raise anything on import
        raise InputError(f"study {reference!r} raised on import: {type(error).__name__}: {error}") from None
    if not hasattr(module, "STUDY"):
        raise InputError(f"study {reference!r} does not define STUDY")
    return module.STUDY


def parse_seeds(text: str) -> list[int]:
    """'0-4' -> [0..4]; '0,3,7' -> [0, 3, 7]; '0-2,9' -> [0, 1, 2, 9].

    The count is checked before any list is built, so '0-99999999' fails at once.
    """
    from engine.host.study import MAX_SEEDS  # here, not at the top: this module loads before JAX (engine.cli.main)

    if not text.strip():
        raise InputError(f"--seeds {text!r}: no seeds given; {_SEEDS_FORM}")
    ranges = []
    for part in text.split(","):
        match = _SEED_PART.fullmatch(part)
        if not match:
            raise InputError(f"--seeds {text!r}: cannot read {part.strip()!r}; {_SEEDS_FORM}")
        low, high = int(match[1]), int(match[2] or match[1])
        if high < low:
            raise InputError(f"--seeds {text!r}: the range {low}-{high} is empty (its first seed is above its last)")
        ranges.append((low, high))
    count = sum(high - low + 1 for low, high in ranges)
    if count > MAX_SEEDS:
        raise InputError(f"--seeds {text!r}: {count} seeds; a study takes at most {MAX_SEEDS}")
    return [seed for low, high in ranges for seed in range(low, high + 1)]


def seed_ranges(seeds) -> str:
    """Seeds as `parse_seeds` reads them back, in their order, runs of consecutive seeds as ranges:
    [0, 1, 2, 9] -> '0-2,9'; [3, 1, 2] -> '3,1-2'."""
    seeds = [int(seed) for seed in seeds]
    starts = [i for i, seed in enumerate(seeds) if i == 0 or seed != seeds[i - 1] + 1]
    ends = starts[1:] + [len(seeds)]
    return ",".join(
        str(seeds[start]) if end - start == 1 else f"{seeds[start]}-{seeds[end - 1]}"
        for start, end in zip(starts, ends, strict=True)
    )
