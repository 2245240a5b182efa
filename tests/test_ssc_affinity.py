"""The SSC affinity options (``jaxcomp.cluster.ssc.affinity_from_coefficients``) and the MNIST
diagnostics script (``experiments/ssc_diagnose.py``)."""

import importlib

import numpy as np
import pytest
import scipy.sparse as sp

from jaxcomp.cluster import SSCMP, clustering_error, union_of_subspaces
from jaxcomp.cluster.ssc import affinity_from_coefficients


@pytest.fixture(scope="module")
def ssc_diagnose():
    return importlib.import_module("experiments.ssc_diagnose")


def test_binary_affinity_counts_the_support():
    # an explicitly stored zero (row 1, col 2) is not support; signs and magnitudes do not matter
    C = sp.csr_matrix((np.array([3.0, -4.0, 0.5, 0.0, 1e-6]), (np.array([0, 0, 1, 1, 2]), np.array([1, 2, 0, 2, 0]))),
                      shape=(3, 3))
    A = affinity_from_coefficients(C, normalize="binary")
    assert A.dtype == np.float64 and sp.issparse(A)
    np.testing.assert_array_equal(A.toarray(), [[0, 2, 2], [2, 0, 0], [2, 0, 0]])
    # one-directional edges count 1, mutual ones 2
    C2 = sp.csr_matrix(np.array([[0.0, 0.9, 0.0], [0.0, 0.0, 0.2], [0.0, 0.0, 0.0]]))
    np.testing.assert_array_equal(affinity_from_coefficients(C2, "binary").toarray(), [[0, 1, 0], [1, 0, 1], [0, 1, 0]])
    # the input is not modified
    np.testing.assert_array_equal(C.data, [3.0, -4.0, 0.5, 0.0, 1e-6])


def test_sscmp_binary_affinity_is_the_support_of_its_coefficients():
    # the shapes of tests/test_cluster.py's fixture (96 points in R^30, s_max = 6, chunks of 32): one compilation
    X, y = union_of_subspaces(30, 4, 3, intersection_dim=0, rho=8, sigma=0.0, seed=0)
    est = SSCMP(n_clusters=3, s_max=6, tau=1e-3, chunk_size=32, affinity_normalization="binary").fit(X)
    B = (abs(est.coef_) > 0).astype(np.float64)
    np.testing.assert_array_equal(est.affinity_matrix_.toarray(), (B + B.T).toarray())
    assert set(np.unique(est.affinity_matrix_.toarray())) <= {0.0, 1.0, 2.0}
    assert clustering_error(y, est.labels_) == 0.0


def test_diagnose_script_rejects_bad_arguments(ssc_diagnose, capsys):
    assert ssc_diagnose.main(["--specs", "lasso:3"]) == 2
    assert "bad spec" in capsys.readouterr().err
    assert ssc_diagnose.main(["--affinities", "max"]) == 2
    assert "unknown affinities" in capsys.readouterr().err
    assert ssc_diagnose.main(["--mnist", "/nonexistent/mnist.npz"]) == 2
    assert "MNIST file not found" in capsys.readouterr().err
    for flag in ("--num-points", "--chunk-size", "--n-clusters"):  # before any data is read
        assert ssc_diagnose.main([flag, "0"]) == 2
        assert f"{flag} must be >=" in capsys.readouterr().err


def test_coefficient_stats_by_hand(ssc_diagnose):
    coefficient_stats = ssc_diagnose.coefficient_stats
    # point 0 -> 0.8 on point 1 (same digit) and 0.2 on point 2 (other digit); point 1 -> 1.0 on point 2
    C = sp.csr_matrix(np.array([[0.0, 0.8, -0.2], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]))
    s = coefficient_stats(C, np.array([0, 0, 1]))
    assert s["nnz_per_point"] == pytest.approx(1.0)
    assert s["max_share"] == pytest.approx((0.8 + 1.0) / 2)
    assert s["same_digit_mass"] == pytest.approx(0.8 / 2.0)
    assert s["strongest_edge_same_digit"] == pytest.approx(0.5)
    assert s["max_in_degree"] == 2


def test_mnist_scattering_mp_config_is_the_validated_setting():
    from conftest import REPO

    from jaxcomp.configs import load_config

    cfg = load_config(str(REPO / "configs" / "ssc.py") + ":mnist_scattering_mp")
    assert tuple(cfg.ssc.algorithms) == ("mp",) and cfg.ssc.affinity_normalization == "binary"
    assert cfg.ssc.s_max == 40 and cfg.ssc.tau == 0 and cfg.data.split == "train" and cfg.n_seeds == 3
    assert cfg.baselines.spectral and cfg.baselines.kmeans
