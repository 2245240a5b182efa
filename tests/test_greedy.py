"""Tests for jaxcomp.greedy: MP / OMP known answers and the non-negative MP variants."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize as so

from jaxcomp.greedy import (
    VARIANTS,
    distance_objective,
    least_squares_objective,
    logistic_objective,
    make_objective,
    mp,
    nnmp,
    omp,
)

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


def test_omp_stops_when_every_atom_left_is_in_the_span_of_its_support():
    """Noiseless signals in a 3-dimensional subspace, atoms in the same subspace, tol = 0 and
    max_iter = 8 > 3 (SSC's tau_from_noise(0) = 0 with s_max > d): after 3 atoms the residual is
    float noise and every further atom lies numerically in the span of the support, so OMP must
    stop at 3 atoms for all 512 signals instead of adding tiny spurious coefficients.

    Guards against: the span test without its relative tolerance (``diag2 > 0``), which lets float
    noise of either sign through (7 of the first 64 signals went on to 4-7 atoms; 512 signals make
    it unlikely that float noise falls one way for all of them on another machine).
    """
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.standard_normal((20, 3)))[0]
    D = (basis @ rng.standard_normal((3, 30))).astype(np.float32)
    D /= np.linalg.norm(D, axis=0)
    Y = (basis @ rng.standard_normal((3, 512))).T.astype(np.float32)
    res = omp(D, Y, max_iter=8)
    assert np.all(np.asarray(res.n_iter) == 3), np.bincount(np.asarray(res.n_iter))
    assert np.all(np.sum(np.asarray(res.support) >= 0, axis=1) == 3)
    assert np.all(np.sum(np.asarray(res.coef) != 0, axis=1) == 3)
    assert float(np.max(res.residual_norm)) < 1e-4


@pytest.mark.parametrize("pursuit", ["omp", "mp"])
def test_pursuits_stop_at_the_rounding_floor_of_noiseless_subspaces(pursuit):
    """SSC's self-expression with tol = 0 on noiseless points of 3 random 4-dim subspaces of R^30:
    once the residual is at float32 rounding (~1e-7 ||y||) it is fitted, and every selected atom
    must lie in the point's own subspace (the no-false-discovery property). Without the rounding
    floor, 3 of 120 points ran OMP on past 4 atoms, into other subspaces with coefficients up to
    0.41 (the span guard does not catch an atom of another subspace)."""
    rng = np.random.default_rng(0)
    X, labels = [], []
    for subspace in range(3):
        basis = np.linalg.qr(rng.standard_normal((30, 4)))[0]
        X.append((basis @ rng.standard_normal((4, 40))).T)
        labels += [subspace] * 40
    X = (X := np.vstack(X)) / np.linalg.norm(X, axis=1, keepdims=True)
    labels = np.asarray(labels)
    X = X.astype(np.float32)
    kwargs = dict(max_iter=10, exclude=np.arange(len(X)))
    res = omp(X.T, X, **kwargs) if pursuit == "omp" else mp(X.T, X, max_nonzeros=10, **kwargs)
    support = np.asarray(res.support)
    wrong = (support >= 0) & (labels[np.maximum(support, 0)] != labels[:, None])
    assert not wrong.any(), f"{wrong.any(1).sum()} points reach into other subspaces"
    if pursuit == "omp":
        assert np.all(np.asarray(res.n_iter) <= 4), np.bincount(np.asarray(res.n_iter))


def test_omp_single_signal_and_exclude(planted):
    D, X, Y, supports = planted
    banned = int(supports[0][0])
    res = omp(D, Y[0], max_iter=8, exclude=banned)
    assert res.coef.shape == (K_ATOMS,)
    assert abs(float(res.coef[banned])) == 0.0
    assert np.asarray(res.n_iter) == 8  # cannot reach zero residual without the banned atom


def test_pursuits_compute_half_precision_inputs_in_float32_also_under_x64(planted):
    """The docstring's "float32 unless x64 is enabled and inputs are float64": turning x64 on for
    unrelated float64 work must not run a pursuit of float16 inputs in float16 (~6x the residual)."""
    import jax

    D, X, Y, supports = planted
    base = omp(D.astype(np.float16), Y[:2].astype(np.float16), max_iter=4)
    with jax.enable_x64(True):
        half = omp(D.astype(np.float16), Y[:2].astype(np.float16), max_iter=4)
        wide = omp(D.astype(np.float64), Y[:2].astype(np.float64), max_iter=4)
    assert base.coef.dtype == half.coef.dtype == np.float32 and wide.coef.dtype == np.float64
    np.testing.assert_allclose(half.coef, base.coef, rtol=1e-5, atol=1e-6)


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
    # it stops at p_max distinct atoms: no step past them (its atom would have no slot, its residual
    # update would still happen)
    np.testing.assert_allclose(np.asarray(res.residual), Y - np.asarray(res.coef) @ D.T, atol=1e-5)
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
        # the check in float64 passed it; its square underflows in the device's float32: residual inf
        (dict(D=np.c_[np.ones(5), np.full(5, 1e-22)], y=np.ones(5)), r"norm below 1\.1e-19, e\.g\. column 1"),
        # ... or overflows there (finite in float64, inf in float32, or a squared norm beyond float32):
        # an empty support and an inf residual before
        (dict(D=np.eye(5, 3) * 1e20, y=np.ones(5)), r"dictionary D's columns reach a norm of 1e\+20.*rescale"),
        (dict(D=np.eye(5, 3), y=np.ones(5) * 1e39), r"the signals y reach a norm of 2\.24e\+39.*rescale"),
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


def test_objective_gradients_are_the_gradients_of_their_values():
    """The hand-written gradients of the objectives equal ``jax.grad`` of their values."""
    rng = np.random.default_rng(5)
    M, b, F = rng.standard_normal((7, 4)), rng.standard_normal(7), rng.standard_normal((9, 4))
    y = np.where(rng.random(9) < 0.5, -1.0, 1.0)
    x = jnp.asarray(rng.standard_normal(4))
    for obj in (least_squares_objective(M, b), logistic_objective(F, y, l2=0.3)):
        np.testing.assert_allclose(np.asarray(obj.grad(x)), np.asarray(jax.grad(obj.f)(x)), rtol=1e-5, atol=1e-6)
    # the logistic loss's smoothness constant: sigma'' <= 1/4, so ||F||_2^2 / (4 n) + l2
    assert logistic_objective(F, y, l2=0.3).L == pytest.approx(np.linalg.norm(F, 2) ** 2 / (4 * 9) + 0.3)


def test_first_nnmp_step_on_a_smooth_objective_is_the_smoothness_step():
    """Without a Hessian the step along the chosen atom is ``-<g, z> / (L ||z||^2)``: one step of
    plain NNMP on logistic regression, from 0, by hand (atoms of unequal norms)."""
    rng = np.random.default_rng(2)
    F = rng.standard_normal((40, 6))
    y = np.sign(F @ np.abs(rng.standard_normal(6)))
    obj = logistic_objective(F, y, l2=0.1)
    atoms = np.diag([1.0, 2.0, 0.5, 1.5, 1.0, 3.0])
    res = nnmp(obj, atoms, variant="nnmp", max_iter=1)
    g = np.asarray(obj.grad(jnp.zeros(6)), np.float64)
    k = int(np.argmin(atoms.T @ g))
    expected = np.zeros(6)
    expected[k] = -(g @ atoms[:, k]) / (obj.L * atoms[:, k] @ atoms[:, k])
    np.testing.assert_allclose(np.asarray(res.weights), expected, rtol=1e-5, atol=1e-8)


def test_fully_corrective_nnmp_on_logistic_regression_stays_in_the_cone_at_the_optimum():
    """Fully-corrective NNMP on a non-quadratic objective (its inner FISTA solve projects on w >= 0):
    non-negative weights and the L-BFGS-B optimum over the orthant."""
    from jaxcomp.greedy.benchmarks import logistic_reference

    rng = np.random.default_rng(2)
    F = rng.standard_normal((40, 6))
    y = np.sign(F @ np.array([1.0, 0.5, 0.0, 0.0, 2.0, 0.0]) + 0.3 * rng.standard_normal(40))
    res = nnmp(logistic_objective(F, y, l2=0.1), np.eye(6), variant="fully_corrective", max_iter=30)
    assert np.all(np.asarray(res.weights) >= 0)
    fstar = logistic_reference(F, y, 0.1)
    assert abs(res.history[-1] - fstar) <= 1e-5 * fstar
    # correlated atoms, where the unconstrained solve on the active atoms wants a negative weight
    rng = np.random.default_rng(0)
    F = rng.standard_normal((40, 6))
    y = np.sign(F @ np.array([1.0, -0.8, 0.5, -1.0, 2.0, 0.3]) + 0.3 * rng.standard_normal(40))
    atoms = np.abs(rng.standard_normal((6, 10))) + 0.5
    res = nnmp(logistic_objective(F, y, l2=0.01), atoms, variant="fully_corrective", max_iter=30)
    assert np.all(np.asarray(res.weights) >= 0)
    pairwise = nnmp(logistic_objective(F, y, l2=0.01), atoms, variant="pairwise", max_iter=300)
    assert res.history[-1] <= pairwise.history[-1] + 1e-5


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


def test_nnmp_warns_when_a_too_small_L_stalls_it():
    """``f = ||x - 1||^2`` has L = 2; with L = 1 every step overshoots to a point of equal value, is
    rejected, and the run stops at f(0) looking like a solution: a warning names L. At L = 2 it
    converges; where 0 is the optimum (no atom descends) a run without progress is silent."""
    import warnings

    import jax.numpy as jnp

    with pytest.warns(UserWarning, match=r"smoothness constant L \(1.0\) too small"):
        stalled = nnmp(lambda x: jnp.sum((x - 1) ** 2), np.eye(3), max_iter=6, L=1.0)
    assert stalled.history[0] == 3.0 and stalled.history[-1] == pytest.approx(3.0, rel=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert nnmp(lambda x: jnp.sum((x - 1) ** 2), np.eye(3), max_iter=6, L=2.0).history[-1] < 1e-6
        at_zero = nnmp(lambda x: jnp.sum((x + 1) ** 2), np.eye(3), max_iter=6, L=1.0)
    np.testing.assert_array_equal(at_zero.x, 0.0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(variant="greedy"), "unknown NNMP variant"),
        (dict(atoms=np.full((3, 2), np.nan)), "NaN"),
        (dict(atoms=np.zeros((3, 2))), "zero column"),
        (dict(atoms=np.ones((4, 2))), "mismatched shapes"),
        (dict(objective=lambda x: (x**2).sum()), "smoothness constant L"),
        (dict(atoms=np.zeros((3, 0))), r"non-empty 2-D .* got shape \(3, 0\)"),
        (dict(atoms=np.eye(3) * (1 + 1j)), "atoms must be real numbers, got dtype complex128"),
        (dict(variant="fully_corrective", inner_iter=0), "inner_iter must be a positive integer"),  # gave x = 0
        (dict(max_iter=True), "max_iter must be a positive integer"),
    ],
)
def test_nnmp_bad_input(kwargs, match):
    args = dict(objective=distance_objective(np.ones(3)), atoms=np.eye(3), variant="nnmp", max_iter=3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        nnmp(args.pop("objective"), args.pop("atoms"), **args)


def test_objectives_refuse_labels_and_values_they_cannot_use():
    """0/1 labels would silently optimise another problem; NaNs gave an SVD error or NaN histories."""
    with pytest.raises(ValueError, match=r"labels y must be -1 or \+1, got values \[0, 1\]"):
        logistic_objective(np.ones((4, 3)), np.array([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="mismatched shapes"):
        logistic_objective(np.ones((4, 3)), np.ones(3))
    with pytest.raises(ValueError, match="M contains NaN"):
        least_squares_objective(np.full((4, 3), np.nan), np.ones(4))
    with pytest.raises(ValueError, match="b contains NaN"):
        distance_objective(np.array([np.nan, 1.0]))
    logistic_objective(np.ones((4, 3)), np.array([-1, 1, -1, 1.0]))  # float labels of the right values pass


# ----------------------------------------------------------------------------- MP / OMP vs numpy references


def _pursuit_reference(D, y, max_iter, tol=0.0, corr_tol=0.0, exclude=-1, orthogonal=False):
    """Matching pursuit (``orthogonal=False``) or OMP (``lstsq`` on the support every step), written
    out in float64 numpy: ``(coef, residual, n_iter)``."""
    D, y = np.asarray(D, np.float64), np.asarray(y, np.float64)
    norms = np.linalg.norm(D, axis=0)
    coef, r, S, n = np.zeros(D.shape[1]), y.copy(), [], 0
    while n < max_iter:
        c = D.T @ r
        score = np.abs(c) / norms
        if orthogonal:
            score[S] = -1.0
        if exclude >= 0:
            score[exclude] = -1.0
        k = int(np.argmax(score))
        rn = np.linalg.norm(r)
        if not (rn > tol and score[k] > corr_tol * rn):
            break
        if orthogonal:
            S.append(k)
            coef = np.zeros(D.shape[1])
            coef[S] = np.linalg.lstsq(D[:, S], y, rcond=None)[0]
            r = y - D @ coef
        else:
            step = c[k] / norms[k] ** 2  # the projection of r on the line of d_k
            coef[k] += step
            r = r - step * D[:, k]
        n += 1
    return coef, r, n


@pytest.fixture(scope="module")
def scaled_dictionary(planted):
    """The planted dictionary with column norms 0.25 .. 4 (far from unit norm), 4 generic signals
    and one excluded atom for 3 of them; the shapes of ``planted``, so that the programs that
    the tests above compiled are reused."""
    D, _, Y, _ = planted
    rng = np.random.default_rng(5)
    norms = rng.permutation(np.geomspace(0.25, 4.0, D.shape[1]))
    Y2 = rng.standard_normal(Y.shape).astype(np.float32)
    return (D * norms).astype(np.float32), Y2, np.array([-1, 3, 17, 79], np.int32)


@pytest.mark.parametrize("algorithm", ["mp", "omp"])
def test_pursuit_matches_numpy_reference_with_unnormalised_atoms(scaled_dictionary, algorithm):
    """MP / OMP with atoms of norms 0.25-4 against the plain numpy loops above: coefficients,
    residual, its norm and the iteration count, under each stopping rule (``max_iter``, ``tol``,
    ``corr_tol``) and with excluded atoms. Each rule ends some pursuits early here.

    Guards against: MP ignoring atom norms (``step = c[k]`` instead of ``c[k]/||d_k||^2``), atom
    selection by ``|<d_k, r>|`` without dividing by ``||d_k||``, the residual update sign, OMP not
    re-solving least squares over the whole support, ``tol`` compared with ``||r||^2``,
    ``corr_tol`` compared without the ``||r||`` factor, the ``exclude`` index ignored.
    """
    D, Y, ex = scaled_dictionary
    fn, max_iter = (mp, 9) if algorithm == "mp" else (omp, 8)
    ref = functools.partial(_pursuit_reference, orthogonal=algorithm == "omp")
    for kw in (dict(), dict(tol=4.5), dict(corr_tol=0.3)):
        res = fn(D, Y, max_iter, exclude=ex, **kw)
        iters = []
        for i in range(len(Y)):
            coef, r, n = ref(D, Y[i], max_iter, exclude=int(ex[i]), **kw)
            iters.append(n)
            assert int(res.n_iter[i]) == n, (kw, i)
            np.testing.assert_allclose(
                np.asarray(res.coef[i]), coef, rtol=1e-4, atol=1e-5 * np.abs(coef).max(), err_msg=str(kw)
            )
            np.testing.assert_allclose(np.asarray(res.residual[i]), r, atol=1e-5 * np.linalg.norm(Y[i]))
            assert float(res.residual_norm[i]) == pytest.approx(np.linalg.norm(r), rel=1e-5)
        assert (min(iters) < max_iter) == bool(kw), (kw, iters)  # the rule under test stopped some early


# ----------------------------------------------------------------------------- NNMP vs numpy reference


def _nnmp_reference(A, b, variant, T, L=None):
    """The four algorithms of Locatello et al. (2017) for ``f(x) = 0.5||x - b||^2`` over
    ``cone(A)`` in float64 numpy, from ``x_0 = 0``. ``L=None``: exact line search (the Hessian
    is the identity); else the step ``-<g, d>/(L ||d||^2)``. Returns ``(history f(x_t),
    final weights, step kinds, smallest relative decision margin)``.
    """
    K = A.shape[1]
    w = np.zeros(K)
    hist, kinds, margin = [0.5 * b @ b], [], np.inf
    for _ in range(T):
        x = A @ w
        g = x - b
        p = A.T @ g  # <g, a_k>
        k = int(np.argmin(p))  # LMO
        rho = w.sum()
        act = np.flatnonzero(w > 0)
        j = int(act[np.argmax(p[act])]) if act.size else -1  # the worst active atom
        gx = g @ x / rho if rho > 0 else -np.inf  # <g, x/rho>
        scale = np.linalg.norm(g) * np.linalg.norm(A, axis=0).max()

        def line_search(d, cap, g=g):
            dd = d @ d
            return min(max(-(g @ d) / ((1.0 if L is None else L) * dd), 0.0), cap) if dd > 0 else 0.0

        if variant == "nnmp":  # NNMP: forward z or shrink along -x/rho
            if rho > 0:
                margin = min(margin, abs(-gx - p[k]) / scale)
            if rho > 0 and -gx < p[k]:
                gam = line_search(-x / rho, rho)
                w = w * (1 - gam / rho)
                kinds.append("shrink")
            else:
                w[k] += line_search(A[:, k], np.inf)
                kinds.append("forward")
        elif variant == "away":  # away-steps MP: forward z, or away from the active atom / x/rho
            gv, v = (gx, "x") if rho > 0 else (-np.inf, None)
            if j >= 0 and p[j] > gv:
                gv, v = p[j], j
            if v is not None:
                margin = min(margin, abs(-p[k] - gv) / scale)
            if -p[k] >= gv:
                w[k] += line_search(A[:, k], np.inf)
                kinds.append("forward")
            elif v == "x":
                gam = line_search(-x / rho, rho)
                w = w * (1 - gam / rho)
                kinds.append("shrink")
            else:
                gam = line_search(-A[:, v], w[v])
                kinds.append("drop" if gam == w[v] else "away")
                w[v] -= gam
        elif variant == "pairwise":  # pairwise MP on A ∪ {0}
            use_z, use_v = p[k] < 0, j >= 0 and p[j] > 0  # else z = 0 / v = 0
            margin = min(margin, abs(p[k]) / scale, abs(p[j]) / scale if j >= 0 else np.inf)
            d = (A[:, k] if use_z else np.zeros(len(b))) - (A[:, j] if use_v else 0.0)
            gam = line_search(d, w[j] if use_v else np.inf)
            if use_z and use_v:
                kinds.append("pair_drop" if gam == w[j] else "pair")  # capped at v's weight: a drop
            elif use_z:
                kinds.append("forward_with_active" if act.size else "forward")
            else:
                kinds.append("away" if use_v else "none")
            if use_z:
                w[k] += gam
            if use_v:
                w[j] -= gam
        else:  # fully-corrective MP: re-solve NNLS on the active atoms and z
            S = np.flatnonzero((w > 0) | (np.arange(K) == k))
            unconstrained = np.linalg.lstsq(A[:, S], b, rcond=None)[0]
            kinds.append("corrective" if np.all(unconstrained > 0) else "corrective_with_drop")
            w = np.zeros(K)
            w[S] = so.nnls(A[:, S], b)[0]
        hist.append(0.5 * np.sum((A @ w - b) ** 2))
    return np.array(hist), w, kinds, margin


# The zig-zag problem: x* = e1 + e2 lies on the face cone(e1, e2) and b is outside the cone, but
# the LMO first picks a3 = (1, 1, 0.5), which is not on that face. Plain NNMP can only remove a3
# by shrinking all weights and re-adding e1, e2 (zig-zag, Θ(1/t)); away/pairwise steps drop it.
ZIGZAG_A = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [0.0, 0.0, 0.5]])
ZIGZAG_B = np.array([1.0, 1.0, -0.3])
ZIGZAG_FSTAR = 0.5 * 0.3**2
ZIGZAG_ITERS = {"nnmp": 1000, "away": 100, "fully_corrective": 6}


@pytest.fixture(scope="module")
def zigzag_runs():
    return {
        v: nnmp(distance_objective(ZIGZAG_B), ZIGZAG_A, variant=v, max_iter=T, x64=True)
        for v, T in ZIGZAG_ITERS.items()
    }


@pytest.mark.parametrize(
    "problem, variant, kinds",
    [
        ("zigzag", "nnmp", {"forward", "shrink"}),
        ("zigzag", "away", {"forward", "away", "drop"}),
        ("zigzag", "fully_corrective", {"corrective", "corrective_with_drop"}),
        ("nnls", "nnmp", {"forward", "shrink"}),
        ("nnls", "away", {"forward", "away"}),
        ("nnls", "fully_corrective", set()),
    ],
)
def test_nnmp_iterates_match_reference(zigzag_runs, nnls_runs, nnls_problem, problem, variant, kinds):
    """Every objective value f(x_t) and the final weights of NNMP, away-steps MP and
    fully-corrective MP (exact line search) equal those of the numpy transcription above, on the
    zig-zag problem (1000 / 100 / 6 steps) and on the 30 x 12 NNLS problem (150 steps); the
    reference runs contain shrink steps (NNMP), away and drop steps (away-steps MP) and a
    corrective solve whose unconstrained least squares has a negative weight (fully corrective).

    Guards against: NNMP never shrinking (always the forward step), a shrink step that does not
    scale the weights by ``1 - gamma/rho``, the away step taken from the wrong atom, the away
    candidate chosen by the wrong comparison, the fully-corrective solve cut short (one
    active-set pass) — none of which the monotonicity test can see, since the code rejects
    increasing steps.
    """
    if problem == "zigzag":
        A, b, res = ZIGZAG_A, ZIGZAG_B, zigzag_runs[variant]
    else:
        A, b, _, _ = nnls_problem
        res = nnls_runs[variant]
    h, w, steps, margin = _nnmp_reference(A, b, variant, len(res.history) - 1)
    assert kinds <= set(steps)
    np.testing.assert_allclose(res.history, h, rtol=0, atol=1e-12 * h[0])
    np.testing.assert_allclose(res.weights, w, atol=1e-9)
    if variant == "nnmp":
        assert margin > 1e-6  # no near-tie decision: the pin does not hinge on rounding


# Pairwise MP on a generic 4-atom problem with the step 1/L (L = 1.1 > 1: no exact ties at 0,
# which exact line search creates and rounding would then decide).
PAIR_A = np.array([[-0.5, -1.1, -0.6, -0.2], [-0.2, 0.5, -1.5, -1.7], [0.6, 0.1, -0.1, -0.4]])
PAIR_B = np.array([-1.2, 0.0, 0.9])


def test_pairwise_iterates_match_reference_with_zero_atom():
    """Pairwise MP's f(x_t) for 10 steps and its final weights equal the reference's, whose run
    contains all kinds of steps on ``A ∪ {0}``: pairs, pairs capped at v's weight (drop),
    ``v = 0`` (a pure forward step although atoms are active) and ``z = 0`` (a pure away step),
    with every decision far from a tie.

    Guards against: pairwise MP never substituting the zero atom for ``v`` (so ``sum w`` can
    never change after the first step) or for ``z`` (no pure away step), and the pair step not
    capped at ``v``'s weight.
    """
    obj = make_objective(lambda x: 0.5 * jnp.sum((x - PAIR_B) ** 2), grad=lambda x: x - PAIR_B, L=1.1)
    res = nnmp(obj, PAIR_A, variant="pairwise", max_iter=10, x64=True)
    h, w, kinds, margin = _nnmp_reference(PAIR_A, PAIR_B, "pairwise", 10, L=1.1)
    assert {"pair", "pair_drop", "forward_with_active", "away"} <= set(kinds) and margin > 1e-2
    np.testing.assert_allclose(res.history, h, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(res.weights, w, atol=1e-10)


# ----------------------------------------------------------------------------- measured rates


def _slope(t, gap):
    """Least-squares slope of ``log gap`` against ``t`` and the fit's R^2."""
    y = np.log(gap)
    X = np.c_[t, np.ones(len(t))]
    c = np.linalg.lstsq(X, y, rcond=None)[0]
    return c[0], 1 - np.sum((X @ c - y) ** 2) / np.sum((y - y.mean()) ** 2)


@pytest.mark.parametrize("variant", ["away", "pairwise"])
def test_linear_rate_on_strongly_convex_nnls(nnls_runs, nnls_problem, variant):
    """Away-steps and pairwise MP converge linearly on NNLS (strongly convex in x): log(f - f*)
    against t is a straight line (R^2 > 0.98) of slope < -0.05 per iteration down to 1e-10 of
    the initial gap, and no power law fits its tail (log-log slope < -4).

    Guards against: pairwise MP never substituting the zero atom for ``v`` (mass can only move
    between atoms: it stalls), away steps never taken or taken from the wrong atom, a wrong step
    size.
    """
    _, _, _, fstar = nnls_problem
    gap = nnls_runs[variant].history - fstar
    end = np.flatnonzero(gap > 1e-10 * gap[0])[-1] + 1  # the fit stops at 1e-10 of the initial gap
    t = np.arange(10, end)
    slope, r2 = _slope(t, gap[t])
    assert slope < -0.05 and r2 > 0.98, (slope, r2)
    tail = np.arange(end // 2, end)
    loglog, _ = _slope(np.log(tail), gap[tail])
    assert loglog < -4, loglog


def test_nnmp_sublinear_rate_and_away_fixes_zigzag(zigzag_runs):
    """On the zig-zag problem plain NNMP is in the O(1/t) class the theory gives it: log(f - f*)
    against log t over t = 100..1000 is a line (R^2 > 0.99) of slope in [-1.3, -0.6], t (f - f*)
    stays bounded, and the gap is still > 1e-4 (not linear). Away-steps MP, which can drop a3,
    reaches f* to 1e-12 within 100 iterations.

    Guards against: NNMP never shrinking or shrinking wrongly (the gap stalls: slope ~ 0),
    away steps disabled.
    """
    gap = zigzag_runs["nnmp"].history - ZIGZAG_FSTAR
    t = np.arange(100, 1001)
    slope, r2 = _slope(np.log(t), gap[t])
    assert -1.3 < slope < -0.6 and r2 > 0.99, (slope, r2)
    assert np.max(t * gap[t]) <= 2 * 100 * gap[100]
    assert gap[-1] > 1e-4
    assert zigzag_runs["away"].history[-1] - ZIGZAG_FSTAR < 1e-12


# ----------------------------------------------------------------------------- real-data experiments (issue 33)


@pytest.fixture(scope="module")
def digits_problem():
    """scikit-learn's bundled 8x8 digits (no download): 10 training digits as atoms (64 x 10) and
    30 held-out digits as targets; the same shapes as the NMF test below, so both reuse one
    compiled program."""
    from jaxcomp.greedy.realdata import load_images, regression_problem

    train, test, _ = load_images("digits")
    A, B = regression_problem(train, test, n_atoms=10, n_targets=30, seed=0)
    return A, B, train


def test_batched_coding_matches_scipy_nnls_on_digits(digits_problem):
    """Fully-corrective MP batched over 30 held-out digits (``nnmp_batch``, float64) reaches
    scipy's NNLS optimum of every target (weights to 1e-8, objective to 1e-10 relative) and the
    experiment's relative gap is ~0; weights are non-negative, ``x = A w``.

    Guards against: the traced objective of the batched coder (gradient or Hessian-vector
    product) being wrong, targets mixed up across the batch, the relative gap formula.
    """
    from jaxcomp.greedy import nnmp_batch
    from jaxcomp.greedy.realdata import nnls_reference, relative_gap

    A, B, _ = digits_problem
    W_ref, fstar, _ = nnls_reference(A, B)
    res = nnmp_batch(A, B, variant="fully_corrective", max_iter=12, x64=True)
    assert res.weights.shape == (30, 10) and res.history.shape == (30, 13)
    assert np.all(res.weights >= 0)
    np.testing.assert_allclose(res.x, res.weights @ A.T, atol=1e-10)
    np.testing.assert_allclose(res.weights, W_ref, atol=1e-8)
    np.testing.assert_allclose(res.history[:, -1], fstar, rtol=1e-10)
    assert abs(relative_gap(res.history.T, fstar)[-1]) < 1e-10
    assert relative_gap(res.history.T, fstar)[0] == pytest.approx((np.sum(B**2) / 2 - fstar.sum()) / fstar.sum())


def test_time_to_accuracy_is_the_first_checkpoint_that_reaches_it():
    """The regression table's time to a gap: per seed the seconds of the *first* checkpoint at or
    below the accuracy, mean ± std over the seeds that get there, with the count when some do not.

    Guards against: the last reaching checkpoint (with decreasing gaps, always the full run), a
    strict ``<``, seeds that never reach it averaged in.
    """
    from jaxcomp.greedy.realdata import time_to_accuracy

    G = np.array([[1.0, 0.1, 1e-3, 1e-5], [1.0, 1e-3, 1e-4, 1e-6], [1.0, 0.5, 0.2, 0.1]])
    S = np.array([[0.0, 1.0, 2.0, 4.0], [0.0, 3.0, 5.0, 8.0], [0.0, 1.0, 2.0, 3.0]])
    assert time_to_accuracy(G, S, 1e-3) == "2.5 ± 0.5 (2/3 seeds)"  # seeds 0, 1 at 2 s and 3 s
    assert time_to_accuracy(G[:2], S[:2], 1e-3) == "2.5 ± 0.5"
    assert time_to_accuracy(G, S, 0.1) == "2.33 ± 0.943"  # 1, 3 and 3 s (seed 2 exactly at 0.1)
    assert time_to_accuracy(G, S, 1e-7) == "not reached"


def test_nmf_with_greedy_coding_decreases_and_matches_anls(digits_problem):
    """Alternating NMF of 30 digits (rank 10) whose coding step is fully-corrective MP: the
    relative error never increases over 4 outer iterations and drops by > 10 %, both factors are
    non-negative, W's columns have unit norm, and the whole error trajectory equals ANLS (exact
    coding by scipy's NNLS, same dictionary steps) to 1e-9; the final codes are the NNLS codes.

    Guards against: a coding step that can increase the objective, codes not non-negative, the
    dictionary normalisation changing the product W H, ANLS / greedy runs not comparable.
    """
    from jaxcomp.greedy.realdata import nmf

    _, B, _ = digits_problem
    Y = B.T  # (64, 30)
    W, H, err, _, _ = nmf(Y, 10, "fully_corrective", outer_iter=4, code_iter=12, x64=True)
    _, _, err_anls, _, _ = nmf(Y, 10, "anls", outer_iter=4)
    assert np.all(np.diff(err) <= 1e-12) and err[-1] < 0.9 * err[0], err
    assert np.all(W >= 0) and np.all(H >= 0)
    np.testing.assert_allclose(np.linalg.norm(W, axis=0), 1.0, rtol=1e-12)
    np.testing.assert_allclose(err, err_anls, atol=1e-9)
    np.testing.assert_allclose(H, np.stack([so.nnls(W, y)[0] for y in Y.T], axis=1), atol=1e-7)


def test_nmf_dictionary_step_is_exact_and_normalisation_keeps_product():
    """HALS sweeps converge to the exact NNLS solution of the dictionary subproblem (rows of W by
    scipy's NNLS) and never increase the error; the normalisation keeps W H, gives unit columns,
    and replaces a zero column by the worst-fitted data column.

    A coding step keeps, per column, whichever of the old and new codes fits better.

    Guards against: a wrong HALS update (sign, missing projection, wrong Gram entry), a
    normalisation that rescales H the wrong way, greedy codes restarted from 0 replacing better
    ones (the NMF objective could increase).
    """
    from jaxcomp.greedy.realdata import _normalise, hals_update, keep_better

    rng = np.random.default_rng(3)
    Y, W0, H = rng.random((12, 20)), rng.random((12, 4)), rng.random((4, 20))
    W1 = hals_update(Y, W0, H, 1)
    assert np.linalg.norm(Y - W1 @ H) <= np.linalg.norm(Y - W0 @ H)
    W = hals_update(Y, W0, H, 300)
    W_ref = np.stack([so.nnls(H.T, y)[0] for y in Y])
    np.testing.assert_allclose(W, W_ref, atol=1e-8)
    W[:, 2] = 0.0
    Wn, Hn = _normalise(Y, W, H)
    np.testing.assert_allclose(np.linalg.norm(Wn, axis=0), 1.0)
    H2 = H.copy()
    H2[2] = 0.0
    np.testing.assert_allclose(Wn @ Hn, W @ H2, atol=1e-12)
    worst = int(np.argmax(np.linalg.norm(Y - W @ H, axis=0)))
    np.testing.assert_allclose(Wn[:, 2], Y[:, worst] / np.linalg.norm(Y[:, worst]))
    # a coding step keeps, per column, whichever code fits better
    H_new = np.linalg.lstsq(W, Y, rcond=None)[0]  # unconstrained least squares: better everywhere
    H_new[:, :10] = 0.0  # then worse on the first 10 columns
    err_old, err_new = np.sum((Y - W @ H) ** 2, axis=0), np.sum((Y - W @ H_new) ** 2, axis=0)
    assert np.all(err_new[:10] > err_old[:10]) and np.all(err_new[10:] < err_old[10:])
    kept = keep_better(Y, W, H, H_new)
    np.testing.assert_array_equal(kept[:, :10], H[:, :10])
    np.testing.assert_array_equal(kept[:, 10:], H_new[:, 10:])


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: __import__("jaxcomp.greedy", fromlist=["x"]).nnmp_batch(np.eye(3), np.ones((2, 4))), "mismatched"),
        (lambda: __import__("jaxcomp.greedy", fromlist=["x"]).nnmp_batch(np.eye(3), np.full((2, 3), np.nan)), "NaN"),
        (lambda: __import__("jaxcomp.greedy", fromlist=["x"]).nnmp_batch(np.eye(3), np.ones((2, 3), complex)),
         "real numbers"),
        (lambda: __import__("jaxcomp.greedy", fromlist=["x"]).nnmp_batch(np.zeros((3, 2)), np.ones(3)), "zero column"),
        (lambda: __import__("jaxcomp.greedy", fromlist=["x"]).nnmp_batch(np.eye(3), np.ones(3), max_iter=0),
         "max_iter"),
        (lambda: __import__("jaxcomp.greedy.realdata", fromlist=["x"]).nmf(-np.ones((3, 4)), 2, "anls"),
         "non-negative"),
        (lambda: __import__("jaxcomp.greedy.realdata", fromlist=["x"]).nmf(np.ones((3, 4)), 5, "anls"), "rank"),
        (lambda: __import__("jaxcomp.greedy.realdata", fromlist=["x"]).code_columns(np.eye(3), np.ones((3, 2)), "x", 3),
         "unknown coding method"),
        (lambda: __import__("jaxcomp.greedy.realdata", fromlist=["x"]).load_images("photos"), "unknown image source"),
    ],
)
def test_real_data_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.slow
def test_batched_coding_iterates_equal_single_runs(nnls_problem):
    """``nnmp_batch`` gives, target by target, the iterates of :func:`nnmp` for NNMP, away-steps
    and fully-corrective MP (f(x_t) to 1e-12, final weights); pairwise MP, whose exact line
    search leaves ties at 0 that rounding decides differently under ``vmap``, reaches each
    target's NNLS optimum."""
    from jaxcomp.greedy import nnmp_batch

    M, _, _, _ = nnls_problem
    B = np.random.default_rng(7).standard_normal((4, M.shape[0]))
    fstar = np.array([0.5 * so.nnls(M, b)[1] ** 2 for b in B])
    for v in VARIANTS:
        res = nnmp_batch(M, B, variant=v, max_iter=300 if v == "pairwise" else 60, x64=True)
        if v == "pairwise":
            np.testing.assert_allclose(res.history[:, -1], fstar, rtol=1e-10)
            continue
        for i, b in enumerate(B):
            one = nnmp(distance_objective(b), M, variant=v, max_iter=60, x64=True)
            np.testing.assert_allclose(res.history[i], one.history, atol=1e-12 * one.history[0])
            np.testing.assert_allclose(res.weights[i], one.weights, atol=1e-9)


