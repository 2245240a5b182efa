"""jaxcomp.metrics.swd: the Laplacian pyramid, the sliced Wasserstein distance and the image-set SWD."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from jaxcomp.data import centre_crop, load_image, sample_image_paths
from jaxcomp.metrics import laplacian_pyramid, reconstruct_laplacian_pyramid, sliced_wasserstein, swd
from jaxcomp.metrics.swd import auto_levels, patch_descriptors


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    """Six 96x128 centre crops of the shipped photos (real image statistics, fast)."""
    return [centre_crop(load_image(p), 96, 128) for p in sample_image_paths()[:6]]


def _noisy(images, sigma, seed=0):
    rng = np.random.default_rng(seed)
    return [np.clip(im + rng.normal(0.0, sigma, im.shape), 0, 255).astype(np.uint8) for im in images]


def _blurred(images, sigma):
    return [np.clip(np.round(ndimage.gaussian_filter(im.astype(np.float32), (sigma, sigma, 0))), 0, 255)
            .astype(np.uint8) for im in images]


# ----------------------------------------------------------------------------- pyramid


def _karras_pyramid(image: np.ndarray, levels: int) -> list[np.ndarray]:
    """An independent reference: Karras et al.'s 2-D convolutions (cv2.pyrDown / pyrUp) for even sizes."""
    k = np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1]).astype(np.float64) / 256.0
    conv = lambda x, w: np.stack([ndimage.convolve(x[..., c], w, mode="mirror") for c in range(3)], -1)
    down = lambda x: conv(x, k)[::2, ::2]

    def up(x):
        z = np.zeros((2 * x.shape[0], 2 * x.shape[1], 3))
        z[::2, ::2] = x
        return conv(z, 4.0 * k)

    pyr = [image.astype(np.float64)]
    for _ in range(levels - 1):
        pyr.append(down(pyr[-1]))
        pyr[-2] = pyr[-2] - up(pyr[-1])
    return pyr


def test_pyramid_matches_reference_and_reconstructs(photos):
    image = photos[0]
    pyr = laplacian_pyramid(image, 4)
    assert [p.shape for p in pyr] == [(96, 128, 3), (48, 64, 3), (24, 32, 3), (12, 16, 3)]
    assert all(p.dtype == np.float32 for p in pyr)
    for ours, ref in zip(pyr, _karras_pyramid(image, 4)):
        np.testing.assert_allclose(ours, ref, atol=2e-3)
    np.testing.assert_allclose(reconstruct_laplacian_pyramid(pyr), image, atol=2e-3)
    # the low-pass keeps the mean colour; detail levels carry (almost) none of it
    np.testing.assert_allclose(pyr[-1].mean(axis=(0, 1)), image.mean(axis=(0, 1)), atol=2.0)
    assert all(np.abs(p.mean()) < 2.0 for p in pyr[:-1])


def test_pyramid_odd_sizes_and_smooth_images():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (37, 50, 3)).astype(np.uint8)
    pyr = laplacian_pyramid(image, 4)
    assert [p.shape[:2] for p in pyr] == [(37, 50), (19, 25), (10, 13), (5, 7)]
    np.testing.assert_allclose(reconstruct_laplacian_pyramid(pyr), image, atol=2e-3)
    batch = laplacian_pyramid(np.stack([image, image[::-1]]), 2)  # [N, H, W, 3] works level by level
    np.testing.assert_allclose(batch[1][1], laplacian_pyramid(image[::-1], 2)[1])
    np.testing.assert_allclose(reconstruct_laplacian_pyramid(batch), np.stack([image, image[::-1]]), atol=2e-3)
    with pytest.raises(ValueError, match="laplacian_pyramid's levels"):
        reconstruct_laplacian_pyramid([])
    # a constant image has no detail at any level, also at odd sizes and borders (mirror edges)
    flat = laplacian_pyramid(np.full((37, 50, 3), 100, np.uint8), 4)
    assert max(np.abs(p).max() for p in flat[:-1]) < 1e-3
    np.testing.assert_allclose(flat[-1], 100.0, atol=1e-3)


