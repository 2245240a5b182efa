"""StrassenNets experiment (a): learn 2x2 matrix multiplication with a ternary SPN.

    python -m experiments.strassen_matmul --config configs/strassen_matmul.py:paper --workdir runs/strassen_matmul

Lab notebook:
  * r = 7 from random Gaussian matrices. Plain STE ternarization from the start, or ternarizing a
    converged full-precision solution in one go, rarely lands on an exact algorithm: the
    full-precision solutions form a continuum (the symmetry group of matrix multiplication acts
    on them) and rounding a random point of it is wrong in a few coefficients. What works:
    1/3 of the steps full precision, then a gradual blend towards the ternary weights with a
    growing pull onto the ternary grid. A single restart of 12k Adam steps is exact about 40% of
    the time, so a seed runs 16 restarts in parallel (all counted in its time).
  * r = 8: the naive algorithm; almost every restart is exact.
  * r = 6: no exact algorithm exists (Hopcroft & Kerr 1971, Winograd 1971: 7 is optimal for
    2x2); we report the smallest integer tensor error found.

Variants:
  paper  r in (7, 8, 6), 20 seeds x 16 restarts of 12k steps each.
  quick  r = 7 only, 5 seeds (a minute or two).
  tiny   r = 8, 1 seed, 2 restarts of 1500 steps: for tests.
"""

import ml_collections

VARIANTS = ("paper", "quick", "tiny")


def get_config(variant: str = "paper") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.ranks = (7, 8, 6)           # r values; a table row each
    c.seeds = 20
    c.first_seed = 0
    c.search = ml_collections.ConfigDict(dict(
        n=2, m=2, k=2,
        steps=12_000, batch_size=128, learning_rate=1e-2, init_std=0.5,
        fp_fraction=1 / 3,        # full-precision part of the steps
        ramp_fraction=2 / 3,      # of the remaining steps, blending towards ternary
        penalty=0.05,             # final weight of ||W - q(W)||^2
        restarts=16,              # parallel restarts per seed (a seed succeeds if any is exact)
        method="round",           # "round": {-1,0,1} with scale 1; "twn": TWN threshold and scale
        threshold=0.7,
    ))
    c.integer_trials = 10_000     # random integer matrices each exact algorithm is checked on
    if variant == "quick":
        c.ranks, c.seeds = (7,), 5
    elif variant == "tiny":
        c.ranks, c.seeds = (8,), 1
        c.search.update(steps=1500, restarts=2)
    return c
