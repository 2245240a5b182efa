"""StrassenNets experiments (b) and (c): accuracy / perplexity vs multiplications, with and without KD.

  python -m experiments.strassen_nets --config configs/strassen.py:digits --workdir runs/strassen_b
  python -m experiments.strassen_nets --config configs/strassen.py:ptb --workdir runs/strassen_c

Trains the full-precision model (``strassen.enabled=False``), then for each
``experiment.hidden_ratios`` an SPN model, and (``experiment.kd``) the same SPN model distilled
from the full-precision one (the zoo's ``kd`` loss). Every model lives in its own sub-folder of
--workdir (with its per-layer op_counts.md), so a rerun resumes or skips finished models. Writes
results.md / results.json and a plot of the metric against the multiplications.
"""

from __future__ import annotations

import json
import math
import os

import ml_collections

from jaxcomp import tasks
from jaxcomp import train as trainer
from jaxcomp.configs import config_script_main
from jaxcomp.strassen.counting import format_table, summarize


def _variant(config: ml_collections.ConfigDict, enabled: bool, ratio: float = 1.0, kd_teacher: str = ""):
    c = ml_collections.ConfigDict(config.to_dict())
    c.strassen.enabled = enabled
    c.strassen.hidden_ratio = float(ratio)
    if kd_teacher:
        c.distill.loss = "kd"
        c.distill.teachers = (kd_teacher,)
    c.lock()
    return c


def _train(config, workdir: str) -> dict:
    task, data = tasks.build(config)
    state, metrics = trainer.train(config, workdir, task, data)
    example = data.train_batch(0)[task.input_key]
    rows = task.op_counts(state, example)
    with open(os.path.join(workdir, "op_counts.md"), "w") as f:
        f.write(format_table(rows) + "\n")
    counts = summarize(rows)
    if config.task == "lm":
        metrics = dict(metrics, perplexity=math.exp(metrics["nll_sum"] / metrics["tokens"]))
    return dict(metrics=metrics, counts=counts)


def run(config: ml_collections.ConfigDict, workdir: str) -> str:
    os.makedirs(workdir, exist_ok=True)
    lm = config.task == "lm"
    fp_dir = os.path.abspath(os.path.join(workdir, "full_precision"))
    runs = [("full precision", "-", False, _variant(config, False), fp_dir)]
    for ratio in config.experiment.hidden_ratios:
        runs.append(("SPN", ratio, False, _variant(config, True, ratio), os.path.join(workdir, f"spn_r{ratio:g}")))
        if config.experiment.kd:
            runs.append(("SPN + KD", ratio, True, _variant(config, True, ratio, fp_dir),
                         os.path.join(workdir, f"spn_r{ratio:g}_kd")))
    results = []
    for name, ratio, kd, cfg, wd in runs:
        print(f"== {name} r/out={ratio} -> {wd}", flush=True)
        out = _train(cfg, wd)
        results.append(dict(model=name, hidden_ratio=ratio, kd=kd, workdir=wd, **out))
    metric = "perplexity" if lm else "accuracy"
    unit = "per token" if lm else "per image"
    fp_spn_muls = results[1]["counts"]["spn_fp_muls"] if len(results) > 1 else 0
    lines = [f"| model | r / out | {'valid perplexity' if lm else 'held-out accuracy (%)'} | "
             f"muls in SPN layers ({unit}) | full-precision muls of those layers | reduction | "
             f"network muls | network adds |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        c, v = r["counts"], r["metrics"][metric]
        spn_muls = c["spn_muls"] if r["hidden_ratio"] != "-" else fp_spn_muls
        reduction = f"{100 * c['spn_mul_reduction']:.2f}%" if r["hidden_ratio"] != "-" else "-"
        shown = f"{v:.1f}" if lm else f"{100 * v:.2f}"
        lines.append(f"| {r['model']} | {r['hidden_ratio']} | {shown} | {spn_muls:,} | {fp_spn_muls:,} | "
                     f"{reduction} | {c['net_muls']:,} | {c['net_adds']:,} |")
    table = "\n".join(lines)
    with open(os.path.join(workdir, "results.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(dict(config=config.to_dict(), results=results), f, indent=1, default=str)
    _plot(results, metric, os.path.join(workdir, f"{metric}_vs_muls.png"))
    return table


def _plot(results: list[dict], metric: str, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for kd, marker in ((False, "o"), (True, "s")):
        pts = [(r["counts"]["net_muls"], r["metrics"][metric]) for r in results if r["kd"] == kd]
        if pts:
            xs, ys = zip(*pts)
            ax.scatter(xs, ys, marker=marker, label="with KD" if kd else "without KD")
    ax.set_xscale("log")
    ax.set_xlabel("multiplications of the whole network")
    ax.set_ylabel(metric)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    return config_script_main(__doc__, "configs/strassen.py:digits", run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
