"""Results of a grid: rows, reference numbers, tables and the figure, without torch.

`rows` holds the vocabulary (``RunRow`` per run, ``GroupRow`` per config, the ``METRICS`` and
what they mean); `reference` reads earlier numbers (``load_reference``, the lab's own
``LAB_REFERENCE``, shipped beside it as ``reference_lab.toml``, and ``WANG_OATES_REFERENCE``,
both named in ``SHIPPED_REFERENCES``) and matches them to configs
(``match_reference``, ``header``); `tables` collects a grid's runs (``collect``), aggregates them
over seeds (``aggregate``) and writes results.md, results.csv and results.png (``markdown``,
``to_csv``, ``write_all``); `figure` draws the PNG (``plot``), importing matplotlib only then.
"""

from __future__ import annotations

from gafkd.results.figure import plot
from gafkd.results.reference import (
    LAB_REFERENCE,
    SHIPPED_REFERENCES,
    WANG_OATES_REFERENCE,
    Reference,
    ReferenceRow,
    header,
    load_reference,
    match_reference,
)
from gafkd.results.rows import (
    DESCRIPTIONS,
    METRICS,
    REPORTS,
    STD_NOTE,
    AxisValue,
    GroupRow,
    Metric,
    RunRow,
    Status,
)
from gafkd.results.tables import aggregate, collect, markdown, to_csv, write_all

__all__ = [
    "DESCRIPTIONS",
    "LAB_REFERENCE",
    "METRICS",
    "REPORTS",
    "SHIPPED_REFERENCES",
    "STD_NOTE",
    "WANG_OATES_REFERENCE",
    "AxisValue",
    "GroupRow",
    "Metric",
    "Reference",
    "ReferenceRow",
    "RunRow",
    "Status",
    "aggregate",
    "collect",
    "header",
    "load_reference",
    "markdown",
    "match_reference",
    "plot",
    "to_csv",
    "write_all",
]
