"""The Host record, loaded from the project's ``invoke.yaml`` ``hosts:`` section, and connections.

SSH details (user, port, key, jump host) stay in ``~/.ssh/config``, which Fabric reads; the
project holds only what provisioning needs. ``local`` is this machine. Host keys are checked
against ``~/.ssh/known_hosts`` (Fabric does not check them by default). A host entry may name
other files with ``ssh_config`` and ``known_hosts`` (the test host does); rsync uses the same.
"""

from __future__ import annotations

import re
import shutil
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from provisioning.core import Connection, ProvisionError

LOCAL = "local"
USER_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")  # Debian's adduser NAME_REGEX, without the '$'
GROUP_NAME = USER_NAME
LAB_DIR = re.compile(r"/[A-Za-z0-9._/{}-]*")  # {user}: the ssh login user; nothing a shell reads
PYTHON = re.compile(r"(/|~/)[A-Za-z0-9._/+-]*")  # ~/: the login user's home
SLURM_CLUSTER = re.compile(r"[a-z][a-z0-9_]{0,39}")  # also names tables in slurmdbd's database
SLURM_PARTITION = re.compile(r"[A-Za-z0-9_-]{1,40}")


@dataclass(frozen=True)
class Host:
    """One server: its ssh alias and the lab's settings for it."""

    alias: str
    group: str = "lab"  # shared group owning the conda prefix
    conda_prefix: str = "/opt/conda"  # shared conda install, absolute
    users: tuple[str, ...] = ()  # lab members: added to the group, each gets the envs
    data_paths: tuple[str, ...] = ()  # shared data folders, absolute
    expected_gpus: int | None = None  # None: do not check the GPU count
    lab_dir: str = "/srv/lab/{user}/gafkd"  # where `invoke sync` puts the code; {user}: ssh login
    ssh_config: str | None = None  # None: ~/.ssh/config
    known_hosts: str | None = None  # None: ~/.ssh/known_hosts
    conda_flavor: Literal["miniforge", "anaconda"] = "miniforge"  # what a fresh install gets
    conda_installer: str | None = None  # installer on this machine, uploaded (offline host)
    conda_world_readable: bool = False  # False: only the group reads and enters the conda install
    python: str = "~/.conda/envs/gafkd/bin/python"  # the env that runs gafkd; ~: login's home
    queue_dir: str = "/srv/lab/.gafkd-queue"  # GPU slots shared by the group's runners
    slurm_cluster: str = "lab"  # --slurm: ClusterName (the controller's, i.e. the first host's)
    slurm_partition: str = "lab"  # --slurm: the one partition, holding every node
    backend: Literal["local", "slurm"] = "local"  # what `invoke launch --host` uses by default
    slurm: tuple[str, ...] = ()  # job settings as slurm.KEY=VALUE, from hosts.<alias>.slurm


