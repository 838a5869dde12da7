"""The CUDA path of a run: data, images and teacher logits on the GPU, AMP, channels_last."""

from __future__ import annotations

import pytest
import torch

from gafkd import memory
from gafkd.config import load_config
from gafkd.run import train_run

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.mark.parametrize("precompute", [True, False])
def test_two_teacher_run_on_cuda(make_config, precompute: bool) -> None:  # type: ignore[no-untyped-def]
    make_config("gpu_t_image", input="image", extra='device = "cuda"')
    make_config("gpu_t_signal", extra='device = "cuda"')
    extra = (
        'device = "cuda"\n\n[teachers.image]\nconfig = "gpu_t_image.toml"\n'
        '[teachers.signal]\nconfig = "gpu_t_signal.toml"\n'
    )
    path = make_config(f"gpu_student_{precompute}", extra=extra)
    config = load_config(path, [f"imaging.precompute={str(precompute).lower()}"])
    result = train_run(config)
    assert result["provenance"]["device"].startswith("cuda")
    assert result["epochs"] == 2


def test_images_over_the_budget_are_made_per_batch_on_cuda(make_config, capsys) -> None:  # type: ignore[no-untyped-def]
    """The budget is read from the GPU's free memory; images over it are made on the GPU."""
    free, _total = torch.cuda.mem_get_info()
    auto = memory.budget("auto", torch.device("cuda"))
    assert 0 < auto.bytes <= free
    assert "free on cuda" in auto.source
    for budget in ("1GiB", "16KiB"):
        extra = f'device = "cuda"\namp = false\nimage_memory = "{budget}"'
        config = load_config(make_config(f"gpu_budget_{budget}", input="image", extra=extra))
        assert train_run(config)["epochs"] == 2
        made = "precomputed" if budget == "1GiB" else "made per batch"
        assert f"images: {made} on cuda" in capsys.readouterr().out