@pytest.mark.slow
def test_real_data_experiments_run(tmp_path):
    """Both experiment drivers end to end on scikit-learn's digits, a few steps: tables, curves and
    figures written; fully-corrective MP at the NNLS optimum, plain NNMP not yet; every NMF error
    curve non-increasing (guards against greedy codes restarted from 0 replacing better ones);
    greedy NMF with fully-corrective coding equal to ANLS."""
    from jaxcomp.greedy.realdata import run_nmf, run_regression

    md = run_regression(str(tmp_path / "r"), data="digits", n_atoms=20, n_targets=3, max_iter=40, checkpoints=(10,),
                        seeds=(0, 1, 2), lasso_iters=(1, 10))
    assert "Fully-corrective MP" in md and "scipy.optimize.nnls" in md
    cur = np.load(tmp_path / "r" / "regression_curves.npz")
    assert cur["gap_fully_corrective"].shape == (3, 41)
    assert np.all(np.abs(cur["gap_fully_corrective"][:, -1]) < 1e-10)
    assert np.all(cur["gap_nnmp"][:, -1] > 1e-6)
    assert (tmp_path / "r" / "nnmp_regression.png").stat().st_size > 0
    md = run_nmf(str(tmp_path / "n"), data="digits", n_images=40, rank=5, outer_iter=2, code_iter=8, seeds=(0, 1, 2))
    cur = np.load(tmp_path / "n" / "nmf_curves.npz")
    assert cur["err_anls"].shape == (3, 3)
    for key in ("err_anls",) + tuple(f"err_{v}" for v in VARIANTS):  # the NMF objective never increases
        assert np.all(np.diff(cur[key], axis=1) <= 1e-9), (key, cur[key])
    np.testing.assert_allclose(cur["err_fully_corrective"], cur["err_anls"], atol=1e-4)  # float32 codes
    assert np.all(cur["err_nnmp"][:, -1] >= cur["err_anls"][:, -1] - 1e-6)
    assert (tmp_path / "n" / "nnmp_nmf.png").stat().st_size > 0 and "sklearn NMF" in md


