"""One run from its config: data, teachers, student, `fit`, result with provenance.

`train_run` is what ``gafkd train CONFIG.toml`` calls. A run whose ``result.json`` exists is
not trained again; a run with a checkpoint resumes from it; a teacher named by its config file
is trained first when its own run is not done.
"""

from __future__ import annotations

import hashlib
import os
import platform
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

import gafkd
from gafkd import data, imaging, memory, models, rundir, train
from gafkd.config import HOW_KEYS, ConfigError, RunConfig, load_config, split_mode, to_dict
from gafkd.data import Split, hold_out, split_by_subject, standardize
from gafkd.train import SplitTensors, TrainingData, fit, images_of


def train_run(config: RunConfig) -> dict[str, Any]:
    """Train one run into its run directory and return its result record."""
    run_dir = config.run_dir
    done = rundir.read_result(run_dir)
    if done is not None:
        print(f"{config.name} seed {config.seed}: already done in {run_dir}", flush=True)
        return done
    _check_same_config(config, run_dir)
    with rundir.locked(run_dir):
        return _train_locked(config, run_dir)


def _train_locked(config: RunConfig, run_dir: Path) -> dict[str, Any]:
    checkpoint = rundir.load_checkpoint(run_dir)  # read all before writing: a damaged file stops
    teacher_dirs = {
        role: _teacher_dir(role, t.run, t.config) for role, t in config.teachers.items()
    }
    teachers: dict[str, nn.Module] = {
        role: load_model(path, config, role) for role, path in teacher_dirs.items()
    }

    started = time.time()
    device = resolve_device(config.train.device)
    split = load_split(config)
    kinds = {config.student.input} | {train.input_kind(t) for t in teachers.values()}
    tensors = to_device(split, config, device, images="image" in kinds)

    torch.manual_seed(config.seed)
    in_channels = _in_channels(split.train.n_channels, config)
    student = _build(config, in_channels, split.train.n_classes)
    if config.train.init_from:  # annealing: start from a CE-only run of the same architecture
        student.load_state_dict(_load_weights(Path(config.train.init_from), student))
    (run_dir / rundir.ERROR).unlink(missing_ok=True)  # a stale error of an earlier attempt
    rundir.save_config(config, run_dir)
    result = fit(
        student,
        tensors,
        config,
        teachers=teachers,
        run_dir=run_dir,
        teacher_cache={role: path / "logits" for role, path in teacher_dirs.items()},
        resume=checkpoint,
    )
    result |= {
        "name": config.name,
        "run_dir": str(run_dir),
        "n_params": sum(p.numel() for p in student.parameters()),
        "in_channels": in_channels,
        "classes": list(split.train.class_names),
        "finished": rundir.timestamp(),
        "process_seconds": round(time.time() - started, 3),
        "standardization": {"mean": list(split.channel_mean), "std": list(split.channel_std)},
        "provenance": dict(provenance(device, config.seed)),
    }
    rundir.save_json(result, run_dir / rundir.RESULT)
    print(
        f"{config.name} seed {config.seed}: {result['report']} test accuracy "
        f"{result['reported_acc']:.2f}% -> {run_dir / rundir.RESULT}",
        flush=True,
    )
    return result


def resolve_device(wanted: str) -> torch.device:
    if wanted == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is 'cuda' but no CUDA GPU is visible; use 'auto' or 'cpu'")
    if wanted == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(wanted)


