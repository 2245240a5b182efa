"""Tests for the 2-D scattering transform (jaxcomp.cluster.scattering).

Every transform below runs on (2, 16, 16) images with J = 2, L = 4 (K = 25 channels of 4 x 4), so
one compiled program serves the whole module.
"""

import numpy as np
import pytest

from jaxcomp.cluster.scattering import filter_bank, n_channels, padded_shape, scattering2d, scattering_features

J, L, H = 2, 4, 16


def _order(J, L):
    """Scattering order (0, 1, 2) of every channel, in kymatio's channel order."""
    return np.array([0] + [1] * (J * L) + [2] * (L * L * J * (J - 1) // 2))


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).random((2, H, H)).astype(np.float32)


@pytest.fixture(scope="module")
def coeffs(images):
    return np.asarray(scattering2d(images, J, L))


def test_shape_and_channel_count(coeffs):
    assert coeffs.shape == (2, n_channels(J, L), H // 2**J, H // 2**J) == (2, 25, 4, 4)
    assert coeffs.dtype == np.float32
    assert n_channels(3, 8) * 4 * 4 == 3472  # the literature's MNIST feature size (32 x 32 images)


def test_matches_kymatio_numpy(images, coeffs):
    """Against kymatio 0.3's NumPy frontend (imported from its 2-D module: ``kymatio.numpy`` also
    loads the 3-D code, which needs ``scipy.special.sph_harm``, gone from recent scipy).

    kymatio normalises its Gaussians with ``3.1415`` where we use ``pi``: every filter differs by
    the factor ``pi / 3.1415``, so an order-``o`` coefficient (``o`` wavelets and one low-pass)
    by ``(pi / 3.1415)^(o + 1)``. With that factor applied, every coefficient agrees to 2e-5
    relative (float32 FFTs; measured 3e-6), floor 1e-3 of the largest coefficient.

    Guards against: wrong filter parameters (sigma, centre frequency, slant, angle), a wrong
    padding / subsampling / folding, a wrong channel order.
    """
    frontend = pytest.importorskip("kymatio.scattering2d.frontend.numpy_frontend")
    ref = frontend.ScatteringNumPy2D(J=J, shape=(H, H), L=L)(images).astype(np.float64)
    ours = coeffs.astype(np.float64) * ((np.pi / 3.1415) ** (_order(J, L) + 1))[None, :, None, None]
    assert ref.shape == ours.shape
    np.testing.assert_allclose(ours, ref, rtol=2e-5, atol=1e-3 * 2e-5 * np.abs(ref).max())


def test_transpose_permutes_orientations(images, coeffs):
    """Transposing the image maps direction angle ``a`` to ``pi/2 - a``; with kymatio's angles
    ``(L/2 - 1 - t) pi / L`` that is orientation ``t -> (L/2 - 2 - t) mod L``. So the transform of
    the transposed image is the transposed transform with orientations permuted, exactly (all
    filters live on the same integer grid; padding and subsampling commute with transposition).

    Guards against: a wrong angle in the filters or in the order-2 channel layout (theta1 / j2 /
    theta2 axes swapped), which breaks the permutation.
    """
    St = np.asarray(scattering2d(np.ascontiguousarray(images.transpose(0, 2, 1)), J, L))
    p = [(L // 2 - 2 - t) % L for t in range(L)]
    idx = [0] + [1 + j * L + p[t] for j in range(J) for t in range(L)]
    order2 = {}
    for j1 in range(J):
        for t1 in range(L):
            for j2 in range(j1 + 1, J):
                for t2 in range(L):
                    order2[(j1, t1, j2, t2)] = len(order2) + 1 + J * L
    idx += [order2[(j1, p[t1], j2, p[t2])] for (j1, t1, j2, t2) in order2]
    np.testing.assert_allclose(St, coeffs[:, idx].transpose(0, 1, 3, 2), atol=1e-5)
    assert np.abs(St - coeffs.transpose(0, 1, 3, 2)).max() > 1e-2  # the permutation is not the identity


def test_order0_is_lowpass_average_and_constant_images():
    """The low-pass filter sums to 1 and every wavelet to 0 (zero-mean Morlets), so a constant
    image ``c`` has order-0 coefficients exactly ``c`` and all higher orders 0.

    Guards against: a missing Morlet mean correction, a wrong Gaussian normalisation.
    """
    c = np.full((2, H, H), 0.7, np.float32)
    S = np.asarray(scattering2d(c, J, L))
    np.testing.assert_allclose(S[:, 0], 0.7, rtol=1e-5)
    assert np.abs(S[:, 1:]).max() < 1e-5


def test_filter_normalisation():
    """phi_hat(0) = 1 at every resolution, psi_hat(0) = 0, and the Littlewood-Paley sum
    ``|phi_hat|^2 + sum |psi_hat|^2`` stays in (0, 2) (no frequency amplified more than twice)."""
    Hp, Wp = padded_shape(H, H, J)
    assert (Hp, Wp) == (24, 24)
    fb = filter_bank(Hp, Wp, J, L)
    for r in range(J):
        assert fb["phi"][r][0, 0] == pytest.approx(1.0, abs=1e-6)
    for v in fb["psi"].values():
        assert np.abs(v[:, 0, 0]).max() < 1e-6
    lp = fb["phi"][0] ** 2 + sum((fb["psi"][(j, 0)] ** 2).sum(0) for j in range(J))
    assert 0 < lp.min() and lp.max() < 2


def test_approximate_translation_invariance():
    """A one-pixel shift of a stroke image moves its pixels by 71 % (relative L2) but its
    scattering coefficients by < 35 % (measured 24 % at J = 2), while a different stroke moves
    them by > 50 % (measured 66 %)."""
    img = np.zeros((2, H, H), np.float32)
    img[:, 5:11, 6:9] = 1
    img[:, 5:7, 6:12] = 1
    other = np.zeros_like(img)
    other[:, 4:12, 7] = 1

    def rel(a, b):
        return float(np.linalg.norm(a - b) / np.linalg.norm(a))

    S, Ss, So = (np.asarray(scattering2d(a, J, L))[0] for a in (img, np.roll(img, 1, axis=2), other))
    assert rel(img, np.roll(img, 1, axis=2)) > 0.7
    assert rel(S, Ss) < 0.35 and rel(S, So) > 0.5


def test_batched_features_match_single_call(images, coeffs):
    three = np.concatenate([images, images[:1]])  # 3 images in batches of 2: the last one padded
    out = scattering_features(three, J, L, batch_size=2)
    np.testing.assert_allclose(out, np.concatenate([coeffs, coeffs[:1]]), atol=1e-6)


@pytest.mark.parametrize(
    "x, kwargs, match",
    [
        (np.zeros((H, H), np.float32), {}, "N, H, W"),
        (np.zeros((2, H, H), np.uint8), {}, "floating"),
        (np.zeros((2, 3, 3), np.float32), {}, "too small"),
        (np.zeros((2, H, H), np.float32), {"max_order": 3}, "max_order"),
        (np.zeros((2, H, H), np.float32), {"L": 0}, "L must be"),
    ],
)
def test_bad_input(x, kwargs, match):
    with pytest.raises(ValueError, match=match):
        scattering2d(x, **{"J": J, "L": L, **kwargs})


def test_scattering_vectors_normalise_paths_and_cache(tmp_path, coeffs, images):
    """MNIST-style vectors: images zero-padded to ``pad_to``, every path of every image divided by
    its largest |coefficient| (so each path's max is 1, or the path is all zero), flattened; the
    cache returns the same array without recomputing.

    Guards against: the per-path normalisation dropped or taken over the wrong axis."""
    from jaxcomp.cluster.data import scattering_vectors

    small = images[:, 2:14, 2:14]  # 12 x 12, zero-padded back to 16 x 16: the module's compiled shape
    V = scattering_vectors(small.reshape(2, -1), J=J, L=L, pad_to=H, cache_dir=str(tmp_path))
    assert V.shape == (2, n_channels(J, L) * 16)
    P = np.abs(V.reshape(2, n_channels(J, L), 16)).max(axis=2)
    assert np.all((np.abs(P - 1) < 1e-6) | (P == 0)) and (P == 1).mean() > 0.9
    padded = np.pad(small, ((0, 0), (2, 2), (2, 2)))
    S = np.asarray(scattering2d(padded, J, L)).reshape(2, n_channels(J, L), 16)
    np.testing.assert_allclose(V.reshape(S.shape), S / np.abs(S).max(axis=2, keepdims=True), atol=1e-6)
    cached = list(tmp_path.iterdir())
    assert len(cached) == 1
    np.save(cached[0], V * 2)  # a changed cache file is what comes back: it was not recomputed
    np.testing.assert_allclose(scattering_vectors(small, J=J, L=L, pad_to=H, cache_dir=str(tmp_path)), V * 2)
