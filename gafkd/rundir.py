"""The run directory: resolved config, metrics, checkpoint and result, all written atomically.

Layout of one run::

    <run_dir>/config.toml      the resolved config (every default written out)
    <run_dir>/metrics.jsonl    one JSON line per finished epoch
    <run_dir>/checkpoint.pt    model, optimiser, epoch and history; rewritten every epoch
    <run_dir>/checkpoint.prev.pt  the epoch before's, kept in case checkpoint.pt is damaged
    <run_dir>/model.pt         final weights, what teachers and annealing load
    <run_dir>/result.json      accuracies and provenance; its presence means the run is done
    <run_dir>/error.txt        why the run stopped, when it failed
    <run_dir>/logits/<key>.pt  cached outputs of this model when used as a frozen teacher

A crash at any point leaves either the previous file or the new one, never a torn one, so a
run directory never reads as done unless it is. A file damaged anyway (a full disk, a partial
copy, an edit) reads as one ConfigError naming the file, what is wrong and the fix (`damaged`).
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import socket
import sys
import time
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path
from typing import IO, Any

from gafkd.config import ConfigError, RunConfig, dump_toml, to_dict

CONFIG = "config.toml"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
PREVIOUS_CHECKPOINT = "checkpoint.prev.pt"
MODEL = "model.pt"
RESULT = "result.json"
ERROR = "error.txt"
LOCK = ".lock"
RESULT_FIX = "delete it to train that run again"
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%z"  # local time and its UTC offset, in every file gafkd writes


def timestamp() -> str:
    """Now, as every file of gafkd writes it (`TIME_FORMAT`): ``2026-03-01T14:05:09+0100``."""
    return time.strftime(TIME_FORMAT)


@contextmanager
def atomic_open(path: Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Write to a temporary file beside `path`, fsync it, then rename it over `path`.

    The file gets the mode the umask gives (0644 under umask 022, as the runner sets it), so a
    colleague's ``status --root`` and ``logs`` can read it; mkstemp would make it 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    while True:  # a random name, made with O_EXCL: never another process's file
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        with suppress(FileExistsError):
            fd = os.open(tmp, flags, 0o666)  # the umask applies, as for any new file
            break
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def exclusive(path: Path, busy: str, fd: int | None = None) -> Iterator[int]:
    """Hold an flock on `path` for the block and yield its file descriptor; when another process
    holds it, raise ConfigError with `busy`, which may name the holder as ``{holder}`` (its pid,
    host and start time). With `fd`, an open descriptor of `path` that a parent process locked
    (and passed on) is taken over instead, and closed at the end."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if fd is not None and not os.path.samestat(os.fstat(fd), os.stat(path)):
        raise ConfigError(f"file descriptor {fd} is not {path}; start this through gafkd launch")
    with path.open("a+") if fd is None else os.fdopen(fd, "a+") as handle:
        try:  # a descriptor inherited from the process holding the lock shares its lock
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(busy.format(holder=_holder(handle))) from None
        handle.seek(0)
        handle.truncate()
        started = timestamp()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {started}\n")
        handle.flush()
        yield handle.fileno()


def _holder(handle: IO[str], wait: float = 2.0) -> str:
    """The holder line of a lock file that another process holds; it writes that line just after
    it locks (or takes the lock over), so an empty file is read again for up to `wait` seconds."""
    deadline = time.monotonic() + wait
    while True:
        handle.seek(0)
        text = handle.read().strip()
        if text or time.monotonic() > deadline:
            return text or "unknown"
        time.sleep(0.05)


def is_held(path: Path) -> bool:
    """Whether another process holds the flock on `path`."""
    if not path.exists():
        return False
    with path.open("a+") as handle:
        return not lock_is_free(handle.fileno())


def lock_is_free(fd: int) -> bool:
    """Whether no process holds a flock on the file behind ``fd`` (probed with a shared lock)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    fcntl.flock(fd, fcntl.LOCK_UN)
    return True


def locked(run_dir: Path) -> AbstractContextManager[int]:
    """Hold the run's lock while training it: a second process on the same run is refused."""
    return exclusive(
        run_dir / LOCK,
        f"{run_dir} is being trained by another process ({{holder}}); "
        "wait for it, or stop that process first",
    )


