"""The lab's GENEActiv windows: one ``.mat`` file per window, key ``xw``.

Layout (reference §4.3)::

    <root>/Window-size-<W>/ID-<subject>_CLASS-<k>_Window-<n>.mat

Each file holds one 3-axis wrist-accelerometer window ``xw`` of shape (W, 3) or (3, W).
14-class mode keeps the class numbers of the file names; 7-class mode groups them with a
TOML mapping file (default: ``gafkd/data/geneactiv_7class.toml``, a placeholder the lab
must replace). Format and editing: ``docs/data.md``.
"""

from __future__ import annotations

import importlib
import importlib.resources
import importlib.util
import os
import re
import tomllib
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import scipy.io

from gafkd.config import ConfigError
from gafkd.data.signalset import SignalSet

FILE_NAME = re.compile(r"ID-(\d+)_CLASS-(\d+)_Window-(\d+)\.mat")
DEFAULT_MAPPING = "geneactiv_7class.toml"


def load_geneactiv(
    root: str | Path,
    window: int,
    classes: Literal[14, 7],
    mapping: str | Path | None = None,
) -> SignalSet:
    """Load every window of ``<root>/Window-size-<window>/`` as a SignalSet.

    Files are sorted by (subject, class, window number). ``classes=14``: the K distinct class
    numbers found (K must be 14) become labels 0..13 in increasing order, and class names
    are the numbers without padding ("1".."14", or "0".."13"). ``classes=7``: labels come from
    the groups of the ``mapping`` TOML file (default: the shipped placeholder), in file
    order. Subjects are the ``ID-`` numbers (int64). Any bad input raises one ConfigError
    naming the file; nothing partial is returned.

    Returns signals of shape (n_files, 3, window), channels ("x", "y", "z").
    """
    if classes not in (14, 7):
        raise ConfigError(f"classes must be 14 or 7, got {classes!r}")
    if not isinstance(window, int) or window < 1:
        raise ConfigError(f"window must be a positive int (the W of Window-size-W), got {window!r}")
    folder = _window_folder(Path(root), window)
    files, keys = _list_windows(folder)
    numbers = sorted({key[1] for key in keys})
    if classes == 14:
        if len(numbers) != 14:
            raise ConfigError(
                f"{folder}: 14-class mode needs 14 distinct CLASS numbers, found {len(numbers)}: "
                f"{numbers}; check the folder or use classes=7 with a mapping file"
            )
        class_names = tuple(str(n) for n in numbers)
        label_of = {n: k for k, n in enumerate(numbers)}
    else:
        mapping_name, groups = _read_mapping(mapping)
        class_names = tuple(groups)
        label_of = {n: k for k, members in enumerate(groups.values()) for n in members}
        for file, (_, number, _) in zip(files, keys, strict=True):
            if number not in label_of:
                raise ConfigError(
                    f"{file}: class {number} is in no group of the mapping {mapping_name} "
                    f"(it maps {sorted(label_of)}); add it to a group (docs/data.md)"
                )
    signals = _read_windows(files, window)
    return SignalSet(
        signals=signals,
        labels=np.array([label_of[key[1]] for key in keys], dtype=np.int64),
        subjects=np.array([key[0] for key in keys], dtype=np.int64),
        class_names=class_names,
        channel_names=("x", "y", "z"),
        name=f"geneactiv-{classes}cls-{window}w",
    )


def _window_folder(root: Path, window: int) -> Path:
    if not root.is_dir():
        raise ConfigError(
            f"GENEActiv root {root} is not a folder; pass the folder that holds Window-size-<W>/"
        )
    folder = root / f"Window-size-{window}"
    if not folder.is_dir():
        found = sorted(p.name for p in root.glob("Window-size-*") if p.is_dir())
        raise ConfigError(
            f"{folder} does not exist; window={window} needs it. Window-size folders in {root}: "
            f"{found or 'none'}"
        )
    return folder


def _list_windows(folder: Path) -> tuple[list[Path], list[tuple[int, int, int]]]:
    """The .mat files of ``folder`` and their (subject, class, window) numbers, sorted."""
    found: list[tuple[tuple[int, int, int], Path]] = []
    seen: dict[tuple[int, int, int], Path] = {}
    for path in folder.iterdir():
        if path.suffix.lower() != ".mat":
            continue
        match = FILE_NAME.fullmatch(path.name)
        if match is None:
            raise ConfigError(
                f"{path}: file name does not match ID-<subject>_CLASS-<k>_Window-<n>.mat; "
                "rename it or move it out of the folder"
            )
        key = (int(match[1]), int(match[2]), int(match[3]))
        if key in seen:
            raise ConfigError(
                f"{path} and {seen[key].name} are the same window (subject, class, window "
                f"{key}) written with different zero padding; keep one"
            )
        seen[key] = path
        found.append((key, path))
    if not found:
        raise ConfigError(f"{folder} holds no .mat files; expected ID-<s>_CLASS-<k>_Window-<n>.mat")
    found.sort()
    return [path for _, path in found], [key for key, _ in found]


