"""Host-wide run slots shared by every user's runner: one locked file per slot in a queue folder.

Each runner keeps its own per-device limit (``--per-gpu``); the queue folder makes that limit
hold across the users of one server. It holds one file per slot: ``gpu0.0``, ``gpu0.1``, ...,
``cpu.0``. Before a runner starts a run on a device it takes a free slot of that device with a
non-blocking ``flock`` on the slot's file, among the slots below its own limit only (a runner
with limit 1 uses ``.0``, so limits 2 and 1 together never put more than 2 runs on a GPU), and
holds it until the run has ended. It writes who holds the slot (user, host, pid, run, grid)
into the file. The kernel drops the locks of a runner that dies, and its runs die with it.

A runner that has a run ready but finds no slot it may take says so in a ``wait.*`` file (held
locked while it waits); a freed slot goes to the runner that has waited longest, so one user's
batch cannot keep the GPUs by taking every slot back the moment its own run ends.

On a provisioned lab host the folder is ``/srv/lab/.gafkd-queue``, owned by root and the lab
group, mode 2770 (the ``queue`` provisioning step). Files made here are group-writable whatever
the umask, so the other members can lock them too. Without a queue folder, a runner counts only
its own runs (docs/experiments.md, "Several users on one server").
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import socket
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gafkd.config import ConfigError
from gafkd.rundir import lock_is_free

FILE_MODE = 0o660  # the group's members lock and write the files; others nothing
WAIT_PREFIX = "wait."
FIX = "`invoke provision --host HOST --only queue` makes it on a lab host (setting queue_dir)"


def slot_name(device: str, index: int) -> str:
    """The file of one slot: ``cpu.0``, ``gpu1.0``.

    >>> slot_name("cpu", 0), slot_name("1", 2)
    ('cpu.0', 'gpu1.2')
    """
    return f"{'cpu' if device == 'cpu' else f'gpu{device}'}.{index}"


def user_name(uid: int | None = None) -> str:
    uid = os.geteuid() if uid is None else uid
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def check_folder(folder: Path) -> Path:
    """The queue folder, checked before a runner uses it: it exists, this user may make and lock
    files in it, and the files other users made there can be locked by this user."""
    me = user_name()
    if not folder.is_dir():
        raise ConfigError(
            f"the queue folder {folder} does not exist; {FIX}, or pass --queue (or GAFKD_QUEUE) "
            "a folder shared by the users whose runs share these GPUs"
        )
    group = _group_name(folder.stat().st_gid)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(
            f"the queue folder {folder} is not writable by {me}: only members of group {group} "
            f"share the GPUs through it. Ask the admin to list {me} under users: of this host in "
            "invoke.yaml and run `invoke provision --host HOST --only group`, then log in again"
        )
    for path in sorted(folder.iterdir()):
        if path.is_file() and not os.access(path, os.R_OK | os.W_OK):
            info = path.stat()
            raise ConfigError(
                f"{me} cannot lock {path} of the queue folder (owner {user_name(info.st_uid)}, "
                f"group {_group_name(info.st_gid)}, mode {info.st_mode & 0o777:o}); the folder's "
                f"group must own it and may write it: as root, chgrp {group} {path} && chmod 660 "
                f"{path}, and chmod g+s {folder} so that new files get its group"
            )
    return folder


def holders(folder: Path) -> list[dict[str, Any]]:
    """Who holds which slot now: ``{"slot": "gpu0.0", "user": ..., "run": ...}`` per held slot."""
    found = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith((WAIT_PREFIX, ".")) or not path.is_file():
            continue
        with contextlib.suppress(OSError, ValueError), path.open() as handle:
            if lock_is_free(handle.fileno()):
                continue
            found.append({"slot": path.name, **json.loads(handle.read() or "{}")})
    return found


@dataclass
class HostQueue:
    """One runner's side of the queue: the slots it holds, by run id, and its wait file."""

    folder: Path
    grid: str
    held: dict[str, int] = field(default_factory=dict)  # run id -> the locked slot file's fd
    wait: tuple[Path, int] | None = None  # its wait file and the fd that holds its lock
    since: float = float("inf")  # when it started waiting (time.time()); inf: it does not
    asked: bool = False  # whether take() ran since the last keep()

    def take(self, room: Mapping[str, int], run_id: str) -> str | None:
        """Take a free slot for ``run_id`` on the first device of ``room`` (device -> this
        runner's limit there) that has one and that no earlier waiter could use; hold it until
        :meth:`keep` no longer lists the run. None (and this runner waits) when there is none."""
        self.asked = True
        earlier = self._earlier_waiters()
        for device, limit in room.items():
            for index in range(limit):
                if any(wants.get(device, 0) > index for wants in earlier):
                    continue  # left for a runner that has waited longer
                fd = self._lock(self.folder / slot_name(device, index))
                if fd is None:
                    continue
                record = {"user": user_name(), "host": socket.gethostname(), "pid": os.getpid()}
                record |= {"run": run_id, "grid": self.grid, "since": _now()}
                _rewrite(fd, json.dumps(record, sort_keys=True) + "\n")
                self.held[run_id] = fd
                self._stop_waiting()
                return device
        self._wait(room)
        return None

    def keep(self, run_ids: Iterable[str]) -> None:
        """Release the slots of runs that are no longer running; stop waiting when the runner
        asked for no slot since the last call (it has no run ready)."""
        for run_id in set(self.held) - set(run_ids):
            self._release(run_id)
        if not self.asked:
            self._stop_waiting()
        self.asked = False

    def close(self) -> None:
        """Release every slot and stop waiting (the runner stops)."""
        for run_id in list(self.held):
            self._release(run_id)
        self._stop_waiting()

    # -- locks -----------------------------------------------------------------------------------

    def _lock(self, path: Path) -> int | None:
        """An fd holding the flock on ``path`` (made group-writable when new), or None if held."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        _share(fd)
        return fd

    def _release(self, run_id: str) -> None:
        fd = self.held.pop(run_id)
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing drops the flock

    def _wait(self, room: Mapping[str, int]) -> None:
        """Say in a locked wait file that this runner waits for a slot of ``room``."""
        content = {"user": user_name(), "pid": os.getpid(), "grid": self.grid, "wants": dict(room)}
        if self.wait is not None:
            _rewrite(self.wait[1], json.dumps(content | {"since": self.since}))
            return
        self.since = time.time()
        name = f"{WAIT_PREFIX}{user_name()}.{os.getpid()}.{uuid.uuid4().hex[:12]}"
        partial = self.folder / f".{name}.tmp"
        fd = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_EXCL, FILE_MODE)
        fcntl.flock(fd, fcntl.LOCK_EX)  # before it is visible: a visible wait file is locked
        _share(fd)
        _rewrite(fd, json.dumps(content | {"since": self.since}))
        os.rename(partial, self.folder / name)
        self.wait = self.folder / name, fd

    def _stop_waiting(self) -> None:
        if self.wait is None:
            return
        path, fd = self.wait
        path.unlink(missing_ok=True)  # unlinked while locked: never seen unlocked
        os.close(fd)
        self.wait, self.since = None, float("inf")

    def _earlier_waiters(self) -> list[dict[str, int]]:
        """What each other live runner that has waited longer than this one wants (device ->
        limit); the wait files of runners that died are removed."""
        mine = (self.since, self.wait[0].name if self.wait else "")
        found = []
        for path in self.folder.glob(f"{WAIT_PREFIX}*"):
            if self.wait is not None and path == self.wait[0]:
                continue
            try:
                with path.open() as handle:
                    if lock_is_free(handle.fileno()):  # its runner is gone
                        path.unlink(missing_ok=True)
                        continue
                    waiter = json.loads(handle.read())
                since = float(waiter["since"])
                wants = {str(key): int(value) for key, value in waiter["wants"].items()}
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                continue  # gone, being written, or not a wait file: next time
            if (since, path.name) < mine:
                found.append(wants)
        return found


def _share(fd: int) -> None:
    """Group-writable whatever the umask, when this user owns the file (they made it)."""
    info = os.fstat(fd)
    if info.st_uid == os.geteuid() and info.st_mode & 0o777 != FILE_MODE:
        os.fchmod(fd, FILE_MODE)


def _rewrite(fd: int, text: str) -> None:
    data = text.encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def _group_name(gid: int) -> str:
    import grp

    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
