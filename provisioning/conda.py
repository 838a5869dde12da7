"""Shared conda: the lab group, one root-owned conda install, its .condarc and login hook.

One conda install under a system prefix (``/opt/conda``), on the multi-user model of conda's
docs: owned by root with the lab group, writable by root alone, read and entered by the group
(by others too only with ``conda_world_readable``); a system ``.condarc`` sends each user's envs
and package cache to their home (``~/.conda/envs``, ``~/.conda/pkgs``); the root-owned
``/etc/profile.d/conda.sh`` loads conda at login. Nothing that root or a member runs or sources
is writable by the group. A downloaded Miniforge is a pinned release, checked against its
published SHA-256 before it runs. An existing install (the lab's ``/home/root/anaconda3``) is
adopted in place; conda installs cannot be relocated (their scripts hold absolute paths), so
``--move-conda`` installs a fresh one at the prefix and leaves the old one for the admin to
delete. The per-user envs are in :mod:`provisioning.envs`. Reference: gpu-stack.md §9; undo:
docs/provisioning.md.

Longer than most modules (about 440 lines): the install, its permissions, `.condarc` and login
hook are one security boundary, and its reads and checks are kept beside the steps that rely
on them so that a reviewer sees every path root sources in one file.
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
MINIFORGE_VERSION = "26.3.2-3"  # the pinned release; MINIFORGE_SHA256 holds its installers'
MINIFORGE_URL = (
    "https://github.com/conda-forge/miniforge/releases/download/{version}/"
    "Miniforge3-{version}-Linux-{arch}.sh"
)
MINIFORGE_SHA256 = {  # published beside each installer on the release (Miniforge3-...sh.sha256)
    "x86_64": "848194851a98903134187fbb4ab50efe87b003e0c0f808f97644b7524a62bf2c",
    "aarch64": "2c113a69297e612b01ca0f320c22a3107a11f2ab9b573d79ac868a175945ce29",
}
INSTALLER = "/root/gafkd-conda-installer.sh"  # root's home: no other user can swap the file
# A fixed script (values are arguments): run the installer only if its sha256 is the pinned one,
# else delete it and say so in one line; nothing of the download runs.
CHECK_AND_INSTALL = (
    'if printf "%s  %s\\n" "$1" "$2" | sha256sum --check --status -; then '
    'exec bash "$2" -b -p "$3"; fi; rm -f -- "$2"; '
    'echo "$2: its sha256 is not $1, the published one of Miniforge $4, so it was deleted and '
    'nothing was run; run provision again, or download it here and set conda_installer" >&2; '
    "exit 1"
)
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
# find(1) tests for a mode other than the wanted one (symlinks have none): writable by the group
# or others, setgid (only root writes here), not readable, or a folder or executable that
# cannot be entered or run; by the group (and by others, with conda_world_readable).
GROUP_ONLY = ("!", "-type", "l", "(", "-perm", "/2027", "-o", "!", "-perm", "-040", "-o", "(",
              "-type", "d", "-o", "-perm", "-100", ")", "!", "-perm", "-010", ")")  # fmt: skip
WORLD_READABLE = ("!", "-type", "l", "(", "-perm", "/2022", "-o", "!", "-perm", "-044", "-o", "(",
                  "-type", "d", "-o", "-perm", "-100", ")", "!", "-perm", "-011", ")")  # fmt: skip
# The chmod that gives each: the group (and others) read and enter, only root writes.
MODES = {False: ("g+rX,g-ws,o-rwx", GROUP_ONLY), True: ("go+rX,go-w,g-s", WORLD_READABLE)}


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


def condarc_text(flavor: Flavor) -> str:
    """The system .condarc: each user's envs and package cache in their home, conda-forge."""
    lines = textwrap.wrap(ANACONDA_NOTE, 90) if flavor == "anaconda" else []
    note = "".join(f"# {line}\n" for line in lines)
    return (
        f"{HEADER}{note}envs_dirs:\n  - ~/.conda/envs\npkgs_dirs:\n  - ~/.conda/pkgs\n"
        "channels:\n  - conda-forge\n"
    )


def file_mode(host: Host) -> int:
    """The mode of a file only root writes: read by the group, and by others when allowed."""
    return 0o644 if host.conda_world_readable else 0o640


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
    connection: Connection, prefix: str, host: Host, *, fresh: bool
) -> Generator[Command, None, None]:
    """root:GROUP owns ``prefix``; only root writes it; the group (others if allowed) reads it."""
    group, world = host.group, host.conda_world_readable
    mode, offenders = MODES[world]
    known = fresh or read_group(connection, group) is None  # a missing group: all of it differs
    not_roots = ("(", "!", "-user", "root", "-o", "!", "-group", group, ")")
    if known or read_first(connection, prefix, *not_roots):
        why = f"root owns {prefix} with group {group}, so no member can change it"
        yield Command(("chown", "-R", f"root:{group}", prefix), sudo=True, why=why)
    if known or read_first(connection, prefix, *offenders):
        readers = f"{group} and others" if world else f"{group} (not others)"
        why = f"only root may write {prefix}; {readers} may read it; no setgid folders"
        yield Command(("chmod", "-R", mode, prefix), sudo=True, why=why)
    parents = [str(parent) for parent in Path(prefix).parents if str(parent) != "/"]
    for parent in parents:
        yield from ensure_passage(connection, parent, host)


