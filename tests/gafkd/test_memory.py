"""Images within a memory budget: precomputed when they fit, made per batch when they do not."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from gafkd import memory, rundir, train
from gafkd.config import ConfigError, from_dict, load_config, memory_limit
from gafkd.run import load_split, to_device, train_run

CPU = torch.device("cpu")


def image_config(make_config: Any, name: str, budget: str, extra: str = "") -> Any:
    path = make_config(name, input="image", extra=f'image_memory = "{budget}"\n{extra}')
    path.write_text(path.read_text().replace("image_size = 8", "image_size = 32"))
    return load_config(path)


def metrics(run_dir: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (run_dir / rundir.METRICS).read_text().splitlines()]
    for row in rows:
        row.pop("seconds")
    return rows


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("auto", ("share", 0.5)),
        (0.25, ("share", 0.25)),
        (1, ("share", 1.0)),
        ("25%", ("share", 0.25)),
        ("8GiB", ("bytes", 8 * 2**30)),
        ("500 MB", ("bytes", 500e6)),
        (64e9, ("bytes", 64e9)),
        ("1.5kib", ("bytes", 1536.0)),
    ],
)
def test_image_memory_is_a_share_of_free_memory_or_a_size(value: Any, expected: Any) -> None:
    assert memory_limit(value) == expected
    assert from_dict({"train": {"image_memory": value}}).train.image_memory == value


@pytest.mark.parametrize("value", ["lots", 0, -1, "0%", "150%", "0GiB", "8 GiBs", True, [1]])
def test_bad_image_memory_is_one_line_naming_the_key(value: Any) -> None:
    with pytest.raises(ConfigError) as error:
        from_dict({"train": {"image_memory": value}})
    assert "train.image_memory" in str(error.value)
    assert "\n" not in str(error.value)


def test_auto_budget_is_half_the_free_memory_of_the_device_cpu_or_gpu(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import psutil  # type: ignore[import-untyped, unused-ignore]

    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(available=8 * 2**30))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (5 * 2**30, 80 * 2**30))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 3 * 2**30)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 2 * 2**30)
    cpu = memory.budget("auto", torch.device("cpu"))
    assert cpu.bytes == 4 * 2**30
    assert "50% of 8.0 GiB free on cpu" in cpu.source
    cuda = memory.budget(0.25, torch.device("cuda"))  # free, plus what torch's cache holds
    assert cuda.bytes == int(1.5 * 2**30)
    assert "25% of 6.0 GiB free on cuda" in cuda.source
    assert memory.budget("2GiB", torch.device("cuda")).bytes == 2 * 2**30


def plan(budget: int, precompute: bool = True) -> memory.ImagePlan:
    """The plan for 100 images of 1000 bytes."""
    return memory.plan_images(100, 1000, memory.Budget(budget, "test"), precompute, CPU)


def test_plan_precomputes_what_fits_and_bounds_evaluation_chunks() -> None:
    fits = plan(1_000_000)
    assert fits.precompute
    assert fits.chunk == 900  # images beside the precomputed ones
    over = plan(64_000)
    assert not over.precompute
    assert over.chunk == 64
    assert "97.7 KiB" in over.line
    assert "62.5 KiB" in over.line
    tiny = plan(10)
    assert tiny.chunk == 1  # one image at a time, never none
    off = plan(1_000_000, precompute=False)
    assert not off.precompute
    assert "imaging.precompute = false" in off.line


def test_images_over_the_budget_train_per_batch_to_the_same_results(make_config, capsys) -> None:  # type: ignore[no-untyped-def]
    """72 windows of 3x32x32 float32 images are 864 KiB: over 64 KiB, within 1 GiB."""
    results = {}
    for budget in ("1GiB", "64KiB"):
        tag = budget.lower()
        image_config(make_config, f"teacher_{tag}", budget)
        extra = f'\n[teachers.image]\nconfig = "teacher_{tag}.toml"\n'
        config = image_config(make_config, f"student_{tag}", budget, extra)
        results[budget] = (train_run(config), config)
        log = capsys.readouterr().out
        if budget == "1GiB":
            assert "images: precomputed on cpu" in log
            assert "864.0 KiB" in log
        else:
            assert "images: made per batch on cpu" in log
            assert "864.0 KiB, over the budget of 64.0 KiB" in log
            assert "chunks of 5 windows" in log
    (big, big_config), (small, small_config) = results["1GiB"], results["64KiB"]
    for key in ("final_test_acc", "final_train_loss", "best_test_acc", "best_val_acc"):
        assert big[key] == small[key], key
    assert metrics(big_config.run_dir) == metrics(small_config.run_dir)
    weights_big = torch.load(big_config.run_dir / "model.pt")
    weights_small = torch.load(small_config.run_dir / "model.pt")
    assert all(torch.equal(weights_big[k], weights_small[k]) for k in weights_big)
    logits = [
        sorted((config.run_dir.parent / f"teacher_{t}" / "logits").glob("*.pt"))
        for config, t in ((big_config, "1gib"), (small_config, "64kib"))
    ]
    assert [p.name for p in logits[0]] == [p.name for p in logits[1]]  # same cache key
    assert torch.equal(torch.load(logits[0][0]), torch.load(logits[1][0]))


class Recorder(nn.Module):
    """A 2-D "model" that records its batch sizes."""

    dim = 2

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def forward(self, images: Tensor) -> Tensor:
        self.sizes.append(len(images))
        return images.flatten(1)[:, :3]


def test_evaluation_and_teacher_logits_run_in_chunks_within_the_budget(make_config) -> None:  # type: ignore[no-untyped-def]
    config = image_config(make_config, "chunked", "64KiB")  # 5 images of 12 KiB at once
    data = to_device(load_split(config), config, torch.device("cpu"), images=True)
    assert data.train.images is None
    model = Recorder()
    logits = train.teacher_logits(model, data, config.train.eval_batch_size, cache_dir=None)
    assert len(logits) == len(data.train) == 48
    assert model.sizes == [5] * 9 + [3]
    model.sizes.clear()
    train.evaluate(model, data.test, data, config.train.eval_batch_size)
    assert model.sizes == [5, 5, 2]


def test_a_run_resumes_under_another_image_memory_but_not_another_config(
    make_config: Any, tmp_path: Path
) -> None:
    from dataclasses import replace

    from gafkd.run import _check_same_config

    config = image_config(make_config, "r", "1GiB")
    run_dir = tmp_path / "run"
    rundir.save_config(config, run_dir)
    smaller = replace(config, train=replace(config.train, image_memory="64KiB"))
    _check_same_config(smaller, run_dir)  # the budget says how images are made, not what
    longer = replace(config, train=replace(config.train, epochs=config.train.epochs + 1))
    with pytest.raises(ConfigError, match="differs in train"):
        _check_same_config(longer, run_dir)
