"""The health log: reading back what the GPU health monitor appends to ``health.jsonl``.

`health_log` gives the last verdict per GPU, shaped like ``state.json``'s ``"gpus"``, for
`gafkd.experiments.status` (a local batch's ``.batch/health.jsonl``) and
`gafkd.experiments.slurm_state` (each Slurm run's own). `last_lines` reads only the end of a
JSON-lines file, so a screen refreshing every few seconds stays cheap; status reads the last epoch
of ``metrics.jsonl`` with it too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TAIL_BYTES = 64 * 1024  # how much of the end of a .jsonl file is read for its last lines


def last_lines(path: Path, max_bytes: int = TAIL_BYTES) -> list[dict[str, Any]]:
    """The JSON objects on the last complete lines of `path` (reads at most `max_bytes`)."""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, 2)
            handle.seek(max(0, size - max_bytes))
            chunk = handle.read()
    except OSError:
        return []
    lines = chunk.splitlines()
    if size > max_bytes:
        lines = lines[1:]  # the first one is cut
    rows = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line being appended right now
        if isinstance(row, dict):
            rows.append(row)
    return rows


def health_log(path: Path) -> dict[str, dict[str, Any]]:
    """The last verdict per GPU in health.jsonl, shaped like state.json's "gpus"."""
    verdicts: dict[str, dict[str, Any]] = {}
    for row in last_lines(path):
        if "gpu" in row and "healthy" in row:
            verdicts[str(row["gpu"])] = {"healthy": row["healthy"], "reason": row.get("reason", "")}
    return verdicts
