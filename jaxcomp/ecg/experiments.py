"""k-fold cross-validation of the CNN and the staged CRNN (used by experiments/ecg_cv.py and the notebook).

For every seed and fold: train the CNN on the other folds (stage 1), score it on the
held-out fold, then train the CRNN with its conv blocks initialised from that CNN (stage 2)
and score it. Results go to ``workdir/results.jsonl`` (one line per run; finished runs are
skipped when the script is started again), ``workdir/results.md`` (a table per fold and
mean +- std) and ``workdir/confusion.png`` (confusion matrices summed over folds).
"""

from __future__ import annotations

import json
import os
import time

import jax
import ml_collections
import numpy as np

from jaxcomp.configs import apply_overrides
from jaxcomp.ecg.data import ECGBatches, build_ecg_data
from jaxcomp.ecg.scoring import plot_confusion, score
from jaxcomp.ecg.task import ECGTask
from jaxcomp.xla import enable_compilation_cache


def predict_split(task: ECGTask, state, data: ECGBatches, batch_size: int, idx: np.ndarray | None = None):
    """``(labels [n], predictions [n], probabilities [n, 4], indices [n])`` of a split (default: the eval fold)."""
    predict = jax.jit(task.predict)
    labels, preds, probs, index = [], [], [], []
    for batch in data.eval_batches(batch_size, idx):
        valid = batch.pop("valid")
        logits = np.asarray(predict(state, {k: batch[k] for k in ("signal", "length", "label", "weight")}))
        p = np.exp(logits - logits.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        labels.append(batch["label"][valid])
        preds.append(logits.argmax(-1)[valid])
        probs.append(p[valid])
        index.append(batch["index"][valid])
    return np.concatenate(labels), np.concatenate(preds), np.concatenate(probs), np.concatenate(index)


def _stage_configs(config: ml_collections.ConfigDict, seed: int, fold: int, cnn_dir: str):
    common = [f"seed={seed}", f"data.seed={seed}", f"data.fold={fold}"]
    cnn = apply_overrides(config, common + ["model.name=cnn", "stage.init_conv_from="])
    crnn_steps = config.cv.crnn_steps
    crnn = apply_overrides(config, common + ["model.name=crnn", f"stage.init_conv_from={cnn_dir}",
                                             f"steps={crnn_steps}", f"eval_every={crnn_steps}",
                                             f"checkpoint_every={crnn_steps}"])
    if crnn.optimizer.get("decay_steps"):
        crnn.optimizer.decay_steps = crnn_steps
    return {"cnn": cnn, "crnn": crnn}


def cross_validate(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Runs the cross-validation a config's ``cv`` block describes; returns the Markdown table."""
    from tqdm.auto import tqdm

    from jaxcomp import train as trainer

    os.makedirs(workdir, exist_ok=True)
    enable_compilation_cache(os.path.join(workdir, "jax_cache"), min_compile_secs=1.0)
    folds = list(config.cv.folds) or list(range(config.data.num_folds))
    models = list(config.cv.models)
    unknown = set(models) - {"cnn", "crnn"}
    if unknown:
        raise ValueError(f"cv.models may hold 'cnn' and 'crnn', got {sorted(unknown)}")
    results_path = os.path.join(workdir, "results.jsonl")
    done = {}
    if os.path.exists(results_path):
        for line in open(results_path):
            r = json.loads(line)
            done[(r["seed"], r["fold"], r["model"])] = r
    runs = [(s, f, m) for s in config.cv.seeds for f in folds for m in ("cnn", "crnn") if m in models or
            (m == "cnn" and "crnn" in models)]
    bar = tqdm(runs, desc="cv runs", mininterval=10.0)
    for seed, fold, model in bar:
        bar.set_postfix_str(f"seed {seed} fold {fold} {model}")
        if (seed, fold, model) in done:
            continue
        run_dir = os.path.join(workdir, f"seed{seed}", f"fold{fold}")
        cfg = _stage_configs(config, seed, fold, os.path.join(run_dir, "cnn"))[model]
        task, data = ECGTask(cfg), build_ecg_data(cfg.data)
        t0 = time.perf_counter()
        state, _ = trainer.train(cfg, os.path.join(run_dir, model), task, data, progress=False)
        train_s = time.perf_counter() - t0
        labels, preds, _, _ = predict_split(task, state, data, cfg.eval_batch_size)
        r = dict(seed=seed, fold=fold, model=model, steps=cfg.steps, train_s=round(train_s, 1), n_eval=len(labels),
                 source=data.dataset.source, **score(labels, preds))
        done[(seed, fold, model)] = r
        if model in models:
            with open(results_path, "a") as f:
                f.write(json.dumps(r) + "\n")
            tqdm.write(f"seed {seed} fold {fold} {model}: F1 {r['f1']:.3f} (N {r['f1_N']:.3f} A {r['f1_A']:.3f} "
                       f"O {r['f1_O']:.3f} ~ {r['f1_~']:.3f}) acc {r['accuracy']:.3f} [{train_s:.0f} s]")
    rows = [done[k] for k in runs if k[2] in models]
    sources = sorted({r.get("source", "") for r in rows})
    table = f"Data: {', '.join(sources)}; F1 = mean(F1_N, F1_A, F1_O).\n\n" + results_table(rows)
    with open(os.path.join(workdir, "results.md"), "w") as f:
        f.write(table + "\n")
    plot_cv_confusion(rows, os.path.join(workdir, "confusion.png"))
    return table


def results_table(rows: list[dict]) -> str:
    """Markdown: one line per (model, seed, fold), then mean +- std over all runs of each model."""
    keys = ["f1", "f1_N", "f1_A", "f1_O", "f1_~", "accuracy"]
    head = "| model | seed | fold | n eval | " + " | ".join(k.replace("f1_~", "f1_noisy") for k in keys) + \
        " | train s |\n|" + "---|" * (len(keys) + 5)
    lines = [head]
    for r in rows:
        lines.append(f"| {r['model']} | {r['seed']} | {r['fold']} | {r['n_eval']} | "
                     + " | ".join(f"{r[k]:.3f}" for k in keys) + f" | {r['train_s']:.0f} |")
    for model in dict.fromkeys(r["model"] for r in rows):
        sel = [r for r in rows if r["model"] == model]
        stats = [f"{np.mean([r[k] for r in sel]):.3f} ± {np.std([r[k] for r in sel]):.3f}" for k in keys]
        lines.append(f"| **{model} mean ± std** | | {len(sel)} runs | | " + " | ".join(stats) + " | |")
    return "\n".join(lines)


def plot_cv_confusion(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(models), figsize=(3.8 * len(models), 3.4), squeeze=False)
    for ax, model in zip(axes[0], models):
        cm = np.sum([np.asarray(r["confusion"]) for r in rows if r["model"] == model], axis=0)
        f1 = np.mean([r["f1"] for r in rows if r["model"] == model])
        plot_confusion(cm, ax, title=f"{model.upper()}: summed over {len([r for r in rows if r['model'] == model])} "
                                     f"runs\nmean F1 {f1:.3f}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


__all__ = ["cross_validate", "plot_cv_confusion", "predict_split", "results_table"]
