"""Cutting a long recording into windows: shared by the sources that read recordings."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def sliding_windows(
    recording: npt.NDArray[np.floating], window: int, stride: int
) -> npt.NDArray[np.floating]:
    """Cut a (C, T) recording into windows of ``window`` samples, ``stride`` apart.

    Returns an array of shape (n_windows, C, window), n_windows = (T - window) // stride + 1,
    or (0, C, window) when T < window. The result is a copy with the input's dtype.

    Examples
    --------
    >>> sliding_windows(np.arange(10.0).reshape(1, 10), window=4, stride=3)[:, 0]
    array([[0., 1., 2., 3.],
           [3., 4., 5., 6.],
           [6., 7., 8., 9.]])
    """
    recording = np.asarray(recording)
    if recording.ndim != 2:
        raise ValueError(f"recording must be (C, T), got shape {recording.shape}")
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be >= 1, got window={window}, stride={stride}")
    if recording.shape[1] < window:
        return np.empty((0, recording.shape[0], window), recording.dtype)
    view = np.lib.stride_tricks.sliding_window_view(recording, window, axis=1)[:, ::stride]
    return np.ascontiguousarray(view.transpose(1, 0, 2))
