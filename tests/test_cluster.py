"""Tests for jaxcomp.cluster: SSC-OMP / SSC-MP, spectral clustering, metrics, configs."""

import os
import re
import shutil
import subprocess
import sys
import warnings

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp
from sklearn import metrics as skm
from sklearn.utils.estimator_checks import parametrize_with_checks

from jaxcomp.cluster import (
    SSCMP,
    SSCOMP,
    adjusted_rand_index,
    affinity_from_coefficients,
    clustering_accuracy,
    clustering_error,
    normalized_mutual_info,
    sparse_coefficients,
    spectral_clustering,
    tau_from_noise,
    union_of_subspaces,
)
from jaxcomp.cluster.baselines import sklearn_ssc_omp_coefficients
from jaxcomp.cluster.data import load_mnist
from jaxcomp.configs import ConfigError, load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHUNK = 32  # one jit shape per algorithm for all the small problems below


@pytest.fixture(scope="module")
def subspaces():
    # 3 subspaces of dim 4 in R^30, 24 points each, independent: perfectly clusterable.
    return union_of_subspaces(30, 4, 3, intersection_dim=0, rho=8, sigma=0.0, seed=0)


@pytest.fixture(scope="module")
def fitted(subspaces):
    X, _ = subspaces
    return {
        "omp": SSCOMP(n_clusters=3, s_max=6, tau=1e-3, chunk_size=CHUNK).fit(X),
        "mp": SSCMP(n_clusters=3, s_max=6, tau=1e-3, chunk_size=CHUNK).fit(X),
    }


@pytest.mark.parametrize("algorithm", ["omp", "mp"])
def test_ssc_clusters_union_of_subspaces(fitted, subspaces, algorithm):
    _, y = subspaces
    est = fitted[algorithm]
    assert clustering_error(y, est.labels_) == 0.0
    A = est.affinity_matrix_
    assert sp.issparse(A) and A.shape == (len(y), len(y))
    assert est.n_features_in_ == 30
    assert abs(A - A.T).max() < 1e-6
    assert A.diagonal().max() == 0  # each point is coded by the others only
    # no false discoveries: every coefficient links points of the same subspace
    C = est.coef_.tocoo()
    assert np.all(y[C.row] == y[C.col])


def test_ssc_tau_stops_at_the_noise_floor(fitted):
    """Noiseless points of 4-dim subspaces, tau = 1e-3, s_max = 6: SSC-OMP needs at most d = 4
    steps (exact least squares on the support) to reach ``||r|| <= tau``; SSC-MP stops before
    s_max for some points, and only once their residual is below ``tau``.

    Guards against: a wrong stopping tolerance (``tau`` not passed on, or swapped with
    ``corr_tol``), OMP not re-solving least squares over its support.
    """
    omp_, mp_ = fitted["omp"], fitted["mp"]
    assert omp_.n_iter_.max() == 4 and omp_.residual_norm_.max() <= 1e-3
    early = mp_.n_iter_ < 6
    assert early.any() and mp_.residual_norm_[early].max() <= 1e-3


def test_ssc_omp_degrades_past_subspace_dimension_mp_does_not():
    """The paper's s_max robustness (Tschannen & Bölcskei 2018) in miniature: 3 noisy
    (sigma = 0.1) 4-dim subspaces in R^30, tau = 0. With s_max = 6 both SSC-OMP and SSC-MP put
    < 15 % of their coefficient mass on other subspaces; with s_max = 16 = 4d, OMP (whose
    residual is orthogonal to the point's own subspace after ~d steps) puts > 40 % there and its
    clustering error exceeds 0.3, while MP keeps < 20 % there and clusters perfectly.

    Guards against: the headline silently breaking: SSC-MP losing its robustness (e.g. MP
    re-solving least squares like OMP, or a step that overshoots), SSC-OMP not re-solving least
    squares (it would not degrade).
    """
    X, y = union_of_subspaces(30, 4, 3, intersection_dim=0, rho=8, sigma=0.1, seed=1)  # the shapes of `subspaces`

    def run(algorithm, s_max, cluster):
        C, _ = sparse_coefficients(X, algorithm, s_max=s_max, tau=0.0, chunk_size=CHUNK)
        Cc = C.tocoo()
        wrong = np.abs(Cc.data[y[Cc.row] != y[Cc.col]]).sum() / np.abs(Cc.data).sum()
        if not cluster:
            return wrong, None
        labels, _ = spectral_clustering(affinity_from_coefficients(C), 3, n_init=3)
        return wrong, clustering_error(y, labels)

    for algorithm in ("omp", "mp"):  # s_max = 6: the programs compiled for `fitted`
        wrong, _ = run(algorithm, 6, cluster=False)
        assert wrong < 0.15, (algorithm, wrong)
    wrong, ce = run("omp", 16, cluster=True)
    assert wrong > 0.4 and ce > 0.3, (wrong, ce)
    wrong, ce = run("mp", 16, cluster=True)
    assert wrong < 0.2 and ce <= 0.02, (wrong, ce)


@pytest.mark.parametrize("method", ["loop", "gram"])
def test_sklearn_baseline_matches_jax_omp(fitted, subspaces, method):
    """Both scikit-learn baselines (``orthogonal_mp`` per point; ``orthogonal_mp_gram`` on the
    precomputed Gram with the point's own row / column zeroed) give our SSC-OMP coefficients.

    Guards against: the Gram baseline not excluding the point itself (it would code every point
    by itself), a wrong ``tau`` -> ``tol`` translation."""
    X, _ = subspaces
    C = sklearn_ssc_omp_coefficients(X, s_max=6, tau=1e-3, method=method)
    ours = fitted["omp"].coef_
    assert C.nnz > 0 and C.diagonal().max() == 0
    np.testing.assert_array_equal((abs(C) > 1e-4).toarray(), (abs(ours) > 1e-4).toarray())
    np.testing.assert_allclose(C.toarray(), ours.toarray(), atol=1e-3)
    part = sklearn_ssc_omp_coefficients(X, s_max=6, tau=1e-3, method=method, points=[3, 40])
    assert set(np.unique(part.tocoo().row)) == {3, 40}
    np.testing.assert_allclose(part[[3, 40]].toarray(), C[[3, 40]].toarray(), atol=1e-6)


def test_ssc_mp_pmax_and_chunking(subspaces):
    X, _ = subspaces
    C, info = sparse_coefficients(X, "mp", s_max=12, p_max=2, chunk_size=CHUNK)
    assert np.asarray((C != 0).sum(axis=1)).max() <= 2
    C1, _ = sparse_coefficients(X, "mp", s_max=12, p_max=2, chunk_size=len(X))
    np.testing.assert_allclose(C.toarray(), C1.toarray(), atol=1e-5)  # chunking changes nothing


def test_ssc_eigengap_estimates_clusters(fitted, subspaces):
    X, y = subspaces
    labels, k = spectral_clustering(fitted["mp"].affinity_matrix_, None)
    assert k == 3
    assert clustering_error(y, labels) == 0.0
    # the eigengap may pick max_clusters itself (it looks at max_clusters + 1 eigenvalues)
    assert spectral_clustering(fitted["mp"].affinity_matrix_, None, max_clusters=3)[1] == 3


