"""`invoke status`: collect() over a batch folder written per the batch-state format, render()."""

from __future__ import annotations

import io
import json
import os
import socket
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil  # type: ignore[import-untyped, unused-ignore]
import pynvml
import pytest
from rich.console import Console

from gafkd.config import ConfigError
from gafkd.experiments.status import collect, render, watch
from gafkd.gpu import nvml_session

GIB = 1024**3
STUDENT = "student/dataset-watch_alpha-{}/seed0"
TEACHER = "teacher/dataset-watch/seed0"


def stamp(seconds_ago: float = 0.0) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(time.time() - seconds_ago))


def dead_pid() -> int:
    return int(max(psutil.pids())) + 100_000


def planned(run_id: str, epochs: int) -> dict[str, Any]:
    stage = run_id.split("/")[0]
    return {
        "id": run_id,
        "stage": stage,
        "group": run_id.rsplit("/", 1)[0],
        "axes": {"dataset": "watch", "seed": 0},
        "run_dir": f"runs/kd_alpha/{run_id}",
        "needs": [] if stage == "teacher" else [TEACHER],
        "epochs": epochs,
        "config": {},
    }


def write_batch(root: Path, *, pid: int, heartbeat_age: float = 1.0) -> None:
    """kd_alpha: a done teacher (10 s/epoch), a running, a queued and a failed student."""
    batch = root / "runs" / "kd_alpha" / ".batch"
    batch.mkdir(parents=True)
    runs = [planned(TEACHER, 4), *(planned(STUDENT.format(a), 5) for a in ("0.3", "0.5", "0.7"))]
    plan = {
        "grid": "kd_alpha",
        "created": stamp(),
        "overrides": [],
        "stages": ["teacher", "student"],
        "runs": runs,
    }
    (batch / "plan.json").write_text(json.dumps(plan))
    idle = {
        "attempts": 0,
        "device": None,
        "gpu": None,
        "pid": None,
        "started": None,
        "finished": None,
        "error": None,
    }
    state = {
        "grid": "kd_alpha",
        "runner": {
            "pid": pid,
            "host": socket.gethostname(),
            "started": stamp(600),
            "heartbeat": stamp(heartbeat_age),
            "finished": None,
            "slots": {"0": 2},
        },
        "runs": {
            TEACHER: {
                **idle,
                "status": "done",
                "attempts": 1,
                "started": stamp(100),
                "finished": stamp(60),
            },
            STUDENT.format("0.3"): {
                **idle,
                "status": "running",
                "attempts": 1,
                "device": "cuda:0",
                "gpu": 0,
                "pid": os.getpid(),
                "started": stamp(20),
            },
            STUDENT.format("0.5"): {**idle, "status": "queued"},
            STUDENT.format("0.7"): {
                **idle,
                "status": "failed",
                "attempts": 3,
                "error": "FloatingPointError: loss is nan at [step 12]",
            },
        },
        "gpus": {
            "0": {"healthy": False, "reason": "gpu 0: XID 79 (fallen off the bus): needs a reboot"}
        },
    }
    (batch / "state.json").write_text(json.dumps(state))
    running = root / "runs" / "kd_alpha" / STUDENT.format("0.3")
    running.mkdir(parents=True)
    rows = [
        {"epoch": 1, "lr": 0.1, "train_loss": 1.2, "test_acc": 50.0, "seconds": 6.0},
        {"epoch": 2, "lr": 0.1, "train_loss": 0.9, "test_acc": 75.0, "seconds": 6.0},
    ]
    (running / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


class OneGpuNvml:
    """NVML with one H100 running this test process and a process that has since exited."""

    NVMLError = pynvml.NVMLError

    def nvmlInit(self) -> None:
        pass

    def nvmlShutdown(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return 1

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetName(self, handle: int) -> str:
        return "NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:
        return SimpleNamespace(total=80 * GIB, used=12 * GIB, free=68 * GIB)

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> SimpleNamespace:
        return SimpleNamespace(gpu=97, memory=40)

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        return 61

    def nvmlDeviceGetTemperatureThreshold(self, handle: int, threshold: int) -> int:
        return 93

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list[SimpleNamespace]:
        return [
            SimpleNamespace(pid=os.getpid(), usedGpuMemory=6 * GIB),
            SimpleNamespace(pid=dead_pid(), usedGpuMemory=None),
        ]


def nvml_works() -> bool:
    with nvml_session() as (session, _):
        return session is not None


def text_of(status: dict[str, Any]) -> str:
    console = Console(record=True, width=120)
    console.print(render(status))
    return console.export_text()


def test_collect_counts_runs_and_reads_the_running_run(tmp_path: Path) -> None:
    write_batch(tmp_path, pid=os.getpid())
    (batch,) = collect(tmp_path, nvml=OneGpuNvml())["batches"]
    assert batch["grid"] == "kd_alpha"
    assert batch["runner"]["alive"] is True
    assert batch["counts"] == {
        "done": 1,
        "running": 1,
        "queued": 1,
        "failed": 1,
        "blocked": 0,
        "cancelled": 0,
    }
    (running,) = batch["running"]
    assert running["id"] == STUDENT.format("0.3")
    assert (running["device"], running["gpu"]) == ("cuda:0", 0)
    assert (running["epoch"], running["epochs"], running["test_acc"]) == (2, 5, 75.0)
    (failed,) = batch["failed"]
    assert failed == {
        "id": STUDENT.format("0.7"),
        "attempts": 3,
        "error": "FloatingPointError: loss is nan at [step 12]",
    }


def test_eta_is_remaining_student_epochs_at_their_pace_over_the_slots(tmp_path: Path) -> None:
    write_batch(tmp_path, pid=os.getpid())
    (batch,) = collect(tmp_path, nvml=OneGpuNvml())["batches"]
    # 3 epochs left on the running student + 5 on the queued one, 6 s each, 2 slots
    assert batch["eta_seconds"] == pytest.approx(24.0)


def test_a_runner_whose_pid_is_gone_is_shown_as_not_running(tmp_path: Path) -> None:
    write_batch(tmp_path, pid=dead_pid())
    status = collect(tmp_path, nvml=OneGpuNvml())
    (batch,) = status["batches"]
    assert batch["runner"]["alive"] is False
    assert batch["runner"]["state"] == "stopped"
    assert batch["eta_seconds"] is None
    assert status["gpus"][0]["healthy"] is None  # nobody watches GPU 0 any more
    assert "stopped" in text_of(status)


def test_a_runner_without_a_heartbeat_for_minutes_is_stale(tmp_path: Path) -> None:
    write_batch(tmp_path, pid=os.getpid(), heartbeat_age=600)
    (batch,) = collect(tmp_path, nvml=OneGpuNvml())["batches"]
    assert (batch["runner"]["alive"], batch["runner"]["state"]) == (False, "stale")


def test_gpu_rows_carry_the_live_runners_health_and_the_processes(tmp_path: Path) -> None:
    write_batch(tmp_path, pid=os.getpid())
    (gpu,) = collect(tmp_path, nvml=OneGpuNvml())["gpus"]
    assert (gpu["name"], gpu["utilization"], gpu["temperature"]) == (
        "NVIDIA H100 80GB HBM3",
        97,
        61,
    )
    assert (gpu["memory_used"], gpu["memory_total"]) == (12 * GIB, 80 * GIB)
    assert gpu["healthy"] is False
    assert gpu["reason"] == "gpu 0: XID 79 (fallen off the bus): needs a reboot"
    assert [p["pid"] for p in gpu["processes"]] == [os.getpid(), dead_pid()]
    assert gpu["processes"][1]["user"] is None


def test_render_shows_the_key_facts_on_one_screen(tmp_path: Path) -> None:
    write_batch(tmp_path, pid=os.getpid())
    text = text_of(collect(tmp_path, nvml=OneGpuNvml()))
    for fact in [
        "NVIDIA H100 80GB HBM3",
        "97%",
        "12.0 GiB / 80.0 GiB",
        "61 C / 93 C",
        "XID 79 (fallen off the bus)",
        "1 of yours",
        "kd_alpha",
        "1 done",
        "1 running",
        "1 queued",
        "1 failed",
        "ETA 24s",
        STUDENT.format("0.3"),
        "cuda:0",
        "2/5",
        "75.00%",
        "loss is nan at [step 12]",
    ]:
        assert fact in text


def test_status_round_trips_through_json(tmp_path: Path) -> None:
    write_batch(tmp_path, pid=os.getpid())
    status = collect(tmp_path, nvml=OneGpuNvml())
    assert json.loads(json.dumps(status)) == status


def test_only_the_tail_of_a_long_metrics_file_is_needed(tmp_path: Path) -> None:
    write_batch(tmp_path, pid=os.getpid())
    metrics = tmp_path / "runs" / "kd_alpha" / STUDENT.format("0.3") / "metrics.jsonl"
    rows = [
        {"epoch": n, "test_acc": n / 1000, "seconds": 6.0, "pad": "x" * 50} for n in range(1, 400)
    ]
    metrics.write_text("".join(json.dumps(row) + "\n" for row in rows))
    (batch,) = collect(tmp_path, nvml=OneGpuNvml())["batches"]
    assert (batch["running"][0]["epoch"], batch["running"][0]["test_acc"]) == (399, 0.399)


def test_health_comes_from_health_jsonl_when_state_has_no_gpus(tmp_path: Path) -> None:
    write_batch(tmp_path, pid=os.getpid())
    batch = tmp_path / "runs" / "kd_alpha" / ".batch"
    state = json.loads((batch / "state.json").read_text())
    del state["gpus"]
    (batch / "state.json").write_text(json.dumps(state))
    hot = "gpu 0: at 95 C, over its 93 C slowdown threshold for 3 samples"
    lines = [
        {"gpu": 0, "healthy": True, "reason": ""},
        {"time": stamp(), "error": "NVML: x"},
        {"gpu": 0, "healthy": False, "reason": hot},
    ]
    (batch / "health.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (gpu,) = collect(tmp_path, nvml=OneGpuNvml())["gpus"]
    assert (gpu["healthy"], gpu["reason"]) == (False, hot)


def test_an_unknown_grid_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="grid 'nope' has no batch"):
        collect(tmp_path, nvml=OneGpuNvml(), grid="nope")


@pytest.mark.skipif(nvml_works(), reason="this machine has an NVIDIA driver")
def test_without_a_driver_status_says_there_is_no_nvidia_gpu(tmp_path: Path) -> None:
    status = collect(tmp_path)
    assert status["gpus"] == []
    assert status["gpu_note"].startswith("no NVIDIA GPU: ")
    assert status["batches"] == []
    text = text_of(status)
    assert "no NVIDIA GPU" in text
    assert "no batch" in text


def test_eta_falls_back_to_finished_runs_durations(tmp_path: Path) -> None:
    write_batch(tmp_path, pid=os.getpid())
    state_file = tmp_path / "runs" / "kd_alpha" / ".batch" / "state.json"
    state = json.loads(state_file.read_text())
    state["runs"][STUDENT.format("0.3")]["status"] = "queued"
    state_file.write_text(json.dumps(state))
    (batch,) = collect(tmp_path, nvml=OneGpuNvml())["batches"]
    # two queued students of 5 epochs at the teacher's 40 s / 4 epochs, 2 slots
    assert batch["eta_seconds"] == pytest.approx(50.0)


def test_a_batch_with_only_a_plan_is_all_queued_and_not_started(tmp_path: Path) -> None:
    write_batch(tmp_path, pid=os.getpid())
    (tmp_path / "runs" / "kd_alpha" / ".batch" / "state.json").unlink()
    (batch,) = collect(tmp_path, nvml=OneGpuNvml())["batches"]
    assert batch["counts"]["queued"] == 4
    assert (batch["runner"]["state"], batch["eta_seconds"]) == ("not started", None)


def test_watch_draws_until_ctrl_c(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_batch(tmp_path, pid=os.getpid())

    def interrupt(seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("gafkd.experiments.status.time.sleep", interrupt)
    console = Console(record=True, width=120, file=io.StringIO())
    watch(tmp_path, 0.5, nvml=OneGpuNvml(), console=console)
    assert "kd_alpha" in console.export_text()
