"""Time series to images, as batched torch functions equal to pyts 0.14.1.

``gasf``, ``gadf`` and ``qgaf`` (Gramian angular fields, `gaf`), ``mtf`` (Markov transition
field, `markov`), ``paa`` and the input checks (`series`), and ``encode``, which turns (N, C, L)
windows into the images a model sees (``n_image_channels`` of them per sample).
"""

from __future__ import annotations

from gafkd.imaging.gaf import (
    Layout,
    Method,
    SampleRange,
    encode,
    gadf,
    gasf,
    n_image_channels,
    qgaf,
)
from gafkd.imaging.markov import Strategy, mtf
from gafkd.imaging.series import Series, Size, paa

__all__ = [
    "Layout",
    "Method",
    "SampleRange",
    "Series",
    "Size",
    "Strategy",
    "encode",
    "gadf",
    "gasf",
    "mtf",
    "n_image_channels",
    "paa",
    "qgaf",
]