def ensure_passage(
    connection: Connection, parent: str, host: Host
) -> Generator[Command, None, None]:
    """Members (all users, when others may read conda) can pass through ``parent``, not list it.

    A parent that someone other than root may write to is refused: they could move the install
    away and put their own in its place, for root's login shell to source.
    """
    found = read_stat(connection, parent)
    if found is None:
        return
    if found.owner != "root" or (found.mode & 0o022 and not found.mode & 0o1000):
        raise ProvisionError(
            f"{parent} ({found.owner}:{found.group} {found.mode:o}) above the conda install "
            "lets someone other than root replace the install that every login shell loads; as "
            f"root, make {parent} root's and not writable by others, or set another "
            f"conda_prefix for {host.alias} in invoke.yaml"
        )
    if found.mode & 0o001:
        return
    group, world = host.group, host.conda_world_readable
    if not world and found.group == group and found.mode & 0o010:
        return
    why = f"members must pass through {parent} ({found.mode:o}) to reach conda"
    if world or (found.mode & 0o070 and found.group != group):  # the folder's group uses it
        yield Command(("chmod", "o+x", parent), sudo=True, why=f"{why}; x only, for all")
        return
    if found.group != group:
        yield Command(("chgrp", group, parent), sudo=True, why=f"{why}; its group had no rights")
    yield Command(("chmod", "g+x", parent), sudo=True, why=f"{why}; x only, for {group}")


def ensure_conda(
    connection: Connection, host: Host, *, move: bool = False
) -> Generator[Command, None, str]:
    """One conda install, root's, read by the group; installed when none is found, else adopted."""
    install = read_install(connection, host)
    prefix = host.conda_prefix
    if install and (install.prefix == prefix or not move):
        adopted = install.prefix != prefix
        yield from ensure_permissions(connection, install.prefix, host, fresh=False)
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
    yield from ensure_permissions(connection, prefix, host, fresh=True)
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
    sha256 = MINIFORGE_SHA256.get(arch)
    if sha256 is None:
        raise ProvisionError(
            f"{host.alias} is {arch or 'of an unknown architecture'}; gafkd pins Miniforge "
            f"{MINIFORGE_VERSION} for {' and '.join(MINIFORGE_SHA256)} only: download an "
            f"installer for {arch}, check it, and set conda_installer for {host.alias} in "
            "invoke.yaml"
        )
    url = MINIFORGE_URL.format(version=MINIFORGE_VERSION, arch=arch)
    why = f"download Miniforge {MINIFORGE_VERSION} (conda-forge, BSD-3-Clause) for {arch} with "
    fetch = {"curl": ("curl", "-fsSL", "-o"), "wget": ("wget", "-q", "-O")}[downloader]
    yield Command((*fetch, INSTALLER, url), sudo=True, why=why + downloader)
    check = ("sh", "-c", CHECK_AND_INSTALL, "sh", sha256, INSTALLER, prefix, MINIFORGE_VERSION)
    why = f"install it only if its sha256 is the published one{old}"
    yield Command(check, sudo=True, why=why)
    yield Command(("rm", "-f", INSTALLER), sudo=True, why="remove the installer")


def ensure_condarc(connection: Connection, host: Host) -> Generator[Command, None, str]:
    """The system .condarc and the /etc/profile.d hook: root's, as wanted, read-only to others."""
    install = read_install(connection, host)
    if install is None:
        raise SkipStep(no_conda(host, "nothing to configure"))
    prefix, flavor, mode = install.prefix, install.flavor, file_mode(host)
    condarc, content = f"{prefix}/.condarc", condarc_text(flavor)
    found = read_stat(connection, condarc)
    if read_text(connection, condarc) != content or found != Stat("root", host.group, mode):
        why = "per-user envs and package cache in ~/.conda, conda-forge; only root may write it"
        argv = ("install", "-D", "-o", "root", "-g", host.group, "-m", f"{mode:04o}", STDIN,
                condarc)  # fmt: skip
        yield Command(argv, sudo=True, why=why, stdin=content)
    hook, found = profile_hook_text(prefix), read_stat(connection, PROFILE_HOOK)
    if read_file(connection, PROFILE_HOOK) != hook or not found or not safe(found):
        why = f"login shells load conda from {prefix}; only root may write the hook"
        yield write_file(PROFILE_HOOK, hook, why=why)
    note = f"; {ANACONDA_NOTE}" if flavor == "anaconda" else ""
    return (
        f"{condarc} gives per-user envs and package caches in ~/.conda; {PROFILE_HOOK} loads "
        f"conda; both root's, read-only to others{note}"
    )


def safe(found: Stat) -> bool:
    """Whether only root can change a file that root's login shell runs."""
    return found.owner == "root" and not found.mode & 0o022


def no_conda(host: Host, consequence: str) -> str:
    """Why a step that needs conda is skipped: none is installed yet (see the conda step)."""
    return (
        f"no conda install at {host.conda_prefix} yet ({consequence}); the conda step "
        "installs it, and its line says why it did not"
    )
