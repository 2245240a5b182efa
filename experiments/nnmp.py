"""Non-negative matching pursuit variants on NNLS and logistic regression over a cone.

  python -m experiments.nnmp --config configs/nnmp.py:default --workdir /tmp/nnmp

Writes nnmp.md / nnmp.csv (final objectives vs scipy references) and objective-gap plots
nnmp_{nnls,logistic,logistic_l2}.png into --workdir and prints the table.
"""

from __future__ import annotations

import argparse
import sys

from jaxcomp.configs import load_config, split_cli_overrides
from jaxcomp.greedy.benchmarks import run


def main(argv: list[str] | None = None) -> int:
    overrides, rest = split_cli_overrides(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/nnmp.py:default", help="configs/nnmp.py:VARIANT")
    parser.add_argument("--workdir", required=True, help="output directory")
    args = parser.parse_args(rest)
    cfg = load_config(args.config, overrides)
    print(run(cfg, args.workdir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
