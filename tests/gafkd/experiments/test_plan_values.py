"""Values that reach a shell line, a batch script or a TOML file are checked when the plan is made.

Slurm settings (``--set slurm.KEY=VALUE``, invoke.yaml's ``slurm:``), ``--set`` strings and the
grid and stage names that become job names and folders: a control character is refused with one
line naming the key, before anything is written, under ``--dry`` and without Slurm too. What is
written back as TOML reads back equal.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from gafkd.config import ConfigError, dump_toml, from_dict, load_config, to_dict
from gafkd.experiments import slurm
from gafkd.experiments.batchdir import write_run_config
from gafkd.experiments.grid import check_name, expand, parse_grid
from gafkd.experiments.launch import launch
from gafkd.experiments.plan import plan_grid
from provisioning.hosts import parse_host

WATCH = ["dataset=watch", "train.epochs=1", "seed=[0]"]
SBATCH = "is not allowed in a value that reaches the sbatch script"


def no_slurm(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine without sbatch, squeue, sacct and scancel."""
    monkeypatch.setattr(slurm.shutil, "which", lambda _: None)


@pytest.mark.parametrize("without_slurm", [False, True])
@pytest.mark.parametrize(
    ("item", "says"),
    [
        ("slurm.account=lab\ntouch x", f"--set slurm.account: a newline {SBATCH}"),
        ("slurm.partition=gpu\r", f"--set slurm.partition: a carriage return {SBATCH}"),
        ("slurm.qos=high\tx", f"--set slurm.qos: a tab {SBATCH}"),
        ("slurm.gres=gpu:1\x7f", f"--set slurm.gres: control character 0x7f {SBATCH}"),
        ("slurm.time_min=60\n", f"--set slurm.time_min: a newline {SBATCH}"),
    ],
)
def test_a_control_character_in_a_slurm_setting_is_refused_before_anything_is_written(
    item: str, says: str, without_slurm: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if without_slurm:
        no_slurm(monkeypatch)
    with pytest.raises(ConfigError) as error:
        launch("kd_alpha", [*WATCH, item], tmp_path, dry=True, backend="slurm")
    assert str(error.value).startswith(says), error.value
    assert "\n" not in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_a_newline_in_invoke_yamls_slurm_settings_is_refused_naming_the_host() -> None:
    host = parse_host("lab", {"slurm": {"partition": "gpu", "account": "lab\ntouch x"}})
    with pytest.raises(ConfigError) as error:
        slurm.check_host_settings(host.alias, host.slurm)
    assert str(error.value).startswith("invoke.yaml hosts.lab.slurm: --set slurm.account: a new")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("item", "says"),
    [
        ('name="run\ntouch x"', "--set name: a newline is not allowed"),
        ("data.mapping=a\x1bb", "--set data.mapping: control character 0x1b is not allowed"),
        ('dataset=["watch\r"]', "--set dataset: a carriage return is not allowed"),  # an axis
        ("train.epo\nchs=1", "--set 'train.epo\\nchs': a newline is not allowed"),
    ],
)
def test_a_control_character_in_a_set_string_is_refused_when_the_grid_is_planned(
    item: str, says: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_slurm(monkeypatch)
    for backend in ("local", "slurm"):
        with pytest.raises(ConfigError) as error:
            launch("kd_alpha", [*WATCH, item], tmp_path, dry=True, backend=backend)
        assert str(error.value).startswith(says), error.value
        assert "\n" not in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_a_control_character_in_a_train_set_string_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('name = "r"\n')
    with pytest.raises(ConfigError, match=r"^--set data\.path: a newline is not allowed"):
        load_config(path, ['data.path="a\\nb"'])


@pytest.mark.parametrize("name", ["kd_alpha", "gaf-teacher.v2", "A1"])
def test_plain_names_pass(name: str) -> None:
    assert check_name(name, "grid name") == name


@pytest.mark.parametrize("name", ["a b", "x\ny", "", ".batch", "..", "a/b", "k$(id)", "é"])
def test_a_name_that_could_surprise_a_shell_or_a_folder_is_refused(name: str) -> None:
    with pytest.raises(ConfigError, match=r"^grid name .* letters, digits"):
        check_name(name, "grid name")


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ({"name": "kd\ntouch x", "stages": [{"name": "s"}]}, "g.toml: grid name 'kd\\ntouch x'"),
        ({"name": "kd", "stages": [{"name": "s t"}]}, "g.toml: stage name 's t'"),
        ({"stages": [{"name": ".batch"}]}, "g.toml: stage name '.batch'"),
    ],
)
def test_grid_and_stage_names_are_checked_where_the_grid_file_is_read(
    table: dict[str, object], says: str
) -> None:
    with pytest.raises(ConfigError) as error:
        parse_grid(table, "g.toml")
    assert str(error.value).startswith(says), error.value


def test_a_grid_file_whose_name_would_break_the_job_name_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_slurm(monkeypatch)
    grid = tmp_path / "grids" / "mine.toml"
    grid.parent.mkdir()
    grid.write_text('name = "mine"\n[[stages]]\nname = "teach $(touch x)"\n')
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(ConfigError, match=r"stage name 'teach \$\(touch x\)'"):
        launch(str(grid), WATCH, root, dry=True, backend="slurm")
    assert list(root.iterdir()) == []


def test_strings_and_keys_round_trip_through_the_toml_writer() -> None:
    table = {
        "name": 'say "hi" \\ to C:\\lab é ✓',
        "controls": "tab\there\nnew\rline\x00\x01\x1f\x7fend",
        "list": ['a"b', "c\\d", 1, 2.5, True],
        "teachers": {"my role": {"run": "r"}, "x.y": {"run": "s"}, "plain": {}},
        "nested": {"deeper": {"value": -1e-5, "inf": float("inf")}},
    }
    assert tomllib.loads(dump_toml(table)) == table


def test_a_launch_toml_written_with_a_set_string_reads_back_equal(tmp_path: Path) -> None:
    tricky = 'C:\\lab "data" é\\'
    (run,) = expand(parse_grid({"stages": [{"name": "s"}]}), [f"data.mapping={tricky}"])
    assert run.config["data"]["mapping"] == tricky
    path = write_run_config(tmp_path, {"run_dir": run.run_dir, "config": run.config})
    written = tomllib.loads(path.read_text())
    assert written["data"] == run.config["data"]
    assert from_dict(written) == from_dict(run.config | {"out_dir": written["out_dir"]})


def test_the_resolved_config_with_a_tricky_string_round_trips(tmp_path: Path) -> None:
    config = from_dict({"name": 'a "b" \\c é', "teachers": {"image": {"run": "/x y"}}})
    path = tmp_path / "config.toml"
    path.write_text(dump_toml(to_dict(config)))
    assert load_config(path) == config


def test_the_shipped_grids_still_plan(tmp_path: Path) -> None:
    for grid in ("kd_alpha", "kd_gaf", "gaf_teachers"):
        assert plan_grid(grid, WATCH, tmp_path)


def test_a_root_folder_with_a_newline_is_refused_before_the_sbatch_script_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_slurm(monkeypatch)
    root = tmp_path / "lab\ntouch x"
    root.mkdir()
    with pytest.raises(ConfigError, match=r"^--root .*: a newline is not allowed in a folder"):
        launch("kd_alpha", WATCH, root, dry=True, backend="slurm")
    assert list(root.iterdir()) == []
