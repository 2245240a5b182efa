"""Where the clusterings of an MNIST run go wrong: impure clusters or split digits.

Reads the ``mnist_labels.npz`` that ``python -m experiments.cluster`` writes for the ``mnist*``
configs (each seed's true digits and every method's labels) from one or more run directories (runs
of the same seeds draw the same samples, so methods from different directories are compared on the
same points; a seed whose true digits differ between directories is refused, and so are directories
whose ``data`` settings differ, or that hold one method's runs with settings that differ other than by
seed: their ``config.txt``, which ``experiments.cluster`` writes before it starts) and reports, per
method (mean over seeds):

* accuracy and NMI;
* ``H(digit | cluster)`` in bits: how mixed the clusters are (0: every cluster is one digit);
* ``H(cluster | digit)`` in bits: how scattered the digits are (0: every digit in one cluster).
  NMI = 2 I / (H(digit) + H(cluster)) with I = H(digit) - H(digit | cluster), so the two entropies
  say which kind of mistake costs a method its NMI;
* clusters that are mixtures (the second digit holds >= 25 % of the cluster) and digits that are split
  (a second cluster holds >= 25 % of the digit), and the smallest / largest cluster.

With ``--figure`` it also draws each method's digit-by-cluster table for the first seed (clusters
ordered by the digit they are matched to), as a PNG.

  python -m experiments.ssc_confusion runs/ssc_idle/omp10k runs/ssc_idle/mp10k --out runs/ssc_idle/confusion.md \\
      --figure docs/figures/ssc_mnist_confusion.png
"""

from __future__ import annotations

import argparse
import os
import sys
import zipfile

import numpy as np
from scipy.optimize import linear_sum_assignment

from jaxcomp.cluster.benchmarks import SEED_KEYS, check_same_settings, differences_between, read_settings
from jaxcomp.cluster.metrics import all_metrics, contingency
from jaxcomp.files import check_output_file, write_atomic
from jaxcomp.reporting import markdown_table

SHARE = 0.25


