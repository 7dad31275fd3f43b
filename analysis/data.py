"""Leaving diverged runs out: a NaN/inf run says nothing about a condition's dynamics."""

import numpy as np
import xarray as xr


def _diverged(ds: xr.Dataset) -> xr.DataArray:
    return ds["diverged"].astype(bool)


def mask_diverged(ds: xr.Dataset) -> xr.Dataset:
    """The Dataset with every variable of a diverged run set to NaN, so nan-aware means skip it."""
    keep = ~_diverged(ds)
    masked = ds.copy()
    for name, var in ds.data_vars.items():
        if name not in ("diverged", "diverged_at") and "seed" in var.dims and np.issubdtype(var.dtype, np.number):
            masked[name] = var.astype(float).where(keep)
    return masked


def n_diverged(ds: xr.Dataset, conditions=None) -> int:
    """How many runs (condition × seed) diverged, over `conditions` or all of them."""
    flags = _diverged(ds)
    if conditions is not None:
        flags = flags.sel(condition=list(conditions))
    return int(flags.sum())


def diverged_note(ds: xr.Dataset, conditions=None) -> str:
    """' (k diverged runs left out)' when k > 0, else '' — appended to titles and captions."""
    k = n_diverged(ds, conditions)
    return f" ({k} diverged run{'s' if k != 1 else ''} left out)" if k else ""


def present(ds: xr.Dataset, conditions) -> list:
    """The requested conditions that the Dataset holds, in the requested order."""
    held = set(ds["condition"].values.tolist())
    return [c for c in conditions if c in held]
