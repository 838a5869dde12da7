"""Grid files expand into stable, readable runs in dependency order; bad grids fail early."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from gafkd.config import ConfigError
from gafkd.experiments.grid import expand, load_grid, parse_grid, shipped_grids
from gafkd.experiments.launch import launch, print_plan
from gafkd.experiments.plan import plan_grid
from gafkd.experiments.runner import Slots


def test_shipped_grids_expand_to_the_labs_experiments() -> None:
    assert set(shipped_grids()) == {"gaf_teachers", "kd_gaf", "kd_alpha", "imaging_ucr"}
    teachers = expand(load_grid("gaf_teachers"))
    assert len(teachers) == 4 * 4 * 3  # datasets x models x seeds
    kd_gaf = expand(load_grid("kd_gaf"))
    students = [r for r in kd_gaf if r.stage == "kd_gaf"]
    assert len(students) == 4 * 4 * 3  # one student per teacher size, dataset and seed
    alpha = expand(load_grid("kd_alpha"))
    assert [r.stage for r in alpha[:24]] == ["gaf_teacher"] * 12 + ["signal_teacher"] * 12
    assert len([r for r in alpha if r.stage == "student"]) == 4 * 5 * 3


def test_student_seed_k_learns_from_teacher_seed_k() -> None:
    runs = expand(load_grid("kd_alpha"), ["dataset=watch"])
    student = next(r for r in runs if r.id == "student/dataset-watch_alpha-0.3/seed2")
    assert student.needs == (
        "gaf_teacher/dataset-watch/seed2",
        "signal_teacher/dataset-watch/seed2",
    )
    assert (
        student.config["teachers"]["image"]["run"]
        == "runs/kd_alpha/gaf_teacher/dataset-watch/seed2"
    )
    assert student.config["train"]["alpha"] == 0.3
    assert student.group == "student/dataset-watch_alpha-0.3"
    assert student.axes == {"dataset": "watch", "seed": 2, "train.alpha": 0.3}


def test_teacher_only_axes_become_student_axes() -> None:
    runs = expand(load_grid("kd_gaf"), ["dataset=watch", "seed=0"])
    ids = [r.id for r in runs if r.stage == "kd_gaf"]
    assert ids == [
        f"kd_gaf/dataset-watch_image-{m}/seed0"
        for m in ("wrn16_1", "wrn16_3", "wrn28_1", "wrn28_3")
    ]


def test_expansion_is_stable() -> None:
    first = [(r.id, r.config) for r in expand(load_grid("kd_alpha"), ["dataset=watch"])]
    second = [(r.id, r.config) for r in expand(load_grid("kd_alpha"), ["dataset=watch"])]
    assert first == second


def test_set_overrides_config_keys_and_axes() -> None:
    runs = expand(
        load_grid("kd_alpha"),
        ["dataset=watch", "train.epochs=3", "train.alpha=[0.5]", "seed=[0, 1]"],
    )
    assert {r.epochs for r in runs} == {3}
    assert {r.axes["train.alpha"] for r in runs if r.stage == "student"} == {0.5}
    assert len(runs) == 2 + 2 + 2


def test_dataset_preset_sets_data_and_imaging() -> None:
    run = expand(load_grid("kd_alpha"), ["dataset=watch"])[0]
    assert run.config["data"]["source"] == "watch"
    assert run.config["imaging"]["image_size"] == 32


@pytest.mark.parametrize(
    ("grid", "overrides", "message"),
    [
        ("no_such_grid", [], "unknown grid 'no_such_grid'; shipped grids: "),
        ("kd_alpha", ["train.epoch=3"], "unknown config key 'train.epoch'"),
        ("kd_alpha", ["dataset=mnist"], "unknown dataset 'mnist'"),
        ("kd_alpha", [], "data.path is empty"),
        ("kd_alpha", ["data.path=no/such/folder"], "dataset path no/such/folder does not exist"),
        ("imaging_ucr", ["data.path=no/such/set"], "dataset path no/such/set does not exist"),
    ],
)
def test_bad_launch_input_fails_before_anything_runs(
    grid: str, overrides: list[str], message: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as error:
        launch(grid, overrides, tmp_path, dry=True)
    assert message in str(error.value)
    assert not (tmp_path / "runs").exists()


def test_student_naming_a_missing_teacher_stage_is_an_error() -> None:
    table = {"stages": [{"name": "student", "teachers": {"image": "gaf_teacher"}}]}
    with pytest.raises(
        ConfigError, match=r"names teacher stage 'gaf_teacher'.*not an earlier stage"
    ):
        parse_grid(table)


def test_unmatched_teacher_axes_are_an_error() -> None:
    table = {
        "stages": [
            {"name": "t", "axes": {"seed": [0]}, "base": {"student": {"input": "image"}}},
            {"name": "s", "axes": {"seed": [1]}, "teachers": {"image": "t"}},
        ]
    }
    with pytest.raises(ConfigError, match="needs a image teacher from stage 't'"):
        expand(parse_grid(table))


def test_gpu_index_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"GPU index \[7\] does not exist"):
        launch("kd_alpha", ["dataset=watch"], tmp_path, dry=True, gpus=[7])


def test_an_empty_gpu_list_is_an_error_not_the_cpu_here_and_every_gpu_in_the_runner(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match=r"^--gpus names no GPU"):
        launch("kd_alpha", ["dataset=watch"], tmp_path, gpus=[])
    assert not (tmp_path / "runs").exists()


def test_dry_run_prints_the_plan_and_changes_nothing(tmp_path: Path) -> None:
    out = io.StringIO()
    launch("kd_alpha", ["dataset=watch", "train.epochs=2"], tmp_path, dry=True, out=out)
    text = out.getvalue()
    assert "21 runs" in text
    assert "nothing is changed" in text
    assert "student/dataset-watch_alpha-0.1/seed0" in text
    assert "after: gaf_teacher/dataset-watch/seed0, signal_teacher/dataset-watch/seed0" in text
    assert not (tmp_path / "runs").exists()


def test_print_plan_lists_runs_in_order() -> None:
    runs = plan_grid("kd_alpha", ["dataset=watch", "seed=0"], Path("."))
    out = io.StringIO()
    print_plan("kd_alpha", runs, Slots({"0": 2, "1": 2}), out)
    lines = out.getvalue().splitlines()
    assert "onto gpu0, gpu1 (4 at a time)" in lines[0]
    assert lines[1].split()[1] == "gaf_teacher/dataset-watch/seed0"


def test_an_axis_of_bare_model_names_is_a_list_of_them() -> None:
    runs = expand(
        load_grid("gaf_teachers"), ["dataset=watch", "seed=[0]", "student.name=[wrn16_1, wrn28_1]"]
    )
    assert [run.config["student"]["name"] for run in runs] == ["wrn16_1", "wrn28_1"]


def test_a_bad_model_name_is_refused_when_the_grid_is_planned() -> None:
    with pytest.raises(ConfigError, match=r"model name '\[wrn16_1' must look like"):
        expand(load_grid("gaf_teachers"), ["dataset=watch", "student.name=[wrn16_1"])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"per_gpu": 0}, "--per-gpu is 0; give at least 1 run at a time"),
        ({"per_gpu": -1}, "--per-gpu is -1; give at least 1 run at a time"),
        ({"overrides": ["dataset=watch", "seed=[]"]}, "leaves axis 'seed' of grid 'kd_alpha'"),
        ({"grid": "../kd_alpha", "resume": True}, "grid name '../kd_alpha' is not a folder name"),
        ({"grid": "..", "resume": True}, "grid name '..' is not a folder name"),
    ],
)
@pytest.mark.parametrize("dry", [True, False])
def test_bad_launch_options_are_one_line_before_anything_is_written(
    options: dict[str, Any], message: str, dry: bool, tmp_path: Path
) -> None:
    arguments = {"grid": "kd_alpha", "overrides": ["dataset=watch"]} | options
    with pytest.raises(ConfigError) as error:
        launch(root=tmp_path, dry=dry, out=io.StringIO(), **arguments)
    assert message in str(error.value)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "runs").exists()


ESCAPE = "../../other/runs/g"  # from lab/runs/ into another lab folder's batch


@pytest.mark.parametrize(
    "argv",
    [
        ["status", "--grid", ESCAPE],
        ["status", "--grid", "a/b", "--json"],
        ["results", ESCAPE],
        ["cancel", ESCAPE],
        ["cancel", ESCAPE, "--run", "t/default/seed0"],
        ["logs", "t/default/seed0", "--grid", ESCAPE],
        ["launch", ESCAPE, "--resume"],
    ],
)
def test_a_grid_name_with_a_slash_is_one_line_and_touches_no_other_folder(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gafkd.cli import main

    other = tmp_path / "other" / "runs" / "g"
    (other / ".batch").mkdir(parents=True)
    plan = {"grid": "g", "runs": [{"id": "t/default/seed0", "run_dir": "runs/g/t/default/seed0"}]}
    (other / ".batch" / "plan.json").write_text(json.dumps(plan))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    (tmp_path / "lab").mkdir()
    assert main([*argv, "--root", str(tmp_path / "lab")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(
        f"error: grid name {argv[argv.index('--grid') + 1] if '--grid' in argv else ESCAPE!r}"
    )
    assert err.count("\n") == 1
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.name != "lab") == before