def save_torch(obj: Any, path: Path) -> None:
    import torch

    with atomic_open(path, "wb") as handle:
        torch.save(obj, handle)


def save_json(obj: Any, path: Path) -> None:
    with atomic_open(path) as handle:
        json.dump(obj, handle, indent=2, sort_keys=True)
        handle.write("\n")


def save_config(config: RunConfig, run_dir: Path) -> None:
    with atomic_open(run_dir / CONFIG) as handle:
        handle.write(dump_toml(to_dict(config)))


def write_metrics(history: list[dict[str, Any]], run_dir: Path) -> None:
    """Rewrite metrics.jsonl from the checkpointed history (so a resumed run has no extra lines)."""
    with atomic_open(run_dir / METRICS) as handle:
        handle.writelines(json.dumps(row, sort_keys=True) + "\n" for row in history)


def repair_metrics(history: list[dict[str, Any]], run_dir: Path) -> None:
    """On resume: make metrics.jsonl list the checkpoint's epochs again. It is a copy of the
    checkpoint's history, so a torn or garbled one is rewritten from it, with a note."""
    path = run_dir / METRICS
    wanted = "".join(json.dumps(row, sort_keys=True) + "\n" for row in history)
    try:
        found = path.read_bytes()
    except FileNotFoundError:
        found = b""
    if found == wanted.encode():
        return
    lines = found.splitlines()
    for number, line in enumerate(lines, 1):
        try:
            json.loads(line)
        except ValueError:
            torn = number == len(lines) and not found.endswith(b"\n")
            problem = "its last line is cut off" if torn else f"line {number} is not JSON"
            print(
                f"note: {path} is damaged ({problem}); rewritten from the checkpoint's "
                f"{len(history)} epochs",
                file=sys.stderr,
            )
            break
    write_metrics(history, run_dir)


def read_metrics(run_dir: Path, fix: str) -> list[dict[str, Any]]:
    """The epochs of a run's metrics.jsonl, one dict per line, as `write_metrics` wrote them.

    Every line must be a JSON object with the epoch (1, 2, ... in order) and a numeric
    ``test_acc``; anything else (a cut-off last line, garbage, a gap) is a ConfigError naming
    the file, the line and `fix`. A missing file raises FileNotFoundError.
    """
    path = run_dir / METRICS
    data = read_bytes(path)
    lines = data.splitlines()
    if not lines:
        raise damaged(path, "empty", fix)
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except ValueError:
            torn = number == len(lines) and not data.endswith(b"\n")
            raise damaged(
                path, "its last line is cut off" if torn else f"line {number} is not JSON", fix
            ) from None
        accuracy = row.get("test_acc") if isinstance(row, dict) else None
        if (
            not isinstance(row, dict)
            or row.get("epoch") != number
            or isinstance(accuracy, bool)
            or not isinstance(accuracy, int | float)
        ):
            problem = f"line {number} is not epoch {number} with a numeric test_acc"
            raise damaged(path, problem, fix)
        rows.append(row)
    return rows


def save_checkpoint(state: Mapping[str, Any], run_dir: Path) -> None:
    """Write an epoch's checkpoint; the one before it is kept as checkpoint.prev.pt, unless it
    is damaged (torch.save writes a zip archive): then the one kept before stays."""
    path = run_dir / CHECKPOINT
    if zipfile.is_zipfile(path):  # a second name for it, then that name over the previous one:
        link = run_dir / f".{PREVIOUS_CHECKPOINT}.{secrets.token_hex(6)}.tmp"
        os.link(path, link)  # checkpoint.pt is never missing, even if the run is killed here
        os.replace(link, run_dir / PREVIOUS_CHECKPOINT)
    save_torch(dict(state), path)


