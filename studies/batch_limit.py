"""The batch-size limit: baseline, asymmetric_10 and a frozen judge at batch 16, 64, 256, 1024 and
under gradient_estimator exact (the limit of a large batch; docs/mean_field.md), 30 seeds.

`batch_size` is study-wide, so each batch size is a study of its own: `STUDIES` holds all five,
and studies/batch_limit_<label>.py names one as its STUDY (`coevo run batch_limit_16`, ...,
`coevo run batch_limit_exact`, each to data/batch_limit_<label>.nc). Every one pretrains its
judges on batches of 64 (`pretrain_batch_size`), so all five start from the same judges, seed by
seed; `analysis.batch_limit.load_batch_limit` joins the five files along a `batch` dimension.
"""

CONDITIONS = {
    "baseline": {},
    "asymmetric_10": {"judge_update_every": 10},
    "frozen": {"freeze_judge": True},
}
BATCH_SIZES = (16, 64, 256, 1024)
SEEDS = list(range(30))
PRETRAIN_BATCH_SIZE = 64


def batch_study(label: str, what: str, base: dict, conditions: dict) -> dict:
    return {
        "name": f"batch_limit_{label}",
        "description": f"baseline, asymmetric_10 and frozen at {what}, judges pretrained on batches of 64",
        "seeds": SEEDS,
        "base": {"pretrain_batch_size": PRETRAIN_BATCH_SIZE, **base},
        "conditions": conditions,
    }


STUDIES = {
    str(batch): batch_study(str(batch), f"batch {batch}", {"batch_size": batch}, CONDITIONS) for batch in BATCH_SIZES
}
STUDIES["exact"] = batch_study(
    "exact",
    "gradient_estimator exact",
    {},
    {name: {**knobs, "gradient_estimator": "exact"} for name, knobs in CONDITIONS.items()},
)