# ----------------------------------------------------------------------------- cone of rank-one matrices (issue 33)


@functools.cache
def _jitted_rank1_lmo(shape):
    import jax

    from jaxcomp.greedy.realdata import rank1_lmo

    return jax.jit(rank1_lmo(shape))


def _lmo_value(M):
    """``<M, atom>`` and the atom ``(p, n)`` returned by ``rank1_lmo`` for ``g = -vec(M)``
    (float64; one compiled LMO per shape)."""
    import jax

    with jax.enable_x64(True):
        a = np.asarray(_jitted_rank1_lmo(M.shape)(jnp.asarray(-M.reshape(-1), jnp.float64)))
    a = a.reshape(M.shape)
    return float(np.sum(a * M)), a


def _best_nonneg_rank1(M):
    """Exact ``max_{u, v >= 0, |u| = |v| = 1} u^T M v`` by enumeration: at the optimum, with
    supports I, J, ``(u_I, v_J)`` is a singular pair of ``M[I, J]`` with non-negative vectors
    (or the largest entry when no value is positive)."""
    import itertools

    best = M.max()
    p, n = M.shape
    for ri in range(1, p + 1):
        for rows in itertools.combinations(range(p), ri):
            for rj in range(1, n + 1):
                for cols in itertools.combinations(range(n), rj):
                    U, s, Vt = np.linalg.svd(M[np.ix_(rows, cols)])
                    for k in range(len(s)):
                        for sg in (1.0, -1.0):
                            if np.all(sg * U[:, k] >= -1e-12) and np.all(sg * Vt[k] >= -1e-12):
                                best = max(best, s[k])
    return best


