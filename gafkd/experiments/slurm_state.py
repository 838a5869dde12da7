"""A Slurm batch's state, shaped like the local runner's ``state.json``, from squeue and sacct.

`batch_state` is what ``gafkd status`` shows for a grid submitted with ``--backend slurm``: for
each planned run, its array task's state from ``squeue --json`` (pending with Slurm's reason, or
running) or, once it left the queue, from ``sacct --json``; a run whose ``result.json`` exists is
done whatever Slurm says. GPU health comes from the running runs' own NVML samples
(``<run dir>/health.jsonl``). Both JSON layouts are read: Slurm 22.05's plain values and the
``{"set": ..., "number": ...}`` and list values of later versions. No submitit here.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from gafkd import rundir
from gafkd.experiments.batchdir import CANCELLED, SLURM_FILE, read_plan_file, read_slurm_record
from gafkd.gpu.healthlog import health_log

FAILED = {"FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"}
RUNNING = {"RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED", "STAGE_OUT"}
QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "PREEMPTED", "RESIZING"}


def squeue(job_ids: Sequence[str]) -> list[dict[str, Any]]:
    """Rows of the jobs still in the queue: job_id, task (None: every task), state, reason."""
    if not job_ids:
        return []
    data = _json(["squeue", "--json", "--jobs", ",".join(job_ids)])
    return list(_squeue_rows(data.get("jobs", [])))


def sacct(job_ids: Sequence[str]) -> list[dict[str, Any]]:
    """Rows of the jobs' accounting records: job_id, task, state, reason, exit code, node."""
    if not job_ids:
        return []
    data = _json(["sacct", "--json", "-X", "--jobs", ",".join(job_ids)])
    return list(_sacct_rows(data.get("jobs", [])))


def batch_state(folder: Path, root: Path) -> dict[str, Any]:
    """``state.json``'s shape for a Slurm batch in `folder` (``runs/<grid>/.batch``)."""
    record = read_slurm_record(folder)
    if record is None:
        raise FileNotFoundError(folder / SLURM_FILE)
    plan = read_plan_file(folder / "plan.json")
    stages: Mapping[str, Mapping[str, Any]] = record.get("stages", {})
    ids = [str(stage["job_id"]) for stage in stages.values()]
    live = _by_task(squeue(ids))
    past = _by_task(sacct(ids))
    wanted = set(_read_list(folder / CANCELLED))
    task_of = {
        run_id: task
        for stage in stages.values()
        for run_id, task in zip(stage["runs"], stage["tasks"], strict=True)
    }
    runs: dict[str, dict[str, Any]] = {}
    for run in plan["runs"]:
        run_dir = root / run["run_dir"]
        job = _read(run_dir / "slurm_job.json")
        if run["id"] not in task_of:  # not submitted: done before, or planned only
            done = rundir.read_result(run_dir) is not None
            runs[run["id"]] = _run("done" if done else "queued")
            continue
        job_id, _, index = task_of[run["id"]].partition("_")
        task = int(index) if index else None
        row = live.get((job_id, task)) or live.get((job_id, None)) or past.get((job_id, task))
        runs[run["id"]] = _run_state(run, row, job, run_dir, task_of[run["id"]], wanted)
    _block_on_failed_teachers(plan["runs"], runs)
    active = any(state["status"] in ("queued", "running") for state in runs.values())
    return {
        "grid": plan["grid"],
        "runner": {
            "backend": "slurm",
            "pid": None,
            "host": record.get("host"),
            "started": record.get("submitted"),
            "heartbeat": rundir.timestamp(),
            "finished": None if active else rundir.timestamp(),
            "slots": {"slurm": record.get("options", {}).get("parallel") or len(task_of) or 1},
            "jobs": ids,
        },
        "runs": runs,
        "gpus": _gpu_health(root, plan["runs"], runs),
    }


def _run(status: str, **fields: Any) -> dict[str, Any]:
    base = dict.fromkeys(("device", "gpu", "pid", "started", "finished", "error", "reason"))
    return {"status": status, "attempts": 0} | base | fields


def _run_state(
    run: Mapping[str, Any],
    row: Mapping[str, Any] | None,
    job: Mapping[str, Any] | None,
    run_dir: Path,
    task: str,
    wanted: set[str],
) -> dict[str, Any]:
    job = job or {}
    gpu = _first_gpu(job.get("cuda_visible_devices"))
    where = {
        "job": task,
        "attempts": int(job.get("slurm_restart_count") or 0),
        "device": f"cuda:{gpu}" if gpu is not None else job.get("slurmd_nodename"),
        "gpu": gpu,
        "started": job.get("started"),
        "node": job.get("slurmd_nodename"),
    }
    if rundir.read_result(run_dir) is not None:
        return _run("done", **where)
    if row is None:
        return _run("queued", reason="submitted", **where)
    state, reason = row["state"], row.get("reason") or ""
    if state in QUEUED:
        return _run("queued", reason=reason or state.lower(), **where)
    if state in RUNNING:
        return _run("running", **where)
    if state == "CANCELLED":
        if {"*", run["id"]} & wanted:
            return _run("cancelled", **where)
        return _run("blocked", error=f"cancelled by Slurm: {reason or 'no reason given'}", **where)
    error = rundir.error_line(run_dir) or ""
    if state == "COMPLETED":
        error = error or "the job ended without a result.json"
    elif state in FAILED:
        code = row.get("exit_code")
        error = error or f"Slurm {state.lower()}" + (f" (exit code {code})" if code else "")
    return _run("failed", error=error or f"Slurm state {state}", **where)


