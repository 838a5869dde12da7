"""Time series to images: GASF, GADF, MTF and Q-GAF as batched torch functions.

Each function reproduces pyts 0.14.1 on a whole batch at once, on any device, without a Python
loop over samples. GAF: PAA -> per-sample min-max scaling -> cos = x, sin = sqrt(1 - x^2) ->
outer sum cos(phi_i + phi_j) (GASF) or difference sin(phi_i - phi_j) (GADF). MTF: bins of the
full-resolution series -> row-normalised transition matrix M -> block means of M[q_r, q_c],
computed as H @ M @ H^T from per-block bin histograms H, never building the (L, L) field.

Inputs: (N, L) or (N, C, L) arrays or tensors; outputs: (N, S, S) or (N, C, S, S) tensors on the
input's device (numpy -> CPU). float32 (also float16, bfloat16) is computed and returned in
float32; float64 and non-float dtypes in float64. Whatever the dtype, the (N, S) scaled values
and angles and the MTF bins are float64 (cheap, and exact bins); the (S, S) products use the
output dtype.

References: pyts (J. Faouzi and H. Janati, JMLR 21, 2020); Z. Wang and T. Oates, "Imaging
Time-Series to Improve Classification and Imputation", IJCAI 2015; Xu et al., "Quantum Gramian
Angular Field", Finance Research Letters 67 (2024).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
from scipy.stats import norm

Series = npt.ArrayLike | torch.Tensor
SampleRange = tuple[float, float] | None
Size = int | float | np.integer[Any] | np.floating[Any]
Strategy = Literal["quantile", "uniform", "normal"]
Method = Literal["summation", "difference"]
Layout = Literal["gasf", "compound"]

_CHUNK = 4096  # series per MTF chunk: bounds the (chunk, L) float64 and int64 intermediates
_INTS = (int, np.integer)


def _as_series(X: Series) -> tuple[torch.Tensor, tuple[int, ...]]:
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


def _size(value: Size, n_timestamps: int, name: str = "image_size") -> int:
    """Output size as pyts: an int in [1, n_timestamps], or a float fraction in (0, 1] -> ceil."""
    if isinstance(value, bool) or not isinstance(value, (*_INTS, float, np.floating)):
        raise TypeError(f"'{name}' must be an int or a float (got {value!r})")
    if isinstance(value, _INTS):
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


def _check_sample_range(sample_range: SampleRange) -> None:
    if sample_range is None:
        return
    if not isinstance(sample_range, tuple):
        raise TypeError(f"'sample_range' must be None or a tuple (min, max) (got {sample_range!r})")
    if len(sample_range) != 2 or not -1 <= sample_range[0] < sample_range[1] <= 1:
        raise ValueError(
            "'sample_range' must be a tuple (min, max) with -1 <= min < max <= 1 "
            f"(got {sample_range!r}); the default is (-1, 1)"
        )


def _check_mtf_params(n_bins: int, strategy: str) -> None:
    if isinstance(n_bins, bool) or not isinstance(n_bins, _INTS):
        raise TypeError(f"'n_bins' must be an integer (got {n_bins!r})")
    if n_bins < 2:
        raise ValueError(f"'n_bins' must be greater than or equal to 2 (got {n_bins})")
    if strategy not in ("quantile", "uniform", "normal"):
        raise ValueError(f"'strategy' must be 'quantile', 'uniform' or 'normal' (got {strategy!r})")


def _segments(
    n_timestamps: int, window: int, overlapping: bool, n_segments: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Start and end of each window, exactly as ``pyts.utils.segmentation``."""
    if not overlapping:
        bounds = np.linspace(0, n_timestamps, n_segments + 1).astype(np.int64)
        return bounds[:-1], bounds[1:]
    overlaps = np.linspace(0, n_segments * window - n_timestamps, n_segments).astype(np.int64)
    start = np.arange(n_segments, dtype=np.int64) * window - overlaps
    return start, start + window


