"""Image understanding on compressed representations (Torfason et al., ICLR 2018).

"Towards Image Understanding from Deep Compression without Decoding": classify and segment images
from the quantized latent ``ŷ`` of a learned codec (``[B, H/8, W/8, C]``, the context-model codec of
:mod:`jaxcomp.codecs.cpm`) with cResNets (:mod:`jaxcomp.models.cresnet`: ImageNet ResNets without
the root block and the stages above 1/8 resolution), instead of decoding to RGB first; and train
the codec and the task network jointly.

Pieces:
  * :mod:`~jaxcomp.vision.data` — the codec's outputs for a set of images (latents, decodings, bits,
    MS-SSIM, PSNR; cached), the local digit-scene data (:mod:`jaxcomp.data.digit_scenes`) as
    classification / segmentation arrays for any of the three inputs, and the original VOC 2012
    segmentation layout for users who have it.
  * :mod:`~jaxcomp.vision.task` — :class:`UnderstandingTask`, one task of the trainer for every row of
    the paper: ``input`` = ``latent`` / ``decoded`` / ``original``; ``task`` = ``classification`` /
    ``segmentation``; the codec either absent (inputs precomputed on the host), frozen in the graph
    (inputs are images), or trained with the task loss (joint training).
"""

from jaxcomp.vision.task import INPUTS, UnderstandingTask, confusion_counts, mean_iou

__all__ = ["INPUTS", "UnderstandingTask", "confusion_counts", "mean_iou"]
