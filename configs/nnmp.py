"""Configs for the non-negative matching pursuit experiments (``python -m experiments.nnmp``).

Variants:
  default: NNLS (200 x 100) and logistic regression (n=500, 50 features), 1000 iterations.
  tiny:    a few-second smoke test.
"""

import ml_collections

VARIANTS = ("default", "tiny")


def get_config(variant: str = "default") -> ml_collections.ConfigDict:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.variants = ("nnmp", "away", "pairwise", "fully_corrective")
    c.max_iter = 1000
    c.inner_iter = 50  # FISTA steps per fully-corrective solve (non-quadratic objectives)
    c.x64 = True  # float64 inside jax.enable_x64 (needed for the 1e-8 NNLS target)
    c.nnls = ml_collections.ConfigDict(dict(m=200, k=100, density=0.3, noise=0.5))
    c.logistic = ml_collections.ConfigDict(dict(n=500, dim=50, l2=0.05))
    if variant == "tiny":
        c.max_iter = 50
        c.nnls.m, c.nnls.k = 20, 10
        c.logistic.n, c.logistic.dim = 40, 5
    return c
