"""DPLC stage 1, the paper's comparison of generative models (NeurIPS'18, Sec. 5 and Table 1): WGAN-GP,
WAE and Wasserstein++ trained by the same code on the same data, with seeds, each scored on images no
run saw.

    python -m experiments.dplc_generators --config configs/dplc.py:mnist --workdir runs/dplc_generators_mnist

``--config`` is the Wasserstein++ variant of a data set (``mnist``, ``photos``, ``paper_celeba``, ...);
the other objectives are its ``<data>_wgan`` and ``<data>_wae`` variants (configs/dplc.py), with the
user's ``data`` block. Its ``generators`` block: ``objectives``, ``seeds``, ``steps`` (> 0: every run
trains this many steps, the learning-rate decays scaled with it; 0: each variant's own),
``eval_images``, ``grid_images``. Every run is an ordinary training run in
``WORKDIR/runs/<objective>_s<seed>`` (a rerun skips runs whose ``scores.json`` exists).

Scores, on the report images of :func:`experiments.dplc_sweep.evaluation_images` (MNIST: the 10k test
digits; photos: the held-out "test" originals' tiles):

* ``sample distance``: the distribution distance of ``n`` samples ``G(z)``, z from the prior, to the
  report images (MNIST: Fréchet distance in jaxcomp's MNIST classifier's features; photos: SWD);
* ``reconstruction MSE / PSNR`` of ``G(F(x))`` ([0, 255]², WAE and Wasserstein++; WGAN-GP has no F);
* ``reconstruction distance``: the same distance for the set of reconstructions;
* ``latent MMD``: the IMQ-kernel MMD between ``F(x)`` and prior samples (what WAE's penalty drives to 0).

Writes ``results.md/.csv/.json`` (mean ± std over seeds), ``samples.png`` (one row of ``G(z)`` per
objective, seed 0) and ``reconstructions.png`` (originals, then ``G(F(x))`` of WAE and Wasserstein++).
"""

from __future__ import annotations

import json
import os
from typing import Any

import ml_collections
import numpy as np

from experiments.dplc_sweep import (
    CONFIGS,
    DistributionMetric,
    evaluation_images,
    mean_std,
    save_grid,
    set_steps,
    with_stage1_data_and_sizes,
)
from jaxcomp.checks import count, distinct, seed_list
from jaxcomp.configs import config_script_main
from jaxcomp.files import atomic_file, write_atomic

OBJECTIVES = {"wgan": "WGAN-GP", "wae": "WAE", "wpp": "Wasserstein++"}
GRID_KEPT = 16  # images of each run's grids kept in its grid.npz (more when grid_images asks more)


def run_settings(run_config: ml_collections.ConfigDict, eval_images: int, metric: str, split: str) -> dict:
    """What a stage-1 run's cached scores depend on: its config without the plan (``generators``: which
    objectives and seeds; ``sweep``: the stage-2 rates), so that adding a seed does not refuse the runs
    made already, and the report images and metric."""
    from jaxcomp.configs import canonical_json

    return dict(config=canonical_json(run_config, exclude=("generators", "sweep")), eval_images=int(eval_images),
                metric=metric, split=split)


def objective_config(config: ml_collections.ConfigDict, objective: str, seed: int) -> ml_collections.ConfigDict:
    """The stage-1 config of ``objective`` for the data set of ``config``: Wasserstein++ is ``config``
    itself (with the user's overrides); WGAN-GP and WAE are the ``<data>_wgan`` / ``<data>_wae``
    variants with the user's data block and generator sizes
    (``jaxcomp.codecs.dplc.task.GENERATOR_FIELDS``); then ``seed``."""
    from jaxcomp.configs import load_config
    from jaxcomp.deadline import without_budget

    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; use {sorted(OBJECTIVES)}")
    dataset = config.sweep.dataset
    if objective == "wpp":
        c = ml_collections.ConfigDict(config.to_dict())
    else:
        c = with_stage1_data_and_sizes(load_config(f"{CONFIGS}:{dataset}_{objective}"), config)
    c = without_budget(c, "sweep.time_limit", "generators.time_limit")
    c.seed = int(seed)
    c.data.seed = int(seed)
    if config.generators.steps:
        set_steps(c, int(config.generators.steps), ("optimizer", "optimizer_d"))
    return c


