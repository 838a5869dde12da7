"""KD term and the lab's distillation loss, against hand-worked values and the formula."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gafkd.config import ConfigError
from gafkd.distill import TEACHER_ROLES, distillation_loss, kd_loss


@pytest.fixture
def logits() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        name: 3 * torch.randn(8, 14, generator=generator)
        for name in ("student", "signal", "image", "other")
    }


@pytest.fixture
def labels() -> torch.Tensor:
    return torch.arange(8) % 14


def test_kd_loss_matches_hand_computed_two_class_case() -> None:
    # One sample, 2 classes, T = 2.
    # student logits (0, 0):          softmax(0/2, 0/2)        = (1/2, 1/2)
    # teacher logits (2 ln 3, 0):     softmax(ln 3, 0) = (3/4, 1/4)
    # KL(teacher || student) = 3/4 ln((3/4)/(1/2)) + 1/4 ln((1/4)/(1/2))
    #                        = 0.75 * 0.4054651081 + 0.25 * (-0.6931471806)
    #                        = 0.3040988311 - 0.1732867951 = 0.1308120359
    # times T^2 = 4                                          = 0.5232481438
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[2 * math.log(3), 0.0]])
    assert kd_loss(student, teacher, temperature=2.0).item() == pytest.approx(
        0.5232481438, abs=1e-6
    )


def test_kd_loss_is_zero_for_equal_logits(logits: dict[str, torch.Tensor]) -> None:
    s = logits["student"]
    assert kd_loss(s, s.clone()).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_loss(s, s.clone(), standardize=True).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kd_loss_is_temperature_squared_batchmean_kl(
    logits: dict[str, torch.Tensor], temperature: float
) -> None:
    s, t = logits["student"], logits["signal"]
    expected = temperature**2 * F.kl_div(
        F.log_softmax(s / temperature, dim=1),
        F.softmax(t / temperature, dim=1),
        reduction="batchmean",
    )
    torch.testing.assert_close(kd_loss(s, t, temperature=temperature), expected)


def test_kd_loss_is_float32_for_half_inputs(logits: dict[str, torch.Tensor]) -> None:
    s, t = logits["student"], logits["signal"]
    loss = kd_loss(s.bfloat16(), t.bfloat16())
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(kd_loss(s, t).item(), rel=2e-2)


def test_kd_loss_gradient_reaches_the_student_only(logits: dict[str, torch.Tensor]) -> None:
    s = logits["student"].requires_grad_()
    t = logits["signal"].requires_grad_()
    torch.autograd.backward(kd_loss(s, t))
    assert s.grad is not None
    assert s.grad.abs().sum() > 0
    assert t.grad is None


def test_standardized_kd_ignores_teacher_offset_and_scale(
    logits: dict[str, torch.Tensor],
) -> None:
    s, t = logits["student"], logits["signal"]
    reference = kd_loss(s, t, standardize=True)
    torch.testing.assert_close(kd_loss(s, t + 5.0, standardize=True), reference)
    torch.testing.assert_close(kd_loss(s, 3.0 * t, standardize=True), reference)
    assert not torch.allclose(kd_loss(s, 3.0 * t), kd_loss(s, t))


def test_kd_loss_rejects_bad_temperature_and_shapes(logits: dict[str, torch.Tensor]) -> None:
    s, t = logits["student"], logits["signal"]
    with pytest.raises(ConfigError, match="temperature=0"):
        kd_loss(s, t, temperature=0)
    with pytest.raises(ValueError, match=r"\(8, 14\) and \(8, 7\)"):
        kd_loss(s, t[:, :7])


def test_distillation_loss_without_teachers_is_cross_entropy(
    logits: dict[str, torch.Tensor], labels: torch.Tensor
) -> None:
    s = logits["student"]
    torch.testing.assert_close(distillation_loss(s, labels, {}), F.cross_entropy(s, labels))


@pytest.mark.parametrize("role", TEACHER_ROLES)
def test_distillation_loss_with_one_teacher_mixes_ce_and_kd(
    logits: dict[str, torch.Tensor], labels: torch.Tensor, role: str
) -> None:
    s, t = logits["student"], logits[role]
    ce = F.cross_entropy(s, labels).item()
    kd = kd_loss(s, t, temperature=4.0).item()
    loss = distillation_loss(s, labels, {role: t}, kd_weight=0.7, alpha=0.9)  # alpha unused
    assert loss.item() == pytest.approx(0.3 * ce + 0.7 * kd, rel=1e-6)


@pytest.mark.parametrize("standardize", [False, True])
def test_distillation_loss_with_two_teachers_weights_image_by_alpha(
    logits: dict[str, torch.Tensor], labels: torch.Tensor, standardize: bool
) -> None:
    s, signal, image = logits["student"], logits["signal"], logits["image"]
    ce = F.cross_entropy(s, labels).item()
    kd_signal = kd_loss(s, signal, temperature=2.0, standardize=standardize).item()
    kd_image = kd_loss(s, image, temperature=2.0, standardize=standardize).item()
    expected = 0.4 * ce + 0.6 * (0.75 * kd_signal + 0.25 * kd_image)
    loss = distillation_loss(
        s,
        labels,
        {"image": image, "signal": signal},
        temperature=2.0,
        kd_weight=0.6,
        alpha=0.25,
        standardize=standardize,
    )
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_distillation_loss_with_alpha_zero_ignores_the_image_teacher(
    logits: dict[str, torch.Tensor], labels: torch.Tensor
) -> None:
    s, signal = logits["student"], logits["signal"]
    both = distillation_loss(s, labels, {"signal": signal, "image": logits["image"]}, alpha=0.0)
    other_image = distillation_loss(
        s, labels, {"signal": signal, "image": logits["other"]}, alpha=0.0
    )
    signal_only = distillation_loss(s, labels, {"signal": signal})
    torch.testing.assert_close(both, signal_only)
    torch.testing.assert_close(other_image, signal_only)


def test_distillation_loss_rejects_unknown_role(
    logits: dict[str, torch.Tensor], labels: torch.Tensor
) -> None:
    with pytest.raises(ConfigError, match=r"\['teacher1'\].*'signal', 'image'"):
        distillation_loss(logits["student"], labels, {"teacher1": logits["signal"]})


@pytest.mark.parametrize(
    ("kd_weight", "alpha", "message"), [(1.5, 0.3, "kd_weight=1.5"), (0.7, -0.1, "alpha=-0.1")]
)
def test_distillation_loss_rejects_weights_outside_unit_interval(
    logits: dict[str, torch.Tensor],
    labels: torch.Tensor,
    kd_weight: float,
    alpha: float,
    message: str,
) -> None:
    with pytest.raises(ConfigError, match=message):
        distillation_loss(logits["student"], labels, {}, kd_weight=kd_weight, alpha=alpha)
