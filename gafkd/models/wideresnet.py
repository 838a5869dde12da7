"""Wide ResNet WRN-depth-width, pre-activation, for 1-D signals and 2-D images.

One network for both dimensionalities: ``dim=1`` builds Conv1d/BatchNorm1d layers for raw
accelerometer windows (N, C, L); ``dim=2`` builds Conv2d/BatchNorm2d layers for GAF images
(N, C, H, W). The layout is the one of Zagoruyko & Komodakis (2016) as written in RepDistiller's
``models/wrn.py`` and Jeon's ``WideResNet.py`` (protocol reference §4.2), with adaptive pooling so
any input length or image size works.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gafkd.config import ConfigError

Dim = Literal[1, 2]

_CONV: dict[int, type[nn.Conv1d] | type[nn.Conv2d]] = {1: nn.Conv1d, 2: nn.Conv2d}
_NORM: dict[int, type[nn.BatchNorm1d] | type[nn.BatchNorm2d]] = {
    1: nn.BatchNorm1d,
    2: nn.BatchNorm2d,
}
_POOL: dict[int, type[nn.AdaptiveAvgPool1d] | type[nn.AdaptiveAvgPool2d]] = {
    1: nn.AdaptiveAvgPool1d,
    2: nn.AdaptiveAvgPool2d,
}

STEM_CHANNELS = 16  # conv1 output channels, fixed in every WRN
STAGE_WIDTHS = (16, 32, 64)  # stage widths before multiplying by `width`
STAGE_STRIDES = (1, 2, 2)


@dataclass(frozen=True)
class WideResNetConfig:
    """Shape of a WRN-depth-width; validated on construction (raises ConfigError)."""

    depth: int  # total conv/linear layers: depth = 6n + 4, n blocks per stage (16, 22, 28, 40...)
    width: int  # widening factor k: stage widths are 16k, 32k, 64k
    dim: Dim  # 1 for signals (N, C, L), 2 for images (N, C, H, W)
    in_channels: int  # input channels (3 accelerometer axes, or 3 GASF images)
    n_classes: int  # logits per sample
    dropout: float = 0.0  # dropout between the two convs of a block (WRN paper: 0.3); 0 = off

    def __post_init__(self) -> None:
        if self.depth < 10 or (self.depth - 4) % 6 != 0:
            raise ConfigError(
                f"WRN depth must be 6n + 4 with n >= 1 blocks per stage; got depth={self.depth}. "
                "Use 10, 16, 22, 28 or 40."
            )
        checks = (
            ("width", self.width, self.width >= 1, "an integer >= 1 (1, 2, 3...)"),
            ("dim", self.dim, self.dim in (1, 2), "1 (signals) or 2 (images)"),
            ("in_channels", self.in_channels, self.in_channels >= 1, "an integer >= 1"),
            ("n_classes", self.n_classes, self.n_classes >= 2, "an integer >= 2"),
            ("dropout", self.dropout, 0.0 <= self.dropout < 1.0, "a probability in [0, 1)"),
        )
        for name, value, ok, expected in checks:
            if not ok:
                raise ConfigError(f"WRN {name} must be {expected}; got {name}={value!r}.")

    @property
    def blocks_per_stage(self) -> int:
        """n in depth = 6n + 4 (3 stages x n blocks x 2 convs, + stem conv, 2 shortcuts, fc)."""
        return (self.depth - 4) // 6


class BasicBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv3-BN-ReLU-dropout-conv3, plus a shortcut.

    When the channel count changes, the shortcut is a 1x1 conv on the *activated* input, as in
    RepDistiller's and Jeon's WRN code; otherwise it is the raw input.
    """

    def __init__(
        self, dim: Dim, in_channels: int, out_channels: int, stride: int, dropout: float
    ) -> None:
        super().__init__()
        conv, norm = _CONV[dim], _NORM[dim]
        self.bn1 = norm(in_channels)
        self.conv1 = conv(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = conv(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if in_channels != out_channels:
            self.shortcut = conv(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        a = F.relu(self.bn1(x))  # (N, C_in, *S)
        y: Tensor = self.conv1(a)  # (N, C_out, *S / stride)
        y = self.conv2(self.dropout(F.relu(self.bn2(y))))
        identity: Tensor = x if self.shortcut is None else self.shortcut(a)
        return identity + y


class WideResNet(nn.Module):
    """WRN-depth-width: stem conv, 3 stages of n blocks, BN-ReLU-global-average-pool-linear."""

    def __init__(self, config: WideResNetConfig) -> None:
        super().__init__()
        self.config = config
        self.dim: Dim = config.dim
        conv = _CONV[config.dim]
        self.stem = conv(config.in_channels, STEM_CHANNELS, 3, stride=1, padding=1, bias=False)
        stages: list[nn.Module] = []
        in_channels = STEM_CHANNELS
        for base, stride in zip(STAGE_WIDTHS, STAGE_STRIDES, strict=True):
            out_channels = base * config.width
            blocks = [
                BasicBlock(
                    config.dim,
                    in_channels if i == 0 else out_channels,
                    out_channels,
                    stride if i == 0 else 1,
                    config.dropout,
                )
                for i in range(config.blocks_per_stage)
            ]
            stages.append(nn.Sequential(*blocks))
            in_channels = out_channels
        self.stages = nn.Sequential(*stages)
        self.norm = _NORM[config.dim](in_channels)
        self.pool = _POOL[config.dim](1)
        self.head = nn.Linear(in_channels, config.n_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """RepDistiller/WRN init: He-normal (fan_out) convs, BN 1/0, linear bias 0."""
        for module in self.modules():
            if isinstance(module, (nn.Conv1d, nn.Conv2d)):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def _pooled(self, h: Tensor) -> Tensor:
        return torch.flatten(self.pool(F.relu(self.norm(h))), 1)  # (N, 64k)

    def forward(self, x: Tensor) -> Tensor:
        """Logits (N, n_classes) from x of shape (N, C, L) or (N, C, H, W)."""
        h = self.stages(self.stem(x))  # (N, 64k, L/4) or (N, 64k, H/4, W/4)
        logits: Tensor = self.head(self._pooled(h))  # (N, n_classes)
        return logits

    def features(self, x: Tensor) -> list[Tensor]:
        """Output of each of the 3 stages, then the pooled vector (N, 64k) fed to the head.

        Stage outputs are pre-activation sums (before the next block's BN-ReLU), as in
        RepDistiller's ``is_feat=True`` features f1-f3 and f4.
        """
        h = self.stem(x)
        feats: list[Tensor] = []
        for stage in self.stages:
            h = stage(h)
            feats.append(h)
        feats.append(self._pooled(h))
        return feats


def wrn(
    depth: int, width: int, dim: Dim, in_channels: int, n_classes: int, dropout: float = 0.0
) -> WideResNet:
    """Build a WRN-depth-width for ``dim``-dimensional inputs.

    Parameters
    ----------
    depth : int
        6n + 4, n the number of blocks per stage (16 and 28 in the lab's protocol).
    width : int
        Widening factor k; stage widths 16k, 32k, 64k.
    dim : {1, 2}
        1 for signals (N, C, L), 2 for images (N, C, H, W).
    in_channels, n_classes : int
        Input channels and number of logits.
    dropout : float, default 0.0
        Dropout probability inside each block.

    Returns
    -------
    WideResNet
        ``forward(x)`` gives logits (N, n_classes); ``features(x)`` the stage outputs.

    Examples
    --------
    >>> model = wrn(16, 1, dim=1, in_channels=3, n_classes=14)
    >>> sum(p.numel() for p in model.parameters())
    61374
    >>> model(torch.zeros(2, 3, 500)).shape
    torch.Size([2, 14])
    """
    config = WideResNetConfig(depth, width, dim, in_channels, n_classes, dropout)
    return WideResNet(config)