def test_pyramid_rejects_bad_input():
    with pytest.raises(ValueError, match="dtype"):
        laplacian_pyramid(np.zeros((16, 16, 3), np.int32), 2)
    with pytest.raises(ValueError, match="shape"):
        laplacian_pyramid(np.zeros((16, 16)), 2)
    with pytest.raises(ValueError, match="levels"):
        laplacian_pyramid(np.zeros((16, 16, 3)), 0)
    with pytest.raises(ValueError, match="fewer than 6"):
        laplacian_pyramid(np.zeros((16, 16, 3)), 6)


# ----------------------------------------------------------------------------- sliced Wasserstein


def test_sliced_wasserstein_1d_by_hand():
    # sorted a = [0, 1, 3], sorted b = [1, 2, 5]: |0-1| + |1-2| + |3-5| = 4, / 3 points
    a, b = np.array([[3.0], [0.0], [1.0]]), np.array([[5.0], [1.0], [2.0]])
    assert sliced_wasserstein(a, b, 1, np.random.default_rng(0)) == pytest.approx(4 / 3)
    assert sliced_wasserstein(a, b, 7, 3) == pytest.approx(4 / 3)  # in 1-D every direction is +-1
    # unequal sizes: a = {0, 2} vs b = {1}: each half of a's mass moves by 1
    assert sliced_wasserstein([[0.0], [2.0]], [[1.0]], 1, 0) == pytest.approx(1.0)
    # a = {0, 3} vs b = {1, 1, 1}: quantiles 0 on (0, 1/2), 3 on (1/2, 1) against 1: (1 + 2) / 2
    assert sliced_wasserstein([[0.0], [3.0]], [[1.0]] * 3, 1, 0) == pytest.approx(1.5)
    # a = {0, 1, 4} vs b = {2, 2} (all mass at 2): E|X - 2| = (2 + 1 + 2) / 3
    assert sliced_wasserstein([[0.0], [1.0], [4.0]], [[2.0], [2.0]], 1, 0) == pytest.approx(5 / 3)


def test_sliced_wasserstein_given_directions():
    a = np.array([[0.0, 10.0], [1.0, 20.0], [2.0, 30.0]])
    b = a + np.array([0.5, -4.0])
    # along x the clouds are 0.5 apart, along y 4 apart; the diagonal (1, 1)/sqrt(2) sees 3.5/sqrt(2)
    assert sliced_wasserstein(a, b, np.array([[1.0], [0.0]])) == pytest.approx(0.5)
    assert sliced_wasserstein(a, b, np.array([[0.0], [3.0]])) == pytest.approx(4.0)  # columns are normalised
    assert sliced_wasserstein(a, b, np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])) == pytest.approx(
        (0.5 + 4.0 + 3.5 / np.sqrt(2)) / 3, rel=1e-6)
    # permuting the points changes nothing (the projections are sorted)
    assert sliced_wasserstein(a, b[::-1], np.array([[1.0], [1.0]])) == pytest.approx(3.5 / np.sqrt(2), rel=1e-6)
    with pytest.raises(ValueError, match="shapes"):
        sliced_wasserstein(a, b[:, :1], 4, 0)
    with pytest.raises(ValueError, match="zero vector"):
        sliced_wasserstein(a, b, np.zeros((2, 1)))


