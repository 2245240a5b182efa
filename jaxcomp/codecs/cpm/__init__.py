"""Lossy compression with a 3D context model (Mentzer et al., CVPR'18).

"Conditional Probability Models for Deep Image Compression": an autoencoder whose bottleneck
``z`` (``[B, h, w, C]``, ``h, w = H/8, W/8``) is masked by a learned *importance map* and
quantized to ``L`` learned centres; a 3D masked CNN over (channel, height, width) predicts
each symbol's distribution over the centres from the symbols before it, and its
cross-entropy is the rate. The loss is ``K * (1 - MS-SSIM) + beta * max(H - H_target, 0)``.

Pieces (all pure functions of the parameters):
  * :class:`Encoder` / :class:`Decoder` — 5x5/2, 5x5/2 convs, ``groups`` groups of 3 residual
    blocks with skips, a final residual block with a global skip, 5x5/2 conv to ``C + 1``
    channels; the decoder mirrors it with transposed convs and clips to [0, 255]; fixed
    input normalisation (the reference code's mean/variance).
  * :func:`importance_mask` — the extra channel ``y -> sigmoid(y) * C``; 3D mask
    ``m[c] = clip(y - c, 0, 1)``; symbols where ``m = 0`` are *masked*: they are not coded.
  * soft-to-hard quantization to ``L`` learned centres (:func:`jaxcomp.quantize.soft_hard_quantize`).
  * :class:`ContextModel` — the 3D masked CNN (reference ``res_shallow``: a masked conv to
    ``K`` features, one residual block, a masked conv to ``L`` logits; kernels span the
    previous and the current channel and 3x3 positions).
  * the importance map itself is coded with a learned table ``P(k | k_left, k_up)`` over the
    number ``k`` of unmasked channels at each position (the decoder needs the mask to know
    which symbols were coded); its bits are part of the rate.

Coding (:class:`CPMCodec`): symbols are decoded in *wavefronts* ``t = 4c + 2y + x``: every
symbol of a wavefront depends only on earlier wavefronts (see :func:`wavefronts`), so each is
one jitted step that evaluates the context model only at the wavefront's positions, reusing
cached activations of earlier ones. The encoder runs the very same steps on the same inputs,
so both sides see identical floats and decoding is exact.

Modules: :mod:`~jaxcomp.codecs.cpm.model` (the spec, Flax modules, context model, rate terms and
objective), :mod:`~jaxcomp.codecs.cpm.task` (:class:`CPMTask`, :func:`objective_weights`),
:mod:`~jaxcomp.codecs.cpm.codec` (:class:`CPMCodec`, :func:`load_codec`, the shipped operating
points). Their names are importable from here.
"""

from jaxcomp.codecs.cpm.codec import (
    MIN_REFINE,
    OPERATING_POINTS,
    CPMCodec,
    check_image,
    load_codec,
    shipped_model,
)
from jaxcomp.codecs.cpm.codec import _refine_functions as _refine_functions  # tests check refinement with it
from jaxcomp.codecs.cpm.model import (
    CPM,
    FACTOR,
    KMAP_SCALE,
    ContextModel,
    CPMSpec,
    Decoder,
    Encoder,
    ResBlock,
    ResTrunk,
    check_model_params,
    context_masks,
    expected_symbol_bits,
    importance_mask,
    kmap_bits,
    kmap_neighbours,
    rate_terms,
    rd_objective,
    spec_from_config,
    symbol_bits,
    unmasked_count,
    wavefronts,
)
from jaxcomp.codecs.cpm.task import CPMTask, objective_weights

__all__ = [
    "CPM", "FACTOR", "KMAP_SCALE", "MIN_REFINE", "OPERATING_POINTS", "CPMCodec", "CPMSpec", "CPMTask",
    "ContextModel", "Decoder", "Encoder", "ResBlock", "ResTrunk", "check_image", "check_model_params", "context_masks",
    "expected_symbol_bits", "importance_mask", "kmap_bits", "kmap_neighbours", "load_codec", "objective_weights",
    "rate_terms", "rd_objective", "shipped_model", "spec_from_config", "symbol_bits", "unmasked_count",
    "wavefronts",
]
