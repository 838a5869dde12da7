"""Datasets: SignalSet invariants, GENEActiv/npz/watch/BasicMotions loaders, splits, scaling."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import re
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.io

from gafkd.config import ConfigError
from gafkd.data import (
    SignalSet,
    Split,
    load_basic_motions,
    load_dataset,
    load_geneactiv,
    load_npz,
    load_watch,
    save_npz,
    sliding_windows,
    split_by_subject,
    standardize,
)

WINDOW = 8


def window_values(subject: int, number: int, index: int) -> np.ndarray:
    """A distinct (3, WINDOW) window for each file, so order and orientation are checkable."""
    base = subject * 10000 + number * 100 + index
    return base + np.arange(3 * WINDOW, dtype=np.float64).reshape(3, WINDOW) / 100


def write_mat(folder: Path, name: str, xw: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(folder / name, {"xw": xw})
    return folder / name


def make_tree(
    root: Path,
    numbers: range = range(1, 15),
    subjects: tuple[int, ...] = (3, 12),
    windows: tuple[int, ...] = (2, 10),
    pad: bool = False,
) -> Path:
    """Write one (W, 3) window per subject x class x window index under Window-size-8."""
    folder = root / f"Window-size-{WINDOW}"
    for subject in subjects:
        for number in numbers:
            for index in windows:
                k = f"{number:02d}" if pad else str(number)
                w = f"{index:04d}" if pad else str(index)
                name = f"ID-{subject}_CLASS-{k}_Window-{w}.mat"
                write_mat(folder, name, window_values(subject, number, index).T)
    return folder


def fake_set(subjects: list[int], scale: float = 1.0, channels: int = 2) -> SignalSet:
    n = len(subjects)
    rng = np.random.default_rng(0)
    signals = (rng.normal(size=(n, channels, 5)) * scale).astype(np.float32)
    labels = np.arange(n, dtype=np.int64) % 2
    return SignalSet(signals, labels, np.array(subjects, np.int64), class_names=("a", "b"))


# ---- GENEActiv --------------------------------------------------------------------------------


def test_geneactiv_accepts_both_xw_orientations(tmp_path: Path) -> None:
    folder = tmp_path / f"Window-size-{WINDOW}"
    write_mat(folder, "ID-1_CLASS-1_Window-1.mat", window_values(1, 1, 1).T)  # (W, 3)
    write_mat(folder, "ID-1_CLASS-2_Window-1.mat", window_values(1, 2, 1))  # (3, W)
    for number in range(3, 15):
        write_mat(folder, f"ID-1_CLASS-{number}_Window-1.mat", window_values(1, number, 1))
    data = load_geneactiv(tmp_path, WINDOW, 14)
    assert data.signals.shape == (14, 3, WINDOW)
    np.testing.assert_allclose(data.signals[0], window_values(1, 1, 1), rtol=1e-6)
    np.testing.assert_allclose(data.signals[1], window_values(1, 2, 1), rtol=1e-6)
    assert data.channel_names == ("x", "y", "z")
    assert data.name == f"geneactiv-14cls-{WINDOW}w"


@pytest.mark.parametrize("pad", [False, True])
@pytest.mark.parametrize("first", [0, 1])
def test_geneactiv_maps_class_numbers_padded_or_not_from_0_or_1(
    tmp_path: Path, pad: bool, first: int
) -> None:
    make_tree(tmp_path, numbers=range(first, first + 14), pad=pad)
    data = load_geneactiv(tmp_path, WINDOW, 14)
    assert data.class_names == tuple(str(n) for n in range(first, first + 14))
    assert data.signals.dtype == np.float32
    assert data.signals.shape == (2 * 14 * 2, 3, WINDOW)
    for signal, label in zip(data.signals[:5], data.labels[:5], strict=True):
        number = int(data.class_names[label])
        assert abs(signal[0, 0] - (3 * 10000 + number * 100)) < 11  # subject 3, window 2 or 10


def test_geneactiv_sorts_files_numerically_by_subject_class_window(tmp_path: Path) -> None:
    make_tree(tmp_path, subjects=(12, 3), windows=(10, 2))
    data = load_geneactiv(tmp_path, WINDOW, 14)
    assert data.subjects.dtype == np.int64
    assert data.subjects.tolist() == [3] * 28 + [12] * 28
    assert data.labels.tolist()[:4] == [0, 0, 1, 1]
    np.testing.assert_allclose(data.signals[:2, 0, 0], [30102, 30110], rtol=1e-6)


def test_geneactiv_14_class_mode_names_the_classes_found(tmp_path: Path) -> None:
    make_tree(tmp_path, numbers=range(1, 13))
    with pytest.raises(ConfigError, match=r"14 distinct CLASS numbers, found 12"):
        load_geneactiv(tmp_path, WINDOW, 14)


def test_geneactiv_7_class_default_mapping_groups_pairs_and_warns(tmp_path: Path) -> None:
    make_tree(tmp_path)
    with pytest.warns(UserWarning, match="placeholder"):
        data = load_geneactiv(tmp_path, WINDOW, 7)
    assert data.class_names == ("1+2", "3+4", "5+6", "7+8", "9+10", "11+12", "13+14")
    numbers = np.repeat(np.arange(1, 15), 2)
    assert data.labels[:28].tolist() == ((numbers - 1) // 2).tolist()
    assert data.name == f"geneactiv-7cls-{WINDOW}w"


def write_mapping(path: Path, groups: dict[str, list[int]], extra: str = "") -> Path:
    lines = [extra, "[classes]"] + [f'"{name}" = {members}' for name, members in groups.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


USER_GROUPS = {
    "walk": [3, 4, 5],
    "sit": [1],
    "stand": [2, 6],
    "run": [7, 8],
    "stairs": [9, 10],
    "sleep": [11, 12],
    "other": [13, 14],
}


def test_geneactiv_7_class_user_mapping_orders_labels_by_group(tmp_path: Path) -> None:
    make_tree(tmp_path / "data", windows=(1,))
    mapping = write_mapping(tmp_path / "mine.toml", USER_GROUPS)
    data = load_geneactiv(tmp_path / "data", WINDOW, 7, mapping=mapping)
    assert data.class_names == tuple(USER_GROUPS)
    assert data.labels[:14].tolist() == [1, 2, 0, 0, 0, 2, 3, 3, 4, 4, 5, 5, 6, 6]
    via_dispatch = load_dataset("geneactiv", tmp_path / "data", WINDOW, 7, mapping=mapping)
    assert via_dispatch.fingerprint() == data.fingerprint()


def test_geneactiv_class_outside_mapping_names_file_and_class(tmp_path: Path) -> None:
    make_tree(tmp_path, numbers=range(0, 14), subjects=(1,), windows=(1,))
    with pytest.warns(UserWarning, match="placeholder"), pytest.raises(ConfigError) as caught:
        load_geneactiv(tmp_path, WINDOW, 7)
    assert "ID-1_CLASS-0_Window-1.mat: class 0 is in no group" in str(caught.value)


@pytest.mark.parametrize(
    ("groups", "extra", "message"),
    [
        ({**USER_GROUPS, "sit": [1, 3]}, "", "class 3 is in groups"),
        ({k: v for k, v in USER_GROUPS.items() if k != "other"}, "", "has 6 groups"),
        ({**USER_GROUPS, "sit": []}, "", "must be a non-empty list"),
        (USER_GROUPS, "colour = 1", "found keys"),
        (USER_GROUPS, "= broken", "not valid TOML"),
    ],
)
def test_geneactiv_bad_mapping_file_is_named(
    tmp_path: Path, groups: dict[str, list[int]], extra: str, message: str
) -> None:
    make_tree(tmp_path / "data", subjects=(1,), windows=(1,))
    mapping = write_mapping(tmp_path / "mine.toml", groups, extra)
    with pytest.raises(ConfigError, match=message) as caught:
        load_geneactiv(tmp_path / "data", WINDOW, 7, mapping=mapping)
    assert "mine.toml" in str(caught.value)


def test_geneactiv_missing_root_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path / "nope"))):
        load_geneactiv(tmp_path / "nope", WINDOW, 14)


def test_geneactiv_missing_window_folder_lists_existing_ones(tmp_path: Path) -> None:
    (tmp_path / "Window-size-500").mkdir()
    (tmp_path / "Window-size-1000").mkdir()
    with pytest.raises(ConfigError) as caught:
        load_geneactiv(tmp_path, 300, 14)
    message = str(caught.value)
    assert "Window-size-300 does not exist" in message
    assert "['Window-size-1000', 'Window-size-500']" in message


def bad_tree(tmp_path: Path) -> Path:
    """A valid 14-class tree; each error test adds one bad file to it."""
    return make_tree(tmp_path, subjects=(1,), windows=(1,))


def test_geneactiv_mat_without_xw_lists_its_keys(tmp_path: Path) -> None:
    folder = bad_tree(tmp_path)
    scipy.io.savemat(folder / "ID-2_CLASS-1_Window-1.mat", {"acc": np.zeros((WINDOW, 3))})
    with pytest.raises(ConfigError, match=r"ID-2_CLASS-1_Window-1.mat: has no variable 'xw'.*acc"):
        load_geneactiv(tmp_path, WINDOW, 14)


def test_geneactiv_window_of_other_length_names_file_and_lengths(tmp_path: Path) -> None:
    folder = bad_tree(tmp_path)
    write_mat(folder, "ID-2_CLASS-1_Window-1.mat", np.zeros((WINDOW + 2, 3)))
    with pytest.raises(ConfigError) as caught:
        load_geneactiv(tmp_path, WINDOW, 14)
    assert f"ID-2_CLASS-1_Window-1.mat: window of length {WINDOW + 2}, expected {WINDOW}" in str(
        caught.value
    )


def test_geneactiv_xw_of_wrong_shape_is_named(tmp_path: Path) -> None:
    folder = bad_tree(tmp_path)
    write_mat(folder, "ID-2_CLASS-1_Window-1.mat", np.zeros((WINDOW, 4)))
    with pytest.raises(ConfigError, match=r"ID-2_CLASS-1_Window-1.mat: xw has shape \(8, 4\)"):
        load_geneactiv(tmp_path, WINDOW, 14)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_geneactiv_non_finite_window_is_named(tmp_path: Path, value: float) -> None:
    folder = bad_tree(tmp_path)
    xw = np.zeros((WINDOW, 3))
    xw[3, 1] = value
    write_mat(folder, "ID-2_CLASS-1_Window-1.mat", xw)
    with pytest.raises(ConfigError, match=r"ID-2_CLASS-1_Window-1.mat: xw holds NaN or inf"):
        load_geneactiv(tmp_path, WINDOW, 14)


def test_geneactiv_ignores_other_files_but_not_badly_named_mat(tmp_path: Path) -> None:
    folder = bad_tree(tmp_path)
    (folder / "README.txt").write_text("notes")
    (folder / "ID-2_CLASS-1_Window-1.csv").write_text("1,2,3")
    assert len(load_geneactiv(tmp_path, WINDOW, 14)) == 14
    write_mat(folder, "ID-2_CLASS-1.mat", np.zeros((WINDOW, 3)))
    with pytest.raises(ConfigError, match=r"ID-2_CLASS-1.mat: file name does not match"):
        load_geneactiv(tmp_path, WINDOW, 14)


def test_geneactiv_same_window_with_two_paddings_is_an_error(tmp_path: Path) -> None:
    folder = bad_tree(tmp_path)
    write_mat(folder, "ID-1_CLASS-01_Window-1.mat", np.zeros((WINDOW, 3)))
    with pytest.raises(ConfigError, match=r"ID-1_CLASS-01_Window-1.mat|ID-1_CLASS-1_Window-1.mat"):
        load_geneactiv(tmp_path, WINDOW, 14)


def test_geneactiv_folder_without_mat_files_is_an_error(tmp_path: Path) -> None:
    folder = tmp_path / f"Window-size-{WINDOW}"
    folder.mkdir()
    (folder / "notes.txt").write_text("")
    with pytest.raises(ConfigError, match=r"Window-size-8 holds no .mat files"):
        load_geneactiv(tmp_path, WINDOW, 14)


def test_geneactiv_unreadable_mat_is_named(tmp_path: Path) -> None:
    folder = bad_tree(tmp_path)
    (folder / "ID-2_CLASS-1_Window-1.mat").write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(ConfigError, match=r"ID-2_CLASS-1_Window-1.mat: cannot be read"):
        load_geneactiv(tmp_path, WINDOW, 14)


def write_v73_header(path: Path) -> None:
    """A file scipy recognises as MATLAB v7.3 (version bytes 0x0200 at offset 124)."""
    header = b"MATLAB 7.3 MAT-file".ljust(116, b" ") + bytes(8) + b"\x00\x02IM"
    path.write_bytes(header + bytes(512))


def test_geneactiv_v73_file_without_h5py_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = bad_tree(tmp_path)
    write_v73_header(folder / "ID-2_CLASS-1_Window-1.mat")
    monkeypatch.setitem(sys.modules, "h5py", None)  # find_spec("h5py") -> None
    with pytest.raises(ConfigError, match=r"ID-2_CLASS-1_Window-1.mat is a MATLAB v7.3.*h5py"):
        load_geneactiv(tmp_path, WINDOW, 14)


def test_geneactiv_v73_file_is_read_with_h5py_when_present(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = bad_tree(tmp_path)
    write_v73_header(folder / "ID-2_CLASS-1_Window-1.mat")
    stored = {"xw": window_values(2, 1, 1)}  # HDF5 holds MATLAB's (W, 3) as (3, W)

    class File(dict[str, Any]):
        def __init__(self, path: Path, mode: str) -> None:
            super().__init__(stored)

        def __enter__(self) -> File:
            return self

        def __exit__(self, *args: object) -> None:
            return None

    fake = types.ModuleType("h5py")
    fake.__spec__ = importlib.machinery.ModuleSpec("h5py", None)
    fake.File = File  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "h5py", fake)
    data = load_geneactiv(tmp_path, WINDOW, 14)
    np.testing.assert_allclose(data.signals[-1], window_values(2, 1, 1), rtol=1e-6)


# ---- npz --------------------------------------------------------------------------------------


def test_npz_round_trip_keeps_everything(tmp_path: Path) -> None:
    data = SignalSet(
        np.arange(24, dtype=np.float32).reshape(4, 2, 3),
        np.array([0, 2, 2, 0]),
        np.array(["ann", "bob", "ann", "cy"]),
        class_names=("rest", "unused", "walk"),
        channel_names=("ax", "ay"),
        name="mine",
    )
    save_npz(data, tmp_path / "mine.npz")
    loaded = load_npz(tmp_path / "mine.npz")
    np.testing.assert_array_equal(loaded.signals, data.signals)
    np.testing.assert_array_equal(loaded.labels, data.labels)
    np.testing.assert_array_equal(loaded.subjects, data.subjects)
    assert (loaded.class_names, loaded.channel_names, loaded.name) == (
        data.class_names,
        data.channel_names,
        data.name,
    )
    assert loaded.fingerprint() == data.fingerprint()


def test_npz_maps_sorted_int_labels_and_reads_2d_x(tmp_path: Path) -> None:
    path = tmp_path / "plain.npz"
    np.savez(path, X=np.ones((4, 6)), y=np.array([10, 3, 7, 3]), subject=np.array([1, 1, 2, 2]))
    data = load_npz(path)
    assert data.signals.shape == (4, 1, 6)
    assert data.class_names == ("3", "7", "10")
    assert data.labels.tolist() == [2, 0, 1, 0]
    assert (data.name, data.channel_names) == ("plain", ())


def test_npz_string_labels_follow_class_names_order(tmp_path: Path) -> None:
    path = tmp_path / "s.npz"
    y = np.array(["walk", "rest"])
    np.savez(path, X=np.ones((2, 1, 3)), y=y, subject=[5, 6], class_names=["walk", "rest"])
    assert load_npz(path).labels.tolist() == [0, 1]


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"X": np.ones((2, 1, 3)), "y": [0, 1]}, r"has no array \['subject'\]"),
        ({"X": np.ones((2, 1, 1, 3)), "y": [0, 1], "subject": [1, 2]}, "X must be real"),
        ({"X": np.ones((2, 1, 3)), "y": [0, 1, 1], "subject": [1, 2]}, "must both be"),
        ({"X": np.full((2, 1, 3), np.nan), "y": [0, 1], "subject": [1, 2]}, "NaN or inf"),
        ({"X": np.ones((2, 3)), "y": [0, 5], "subject": [1, 2], "class_names": ["a"]}, r"\[0, 1\)"),
        ({"X": np.ones((2, 3)), "y": [0, 1], "subject": [1.5, 2.5]}, "ints or strings"),
    ],
)
def test_npz_bad_content_names_the_file(
    tmp_path: Path, arrays: dict[str, Any], message: str
) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ConfigError, match=message) as caught:
        load_npz(path)
    assert str(path) in str(caught.value)


def test_npz_unreadable_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "junk.npz"
    path.write_text("junk")
    with pytest.raises(ConfigError, match=r"junk.npz: cannot be read"):
        load_npz(path)
    with pytest.raises(ConfigError, match=r"missing.npz: cannot be read"):
        load_npz(tmp_path / "missing.npz")


# ---- watch and BasicMotions ------------------------------------------------------------------


@pytest.fixture(scope="module")
def watch_raw() -> dict[str, Any]:
    spec = importlib.util.find_spec("seglearn")
    assert spec is not None
    assert spec.submodule_search_locations is not None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "watch_dataset.npy"
    raw: dict[str, Any] = np.load(path, allow_pickle=True).item()
    return raw


def test_watch_loads_offline_without_importing_seglearn(
    watch_raw: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(sys.modules, "seglearn", raising=False)
    data = load_watch()
    assert "seglearn" not in sys.modules
    assert len(watch_raw["X"]) == 140
    assert (data.name, data.n_channels, data.length, data.n_classes) == ("watch", 6, 100, 7)
    assert data.class_names == ("PEN", "ABD", "FEL", "IR", "ER", "TRAP", "ROW")
    assert data.channel_names == ("ax", "ay", "az", "wx", "wy", "wz")
    assert len(np.unique(data.subjects)) == 10
    expected = sum((len(x) - 100) // 50 + 1 for x in watch_raw["X"])
    assert len(data) == expected
    np.testing.assert_allclose(data.signals[1], watch_raw["X"][0][50:150].T, rtol=1e-6)
    assert data.labels[0] == watch_raw["y"][0]
    assert data.subjects[0] == watch_raw["subject"][0]


def test_watch_drops_recordings_shorter_than_the_window(watch_raw: dict[str, Any]) -> None:
    data = load_watch(window=2000, stride=1000)
    lengths = [len(x) for x in watch_raw["X"]]
    assert len(data) == sum((n - 2000) // 1000 + 1 for n in lengths if n >= 2000)
    assert set(data.labels.tolist()) <= set(range(7))


def test_watch_without_seglearn_says_pip_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "seglearn", None)
    with pytest.raises(ConfigError, match="pip install seglearn"):
        load_watch()


def test_basic_motions_has_80_windows_each_its_own_subject() -> None:
    data = load_basic_motions()
    assert data.signals.shape == (80, 6, 100)
    assert data.class_names == ("Badminton", "Running", "Standing", "Walking")
    assert np.bincount(data.labels).tolist() == [20, 20, 20, 20]
    assert len(np.unique(data.subjects)) == 80


# ---- load_dataset ------------------------------------------------------------------------------


def test_load_dataset_dispatches_and_rejects_bad_arguments(tmp_path: Path) -> None:
    assert load_dataset("watch", window=200, stride=200).length == 200
    with pytest.raises(ConfigError, match=r"unknown data source 'mnist'.*'geneactiv'"):
        load_dataset("mnist")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"'ucr' needs data.path .* or data.name"):
        load_dataset("ucr")
    with pytest.raises(ConfigError, match=r"'npz' needs a path"):
        load_dataset("npz")
    with pytest.raises(ConfigError, match=r"does not use \['classes'\]"):
        load_dataset("watch", classes=7)


# ---- SignalSet and windows -------------------------------------------------------------------


def test_signal_set_rejects_broken_invariants() -> None:
    good = fake_set([1, 2])
    with pytest.raises(ConfigError, match="float32"):
        SignalSet(good.signals.astype(np.float64), good.labels, good.subjects, ("a", "b"))
    with pytest.raises(ConfigError, match=r"labels must lie in \[0, 1\)"):
        SignalSet(good.signals, good.labels, good.subjects, ("a",))
    with pytest.raises(ConfigError, match=r"subjects must have shape \(2,\)"):
        SignalSet(good.signals, good.labels, good.subjects[:1], ("a", "b"))
    with pytest.raises(ConfigError, match="channel_names"):
        SignalSet(good.signals, good.labels, good.subjects, ("a", "b"), channel_names=("x",))
    broken = good.signals.copy()
    broken[1, 0, 2] = np.nan
    with pytest.raises(ConfigError, match="window 1"):
        SignalSet(broken, good.labels, good.subjects, ("a", "b"))


def test_subset_and_fingerprint_follow_the_data() -> None:
    data = fake_set([1, 2, 3, 4])
    part = data.subset(np.array([3, 1]))
    assert part.subjects.tolist() == [4, 2]
    assert part.signals.flags.c_contiguous
    assert data.fingerprint() == fake_set([1, 2, 3, 4]).fingerprint()
    assert data.fingerprint() != fake_set([1, 2, 3, 5]).fingerprint()
    assert data.fingerprint() != data.subset(np.arange(4)[::-1]).fingerprint()
    assert len(data.fingerprint()) == 16


def test_sliding_windows_counts_and_values() -> None:
    recording = np.arange(2 * 11, dtype=np.float32).reshape(2, 11)
    windows = sliding_windows(recording, window=4, stride=3)
    assert windows.shape == (3, 2, 4)
    np.testing.assert_array_equal(windows[2], recording[:, 6:10])
    assert sliding_windows(recording, window=12, stride=1).shape == (0, 2, 12)
    with pytest.raises(ValueError, match="stride"):
        sliding_windows(recording, window=4, stride=0)


# ---- splits and standardisation --------------------------------------------------------------


def test_split_is_deterministic_for_a_seed_and_subject_disjoint() -> None:
    data = fake_set(list(np.repeat(np.arange(10), 3)))
    first = split_by_subject(data, test_fraction=0.2, val_fraction=0.1, seed=7)
    again = split_by_subject(data, test_fraction=0.2, val_fraction=0.1, seed=7)
    assert first.val is not None
    assert again.val is not None
    parts = [set(s.subjects.tolist()) for s in (first.train, first.val, first.test)]
    assert [len(p) for p in parts] == [7, 1, 2]
    assert parts[0] | parts[1] | parts[2] == set(range(10))
    assert sum(len(p) for p in parts) == 10  # with the union above: pairwise disjoint
    assert first.test.fingerprint() == again.test.fingerprint()
    others = {
        tuple(sorted(set(split_by_subject(data, seed=s).test.subjects.tolist()))) for s in range(5)
    }
    assert len(others) > 1


def test_split_explicit_subjects_win_and_val_is_drawn_from_the_rest() -> None:
    data = fake_set([1, 1, 2, 3, 4, 5])
    split = split_by_subject(data, test_subjects=[2, 5], val_fraction=0.2, seed=0)
    assert set(split.test.subjects.tolist()) == {2, 5}
    assert split.val is not None
    assert set(split.val.subjects.tolist()) <= {1, 3, 4}
    assert split_by_subject(data, test_subjects=[1]).val is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"test_subjects": [9]}, r"not in the dataset: \[9\]"),
        ({"test_subjects": [1], "val_subjects": [1, 2]}, r"\[1\] are in both test and val"),
        ({"test_subjects": [1, 2, 3]}, "no subject left for training"),
        ({"test_fraction": 0.9}, "no subject left for training"),
        ({"test_fraction": 0.0}, "0 < test_fraction < 1"),
        ({"test_subjects": []}, "test_subjects is empty"),
    ],
)
def test_split_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        split_by_subject(fake_set([1, 2, 3]), **kwargs)


def test_standardize_uses_train_statistics_only() -> None:
    train = fake_set([1, 1, 2, 2])
    shifted = replace_signals(fake_set([3, 3]), lambda s: s * 50 + 1000)
    split = standardize(Split(train=train, val=None, test=shifted))
    expected_mean = train.signals.astype(np.float64).mean(axis=(0, 2))
    np.testing.assert_allclose(split.channel_mean, expected_mean, rtol=1e-12)
    np.testing.assert_allclose(split.train.signals.mean(axis=(0, 2)), 0, atol=1e-6)
    np.testing.assert_allclose(split.train.signals.std(axis=(0, 2)), 1, rtol=1e-5)
    assert split.test.signals.mean() > 100  # leaked test data would pull this to ~0
    assert split.test.signals.dtype == np.float32
    with pytest.raises(ConfigError, match="already standardised"):
        standardize(split)


def test_standardize_gives_constant_channels_std_1() -> None:
    data = replace_signals(
        fake_set([1, 2]), lambda s: np.concatenate([s[:, :1], s[:, :1] * 0 + 3], axis=1)
    )
    split = standardize(Split(train=data, val=data, test=data))
    assert split.channel_std[1] == 1.0
    assert split.val is not None
    np.testing.assert_array_equal(split.val.signals[:, 1], 0)


def replace_signals(data: SignalSet, change: Any) -> SignalSet:
    signals = np.ascontiguousarray(change(data.signals), dtype=np.float32)
    return SignalSet(signals, data.labels, data.subjects, data.class_names)