def score(task: Any, params: Any, test: np.ndarray, metric: DistributionMetric, seed: int,
          batch: int = 500) -> tuple[dict[str, float], np.ndarray, np.ndarray | None]:
    """``(scores, samples, reconstructions or None)`` of one stage-1 model; images ``uint8 [N, S, S, C]``
    like ``test``. Samples use the key ``seed`` folded with each chunk's offset: the same z for every
    objective of a seed at the same ``batch``."""
    import jax
    import jax.numpy as jnp

    from jaxcomp.codecs.dplc.model import sample_prior, to_model_range, to_pixels
    from jaxcomp.gan.losses import mmd_imq
    from jaxcomp.metrics import reconstruction_scores

    pixels = jax.jit(lambda p, z: jnp.round(to_pixels(task.decode(p, z))).astype(jnp.uint8))
    encode = jax.jit(lambda p, x: task.encode(p, to_model_range(x)))
    key = jax.random.PRNGKey(seed)
    samples, recons, codes = [], [], []
    for i in range(0, len(test), batch):
        chunk = test[i : i + batch]
        samples.append(np.asarray(pixels(params, sample_prior(task.spec, jax.random.fold_in(key, i), len(chunk)))))
        if task.objective != "wgan":
            fx = encode(params, chunk)
            codes.append(np.asarray(fx))
            recons.append(np.asarray(pixels(params, fx)))
    samples_all = np.concatenate(samples)
    out = {"sample_distance": metric(samples_all, test)}
    if not recons:
        return out, samples_all, None
    rec = np.concatenate(recons)
    scores = reconstruction_scores(rec, test)
    fx = np.concatenate(codes)[:2000]
    prior = sample_prior(task.spec, jax.random.fold_in(key, 2**31), len(fx))
    out.update(recon_mse=scores["mse"], recon_psnr=scores["psnr"], recon_distance=metric(rec, test),
               latent_mmd=float(mmd_imq(jnp.asarray(fx), prior, task.spec.prior_var)))
    return out, samples_all, rec


