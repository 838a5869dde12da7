"""What the Slurm steps read from a host: packages, node, munge key, units, addresses.

Reads only (`provisioning.slurm` changes things). `read_cluster` gathers the facts of every
host of a cluster before each step; `read_root` reads what only root may, under ``sudo -n``.
"""

from __future__ import annotations

import base64
import shlex
from collections.abc import Sequence

from provisioning import gpu
from provisioning.core import Connection, ProvisionError, Result, read_result
from provisioning.hosts import Host
from provisioning.slurm_conf import MUNGE_KEY, Cluster, Node, parse_installed, parse_slurmd


def read_root(connection: Connection, *argv: str) -> Result:
    """A read that needs root (the munge key, MariaDB): under ``sudo -n``, so it never prompts."""
    result = read_result(connection, "sudo", "-n", "--", *argv)
    if result.return_code == 127 and "sudo" in result.stderr:
        raise ProvisionError(
            f"`{shlex.join(argv)}` needs root and the host has no sudo ({result.stderr.strip()}); "
            "install sudo there (apt install sudo) and allow the login user to use it"
        )
    if not result.ok and "sudo:" in result.stderr and "password" in result.stderr:
        raise ProvisionError(
            f"`{shlex.join(argv)}` needs root, and sudo -n was refused "
            f"({result.stderr.strip()}); reads cannot answer a password prompt: allow "
            "passwordless sudo for the login user, or log in as root"
        )
    return result


def read_installed(connection: Connection, packages: Sequence[str]) -> set[str]:
    """Which of ``packages`` dpkg says are installed (unknown ones only print to stderr)."""
    form = "${Package} ${db:Status-Abbrev}\n"
    return parse_installed(
        read_result(connection, "dpkg-query", "-W", "-f", form, *packages).stdout
    )


def read_gpus(connection: Connection) -> int:
    """How many GPUs NVML sees; 0 without a driver. A broken driver is an error."""
    try:
        return len(gpu.read_probe(connection).gpus)
    except gpu.NoDriver:
        return 0


def read_node(connection: Connection, alias: str) -> Node | None:
    """The host's node from ``slurmd -C`` and NVML; None while slurmd is not installed."""
    result = read_result(connection, "/usr/sbin/slurmd", "-C")
    if result.return_code == 127:
        return None
    cgroup = read_result(connection, "stat", "-f", "-c", "%T", "/sys/fs/cgroup").stdout
    return parse_slurmd(result.stdout, alias, read_gpus(connection), cgroup.strip() == "cgroup2fs")


def read_key(connection: Connection) -> bytes | None:
    """The munge key's bytes (through base64, never printed), or None when it is missing."""
    result = read_root(connection, "base64", "-w", "0", MUNGE_KEY)
    return base64.b64decode(result.stdout.strip()) if result.ok else None


def read_key_digest(connection: Connection) -> str | None:
    """The sha256 of the host's munge key, or None when it is missing."""
    result = read_root(connection, "sha256sum", MUNGE_KEY)
    return result.stdout.split()[0] if result.ok and result.stdout.strip() else None


def read_stat(connection: Connection, path: str) -> tuple[str, str] | None:
    """(owner:group, octal mode) of a root-only path, or None when it is missing."""
    result = read_root(connection, "stat", "-c", "%U:%G %a", path)
    if not result.ok:
        return None
    owner, mode = result.stdout.split()
    return owner, mode


def read_active(connection: Connection, unit: str) -> bool:
    return read_result(connection, "systemctl", "is-active", unit).stdout.strip() == "active"


def read_address(connection: Connection, name: str) -> str | None:
    """The address ``name`` resolves to on the host (getent hosts), or None."""
    words = read_result(connection, "getent", "hosts", name).stdout.split()
    return words[0] if words else None


def read_cluster(
    hosts: Sequence[Host],
    connections: dict[str, Connection],
    previous: Cluster | None = None,
    facts: bool = True,
) -> Cluster:
    """The cluster of ``hosts`` (the first is the controller): nodes, the controller's key.

    Only hosts in ``connections`` are read; a host not read has no node, so the steps that
    need every node skip until it has one. Nodes already in ``previous`` are kept (hardware
    does not change during a run); without ``facts`` only the roles are known.
    """
    controller = hosts[0]
    known = {node.alias: node for node in previous.nodes} if previous else {}
    nodes: list[Node] = []
    key = None
    if facts:
        for host in hosts:
            if host.alias in known:
                nodes.append(known[host.alias])
            elif host.alias in connections:
                node = read_node(connections[host.alias], host.alias)
                nodes += [node] if node else []
        names = [node.name for node in nodes]
        doubled = sorted({name for name in names if names.count(name) > 1})
        if doubled:
            raise ProvisionError(
                f"hosts {', '.join(n.alias for n in nodes if n.name in doubled)} all report the "
                f"host name {doubled[0]}; Slurm needs one name per node: rename them with "
                "`sudo hostnamectl set-hostname NAME`"
            )
        if len(hosts) > 1 and any(node.alias == controller.alias for node in nodes):
            key = read_key(connections[controller.alias])
    return Cluster(
        controller.slurm_cluster,
        controller.slurm_partition,
        controller.alias,
        tuple(host.alias for host in hosts),
        tuple(nodes),
        key,
    )
