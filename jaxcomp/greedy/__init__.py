"""Greedy sparse approximation in JAX.

* :mod:`jaxcomp.greedy.pursuit`: matching pursuit (MP) and orthogonal matching pursuit
  (OMP), jit-compiled and batched over signals.
* :mod:`jaxcomp.greedy.nnmp`: non-negative matching pursuit over the conic hull of an atom
  set (NNMP, away-steps, pairwise and fully-corrective variants; Locatello et al. 2017), and
  ``nnmp_batch`` (non-negative coding of many targets over one atom set).
* :mod:`jaxcomp.greedy.benchmarks`: host-side experiment drivers (plots, tables).
"""

from jaxcomp.greedy.nnmp import (
    VARIANTS,
    NNMPResult,
    Objective,
    distance_objective,
    distance_runner,
    least_squares_objective,
    logistic_objective,
    make_objective,
    nnmp,
    nnmp_batch,
)
from jaxcomp.greedy.pursuit import PursuitResult, mp, mp_batch, omp, omp_batch

__all__ = [
    "VARIANTS",
    "NNMPResult",
    "Objective",
    "PursuitResult",
    "distance_objective",
    "distance_runner",
    "least_squares_objective",
    "logistic_objective",
    "make_objective",
    "mp",
    "mp_batch",
    "nnmp",
    "nnmp_batch",
    "omp",
    "omp_batch",
]
