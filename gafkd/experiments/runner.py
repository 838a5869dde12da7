"""The local batch runner: a grid's runs queued onto this machine's GPUs (or its CPU).

:mod:`gafkd.experiments.launch` plans a grid and starts this runner. The runner (``run_batch``)
reads ``runs/<grid>/.batch/plan.json`` (the batch folder's format:
:mod:`gafkd.experiments.batchdir`), holds the grid's lock, starts each run
as its own ``gafkd train`` process with its own ``CUDA_VISIBLE_DEVICES``, N at a time per GPU,
once the teacher runs it needs are done; retries a failing run a bounded number of times, then
marks it failed and carries on; skips runs whose result exists and was made with the planned
config (``config_changes``; another config's result is marked failed, never done); and rewrites
``state.json`` atomically after every change (format: docs/experiments.md, "Batch state").
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from gafkd import rundir
from gafkd.experiments.batchdir import (
    STATE_FILE,
    batch_dir,
    cancelled_ids,
    check_results,
    config_changes,
    grid_lock,
    keep_private,
    read_plan,
    write_run_config,
)
from gafkd.experiments.hostqueue import HostQueue, check_folder
from gafkd.gpu import HealthMonitor
from gafkd.rundir import timestamp

POLL_SECONDS = 0.2


@dataclass
class RunState:
    status: str = "queued"  # queued | running | done | failed | cancelled | blocked
    attempts: int = 0
    device: str | None = None
    gpu: int | None = None
    pid: int | None = None
    started: str | None = None
    finished: str | None = None
    error: str | None = None


@dataclass
class Slots:
    """How many runs may go on each device at once: GPU indices, or the CPU."""

    per_device: dict[str, int]
    threads: int = 0  # torch threads per CPU run; 0 leaves torch's default

    @property
    def total(self) -> int:
        return sum(self.per_device.values())


@dataclass
class Batch:
    root: Path
    grid: str
    plan: list[dict[str, Any]]
    runs: dict[str, RunState] = field(default_factory=dict)
    queue: HostQueue | None = None  # host-wide slots shared with other users' runners

    @property
    def state_dir(self) -> Path:
        return batch_dir(self.root, self.grid)


# -- the runner ----------------------------------------------------------------------------------


def run_batch(
    root: Path,
    grid: str,
    slots: Slots,
    retries: int = 2,
    health: HealthMonitor | None = None,
    log: IO[str] | None = None,
    queue: Path | None = None,
    lock_fd: int | None = None,
) -> dict[str, RunState]:
    """Run every planned run of a launched grid to done, failed or blocked; return their states.

    With a `queue` folder (:mod:`gafkd.experiments.hostqueue`) each run also takes a host-wide slot
    there, so the per-device limits hold across the runners of every user sharing the folder. With
    `lock_fd`, the grid's lock held by the launcher is taken over (and closed at the end).
    """
    out = log or sys.stdout
    keep_private()
    check_results(root, (run["run_dir"] for run in read_plan(root, grid)["runs"]))
    cancelled_ids(root, grid)  # a damaged file stops the runner here, before anything is written
    with grid_lock(root, grid, fd=lock_fd):
        plan = read_plan(root, grid)
        host_queue = HostQueue(check_folder(queue), grid, log=out) if queue else None
        batch = Batch(root, grid, plan["runs"], queue=host_queue)
        for run in batch.plan:
            batch.runs[run["id"]] = _first_state(root, run)
        _apply_cancellations(batch, {})
        health = health or HealthMonitor(batch.state_dir / "health.jsonl")
        if any(device != "cpu" for device in slots.per_device):
            health.start()
        stopping, previous = _handle_termination()
        processes: dict[str, subprocess.Popen[bytes]] = {}
        started = timestamp()
        _write_state(batch, slots, health, started)
        last_beat = time.monotonic()
        try:
            while not stopping and _unfinished(batch, processes):
                changed = _apply_cancellations(batch, processes, out)
                changed |= _reap(batch, processes, retries, out)
                changed |= _block_dependents(batch)
                if batch.queue is not None:
                    batch.queue.keep(processes)  # frees the slots of runs that ended
                changed |= _start_ready(batch, processes, slots, health, out)
                if changed or time.monotonic() - last_beat > 5:
                    _write_state(batch, slots, health, started)
                    last_beat = time.monotonic()
                time.sleep(POLL_SECONDS)
        finally:
            for run_id, process in processes.items():  # stopped: the runs resume later
                process.terminate()
                process.wait()
                batch.runs[run_id] = RunState(status="queued", attempts=batch.runs[run_id].attempts)
            if batch.queue is not None:
                batch.queue.close()
            health.stop()
            _write_state(batch, slots, health, started, finished=not stopping)
            for signum, handler in previous.items():  # a caller's Ctrl-C works again
                signal.signal(signum, handler)
    counts = _counts(batch)
    print(f"grid {grid}: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n), file=out)
    return batch.runs


def _first_state(root: Path, run: Mapping[str, Any]) -> RunState:
    """Done only when its result exists and was made with the planned config."""
    if rundir.read_result(root / run["run_dir"]) is None:
        return RunState()
    changes = config_changes(root, run)
    if not changes:
        return RunState(status="done")
    return RunState(
        status="failed",
        error=f"its result was made with another config ({', '.join(changes)}); launch the grid "
        "again with --rerun-changed",
    )


def _apply_cancellations(
    batch: Batch, processes: dict[str, subprocess.Popen[bytes]], out: IO[str] | None = None
) -> bool:
    wanted = cancelled_ids(batch.root, batch.grid)
    changed = False
    for run_id, state in batch.runs.items():
        if state.status not in ("queued", "running") or not ({"*", run_id} & wanted):
            continue
        process = processes.pop(run_id, None)
        if process is not None:  # its last epoch is checkpointed: a later launch resumes it
            process.terminate()
            process.wait()
        state.status, state.pid, state.finished, changed = "cancelled", None, timestamp(), True
        if out is not None:
            print(f"cancel  {run_id}", file=out, flush=True)
    return changed


def _unfinished(batch: Batch, processes: Mapping[str, Any]) -> bool:
    return bool(processes) or any(s.status == "queued" for s in batch.runs.values())


def _reap(
    batch: Batch, processes: dict[str, subprocess.Popen[bytes]], retries: int, out: IO[str]
) -> bool:
    changed = False
    for run_id, process in list(processes.items()):
        code = process.poll()
        if code is None:
            continue
        del processes[run_id]
        state = batch.runs[run_id]
        run_dir = batch.root / _planned(batch, run_id)["run_dir"]
        state.pid, state.finished, changed = None, timestamp(), True
        if code == 0 and rundir.read_result(run_dir) is not None:
            state.status = "done"
            print(f"done    {run_id}", file=out, flush=True)
            continue
        state.attempts += 1
        state.error = _error_line(run_dir, code)
        if state.attempts > retries:
            state.status = "failed"
            print(f"failed  {run_id}: {state.error}", file=out, flush=True)
        else:
            state.status = "queued"  # resumes from its checkpoint
            print(f"retry   {run_id} ({state.error})", file=out, flush=True)
    return changed


def _block_dependents(batch: Batch) -> bool:
    changed = False
    for run in batch.plan:
        state = batch.runs[run["id"]]
        if state.status != "queued":
            continue
        bad = [n for n in run["needs"] if batch.runs[n].status in ("failed", "blocked")]
        if bad:
            state.status, state.error, changed = "blocked", f"teacher run {bad[0]} failed", True
    return changed


def _start_ready(
    batch: Batch,
    processes: dict[str, subprocess.Popen[bytes]],
    slots: Slots,
    health: HealthMonitor,
    out: IO[str],
) -> bool:
    changed = False
    for run in batch.plan:
        state = batch.runs[run["id"]]
        if state.status != "queued" or any(batch.runs[n].status != "done" for n in run["needs"]):
            continue
        device = _free_device(batch, slots, health, run["id"])
        if device is None:
            break
        processes[run["id"]] = _spawn(batch.root, run, device, slots)
        state.status, state.started, state.finished = "running", timestamp(), None
        state.pid = processes[run["id"]].pid
        state.device = "cpu" if device == "cpu" else f"cuda:{device}"
        state.gpu = None if device == "cpu" else int(device)
        print(f"start   {run['id']} on {state.device}", file=out, flush=True)
        changed = True
    return changed


def _free_device(batch: Batch, slots: Slots, health: HealthMonitor, run_id: str = "") -> str | None:
    """A device with room for one more run under this runner's limits; with a host queue, a
    host-wide slot on it is taken for `run_id` as well (held until the run ends)."""
    busy: dict[str, int] = {}
    for state in batch.runs.values():
        if state.status == "running":
            key = "cpu" if state.gpu is None else str(state.gpu)
            busy[key] = busy.get(key, 0) + 1
    room = {  # no new runs on a GPU that needs a reset or stays too hot
        device: count
        for device, count in slots.per_device.items()
        if busy.get(device, 0) < count and (device == "cpu" or health.healthy(int(device))[0])
    }
    if batch.queue is not None:
        return batch.queue.take(room, run_id)
    return next(iter(room), None)


def _spawn(
    root: Path, run: Mapping[str, Any], device: str, slots: Slots
) -> subprocess.Popen[bytes]:
    """Start one run as its own process, seeing only its GPU (or none)."""
    config_path = write_run_config(root, run)
    run_dir = config_path.parent
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="" if device == "cpu" else device)
    if device == "cpu" and slots.threads:
        env["OMP_NUM_THREADS"] = str(slots.threads)
    log = (run_dir / "log.txt").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "gafkd", "train", str(config_path)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        preexec_fn=_die_with_parent,
    )


def _die_with_parent() -> None:
    """Linux: a run gets SIGKILL when its runner dies, so a resumed batch never races it."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _handle_termination() -> tuple[list[int], dict[int, Any]]:
    """SIGTERM/SIGINT end the loop; running runs are stopped and stay queued for --resume.

    Returns the list the handler appends to, and the handlers it replaced (to put back)."""
    stopping: list[int] = []
    previous: dict[int, Any] = {}

    def stop(signum: int, _frame: object) -> None:
        stopping.append(signum)

    with contextlib.suppress(ValueError):  # not the main thread: leave handlers alone
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, stop)
    return stopping, previous


