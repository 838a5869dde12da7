"""Accuracies of a grid: the metric names, one row per run, one per config, and what they mean.

The shared vocabulary of the results wing: `tables` (collect, aggregate, tables), `reference`
(earlier numbers beside ours) and `figure` (the plot); it imports none of them, so they can all
import it. `DESCRIPTIONS` and `STD_NOTE` say which accuracy the numbers are and the std
convention (`reference.header` writes them out).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

AxisValue = str | int | float | bool
Status = Literal["done", "failed", "missing"]
Metric = Literal[
    "reported_acc", "final_test_acc", "best_test_acc", "test_acc_at_best_val", "best_val_acc"
]
METRICS: tuple[Metric, ...] = (
    "reported_acc",
    "final_test_acc",
    "best_test_acc",
    "test_acc_at_best_val",
    "best_val_acc",
)
REPORTS = {  # result["report"] -> what the reported accuracy is
    "final": "test accuracy after the last epoch",
    "best_val": "test accuracy at the epoch of best validation accuracy",
    "best_test": "best test accuracy over epochs (selected on the test subjects)",
}
DESCRIPTIONS = {  # metric -> what it is, for a metric other than reported_acc
    "final_test_acc": REPORTS["final"],
    "best_test_acc": REPORTS["best_test"],
    "test_acc_at_best_val": REPORTS["best_val"],
    "best_val_acc": "best validation accuracy over epochs",
}
STD_NOTE = "std over seeds with ddof=0 (population std, as in the lab's notes)"
AXIS_LABELS = {  # axis -> column title
    "student.name": "model",
    "train.alpha": "α",  # noqa: RUF001
    "teacher.image.student.name": "GAF teacher",
    "teacher.signal.student.name": "signal teacher",
}


@dataclass(frozen=True)
class RunRow:
    """One planned run of a grid and, when it is done, its accuracies (in %)."""

    id: str  # "student/dataset-watch_alpha-0.3/seed0"
    stage: str
    group: str  # the id without the seed: what is averaged over seeds
    axes: Mapping[str, AxisValue]  # this run's axis values, seed included
    seed: int
    status: Status  # done: result.json exists; failed: the runner gave up; else missing
    accuracy: float | None  # result["reported_acc"]
    report: str  # which accuracy that is: "final" | "best_val" | "best_test"; "" if not done
    metrics: Mapping[str, float] = field(default_factory=dict)  # every accuracy in result.json
    detail: str = ""  # failed: the error's last line; missing: the runner's state, if any
    settings: Mapping[str, AxisValue] = field(default_factory=dict)  # its config, dotted keys
    run_dir: Path | None = None  # where its files are (its metrics.jsonl: the epoch curves)
    teachers: Mapping[str, str] = field(default_factory=dict)  # role -> the teacher run's group


@dataclass(frozen=True)
class GroupRow:
    """One config (stage + non-seed axis values) with mean ± std of `metric` over its seeds."""

    group: str
    stage: str
    axes: Mapping[str, AxisValue]  # without the seed
    metric: str
    report: str  # the report of its runs; "mixed" when they differ, "" when none is done
    seeds: tuple[int, ...]  # seeds averaged
    values: tuple[float, ...]  # their accuracies, in the same order
    n_expected: int
    not_done: tuple[tuple[int, str], ...]  # (seed, "failed" | "missing" | runner state)
    mean: float | None  # None when no seed is done
    std: float | None  # ddof=0
    settings: Mapping[str, AxisValue] = field(default_factory=dict)  # config of its first run
    teachers: Mapping[str, str] = field(default_factory=dict)  # role -> teacher group, as runs

    @property
    def n_done(self) -> int:
        return len(self.values)

    @property
    def flag(self) -> str:
        """``"3/3 seeds"``, or ``"2/3 seeds (seed2 failed)"`` when some are not averaged."""
        text = f"{self.n_done}/{self.n_expected} seeds"
        if self.not_done:
            text += " (" + ", ".join(f"seed{s} {why}" for s, why in self.not_done) + ")"
        return text


def stage_names(groups: Sequence[GroupRow]) -> list[str]:
    return list(dict.fromkeys(g.stage for g in groups))


def axis_names(groups: Sequence[GroupRow]) -> list[str]:
    return list(dict.fromkeys(name for g in groups for name in g.axes))


def axis_text(value: AxisValue) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)
