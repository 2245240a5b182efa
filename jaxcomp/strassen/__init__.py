"""StrassenNets (Tschannen, Khanna & Anandkumar, ICML 2018): sum-product layers with ternary weights.

* :mod:`~jaxcomp.strassen.ternary`: TWN / rounding ternarization with straight-through gradients;
* :mod:`~jaxcomp.strassen.layers`: the matrix-multiplication SPN, Strassen's weights, ``SPNDense``
  and ``SPNConv`` (drop-in factories for the model zoo);
* :mod:`~jaxcomp.strassen.phases`: the full precision -> ternary -> frozen schedule;
* :mod:`~jaxcomp.strassen.counting`: multiplications and additions per layer and network;
* :mod:`~jaxcomp.strassen.matmul`: learning exact matrix-multiplication algorithms.
"""

from jaxcomp.strassen.counting import count_ops, format_table, summarize
from jaxcomp.strassen.layers import (
    CountedConv,
    CountedDense,
    SPNConv,
    SPNDense,
    SPNDenseBlocks,
    TWNConv,
    TWNDense,
    matmul_tensor,
    spn_matmul,
    spn_tensor,
    strassen_weights,
)
from jaxcomp.strassen.phases import phase_labels, phased_optimizer, project_a_tilde, ternary_mix
from jaxcomp.strassen.ternary import (
    add_learned_scales,
    mix_ternary,
    optimal_scale,
    ternarize,
    ternarize_params,
    ternary_leaves,
    ternary_pattern,
)

__all__ = [
    "CountedConv", "CountedDense", "SPNConv", "SPNDense", "SPNDenseBlocks", "TWNConv", "TWNDense",
    "add_learned_scales", "count_ops", "format_table",
    "matmul_tensor", "mix_ternary", "optimal_scale", "phase_labels", "phased_optimizer", "project_a_tilde",
    "spn_matmul",
    "spn_tensor", "strassen_weights", "summarize", "ternarize", "ternarize_params", "ternary_leaves",
    "ternary_mix", "ternary_pattern",
]
