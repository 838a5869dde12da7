"""The training loop and one run from a config, on a tiny dataset, on the CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from gafkd import rundir, train
from gafkd.cli import main
from gafkd.config import ConfigError, TrainConfig, load_config
from gafkd.run import train_run
from gafkd.train import TrainingError, lr_at, summarize


def metrics(run_dir: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (run_dir / rundir.METRICS).read_text().splitlines()]
    for row in rows:
        row.pop("seconds")
    return rows


def test_lr_schedule_steps_at_e18_e3_2e3() -> None:
    config = TrainConfig(epochs=200)
    lrs = [lr_at(epoch, config) for epoch in range(200)]
    assert lrs[:11] == [0.05] * 11
    assert set(lrs[11:66]) == {0.01}
    assert set(lrs[66:133]) == {0.001}
    assert set(lrs[133:]) == {0.0001}
    assert lr_at(1, TrainConfig(epochs=18)) == 0.01  # int(18 / 18) == 1, despite float rounding


def test_summary_reports_final_accuracy_by_default() -> None:
    history = [
        {"epoch": 1, "train_loss": 1.0, "test_acc": 50.0, "val_acc": 40.0},
        {"epoch": 2, "train_loss": 0.5, "test_acc": 70.0, "val_acc": 60.0},
        {"epoch": 3, "train_loss": 0.4, "test_acc": 65.0, "val_acc": 55.0},
    ]
    assert summarize(history, "final")["reported_acc"] == 65.0
    assert summarize(history, "best_test")["reported_acc"] == 70.0
    assert summarize(history, "best_val")["reported_acc"] == 70.0
    assert summarize(history, "best_val")["best_val_epoch"] == 2


def test_best_val_report_needs_a_validation_split() -> None:
    with pytest.raises(TrainingError, match="needs a validation split"):
        summarize([{"epoch": 1, "train_loss": 1.0, "test_acc": 50.0}], "best_val")


def test_plain_run_writes_a_complete_run_directory(make_config) -> None:  # type: ignore[no-untyped-def]
    config = load_config(make_config("plain"))
    result = train_run(config)
    run_dir = config.run_dir
    for name in ("config.toml", "metrics.jsonl", "checkpoint.pt", "model.pt", "result.json"):
        assert (run_dir / name).exists(), name
    assert load_config(run_dir / "config.toml") == config
    assert [row["epoch"] for row in metrics(run_dir)] == [1, 2]
    assert {"train_loss", "test_acc", "val_acc", "lr"} <= set(metrics(run_dir)[0])
    saved = json.loads((run_dir / "result.json").read_text())
    assert saved == result
    assert saved["report"] == "final"
    assert saved["reported_acc"] == saved["final_test_acc"]
    assert saved["provenance"]["seed"] == 0
    assert saved["provenance"]["torch_version"] == torch.__version__
    assert saved["provenance"]["device"] == "cpu"
    assert saved["n_params"] > 0


def test_finished_run_is_not_trained_again(make_config, capsys) -> None:  # type: ignore[no-untyped-def]
    config = load_config(make_config("again"))
    first = train_run(config)
    assert train_run(config) == first
    assert "already done" in capsys.readouterr().out


def test_run_dir_of_another_config_is_refused(make_config) -> None:  # type: ignore[no-untyped-def]
    config = load_config(make_config("clash", epochs=3))
    rundir.save_config(config, config.run_dir)
    other = load_config(make_config("clash", epochs=3, extra="momentum = 0.5"))
    with pytest.raises(ConfigError, match="holds a run with another config"):
        train_run(other)


@pytest.mark.parametrize("student_input", ["signal", "image"])
def test_fit_with_two_teachers_and_image_or_signal_student(make_config, student_input: str) -> None:  # type: ignore[no-untyped-def]
    make_config("t_image", input="image")
    make_config("t_signal", model="wrn10_2")
    extra = (
        '\n[teachers.image]\nconfig = "t_image.toml"\n[teachers.signal]\nconfig = "t_signal.toml"\n'
    )
    if student_input == "image":  # an image student with one (image) teacher
        extra = '\n[teachers.image]\nconfig = "t_image.toml"\n'
    config = load_config(make_config(f"kd_{student_input}", input=student_input, extra=extra))
    result = train_run(config)
    assert result["epochs"] == 2
    teacher_dir = Path(config.teachers["image"].config).parent / "runs" / "t_image"
    assert (teacher_dir / "result.json").exists()  # trained first because it was not done
    assert len(list((teacher_dir / "logits").glob("*.pt"))) == 1


def test_teacher_logits_are_computed_once_and_shared(make_config, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    make_config("shared_teacher")
    extra = '\n[teachers.signal]\nconfig = "shared_teacher.toml"\n'
    calls = []
    original = train.predict

    def counting_predict(model, split, data, batch_size):  # type: ignore[no-untyped-def]
        calls.append(train.input_kind(model))
        return original(model, split, data, batch_size)

    monkeypatch.setattr(train, "predict", counting_predict)
    first = load_config(make_config("student_a", epochs=3, extra=extra))
    train_run(first)
    teacher_calls = len(calls) - 3 * 2 - 2 * 2  # student: 3 epochs x (test, val); teacher's own run
    assert teacher_calls == 1  # one pass over the training split, not one per epoch
    calls.clear()
    second = load_config(make_config("student_b", epochs=3, extra=extra + "\n"))
    train_run(second)
    assert len(calls) == 3 * 2  # the second student reads the cached logits from the teacher's dir


def test_teachers_stay_frozen_in_eval_mode(make_config) -> None:  # type: ignore[no-untyped-def]
    teacher_config = load_config(make_config("frozen_teacher"))
    train_run(teacher_config)
    from gafkd.run import load_model, load_split, to_device

    teacher = load_model(teacher_config.run_dir, teacher_config, "signal")
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    teacher.train()
    student_config = load_config(make_config("frozen_student"))
    data = to_device(load_split(student_config), student_config, torch.device("cpu"), images=False)
    student = train_run.__globals__["_build"](student_config, 3, 3)
    train.fit(student, data, student_config, teachers={"signal": teacher})
    assert not teacher.training
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


def test_nan_loss_stops_the_run_naming_it_and_the_step(make_config, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    config = load_config(make_config("nan"))
    monkeypatch.setattr(train, "distillation_loss", lambda *a, **k: torch.tensor(float("nan")))
    with pytest.raises(
        TrainingError, match=r"run 'nan' \(seed 0\): loss is nan at epoch 1, step 1"
    ):
        train_run(config)
    assert "loss is nan" in (config.run_dir / "error.txt").read_text()
    assert not (config.run_dir / "result.json").exists()


def test_augmentation_turns_the_logit_cache_off(make_config) -> None:  # type: ignore[no-untyped-def]
    make_config("aug_teacher")
    extra = 'augment = true\n\n[teachers.signal]\nconfig = "aug_teacher.toml"\n'
    config = load_config(make_config("aug_student", extra=extra))
    train_run(config)
    assert not (Path(config.teachers["signal"].config).parent / "runs/aug_teacher/logits").exists()


def test_annealing_init_needs_the_same_architecture(make_config) -> None:  # type: ignore[no-untyped-def]
    other = load_config(make_config("ce_wide", model="wrn10_2"))
    train_run(other)
    config = load_config(make_config("annealed", extra=f'init_from = "{other.run_dir.as_posix()}"'))
    with pytest.raises(ConfigError, match="different architecture"):
        train_run(config)


def test_teacher_trained_on_other_data_is_refused(make_config) -> None:  # type: ignore[no-untyped-def]
    teacher = load_config(make_config("other_split"))
    train_run(teacher)
    extra = f'\n[teachers.signal]\nrun = "{teacher.run_dir.as_posix()}"\n'
    path = make_config("leaky", extra=extra)
    path.write_text(path.read_text().replace("test_subjects = [0]", "test_subjects = [2]"))
    with pytest.raises(ConfigError, match="same dataset and split"):
        train_run(load_config(path))


def test_killed_run_resumes_to_the_same_result(make_config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    straight = load_config(make_config("straight", epochs=20))
    train_run(straight)
    path = make_config("killed", epochs=20)
    killed = load_config(path)
    command = [sys.executable, "-m", "gafkd", "train", str(path)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (killed.run_dir / "checkpoint.pt").exists():
        assert process.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed.run_dir / "result.json").exists()
    assert rundir.load_checkpoint(killed.run_dir)["epoch"] < 19  # type: ignore[index]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    assert "already done" not in done.stdout
    a = json.loads((straight.run_dir / "result.json").read_text())
    b = json.loads((killed.run_dir / "result.json").read_text())
    for key in ("final_test_acc", "final_train_loss", "best_test_acc", "best_val_acc"):
        assert a[key] == b[key], key
    assert metrics(straight.run_dir) == metrics(killed.run_dir)
    weights_a = torch.load(straight.run_dir / "model.pt")
    weights_b = torch.load(killed.run_dir / "model.pt")
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)


def test_cli_reports_bad_input_in_one_line(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["train", str(tmp_path / "missing.toml")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert err.count("\n") == 1
    assert main(["train", "no_such_config"]) == 1
    assert "shipped:" in capsys.readouterr().err


def test_cli_set_overrides_a_field(make_config) -> None:  # type: ignore[no-untyped-def]
    path = make_config("cli_set")
    assert main(["train", str(path), "--set", "train.epochs=1"]) == 0
    assert json.loads((load_config(path).run_dir / "result.json").read_text())["epochs"] == 1
