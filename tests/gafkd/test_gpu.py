"""The CUDA path of a run: data, images and teacher logits on the GPU, AMP, channels_last."""

from __future__ import annotations

import pytest
import torch

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
