"""Models by name: ``build("wrn16_1", dim=1, in_channels=3, n_classes=14)``.

Names are ``wrn<depth>_<width>``; the lab's four sizes are listed in MODELS, and any other valid
depth/width pair (e.g. "wrn40_2") is parsed by :func:`parse_name`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from gafkd.config import MODEL_NAME, ConfigError
from gafkd.models.wideresnet import BasicBlock, Dim, WideResNet, WideResNetConfig, wrn

__all__ = [
    "MODELS",
    "BasicBlock",
    "Dim",
    "WideResNet",
    "WideResNetConfig",
    "build",
    "parse_name",
    "wrn",
]

# Teacher/student sizes of the lab's protocol (reference §4.4); called as (dim, in_channels,
# n_classes, dropout=0.0).
MODELS: dict[str, Callable[..., WideResNet]] = {
    "wrn16_1": partial(wrn, 16, 1),
    "wrn16_3": partial(wrn, 16, 3),
    "wrn28_1": partial(wrn, 28, 1),
    "wrn28_3": partial(wrn, 28, 3),
}


def parse_name(name: str) -> tuple[int, int]:
    """(depth, width) of a model name ``wrn<depth>_<width>``.

    Only the spelling is checked here; depth/width values are checked by WideResNetConfig.

    Examples
    --------
    >>> parse_name("wrn28_3")
    (28, 3)
    """
    match = MODEL_NAME.fullmatch(name)
    if match is None:
        raise ConfigError(
            f"model name must look like 'wrn<depth>_<width>'; got {name!r}. "
            f"Use one of {', '.join(MODELS)} or another WRN such as 'wrn40_2'."
        )
    return int(match.group(1)), int(match.group(2))


def build(
    name: str, dim: Dim, in_channels: int, n_classes: int, dropout: float = 0.0
) -> WideResNet:
    """Model ``name`` for ``dim``-dimensional input (1: signals (N, C, L), 2: images (N, C, H, W)).

    Examples
    --------
    >>> build("wrn16_1", dim=2, in_channels=3, n_classes=14).config.depth
    16
    """
    if name in MODELS:
        return MODELS[name](dim, in_channels, n_classes, dropout)
    depth, width = parse_name(name)
    return wrn(depth, width, dim, in_channels, n_classes, dropout)