def test_rank1_lmo_is_exact_on_small_and_nonnegative_cases():
    """The rank-one LMO returns a non-negative, unit-norm, rank-one atom; on a non-negative
    matrix its value is the top singular value (Perron pair); on 12 random 4 x 5 mixed-sign
    matrices it equals the exact optimum found by enumerating supports; on a 6 x 9 matrix it is
    at least the best of 20,000 random non-negative rank-one atoms (dense and sparse) and the
    largest entry; on a non-positive matrix it is the coordinate atom of the largest entry, and
    on a matrix whose largest entry beats the local maximum that positive starts climb to, it
    finds that entry.

    Guards against: a sign error (argmax of <g, a> instead of argmin), a missing projection
    (atoms with negative entries), unnormalised atoms, a wrong reshape (u v^T vs v u^T), an
    LMO stuck at a poor local maximum (no power steps, no largest-entry start).
    """
    rng = np.random.default_rng(0)
    M = rng.random((7, 5))
    val, a = _lmo_value(M)
    assert val == pytest.approx(np.linalg.svd(M, compute_uv=False)[0], rel=1e-10)
    for _ in range(12):
        M = rng.standard_normal((4, 5))
        val, a = _lmo_value(M)
        assert val == pytest.approx(_best_nonneg_rank1(M), abs=1e-9)
    M = rng.standard_normal((6, 9))
    val, a = _lmo_value(M)
    assert np.all(a >= 0) and np.linalg.norm(a) == pytest.approx(1.0, abs=1e-12)
    s = np.linalg.svd(a, compute_uv=False)
    assert s[1] < 1e-12 * s[0]
    U = np.abs(rng.standard_normal((20000, 6))) * (rng.random((20000, 6)) < 0.6)
    V = np.abs(rng.standard_normal((20000, 9))) * (rng.random((20000, 9)) < 0.6)
    ok = (np.linalg.norm(U, axis=1) > 0) & (np.linalg.norm(V, axis=1) > 0)
    U, V = U[ok] / np.linalg.norm(U[ok], axis=1, keepdims=True), V[ok] / np.linalg.norm(V[ok], axis=1, keepdims=True)
    assert val >= np.max(np.einsum("ki,ij,kj->k", U, M, V)) - 1e-12 and val >= M.max()
    M = -rng.random((3, 4))
    val, a = _lmo_value(M)
    i, j = np.unravel_index(np.argmax(M), M.shape)
    assert val == pytest.approx(M[i, j]) and a[i, j] == pytest.approx(1.0)
    # positive starts climb to the 2 x 7 block of ones (value sqrt(14) = 3.74); the entry 4 wins
    M = np.full((3, 8), -1.0)
    M[1:, 1:], M[0, 0] = 1.0, 4.0
    assert _lmo_value(M)[0] == pytest.approx(4.0)