def test_descriptors_normalised_per_channel(photos):
    levels = [laplacian_pyramid(im, 1)[0] for im in photos]
    d = patch_descriptors(levels, 0, 64, seed=3)
    assert d.shape == (6 * 64, 147) and d.dtype == np.float32
    per_channel = d.reshape(-1, 7, 7, 3)
    np.testing.assert_allclose(per_channel.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(per_channel.std(axis=(0, 1, 2)), 1.0, atol=1e-4)
    # brightness and contrast of the set are normalised away
    np.testing.assert_allclose(patch_descriptors([3.0 * v + 40.0 for v in levels], 0, 64, seed=3), d, atol=1e-4)
    np.testing.assert_array_equal(patch_descriptors(levels, 0, 64, seed=3), d)  # deterministic
    # one mean and std per channel, not per descriptor component: on a horizontal ramp every patch
    # keeps its left-to-right slope (per-component centring would flatten each patch)
    ramp = np.broadcast_to(np.arange(40, dtype=np.float32)[None, :, None], (30, 40, 3))
    steps = np.diff(patch_descriptors([ramp], 0, 50).reshape(-1, 7, 7, 3), axis=2)
    np.testing.assert_allclose(steps, steps[0, 0, 0, 0], rtol=1e-4)
    assert steps[0, 0, 0, 0] > 0.05
    assert not np.array_equal(patch_descriptors(levels, 0, 64, seed=4), d)


# ----------------------------------------------------------------------------- SWD of image sets


def test_swd_identity_symmetry_and_determinism(photos):
    same = swd(photos, [im.copy() for im in photos], seed=1)
    assert set(same) == {"level0", "level1", "level2", "mean"}  # 96 px a side: levels of 96, 48 and 24 px
    assert all(v == pytest.approx(0.0, abs=1e-6) for v in same.values())
    noisy = _noisy(photos, 8.0)
    ab, ba = swd(photos, noisy, seed=1), swd(noisy, photos, seed=1)
    assert ab == pytest.approx(ba, rel=1e-6)
    assert swd(photos, noisy, seed=1) == ab  # deterministic given the seed
    assert ab["mean"] > 10.0
    assert ab["mean"] == pytest.approx(np.mean([ab[f"level{k}"] for k in range(3)]))
    # a set against a different set of photos is far; the same photos as floats score the same as uint8
    assert swd(photos[:3], photos[3:], seed=1)["mean"] > 30.0
    assert swd([im.astype(np.float32) for im in photos], noisy, seed=1) == pytest.approx(ab, rel=1e-5)


def test_swd_grows_with_noise_and_blur(photos):
    noise = [swd(photos, _noisy(photos, s), seed=0) for s in (1.0, 4.0, 12.0, 30.0)]
    blur = [swd(photos, _blurred(photos, s), seed=0) for s in (0.5, 1.0, 2.0, 4.0)]
    for series in (noise, blur):
        means = [r["mean"] for r in series]
        assert all(lo < hi for lo, hi in zip(means, means[1:])), means
        fine = [r["level0"] for r in series]  # the finest level sees both first
        assert all(lo < hi for lo, hi in zip(fine, fine[1:])), fine


def test_swd_sizes_levels_and_errors(photos):
    mixed = [photos[0], photos[1][:80, :100], photos[2][:64, :64]]
    result = swd(mixed, _noisy(mixed, 6.0), patches_per_image=32, directions=16, repeats=2)
    assert set(result) == {"level0", "level1", "level2", "mean"}  # auto: the 64 px image -> 64, 32, 16
    assert auto_levels([(512, 768, 3)]) == 6 and auto_levels([(1024, 1024)]) == 7 and auto_levels([(10, 10)]) == 1
    assert set(swd(photos, photos, levels=2)) == {"level0", "level1", "mean"}
    with pytest.raises(ValueError, match=r"images_b\[1\]: a 40x40 image is too small for 4 levels"):
        swd(photos, [photos[0], photos[0][:40, :40]], levels=4)
    with pytest.raises(ValueError, match="smaller than one 7x7"):
        swd(photos, [photos[0][:5]])
    with pytest.raises(ValueError, match="dtype"):
        swd(photos, [photos[0].astype(np.int64)])
    with pytest.raises(ValueError, match="NaN or infinite"):
        swd(photos, [np.where(np.arange(photos[0].shape[1])[:, None] == 3, np.nan, photos[0].astype(np.float32))])
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        swd(photos, [photos[0][..., 0]])
    with pytest.raises(ValueError, match="no images"):
        swd(photos, [])
    with pytest.raises(ValueError, match="patches_per_image"):
        swd(photos, photos, patches_per_image=0)
