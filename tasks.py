"""Invoke tasks: the lab's entry points (``invoke --list``), thin in the manner of Invoke's own.

Each task parses its options, calls one function in gafkd/ or provisioning/ and prints the
result. ConfigError, TrainingError and ProvisionError become one ``error:`` line here
(`user_errors`), and nowhere else. What a task needs beyond that lives in the packages:
connecting hosts (provisioning.hosts), the runner's command line
(gafkd.experiments.launch.launch_flags), requests to a host (provisioning.remote), screens
(gafkd.experiments.screen and .status), the steps of provisioning and their report
(provisioning.steps, provisioning.runner). gafkd is imported inside the tasks, so that
``invoke --list`` and ``invoke provision`` load neither it nor torch (docs/architecture.md).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task

from provisioning import hosts, remote, steps
from provisioning.core import ProvisionError
from provisioning.runner import fail_on_errors, print_report
from provisioning.steps import ALL_STEPS, SLURM_STEPS

if TYPE_CHECKING:
    from gafkd.experiments.launch import LaunchOptions

SET_HELP = "override a config field or a grid axis, e.g. --set train.epochs=5 (repeatable)"
ROOT_HELP = "the folder that holds runs/ (default: here)"
HOST_HELP = "run it on this lab host (ssh alias under hosts: in invoke.yaml) instead of here"
HOSTS_HELP = "ssh alias under hosts: in invoke.yaml or in ~/.ssh/config, 'local', or 'lab1,lab2'"


@contextmanager
def user_errors() -> Iterator[None]:
    """Bad input, failed runs and host errors end the task with one line, no traceback."""
    from gafkd.config import ConfigError, TrainingError

    try:
        yield
    except (ConfigError, TrainingError, ProvisionError) as error:
        raise Exit(f"error: {error}", code=1) from None


def configured(c: Context) -> dict[str, Any]:
    """invoke.yaml's ``hosts:`` section."""
    return c.config.get("hosts") or {}


def launch_on_host(
    c: Context, host: str, grid: str, options: LaunchOptions, *, dry: bool, foreground: bool
) -> None:
    """Glue of ``launch --host``: gafkd checks and words the options, provisioning.remote
    syncs the code and sends them; nothing reaches the host before gafkd's checks."""
    from gafkd import __version__
    from gafkd.experiments import launch as launcher

    launcher.check_for_host(options, foreground=foreground)
    lab, connection = hosts.connect_one(host, configured(c))
    flags = launcher.launch_flags(launcher.for_host(options, lab.alias, lab.backend, lab.slurm))
    remote.launch(connection, lab, grid, flags, version=__version__, dry=dry, echo=print)


# -- experiments: gafkd/ ---------------------------------------------------------------------


@task(
    help={
        "config": "a .toml run config, or the name of a config shipped with gafkd",
        "set": SET_HELP,
    },
    iterable=["set"],
)
def train(c: Context, config: str, set: list[str] | None = None) -> None:
    """Train one run (and the teachers it names) on this machine, resuming if interrupted."""
    from gafkd.cli import resolve_config_path
    from gafkd.config import load_config
    from gafkd.run import train_run

    with user_errors():
        train_run(load_config(resolve_config_path(config), set or []))


