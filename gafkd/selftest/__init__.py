"""``gafkd selftest``: prove the stack on this machine's GPUs (or its CPU), check by check.

`checks` runs them with torch (``run_selftest``, one report per machine: per device the device
and its kernels, imaging parity, a KD fit in fp32 and with AMP, a health sample, the runner's
packing); `report` holds what needs no torch: the `Check` record, the device judgement
(``kernels_for``, ``cuda_mode``, ``judge_device``), the ``verdict``, the text (``render``) and
the screen of several hosts (``screen``). Importing this package does not import torch.
"""

from __future__ import annotations

from gafkd.selftest.report import (
    Check,
    Kernels,
    cuda_mode,
    judge_device,
    kernels_for,
    render,
    screen,
    verdict,
)

__all__ = [
    "Check",
    "Kernels",
    "cuda_mode",
    "judge_device",
    "kernels_for",
    "render",
    "screen",
    "verdict",
]
