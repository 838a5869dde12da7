"""Markov transition field (MTF) as a batched torch function, equal to pyts 0.14.1.

Bins of the full-resolution series -> row-normalised transition matrix M -> block means of
M[q_r, q_c], computed as H @ M @ H^T from per-block bin histograms H, never building the (L, L)
field. Bins and transition counts are float64 (exact bins); the (S, S) products use the output
dtype. `gafkd.imaging` re-exports `mtf`, and `encode` stacks it into compound images.

References: pyts (J. Faouzi and H. Janati, JMLR 21, 2020); Z. Wang and T. Oates, "Imaging
Time-Series to Improve Classification and Imputation", IJCAI 2015.
"""

from __future__ import annotations

import math
import warnings
from typing import Literal

import numpy as np
import torch
from scipy.stats import norm

from gafkd.imaging.series import (
    INT_TYPES,
    Series,
    Size,
    as_series,
    resolve_size,
    segment_bounds,
    segment_members,
)

Strategy = Literal["quantile", "uniform", "normal"]

_CHUNK = 4096  # series per MTF chunk: bounds the (chunk, L) float64 and int64 intermediates


def check_mtf_params(n_bins: int, strategy: str) -> None:
    if isinstance(n_bins, bool) or not isinstance(n_bins, INT_TYPES):
        raise TypeError(f"'n_bins' must be an integer (got {n_bins!r})")
    if n_bins < 2:
        raise ValueError(f"'n_bins' must be greater than or equal to 2 (got {n_bins})")
    if strategy not in ("quantile", "uniform", "normal"):
        raise ValueError(f"'strategy' must be 'quantile', 'uniform' or 'normal' (got {strategy!r})")


def _bins(rows: torch.Tensor, n_bins: int, strategy: Strategy) -> tuple[torch.Tensor, torch.Tensor]:
    """Bin indices (R, L) int64 exactly as pyts ``KBinsDiscretizer``; edges are float64.

    Also returns a (R,) bool tensor: rows whose equal quantiles merged bins (pyts warns).
    """
    values = rows.double()  # exact for float32 input, so bins equal pyts' float64 bins
    n_rows, n_timestamps = rows.shape
    merged = torch.zeros(n_rows, dtype=torch.bool, device=rows.device)
    if strategy == "normal":
        edges = torch.from_numpy(norm.ppf(np.linspace(0, 1, n_bins + 1)[1:-1])).to(values)
    elif strategy == "uniform":  # numba's linspace: start + i * ((stop - start) / n_bins)
        low, high = torch.aminmax(values, dim=1, keepdim=True)
        steps = torch.arange(1, n_bins, dtype=torch.float64, device=rows.device)
        edges = low + steps * ((high - low) / n_bins)
    else:  # np.percentile, method 'linear', with numpy's own index and lerp arithmetic
        virtual = (n_timestamps - 1) * np.true_divide(np.linspace(0, 100, n_bins + 1)[1:-1], 100)
        previous = np.floor(virtual)
        gamma = torch.from_numpy(virtual - previous).to(values)
        below = np.minimum(previous.astype(np.int64), n_timestamps - 1)
        above = np.minimum(below + 1, n_timestamps - 1)
        if rows.device.type == "cpu":  # numpy's SIMD sort is far faster than torch.sort on CPU
            ordered = torch.from_numpy(np.sort(rows.detach().numpy(), axis=1))
        else:
            ordered = torch.sort(rows, dim=1).values
        low, high = ordered[:, below].double(), ordered[:, above].double()
        diff = high - low
        edges = torch.where(gamma >= 0.5, high - diff * (1 - gamma), low + diff * gamma)
        if n_bins > 2:  # pyts drops an edge within 1e-8 of the next one
            keep = torch.ones_like(edges, dtype=torch.bool)
            keep[:, :-1] = (edges[:, 1:] - edges[:, :-1]).abs() > 1e-8
            merged = ~keep.all(dim=1)
            edges = torch.where(keep, edges, math.inf)  # a dropped edge is below no value
    # bin = number of edges strictly below the value = searchsorted(edges, x, side='left')
    small = torch.uint8 if n_bins <= 256 else torch.int64  # uint8 sums are several times faster
    binned = torch.zeros(rows.shape, dtype=small, device=rows.device)
    for k in range(n_bins - 1):
        binned += values > edges[..., k : k + 1]
    return binned.long(), merged


