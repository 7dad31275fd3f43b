"""Best-of-n from a base policy, exactly: the law of the judge's pick among n draws.

Draw n sequences independently from π, keep the one the judge J scores highest. The world
is enumerable, so that pick's distribution P_n is known exactly for every n, and with it the
gold score E_{P_n}[q*], the judge-perceived score E_{P_n}[J] and KL(P_n‖π), where Gao,
Schulman & Hilton (2022) could only sample and used the analytic log n − (n − 1)/n for the
KL, which is an upper bound (Beirami et al. 2024; docs/overoptimisation.md).

Blocks and ties. Sort by J and group sequences with exactly equal scores into blocks B, with
F the CDF of J under π. The best of n lands in B with probability F(B)^n − F(B⁻)^n, and
within B in proportion to π: P_n(x) = π(x)·(F(B)^n − F(B⁻)^n)/π(B). This is what an argmax
over the n draws does (the first draw attaining the maximum wins), because every draw that
lands in B is a draw from π restricted to B, whatever its position. The lab's best-of-N
diagnostic (`engine.core.exact.order_statistic_weights`) resolves ties the same way.

Numerics. For a block with mass m and a = F(B), the block's probability is
a^n·(1 − (1 − m/a)^n) = exp(n·log a)·(−expm1(n·log1p(−m/a))): no cancellation of two
powers close to 1, for any n. log a is taken from the lower cumulative sum where a ≤ 1/2
and as log1p(−mass above B) where a > 1/2, so it is accurate at both ends (the n that matter
are those where 1 − a ~ 1/n, read from the upper tail). Within a block P_n/π is one number,
so KL(P_n‖π) = Σ_B P_n(B)·log(P_n(B)/π(B)): a sum over blocks, exact in the same way.
"""

import numpy as np
import xarray as xr

from engine.core.world import LANDSCAPES, WORLD_KEY, q_star_of
from engine.host.results import world_of_dataset
from engine.loop.diagnostics import DISTRIBUTIONS

TIE_RULE = "ties in J (exactly equal scores) go to each tied sequence in proportion to π, as argmax over the draws does"


def kl_bound(n) -> np.ndarray:
    """log n − (n − 1)/n: the KL(best-of-n ‖ π) Gao et al. use, an upper bound on the exact KL."""
    n = _counts(n)
    return np.log(n) - (n - 1) / n


def n_grid(n_max: int = 10**6, per_decade: int = 8) -> np.ndarray:
    """Integers 1..n_max, about evenly spaced in log n (`per_decade` per factor of 10), int64."""
    if n_max < 1 or per_decade < 1:
        raise ValueError(f"n_grid needs n_max ≥ 1 and per_decade ≥ 1, got n_max={n_max}, per_decade={per_decade}")
    points = int(np.ceil(np.log10(n_max) * per_decade)) + 1
    return np.unique(np.round(np.geomspace(1, n_max, points))).astype(np.int64)


def _counts(n) -> np.ndarray:
    """n as a float64 array of whole numbers ≥ 1 (1-D), or one clear ValueError."""
    n = np.atleast_1d(np.asarray(n, dtype=float))
    if n.ndim != 1 or n.size == 0 or not np.all(np.isfinite(n)) or np.any(n < 1) or np.any(n != np.floor(n)):
        raise ValueError(f"n must be whole numbers ≥ 1 (a scalar or a 1-D array), got {n.tolist()}")
    return n


