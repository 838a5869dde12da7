"""A tiny learnable dataset in the plain .npz format, and run configs that train on it fast."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def tiny_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 subjects x 12 windows, 3 channels, length 32, 3 classes told apart by frequency."""
    rng = np.random.default_rng(0)
    t = np.arange(32) / 32
    signals, labels, subjects = [], [], []
    for subject in range(6):
        for window in range(12):
            label = window % 3
            phase = rng.uniform(0, 2 * np.pi, size=(3, 1))
            wave = np.sin(2 * np.pi * (label + 1) * t + phase)
            signals.append(wave + 0.3 * rng.standard_normal((3, 32)))
            labels.append(label)
            subjects.append(subject)
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, X=np.array(signals), y=np.array(labels), subject=np.array(subjects))
    return path


def write_config(
    path: Path,
    data: Path,
    *,
    name: str,
    model: str = "wrn10_1",
    input: str = "signal",
    epochs: int = 2,
    extra: str = "",
) -> Path:
    """A run config on the tiny dataset, with its run directory next to the config file."""
    path.write_text(
        f"""name = "{name}"
out_dir = "{(path.parent / "runs" / name).as_posix()}"

[data]
source = "npz"
path = "{data.as_posix()}"
test_subjects = [0]
val_subjects = [1]

[imaging]
image_size = 8

[student]
name = "{model}"
input = "{input}"

[train]
epochs = {epochs}
batch_size = 16
{extra}
"""
    )
    return path


@pytest.fixture
def make_config(tmp_path: Path, tiny_npz: Path):  # type: ignore[no-untyped-def]
    """make_config(name, **options) -> path of a config file in tmp_path."""

    def make(name: str, **options: object) -> Path:
        return write_config(tmp_path / f"{name}.toml", tiny_npz, name=name, **options)  # type: ignore[arg-type]

    return make
