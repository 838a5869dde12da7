"""Per-user envs: each listed user gets each env of ``envs/*.yml`` in ``~/.conda/envs``.

The env is created by that user with the shared conda (:mod:`provisioning.conda`), updated when
its file changed (a stamp in the env holds the file's sha256), owned by the user and not
writable by others. The env files install the torch wheels with pip inside the conda env: the
wheels bundle their own CUDA runtime and cuDNN, so only the driver matters (gpu-stack.md §3.2).
Undo: docs/provisioning.md.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provisioning.conda import (
    Account,
    no_conda,
    read_accounts,
    read_first,
    read_install,
    read_stat,
    read_text,
)
from provisioning.core import (
    STDIN,
    Command,
    Connection,
    ProvisionError,
    SkipStep,
    read_file,
    write_file,
)
from provisioning.hosts import USER_NAME, Host

# --- constants ---------------------------------------------------------------------------------

yaml: Any = importlib.import_module("invoke.util").yaml  # PyYAML, or the copy invoke vendors

ENVS_DIR = Path(__file__).resolve().parent.parent / "envs"
ENV_FILES_DIR = "/usr/local/share/gafkd/envs"  # the project's env files, readable by all users
STAMP = ".gafkd-env.sha256"  # in each env: the sha256 of the env file it was built from
UMASK_002 = 'umask 002 && exec "$@"'  # files a user's conda adds to the shared cache stay shared


@dataclass(frozen=True)
class EnvFile:
    path: Path  # on this machine
    name: str  # the env's name: ~/.conda/envs/<name>
    text: str
    sha256: str


# --- parse_* -----------------------------------------------------------------------------------


def parse_env_file(text: str, label: str) -> EnvFile:
    """An ``envs/*.yml`` file: name, channels and dependencies; any problem names the file."""

    def bad(problem: str) -> ProvisionError:
        return ProvisionError(f"{label}: {problem}; fix the file (provisioning never edits it)")

    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise bad(f"not valid YAML ({' '.join(str(error).split())})") from None
    if not isinstance(data, dict):
        raise bad(f"expected a mapping with name, channels and dependencies, got {data!r:.60}")
    name, channels, dependencies = (data.get(k) for k in ("name", "channels", "dependencies"))
    if not isinstance(name, str) or not USER_NAME.fullmatch(name):
        raise bad(f"name is {name!r}; expected a plain name such as gafkd")
    if not channels or not all(isinstance(c, str) for c in channels):
        raise bad(f"channels is {channels!r}; expected a list of channel names")
    if not dependencies or not isinstance(dependencies, list):
        raise bad(f"dependencies is {dependencies!r}; expected a non-empty list")
    for item in dependencies:
        pip = item.get("pip") if isinstance(item, dict) and list(item) == ["pip"] else None
        if not isinstance(item, str) and not (isinstance(pip, list) and pip):
            raise bad(f"dependency {item!r} is neither a package spec nor a pip: list")
    digest = hashlib.sha256(text.encode()).hexdigest()
    return EnvFile(Path(label), name, text, digest)


# --- read_* ------------------------------------------------------------------------------------


def read_env_files(envs_dir: Path) -> list[EnvFile]:
    """The project's env files, parsed (local files; provisioning never edits them)."""
    return [parse_env_file(path.read_text(), str(path)) for path in sorted(envs_dir.glob("*.yml"))]


# --- ensure_* ----------------------------------------------------------------------------------


def as_user(account: Account, *argv: str) -> tuple[str, ...]:
    """``argv`` run as ``account``, with its HOME and umask 002 (the shared cache stays shared)."""
    return ("sudo", "-u", account.name, "-H", "--", "sh", "-c", UMASK_002, "sh", *argv)


def ensure_envs(connection: Connection, host: Host) -> Generator[Command, None, str]:
    """Each listed user's env from each envs/*.yml: created, or updated when the file changed."""
    env_files = read_env_files(ENVS_DIR)
    accounts = read_accounts(connection, host)
    install = read_install(connection, host)
    if install is None:
        raise SkipStep(no_conda(host, "the envs need it"))
    conda = f"{install.prefix}/bin/conda"
    for env_file in env_files:
        shared = f"{ENV_FILES_DIR}/{env_file.path.name}"
        if read_file(connection, shared) != env_file.text:
            yield write_file(shared, env_file.text, why=f"the host's copy of {env_file.path.name}")
        for account in accounts:
            yield from ensure_env(connection, account, env_file, conda, shared)
    names = ", ".join(env.name for env in env_files) or "none"
    users = ", ".join(host.users) or "no users listed"
    return f"envs {names} are current, owned by each user and not writable by others ({users})"


def ensure_env(
    connection: Connection, account: Account, env_file: EnvFile, conda: str, shared: str
) -> Generator[Command, None, None]:
    """One user's env: create or update it as that user, stamp it, keep others from writing."""
    path = f"{account.home}/.conda/envs/{env_file.name}"
    user, label = account.name, f"{account.name}'s {env_file.name}"
    if read_stat(connection, f"{path}/conda-meta") is None:
        if read_stat(connection, path) is not None:
            raise ProvisionError(
                f"{path} exists but is no conda env (no conda-meta); ask {user} to move it away"
            )
        change = ("create", f"{label} is missing")
    elif (read_text(connection, f"{path}/{STAMP}") or "").strip() != env_file.sha256:
        change = ("update", f"{label} was built from another {env_file.path.name}")
    else:
        if read_first(connection, path, "!", "-user", user):
            yield Command(("chown", "-R", user, path), sudo=True, why=f"{user} owns {label}")
        if read_first(connection, path, "!", "-type", "l", "-perm", "/022"):
            why = f"only {user} may write {label}"
            yield Command(("chmod", "-R", "go-w", path), sudo=True, why=why)
        return
    verb, why = change
    prune = ("--prune",) if verb == "update" else ()
    argv = as_user(account, conda, "env", verb, "-f", shared, "-p", path, *prune)
    yield Command(argv, sudo=True, why=f"{why}: {verb} it as {user}")
    stamp = ("install", "-o", user, "-g", str(account.gid), "-m", "0644", STDIN, f"{path}/{STAMP}")
    yield Command(
        stamp,
        sudo=True,
        why="remember the env file it was built from",
        stdin=env_file.sha256 + "\n",
    )
    yield Command(("chmod", "-R", "go-w", path), sudo=True, why=f"only {user} may write {label}")
