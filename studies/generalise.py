"""Do the blog's findings generalise? Six of its conditions on cells one axis at a time away from
the reference point (8⁴ = 4096 sequences, the reference landscape, GRU policy and judge of width 32),
30 seeds.

Axes: the world's size (N = 256 as 4⁴, 32,768 as 8⁵, 65,536 as 16⁴), its ruggedness (a transition
term, `transition_alpha` 0.5; NK landscapes with nk_k 1, 2, 3), the judge's width (8, 128), the
policy's width (8, 128) and the judge's architecture (mlp, transformer). `vocab` and `seq_len` are
study-wide, so each world size is a study of its own: `STUDIES` holds the reference world's study
(the reference cell and every other axis, conditions named <condition>.<cell>) and one per world
size, and studies/generalise_<label>.py names each as its STUDY (`coevo run generalise_n256`, ...,
to data/generalise_<label>.nc); this file's STUDY is the reference world's.
"""

from studies.blog import CONDITIONS as BLOG

CONDITIONS = {
    name: BLOG[name] for name in ("baseline", "asymmetric_10", "frozen", "reinit_3", "ensemble_5", "anchor_0.1")
}
SEEDS = list(range(30))
# the cells of the reference world, each one axis away from the reference point ("reference": at it)
CELLS = {
    "reference": {},
    "transition": {"transition_alpha": 0.5},
    "nk_1": {"landscape": "nk", "nk_k": 1},
    "nk_2": {"landscape": "nk", "nk_k": 2},
    "nk_3": {"landscape": "nk", "nk_k": 3},
    "judge_8": {"judge_hidden": 8},
    "judge_128": {"judge_hidden": 128},
    "policy_8": {"policy_hidden": 8},
    "policy_128": {"policy_hidden": 128},
    "judge_mlp": {"judge_arch": "mlp"},
    "judge_transformer": {"judge_arch": "transformer"},
}
WORLDS = {"n256": (4, 4), "n32768": (8, 5), "n65536": (16, 4)}  # label: (vocab, seq_len)


def generalise_study(label: str, what: str, base: dict, conditions: dict) -> dict:
    return {
        "name": f"generalise_{label}",
        "description": f"baseline, asymmetric_10, frozen, reinit_3, ensemble_5 and anchor_0.1 {what}",
        "seeds": SEEDS,
        "base": base,
        "conditions": conditions,
    }


STUDIES = {
    "reference": generalise_study(
        "reference",
        "at 8⁴, one axis at a time: ruggedness, judge width, policy width, judge architecture",
        {},
        {
            f"{name}.{cell}": {**knobs, **cell_knobs}
            for cell, cell_knobs in CELLS.items()
            for name, knobs in CONDITIONS.items()
        },
    ),
}
for label, (vocab, seq_len) in WORLDS.items():
    STUDIES[label] = generalise_study(
        label, f"at {vocab}^{seq_len} = {vocab**seq_len:,} sequences", {"vocab": vocab, "seq_len": seq_len}, CONDITIONS
    )
STUDY = STUDIES["reference"]
