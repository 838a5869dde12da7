"""Wide ResNets: parameter counts against reference §4.2, shapes, layouts and name parsing."""

from __future__ import annotations

import pytest
import torch

from gafkd.config import ConfigError
from gafkd.models import MODELS, WideResNet, build, parse_name, wrn

# Reference §4.2 table: trainable parameters (BN running stats excluded), 3 input channels.
PARAMETER_COUNTS = [
    # (name, dim, n_classes, parameters)
    ("wrn16_1", 2, 14, 175_326),
    ("wrn16_3", 2, 14, 1_550_302),
    ("wrn28_1", 2, 14, 369_758),
    ("wrn28_3", 2, 14, 3_294_814),
    ("wrn16_1", 1, 14, 61_374),
    ("wrn16_3", 1, 14, 536_254),
    ("wrn28_1", 1, 14, 126_782),
    ("wrn28_3", 1, 14, 1_119_550),
    ("wrn16_1", 2, 7, 174_871),
    ("wrn16_3", 2, 7, 1_548_951),
    ("wrn28_1", 2, 7, 369_303),
    ("wrn28_3", 2, 7, 3_293_463),
    ("wrn16_1", 1, 7, 60_919),
    ("wrn16_3", 1, 7, 534_903),
    ("wrn28_1", 1, 7, 126_327),
    ("wrn28_3", 1, 7, 1_118_199),
]


def n_trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize(("name", "dim", "n_classes", "expected"), PARAMETER_COUNTS)
def test_parameter_count_matches_reference_table(
    name: str, dim: int, n_classes: int, expected: int
) -> None:
    model = build(name, dim=dim, in_channels=3, n_classes=n_classes)  # type: ignore[arg-type]
    assert n_trainable(model) == expected


@pytest.mark.parametrize("length", [500, 1000])
def test_1d_forward_gives_logits_and_stage_shapes(length: int) -> None:
    model = build("wrn16_1", dim=1, in_channels=3, n_classes=14).eval()
    x = torch.randn(2, 3, length)
    assert model(x).shape == (2, 14)
    shapes = [tuple(f.shape) for f in model.features(x)]
    quarter = (length // 2 + 1) // 2  # two stride-2 convs with padding 1: ceil, then ceil
    assert shapes == [(2, 16, length), (2, 32, length // 2), (2, 64, quarter), (2, 64)]


@pytest.mark.parametrize("size", [64, 32])
def test_2d_forward_gives_logits_and_stage_shapes(size: int) -> None:
    model = build("wrn16_3", dim=2, in_channels=3, n_classes=7).eval()
    x = torch.randn(2, 3, size, size)
    assert model(x).shape == (2, 7)
    shapes = [tuple(f.shape) for f in model.features(x)]
    half, quarter = size // 2, size // 4
    assert shapes == [
        (2, 48, size, size),
        (2, 96, half, half),
        (2, 192, quarter, quarter),
        (2, 192),
    ]


def test_features_end_with_the_vector_the_head_reads() -> None:
    model = build("wrn16_1", dim=1, in_channels=3, n_classes=5).eval()
    x = torch.randn(3, 3, 100)
    with torch.no_grad():
        pooled = model.features(x)[-1]
        torch.testing.assert_close(model.head(pooled), model(x))


def test_model_records_dim_and_config() -> None:
    model = wrn(28, 1, dim=1, in_channels=3, n_classes=14, dropout=0.3)
    assert isinstance(model, WideResNet)
    assert model.dim == 1
    assert (model.config.depth, model.config.width, model.config.dropout) == (28, 1, 0.3)
    assert model.config.blocks_per_stage == 4  # depth = 6n + 4


def test_channels_last_gives_the_same_logits_as_contiguous() -> None:
    torch.manual_seed(0)
    model = build("wrn16_1", dim=2, in_channels=3, n_classes=14).eval()
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        actual = model(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)


def test_dropout_is_active_in_train_mode_only() -> None:
    torch.manual_seed(0)
    model = build("wrn16_1", dim=1, in_channels=3, n_classes=4, dropout=0.5)
    x = torch.randn(2, 3, 64)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))
        model.train()
        assert not torch.allclose(model(x), model(x))


def test_build_accepts_any_valid_wrn_name() -> None:
    assert parse_name("wrn40_2") == (40, 2)
    model = build("wrn10_2", dim=2, in_channels=1, n_classes=3)
    assert (model.config.depth, model.config.width) == (10, 2)
    assert set(MODELS) == {"wrn16_1", "wrn16_3", "wrn28_1", "wrn28_3"}


@pytest.mark.parametrize("name", ["resnet18", "wrn16-1", "WRN16_1", "wrn16", "wrn_16_1", ""])
def test_parse_name_rejects_bad_spelling_with_examples(name: str) -> None:
    with pytest.raises(ConfigError, match=r"wrn<depth>_<width>.*wrn16_1"):
        parse_name(name)


@pytest.mark.parametrize(
    ("depth", "width", "dim", "n_classes", "dropout", "message"),
    [
        (15, 1, 1, 14, 0.0, r"6n \+ 4.*depth=15"),
        (4, 1, 1, 14, 0.0, r"6n \+ 4.*depth=4"),
        (16, 0, 1, 14, 0.0, "width=0"),
        (16, 1, 3, 14, 0.0, "dim=3"),
        (16, 1, 2, 1, 0.0, "n_classes=1"),
        (16, 1, 2, 14, 1.0, "dropout=1.0"),
    ],
)
def test_bad_config_raises_config_error(
    depth: int, width: int, dim: int, n_classes: int, dropout: float, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        wrn(depth, width, dim, 3, n_classes, dropout)  # type: ignore[arg-type]


def test_bad_depth_in_name_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="depth=17"):
        build("wrn17_1", dim=1, in_channels=3, n_classes=14)


def test_forward_traces_as_one_graph_for_torch_compile() -> None:
    model = build("wrn16_1", dim=1, in_channels=3, n_classes=14).eval()
    x = torch.randn(2, 3, 128)
    compiled = torch.compile(model, backend="eager", fullgraph=True)  # graph break -> error
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(("dim", "shape"), [(1, (4, 3, 500)), (2, (4, 3, 64, 64))])
def test_cuda_logits_match_cpu(
    dim: int, shape: tuple[int, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # compare full fp32 convs
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    torch.manual_seed(0)
    model = build("wrn16_3", dim=dim, in_channels=3, n_classes=14).eval()  # type: ignore[arg-type]
    x = torch.randn(*shape)
    with torch.no_grad():
        expected = model(x)
        actual = model.cuda()(x.cuda()).cpu()
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)