@pytest.fixture(scope="module")
def rank1_runs():
    """Every variant, 10 iterations, on 12 sklearn digits (64 x 12) as columns; computed lazily
    per variant (one compiled program each, ~2 s) and shared by the tests below."""
    from jaxcomp.greedy.realdata import load_images, rank1_nnmp

    train, _, _ = load_images("digits")
    Y = train[:12].T
    cache = {}

    def get(variant):
        if variant not in cache:
            cache[variant] = rank1_nnmp(Y, variant, 10)
        return cache[variant]

    return Y, get


@pytest.mark.parametrize("variant", VARIANTS)
def test_rank1_cone_variant_decreases_and_respects_svd_floor(rank1_runs, variant):
    """On NMF as a cone problem (``0.5||X - Y||_F^2`` over non-negative rank-one matrices), each
    variant's relative error never increases, its first step gives exactly the best rank-one
    approximation (Y >= 0: the Perron atom with exact line search = truncated SVD at rank 1),
    every later error is at least the truncated-SVD error at the number of active atoms, X is
    the non-negative combination of non-negative rank-one atoms it reports, and the error drops
    below 0.75 of the rank-1 error within 10 iterations.

    Guards against: a wrong objective / line search on the collected atoms, atoms that are not
    rank-one or not non-negative, the active-atom count or history being wrong.
    """
    from jaxcomp.greedy.realdata import svd_floor

    Y, get = rank1_runs
    res, err = get(variant)
    floor = svd_floor(Y, 10)
    assert err[0] == pytest.approx(1.0)
    assert np.all(np.diff(err) <= 1e-12), err
    assert err[1] == pytest.approx(floor[1], rel=1e-8)
    assert np.all(err >= floor[np.asarray(res.n_active)] - 1e-10)
    assert err[-1] < 0.75 * err[1]
    A, w = np.asarray(res.atoms), np.asarray(res.weights)
    assert np.all(A >= 0) and np.all(w >= 0)
    np.testing.assert_allclose(np.asarray(res.x), A @ w, atol=1e-12)
    used = np.flatnonzero(w > 0)
    assert len(used) == res.n_active[-1]
    for k in used:
        s = np.linalg.svd(A[:, k].reshape(Y.shape), compute_uv=False)
        assert s[0] == pytest.approx(1.0) and s[1] < 1e-10