@task(
    help={
        "grid": "a shipped grid (kd_alpha, kd_gaf, gaf_teachers) or a grid .toml file",
        "set": SET_HELP,
        "dry": "print the plan (runs, order, where each goes) and change nothing",
        "foreground": "stay attached until the batch is done, then print the results",
        "resume": "start an already planned batch again (after a reboot or a killed runner)",
        "per_gpu": "runs at a time per GPU, at least 1 (default: from free memory)",
        "gpus": "GPU indices to use, e.g. 0,1 (default: all)",
        "retries": "how often a failing run is retried before it is marked failed",
        "root": ROOT_HELP,
        "host": HOST_HELP + "; syncs the code and installs it into the env there first",
        "backend": "local (default) or slurm: one job array per stage (docs/scale-out.md); "
        "with --host, the host's `backend` setting is the default",
        "on_reboot": "resume the batch after the server reboots (an @reboot line in your crontab, "
        "removed when the batch ends)",
        "rerun_changed": "rerun the runs that were made with another config (other --set values "
        "or grid file); their old folders are moved aside, under the batch's superseded/",
    },
    iterable=["set"],
)
def launch(
    c: Context,
    grid: str,
    set: list[str] | None = None,
    dry: bool = False,
    foreground: bool = False,
    resume: bool = False,
    per_gpu: str = "",
    gpus: str = "",
    retries: int = 2,
    root: str = ".",
    host: str = "",
    backend: str = "",
    on_reboot: bool = False,
    rerun_changed: bool = False,
) -> None:
    """Run a whole experiment grid on this machine's GPUs (or CPU), detached and resumable."""
    from gafkd.experiments import launch as launcher

    with user_errors():
        options = launcher.parse_options(
            set or [],
            retries=retries,
            per_gpu=per_gpu,
            gpus=gpus,
            resume=resume,
            backend=backend,
            on_reboot=on_reboot,
            rerun_changed=rerun_changed,
        )
        if host:
            launch_on_host(c, host, grid, options, dry=dry, foreground=foreground)
        else:
            launcher.launch_with(grid, Path(root), options, dry=dry, foreground=foreground)


@task(
    help={
        "grid": "only this grid's batch (default: every batch under runs/)",
        "watch": "refresh the screen until Ctrl-C",
        "json": "print JSON for scripts (with --host: {alias: status})",
        "root": ROOT_HELP,
        "host": "show these lab hosts instead of here: an alias from invoke.yaml, or lab1,lab2",
    }
)
def status(
    c: Context,
    grid: str = "",
    watch: bool = False,
    json: bool = False,
    root: str = ".",
    host: str = "",
) -> None:
    """GPUs, their health and other users' processes, and each batch's progress, on one screen."""
    from gafkd.cli import show_status
    from gafkd.experiments.batchdir import check_grid_name
    from gafkd.experiments.status import show_hosts

    with user_errors():
        if grid:
            check_grid_name(grid)
        if not host:
            show_status(Path(root), grid or None, as_json=json, watch=watch)
            return
        opened = hosts.connect_hosts(host, configured(c))
        show_hosts(lambda: remote.statuses(opened, grid or None), as_json=json, watch=watch)


@task(
    help={
        "grid": "the grid whose runs to aggregate",
        "reference": "a reference file of earlier numbers, or a shipped one: lab, wang_oates",
        "root": ROOT_HELP + "; with --host, the copy goes to <root>/.hosts/<host>/runs/",
        "host": HOST_HELP + ": its results are copied here (rsync, no checkpoints) first",
    }
)
def results(c: Context, grid: str, reference: str = "", root: str = ".", host: str = "") -> None:
    """Mean ± std over seeds per config: a markdown table, CSV and a PNG plot."""
    from gafkd.experiments.batchdir import check_grid_name
    from gafkd.experiments.launch import print_results
    from gafkd.results import LAB_REFERENCE

    with user_errors():
        check_grid_name(grid)
        local = Path(root)
        if host:
            lab, connection = hosts.connect_one(host, configured(c))
            local = remote.results(connection, lab, grid, local / ".hosts" / lab.alias)
        print_results(local, grid, LAB_REFERENCE if reference == "lab" else reference or None)


@task(
    help={
        "grid": "the launched grid",
        "run": "one run id (default: every queued and running run of the grid)",
        "root": ROOT_HELP,
        "host": HOST_HELP,
    }
)
def cancel(c: Context, grid: str, run: str = "", root: str = ".", host: str = "") -> None:
    """Stop a run, or a whole batch, cleanly: marked cancelled (not failed), resumable later."""
    from gafkd.experiments.batchdir import check_grid_name
    from gafkd.experiments.control import cancel as cancel_runs

    with user_errors():
        check_grid_name(grid)
        if not host:
            cancel_runs(Path(root), grid, run or None)
            return
        lab, connection = hosts.connect_one(host, configured(c))
        print(remote.cancel(connection, lab, grid, run or None), end="")


