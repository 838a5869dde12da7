"""Reference numbers: earlier accuracies (the lab's notes, a paper's table) beside ours.

A reference file (TOML, see `load_reference` and docs/results.md) lists rows, each matched to
one config of a grid by its group id or by stage + axis values (`match_reference`). The lab's
own notes ship as `LAB_REFERENCE`, and what we have of Wang & Oates' table as
`WANG_OATES_REFERENCE`; `load_reference` takes either by name (`SHIPPED_REFERENCES`). Reading
the file is the only effect; matching is pure. `header` says what the numbers are: which
accuracy, the std convention, and the reference's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gafkd.config import ConfigError, read_toml
from gafkd.results.rows import DESCRIPTIONS, REPORTS, STD_NOTE, AxisValue, GroupRow, axis_text

LAB_REFERENCE = Path(__file__).parent / "reference_lab.toml"
WANG_OATES_REFERENCE = Path(__file__).parent / "reference_wang_oates.toml"
SHIPPED_REFERENCES = {"lab": LAB_REFERENCE, "wang_oates": WANG_OATES_REFERENCE}  # by name


@dataclass(frozen=True)
class ReferenceRow:
    """Earlier numbers for one config, matched by group id or by stage + axis values."""

    mean: float
    std: float | None = None
    n: int | None = None
    group: str = ""  # an exact group id, or
    match: Mapping[str, AxisValue] = field(default_factory=dict)  # stage + axis values
    label: str = ""

    def describe(self) -> str:
        if self.label:
            return self.label
        return self.group or ", ".join(f"{k}={axis_text(v)}" for k, v in self.match.items())

    def matches(self, group: GroupRow) -> bool:
        if self.group:
            return self.group == group.group
        wanted = dict(self.match)
        if wanted.pop("stage") != group.stage:
            return False
        known = {**group.settings, **group.axes}  # an axis, else a config key: student.name
        return all(k in known and _same(known[k], v) for k, v in wanted.items())


@dataclass(frozen=True)
class Reference:
    title: str
    rows: tuple[ReferenceRow, ...]
    source: str = ""
    report: str = ""  # which accuracy the numbers are, when known ("best_test" for the lab's)


_Fail = Callable[[str, str], ConfigError]
_TOP_KEYS = {"title", "source", "report", "row"}
_ROW_KEYS = {"label", "group", "match", "mean", "std", "n"}


def load_reference(path: Path | str) -> Reference:
    """Read a reference file (TOML): ``title``, ``source``, ``report`` and ``[[row]]`` tables.

    Each row has ``mean`` (%), optional ``std`` and ``n``, an optional ``label``, and either
    ``group`` (an exact group id) or ``match`` (``stage`` plus axis values). Any mistake raises
    ConfigError naming the file and the row. A shipped reference can be named instead of a path
    (`SHIPPED_REFERENCES`: ``lab``, ``wang_oates``).
    """
    path = SHIPPED_REFERENCES.get(str(path), Path(path))
    table = read_toml(path, "reference file")

    def fail(where: str, problem: str) -> ConfigError:
        return ConfigError(f"reference file {path}: {where}{problem}; see docs/results.md")

    _check_keys(table, _TOP_KEYS, "", fail)
    if not isinstance(table.get("title"), str):
        raise fail("", f"title is {table.get('title')!r}; expected a string such as 'Lab notes'")
    report = table.get("report", "")
    if report not in ("", *REPORTS):
        raise fail("", f"report is {report!r}; expected one of {', '.join(REPORTS)}")
    rows = table.get("row", [])
    if not isinstance(rows, list) or not rows:
        raise fail("", "no [[row]] tables; add one per config to compare")
    return Reference(
        title=table["title"],
        source=str(table.get("source", "")),
        report=report,
        rows=tuple(_reference_row(row, f"row {i + 1}: ", fail) for i, row in enumerate(rows)),
    )


def _reference_row(row: object, where: str, fail: _Fail) -> ReferenceRow:
    if not isinstance(row, dict):
        raise fail(where, f"expected a table, got {row!r}")
    _check_keys(row, _ROW_KEYS, where, fail)
    if ("group" in row) == ("match" in row):
        raise fail(where, "give exactly one of group = '<group id>' or match = { stage = ... }")
    match = row.get("match", {"stage": ""})
    if (
        not isinstance(match, dict)
        or not isinstance(match.get("stage"), str)
        or any(isinstance(v, dict | list) for v in match.values())
    ):
        raise fail(where, f"match is {match!r}; expected stage = '<stage>' and axis values")
    if "mean" not in row:
        raise fail(where, "mean is missing; give mean = <accuracy in %>")
    for key, low, expected in (
        ("mean", 0, "a number (%)"),
        ("std", 0, "a number >= 0"),
        ("n", 1, "a count >= 1"),
    ):
        value = row.get(key, low)
        number = not isinstance(value, bool) and isinstance(value, int | float)
        if not number or value < low or (key == "n" and not isinstance(value, int)):
            raise fail(where, f"{key} is {value!r}; expected {expected}")
    return ReferenceRow(
        mean=float(row["mean"]),
        std=float(row["std"]) if "std" in row else None,
        n=row.get("n"),
        group=str(row.get("group", "")),
        match=match if "match" in row else {},
        label=str(row.get("label", "")),
    )


def _check_keys(table: Mapping[str, Any], valid: set[str], where: str, fail: _Fail) -> None:
    unknown = sorted(set(table) - valid)
    if unknown:
        raise fail(where, f"unknown key {unknown[0]!r}; valid keys: {', '.join(sorted(valid))}")


def header(groups: Sequence[GroupRow], reference: Reference | None = None) -> str:
    """What the numbers are: which accuracy, the std convention and the reference's source."""
    metric = groups[0].metric if groups else "reported_acc"
    if metric == "reported_acc":
        reports = sorted({g.report for g in groups} - {""})
        what = (
            "; ".join(f"{REPORTS.get(r, r)} (report = {r})" for r in reports)
            or "reported accuracy (no run done yet)"
        )
        if "mixed" in reports or len(reports) > 1:
            what = "MIXED reports across runs: " + what
    else:
        what = f"{DESCRIPTIONS[metric]} ({metric})"
    text = f"Accuracy (%): {what}. Mean ± {STD_NOTE}."
    if reference is not None:
        source = f"; source: {reference.source}" if reference.source else ""
        report = f"; reports {REPORTS[reference.report]}" if reference.report else ""
        text += f"\nReference: {reference.title}{source}{report}."
    return text


def match_reference(
    groups: Sequence[GroupRow], reference: Reference
) -> tuple[dict[str, ReferenceRow], tuple[ReferenceRow, ...]]:
    """The reference row beside each group, and the rows beside none.

    A row given by ``group`` wins; otherwise the matching row with the most ``match`` keys, the
    first in the file on a tie. A row can sit beside several groups.
    """
    chosen: dict[str, ReferenceRow] = {}
    for group in groups:
        candidates = [r for r in reference.rows if r.matches(group)]
        if candidates:
            chosen[group.group] = max(candidates, key=_specificity)
    used = {id(r) for r in chosen.values()}
    return chosen, tuple(r for r in reference.rows if id(r) not in used)


def _specificity(row: ReferenceRow) -> float:
    return math.inf if row.group else len(row.match)


def _same(a: AxisValue, b: AxisValue) -> bool:
    if isinstance(a, bool) or isinstance(b, bool) or isinstance(a, str) or isinstance(b, str):
        return a == b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