def test_rank1_cone_fully_corrective_is_optimal_on_its_atoms_and_beats_nnmp(rank1_runs):
    """Fully-corrective MP's iterate is the exact optimum over the cone of the atoms it has
    collected (scipy's NNLS on those columns gives the same objective, 1e-9 relative), and after
    10 iterations its error is below plain NNMP's (0.290 vs 0.400 measured on this case)
    and pairwise MP's, the order the linear / sublinear rates predict.

    Guards against: the fully-corrective solve over the LMO buffer (Gram matrix recomputed from
    the collected atoms) being wrong, e.g. using the stale Gram of the empty buffer.
    """
    Y, get = rank1_runs
    res, err = get("fully_corrective")
    A = np.asarray(res.atoms)
    A = A[:, np.linalg.norm(A, axis=0) > 0]
    _, rnorm = so.nnls(A, Y.reshape(-1))
    assert err[-1] == pytest.approx(rnorm / np.linalg.norm(Y), rel=1e-9)
    assert err[-1] < get("pairwise")[1][-1] < get("nnmp")[1][-1]


def test_rank1_cached_runner_equals_public_nnmp(rank1_runs):
    """``rank1_nnmp`` (a compiled program cached per variant and shape, ``vec(Y)`` an argument)
    gives the iterates of the public ``nnmp(objective, None, lmo=rank1_lmo(...),
    lmo_returns_atom=True)`` on the same problem: objective history to 1e-12, same weights.

    Guards against: the cached runner minimising a different objective than ``0.5||X - Y||^2``
    (e.g. a stale ``Y`` baked into a cached program), a different LMO in the two paths.
    """
    import jax

    from jaxcomp.greedy import Objective
    from jaxcomp.greedy.realdata import rank1_lmo

    Y, get = rank1_runs
    res, _ = get("away")
    b = Y.reshape(-1)
    with jax.enable_x64(True):
        obj = Objective(f=lambda x: 0.5 * jnp.sum((x - b) ** 2), grad=lambda x: x - b, L=1.0, hvp=lambda d: d)
        one = nnmp(obj, None, variant="away", max_iter=10, lmo=rank1_lmo(Y.shape), lmo_returns_atom=True, dim=Y.size,
                   x64=True)
    np.testing.assert_allclose(res.history, one.history, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(res.weights, one.weights, atol=1e-10)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda m: m.rank1_nnmp(-np.ones((3, 4)), "nnmp", 3), "non-negative"),
        (lambda m: m.rank1_nnmp(np.zeros((3, 4)), "nnmp", 3), "non-zero"),
        (lambda m: m.rank1_nnmp(np.ones((3, 4)), "greedy", 3), "unknown NNMP variant"),
        (lambda m: m.rank1_nnmp(np.ones((3, 4)), "nnmp", 0), "max_iter"),
        (lambda m: m.rank1_lmo((0, 3)), "rank1_lmo"),
        (lambda m: m.run_rank1("/nonexistent/never-created", variants=("greedy",)), "unknown NNMP variant"),
    ],
)
def test_rank1_bad_input(call, match):
    from jaxcomp.greedy import realdata

    with pytest.raises(ValueError, match=match):
        call(realdata)


