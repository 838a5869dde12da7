"""PAMAP2 Protocol recordings: one ``subject<id>.dat`` file per subject, cut into windows.

Format (Reiss & Stricker, PAMAP2 Physical Activity Monitoring, UCI; the dataset's readme): 54
space-separated columns per row at 100 Hz: timestamp (s), activityID, heart rate (bpm, ~9 Hz, so
mostly ``NaN``), then the hand, chest and ankle IMUs of 17 columns each: temperature (°C), 3-D
acceleration ±16 g, 3-D acceleration ±6 g, 3-D gyroscope, 3-D magnetometer, 4 orientation values
(invalid in this collection, never read). ``NaN`` marks a reading lost to a wireless dropout;
activity 0 marks the transients between activities. Rules and defaults: ``docs/data.md``.
"""

from __future__ import annotations

import io
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from gafkd.config import ConfigError
from gafkd.data.signalset import SignalSet
from gafkd.data.window import sliding_windows

RATE = 100  # Hz, every Protocol file
N_COLUMNS = 54
ACTIVITIES = {  # the 12 protocol activities, in label order, as the readme names them
    1: "lying",
    2: "sitting",
    3: "standing",
    4: "walking",
    5: "running",
    6: "cycling",
    7: "Nordic walking",
    12: "ascending stairs",
    13: "descending stairs",
    16: "vacuum cleaning",
    17: "ironing",
    24: "rope jumping",
}
TRANSIENT = 0  # between activities: never a window
OPTIONAL = {9, 10, 11, 18, 19, 20}  # the Optional/ folder's activities: dropped, counted
IMUS = ("hand", "chest", "ankle")
SENSORS = {"temperature": ("",), "acc16": "xyz", "acc6": "xyz", "gyro": "xyz", "mag": "xyz"}
IMU_COLUMNS = 17  # the 13 above, then 4 orientation values
DEFAULT_CHANNELS = ("hand_acc16",)  # the wrist accelerometer, as the lab's GENEActiv windows
DEFAULT_MAX_GAP = 20  # samples at 100 Hz: the heart rate's gaps of ~10 are filled
FILE_NAME = re.compile(r"subject(\d+)\.dat")
FIX = "the file is damaged: download or copy it again"


def _columns() -> tuple[dict[str, int], dict[str, tuple[str, ...]], list[str]]:
    """Channel name -> column, group name -> its channels, and the name of every column."""
    names = ["timestamp", "activityID", "heart_rate"]
    groups: dict[str, tuple[str, ...]] = {}
    for imu in IMUS:
        for sensor, axes in SENSORS.items():
            group = tuple(f"{imu}_{sensor}_{axis}" if axis else f"{imu}_{sensor}" for axis in axes)
            groups[f"{imu}_{sensor}"] = group
            names.extend(group)
        names.extend(f"{imu}_orientation_{k}" for k in range(1, 5))
        groups[imu] = tuple(c for s in SENSORS for c in groups[f"{imu}_{s}"])
    channels = {name: column for column, name in enumerate(names) if "orientation" not in name}
    del channels["timestamp"], channels["activityID"]
    return channels, groups, names


CHANNELS, GROUPS, COLUMN_NAMES = _columns()


@dataclass(frozen=True)
class Counts:
    """What loading kept and dropped, summed over the files."""

    files: int = 0
    rows: int = 0
    transient_rows: int = 0  # activity 0
    other_rows: int = 0  # the optional activities
    time_breaks: int = 0  # places where the timestamps jump inside one activity
    filled_values: int = 0  # NaN values filled (gaps of at most max_gap samples)
    windows: int = 0
    dropped_windows: int = 0  # windows that still held NaN

    def summary(self) -> str:
        """One line for the run log."""
        return (
            f"{self.files} files, {self.rows} rows ({self.transient_rows} transient, "
            f"{self.other_rows} of optional activities dropped, {self.time_breaks} time breaks); "
            f"{self.filled_values} NaN values filled; {self.windows} windows, "
            f"{self.dropped_windows} dropped for a longer NaN gap"
        )


