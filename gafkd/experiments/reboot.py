"""Resume a batch after the server reboots: an opt-in ``@reboot`` line in the user's crontab.

``gafkd launch GRID --on-reboot`` adds one line to the user's own crontab (no root needed)::

    @reboot cd LAB && exec PYTHON -m gafkd launch GRID --resume ... # gafkd-resume LAB GRID

At boot cron runs it, and ``--resume`` restarts the batch as planned: done runs are not run
again, the others resume from their checkpoints. The runner removes the line when the batch
finishes, and so does ``gafkd cancel`` of the whole batch. The marker comment names the lab
folder and the grid, so each batch has at most one line and other lines are never touched.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from gafkd.config import ConfigError

MARKER = "# gafkd-resume"


def marker(root: Path, grid: str) -> str:
    return f"{MARKER} {shlex.quote(str(Path(root).resolve()))} {shlex.quote(grid)}"


def entry(root: Path, grid: str, options: Sequence[str] = (), python: str = sys.executable) -> str:
    r"""The crontab line that resumes `grid` under `root` at boot.

    >>> line = entry(Path("/srv/lab/a/gafkd"), "kd", ["--per-gpu=2"], python="/env/bin/python")
    >>> print(line.replace(" && ", "\n").replace(" >> ", "\n").replace(" # ", "\n# "))
    @reboot cd /srv/lab/a/gafkd
    exec /env/bin/python -m gafkd launch kd --resume --root /srv/lab/a/gafkd --per-gpu=2
    runs/kd/.batch/reboot.log 2>&1
    # gafkd-resume /srv/lab/a/gafkd kd
    """
    folder = str(Path(root).resolve())
    argv = [python, "-m", "gafkd", "launch", grid, "--resume", "--root", folder, *options]
    log = shlex.quote(f"runs/{grid}/.batch/reboot.log")
    command = f"cd {shlex.quote(folder)} && exec {shlex.join(argv)} >> {log} 2>&1"
    if "%" in command or "\n" in command:  # cron turns % into newlines
        raise ConfigError(f"cannot put {command!r} in a crontab: it contains % or a newline")
    return f"@reboot {command} {marker(root, grid)}"


def with_entry(crontab: str, root: Path, grid: str, line: str | None) -> str:
    """`crontab` without this batch's line, plus `line` (None: only remove)."""
    mark = marker(root, grid)
    kept = [row for row in crontab.splitlines() if not row.endswith(mark)]
    if line is not None:
        kept.append(line)
    return "".join(f"{row}\n" for row in kept)


def prepare(root: Path, grid: str, options: Sequence[str] = ()) -> str:
    """The user's crontab with the batch's ``@reboot`` line added (or replaced), to `write`
    once the runner started; cron is checked here, so a launch fails before anything starts."""
    return with_entry(_read(required=True), root, grid, entry(root, grid, options))


def install(root: Path, grid: str, options: Sequence[str] = ()) -> str:
    """Add (or replace) the batch's ``@reboot`` line; return it."""
    write(prepare(root, grid, options))
    return entry(root, grid, options)


def remove(root: Path, grid: str) -> bool:
    """Remove the batch's line if there is one; True when a line was removed."""
    if shutil.which("crontab") is None:
        return False
    current = _read(required=False)
    updated = with_entry(current, root, grid, None)
    if updated == current:
        return False
    write(updated)
    return True


def _read(required: bool) -> str:
    if shutil.which("crontab") is None:
        if not required:
            return ""
        raise ConfigError(
            "--on-reboot needs cron, and this host has no `crontab` command; install it "
            "(sudo apt-get install cron) or resume by hand after a reboot: "
            "invoke launch --grid GRID --resume"
        )
    done = subprocess.run(["crontab", "-l"], capture_output=True, text=True, check=False)
    if done.returncode != 0 and "no crontab" not in done.stderr:
        raise ConfigError(f"crontab -l failed: {done.stderr.strip()}")
    return done.stdout if done.returncode == 0 else ""


def write(text: str) -> None:
    """Replace the user's crontab with `text`."""
    done = subprocess.run(["crontab", "-"], input=text, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ConfigError(f"crontab could not be written: {done.stderr.strip()}")
