"""Why does an SSC variant cluster MNIST well or badly? Graph diagnostics on a validation sample.

  python -m experiments.ssc_diagnose --split test --seed 0 --num-points 10000 \\
      --specs mp:5 mp:10 mp:20 omp:5 omp:10 --affinities none binary --out runs/ssc_diag/val.md

For every ``algorithm:s_max`` in ``--specs`` it codes the MNIST scattering features (the
``mnist_scattering`` config's features: scattering, uncentred PCA to 500, unit norm; cached in
``runs/cache``) once, prints statistics of the coefficients (iterations, nonzeros per point,
residual norm, the share of each point's largest ``|c|`` in its ``sum |c|``, the share of the
coefficient mass on points of the same digit, whether each point's strongest edge stays in its digit,
the largest in-degree), then for every affinity in ``--affinities`` (see
``jaxcomp.cluster.ssc.affinity_from_coefficients``) the number of connected components, the 11
smallest Laplacian eigenvalues, the cluster sizes and accuracy / NMI / ARI of spectral clustering
(``--n-clusters``, seed ``--seed``). Labels are used only to score, never to fit.

Use it on data disjoint from the reported samples (e.g. ``--split test``: the reported
``mnist_scattering`` runs draw from the training split) to choose settings.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def coefficient_stats(C, y: np.ndarray) -> dict:
    """Statistics of a coefficient matrix ``C`` ``(N, N)`` csr against labels ``y`` ``(N,)``."""
    import scipy.sparse as sp

    C = sp.csr_matrix(C)
    absC = abs(C)
    absC.eliminate_zeros()
    nnz = np.diff(absC.indptr)
    rowsum = np.asarray(absC.sum(axis=1)).ravel()
    rowmax = absC.max(axis=1).toarray().ravel()
    coo = absC.tocoo()
    same = y[coo.row] == y[coo.col]
    has = nnz > 0
    strongest = np.asarray(absC.argmax(axis=1)).ravel()
    indeg = np.diff(absC.tocsc().indptr)
    return {
        "nnz_per_point": float(nnz.mean()),
        "max_share": float(np.mean(rowmax[has] / rowsum[has])),
        "same_digit_mass": float(coo.data[same].sum() / max(coo.data.sum(), 1e-300)),
        "strongest_edge_same_digit": float(np.mean(y[strongest[has]] == y[has])),
        "max_in_degree": int(indeg.max()),
    }


def graph_stats(A, y: np.ndarray, n_clusters: int, seed: int) -> dict:
    """Components, Laplacian spectrum and spectral-clustering scores of an affinity ``A``."""
    from scipy.sparse.csgraph import connected_components

    from jaxcomp.cluster.metrics import all_metrics
    from jaxcomp.cluster.spectral import laplacian_spectrum, spectral_clustering

    n_comp, _ = connected_components(A, directed=False)
    vals, _ = laplacian_spectrum(A, n_clusters + 1, seed)
    t0 = time.perf_counter()
    labels, _ = spectral_clustering(A, n_clusters, seed=seed)
    m = all_metrics(y, labels)
    return {"components": int(n_comp), "eigenvalues": np.round(vals, 3).tolist(),
            "cluster_sizes": sorted(np.bincount(labels, minlength=n_clusters).tolist(), reverse=True),
            "accuracy": m["accuracy"], "nmi": m["nmi"], "ari": m["ari"], "spectral_s": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", default="test", choices=("train", "test", "all"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-points", type=int, default=10000)
    parser.add_argument("--specs", nargs="+", default=["mp:10", "omp:10"], help="algorithm:s_max, e.g. mp:10")
    parser.add_argument("--affinities", nargs="+", default=["none", "binary"])
    parser.add_argument("--n-clusters", type=int, default=10)
    parser.add_argument("--chunk-size", type=int, default=1000)
    parser.add_argument("--mnist", default="", help="MNIST npz (default: the configs' ../shared/data path)")
    parser.add_argument("--out", default="", help="also write the Markdown table here")
    args = parser.parse_args(argv)
    if args.out:
        from jaxcomp.files import check_output_file

        try:  # before the run, not after it
            check_output_file(args.out)
        except ValueError as e:
            parser.error(str(e))
    for flag, value, least in (("--num-points", args.num_points, 1), ("--chunk-size", args.chunk_size, 1),
                               ("--n-clusters", args.n_clusters, 2)):
        if value < least:
            print(f"error: {flag} must be >= {least}, got {value}", file=sys.stderr)
            return 2
    if args.n_clusters >= args.num_points:  # the spectrum needs n_clusters + 1 eigenvalues: a traceback after the work
        print(f"error: --n-clusters ({args.n_clusters}) must be below --num-points ({args.num_points})",
              file=sys.stderr)
        return 2
    if len(set(args.specs)) != len(args.specs) or len(set(args.affinities)) != len(args.affinities):
        print(f"error: --specs / --affinities repeat an entry (duplicate rows): {args.specs} {args.affinities}",
              file=sys.stderr)
        return 2

    from jaxcomp.cluster.data import load_mnist, mnist_features
    from jaxcomp.cluster.ssc import AFFINITY_NORMALIZATIONS, affinity_from_coefficients, sparse_coefficients
    from jaxcomp.reporting import markdown_table

    specs = []
    for s in args.specs:
        a, _, k = s.partition(":")
        if a not in ("mp", "omp") or not k.isdigit() or int(k) < 1:
            print(f"error: bad spec {s!r}; expected mp:S or omp:S with S >= 1", file=sys.stderr)
            return 2
        specs.append((a, int(k)))
    bad = [a for a in args.affinities if a not in AFFINITY_NORMALIZATIONS]
    if bad:
        print(f"error: unknown affinities {bad}; expected some of {AFFINITY_NORMALIZATIONS}", file=sys.stderr)
        return 2
    path = args.mnist or os.path.normpath(os.path.join(PROJECT_ROOT, os.pardir, "shared", "data", "mnist", "mnist.npz"))
    if not os.path.isfile(path):
        print(f"error: MNIST file not found: {path} (give the mnist.npz file with --mnist)", file=sys.stderr)
        return 2
    try:
        images, y = load_mnist(path, args.num_points, args.seed, args.split)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    X = mnist_features(images, "scattering", 500, cache_dir=os.path.join(PROJECT_ROOT, "runs", "cache"))
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    G = Xn[:2000] @ Xn.T  # cosines of the first 2,000 points to all
    mean_abs_cos = np.abs(G).mean()
    G[np.arange(min(2000, len(G))), np.arange(min(2000, len(G)))] = -2.0  # no point is its own neighbour
    print(f"{args.split} split, seed {args.seed}: {X.shape}; mean |cos| {mean_abs_cos:.3f}, "
          f"nearest-neighbour cos {G.max(axis=1).mean():.3f} (first 2,000 points)", flush=True)
    rows = []
    for a, s_max in specs:
        t0 = time.perf_counter()
        C, info = sparse_coefficients(X, a, s_max=s_max, chunk_size=args.chunk_size)
        coding_s = time.perf_counter() - t0
        cs = coefficient_stats(C, y)
        print(f"{a}:{s_max} coded in {coding_s:.0f}s; iterations {info['n_iter'].mean():.1f}, residual "
              f"{info['residual_norm'].mean():.3f}, {cs}", flush=True)
        for aff in args.affinities:
            gs = graph_stats(affinity_from_coefficients(C, aff), y, args.n_clusters, args.seed)
            print(f"  affinity={aff}: {gs}", flush=True)
            rows.append({"algorithm": a, "s_max": s_max, "affinity": aff, "accuracy": gs["accuracy"],
                         "nmi": gs["nmi"], "ari": gs["ari"], "nnz_per_point": cs["nnz_per_point"],
                         "max_share": cs["max_share"], "same_digit_mass": cs["same_digit_mass"],
                         "strongest_same_digit": cs["strongest_edge_same_digit"], "components": gs["components"],
                         "lambda_2..11": " ".join(f"{v:.3f}" for v in gs["eigenvalues"][1:]),
                         "largest_cluster": gs["cluster_sizes"][0], "smallest_cluster": gs["cluster_sizes"][-1]})
    md = markdown_table(rows)
    print(md)
    if args.out:
        from jaxcomp.files import write_atomic

        write_atomic(args.out, md, makedirs=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
