"""Results of a grid: rows, reference numbers, tables and figures, without torch.

`rows` holds the vocabulary (``RunRow`` per run, ``GroupRow`` per config, the ``METRICS`` and
what they mean); `reference` reads earlier numbers (``load_reference``, the lab's own
``LAB_REFERENCE``, shipped beside it as ``reference_lab.toml``, and ``WANG_OATES_REFERENCE``,
both named in ``SHIPPED_REFERENCES``) and matches them to configs
(``match_reference``, ``header``); `tables` collects a grid's runs (``collect``), aggregates them
over seeds (``aggregate``) and writes results.md, results.csv and the figures (``markdown``,
``to_csv``, ``write_all``, ``FIGURES``); `curves` computes the data behind each figure
(``point_panels``, ``alpha_panels``, ``epoch_panels`` from ``read_histories``, ``axis_range``),
purely; `figure` draws them (``plot``, ``draw_points``, ``draw_alpha``, ``draw_epochs``),
importing matplotlib only then.
"""

from __future__ import annotations

from gafkd.results.curves import (
    AlphaLine,
    AlphaPanel,
    AxisRange,
    EpochCurve,
    EpochPanel,
    Point,
    PointPanel,
    TeacherLevel,
    alpha_panels,
    axis_range,
    epoch_panels,
    point_panels,
    read_histories,
)
from gafkd.results.figure import draw_alpha, draw_epochs, draw_points, plot
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
from gafkd.results.tables import FIGURES, aggregate, collect, markdown, to_csv, write_all

__all__ = [
    "DESCRIPTIONS",
    "FIGURES",
    "LAB_REFERENCE",
    "METRICS",
    "REPORTS",
    "SHIPPED_REFERENCES",
    "STD_NOTE",
    "WANG_OATES_REFERENCE",
    "AlphaLine",
    "AlphaPanel",
    "AxisRange",
    "AxisValue",
    "EpochCurve",
    "EpochPanel",
    "GroupRow",
    "Metric",
    "Point",
    "PointPanel",
    "Reference",
    "ReferenceRow",
    "RunRow",
    "Status",
    "TeacherLevel",
    "aggregate",
    "alpha_panels",
    "axis_range",
    "collect",
    "draw_alpha",
    "draw_epochs",
    "draw_points",
    "epoch_panels",
    "header",
    "load_reference",
    "markdown",
    "match_reference",
    "plot",
    "point_panels",
    "read_histories",
    "to_csv",
    "write_all",
]
