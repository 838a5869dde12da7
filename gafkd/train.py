"""One training loop for plain training and distillation from one or two frozen teachers.

`fit` trains a student on the signals (1-D model) or on their images (2-D model). Teachers are
named by role: the ``"signal"`` teacher sees signals, the ``"image"`` teacher sees images. Frozen
teachers in eval mode see the same inputs every epoch when augmentation is off, so their logits
are computed once per dataset, cached in the teacher's run directory and reused by every student
that shares them.
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gafkd import imaging, rundir
from gafkd.config import ConfigError, ImagingConfig, RunConfig, TrainConfig, TrainingError
from gafkd.distill import distillation_loss


@dataclass(frozen=True)
class SplitTensors:
    """One split on the training device."""

    signals: Tensor  # (N, C, L) float32
    labels: Tensor  # (N,) int64
    images: Tensor | None = None  # (N, C', S, S) when precomputed

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class TrainingData:
    """Train, validation and test splits on one device, plus how images are made from signals."""

    train: SplitTensors
    test: SplitTensors
    val: SplitTensors | None
    imaging: ImagingConfig
    key: str  # identifies the training inputs: teacher-logit caches are keyed by it
    image_chunk: int | None = None  # images made or gathered at once to predict (memory budget)

    @property
    def device(self) -> torch.device:
        return self.train.signals.device


def input_kind(model: nn.Module) -> str:
    """ "signal" for a 1-D model, "image" for a 2-D model."""
    return "signal" if getattr(model, "dim", 1) == 1 else "image"


def images_of(signals: Tensor, config: ImagingConfig) -> Tensor:
    """(N, C, L) signals -> (N, C', S, S) images with the run's imaging settings."""
    return imaging.encode(
        signals,
        layout=config.layout,
        image_size=config.image_size,
        sample_range=config.sample_range,
        n_bins=config.n_bins,
        strategy=config.strategy,
        overlapping=config.overlapping,
    )


def batch_inputs(split: SplitTensors, kind: str, index: Tensor, config: ImagingConfig) -> Tensor:
    """Model inputs of one batch: signals, or images (precomputed or made now)."""
    signals = split.signals[index]
    if kind == "signal":
        return signals
    if split.images is not None:
        return split.images[index]
    return images_of(signals, config)


def lr_at(epoch: int, config: TrainConfig) -> float:
    """The step schedule: values[i] from epoch int(E * steps[i-1]) on (E/18, E/3, 2E/3)."""
    boundaries = [int(config.epochs * step + 1e-9) for step in config.lr_steps]
    return config.lr_values[sum(epoch >= b for b in boundaries)]


@torch.no_grad()
def predict(model: nn.Module, split: SplitTensors, data: TrainingData, batch_size: int) -> Tensor:
    """Logits (N, K) of `model` in eval mode over a whole split, in float32."""
    model.eval()
    kind = input_kind(model)
    if kind == "image" and data.image_chunk is not None:  # the images must fit the budget
        batch_size = min(batch_size, data.image_chunk)
    out = []
    for start in range(0, len(split), batch_size):
        index = torch.arange(start, min(start + batch_size, len(split)), device=data.device)
        with _autocast(data.device, enabled=False):
            out.append(model(batch_inputs(split, kind, index, data.imaging)).float())
    return torch.cat(out)


def evaluate(model: nn.Module, split: SplitTensors, data: TrainingData, batch_size: int) -> float:
    """Accuracy in percent of `model` on a split."""
    logits = predict(model, split, data, batch_size)
    correct = int((logits.argmax(1) == split.labels).sum())
    return 100.0 * correct / max(len(split), 1)


def teacher_logits(
    teacher: nn.Module, data: TrainingData, batch_size: int, cache_dir: Path | None
) -> Tensor:
    """Train-split logits of a frozen teacher, read from or written to `cache_dir` when given."""
    key = f"{data.key}-{input_kind(teacher)}-{_weights_digest(teacher)}"
    path = cache_dir / f"{key}.pt" if cache_dir is not None else None
    if path is not None and path.exists():
        try:
            cached = rundir.load_torch(path, "computing the teacher's logits again")
        except ConfigError as error:  # a cache: a damaged one is made again
            cached = None
            print(f"note: {error}", file=sys.stderr, flush=True)
        if isinstance(cached, Tensor) and cached.shape[0] == len(data.train):
            return cached.to(data.device)
    logits = predict(teacher, data.train, data, batch_size)
    if path is not None:
        rundir.save_torch(logits.cpu(), path)
    return logits


def fit(
    model: nn.Module,
    data: TrainingData,
    config: RunConfig,
    teachers: Mapping[str, nn.Module] | None = None,
    run_dir: Path | None = None,
    teacher_cache: Mapping[str, Path] | None = None,
    resume: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train `model` on `data`, distilling from `teachers` by role; continue from `resume`.

    Returns the result record (also written to ``run_dir/result.json``). Each epoch is
    checkpointed atomically into `run_dir`, so a killed run started again with its checkpoint
    (`rundir.load_checkpoint`) as `resume` continues from its last epoch and ends with the same
    metrics as an uninterrupted one.
    """
    teachers = dict(teachers or {})
    train_cfg, device = config.train, data.device
    model.to(device)
    for teacher in teachers.values():  # frozen, eval mode, by role
        teacher.to(device).eval().requires_grad_(False)
    use_amp, amp_dtype = amp_mode(device, train_cfg.amp)
    channels_last = device.type == "cuda" and train_cfg.channels_last
    if channels_last and input_kind(model) == "image":
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=train_cfg.lr_values[0],
        momentum=train_cfg.momentum,
        weight_decay=train_cfg.weight_decay,
    )
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    # Frozen teachers see the same inputs every epoch unless augmentation is on: run them once.
    cached: dict[str, Tensor] = {}
    if train_cfg.cache_teacher_logits and not train_cfg.augment:
        for role, teacher in teachers.items():
            cache_dir = (teacher_cache or {}).get(role)
            cached[role] = teacher_logits(teacher, data, train_cfg.eval_batch_size, cache_dir)

    start_epoch, history = 0, []
    state = resume
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"])
        start_epoch, history = state["epoch"] + 1, list(state["history"])
        print(f"{config.name}: resuming after epoch {start_epoch} from {run_dir}", flush=True)
        if run_dir is not None:
            rundir.repair_metrics(history, run_dir)

    kind, n = input_kind(model), len(data.train)
    steps = len(range(0, n, train_cfg.batch_size))
    progress = _Progress(config.name, steps * (train_cfg.epochs - start_epoch))
    for epoch in range(start_epoch, train_cfg.epochs):
        # set the learning rate for this epoch
        lr = lr_at(epoch, train_cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        epoch_started = time.perf_counter()
        model.train()
        generator = torch.Generator(device=device).manual_seed(config.seed * 100_003 + epoch)
        order = torch.randperm(n, generator=generator, device=device)
        total_loss, seen = 0.0, 0
        for step, index in enumerate(_batches(order, train_cfg.batch_size)):
            # inputs: augmented signals make their images afresh; teachers run only when uncached
            if train_cfg.augment:
                signals = _augment(data.train.signals[index], generator)
                split = SplitTensors(signals, data.train.labels[index])
                index = torch.arange(len(index), device=device)
            else:
                split = data.train
            labels = split.labels[index]
            targets = {
                role: cached[role][index]
                if role in cached
                else _run_teacher(teacher, split, index, data.imaging)
                for role, teacher in teachers.items()
            }
            inputs = batch_inputs(split, kind, index, data.imaging)
            if channels_last and inputs.dim() == 4:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            # forward, loss
            with _autocast(device, use_amp, amp_dtype):
                logits = model(inputs)
            loss = distillation_loss(
                logits.float(),
                labels,
                targets,
                temperature=train_cfg.temperature,
                kd_weight=train_cfg.kd_weight,
                alpha=train_cfg.alpha,
                standardize=train_cfg.standardize_logits,
            )
            if not torch.isfinite(loss):
                message = (
                    f"run {config.name!r} (seed {config.seed}): loss is {loss.item()} at epoch "
                    f"{epoch + 1}, step {step + 1}; lower the learning rate or check the inputs"
                )
                if run_dir is not None:
                    rundir.write_error(run_dir, message)
                progress.close()
                raise TrainingError(message)
            # backward, clip, step
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
            if train_cfg.grad_clip > 0:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            total_loss += loss.item() * len(index)
            seen += len(index)
            progress.advance()

        # evaluate, log, checkpoint
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": total_loss / max(seen, 1),
            "test_acc": evaluate(model, data.test, data, train_cfg.eval_batch_size),
        }
        if data.val is not None:
            row["val_acc"] = evaluate(model, data.val, data, train_cfg.eval_batch_size)
        row["seconds"] = round(time.perf_counter() - epoch_started, 3)
        history.append(row)
        progress.log(_format(config, row, train_cfg.epochs))
        if run_dir is not None:
            rundir.save_checkpoint(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict(),
                    "rng": torch.get_rng_state(),
                    "epoch": epoch,
                    "history": history,
                },
                run_dir,
            )
            rundir.write_metrics(history, run_dir)

    progress.close()
    result = summarize(history, train_cfg.report)
    if run_dir is not None:
        rundir.save_torch(model.state_dict(), run_dir / rundir.MODEL)
    return result


