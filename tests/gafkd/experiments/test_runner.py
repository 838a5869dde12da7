"""The local batch runner with real run processes on a tiny grid: order, retries, kills, locks."""

from __future__ import annotations

import io
import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from gafkd.config import ConfigError
from gafkd.experiments.batchdir import batch_dir, is_locked
from gafkd.experiments.launch import launch
from gafkd.experiments.plan import plan_grid, write_plan
from gafkd.experiments.runner import Slots, run_batch

TINY_GRID = """
name = "tiny"
[axes]
seed = [0, 1]
[base]
data = {{ source = "npz", path = "{data}", test_subjects = [0], val_subjects = [1] }}
imaging = {{ image_size = 8 }}
train = {{ epochs = {epochs}, batch_size = 16 }}
[[stages]]
name = "gaf_teacher"
base = {{ student = {{ name = "wrn10_1", input = "image" }} }}
[[stages]]
name = "signal_teacher"
base = {{ student = {{ name = "wrn10_1", input = "signal" }} }}
[[stages]]
name = "student"
base = {{ student = {{ name = "wrn10_1", input = "signal" }} }}
axes = {{ "train.alpha" = [0.3, 0.7] }}
teachers = {{ image = "gaf_teacher", signal = "signal_teacher" }}
{extra}
"""

FAILING_STAGE = """
[[stages]]
name = "broken"
base = { student = { name = "wrn10_1" }, train = { init_from = "no/such/run" } }
"""


class AlwaysHealthy:
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def healthy(self, gpu: int) -> tuple[bool, str]:
        return True, ""

    def snapshot(self) -> dict[str, Any]:
        return {}


@pytest.fixture
def grid_file(tmp_path: Path, tiny_npz: Path) -> Callable[..., Path]:
    def make(epochs: int = 2, extra: str = "") -> Path:
        path = tmp_path / "tiny.toml"
        path.write_text(TINY_GRID.format(data=tiny_npz.as_posix(), epochs=epochs, extra=extra))
        return path

    return make