def parse_host(alias: str, settings: Mapping[str, Any]) -> Host:
    """Validate one ``hosts:`` entry; names and paths that could surprise a shell are refused."""
    known = set(Host.__dataclass_fields__) - {"alias"}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ProvisionError(
            f"invoke.yaml hosts.{alias} has unknown keys {unknown}; known: {sorted(known)}"
        )
    group = str(settings.get("group", Host.group))
    prefix = str(settings.get("conda_prefix", Host.conda_prefix))
    users = tuple(str(user) for user in settings.get("users") or ())
    data_paths = tuple(str(path) for path in settings.get("data_paths") or ())
    expected = settings.get("expected_gpus")
    lab_dir = str(settings.get("lab_dir", Host.lab_dir))
    files = {key: settings.get(key) for key in ("ssh_config", "known_hosts")}
    flavor = settings.get("conda_flavor", Host.conda_flavor)
    installer = settings.get("conda_installer")
    world_readable = settings.get("conda_world_readable", Host.conda_world_readable)
    python = settings.get("python", Host.python)
    queue_dir = str(settings.get("queue_dir", Host.queue_dir))
    backend = settings.get("backend", Host.backend)
    slurm = _slurm_settings(alias, settings.get("slurm") or {})
    if backend not in ("local", "slurm"):
        raise ProvisionError(
            f"invoke.yaml hosts.{alias}.backend is {backend!r}; expected local or slurm"
        )
    if flavor not in ("miniforge", "anaconda"):
        raise ProvisionError(
            f"invoke.yaml hosts.{alias}.conda_flavor is {flavor!r}; expected miniforge or anaconda"
        )
    if installer is not None and (not isinstance(installer, str) or "\n" in installer):
        raise ProvisionError(
            f"invoke.yaml hosts.{alias}.conda_installer is {installer!r}; expected the path of "
            "an installer file on this machine, or leave it out to download Miniforge"
        )
    if not isinstance(world_readable, bool):
        raise ProvisionError(
            f"invoke.yaml hosts.{alias}.conda_world_readable is {world_readable!r}; expected true "
            "(every user may read and run the conda install) or false (the group only)"
        )
    if not isinstance(python, str) or not PYTHON.fullmatch(python):
        raise ProvisionError(
            f"invoke.yaml hosts.{alias}.python is {python!r}; expected the absolute path (or one "
            "starting with ~/) of the env's python on the host, e.g. ~/.conda/envs/gafkd/bin/python"
        )
    cluster = settings.get("slurm_cluster", Host.slurm_cluster)
    partition = settings.get("slurm_partition", Host.slurm_partition)
    if not isinstance(cluster, str) or not SLURM_CLUSTER.fullmatch(cluster):
        raise ProvisionError(
            f"invoke.yaml hosts.{alias}.slurm_cluster is {cluster!r}; expected a Slurm cluster "
            "name: lower-case letters, digits and '_', starting with a letter, e.g. lab"
        )
    if not isinstance(partition, str) or not SLURM_PARTITION.fullmatch(partition):
        raise ProvisionError(
            f"invoke.yaml hosts.{alias}.slurm_partition is {partition!r}; expected a partition "
            "name of letters, digits, '_' or '-', e.g. lab"
        )
    for kind, name in [("group", group)] + [("user", user) for user in users]:
        if not USER_NAME.fullmatch(name):
            raise ProvisionError(
                f"invoke.yaml hosts.{alias}: {kind} name {name!r} is not a plain name; expected "
                "lower-case letters, digits, '_' or '-' (at most 32, not starting with a digit)"
            )
    for path in (prefix, *data_paths):
        if not path.startswith("/") or "\0" in path or "\n" in path:
            raise ProvisionError(
                f"invoke.yaml hosts.{alias}: path {path!r} must be absolute, on one line"
            )
    if expected is not None and (not isinstance(expected, int) or expected < 0):
        raise ProvisionError(
            f"invoke.yaml hosts.{alias}.expected_gpus is {expected!r}; expected a count >= 0"
        )
    if not LAB_DIR.fullmatch(lab_dir) or set("{}") & set(lab_dir.replace("{user}", "")):
        raise ProvisionError(
            f"invoke.yaml hosts.{alias}.lab_dir is {lab_dir!r}; expected an absolute path of "
            "letters, digits and . _ - / only, optionally with {user} for the ssh login user"
        )
    if not LAB_DIR.fullmatch(queue_dir) or set("{}") & set(queue_dir) or not queue_dir.strip("/"):
        raise ProvisionError(
            f"invoke.yaml hosts.{alias}.queue_dir is {queue_dir!r}; expected an absolute path of "
            "letters, digits and . _ - / only (one folder for all users, so no {user})"
        )
    for key, file in files.items():
        if file is not None and not (isinstance(file, str) and file.startswith(("/", "~"))):
            raise ProvisionError(
                f"invoke.yaml hosts.{alias}.{key} is {file!r}; expected an absolute path "
                "(or one starting with ~), or leave it out for the file under ~/.ssh"
            )
    return Host(
        alias,
        group=group,
        conda_prefix=prefix.rstrip("/") or "/",
        users=users,
        data_paths=data_paths,
        expected_gpus=expected,
        lab_dir=lab_dir.rstrip("/") or "/",
        ssh_config=files["ssh_config"],
        known_hosts=files["known_hosts"],
        conda_flavor=flavor,
        conda_installer=installer,
        conda_world_readable=world_readable,
        python=python,
        queue_dir=queue_dir.rstrip("/"),
        slurm_cluster=cluster,
        slurm_partition=partition,
        backend=backend,
        slurm=slurm,
    )


def _slurm_settings(alias: str, table: Any) -> tuple[str, ...]:
    """hosts.<alias>.slurm (partition, account, qos, time_min, ...) as slurm.KEY=VALUE items.

    Provisioning only carries them; `invoke launch --host` checks the keys and values where it
    uses them (`gafkd.experiments.slurm.check_host_settings`)."""
    if not isinstance(table, Mapping):
        raise ProvisionError(
            f"invoke.yaml hosts.{alias}.slurm is {table!r}; expected a mapping such as "
            "{partition: gpu, account: mylab}"
        )
    return tuple(f"slurm.{key}={value}" for key, value in table.items())


def ssh_files(host: Host) -> tuple[Path, Path]:
    """The ssh_config and known_hosts files for ``host``: its settings, else those in ~/.ssh."""
    ssh = Path.home() / ".ssh"
    config = Path(host.ssh_config).expanduser() if host.ssh_config else ssh / "config"
    known = Path(host.known_hosts).expanduser() if host.known_hosts else ssh / "known_hosts"
    return config, known


def ssh_aliases(ssh_config: Path) -> set[str]:
    """The concrete ``Host`` names in an ssh_config file (patterns with * or ? left out)."""
    from paramiko.config import SSHConfig

    if not ssh_config.is_file():
        return set()
    names = SSHConfig.from_path(str(ssh_config)).get_hostnames()
    return {name for name in names if not set(name) & set("*?!")}


