"""Experiments on a lab host, from this machine: gafkd runs there, one ssh command per request.

Every request is one fixed ``sh`` script run with argv (:func:`remote_command`): it resolves the
host's ``python`` setting (``~/`` is the login user's home) and ``lab_dir`` (``{user}`` is the
login user), then runs ``<python> -m gafkd ... --root <lab_dir>`` in the lab folder. So status is
one round trip returning JSON, and a missing env or lab folder is one clear error. Nothing here
uses a pty: a pty's hangup would kill the runner that ``gafkd launch`` starts detached. The
runner, its state files and the run folders are gafkd's own (docs/experiments.md); this module
never imports gafkd.
"""

from __future__ import annotations

import json
import secrets
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from provisioning import code
from provisioning.core import Connection, ProvisionError, Result
from provisioning.hosts import LOCAL, Host, ssh_files
from provisioning.runner import run_host

# $1 python, $2 lab_dir, $3 mode (gafkd: -m gafkd ... --root LAB; python: python ...), then argv.
SCRIPT = """py=$1 lab=$2 mode=$3
shift 3
case $py in "~/"*) py=$HOME/${py#"~/"} ;; esac
lab=$(printf %s "$lab" | sed "s/{user}/$(id -un)/g")
[ -x "$py" ] || { printf 'no python at %s\\n' "$py" >&2; exit 3; }
cd "$lab" 2>/dev/null || { printf 'no lab folder %s\\n' "$lab" >&2; exit 4; }
[ "$mode" = gafkd ] && exec "$py" -m gafkd "$@" --root "$lab"
exec "$py" "$@"
"""
NO_PYTHON, NO_LAB = 3, 4  # SCRIPT's own exit codes
CHECK = (
    "import os, gafkd; "
    "print(gafkd.__version__, os.path.realpath(gafkd.__file__), os.path.realpath(os.getcwd()))"
)
INSTALL = ("-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-input", "-q")
# Copied back by `results`: what aggregation reads (result, plan, state, metrics, configs, logs).
RESULT_FILTERS = (
    *(f"--include={pattern}" for pattern in ("*/", "*.json", "*.jsonl", "*.toml", "*.txt")),
    "--exclude=*",
)
Echo = Callable[[str], None]


def remote_command(host: Host, mode: Literal["gafkd", "python"], *args: str) -> str:
    """The one shell line that runs ``python -m gafkd ARGS --root LAB`` (or ``python ARGS``).

    >>> remote_command(Host("lab"), "gafkd", "status", "--json").startswith("sh -c 'py=$1 ")
    True
    """
    return shlex.join(("sh", "-c", SCRIPT, "sh", host.python, host.lab_dir, mode, *args))


def check(result: Result, host: Host, what: str) -> Result:
    """A failed request becomes a ProvisionError: gafkd's ``error:`` line, or what is missing."""
    if result.ok:
        return result
    lines = result.stderr.strip().splitlines()
    last = lines[-1] if lines else "no output"
    if result.return_code == NO_PYTHON:
        raise ProvisionError(
            f"{host.alias} has {last}, the env that runs gafkd: run invoke provision --host "
            f"{host.alias} first, or set python: for {host.alias} in invoke.yaml"
        )
    if result.return_code == NO_LAB:
        raise ProvisionError(
            f"{host.alias} has {last}: invoke launch --host {host.alias} (or invoke sync) "
            "copies the code there first"
        )
    errors = [line.split("error: ", 1)[1] for line in lines if "error: " in line]
    if errors:
        raise ProvisionError(f"{host.alias}: {errors[-1]}")
    raise ProvisionError(
        f"{what} on {host.alias} failed with exit status {result.return_code}: {last}"
    )


def gafkd(
    connection: Connection, host: Host, *args: str, stream: bool = False, what: str = "gafkd"
) -> Result:
    """Run ``gafkd ARGS --root LAB`` on the host; ``stream`` prints its output as it comes."""
    command = remote_command(host, "gafkd", *args)
    hide: bool | str = "stderr" if stream else True
    result = connection.run(command, hide=hide, warn=True, in_stream=False)
    return check(result, host, what)