@pytest.mark.slow
def test_rank1_experiment_runs(tmp_path):
    """The ``rank1`` driver end to end on scikit-learn's digits (30 images, 8 iterations, 3
    seeds): table, curves and figure written; every error curve non-increasing and above the
    truncated-SVD floor; fully-corrective MP below plain NNMP; the baselines' rows present."""
    from jaxcomp.greedy.realdata import run_rank1

    md = run_rank1(str(tmp_path), data="digits", n_images=30, max_iter=8, checkpoints=(4,), seeds=(0, 1, 2))
    cur = np.load(tmp_path / "rank1_curves.npz")
    assert list(cur["Ts"]) == [4, 8] and cur["svd_floor"].shape == (3, 9) and cur["sklearn_err"].shape == (3, 2)
    for v in VARIANTS:
        E = cur[f"err_{v}"]
        assert E.shape == (3, 9) and np.all(np.diff(E, axis=1) <= 1e-12)
        assert np.all(E >= cur["svd_floor"] - 1e-10)
        assert cur[f"sec_{v}"].shape == (3, 2) and np.all(cur[f"sec_{v}"] > 0)
    assert np.all(cur["err_fully_corrective"][:, -1] < cur["err_nnmp"][:, -1])
    assert "truncated SVD" in md and "sklearn NMF" in md and "Fully-corrective MP" in md
    assert (tmp_path / "nnmp_rank1.png").stat().st_size > 0 and (tmp_path / "rank1.md").exists()


