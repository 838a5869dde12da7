"""``launch --backend slurm`` end to end on the real single-node Slurm (stack.py), 2 fake GPUs.

A tiny ``kd_alpha`` (watch data, 1 epoch, one seed, two alphas) goes through submitit as one job
array per stage; the same grid through the local runner must give the same results table. A run
that Slurm interrupts (preemption: SIGTERM then USR2, as submitit's own ``_interrupt``) is
requeued and resumes from its checkpoint to the same result as a run that never stopped.
"""

from __future__ import annotations

import io
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from gafkd.config import ConfigError
from gafkd.experiments import slurm
from gafkd.experiments.control import cancel
from gafkd.experiments.launch import launch
from gafkd.experiments.status import collect
from gafkd.results import write_all

pytestmark = pytest.mark.slurm

SETS = ["dataset=watch", "train.epochs=1", "seed=[0]", "train.alpha=[0.3, 0.7]"]
SLURM_SETS = ["slurm.partition=debug", "slurm.cpus=1", "slurm.time_min=60"]
LONG_GRID = """
name = "long"
[axes]
dataset = ["watch"]
seed = [0]
[[stages]]
name = "teacher"
base = {{ student = {{ name = "wrn10_1", input = "signal" }}, train = {{ epochs = {epochs} }} }}
"""


def results_table(root: Path, grid: str) -> str:
    return write_all(root / "runs" / grid)["markdown"].read_text()


def read(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@pytest.fixture(scope="module")
def local_kd_alpha(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same tiny grid through the local runner: the table Slurm must reproduce."""
    root = tmp_path_factory.mktemp("local")
    launch("kd_alpha", SETS, root, foreground=True, out=io.StringIO())
    return root


def test_kd_alpha_on_slurm_gives_the_local_results_table(
    slurm_cluster: Any, local_kd_alpha: Path, tmp_path: Path
) -> None:
    out = io.StringIO()
    launch("kd_alpha", SETS + SLURM_SETS, tmp_path, backend="slurm", foreground=True, out=out)
    record = read(tmp_path / "runs" / "kd_alpha" / ".batch" / "slurm.json")
    assert list(record["stages"]) == ["gaf_teacher", "signal_teacher", "student"]
    student = record["stages"]["student"]
    teachers = [record["stages"][s]["job_id"] for s in ("gaf_teacher", "signal_teacher")]
    assert student["after"] == teachers  # afterok on both teacher arrays
    assert "grid kd_alpha: 4 done" in out.getvalue()

    plan = read(tmp_path / "runs" / "kd_alpha" / ".batch" / "plan.json")
    jobs = {run["id"]: read(tmp_path / run["run_dir"] / "slurm_job.json") for run in plan["runs"]}
    results = {run["id"]: read(tmp_path / run["run_dir"] / "result.json") for run in plan["runs"]}
    for run_id, job in jobs.items():  # one fake GPU each, as Slurm's gres gave it
        assert job["cuda_visible_devices"] in ("0", "1"), run_id
        assert results[run_id]["provenance"]["cuda_visible_devices"] == job["cuda_visible_devices"]
    last_teacher = max(r["finished"] for i, r in results.items() if "teacher" in i)
    first_student = min(j["started"] for i, j in jobs.items() if i.startswith("student/"))
    assert first_student >= last_teacher  # same timestamp format: strings compare in time order

    assert results_table(tmp_path, "kd_alpha") == results_table(local_kd_alpha, "kd_alpha")

    status = collect(tmp_path, nvml=None)
    (batch,) = status["batches"]
    assert batch["counts"]["done"] == 4
    assert (batch["runner"]["backend"], batch["runner"]["state"]) == ("slurm", "finished")


def test_a_preempted_run_is_requeued_and_resumes_to_the_same_result(
    slurm_cluster: Any, tmp_path: Path
) -> None:
    epochs = 6
    (tmp_path / "long.toml").write_text(LONG_GRID.format(epochs=epochs))
    launch(str(tmp_path / "long.toml"), [], tmp_path / "plain", foreground=True, out=io.StringIO())
    expected = read(next((tmp_path / "plain" / "runs").glob("long/teacher/*/seed0/result.json")))

    root = tmp_path / "slurm"
    launch(str(tmp_path / "long.toml"), SLURM_SETS, root, backend="slurm", out=io.StringIO())
    record = read(root / "runs" / "long" / ".batch" / "slurm.json")
    (task,) = record["stages"]["teacher"]["tasks"]  # a lone run is a plain job, not an array
    run_dir = planned_dir(root, "long")
    wait_until(lambda: len(lines(run_dir / "metrics.jsonl")) >= 2, f"2 epochs of {task}")
    assert len(lines(run_dir / "metrics.jsonl")) < epochs

    for signal in ("SIGTERM", "USR2"):  # preemption, as Slurm and submitit's _interrupt send it
        subprocess.run(["scancel", "--signal", signal, task], check=True)
    wait_until(lambda: "PENDING" in job_state(slurm_cluster, task), f"{task} requeued")
    slurm_cluster.scontrol("update", f"JobId={task}", "StartTime=now")  # skip the 120 s delay
    state = slurm.wait(root, "long", poll=1.0, out=io.StringIO())

    assert state["runs"]["teacher/dataset-watch/seed0"]["status"] == "done", state["runs"]
    job = read(run_dir / "slurm_job.json")
    assert job["slurm_restart_count"] == "1"
    result = read(run_dir / "result.json")
    assert result["reported_acc"] == expected["reported_acc"]
    plain_dir = next((tmp_path / "plain" / "runs").glob("long/teacher/*/seed0"))
    accuracies = [json.loads(line)["test_acc"] for line in lines(run_dir / "metrics.jsonl")]
    plain = [json.loads(line)["test_acc"] for line in lines(plain_dir / "metrics.jsonl")]
    assert accuracies == plain  # every epoch, bit for bit
    log = (run_dir / "log.txt").read_text()
    assert "resum" in log.lower()


def test_cancel_stops_the_slurm_jobs_and_marks_runs_cancelled(
    slurm_cluster: Any, tmp_path: Path
) -> None:
    (tmp_path / "long.toml").write_text(LONG_GRID.format(epochs=50))
    launch(str(tmp_path / "long.toml"), SLURM_SETS, tmp_path, backend="slurm", out=io.StringIO())
    run_dir = planned_dir(tmp_path, "long")
    wait_until(lambda: (run_dir / "slurm_job.json").exists(), "the job wrote its record")
    cancel(tmp_path, "long", out=io.StringIO())
    state = slurm.wait(tmp_path, "long", poll=1.0, out=io.StringIO())
    assert state["runs"]["teacher/dataset-watch/seed0"]["status"] == "cancelled"
    assert not (run_dir / "result.json").exists()


def test_an_unknown_partition_is_refused_before_anything_is_submitted(
    slurm_cluster: Any, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"partition 'gpux' does not exist.*partitions: debug"):
        launch("kd_alpha", [*SETS, "slurm.partition=gpux"], tmp_path, backend="slurm")
    assert not (tmp_path / "runs").exists()


def planned_dir(root: Path, grid: str) -> Path:
    (run,) = read(root / "runs" / grid / ".batch" / "plan.json")["runs"]
    return root / run["run_dir"]


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def job_state(cluster: Any, task: str) -> str:
    return str(cluster.scontrol("show", "job", task))


def wait_until(ready: Any, what: str, seconds: float = 180.0) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {seconds:.0f} s for {what}")
        time.sleep(0.5)
