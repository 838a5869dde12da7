"""Code sync: this checkout's files into the lab folder on the host (rsync, or SFTP without it).

The files are git's: tracked and untracked ones that ``.gitignore`` does not exclude
(``git ls-files -co --exclude-standard``), less run outputs, environments and caches. Nothing is
ever deleted on the host, so the runs written there are safe; a file deleted here stays there.
rsync runs on this machine with the same ssh_config and known_hosts as the connection. Undo:
docs/provisioning.md.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from collections.abc import Generator, Sequence
from pathlib import Path, PurePosixPath

from provisioning.core import STDIN, Command, Connection, ProvisionError, read_result, run_local
from provisioning.hosts import LOCAL, Host, ssh_files

# --- constants ---------------------------------------------------------------------------------

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Never copied, even when .gitignore lets them through: run outputs, environments, caches.
LEFT_OUT = frozenset(
    (".git", ".venv", "runs", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache")
)
RSYNC_OPTIONS = ("--links", "--times", "--perms", "--compress", "--from0", "--files-from", STDIN)
ITEMIZED = re.compile(r"([<>ch.*][fdLDS][.+?a-zA-Z ]{9}) (.+)")  # rsync(1), --itemize-changes
CHECKSUM = re.compile(r"([0-9a-f]{64})  (.+)")  # sha256sum(1), names without a backslash
PREVIEW = 3  # changed files named in a plan line
LOGIN_NAME = re.compile(r"[A-Za-z0-9._-]+")  # what may replace {user} in lab_dir


# --- parse_* -----------------------------------------------------------------------------------


def parse_file_list(text: str) -> tuple[str, ...]:
    """``git ls-files -z`` output -> sorted relative paths, with LEFT_OUT folders dropped.

    >>> parse_file_list("tasks.py\\0runs/a/result.json\\0gafkd/__pycache__/x.pyc\\0README.md\\0")
    ('README.md', 'tasks.py')
    """
    paths = {path for path in text.split("\0") if path}
    return tuple(sorted(p for p in paths if not LEFT_OUT.intersection(p.split("/")[:-1])))


def parse_itemized(text: str) -> tuple[str, ...]:
    """``rsync --itemize-changes`` output -> the paths it would change, folders left out.

    >>> parse_itemized("cd+++++++++ gafkd/\\n<f+++++++++ gafkd/imaging.py\\n<f.st...... a.md\\n")
    ('gafkd/imaging.py', 'a.md')
    """
    changed = []
    for line in text.splitlines():
        match = ITEMIZED.fullmatch(line)
        if match is None:
            raise ProvisionError(
                f"rsync --itemize-changes printed {line!r}; expected lines like "
                "'<f.st...... path' (rsync 3): is the local rsync very old?"
            )
        flags, path = match.groups()
        if flags[1] != "d":
            changed.append(path)
    return tuple(changed)


def parse_checksums(text: str, folder: str) -> dict[str, str]:
    """``sha256sum FOLDER/PATH ...`` output -> {PATH: digest}; escaped names are left out.

    >>> parse_checksums(64 * "a" + "  /srv/lab/gafkd/tasks.py\\n", "/srv/lab/gafkd")
    {'tasks.py': 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'}
    """
    found = {}
    for line in text.splitlines():
        match = CHECKSUM.fullmatch(line)
        if match and match[2].startswith(f"{folder}/"):
            found[match[2].removeprefix(f"{folder}/")] = match[1]
    return found


# --- read_* ------------------------------------------------------------------------------------


def read_project_files(connection: Connection, root: Path) -> tuple[str, ...]:
    """The checkout's files that exist here (git lists deleted but still tracked files too)."""
    argv = ("git", "-C", str(root), "ls-files", "-z", "-co", "--exclude-standard")
    result = connection.local(shlex.join(argv), hide=True, warn=True, in_stream=False)
    if not result.ok:
        raise ProvisionError(
            f"sync copies a git checkout, but `git ls-files` failed in {root}: "
            f"{result.stderr.strip()[-200:]}; run it from a clone of the repository"
        )
    files = parse_file_list(result.stdout)
    return tuple(path for path in files if (root / path).is_file())


def read_login_user(connection: Connection) -> str:
    """The user the connection logs in as: the owner of the lab folder."""
    user = read_result(connection, "id", "-un").stdout.strip()
    if not LOGIN_NAME.fullmatch(user):
        raise ProvisionError(
            f"the login user is {user!r}; sync needs a plain user name for the lab folder "
            "(letters, digits, . _ -): set lab_dir for this host in invoke.yaml without {user}"
        )
    return user


def read_rsync(connection: Connection) -> bool:
    """rsync on both sides (else SFTP)."""
    here = connection.local("rsync --version", hide=True, warn=True, in_stream=False)
    return here.ok and read_result(connection, "rsync", "--version").ok


def read_rsync_changes(
    connection: Connection, argv: Sequence[str], files: Sequence[str]
) -> tuple[str, ...]:
    """What the planned rsync would change: its dry run, itemized."""
    dry = (argv[0], "--dry-run", "--itemize-changes", *argv[1:])
    result = run_local(connection, dry, "\0".join(files).encode(), warn=True)
    if not result.ok:
        raise ProvisionError(
            f"rsync's dry run failed (exit {result.return_code}): {result.stderr.strip()[-300:]}"
        )
    return parse_itemized(result.stdout)


def read_checksums(connection: Connection, folder: str, files: Sequence[str]) -> dict[str, str]:
    """SHA-256 of the project's files in ``folder`` on the host (missing ones left out)."""
    result = read_result(connection, "sha256sum", "--", *(f"{folder}/{path}" for path in files))
    return parse_checksums(result.stdout, folder)


def read_is_dir(connection: Connection, path: str) -> bool:
    return read_result(connection, "test", "-d", path).ok


def read_writable(connection: Connection, path: str) -> bool:
    return read_result(connection, "test", "-w", path).ok


def read_creatable(connection: Connection, folder: str) -> bool:
    """Whether the login user can make ``folder`` without sudo: its nearest existing parent is
    theirs to write (their home, a cluster's scratch); root needs no sudo either."""
    if read_result(connection, "id", "-u").stdout.strip() == "0":
        return True
    for parent in PurePosixPath(folder).parents:
        if read_is_dir(connection, str(parent)):
            return read_writable(connection, str(parent))
    return False


# --- ensure_* ----------------------------------------------------------------------------------


def rsync_argv(host: Host, folder: str, root: Path) -> tuple[str, ...]:
    """The rsync that copies the files listed in STDIN from ``root`` into ``folder`` there."""
    if host.alias == LOCAL:
        return ("rsync", *RSYNC_OPTIONS, f"{root}/", f"{folder}/")
    ssh_config, known_hosts = ssh_files(host)
    ssh = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"]
    ssh += ["-o", f"UserKnownHostsFile={known_hosts}"]
    if host.ssh_config or ssh_config.is_file():
        ssh[1:1] = ["-F", str(ssh_config)]
    return (
        "rsync",
        *RSYNC_OPTIONS,
        "--rsh",
        shlex.join(ssh),
        f"{root}/",
        f"{host.alias}:{folder}/",
    )


def summary(paths: Sequence[str], total: int) -> str:
    named = ", ".join(paths[:PREVIEW]) + (", ..." if len(paths) > PREVIEW else "")
    return f"{len(paths)} of {total} project files differ: {named}"


def ensure_code(connection: Connection, host: Host) -> Generator[Command, None, str]:
    """The sync step: the lab folder exists, owned by the login user, and holds this checkout."""
    files = read_project_files(connection, PROJECT_ROOT)
    user = read_login_user(connection)
    folder = host.lab_dir.replace("{user}", user)
    exists = read_is_dir(connection, folder)
    if not exists:
        why = f"the lab folder {folder} is missing: create it for {user}"
        if read_creatable(connection, folder):  # e.g. under the user's scratch on a cluster
            yield Command(("mkdir", "-p", "-m", "0755", "--", folder), sudo=False, why=why)
        else:
            yield Command(("install", "-d", "-o", user, "-m", "0755", folder), sudo=True, why=why)
    elif not read_writable(connection, folder):
        raise ProvisionError(
            f"the lab folder {folder} is not writable by {user}, who syncs the code; make it "
            f"theirs with: sudo chown {user} {folder}, or set another lab_dir in invoke.yaml"
        )
    if read_rsync(connection):
        argv = rsync_argv(host, folder, PROJECT_ROOT)
        changed = read_rsync_changes(connection, argv, files) if exists else files
        if changed:
            stdin = "\0".join(files)
            yield Command(
                argv, sudo=False, why=summary(changed, len(files)), stdin=stdin, local=True
            )
        return f"the {len(files)} project files in {folder} match this checkout (rsync)"
    found = read_checksums(connection, folder, files) if exists else {}
    for path in files:
        content = (PROJECT_ROOT / path).read_bytes()
        if found.get(path) != hashlib.sha256(content).hexdigest():
            mode = "0755" if (PROJECT_ROOT / path).stat().st_mode & 0o111 else "0644"
            why = f"{path} is {'different' if path in found else 'missing'} (SFTP: no rsync)"
            target = f"{folder}/{path}"
            yield Command(("install", "-D", "-m", mode, STDIN, target), False, why, content)
    return f"the {len(files)} project files in {folder} match this checkout (SFTP, no rsync)"