def run(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Trains (or finds) every (objective, seed) run under ``workdir/runs``, scores it and writes the
    tables and grids; returns the Markdown table. A finished run made with other settings (steps,
    report images, metric, config) is refused, not silently reused."""
    from jaxcomp.xla import prefer_xla_cpu_convolutions

    prefer_xla_cpu_convolutions()
    import jax

    from jaxcomp import tasks
    from jaxcomp import train as trainer
    from jaxcomp.codecs.dplc.model import spec_from_config
    from jaxcomp.deadline import Deadline
    from jaxcomp.reporting import write_table

    g = config.get("generators")
    if g is None:
        raise ValueError("the config has no 'generators' block: use a stage-1 variant of configs/dplc.py")
    deadline = Deadline(g.get("time_limit", 0.0), "generators.time_limit")
    seed_list(g.seeds, "generators.seeds")  # a repeated seed would be one run counted twice in the spread
    count(g.eval_images, "generators.eval_images", 1)
    count(g.grid_images, "generators.grid_images", 0)
    for objective in distinct(g.objectives, "generators.objectives"):  # every name before any training
        objective_config(config, objective, 0)
    os.makedirs(workdir, exist_ok=True)
    # the report images of the sweep (evaluation_images reads sweep.split / sweep.eval_images), on a copy
    chosen = ml_collections.ConfigDict(config.to_dict())
    chosen.sweep.update(eval_images=int(g.eval_images), split=g.get("split", "test"))
    test, reference = evaluation_images(chosen)
    spec = spec_from_config(config.model)
    metric = DistributionMetric(spec.channels, spec.image_size)
    results: dict[str, Any] = {"metric": metric.name, "eval_images": len(test), "runs": [],
                               "data_reference": metric(reference, test) if reference is not None else None}
    grid_samples: dict[str, np.ndarray] = {}
    grid_recons: dict[str, np.ndarray] = {}
    for objective in g.objectives:
        for seed in g.seeds:
            c = objective_config(config, objective, seed)
            run_dir = os.path.join(workdir, "runs", f"{objective}_s{seed}")
            cached = os.path.join(run_dir, "scores.json")
            grid_file = os.path.join(run_dir, "grid.npz")
            settings = run_settings(c, len(test), metric.name, chosen.sweep.split)
            whole = dict(settings, config=c.to_json(sort_keys=True))  # how runs before 2026-12-07 recorded them
            if os.path.exists(cached) and os.path.exists(grid_file):
                with open(cached) as f:
                    row = json.load(f)
                if row.get("settings") not in (settings, whole):
                    raise ValueError(f"{run_dir} was trained or scored with other settings (config, steps, report "
                                     "images or metric): use another --workdir or remove that run")
                with np.load(grid_file) as f:
                    samples, rec = f["samples"], (f["recons"] if "recons" in f else None)
            else:
                limit = deadline.for_training(run_dir, c.steps)  # out of time: stop before anything is built
                task, data = tasks.build(c)
                state, _ = trainer.train(c, run_dir, task, data, progress=not g.get("quiet", False),
                                         time_limit=limit and deadline.left())
                deadline.check_finished(state, c.steps, run_dir)
                scores, samples, rec = score(task, jax.device_get(state.params), test, metric, int(seed))
                row = dict(objective=objective, seed=int(seed), steps=int(c.steps), **scores, settings=settings)
                keep = max(int(g.grid_images), GRID_KEPT)  # a later command may show more (up to this many)
                samples = samples[:keep]
                rec = None if rec is None else rec[:keep]
                with atomic_file(grid_file) as f:
                    np.savez_compressed(f, samples=samples, **({} if rec is None else {"recons": rec}))
                write_atomic(cached, json.dumps(row, indent=1))
            row = {k: v for k, v in row.items() if k != "settings"}
            results["runs"].append(row)
            print(json.dumps(row))
            if seed == g.seeds[0]:
                grid_samples[objective] = samples[: g.grid_images]
                if rec is not None:
                    grid_recons[objective] = rec[: g.grid_images]
    write_atomic(os.path.join(workdir, "results.json"), json.dumps(results, indent=1))
    md = write_table(summarize(results), workdir, "results",
                     title=f"DPLC stage 1: {config.sweep.dataset}, {len(test)} held-out images, seeds "
                           f"{tuple(g.seeds)}; distance = {metric.name}")
    save_grid([grid_samples[o] for o in g.objectives], os.path.join(workdir, "samples.png"), g.grid_images)
    if grid_recons:
        save_grid([test[: g.grid_images]] + [grid_recons[o] for o in g.objectives if o in grid_recons],
                  os.path.join(workdir, "reconstructions.png"), g.grid_images)
    return md


def summarize(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per objective (mean ± std over seeds), plus the held-out-data reference row."""
    rows = []
    for objective in dict.fromkeys(r["objective"] for r in results["runs"]):
        runs = [r for r in results["runs"] if r["objective"] == objective]
        if len({r["steps"] for r in runs}) != 1:
            steps = sorted({r["steps"] for r in runs})
            raise ValueError(f"{objective}: the seeds were trained for different steps {steps}")
        row = {"objective": OBJECTIVES[objective], "seeds": len(runs), "steps": runs[0]["steps"]}
        for key, label, digits in (("sample_distance", "G(z) distance", 2), ("recon_distance", "G(F(x)) distance", 2),
                                   ("recon_mse", "G(F(x)) MSE", 1), ("recon_psnr", "G(F(x)) PSNR (dB)", 2),
                                   ("latent_mmd", "MMD(F(x), prior)", 4)):
            values = [r[key] for r in runs if key in r]
            if values:
                m, sd = mean_std(values)
                row[label] = f"{m:.{digits}f} ± {sd:.{digits}f}"
            else:
                row[label] = "n/a (no encoder)"
        rows.append(row)
    if results.get("data_reference") is not None:
        rows.append({"objective": "held-out data (reference)", "seeds": 1, "steps": "",
                     "G(z) distance": f"{results['data_reference']:.2f}"})
    return rows


def main(argv: list[str] | None = None) -> int:
    return config_script_main(__doc__, "configs/dplc.py:mnist", run, argv, sections=("generators",))


if __name__ == "__main__":
    raise SystemExit(main())
