"""The dataset type: labelled windows of a multichannel signal, checked when made.

Every source (:mod:`gafkd.data.sources`, :mod:`gafkd.data.geneactiv`) returns a :class:`SignalSet`,
and the subject splits (:mod:`gafkd.data.split`) cut one; it imports none of them, so they can all
import it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from gafkd.config import ConfigError


@dataclass(frozen=True)
class SignalSet:
    """Labelled windows of a multichannel signal.

    Attributes
    ----------
    signals : ndarray, shape (N, C, L), float32, C-contiguous, finite
    labels : ndarray, shape (N,), int64 in ``[0, len(class_names))``
    subjects : ndarray, shape (N,), int64 or str subject ids
    class_names : names of the classes, label ``k`` is ``class_names[k]``
    channel_names : one name per channel, or empty when unknown
    name : short dataset name, e.g. ``"geneactiv-14cls-500w"`` or ``"watch"``

    Examples
    --------
    >>> data = SignalSet(np.zeros((2, 3, 4), np.float32), np.array([0, 1]), np.array([7, 8]),
    ...                  class_names=("rest", "walk"))
    >>> data.n_classes, data.n_channels, data.length
    (2, 3, 4)
    """

    signals: npt.NDArray[np.float32]
    labels: npt.NDArray[np.int64]
    subjects: npt.NDArray[np.int64] | npt.NDArray[np.str_]
    class_names: tuple[str, ...]
    channel_names: tuple[str, ...] = ()
    name: str = ""

    def __post_init__(self) -> None:
        signals, labels, subjects = self.signals, self.labels, self.subjects
        where = f"dataset {self.name!r}" if self.name else "dataset"
        if not isinstance(signals, np.ndarray) or signals.ndim != 3:
            shape = getattr(signals, "shape", type(signals).__name__)
            raise ConfigError(f"{where}: signals must be an (N, C, L) array, got {shape}")
        if signals.dtype != np.float32 or not signals.flags.c_contiguous:
            raise ConfigError(
                f"{where}: signals must be C-contiguous float32, got {signals.dtype} "
                "(use np.ascontiguousarray(x, dtype=np.float32))"
            )
        n = len(signals)
        if not isinstance(labels, np.ndarray) or labels.dtype != np.int64 or labels.shape != (n,):
            shape = getattr(labels, "shape", None)
            raise ConfigError(f"{where}: labels must be int64 of shape ({n},), got {shape}")
        if not isinstance(subjects, np.ndarray) or subjects.shape != (n,):
            shape = getattr(subjects, "shape", None)
            raise ConfigError(f"{where}: subjects must have shape ({n},), got {shape}")
        if subjects.dtype != np.int64 and subjects.dtype.kind != "U":
            raise ConfigError(f"{where}: subjects must be int64 or str, got {subjects.dtype}")
        if not self.class_names or not all(isinstance(c, str) for c in self.class_names):
            raise ConfigError(f"{where}: class_names must be a non-empty tuple of str")
        if n and (labels.min() < 0 or labels.max() >= len(self.class_names)):
            raise ConfigError(
                f"{where}: labels must lie in [0, {len(self.class_names)}) (one per class name), "
                f"got [{labels.min()}, {labels.max()}]"
            )
        if self.channel_names and len(self.channel_names) != signals.shape[1]:
            raise ConfigError(
                f"{where}: {len(self.channel_names)} channel_names for {signals.shape[1]} channels"
            )
        if not np.isfinite(signals).all():
            bad = int(np.flatnonzero(~np.isfinite(signals).all(axis=(1, 2)))[0])
            raise ConfigError(f"{where}: signals hold NaN or inf (first at window {bad})")

    @property
    def n_classes(self) -> int:
        """Number of classes, ``len(class_names)``."""
        return len(self.class_names)

    @property
    def n_channels(self) -> int:
        """Number of channels C."""
        return int(self.signals.shape[1])

    @property
    def length(self) -> int:
        """Window length L in samples."""
        return int(self.signals.shape[2])

    def __len__(self) -> int:
        return len(self.signals)

    def subset(self, index: npt.ArrayLike) -> SignalSet:
        """Windows selected by an integer index array or a boolean mask of shape (N,)."""
        index = np.asarray(index)
        return replace(
            self,
            signals=np.ascontiguousarray(self.signals[index]),
            labels=self.labels[index],
            subjects=self.subjects[index],
        )

    def fingerprint(self) -> str:
        """Short stable hex digest of signals, labels, subjects, names and dataset name.

        Equal data give equal fingerprints across processes and machines of the same byte
        order; the trainer keys its cache of teacher logits on it.
        """
        digest = hashlib.sha256()
        digest.update(repr((self.signals.shape, self.name, self.class_names)).encode())
        digest.update(repr(self.channel_names).encode())
        digest.update(self.signals.tobytes())
        digest.update(self.labels.tobytes())
        if self.subjects.dtype.kind == "U":
            digest.update("\0".join(self.subjects.tolist()).encode())
        else:
            digest.update(self.subjects.tobytes())
        return digest.hexdigest()[:16]
