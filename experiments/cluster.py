"""SSC-OMP / SSC-MP experiments: phase diagrams, s_max sensitivity, MNIST comparison.

  python -m experiments.cluster --config configs/ssc.py:synthetic --workdir /tmp/ssc
  python -m experiments.cluster --config configs/ssc.py:mnist --workdir /tmp/mnist \
      --config.data.num_points=2000

Writes a Markdown table, a CSV and PNG plots into --workdir and prints the table.
"""

from __future__ import annotations

import argparse
import sys

from jaxcomp.cluster.benchmarks import run
from jaxcomp.configs import load_config, split_cli_overrides


def main(argv: list[str] | None = None) -> int:
    overrides, rest = split_cli_overrides(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/ssc.py:synthetic", help="configs/ssc.py:VARIANT")
    parser.add_argument("--workdir", required=True, help="output directory")
    args = parser.parse_args(rest)
    cfg = load_config(args.config, overrides)
    print(run(cfg, args.workdir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
