"""Provisioning tasks: ``invoke provision --host lab`` and ``invoke doctor --host lab``.

Each step reads the host, prints ``host | step | why | command`` for every difference and applies
it unless ``--dry``; docs/provisioning.md says what each step checks, changes and how to undo it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from getpass import getpass
from pathlib import Path

from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task
from rich.console import Console

from provisioning import code, conda, envs, folders, gpu, power, system
from provisioning.core import ProvisionError
from provisioning.hosts import connect, select_hosts
from provisioning.runner import DRY_NOTE, Outcome, Step, report_json, report_table, run_hosts
from provisioning.slurm import STEPS as SLURM_STEPS
from provisioning.slurm import run_cluster

STEPS: dict[str, Step] = {  # in this order
    "system": system.check_os,
    "gpu": gpu.check_compat,
    "group": conda.ensure_group,
    "queue": folders.ensure_queue,
    "lab-folders": folders.ensure_lab_folders,
    "conda": conda.ensure_conda,
    "condarc": conda.ensure_condarc,
    "envs": envs.ensure_envs,
    "power": power.ensure_power,
    "sync": code.ensure_code,
}

HOST_HELP = "ssh alias under hosts: in invoke.yaml or in ~/.ssh/config, 'local', or 'lab1,lab2'"


def run_steps(
    c: Context,
    host: str,
    names: list[str],
    dry: bool,
    ask: bool,
    echo: Callable[[str], None],
    move_conda: bool = False,
) -> list[Outcome]:
    """Resolve hosts and steps, then run them; user and host errors become one-line exits."""
    table = {**STEPS, "conda": conda.ensure_conda_moved} if move_conda else STEPS
    try:
        hosts = select_hosts(host, c.config.get("hosts") or {}, Path.home() / ".ssh" / "config")
        password = getpass(f"sudo password on {host}: ") if ask else c.config.sudo.password
        steps = [(name, table[name]) for name in names if name in table]
        outcomes = (
            run_hosts(hosts, connect, steps, dry=dry, echo=echo, sudo_password=password)
            if steps
            else []
        )
        cluster = [name for name in names if name in SLURM_STEPS]  # after the others, step-wise
        failed = frozenset(o.host for o in outcomes if o.status == "failed")
        return outcomes + (
            run_cluster(hosts, connect, cluster, dry=dry, echo=echo, sudo_password=password,
                        failed=failed) if cluster else []
        )  # fmt: skip
    except ProvisionError as error:
        raise Exit(f"error: {error}", code=1) from None


def print_report(outcomes: list[Outcome], *, as_json: bool, dry: bool) -> None:
    """The summary: a table, or JSON for scripts; then the dry-run caveat when it applies."""
    if as_json:
        print(report_json(outcomes, dry=dry))
    else:
        Console().print(report_table(outcomes))
    if dry and any(o.status == "planned" for o in outcomes):
        print(DRY_NOTE, file=sys.stderr if as_json else sys.stdout)


def fail_on_errors(outcomes: list[Outcome]) -> None:
    """Exit 1 naming every failed step, after the report was printed."""
    failed = [f"{o.host} {o.step}: {o.detail}" for o in outcomes if o.status == "failed"]
    if failed:
        raise Exit("error: " + "\nerror: ".join(failed), code=1)


@task(
    help={
        "host": HOST_HELP,
        "dry": "print the plan and change nothing (later steps' plans may then be incomplete)",
        "only": f"run this one step: {', '.join([*STEPS, *SLURM_STEPS])}",
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
    known = [*STEPS, *SLURM_STEPS]
    if only and only not in known:
        raise Exit(f"error: --only {only!r} is not a step; choose one of {', '.join(known)}", 1)
    stream = sys.stderr if json else sys.stdout

    def echo(line: str) -> None:
        print(line, file=stream, flush=True)

    names = [only] if only else list(STEPS) + (list(SLURM_STEPS) if slurm else [])
    outcomes = run_steps(c, host, names, dry, ask_sudo_password, echo, move_conda)
    print_report(outcomes, as_json=json, dry=dry)
    fail_on_errors(outcomes)


@task(
    help={
        "host": HOST_HELP,
        "selftest": "also run gafkd selftest in each host's gafkd env: every GPU (or the CPU) "
        "images, trains and reports its health, held against this verdict (under a minute a GPU)",
    }
)
def doctor(c: Context, host: str, selftest: bool = False) -> None:
    """Explain the GPU stack of a host: driver, CUDA, cuDNN and the envs' torch (read-only)."""
    outcomes = run_steps(c, host, ["gpu"], dry=True, ask=False, echo=print)
    if selftest:
        show_selftests(c, host)
    fail_on_errors(outcomes)


def show_selftests(c: Context, host: str) -> None:
    """The hosts' selftest reports on one screen; exit 1 naming each failed or disagreeing one."""
    from gafkd.selftest import screen
    from provisioning.selftest import selftest_failed, selftest_hosts

    try:
        found = selftest_hosts(host, c.config.get("hosts") or {}, Path.home() / ".ssh" / "config")
    except ProvisionError as error:
        raise Exit(f"error: {error}", code=1) from None
    Console().print(screen(*found))
    failed = selftest_failed(*found)
    if failed:
        raise Exit("error: " + "\nerror: ".join(failed), code=1)


@task(
    help={
        "host": HOST_HELP,
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