def test_eigengap_of_one_cluster_on_a_connected_graph_warns():
    """Three noisy blocks joined by weak edges: the Laplacian's first gap is the largest, the heuristic
    answers 1 cluster, and the caller is told so (with n_clusters given, no warning)."""
    rng = np.random.default_rng(0)
    blocks = np.kron(np.eye(3), np.ones((10, 10)))
    A = sp.csr_matrix(blocks + 0.8 * (rng.random((30, 30)) < 0.9))
    A = (A + A.T) / 2
    with pytest.warns(RuntimeWarning, match="eigengap estimate is 1 cluster"):
        labels, k = spectral_clustering(A, None)
    assert k == 1 and set(labels) == {0}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert spectral_clustering(A, 3)[1] == 3


def test_spectral_separates_block_affinity():
    rng = np.random.default_rng(0)
    sizes = [15, 20, 25]
    y = np.repeat(np.arange(3), sizes)
    A = (y[:, None] == y[None, :]) * rng.random((60, 60))
    A = np.triu(A, 1)
    A = sp.csr_matrix(A + A.T)
    labels, k = spectral_clustering(A, 3)
    assert k == 3 and clustering_accuracy(y, labels) == 1.0


def test_large_graph_spectrum_matches_the_dense_one():
    """Above 500 nodes the Laplacian's smallest eigenvalues come from Lanczos (``eigsh``, the path of
    every MNIST run): they and their eigenvectors' span must be the dense ``eigh`` ones, smallest first."""
    from jaxcomp.cluster.spectral import laplacian_spectrum

    rng = np.random.default_rng(0)
    n, k = 600, 4
    y = rng.integers(0, k, n)
    A = np.where(y[:, None] == y[None, :], rng.random((n, n)), 0.02 * rng.random((n, n)) * (rng.random((n, n)) < 0.05))
    A = np.triu(A, 1)
    A = A + A.T
    vals, vecs = laplacian_spectrum(sp.csr_matrix(A), k + 1, seed=0)
    d = 1.0 / np.sqrt(A.sum(1))
    dense_vals, dense_vecs = np.linalg.eigh(np.eye(n) - d[:, None] * A * d[None, :])  # ascending
    np.testing.assert_allclose(vals, dense_vals[: k + 1], atol=1e-6)
    assert np.all(np.diff(vals) >= 0)
    # the same invariant subspace (the first k eigenvalues are separated from the rest)
    overlap = np.linalg.svd(vecs[:, :k].T @ dense_vecs[:, :k], compute_uv=False)
    np.testing.assert_allclose(overlap, 1.0, atol=1e-6)


def test_spectral_clustering_normalises_the_embedding_rows(monkeypatch):
    """Ng-Jordan-Weiss: k-means runs on the eigenvector rows scaled to unit norm (the rows of a
    node of high degree are otherwise longer, and k-means splits clusters by degree)."""
    from jaxcomp.cluster import spectral

    seen = []

    class Recorder(spectral.KMeans):
        def fit_predict(self, X, *args, **kwargs):
            seen.append(np.asarray(X))
            return super().fit_predict(X, *args, **kwargs)

    monkeypatch.setattr(spectral, "KMeans", Recorder)
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(3), 20)
    A = (y[:, None] == y[None, :]) * rng.random((60, 60)) * rng.choice([1.0, 100.0], 60)[:, None]
    A = np.triu(A, 1)
    labels, _ = spectral_clustering(sp.csr_matrix(A + A.T), 3)
    assert len(seen) == 1 and seen[0].shape == (60, 3)
    np.testing.assert_allclose(np.linalg.norm(seen[0], axis=1), 1.0, rtol=1e-6)
    assert clustering_accuracy(y, labels) == 1.0


def test_subspaces_intersect_in_exactly_t_dimensions_and_tau_follows_the_noise():
    """union_of_subspaces with intersection_dim t: each subspace has rank d, any two span 2d - t
    dimensions (they share exactly t); tau_for in noise mode is max(ssc.tau, tau_from_noise(sigma))."""
    from types import SimpleNamespace

    from jaxcomp.cluster.benchmarks import tau_for

    X, y = union_of_subspaces(ambient_dim=30, subspace_dim=4, n_subspaces=3, intersection_dim=2, rho=5.0, seed=1)
    rank = lambda A: int(np.linalg.matrix_rank(A.astype(np.float64), tol=1e-4))  # noqa: E731
    assert [rank(X[y == i]) for i in range(3)] == [4, 4, 4]
    assert [rank(np.concatenate([X[y == i], X[y == j]])) for i, j in ((0, 1), (1, 2), (0, 2))] == [6, 6, 6]
    cfg = SimpleNamespace(ssc=SimpleNamespace(tau_mode="noise", tau=0.05, tau_subspace_dim=4),
                          data=SimpleNamespace(ambient_dim=30, sigma=0.0))
    assert tau_for(cfg, 0.0) == 0.05
    assert tau_for(cfg, 0.5) == pytest.approx(tau_from_noise(0.5, 30, 4)) and tau_from_noise(0.5, 30, 4) > 0.05


def test_phase_cells_vary_only_their_axis_and_take_tau_at_their_own_noise_level(repo):
    """A phase diagram's row keeps the config's t, sigma and s_max except the one on its axis, and
    in tau_mode noise its tau is tau_for at the row's sigma (the (sigma, rho) diagram), not at the
    config's base sigma.

    Guards against: every noise level of the sigma diagram run with the base sigma's tau, an axis
    value not reaching the cell.
    """
    from jaxcomp.cluster.benchmarks import phase_cell, tau_for

    cfg = load_config(str(repo / "configs/ssc.py:synthetic_sigma"))
    assert cfg.grid.axes == "sigma_rho" and cfg.ssc.tau_mode == "noise"
    for sigma in cfg.grid.sigma:
        t, s, s_max, tau = phase_cell(cfg, sigma)
        assert (t, s, s_max) == (cfg.data.intersection_dim, sigma, cfg.ssc.s_max)
        assert tau == tau_for(cfg, sigma)
    taus = [phase_cell(cfg, sigma)[3] for sigma in cfg.grid.sigma]
    assert len(set(taus)) == len(taus), taus  # each noise level its own stopping threshold
    cfg = load_config(str(repo / "configs/ssc.py:noise_smax_tau"))
    assert phase_cell(cfg, 3) == (0, cfg.data.sigma, 3, tau_for(cfg, cfg.data.sigma))
    cfg = load_config(str(repo / "configs/ssc.py:tiny"))
    assert phase_cell(cfg, 2)[:3] == (2, cfg.data.sigma, cfg.ssc.s_max)
    with cfg.unlocked():
        cfg.grid.axes = "rho_rho"
    with pytest.raises(ValueError, match="unknown grid.axes"):
        phase_cell(cfg, 2)


def test_tau_from_noise():
    assert tau_from_noise(0.0, 200) == 0.0
    assert tau_from_noise(0.5, 200, 20) < tau_from_noise(0.5, 200, 0)
    with pytest.raises(ValueError):
        tau_from_noise(-1.0, 200)


def test_tau_from_noise_matches_projection_residual():
    """The data-dependent threshold is 1.1 x the RMS residual of projecting a noisy unit point
    on its true subspace, checked by Monte Carlo (2000 points) for two (m, d, sigma).

    Guards against: a wrong tau formula (a missing square root, the subspace dimension or the
    1/(1 + sigma^2) normalisation dropped), which would make the data-dependent stopping rule
    stop too early or too late.
    """
    rng = np.random.default_rng(0)
    for m, d, sigma in ((200, 20, 0.5), (50, 10, 0.3)):
        U = np.linalg.qr(rng.standard_normal((m, d)))[0]
        a = rng.standard_normal((d, 2000))
        pts = U @ (a / np.linalg.norm(a, axis=0)) + sigma / np.sqrt(m) * rng.standard_normal((m, 2000))
        pts /= np.linalg.norm(pts, axis=0)
        rms = np.sqrt(np.mean(np.sum((pts - U @ (U.T @ pts)) ** 2, axis=0)))
        assert tau_from_noise(sigma, m, d) == pytest.approx(1.1 * rms, rel=0.01)