def load_checkpoint(run_dir: Path) -> dict[str, Any] | None:
    """The last epoch's checkpoint, or None before the first.

    A damaged (or, after a crash mid-rotation, missing) checkpoint.pt falls back to
    checkpoint.prev.pt, the epoch before, with a note; with no usable previous one it is a
    ConfigError that says to delete it.
    """
    path, previous = run_dir / CHECKPOINT, run_dir / PREVIOUS_CHECKPOINT
    if not path.exists() and not previous.exists():
        return None
    fix = "delete it to start that run over"
    try:
        return _checkpoint(path, fix)
    except (ConfigError, FileNotFoundError) as error:
        if not previous.exists():
            raise
        problem = str(error) if isinstance(error, ConfigError) else f"{path} is missing"
    state = _checkpoint(previous, f"delete it and {path.name} to start that run over")
    problem = problem.rpartition("; ")[0] or problem
    epoch = state["epoch"] + 1
    print(f"note: {problem}; resuming from {previous.name}, after epoch {epoch}", file=sys.stderr)
    return state


def _checkpoint(path: Path, fix: str) -> dict[str, Any]:
    state = load_torch(path, fix, weights_only=False)
    keys = ("model", "optimizer", "scaler", "rng", "epoch", "history")
    if not isinstance(state, dict) or any(key not in state for key in keys):
        raise damaged(path, f"not a checkpoint: it lacks one of {', '.join(keys)}", fix)
    if not isinstance(state["epoch"], int) or not isinstance(state["history"], list):
        raise damaged(path, "its epoch or history has the wrong type", fix)
    return state


def load_torch(path: Path, fix: str, *, weights_only: bool = True) -> Any:
    """What ``torch.save`` wrote to `path`; a damaged file is one ConfigError (see `damaged`)."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except FileNotFoundError:
        raise
    except Exception as error:  # a damaged file fails in torch, zipfile or pickle, in many ways
        raise damaged(path, _short(error) or type(error).__name__, fix) from None


def read_result(run_dir: Path) -> dict[str, Any] | None:
    """A run's result.json, or None while the run is not done."""
    path = run_dir / RESULT
    if not path.exists():
        return None
    result: dict[str, Any] = read_json(path, RESULT_FIX)
    return result


class UnreadableFile(ConfigError):
    """A file gafkd wrote that does not read (damaged, or not readable by this user): one line
    naming the file, what is wrong and the fix. `gafkd status` shows it per batch."""


def damaged(path: Path, problem: str, fix: str) -> UnreadableFile:
    """The one-line error of a file that does not read: the file, what is wrong, the fix."""
    return UnreadableFile(f"{path} is damaged ({problem}); {fix}")


def read_bytes(path: Path) -> bytes:
    """A file's bytes; one it may not read is an UnreadableFile naming it (a missing one still
    raises FileNotFoundError, which callers answer in their own words)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as error:
        raise UnreadableFile(
            f"{path} cannot be read ({error.strerror}); check its owner and mode (ls -l)"
        ) from None


def read_json(path: Path, fix: str, expect: type = dict) -> Any:
    """A JSON file gafkd wrote, holding an `expect` (an object or a list); a damaged one is a
    ConfigError naming the file, what is wrong and `fix`. A missing file raises FileNotFoundError.
    """
    data = read_bytes(path)
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise damaged(path, "not UTF-8 text", fix) from None
    if not text.strip():
        raise damaged(path, "empty", fix)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise damaged(path, f"not valid JSON: {error}", fix) from None
    if not isinstance(value, expect):
        wanted = "a list" if expect is list else "an object"
        raise damaged(path, f"holds {type(value).__name__} where {wanted} belongs", fix)
    return value


def error_line(run_dir: Path) -> str | None:
    """Why a run failed: the last line of its error.txt, None without one. An empty or garbled
    error.txt is a line that says so and points at the run's log.txt."""
    path = run_dir / ERROR
    log = run_dir / "log.txt"
    try:
        text = path.read_bytes().decode().strip()
    except FileNotFoundError:
        return None
    except OSError as error:
        return f"{path} cannot be read ({error.strerror}); see {log}"
    except UnicodeDecodeError:
        return f"{path} is damaged (not UTF-8 text); see {log} for why the run stopped"
    if not text:
        return f"{path} is empty; see {log} for why the run stopped"
    return text.splitlines()[-1]


def _short(error: BaseException) -> str:
    """An exception's message on one line, cut to a readable length."""
    text = " ".join(str(error).split())
    return text if len(text) <= 120 else text[:117] + "..."


def write_error(run_dir: Path, message: str) -> None:
    with atomic_open(run_dir / ERROR) as handle:
        handle.write(message.rstrip() + "\n")
