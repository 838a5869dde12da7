"""Samples per second of one KD training step: gafkd's `fit` step against the lab's way.

The step: a 1-D WRN16-1 student on raw (3, 500) windows, distilled from a 2-D WRN16-1 GAF teacher
(3x64x64 per-axis GASF) and a 1-D WRN16-1 signal teacher, 14 classes, batch 64, the lab's
two-teacher loss.

Baseline, "the lab's way": GASF images precomputed with pyts into numpy, a torch DataLoader over
(signal, image, label) samples, both teachers run on every batch, fp32.

gafkd: data as tensors on the device, batches by index, teacher logits computed once per dataset
(their one-time cost is printed too, and amortised over the run's epochs in the last column),
AMP and channels_last on CUDA.

    python benchmarks/bench_train.py [--n 2048] [--steps 20] [--device cpu|cuda] [--epochs 200]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from gafkd import imaging
from gafkd.distill import distillation_loss
from gafkd.models import build


class LabDataset(Dataset[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]):
    def __init__(self, signals: np.ndarray, images: np.ndarray, labels: np.ndarray) -> None:
        self.signals, self.images, self.labels = signals, images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return (
            torch.from_numpy(self.signals[i]),
            torch.from_numpy(self.images[i]),
            torch.tensor(self.labels[i]),
        )


def models(device: torch.device) -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    student = build("wrn16_1", dim=1, in_channels=3, n_classes=14).to(device)
    image_teacher = build("wrn16_1", dim=2, in_channels=3, n_classes=14).to(device).eval()
    signal_teacher = build("wrn16_1", dim=1, in_channels=3, n_classes=14).to(device).eval()
    return student, image_teacher, signal_teacher


def lab_way(signals: np.ndarray, labels: np.ndarray, device: torch.device, steps: int) -> float:
    from pyts.image import GramianAngularField

    n, channels, length = signals.shape
    images = GramianAngularField(image_size=64).fit_transform(signals.reshape(-1, length))
    images = images.reshape(n, channels, 64, 64).astype(np.float32)
    loader = DataLoader(LabDataset(signals, images, labels), batch_size=64, shuffle=True)
    student, image_teacher, signal_teacher = models(device)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    batches = iter(loader)

    def step() -> None:
        nonlocal batches
        try:
            signal, image, label = next(batches)
        except StopIteration:
            batches = iter(loader)
            signal, image, label = next(batches)
        signal, image, label = signal.to(device), image.to(device), label.to(device)
        with torch.no_grad():
            targets = {"image": image_teacher(image), "signal": signal_teacher(signal)}
        loss = distillation_loss(student(signal), label, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return timed(step, steps, device)


def gafkd_way(
    signals: np.ndarray, labels: np.ndarray, device: torch.device, steps: int
) -> tuple[float, float]:
    x = torch.from_numpy(signals).to(device)
    y = torch.from_numpy(labels).to(device)
    student, image_teacher, signal_teacher = models(device)
    use_amp = device.type == "cuda"
    started = time.perf_counter()
    with torch.no_grad():  # once per dataset: images, then both teachers' logits
        images = torch.cat([imaging.encode(c, image_size=64) for c in x.split(4096)])
        if use_amp:
            image_teacher.to(memory_format=torch.channels_last)
            images = images.contiguous(memory_format=torch.channels_last)
        cached = {
            "image": torch.cat([image_teacher(b) for b in images.split(512)]),
            "signal": torch.cat([signal_teacher(b) for b in x.split(512)]),
        }
    sync(device)
    cache_seconds = time.perf_counter() - started
    optimizer = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    generator = torch.Generator(device=device).manual_seed(0)
    order = torch.randperm(len(y), generator=generator, device=device)
    position = 0

    def step() -> None:
        nonlocal position, order
        if position + 64 > len(order):
            order, position = torch.randperm(len(y), generator=generator, device=device), 0
        index = order[position : position + 64]
        position += 64
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            logits = student(x[index])
        targets = {role: logits_[index] for role, logits_ in cached.items()}
        loss = distillation_loss(logits.float(), y[index], targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return timed(step, steps, device), cache_seconds


def timed(step: object, steps: int, device: torch.device) -> float:
    """Samples per second over `steps` steps of 64, after 3 warm-up steps."""
    assert callable(step)
    for _ in range(3):
        step()
    sync(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps * 64 / (time.perf_counter() - started)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2048, help="windows in the dataset")
    parser.add_argument("--steps", type=int, default=20, help="timed steps of batch 64")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--epochs", type=int, default=200, help="to amortise the logit cache")
    args = parser.parse_args()
    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    signals = rng.standard_normal((args.n, 3, 500)).astype(np.float32)
    labels = rng.integers(0, 14, args.n).astype(np.int64)

    lab = lab_way(signals, labels, device, args.steps)
    ours, cache_seconds = gafkd_way(signals, labels, device, args.steps)
    epoch_seconds = args.n / ours
    amortised = args.n / (epoch_seconds + cache_seconds / args.epochs)
    print(f"device {device} ({torch.get_num_threads()} threads), n={args.n}, batch 64")
    print(f"{'way':<34}{'samples/s':>12}{'ratio':>8}")
    print(f"{'lab (pyts numpy + DataLoader)':<34}{lab:>12.1f}{1.0:>8.2f}")
    print(f"{'gafkd step (cached teachers)':<34}{ours:>12.1f}{ours / lab:>8.2f}")
    print(
        f"{'gafkd incl. cache / ' + str(args.epochs) + ' epochs':<34}{amortised:>12.1f}"
        f"{amortised / lab:>8.2f}"
    )
    print(f"one-time images + teacher logits: {cache_seconds:.2f} s for {args.n} windows")


if __name__ == "__main__":
    main()