def status(connection: Connection, host: Host, grid: str | None = None) -> dict[str, Any]:
    """``gafkd status --json`` on the host: one round trip, the dict the status screen draws.

    gafkd prints the JSON between two lines of a marker made for this request, so a login
    banner or a wrapper script printing around it does not matter (:func:`parse_status`).
    """
    marker = f"gafkd-status-{secrets.token_hex(8)}"
    args = ("status", "--json", "--frame", marker, *(("--grid", grid) if grid else ()))
    try:
        result = gafkd(connection, host, *args, what="gafkd status")
    except ProvisionError as error:
        if "unrecognized arguments: --frame" not in str(error):
            raise
        raise ProvisionError(
            f"the gafkd on {host.alias} is older than this one (its status has no --frame); "
            f"update it: invoke sync --host {host.alias}"
        ) from None
    return parse_status(result.stdout, marker, host)


def statuses(
    opened: Sequence[tuple[Host, Connection]], grid: str | None = None
) -> dict[str, dict[str, Any]]:
    """`status` of each opened host, by alias: what ``invoke status --host lab1,lab2`` draws."""
    return {host.alias: status(connection, host, grid) for host, connection in opened}


def cancel(connection: Connection, host: Host, grid: str, run: str | None = None) -> str:
    """``gafkd cancel GRID [--run RUN]`` on the host; what it printed."""
    args = ("cancel", grid, *(("--run", run) if run else ()))
    return gafkd(connection, host, *args, what="gafkd cancel").stdout


def logs(
    connection: Connection, host: Host, run: str, grid: str | None = None, follow: bool = False
) -> None:
    """``gafkd logs RUN [--grid GRID] [--follow]`` on the host, printed as it comes."""
    args = ("logs", run, *(("--grid", grid) if grid else ()), *(("--follow",) * follow))
    gafkd(connection, host, *args, stream=True, what="gafkd logs")


def parse_status(text: str, marker: str, host: Host) -> dict[str, Any]:
    """The JSON between the first two lines that are ``marker``; what is around it is ignored.

    >>> parse_status('Welcome!\\nM\\n{"batches": []}\\nM\\nbye\\n', "M", Host("lab"))
    {'batches': []}
    """
    lines = [line.rstrip("\r") for line in text.splitlines()]
    marks = [index for index, line in enumerate(lines) if line == marker]
    if len(marks) < 2:
        first = next((line.strip() for line in lines if line.strip()), "")
        shown = f"it printed {first[:80]!r} and no status" if first else "it printed nothing"
        raise ProvisionError(
            f"gafkd status on {host.alias}: {shown} (the JSON between two {marker} lines); "
            f"check what its login scripts and python ({host.python}) print"
        )
    try:
        found = json.loads("\n".join(lines[marks[0] + 1 : marks[1]]))
    except json.JSONDecodeError as error:
        raise ProvisionError(
            f"gafkd status on {host.alias}: the status it printed between the markers is not "
            f"JSON ({error}); run gafkd status --json there to see it"
        ) from None
    if not isinstance(found, dict):
        raise ProvisionError(
            f"gafkd status on {host.alias}: the status it printed between the markers is "
            f"{type(found).__name__}, not a JSON object; run gafkd status --json there"
        )
    return found


def read_project(connection: Connection, host: Host) -> tuple[str, str, str] | None:
    """(version, file, lab folder) of the gafkd the env imports, or None when it has none."""
    command = remote_command(host, "python", "-c", CHECK)
    result = connection.run(command, hide=True, warn=True, in_stream=False)
    if not result.ok and "ModuleNotFoundError" in result.stderr:
        return None
    version, file, folder = check(result, host, "the gafkd check").stdout.split()
    return version, file, folder


def ensure_project(connection: Connection, host: Host, version: str) -> str:
    """The env imports gafkd ``version`` from the lab folder; installs it there (-e) if not."""
    found = read_project(connection, host)
    if found and found[0] == version and found[1].startswith(f"{found[2]}/"):
        return f"gafkd {version} from {found[2]}"
    command = remote_command(host, "python", *INSTALL, "-e", ".")
    result = connection.run(command, hide=True, warn=True, in_stream=False)
    if not result.ok:
        tail = " / ".join(result.stderr.strip().splitlines()[-3:])
        raise ProvisionError(
            f"pip could not install the synced checkout into the env on {host.alias}: {tail}; "
            f"run invoke provision --host {host.alias} to rebuild the env"
        )
    found = read_project(connection, host)
    if not found or found[0] != version or not found[1].startswith(f"{found[2]}/"):
        raise ProvisionError(
            f"after pip install -e, the env on {host.alias} imports {found or 'no gafkd'}; "
            f"expected gafkd {version} from the lab folder"
        )
    return f"gafkd {version} installed from {found[2]}"


