"""Reference MS-SSIM / SSIM / PSNR values for ``tests/test_metrics.py`` from well-known implementations.

    pip install pytorch-msssim scikit-image      # only for this script; not a jaxcomp dependency
    python -m experiments.msssim_reference        # prints REFERENCE = {...} to paste into the test

Real photos shipped with jaxcomp (``jaxcomp.data.sample_image_paths()``), centre crops, under four
distortions that :func:`distort` makes again in the test: JPEG at quality 10 and 50 (imagecodecs),
Gaussian noise (sigma 10, ``RandomState(0)``) and a 5x5 box blur. Every case stores the CRC-32 of
the distorted crop, so the test can tell "the distortion changed" (e.g. a new libjpeg) from "the
metric changed". The references:

* ``pytorch_msssim`` 1.0 (``ms_ssim``, float64): the well-known PyTorch implementation. It averages
  the *per-channel* MS-SSIM over R, G, B (as ``tf.image.ssim_multiscale`` does), while Google's
  original ``msssim.py`` -- the one the CVPR'18 paper and jaxcomp follow -- takes each scale's mean
  over all channels before the product. The two agree exactly on one channel, so the test checks
  each colour channel as a grey image (``ms_ssim_channels``) and stores the RGB value too
  (``ms_ssim_rgb_pytorch``) to bound the difference. It needs > 160 px a side and pads odd sizes
  with zeros, so it is run on crops whose sides divide by 16.
* :func:`google_msssim`: a transcription of Google's ``MultiScaleSSIM`` (tensorflow/models,
  research/compression/image_encoder/msssim.py, Apache 2.0) in numpy/scipy, float64: RGB values,
  and the cases pytorch_msssim cannot do (small crops where the window shrinks, odd sizes where
  the 2x2 downsampling repeats the last row/column).
* ``skimage.metrics``: single-scale SSIM (Gaussian window, sigma 1.5, population covariance; the
  mean over channels of per-channel SSIM equals the pooled mean) and PSNR.
"""

from __future__ import annotations

import argparse
import os
import pprint
import zlib

import numpy as np

from jaxcomp.data import centre_crop, load_image, sample_image_paths

DISTORTIONS = ("jpeg10", "jpeg50", "noise10", "blur5")
# (image file name, (height, width) of the centre crop). Sides divisible by 16: pytorch_msssim runs.
CROPS = (
    ("Picture_0B_by_freespace.png", (256, 256)),
    ("aitzgorri_by_Aitzol_Berasategi.png", (176, 240)),
    ("friends_by_Aitzol_Berasategi.png", (256, 192)),
)
# Only Google's definition: the window shrinks below 11 px (64 -> 4 px), odd sizes.
SMALL_CROPS = (
    ("Wine_by_Jakkub_Mede.png", (64, 64)),
    ("seeding_by_Clements_Engelhardt.png", (97, 75)),
)


def sample_crop(name: str, size: tuple[int, int]) -> np.ndarray:
    """The centre crop of the shipped photo ``name``."""
    (path,) = [p for p in sample_image_paths() if os.path.basename(p) == name]
    crop = centre_crop(load_image(path), *size)
    assert crop.shape[:2] == size, (name, size)
    return crop


def box_blur(image: np.ndarray, k: int) -> np.ndarray:
    """``k x k`` mean filter with edge padding, rounded to uint8."""
    r = k // 2
    padded = np.pad(image.astype(np.float64), ((r, k - 1 - r), (r, k - 1 - r), (0, 0)), mode="edge")
    h, w = image.shape[:2]
    acc = sum(padded[dy:dy + h, dx:dx + w] for dy in range(k) for dx in range(k))
    return np.clip(np.round(acc / (k * k)), 0, 255).astype(np.uint8)


def distort(image: np.ndarray, name: str) -> np.ndarray:
    """One of :data:`DISTORTIONS` applied to ``uint8 [H, W, 3]``; deterministic."""
    if name.startswith("jpeg"):
        import imagecodecs

        return np.asarray(imagecodecs.jpeg8_decode(imagecodecs.jpeg8_encode(image, level=int(name[4:]))))
    if name.startswith("noise"):
        # RandomState: NumPy keeps its stream fixed across versions (Generator does not promise it).
        noise = np.random.RandomState(0).normal(0.0, float(name[5:]), image.shape)
        return np.clip(np.round(image + noise), 0, 255).astype(np.uint8)
    if name.startswith("blur"):
        return box_blur(image, int(name[4:]))
    raise ValueError(f"unknown distortion {name!r}; known: {', '.join(DISTORTIONS)}")


