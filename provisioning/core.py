"""The Command record, the Connection it runs on, and ProvisionError.

A Command is one planned change: an argv list, whether it needs root, and why. Steps yield them
and the step runner (:mod:`provisioning.runner`) applies them. A Command with ``local=True`` runs
on this machine (``rsync`` to the host) instead of on the host. ``read_*`` helpers here run the
read-only commands that steps use to observe a host.
"""

from __future__ import annotations

import shlex
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

STDIN = "/dev/stdin"
"""An argv element standing for the Command's ``stdin`` text. The runner uploads that text to a
private temporary file and passes the file instead: Fabric's sudo answers the password prompt on
standard input, so standard input cannot carry file contents."""
LOCAL_STDIN_PREFIX = "gafkd-stdin-"  # the same, for a command run on this machine


class ProvisionError(RuntimeError):
    """Host state we cannot or will not fix: says what was found, what is required, what to do."""


class SkipStep(Exception):
    """Raised by a step that does not apply to this host; its message is the reason."""


@dataclass(frozen=True)
class Command:
    """One planned change: an argv list (never a shell line), whether it needs root, and why.

    ``stdin`` is what the STDIN argument stands for: a private temporary file holding it, on the
    host, or on this machine for a ``local`` command (run here, e.g. rsync to the host).
    """

    argv: tuple[str, ...]
    sudo: bool
    why: str
    stdin: str | bytes | None = None
    local: bool = False

    def __str__(self) -> str:
        where = "local: " if self.local else ""
        return where + ("sudo " if self.sudo else "") + shlex.join(self.argv)


def write_file(path: str, content: str, *, why: str, mode: str = "0644") -> Command:
    """Plan writing ``content`` to ``path`` as root (parent folders created), e.g. a drop-in."""
    return Command(("install", "-D", "-m", mode, STDIN, path), sudo=True, why=why, stdin=content)


class Result(Protocol):
    """What a finished command gives back (invoke's Result has these)."""

    @property
    def ok(self) -> bool: ...
    @property
    def stdout(self) -> str: ...
    @property
    def stderr(self) -> str: ...
    @property
    def return_code(self) -> int: ...


class Connection(Protocol):
    """The part of fabric.Connection that provisioning uses, so a test double can stand in."""

    def run(self, command: str, **kwargs: Any) -> Result: ...
    def sudo(self, command: str, **kwargs: Any) -> Result: ...
    def put(self, local: Any, remote: str) -> object: ...
    def local(self, command: str, **kwargs: Any) -> Result: ...


def read_result(connection: Connection, *argv: str) -> Result:
    """Run a read-only command; a non-zero exit is an answer, so the caller checks ``.ok``."""
    return connection.run(shlex.join(argv), hide=True, warn=True, in_stream=False)


def read_file(connection: Connection, path: str) -> str | None:
    """A host file's text, or None when it does not exist; unreadable is a ProvisionError."""
    result = read_result(connection, "cat", "--", path)
    if result.ok:
        return result.stdout
    if "No such file" in result.stderr:
        return None
    raise ProvisionError(f"cannot read {path} on the host: {result.stderr.strip()}")


def run_local(connection: Connection, argv: Sequence[str], stdin: bytes, **kwargs: Any) -> Result:
    """Run argv on this machine; a STDIN argument stands for a private temporary file of stdin.

    (invoke feeds ``in_stream`` to a process one byte per 10 ms, too slow for a file list.)
    """
    with tempfile.NamedTemporaryFile(prefix=LOCAL_STDIN_PREFIX) as file:
        file.write(stdin)
        file.flush()
        argv = [file.name if part == STDIN else part for part in argv]
        return connection.local(shlex.join(argv), hide=True, in_stream=False, **kwargs)
