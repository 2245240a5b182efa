"""Shared GAN pieces: discriminators/critics, adversarial losses, gradient penalty, feature
matching, MMD, and two-player training as a task of the one trainer.

Used by GC (:mod:`jaxcomp.codecs.gc`) and meant for DPLC and any other two-player task.
"""

from jaxcomp.gan.losses import (
    KINDS,
    WAE_SCALES,
    d_loss,
    feature_matching,
    g_loss,
    gradient_penalty,
    imq_kernel,
    mmd_imq,
)
from jaxcomp.gan.networks import MultiScaleDiscriminator, PatchDiscriminator, avg_pool_3x3, logits_of
from jaxcomp.gan.training import MODES, GANSchedule, schedule_from_config, two_player_step

__all__ = [
    "KINDS", "MODES", "WAE_SCALES", "GANSchedule", "MultiScaleDiscriminator", "PatchDiscriminator",
    "avg_pool_3x3", "d_loss", "feature_matching", "g_loss", "gradient_penalty", "imq_kernel", "logits_of",
    "mmd_imq", "schedule_from_config", "two_player_step",
]
