"""The step runner: plan each step, print the plan, apply it, verify, then the next step.

A step is a generator ``step(connection, host)``: it reads the host's state, yields one Command per
difference from the desired state, and returns a one-line reason (shown as ``ok: <reason>`` when
it yielded nothing). Steps never change anything themselves; `run_host` prints each plan as
``host | step | why | command``, applies it unless ``dry``, re-plans the step to verify that the
host now matches (an empty plan), and only then plans the next step, because later facts depend
on earlier changes. A step that does not apply to a host (no GPU on it) raises SkipStep: it is
reported as skipped with its reason, and the run goes on. `run_hosts` runs the hosts in
parallel; `report_table` and `report_json` summarise the outcomes, `print_report` prints the
summary and `fail_on_errors` ends a task naming every failed step.
"""

from __future__ import annotations

import io
import json
import shlex
import sys
import threading
from collections.abc import Callable, Generator, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal

from invoke.exceptions import AuthFailure, UnexpectedExit

from provisioning.core import (
    STDIN,
    Command,
    Connection,
    ProvisionError,
    SkipStep,
    read_result,
    run_local,
)
from provisioning.hosts import Host

if TYPE_CHECKING:
    from rich.table import Table

Step = Callable[[Connection, Host], Generator[Command, None, str]]
Status = Literal["ok", "planned", "changed", "failed", "skipped"]


@dataclass(frozen=True)
class Outcome:
    """What happened to one step on one host, for the report."""

    host: str
    step: str
    status: Status
    detail: str
    commands: tuple[str, ...] = ()


def plan(step: Step, connection: Connection, host: Host) -> tuple[list[Command], str]:
    """Collect a step's planned commands and the reason it returned."""
    commands: list[Command] = []
    steps = step(connection, host)
    while True:
        try:
            commands.append(next(steps))
        except StopIteration as stop:
            return commands, str(stop.value)


def apply(connection: Connection, command: Command, sudo_password: str | None) -> None:
    """Run one planned command; any failure becomes a ProvisionError naming the command."""
    argv, upload = command.argv, None
    stdin = command.stdin.encode() if isinstance(command.stdin, str) else command.stdin
    if stdin is not None and not command.local:
        upload = read_result(connection, "mktemp").stdout.strip()
        if not upload:
            raise ProvisionError(f"mktemp failed on the host, needed to apply `{command}`")
        connection.put(io.BytesIO(stdin), upload)
        argv = tuple(upload if part == STDIN else part for part in argv)
    try:
        quiet = {"hide": True, "in_stream": False}  # sudo's password responder still works
        if command.local:
            assert not command.sudo, "local commands run as the user who runs invoke"
            run_local(connection, argv, stdin or b"")
        elif not command.sudo:
            connection.run(shlex.join(argv), **quiet)
        elif sudo_password is None:
            connection.run(shlex.join(("sudo", "-n", "--", *argv)), **quiet)
        else:
            connection.sudo(shlex.join(argv), password=sudo_password, **quiet)
    except AuthFailure:
        raise ProvisionError(
            f"sudo rejected the password while running `{command}`; check the password "
            "(--ask-sudo-password or INVOKE_SUDO_PASSWORD) and run again"
        ) from None
    except UnexpectedExit as error:
        output = (error.result.stderr or error.result.stdout).strip().splitlines()[-3:]
        hint = ""
        if "password is required" in error.result.stderr:
            hint = "; sudo needs a password on this host: rerun with --ask-sudo-password"
        raise ProvisionError(
            f"`{command}` failed with exit status {error.result.exited}: "
            f"{' / '.join(output) or 'no output'}{hint}"
        ) from None
    finally:
        if upload:
            read_result(connection, "rm", "-f", "--", upload)


def run_host(
    connection: Connection,
    host: Host,
    steps: Sequence[tuple[str, Step]],
    *,
    dry: bool,
    echo: Callable[[str], None],
    sudo_password: str | None = None,
) -> list[Outcome]:
    """Plan, print and (unless ``dry``) apply each step in order; stop at the first failure."""
    outcomes: list[Outcome] = []
    failed = False
    for name, step in steps:
        if failed:
            outcomes.append(Outcome(host.alias, name, "skipped", "an earlier step failed"))
            continue
        try:
            outcomes.append(_run_step(connection, host, name, step, dry, echo, sudo_password))
        except ProvisionError as error:
            echo(f"{host.alias} | {name} | failed: {error}")
            outcomes.append(Outcome(host.alias, name, "failed", str(error)))
            failed = True
    return outcomes


