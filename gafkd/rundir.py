"""The run directory: resolved config, metrics, checkpoint and result, all written atomically.

Layout of one run::

    <run_dir>/config.toml      the resolved config (every default written out)
    <run_dir>/metrics.jsonl    one JSON line per finished epoch
    <run_dir>/checkpoint.pt    model, optimiser, epoch and history; rewritten every epoch
    <run_dir>/model.pt         final weights, what teachers and annealing load
    <run_dir>/result.json      accuracies and provenance; its presence means the run is done
    <run_dir>/error.txt        why the run stopped, when it failed
    <run_dir>/logits/<key>.pt  cached outputs of this model when used as a frozen teacher

A crash at any point leaves either the previous file or the new one, never a torn one, so a
run directory never reads as done unless it is.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch  # imported where it is used: status and launch stay torch-free


import gafkd
from gafkd.config import ConfigError, RunConfig, dump_toml, to_dict

CONFIG = "config.toml"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"
RESULT = "result.json"
ERROR = "error.txt"
LOCK = ".lock"


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
            handle.seek(0)
            raise ConfigError(busy.format(holder=handle.read().strip() or "unknown")) from None
        handle.seek(0)
        handle.truncate()
        started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {started}\n")
        handle.flush()
        yield handle.fileno()


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


def load_checkpoint(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / CHECKPOINT
    if not path.exists():
        return None
    import torch

    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    return state


def read_result(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / RESULT
    if not path.exists():
        return None
    result: dict[str, Any] = json.loads(path.read_text())
    return result


def write_error(run_dir: Path, message: str) -> None:
    with atomic_open(run_dir / ERROR) as handle:
        handle.write(message.rstrip() + "\n")


def provenance(device: torch.device, seed: int) -> Mapping[str, Any]:
    """Where and with what a run was computed."""
    import torch

    return {
        "gafkd_version": gafkd.__version__,
        "git_commit": _git_commit(),
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "cudnn_version": _cudnn_version(),
        "device": str(device),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "device_name": (
            torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
        ),
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "seed": seed,
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cudnn_version() -> int | None:
    import torch

    cudnn = torch.backends.cudnn
    if not cudnn.is_available():  # type: ignore[no-untyped-call]
        return None
    version: int = cudnn.version()  # type: ignore[no-untyped-call]
    return version


def _git_commit() -> str | None:
    """The commit of the gafkd source tree, with "-dirty" when it has local changes."""
    root = Path(gafkd.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