def load_pamap2(
    path: str | Path,
    window: int = 500,
    stride: int | None = None,
    channels: Sequence[str] = DEFAULT_CHANNELS,
    max_gap: int = DEFAULT_MAX_GAP,
    downsample: int = 1,
) -> SignalSet:
    """:func:`read_pamap2`, which see, with its counts printed as one ``note:`` line."""
    data, counts = read_pamap2(path, window, stride, channels, max_gap, downsample)
    print(f"note: pamap2 {path}: {counts.summary()}", file=sys.stderr, flush=True)
    return data


def read_pamap2(
    path: str | Path,
    window: int = 500,
    stride: int | None = None,
    channels: Sequence[str] = DEFAULT_CHANNELS,
    max_gap: int = DEFAULT_MAX_GAP,
    downsample: int = 1,
) -> tuple[SignalSet, Counts]:
    """Windows of the 12 protocol activities from every ``subject<id>.dat`` in ``path``.

    A segment is a run of rows of one activity in one file with timestamps 1/100 s apart.
    Within a segment each channel's runs of at most ``max_gap`` NaN samples are filled: inside,
    linearly between the neighbours; at either end, with the nearest value. Then every
    ``downsample``-th sample is kept and the segment is cut into windows of ``window`` samples,
    ``stride`` apart (default ``window // 2``); windows that still hold NaN are dropped. Labels
    0..11 follow :data:`ACTIVITIES`; subjects are the file names' ids (int64). ``channels``
    names channels, sensors (``hand_acc16``) or whole IMUs (``hand``), see :data:`GROUPS`.

    Returns signals of shape (n_windows, C, window) and the counts of what was dropped.
    """
    stride = window // 2 if stride is None else stride
    for key, value, least in [
        ("window", window, 1),
        ("stride", stride, 1),
        ("max_gap", max_gap, 0),
        ("downsample", downsample, 1),
    ]:
        if not isinstance(value, int) or value < least:
            raise ConfigError(f"pamap2: data.{key} must be >= {least}, got {value!r}")
    names = channel_names(channels)
    columns = [CHANNELS[name] for name in names]
    pieces: list[npt.NDArray[np.float32]] = []
    labels: list[npt.NDArray[np.int64]] = []
    subjects: list[npt.NDArray[np.int64]] = []
    counts = Counts()
    longest = 0
    for subject, file in list_files(Path(path)):
        rows = read_rows(file, columns)
        time, activity = rows[:, 0], rows[:, 1].astype(np.int64)
        steps = np.diff(time) * RATE
        breaks = (np.diff(activity) != 0) | (steps < 0.5) | (steps > 1.5)
        starts = np.concatenate([[0], np.flatnonzero(breaks) + 1])
        stops = np.concatenate([starts[1:], [len(rows)]])
        counts = _add(
            counts,
            files=1,
            rows=len(rows),
            transient_rows=int((activity == TRANSIENT).sum()),
            other_rows=int(np.isin(activity, list(OPTIONAL)).sum()),
            time_breaks=int((breaks & (np.diff(activity) == 0)).sum()),
        )
        for start, stop in zip(starts.tolist(), stops.tolist(), strict=True):
            if activity[start] not in ACTIVITIES:
                continue
            segment, filled = fill_gaps(rows[start:stop, 2:], max_gap)
            segment = segment[::downsample]
            longest = max(longest, len(segment))
            cut = sliding_windows(segment.T.astype(np.float32), window, stride)
            keep = ~np.isnan(cut).any(axis=(1, 2))
            counts = _add(
                counts,
                filled_values=filled,
                windows=int(keep.sum()),
                dropped_windows=int((~keep).sum()),
            )
            pieces.append(cut[keep])
            labels.append(np.full(int(keep.sum()), list(ACTIVITIES).index(activity[start])))
            subjects.append(np.full(int(keep.sum()), subject))
    if not counts.windows:
        raise ConfigError(
            f"pamap2 {path}: no window of {window} samples fits (longest activity segment: "
            f"{longest} samples, {counts.dropped_windows} windows dropped for NaN); lower "
            "data.window or raise data.max_gap"
        )
    rate = f"-{RATE / downsample:.3g}Hz" if downsample > 1 else ""
    data = SignalSet(
        signals=np.ascontiguousarray(np.concatenate(pieces)),
        labels=np.concatenate(labels).astype(np.int64),
        subjects=np.concatenate(subjects).astype(np.int64),
        class_names=tuple(ACTIVITIES.values()),
        channel_names=names,
        name=f"pamap2-{len(names)}ch-{window}w{rate}",
    )
    return data, counts


