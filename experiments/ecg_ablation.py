"""Augmentation ablation of the ECG CNN (issue 32, part 3): none / dropout bursts / resampling / both.

    python -m experiments.ecg_ablation --config configs/ecg.py:cpu_cnn --workdir runs/ecg_ablation \
        --config.data.generator=realistic --config.cv.seeds="(0, 1, 2)" --config.cv.folds="(0, 1)"

For each seed and variant, ``jaxcomp.ecg.experiments.cross_validate`` trains and scores the CNN (stage 1;
``cv.models=("cnn",)``) on every seed (``cv.seeds``) and held-out fold (``cv.folds``) of the same
recordings and folds, with the augmentation switches set as follows (everything else from the config):

* ``none``: ``augment.enabled=False``;
* ``bursts``: dropout bursts only (``augment.resample=False``);
* ``resample``: random resampling only (``augment.bursts=False``);
* ``both``: the config's augmentation (both on).

Each variant's runs go to ``WORKDIR/<variant>/`` (``results.jsonl``; finished runs are skipped when the
script is started again, so a ``both`` directory already filled by ``experiments/ecg_cv.py`` with the
same config is reused). Writes ``WORKDIR/ablation.md`` / ``ablation.json``: challenge F1 mean +- std over
all runs (seeds x folds) per variant, the std over seeds of the per-seed mean, and each variant's
paired difference to ``none`` (same seed and fold), and prints the table. ``cv.time_limit`` (seconds)
is the budget of the whole command, all seeds and variants together: the run in training stops there,
checkpointed, nothing is summarised, and the same command continues.
"""

from __future__ import annotations

import json
import os

import numpy as np

from jaxcomp.checks import seed_list
from jaxcomp.configs import apply_overrides, config_script_main
from jaxcomp.files import read_jsonl

VARIANTS = {
    "none": ["augment.enabled=False"],
    "bursts": ["augment.enabled=True", "augment.bursts=True", "augment.resample=False"],
    "resample": ["augment.enabled=True", "augment.bursts=False", "augment.resample=True"],
    "both": ["augment.enabled=True", "augment.bursts=True", "augment.resample=True"],
}
_KEYS = ("f1", "f1_N", "f1_A", "f1_O", "f1_~", "accuracy")


def summarize(rows_by_variant: dict[str, list[dict]]) -> tuple[str, dict]:
    """Markdown table and a JSON-able summary of the per-variant runs (``seed``, ``fold``, score keys)."""
    base = {(r["seed"], r["fold"]): r["f1"] for r in rows_by_variant.get("none", [])}
    lines = ["| augmentation | runs (seeds x folds) | F1 | F1 std over seeds | F1 - none (paired) | F1_N | F1_A | "
             "F1_O | F1_noisy | accuracy |", "|---|---|---|---|---|---|---|---|---|---|"]
    summary = {}
    for variant, rows in rows_by_variant.items():
        if not rows:
            continue
        seeds, folds = sorted({r["seed"] for r in rows}), sorted({r["fold"] for r in rows})
        stats = {k: (float(np.mean([r[k] for r in rows])), float(np.std([r[k] for r in rows]))) for k in _KEYS}
        per_seed = [np.mean([r["f1"] for r in rows if r["seed"] == s]) for s in seeds]
        diffs = [r["f1"] - base[(r["seed"], r["fold"])] for r in rows if (r["seed"], r["fold"]) in base]
        d = (float(np.mean(diffs)), float(np.std(diffs)), int(np.sum(np.asarray(diffs) > 0))) if diffs else None
        summary[variant] = dict(runs=len(rows), seeds=seeds, folds=folds, per_seed_f1=[float(v) for v in per_seed],
                                paired_diff_vs_none=d, **stats)
        diff_cell = "—" if variant == "none" or d is None else \
            f"{d[0]:+.3f} ± {d[1]:.3f} ({d[2]}/{len(diffs)} better)"
        lines.append(f"| {variant} | {len(seeds)} x {len(folds)} | {stats['f1'][0]:.3f} ± {stats['f1'][1]:.3f} | "
                     f"{np.std(per_seed):.3f} | {diff_cell} | "
                     + " | ".join(f"{stats[k][0]:.3f} ± {stats[k][1]:.3f}" for k in _KEYS[1:]) + " |")
    return "\n".join(lines), summary


def run(config, workdir):
    from jaxcomp.deadline import Deadline
    from jaxcomp.ecg.experiments import cross_validate

    seeds = seed_list(config.cv.seeds, "cv.seeds")  # before the workdir is made
    # cv.time_limit is the whole command's budget, shared by every seed and variant (not each one's)
    deadline = Deadline(config.cv.get("time_limit", 0.0), "cv.time_limit")
    os.makedirs(workdir, exist_ok=True)
    folds = list(config.cv.folds) or list(range(config.data.num_folds))
    for seed in seeds:  # seed-major: a run cut short leaves every variant with the same seeds
        for variant, overrides in VARIANTS.items():
            cfg = apply_overrides(config, overrides + ["cv.models=('cnn',)", f"cv.seeds=({int(seed)},)"])
            print(f"== seed {seed}, {variant}: {' '.join(overrides)}", flush=True)
            cross_validate(cfg, os.path.join(workdir, variant), deadline=deadline)
    rows_by_variant = {}
    for variant in VARIANTS:
        path = os.path.join(workdir, variant, "results.jsonl")
        rows = read_jsonl(path) if os.path.exists(path) else []
        rows_by_variant[variant] = [r for r in rows if r["model"] == "cnn" and r["seed"] in config.cv.seeds
                                    and r["fold"] in folds]
    table, summary = summarize(rows_by_variant)
    source = sorted({r.get("source", "") for rows in rows_by_variant.values() for r in rows})
    text = (f"Data: {', '.join(source)}, {config.data.num_records} recordings, folds {folds} of "
            f"{config.data.num_folds} (fold seed {config.data.fold_seed}); CNN, {config.steps} steps; "
            f"F1 = mean(F1_N, F1_A, F1_O); ± = std over all runs; paired difference: same seed and fold.\n\n"
            + table + "\n")
    with open(os.path.join(workdir, "ablation.md"), "w") as f:
        f.write(text)
    with open(os.path.join(workdir, "ablation.json"), "w") as f:
        json.dump(dict(summary=summary, runs=rows_by_variant, variants=VARIANTS), f, indent=1)
    return text


def main(argv: list[str] | None = None) -> int:
    from jaxcomp.xla import prefer_xla_cpu_convolutions

    prefer_xla_cpu_convolutions()
    return config_script_main(__doc__, "configs/ecg.py:cpu_cnn", run, argv, sections=("cv",))


if __name__ == "__main__":
    raise SystemExit(main())
