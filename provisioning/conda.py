"""Shared conda: the lab group, one group-owned conda install, its .condarc and login hook.

One conda install under a system prefix (``/opt/conda``) is owned by root and the lab group, its
folders setgid and group-writable, never world-writable; a system ``.condarc`` sends each user's
envs to their home and shares one package cache; ``/etc/profile.d/conda.sh`` loads conda at
login. An existing install (the lab's ``/home/root/anaconda3``) is adopted in place; conda
installs cannot be relocated (their scripts hold absolute paths), so ``--move-conda`` installs a
fresh one at the prefix and leaves the old one for the admin to delete. The per-user envs are in
:mod:`provisioning.envs`. Reference: gpu-stack.md §9; undo: docs/provisioning.md.
"""

from __future__ import annotations

import json
import shlex
import textwrap
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from provisioning.core import (
    STDIN,
    Command,
    Connection,
    ProvisionError,
    Result,
    SkipStep,
    read_file,
    read_result,
    write_file,
)
from provisioning.hosts import USER_NAME, Host

# --- constants ---------------------------------------------------------------------------------

Flavor = Literal["miniforge", "anaconda"]

ROOT = Path(__file__).resolve().parent.parent  # the project: relative installer paths start here

# Where a conda install is looked for when the prefix has none (the lab's is the first).
KNOWN_PREFIXES = ("/home/root/anaconda3", "/root/anaconda3", "/root/miniforge3", "/opt/anaconda3")
MINIFORGE_URL = (
    "https://github.com/conda-forge/miniforge/releases/latest/download/Miniforge3-Linux-{arch}.sh"
)
INSTALLER = "/root/gafkd-conda-installer.sh"  # root's home: no other user can swap the file
DOWNLOADERS = ("curl", "wget")  # the first one the host has fetches Miniforge
COMMAND_V = 'command -v "$1"'  # a fixed script: the tool's name is an argument
ANACONDA_CHANNELS = ("repo.anaconda.com", "repo.continuum.io")
ANACONDA_NOTE = (
    "Anaconda's repository and its defaults channels are free only for organisations under 200 "
    "employees and for teaching and research at accredited universities; others need a paid "
    "licence, and conda >= 25 wants `conda tos accept` for defaults (gpu-stack.md §9.3); the "
    "system .condarc uses conda-forge only"
)
HEADER = (
    "# Written by gafkd provisioning (docs/provisioning.md); it is rewritten when it differs.\n"
)
PROFILE_HOOK = "/etc/profile.d/conda.sh"
# find(1) tests: not group read+write, world-writable, or executable but not by the group.
NOT_GROUP_RW = ("!", "-type", "l", "(", "!", "-perm", "-060", "-o", "-perm", "-002",
                "-o", "-perm", "-100", "!", "-perm", "-010", ")")  # fmt: skip


@dataclass(frozen=True)
class Stat:
    owner: str
    group: str
    mode: int  # permission bits with setgid, e.g. 0o2775


@dataclass(frozen=True)
class Account:
    name: str
    gid: int
    home: str


@dataclass(frozen=True)
class Install:
    prefix: str
    version: str
    flavor: Flavor


# --- parse_* -----------------------------------------------------------------------------------


def parse_stat(text: str) -> Stat:
    """``stat -c '%U %G %a'`` -> Stat; e.g. 'root lab 2775'."""
    owner, group, mode = text.split()
    return Stat(owner, group, int(mode, 8))


def parse_group(text: str) -> tuple[int, tuple[str, ...]]:
    """``getent group NAME`` -> (gid, members); e.g. 'lab:x:1002:alice,bob'."""
    _, _, gid, members = text.strip().split(":")
    return int(gid), tuple(member for member in members.split(",") if member)


def parse_passwd(text: str) -> Account:
    """``getent passwd USER`` -> Account (name, primary gid, home)."""
    fields = text.strip().split(":")
    if len(fields) != 7:
        raise ProvisionError(f"getent passwd printed {text.strip()!r}; expected 7 fields")
    return Account(fields[0], int(fields[3]), fields[5])


