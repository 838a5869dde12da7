"""The data behind each figure, checked exactly on a lab folder whose metrics are known.

The folder is written the way a batch and the trainer write it: ``.batch/plan.json`` in the
batch format, and per run ``result.json`` and ``metrics.jsonl`` through `gafkd.rundir`'s own
writers. Two seeds per config whose test accuracies differ by 2 points give mean = the lower + 1
and std (ddof=0) = 1 at every epoch.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from gafkd import results, rundir
from gafkd.results import aggregate, collect

EPOCHS = 3
SEEDS = (0, 1)


def _history(base: float, seed: int, epochs: int = EPOCHS) -> list[dict[str, Any]]:
    """test_acc = base + 10 * epoch + 2 * seed, as fit() logs each epoch."""
    return [
        {
            "epoch": e,
            "lr": 0.1,
            "train_loss": 1.0 / e,
            "test_acc": base + 10 * e + 2 * seed,
            "seconds": 0.5,
        }
        for e in range(1, epochs + 1)
    ]


def _lab(root: Path, stages: Sequence[tuple[str, dict[str, Any], dict[str, str], float]]) -> Path:
    """runs/syn with one config per (stage, axes, teachers role -> group, base accuracy)."""
    grid = root / "runs" / "syn"
    runs = []
    for stage, axes, teachers, base in stages:
        slug = "_".join(f"{k.split('.')[-1]}-{v}" for k, v in axes.items())
        group = f"{stage}/{slug}"
        for seed in SEEDS:
            run_id = f"{group}/seed{seed}"
            run_dir = f"runs/syn/{run_id}"
            config = {
                "seed": seed,
                "train": {"epochs": EPOCHS, "alpha": axes.get("train.alpha", 0.3)},
                "teachers": {
                    role: {"run": f"runs/syn/{t}/seed{seed}"} for role, t in teachers.items()
                },
            }
            runs.append(
                {
                    "id": run_id,
                    "stage": stage,
                    "group": group,
                    "axes": {**axes, "seed": seed},
                    "run_dir": run_dir,
                    "needs": [f"{t}/seed{seed}" for t in teachers.values()],
                    "epochs": EPOCHS,
                    "config": config,
                }
            )
            history = _history(base, seed)
            rundir.write_metrics(history, root / run_dir)
            final = history[-1]["test_acc"]
            result = {"reported_acc": final, "final_test_acc": final, "report": "final"}
            rundir.save_json(result, root / run_dir / rundir.RESULT)
    plan = {"grid": "syn", "created": "2026-12-06T02:00:00+0000", "overrides": [], "runs": runs}
    (grid / ".batch").mkdir(parents=True)
    (grid / ".batch" / "plan.json").write_text(json.dumps(plan))
    return grid


IMAGE = {"image": "gaf_teacher/dataset-a"}
BOTH = {**IMAGE, "signal": "signal_teacher/dataset-a"}
ALPHA_GRID = [
    ("gaf_teacher", {"dataset": "a"}, {}, 40.0),  # epoch 3: 70 and 72 -> 71 ± 1
    ("signal_teacher", {"dataset": "a"}, {}, 30.0),  # 61 ± 1
    ("gaf_teacher", {"dataset": "b"}, {}, 20.0),
    ("student", {"dataset": "a", "train.alpha": 0.9}, BOTH, 36.0),  # listed before 0.1
    ("student", {"dataset": "a", "train.alpha": 0.1}, BOTH, 34.0),
    ("one", {"dataset": "a", "train.alpha": 0.5}, IMAGE, 33.0),
]


@pytest.fixture
def lab(tmp_path: Path) -> Path:
    return _lab(tmp_path, ALPHA_GRID)


def test_epoch_curve_is_mean_and_population_std_over_seeds_per_epoch(lab: Path) -> None:
    rows = collect(lab)
    histories, warnings = results.read_histories(rows)
    assert warnings == []
    assert len(histories) == 12
    panels = {p.title: p for p in results.epoch_panels(rows, histories)}
    [curve] = panels["gaf_teacher, dataset=a"].curves
    assert curve.group == "gaf_teacher/dataset-a"
    assert curve.epochs == (1, 2, 3)
    assert curve.mean == (51.0, 61.0, 71.0)
    assert curve.std == (1.0, 1.0, 1.0)
    assert curve.n == (2, 2, 2)
    assert curve.seeds == (0, 1)
    assert curve.label == "gaf_teacher"
    students = panels["student, dataset=a"].curves
    assert [c.label for c in students] == ["α=0.9", "α=0.1"]  # noqa: RUF001
    assert students[1].mean == (45.0, 55.0, 65.0)


def test_epoch_panels_put_stages_in_rows_and_datasets_in_columns(lab: Path) -> None:
    rows = collect(lab)
    panels = results.epoch_panels(rows, results.read_histories(rows)[0])
    places = {p.title: (p.row, p.col) for p in panels}
    assert places == {
        "gaf_teacher, dataset=a": (0, 0),
        "gaf_teacher, dataset=b": (0, 1),
        "signal_teacher, dataset=a": (1, 0),
        "student, dataset=a": (2, 0),
        "one, dataset=a": (3, 0),
    }
    gaf_b = next(p for p in panels if p.title == "gaf_teacher, dataset=b")
    assert gaf_b.y == results.AxisRange(0.0, 60.0, "test accuracy (%)")  # 30..52: from 0
    column = results.AxisRange(30.0, 80.0, "test accuracy (%), axis from 30")  # 40..72
    assert {p.y for p in panels if p.col == 0} == {column}  # one axis per dataset


def _seed1(lab: Path, group: str = "student/dataset-a_alpha-0.1") -> Path:
    return lab / group / "seed1" / rundir.METRICS


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[:-9]), "its last line is cut off"),
        (lambda p: p.write_text(p.read_text().replace("{", "#", 1)), "line 1 is not JSON"),
        (lambda p: p.write_bytes(b"\x00\xff garbage\n"), "line 1 is not JSON"),
        (lambda p: p.write_text(""), "empty"),
        (
            lambda p: p.write_text(p.read_text().replace('"test_acc": 46.0', '"test_acc": "x"')),
            "line 1 is not epoch 1 with a numeric test_acc",
        ),
        (
            lambda p: p.write_text("".join(p.read_text().splitlines(True)[:2])),
            "it ends at epoch 2 of 3",
        ),
        (
            lambda p: p.write_text("".join(p.read_text().splitlines(True)[1:])),
            "line 1 is not epoch 1",
        ),
        (lambda p: p.unlink(), "is missing"),
    ],
)
def test_a_damaged_metrics_file_leaves_its_run_out_with_one_warning(
    lab: Path, damage: Any, problem: str
) -> None:
    damage(_seed1(lab))
    rows = collect(lab)
    histories, warnings = results.read_histories(rows)
    [warning] = warnings
    assert warning.startswith(f"warning: {_seed1(lab)} ")
    assert problem in warning
    assert warning.endswith("that run is left out of the epoch curves")
    assert "\n" not in warning
    panel = next(p for p in results.epoch_panels(rows, histories) if p.stage == "student")
    curve = panel.curves[1]
    assert curve.seeds == (0,)
    assert curve.mean == (44.0, 54.0, 64.0)
    assert curve.std == (0.0, 0.0, 0.0)
    assert curve.label == "α=0.1 (1/2 seeds)"  # noqa: RUF001


def test_alpha_panel_has_one_line_per_teacher_set_and_the_teachers_as_levels(lab: Path) -> None:
    groups = aggregate(collect(lab))
    panels = {p.title: p for p in results.alpha_panels(groups)}
    assert list(panels) == ["student, dataset=a", "one, dataset=a"]
    student = panels["student, dataset=a"]
    [line] = student.lines
    assert line.label == "image + signal teachers"
    assert line.alpha == (0.1, 0.9)  # sorted by alpha
    assert line.mean == (65.0, 67.0)  # final accuracies: 64 and 66, 66 and 68
    assert line.std == (1.0, 1.0)
    assert (line.n_done, line.n_expected) == ((2, 2), (2, 2))
    assert [(t.group, t.mean, t.std) for t in student.teachers] == [
        ("gaf_teacher/dataset-a", 71.0, 1.0),
        ("signal_teacher/dataset-a", 61.0, 1.0),
    ]
    assert [t.label for t in student.teachers] == [
        "image teacher (gaf_teacher): 71.00 ± 1.00",
        "signal teacher (signal_teacher): 61.00 ± 1.00",
    ]
    assert student.y == results.AxisRange(50.0, 80.0, "test accuracy (%), axis from 50")
    one = panels["one, dataset=a"]
    assert [line.label for line in one.lines] == ["image teacher"]
    assert [t.group for t in one.teachers] == ["gaf_teacher/dataset-a"]


def test_alpha_lines_split_by_teacher_variant(tmp_path: Path) -> None:
    """kd_gaf-style: students of two image-teacher sizes over alpha -> two lines, two levels."""
    small = {"image": "gaf_teacher/dataset-a_name-s"}
    big = {"image": "gaf_teacher/dataset-a_name-l"}
    grid = _lab(
        tmp_path,
        [
            ("gaf_teacher", {"dataset": "a", "student.name": "s"}, {}, 40.0),
            ("gaf_teacher", {"dataset": "a", "student.name": "l"}, {}, 50.0),
            (
                "student",
                {"dataset": "a", "teacher.image.student.name": "s", "train.alpha": 0.3},
                small,
                30.0,
            ),
            (
                "student",
                {"dataset": "a", "teacher.image.student.name": "l", "train.alpha": 0.3},
                big,
                31.0,
            ),
        ],
    )
    [panel] = results.alpha_panels(aggregate(collect(grid)))
    assert [line.label for line in panel.lines] == [
        "image teacher, GAF teacher=s",
        "image teacher, GAF teacher=l",
    ]
    assert [t.label for t in panel.teachers] == [
        "image teacher (gaf_teacher, model=s): 71.00 ± 1.00",
        "image teacher (gaf_teacher, model=l): 81.00 ± 1.00",
    ]


def test_points_per_config_with_reference_and_an_axis_that_says_where_it_starts(
    lab: Path,
) -> None:
    groups = aggregate(collect(lab))
    reference = results.Reference(
        "earlier", (results.ReferenceRow(mean=58.0, std=2.0, group="signal_teacher/dataset-a"),)
    )
    panels = {p.stage: p for p in results.point_panels(groups, reference)}
    assert list(panels) == ["gaf_teacher", "signal_teacher", "student", "one"]
    gaf = panels["gaf_teacher"]
    assert [(p.label, p.mean, p.std, p.n_done, p.n_expected) for p in gaf.points] == [
        ("dataset=a", 71.0, 1.0, 2, 2),
        ("dataset=b", 51.0, 1.0, 2, 2),
    ]
    [point] = panels["signal_teacher"].points
    assert (point.reference, point.reference_std) == (58.0, 2.0)
    assert [p.label for p in panels["student"].points] == ["α=0.9", "α=0.1"]  # noqa: RUF001
    assert [p.label for p in panels["one"].points] == ["dataset=a, α=0.5"]  # noqa: RUF001
    shared = results.AxisRange(40.0, 80.0, "test accuracy (%), axis from 40")  # 50 .. 72
    assert [p.y for p in panels.values()] == [shared] * 4


@pytest.mark.parametrize(
    ("lows", "highs", "expected"),
    [
        ([63.1], [64.0], (60.0, 70.0, "test accuracy (%), axis from 60")),
        ([60.5], [99.5], (50.0, 100.0, "test accuracy (%), axis from 50")),
        ([30.5], [40.0], (0.0, 50.0, "test accuracy (%)")),  # would start at 20: from 0
        ([12.0], [100.0], (0.0, 100.0, "test accuracy (%)")),
        ([], [], (0.0, 100.0, "test accuracy (%)")),
    ],
)
def test_axis_range_starts_at_zero_or_says_where(
    lows: list[float], highs: list[float], expected: tuple[float, float, str]
) -> None:
    assert results.axis_range(lows, highs, "test accuracy") == results.AxisRange(*expected)


def _png_chunks(data: bytes) -> list[bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, at = [], 8
    while at < len(data):
        length = int.from_bytes(data[at : at + 4], "big")
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        crc = int.from_bytes(data[at + 8 + length : at + 12 + length], "big")
        assert zlib.crc32(kind + body) == crc, kind
        chunks.append(kind)
        at += 12 + length
    return chunks


def test_write_all_writes_each_figure_as_a_valid_png_linked_from_results_md(lab: Path) -> None:
    paths = results.write_all(lab)
    assert list(paths) == ["markdown", "csv", "accuracy", "alpha", "epochs"]
    names = [p.name for p in paths.values()]
    assert names[2:] == ["results-accuracy.png", "results-alpha.png", "results-epochs.png"]
    text = paths["markdown"].read_text()
    for kind in ("accuracy", "alpha", "epochs"):
        path = paths[kind]
        assert path.parent == lab
        chunks = _png_chunks(path.read_bytes())
        assert (chunks[0], chunks[-1]) == (b"IHDR", b"IEND")
        assert {b"tEXt", b"tIME"}.isdisjoint(chunks)  # no version, no date
        assert f"]({path.name})" in text
    first = {kind: paths[kind].read_bytes() for kind in ("accuracy", "alpha", "epochs")}
    again = results.write_all(lab)
    assert {kind: again[kind].read_bytes() for kind in first} == first  # deterministic


def test_a_grid_without_alpha_gets_no_alpha_figure(tmp_path: Path) -> None:
    grid = _lab(tmp_path, ALPHA_GRID[:3])
    paths = results.write_all(grid)
    assert "alpha" not in paths
    assert not (grid / "results-alpha.png").exists()
    assert "results-alpha.png" not in paths["markdown"].read_text()


def test_gafkd_results_lists_the_plots_and_warns_in_one_line_on_a_damaged_file(lab: Path) -> None:
    _seed1(lab).write_bytes(_seed1(lab).read_bytes()[:-9])
    done = subprocess.run(
        [sys.executable, "-m", "gafkd", "results", "syn", "--root", str(lab.parent.parent)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        f"warning: {_seed1(lab)} is damaged (its last line is cut off); "
        "that run is left out of the epoch curves"
    ]
    last = done.stdout.strip().splitlines()[-1]
    plots = ", ".join(str(lab / f"results-{k}.png") for k in ("accuracy", "alpha", "epochs"))
    assert last == f"table: {lab / 'results.md'}  csv: {lab / 'results.csv'}  plots: {plots}"
