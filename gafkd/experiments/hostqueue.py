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
group, mode 3770 (the ``queue`` provisioning step): setgid, so its files are the group's, and
sticky, so only a file's owner removes or replaces it. Files made here are group-writable
whatever the umask, so the other members can lock them too. Any member may put anything in the
folder, so every file is opened without following links and without blocking, and one that is
not a plain file of its own (a symlink, hard link, FIFO, folder, or a file this user may not
open) is skipped with one warning naming its owner: it costs only its planter. Without a queue
folder, a runner counts only its own runs (docs/experiments.md, "Several users on one server").
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import json
import os
import pwd
import re
import socket
import stat
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from gafkd.config import ConfigError
from gafkd.rundir import lock_is_free, timestamp

FILE_MODE = 0o660  # the group's members lock and write the files; others nothing
WAIT_PREFIX = "wait."
SLOT = re.compile(r"(cpu|gpu[0-9]+)\.[0-9]+")  # the names slot_name() gives
NO_SURPRISES = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # no link followed, no FIFO waited on
RECORD_BYTES = 65536  # a holder record is a line; more is not one
KINDS = [(stat.S_ISLNK, "symlink"), (stat.S_ISDIR, "folder"), (stat.S_ISFIFO, "FIFO"),
         (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "device"), (stat.S_ISBLK, "device")]  # fmt: skip
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
    """The queue folder, checked before a runner uses it: it exists and this user may make and
    lock files in it. A file in it this user cannot use costs one slot, not the run (see
    :meth:`HostQueue.take`)."""
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
    return folder


def holders(folder: Path) -> list[dict[str, Any]]:
    """Who holds which slot now: ``{"slot": "gpu0.0", "user": ..., "run": ...}`` per held slot,
    and ``{"slot": ..., "problem": ...}`` per slot file that no runner can use, or whose holder
    wrote something else than a holder record."""
    found = []
    for name in sorted(os.listdir(folder)):
        if not SLOT.fullmatch(name):
            continue
        path = folder / name
        try:
            fd = os.open(path, os.O_RDWR | NO_SURPRISES)  # only read, but as the runner opens it
        except FileNotFoundError:
            continue
        except OSError:  # a symlink or socket, or another member's file this user may not open
            found.append({"slot": name, "problem": f"unusable: {_planted(path)}"})
            continue
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
                found.append({"slot": name, "problem": f"unusable: {_planted(path)}"})
            elif not lock_is_free(fd):
                found.append(_holder(name, os.pread(fd, RECORD_BYTES, 0), info.st_uid))
        finally:
            os.close(fd)
    return found


def _holder(name: str, data: bytes, owner: int) -> dict[str, Any]:
    """A held slot's record; empty while its holder rewrites it."""
    record = _parse(data or b"{}")
    if not isinstance(record, dict):
        problem = f"held, but its content is not a holder record (file of {user_name(owner)})"
        return {"slot": name, "problem": problem}
    return {**record, "slot": name}


