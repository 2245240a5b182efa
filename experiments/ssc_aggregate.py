"""Mean ± std over seeds of MNIST clustering runs written by separate processes.

``python -m experiments.cluster --config configs/ssc.py:mnist_scattering --workdir runs/x`` runs its 3 seeds in one
process; on a busy machine the seeds can run as 3 processes instead
(``--config.seed=S --config.n_seeds=1 --workdir runs/x/seedS``) and be combined here:

  python -m experiments.ssc_aggregate runs/x/seed0 runs/x/seed1 runs/x/seed2 --out runs/x/mnist.md

Reads each directory's ``mnist_runs.csv`` and prints (and with ``--out`` writes) the table that the
one-process run returns. The directories must hold runs of the same settings but for the seeds (their
``config.txt``, which ``experiments.cluster`` writes before it starts: ``seed`` and ``n_seeds`` may
differ, nothing else); runs of other settings (another ``data.num_points``, ``ssc.s_max``, features...)
are refused, naming the settings and the directories, instead of being averaged into one row.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys

from jaxcomp.cluster.benchmarks import SEED_KEYS, aggregate_seeds, check_same_settings
from jaxcomp.files import check_output_file, write_atomic
from jaxcomp.reporting import markdown_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdirs", nargs="+", help="directories holding mnist_runs.csv")
    parser.add_argument("--out", default="", help="also write the Markdown table here")
    args = parser.parse_args(argv)
    if args.out:
        try:
            check_output_file(args.out)
        except ValueError as e:
            parser.error(str(e))
    try:
        rows = read_runs(args.workdirs)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    md = markdown_table(aggregate_seeds(rows))
    print(md)
    if args.out:
        write_atomic(args.out, md, makedirs=True)
    return 0


def read_runs(workdirs: list[str]) -> list[dict]:
    """The rows of each workdir's ``mnist_runs.csv`` (numbers as floats); a ValueError names a missing
    file, column or value, a folder given twice, a (method, seed) row in two folders (one run counted
    as two seeds: a spread of 0), folders of other settings than the seeds (``config.txt``, see
    :func:`jaxcomp.cluster.benchmarks.check_same_settings`; also a folder without one, when there are
    several) or no rows at all."""
    seen_dirs: dict[str, str] = {}
    seen_rows: dict[tuple[str, str], str] = {}
    rows = []
    for d in workdirs:
        real = os.path.realpath(d)
        if real in seen_dirs:
            raise ValueError(f"{d!r} is given twice (also as {seen_dirs[real]!r}): its seeds would count twice")
        seen_dirs[real] = d
        path = os.path.join(d, "mnist_runs.csv")
        if not os.path.isfile(path):
            raise ValueError(f"no mnist_runs.csv in {d!r}")
        with open(path, newline="") as f:
            for line, r in enumerate(csv.DictReader(f), start=2):
                try:
                    row = {**r, **{k: float(r[k]) for k in ("accuracy", "nmi", "ari", "seconds")}}
                    key = (r["method"], r["seed"])
                    row["notes"] = r["notes"] or ""
                    bad = [k for k in ("accuracy", "nmi", "ari", "seconds") if not math.isfinite(row[k])]
                    if bad:
                        raise ValueError(f"{', '.join(bad)} not a finite number")
                except (KeyError, TypeError, ValueError) as e:
                    raise ValueError(f"{path} line {line}: not a row of experiments/cluster.py's mnist runs "
                                     f"(method, seed, accuracy, nmi, ari, seconds): {e}") from e
                if key in seen_rows:
                    raise ValueError(f"{path}: {key[0]} seed {key[1]} is also in {seen_rows[key]}; one run "
                                     f"would count as two seeds")
                seen_rows[key] = path
                rows.append(row)
    if not rows:
        raise ValueError(f"no rows in the mnist_runs.csv of {', '.join(workdirs)}")
    check_same_settings(workdirs, SEED_KEYS, "mnist runs")
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
