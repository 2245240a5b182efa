"""jaxcomp.metrics: MS-SSIM, SSIM and PSNR against reference values of well-known implementations.

The numbers below come from ``python -m experiments.msssim_reference`` (pytorch_msssim 1.0, a
transcription of Google's msssim.py, scikit-image 0.26) on centre crops of the shipped photos; the
test makes the same distorted crops again (checked by CRC-32) and needs none of those packages.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcomp.metrics import ms_ssim, mse, psnr, ssim_components

# pytorch_msssim 1.0, scikit-image 0.26.0, imagecodecs 2026.3.6 (libjpeg libjpeg_turbo 3.1.3/8.0)
REFERENCE = {('Picture_0B_by_freespace.png', (256, 256), 'jpeg10'): {'crc32': 4196994884,
                                                         'ms_ssim_google': 0.8662514,
                                                         'ms_ssim_rgb_pytorch': 0.8656094,
                                                         'ms_ssim_channels': [0.8018279, 0.9101412, 0.884859],
                                                         'ssim': 0.6589978,
                                                         'psnr': 25.3983989},
 ('Picture_0B_by_freespace.png', (256, 256), 'jpeg50'): {'crc32': 707715906,
                                                         'ms_ssim_google': 0.9535993,
                                                         'ms_ssim_rgb_pytorch': 0.9534408,
                                                         'ms_ssim_channels': [0.9298584, 0.9759458, 0.954518],
                                                         'ssim': 0.809809,
                                                         'psnr': 29.2758523},
 ('Picture_0B_by_freespace.png', (256, 256), 'noise10'): {'crc32': 1291368317,
                                                          'ms_ssim_google': 0.9401866,
                                                          'ms_ssim_rgb_pytorch': 0.9401418,
                                                          'ms_ssim_channels': [0.9363255,
                                                                               0.9353609,
                                                                               0.9487388],
                                                          'ssim': 0.6173214,
                                                          'psnr': 28.7255183},
 ('Picture_0B_by_freespace.png', (256, 256), 'blur5'): {'crc32': 2043720702,
                                                        'ms_ssim_google': 0.9479716,
                                                        'ms_ssim_rgb_pytorch': 0.9478798,
                                                        'ms_ssim_channels': [0.9384328, 0.9458996, 0.959307],
                                                        'ssim': 0.7640876,
                                                        'psnr': 26.6406298},
 ('aitzgorri_by_Aitzol_Berasategi.png', (176, 240), 'jpeg10'): {'crc32': 42483707,
                                                                'ms_ssim_google': 0.8120177,
                                                                'ms_ssim_rgb_pytorch': 0.8114211,
                                                                'ms_ssim_channels': [0.8122481,
                                                                                     0.8650785,
                                                                                     0.7569366],
                                                                'ssim': 0.6591734,
                                                                'psnr': 27.6915177},
 ('aitzgorri_by_Aitzol_Berasategi.png', (176, 240), 'jpeg50'): {'crc32': 1642174708,
                                                                'ms_ssim_google': 0.9420661,
                                                                'ms_ssim_rgb_pytorch': 0.9417629,
                                                                'ms_ssim_channels': [0.9524289,
                                                                                     0.9743394,
                                                                                     0.8985203],
                                                                'ssim': 0.8130797,
                                                                'psnr': 31.935795},
 ('aitzgorri_by_Aitzol_Berasategi.png', (176, 240), 'noise10'): {'crc32': 2470900861,
                                                                 'ms_ssim_google': 0.9208978,
                                                                 'ms_ssim_rgb_pytorch': 0.9205459,
                                                                 'ms_ssim_channels': [0.9474221,
                                                                                      0.9153781,
                                                                                      0.8988375],
                                                                 'ssim': 0.5959212,
                                                                 'psnr': 28.1460013},
 ('aitzgorri_by_Aitzol_Berasategi.png', (176, 240), 'blur5'): {'crc32': 448310333,
                                                               'ms_ssim_google': 0.9562127,
                                                               'ms_ssim_rgb_pytorch': 0.956019,
                                                               'ms_ssim_channels': [0.9372397,
                                                                                    0.9579082,
                                                                                    0.9729091],
                                                               'ssim': 0.7743565,
                                                               'psnr': 31.6351066},
 ('friends_by_Aitzol_Berasategi.png', (256, 192), 'jpeg10'): {'crc32': 1929050150,
                                                              'ms_ssim_google': 0.9473387,
                                                              'ms_ssim_rgb_pytorch': 0.9473287,
                                                              'ms_ssim_channels': [0.9508146,
                                                                                   0.9601667,
                                                                                   0.9310049],
                                                              'ssim': 0.8049064,
                                                              'psnr': 27.1283501},
 ('friends_by_Aitzol_Berasategi.png', (256, 192), 'jpeg50'): {'crc32': 1290299125,
                                                              'ms_ssim_google': 0.9873825,
                                                              'ms_ssim_rgb_pytorch': 0.987375,
                                                              'ms_ssim_channels': [0.9880138,
                                                                                   0.9927902,
                                                                                   0.9813209],
                                                              'ssim': 0.9279683,
                                                              'psnr': 32.8138242},
 ('friends_by_Aitzol_Berasategi.png', (256, 192), 'noise10'): {'crc32': 3084835315,
                                                               'ms_ssim_google': 0.9614008,
                                                               'ms_ssim_rgb_pytorch': 0.9614009,
                                                               'ms_ssim_channels': [0.960331,
                                                                                    0.9614803,
                                                                                    0.9623913],
                                                               'ssim': 0.7211189,
                                                               'psnr': 28.1719739},
 ('friends_by_Aitzol_Berasategi.png', (256, 192), 'blur5'): {'crc32': 3350055462,
                                                             'ms_ssim_google': 0.9444604,
                                                             'ms_ssim_rgb_pytorch': 0.9444591,
                                                             'ms_ssim_channels': [0.9446018,
                                                                                  0.9461105,
                                                                                  0.9426649],
                                                             'ssim': 0.7547717,
                                                             'psnr': 25.846367},
 ('Wine_by_Jakkub_Mede.png', (64, 64), 'jpeg10'): {'crc32': 2260629161,
                                                   'ms_ssim_google': 0.9263201,
                                                   'ssim': 0.7401243,
                                                   'psnr': 26.1630118},
 ('Wine_by_Jakkub_Mede.png', (64, 64), 'jpeg50'): {'crc32': 2015780339,
                                                   'ms_ssim_google': 0.9776599,
                                                   'ssim': 0.8927596,
                                                   'psnr': 31.0796548},
 ('Wine_by_Jakkub_Mede.png', (64, 64), 'noise10'): {'crc32': 4280366035,
                                                    'ms_ssim_google': 0.9632413,
                                                    'ssim': 0.6923099,
                                                    'psnr': 28.2332133},
 ('Wine_by_Jakkub_Mede.png', (64, 64), 'blur5'): {'crc32': 3428939913,
                                                  'ms_ssim_google': 0.956895,
                                                  'ssim': 0.8093494,
                                                  'psnr': 26.7430368},
 ('seeding_by_Clements_Engelhardt.png', (97, 75), 'jpeg10'): {'crc32': 2605882050,
                                                              'ms_ssim_google': 0.8494128,
                                                              'ssim': 0.7759004,
                                                              'psnr': 27.9962381},
 ('seeding_by_Clements_Engelhardt.png', (97, 75), 'jpeg50'): {'crc32': 601919722,
                                                              'ms_ssim_google': 0.9699699,
                                                              'ssim': 0.9169348,
                                                              'psnr': 33.6647915},
 ('seeding_by_Clements_Engelhardt.png', (97, 75), 'noise10'): {'crc32': 3484356953,
                                                               'ms_ssim_google': 0.9244879,
                                                               'ssim': 0.5631,
                                                               'psnr': 28.351798},
 ('seeding_by_Clements_Engelhardt.png', (97, 75), 'blur5'): {'crc32': 1833076461,
                                                             'ms_ssim_google': 0.9881709,
                                                             'ssim': 0.9407708,
                                                             'psnr': 31.5442721}}

MS_SSIM_TOL = 2e-5  # measured: <= 1e-6 vs msssim.py, <= 5e-6 per channel vs pytorch_msssim
SSIM_TOL = 1e-5
PSNR_TOL_DB = 1e-4


@pytest.fixture(scope="module")
def reference_module():
    import experiments.msssim_reference as m

    return m


def _cases(reference_module, size):
    """(names, x uint8 [N, h, w, 3], y uint8 [N, h, w, 3], reference dicts) for one crop size."""
    keys = [k for k in REFERENCE if k[1] == size]
    if any(k[2].startswith("jpeg") for k in keys):
        pytest.importorskip("imagecodecs")
    xs, ys = [], []
    for name, crop, distortion in keys:
        x = reference_module.sample_crop(name, crop)
        y = reference_module.distort(x, distortion)
        assert reference_module.checksum(y) == REFERENCE[(name, crop, distortion)]["crc32"], (
            f"the {distortion} distortion of {name} changed (a new libjpeg in imagecodecs?): "
            "run python -m experiments.msssim_reference and update REFERENCE")
        xs.append(x)
        ys.append(y)
    return keys, np.stack(xs), np.stack(ys), [REFERENCE[k] for k in keys]


SIZES = sorted({k[1] for k in REFERENCE})


@pytest.mark.parametrize("size", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
def test_matches_reference_values(reference_module, size):
    keys, x, y, refs = _cases(reference_module, size)
    got_ms = np.asarray(jax.jit(ms_ssim)(x, y))
    got_ssim = np.asarray(ssim_components(x, y)[0])
    got_psnr = np.asarray(psnr(x, y))
    for k, ref, m, s, p in zip(keys, refs, got_ms, got_ssim, got_psnr):
        assert m == pytest.approx(ref["ms_ssim_google"], abs=MS_SSIM_TOL), k
        assert s == pytest.approx(ref["ssim"], abs=SSIM_TOL), k
        assert p == pytest.approx(ref["psnr"], abs=PSNR_TOL_DB), k
    if "ms_ssim_channels" not in refs[0]:
        return
    # One channel as a grey image: pytorch_msssim's definition is the same as ours.
    n, h, w, _ = x.shape
    grey = lambda a: a.transpose(0, 3, 1, 2).reshape(n * 3, h, w, 1)
    got_channels = np.asarray(jax.jit(ms_ssim)(grey(x), grey(y))).reshape(n, 3)
    for k, ref, got, m in zip(keys, refs, got_channels, got_ms):
        np.testing.assert_allclose(got, ref["ms_ssim_channels"], atol=MS_SSIM_TOL, rtol=0, err_msg=str(k))
        # RGB: pytorch_msssim averages per-channel MS-SSIM, we average each scale over channels first
        # (msssim.py); on these photos that is at most ~7e-4 apart.
        assert abs(m - ref["ms_ssim_rgb_pytorch"]) < 1e-3, k


def test_reference_orders_distortions_sensibly():
    """Not a check of jaxcomp, of the table: milder JPEG scores higher, every score is in (0, 1)."""
    for (name, size, d), v in REFERENCE.items():
        assert 0.5 < v["ms_ssim_google"] < 1 and 0 < v["ssim"] < 1 and 15 < v["psnr"] < 45
        if d == "jpeg10":
            better = REFERENCE[(name, size, "jpeg50")]
            assert better["ms_ssim_google"] > v["ms_ssim_google"] and better["psnr"] > v["psnr"]


def _photo_pair(reference_module, size=(64, 64)):
    x = reference_module.sample_crop("Wine_by_Jakkub_Mede.png", size)
    return x[None], reference_module.distort(x, "noise10")[None]


def test_identical_images(reference_module):
    x, _ = _photo_pair(reference_module)
    assert float(ms_ssim(x, x)[0]) == pytest.approx(1.0, abs=1e-6)
    s, cs = ssim_components(x, x)
    assert float(s[0]) == pytest.approx(1.0, abs=1e-6) and float(cs[0]) == pytest.approx(1.0, abs=1e-6)
    assert float(mse(x, x)[0]) == 0.0 and np.isinf(float(psnr(x, x)[0]))


def test_psnr_by_hand():
    x = np.zeros((2, 4, 4, 3), np.uint8)
    y = x.copy()
    y[0, 0, 0, 0] = 10  # one error of 10 in 48 subpixels: MSE 100 / 48
    y[1] = 255  # everything off by the full range: MSE 255^2, PSNR 0 dB
    np.testing.assert_allclose(np.asarray(mse(x, y)), [100 / 48, 255.0**2], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(psnr(x, y)), [10 * np.log10(255.0**2 * 48 / 100), 0.0], atol=1e-4)
    # max_val = 1 for images in [0, 1]
    np.testing.assert_allclose(np.asarray(psnr(x / 255.0, y / 255.0, max_val=1.0)), np.asarray(psnr(x, y)), atol=1e-4)
    # the training metrics' PSNR from a per-image MSE (floored, so an exact reconstruction is finite)
    from jaxcomp.metrics import psnr_from_mse

    np.testing.assert_allclose(np.asarray(psnr_from_mse(jnp.asarray([100 / 48, 255.0**2, 0.0]))),
                               [10 * np.log10(255.0**2 * 48 / 100), 0.0, 10 * np.log10(255.0**2 / 1e-10)], rtol=1e-5)
    np.testing.assert_allclose(float(psnr_from_mse(jnp.asarray(0.01), max_val=1.0)), 20.0, rtol=1e-6)


def test_scale_invariance_of_max_val(reference_module):
    x, y = _photo_pair(reference_module)
    a = ms_ssim(x, y)
    b = ms_ssim(x / 255.0, y / 255.0, max_val=1.0)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def test_more_noise_scores_lower(reference_module):
    x, _ = _photo_pair(reference_module)
    rng = np.random.RandomState(1)
    scores = [float(ms_ssim(x, np.clip(x + rng.normal(0, s, x.shape), 0, 255))[0]) for s in (2, 8, 32)]
    assert scores[0] > scores[1] > scores[2] > 0


def test_gradient_is_finite(reference_module):
    """MS-SSIM is a training loss: its gradient is finite, also at a perfect reconstruction."""
    x, y = _photo_pair(reference_module)
    x = jnp.asarray(x, jnp.float32)
    loss = jax.jit(jax.value_and_grad(lambda y: 1.0 - jnp.mean(ms_ssim(x, y))))
    for target in (jnp.asarray(y, jnp.float32), x, jnp.full_like(x, 128.0)):
        value, grad = loss(target)
        assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad)))
    value, grad = loss(jnp.asarray(y, jnp.float32))
    assert float(value) > 0 and float(jnp.abs(grad).max()) > 0
    # a small step against the gradient improves the score
    value2, _ = loss(jnp.asarray(y, jnp.float32) - 1e3 * grad)
    assert float(value2) < float(value)


@pytest.mark.parametrize("size", [11, 6])
def test_blur_gradient_is_the_gradient_of_the_blur(size):
    """The blur's hand-written gradient (a blur of the padded cotangent) is the autodiff gradient
    of its shifted-slices form."""
    from jaxcomp.metrics.image import _blur, _blur_valid

    x = jax.random.uniform(jax.random.PRNGKey(0), (2, 23, 30, 3))
    ct = jax.random.normal(jax.random.PRNGKey(1), (2, 24 - size, 31 - size, 3))
    ours = jax.vjp(lambda x: _blur(x, size, 1.5), x)[1](ct)[0]
    autodiff = jax.vjp(lambda x: _blur_valid(x, size, 1.5), x)[1](ct)[0]
    np.testing.assert_allclose(np.asarray(ours), np.asarray(autodiff), atol=1e-6)
    assert float(jnp.abs(autodiff).max()) > 0.1


@pytest.mark.parametrize("fn", [ms_ssim, ssim_components, psnr, mse])
def test_wrong_shapes_raise(fn):
    a = np.zeros((1, 32, 32, 3), np.float32)
    with pytest.raises(ValueError, match="same shape"):
        fn(a, a[:, :16])
    with pytest.raises(ValueError, match="same shape"):
        fn(a, a[0])  # [H, W, C] would otherwise broadcast
    if fn in (ms_ssim, ssim_components, psnr):  # one image [H, W, C] would be read as H images
        with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
            fn(a[0], a[0])


@pytest.mark.parametrize("fn", [ms_ssim, psnr])
def test_images_that_look_like_two_scales_warn(fn):
    """``uint8`` against ``[0, 1]`` floats warns (psnr gave 6 dB without a word), and so do two
    ``[0, 1]`` float images at the default ``max_val`` of 255 (psnr 48 dB too high); a warning, not an
    error, since a nearly black reconstruction on the 0-255 scale looks the same. A black image, the
    same scale or a jitted call gives no warning."""
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    unit = u8 / np.float32(255)
    for x, y in ((u8, unit), (unit, u8)):
        with pytest.warns(UserWarning, match="one scale"):
            fn(x, y)
    with pytest.warns(UserWarning, match="max_val=1.0"):
        fn(unit, unit[:, ::-1])
    signed = unit * 2 - 1  # a tanh decoder's [-1, 1]: MS-SSIM 0.99998 and PSNR 70 dB at max_val 255
    with pytest.warns(UserWarning, match=r"within \[-1, 1\].*\(x \+ 1\) / 2"):
        fn(signed, signed[:, ::-1])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fn(unit, unit[:, ::-1], max_val=1.0)
        fn(u8, u8[:, ::-1].astype(np.float32))  # uint8 against floats on the same scale
        black = np.zeros_like(unit)
        fn(black, black)
        jax.jit(fn)(u8, unit)  # traced: nothing to look at


def test_anticorrelated_images_score_near_zero_not_nan():
    """A negative contrast-structure term (an image against its negative) is kept at a tiny positive
    value: a negative base with a fractional exponent would make MS-SSIM NaN (an untrained codec's loss)."""
    x = np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3)).astype(np.float32)
    score = float(ms_ssim(x, 255.0 - x)[0])
    assert np.isfinite(score) and 0.0 < score < 1e-3


