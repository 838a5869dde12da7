"""Subject-disjoint train/val/test splits, validation held out of a fixed split, standardisation.

Windows of one subject never reach two of train, val and test: on GENEActiv, same-subject
windows in train and test inflate accuracy (reference §4.3). An archive's own train/test split
(UCR, UEA) is kept as shipped; `hold_out` draws a validation set from its train part only.
Statistics for standardisation come from the train set only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from gafkd.config import ConfigError
from gafkd.data.signalset import SignalSet


@dataclass(frozen=True)
class Split:
    """Train / validation / test sets with disjoint subjects.

    ``channel_mean`` and ``channel_std`` are empty until :func:`standardize` fills them with
    the per-channel statistics of ``train`` (save them with a run to standardise new data).
    """

    train: SignalSet
    val: SignalSet | None
    test: SignalSet
    channel_mean: tuple[float, ...] = ()
    channel_std: tuple[float, ...] = ()


SubjectId = int | str


def _check_ids(role: str, ids: Sequence[SubjectId], known: list[SubjectId]) -> list[SubjectId]:
    """Validate an explicit subject list against the dataset's subject ids."""
    if isinstance(ids, str) or not isinstance(ids, Sequence):
        raise ConfigError(f"{role}_subjects must be a list of subject ids, got {ids!r}")
    if not ids:
        raise ConfigError(f"{role}_subjects is empty; give at least one subject id or None")
    unknown = [s for s in ids if s not in set(known)]
    if unknown:
        raise ConfigError(
            f"{role}_subjects holds ids not in the dataset: {unknown}; known subjects: {known}"
        )
    return list(ids)


def split_by_subject(
    dataset: SignalSet,
    test_subjects: Sequence[SubjectId] | None = None,
    val_subjects: Sequence[SubjectId] | None = None,
    test_fraction: float = 0.2,
    val_fraction: float = 0.0,
    seed: int = 0,
) -> Split:
    """Split windows so that no subject appears in two of train, val and test.

    Explicit subject lists win. Otherwise subjects are drawn in the order
    ``np.random.default_rng(seed).permutation`` puts the S sorted unique ids (ids already
    given explicitly skipped): ``max(1, round(test_fraction * S))`` for test, then
    ``round(val_fraction * S)`` (at least 1 when ``val_fraction > 0``) for val. The rest
    train. ``val`` is None when no validation subject is chosen.

    Examples
    --------
    >>> data = SignalSet(np.zeros((4, 1, 2), np.float32), np.array([0, 1, 0, 1]),
    ...                  np.array([1, 1, 2, 3]), class_names=("a", "b"))
    >>> split = split_by_subject(data, test_subjects=[1])
    >>> split.train.subjects.tolist(), split.test.subjects.tolist(), split.val
    ([2, 3], [1, 1], None)
    """
    if not 0.0 < test_fraction < 1.0 or not 0.0 <= val_fraction < 1.0:
        raise ConfigError(
            "need 0 < test_fraction < 1 and 0 <= val_fraction < 1, got "
            f"test_fraction={test_fraction}, val_fraction={val_fraction}"
        )
    known: list[SubjectId] = np.unique(dataset.subjects).tolist()
    n_subjects = len(known)
    test = None if test_subjects is None else _check_ids("test", test_subjects, known)
    val = None if val_subjects is None else _check_ids("val", val_subjects, known)
    if test is not None and val is not None and set(test) & set(val):
        raise ConfigError(f"subjects {list(set(test) & set(val))} are in both test and val")
    taken = set(test or []) | set(val or [])
    order = np.random.default_rng(seed).permutation(n_subjects)
    pool = [known[i] for i in order if known[i] not in taken]
    if test is None:
        n_test = max(1, round(test_fraction * n_subjects))
        test, pool = pool[:n_test], pool[n_test:]
    if val is None:
        n_val = max(1, round(val_fraction * n_subjects)) if val_fraction > 0 else 0
        val, pool = pool[:n_val], pool[n_val:]
    train = [s for s in known if s not in set(test) | set(val)]
    if not train or not test:
        raise ConfigError(
            f"no subject left for {'training' if not train else 'test'}: {n_subjects} subjects, "
            f"test={test}, val={val}; lower test_fraction/val_fraction or list fewer subjects"
        )
    in_val = np.isin(dataset.subjects, val)
    return Split(
        train=dataset.subset(np.isin(dataset.subjects, train)),
        val=dataset.subset(in_val) if val else None,
        test=dataset.subset(np.isin(dataset.subjects, test)),
    )


def hold_out(split: Split, val_fraction: float, seed: int = 0) -> Split:
    """Move ``max(1, round(val_fraction * N))`` of the N train windows to val (none for 0).

    The windows are drawn by ``np.random.default_rng(seed).permutation``; test is untouched,
    as an archive's own split must be.

    Examples
    --------
    >>> train = SignalSet(np.zeros((4, 1, 2), np.float32), np.array([0, 1, 0, 1]),
    ...                   np.arange(4), class_names=("a", "b"))
    >>> split = hold_out(Split(train=train, val=None, test=train), 0.25)
    >>> len(split.train), len(split.val or ()), len(split.test)
    (3, 1, 4)
    """
    if split.val is not None:
        raise ConfigError("the split already has a validation set; hold out once")
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"need 0 <= val_fraction < 1, got val_fraction={val_fraction}")
    if val_fraction == 0:
        return split
    n = len(split.train)
    n_val = max(1, round(val_fraction * n))
    if n_val >= n:
        raise ConfigError(f"val_fraction={val_fraction} leaves no training window of {n}; lower it")
    order = np.random.default_rng(seed).permutation(n)
    return replace(
        split,
        train=split.train.subset(np.sort(order[n_val:])),
        val=split.train.subset(np.sort(order[:n_val])),
    )


def standardize(split: Split) -> Split:
    """Standardise every set per channel with the mean and std of the train set only.

    Statistics are accumulated in float64 over windows and time; a channel with zero std gets
    std 1. The returned Split carries ``channel_mean`` and ``channel_std``.

    Examples
    --------
    >>> train = SignalSet(np.array([[[1, 3]], [[5, 7]]], np.float32), np.array([0, 0]),
    ...                   np.array([1, 2]), class_names=("a",))
    >>> split = standardize(Split(train=train, val=None, test=train))
    >>> split.channel_mean, round(split.channel_std[0] ** 2, 6)
    ((4.0,), 5.0)
    """
    if split.channel_mean:
        raise ConfigError("split is already standardised; call standardize once per split")
    signals = split.train.signals
    mean = np.empty(signals.shape[1])
    std = np.empty(signals.shape[1])
    for channel in range(signals.shape[1]):
        values = signals[:, channel].astype(np.float64)
        mean[channel] = values.mean()
        std[channel] = np.sqrt(np.mean((values - mean[channel]) ** 2))
    std[std == 0] = 1.0

    shift, scale = mean.astype(np.float32)[:, None], std.astype(np.float32)[:, None]

    def apply(data: SignalSet) -> SignalSet:
        return replace(data, signals=np.ascontiguousarray((data.signals - shift) / scale))

    return Split(
        train=apply(split.train),
        val=apply(split.val) if split.val is not None else None,
        test=apply(split.test),
        channel_mean=tuple(float(m) for m in mean),
        channel_std=tuple(float(s) for s in std),
    )
