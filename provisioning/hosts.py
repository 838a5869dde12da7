"""The Host record, loaded from the project's ``invoke.yaml`` ``hosts:`` section, and connections.

SSH details (user, port, key, jump host) stay in ``~/.ssh/config``, which Fabric reads; the
project holds only what provisioning needs. ``local`` is this machine. Host keys are checked
against ``~/.ssh/known_hosts`` (Fabric does not check them by default).
"""

from __future__ import annotations

import re
import shutil
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provisioning.core import Connection, ProvisionError

LOCAL = "local"
USER_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")  # Debian's adduser NAME_REGEX, without the '$'
GROUP_NAME = USER_NAME


@dataclass(frozen=True)
class Host:
    """One server: its ssh alias and the lab's settings for it."""

    alias: str
    group: str = "lab"  # shared group owning the conda prefix
    conda_prefix: str = "/opt/conda"  # shared conda install, absolute
    users: tuple[str, ...] = ()  # lab members: added to the group, each gets the envs
    data_paths: tuple[str, ...] = ()  # shared data folders, absolute
    expected_gpus: int | None = None  # None: do not check the GPU count


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
    return Host(alias, group, prefix.rstrip("/") or "/", users, data_paths, expected)


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


def connect(host: Host, known_hosts: Path) -> Connection:
    """Open a connection to ``host``; an unknown or changed host key is refused."""
    if host.alias == LOCAL:
        return LocalConnection()
    import paramiko
    from fabric import Connection as FabricConnection

    connection = FabricConnection(host.alias)
    if known_hosts.is_file():
        connection.client.load_host_keys(str(known_hosts))
    connection.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    target = f"{connection.host}:{connection.port}"
    try:
        connection.open()
    except paramiko.BadHostKeyException:
        raise ProvisionError(
            f"the host key of {host.alias} ({target}) differs from the one in {known_hosts}: "
            "the server was reinstalled or someone is in between. Ask the admin for the new "
            "fingerprint before removing the old key with ssh-keygen -R"
        ) from None
    except paramiko.AuthenticationException as error:
        raise ProvisionError(
            f"ssh login to {host.alias} ({target}) failed: {error}; check User and IdentityFile "
            "for this alias in ~/.ssh/config"
        ) from None
    except paramiko.SSHException as error:
        if "not found in known_hosts" not in str(error):
            raise ProvisionError(f"ssh to {host.alias} ({target}) failed: {error}") from None
        raise ProvisionError(
            f"the host key of {host.alias} ({target}) is not in {known_hosts}, so it is refused. "
            f"Check its fingerprint with the admin, then trust it: ssh {host.alias} once by hand, "
            f"or ssh-keyscan -t ed25519 -p {connection.port} -H {connection.host} >> {known_hosts}"
        ) from None
    except (OSError, socket.gaierror) as error:
        raise ProvisionError(
            f"cannot reach {host.alias} ({target}): {error}; check HostName and Port for this "
            "alias in ~/.ssh/config (Fabric ignores Include lines) and that the host is up"
        ) from None
    return connection  # type: ignore[no-any-return]