def test_distance_runner_refuses_wrong_buffers_and_settings():
    import jax.numpy as jnp

    from jaxcomp.greedy import distance_runner

    def lmo(g):  # the best coordinate atom: argmin_k g_k
        return jnp.zeros_like(g).at[jnp.argmin(g)].set(1.0)

    run = distance_runner("nnmp", 3, lmo)
    b = jnp.asarray([3.0, -1.0, 2.0])
    res = run(jnp.zeros((3, 3)), b)  # the cone is the orthant: the projection of b on it
    np.testing.assert_allclose(np.asarray(res.x), [3.0, 0.0, 2.0], atol=1e-5)
    with pytest.raises(ValueError, match="A0 must be a float"):
        run(jnp.zeros((3, 2)), b)  # a short buffer would silently drop atoms under jit
    with pytest.raises(ValueError, match="b must be"):
        run(jnp.zeros((3, 3)), b[:2])
    with pytest.raises(ValueError, match="max_iter must be an integer"):
        distance_runner("nnmp", 0, lmo)
    with pytest.raises(ValueError, match="inner_iter must be an integer"):
        distance_runner("fully_corrective", 3, lmo, inner_iter=True)
    with pytest.raises(ValueError, match="unknown variant"):
        distance_runner("omp", 3, lmo)


def test_complex_text_and_fractional_inputs_are_refused():
    """Complex signals or atoms would lose their imaginary part, text is not a signal, and 2.5 is
    not an atom index: each is refused by name (NNMP refuses complex input as well)."""
    rng = np.random.default_rng(0)
    D, y = rng.normal(size=(8, 5)), rng.normal(size=8)
    for args, match in (((D, y + 1j * y), "y must be real"), ((D + 1j, y), "D must be real"),
                        ((D, np.array(["a"] * 8)), "y must be real")):
        with pytest.raises(ValueError, match=match):
            omp(*args, 3)
    with pytest.raises(ValueError, match="integer atom indices"):
        mp(D, y, 3, exclude=2.5)
    with pytest.raises(ValueError, match="tol must be a finite number"):
        omp(D, y, 3, tol=None)


def test_nnmp_refuses_scales_outside_its_precision():
    """Atoms of norm ~1e20 (f = 9.66 against the NNLS optimum 8.78, with a warning blaming L), atoms
    of ~1e-25 (f(0) returned) or targets of ~1e25 (an inf history) are refused in float32, naming them."""
    from jaxcomp.greedy.nnmp import logistic_objective, nnmp_batch

    rng = np.random.default_rng(0)
    A, b = np.abs(rng.standard_normal((10, 6))), rng.standard_normal(10)
    with pytest.raises(ValueError, match=r"the atoms \(columns\) reach a norm of .*overflows in float32"):
        nnmp(distance_objective(b), A * 1e20)
    with pytest.raises(ValueError, match=r"the atoms \(columns\): 6 of norm below .*underflows in float32"):
        nnmp_batch(A * 1e-25, b)
    with pytest.raises(ValueError, match=r"the targets \(rows\) reach a norm of .*overflows in float32"):
        nnmp_batch(A, b * 1e25)
    with pytest.raises(ValueError, match="objective values overflow in float32"):
        nnmp(distance_objective(b * 1e25), A)  # the target hides in the objective: its history is checked
    with pytest.raises(ValueError, match="l2 .* must be >= 0, got -0.01"):
        logistic_objective(A.T, np.ones(6), l2=-0.01)


def test_nnmp_experiment_plans_are_checked_before_any_work(tmp_path):
    """Checkpoints past ``max_iter`` (silently dropped), ``outer_iter`` 0 (an IndexError after the
    work), repeated variants (duplicate rows) and a negative ridge are refused before any work;
    an optimum f* ~ 0 gives a NaN relative gap and the absolute one."""
    import os

    from jaxcomp.configs import load_config
    from jaxcomp.greedy import benchmarks as gb
    from jaxcomp.greedy import realdata

    tiny = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "nnmp.py:tiny")
    never = str(tmp_path / "never")
    small = dict(data="digits", seeds=(0,), variants=("nnmp",))  # an accepted plan runs in seconds
    for call, match in (
        (lambda: realdata.run_regression(never, max_iter=20, checkpoints=(5, 50), n_atoms=10, n_targets=2, **small),
         r"checkpoints .* 1\.\.20, got 50"),
        (lambda: realdata.run_regression(never, variants=("nnmp", "nnmp")), r"variants repeats \['nnmp'\]"),
        (lambda: realdata.run_rank1(never, max_iter=8, checkpoints=(9,)), r"1\.\.8, got 9"),
        (lambda: realdata.run_nmf(never, outer_iter=0, n_images=20, rank=3, data="digits", seeds=(0,),
                                  methods=("anls",), sklearn_baseline=False),
         "outer_iter must be a whole number >= 1, got 0"),
        (lambda: gb.run(load_config(tiny, ["logistic.l2=-0.01"]), never), "logistic.l2 must be"),
        (lambda: gb.run(load_config(tiny, ["variants=('away','away')"]), never), "variants repeats"),
    ):
        with pytest.raises(ValueError, match=match):
            call()
    assert not os.path.exists(never)
    assert realdata.check_plan(max_iter=20, checkpoints=(20, 5)) == [5, 20]
    zero = gb.gaps(1e-20, 1e-31, 10.0)
    assert np.isnan(zero["relative_gap"]) and zero["absolute_gap"] == pytest.approx(1e-20)
    assert gb.gaps(2.0, 1.0, 10.0) == {"absolute_gap": 1.0, "relative_gap": 1.0}


def test_nnmp_real_default_checkpoints_follow_max_iter(monkeypatch, tmp_path):
    """``experiments.nnmp_real rank1 --max-iter 10`` refused its own default checkpoints (5, 10, 20) once
    checkpoints past ``max_iter`` became an error: the defaults now stop at ``--max-iter``; given ones
    are still checked."""
    from experiments import nnmp_real

    seen = []
    monkeypatch.setattr(nnmp_real, "_run", lambda a: seen.append(a.checkpoints) or 0)
    w = ["--workdir", str(tmp_path)]
    assert nnmp_real.main(["rank1", "--max-iter", "10", *w]) == 0
    assert nnmp_real.main(["regression", "--max-iter", "30", *w]) == 0
    assert nnmp_real.main(["rank1", "--max-iter", "10", "--checkpoints", "5,50", *w]) == 0
    assert seen == [(5, 10), (10, 25), (5, 50)]