class Blocks:
    """The blocks of equal judge score, in ascending score, and π's mass on each (π normalised).

    mass: π(B); log_cdf: log F(B), accurate near 0 and near 1; share: π(B)/F(B) in [0, 1];
    block: the block of each sequence (in the caller's order).
    """

    def __init__(self, scores, probs):
        scores = np.asarray(scores, dtype=float)
        probs = np.asarray(probs, dtype=float)
        if scores.ndim != 1 or scores.shape != probs.shape or scores.size == 0:
            raise ValueError(f"scores and probs must be 1-D of one length, got shapes {scores.shape}, {probs.shape}")
        if not (np.all(np.isfinite(scores)) and np.all(np.isfinite(probs))):
            raise ValueError("scores and probs must be finite")
        if np.any(probs < 0) or probs.sum() <= 0:
            raise ValueError("probs must be ≥ 0 with a positive sum")
        probs = probs / probs.sum()
        order = np.argsort(scores, kind="stable")
        sorted_scores = scores[order]
        starts = np.concatenate([[True], sorted_scores[1:] != sorted_scores[:-1]])
        block_of_rank = np.cumsum(starts) - 1
        self.block = np.empty_like(block_of_rank)
        self.block[order] = block_of_rank
        self.probs = probs
        self.mass = np.bincount(block_of_rank, weights=probs[order])
        through = np.cumsum(self.mass)  # F(B), from below: accurate where it is small
        above = np.concatenate([np.cumsum(self.mass[::-1])[::-1][1:], [0.0]])  # 1 − F(B), from above
        lower = through <= 0.5
        with np.errstate(divide="ignore", invalid="ignore"):  # each branch is off where the other is taken
            self.log_cdf = np.where(lower, np.log(through), np.log1p(-above))
        cdf = np.where(lower, through, 1.0 - above)
        with np.errstate(divide="ignore", invalid="ignore"):
            self.share = np.clip(np.where(self.mass > 0, self.mass / cdf, 0.0), 0.0, 1.0)

    def mean(self, values) -> np.ndarray:
        """E_π[values | B] per block (0 for a block of no mass, which best-of-n never picks)."""
        values = np.asarray(values, dtype=float)
        if values.shape != self.probs.shape or not np.all(np.isfinite(values)):
            raise ValueError(f"values must be finite and of shape {self.probs.shape}, got shape {values.shape}")
        sums = np.bincount(self.block, weights=self.probs * values, minlength=self.mass.size)
        return np.divide(sums, self.mass, out=np.zeros_like(sums), where=self.mass > 0)

    def log_best(self, n) -> np.ndarray:
        """log P(best of n ∈ B), (len(n), blocks): n·log F(B) + log(1 − (1 − π(B)/F(B))^n)."""
        n = _counts(n)[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            log_miss = n * np.log1p(-self.share)  # log (F(B⁻)/F(B))^n; −inf for the lowest block
            return n * self.log_cdf + np.log(-np.expm1(log_miss))


def best_of_n_weights(scores, probs, n) -> np.ndarray:
    """P_n(x) = P(the judge's best of n draws from π is x), (len(n), N) for n a scalar or 1-D.

    Ties: `TIE_RULE`. Rows sum to 1 up to rounding; n = 1 gives π.
    """
    blocks = Blocks(scores, probs)
    with np.errstate(divide="ignore", invalid="ignore"):  # blocks of no mass: NaN, replaced by 0 below
        per_unit_mass = np.exp(blocks.log_best(n) - np.log(blocks.mass))  # P_n(B)/π(B)
    return np.where(blocks.probs > 0, blocks.probs * per_unit_mass[:, blocks.block], 0.0)


def best_of_n(scores, probs, gold, n) -> dict:
    """Exact best-of-n curves over `n` for one judge `scores`, base policy `probs` and gold values.

    Returns float64 arrays of len(n): `kl` KL(P_n‖π) in nats, `kl_bound` log n − (n − 1)/n,
    `gold` E_{P_n}[gold], `perceived` E_{P_n}[scores]. Ties: `TIE_RULE`.
    """
    blocks = Blocks(scores, probs)
    log_best = blocks.log_best(n)
    best = np.exp(log_best)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_terms = np.where(best > 0, best * (log_best - np.log(blocks.mass)), 0.0)
    return {
        "kl": np.maximum(kl_terms.sum(axis=1), 0.0),  # ≥ 0 exactly; rounding can leave −1e-17 at n = 1
        "kl_bound": kl_bound(n),
        "gold": best @ blocks.mean(gold),
        "perceived": best @ blocks.mean(scores),
    }


def best_of_n_curves(ds: xr.Dataset, n=None, judge_record: int = 0) -> xr.Dataset:
    """Best-of-n from each seed's initial policy π₀, as a tidy Dataset over (seed, n).

    ds: a results Dataset of one condition (a `condition` dimension of size 1, or none), saved
    with `save_distributions` `all`: π₀ is the policy at the first record (right after judge
    pretraining). The judge is J at record `judge_record` (a position along the time dimension:
    0 the pretrained judge, −1 the last); q* is `q_star_of` the condition's landscape, nk_k,
    world_seed and transition_alpha.
    n: the grid (default `n_grid()`). A seed whose π₀ or J is not finite (a diverged run) gets NaN.

    Variables: kl, d = √kl, gold and perceived over (seed, n); kl_bound over n; initial_gold
    E_π₀[q*] and initial_perceived E_π₀[J] over seed (Gao's R is gold − initial_gold).
    """
    n = _counts(n_grid() if n is None else n)
    ds = _one_condition(ds)
    time = _time_dimension(ds)
    if not -ds.sizes[time] <= judge_record < ds.sizes[time]:
        raise ValueError(f"judge_record {judge_record} is outside the {ds.sizes[time]} records along {time!r}")
    initial = ds["policy_probability"].isel({time: 0})
    judge = ds["judge_score"].isel({time: judge_record})
    gold = np.asarray(
        q_star_of(
            world_of_dataset(ds),
            LANDSCAPES.index(str(ds["landscape"].values)) if "landscape" in ds.coords else 0,
            int(ds["nk_k"]) if "nk_k" in ds.coords else 0,
            int(ds["world_seed"]) if "world_seed" in ds.coords else WORLD_KEY,
            float(ds["transition_alpha"]),
        ),
        dtype=float,
    )
    names = ("kl", "gold", "perceived")
    curves = {name: np.full((ds.sizes["seed"], n.size), np.nan) for name in names}
    start = {name: np.full(ds.sizes["seed"], np.nan) for name in ("initial_gold", "initial_perceived")}
    for i, seed in enumerate(ds["seed"].values):
        probs = initial.sel(seed=seed).values.astype(float)
        scores = judge.sel(seed=seed).values.astype(float)
        if not (np.all(np.isfinite(probs)) and np.all(np.isfinite(scores))):
            continue
        curve = best_of_n(scores, probs, gold, n)
        for name in names:
            curves[name][i] = curve[name]
        probs = probs / probs.sum()
        start["initial_gold"][i], start["initial_perceived"][i] = probs @ gold, probs @ scores
    variables = {
        "kl": (("seed", "n"), curves["kl"], {"units": "nats", "long_name": "KL(best-of-n ‖ π₀), exact"}),
        "d": (("seed", "n"), np.sqrt(curves["kl"]), {"units": "√nats", "long_name": "√KL(best-of-n ‖ π₀)"}),
        "kl_bound": (("n",), kl_bound(n), {"units": "nats", "long_name": "log n − (n − 1)/n, an upper bound"}),
        "gold": (("seed", "n"), curves["gold"], {"units": "q*", "long_name": "E[q*] of the judge's best of n"}),
        "perceived": (("seed", "n"), curves["perceived"], {"units": "J", "long_name": "E[J] of the best of n"}),
        "initial_gold": (("seed",), start["initial_gold"], {"units": "q*", "long_name": "E[q*] under π₀"}),
        "initial_perceived": (("seed",), start["initial_perceived"], {"units": "J", "long_name": "E[J] under π₀"}),
    }
    attrs = {
        "tie_rule": TIE_RULE,
        "judge_record": f"{time} {int(ds[time].values[judge_record])}",
        "transition_alpha": float(ds["transition_alpha"]),
    }
    if "condition" in ds.coords:
        attrs["condition"] = str(ds["condition"].values)
    coords = {"seed": ds["seed"].values, "n": n.astype(np.int64)}
    return xr.Dataset(variables, coords=coords, attrs=attrs)


def _one_condition(ds: xr.Dataset) -> xr.Dataset:
    """The Dataset without a `condition` dimension, or a ValueError saying what is wrong with it."""
    if "condition" in ds.dims:
        if ds.sizes["condition"] != 1:
            raise ValueError(
                f"best-of-n curves take one condition, this Dataset holds {ds.sizes['condition']}: "
                "pass ds.sel(condition=name)"
            )
        ds = ds.isel(condition=0)
    if not all(name in ds for name in DISTRIBUTIONS):
        raise ValueError(f"best-of-n curves need {' and '.join(DISTRIBUTIONS)}: run with save_distributions 'all'")
    if "transition_alpha" not in ds.coords:
        raise ValueError("best-of-n curves need the transition_alpha coordinate to rebuild q*")
    n_sequences = world_of_dataset(ds).n_sequences
    if ds.sizes.get("sequence") != n_sequences:
        raise ValueError(f"the distributions must run over the {n_sequences} sequences, got {ds.sizes.get('sequence')}")
    return ds


def _time_dimension(ds: xr.Dataset) -> str:
    """The records' dimension of the saved distributions, or a ValueError when only the last was kept."""
    extra = [dim for dim in ds["policy_probability"].dims if dim not in ("seed", "sequence")]
    if not extra:
        raise ValueError(
            "this Dataset keeps only the final record's distributions (save_distributions 'final'); "
            "π₀ is the record after pretraining: run the study with save_distributions 'all'"
        )
    return extra[0]