def load_split(config: RunConfig) -> Split:
    """The dataset of `config.data`, split by subject or as its archive ships it (UCR/UEA), and
    standardised with training statistics."""
    cfg = config.data
    arguments: dict[str, dict[str, Any]] = {
        "geneactiv": {"path": cfg.path or None, "window": cfg.window, "classes": cfg.classes},
        "npz": {"path": cfg.path or None},
        "watch": {"window": cfg.window, "stride": cfg.stride or max(cfg.window // 2, 1)},
        "basic_motions": {},
        "pamap2": {
            "path": cfg.path or None,
            "window": cfg.window,
            "stride": cfg.stride or max(cfg.window // 2, 1),
            "channels": cfg.channels or None,
            "max_gap": cfg.max_gap,
            "downsample": cfg.downsample,
        },
    }
    ucr: dict[str, Any] = {"name": cfg.name or None, "unequal": cfg.unequal, "missing": cfg.missing}
    if split_mode(cfg) == "archive":  # the archive's own train/test; val from its train part
        archive = data.load_archive(cfg.path or None, **ucr)
        split = hold_out(archive, cfg.val_fraction, cfg.split_seed)
        return standardize(split) if cfg.standardize else split
    arguments["ucr"] = {"path": cfg.path or None, **ucr}
    if cfg.source == "geneactiv" and cfg.mapping:
        arguments["geneactiv"]["mapping"] = cfg.mapping
    dataset = data.load_dataset(cfg.source, **arguments[cfg.source])
    split = split_by_subject(
        dataset,
        test_subjects=list(cfg.test_subjects) or None,
        val_subjects=list(cfg.val_subjects) or None,
        test_fraction=cfg.test_fraction,
        val_fraction=cfg.val_fraction,
        seed=cfg.split_seed,
    )
    return standardize(split) if cfg.standardize else split


def to_device(split: Split, config: RunConfig, device: torch.device, images: bool) -> TrainingData:
    """Move the splits onto `device`; compute images there once when needed and they fit.

    Images are precomputed only when all of them fit the `train.image_memory` budget; otherwise
    they are made per batch. The run log says which and why.
    """
    parts = {"train": split.train, "test": split.test, "val": split.val}
    signals = {
        name: torch.from_numpy(part.signals).to(device)
        for name, part in parts.items()
        if part is not None
    }
    plan = _plan_images(signals, config, device) if images else None

    def move(name: str) -> SplitTensors:
        part = parts[name]
        assert part is not None
        precomputed = None
        if plan is not None and plan.precompute:
            precomputed = _precompute(signals[name], config, min(4096, plan.chunk))
        return SplitTensors(signals[name], torch.from_numpy(part.labels).to(device), precomputed)

    key = hashlib.sha256(
        (split.train.fingerprint() + repr(asdict(config.imaging))).encode()
    ).hexdigest()[:16]
    return TrainingData(
        train=move("train"),
        test=move("test"),
        val=move("val") if split.val is not None else None,
        imaging=config.imaging,
        key=key,
        image_chunk=plan.chunk if plan is not None else None,
    )


def _plan_images(
    signals: dict[str, torch.Tensor], config: RunConfig, device: torch.device
) -> memory.ImagePlan:
    """Precompute or per batch, within the budget; printed to the run log."""
    per_image = memory.image_bytes(signals["train"], config.imaging)
    n_images = sum(len(s) for s in signals.values())
    limit = memory.budget(config.train.image_memory, device)
    plan = memory.plan_images(n_images, per_image, limit, config.imaging.precompute, device)
    line = plan.line
    if plan.chunk < config.train.eval_batch_size:
        line += f"; evaluation and teacher logits in chunks of {plan.chunk} windows"
    print(f"{config.name} seed {config.seed}: {line}", flush=True)
    return plan


def _precompute(signals: torch.Tensor, config: RunConfig, chunk: int) -> torch.Tensor:
    """Images of all `signals`, made `chunk` windows at a time into one tensor."""
    if len(signals) <= chunk:
        return images_of(signals, config.imaging)
    first = images_of(signals[:1], config.imaging)
    images = torch.empty((len(signals), *first.shape[1:]), dtype=first.dtype, device=first.device)
    for start in range(0, len(signals), chunk):
        images[start : start + chunk] = images_of(signals[start : start + chunk], config.imaging)
    return images


def load_model(run_dir: Path, student: RunConfig, role: str) -> nn.Module:
    """The trained model of a finished run, checked to be a fit teacher for `student`."""
    config = load_config(run_dir / rundir.CONFIG)
    if config.data != student.data:
        raise ConfigError(
            f"teacher {role!r} in {run_dir} was trained on other data "
            f"({_diff(config, student, 'data')}); "
            "a teacher must see the same dataset and split as its student, or test subjects leak"
        )
    if config.student.input != role:
        raise ConfigError(
            f"teacher {role!r} in {run_dir} is a {config.student.input} model; "
            f"the {role} teacher must take {role} input"
        )
    if role == "image" and config.imaging != student.imaging:
        raise ConfigError(
            f"image teacher in {run_dir} was trained on other images "
            f"({_diff(config, student, 'imaging')}); set the student's [imaging] to match"
        )
    result = rundir.read_result(run_dir)
    assert result is not None  # checked by _teacher_dir
    model = _build(config, result["in_channels"], len(result["classes"]))
    model.load_state_dict(_load_weights(run_dir, model))
    return model


def _teacher_dir(role: str, run: str, config_file: str) -> Path:
    if run:
        path = Path(run)
        if rundir.read_result(path) is None:
            raise ConfigError(
                f"teacher {role!r}: {path} is not a finished run (no {rundir.RESULT}); "
                "train it first "
                "or name its config file with teachers.<role>.config"
            )
        return path
    teacher = load_config(config_file)
    print(f"teacher {role!r}: {teacher.name} seed {teacher.seed} in {teacher.run_dir}", flush=True)
    train_run(teacher)
    return teacher.run_dir


def _load_weights(run_dir: Path, model: nn.Module) -> dict[str, torch.Tensor]:
    path = run_dir / rundir.MODEL
    if not path.exists():
        raise ConfigError(f"{path} does not exist; is {run_dir} a finished gafkd run?")
    fix = f"delete {run_dir / rundir.RESULT} and {path.name} to train that run again"
    state = rundir.load_torch(path, fix)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise rundir.damaged(path, "it holds no model weights", fix)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    found = {k: v.shape for k, v in state.items()}
    if expected != found:
        raise ConfigError(
            f"{path} holds a different architecture than {type(model).__name__} "
            f"({len(found)} tensors, expected {len(expected)}); init_from and teachers must match"
        )
    return state


def _check_same_config(config: RunConfig, run_dir: Path) -> None:
    """Refuse to resume a run directory that holds a run of another config."""
    path = run_dir / rundir.CONFIG
    if not path.exists():
        return
    saved = to_dict(load_config(path))
    wanted = to_dict(config)
    saved["teachers"] = wanted["teachers"] = None  # paths may be written differently
    for key in HOW_KEYS:  # e.g. the image memory budget may change between tries
        section, name = key.split(".")
        saved[section].pop(name, None)
        wanted[section].pop(name, None)
    if saved != wanted:
        keys = [k for k in wanted if saved.get(k) != wanted[k]]
        raise ConfigError(
            f"{run_dir} holds a run with another config (differs in {', '.join(keys)}); "
            "set out_dir to a new folder, or delete the old run to start over"
        )


def _build(config: RunConfig, in_channels: int, n_classes: int) -> nn.Module:
    return models.build(
        config.student.name,
        dim=1 if config.student.input == "signal" else 2,
        in_channels=in_channels,
        n_classes=n_classes,
        dropout=config.student.dropout,
    )


def _in_channels(n_channels: int, config: RunConfig) -> int:
    if config.student.input == "signal":
        return n_channels
    return imaging.n_image_channels(n_channels, config.imaging.layout)


def _diff(a: RunConfig, b: RunConfig, table: str) -> str:
    left, right = to_dict(a)[table], to_dict(b)[table]
    keys = [k for k in right if left.get(k) != right[k]]
    return ", ".join(f"{table}.{k}: {left.get(k)!r} vs {right[k]!r}" for k in keys)


def provenance(device: torch.device, seed: int) -> Mapping[str, Any]:
    """Where and with what a run was computed."""
    return {
        "gafkd_version": gafkd.__version__,
        "git_commit": _git_commit(),
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "cudnn_version": _cudnn_version(),
        "device": str(device),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "device_name": (
            torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
        ),
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "seed": seed,
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cudnn_version() -> int | None:
    cudnn = torch.backends.cudnn
    if not cudnn.is_available():  # type: ignore[no-untyped-call]
        return None
    version: int = cudnn.version()  # type: ignore[no-untyped-call]
    return version


def _git_commit() -> str | None:
    """The commit of the gafkd source tree, with "-dirty" when it has local changes."""
    root = Path(gafkd.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
