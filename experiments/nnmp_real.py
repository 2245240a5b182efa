"""Real-data experiments for the non-negative MP variants (Locatello et al., NeurIPS 2017).

  python -m experiments.nnmp_real regression --workdir runs/nnmp_regression
  python -m experiments.nnmp_real nmf        --workdir runs/nnmp_nmf
  python -m experiments.nnmp_real rank1      --workdir runs/nnmp_rank1

``regression``: held-out digits as non-negative combinations of training digits; every variant
against scipy's NNLS (reference optimum) and scikit-learn's positive Lasso (coordinate descent);
relative gap vs iterations and vs wall time, 3 seeds. ``nmf``: alternating NMF of digits with the
coding step done by each greedy variant or exactly by scipy's NNLS (ANLS), plus scikit-learn's NMF.
``rank1``: NMF as one cone problem: ``0.5||X - Y||_F^2`` over the cone of non-negative rank-one
matrices ``u v^T``, every variant with an approximate LMO (alternating projected power iterations),
relative error vs iterations (= rank) and vs CPU time, against the truncated SVD (floor) and
scikit-learn's NMF at the same rank, 3 seeds.

Data: ``../shared/data/mnist/mnist.npz`` (``--mnist-path``) when present, else scikit-learn's
bundled 8x8 digits (``--data digits`` forces them; ``--data mnist`` requires the file). Each
writes a Markdown/CSV table, the curves (``.npz``) and a PNG figure into ``--workdir``
(``--figure`` puts the PNG elsewhere) and prints the table. See ``jaxcomp/greedy/realdata.py``.
"""

from __future__ import annotations

import argparse
import sys
import time

from jaxcomp.greedy.nnmp import VARIANTS
from jaxcomp.greedy.realdata import DEFAULT_MNIST, run_nmf, run_rank1, run_regression


def _ints(text: str) -> tuple[int, ...]:
    try:
        out = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from e
    if not out:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return out


def _names(allowed):
    def parse(text: str) -> tuple[str, ...]:
        out = tuple(t.strip() for t in text.split(",") if t.strip())
        bad = [t for t in out if t not in allowed]
        if bad or not out:
            raise argparse.ArgumentTypeError(f"unknown {bad or text!r}; choose from {', '.join(allowed)}")
        return out

    return parse


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="experiment", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--workdir", required=True)
    common.add_argument("--data", choices=("auto", "mnist", "digits"), default="auto")
    common.add_argument("--mnist-path", default=DEFAULT_MNIST)
    common.add_argument("--seeds", type=_ints, default=(0, 1, 2))
    common.add_argument("--figure", default=None, help="PNG path (default: WORKDIR/nnmp_<experiment>.png)")
    r = sub.add_parser("regression", parents=[common], help="digits as non-negative combinations of digits")
    r.add_argument("--atoms", type=int, default=100, help="training digits used as atoms (K)")
    r.add_argument("--targets", type=int, default=20, help="held-out digits coded per seed")
    r.add_argument("--max-iter", type=int, default=200)
    r.add_argument("--checkpoints", type=_ints, default=None,
                   help="iterations timed separately (default 10,25,50,100, those up to --max-iter)")
    r.add_argument("--variants", type=_names(VARIANTS), default=VARIANTS)
    r.add_argument("--lasso-iters", type=_ints, default=(1, 3, 10, 30, 100, 300, 1000))
    r.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                   help="time by CPU seconds of this process (robust to other jobs) or wall-clock seconds")
    n = sub.add_parser("nmf", parents=[common], help="alternating NMF with greedy coding steps")
    n.add_argument("--images", type=int, default=1000)
    n.add_argument("--rank", type=int, default=25)
    n.add_argument("--outer-iter", type=int, default=15)
    n.add_argument("--code-iter", type=int, default=25, help="greedy steps per code (from 0)")
    n.add_argument("--hals-sweeps", type=int, default=3)
    n.add_argument("--methods", type=_names(("anls",) + VARIANTS), default=("anls",) + VARIANTS)
    n.add_argument("--no-sklearn", action="store_true", help="skip the scikit-learn NMF baseline")
    k = sub.add_parser("rank1", parents=[common], help="NMF over the cone of non-negative rank-one matrices")
    k.add_argument("--images", type=int, default=200, help="digits as columns of Y")
    k.add_argument("--max-iter", type=int, default=40, help="greedy iterations (= max. rank)")
    k.add_argument("--checkpoints", type=_ints, default=None,
                   help="iterations timed separately / NMF ranks (default 5,10,20, those up to --max-iter)")
    k.add_argument("--variants", type=_names(VARIANTS), default=VARIANTS)
    k.add_argument("--power-iter", type=int, default=50, help="alternating power steps per LMO start")
    k.add_argument("--starts", type=int, default=4, help="random LMO starts (plus the largest-entry start)")
    k.add_argument("--accuracy", type=float, default=0.5, help="relative error for the time-to-accuracy column")
    k.add_argument("--no-sklearn", action="store_true", help="skip the scikit-learn NMF baseline")
    a = p.parse_args(argv)
    if getattr(a, "checkpoints", ()) is None:  # the defaults that a smaller --max-iter leaves (given ones are checked)
        default = (10, 25, 50, 100) if a.experiment == "regression" else (5, 10, 20)
        a.checkpoints = tuple(t for t in default if t <= a.max_iter)
    if a.experiment == "rank1" and not 0 < a.accuracy < 1:
        p.error(f"--accuracy is a relative error in (0, 1), got {a.accuracy}")
    try:
        return _run(a)
    except (ValueError, OSError) as e:  # bad sizes, a missing data file, a workdir that is a file
        print(f"error: {e}", file=sys.stderr)
        return 2


def _run(a: argparse.Namespace) -> int:
    t0, c0 = time.perf_counter(), time.process_time()
    if a.experiment == "regression":
        md = run_regression(a.workdir, data=a.data, mnist_path=a.mnist_path, n_atoms=a.atoms, n_targets=a.targets,
                            max_iter=a.max_iter, checkpoints=a.checkpoints, seeds=a.seeds, variants=a.variants,
                            lasso_iters=a.lasso_iters, clock=a.clock, figure=a.figure)
    elif a.experiment == "rank1":
        md = run_rank1(a.workdir, data=a.data, mnist_path=a.mnist_path, n_images=a.images, max_iter=a.max_iter,
                       checkpoints=a.checkpoints, seeds=a.seeds, variants=a.variants, power_iter=a.power_iter,
                       n_starts=a.starts, accuracy=a.accuracy, sklearn_baseline=not a.no_sklearn, figure=a.figure)
    else:
        md = run_nmf(a.workdir, data=a.data, mnist_path=a.mnist_path, n_images=a.images, rank=a.rank,
                     outer_iter=a.outer_iter, code_iter=a.code_iter, hals_sweeps=a.hals_sweeps, seeds=a.seeds,
                     methods=a.methods, sklearn_baseline=not a.no_sklearn, figure=a.figure)
    print(md)
    print(f"{a.experiment}: {time.perf_counter() - t0:.0f} s wall, {time.process_time() - c0:.0f} s CPU (all threads)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