def _block_on_failed_teachers(
    plan: Sequence[Mapping[str, Any]], runs: dict[str, dict[str, Any]]
) -> None:
    """afterok never starts a stage after a failed one: show its runs as blocked, naming it."""
    for run in plan:
        state = runs[run["id"]]
        if state["status"] not in ("queued", "blocked"):
            continue
        bad = [n for n in run["needs"] if runs.get(n, {}).get("status") in ("failed", "blocked")]
        if bad:
            state["status"], state["error"] = "blocked", f"teacher run {bad[0]} failed"


def _gpu_health(
    root: Path, plan: Sequence[Mapping[str, Any]], runs: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    """The last verdict each running run recorded for its own GPU."""
    verdicts: dict[str, dict[str, Any]] = {}
    for run in plan:
        state = runs[run["id"]]
        if state["status"] != "running" or state["gpu"] is None:
            continue
        found = health_log(root / run["run_dir"] / "health.jsonl").get(str(state["gpu"]))
        if found is not None:
            verdicts[str(state["gpu"])] = found
    return verdicts


def _read_list(path: Path) -> list[str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return [str(item) for item in data] if isinstance(data, list) else []


def _first_gpu(text: Any) -> int | None:
    first = str(text or "").split(",")[0].strip()
    return int(first) if first.isdigit() else None


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def run_slurm(argv: Sequence[str]) -> str:
    """A Slurm command's output; a failure is one ConfigError with Slurm's own message."""
    from gafkd.config import ConfigError

    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise ConfigError(f"{argv[0]} failed: {error}") from None
    if done.returncode != 0:
        raise ConfigError(f"{' '.join(argv)} failed: {done.stderr.strip() or done.stdout}")
    return done.stdout


def _json(argv: Sequence[str]) -> dict[str, Any]:
    from gafkd.config import ConfigError

    try:
        data = json.loads(run_slurm(argv))
    except ValueError:
        raise ConfigError(
            f"{argv[0]} --json printed no JSON; this Slurm may lack its JSON plugins"
        ) from None
    return data if isinstance(data, dict) else {}


# -- the two JSON layouts ------------------------------------------------------------------------


def _value(value: Any) -> Any:
    """22.05 gives plain values; 23.02+ give {"set": bool, "number": n} or lists of states."""
    if isinstance(value, dict) and "number" in value:
        return value["number"] if value.get("set", True) else None
    if isinstance(value, list):
        return value[0] if value else None
    return value


def _squeue_rows(jobs: Iterable[Mapping[str, Any]]) -> Iterable[dict[str, Any]]:
    for job in jobs:
        parent = _value(job.get("array_job_id"))
        task = _value(job.get("array_task_id"))
        state = str(_value(job.get("job_state")) or "")
        reason = str(job.get("state_reason") or "")
        reason = "" if reason == "None" else reason
        if not parent:  # not an array
            yield {
                "job_id": str(_value(job.get("job_id"))),
                "task": None,
                "state": state,
                "reason": reason,
            }
            continue
        tasks = [task] if task is not None else _task_range(job.get("array_task_string"))
        for one in tasks:
            yield {"job_id": str(parent), "task": one, "state": state, "reason": reason}


def _sacct_rows(jobs: Iterable[Mapping[str, Any]]) -> Iterable[dict[str, Any]]:
    for job in jobs:
        array = job.get("array") or {}
        parent = _value(array.get("job_id"))
        task = _value(array.get("task_id"))
        state_info = job.get("state") or {}
        state = str(_value(state_info.get("current")) or "")
        reason = str(state_info.get("reason") or "")
        exit_code = job.get("exit_code") or {}
        code = _value(exit_code.get("return_code")) if isinstance(exit_code, dict) else exit_code
        yield {
            "job_id": str(parent or _value(job.get("job_id"))),
            "task": task if parent else None,
            "state": state,
            "reason": "" if reason == "None" else reason,
            "exit_code": code,
            "node": job.get("nodes"),
        }


def _task_range(text: Any) -> list[int | None]:
    """'0-3%2' or '1,4-5' -> [0, 1, 2, 3] or [1, 4, 5]; unreadable -> [None] (every task)."""
    spec = str(text or "").split("%")[0]
    tasks: list[int | None] = []
    try:
        for part in filter(None, spec.split(",")):
            low, _, high = part.partition("-")
            tasks.extend(range(int(low), int(high or low) + 1))
    except ValueError:
        return [None]
    return tasks or [None]


def _by_task(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, int | None], dict[str, Any]]:
    return {(str(row["job_id"]), row["task"]): dict(row) for row in rows}
