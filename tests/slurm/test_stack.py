"""The Slurm test stack itself (stack.py): GPU scheduling, accounting, submitit, requeue.

All ``slurm`` tests share one cluster per session (the `slurm_cluster` fixture), with 4 CPUs
and 2 fake GPUs. Each test cancels what it leaves queued.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

# Each array task records the GPUs of the tasks running when it starts (one file per running
# task, holding its GPU), then runs for a second. $1 is the folder shared by the tasks.
GPU_TASK = """#!/bin/bash
cd "$1"
task=$SLURM_ARRAY_TASK_ID
others=$(cat running/* 2>/dev/null | tr '\\n' ' ')
echo "$CUDA_VISIBLE_DEVICES" > running/$task
echo "$CUDA_VISIBLE_DEVICES|$others" > seen/$task
sleep 1
rm running/$task
"""
# Task 0 waits until it is requeued; every run leaves <task>.<restart count> behind.
REQUEUE_TASK = """#!/bin/bash
cd "$1"
restarts=${SLURM_RESTART_COUNT:-0}
echo "$restarts" > $SLURM_ARRAY_TASK_ID.$restarts
if [ "$SLURM_ARRAY_TASK_ID" = 0 ] && [ "$restarts" = 0 ]; then sleep 300; fi
"""


def wait_until(ready: Callable[[], bool], what: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        time.sleep(0.2)


def queue_state(cluster: Any, job: str) -> str:
    """The job's state in squeue (RUNNING, PENDING, ...), "" once it has left the queue."""
    return str(cluster.run("squeue", "-h", "-j", job, "-o", "%T", check=False).stdout.strip())


def sacct_states(cluster: Any, job: str) -> dict[str, str]:
    """``<job>_<task>`` (or the job id) → state, from ``sacct --json``."""
    states = {}
    for record in cluster.sacct_json("-j", job)["jobs"]:
        array = record.get("array") or {}
        task = array.get("task_id")
        key = f"{array.get('job_id')}_{task}" if task is not None else str(record["job_id"])
        states[key] = record["state"]["current"]
    return states


def completed(job: Any) -> bool:
    """A submitit job's state (from sacct) is COMPLETED."""
    return bool(job.state == "COMPLETED")


def script(folder: Path, text: str) -> Path:
    path = folder / "task.sh"
    path.write_text(text)
    path.chmod(0o755)
    return path


def test_bring_up_is_unavailable_without_slurmctld(
    stack: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every other tool is "found", so the test means the same where none is installed.
    monkeypatch.setattr(stack.os, "geteuid", lambda: 0)
    monkeypatch.setattr(
        stack.shutil, "which", lambda tool: None if tool == "slurmctld" else f"/usr/sbin/{tool}"
    )
    before = os.environ.get("SLURM_CONF")
    missing = r"slurmctld not found on PATH.*apt-get install"
    with pytest.raises(stack.Unavailable, match=missing), stack.running(tmp_path / "state"):
        pass
    assert os.environ.get("SLURM_CONF") == before
    assert not (tmp_path / "state").exists()


def test_bring_up_is_unavailable_without_root(
    stack: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stack.os, "geteuid", lambda: 1000)
    with pytest.raises(stack.Unavailable, match="needs root"):
        stack.bring_up(tmp_path / "state")


@pytest.mark.slurm
def test_a_daemon_that_dies_gives_its_log_and_the_rest_are_stopped(
    stack: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    try:
        stack.check_tools()
    except stack.Unavailable as error:
        pytest.skip(f"Slurm test stack unavailable: {error}")
    real_conf, real_stop = stack.slurm_conf, stack.stop_daemons
    monkeypatch.setattr(stack, "slurm_conf", lambda *args: real_conf(*args) + "NoSuchKey=1\n")
    stopped: list[tuple[str, int | None]] = []

    def stop_daemons(daemons: Any, namespaces: Any = ()) -> None:
        stopped.extend((daemon.name, stack.read_pid(daemon.pid_file)) for daemon in daemons)
        real_stop(daemons, namespaces)

    monkeypatch.setattr(stack, "stop_daemons", stop_daemons)
    with pytest.raises(stack.Unavailable, match=r"slurmctld .*NoSuchKey"), stack.running():
        pass
    assert {"mariadbd", "slurmdbd", "slurmctld"} <= {name for name, _ in stopped}
    assert not [name for name, pid in stopped if stack.command_name(pid)]


@pytest.mark.slurm
def test_daemons_listen_on_loopback_only(slurm_cluster: Any) -> None:
    listeners = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True, check=True)
    local = [line.split()[3] for line in listeners.stdout.splitlines()]
    ours = [address for address in local if int(address.rsplit(":", 1)[1]) in slurm_cluster.ports]
    assert sorted(ours) == sorted(f"127.0.0.1:{port}" for port in slurm_cluster.ports)


@pytest.mark.slurm
def test_node_advertises_cpus_and_fake_gpus(slurm_cluster: Any) -> None:
    node = slurm_cluster.scontrol("show", "node", slurm_cluster.node)
    assert f"CPUTot={slurm_cluster.cpus}" in node
    assert f"Gres=gpu:{slurm_cluster.gpus}" in node
    assert os.environ["SLURM_CONF"] == str(slurm_cluster.conf)


@pytest.mark.slurm
def test_gpu_array_gives_each_running_task_its_own_gpu(slurm_cluster: Any, tmp_path: Path) -> None:
    (tmp_path / "running").mkdir()
    (tmp_path / "seen").mkdir()
    task = script(tmp_path, GPU_TASK)
    submit = ["sbatch", "--parsable", "--array=0-3", "--gres=gpu:1", f"--chdir={tmp_path}"]
    job = slurm_cluster.run(*submit, "-o", "%a.out", str(task), str(tmp_path)).stdout.strip()

    def all_completed() -> bool:
        states = sacct_states(slurm_cluster, job)
        tasks = sorted(states) == [f"{job}_{index}" for index in range(4)]
        return tasks and set(states.values()) == {"COMPLETED"}

    wait_until(all_completed, f"array {job} COMPLETED in sacct --json")
    for index in range(4):
        gpu, others = (tmp_path / "seen" / str(index)).read_text().strip().split("|")
        assert gpu in {"0", "1"}  # one GPU, never both
        assert gpu not in others.split()  # no running task had it
        assert len(others.split()) <= 1  # at most 2 at a time, 2 GPUs


@pytest.mark.slurm
def test_squeue_json_shows_why_a_job_waits(slurm_cluster: Any) -> None:
    job = slurm_cluster.run("sbatch", "--parsable", "--hold", "--wrap", "true").stdout.strip()
    try:
        jobs = {str(entry["job_id"]): entry for entry in slurm_cluster.squeue_json()["jobs"]}
        assert jobs[job]["job_state"] == "PENDING"
        assert jobs[job]["state_reason"] == "JobHeldUser"
    finally:
        slurm_cluster.run("scancel", job)


@pytest.mark.slurm
def test_submitit_map_array_runs_on_the_cluster(slurm_cluster: Any, tmp_path: Path) -> None:
    submitit = pytest.importorskip("submitit")
    executor = submitit.AutoExecutor(folder=tmp_path / "%j")
    assert executor.cluster == "slurm"
    executor.update_parameters(slurm_partition=slurm_cluster.partition, timeout_min=5)
    executor.update_parameters(gpus_per_node=1)
    jobs = executor.map_array(os.getenv, ["CUDA_VISIBLE_DEVICES"] * 3)
    results = [job.result() for job in jobs]
    assert set(results) <= {"0", "1"}
    for job in jobs:
        wait_until(partial(completed, job), f"submitit job {job.job_id} COMPLETED")


@pytest.mark.slurm
def test_requeued_array_task_comes_back_with_restart_count(
    slurm_cluster: Any, tmp_path: Path
) -> None:
    task = script(tmp_path, REQUEUE_TASK)
    submit = ["sbatch", "--parsable", "--array=0-1", "--requeue", f"--chdir={tmp_path}"]
    job = slurm_cluster.run(*submit, "-o", "%a.out", str(task), str(tmp_path)).stdout.strip()
    first = f"{job}_0"
    try:
        wait_until((tmp_path / "0.0").exists, f"task {first} running")
        slurm_cluster.scontrol("requeue", first)
        pending = partial(queue_state, slurm_cluster, first)
        wait_until(lambda: pending() == "PENDING", f"{first} pending after requeue")
        slurm_cluster.scontrol("update", f"JobId={first}", "StartTime=now")  # skip the 120 s
        wait_until((tmp_path / "0.1").exists, f"{first} restarted")
        wait_until(lambda: sacct_states(slurm_cluster, job).get(first) == "COMPLETED", "done")
    finally:
        slurm_cluster.run("scancel", job, check=False)
    assert (tmp_path / "0.1").read_text().strip() == "1"
    assert not (tmp_path / "1.1").exists()  # the other task ran once


@pytest.fixture
def other_munged(stack: Any) -> Iterator[tuple[str, int]]:
    """A munged this test started, as if someone else's: its socket and PID."""
    folder = Path(tempfile.mkdtemp(prefix="gafkd-munge-", dir="/var/tmp"))  # munge reaches it
    folder.chmod(0o755)
    shutil.chown(folder, "munge", "munge")
    sock, pid_file = str(folder / "munge.socket.2"), folder / "munged.pid"
    files = [f"--socket={sock}", f"--pid-file={pid_file}", f"--log-file={folder / 'log'}"]
    munged = ["runuser", "-u", "munge", "--", "munged", *files, f"--seed-file={folder / 'seed'}"]
    subprocess.run(munged, check=True, timeout=30)
    pid = stack.read_pid(pid_file)
    yield sock, pid
    if stack.command_name(pid) == "munged":
        os.kill(pid, signal.SIGTERM)
        wait_until(partial(stack.gone, pid), "munged stopped")
    shutil.rmtree(folder)


@pytest.mark.slurm
def test_a_second_stack_reuses_munged_and_stops_its_jobs_and_daemons(
    stack: Any, slurm_cluster: Any, other_munged: tuple[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session's cluster has the usual ports, so a second one takes others; it stops clean.

    A munged already answering (here on a patched default socket) is reused and left running.
    """
    monkeypatch.setattr(stack, "MUNGE_SOCKET", other_munged[0])
    try:
        with stack.running() as second:
            assert second.ports != slurm_cluster.ports
            assert os.environ["SLURM_CONF"] == str(second.conf)
            assert "munged" not in [daemon.name for daemon in second.daemons]
            job = second.run("sbatch", "--parsable", "--wrap", "sleep 300").stdout.strip()

            def job_sleeps() -> bool:
                names = map(stack.command_name, stack.processes_in(second.namespaces))
                return "sleep" in names

            wait_until(job_sleeps, f"job {job}'s sleep running")
            started = stack.processes_in(second.namespaces)
            daemons = [stack.read_pid(daemon.pid_file) for daemon in second.daemons]
    except stack.Unavailable as error:
        pytest.skip(f"second Slurm stack unavailable: {error}")
    assert os.environ["SLURM_CONF"] == str(slurm_cluster.conf)
    assert not [pid for pid in started + daemons if stack.command_name(pid)]
    assert not any(stack.listening(port) for port in second.ports)
    assert not second.state.exists()
    assert stack.command_name(other_munged[1]) == "munged"
