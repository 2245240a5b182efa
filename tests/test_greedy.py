"""Tests for jaxcomp.greedy: MP / OMP known answers and the non-negative MP variants."""

import numpy as np
import pytest
import scipy.optimize as so

from jaxcomp.greedy import VARIANTS, distance_objective, logistic_objective, make_objective, mp, nnmp, omp

M_DIM, K_ATOMS, SPARSITY = 40, 80, 5


@pytest.fixture(scope="module")
def planted():
    rng = np.random.default_rng(0)
    D = rng.standard_normal((M_DIM, K_ATOMS)).astype(np.float32)
    D /= np.linalg.norm(D, axis=0)
    X = np.zeros((4, K_ATOMS), np.float32)
    supports = []
    for i in range(4):
        s = np.sort(rng.choice(K_ATOMS, SPARSITY, replace=False))
        X[i, s] = rng.choice([-1, 1], SPARSITY) * (1 + rng.random(SPARSITY))
        supports.append(s)
    return D, X, X @ D.T, supports


def test_omp_recovers_planted_support(planted):
    D, X, Y, supports = planted
    res = omp(D, Y, max_iter=8, tol=1e-4)
    coef = np.asarray(res.coef)
    for i, s in enumerate(supports):
        np.testing.assert_array_equal(np.flatnonzero(np.abs(coef[i]) > 1e-4), s)
    np.testing.assert_allclose(coef, X, atol=1e-4)
    assert np.all(np.asarray(res.n_iter) == SPARSITY)  # stopped by the residual threshold
    assert np.all(np.asarray(res.residual_norm) <= 1e-4)


def test_omp_single_signal_and_exclude(planted):
    D, X, Y, supports = planted
    banned = int(supports[0][0])
    res = omp(D, Y[0], max_iter=8, exclude=banned)
    assert res.coef.shape == (K_ATOMS,)
    assert abs(float(res.coef[banned])) == 0.0
    assert np.asarray(res.n_iter) == 8  # cannot reach zero residual without the banned atom


def test_mp_residual_never_increases(planted):
    D, _, Y, _ = planted
    norms = [np.asarray(mp(D, Y, max_iter=k).residual_norm) for k in (1, 3, 9)]
    for a, b in zip(norms, norms[1:]):
        assert np.all(b <= a + 1e-6)
    res = mp(D, Y, max_iter=9)
    np.testing.assert_allclose(np.asarray(res.residual), Y - np.asarray(res.coef) @ D.T, atol=1e-5)


def test_mp_stopping_rules(planted):
    D, _, Y, _ = planted
    res = mp(D, Y, max_iter=16, max_nonzeros=3)
    assert np.all(np.sum(np.asarray(res.coef) != 0, axis=1) <= 3)
    tol = 0.5 * float(np.linalg.norm(Y[0]))
    res = mp(D, Y[0], max_iter=50, tol=tol)
    assert float(res.residual_norm) <= tol and int(res.n_iter) < 50


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(D=np.full((5, 3), np.nan), y=np.ones(5)), "NaN"),
        (dict(D=np.c_[np.ones(5), np.zeros(5)], y=np.ones(5)), "zero column"),
        (dict(D=np.ones((5, 3)), y=np.ones(4)), "mismatched shapes"),
        (dict(D=np.ones((5, 3)), y=np.ones(5), max_iter=0), "max_iter"),
        (dict(D=np.ones((5, 3)), y=np.ones(5), exclude=[0, 1]), "mismatched shapes"),
    ],
)
def test_pursuit_bad_input(kwargs, match):
    kwargs.setdefault("max_iter", 2)
    for fn in (omp, mp):
        with pytest.raises(ValueError, match=match):
            fn(**kwargs)


# ----------------------------------------------------------------------------- NNMP


@pytest.fixture(scope="module")
def nnls_problem():
    rng = np.random.default_rng(1)
    M = rng.standard_normal((30, 12))
    b = M @ np.where(rng.random(12) < 0.5, rng.random(12), 0.0) + 0.3 * rng.standard_normal(30)
    w, rnorm = so.nnls(M, b)
    return M, b, w, 0.5 * rnorm**2


@pytest.fixture(scope="module")
def nnls_runs(nnls_problem):
    M, b, _, _ = nnls_problem
    return {v: nnmp(distance_objective(b), M, variant=v, max_iter=150, x64=True) for v in VARIANTS}


@pytest.mark.parametrize("variant", VARIANTS)
def test_nnmp_stays_in_cone_and_decreases(nnls_runs, nnls_problem, variant):
    M, _, _, fstar = nnls_problem
    res = nnls_runs[variant]
    assert np.all(res.weights >= 0)
    np.testing.assert_allclose(res.x, M @ res.weights, atol=1e-10)
    h = res.history
    assert np.all(np.diff(h) <= 1e-12 * abs(h[0]))  # monotone
    assert h[-1] < 0.5 * h[0]  # and real progress
    assert h[-1] >= fstar * (1 - 1e-12)


def test_fully_corrective_reaches_nnls_optimum(nnls_runs, nnls_problem):
    _, _, w_ref, fstar = nnls_problem
    res = nnls_runs["fully_corrective"]
    assert abs(res.history[-1] - fstar) <= 1e-8 * fstar
    np.testing.assert_allclose(res.weights, w_ref, atol=1e-6)
    for v in ("away", "pairwise"):  # linear rate: also at the optimum within 150 steps
        assert abs(nnls_runs[v].history[-1] - fstar) <= 1e-6 * fstar


def test_nnmp_plain_callable_and_custom_lmo():
    rng = np.random.default_rng(2)
    F = rng.standard_normal((40, 6))
    y = np.sign(F @ np.abs(rng.standard_normal(6)))
    obj = logistic_objective(F, y, l2=0.1)
    ref = nnmp(obj, np.eye(6), variant="nnmp", max_iter=60)
    # f only (gradient by jax.grad) + an LMO returning atom vectors
    f_only = make_objective(obj.f, L=obj.L)

    def lmo(g):
        import jax.numpy as jnp

        return jnp.eye(6, dtype=g.dtype)[jnp.argmin(g)]

    res = nnmp(f_only, None, variant="nnmp", max_iter=60, lmo=lmo, lmo_returns_atom=True, dim=6)
    np.testing.assert_allclose(res.history, ref.history, rtol=1e-4)
    assert np.all(res.weights >= 0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(variant="greedy"), "unknown NNMP variant"),
        (dict(atoms=np.full((3, 2), np.nan)), "NaN"),
        (dict(atoms=np.zeros((3, 2))), "zero column"),
        (dict(atoms=np.ones((4, 2))), "mismatched shapes"),
        (dict(objective=lambda x: (x**2).sum()), "smoothness constant L"),
    ],
)
def test_nnmp_bad_input(kwargs, match):
    args = dict(objective=distance_objective(np.ones(3)), atoms=np.eye(3), variant="nnmp", max_iter=3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        nnmp(args.pop("objective"), args.pop("atoms"), **args)