def checksum(image: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(image, dtype=np.uint8).tobytes())


def google_msssim(img1: np.ndarray, img2: np.ndarray, max_val: float = 255.0) -> float:
    """Google's ``MultiScaleSSIM`` (msssim.py), transcribed: ``[1, H, W, C]`` x2 -> float."""
    from scipy import signal
    from scipy.ndimage import convolve

    def gauss(size, sigma):
        radius, offset = size // 2, 0.0
        start, stop = -radius, radius + 1
        if size % 2 == 0:
            offset, stop = 0.5, stop - 1
        x, y = np.mgrid[offset + start:stop, offset + start:stop]
        g = np.exp(-((x**2 + y**2) / (2.0 * sigma**2)))
        return g / g.sum()

    def ssim_cs(a, b, filter_size=11, filter_sigma=1.5, k1=0.01, k2=0.03):
        _, height, width, _ = a.shape
        size = min(filter_size, height, width)
        sigma = size * filter_sigma / filter_size
        window = np.reshape(gauss(size, sigma), (1, size, size, 1))
        mu1, mu2 = (signal.fftconvolve(v, window, mode="valid") for v in (a, b))
        s11, s22, s12 = (signal.fftconvolve(v, window, mode="valid") for v in (a * a, b * b, a * b))
        mu11, mu22, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
        s11, s22, s12 = s11 - mu11, s22 - mu22, s12 - mu12
        c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2
        v1, v2 = 2.0 * s12 + c2, s11 + s22 + c2
        return np.mean(((2.0 * mu12 + c1) * v1) / ((mu11 + mu22 + c1) * v2)), np.mean(v1 / v2)

    weights = np.array([0.0448, 0.2856, 0.3001, 0.2363, 0.1333])
    im1, im2 = img1.astype(np.float64), img2.astype(np.float64)
    mssim, mcs = [], []
    for _ in range(weights.size):
        ssim, cs = ssim_cs(im1, im2)
        mssim.append(ssim)
        mcs.append(cs)
        im1, im2 = (convolve(im, np.ones((1, 2, 2, 1)) / 4.0, mode="reflect")[:, ::2, ::2, :] for im in (im1, im2))
    return float(np.prod(np.array(mcs[:-1]) ** weights[:-1]) * mssim[-1] ** weights[-1])


def pytorch_values(x: np.ndarray, y: np.ndarray) -> dict:
    """pytorch_msssim's MS-SSIM of ``uint8 [H, W, 3]`` x2: RGB and each channel as a grey image."""
    import torch
    from pytorch_msssim import ms_ssim

    def t(a):  # [H, W, C] -> float64 [1, C, H, W]
        return torch.from_numpy(a.astype(np.float64)).permute(2, 0, 1)[None]

    rgb = float(ms_ssim(t(x), t(y), data_range=255))
    channels = [float(ms_ssim(t(x[..., c:c + 1]), t(y[..., c:c + 1]), data_range=255)) for c in range(3)]
    return dict(ms_ssim_rgb_pytorch=rgb, ms_ssim_channels=channels)


def skimage_values(x: np.ndarray, y: np.ndarray) -> dict:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    ssim = structural_similarity(x, y, data_range=255, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False)
    return dict(ssim=float(ssim), psnr=float(peak_signal_noise_ratio(x, y, data_range=255)))


def reference_values() -> dict:
    """``{(image, (h, w), distortion): {crc32, ms_ssim_google, [pytorch values], ssim, psnr}}``."""
    out = {}
    for crops, with_pytorch in ((CROPS, True), (SMALL_CROPS, False)):
        for name, size in crops:
            x = sample_crop(name, size)
            for d in DISTORTIONS:
                y = distort(x, d)
                v = dict(crc32=checksum(y), ms_ssim_google=google_msssim(x[None], y[None]))
                if with_pytorch:
                    v.update(pytorch_values(x, y))
                v.update(skimage_values(x, y))
                out[(name, size, d)] = {k: _round(val) for k, val in v.items()}
    return out


def _round(v):
    if isinstance(v, list):
        return [_round(u) for u in v]
    return round(v, 7) if isinstance(v, float) else v


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    import imagecodecs
    import pytorch_msssim  # noqa: F401  (fail early if missing)
    import skimage

    print(f"# pytorch_msssim 1.0, scikit-image {skimage.__version__}, imagecodecs {imagecodecs.__version__} "
          f"(libjpeg {imagecodecs.jpeg8_version()})")
    print("REFERENCE = " + pprint.pformat(reference_values(), width=110, sort_dicts=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