def _add(counts: Counts, **more: int) -> Counts:
    return Counts(**{k: v + more.get(k, 0) for k, v in vars(counts).items()})


def channel_names(channels: Sequence[str]) -> tuple[str, ...]:
    """Channel, sensor and IMU names expanded to channels in the order given.

    >>> channel_names(["heart_rate", "ankle_gyro"])
    ('heart_rate', 'ankle_gyro_x', 'ankle_gyro_y', 'ankle_gyro_z')
    """
    if isinstance(channels, str) or not channels:
        raise ConfigError(
            f"pamap2: channels is empty or not a list ({channels!r}); e.g. ['hand_acc16']"
        )
    names: list[str] = []
    for name in channels:
        if name not in CHANNELS and name not in GROUPS:
            raise ConfigError(
                f"unknown PAMAP2 channel {name!r}; choose heart_rate, an IMU (hand, chest, "
                f"ankle), a sensor such as hand_acc16 ({', '.join(SENSORS)}) or one axis such "
                "as hand_acc16_x (docs/data.md)"
            )
        for channel in GROUPS.get(name, (name,)):
            if channel in names:
                raise ConfigError(f"pamap2: channel {channel!r} is chosen twice in {channels}")
            names.append(channel)
    return tuple(names)


def list_files(folder: Path) -> list[tuple[int, Path]]:
    """(subject, file) of every ``subject<id>.dat`` in ``folder``, by subject."""
    if not folder.is_dir():
        raise ConfigError(
            f"PAMAP2 folder {folder} is not a folder; pass the Protocol/ folder that holds "
            "subject101.dat .. subject109.dat"
        )
    found: list[tuple[int, Path]] = []
    for path in folder.iterdir():
        if path.suffix.lower() != ".dat":
            continue
        match = FILE_NAME.fullmatch(path.name)
        if match is None:
            raise ConfigError(
                f"{path}: file name is not subject<id>.dat; rename it or move it out of the folder"
            )
        found.append((int(match[1]), path))
    if not found:
        inside = " (it holds Protocol/: pass that folder)" if (folder / "Protocol").is_dir() else ""
        raise ConfigError(f"{folder} holds no subject<id>.dat files{inside}")
    return sorted(found)


def read_rows(path: Path, columns: Sequence[int]) -> npt.NDArray[np.float64]:
    """Timestamp, activity and the given columns of every row of one file, shape (T, 2 + C).

    Every line must hold 54 fields; the fields read must be numbers, the activity one of
    PAMAP2's, the timestamp not NaN, a channel NaN or finite. Otherwise one ConfigError names
    the file and the line. Only the columns read are converted (numpy's loadtxt, which is fast
    on few columns).
    """
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"{path}: cannot be read ({error.strerror})") from None
    lines = raw.splitlines()
    if not lines:
        raise ConfigError(f"{path}: is empty; {FIX}")
    fields = np.fromiter((len(line.split()) for line in lines), np.int64, len(lines))
    wrong = np.flatnonzero(fields != N_COLUMNS)
    if wrong.size:
        line = int(wrong[0])
        raise ConfigError(
            f"{path}: line {line + 1} has {fields[line]} fields, expected {N_COLUMNS} (timestamp, "
            f"activityID, heart rate, 3 IMUs x {IMU_COLUMNS}); {FIX}"
        )
    used = [0, 1, *columns]
    try:
        rows = np.loadtxt(io.BytesIO(raw), usecols=used, comments=None, encoding="latin1", ndmin=2)
    except ValueError as error:
        raise _bad_field(path, lines, used, error) from None
    if len(rows) != len(lines):  # a lone carriage return splits lines differently
        raise ConfigError(f"{path}: {len(rows)} rows in {len(lines)} lines; {FIX}")
    _check_values(path, rows, columns)
    return rows


