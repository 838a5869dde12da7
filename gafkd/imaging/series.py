"""Time series going into the imaging functions: validation, window bounds and PAA.

`as_series` checks an (N, L) or (N, C, L) array or tensor and returns finite (N*C, L) rows in
the compute dtype: float32 (also float16, bfloat16) becomes float32, float64 and non-float
dtypes float64; numpy input lands on the CPU. `resolve_size` resolves an output size as pyts does,
`segment_bounds` and `segment_members` give pyts' window bounds, and `paa` (re-exported by
`gafkd.imaging`) is the piecewise aggregate approximation the GAFs start from. Shared by
`gafkd.imaging.gaf` (GAF) and `gafkd.imaging.markov` (MTF).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

Series = npt.ArrayLike | torch.Tensor
Size = int | float | np.integer[Any] | np.floating[Any]

INT_TYPES = (int, np.integer)


def as_series(X: Series) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Validate X; return it as finite (N*C, L) rows in the compute dtype, and (N,) or (N, C)."""
    if not isinstance(X, torch.Tensor):
        array = np.asarray(X)
        if array.dtype.kind not in "biuf":
            raise TypeError(f"X must hold real numbers (got dtype {array.dtype})")
        if array.dtype.kind != "f" or not array.flags.writeable:
            array = array.astype(np.float64 if array.dtype.kind != "f" else array.dtype)
        X = torch.from_numpy(array)
    if X.is_complex():
        raise TypeError(f"X must hold real numbers (got dtype {X.dtype})")
    if X.dtype != torch.float64:
        X = X.to(torch.float32 if X.is_floating_point() else torch.float64)
    if X.ndim not in (2, 3) or X.numel() == 0:
        raise ValueError(
            "X must have shape (n_samples, n_timestamps) or (n_samples, n_channels, "
            f"n_timestamps) with no empty axis (got shape {tuple(X.shape)})"
        )
    lead = tuple(X.shape[:-1])
    rows = X.reshape(-1, X.shape[-1])
    # One cheap pass: a sum is finite unless some value is NaN or inf (or the sum overflows).
    if rows.is_floating_point() and not bool(torch.isfinite(rows.sum())):
        bad = ~torch.isfinite(rows).all(dim=1)
        if bool(bad.any()):
            row = int(bad.nonzero()[0, 0])
            kind = "NaN" if bool(torch.isnan(rows[row]).any()) else "inf"
            where = f"sample {row}"
            if len(lead) == 2:
                where = f"sample {row // lead[1]} (channel {row % lead[1]})"
            others = int(bad.sum()) - 1
            more = f" and {others} other series" if others else ""
            raise ValueError(
                f"X contains {kind} in {where}{more}; remove or impute it before imaging"
            )
    return rows, lead


def resolve_size(value: Size, n_timestamps: int, name: str = "image_size") -> int:
    """Output size as pyts: an int in [1, n_timestamps], or a float fraction in (0, 1] -> ceil."""
    if isinstance(value, bool) or not isinstance(value, (*INT_TYPES, float, np.floating)):
        raise TypeError(f"'{name}' must be an int or a float (got {value!r})")
    if isinstance(value, INT_TYPES):
        if not 1 <= value <= n_timestamps:
            raise ValueError(
                f"If '{name}' is an integer, it must be between 1 and n_timestamps = "
                f"{n_timestamps} (got {value}); pass a smaller size or a fraction like 1.0"
            )
        return int(value)
    if not 0 < value <= 1:
        raise ValueError(
            f"If '{name}' is a float, it must be greater than 0 and lower than or equal to 1 "
            f"(got {value}); pass a fraction of the series length or an integer size"
        )
    return math.ceil(value * n_timestamps)


def segment_bounds(
    n_timestamps: int, window: int, overlapping: bool, n_segments: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Start and end of each window, exactly as ``pyts.utils.segmentation``."""
    if not overlapping:
        bounds = np.linspace(0, n_timestamps, n_segments + 1).astype(np.int64)
        return bounds[:-1], bounds[1:]
    overlaps = np.linspace(0, n_segments * window - n_timestamps, n_segments).astype(np.int64)
    start = np.arange(n_segments, dtype=np.int64) * window - overlaps
    return start, start + window


def segment_members(
    start: npt.NDArray[np.int64], end: npt.NDArray[np.int64], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(timestamp, window) index pairs covering every window, as two int64 tensors."""
    sizes = end - start
    offsets = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    timestamps = np.repeat(start, sizes) + offsets
    windows = np.repeat(np.arange(len(start)), sizes)
    return torch.from_numpy(timestamps).to(device), torch.from_numpy(windows).to(device)


def paa_rows(rows: torch.Tensor, output_size: int, overlapping: bool) -> torch.Tensor:
    """Piecewise aggregate approximation (R, L) -> (R, output_size): one matmul with 0/1 windows."""
    n_timestamps = rows.shape[1]
    window = -(-n_timestamps // output_size)
    if window == 1:  # output_size == n_timestamps: pyts returns X unchanged
        return rows
    start, end = segment_bounds(n_timestamps, window, overlapping, output_size)
    timestamps, windows = segment_members(start, end, rows.device)
    indicator = torch.zeros(n_timestamps, output_size, dtype=rows.dtype, device=rows.device)
    indicator[timestamps, windows] = 1
    sizes = torch.from_numpy(end - start).to(rows)
    return (rows @ indicator) / sizes  # sum then divide: a mean of values in [-1, 1] stays there


def paa(X: Series, output_size: Size, overlapping: bool = False) -> torch.Tensor:
    """Piecewise aggregate approximation: the mean of each of ``output_size`` windows.

    Parameters
    ----------
    X : array or tensor, shape (N, L) or (N, C, L)
    output_size : int or float
        Number of windows S: an int in [1, L], or a float in (0, 1] giving ceil(output_size * L).
    overlapping : bool
        False: windows of varying length with floor(linspace) bounds; True: fixed-length
        windows of ceil(L / S) timestamps that may overlap (pyts ``segmentation``).

    Returns
    -------
    torch.Tensor, shape (N, S) or (N, C, S)
        When S == L the (dtype-converted) input is returned as is, like pyts.

    References
    ----------
    pyts ``PiecewiseAggregateApproximation(window_size=None, output_size=S)``; Keogh et al.,
    Knowledge and Information Systems 3(3), 2001.

    Examples
    --------
    >>> paa([[0.0, 1, 2, 3, 4, 5, 6, 7, 8, 9]], output_size=4)
    tensor([[0.5000, 3.0000, 5.5000, 8.0000]], dtype=torch.float64)
    """
    rows, lead = as_series(X)
    size = resolve_size(output_size, rows.shape[1], "output_size")
    return paa_rows(rows, size, overlapping).reshape(*lead, size)