def read_queue(connection: Connection, host: Host) -> bool:
    """Whether the host has the run queue folder (``queue_dir``, made by the queue step)."""
    command = shlex.join(("test", "-d", host.queue_dir))
    return bool(connection.run(command, hide=True, warn=True, in_stream=False).ok)


def sync(connection: Connection, host: Host, *, dry: bool, echo: Echo) -> bool:
    """The sync step of provisioning; True when the host already had this checkout."""
    outcome = run_host(connection, host, [("sync", code.ensure_code)], dry=dry, echo=echo)[0]
    if outcome.status == "failed":
        raise ProvisionError(f"sync to {host.alias} failed: {outcome.detail}")
    return outcome.status == "ok"


def launch(
    connection: Connection,
    host: Host,
    grid: str,
    options: Sequence[str],
    *,
    version: str,
    dry: bool,
    echo: Echo,
) -> None:
    """Sync, check the env, then ``gafkd launch GRID OPTIONS`` there: the runner detaches. With
    the host's run queue folder (``queue_dir``) the runner shares the GPU slots with other users'.

    gafkd checks the grid, the ``--set`` keys and the dataset paths on the host and refuses before
    anything runs; its ``error:`` line comes back as a ProvisionError. ``dry`` changes nothing: it
    prints the sync plan, and the batch plan when the host already has this checkout.
    """
    current = sync(connection, host, dry=dry, echo=echo)
    if dry:
        found = read_project(connection, host)
        if not current or not found or found[0] != version:
            echo(f"{host.alias} | launch | the batch plan is shown once the host has this code")
            return
    else:
        echo(f"{host.alias} | env | ok: {ensure_project(connection, host, version)}")
    queue = ("--queue", host.queue_dir) if read_queue(connection, host) else ()
    if not queue:
        echo(
            f"{host.alias} | queue | {host.queue_dir} is missing, so these runs are not counted "
            "against other users' runs on the GPUs; invoke provision --host "
            f"{host.alias} --only queue makes it"
        )
    args = ("launch", grid, *options, *queue, *(("--dry",) if dry else ()))
    for line in gafkd(connection, host, *args, what="gafkd launch").stdout.splitlines():
        echo(f"{host.alias} | {line}")
    if not dry:
        echo(
            f"{host.alias} | watch it: invoke status --host {host.alias}; a run's log: invoke logs "
            f"RUN --host {host.alias}; results: invoke results --grid {grid} --host {host.alias}"
        )


def ssh_command(host: Host) -> str:
    """The ssh command rsync uses: the host's ssh_config and known_hosts, keys checked."""
    ssh_config, known_hosts = ssh_files(host)
    ssh = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"]
    ssh += ["-o", f"UserKnownHostsFile={known_hosts}"]
    if host.ssh_config or ssh_config.is_file():
        ssh[1:1] = ["-F", str(ssh_config)]
    return shlex.join(ssh)


def results(connection: Connection, host: Host, grid: str, local_root: Path) -> Path:
    """Copy the host's ``runs/GRID/`` (results, plans, states, metrics, configs, logs; no
    checkpoints) into ``local_root/runs/GRID/`` with rsync; returns ``local_root``."""
    if not code.read_rsync(connection):
        raise ProvisionError(
            f"fetching results needs rsync here and on {host.alias}; install it "
            "(invoke provision --host installs nothing for it yet: apt-get install rsync)"
        )
    folder = host.lab_dir.replace("{user}", code.read_login_user(connection))
    source = f"{folder}/runs/{grid}/"
    source = source if host.alias == LOCAL else f"{host.alias}:{source}"
    target = local_root / "runs" / grid
    target.mkdir(parents=True, exist_ok=True)
    argv = ["rsync", "--recursive", "--times", "--prune-empty-dirs", *RESULT_FILTERS]
    argv += [] if host.alias == LOCAL else ["--rsh", ssh_command(host)]
    done = connection.local(
        shlex.join([*argv, source, f"{target}/"]), hide=True, warn=True, in_stream=False
    )
    if not done.ok:
        if "No such file or directory" in done.stderr:
            raise ProvisionError(
                f"{host.alias} has no runs of grid {grid!r} under {folder}/runs; launch it there "
                f"first: invoke launch --grid {grid} --host {host.alias}"
            )
        raise ProvisionError(
            f"rsync from {host.alias} failed: {done.stderr.strip().splitlines()[-1:]}"
        )
    return local_root
