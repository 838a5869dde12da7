"""Slurm's configuration for the lab's servers, as text: slurm.conf, gres.conf, slurmdbd.conf.

Pure functions from what the hosts report (``slurmd -C``, the GPUs NVML sees) to the files
:mod:`provisioning.slurm` writes, and the parsers of what the hosts print. Nothing here talks
to a host.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from provisioning.core import ProvisionError, SkipStep

# --- constants ---------------------------------------------------------------------------------

NODE_PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
CONTROLLER_PACKAGES = ("slurmdbd", "mariadb-server")  # accounting: sacct, which submitit needs
NODE_UNITS = ("munge", "slurmd")
CONTROLLER_UNITS = ("munge", "mariadb", "slurmdbd", "slurmctld", "slurmd")  # in start order
MUNGE_KEY = "/etc/munge/munge.key"
SLURM_CONF = "/etc/slurm/slurm.conf"
GRES_CONF = "/etc/slurm/gres.conf"
SLURMDBD_CONF = "/etc/slurm/slurmdbd.conf"
MARIADB_CONF = "/etc/mysql/mariadb.conf.d/60-gafkd-slurm.cnf"
STATE_SAVE = "/var/spool/slurmctld"  # queued jobs survive a reboot (the unit starts without -c)
SLURMD_SPOOL = "/var/spool/slurmd"
DATABASE = "slurm_acct_db"
PORTS = {"slurmctld": 6817, "slurmd": 6818, "slurmdbd": 6819}
SRUN_PORTS = "60001-60100"
MEMORY_SHARE = 0.9  # RealMemory above what slurmd detects drains the node (pitfall 7)
HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}")  # nothing a shell or slurm.conf reads
VERIFY_POLL = (20, 0.5)  # tries, seconds apart: a started slurmd registers within a few seconds
HEADER = (
    "# Written by gafkd provisioning (docs/provisioning.md, Slurm); rewritten when it differs.\n"
)
MARIADB_CONTENT = (
    HEADER + "[mysqld]\n# unix socket only: slurmdbd connects as root through it\nskip-networking\n"
)
DATABASE_QUERY = f"SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME='{DATABASE}'"
CREATE_DATABASE = f"CREATE DATABASE IF NOT EXISTS {DATABASE}"
NOT_INSTALLED = "slurm packages are not installed on {} yet (the slurm-packages step installs them)"


@dataclass(frozen=True)
class Node:
    """One host as Slurm sees it: ``slurmd -C`` plus the GPUs NVML reports."""

    alias: str
    name: str  # the short host name slurmd reports; slurm.conf's NodeName
    cpus: int
    boards: int
    sockets_per_board: int
    cores_per_socket: int
    threads_per_core: int
    memory: int  # MiB, as slurmd -C reports it
    gpus: int
    cgroup: bool  # cgroup v2 mounted: proctrack/cgroup


@dataclass(frozen=True)
class Cluster:
    """The hosts of one run, the controller first, and what was read from them."""

    name: str  # ClusterName
    partition: str
    controller: str  # alias of the first host
    aliases: tuple[str, ...]
    nodes: tuple[Node, ...] = ()  # hosts where slurmd -C answered, in host order
    key: bytes | None = field(default=None, repr=False)  # the controller's munge key; never shown

    def node(self, alias: str) -> Node:
        for node in self.nodes:
            if node.alias == alias:
                return node
        raise SkipStep(NOT_INSTALLED.format(alias))

    def all_nodes(self) -> tuple[Node, ...]:
        """Every host's node; SkipStep while one of them has no slurm packages yet."""
        return tuple(self.node(alias) for alias in self.aliases)

    @property
    def single(self) -> bool:
        return len(self.aliases) == 1


# --- parse_* -----------------------------------------------------------------------------------


def parse_installed(text: str) -> set[str]:
    """``dpkg-query -W -f '${Package} ${db:Status-Abbrev}\\n'`` -> the installed packages."""
    found = (line.split() for line in text.splitlines())
    return {words[0] for words in found if len(words) == 2 and words[1].startswith("ii")}


def parse_slurmd(text: str, alias: str, gpus: int, cgroup: bool) -> Node:
    """``slurmd -C``'s first line (``NodeName=vm CPUs=2 ... RealMemory=24105``) -> Node."""
    fields = dict(re.findall(r"(\w+)=(\S+)", text.splitlines()[0] if text.strip() else ""))
    keys = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory")
    if "NodeName" not in fields or not all(fields.get(key, "").isdigit() for key in keys):
        raise ProvisionError(
            f"slurmd -C on {alias} printed {text.strip()[:200]!r}; expected a line like "
            "'NodeName=NAME CPUs=N Boards=N SocketsPerBoard=N CoresPerSocket=N ThreadsPerCore=N "
            "RealMemory=MiB'. Run `slurmd -C` there by hand; reinstall slurmd if it fails"
        )
    name = fields["NodeName"]
    if not HOST_NAME.fullmatch(name):
        raise ProvisionError(
            f"{alias}'s host name is {name!r}; Slurm's NodeName must be a plain host name "
            "(letters, digits and '-'): set one with `sudo hostnamectl set-hostname NAME`"
        )
    cpus, boards, sockets, cores, threads, memory = (int(fields[key]) for key in keys)
    return Node(alias, name, cpus, boards, sockets, cores, threads, memory, gpus, cgroup)


def parse_conf(text: str) -> dict[str, str]:
    """slurm.conf-style text -> {key: value}; NodeName and PartitionName lines keyed by name."""
    entries = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        key, _, value = line.partition("=")
        if not value:
            continue
        if key in ("NodeName", "PartitionName"):
            name, _, rest = value.partition(" ")
            key, value = f"{key}={name}", rest.strip()
        entries[key] = value
    return entries