def results(root: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted((root / "runs" / "tiny").rglob("result.json")):
        result = json.loads(path.read_text())
        out[str(path.parent.relative_to(root))] = {
            k: result[k] for k in ("final_test_acc", "final_train_loss", "best_val_acc")
        }
    return out


def state(root: Path) -> dict[str, Any]:
    return json.loads((batch_dir(root, "tiny") / "state.json").read_text())


def wait_for(condition: Callable[[], bool], seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_foreground_batch_runs_teachers_before_students(grid_file, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "a"
    ctrl_c = signal.getsignal(signal.SIGINT)
    launch(str(grid_file()), [], root, foreground=True, per_gpu=2, out=io.StringIO())
    assert signal.getsignal(signal.SIGINT) is ctrl_c  # the caller's Ctrl-C works again
    runs = state(root)["runs"]
    assert {s["status"] for s in runs.values()} == {"done"}
    assert len(runs) == 8
    assert len(results(root)) == 8
    for run_id, run in runs.items():
        if run_id.startswith("student/"):
            seed = run_id.rsplit("/", 1)[1]
            for teacher in (f"gaf_teacher/default/{seed}", f"signal_teacher/default/{seed}"):
                assert runs[teacher]["finished"] <= run["started"]
    assert state(root)["runner"]["finished"] is not None
    assert not is_locked(root, "tiny")


def test_each_run_sees_only_its_own_gpu(grid_file, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "gpus"

    write_plan(root, "tiny", plan_grid(str(grid_file(epochs=1)), ["seed=0"], root), [])
    # Two fake GPUs; without CUDA the runs fall back to the CPU, but their environment shows
    # which GPU the runner gave each of them.
    run_batch(root, "tiny", Slots({"0": 1, "1": 1}), health=AlwaysHealthy(), log=io.StringIO())  # type: ignore[arg-type]
    seen = {}
    for run_id, run in state(root)["runs"].items():
        result = json.loads((root / "runs/tiny" / run_id / "result.json").read_text())
        seen[run_id] = result["provenance"]["cuda_visible_devices"]
        assert seen[run_id] == str(run["gpu"])
    assert set(seen.values()) == {"0", "1"}


def test_killed_run_is_retried_and_the_batch_ends_with_the_same_results(
    grid_file, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    grid = str(grid_file(epochs=12))
    launch(grid, ["seed=0"], tmp_path / "clean", foreground=True, per_gpu=2, out=io.StringIO())
    root = tmp_path / "killed"
    launch(grid, ["seed=0"], root, per_gpu=2, out=io.StringIO())  # detached

    def running_with_checkpoint() -> bool:
        path = batch_dir(root, "tiny") / "state.json"
        if not path.exists():
            return False
        for run_id, run in state(root)["runs"].items():
            checkpoint = root / "runs/tiny" / run_id / "checkpoint.pt"
            if run["status"] == "running" and run["pid"] and checkpoint.exists():
                os.kill(run["pid"], signal.SIGKILL)  # in the middle of an epoch
                return True
        return False

    wait_for(running_with_checkpoint)
    wait_for(lambda: state(root)["runner"]["finished"] is not None)
    runs = state(root)["runs"]
    assert {s["status"] for s in runs.values()} == {"done"}
    assert sum(s["attempts"] for s in runs.values()) == 1
    assert results(root) == {
        k.replace("clean", "killed"): v for k, v in results(tmp_path / "clean").items()
    }


def test_killed_runner_resumes_without_rerunning_finished_runs(grid_file, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    grid = str(grid_file(epochs=3))
    root = tmp_path / "r"
    launch(grid, ["seed=0"], root, per_gpu=1, out=io.StringIO())
    wait_for(
        lambda: (
            (batch_dir(root, "tiny") / "state.json").exists()
            and any(s["status"] == "done" for s in state(root)["runs"].values())
        )
    )
    os.kill(state(root)["runner"]["pid"], signal.SIGKILL)
    wait_for(lambda: not is_locked(root, "tiny"))
    done_before = {k for k, s in state(root)["runs"].items() if s["status"] == "done"}
    mtimes = {k: (root / "runs/tiny" / k / "result.json").stat().st_mtime_ns for k in done_before}
    out = io.StringIO()
    launch("tiny", [], root, resume=True, foreground=True, per_gpu=1, out=out)
    assert {s["status"] for s in state(root)["runs"].values()} == {"done"}
    for run_id in done_before:
        assert f"start   {run_id}" not in out.getvalue()
        assert (root / "runs/tiny" / run_id / "result.json").stat().st_mtime_ns == mtimes[run_id]


def test_failing_run_is_marked_failed_and_the_rest_complete(grid_file, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "f"
    out = io.StringIO()
    launch(
        str(grid_file(epochs=1, extra=FAILING_STAGE)),
        ["seed=0"],
        root,
        foreground=True,
        per_gpu=2,
        retries=1,
        out=out,
    )
    runs = state(root)["runs"]
    broken = runs["broken/default/seed0"]
    assert broken["status"] == "failed"
    assert broken["attempts"] == 2  # the first try and one retry
    assert "no/such/run" in broken["error"]
    assert {s["status"] for k, s in runs.items() if k != "broken/default/seed0"} == {"done"}
    assert "failed  broken/default/seed0" in out.getvalue()


def test_second_launch_of_a_running_grid_is_refused(grid_file, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    grid = str(grid_file(epochs=3))
    root = tmp_path / "twice"
    launch(grid, ["seed=0"], root, per_gpu=1, out=io.StringIO())
    wait_for(lambda: is_locked(root, "tiny"))
    with pytest.raises(ConfigError, match="grid 'tiny' is already running \\(runner pid"):
        launch(grid, ["seed=0"], root, out=io.StringIO())
    wait_for(lambda: (batch_dir(root, "tiny") / "state.json").exists())  # the runner took over
    os.kill(state(root)["runner"]["pid"], signal.SIGTERM)  # stops cleanly: runs stay queued
    wait_for(lambda: not is_locked(root, "tiny"))
    assert "running" not in {s["status"] for s in state(root)["runs"].values()}


class HotGpuZero(AlwaysHealthy):
    def healthy(self, gpu: int) -> tuple[bool, str]:
        if gpu == 0:
            return False, "gpu 0: at 91 C, over its 90 C slowdown threshold for 3 samples"
        return True, ""

    def snapshot(self) -> dict[str, Any]:
        return {
            "0": {"healthy": False, "reason": self.healthy(0)[1]},
            "1": {"healthy": True, "reason": ""},
        }


def test_unhealthy_gpu_gets_no_new_runs(grid_file, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "hot"
    write_plan(root, "tiny", plan_grid(str(grid_file(epochs=1)), ["seed=0"], root), [])
    run_batch(root, "tiny", Slots({"0": 2, "1": 1}), health=HotGpuZero(), log=io.StringIO())  # type: ignore[arg-type]
    runs = state(root)["runs"]
    assert {s["status"] for s in runs.values()} == {"done"}
    assert {s["gpu"] for s in runs.values()} == {1}
    assert "slowdown threshold" in state(root)["gpus"]["0"]["reason"]


def test_cancel_stops_a_running_run_and_marks_it_cancelled(grid_file, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from gafkd.experiments.control import cancel

    root = tmp_path / "c"
    launch(str(grid_file(epochs=30)), ["seed=0"], root, per_gpu=1, out=io.StringIO())
    wait_for(
        lambda: (
            (batch_dir(root, "tiny") / "state.json").exists()
            and state(root)["runs"]["gaf_teacher/default/seed0"]["status"] == "running"
            and (root / "runs/tiny/gaf_teacher/default/seed0/checkpoint.pt").exists()
        )
    )
    cancel(root, "tiny", "gaf_teacher/default/seed0", out=io.StringIO())
    wait_for(lambda: state(root)["runs"]["gaf_teacher/default/seed0"]["status"] == "cancelled")
    cancel(root, "tiny", out=io.StringIO())  # the whole batch
    wait_for(lambda: not is_locked(root, "tiny"))
    runs = state(root)["runs"]
    assert runs["gaf_teacher/default/seed0"]["attempts"] == 0  # cancelled, not failed
    assert "failed" not in {s["status"] for s in runs.values()}
    assert (root / "runs/tiny/gaf_teacher/default/seed0/checkpoint.pt").exists()


def test_cancel_and_logs_name_an_unknown_run(grid_file, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from gafkd.experiments.control import cancel, show_log

    root = tmp_path / "u"
    write_plan(root, "tiny", plan_grid(str(grid_file()), ["seed=0"], root), [])
    with pytest.raises(ConfigError, match=r"no run 'student/default/seed9'.*did you mean"):
        cancel(root, "tiny", "student/default/seed9", out=io.StringIO())
    with pytest.raises(ConfigError, match="no run 'nope'"):
        show_log(root, "nope", out=io.StringIO())
    out = io.StringIO()
    show_log(root, "gaf_teacher/default/seed0", out=out)
    assert "has no log yet" in out.getvalue()


def test_logs_show_a_finished_runs_output(grid_file, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from gafkd.experiments.control import show_log

    root = tmp_path / "l"
    write_plan(root, "tiny", plan_grid(str(grid_file(epochs=1)), ["seed=0"], root), [])
    run_batch(root, "tiny", Slots({"cpu": 2}), log=io.StringIO())
    out = io.StringIO()
    show_log(root, "student/alpha-0.3/seed0", follow=True, out=out)
    assert "epoch 1/1" in out.getvalue()


# -- a grid never lies about what ran ------------------------------------------------------------

SOLO_GRID = """
name = "solo"
[base]
data = {{ source = "npz", path = "{data}", test_subjects = [0], val_subjects = [1] }}
train = {{ epochs = 1, batch_size = 16 }}
[[stages]]
name = "only"
base = {{ student = {{ name = "wrn10_1", input = "signal" }} }}
"""


@pytest.fixture
def solo_file(tmp_path: Path, tiny_npz: Path) -> Path:
    """A one-run grid named "solo" in a file named otherwise."""
    path = tmp_path / "my_experiment.toml"
    path.write_text(SOLO_GRID.format(data=tiny_npz.as_posix()))
    return path


def finished(root: Path, run: dict[str, Any]) -> None:
    """What a finished run of this planned config leaves in its folder (without training it)."""
    from gafkd import rundir
    from gafkd.config import load_config
    from gafkd.experiments.batchdir import write_run_config

    config_path = write_run_config(root, run)
    rundir.save_config(load_config(config_path), config_path.parent)
    rundir.save_json({"reported_acc": 50.0}, config_path.parent / rundir.RESULT)


def test_a_grid_file_launches_and_resumes_under_its_name_key(
    solo_file: Path, tmp_path: Path
) -> None:
    root = tmp_path / "lab"
    launch(str(solo_file), [], root, foreground=True, out=io.StringIO())
    assert (root / "runs/solo/.batch/plan.json").exists()  # where its runs are, too
    assert (root / "runs/solo/only/default/seed0/result.json").exists()
    assert not (root / "runs/my_experiment").exists()
    out = io.StringIO()
    launch(str(solo_file), [], root, resume=True, foreground=True, out=out)  # the file's batch
    assert "grid solo: 1 done" in out.getvalue()
    assert "start   only/default/seed0" not in out.getvalue()


def test_a_relaunch_with_other_settings_refuses_then_reruns_with_rerun_changed(
    solo_file: Path, tmp_path: Path
) -> None:
    root = tmp_path / "lab"
    launch(str(solo_file), [], root, foreground=True, out=io.StringIO())
    run_dir = root / "runs/solo/only/default/seed0"
    plan = (batch_dir(root, "solo") / "plan.json").read_text()
    result = (run_dir / "result.json").read_text()
    with pytest.raises(ConfigError) as error:
        launch(str(solo_file), ["train.epochs=2"], root, out=io.StringIO())
    assert str(error.value).startswith(
        "1 run of grid 'solo' (only/default/seed0) was made with another config "
        "(train.epochs: 1 -> 2): rerun them with --rerun-changed"
    )
    assert (batch_dir(root, "solo") / "plan.json").read_text() == plan  # nothing written
    assert (run_dir / "result.json").read_text() == result
    out = io.StringIO()
    launch(str(solo_file), ["train.epochs=2"], root, foreground=True, rerun_changed=True, out=out)
    assert "moved them to" in out.getvalue()
    assert json.loads((run_dir / "result.json").read_text())["epochs"] == 2
    (old,) = (batch_dir(root, "solo") / "superseded").glob("*/only/default/seed0")
    assert (old / "result.json").read_text() == result  # kept, not overwritten


def test_a_second_grid_file_with_the_same_name_does_not_count_the_first_ones_runs(
    grid_file: Callable[..., Path], tmp_path: Path
) -> None:
    root = tmp_path / "lab"
    first = plan_grid(str(grid_file(epochs=1)), ["seed=0"], root)
    write_plan(root, "tiny", first, [])
    for run in first:
        finished(root, asdict(run) | {"needs": list(run.needs)})
    other = tmp_path / "other" / "tiny.toml"  # the same name, another signal teacher
    other.parent.mkdir()
    other.write_text(
        grid_file(epochs=1)
        .read_text()
        .replace('input = "signal" }', 'input = "signal", dropout = 0.1 }', 1)
    )
    with pytest.raises(ConfigError) as error:
        launch(str(other), ["seed=0"], root, out=io.StringIO())
    message = str(error.value)
    assert message.startswith("3 runs of grid 'tiny' (signal_teacher/default/seed0, ")
    assert "student.dropout: 0.0 -> 0.1, teacher signal_teacher/default/seed0: rerun)" in message
    assert "gaf_teacher" not in message  # unchanged, still done
    out = io.StringIO()
    launch(str(other), ["seed=0"], root, dry=True, rerun_changed=True, out=out)
    assert "launching moves them to" in out.getvalue()
    assert (root / "runs/tiny/signal_teacher/default/seed0/result.json").exists()  # dry: kept


@pytest.mark.parametrize(
    ("overrides", "changes"),
    [
        (["seed=0"], []),
        (["seed=0", "train.epochs=1"], []),  # the same value, spelt out
        (["seed=0", "data.path=RELATIVE"], []),  # the same file, written from the lab folder
        (["seed=0", "train.image_memory=64KiB"], []),  # how images are made, not what
        (["seed=0", "train.temperature=2"], ["train.temperature: 4.0 -> 2.0"]),
        (["seed=0", "imaging.image_size=16"], ["imaging.image_size: 8 -> 16"]),
    ],
)
def test_a_run_is_done_only_with_its_planned_config(
    grid_file: Callable[..., Path],
    tmp_path: Path,
    tiny_npz: Path,
    overrides: list[str],
    changes: list[str],
) -> None:
    from gafkd.experiments.batchdir import config_changes

    root = tmp_path / "lab"
    grid = str(grid_file(epochs=1))
    for run in plan_grid(grid, ["seed=0"], root):
        finished(root, asdict(run) | {"needs": list(run.needs)})
    relative = os.path.relpath(tiny_npz, root)
    teacher = plan_grid(grid, [o.replace("RELATIVE", relative) for o in overrides], root)[0]
    row = asdict(teacher) | {"needs": list(teacher.needs)}
    assert config_changes(root, row) == changes


def test_runs_of_a_lab_folder_that_moved_are_still_done(
    grid_file: Callable[..., Path], tmp_path: Path
) -> None:
    """Saved configs name their teachers and run folders by absolute path; a lab folder copied
    or renamed keeps its runs (a student's teachers moved with it)."""
    import shutil

    from gafkd.experiments.batchdir import config_changes

    grid = str(grid_file(epochs=1))
    for run in plan_grid(grid, ["seed=0"], tmp_path / "lab"):
        finished(tmp_path / "lab", asdict(run) | {"needs": list(run.needs)})
    shutil.copytree(tmp_path / "lab", tmp_path / "moved")
    rows = [
        asdict(r) | {"needs": list(r.needs)}
        for r in plan_grid(grid, ["seed=0"], tmp_path / "moved")
    ]
    assert any(row["config"]["teachers"] for row in rows)  # a student is among them
    assert [config_changes(tmp_path / "moved", row) for row in rows] == [[]] * len(rows)
    longer = plan_grid(grid, ["seed=0", "train.epochs=2"], tmp_path / "moved")[0]
    row = asdict(longer) | {"needs": list(longer.needs)}
    assert config_changes(tmp_path / "moved", row) == ["train.epochs: 1 -> 2"]


def test_the_runner_does_not_count_a_result_of_another_config_as_done(
    grid_file: Callable[..., Path], tmp_path: Path
) -> None:
    root = tmp_path / "lab"
    grid = str(grid_file(epochs=1))
    for run in plan_grid(grid, ["seed=0"], root):
        finished(root, asdict(run) | {"needs": list(run.needs)})
    write_plan(root, "tiny", plan_grid(grid, ["seed=0", "train.temperature=2"], root), [])
    states = run_batch(root, "tiny", Slots({"cpu": 1}), log=io.StringIO())
    assert states["gaf_teacher/default/seed0"].status == "failed"
    assert "train.temperature: 4.0 -> 2.0" in str(states["gaf_teacher/default/seed0"].error)
    assert "--rerun-changed" in str(states["gaf_teacher/default/seed0"].error)
    assert {s.status for s in states.values()} == {"failed"}  # none is trained again


def test_two_launches_at_once_one_wins_the_other_gets_one_line(
    grid_file: Callable[..., Path], tmp_path: Path
) -> None:
    import subprocess
    import sys

    grid = str(grid_file(epochs=200))
    root = tmp_path / "race"
    launches = {
        seed: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gafkd",
                "launch",
                grid,
                "--root",
                str(root),
                f"--set=seed={seed}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (0, 1)
    }
    outputs = {seed: (p.communicate(timeout=120), p.returncode) for seed, p in launches.items()}
    winners = [seed for seed, (_, code) in outputs.items() if code == 0]
    assert len(winners) == 1, outputs
    ((winner_out, _), _) = outputs[winners[0]]
    ((loser_out, loser_err), _) = outputs[1 - winners[0]]
    assert "runner started" in winner_out
    assert loser_out == ""
    assert loser_err.startswith("error: grid 'tiny' is already running (runner pid ")
    assert loser_err.count("\n") == 1
    plan = json.loads((batch_dir(root, "tiny") / "plan.json").read_text())
    assert plan["overrides"] == [f"seed={winners[0]}"]
    wait_for(lambda: (batch_dir(root, "tiny") / "state.json").exists())
    os.kill(state(root)["runner"]["pid"], signal.SIGTERM)
    wait_for(lambda: not is_locked(root, "tiny"))


def test_a_launch_while_another_holds_the_grid_writes_nothing(
    grid_file: Callable[..., Path], tmp_path: Path
) -> None:
    from gafkd.experiments.batchdir import grid_lock

    root = tmp_path / "held"
    with grid_lock(root, "tiny"):
        with pytest.raises(ConfigError, match="grid 'tiny' is already running"):
            launch(str(grid_file()), ["seed=0"], root, out=io.StringIO())
        with pytest.raises(ConfigError, match="grid 'tiny' is already running"):
            launch(str(grid_file()), ["seed=0"], root, foreground=True, out=io.StringIO())
    assert sorted(p.name for p in (root / "runs").rglob("*")) == [".batch", "lock", "tiny"]
