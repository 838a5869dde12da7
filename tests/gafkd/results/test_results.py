"""Results of a grid, on a results tree written by real tiny training runs.

The tree is what a batch leaves (the batch-state format): ``runs/tiny/.batch/plan.json`` lists
every planned run, each done run has its ``result.json`` (written by `train_run`), one run has
failed (``error.txt``) and one is still queued (``state.json``).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gafkd import results
from gafkd.config import ConfigError, from_dict, to_dict
from gafkd.results import GroupRow, Reference, ReferenceRow, RunRow, aggregate, collect
from gafkd.run import train_run

GROUPS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {  # group -> (stage, axes, config)
    "gaf_teacher/dataset-tiny_model-wrn10_1": (
        "gaf_teacher",
        {"dataset": "tiny", "student.name": "wrn10_1"},
        {"student": {"name": "wrn10_1", "input": "image"}},
    ),
    "student/dataset-tiny_alpha-0.3": (
        "student",
        {"dataset": "tiny", "train.alpha": 0.3},
        {"student": {"name": "wrn10_1", "input": "signal"}, "train": {"alpha": 0.3}},
    ),
}
FAILED = "gaf_teacher/dataset-tiny_model-wrn10_1/seed1"
QUEUED = "student/dataset-tiny_alpha-0.3/seed2"


def _run_config(tiny_npz: Path, name: str, seed: int, run_dir: Path, keys: Any) -> dict[str, Any]:
    table: dict[str, Any] = {
        "name": name,
        "seed": seed,
        "out_dir": run_dir.as_posix(),
        "data": {
            "source": "npz",
            "path": tiny_npz.as_posix(),
            "test_subjects": [0],
            "val_subjects": [1],
        },
        "imaging": {"image_size": 8},
        "train": {"epochs": 2, "batch_size": 16},
    }
    for key, value in keys.items():
        table[key] = {**table.get(key, {}), **value}
    return to_dict(from_dict(table))


@pytest.fixture(scope="module")
def grid_root(tmp_path_factory: pytest.TempPathFactory, tiny_npz: Path) -> Path:
    """runs/tiny: 2 groups x 3 seeds; 4 runs trained for real, 1 failed, 1 queued."""
    root = tmp_path_factory.mktemp("project")
    runs, states = [], {}
    for group, (stage, axes, keys) in GROUPS.items():
        for seed in range(3):
            run_id = f"{group}/seed{seed}"
            run_dir = f"runs/tiny/{run_id}"
            config = _run_config(tiny_npz, f"tiny/{run_id}", seed, root / run_dir, keys)
            runs.append(
                {
                    "id": run_id,
                    "stage": stage,
                    "group": group,
                    "axes": {**axes, "seed": seed},
                    "run_dir": run_dir,
                    "needs": [],
                    "epochs": 2,
                    "config": config,
                }
            )
            states[run_id] = {"status": "done", "attempts": 1, "error": None}
            if run_id == QUEUED:
                states[run_id] = {"status": "queued", "attempts": 0, "error": None}
            elif run_id == FAILED:
                (root / run_dir).mkdir(parents=True)
                (root / run_dir / "error.txt").write_text(
                    "Traceback ...\nTrainingError: loss nan\n"
                )
                states[run_id] = {"status": "failed", "attempts": 3, "error": None}
            else:
                train_run(from_dict(config))
    batch = root / "runs" / "tiny" / ".batch"
    batch.mkdir(parents=True)
    plan = {
        "grid": "tiny",
        "created": "2026-11-25T10:00:00+0000",
        "overrides": [],
        "stages": ["gaf_teacher", "student"],
        "runs": runs,
    }
    (batch / "plan.json").write_text(json.dumps(plan))
    (batch / "state.json").write_text(json.dumps({"grid": "tiny", "runs": states}))
    return root / "runs" / "tiny"


def _result_values(grid_root: Path, group: str, key: str = "reported_acc") -> list[float]:
    paths = sorted((grid_root / group).glob("seed*/result.json"))
    return [json.loads(p.read_text())[key] for p in paths]


def test_collect_lists_every_planned_run_with_its_status(grid_root: Path) -> None:
    rows = {row.id: row for row in collect(grid_root)}
    assert len(rows) == 6
    assert rows[FAILED].status == "failed"
    assert rows[FAILED].detail == "TrainingError: loss nan"
    assert rows[QUEUED].status == "missing"
    assert rows[QUEUED].detail == "queued"
    done = [row for row in rows.values() if row.status == "done"]
    assert len(done) == 4
    assert all(row.report == "final" and row.accuracy is not None for row in done)
    assert collect(grid_root / ".batch") == list(rows.values())  # the .batch folder works too


def test_aggregate_gives_numpy_mean_and_population_std_over_done_seeds(grid_root: Path) -> None:
    groups = {g.group: g for g in aggregate(collect(grid_root))}
    for name, group in groups.items():
        values = _result_values(grid_root, name)
        assert group.values == pytest.approx(values)
        assert group.mean == pytest.approx(np.mean(values))
        assert group.std == pytest.approx(np.std(values, ddof=0))
        assert group.n_done == 2
        assert group.n_expected == 3
        assert group.report == "final"
        assert "seed" not in group.axes
    assert groups["gaf_teacher/dataset-tiny_model-wrn10_1"].flag == "2/3 seeds (seed1 failed)"
    assert groups["student/dataset-tiny_alpha-0.3"].flag == "2/3 seeds (seed2 queued)"


def test_aggregate_reads_another_accuracy_when_asked(grid_root: Path) -> None:
    group = aggregate(collect(grid_root), metric="best_test_acc")[0]
    values = _result_values(grid_root, group.group, "best_test_acc")
    assert group.metric == "best_test_acc"
    assert group.mean == pytest.approx(np.mean(values))
    with pytest.raises(ConfigError, match="metric 'best_acc' is unknown"):
        aggregate([], metric="best_acc")  # type: ignore[arg-type]


def _digest_rows(values: list[float]) -> list[RunRow]:
    return [
        RunRow(
            f"g/a/seed{k}",
            "gaf_teacher",
            "g/a",
            {"seed": k},
            k,
            "done",
            v,
            "best_test",
            {"reported_acc": v},
        )
        for k, v in enumerate(values)
    ]


@pytest.mark.parametrize(
    ("values", "mean", "std"),
    [
        ([63.0491, 63.3270, 62.9797], 63.1186, 0.1501),  # GAF WRN16-1, lab-notes digest
        ([64.1604, 64.8029, 65.3933], 64.7855, 0.5035),  # GAF WRN28-3
        ([68.9703, 67.6680, 67.0429], 67.8937, 0.8029),  # KD T WRN16-1 -> S WRN16-1
    ],
)
def test_aggregate_reproduces_the_lab_notes_mean_and_std(
    values: list[float], mean: float, std: float
) -> None:
    group = aggregate(_digest_rows(values))[0]
    assert round(group.mean or 0, 4) == mean
    assert round(group.std or 0, 4) == std


def test_state_failed_without_error_file_is_failed(tmp_path: Path) -> None:
    batch = tmp_path / "runs" / "g" / ".batch"
    batch.mkdir(parents=True)
    run = {
        "id": "s/x/seed0",
        "stage": "s",
        "group": "s/x",
        "axes": {"seed": 0},
        "run_dir": "runs/g/s/x/seed0",
    }
    (batch / "plan.json").write_text(json.dumps({"grid": "g", "runs": [run]}))
    state = {"runs": {"s/x/seed0": {"status": "failed", "error": "CUDA out of memory"}}}
    (batch / "state.json").write_text(json.dumps(state))
    [row] = collect(tmp_path / "runs" / "g")
    assert (row.status, row.detail) == ("failed", "CUDA out of memory")
    assert aggregate([row])[0].flag == "0/1 seeds (seed0 failed)"


def test_collect_without_a_plan_says_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"holds no \.batch/plan\.json"):
        collect(tmp_path)


def _reference(groups: list[GroupRow]) -> Reference:
    student = groups[1]
    return Reference(
        title="earlier",
        source="notes",
        report="best_test",
        rows=(
            ReferenceRow(
                mean=50.0,
                std=1.0,
                n=3,
                label="by match",
                match={"stage": "gaf_teacher", "student.name": "wrn10_1"},
            ),
            ReferenceRow(mean=60.0, group=student.group, label="by group"),
            ReferenceRow(
                mean=70.0, label="nothing", match={"stage": "student", "train.alpha": 0.9}
            ),
        ),
    )


def test_reference_rows_match_by_axes_or_group_and_unmatched_are_listed(grid_root: Path) -> None:
    groups = aggregate(collect(grid_root))
    chosen, unused = results.match_reference(groups, _reference(groups))
    assert chosen[groups[0].group].label == "by match"
    assert chosen[groups[1].group].label == "by group"
    assert [r.label for r in unused] == ["nothing"]


def test_more_specific_reference_row_wins(grid_root: Path) -> None:
    groups = aggregate(collect(grid_root))
    rows = (
        ReferenceRow(mean=1.0, label="stage only", match={"stage": "student"}),
        ReferenceRow(mean=2.0, label="stage+alpha", match={"stage": "student", "train.alpha": 0.3}),
    )
    chosen, unused = results.match_reference(groups, Reference("r", rows))
    assert chosen[groups[1].group].label == "stage+alpha"
    assert [r.label for r in unused] == ["stage only"]


def test_reference_match_falls_back_to_the_run_config_but_not_to_unknown_keys(
    grid_root: Path,
) -> None:
    groups = aggregate(collect(grid_root))
    rows = (  # student.name is no axis of the student stage, but its config says wrn10_1
        ReferenceRow(
            mean=1.0, label="config", match={"stage": "student", "student.name": "wrn10_1"}
        ),
        ReferenceRow(mean=2.0, label="unknown", match={"stage": "student", "teacher.image.x": "a"}),
    )
    chosen, unused = results.match_reference(groups, Reference("r", rows))
    assert chosen[groups[1].group].label == "config"
    assert [r.label for r in unused] == ["unknown"]


def test_markdown_has_one_table_per_stage_with_flags_and_reference(grid_root: Path) -> None:
    groups = aggregate(collect(grid_root))
    text = results.markdown(groups, _reference(groups))
    assert "ddof=0" in text.splitlines()[0]
    assert "test accuracy after the last epoch" in text.splitlines()[0]
    assert "Reference: earlier; source: notes; reports best test accuracy" in text
    tables = [line for line in text.splitlines() if line.startswith("|")]
    assert len(tables) == 6  # two stages: header, rule, one row each
    header, rule, row = tables[:3]
    assert header == "| dataset | model | accuracy | seeds | reference | Δ | reference row |"
    assert rule.count("---") == 7
    teacher = groups[0]
    assert f"{teacher.mean:.2f} ± {teacher.std:.2f}" in row
    assert "2/3 seeds (seed1 failed)" in row
    assert "50.00 ± 1.00" in row
    assert f"{teacher.mean - 50:+.2f}" in row  # type: ignore[operator]
    assert "| tiny | 0.3 |" in tables[5]
    assert "60.00 |" in tables[5]  # a reference row without std
    assert text.endswith("Reference rows beside no config of this grid (1):\n\n- nothing\n")


def test_csv_parses_back_to_the_groups(grid_root: Path) -> None:
    groups = aggregate(collect(grid_root))
    rows = list(csv.DictReader(io.StringIO(results.to_csv(groups, _reference(groups)))))
    assert [r["group"] for r in rows] == [g.group for g in groups]
    for row, group in zip(rows, groups, strict=True):
        assert float(row["mean"]) == pytest.approx(group.mean)
        assert float(row["std_ddof0"]) == pytest.approx(group.std)
        assert (int(row["n_done"]), int(row["n_expected"])) == (2, 3)
        assert row["flag"] == group.flag
    assert rows[0]["student.name"] == "wrn10_1"
    assert rows[0]["train.alpha"] == ""
    assert (rows[0]["ref_mean"], rows[0]["ref_std"], rows[1]["ref_std"]) == ("50.0", "1.0", "")


def test_write_all_writes_markdown_csv_and_the_figures(grid_root: Path) -> None:
    paths = results.write_all(grid_root, reference=results.LAB_REFERENCE)
    assert set(paths) == {"markdown", "csv", "accuracy", "alpha", "epochs"}
    assert all(path.parent == grid_root for path in paths.values())
    for kind in ("accuracy", "alpha", "epochs"):
        assert paths[kind].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = paths["markdown"].read_text()
    assert text.startswith("# Results: tiny")
    assert "Lab notes" in text
    n_rows = len(results.load_reference(results.LAB_REFERENCE).rows)  # none is about tiny data
    assert f"beside no config of this grid ({n_rows})" in text


def test_epoch_curves_of_real_runs_average_their_metrics_jsonl(grid_root: Path) -> None:
    rows = collect(grid_root)
    histories, warnings = results.read_histories(rows)
    assert warnings == []
    assert set(histories) == {r.id for r in rows if r.status == "done"}
    panels = results.epoch_panels(rows, histories)
    assert [p.title for p in panels] == ["gaf_teacher, dataset=tiny", "student, dataset=tiny"]
    for panel in panels:
        [curve] = panel.curves
        files = sorted((grid_root / curve.group).glob("seed*/metrics.jsonl"))
        assert len(files) == 2  # the failed and the queued seed have none
        lines = [[json.loads(line) for line in f.read_text().splitlines()] for f in files]
        accuracy = np.array([[line["test_acc"] for line in run] for run in lines])
        assert curve.epochs == (1, 2)
        assert curve.mean == pytest.approx(accuracy.mean(axis=0))
        assert curve.std == pytest.approx(accuracy.std(axis=0, ddof=0))
        assert curve.n == (2, 2)
        assert curve.label.endswith("(2/3 seeds)")


def test_runs_know_the_group_of_each_teacher_they_learn_from(tmp_path: Path) -> None:
    batch = tmp_path / "runs" / "g" / ".batch"
    batch.mkdir(parents=True)
    teacher = {"id": "t/a/seed0", "stage": "t", "group": "t/a", "run_dir": "runs/g/t/a/seed0"}
    student = {
        "id": "s/a/seed0",
        "stage": "s",
        "group": "s/a",
        "run_dir": "runs/g/s/a/seed0",
        "config": {"teachers": {"image": {"run": "runs/g/t/a/seed0"}, "signal": {"run": "x"}}},
    }
    (batch / "plan.json").write_text(json.dumps({"grid": "g", "runs": [teacher, student]}))
    rows = collect(tmp_path / "runs" / "g")
    assert [dict(r.teachers) for r in rows] == [{}, {"image": "t/a"}]  # x: not of this grid
    assert rows[1].run_dir == tmp_path / "runs" / "g" / "s" / "a" / "seed0"
    assert dict(aggregate(rows)[1].teachers) == {"image": "t/a"}


def test_plot_draws_stages_without_done_runs(tmp_path: Path) -> None:
    rows = [
        RunRow(
            "student/a/seed0",
            "student",
            "student/a",
            {"train.alpha": 0.5, "seed": 0},
            0,
            "missing",
            None,
            "",
        )
    ]
    path = results.plot(aggregate(rows), tmp_path / "plot.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def _empty_group(group: str, axes: dict[str, Any], settings: Any = None) -> GroupRow:
    stage = group.split("/")[0]
    return GroupRow(
        group, stage, axes, "reported_acc", "", (), (), 3, (), None, None, settings or {}
    )


def test_shipped_lab_reference_matches_the_shipped_grids_axes() -> None:
    reference = results.load_reference(results.LAB_REFERENCE)
    assert "not peer-reviewed" in reference.title
    assert reference.report == "best_test"
    d14 = {"dataset": "geneactiv14_500"}
    groups = [
        _empty_group("gaf_teacher/a", {**d14, "student.name": "wrn28_3"}),  # gaf_teachers
        _empty_group("gaf_teacher/b", d14, {"student.name": "wrn16_1"}),  # kd_alpha: in config
        _empty_group("kd_gaf/c", {**d14, "teacher.image.student.name": "wrn16_3"}),
        _empty_group("student/d", {**d14, "train.alpha": 0.3}),
        _empty_group("student/e", {"dataset": "geneactiv7_1000", "train.alpha": 0.9}),
        _empty_group("signal_teacher/f", d14),
    ]
    chosen, _ = results.match_reference(groups, reference)
    found = {g: (row.mean, row.std) for g, row in chosen.items()}
    assert found == {
        "gaf_teacher/a": (64.7855, 0.5035),
        "gaf_teacher/b": (63.1186, 0.1501),
        "kd_gaf/c": (68.0847, 0.2626),
        "student/d": (70.26, 0.36),
    }


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("title = 'x'\n[[row]]\nmean = 1.0\n", "give exactly one of group"),
        ("title = 'x'\n[[row]]\ngroup = 'g'\nmeen = 1.0\n", "unknown key 'meen'"),
        ("title = 'x'\n[[row]]\ngroup = 'g'\n", "mean is missing"),
        ("title = 'x'\n[[row]]\ngroup = 'g'\nmean = 'high'\n", "mean is 'high'"),
        ("title = 'x'\n[[row]]\ngroup = 'g'\nmean = 1\nn = 0\n", "n is 0; expected a count"),
        ("title = 'x'\n[[row]]\nmatch = { model = 'a' }\nmean = 1\n", "it needs|expected stage"),
        ("[[row]]\ngroup = 'g'\nmean = 1\n", "title is None"),
        ("title = 'x'\n", "no \\[\\[row\\]\\] tables"),
        ("title = 'x'\nreport = 'best'\n[[row]]\ngroup = 'g'\nmean = 1\n", "report is 'best'"),
        ("title = 'x\n", "is not valid TOML"),
    ],
)
def test_bad_reference_file_names_the_file_and_the_problem(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = tmp_path / "ref.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=problem) as error:
        results.load_reference(path)
    assert str(path) in str(error.value)


def test_missing_reference_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        results.load_reference(tmp_path / "nope.toml")