def mtf_rows(
    rows: torch.Tensor,
    lead: tuple[int, ...],
    image_size: int,
    n_bins: int,
    strategy: Strategy,
    overlapping: bool,
) -> torch.Tensor:
    """Aggregated MTF (R, L) -> (R, S, S); warns like pyts when quantiles merge bins."""
    n_rows, n_timestamps = rows.shape
    device = rows.device
    window, remainder = divmod(n_timestamps, image_size)
    if remainder == 0:
        start = np.arange(0, n_timestamps, window, dtype=np.int64)
        end = start + window
    else:
        start, end = segment_bounds(n_timestamps, window + 1, overlapping, image_size)
    timestamps, blocks = segment_members(start, end, device)
    partition = len(timestamps) == n_timestamps  # each timestamp in exactly one block
    block_offsets = blocks * n_bins
    inverse_sizes = 1 / torch.from_numpy(end - start).to(device, torch.float64)
    images = torch.empty(n_rows, image_size, image_size, dtype=rows.dtype, device=device)
    merged_rows = []
    for first in range(0, n_rows, _CHUNK):
        binned, merged = _bins(rows[first : first + _CHUNK], n_bins, strategy)
        n = binned.shape[0]
        sample = torch.arange(n, device=device)[:, None]
        pairs = (binned[:, :-1] * n_bins + binned[:, 1:]).add_(sample * n_bins**2)
        counts = torch.bincount(pairs.ravel(), minlength=n * n_bins**2)
        counts = counts.view(n, n_bins, n_bins).double()
        totals = counts.sum(dim=2, keepdim=True)
        transitions = counts / torch.where(totals == 0, 1.0, totals)  # zero rows stay zero
        members = (binned if partition else binned[:, timestamps]) + block_offsets
        members += sample * (image_size * n_bins)
        histogram = torch.bincount(members.ravel(), minlength=n * image_size * n_bins)
        histogram = histogram.view(n, image_size, n_bins) * inverse_sizes[:, None]
        left = torch.bmm(histogram, transitions).to(rows.dtype)
        torch.bmm(left, histogram.transpose(1, 2).to(rows.dtype), out=images[first : first + n])
        merged_rows.append(merged.nonzero()[:, 0] + first)
    flagged = torch.cat(merged_rows).tolist()
    if flagged:
        where = [r if len(lead) == 1 else (r // lead[1], r % lead[1]) for r in flagged]
        what = "samples" if len(lead) == 1 else "(sample, channel) pairs"
        shown = f"{where[:10]}" + (f" and {len(where) - 10} more" if len(where) > 10 else "")
        warnings.warn(
            f"Some quantiles are equal. The number of bins will be smaller for {what} {shown}. "
            "Consider decreasing n_bins or removing these samples.",
            UserWarning,
            stacklevel=3,
        )
    return images


def mtf(
    X: Series,
    image_size: Size = 1.0,
    n_bins: int = 8,
    strategy: Strategy = "quantile",
    overlapping: bool = False,
) -> torch.Tensor:
    """Markov transition field, aggregated to S x S by block means.

    Each sample is binned at full resolution (float64): 'quantile' = per-sample np.percentile
    edges (equal quantiles merge bins, with a UserWarning), 'uniform' = equal-width bins
    between the sample's min and max, 'normal' = N(0, 1) quantiles (z-normalise first). The
    transition matrix M[a, b] counts t -> t+1 moves and is row-normalised (rows with no
    outgoing move stay zero); pixel (j, k) is the mean of M[q_r, q_c] over rows r in block j
    and columns c in block k, computed as ``H @ M @ H^T`` with H the per-block bin histograms.

    Parameters
    ----------
    X : array or tensor, shape (N, L) or (N, C, L)
    image_size : int or float
        S: an int in [1, L], or a float in (0, 1]. Blocks are equal when S divides L, else
        pyts ``segmentation`` windows of L // S + 1 timestamps.
    n_bins : int
        Number of bins, >= 2.
    strategy : {'quantile', 'uniform', 'normal'}
    overlapping : bool
        Overlapping blocks when S does not divide L.

    Returns
    -------
    torch.Tensor, shape (N, S, S) or (N, C, S, S), values in [0, 1]

    References
    ----------
    pyts ``MarkovTransitionField``; Z. Wang and T. Oates, IJCAI 2015.

    Examples
    --------
    >>> mtf([[1.0, 2.0, 3.0, 4.0]], image_size=2, n_bins=2)  # bins [0, 0, 1, 1]
    tensor([[[0.5000, 0.5000],
             [0.0000, 1.0000]]], dtype=torch.float64)
    """
    rows, lead = as_series(X)
    size = resolve_size(image_size, rows.shape[1])
    check_mtf_params(n_bins, strategy)
    images = mtf_rows(rows, lead, size, int(n_bins), strategy, overlapping)
    return images.reshape(*lead, size, size)
