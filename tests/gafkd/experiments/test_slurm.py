"""The Slurm backend's pure parts: settings, stage order, squeue/sacct JSON, the status shape.

What needs a real Slurm (submission, requeue, the same results as the local backend) is in
tests/slurm/test_backend.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gafkd.config import ConfigError
from gafkd.experiments import slurm, slurm_state
from gafkd.experiments.screen import render
from gafkd.experiments.status import collect


def run(run_id: str, stage: str, needs: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"id": run_id, "stage": stage, "needs": list(needs), "run_dir": f"runs/g/{run_id}"}


def test_slurm_settings_are_split_from_grid_overrides_and_typed() -> None:
    grid_sets, options = slurm.split_options(
        ["train.epochs=2", "slurm.partition=gpu", "slurm.parallel=4", "slurm.mem_gb=7.5"]
    )
    assert grid_sets == ["train.epochs=2"]
    assert (options.partition, options.parallel, options.mem_gb) == ("gpu", 4, 7.5)
    assert options.gpus == 1  # the default: one GPU per run


def test_host_defaults_are_overridden_by_set() -> None:
    defaults = slurm.SlurmOptions(partition="lab", account="kd")
    _, options = slurm.split_options(["slurm.partition=long"], defaults)
    assert (options.partition, options.account) == ("long", "kd")


@pytest.mark.parametrize(
    ("item", "says"),
    [
        ("slurm.partitoin=gpu", "KEY one of partition"),
        ("slurm.parallel=four", "takes a int"),
        ("slurm.cpus=0", "cpus >= 1"),
    ],
)
def test_a_bad_slurm_setting_is_one_error_naming_it(item: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        slurm.split_options([item])


def test_stages_wait_only_for_stages_with_runs_left() -> None:
    runs = [
        run("t/a/seed0", "t"),
        run("u/a/seed0", "u"),
        run("s/a/seed0", "s", ("t/a/seed0", "u/a/seed0")),
    ]
    order = slurm.stage_order(runs, done={"u/a/seed0"})
    assert [(stage, waits) for stage, _, waits in order] == [("t", []), ("u", []), ("s", ["t"])]


def test_a_student_listed_before_its_teacher_stage_is_submitted_after_it() -> None:
    runs = [run("s/a/seed0", "s", ("t/a/seed0",)), run("t/a/seed0", "t")]
    assert [stage for stage, _, _ in slurm.stage_order(runs, done=set())] == ["t", "s"]


@pytest.mark.parametrize(
    ("runs", "says"),
    [
        ([run("s/a/seed0", "s", ("t/gone/seed0",))], "neither in this grid nor done"),
        ([run("t/a/seed0", "t"), run("t/b/seed0", "t", ("t/a/seed0",))], "cannot wait for itself"),
        (
            [run("a/x/seed0", "a", ("b/x/seed0",)), run("b/x/seed0", "b", ("a/x/seed0",))],
            "in a cycle",
        ),
    ],
)
def test_a_grid_whose_dependencies_cannot_be_met_is_refused(
    runs: list[dict[str, Any]], says: str
) -> None:
    with pytest.raises(ConfigError, match=says):
        slurm.stage_order(runs, done=set())


def test_no_sbatch_on_the_host_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ConfigError, match=r"no sbatch.*not a Slurm submit host"):
        slurm._require_commands()


# -- squeue and sacct JSON, as Slurm 22.05 (Debian 12) and 23.02+ print them ---------------------

SQUEUE_22 = {
    "jobs": [
        {"job_id": 41, "array_job_id": 40, "array_task_id": 0, "job_state": "RUNNING",
         "state_reason": "None"},
        {"job_id": 40, "array_job_id": 40, "array_task_id": None, "array_task_string": "1-3%2",
         "job_state": "PENDING", "state_reason": "JobArrayTaskLimit"},
        {"job_id": 44, "array_job_id": 44, "array_task_string": "0-1", "job_state": "PENDING",
         "state_reason": "Dependency"},
    ]
}  # fmt: skip
SQUEUE_23 = {
    "jobs": [
        {"job_id": 41, "array_job_id": {"set": True, "number": 40},
         "array_task_id": {"set": True, "number": 0}, "job_state": ["RUNNING"],
         "state_reason": "None"},
        {"job_id": 40, "array_job_id": {"set": True, "number": 40},
         "array_task_id": {"set": False, "number": 0}, "array_task_string": "1-3%2",
         "job_state": ["PENDING"], "state_reason": "JobArrayTaskLimit"},
    ]
}  # fmt: skip
SACCT_22 = {
    "jobs": [
        {"job_id": 38, "array": {"job_id": 37, "task_id": 1}, "nodes": "gpu1",
         "state": {"current": "FAILED", "reason": "None"},
         "exit_code": {"status": "FAILED", "return_code": 1}},
        {"job_id": 37, "array": {"job_id": 37, "task_id": 0}, "nodes": "gpu1",
         "state": {"current": "COMPLETED", "reason": "None"},
         "exit_code": {"status": "SUCCESS", "return_code": 0}},
    ]
}  # fmt: skip


@pytest.mark.parametrize("data", [SQUEUE_22, SQUEUE_23], ids=["22.05", "23.02"])
def test_squeue_rows_expand_a_collapsed_pending_array(data: dict[str, Any]) -> None:
    rows = list(slurm_state._squeue_rows(data["jobs"]))
    assert rows[0] == {"job_id": "40", "task": 0, "state": "RUNNING", "reason": ""}
    pending = [(row["task"], row["reason"]) for row in rows if row["job_id"] == "40"][1:]
    assert pending == [(1, "JobArrayTaskLimit"), (2, "JobArrayTaskLimit"), (3, "JobArrayTaskLimit")]


def test_sacct_rows_carry_state_and_exit_code() -> None:
    rows = list(slurm_state._sacct_rows(SACCT_22["jobs"]))
    assert rows[0] == {
        "job_id": "37", "task": 1, "state": "FAILED", "reason": "", "exit_code": 1, "node": "gpu1",
    }  # fmt: skip


def slurm_batch(tmp_path: Path) -> Path:
    """A grid of 2 teachers and 2 students submitted as arrays 37 and 40, with 1 result."""
    runs = [
        run("teacher/a/seed0", "teacher"),
        run("teacher/a/seed1", "teacher"),
        run("student/a/seed0", "student", ("teacher/a/seed0",)),
        run("student/a/seed1", "student", ("teacher/a/seed1",)),
    ]
    for row in runs:
        row["epochs"] = 3
    folder = tmp_path / "runs" / "g" / ".batch"
    folder.mkdir(parents=True)
    (folder / "plan.json").write_text(json.dumps({"grid": "g", "runs": runs}))
    stages = {
        "teacher": {
            "job_id": "37",
            "runs": ["teacher/a/seed0", "teacher/a/seed1"],
            "tasks": ["37_0", "37_1"],
        },
        "student": {
            "job_id": "40",
            "runs": ["student/a/seed0", "student/a/seed1"],
            "tasks": ["40_0", "40_1"],
        },
    }
    record = {"backend": "slurm", "host": "login1", "submitted": "x", "stages": stages}
    (folder / "slurm.json").write_text(json.dumps(record))
    done = tmp_path / "runs" / "g" / "teacher" / "a" / "seed0"
    done.mkdir(parents=True)
    (done / "result.json").write_text("{}")
    return folder


def test_batch_state_maps_slurm_states_onto_the_runner_statuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = slurm_batch(tmp_path)
    monkeypatch.setattr(slurm_state, "squeue", lambda ids: [
        {"job_id": "40", "task": 0, "state": "PENDING", "reason": "Dependency"},
    ])  # fmt: skip
    monkeypatch.setattr(slurm_state, "sacct", lambda ids: list(
        slurm_state._sacct_rows(SACCT_22["jobs"])
    ))  # fmt: skip
    state = slurm_state.batch_state(folder, tmp_path)
    runs = state["runs"]
    assert runs["teacher/a/seed0"]["status"] == "done"
    assert runs["teacher/a/seed1"]["status"] == "failed"
    assert runs["teacher/a/seed1"]["error"] == "Slurm failed (exit code 1)"
    assert (runs["student/a/seed0"]["status"], runs["student/a/seed0"]["reason"]) == (
        "queued",
        "Dependency",
    )
    assert runs["student/a/seed1"]["status"] == "blocked"  # its teacher failed: afterok never
    assert runs["student/a/seed1"]["error"] == "teacher run teacher/a/seed1 failed"
    assert state["runner"]["finished"] is None  # one run still pending


def test_status_screen_of_a_slurm_batch_shows_jobs_and_pending_reasons(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slurm_batch(tmp_path)
    monkeypatch.setattr(slurm_state, "squeue", lambda ids: [
        {"job_id": "37", "task": 1, "state": "RUNNING", "reason": ""},
        {"job_id": "40", "task": None, "state": "PENDING", "reason": "Dependency"},
    ])  # fmt: skip
    monkeypatch.setattr(slurm_state, "sacct", lambda ids: [])
    status = collect(tmp_path, nvml=None)
    (batch,) = status["batches"]
    assert batch["runner"]["backend"] == "slurm"
    assert batch["runner"]["alive"]
    assert batch["counts"]["running"] == 1
    assert [w["reason"] for w in batch["waiting"]] == ["Dependency", "Dependency"]
    from rich.console import Console

    console = Console(width=120, record=True)
    console.print(render(status))
    text = console.export_text()
    assert "Slurm jobs 37, 40 running" in text
    assert "queued student/a/seed0: Dependency" in text


def test_cancelled_by_the_user_is_cancelled_not_blocked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = slurm_batch(tmp_path)
    (folder / "cancelled.json").write_text(json.dumps(["student/a/seed0"]))
    rows = [
        {"job_id": "37", "task": 1, "state": "COMPLETED", "reason": ""},
        {"job_id": "40", "task": 0, "state": "CANCELLED", "reason": ""},
        {"job_id": "40", "task": 1, "state": "CANCELLED", "reason": "DependencyNeverSatisfied"},
    ]
    monkeypatch.setattr(slurm_state, "squeue", lambda ids: [])
    monkeypatch.setattr(slurm_state, "sacct", lambda ids: rows)
    runs = slurm_state.batch_state(folder, tmp_path)["runs"]
    assert runs["student/a/seed0"]["status"] == "cancelled"
    assert runs["student/a/seed1"]["status"] == "blocked"
    assert runs["student/a/seed1"]["error"] == "teacher run teacher/a/seed1 failed"
    assert runs["teacher/a/seed1"]["error"] == "the job ended without a result.json"


def test_a_local_launch_of_a_grid_with_jobs_in_slurm_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gafkd.experiments.launch import launch

    folder = tmp_path / "runs" / "kd_alpha" / ".batch"
    folder.mkdir(parents=True)
    (folder / "slurm.json").write_text(json.dumps({"stages": {"s": {"job_id": "12"}}}))
    monkeypatch.setattr(slurm, "active_jobs", lambda root, grid: ["12"])
    with pytest.raises(ConfigError, match=r"still has jobs in Slurm \(12\)"):
        launch("kd_alpha", ["dataset=watch"], tmp_path)
    assert not (folder / "plan.json").exists()  # nothing planned, nothing started


def test_a_run_of_another_config_is_not_done_for_slurm_either(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same check as the local runner (`plan.set_aside_changed`) before submitting."""
    import io
    from dataclasses import asdict

    from gafkd import rundir
    from gafkd.config import load_config
    from gafkd.experiments.batchdir import write_run_config
    from gafkd.experiments.plan import plan_grid

    monkeypatch.setattr(slurm, "_require_commands", lambda: None)  # nothing is submitted
    sets = ["dataset=watch", "seed=0", "train.alpha=[0.3]", "train.epochs=1"]
    for planned in plan_grid("kd_alpha", sets, tmp_path):  # every run finished, 1 epoch
        config_path = write_run_config(tmp_path, asdict(planned) | {"needs": list(planned.needs)})
        rundir.save_config(load_config(config_path), config_path.parent)
        rundir.save_json({"reported_acc": 50.0}, config_path.parent / rundir.RESULT)
    out = io.StringIO()
    slurm.submit(tmp_path, "kd_alpha", sets, dry=True, out=out)
    assert out.getvalue().count("0 runs (1 done)") == 3  # the same config: all done
    with pytest.raises(ConfigError, match=r"3 runs of grid 'kd_alpha' .*\(train.epochs: 1 -> 2\)"):
        slurm.submit(tmp_path, "kd_alpha", [*sets[:3], "train.epochs=2"], dry=True, out=out)
    out = io.StringIO()
    slurm.submit(tmp_path, "kd_alpha", [*sets[:3], "train.epochs=2"], dry=True, out=out,
                 rerun_changed=True)  # fmt: skip
    assert "launching moves them to" in out.getvalue()
    assert "--array=0-0  1 runs (0 done)" in out.getvalue()
