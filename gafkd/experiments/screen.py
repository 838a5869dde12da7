"""The status screen: `status.collect`'s dict drawn with rich, GPUs first, then batches.

`render` is pure: it returns a rich renderable and prints nothing; `gafkd.experiments.status.watch`
and the CLI print it. `render_hosts` puts several lab hosts' screens under their aliases.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.rule import Rule
from rich.table import Table

WAITING_SHOWN = 5  # queued or blocked runs listed with their reason; the rest are counted


def render(status: Mapping[str, Any]) -> RenderableType:
    """One screen: the GPU table, then per batch a summary line, its running runs and failures."""
    parts: list[RenderableType] = [f"[bold]{escape(status['host'])}[/]  {status['time']}"]
    if status["gpus"]:
        parts.append(_gpu_table(status["gpus"], status.get("user")))
        parts.extend(
            f"  [red]{escape(gpu['reason'])}[/]" for gpu in status["gpus"] if gpu["reason"]
        )
    else:
        parts.append(f"[yellow]{escape(status['gpu_note'])}[/]: runs go onto the CPU")
    if status.get("slots"):
        parts.append(_slots_line(status["slots"], status.get("user")))
    if not status["batches"]:
        parts.append("no batch under runs/*/.batch: start one with `invoke launch --grid NAME`")
    for batch in status["batches"]:
        if batch.get("damaged"):
            grid, problem = escape(batch["grid"]), escape(batch["damaged"])
            parts.append(f"\n[bold]{grid}[/] [red]cannot be read[/]: {problem}")
            continue
        parts.append(_summary(batch))
        if batch["running"]:
            parts.append(_running_table(batch["running"]))
        for run in batch["failed"]:
            error = escape(run["error"] or "no error recorded")
            parts.append(f"  [red]failed[/] {escape(run['id'])} ({run['attempts']} tries): {error}")
        waiting = batch.get("waiting", [])
        for run in waiting[:WAITING_SHOWN]:
            parts.append(f"  [dim]{run['status']}[/] {escape(run['id'])}: {escape(run['reason'])}")
        if len(waiting) > WAITING_SHOWN:
            parts.append(f"  [dim]... and {len(waiting) - WAITING_SHOWN} more waiting[/]")
    return Group(*parts)


def render_hosts(statuses: Mapping[str, Mapping[str, Any]]) -> RenderableType:
    """Each host's screen under a heading with its alias (``invoke status --host lab1,lab2``)."""
    parts = [(Rule(alias, align="left"), render(status)) for alias, status in statuses.items()]
    return Group(*(part for pair in parts for part in pair))


def _slots_line(slots: list[dict[str, Any]], me: str | None) -> str:
    """The shared queue's slots: whose run holds each (other users' runs count against yours)."""
    held = []
    for slot in slots:
        if "problem" in slot:  # a file planted in the shared folder, or a damaged one
            held.append(f"{slot['slot']} {slot['problem']}")
            continue
        who = "yours" if slot.get("user") == me else str(slot.get("user"))
        held.append(f"{slot['slot']} {who} ({slot.get('run', '?')})")
    return "shared slots: " + escape(", ".join(held))


def _gpu_table(gpus: list[dict[str, Any]], me: str | None) -> Table:
    table = Table("GPU", "name", "util", "memory", "temp", "health", "other users", box=None)
    for gpu in gpus:
        temperature, limit = gpu["temperature"], gpu["slowdown_temperature"]
        temp = "-" if temperature is None else f"{temperature} C"
        if temperature is not None and limit is not None:
            temp = f"[red]{temp}[/]" if temperature >= limit else f"{temp} / {limit} C"
        health = {None: "[dim]not watched[/]", True: "[green]ok[/]", False: "[red]unhealthy[/]"}[
            gpu["healthy"]
        ]
        others = [p for p in gpu["processes"] if p["user"] != me]
        mine = len(gpu["processes"]) - len(others)
        users = ", ".join(
            f"{p['user'] or '?'}:{p['name'] or p['pid']} ({_gib(p['gpu_memory'])})" for p in others
        )
        users += f"{', ' if users else ''}{mine} of yours" if mine else ""
        table.add_row(
            str(gpu["index"]),
            escape(gpu["name"]),
            "-" if gpu["utilization"] is None else f"{gpu['utilization']}%",
            f"{_gib(gpu['memory_used'])} / {_gib(gpu['memory_total'])}",
            temp,
            health,
            escape(users) or "-",
        )
    return table


def _summary(batch: Mapping[str, Any]) -> str:
    runner = batch["runner"]
    who = f"runner {runner['pid']} {runner['state']}" if runner["pid"] else runner["state"]
    if runner.get("backend") == "slurm":
        who = f"Slurm jobs {', '.join(runner['jobs'])} {runner['state']}"
    colour = "green" if runner["alive"] else "yellow"
    counts = " · ".join(f"{n} {status}" for status, n in batch["counts"].items() if n)
    if runner.get("waiting_for_slot"):
        who += ", waiting for a shared slot"  # other users' runs hold them: see "shared slots"
    eta = batch["eta_seconds"]
    eta_text = "-" if eta is None else _duration(eta)
    return (
        f"\n[bold]{escape(batch['grid'])}[/] [{colour}]{who}[/]  {counts or 'no runs'}"
        f" of {batch['total']}  ETA {eta_text}"
    )


def _running_table(running: list[dict[str, Any]]) -> Table:
    table = Table("run", "device", "epoch", "test acc", "s/epoch", box=None, padding=(0, 2))
    for run in running:
        acc, seconds = run["test_acc"], run["seconds_per_epoch"]
        table.add_row(
            escape(run["id"]),
            str(run["device"] or "-"),
            f"{run['epoch']}/{run['epochs'] if run['epochs'] is not None else '?'}",
            "-" if acc is None else f"{acc:.2f}%",
            "-" if seconds is None else f"{seconds:.1f}",
        )
    return table


def _gib(size: int | None) -> str:
    return "-" if size is None else f"{size / 1024**3:.1f} GiB"


def _duration(seconds: float) -> str:
    """'1h 05m', '4m 10s' or '12s'.

    >>> _duration(3900), _duration(250), _duration(12.4)
    ('1h 05m', '4m 10s', '12s')
    """
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"
