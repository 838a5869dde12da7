"""Experiments: a grid's runs planned, launched, run, watched and controlled, without torch.

`grid` reads the grid files (``load_grid``, ``shipped_grids``; shipped in ``grids/`` with the
dataset presets, ``datasets.toml``) and expands them into runs (``expand``, ``PlannedRun``);
`plan` checks a grid's runs and writes its plan (``plan_grid``, ``write_plan``,
``set_aside_changed``); `batchdir` is the batch folder's format, ``runs/<grid>/.batch/``, that
every backend and reader shares (``batch_dir``, ``read_plan``, ``read_state``, ``grid_lock``,
``request_cancel``, ``config_changes``); `launch` plans a grid and starts a backend
(``choose_slots``, and ``launch.launch``); `runner` is the local backend (``run_batch``,
``Slots``), `hostqueue` its host-wide GPU slots (``HostQueue``), `reboot` resumes its batches
at boot; `slurm`, `slurm_job` and `slurm_state` are the Slurm backend (``SlurmOptions``,
``submit``, ``batch_state``); `status` collects every batch's state (``collect``, ``watch``),
`screen` draws it (``render``); `control` finds, cancels and shows runs (``find_run``,
``show_log``, and ``control.cancel``). Torch is imported only where a run trains
(``slurm_job``), so ``gafkd status``, ``launch`` and the runner start fast.
"""

from __future__ import annotations

from gafkd.experiments.batchdir import (
    batch_dir,
    check_grid_name,
    config_changes,
    grid_lock,
    read_plan,
    read_state,
    request_cancel,
)
from gafkd.experiments.control import find_run, show_log
from gafkd.experiments.grid import Grid, PlannedRun, Stage, expand, load_grid, shipped_grids
from gafkd.experiments.hostqueue import HostQueue
from gafkd.experiments.launch import choose_slots
from gafkd.experiments.plan import plan_grid, set_aside_changed, write_plan
from gafkd.experiments.runner import Slots, run_batch
from gafkd.experiments.screen import render
from gafkd.experiments.slurm import SlurmOptions, submit
from gafkd.experiments.slurm_state import batch_state
from gafkd.experiments.status import collect, watch

__all__ = [
    "Grid",
    "HostQueue",
    "PlannedRun",
    "Slots",
    "SlurmOptions",
    "Stage",
    "batch_dir",
    "batch_state",
    "check_grid_name",
    "choose_slots",
    "collect",
    "config_changes",
    "expand",
    "find_run",
    "grid_lock",
    "load_grid",
    "plan_grid",
    "read_plan",
    "read_state",
    "render",
    "request_cancel",
    "run_batch",
    "set_aside_changed",
    "shipped_grids",
    "show_log",
    "submit",
    "watch",
    "write_plan",
]