def summarize(history: list[dict[str, Any]], report: str) -> dict[str, Any]:
    """Final, best-on-test and best-on-validation accuracies, and the one reports use.

    "final" (the default) is the test accuracy after the last epoch: choosing an epoch by its
    test accuracy, as the lab did, selects on the test subjects and overstates accuracy.
    "best_val" takes the test accuracy at the epoch with the best validation accuracy.
    """
    if not history:
        raise TrainingError("no epoch finished; nothing to summarise")
    final = history[-1]
    best_test = max(history, key=lambda row: row["test_acc"])
    result: dict[str, Any] = {
        "epochs": final["epoch"],
        "final_test_acc": final["test_acc"],
        "final_train_loss": final["train_loss"],
        "best_test_acc": best_test["test_acc"],
        "best_test_epoch": best_test["epoch"],
        "train_seconds": round(sum(row.get("seconds", 0.0) for row in history), 3),
    }
    if "val_acc" in final:
        best_val = max(history, key=lambda row: row["val_acc"])
        result |= {
            "best_val_acc": best_val["val_acc"],
            "best_val_epoch": best_val["epoch"],
            "test_acc_at_best_val": best_val["test_acc"],
        }
    elif report == "best_val":
        raise TrainingError("report = 'best_val' needs a validation split (data.val_subjects)")
    reported = {
        "final": "final_test_acc",
        "best_test": "best_test_acc",
        "best_val": "test_acc_at_best_val",
    }[report]
    result |= {"report": report, "reported_acc": result[reported]}
    return result


