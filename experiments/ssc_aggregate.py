"""Mean ± std over seeds of MNIST clustering runs written by separate processes.

``python -m experiments.cluster --config configs/ssc.py:mnist_scattering --workdir runs/x`` runs its 3 seeds in one
process; on a busy machine the seeds can run as 3 processes instead
(``--config.seed=S --config.n_seeds=1 --workdir runs/x/seedS``) and be combined here:

  python -m experiments.ssc_aggregate runs/x/seed0 runs/x/seed1 runs/x/seed2 --out runs/x/mnist.md

Reads each directory's ``mnist_runs.csv`` and prints (and with ``--out`` writes) the table that the
one-process run returns.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys

from jaxcomp.cluster.benchmarks import aggregate_seeds
from jaxcomp.reporting import markdown_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdirs", nargs="+", help="directories holding mnist_runs.csv")
    parser.add_argument("--out", default="", help="also write the Markdown table here")
    args = parser.parse_args(argv)
    rows = []
    for d in args.workdirs:
        path = os.path.join(d, "mnist_runs.csv")
        if not os.path.isfile(path):
            print(f"error: no mnist_runs.csv in {d!r}", file=sys.stderr)
            return 2
        with open(path) as f:
            for r in csv.DictReader(f):
                rows.append({**r, **{k: float(r[k]) for k in ("accuracy", "nmi", "ari", "seconds")}})
    md = markdown_table(aggregate_seeds(rows))
    print(md)
    if args.out:
        with open(args.out, "w") as f:
            f.write(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