def select_hosts(names: str, configured: Mapping[str, Any], ssh_config: Path) -> list[Host]:
    """Resolve ``--host`` (one alias, ``local``, or ``lab1,lab2``) to Host records."""
    aliases = [name.strip() for name in names.split(",") if name.strip()]
    if not aliases:
        raise ProvisionError("--host is empty; name an ssh alias from invoke.yaml, or 'local'")
    known_ssh = ssh_aliases(ssh_config)
    hosts = []
    for alias in aliases:
        if alias not in configured and alias != LOCAL and alias not in known_ssh:
            known = sorted({LOCAL, *configured, *known_ssh})
            raise ProvisionError(
                f"unknown host {alias!r}: it is neither under hosts: in invoke.yaml nor a Host "
                f"in {ssh_config}; known: {', '.join(known)}. Add it to invoke.yaml (settings) "
                "and ~/.ssh/config (HostName, User, IdentityFile)"
            )
        hosts.append(parse_host(alias, configured.get(alias) or {}))
    return hosts


class LocalConnection:
    """This machine behind the Connection protocol: invoke's local runner, and copy for put."""

    def __init__(self) -> None:
        from invoke.context import Context

        self.context = Context()

    def run(self, command: str, **kwargs: Any) -> Any:
        return self.context.run(command, **kwargs)

    def sudo(self, command: str, **kwargs: Any) -> Any:
        return self.context.sudo(command, **kwargs)

    def put(self, local: Any, remote: str) -> object:
        if isinstance(local, str | Path):
            return shutil.copyfile(local, remote)
        return Path(remote).write_bytes(local.read())

    def local(self, command: str, **kwargs: Any) -> Any:
        return self.context.run(command, **kwargs)


def connect(host: Host) -> Connection:
    """Open a connection to ``host``; an unknown or changed host key is refused.

    A ``ProxyJump`` hop (Fabric's ``gateway`` connection, one per hop) is checked the same way,
    against the same known_hosts, and opened first, so an error names the hop that failed.
    """
    if host.alias == LOCAL:
        return LocalConnection()
    import paramiko
    from fabric import Config
    from fabric import Connection as FabricConnection

    ssh_config, known_hosts = ssh_files(host)
    config = Config(runtime_ssh_path=str(ssh_config)) if host.ssh_config else None
    connection = FabricConnection(host.alias, config=config)
    hops = [connection]  # the host, then its gateway, the gateway's gateway, ...
    while isinstance(hops[-1].gateway, FabricConnection):
        hops.append(hops[-1].gateway)
    for hop in hops:
        if known_hosts.is_file():
            hop.client.load_host_keys(str(known_hosts))
        hop.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    for hop in reversed(hops):  # the first hop has no gateway; each opens through the one before
        if hop is connection:
            _open(hop, host.alias, "", ssh_config, known_hosts)
        else:
            _open(hop, hop.original_host, host.alias, ssh_config, known_hosts)
    return connection  # type: ignore[no-any-return]


def connect_hosts(
    names: str, configured: Mapping[str, Any], ssh_config: Path | None = None
) -> list[tuple[Host, Connection]]:
    """``--host lab`` or ``lab1,lab2`` -> (Host, open connection) pairs, in the order given;
    `configured` is invoke.yaml's ``hosts:``, `ssh_config` by default ``~/.ssh/config``."""
    chosen = select_hosts(names, configured, ssh_config or Path.home() / ".ssh/config")
    return [(host, connect(host)) for host in chosen]


def connect_one(names: str, configured: Mapping[str, Any]) -> tuple[Host, Connection]:
    """`connect_hosts` for a task that acts on one host; ``lab1,lab2`` is refused."""
    if "," in names:
        raise ProvisionError(f"--host {names!r} names several hosts; this task takes one")
    return connect_hosts(names, configured)[0]


def _open(connection: Any, name: str, jump_to: str, ssh_config: Path, known_hosts: Path) -> None:
    """Open one hop, ``name`` (the jump host to ``jump_to``, if given); ssh's failures become
    one line naming it."""
    import paramiko

    what = f"{name} ({connection.host}:{connection.port})"
    what = f"jump host {what} on the way to {jump_to}" if jump_to else what
    try:
        connection.open()
    except paramiko.BadHostKeyException:
        raise ProvisionError(
            f"the host key of {what} differs from the one in {known_hosts}: "
            "the server was reinstalled or someone is in between. Ask the admin for the new "
            "fingerprint before removing the old key with ssh-keygen -R"
        ) from None
    except paramiko.AuthenticationException as error:
        raise ProvisionError(
            f"ssh login to {what} failed: {error}; check User and IdentityFile "
            f"for {name} in {ssh_config}"
        ) from None
    except paramiko.SSHException as error:
        if "not found in known_hosts" not in str(error):
            raise ProvisionError(f"ssh to {what} failed: {error}") from None
        raise ProvisionError(
            f"the host key of {what} is not in {known_hosts}, so it is refused. "
            f"Check its fingerprint with the admin, then trust it: ssh {name} once by hand, "
            f"or ssh-keyscan -t ed25519 -p {connection.port} -H {connection.host} >> {known_hosts}"
        ) from None
    except (OSError, socket.gaierror) as error:
        raise ProvisionError(
            f"cannot reach {what}: {error}; check HostName and Port for {name} in "
            f"{ssh_config} (Fabric ignores Include lines) and that the host is up"
        ) from None
