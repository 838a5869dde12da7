"""How much memory a run's images may take on the training device, and what fits in it.

A run precomputes its images once only when all of them fit its budget, `train.image_memory`
("auto": half of the memory free on the training device when the run starts). Otherwise they
are made per batch, on the device, from the raw windows. Either way, evaluation and teacher
logits make or gather at most as many images at once as fit beside the precomputed ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gafkd.config import ImagingConfig, memory_limit
from gafkd.imaging import n_image_channels


@dataclass(frozen=True)
class Budget:
    """Bytes the images may take, and how the number came about (for the run log)."""

    bytes: int
    source: str  # e.g. "train.image_memory = 'auto': 50% of 15.2 GiB free on cpu"


@dataclass(frozen=True)
class ImagePlan:
    """Whether a run precomputes its images, and how many it makes or gathers at once."""

    precompute: bool
    chunk: int  # images that fit beside the precomputed ones (at least 1)
    line: str  # the run log's line saying which and why


def budget(value: str | float, device: torch.device) -> Budget:
    """The budget `train.image_memory` gives on `device` (a share of its free memory, or bytes)."""
    kind, amount = memory_limit(value)
    setting = f"train.image_memory = {value!r}"
    if kind == "bytes":
        return Budget(int(amount), setting)
    free = free_bytes(device)
    share = f"{amount:.0%} of {format_bytes(free)} free on {device}"
    return Budget(int(amount * free), f"{setting}: {share}")


def free_bytes(device: torch.device) -> int:
    """Memory free on `device` now: the GPU's free memory, or the host's available memory.

    On a GPU, memory that torch's caching allocator holds but no tensor uses counts as free (a
    teacher trained just before in this process leaves its images' memory there).
    """
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + cached)
    import psutil  # type: ignore[import-untyped, unused-ignore]

    return int(psutil.virtual_memory().available)


def image_bytes(signals: torch.Tensor, config: ImagingConfig) -> int:
    """Bytes of one window's image: (C', S, S) in encode's output dtype (float64 stays)."""
    channels = n_image_channels(int(signals.shape[1]), config.layout)
    itemsize = 8 if signals.dtype == torch.float64 else 4
    return channels * config.image_size**2 * itemsize


def plan_images(
    n_images: int, per_image: int, limit: Budget, precompute: bool, device: torch.device
) -> ImagePlan:
    """Precompute `n_images` images of `per_image` bytes on `device` only if they fit `limit`."""
    needed = n_images * per_image
    fits = precompute and needed <= limit.bytes
    chunk = max(1, (limit.bytes - (needed if fits else 0)) // per_image)
    budget = f"budget of {format_bytes(limit.bytes)} ({limit.source})"
    if fits:
        line = f"images: precomputed on {device}, {format_bytes(needed)} within the {budget}"
    elif not precompute:
        line = f"images: made per batch on {device} (imaging.precompute = false); {budget}"
    else:
        line = (
            f"images: made per batch on {device}: precomputing them needs "
            f"{format_bytes(needed)}, over the {budget}; raise train.image_memory to precompute"
        )
    return ImagePlan(fits, chunk, line)


def format_bytes(n: float) -> str:
    """A size with a binary unit.

    >>> format_bytes(512), format_bytes(884736), format_bytes(3 * 2**30)
    ('512 B', '864.0 KiB', '3.0 GiB')
    """
    if n < 1024:
        return f"{int(n)} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        n /= 1024
        if n < 1024 or unit == "TiB":
            break
    return f"{n:.1f} {unit}"