def _members(
    start: npt.NDArray[np.int64], end: npt.NDArray[np.int64], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(timestamp, window) index pairs covering every window, as two int64 tensors."""
    sizes = end - start
    offsets = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    timestamps = np.repeat(start, sizes) + offsets
    windows = np.repeat(np.arange(len(start)), sizes)
    return torch.from_numpy(timestamps).to(device), torch.from_numpy(windows).to(device)


def _paa_rows(rows: torch.Tensor, output_size: int, overlapping: bool) -> torch.Tensor:
    """Piecewise aggregate approximation (R, L) -> (R, output_size): one matmul with 0/1 windows."""
    n_timestamps = rows.shape[1]
    window = -(-n_timestamps // output_size)
    if window == 1:  # output_size == n_timestamps: pyts returns X unchanged
        return rows
    start, end = _segments(n_timestamps, window, overlapping, output_size)
    timestamps, windows = _members(start, end, rows.device)
    indicator = torch.zeros(n_timestamps, output_size, dtype=rows.dtype, device=rows.device)
    indicator[timestamps, windows] = 1
    sizes = torch.from_numpy(end - start).to(rows)
    return (rows @ indicator) / sizes  # sum then divide: a mean of values in [-1, 1] stays there


def _min_max(values: torch.Tensor, sample_range: tuple[float, float]) -> torch.Tensor:
    """Per-row min-max scaling with sklearn MinMaxScaler's arithmetic (float64)."""
    low, high = float(sample_range[0]), float(sample_range[1])
    data_min, data_max = torch.aminmax(values, dim=1, keepdim=True)
    data_range = data_max - data_min
    data_range = torch.where(data_range < 10 * np.finfo(np.float64).eps, 1.0, data_range)
    scale = (high - low) / data_range
    return values * scale + (low - data_min * scale)


def _angles(
    rows: torch.Tensor, image_size: int, sample_range: SampleRange, overlapping: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the polar angles of the PAA'd, rescaled rows: two (R, S) float64 tensors."""
    reduced = _paa_rows(rows, image_size, overlapping)
    if sample_range is None:
        low, high = (float(v) for v in torch.aminmax(reduced))
        if low < -1 or high > 1:
            raise ValueError(
                "If 'sample_range' is None, all values of X after PAA must lie in [-1, 1] "
                f"(got min {low:.6g}, max {high:.6g}); pass sample_range=(-1, 1) to rescale"
            )
        cos = reduced.double()
    else:
        cos = _min_max(reduced.double(), sample_range)
    return cos, torch.sqrt(torch.clamp(1 - cos**2, 0, 1))


def _outer(
    a: torch.Tensor,
    b: torch.Tensor,
    c: torch.Tensor,
    d: torch.Tensor,
    sign: float,
    dtype: torch.dtype,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Batched a_i b_j + sign * c_i d_j: four (..., S) tensors -> (..., S, S) in dtype or out."""
    a, b, c, d = (t.to(dtype) for t in (a, b, c, d))
    images = torch.mul(a[..., :, None], b[..., None, :], out=out)
    return images.addcmul_(c[..., :, None], d[..., None, :], value=sign)


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


def _mtf_rows(
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
        start, end = _segments(n_timestamps, window + 1, overlapping, image_size)
    timestamps, blocks = _members(start, end, device)
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
    rows, lead = _as_series(X)
    size = _size(output_size, rows.shape[1], "output_size")
    return _paa_rows(rows, size, overlapping).reshape(*lead, size)


def _gaf(
    X: Series, image_size: Size, sample_range: SampleRange, overlapping: bool, method: Method
) -> torch.Tensor:
    rows, lead = _as_series(X)
    size = _size(image_size, rows.shape[1])
    _check_sample_range(sample_range)
    cos, sin = _angles(rows, size, sample_range, overlapping)
    if method == "summation":  # cos(phi_i + phi_j)
        images = _outer(cos, cos, sin, sin, -1.0, rows.dtype)
    else:  # sin(phi_i - phi_j)
        images = _outer(sin, cos, cos, sin, -1.0, rows.dtype)
    return images.reshape(*lead, size, size)


def gasf(
    X: Series,
    image_size: Size = 1.0,
    sample_range: SampleRange = (-1, 1),
    overlapping: bool = False,
) -> torch.Tensor:
    """Gramian angular summation field: cos(phi_i + phi_j) of the PAA'd, rescaled series.

    Parameters
    ----------
    X : array or tensor, shape (N, L) or (N, C, L)
        Finite values; NaN or inf raises ValueError naming the sample (and channel).
    image_size : int or float
        S: an int in [1, L], or a float in (0, 1] giving ceil(image_size * L).
    sample_range : tuple (min, max) or None
        Each sample is min-max scaled to this range (-1 <= min < max <= 1) after PAA. None:
        no scaling, and every PAA value must already lie in [-1, 1].
    overlapping : bool
        PAA windows as in `paa`.

    Returns
    -------
    torch.Tensor, shape (N, S, S) or (N, C, S, S)
        Symmetric images; x = cos(phi), phi in [0, pi]. A constant sample gives all ones for
        sample_range (-1, 1) (sklearn maps a zero range to the range minimum).

    References
    ----------
    pyts ``GramianAngularField(method='summation')``; Z. Wang and T. Oates, IJCAI 2015.

    Examples
    --------
    >>> gasf([[0.0, 1.0, 4.0]])  # scaled to cos = [-1, -1/2, 1]
    tensor([[[ 1.0000,  0.5000, -1.0000],
             [ 0.5000, -0.5000, -0.5000],
             [-1.0000, -0.5000,  1.0000]]], dtype=torch.float64)
    """
    return _gaf(X, image_size, sample_range, overlapping, "summation")


def gadf(
    X: Series,
    image_size: Size = 1.0,
    sample_range: SampleRange = (-1, 1),
    overlapping: bool = False,
) -> torch.Tensor:
    """Gramian angular difference field: sin(phi_i - phi_j), i.e. sin_i cos_j - cos_i sin_j.

    Parameters and shapes are those of `gasf`. Images are antisymmetric; note the sign:
    pyts' convention, the transpose of sin(asin(x_i) - asin(x_j)) snippets.

    References
    ----------
    pyts ``GramianAngularField(method='difference')``; Z. Wang and T. Oates, IJCAI 2015.

    Examples
    --------
    >>> gadf([[0.0, 1.0, 4.0]])[0, 0, 1].item()  # sin(phi_0 - phi_1) = sin(pi - 2 pi / 3)
    0.8660254037844386
    """
    return _gaf(X, image_size, sample_range, overlapping, "difference")


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
    rows, lead = _as_series(X)
    size = _size(image_size, rows.shape[1])
    _check_mtf_params(n_bins, strategy)
    images = _mtf_rows(rows, lead, size, int(n_bins), strategy, overlapping)
    return images.reshape(*lead, size, size)


def qgaf(
    X: Series,
    image_size: Size = 1.0,
    sample_range: SampleRange = None,
    method: Method = "summation",
    overlapping: bool = False,
) -> torch.Tensor:
    """Classical (exactly simulated) quantum GAF: cos(2(x_i + x_j)) or cos(2(x_i - x_j)).

    x are the PAA'd values, raw (sample_range None; any real value is allowed, as the
    method needs no normalisation) or min-max scaled to sample_range. Both methods give
    symmetric images. This is the 'xu' definition of qts2d's ``QGAF``.

    Parameters
    ----------
    X : array or tensor, shape (N, L) or (N, C, L)
    image_size, overlapping
        As in `gasf`.
    sample_range : tuple (min, max) or None
    method : {'summation', 'difference'}

    Returns
    -------
    torch.Tensor, shape (N, S, S) or (N, C, S, S)

    References
    ----------
    Xu et al., "Quantum Gramian Angular Field", Finance Research Letters 67 (2024) 105840,
    arXiv:2310.07427.

    Examples
    --------
    >>> qgaf([[0.0, math.pi / 8]], method="difference")
    tensor([[[1.0000, 0.7071],
             [0.7071, 1.0000]]], dtype=torch.float64)
    """
    rows, lead = _as_series(X)
    size = _size(image_size, rows.shape[1])
    _check_sample_range(sample_range)
    if method not in ("summation", "difference"):
        raise ValueError(f"'method' must be 'summation' or 'difference' (got {method!r})")
    values = _paa_rows(rows, size, overlapping).double()
    if sample_range is not None:
        values = _min_max(values, sample_range)
    cos, sin = torch.cos(2 * values), torch.sin(2 * values)
    sign = -1.0 if method == "summation" else 1.0
    return _outer(cos, cos, sin, sin, sign, rows.dtype).reshape(*lead, size, size)


def n_image_channels(n_channels: int, layout: Layout) -> int:
    """Image channels `encode` makes from ``n_channels`` series channels.

    Examples
    --------
    >>> n_image_channels(3, "gasf"), n_image_channels(3, "compound")
    (3, 9)
    """
    if isinstance(n_channels, bool) or not isinstance(n_channels, _INTS) or n_channels < 1:
        raise ValueError(f"'n_channels' must be a positive integer (got {n_channels!r})")
    if layout not in ("gasf", "compound"):
        raise ValueError(f"'layout' must be 'gasf' or 'compound' (got {layout!r})")
    return int(n_channels) * (1 if layout == "gasf" else 3)


def encode(
    X: Series,
    layout: Layout = "gasf",
    image_size: Size = 64,
    sample_range: SampleRange = (-1, 1),
    n_bins: int = 8,
    strategy: Strategy = "quantile",
    overlapping: bool = False,
) -> torch.Tensor:
    """Multichannel windows to multichannel images.

    Parameters
    ----------
    X : array or tensor, shape (N, C, L)
        E.g. 3-axis accelerometer windows (pass ``X[:, None]`` for a single channel).
    layout : {'gasf', 'compound'}
        'gasf': one GASF per channel -> (N, C, S, S), the lab's default (3x64x64 for a 3-axis
        window). 'compound': Wang & Oates' GASF, GADF and MTF as channels -> (N, 3C, S, S),
        ordered [gasf of every channel, gadf of every channel, mtf of every channel].
    image_size, sample_range, overlapping
        As in `gasf`.
    n_bins, strategy
        As in `mtf` (compound layout only).

    Returns
    -------
    torch.Tensor, shape (N, n_image_channels(C, layout), S, S)

    References
    ----------
    Z. Wang and T. Oates, IJCAI 2015 (GASF-GADF-MTF compound images).

    Examples
    --------
    >>> encode(torch.randn(2, 3, 100), layout="compound", image_size=16).shape
    torch.Size([2, 9, 16, 16])
    """
    rows, lead = _as_series(X)
    if len(lead) != 2:
        raise ValueError(
            "encode expects X of shape (n_samples, n_channels, n_timestamps) "
            f"(got {len(lead) + 1}-D); pass X[:, None, :] for single-channel series"
        )
    n_samples, n_channels = lead
    n_image_channels(n_channels, layout)
    size = _size(image_size, rows.shape[1])
    _check_sample_range(sample_range)
    if layout == "compound":
        _check_mtf_params(n_bins, strategy)
    cos, sin = (t.view(*lead, size) for t in _angles(rows, size, sample_range, overlapping))
    if layout == "gasf":
        return _outer(cos, cos, sin, sin, -1.0, rows.dtype)
    shape = (n_samples, 3 * n_channels, size, size)
    images = torch.empty(shape, dtype=rows.dtype, device=rows.device)  # filled in place
    _outer(cos, cos, sin, sin, -1.0, rows.dtype, out=images[:, :n_channels])
    _outer(sin, cos, cos, sin, -1.0, rows.dtype, out=images[:, n_channels : 2 * n_channels])
    markov = _mtf_rows(rows, lead, size, int(n_bins), strategy, overlapping)
    images[:, 2 * n_channels :] = markov.view(*lead, size, size)
    return images
