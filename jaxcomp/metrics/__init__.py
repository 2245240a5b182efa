"""Image quality metrics as pure JAX functions (differentiable, jittable)."""

from jaxcomp.metrics.image import MS_SSIM_WEIGHTS, ms_ssim, mse, psnr, ssim_components

__all__ = ["MS_SSIM_WEIGHTS", "ms_ssim", "mse", "psnr", "ssim_components"]
