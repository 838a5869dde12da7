"""Knowledge-distillation losses: the KD term and the lab's CE + weighted-teachers total.

Teachers are named by role, never by position: "signal" (a 1-D WRN on the raw window) and
"image" (a 2-D WRN on its GAF image). Protocol reference §4.3:

    L = (1 - kd_weight) * CE + kd_weight * [(1 - alpha) * KD(signal) + alpha * KD(image)]
"""

from __future__ import annotations

from collections.abc import Mapping

import torch.nn.functional as F
from torch import Tensor

from gafkd.config import ConfigError

TEACHER_ROLES = ("signal", "image")
STD_EPSILON = 1e-7  # added to the per-sample logit std, as in Sun et al.'s code


def _standardized(logits: Tensor) -> Tensor:
    """Per-sample z-score of logits (B, K): (z - mean) / (std + eps), unbiased std."""
    mean = logits.mean(dim=-1, keepdim=True)
    std = logits.std(dim=-1, keepdim=True)
    return (logits - mean) / (std + STD_EPSILON)


def kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 4.0,
    standardize: bool = False,
) -> Tensor:
    """Hinton KD term: ``T^2 * KL(softmax(t / T) || softmax(s / T))``, mean over the batch.

    Same value as RepDistiller's ``DistillKL`` (sum-reduced KL / batch = 'batchmean').
    Computed in float32 whatever the input dtype (safe under autocast). The teacher logits are
    detached: gradient flows to the student only.

    Parameters
    ----------
    student_logits, teacher_logits : Tensor
        Logits of shape (B, K).
    temperature : float, default 4.0
        Softmax temperature T > 0.
    standardize : bool, default False
        Logit standardisation (Sun et al., "Logit Standardization in Knowledge Distillation",
        CVPR 2024): both logit vectors become ``(z - mean(z)) / (std(z) + 1e-7)`` per sample
        before the division by T, and the T^2 factor is kept. The result no longer depends on
        a teacher's logit offset or scale. Jeon's TDA_KD ``train_ad.py`` instead uses
        ``log_softmax(z * 2.0 / std(z))`` (no centring, which softmax ignores; no epsilon) inside
        ``nn.KLDivLoss()`` with reduction 'mean' (divides by B * K), times 16: that equals
        ``64 / K * kd_loss(s, t, temperature=0.5, standardize=True)`` up to the epsilon.

    Returns
    -------
    Tensor
        Scalar float32 loss.

    Examples
    --------
    >>> import torch
    >>> s = torch.tensor([[0.0, 0.0]])
    >>> t = torch.tensor([[2.0, 0.0]])
    >>> round(kd_loss(s, t, temperature=1.0).item(), 4)  # 0.8808 ln 1.7616 + 0.1192 ln 0.2384
    0.3278
    >>> kd_loss(t, t).item()
    0.0
    """
    if temperature <= 0:
        raise ConfigError(
            f"KD temperature must be > 0; got temperature={temperature}. Use e.g. 4.0."
        )
    if student_logits.shape != teacher_logits.shape or student_logits.ndim != 2:
        raise ValueError(
            "student and teacher logits must both have shape (B, K); got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}. "
            "Check that both models were built with the same n_classes."
        )
    student = student_logits.float()
    teacher = teacher_logits.detach().float()
    if standardize:
        student, teacher = _standardized(student), _standardized(teacher)
    log_p_student = F.log_softmax(student / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher / temperature, dim=-1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2


def distillation_loss(
    student_logits: Tensor,
    labels: Tensor,
    teacher_logits: Mapping[str, Tensor],
    *,
    temperature: float = 4.0,
    kd_weight: float = 0.7,
    alpha: float = 0.3,
    standardize: bool = False,
) -> Tensor:
    """The lab's training loss for 0, 1 or 2 teachers named by role.

    - no teacher: ``CE``
    - one teacher (either role): ``(1 - kd_weight) * CE + kd_weight * KD(teacher)``
    - both: ``(1 - kd_weight) * CE + kd_weight * ((1 - alpha) * KD(signal) + alpha * KD(image))``

    Parameters
    ----------
    student_logits : Tensor
        (B, K) student logits.
    labels : Tensor
        (B,) integer class labels.
    teacher_logits : Mapping[str, Tensor]
        Role ("signal", "image") -> (B, K) teacher logits; may be empty.
    temperature, standardize
        Passed to :func:`kd_loss` for every teacher.
    kd_weight : float, default 0.7
        The reference's lambda in [0, 1]: 0.7 for GENEActiv, 0.99 in Jeon's PAMAP2 code.
    alpha : float, default 0.3
        Weight of the *image* teacher in [0, 1] when both teachers are given (0.3 for GAF +
        signal on GENEActiv); ignored with one teacher.

    Returns
    -------
    Tensor
        Scalar float32 loss. CE is on the plain logits (TDA_KD divides them by their std).

    Examples
    --------
    >>> import torch
    >>> s = torch.tensor([[0.0, 0.0]])
    >>> y = torch.tensor([0])
    >>> round(distillation_loss(s, y, {}).item(), 4)  # ln 2
    0.6931
    >>> round(distillation_loss(s, y, {"signal": s}).item(), 4)  # 0.3 ln 2
    0.2079
    """
    unknown = sorted(set(teacher_logits) - set(TEACHER_ROLES))
    if unknown:
        raise ConfigError(
            f"unknown teacher role(s) {unknown}; expected roles among {TEACHER_ROLES}. "
            "Name each teacher 'signal' (1-D, raw window) or 'image' (2-D, GAF)."
        )
    for name, value in (("kd_weight", kd_weight), ("alpha", alpha)):
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{name} must be in [0, 1]; got {name}={value}. Use e.g. 0.7.")
    ce = F.cross_entropy(student_logits.float(), labels)
    if not teacher_logits:
        return ce
    kd = {
        role: kd_loss(student_logits, logits, temperature, standardize)
        for role, logits in teacher_logits.items()
    }
    if len(kd) == 1:
        (kd_total,) = kd.values()
    else:
        kd_total = (1.0 - alpha) * kd["signal"] + alpha * kd["image"]
    return (1.0 - kd_weight) * ce + kd_weight * kd_total
