"""What runs where, on one screen: live GPUs from NVML and every batch under ``runs/*/.batch``.

`collect` gathers one JSON-ready dict, `render` (from `gafkd.experiments.screen`, re-exported here)
turns it into a rich renderable, `watch` refreshes it until Ctrl-C; `show_hosts` does the same
for lab hosts' statuses fetched by the caller (``invoke status --host``). It reads only what is
cheap, so it can refresh every few seconds: each batch's state.json and plan.json (cached by
mtime), the last line of each running run's metrics.jsonl and the tail of health.jsonl. The
on-disk format is the batch runner's (docs/experiments.md).
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live

from gafkd import rundir
from gafkd.config import ConfigError
from gafkd.experiments.batchdir import SLURM_FILE, read_plan_file, read_state_file
from gafkd.experiments.screen import render, render_hosts
from gafkd.gpu import Nvml, gpu_processes, nvml_session, sample
from gafkd.gpu.healthlog import TAIL_BYTES, health_log, last_lines
from gafkd.rundir import TIME_FORMAT

__all__ = [
    "HEARTBEAT_STALE",
    "STATUSES",
    "TAIL_BYTES",
    "TIME_FORMAT",
    "collect",
    "render",
    "show_hosts",
    "watch",
]

STATUSES = ("done", "running", "queued", "failed", "blocked", "cancelled")
HEARTBEAT_STALE = 60.0  # seconds: a runner whose heartbeat is older does not count as running

_plans: dict[Path, tuple[int, int, dict[str, Any]]] = {}  # path -> (mtime_ns, size, plan)


def collect(root: Path, nvml: Nvml | None = None, grid: str | None = None) -> dict[str, Any]:
    """Host, GPUs and every batch under ``root/runs`` (or only `grid`) as JSON-ready data."""
    root = Path(root)
    if grid is None:
        folders = sorted(path.parent for path in (root / "runs").glob("*/.batch/plan.json"))
    else:
        folders = [root / "runs" / grid / ".batch"]
        if not (folders[0] / "plan.json").is_file():
            raise ConfigError(
                f"grid {grid!r} has no batch: {folders[0] / 'plan.json'} does not exist; "
                f"start one with `invoke launch --grid {grid}` or pick another --root"
            )
    batches = [_batch(folder, root) for folder in folders]
    gpus, note = _gpus(nvml, batches)
    return {
        "host": socket.gethostname(),
        "user": _me(),
        "time": rundir.timestamp(),
        "gpus": gpus,
        "gpu_note": note,
        "batches": batches,
        "slots": _slots(batch["runner"]["queue"] for batch in batches if batch["runner"]["alive"]),
    }


def _slots(queues: Iterable[str | None]) -> list[dict[str, Any]]:
    """Who holds the host-wide slots (every user's runs) in the queues live runners use."""
    from gafkd.experiments.hostqueue import holders

    found: list[dict[str, Any]] = []
    for folder in sorted({q for q in queues if q}):
        with contextlib.suppress(OSError, ValueError, TypeError):  # a planted or garbled slot
            found.extend(holders(Path(folder)))
    return found


def _me() -> str | None:
    import psutil  # type: ignore[import-untyped, unused-ignore]

    try:
        return str(psutil.Process().username())
    except psutil.Error:
        return None


def _gpus(nvml: Nvml | None, batches: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    with nvml_session(nvml) as (session, reason):
        if session is None:
            return [], reason
        try:
            samples, processes = sample(session), gpu_processes(session)
        except session.NVMLError as error:
            return [], f"NVML error: {error} ({type(error).__name__})"
    if not samples:
        return [], "no NVIDIA GPU: NVML sees no devices"
    health = _health([batch for batch in batches if batch["runner"]["alive"]])
    return [
        {
            "index": point.gpu,
            "name": point.name,
            "utilization": point.utilization,
            "memory_used": point.memory_used,
            "memory_total": point.memory_total,
            "temperature": point.temperature,
            "slowdown_temperature": point.slowdown_temperature,
            "healthy": health.get(point.gpu, (None, ""))[0],  # None: no live runner watches it
            "reason": health.get(point.gpu, (None, point.error or ""))[1],
            "processes": [row for row in processes if row["gpu"] == point.gpu],
        }
        for point in samples
    ], ""


def _health(live: Iterable[dict[str, Any]]) -> dict[int, tuple[bool, str]]:
    """Per GPU index, the live runners' verdicts (state.json, else health.jsonl); sick wins."""
    verdicts: dict[int, tuple[bool, str]] = {}
    for batch in live:
        for gpu, verdict in batch["gpu_health"].items():
            index = int(gpu)
            if index not in verdicts or verdicts[index][0]:
                verdicts[index] = (bool(verdict["healthy"]), str(verdict["reason"]))
    return verdicts


def _batch(folder: Path, root: Path) -> dict[str, Any]:
    try:
        plan = _plan(folder / "plan.json")
        if (folder / SLURM_FILE).is_file():  # submitted with --backend slurm: ask squeue/sacct
            from gafkd.experiments.slurm_state import batch_state

            state = batch_state(folder, root)
        else:
            path = folder / "state.json"
            state = read_state_file(path) if path.exists() else {}
    except rundir.UnreadableFile as damaged:  # this batch says so, the others still show
        return _damaged(folder, root, str(damaged))
    planned = {run["id"]: run for run in plan.get("runs", [])}
    states: Mapping[str, dict[str, Any]] = state.get("runs", {})
    counts = dict.fromkeys(STATUSES, 0)
    running, failed, waiting = [], [], []
    for run_id in [*planned, *(run_id for run_id in states if run_id not in planned)]:
        run_state = states.get(run_id, {})
        status = run_state.get("status", "queued")
        counts[status] = counts.get(status, 0) + 1
        run_dir = _run_dir(root, planned.get(run_id, {}))
        if status == "running":
            running.append(_running(run_id, planned.get(run_id, {}), run_state, run_dir))
        elif status == "failed":
            error = run_state.get("error") or (rundir.error_line(run_dir) if run_dir else None)
            failed.append({"id": run_id, "attempts": run_state.get("attempts"), "error": error})
        elif status in ("queued", "blocked"):
            why = run_state.get("reason") or run_state.get("error")
            if why:
                waiting.append({"id": run_id, "status": status, "reason": why})
    runner = _runner(state.get("runner") or {})
    gpu_health = state.get("gpus") or health_log(folder / "health.jsonl")
    return {
        "grid": plan.get("grid", state.get("grid", folder.parent.name)),
        "folder": _shown(folder, root),
        "runner": runner,
        "counts": counts,
        "total": sum(counts.values()),
        "eta_seconds": _eta(planned, states, running, runner) if runner["alive"] else None,
        "running": running,
        "failed": failed,
        "waiting": waiting,  # queued or blocked runs with a reason (Slurm's, or a failed teacher)
        "gpu_health": gpu_health,
        "damaged": None,  # or the one line naming a damaged file of the batch and its fix
    }


def _damaged(folder: Path, root: Path, problem: str) -> dict[str, Any]:
    """A batch whose plan or state does not read: shown as damaged, with the file and the fix."""
    runner = _runner({}) | {"state": "damaged"}
    return {
        "grid": folder.parent.name,
        "folder": _shown(folder, root),
        "runner": runner,
        "counts": dict.fromkeys(STATUSES, 0),
        "total": 0,
        "eta_seconds": None,
        "running": [],
        "failed": [],
        "waiting": [],
        "gpu_health": {},
        "damaged": problem,
    }


def _running(
    run_id: str, planned: Mapping[str, Any], run_state: Mapping[str, Any], run_dir: Path | None
) -> dict[str, Any]:
    rows = last_lines(run_dir / "metrics.jsonl", 4096) if run_dir else []
    rows = [row for row in rows if _epoch_row(row)]  # a garbled line is skipped
    metrics = rows[-1] if rows else {}
    return {
        "id": run_id,
        "device": run_state.get("device"),
        "gpu": run_state.get("gpu"),
        "pid": run_state.get("pid"),
        "attempts": run_state.get("attempts"),
        "epoch": int(metrics.get("epoch", 0)),  # finished epochs (metrics count from 1)
        "epochs": planned.get("epochs"),
        "test_acc": metrics.get("test_acc"),
        "seconds_per_epoch": metrics.get("seconds"),
    }


def _epoch_row(row: Mapping[str, Any]) -> bool:
    """Whether a metrics.jsonl line looks like one the training loop wrote."""
    numbers = (row.get("test_acc"), row.get("seconds"))
    return isinstance(row.get("epoch"), int) and all(
        value is None or isinstance(value, int | float) for value in numbers
    )


def _runner(info: Mapping[str, Any]) -> dict[str, Any]:
    """Whether the runner is alive: not finished, its pid exists here, its heartbeat is fresh."""
    import psutil  # type: ignore[import-untyped, unused-ignore]

    pid, host = info.get("pid"), info.get("host")
    beat = _parse_time(info.get("heartbeat"))
    age = None if beat is None else round(time.time() - beat.timestamp(), 1)
    if not info:
        state = "not started"
    elif info.get("finished"):
        state = "finished"
    elif info.get("backend") == "slurm":
        state = "running"  # Slurm holds the queue: no runner process to look for
    elif host in (None, socket.gethostname()) and not (pid and psutil.pid_exists(int(pid))):
        state = "stopped"  # its process is gone: --resume restarts it
    elif age is None or age > HEARTBEAT_STALE:
        state = "stale"  # no heartbeat for a minute: hung, or on another machine
    else:
        state = "running"
    slots = {str(device): int(n) for device, n in (info.get("slots") or {}).items()}
    return {
        "alive": state == "running",
        "backend": info.get("backend", "local"),
        "queue": info.get("queue"),  # the host-wide slot folder it shares, if any
        "waiting_for_slot": bool(info.get("waiting_for_slot")) and state == "running",
        "jobs": info.get("jobs", []),
        "state": state,
        "pid": pid,
        "host": host,
        "heartbeat_age": age,
        "slots": slots,
    }


def _eta(
    planned: Mapping[str, Mapping[str, Any]],
    states: Mapping[str, Mapping[str, Any]],
    running: list[dict[str, Any]],
    runner: Mapping[str, Any],
) -> float | None:
    """Seconds left: remaining epochs x seconds per epoch (per stage) / concurrent slots."""
    rates: dict[str, list[float]] = {}
    for run_id, run_state in states.items():
        plan_run = planned.get(run_id, {})
        started, finished = (
            _parse_time(run_state.get("started")),
            _parse_time(run_state.get("finished")),
        )
        epochs = plan_run.get("epochs")
        if run_state.get("status") == "done" and started and finished and epochs:
            seconds = (finished - started).total_seconds() / epochs
            rates.setdefault(plan_run.get("stage", ""), []).append(seconds)
    for run in running:
        if run["seconds_per_epoch"]:
            stage = planned.get(run["id"], {}).get("stage", "")
            rates.setdefault(stage, []).append(float(run["seconds_per_epoch"]))
    every = [rate for stage_rates in rates.values() for rate in stage_rates]
    left = {run["id"]: max(0, (run["epochs"] or 0) - run["epoch"]) for run in running}
    for run_id, plan_run in planned.items():
        if states.get(run_id, {}).get("status", "queued") == "queued":
            left[run_id] = int(plan_run.get("epochs") or 0)
    if not any(left.values()):
        return 0.0
    if not every:
        return None
    work = 0.0
    for run_id, epochs in left.items():
        stage_rates = rates.get(planned.get(run_id, {}).get("stage", "")) or every
        work += epochs * sum(stage_rates) / len(stage_rates)
    slots = sum(runner["slots"].values()) or 1
    return round(work / min(slots, len(left)), 1)


def _run_dir(root: Path, planned: Mapping[str, Any]) -> Path | None:
    run_dir = planned.get("run_dir")
    if not run_dir:
        return None
    path = Path(run_dir)
    return path if path.is_absolute() else root / path


def _shown(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _parse_time(text: Any) -> datetime | None:
    try:
        return datetime.strptime(str(text), TIME_FORMAT) if text else None
    except ValueError:
        return None


def _plan(path: Path) -> dict[str, Any]:
    """plan.json, re-read only when its mtime or size changed (it is written once); a damaged
    one is a ConfigError (and is not cached)."""
    try:
        stat = path.stat()
    except OSError:
        return {}
    cached = _plans.get(path)
    if cached and cached[:2] == (stat.st_mtime_ns, stat.st_size):
        return cached[2]
    plan = read_plan_file(path)
    _plans[path] = (stat.st_mtime_ns, stat.st_size, plan)
    return plan


def watch(
    root: Path,
    interval: float = 2.0,
    *,
    nvml: Nvml | None = None,
    grid: str | None = None,
    console: Console | None = None,
) -> None:
    """Redraw the status every `interval` seconds until Ctrl-C."""
    with Live(render(collect(root, nvml, grid)), console=console, auto_refresh=False) as live:
        try:
            while True:
                time.sleep(interval)
                live.update(render(collect(root, nvml, grid)), refresh=True)
        except KeyboardInterrupt:
            return


def show_hosts(
    fetch: Callable[[], Mapping[str, Mapping[str, Any]]],
    *,
    as_json: bool,
    watch: bool,
    interval: float = 2.0,
    console: Console | None = None,
) -> None:
    """Print lab hosts' statuses, ``{alias: status}`` from `fetch`: JSON, one screen, or the
    screen redrawn every `interval` seconds until Ctrl-C."""
    if as_json:
        print(json.dumps(fetch(), indent=2))
        return
    if not watch:
        (console or Console()).print(render_hosts(fetch()))
        return
    with Live(render_hosts(fetch()), console=console, auto_refresh=False) as live:
        try:
            while True:
                time.sleep(interval)
                live.update(render_hosts(fetch()), refresh=True)
        except KeyboardInterrupt:
            return