def test_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    for _ in range(5):
        a = rng.integers(0, 4, 200)
        b = np.where(rng.random(200) < 0.6, a, rng.integers(0, 5, 200))
        assert normalized_mutual_info(a, b) == pytest.approx(skm.normalized_mutual_info_score(a, b), abs=1e-10)
        assert adjusted_rand_index(a, b) == pytest.approx(skm.adjusted_rand_score(a, b), abs=1e-10)
    assert adjusted_rand_index([0], [0]) == skm.adjusted_rand_score([0], [0]) == 1.0  # one point: no pair, not NaN
    perm = np.array([2, 0, 3, 1])[a]
    assert clustering_accuracy(a, perm) == 1.0
    assert clustering_error([0, 0, 1, 1], [0, 1, 1, 1]) == pytest.approx(0.25)
    # one-to-one matching, not purity: four clusters of two classes match only two of them
    assert clustering_accuracy([0, 0, 1, 1], [0, 1, 2, 3]) == pytest.approx(0.5)


def test_seed_aggregates_are_means_and_sample_stds():
    from jaxcomp.cluster.benchmarks import aggregate_seeds

    rows = [dict(method=m, seed=s, accuracy=a, nmi=a / 2, ari=a / 4, seconds=1.0 + s, notes="")
            for m, accs in (("mp", (0.8, 0.9, 1.0)), ("km", (0.5, 0.5, 0.5))) for s, a in enumerate(accs)]
    mp, km = aggregate_seeds(rows)
    assert (mp["method"], mp["seeds"], km["method"]) == ("mp", 3, "km")
    assert mp["accuracy"] == pytest.approx(0.9) and mp["accuracy_std"] == pytest.approx(0.1)  # ddof 1
    assert mp["nmi_std"] == pytest.approx(0.05) and km["accuracy_std"] == 0.0 and mp["seconds"] == pytest.approx(2.0)


@pytest.mark.parametrize(
    "X, kwargs, match",
    [
        (np.full((10, 5), np.nan), {}, "NaN"),
        (np.vstack([np.ones((9, 5)), np.zeros((1, 5))]), {}, "zero point"),
        (np.ones((2, 5)), dict(n_clusters=3), "fewer points"),
        (np.ones(5), {}, "2-D"),
        (sp.csr_matrix(np.eye(6)), {}, "sparse csr_matrix.*toarray"),
        (np.ones((6, 3)) * (1 + 1j), {}, "Complex data not supported.*must be real"),
        (np.array([["a", "b"], ["c", "d"]], object), {}, "numeric"),
        (np.ones((1, 4)), {}, "1 sample"),
        (np.ones((12, 0)), {}, r"0 feature\(s\)"),
    ],
)
def test_ssc_bad_input(X, kwargs, match):
    with pytest.raises(ValueError, match=match):
        SSCMP(**kwargs).fit(X)


def test_ssc_object_input():
    """Numbers stored in an object array are numbers (scikit-learn's convention); a dict among them
    is a ``TypeError`` naming the problem."""
    from jaxcomp.cluster.ssc import check_data

    X = np.arange(1.0, 13.0).reshape(4, 3)
    np.testing.assert_allclose(check_data(X.astype(object)), check_data(X))
    bad = X.astype(object)
    bad[0, 0] = {"foo": "bar"}
    with pytest.raises(TypeError, match="numeric.*argument must be .*number"):
        SSCMP().fit(bad)


# scikit-learn's check_estimator: the checks that cannot pass, and why (docs/greedy.md lists them too).
SKLEARN_EXPECTED_FAILURES = {
    "check_clustering": "3 Gaussian blobs in R^2, standardised: not a union of low-dimensional linear subspaces "
    "(after the unit-norm projection of SSC every 2-D point lies on the one circle and any two points span R^2), "
    "so the self-expression graph does not separate them (ARI < 0.4)",
    "check_estimators_dtypes": "casts uniform [0, 3) data to int, which makes row 15 all-zero; SSC refuses zero "
    "points (a zero point has no direction and lies in every subspace) with a ValueError",
}


def _expected_failures(estimator):
    return SKLEARN_EXPECTED_FAILURES


@pytest.mark.slow
@parametrize_with_checks([SSCMP(), SSCOMP()], expected_failed_checks=_expected_failures, xfail_strict=True)
def test_sklearn_check_estimator(estimator, check):
    """scikit-learn's estimator checks (about 4 min for both estimators on 2 busy cores): all pass
    except SKLEARN_EXPECTED_FAILURES (strict xfail: a listed check that starts passing fails too)."""
    check(estimator)