@task(
    positional=["run"],
    help={
        "run": "a run id, e.g. student/dataset-watch_alpha-0.3/seed0",
        "grid": "the grid the run belongs to (default: search every launched grid)",
        "follow": "keep printing new lines until the run stops",
        "root": ROOT_HELP,
        "host": HOST_HELP,
    },
)
def logs(
    c: Context, run: str, grid: str = "", follow: bool = False, root: str = ".", host: str = ""
) -> None:
    """Show a run's log (its training output), optionally following it."""
    from gafkd.experiments.batchdir import check_grid_name
    from gafkd.experiments.control import show_log

    with user_errors():
        if grid:
            check_grid_name(grid)
        if not host:
            show_log(Path(root), run, grid or None, follow=follow)
            return
        lab, connection = hosts.connect_one(host, configured(c))
        remote.logs(connection, lab, run, grid or None, follow=follow)


# -- provisioning: provisioning/ -------------------------------------------------------------


@task(
    help={
        "host": HOSTS_HELP,
        "dry": "print the plan and change nothing (later steps' plans may then be incomplete)",
        "only": f"run this one step: {', '.join(ALL_STEPS)}",
        "slurm": f"also set up Slurm (the first host is the controller): {', '.join(SLURM_STEPS)}",
        "json": "print the summary as JSON on stdout (progress lines go to stderr)",
        "ask_sudo_password": "prompt for the sudo password (default: passwordless sudo, or "
        "the sudo.password config / INVOKE_SUDO_PASSWORD)",
        "move_conda": "consent to a fresh conda install at conda_prefix when one is found "
        "elsewhere (default: adopt that one in place; the old one is never deleted)",
    }
)
def provision(
    c: Context,
    host: str,
    dry: bool = False,
    only: str = "",
    json: bool = False,
    ask_sudo_password: bool = False,
    move_conda: bool = False,
    slurm: bool = False,
) -> None:
    """Check, then change, lab hosts: GPU, group, shared conda, envs, no suspend, code synced."""
    echo = partial(print, file=sys.stderr if json else sys.stdout, flush=True)
    with user_errors():
        names = steps.choose_steps(only, slurm)
        outcomes = steps.run_steps(
            host,
            configured(c),
            names,
            dry=dry,
            echo=echo,
            ask_password=ask_sudo_password,
            sudo_password=c.config.sudo.password,
            move_conda=move_conda,
        )
        print_report(outcomes, as_json=json, dry=dry)
        fail_on_errors(outcomes)


@task(help={"host": HOSTS_HELP})
def doctor(c: Context, host: str) -> None:
    """Explain the GPU stack of a host: driver, CUDA, cuDNN and the envs' torch (read-only)."""
    with user_errors():
        password = c.config.sudo.password
        outcomes = steps.run_steps(
            host, configured(c), ["gpu"], dry=True, echo=print, sudo_password=password
        )
        fail_on_errors(outcomes)


@task(
    help={
        "host": HOSTS_HELP,
        "dry": "print what would be copied and change nothing",
        "json": "print the summary as JSON on stdout (progress lines go to stderr)",
        "ask_sudo_password": "prompt for the sudo password (needed only to create the lab folder)",
    }
)
def sync(
    c: Context, host: str, dry: bool = False, json: bool = False, ask_sudo_password: bool = False
) -> None:
    """Copy this checkout into the lab folder on a host (rsync, else SFTP); deletes nothing."""
    provision(c, host, dry=dry, only="sync", json=json, ask_sudo_password=ask_sudo_password)
