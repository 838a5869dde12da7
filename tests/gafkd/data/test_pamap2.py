"""PAMAP2: Protocol files written here in the dataset's own 54-column format, read back."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from gafkd.config import ConfigError, from_dict
from gafkd.data import load_dataset, split_by_subject
from gafkd.data.pamap2 import (
    ACTIVITIES,
    CHANNELS,
    load_pamap2,
    read_pamap2,
)

N_COLUMNS = 54
HAND_ACC16 = (4, 5, 6)  # columns of the default channels


def recording(activities: Sequence[tuple[int, int]], start: float = 5.64) -> np.ndarray:
    """Rows of (activity, n_rows) runs; column j of row r holds r + j / 100 (heart rate at 9 Hz).

    Values are linear in the row, so linear interpolation of a gap gives back the lost values,
    and the fraction names the column a channel was read from.
    """
    labels = np.concatenate([np.full(n, activity) for activity, n in activities])
    rows = np.arange(len(labels), dtype=np.float64)
    data = rows[:, None] + np.arange(N_COLUMNS) / 100
    data[:, 0] = start + rows / 100
    data[:, 1] = labels
    data[rows % 11 != 0, 2] = np.nan  # the heart-rate monitor's ~9 Hz among 100 Hz rows
    return data


def dat_text(data: np.ndarray) -> str:
    """The dataset's text: space-separated, timestamp with 2 decimals, activity an int, NaN."""
    lines = []
    for row in data:
        fields = [f"{row[0]:.2f}", f"{int(row[1])}"]
        fields += ["NaN" if np.isnan(v) else f"{v:.10g}" for v in row[2:]]
        lines.append(" ".join(fields))
    return "\n".join(lines) + "\n"