def _run_step(
    connection: Connection,
    host: Host,
    name: str,
    step: Step,
    dry: bool,
    echo: Callable[[str], None],
    sudo_password: str | None,
) -> Outcome:
    try:
        commands, reason = plan(step, connection, host)
    except SkipStep as skipped:
        echo(f"{host.alias} | {name} | skipped: {skipped}")
        return Outcome(host.alias, name, "skipped", str(skipped))
    if not commands:
        echo(f"{host.alias} | {name} | ok: {reason}")
        return Outcome(host.alias, name, "ok", reason)
    rendered = tuple(str(command) for command in commands)
    for command in commands:
        echo(f"{host.alias} | {name} | {command.why} | {command}")
    if dry:
        return Outcome(host.alias, name, "planned", f"dry run: {len(commands)} to apply", rendered)
    for done, command in enumerate(commands):
        try:
            apply(connection, command, sudo_password)
        except ProvisionError as error:
            raise ProvisionError(f"{error} (after {done} of {len(commands)} commands)") from None
    remaining, _ = plan(step, connection, host)
    if remaining:
        left = "; ".join(str(command) for command in remaining)
        raise ProvisionError(f"applied, but the host still differs; still planned: {left}")
    return Outcome(host.alias, name, "changed", f"applied {len(commands)}, verified", rendered)


def run_hosts(
    hosts: Sequence[Host],
    connect: Callable[[Host], Connection],
    steps: Sequence[tuple[str, Step]],
    *,
    dry: bool,
    echo: Callable[[str], None],
    sudo_password: str | None = None,
) -> list[Outcome]:
    """Run the steps on every host, the hosts in parallel; outcomes in host order."""
    lock = threading.Lock()

    def locked_echo(line: str) -> None:
        with lock:
            echo(line)

    def one(host: Host) -> list[Outcome]:
        try:
            connection = connect(host)
        except ProvisionError as error:
            locked_echo(f"{host.alias} | connect | failed: {error}")
            first, *rest = [name for name, _ in steps]
            return [Outcome(host.alias, first, "failed", f"cannot connect: {error}")] + [
                Outcome(host.alias, name, "skipped", "an earlier step failed") for name in rest
            ]
        return run_host(
            connection, host, steps, dry=dry, echo=locked_echo, sudo_password=sudo_password
        )

    with ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
        return [outcome for outcomes in pool.map(one, hosts) for outcome in outcomes]


DRY_NOTE = (
    "dry run: nothing was applied, so steps planned after a step with changes may be "
    "incomplete (their facts can depend on those changes)"
)


def report_table(outcomes: Iterable[Outcome]) -> Table:
    """The run's summary as a rich table: one row per host and step."""
    from rich.table import Table

    table = Table("host", "step", "status", "why", title="provision")
    for outcome in outcomes:
        table.add_row(outcome.host, outcome.step, outcome.status, outcome.detail)
    return table


def report_json(outcomes: Iterable[Outcome], *, dry: bool) -> str:
    """The run's summary for scripts: ``{"dry": ..., "outcomes": [...]}``."""
    return json.dumps({"dry": dry, "outcomes": [asdict(o) for o in outcomes]}, indent=2)


def print_report(outcomes: Sequence[Outcome], *, as_json: bool, dry: bool) -> None:
    """The summary: a table, or JSON for scripts; then the dry-run caveat when it applies."""
    if as_json:
        print(report_json(outcomes, dry=dry))
    else:
        from rich.console import Console

        Console().print(report_table(outcomes))
    if dry and any(o.status == "planned" for o in outcomes):
        print(DRY_NOTE, file=sys.stderr if as_json else sys.stdout)


def fail_on_errors(outcomes: Iterable[Outcome]) -> None:
    """After the report: a ProvisionError naming every failed step, one line each (a task
    prints it as ``error: HOST STEP: DETAIL`` lines)."""
    failed = [f"{o.host} {o.step}: {o.detail}" for o in outcomes if o.status == "failed"]
    if failed:
        raise ProvisionError("\nerror: ".join(failed))
