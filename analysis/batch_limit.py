"""The batch-size limit (studies/batch_limit.py): results files of one design run at several batch
sizes and under gradient_estimator exact, joined along a `batch` dimension ('16', '64', ...,
'exact' last), so a metric reads as batch × condition × seed × iteration."""

import json

import numpy as np
import pandas as pd
import xarray as xr

from engine.host.results import load

EXACT = "exact"


def batch_label(ds: xr.Dataset) -> str:
    """'exact' where every condition ran under gradient_estimator exact, else its batch size ('16', ...)."""
    estimators = set(np.ravel(ds["gradient_estimator"].values).tolist())
    if estimators == {EXACT}:
        return EXACT
    if estimators != {"sampled"}:
        raise ValueError(f"study {ds.attrs.get('study_name')!r} mixes gradient estimators: it has no one batch label")
    return str(int(np.ravel(ds["batch_size"].values)[0]))  # study-wide: one value


def join_batches(datasets) -> xr.Dataset:
    """Datasets of the same conditions, seeds and records, one per batch size (or exact), along a new
    `batch` dimension ordered by batch size, exact last. Knob coordinates that differ between them
    (batch_size, gradient_estimator) become (batch, condition) coordinates; attrs["studies"] maps each
    label to its study (JSON). A ValueError names the first file that does not fit: a label seen twice,
    other conditions, seeds or records, or other pretrained judges (pretrain_steps or
    pretrain_alignment not bit for bit the same: pretrain_batch_size keeps them across batch sizes)."""
    by_label = {}
    for ds in datasets:
        label = batch_label(ds)
        if label in by_label:
            raise ValueError(f"two results files at batch {label!r}")
        by_label[label] = ds
    labels = sorted(by_label, key=lambda label: (label == EXACT, 0 if label == EXACT else int(label)))
    first = by_label[labels[0]]
    time = "step" if "step" in first.dims else "iteration"
    for label in labels[1:]:
        ds = by_label[label]
        for dim in ("condition", "seed", time):
            if dim not in ds.dims or not np.array_equal(ds[dim].values, first[dim].values):
                raise ValueError(f"batch {label!r}: its {dim} values differ from batch {labels[0]!r}'s")
        for name in ("pretrain_steps", "pretrain_alignment"):
            if not np.array_equal(ds[name].values, first[name].values):
                raise ValueError(
                    f"batch {label!r}: its {name} differs from batch {labels[0]!r}'s: other pretrained judges "
                    "(set the same pretrain_batch_size in every study)"
                )
    joined = xr.concat(
        [by_label[label] for label in labels],
        dim=pd.Index(labels, name="batch"),
        coords="different",
        compat="equals",
        combine_attrs="drop_conflicts",
    )
    joined.attrs["studies"] = json.dumps({label: by_label[label].attrs["study"] for label in labels})
    return joined


def load_batch_limit(paths) -> xr.Dataset:
    """`join_batches` of the results files at `paths` (any order)."""
    return join_batches([load(path) for path in paths])