def write_subject(folder: Path, subject: int, data: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"subject{subject}.dat"
    path.write_text(dat_text(data))
    return path


STANDARD = [(0, 30), (1, 40), (0, 10), (4, 50), (24, 40), (0, 5)]  # transients between activities


def protocol(tmp_path: Path, subjects: Sequence[int] = (101, 102)) -> Path:
    folder = tmp_path / "Protocol"
    for subject in subjects:
        write_subject(folder, subject, recording(STANDARD))
    return folder


def rows_of(window: np.ndarray) -> np.ndarray:
    """The recording rows a (C, L) window came from (first channel, fraction dropped)."""
    return np.floor(window[0] + 1e-3).astype(int)


# ---- classes, subjects, channels ----------------------------------------------------------------


def test_pamap2_reads_the_12_protocol_activities_and_subjects_from_file_names(
    tmp_path: Path,
) -> None:
    data = load_pamap2(protocol(tmp_path), window=20, stride=10)
    assert data.class_names == (
        "lying", "sitting", "standing", "walking", "running", "cycling", "Nordic walking",
        "ascending stairs", "descending stairs", "vacuum cleaning", "ironing", "rope jumping",
    )  # fmt: skip
    assert list(ACTIVITIES) == [1, 2, 3, 4, 5, 6, 7, 12, 13, 16, 17, 24]
    per_subject = [0] * 3 + [3] * 4 + [11] * 3  # lying 40 rows, walking 50, rope jumping 40
    assert data.labels.tolist() == per_subject * 2
    assert data.subjects.tolist() == [101] * 10 + [102] * 10
    assert data.subjects.dtype == np.int64
    assert data.channel_names == ("hand_acc16_x", "hand_acc16_y", "hand_acc16_z")
    assert data.signals.shape == (20, 3, 20)
    assert data.name == "pamap2-3ch-20w"
    fractions = np.round((data.signals[:, :, 0] % 1) * 100).astype(int)
    assert (fractions == HAND_ACC16).all()  # the hand IMU's +-16 g accelerometer


def test_pamap2_windows_never_cross_an_activity_change_or_a_file(tmp_path: Path) -> None:
    folder = tmp_path / "Protocol"
    activities = [(1, 25), (2, 25), (0, 3), (2, 17), (3, 30)]  # lying -> sitting, no transient
    write_subject(folder, 101, recording(activities))
    write_subject(folder, 105, recording([(3, 30)]))
    data = load_pamap2(folder, window=10, stride=3)
    labels = np.concatenate([np.full(n, a) for a, n in activities])
    for window, label, subject in zip(data.signals, data.labels, data.subjects, strict=True):
        rows = rows_of(window)
        assert (np.diff(rows) == 1).all()  # consecutive rows of one file
        if subject == 101:
            assert set(labels[rows]) == {list(ACTIVITIES)[label]}
    segments = [(1, 25), (2, 25), (2, 17), (3, 30), (3, 30)]
    counts = [(n - 10) // 3 + 1 for _, n in segments]
    assert len(data) == sum(counts)
    assert data.subjects.tolist() == [101] * sum(counts[:4]) + [105] * counts[4]


def test_pamap2_channels_name_sensors_groups_and_imus(tmp_path: Path) -> None:
    folder = protocol(tmp_path, subjects=(101,))
    data = load_pamap2(
        folder, window=20, stride=20, channels=["heart_rate", "hand", "chest", "ankle"]
    )
    assert data.n_channels == 40  # TPKD's PAMAP2 input: heart rate + 3 IMUs x 13 valid columns
    columns = [CHANNELS[name] for name in data.channel_names]
    expected = [2, *range(3, 16), *range(20, 33), *range(37, 50)]  # orientation never
    assert columns == expected
    fractions = np.round((data.signals[:, :, 0] % 1) * 100).astype(int)
    assert (fractions[:, 1:] == expected[1:]).all()
    assert data.channel_names[:6] == (
        "heart_rate", "hand_temperature", "hand_acc16_x", "hand_acc16_y", "hand_acc16_z",
        "hand_acc6_x",
    )  # fmt: skip
    picked = load_pamap2(folder, window=20, stride=20, channels=["ankle_gyro", "chest_mag_z"])
    assert picked.channel_names == ("ankle_gyro_x", "ankle_gyro_y", "ankle_gyro_z", "chest_mag_z")
    fractions = np.round((picked.signals[:, :, 0] % 1) * 100).astype(int)
    assert (fractions == [44, 45, 46, 32]).all()


@pytest.mark.parametrize(
    ("channels", "message"),
    [
        (["hand_orientation_1"], "unknown PAMAP2 channel 'hand_orientation_1'"),
        (["wrist_acc16"], r"unknown PAMAP2 channel 'wrist_acc16'.*hand_acc16"),
        (["hand_acc16", "hand_acc16_x"], "'hand_acc16_x' is chosen twice"),
        ([], "channels is empty"),
    ],
)
def test_pamap2_bad_channel_choice_is_one_error(
    tmp_path: Path, channels: list[str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_pamap2(protocol(tmp_path, subjects=(101,)), window=20, channels=channels)


# ---- NaN gaps, dropped rows, resampling ---------------------------------------------------------


def test_pamap2_fills_short_gaps_linearly_and_drops_windows_with_long_ones(
    tmp_path: Path,
) -> None:
    data = recording([(0, 5), (4, 60), (0, 5)])
    data[20:23, 4] = np.nan  # 3 samples: filled, exactly, since values are linear
    data[5:7, 5] = np.nan  # at the segment's start: the nearest value is held
    data[40:52, 6] = np.nan  # 12 samples > max_gap 5: the windows over it are dropped
    write_subject(tmp_path / "Protocol", 101, data)
    read, counts = read_pamap2(tmp_path / "Protocol", window=10, stride=5, max_gap=5)
    starts = [rows_of(w)[0] for w in read.signals]
    assert starts == [5, 10, 15, 20, 25, 30, 55]  # windows over rows 40..51 are gone
    filled = read.signals[starts.index(20)]
    np.testing.assert_allclose(filled[0, :3], [20.04, 21.04, 22.04], atol=1e-3)
    np.testing.assert_allclose(read.signals[0, 1, :3], [7.05, 7.05, 7.05], atol=1e-3)
    assert counts.windows == 7
    assert counts.dropped_windows == 4  # starts 35, 40, 45, 50
    assert counts.filled_values == 3 + 2
    assert counts.rows == 70
    assert counts.transient_rows == 10
    assert "7 windows" in counts.summary()
    assert "4 dropped" in counts.summary()


def test_pamap2_heart_rate_at_9_hz_is_filled_by_the_default_max_gap(tmp_path: Path) -> None:
    folder = protocol(tmp_path, subjects=(101,))
    data = load_pamap2(folder, window=20, stride=10, channels=["heart_rate"])
    assert len(data) == 10  # nothing dropped: its gaps of 10 rows are shorter than 20
    rows = np.arange(80, 100)  # the first walking window; heart rate read at rows 77, 88, 99
    expected = np.maximum(rows, 88) + 0.02  # before row 88 the segment's first value is held
    np.testing.assert_allclose(data.signals[3, 0], expected, atol=1e-3)


def test_pamap2_load_prints_its_counts_on_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load_pamap2(protocol(tmp_path), window=20, stride=10)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("note: pamap2 ")
    assert "2 files" in lines[0]
    assert "20 windows" in lines[0]


def test_pamap2_optional_activities_are_dropped_and_counted(tmp_path: Path) -> None:
    folder = tmp_path / "Protocol"
    write_subject(folder, 101, recording([(1, 20), (9, 30), (19, 15), (5, 20)]))
    data, counts = read_pamap2(folder, window=20, stride=20)
    assert data.labels.tolist() == [0, 4]  # lying, running; watching TV, house cleaning gone
    assert counts.other_rows == 45


def test_pamap2_a_break_in_time_ends_a_segment(tmp_path: Path) -> None:
    data = recording([(3, 40)])
    data[20:, 0] += 7.5  # rows missing between 20 and 21: a gap of 7.5 s inside standing
    write_subject(tmp_path / "Protocol", 101, data)
    read, counts = read_pamap2(tmp_path / "Protocol", window=15, stride=5)
    assert [rows_of(w)[0] for w in read.signals] == [0, 5, 20, 25]
    assert counts.time_breaks == 1


def test_pamap2_downsample_keeps_every_kth_sample_after_filling(tmp_path: Path) -> None:
    data = recording([(6, 41)])
    data[2, 4] = np.nan
    write_subject(tmp_path / "Protocol", 101, data)
    read = load_pamap2(tmp_path / "Protocol", window=10, stride=5, downsample=2)
    assert read.name == "pamap2-3ch-10w-50Hz"
    assert rows_of(read.signals[0]).tolist() == list(range(0, 20, 2))
    assert read.signals[0, 0, 1] == pytest.approx(2.04, abs=1e-3)
    assert [rows_of(w)[0] for w in read.signals] == [0, 10, 20]  # 21 samples at 50 Hz


# ---- load_dataset, the config, the split --------------------------------------------------------


def test_load_dataset_reads_pamap2_and_the_subject_split_holds_out_a_subject(
    tmp_path: Path,
) -> None:
    folder = protocol(tmp_path, subjects=(101, 102, 108))
    data = load_dataset("pamap2", path=folder, window=20, stride=10, channels=["chest_acc16"])
    assert data.channel_names == ("chest_acc16_x", "chest_acc16_y", "chest_acc16_z")
    split = split_by_subject(data, test_subjects=[108])
    assert set(split.test.subjects.tolist()) == {108}
    assert set(split.train.subjects.tolist()) == {101, 102}
    with pytest.raises(ConfigError, match="'pamap2' needs a path"):
        load_dataset("pamap2")
    with pytest.raises(ConfigError, match=r"does not use \['channels'\]"):
        load_dataset("watch", channels=["hand_acc16"])


def test_a_run_config_reads_pamap2_with_its_keys(tmp_path: Path) -> None:
    from gafkd.run import load_split

    folder = protocol(tmp_path, subjects=(101, 102))
    table = {
        "data": {
            "source": "pamap2",
            "path": str(folder),
            "window": 20,
            "channels": ["ankle_acc16_x"],
            "max_gap": 3,
            "downsample": 1,
            "test_subjects": [102],
        }
    }
    split = load_split(from_dict(table))
    assert split.train.channel_names == ("ankle_acc16_x",)
    assert len(split.train) == len(split.test) == 3 + 4 + 3  # stride 0: window // 2


def test_the_pamap2_presets_need_a_path_and_read_it(tmp_path: Path) -> None:
    from gafkd.experiments.grid import expand, load_grid
    from gafkd.experiments.plan import plan_grid

    run = expand(load_grid("kd_alpha"), ["dataset=pamap2"])[0]
    assert run.config["data"]["source"] == "pamap2"
    wide = expand(load_grid("kd_alpha"), ["dataset=pamap2_40"])[0]
    assert wide.config["data"]["channels"] == ["heart_rate", "hand", "chest", "ankle"]
    with pytest.raises(ConfigError, match=r"data\.path is empty"):
        plan_grid("kd_alpha", ["dataset=pamap2"], tmp_path)
    with pytest.raises(ConfigError, match="dataset path nowhere does not exist"):
        plan_grid("kd_alpha", ["dataset=pamap2", "data.path=nowhere"], tmp_path)


# ---- folders and damaged files -----------------------------------------------------------------


def test_pamap2_folder_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a folder"):
        load_pamap2(tmp_path / "missing", window=20)
    root = tmp_path / "PAMAP2_Dataset"
    protocol(root, subjects=(101,))
    with pytest.raises(ConfigError, match=r"no subject<id>\.dat files.*Protocol"):
        load_pamap2(root, window=20)
    folder = root / "Protocol"
    (folder / "readme.txt").write_text("other files are ignored")
    assert len(load_pamap2(folder, window=20)) == 3 + 4 + 3
    (folder / "subj2.dat").write_text("")
    with pytest.raises(ConfigError, match=r"subj2\.dat: file name is not subject<id>\.dat"):
        load_pamap2(folder, window=20)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"window": 0}, "window must be >= 1"),
        ({"window": 20, "stride": 0}, "stride must be >= 1"),
        ({"window": 20, "max_gap": -1}, "max_gap must be >= 0"),
        ({"window": 20, "downsample": 0}, "downsample must be >= 1"),
        ({"window": 100}, r"no window of 100 samples fits.*longest activity segment: 50"),
    ],
)
def test_pamap2_bad_settings_are_one_error(
    tmp_path: Path, arguments: dict[str, int], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_pamap2(protocol(tmp_path, subjects=(101,)), **arguments)  # type: ignore[arg-type]


def replace_line(number: int, text: str) -> Callable[[str], str]:
    def damage(content: str) -> str:
        lines = content.splitlines(keepends=True)
        lines[number - 1] = text + "\n"
        return "".join(lines)

    return damage


def edit_field(number: int, field: int, text: str) -> Callable[[str], str]:
    def damage(content: str) -> str:
        lines = content.splitlines(keepends=True)
        fields = lines[number - 1].split()
        fields[field] = text
        lines[number - 1] = " ".join(fields) + "\n"
        return "".join(lines)

    return damage


@dataclass(frozen=True)
class Damage:
    name: str
    damage: Callable[[str], str]
    message: str  # after "<file>: "


DAMAGES = [
    Damage("truncated", lambda text: text[: text.rindex("\n", 0, -1) + 40], r"line 175 has \d+ "),
    Damage("short line", edit_field(7, 53, ""), "line 7 has 53 fields, expected 54"),
    Damage("long line", replace_line(9, "1 " * 60), "line 9 has 60 fields, expected 54"),
    Damage("blank line", replace_line(30, ""), "line 30 has 0 fields, expected 54"),
    Damage("text in a channel", edit_field(12, 5, "abc"), "line 12, hand_acc16_y: 'abc'"),
    Damage("text in activity", edit_field(40, 1, "walk"), "line 40, activityID: 'walk'"),
    Damage("unknown activity", edit_field(41, 1, "42"), "line 41: activityID 42 is not"),
    Damage("fractional activity", edit_field(41, 1, "4.5"), "line 41: activityID 4.5 is not"),
    Damage("NaN activity", edit_field(42, 1, "NaN"), "line 42: activityID NaN is not"),
    Damage("NaN timestamp", edit_field(43, 0, "NaN"), "line 43: the timestamp is NaN"),
    Damage("inf", edit_field(44, 4, "inf"), r"line 44, hand_acc16_x: inf is not a reading"),
    Damage("empty", lambda text: "", "is empty"),
    Damage("binary", lambda text: "\x00\x01garbage\x7f" * 10, "line 1 has 1 fields"),
]


@pytest.mark.parametrize("case", DAMAGES, ids=[d.name for d in DAMAGES])
def test_a_damaged_pamap2_file_is_one_line_naming_file_and_line(
    tmp_path: Path, case: Damage
) -> None:
    folder = protocol(tmp_path, subjects=(101, 102))
    path = folder / "subject102.dat"
    path.write_text(case.damage(path.read_text()))
    with pytest.raises(ConfigError) as error:
        load_pamap2(folder, window=20)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert re.search(case.message, message), message


def test_a_non_utf8_byte_is_named_not_a_traceback(tmp_path: Path) -> None:
    folder = protocol(tmp_path, subjects=(101,))
    path = folder / "subject101.dat"
    lines = path.read_bytes().splitlines(keepends=True)
    lines[4] = lines[4].replace(b"4.04", b"4.0\xff", 1)
    path.write_bytes(b"".join(lines))
    with pytest.raises(ConfigError, match=r"subject101\.dat: line 5, hand_acc16_x: '4\.0"):
        load_pamap2(folder, window=20)