def test_too_small_for_five_scales():
    a = np.zeros((1, 15, 40, 3), np.float32)
    with pytest.raises(ValueError, match="at least 16 pixels"):
        ms_ssim(a, a)
    assert float(ms_ssim(a[:, :, :15], a[:, :, :15], weights=(0.5, 0.5))[0]) == pytest.approx(1.0)


def test_reconstruction_scores_average_per_image_psnrs():
    """``psnr`` is the mean of the images' PSNRs (the sweeps' tables), not the PSNR of the mean MSE."""
    from jaxcomp.metrics import reconstruction_scores

    ref = np.zeros((2, 4, 4, 3), np.uint8)
    dec = ref.copy()
    dec[0] += 1  # MSE 1
    dec[1] += 10  # MSE 100
    scores = reconstruction_scores(dec, ref)
    assert scores["mse"] == pytest.approx(50.5)
    assert scores["psnr"] == pytest.approx(10 * np.log10(255.0**2) - 10)  # (48.13 + 28.13) / 2
    assert reconstruction_scores(ref, ref)["psnr"] == pytest.approx(10 * np.log10(255.0**2 / 1e-10))


def test_bad_arguments_are_named():
    """Arguments that would give numbers from nothing are refused by name: sets of two shapes
    (nothing is broadcast), NaN, an empty set, a data range <= 0 (in every function that takes one), no
    scale weight, a 0-wide window."""
    from jaxcomp.metrics import reconstruction_scores

    a = np.zeros((2, 16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match="of one shape"):
        reconstruction_scores(a, a[0])
    with pytest.raises(ValueError, match="non-empty"):
        reconstruction_scores(a[:0], a[:0])
    with pytest.raises(ValueError, match="NaN"):
        reconstruction_scores(np.full(a.shape, np.nan), a)
    for f in (ms_ssim, psnr, ssim_components, reconstruction_scores):  # psnr gave -inf, or dB of the wrong sign
        for bad in (0, -1.0, float("nan")):
            with pytest.raises(ValueError, match="max_val"):
                f(a, a, max_val=bad)
    from jaxcomp.metrics import psnr_from_mse

    with pytest.raises(ValueError, match="max_val"):
        psnr_from_mse(np.ones(2), max_val=0.0)
    with pytest.raises(ValueError, match="at least one scale weight"):
        ms_ssim(a, a, weights=())
    with pytest.raises(ValueError, match="filter_size"):
        ssim_components(a, a, filter_size=0)
    assert float(mse([[1.0, 2.0]], [[1.0, 4.0]])[0]) == 2.0  # nested lists are arrays