def conf_changes(old: str | None, new: str) -> str:
    """The changed keys of a config file, e.g. 'changed RealMemory; added Gres' (a diff summary)."""
    if old is None:
        return f"new file, {len(parse_conf(new))} keys"
    before, after = parse_conf(old), parse_conf(new)
    parts = [
        f"{label} {', '.join(keys)}"
        for label, keys in (
            ("changed", [key for key in after if key in before and before[key] != after[key]]),
            ("added", [key for key in after if key not in before]),
            ("removed", [key for key in before if key not in after]),
        )
        if keys
    ]
    return "; ".join(parts) or "comments or layout only"


def device_files(count: int) -> str:
    """The GPUs' device files as gres.conf writes them: /dev/nvidia0 or /dev/nvidia[0-3]."""
    return "/dev/nvidia0" if count == 1 else f"/dev/nvidia[0-{count - 1}]"


def gres_conf(cluster: Cluster) -> str | None:
    """gres.conf: one line per host with GPUs (no AutoDetect: Debian has no gpu_nvml plugin)."""
    lines = [
        f"NodeName={node.name} Name=gpu File={device_files(node.gpus)}\n"
        for node in cluster.all_nodes()
        if node.gpus
    ]
    return HEADER + "".join(lines) if lines else None


def slurm_conf(cluster: Cluster) -> str:
    """slurm.conf for the whole cluster, the same on every host (reference/orchestration.md B.3)."""
    nodes = cluster.all_nodes()
    controller = cluster.node(cluster.controller).name
    dbd_host = "localhost" if cluster.single else controller
    cgroup = all(node.cgroup for node in nodes)
    lines = [
        f"ClusterName={cluster.name}",
        f"SlurmctldHost={controller}",
        "SlurmUser=root",  # slurmdbd logs into MariaDB as root through the unix socket
        "AuthType=auth/munge",
        "CredType=cred/munge",
        "# daemons bind to the address their host name resolves to, never to 0.0.0.0",
        "CommunicationParameters=NoInAddrAny,NoCtldInAddrAny",
        f"SlurmctldPort={PORTS['slurmctld']}",
        f"SlurmdPort={PORTS['slurmd']}",
        f"SrunPortRange={SRUN_PORTS}",
        f"StateSaveLocation={STATE_SAVE}",
        f"SlurmdSpoolDir={SLURMD_SPOOL}",
        "SlurmctldPidFile=/run/slurmctld.pid",
        "SlurmdPidFile=/run/slurmd.pid",
        "SlurmctldLogFile=/var/log/slurm/slurmctld.log",
        "SlurmdLogFile=/var/log/slurm/slurmd.log",
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
        "MpiDefault=none",
        "MailProg=/bin/true",
        f"ProctrackType=proctrack/{'cgroup' if cgroup else 'linuxproc'}",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/linux",
        "JobAcctGatherFrequency=30",
        "AccountingStorageType=accounting_storage/slurmdbd",
        f"AccountingStorageHost={dbd_host}",
        f"AccountingStoragePort={PORTS['slurmdbd']}",
        "JobCompType=jobcomp/none",
        "SwitchType=switch/none",
        "SchedulerType=sched/backfill",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "ReturnToService=2",
        "# submitit: preempted jobs get USR2 and requeue themselves from their checkpoint",
        "SlurmctldParameters=preempt_send_user_signal",
        "MinJobAge=300",
    ]
    if any(node.gpus for node in nodes):
        lines.append("GresTypes=gpu")
    for node in nodes:
        gres = f" Gres=gpu:{node.gpus}" if node.gpus else ""
        lines.append(
            f"NodeName={node.name} CPUs={node.cpus} Boards={node.boards} "
            f"SocketsPerBoard={node.sockets_per_board} CoresPerSocket={node.cores_per_socket} "
            f"ThreadsPerCore={node.threads_per_core} "
            f"RealMemory={int(node.memory * MEMORY_SHARE)}{gres} State=UNKNOWN"
        )
    lines.append(
        f"PartitionName={cluster.partition} Nodes=ALL Default=YES MaxTime=INFINITE State=UP"
    )
    return HEADER + "\n".join(lines) + "\n"


def slurmdbd_conf(cluster: Cluster, controller: str) -> str:
    """slurmdbd.conf: slurmdbd on the controller, MariaDB through its unix socket."""
    lines = [
        "AuthType=auth/munge",
        f"DbdHost={'localhost' if cluster.single else controller}",
        f"DbdPort={PORTS['slurmdbd']}",
        "# bind to DbdHost's address only (slurmdbd ignores slurm.conf's parameters)",
        "CommunicationParameters=NoInAddrAny",
        "SlurmUser=root",
        "PidFile=/run/slurmdbd.pid",
        "LogFile=/var/log/slurm/slurmdbd.log",
        "DebugLevel=info",
        "StorageType=accounting_storage/mysql",
        "# localhost: MariaDB's unix socket /run/mysqld/mysqld.sock (it has skip-networking)",
        "StorageHost=localhost",
        "StorageUser=root",
        f"StorageLoc={DATABASE}",
    ]
    return HEADER + "\n".join(lines) + "\n"


def parse_node_state(text: str) -> tuple[str, str]:
    """``sinfo -h -n NAME -o '%T|%E'`` -> (state, reason); ('', '') when it printed nothing."""
    state, _, reason = text.strip().partition("|")
    return state.strip(), reason.strip()
