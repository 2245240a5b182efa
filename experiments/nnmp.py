"""Non-negative matching pursuit variants on NNLS and logistic regression over a cone.

  python -m experiments.nnmp --config configs/nnmp.py:default --workdir runs/nnmp

Writes nnmp.md / nnmp.csv (final objectives vs scipy references) and objective-gap plots
nnmp_{nnls,logistic,logistic_l2}.png into --workdir and prints the table. The real-data
experiments (digits as non-negative combinations of digits, NMF with greedy coding steps) are
``python -m experiments.nnmp_real regression --workdir runs/nnmp_regression`` (and ``nmf``, ``rank1``).
"""

from __future__ import annotations

from jaxcomp.configs import config_script_main
from jaxcomp.greedy.benchmarks import run


def main(argv: list[str] | None = None) -> int:
    return config_script_main(__doc__, "configs/nnmp.py:default", run, argv, sections=("nnls", "variants"))


if __name__ == "__main__":
    raise SystemExit(main())