def _entropy_bits(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def confusion_stats(truth: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy, NMI, the two conditional entropies (bits), mixed clusters and split digits of one
    clustering. ``truth``, ``labels``: ``(N,)`` integer arrays."""
    table = contingency(truth, labels).astype(np.float64)  # (digits, clusters)
    n = table.sum()
    joint = _entropy_bits(table.ravel() / n)
    h_digit, h_cluster = _entropy_bits(table.sum(1) / n), _entropy_bits(table.sum(0) / n)
    by_cluster = np.sort(table, axis=0)[::-1] / table.sum(0)  # shares of each cluster's digits, largest first
    by_digit = np.sort(table, axis=1)[:, ::-1] / table.sum(1, keepdims=True)
    m = all_metrics(truth, labels)
    return {
        "accuracy": m["accuracy"],
        "nmi": m["nmi"],
        "h_digit_given_cluster": joint - h_cluster,
        "h_cluster_given_digit": joint - h_digit,
        "mixed_clusters": float((by_cluster[1] >= SHARE).sum()) if table.shape[0] > 1 else 0.0,
        "split_digits": float((by_digit[:, 1] >= SHARE).sum()) if table.shape[1] > 1 else 0.0,
        "smallest_cluster": float(table.sum(0).min()),
        "largest_cluster": float(table.sum(0).max()),
    }


def load_labels(workdirs: list[str]) -> dict[int, dict[str, np.ndarray]]:
    """``{seed: {"truth": (N,), method: (N,), ...}}`` from the directories' ``mnist_labels.npz``.
    Several directories must have ``config.txt`` files with the same ``data`` settings, and a method
    found in several (other seeds) must have the same settings in each but for ``seed`` / ``n_seeds``
    (else a ValueError naming the settings and directories: its mean would mix settings)."""
    seeds: dict[int, dict[str, np.ndarray]] = {}
    origin: dict[tuple[int, str], str] = {}
    if len(workdirs) > 1:
        check_same_data(workdirs)
    for d in workdirs:
        path = os.path.join(d, "mnist_labels.npz")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no mnist_labels.npz in {d!r} (written by experiments.cluster's mnist runs)")
        try:
            archive = np.load(path)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:  # BadZipFile: a cut or damaged file
            raise ValueError(f"{path}: not a readable .npz of cluster labels ({e})") from e
        with archive as f:
            for key in f.files:
                seed_s, _, name = key.partition(":")
                entry = seeds.setdefault(int(seed_s), {})
                if name == "truth" and "truth" in entry and not np.array_equal(entry["truth"], f[key]):
                    raise ValueError(f"seed {seed_s}: {path} holds other points than an earlier directory "
                                     "(different data settings); compare runs of the same sample only")
                if name != "truth":
                    if (int(seed_s), name) in origin:
                        raise ValueError(f"seed {seed_s}: method {name!r} is in both {origin[int(seed_s), name]!r} and "
                                         f"{d!r}; compare each run once")
                    origin[int(seed_s), name] = d
                entry[name] = f[key]
    by_method: dict[str, list[str]] = {}
    for (_, name), d in origin.items():
        by_method.setdefault(name, [])
        if d not in by_method[name]:
            by_method[name].append(d)
    for name, dirs in by_method.items():
        check_same_settings(dirs, SEED_KEYS, f"runs of {name!r}")
    return seeds


def check_same_data(workdirs: list[str]) -> None:
    """``ValueError`` unless every workdir has a ``config.txt`` with the same ``data`` settings."""
    first, first_dir = None, ""
    for d in workdirs:
        settings = read_settings(d)
        if settings is None:
            raise ValueError(f"no config.txt in {d!r}: its data settings cannot be compared with the other "
                             "directories'")
        data = {"data": settings.get("data", {})}
        if first is None:
            first, first_dir = data, d
        elif diff := differences_between(first, data):
            raise ValueError(f"{first_dir!r} and {d!r} hold clusterings of other data: {diff}")


def ordered_table(truth: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The digit-by-cluster table with clusters ordered by their matched digit (unmatched last)."""
    table = contingency(truth, labels)
    rows, cols = linear_sum_assignment(-table)
    order = list(cols[np.argsort(rows)]) + [c for c in range(table.shape[1]) if c not in set(cols)]
    return table[:, order]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdirs", nargs="+", help="run directories holding mnist_labels.npz")
    parser.add_argument("--out", default="", help="also write the Markdown table here")
    parser.add_argument("--figure", default="", help="draw the first seed's tables into this PNG")
    args = parser.parse_args(argv)
    if args.figure and not os.path.splitext(args.figure)[1]:  # matplotlib would write NAME.png and we name NAME
        args.figure += ".png"
    try:
        for flag, path in (("--out", args.out), ("--figure", args.figure)):
            if path:
                check_output_file(path, flag)
        seeds = load_labels(args.workdirs)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    methods = list(dict.fromkeys(k for s in seeds.values() for k in s if k != "truth"))
    if not methods:
        print(f"error: the mnist_labels.npz of {', '.join(args.workdirs)} hold no method's labels, only the "
              f"true digits", file=sys.stderr)
        return 2
    rows = []
    for name in methods:
        stats = [confusion_stats(s["truth"], s[name]) for s in seeds.values() if name in s]
        row: dict = {"method": name, "seeds": len(stats)}
        for k in stats[0]:
            row[k] = float(np.mean([st[k] for st in stats]))
        rows.append(row)
    md = (f"MNIST clusterings, mean over {len(seeds)} seed(s): mixed clusters and split digits "
          f"(share >= {SHARE:g}); entropies in bits\n\n" + markdown_table(rows))
    print(md)
    if args.out:
        write_atomic(args.out, md + "\n", makedirs=True)
    if args.figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        first = seeds[min(seeds)]
        names = [m for m in methods if m in first]
        fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.6), squeeze=False)
        for ax, name in zip(axes[0], names):
            t = ordered_table(first["truth"], first[name])
            ax.imshow(t / t.sum(0, keepdims=True), cmap="Blues", vmin=0, vmax=1)
            ax.set_title(name.replace(" (", "\n("), fontsize=8)
            ax.set_xlabel("cluster (ordered by matched digit)", fontsize=7)
            ax.set_ylabel("digit", fontsize=7)
            ax.set_yticks(range(t.shape[0]))
            ax.set_yticklabels(np.unique(first["truth"]), fontsize=6)
            ax.set_xticks(range(t.shape[1]))
            ax.set_xticklabels(t.sum(0), rotation=90, fontsize=5)
        fig.suptitle(f"seed {min(seeds)}: share of each cluster (column) by digit; column labels = cluster sizes",
                     fontsize=8)
        fig.tight_layout()
        os.makedirs(os.path.dirname(os.path.abspath(args.figure)), exist_ok=True)
        fig.savefig(args.figure, dpi=120)
        print(f"wrote {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