def _bad_field(path: Path, lines: list[bytes], used: list[int], error: ValueError) -> ConfigError:
    """The first field of ``used`` that is not a number, named by line and column."""
    for number, line in enumerate(lines, 1):
        fields = line.split()
        for column in used:
            try:
                float(fields[column])
            except ValueError:
                text = fields[column].decode("latin1")[:20]
                return ConfigError(
                    f"{path}: line {number}, {COLUMN_NAMES[column]}: {text!r} is not a number; "
                    f"{FIX}"
                )
    return ConfigError(f"{path}: {' '.join(str(error).split())}; {FIX}")


def _check_values(path: Path, rows: npt.NDArray[np.float64], columns: Sequence[int]) -> None:
    """Timestamps are numbers, activities PAMAP2's, channel values NaN or finite."""
    activity = rows[:, 1]
    known = np.isin(activity, [TRANSIENT, *ACTIVITIES, *OPTIONAL])
    if not known.all():
        line = int(np.flatnonzero(~known)[0])
        value = "NaN" if np.isnan(activity[line]) else f"{activity[line]:g}"
        raise ConfigError(
            f"{path}: line {line + 1}: activityID {value} is not a PAMAP2 activity (0, 1-7, "
            f"9-13, 16-20, 24); {FIX}"
        )
    if np.isnan(rows[:, 0]).any():
        line = int(np.flatnonzero(np.isnan(rows[:, 0]))[0])
        raise ConfigError(f"{path}: line {line + 1}: the timestamp is NaN; {FIX}")
    infinite = np.isinf(rows[:, 2:])
    if infinite.any():
        line, channel = (int(i[0]) for i in np.nonzero(infinite))
        raise ConfigError(
            f"{path}: line {line + 1}, {COLUMN_NAMES[columns[channel]]}: "
            f"{rows[line, 2 + channel]:g} is not a reading; {FIX}"
        )


def fill_gaps(
    segment: npt.NDArray[np.float64], max_gap: int
) -> tuple[npt.NDArray[np.float64], int]:
    """Fill each column's runs of at most ``max_gap`` NaN in a (T, C) segment; count them.

    Inside the segment a run is filled linearly between its neighbours; at an end, with the
    nearest value. Longer runs, and columns with no value, stay NaN.

    >>> x = np.array([[np.nan], [1.0], [np.nan], [np.nan], [4.0], [np.nan], [np.nan], [np.nan]])
    >>> filled, count = fill_gaps(x, max_gap=2)
    >>> filled[:, 0].tolist()[:5], count
    ([1.0, 1.0, 2.0, 3.0, 4.0], 3)
    """
    out = segment.copy()
    count = 0
    for column in out.T:  # views: filled in place
        missing = np.isnan(column)
        if not missing.any() or missing.all():
            continue
        edges = np.diff(missing.astype(np.int8), prepend=0, append=0)
        lengths = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
        where = np.flatnonzero(missing)[np.repeat(lengths <= max_gap, lengths)]
        known = np.flatnonzero(~missing)
        column[where] = np.interp(where, known, column[known])
        count += len(where)
    return out, count
