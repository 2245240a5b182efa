"""The authors' public SSC-OMP beside ours, on the same MNIST points and features.

    # a checkout (or snapshot) of github.com/ChongYou/subspace-clustering; numpy, scipy, scikit-learn:
    python -m experiments.ssc_reference --checkout ../subspace-clustering --split test --seed 0 \\
        --points raw --n-nonzero 5 --out runs/ssc_reference/val.jsonl
    # ours, the same setting (points not scaled to unit norm, atoms chosen by raw correlation):
    python -m experiments.cluster --config configs/ssc.py:mnist_scattering_omp_raw --config.data.split=test \\
        --config.n_seeds=1 --workdir runs/ssc_reference/ours

Draws the sample exactly as ``experiments.cluster`` does (``jaxcomp.cluster.data.load_mnist`` with the
split, size and seed) and computes the same features (scattering -> uncentred PCA to 500, cached like
the cluster runs), then fits the reference's ``SparseSubspaceClusteringOMP`` with its ``run_mnist.py``
setting (``affinity="symmetrize"``, ``thr=1e-5``, ``n_nonzero`` as given) on the features as they
are (``--points raw``, what ``run_mnist.py`` does) or scaled to unit norm (``--points unit``, what the
SSC papers and jaxcomp's default do). The reference's module imports SPAMS and ``progressbar`` at load
time, which its SSC-OMP does not use: both are replaced by inert stubs. Appends one JSON line (scores,
seconds) to ``--out`` and prints it. Nothing of the reference is copied into jaxcomp.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import types

import numpy as np

from configs.ssc import CACHE_DIR, MNIST_PATH


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkout", required=True, help="the reference checkout (cluster/selfrepresentation.py)")
    parser.add_argument("--mnist", default=MNIST_PATH, help="MNIST .npz (default: the shared data)")
    parser.add_argument("--split", default="test", choices=("train", "test", "all"))
    parser.add_argument("--num-points", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-nonzero", type=int, default=5, help="the reference's n_nonzero (run_mnist.py: 5)")
    parser.add_argument("--points", default="raw", choices=("raw", "unit"))
    parser.add_argument("--out", default="", help="append the JSON line here")
    args = parser.parse_args(argv)
    module = os.path.join(args.checkout, "cluster", "selfrepresentation.py")
    if not os.path.isfile(module):
        print(f"error: {module!r} not found: --checkout must be a checkout of ChongYou/subspace-clustering",
              file=sys.stderr)
        return 2
    sys.modules.setdefault("spams", types.ModuleType("spams"))
    bar = types.ModuleType("progressbar")
    bar.progressbar = lambda it: it
    sys.modules.setdefault("progressbar", bar)
    sys.path.insert(0, os.path.abspath(args.checkout))
    from cluster.selfrepresentation import SparseSubspaceClusteringOMP

    from jaxcomp.cluster.data import load_mnist, mnist_features
    from jaxcomp.cluster.metrics import all_metrics
    from jaxcomp.cluster.ssc import check_data
    from jaxcomp.files import append_jsonl

    try:
        images, y = load_mnist(args.mnist, args.num_points, args.seed, args.split)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    X = mnist_features(images, "scattering", 500, cache_dir=CACHE_DIR, progress=True).astype(np.float64)
    if args.points == "unit":
        X = check_data(X).astype(np.float64)
    t0 = time.perf_counter()
    model = SparseSubspaceClusteringOMP(n_clusters=10, affinity="symmetrize", n_nonzero=args.n_nonzero, thr=1.0e-5,
                                        random_state=args.seed).fit(X)
    seconds = time.perf_counter() - t0
    scores = {k: round(v, 4) for k, v in all_metrics(y, model.labels_).items()}
    row = dict(split=args.split, n=args.num_points, seed=args.seed, n_nonzero=args.n_nonzero, points=args.points,
               seconds=round(seconds, 1), coding_s=round(model.timer_self_representation_, 1), **scores)
    line = json.dumps(row)
    print(line)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        append_jsonl(args.out, [row])
    return 0


if __name__ == "__main__":
    sys.exit(main())