def parse_conda_info(text: str) -> Install:
    """``conda info --json`` -> Install; Anaconda when its channels are Anaconda's."""
    try:
        info = json.loads(text)
        prefix, version, channels = info["root_prefix"], info["conda_version"], info["channels"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ProvisionError(
            f"conda info --json printed no root_prefix/conda_version/channels: {text[:200]!r}; "
            "the install may be broken: run its bin/conda info by hand"
        ) from None
    anaconda = any(mark in url for url in channels for mark in ANACONDA_CHANNELS)
    return Install(prefix, version, "anaconda" if anaconda else "miniforge")


def condarc_text(prefix: str, flavor: Flavor) -> str:
    """The system .condarc: per-user envs in each home, one shared package cache."""
    lines = textwrap.wrap(ANACONDA_NOTE, 90) if flavor == "anaconda" else []
    note = "".join(f"# {line}\n" for line in lines)
    return (
        f"{HEADER}{note}envs_dirs:\n  - ~/.conda/envs\n"
        f"pkgs_dirs:\n  - {json.dumps(prefix + '/pkgs')}\nchannels:\n  - conda-forge\n"
    )


def profile_hook_text(prefix: str) -> str:
    """/etc/profile.d/conda.sh: defines the ``conda`` shell function in every login shell."""
    script = shlex.quote(f"{prefix}/etc/profile.d/conda.sh")
    return f"{HEADER}if [ -f {script} ]; then\n    . {script}\nfi\n"


# --- read_* ------------------------------------------------------------------------------------


def read_as_root(connection: Connection, *argv: str) -> Result:
    """A read that may need root: plainly first, again under ``sudo -n`` when denied."""
    result = read_result(connection, *argv)
    if result.ok or "Permission denied" not in result.stderr:
        return result
    elevated = read_result(connection, "sudo", "-n", "--", *argv)
    if not elevated.ok and "password" in elevated.stderr:
        raise ProvisionError(
            f"`{shlex.join(argv)}` needs root ({result.stderr.strip()}) and sudo asks for a "
            "password, which reads cannot answer: allow passwordless sudo or log in as root"
        )
    return elevated


def read_stat(connection: Connection, path: str) -> Stat | None:
    """Owner, group and mode of ``path``; None when it does not exist."""
    result = read_as_root(connection, "stat", "-L", "-c", "%U %G %a", "--", path)
    return parse_stat(result.stdout) if result.ok else None


def read_first(connection: Connection, path: str, *tests: str) -> str | None:
    """The first path under ``path`` that matches find(1) ``tests``, or None."""
    result = read_as_root(connection, "find", path, *tests, "-print", "-quit")
    if not result.ok:
        raise ProvisionError(f"find in {path} failed: {result.stderr.strip()[-300:]}")
    return result.stdout.strip() or None


def read_text(connection: Connection, path: str) -> str | None:
    """A file's text (as root if needed), or None when it does not exist."""
    result = read_as_root(connection, "cat", "--", path)
    return result.stdout if result.ok else None


def read_group(connection: Connection, name: str) -> tuple[int, tuple[str, ...]] | None:
    result = read_result(connection, "getent", "group", name)
    return parse_group(result.stdout) if result.ok else None


def read_account(connection: Connection, name: str) -> Account | None:
    result = read_result(connection, "getent", "passwd", name)
    return parse_passwd(result.stdout) if result.ok else None


def read_accounts(connection: Connection, host: Host) -> list[Account]:
    """The listed users' accounts; a missing one is a ProvisionError (users are never created)."""
    for name in host.users:
        if not USER_NAME.fullmatch(name):
            raise ProvisionError(f"user name {name!r} is not a plain name; fix invoke.yaml")
    accounts = {name: read_account(connection, name) for name in host.users}
    missing = [name for name, account in accounts.items() if account is None]
    if missing:
        raise ProvisionError(
            f"users {', '.join(missing)} do not exist on {host.alias}; provisioning never creates "
            f"accounts: create each with `sudo adduser NAME`, or remove them from "
            f"hosts.{host.alias}.users in invoke.yaml"
        )
    return [account for account in accounts.values() if account is not None]


def read_install(connection: Connection, host: Host) -> Install | None:
    """The conda install to use: the prefix's, else the first in KNOWN_PREFIXES, else None."""
    for prefix in dict.fromkeys((host.conda_prefix, *KNOWN_PREFIXES)):
        if read_stat(connection, f"{prefix}/bin/conda") is not None:
            result = read_as_root(connection, f"{prefix}/bin/conda", "info", "--json")
            if not result.ok:
                raise ProvisionError(
                    f"{prefix}/bin/conda info --json failed: {result.stderr.strip()[-300:]}; "
                    "repair or remove that install"
                )
            return parse_conda_info(result.stdout)
    return None


def read_downloader(connection: Connection) -> str | None:
    """The first of DOWNLOADERS on the host's PATH, or None (the host cannot download)."""
    for tool in DOWNLOADERS:
        if read_result(connection, "sh", "-c", COMMAND_V, "sh", tool).ok:
            return tool
    return None


# --- ensure_* ----------------------------------------------------------------------------------


def ensure_group(connection: Connection, host: Host) -> Generator[Command, None, str]:
    """The lab group exists and every listed user is a member."""
    accounts = read_accounts(connection, host)
    group = read_group(connection, host.group)
    if group is None:
        yield Command(("groupadd", host.group), sudo=True, why=f"group {host.group} is missing")
    gid, members = group or (-1, ())
    for account in accounts:
        if account.name not in members and account.gid != gid:
            why = f"{account.name} is not in {host.group} (effective at their next login)"
            yield Command(("usermod", "-aG", host.group, account.name), sudo=True, why=why)
    listed = ", ".join(host.users) or "no users listed"
    return f"group {host.group} exists; members include {listed}"


def ensure_permissions(
    connection: Connection, prefix: str, group: str, *, fresh: bool
) -> Generator[Command, None, None]:
    """Group ``group`` owns ``prefix``, group-writable, setgid folders, never world-writable."""
    known = fresh or read_group(connection, group) is None  # a missing group: all of it differs
    if known or read_first(connection, prefix, "!", "-group", group):
        yield Command(("chgrp", "-R", group, prefix), sudo=True, why=f"{group} owns {prefix}")
    if known or read_first(connection, prefix, *NOT_GROUP_RW):
        why = f"{group} may read and write {prefix}, others may not write"
        yield Command(("chmod", "-R", "g+rwX,o-w", prefix), sudo=True, why=why)
    if known or read_first(connection, prefix, "-type", "d", "!", "-perm", "-2000"):
        why = "setgid folders, so new files belong to the group"
        argv = ("find", prefix, "-type", "d", "-exec", "chmod", "g+s", "{}", "+")
        yield Command(argv, sudo=True, why=why)
    parents = [str(parent) for parent in Path(prefix).parents if str(parent) != "/"]
    for parent in parents:
        found = read_stat(connection, parent)
        if found and not found.mode & 0o001 and not (found.group == group and found.mode & 0o010):
            why = f"members must pass through {parent} ({found.mode:o}) to reach conda; x only"
            yield Command(("chmod", "o+x", parent), sudo=True, why=why)


def ensure_conda(
    connection: Connection, host: Host, *, move: bool = False
) -> Generator[Command, None, str]:
    """One conda install, group-owned; installed when none is found, else adopted in place."""
    install = read_install(connection, host)
    prefix = host.conda_prefix
    if install and (install.prefix == prefix or not move):
        adopted = install.prefix != prefix
        yield from ensure_permissions(connection, install.prefix, host.group, fresh=False)
        note = f"; {ANACONDA_NOTE}" if install.flavor == "anaconda" else ""
        if adopted:
            note += (
                f"; adopted in place instead of {prefix} (a conda install cannot be moved: "
                f"`invoke provision --move-conda` installs a fresh one at {prefix})"
            )
        return f"{install.flavor} conda {install.version} at {install.prefix}{note}"
    if read_stat(connection, prefix) is not None:
        raise ProvisionError(
            f"{prefix} exists but has no bin/conda: move it away or set another conda_prefix "
            f"for {host.alias} in invoke.yaml"
        )
    old = f"; {install.prefix} stays until you delete it" if install else ""
    yield from install_commands(connection, host, old)
    yield from ensure_permissions(connection, prefix, host.group, fresh=True)
    return f"{host.conda_flavor} installed at {prefix}{old}"


def ensure_conda_moved(connection: Connection, host: Host) -> Generator[Command, None, str]:
    """ensure_conda with the user's consent to a fresh install at the prefix (--move-conda)."""
    return (yield from ensure_conda(connection, host, move=True))


def install_commands(
    connection: Connection, host: Host, old: str
) -> Generator[Command, None, None]:
    """Run the installer given in invoke.yaml (uploaded), else download Miniforge on the host."""
    prefix, note = (
        host.conda_prefix,
        f"; {ANACONDA_NOTE}" if host.conda_flavor == "anaconda" else "",
    )
    argv = ("bash", STDIN, "-b", "-p", prefix)
    if host.conda_installer:
        local = Path(host.conda_installer).expanduser()
        local = local if local.is_absolute() else ROOT / local
        if not local.is_file():
            raise ProvisionError(
                f"conda_installer {local} of {host.alias} is not a file on this machine; "
                "download the installer and fix the path in invoke.yaml"
            )
        why = f"install {host.conda_flavor} from {local} (uploaded){old}{note}"
        yield Command(argv, sudo=True, why=why, stdin=local.read_bytes())
        return
    if host.conda_flavor == "anaconda":
        raise ProvisionError(
            f"{host.alias} asks for Anaconda, which is not downloaded for you ({ANACONDA_NOTE}): "
            "download its installer, accepting its terms, and set conda_installer in invoke.yaml"
        )
    downloader = read_downloader(connection)
    if downloader is None:
        raise SkipStep(
            "no conda installer: the host cannot download (no curl/wget) — set "
            f"conda_installer for {host.alias} in invoke.yaml to upload one"
        )
    arch = read_result(connection, "uname", "-m").stdout.strip()
    url = MINIFORGE_URL.format(arch=arch)
    why = f"download Miniforge (conda-forge, BSD-3-Clause) for {arch} with {downloader}"
    fetch = {"curl": ("curl", "-fsSL", "-o"), "wget": ("wget", "-q", "-O")}[downloader]
    yield Command((*fetch, INSTALLER, url), sudo=True, why=why)
    yield Command(("bash", INSTALLER, "-b", "-p", prefix), sudo=True, why=f"install it{old}")
    yield Command(("rm", "-f", INSTALLER), sudo=True, why="remove the installer")


def ensure_condarc(connection: Connection, host: Host) -> Generator[Command, None, str]:
    """The system .condarc and the /etc/profile.d hook, written only when they differ."""
    install = read_install(connection, host)
    if install is None:
        raise SkipStep(no_conda(host, "nothing to configure"))
    prefix, flavor = install.prefix, install.flavor
    condarc, content = f"{prefix}/.condarc", condarc_text(prefix, flavor)
    if read_text(connection, condarc) != content:
        why = "per-user envs in ~/.conda/envs, one shared package cache, conda-forge"
        argv = ("install", "-D", "-o", "root", "-g", host.group, "-m", "0664", STDIN, condarc)
        yield Command(argv, sudo=True, why=why, stdin=content)
    if read_stat(connection, f"{prefix}/pkgs") is None:
        mkdir = ("install", "-d", "-o", "root", "-g", host.group, "-m", "2775", f"{prefix}/pkgs")
        yield Command(mkdir, sudo=True, why="the shared package cache is missing")
    hook = profile_hook_text(prefix)
    if read_file(connection, PROFILE_HOOK) != hook:
        yield write_file(PROFILE_HOOK, hook, why=f"login shells load conda from {prefix}")
    note = f"; {ANACONDA_NOTE}" if flavor == "anaconda" else ""
    return f"{condarc} gives per-user envs and a shared cache; {PROFILE_HOOK} loads it{note}"


def no_conda(host: Host, consequence: str) -> str:
    """Why a step that needs conda is skipped: none is installed yet (see the conda step)."""
    return (
        f"no conda install at {host.conda_prefix} yet ({consequence}); the conda step "
        "installs it, and its line says why it did not"
    )