@dataclass
class HostQueue:
    """One runner's side of the queue: the slots it holds, by run id, and its wait file."""

    folder: Path
    grid: str
    held: dict[str, int] = field(default_factory=dict)  # run id -> the locked slot file's fd
    wait: tuple[Path, int] | None = None  # its wait file and the fd that holds its lock
    since: float = float("inf")  # when it started waiting (time.time()); inf: it does not
    asked: bool = False  # whether take() ran since the last keep()
    log: IO[str] = field(default_factory=lambda: sys.stderr)  # where skipped slots are told
    warned: set[str] = field(default_factory=set)  # the warnings already given

    def take(self, room: Mapping[str, int], run_id: str) -> str | None:
        """Take a free slot for ``run_id`` on the first device of ``room`` (device -> this
        runner's limit there) that has one and that no earlier waiter could use; hold it until
        :meth:`keep` no longer lists the run. None (and this runner waits) when there is none.

        A device's slots are its first ``limit`` usable slot files: one that is not a plain slot
        file (planted) is skipped, and the next one takes its place."""
        self.asked = True
        earlier = self._earlier_waiters()
        for device, limit in room.items():
            for index, fd in self._slots(device, limit):
                if any(wants.get(device, 0) > index for wants in earlier) or not _lock(fd):
                    os.close(fd)  # left for a runner that has waited longer, or held
                    continue
                _share(fd)
                record = {"user": user_name(), "host": socket.gethostname(), "pid": os.getpid()}
                record |= {"run": run_id, "grid": self.grid, "since": timestamp()}
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

    def _slots(self, device: str, limit: int) -> Iterator[tuple[int, int]]:
        """(index among the usable ones, open fd) of the first ``limit`` usable slot files of
        ``device``. Only files in the folder can be skipped, so its size bounds the search."""
        usable = 0
        for number in range(limit + len(os.listdir(self.folder))):
            if usable == limit:
                return
            fd = self._open(self.folder / slot_name(device, number))
            if fd is not None:
                yield usable, fd
                usable += 1

    def _open(self, path: Path) -> int | None:
        """An fd open for writing on the slot file ``path`` (made when missing), or None with a
        warning when it is something else than a plain file this user may use."""
        flags, fd = os.O_RDWR | NO_SURPRISES, None
        for _ in range(3):  # made or removed by another member between the two opens: again
            try:
                try:
                    fd = os.open(path, flags)  # no O_CREAT: fs.protected_regular=2 refuses it
                except FileNotFoundError:
                    fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, FILE_MODE)
                break
            except FileExistsError:
                continue
            except OSError as error:
                self._warn(path, error)
                return None
        if fd is None:
            return None  # appears and vanishes: not a slot this time
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode) and info.st_nlink == 1:
            return fd
        os.close(fd)
        self._warn(path)
        return None

    def _warn(self, path: Path, error: OSError | None = None) -> None:
        """Say once per file and problem that the slot ``path`` is skipped, naming its owner."""
        text = f"gafkd: skipping queue slot {path}: "
        if error is not None and not os.path.lexists(path):  # it could not be made
            text += f"{error.strerror}; check that the folder is the lab group's, mode 3770"
        else:
            text += f"{_planted(path)}; ask them or root to remove it"
        if text not in self.warned:
            self.warned.add(text)
            print(text, file=self.log, flush=True)

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
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | NO_SURPRISES
        fd = os.open(partial, flags, FILE_MODE)
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
        limit); the wait files of runners that died are removed (one's own only, in a sticky
        folder). Anything but a plain file is skipped, never read."""
        mine = (self.since, self.wait[0].name if self.wait else "")
        found = []
        for name in os.listdir(self.folder):
            path = self.folder / name
            if not name.startswith(WAIT_PREFIX) or (self.wait and path == self.wait[0]):
                continue
            try:
                waiter = _read_waiter(path)
                if waiter is None:
                    continue
                since = float(waiter["since"])
                wants = {str(key): int(value) for key, value in waiter["wants"].items()}
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                continue  # gone, being written, or not a wait file: next time
            if (since, path.name) < mine:
                found.append(wants)
        return found


def _read_waiter(path: Path) -> Any:
    """The content of a live runner's wait file; None for a dead runner's (removed when this
    user may) or for something that is not a plain file."""
    fd = os.open(path, os.O_RDONLY | NO_SURPRISES)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        if lock_is_free(fd):  # its runner is gone
            with contextlib.suppress(FileNotFoundError, PermissionError):
                path.unlink()  # another member's, in a sticky folder: theirs to remove
            return None
        return _parse(os.pread(fd, RECORD_BYTES, 0))
    finally:
        os.close(fd)


def _parse(data: bytes) -> Any:
    """The JSON in ``data``; None for anything else (a planted "[[[..." included)."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None


def _lock(fd: int) -> bool:
    """Take the flock on ``fd``; False when another runner holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _planted(path: Path) -> str:
    """What a slot file no runner should use is, and who put it there: "a symlink planted by
    bob"."""
    try:
        info = os.lstat(path)
    except OSError as error:
        return f"gone ({error.strerror})"
    kind = next((f"a {name}" for test, name in KINDS if test(info.st_mode)), None)
    if kind is None and info.st_nlink != 1:
        kind = f"a hard link ({info.st_nlink} names for one file)"
    if kind is None:
        mode, group = info.st_mode & 0o7777, _group_name(info.st_gid)
        kind = f"a file {user_name()} may not open (mode {mode:o}, group {group})"
    return f"{kind} planted by {user_name(info.st_uid)}"


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
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