def _write_state(
    batch: Batch, slots: Slots, health: HealthMonitor, started: str, finished: bool = False
) -> None:
    state = {
        "grid": batch.grid,
        "runner": {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": started,
            "heartbeat": timestamp(),
            "finished": timestamp() if finished else None,
            "slots": slots.per_device,
            "queue": str(batch.queue.folder) if batch.queue is not None else None,
            "waiting_for_slot": batch.queue is not None and batch.queue.wait is not None,
        },
        "runs": {run_id: asdict(s) for run_id, s in batch.runs.items()},
        "gpus": health.snapshot(),
    }
    rundir.save_json(state, batch.state_dir / STATE_FILE)


def _counts(batch: Batch) -> dict[str, int]:
    counts = dict.fromkeys(("done", "running", "queued", "failed", "blocked", "cancelled"), 0)
    for state in batch.runs.values():
        counts[state.status] += 1
    return counts


def _planned(batch: Batch, run_id: str) -> dict[str, Any]:
    return next(run for run in batch.plan if run["id"] == run_id)


def _error_line(run_dir: Path, code: int) -> str:
    error = rundir.error_line(run_dir)
    if error is not None:
        return error
    log = run_dir / "log.txt"
    lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
    last = lines[-1] if lines else ""
    how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
    return f"{how}: {last}" if last else how
