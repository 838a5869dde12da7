"""Time series to images: GASF, GADF, MTF and Q-GAF as batched torch functions.

Each function reproduces pyts 0.14.1 on a whole batch at once, on any device, without a Python
loop over samples. GAF: PAA -> per-sample min-max scaling -> cos = x, sin = sqrt(1 - x^2) ->
outer sum cos(phi_i + phi_j) (GASF) or difference sin(phi_i - phi_j) (GADF). `mtf` lives in
`gafkd.imaging.markov` and `paa` with the input checks in `gafkd.imaging.series`; `encode` stacks
them into compound images.

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

from typing import Literal

import numpy as np
import torch

from gafkd.imaging.markov import Strategy, check_mtf_params, mtf_rows
from gafkd.imaging.series import INT_TYPES, Series, Size, as_series, paa_rows, resolve_size

__all__ = ["Layout", "Method", "SampleRange", "encode", "gadf", "gasf", "n_image_channels", "qgaf"]

SampleRange = tuple[float, float] | None
Method = Literal["summation", "difference"]
Layout = Literal["gasf", "gadf", "mtf", "compound"]
LAYOUTS: tuple[Layout, ...] = ("gasf", "gadf", "mtf", "compound")


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
    reduced = paa_rows(rows, image_size, overlapping)
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


def _gaf(
    X: Series, image_size: Size, sample_range: SampleRange, overlapping: bool, method: Method
) -> torch.Tensor:
    rows, lead = as_series(X)
    size = resolve_size(image_size, rows.shape[1])
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
    >>> qgaf([[0.0, np.pi / 8]], method="difference")
    tensor([[[1.0000, 0.7071],
             [0.7071, 1.0000]]], dtype=torch.float64)
    """
    rows, lead = as_series(X)
    size = resolve_size(image_size, rows.shape[1])
    _check_sample_range(sample_range)
    if method not in ("summation", "difference"):
        raise ValueError(f"'method' must be 'summation' or 'difference' (got {method!r})")
    values = paa_rows(rows, size, overlapping).double()
    if sample_range is not None:
        values = _min_max(values, sample_range)
    cos, sin = torch.cos(2 * values), torch.sin(2 * values)
    sign = -1.0 if method == "summation" else 1.0
    return _outer(cos, cos, sin, sin, sign, rows.dtype).reshape(*lead, size, size)


def n_image_channels(n_channels: int, layout: Layout) -> int:
    """Image channels `encode` makes from ``n_channels`` series channels.

    Examples
    --------
    >>> n_image_channels(3, "gasf"), n_image_channels(3, "mtf"), n_image_channels(3, "compound")
    (3, 3, 9)
    """
    if isinstance(n_channels, bool) or not isinstance(n_channels, INT_TYPES) or n_channels < 1:
        raise ValueError(f"'n_channels' must be a positive integer (got {n_channels!r})")
    if layout not in LAYOUTS:
        raise ValueError(f"'layout' must be 'gasf', 'gadf', 'mtf' or 'compound' (got {layout!r})")
    return int(n_channels) * (3 if layout == "compound" else 1)


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
    layout : {'gasf', 'gadf', 'mtf', 'compound'}
        'gasf': one GASF per channel -> (N, C, S, S), the lab's default (3x64x64 for a 3-axis
        window); 'gadf' and 'mtf' likewise one GADF or one MTF per channel (Wang & Oates'
        single-image columns). 'compound': Wang & Oates' GASF, GADF and MTF as channels ->
        (N, 3C, S, S), ordered [gasf of every channel, gadf of every channel, mtf of every
        channel].
    image_size, sample_range, overlapping
        As in `gasf`.
    n_bins, strategy
        As in `mtf` ('mtf' and 'compound' layouts only).

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
    rows, lead = as_series(X)
    if len(lead) != 2:
        raise ValueError(
            "encode expects X of shape (n_samples, n_channels, n_timestamps) "
            f"(got {len(lead) + 1}-D); pass X[:, None, :] for single-channel series"
        )
    n_samples, n_channels = lead
    n_image_channels(n_channels, layout)
    size = resolve_size(image_size, rows.shape[1])
    _check_sample_range(sample_range)
    if layout in ("mtf", "compound"):
        check_mtf_params(n_bins, strategy)
    if layout == "mtf":
        markov = mtf_rows(rows, lead, size, int(n_bins), strategy, overlapping)
        return markov.view(*lead, size, size)
    cos, sin = (t.view(*lead, size) for t in _angles(rows, size, sample_range, overlapping))
    if layout == "gasf":
        return _outer(cos, cos, sin, sin, -1.0, rows.dtype)
    if layout == "gadf":
        return _outer(sin, cos, cos, sin, -1.0, rows.dtype)
    shape = (n_samples, 3 * n_channels, size, size)
    images = torch.empty(shape, dtype=rows.dtype, device=rows.device)  # filled in place
    _outer(cos, cos, sin, sin, -1.0, rows.dtype, out=images[:, :n_channels])
    _outer(sin, cos, cos, sin, -1.0, rows.dtype, out=images[:, n_channels : 2 * n_channels])
    markov = mtf_rows(rows, lead, size, int(n_bins), strategy, overlapping)
    images[:, 2 * n_channels :] = markov.view(*lead, size, size)
    return images