def _read_mapping(mapping: str | Path | None) -> tuple[str, dict[str, list[int]]]:
    """Group name -> original class numbers, in file order, from a mapping TOML file."""
    if mapping is None:
        name = f"gafkd/data/{DEFAULT_MAPPING} (default)"
        text = importlib.resources.files("gafkd.data").joinpath(DEFAULT_MAPPING).read_text("utf-8")
    else:
        name = str(mapping)
        try:
            text = Path(mapping).read_text("utf-8")
        except OSError as error:
            raise ConfigError(f"mapping file {mapping} cannot be read: {error}") from None
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"mapping file {name} is not valid TOML: {error}") from None
    unknown = sorted(set(table) - {"classes", "placeholder"})
    groups = table.get("classes")
    if unknown or not isinstance(groups, dict) or not groups:
        raise ConfigError(
            f"mapping file {name} needs one [classes] table of group = [class numbers] "
            f"(and optionally placeholder = true); found keys {sorted(table)}"
        )
    owner: dict[int, str] = {}
    for group, members in groups.items():
        if not isinstance(members, list) or not members:
            raise ConfigError(f"mapping file {name}: group {group!r} must be a non-empty list")
        for number in members:
            if not isinstance(number, int) or isinstance(number, bool):
                raise ConfigError(f"mapping file {name}: group {group!r} holds {number!r}, not int")
            if number in owner:
                raise ConfigError(
                    f"mapping file {name}: class {number} is in groups {owner[number]!r} and "
                    f"{group!r}; put it in one"
                )
            owner[number] = group
    if len(groups) != 7:
        raise ConfigError(f"mapping file {name} has {len(groups)} groups; classes=7 needs 7")
    if table.get("placeholder") is True:
        warnings.warn(
            f"7-class mapping {name} is a placeholder grouping, not the lab's; write your own "
            "mapping file (docs/data.md) and pass it as mapping",
            UserWarning,
            stacklevel=3,
        )
    return name, groups


def _read_windows(files: list[Path], window: int) -> npt.NDArray[np.float32]:
    """Read all files into one (n_files, 3, window) array; the first bad file raises."""
    signals = np.empty((len(files), 3, window), dtype=np.float32)

    def read(index: int) -> None:
        signals[index] = _read_window(files[index], window)

    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        try:
            for _ in pool.map(read, range(len(files))):
                pass
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
    return signals


def _read_window(path: Path, window: int) -> npt.NDArray[np.float32]:
    """One window of shape (3, window) from a .mat file's ``xw``."""
    try:
        content: dict[str, Any] = scipy.io.loadmat(path, variable_names=("xw",))
    except NotImplementedError:  # MATLAB v7.3 files are HDF5
        content = _read_hdf5_mat(path)
    except Exception as error:  # a damaged file fails in scipy or zlib in many ways
        problem = " ".join(str(error).split())[:120] or type(error).__name__
        raise ConfigError(
            f"{path}: cannot be read as a MATLAB .mat file ({problem}); copy or export it "
            "again, or move it out of the folder"
        ) from None
    if "xw" not in content:
        if "__header__" in content:  # scipy: list the variables the file does hold
            try:
                names = [entry[0] for entry in scipy.io.whosmat(path)]
            except Exception:  # damaged past its header
                names = sorted(key for key in content if not key.startswith("__"))
        else:
            names = sorted(content)
        raise ConfigError(f"{path}: has no variable 'xw'; it holds {names}")
    xw = np.asarray(content["xw"])
    if xw.dtype.kind not in "fiu":
        raise ConfigError(f"{path}: xw must be numeric, got {xw.dtype}")
    if xw.shape == (window, 3):
        xw = xw.T
    elif xw.shape != (3, window):
        if xw.ndim == 2 and 3 in xw.shape:
            length = xw.shape[1] if xw.shape[0] == 3 else xw.shape[0]
            raise ConfigError(
                f"{path}: window of length {length}, expected {window} (folder "
                f"Window-size-{window}); move the file to its Window-size folder"
            )
        raise ConfigError(
            f"{path}: xw has shape {xw.shape}, expected ({window}, 3) or (3, {window})"
        )
    if not np.isfinite(xw).all():
        raise ConfigError(f"{path}: xw holds NaN or inf; drop or repair this window")
    return xw.astype(np.float32)


def _read_hdf5_mat(path: Path) -> dict[str, Any]:
    """The variables of a MATLAB v7.3 (HDF5) file, read with h5py (arrays come transposed)."""
    if importlib.util.find_spec("h5py") is None:
        raise ConfigError(
            f"{path} is a MATLAB v7.3 (HDF5) file, which scipy cannot read: pip install h5py, "
            "or re-save the windows with save(..., '-v7') in MATLAB"
        )
    h5py = importlib.import_module("h5py")
    try:
        with h5py.File(path, "r") as file:
            return {key: np.asarray(file[key]) if key == "xw" else None for key in file}
    except OSError as error:
        raise ConfigError(f"{path}: cannot be read as a MATLAB v7.3 file ({error})") from None
