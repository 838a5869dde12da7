"""The steps of ``invoke provision``, in their order, and running the chosen ones on hosts.

`STEPS` are the host steps, run on every host in parallel by :mod:`provisioning.runner`; the
Slurm steps (:mod:`provisioning.slurm`) follow them, step by step across the cluster.
`run_steps` is what the ``provision``, ``doctor`` and ``sync`` tasks call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from getpass import getpass
from pathlib import Path
from typing import Any

from provisioning import code, conda, envs, folders, gpu, power, slurm, system
from provisioning.core import ProvisionError
from provisioning.hosts import connect, select_hosts
from provisioning.runner import Outcome, Step, run_hosts

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
SLURM_STEPS = slurm.STEPS  # after the host steps, step by step across the cluster
ALL_STEPS = (*STEPS, *SLURM_STEPS)


def choose_steps(only: str, slurm: bool) -> list[str]:
    """The steps to run: ``--only STEP``, else every host step, then with `slurm` the Slurm ones."""
    if only and only not in ALL_STEPS:
        raise ProvisionError(f"--only {only!r} is not a step; choose one of {', '.join(ALL_STEPS)}")
    return [only] if only else list(STEPS) + (list(SLURM_STEPS) if slurm else [])


def run_steps(
    host: str,
    configured: Mapping[str, Any],
    names: Sequence[str],
    *,
    dry: bool,
    echo: Callable[[str], None],
    ask_password: bool = False,
    sudo_password: str | None = None,
    move_conda: bool = False,
) -> list[Outcome]:
    """Resolve ``--host`` (`configured`: invoke.yaml's ``hosts:``) and run the steps `names`:
    the host steps on every host in parallel, then the Slurm steps; with `ask_password` the
    sudo password is asked for once the hosts are known. `move_conda` makes the conda step
    install afresh at ``conda_prefix`` rather than adopt an install found elsewhere."""
    table = {**STEPS, "conda": conda.ensure_conda_moved} if move_conda else STEPS
    hosts = select_hosts(host, configured, Path.home() / ".ssh" / "config")
    password = getpass(f"sudo password on {host}: ") if ask_password else sudo_password
    steps = [(name, table[name]) for name in names if name in table]
    outcomes = (
        run_hosts(hosts, connect, steps, dry=dry, echo=echo, sudo_password=password)
        if steps
        else []
    )
    cluster = [name for name in names if name in SLURM_STEPS]  # after the others, step-wise
    failed = frozenset(o.host for o in outcomes if o.status == "failed")
    if not cluster:
        return outcomes
    return outcomes + slurm.run_cluster(
        hosts, connect, cluster, dry=dry, echo=echo, sudo_password=password, failed=failed
    )