def _batches(order: Tensor, batch_size: int) -> Iterator[Tensor]:
    """Consecutive batches of `order`; a last batch of one sample is dropped (BatchNorm needs 2)."""
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        if len(index) > 1 or len(order) == 1:
            yield index


@torch.no_grad()
def _run_teacher(
    teacher: nn.Module, split: SplitTensors, index: Tensor, config: ImagingConfig
) -> Tensor:
    out: Tensor = teacher(batch_inputs(split, input_kind(teacher), index, config)).float()
    return out


def _augment(signals: Tensor, generator: torch.Generator) -> Tensor:
    """Random per-channel scaling (sigma 0.1) and jitter (sigma 0.05) of (B, C, L) signals."""
    batch, channels, _ = signals.shape
    scale = 1 + 0.1 * torch.randn(
        batch, channels, 1, generator=generator, device=signals.device, dtype=signals.dtype
    )
    noise = 0.05 * torch.randn(
        signals.shape, generator=generator, device=signals.device, dtype=signals.dtype
    )
    return signals * scale + noise


def amp_mode(device: torch.device, wanted: bool) -> tuple[bool, torch.dtype]:
    """Whether `fit` trains with AMP on `device`, and in which dtype: CUDA only, bf16 where the
    GPU supports it, else fp16 (with a gradient scaler)."""
    if device.type != "cuda" or not wanted:
        return False, torch.float32
    return True, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _autocast(
    device: torch.device, enabled: bool, dtype: torch.dtype = torch.float32
) -> contextlib.AbstractContextManager[Any]:
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _weights_digest(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _format(config: RunConfig, row: dict[str, Any], epochs: int) -> str:
    parts = [
        f"{config.name} seed {config.seed}",
        f"epoch {row['epoch']}/{epochs}",
        f"lr {row['lr']:g}",
        f"loss {row['train_loss']:.4f}",
        f"test {row['test_acc']:.2f}%",
    ]
    if "val_acc" in row:
        parts.append(f"val {row['val_acc']:.2f}%")
    parts.append(f"{row['seconds']:.1f}s")
    return " | ".join(parts)


class _Progress:
    """A progress bar on a terminal; plain log lines, one per epoch, otherwise."""

    def __init__(self, name: str, total: int) -> None:
        self._bar: Any = None
        if sys.stdout.isatty():
            from rich.progress import Progress

            self._bar = Progress(transient=True)
            self._task = self._bar.add_task(name, total=total)
            self._bar.start()

    def advance(self) -> None:
        if self._bar is not None:
            self._bar.advance(self._task)

    def log(self, line: str) -> None:
        if self._bar is not None:
            self._bar.console.print(line)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
