from __future__ import annotations

from pathlib import Path

import pytest

from gafkd.config import (
    ConfigError,
    RunConfig,
    apply_overrides,
    dump_toml,
    from_dict,
    load_config,
    to_dict,
)


def test_defaults_are_the_labs_protocol() -> None:
    config = RunConfig()
    assert config.train.batch_size == 64
    assert config.train.epochs == 200
    assert config.train.lr_values == (0.05, 0.01, 0.001, 0.0001)
    assert (config.train.momentum, config.train.weight_decay) == (0.9, 1e-4)
    assert (config.train.temperature, config.train.kd_weight) == (4.0, 0.7)
    assert config.imaging.image_size == 64
    assert config.imaging.layout == "gasf"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"trian": {}}, "unknown config key 'trian'"),
        ({"train": {"epoch": 3}}, "unknown config key 'train.epoch'"),
        ({"train": {"epochs": "ten"}}, "'train.epochs' is 'ten' (str); expected int"),
        ({"train": {"epochs": True}}, "'train.epochs' is True (bool); expected int"),
        ({"train": {"epochs": 0}}, "train.epochs must be >= 1"),
        ({"train": {"alpha": 1.5}}, "train.alpha must be in [0, 1]"),
        ({"imaging": {"layout": "rp"}}, "'imaging.layout' is 'rp'; expected one of"),
        ({"imaging": {"sample_range": [0, 1, 2]}}, "'imaging.sample_range': expected 2 values"),
        ({"teachers": {"audio": {"run": "x"}}}, "'teachers.audio' is 'audio'"),
        ({"teachers": {"image": {}}}, "give exactly one of run"),
        ({"data": {"source": "geneactiv", "classes": 12}}, "GENEActiv has 14 or 7"),
        ({"train": {"lr_values": [0.1]}}, "need one more value than steps"),
    ],
)
def test_bad_config_names_the_key(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        from_dict(table)
    assert message in str(error.value)


def test_overrides_are_read_as_toml_values() -> None:
    table = apply_overrides(
        {"train": {"epochs": 200}},
        ["train.epochs=5", "data.source=npz", "imaging.sample_range=[0, 1]", "name=x y"],
    )
    config = from_dict(table)
    assert config.train.epochs == 5
    assert config.data.source == "npz"
    assert config.imaging.sample_range == (0.0, 1.0)
    assert config.name == "x y"


def test_override_without_equals_is_an_error() -> None:
    with pytest.raises(ConfigError, match="not key=value"):
        apply_overrides({}, ["train.epochs"])


def test_resolved_config_round_trips_through_toml(tmp_path: Path) -> None:
    config = from_dict({"name": "r", "teachers": {"image": {"run": "/abs/teacher"}}})
    path = tmp_path / "config.toml"
    path.write_text(dump_toml(to_dict(config)))
    assert load_config(path) == config


def test_teacher_config_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "student.toml"
    path.write_text('[teachers.image]\nconfig = "teacher.toml"\n')
    config = load_config(path)
    assert Path(config.teachers["image"].config) == tmp_path / "teacher.toml"


def test_missing_config_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("name = \n")
    with pytest.raises(ConfigError, match=r"bad\.toml is not valid TOML"):
        load_config(path)


def test_run_dir_defaults_to_runs_name_seed() -> None:
    assert RunConfig(name="kd", seed=2).run_dir == Path("runs/kd/seed2")
