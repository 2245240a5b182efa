"""Image quality metrics: pure JAX functions (differentiable, jittable) and, in ``swd``, a host-side
(numpy) distribution distance between image sets."""

from jaxcomp.metrics.image import MS_SSIM_WEIGHTS, ms_ssim, mse, psnr, ssim_components
from jaxcomp.metrics.swd import laplacian_pyramid, reconstruct_laplacian_pyramid, sliced_wasserstein, swd

__all__ = ["MS_SSIM_WEIGHTS", "laplacian_pyramid", "ms_ssim", "mse", "psnr", "reconstruct_laplacian_pyramid",
           "sliced_wasserstein", "ssim_components", "swd"]
