"""Image quality metrics: pure JAX functions (differentiable, jittable) and host-side (numpy)
distribution distances between image sets: ``swd`` (no network) and, in ``frechet``, the Fréchet
distance in the feature space of jaxcomp's own MNIST classifier (shipped in ``metrics/pretrained``); and the
compute of a function, counted from its traced shapes (``flops``)."""

from jaxcomp.metrics.flops import count_flops, count_macs, xla_flops
from jaxcomp.metrics.frechet import MNISTFeatures, frechet_distance, frechet_distance_features, gaussian_stats
from jaxcomp.metrics.image import (
    MS_SSIM_WEIGHTS,
    ms_ssim,
    mse,
    psnr,
    psnr_from_mse,
    reconstruction_scores,
    ssim_components,
)
from jaxcomp.metrics.swd import laplacian_pyramid, reconstruct_laplacian_pyramid, sliced_wasserstein, swd

__all__ = ["MNISTFeatures", "MS_SSIM_WEIGHTS", "count_flops", "count_macs", "xla_flops",
           "frechet_distance", "frechet_distance_features", "gaussian_stats",
           "laplacian_pyramid", "ms_ssim", "mse", "psnr", "psnr_from_mse", "reconstruct_laplacian_pyramid",
           "reconstruction_scores",
           "sliced_wasserstein",
           "ssim_components", "swd"]