def test_bad_parameters(subspaces):
    X, _ = subspaces
    with pytest.raises(ValueError, match="unknown algorithm"):
        sparse_coefficients(X, "lasso")
    with pytest.raises(ValueError, match="s_max"):
        sparse_coefficients(X, "omp", s_max=0)
    with pytest.raises(ValueError, match="mismatched shapes"):
        clustering_error([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="symmetric"):
        spectral_clustering(sp.csr_matrix(np.triu(np.ones((4, 4)), 1)), 2)


def test_uncentred_pca_is_the_svd_projection():
    """Both branches (n >= p: eigenvectors of X^T X; n < p: SVD) give the projection on the top
    right singular vectors of the *uncentred* data (up to signs), largest first."""
    from jaxcomp.cluster.data import uncentred_pca

    rng = np.random.default_rng(0)
    for n, p in ((40, 12), (8, 30)):
        X = rng.standard_normal((n, p)) + 3.0  # far from centred: a centred PCA would differ
        ref = X @ np.linalg.svd(X, full_matrices=False)[2][:5].T
        out = uncentred_pca(X, 5)
        assert out.shape == (n, 5) and out.dtype == np.float32
        np.testing.assert_allclose(np.abs(out), np.abs(ref), rtol=1e-4, atol=1e-4)
        assert np.all(np.diff(np.linalg.norm(out, axis=0)) <= 1e-4)


def test_mnist_missing_or_damaged_file_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="MNIST file not found"):
        load_mnist(str(tmp_path / "nope.npz"), 10)
    digits = np.arange(12 * 784, dtype=np.uint8).reshape(12, 28, 28)
    np.savez(tmp_path / "small.npz", x_train=digits, y_train=np.arange(12) % 10, x_test=digits[:3],
             y_test=np.arange(3))
    images, labels = load_mnist(str(tmp_path / "small.npz"), 12, 0, "all")  # all 15: train, then test
    assert images.shape == (12, 784) and set(labels) <= set(range(10))
    whole = (tmp_path / "small.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match=r"cut\.npz: truncated or damaged \.npz"):
        load_mnist(str(tmp_path / "cut.npz"), 10)
    np.savez(tmp_path / "other.npz", images=digits)
    with pytest.raises(ValueError, match=r"other\.npz: lacks \['x_train', 'y_train'\]; it has \['images'\]"):
        load_mnist(str(tmp_path / "other.npz"), 10)


def test_configs_load_and_reject_unknown_keys(tmp_path):
    for name in ("synthetic", "synthetic_sigma", "smax", "mnist", "mnist_scattering", "mnist_speed", "noise_smax",
                 "noise_smax_tau", "tiny"):
        cfg = load_config(os.path.join(ROOT, "configs/ssc.py") + ":" + name)
        assert cfg.ssc.s_max >= 1
    noisy = load_config(os.path.join(ROOT, "configs/ssc.py:noise_smax_tau"))
    assert noisy.data.sigma / np.sqrt(noisy.data.ambient_dim) == pytest.approx(0.1)  # N(0, 0.1^2) per coordinate
    assert noisy.ssc.tau_mode == "noise" and load_config(os.path.join(ROOT, "configs/ssc.py:noise_smax")).ssc.tau == 0
    scat = load_config(os.path.join(ROOT, "configs/ssc.py:mnist_scattering"))
    assert scat.data.features == "scattering" and scat.n_seeds == 3
    assert scat.data.cache_dir == os.path.join(ROOT, "runs", "cache")
    cfg = load_config(os.path.join(ROOT, "configs/ssc.py:mnist"), ["data.num_points=2000"])
    assert cfg.data.num_points == 2000
    with pytest.raises(ConfigError, match="no key"):
        load_config(os.path.join(ROOT, "configs/ssc.py:mnist"), ["data.num_pts=2000"])
    with pytest.raises(ConfigError, match="no variant"):
        load_config(os.path.join(ROOT, "configs/ssc.py:cifar"))
    # settings that would fail midway (trials=0 ended in an UnboundLocalError) or print NaNs
    from jaxcomp.cluster.benchmarks import check_synthetic_settings

    for variant in ("tiny", "smax"):
        check_synthetic_settings(load_config(os.path.join(ROOT, f"configs/ssc.py:{variant}")))
    for override, message in (("grid.trials=0", "grid.trials must be a positive integer, got 0"),
                              ("data.n_subspaces=0", "data.n_subspaces must be"),
                              ("grid.rho=()", "grid.rho is empty"), ("ssc.algorithms=()", "ssc.algorithms is empty")):
        with pytest.raises(ValueError, match=re.escape(message)):
            check_synthetic_settings(load_config(os.path.join(ROOT, "configs/ssc.py:tiny"), [override]))
    from jaxcomp.cluster.benchmarks import run

    with pytest.raises(ValueError, match="grid.trials must be"):  # the experiment checks before it starts
        run(load_config(os.path.join(ROOT, "configs/ssc.py:tiny"), ["grid.trials=0"]), str(tmp_path))
    with pytest.raises(ValueError, match="ssc.tau must be >= 0"):  # noise mode reported a negative tau as 0
        run(load_config(os.path.join(ROOT, "configs/ssc.py:tiny"), ["ssc.tau=-1.0"]), str(tmp_path))
    for variant in ("mnist", "mnist_speed"):
        with pytest.raises(ValueError, match="data.num_points must be a positive integer"):
            run(load_config(os.path.join(ROOT, f"configs/ssc.py:{variant}"), ["data.num_points=0"]), str(tmp_path))
    from jaxcomp.greedy.benchmarks import nnls_problem

    for args, message in (((0, 5, 0.5, 0.0), "nnls.m must be"), ((4, 5, -0.5, 0.0), "nnls.density must be")):
        with pytest.raises(ValueError, match=message):
            nnls_problem(*args, seed=0)
    cfg = load_config(os.path.join(ROOT, "configs/nnmp.py:tiny"))
    assert cfg.max_iter >= 1


def test_mnist_path_is_relative_to_the_project(tmp_path, capsys):
    """The default MNIST path is ``<project>/../shared/data/mnist/mnist.npz`` resolved from the
    config file's location (a copy of the config in another project finds that project's data),
    never a hard-coded absolute path; a missing file is one clear ``error:`` line naming the path
    and the override, exit status 2.
    """
    cfg = load_config(os.path.join(ROOT, "configs/ssc.py:mnist"))
    assert cfg.data.path == os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "mnist", "mnist.npz"))
    other = tmp_path / "elsewhere" / "project"
    (other / "configs").mkdir(parents=True)
    shutil.copy(os.path.join(ROOT, "configs", "ssc.py"), other / "configs" / "ssc.py")
    moved = load_config(str(other / "configs" / "ssc.py") + ":mnist")
    assert moved.data.path == str(tmp_path / "elsewhere" / "shared" / "data" / "mnist" / "mnist.npz")
    from experiments import cluster

    spec = str(other / "configs" / "ssc.py") + ":mnist"
    assert cluster.main(["--config", spec, "--workdir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "MNIST file not found" in err and moved.data.path in err and "--config.data.path" in err


@pytest.mark.slow
def test_cluster_script_tiny(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "experiments.cluster", "--config", "configs/ssc.py:tiny", "--workdir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "phase_t_rho.png").exists() and (tmp_path / "phase_t_rho.csv").exists()


@pytest.mark.slow
def test_nnmp_script_tiny(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "experiments.nnmp", "--config", "configs/nnmp.py:tiny", "--workdir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "nnmp.md").exists() and (tmp_path / "nnmp_nnls.png").exists()


def test_experiment_scripts_report_config_errors_without_traceback(capsys):
    from experiments import cluster, nnmp

    for script, spec in ((cluster, "configs/ssc.py:tiny"), (nnmp, "configs/nnmp.py:tiny")):
        assert script.main(["--config", spec, "--workdir", "/tmp/unused", "--config.no_such_key=1"]) == 2
        assert "no key 'no_such_key'" in capsys.readouterr().err


def test_affinity_row_normalization_matches_hand_computation():

    from jaxcomp.cluster import SSCOMP
    from jaxcomp.cluster.ssc import affinity_from_coefficients

    C = sp.csr_matrix(np.array([[0.0, 3.0, -4.0], [0.5, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    plain = affinity_from_coefficients(C).toarray()
    np.testing.assert_allclose(plain, [[0, 3.5, 4], [3.5, 0, 0], [4, 0, 0]])
    # rows to unit L2 norm first: row 0 -> (0, 0.6, -0.8), row 1 -> (1, 0, 0), the zero row stays zero
    l2 = affinity_from_coefficients(C, normalize="l2").toarray()
    np.testing.assert_allclose(l2, [[0, 1.6, 0.8], [1.6, 0, 0], [0.8, 0, 0]])
    with pytest.raises(ValueError, match="normalize must be one of"):
        affinity_from_coefficients(C, normalize="max")
    with pytest.raises(ValueError, match="affinity_normalization must be one of"):
        SSCOMP(n_clusters=2, affinity_normalization="L2").fit(np.eye(4))


# 60 digits give scikit-learn's 10-nearest-neighbour baseline a disconnected graph; expected here
@pytest.mark.filterwarnings("ignore:Graph is not fully connected:UserWarning")
def test_mnist_driver_writes_rows_and_labels_per_seed(tmp_path, monkeypatch):
    """``run_mnist`` on a stand-in npz (two "digits", each a random 3-dim subspace of pixel space, so
    every method can separate them): one row per seed and method, and ``mnist_labels.npz`` holding each
    seed's true digits and each method's labels, from which the row's scores are recomputed exactly."""
    from jaxcomp.cluster.benchmarks import run_mnist
    from jaxcomp.cluster.metrics import all_metrics

    rng = np.random.default_rng(0)
    bases = [np.abs(rng.standard_normal((784, 3))) * (rng.random((784, 1)) < 0.3) for _ in range(2)]
    x = np.concatenate([(b @ rng.random((3, 40))).T for b in bases])
    x = x + 0.25 * x.max() * rng.random(x.shape) * (rng.random((80, 1)) < 0.3)  # a few noisy digits
    x = np.clip(255 * x / x.max(), 0, 255).astype(np.uint8)
    y = np.repeat([3, 7], 40)
    np.savez(tmp_path / "stand_in.npz", x_train=x, y_train=y, x_test=x[:4], y_test=y[:4])
    cfg = load_config(os.path.join(ROOT, "configs/ssc.py:mnist"), [
        f"data.path={tmp_path / 'stand_in.npz'}", "data.num_points=60", "data.n_clusters=2", "data.feature_dim=20",
        "n_seeds=2", "ssc.algorithms=('mp',)", "ssc.s_max=3", f"ssc.chunk_size={CHUNK}",
        "baselines.sklearn_omp=False", "baselines.n_neighbors=5"])
    import jaxcomp.cluster.benchmarks as bm

    written = []
    real_write = bm.write_table
    monkeypatch.setattr(bm, "write_table", lambda rows, *a, **k: written.append(len(rows)) or real_write(rows, *a, **k))
    run_mnist(cfg, str(tmp_path / "out"))
    assert written == [3, 6]  # after each seed, so a stopped run keeps the seeds it finished
    import csv

    with open(tmp_path / "out" / "mnist_runs.csv") as f:
        rows = list(csv.DictReader(f))
    methods = ["SSC-MP (jaxcomp)", "sklearn SpectralClustering (kNN graph)", "sklearn KMeans"]
    assert [(r["method"], int(r["seed"])) for r in rows] == [(m, s) for s in (0, 1) for m in methods]
    imperfect = []
    with np.load(tmp_path / "out" / "mnist_labels.npz") as lab:
        assert sorted(lab.files) == sorted([f"{s}:{m}" for s in (0, 1) for m in methods + ["truth"]])
        for s in (0, 1):
            truth = lab[f"{s}:truth"]
            assert truth.shape == (60,) and set(truth) <= {3, 7}
            assert not np.array_equal(truth, lab[f"{1 - s}:truth"])  # each seed draws its own sample
            for r in rows:
                if int(r["seed"]) == s:
                    assert set(lab[f"{s}:{r['method']}"]) <= {0, 1}  # cluster ids, not the digits 3 / 7
                    m = all_metrics(truth, lab[f"{s}:{r['method']}"])
                    assert float(r["accuracy"]) == pytest.approx(m["accuracy"], abs=1e-4)
                    assert float(r["nmi"]) == pytest.approx(m["nmi"], abs=1e-4)
                    assert float(r["ari"]) == pytest.approx(m["ari"], abs=1e-4)
                    imperfect.append(m["nmi"] != pytest.approx(m["ari"], abs=1e-3))
    assert any(imperfect)  # some method errs on the noisy digits, where NMI and ARI differ


@pytest.mark.parametrize("algorithm,point_norms", [("omp", "unit"), ("mp", "unit"), ("omp", "raw")])
def test_ssc_coding_does_not_depend_on_the_points_order(subspaces, algorithm, point_norms):
    """Each point's pursuit runs over the set of the other points: coding the points in another order
    gives the same coefficients, reordered. ``run_mnist`` relies on it to reuse one seed's coding for
    another seed that draws the same images (all 70,000 digits) in another order."""
    X, _ = subspaces
    X = X * np.random.default_rng(1).uniform(0.5, 2.0, (len(X), 1))  # unequal norms, so "raw" differs from "unit"
    perm = np.random.default_rng(2).permutation(len(X))
    kw = dict(algorithm=algorithm, s_max=5, tau=1e-3, chunk_size=CHUNK, point_norms=point_norms)
    C, _ = sparse_coefficients(X, **kw)
    C_perm, _ = sparse_coefficients(X[perm], **kw)
    assert C.nnz > len(X)
    np.testing.assert_allclose(C_perm.toarray(), C[perm][:, perm].toarray(), atol=1e-5)


def test_reorder_maps_one_order_of_the_same_images_onto_another():
    from jaxcomp.cluster.benchmarks import reorder

    before, after = np.array([5, 2, 9, 0]), np.array([0, 9, 5, 2])
    perm = reorder(before, after)
    np.testing.assert_array_equal(before[perm], after)
    C = sp.csr_matrix(np.arange(16.0).reshape(4, 4))  # row i: point before[i]'s coefficients on before[j]
    moved = C[perm][:, perm].toarray()
    for i in range(4):
        for j in range(4):
            assert moved[i, j] == C[np.flatnonzero(before == after[i])[0], np.flatnonzero(before == after[j])[0]]
    assert reorder(before, np.array([0, 9, 5, 3])) is None  # another image
    assert reorder(before, after[:3]) is None  # fewer images


def test_mnist_driver_reuses_the_coding_of_a_seed_with_the_same_images(tmp_path):
    """``split=all`` with every image: the second seed holds the same images as the first in another
    order, so it reuses the first seed's coefficients (reordered) and runs only its own spectral step;
    its labels equal a fresh fit of that seed (up to the cluster ids' names)."""
    from jaxcomp.cluster.benchmarks import make_estimator, run_mnist
    from jaxcomp.cluster.data import load_mnist, mnist_features
    from jaxcomp.cluster.metrics import all_metrics

    rng = np.random.default_rng(0)
    bases = [np.abs(rng.standard_normal((784, 3))) * (rng.random((784, 1)) < 0.3) for _ in range(2)]
    x = np.concatenate([(b @ rng.random((3, 30))).T for b in bases])
    x = np.clip(255 * x / x.max(), 0, 255).astype(np.uint8)
    y = np.repeat([3, 7], 30)
    np.savez(tmp_path / "stand_in.npz", x_train=x[:50], y_train=y[:50], x_test=x[50:], y_test=y[50:])
    cfg = load_config(os.path.join(ROOT, "configs/ssc.py:mnist"), [
        f"data.path={tmp_path / 'stand_in.npz'}", "data.split=all", "data.num_points=60", "data.n_clusters=2",
        "data.feature_dim=20", "n_seeds=2", "ssc.algorithms=('omp',)", "ssc.s_max=3", f"ssc.chunk_size={CHUNK}",
        "baselines.sklearn_omp=False", "baselines.spectral=False", "baselines.kmeans=False"])
    summary = run_mnist(cfg, str(tmp_path / "out"))
    import csv

    with open(tmp_path / "out" / "mnist_runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["seed"] for r in rows] == ["0", "1"]
    assert "reused" not in rows[0]["notes"] and "coding of seed 0 reused" in rows[1]["notes"]
    assert "coding of seed 0 reused" in summary[0]["notes"]  # the mean ± std row says so too
    images, truth = load_mnist(cfg.data.path, 60, 1, "all")
    fresh = make_estimator("omp", _seeded(cfg, 1), 2,
                           cfg.ssc.s_max, float(cfg.ssc.tau))
    fresh.fit(mnist_features(images, cfg.data.features, cfg.data.feature_dim))
    with np.load(tmp_path / "out" / "mnist_labels.npz") as lab:
        np.testing.assert_array_equal(lab["1:truth"], truth)
        assert all_metrics(fresh.labels_, lab["1:SSC-OMP (jaxcomp)"])["accuracy"] == 1.0


def _seeded(cfg, seed: int):
    c = cfg.copy_and_resolve_references()
    c.seed = seed
    return c


def test_confusion_stats_by_hand_and_refuses_mixed_samples(tmp_path, capsys):
    """``experiments.ssc_confusion``: truth [0,0,1,1], labels [0,0,0,1] (table [[2,0],[1,1]]) has
    H(digit, cluster) = 1.5 bits, H(cluster) = H(.75, .25), H(digit) = 1 bit, so H(digit | cluster) =
    1.5 - H(.75, .25) and H(cluster | digit) = 0.5; cluster 0 is mixed (1/3 >= 25 %), digit 1 is split.
    Directories whose seed holds other points are refused with one clear line."""
    from experiments import ssc_confusion

    st = ssc_confusion.confusion_stats(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 1]))
    h = -(0.75 * np.log2(0.75) + 0.25 * np.log2(0.25))
    assert st["h_digit_given_cluster"] == pytest.approx(1.5 - h)
    assert st["h_cluster_given_digit"] == pytest.approx(0.5)
    assert (st["mixed_clusters"], st["split_digits"]) == (1.0, 1.0)
    assert (st["smallest_cluster"], st["largest_cluster"], st["accuracy"]) == (1.0, 3.0, 0.75)
    edge = ssc_confusion.confusion_stats(np.array([0, 0, 0, 0, 1, 1]), np.array([0, 0, 0, 1, 2, 2]))
    assert (edge["mixed_clusters"], edge["split_digits"]) == (0.0, 1.0)  # digit 0: 75 % / 25 %, the boundary counts
    perfect = ssc_confusion.confusion_stats(np.array([0, 0, 1, 1]), np.array([5, 5, 2, 2]))
    assert perfect["h_digit_given_cluster"] == perfect["h_cluster_given_digit"] == 0.0
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):  # runs of the same settings (their config.txt)
        _run_dir(d, load_config(os.path.join(ROOT, "configs/ssc.py:mnist")))
    np.savez(a / "mnist_labels.npz", **{"0:truth": np.array([0, 0, 1, 1]), "0:m1": np.array([0, 0, 0, 1])})
    np.savez(b / "mnist_labels.npz", **{"0:truth": np.array([0, 1, 1, 1]), "0:m2": np.array([1, 1, 0, 0])})
    assert ssc_confusion.main([str(a), str(b)]) == 2
    assert "other points" in capsys.readouterr().err
    np.savez(b / "mnist_labels.npz", **{"0:truth": np.array([0, 0, 1, 1]), "0:m2": np.array([1, 1, 0, 0])})
    assert ssc_confusion.main([str(a), str(b), "--figure", str(tmp_path / "c.png")]) == 0
    out = capsys.readouterr().out
    assert "| m1 | 1 | 0.7500" in out and "| m2 | 1 | 1.0000" in out and (tmp_path / "c.png").exists()
    np.savez(b / "mnist_labels.npz", **{"0:truth": np.array([0, 0, 1, 1]), "0:m1": np.array([1, 1, 0, 0])})
    assert ssc_confusion.main([str(a), str(b)]) == 2  # the same method twice: refused, not overwritten
    assert "compare each run once" in capsys.readouterr().err


def test_raw_selection_picks_the_largest_raw_correlation():
    """``raw_selection``: with a long atom d1 = 3 e1 and a unit atom d2 = (0.8, 0.6), y = (0.6, 0.8) has
    normalised correlations 0.6 / 0.96 (d2 wins) but raw ones 1.8 / 0.96 (d1 wins); for OMP and MP."""
    from jaxcomp.greedy.pursuit import mp_batch, omp_batch

    D = jnp.asarray([[3.0, 0.8], [0.0, 0.6]], jnp.float32)
    Y = jnp.asarray([[0.6, 0.8]], jnp.float32)
    ex, z = jnp.asarray([-1], jnp.int32), jnp.asarray(0.0, jnp.float32)
    for raw, first in ((False, 1), (True, 0)):
        assert int(omp_batch(D, Y, ex, z, z, max_iter=1, raw_selection=raw)[0][0, 0]) == first
        support, coef = mp_batch(D, Y, ex, z, z, max_iter=1, max_nonzeros=1, raw_selection=raw)[:2]
        assert int(support[0, 0]) == first
        assert float(coef[0, 0]) == pytest.approx([0.2, 0.96][first])  # <d_k, y> / ||d_k||^2 either way


def _reference_raw_omp(X, s_max):
    """An independent loop of SSC-OMP on un-normalised points, as the public reference code does it:
    select argmax_k |<x_k, r>| over the other points, least squares on the support, new residual."""
    n = X.shape[0]
    C = np.zeros((n, n))
    for i in range(n):
        r, supp = X[i].copy(), []
        for _ in range(s_max):
            coh = np.abs(X @ r)
            coh[i] = 0.0
            coh[supp] = 0.0
            supp.append(int(np.argmax(coh)))
            c = np.linalg.lstsq(X[supp].T, X[i], rcond=None)[0]
            r = X[i] - c @ X[supp]
        C[i, supp] = c
    return C


def _reference_raw_mp(X, s_max):
    """MP of each point over the other un-normalised points, atoms selected by raw correlation."""
    n = X.shape[0]
    C = np.zeros((n, n))
    for i in range(n):
        r = X[i].copy()
        for _ in range(s_max):
            coh = X @ r
            coh[i] = 0.0
            k = int(np.argmax(np.abs(coh)))
            step = coh[k] / (X[k] @ X[k])
            C[i, k] += step
            r = r - step * X[k]
    return C


def test_ssc_raw_point_norms_is_the_reference_algorithm():
    """``point_norms="raw"`` keeps the points' norms and selects by raw correlation: its coefficients
    equal an independent numpy loop of the reference code's SSC-OMP on points of very different norms
    (and differ from the unit-norm coding there); on unit-norm points both settings agree."""
    rng = np.random.default_rng(3)
    X, _ = union_of_subspaces(12, 3, 2, rho=5, seed=3)
    X = X * rng.uniform(0.2, 5.0, size=(X.shape[0], 1))
    C_raw, _ = sparse_coefficients(X, "omp", s_max=3, point_norms="raw", chunk_size=CHUNK)
    ref = _reference_raw_omp(X.astype(np.float64), 3)
    np.testing.assert_allclose(C_raw.toarray(), ref, atol=2e-4, rtol=1e-3)
    C_unit, _ = sparse_coefficients(X, "omp", s_max=3, chunk_size=CHUNK)
    assert (C_unit.toarray() != 0).sum() == (ref != 0).sum()
    assert not np.array_equal(C_unit.toarray() != 0, ref != 0)  # another support on these points
    Xu = X / np.linalg.norm(X, axis=1, keepdims=True)
    a, _ = sparse_coefficients(Xu, "omp", s_max=3, point_norms="raw", chunk_size=CHUNK)
    b, _ = sparse_coefficients(Xu, "omp", s_max=3, chunk_size=CHUNK)
    np.testing.assert_allclose(a.toarray(), b.toarray(), atol=1e-5)
    C_mp, _ = sparse_coefficients(X, "mp", s_max=4, point_norms="raw", chunk_size=CHUNK)
    np.testing.assert_allclose(C_mp.toarray(), _reference_raw_mp(X.astype(np.float64), 4), atol=2e-4, rtol=1e-3)
    with pytest.raises(ValueError, match="point_norms must be one of"):
        sparse_coefficients(X, "omp", s_max=3, point_norms="l2")
    with pytest.raises(ValueError, match="no scale-free meaning"):
        sparse_coefficients(X, "mp", s_max=3, point_norms="raw", corr_tol=0.1)
    with pytest.raises(ValueError, match="point_norms must be one of"):
        SSCOMP(n_clusters=2, point_norms="none").fit(X)
    est = SSCOMP(n_clusters=2, s_max=3, chunk_size=CHUNK, point_norms="raw", affinity_normalization="l2").fit(X)
    np.testing.assert_allclose(est.coef_.toarray(), ref, atol=2e-4, rtol=1e-3)
    cfg = load_config(os.path.join(ROOT, "configs/ssc.py:mnist_scattering_omp_raw"))
    assert (cfg.ssc.algorithms, cfg.ssc.s_max, cfg.ssc.point_norms, cfg.ssc.affinity_normalization) == (
        ("omp",), 5, "raw", "l2")
    assert cfg.data.features == "scattering" and cfg.ssc.tau == 0
    from jaxcomp.cluster.benchmarks import make_estimator

    est = make_estimator("omp", cfg, 10, cfg.ssc.s_max, 0.0)
    assert (est.point_norms, est.affinity_normalization, est.s_max) == ("raw", "l2", 5)


def test_ssc_reference_refuses_a_wrong_checkout(tmp_path, capsys):
    """``experiments.ssc_reference`` names the missing module and the repository it expects."""
    from experiments import ssc_reference

    assert ssc_reference.main(["--checkout", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "selfrepresentation.py" in err and "ChongYou/subspace-clustering" in err


def test_an_empty_coefficient_graph_and_a_bad_max_clusters_are_reported():
    """tau at or above the points' norms stops every pursuit at once: the graph is empty and the
    clusters arbitrary, which the estimator says; max_clusters < 1 is refused by name."""
    X = np.random.default_rng(3).standard_normal((40, 8))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    with pytest.warns(UserWarning, match=r"SSCOMP: every pursuit stopped before its first step \(tau=1\.0"):
        assert SSCOMP(n_clusters=2, tau=1.0).fit(X).coef_.nnz == 0
    with pytest.raises(ValueError, match="max_clusters must be a positive integer, got 0"):
        SSCMP(max_clusters=0).fit(X)


def test_clustering_metrics_refuse_non_finite_labels():
    assert clustering_accuracy(["a", "b", "b"], [0, 1, 1]) == 1.0  # labels are names
    for bad in ([0, 1, np.inf], [0, 1, np.nan]):
        with pytest.raises(ValueError, match="NaN or infinite"):
            clustering_accuracy([0, 1, 1], bad)
    assert clustering_accuracy(np.array(["a", "b", "b"], dtype=object), [0, 1, 1]) == 1.0  # e.g. pandas strings
    with pytest.raises(ValueError, match="integers, strings or other names"):
        normalized_mutual_info([0, 1], [0j, 1j])


def test_spectral_clustering_seeds_the_spectrum_and_k_means(monkeypatch):
    """``seed`` reaches both random steps (the Lanczos start vector and k-means' starts), and ``n_init``
    k-means; two seeds give the same partition of a clear two-block graph."""
    from jaxcomp.cluster import spectral

    seen = {}
    kmeans, spectrum = spectral.KMeans, spectral.laplacian_spectrum

    def recording_kmeans(**kwargs):
        seen["kmeans"] = kwargs
        return kmeans(**kwargs)

    def recording_spectrum(A, k, seed):
        seen["spectrum"] = seed
        return spectrum(A, k, seed)

    monkeypatch.setattr(spectral, "KMeans", recording_kmeans)
    monkeypatch.setattr(spectral, "laplacian_spectrum", recording_spectrum)
    blocks = np.kron(np.eye(2), np.ones((5, 5))) + 1e-3
    labels, k = spectral.spectral_clustering(blocks, 2, seed=7, n_init=3)
    assert k == 2 and seen == {"kmeans": {"n_clusters": 2, "n_init": 3, "random_state": 7}, "spectrum": 7}
    other, _ = spectral.spectral_clustering(blocks, 2, seed=8, n_init=3)
    assert len(set(labels[:5])) == len(set(labels[5:])) == 1 and adjusted_rand_index(labels, other) == 1.0


def test_random_state_none_draws_fresh_randomness_and_still_clusters(subspaces, monkeypatch):
    """``random_state=None`` (scikit-learn's "fresh randomness") is accepted: the eigensolver and
    k-means get ``None`` (not 0), and the clear union of subspaces is still clustered exactly."""
    from jaxcomp.cluster import spectral

    seen = []
    spectrum = spectral.laplacian_spectrum
    monkeypatch.setattr(spectral, "laplacian_spectrum", lambda A, k, seed: seen.append(seed) or spectrum(A, k, seed))
    X, y = subspaces
    est = SSCOMP(n_clusters=3, s_max=6, tau=1e-3, chunk_size=CHUNK, random_state=None).fit(X)
    assert seen == [None] and clustering_error(y, est.labels_) == 0.0


def _run_dir(path, cfg, seed_rows=None, labels=None):
    """A workdir as ``experiments.cluster`` leaves it: ``config.txt`` (``str(cfg)``), and optionally
    ``mnist_runs.csv`` rows ``(method, seed, accuracy)`` and ``mnist_labels.npz`` entries."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.txt").write_text(str(cfg))
    if seed_rows is not None:
        lines = ["method,seed,accuracy,nmi,ari,seconds,notes"] + [f"{m},{s},{a},0.5,0.5,1.0," for m, s, a in seed_rows]
        (path / "mnist_runs.csv").write_text("\n".join(lines) + "\n")
    if labels is not None:
        np.savez(path / "mnist_labels.npz", **labels)
    return str(path)


def test_aggregate_and_confusion_refuse_runs_of_other_settings(tmp_path, capsys):
    """Runs split by seed combine; runs of another ``data.num_points`` / ``ssc.s_max`` (their
    ``config.txt``) are refused naming the setting and both workdirs, not averaged into one row."""
    from experiments import ssc_aggregate, ssc_confusion

    spec = os.path.join(ROOT, "configs/ssc.py:mnist")
    base = ["data.num_points=300", "n_seeds=1"]
    a = _run_dir(tmp_path / "a", load_config(spec, base), [("SSC-OMP", 0, 0.8)])
    b = _run_dir(tmp_path / "b", load_config(spec, base + ["seed=1", "data.cache_dir=/elsewhere"]),
                 [("SSC-OMP", 1, 0.6)])
    assert ssc_aggregate.main([a, b]) == 0  # seeds (and the cache folder) may differ
    assert "| SSC-OMP | 2 | 0.7" in capsys.readouterr().out
    c = _run_dir(tmp_path / "c", load_config(spec, ["data.num_points=120", "ssc.s_max=3", "seed=2"]),
                 [("SSC-OMP", 2, 0.9)])
    assert ssc_aggregate.main([a, b, c]) == 2
    err = capsys.readouterr().err
    assert "data.num_points (300 -> 120)" in err and "ssc.s_max (10 -> 3)" in err and a in err and c in err
    (tmp_path / "c" / "config.txt").unlink()
    assert ssc_aggregate.main([a, c]) == 2 and "no config.txt in" in capsys.readouterr().err
    # confusion: one method's seeds from two workdirs of other s_max are refused; other data too
    truth = np.array([0, 0, 1, 1])
    la = _run_dir(tmp_path / "la", load_config(spec, base), labels={"0:truth": truth, "0:m": truth})
    lb = _run_dir(tmp_path / "lb", load_config(spec, base + ["seed=1"]), labels={"1:truth": truth, "1:m": truth})
    assert ssc_confusion.main([la, lb]) == 0
    capsys.readouterr()
    lc = _run_dir(tmp_path / "lc", load_config(spec, base + ["seed=1", "ssc.s_max=3"]),
                  labels={"1:truth": truth, "1:m": truth})
    assert ssc_confusion.main([la, lc]) == 2
    err = capsys.readouterr().err
    assert "ssc.s_max (10 -> 3)" in err and "'m'" in err
    ld = _run_dir(tmp_path / "ld", load_config(spec, ["data.num_points=120", "seed=1"]),
                  labels={"1:truth": truth, "1:other": truth})
    assert ssc_confusion.main([la, ld]) == 2 and "data.num_points (300 -> 120)" in capsys.readouterr().err


def test_a_workdir_of_other_settings_is_refused_before_any_work(tmp_path):
    """``run`` into a workdir holding results of another seed or experiment is refused by name
    before any work; with the same settings it runs as before (here: to the missing MNIST file),
    and config.txt is written before the work."""
    from jaxcomp.cluster.benchmarks import run

    spec = os.path.join(ROOT, "configs/ssc.py:mnist")
    over = ["data.num_points=300", f"data.path={tmp_path / 'missing.npz'}"]
    work = tmp_path / "w"
    with pytest.raises(FileNotFoundError, match="MNIST file not found"):
        run(load_config(spec, over), str(work))
    assert (work / "config.txt").read_text() == str(load_config(spec, over))  # written first
    (work / "mnist_runs.csv").write_text("method,seed\n")
    with pytest.raises(FileNotFoundError, match="MNIST file not found"):  # the same settings: as today
        run(load_config(spec, over), str(work))
    # the same settings from another checkout or machine (configs/ssc.py makes data.path absolute)
    moved = [over[0], f"data.path={tmp_path / 'elsewhere' / 'missing.npz'}"]
    with pytest.raises(FileNotFoundError, match="MNIST file not found"):
        run(load_config(spec, moved), str(work))
    with pytest.raises(ValueError, match=r"holds results \(mnist_runs.csv\) of other settings: seed \(0 -> 1\)"):
        run(load_config(spec, over + ["seed=1"]), str(work))
    phase = tmp_path / "p"
    _run_dir(phase, load_config(os.path.join(ROOT, "configs/ssc.py:tiny")))
    (phase / "phase_t_rho.csv").write_text("x\n")
    with pytest.raises(ValueError, match=r"other settings: .*experiment \('phase' -> 'smax'\)"):
        run(load_config(os.path.join(ROOT, "configs/ssc.py:smax")), str(phase))
    (phase / "config.txt").unlink()
    with pytest.raises(ValueError, match="no config.txt: their settings are unknown"):
        run(load_config(os.path.join(ROOT, "configs/ssc.py:tiny")), str(phase))


def test_experiment_plans_are_checked_before_any_work(tmp_path):
    """Repeated algorithms (one seed counted twice), a grid t of 2.5 (run as t = 2, reported as 2.5)
    and a speed run without SSC-OMP (its ratios' reference row) are refused before the work."""
    from jaxcomp.cluster.benchmarks import phase_cell, run

    def refused(variant, override, match):  # a missing MNIST file: an accepted plan fails at once, not minutes later
        cfg = load_config(os.path.join(ROOT, f"configs/ssc.py:{variant}"), [override, f"data.path={tmp_path}/no.npz"])
        with pytest.raises(ValueError, match=match):
            run(cfg, str(tmp_path / "never"))
        assert not (tmp_path / "never").exists()

    refused("mnist", "ssc.algorithms=('omp','omp')", r"ssc.algorithms repeats \['omp'\]")
    refused("tiny", "ssc.algorithms=('mp','mp')", r"ssc.algorithms repeats \['mp'\]")
    refused("tiny", "grid.t=(2.5,)", "grid.t must hold whole numbers >= 0, got 2.5")
    refused("noise_smax", "grid.s_max=(1, 2.5)", "grid.s_max must hold whole numbers >= 1, got 2.5")
    refused("mnist_speed", "speed.algorithms=('mp',)", "speed.algorithms must include 'omp'")
    cfg = load_config(os.path.join(ROOT, "configs/ssc.py:tiny"))
    assert phase_cell(cfg, 2.0)[0] == 2
    with pytest.raises(ValueError, match="grid.t must hold whole numbers"):
        phase_cell(cfg, 2.5)


@pytest.mark.parametrize("estimator", [SSCOMP, SSCMP])
def test_ssc_refuses_point_norms_outside_float32(estimator):
    """With ``point_norms="raw"`` the float32 pursuit squares the points' norms: at 1e30 / 1e25 they
    overflow, at 1e-30 (or half the rows at 1e-22) they underflow, and SSC returned no coefficients
    and arbitrary clusters; refused naming the problem. Unit norms are scaled in float64 without
    overflow, so data of 1e155 clusters as at scale 1."""
    X = np.random.default_rng(0).standard_normal((24, 6))
    for scale in (1e30, 1e25, 1e-30):
        with pytest.raises(ValueError, match="X's points .*(overflows|underflows) in float32"):
            estimator(3, s_max=4, point_norms="raw", chunk_size=CHUNK).fit_predict(X * scale)
    half = X.copy()
    half[:12] *= 1e-22
    with pytest.raises(ValueError, match=r"12 of norm below 1\.1e-19, e\.g\. row 0"):
        sparse_coefficients(half, "omp", s_max=4, point_norms="raw", chunk_size=CHUNK)
    C, _ = sparse_coefficients(X * 1e155, "omp", s_max=4, chunk_size=CHUNK)
    C1, _ = sparse_coefficients(X, "omp", s_max=4, chunk_size=CHUNK)
    assert C.nnz == C1.nnz > 0
    np.testing.assert_allclose(C.toarray(), C1.toarray(), atol=1e-5)
    # ordinary data keeps the plain float64 norms: the same float32 points as every result quoted before
    from jaxcomp.cluster.ssc import check_data

    np.testing.assert_array_equal(check_data(X), (X / np.linalg.norm(X, axis=1)[:, None]).astype(np.float32))


def test_ssc_parameters_of_the_wrong_type_are_named(tmp_path, capsys):
    from experiments import ssc_diagnose
    from jaxcomp.greedy import omp

    X = np.random.default_rng(0).standard_normal((12, 4))
    with pytest.raises(ValueError, match="tau must be a finite number"):
        SSCOMP(2, tau="0.1").fit(X)
    with pytest.raises(ValueError, match="corr_tol must be a finite number"):
        SSCMP(2, corr_tol="0.1").fit(X)
    with pytest.raises(ValueError, match="corr_tol must be a number in"):
        omp(np.eye(3), np.ones(3), max_iter=2, corr_tol="0.1")
    with pytest.raises(ValueError, match="n_clusters must be a positive integer or None, got 3.0"):
        SSCOMP(3.0).fit(X)
    args = ["--num-points", "30", "--n-clusters", "40", "--mnist", str(tmp_path / "missing.npz")]
    assert ssc_diagnose.main(args) == 2
    assert "--n-clusters (40) must be below --num-points (30)" in capsys.readouterr().err
