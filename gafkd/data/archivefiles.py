"""The UCR/UEA archives' file formats, parsed: ``.ts``, ``.tsv``, ``.arff`` and the older ``.txt``.

`parse_archive_file` reads one ``<Name>_TRAIN`` or ``_TEST`` file into an `ArchiveFile`: per
series a (C, L) float64 array, NaN where a value is missing or the series is shorter, and its
label as the archive writes it. A damaged file is one `ConfigError` naming the file (and the
line). What the values mean (padding, gaps, lengths, classes) is `gafkd.data.archives`' business.
Formats: ``docs/data.md``, 'UCR and UEA archives'.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from gafkd.config import ConfigError

__all__ = ["ArchiveFile", "is_number", "parse_archive_file"]

_SEPARATORS = {".tsv": re.compile(r"\t"), ".txt": re.compile(r"[\s,]+")}


@dataclass(frozen=True)
class ArchiveFile:
    """One parsed file: per series a (C, L_i) float64 array (NaN where missing), and its label."""

    path: Path
    series: list[npt.NDArray[np.float64]]
    labels: list[str]


def parse_archive_file(path: Path) -> ArchiveFile:
    """Parse one archive file by its suffix: ``.arff``, ``.ts``, ``.tsv`` or ``.txt``."""
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
        bad = next(f for f in fields if not is_number(f))
        raise _damaged(path, line, f"{bad.strip()[:40]!r} is not a number") from None


def is_number(text: str) -> bool:
    """Whether an archive field is a number or the missing-value mark ``?``."""
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


def _parse_table(path: Path, text: str, separator: re.Pattern[str]) -> ArchiveFile:
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
        if not is_number(fields[0]) and path.suffix == ".txt":
            raise _damaged(path, number, f"{fields[0][:40]!r} is not a number")
        labels.append(_label(fields[0]))
        series.append(_numbers(path, number, fields[1:])[None, :])
    if not series:
        raise ConfigError(f"{path}: holds no series; copy the file again")
    return ArchiveFile(path, series, labels)


def _parse_ts(path: Path, text: str) -> ArchiveFile:
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
    return ArchiveFile(path, series, labels)


def _int_header(path: Path, header: dict[str, list[str]], key: str) -> int:
    words = header.get(key)
    if words is None:
        return 0
    if len(words) != 1 or not words[0].isdigit() or int(words[0]) < 1:
        raise ConfigError(f"{path}: {key} {' '.join(words)!r} is not a positive whole number")
    return int(words[0])


def _parse_arff(path: Path) -> ArchiveFile:
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
    return ArchiveFile(path, series, labels)
