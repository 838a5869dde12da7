"""One Slurm array task: a planned run trained in the job's process (the Slurm backend).

submitit pickles `RunJob` with the run's id. On a time limit or a preemption, submitit calls
`RunJob.checkpoint`, which resubmits the same run; the requeued task resumes from the run's last
epoch checkpoint. The task writes ``slurm_job.json`` (job id, node, GPU, restart count) and, on
a GPU, its own NVML samples (``health.jsonl``) into the run folder; what it prints also goes to
the run's ``log.txt``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from gafkd import rundir
from gafkd.experiments.batchdir import read_plan, write_run_config

HEALTH_SECONDS = 30.0  # how often a run samples its GPU with NVML


class RunJob:
    """One array task: train the run named by its argument, resuming from its checkpoint.

    submitit pickles this object; on a time limit or preemption it calls `checkpoint`, which
    resubmits the same run, and the requeued task resumes from the run's last epoch.
    """

    def __init__(self, root: str, grid: str) -> None:
        self.root = root
        self.grid = grid

    def __call__(self, run_id: str) -> dict[str, Any]:
        from gafkd.config import load_config
        from gafkd.gpu import HealthMonitor
        from gafkd.run import train_run

        root = Path(self.root)
        run = next(r for r in read_plan(root, self.grid)["runs"] if r["id"] == run_id)
        config_path = write_run_config(root, run)
        run_dir = config_path.parent
        rundir.save_json(_job_info(), run_dir / "slurm_job.json")
        _set_threads()
        gpus = [int(g) for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g]
        monitor = HealthMonitor(run_dir / "health.jsonl", interval=HEALTH_SECONDS)
        with _tee(run_dir / "log.txt"):
            if gpus:
                monitor.start()
            try:
                result = train_run(load_config(config_path))
            finally:
                monitor.stop()
        return {"run": run_id, "reported_acc": result.get("reported_acc")}

    def checkpoint(self, run_id: str) -> Any:
        """Requeue the same run; it resumes from its own checkpoint on disk."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, run_id)


def _job_info() -> dict[str, Any]:
    names = (
        "SLURM_JOB_ID",
        "SLURM_ARRAY_JOB_ID",
        "SLURM_ARRAY_TASK_ID",
        "SLURM_RESTART_COUNT",
        "SLURMD_NODENAME",
        "SLURM_JOB_GPUS",
        "CUDA_VISIBLE_DEVICES",
    )
    return {name.lower(): os.environ.get(name) for name in names} | {"started": rundir.timestamp()}


def _set_threads() -> None:
    cpus = os.environ.get("SLURM_CPUS_PER_TASK")
    if cpus and cpus.isdigit():
        import torch

        torch.set_num_threads(int(cpus))


@contextlib.contextmanager
def _tee(path: Path) -> Iterator[None]:
    """Copy what the run prints to its log.txt as well as to the job's own output."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as log:

        class Tee:
            def __init__(self, stream: IO[str]) -> None:
                self.stream = stream

            def write(self, text: str) -> int:
                log.write(text)
                log.flush()
                return self.stream.write(text)

            def flush(self) -> None:
                self.stream.flush()

            def __getattr__(self, name: str) -> Any:
                return getattr(self.stream, name)

        stdout, stderr = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = Tee(stdout), Tee(stderr)
        try:
            yield
        finally:
            sys.stdout, sys.stderr = stdout, stderr
