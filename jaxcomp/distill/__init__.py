"""Born-again training: distillation losses (KD, BAN, BAN+L, CWTM, DKPP), ensembles, generations.

The losses are pure functions of logits (see :mod:`jaxcomp.distill.losses` for shapes); the
classification / language-model task that trains a student against jitted teachers lives in
:mod:`jaxcomp.distill.task`, the generations driver in :mod:`jaxcomp.distill.generations`.
"""

from jaxcomp.distill.losses import (
    LOSSES,
    ban_label_loss,
    ban_loss,
    check_kd_temperature,
    cross_entropy,
    cwtm_loss,
    cwtm_weights,
    distillation_loss,
    dkpp_loss,
    dkpp_targets,
    ensemble_log_probs,
    kd_loss,
    label_loss,
    soft_cross_entropy,
)

__all__ = [
    "LOSSES", "ban_label_loss", "ban_loss", "check_kd_temperature", "cross_entropy", "cwtm_loss", "cwtm_weights",
    "distillation_loss", "dkpp_loss", "dkpp_targets", "ensemble_log_probs", "kd_loss", "label_loss",
    "soft_cross_entropy",
]
