"""DPLC's experiment (NeurIPS'18, Fig. 3/4): distortion and distribution distance against the rate, for
DPLC (E and B into the frozen generator), the compressive auto-encoder (MSE) and the GAN-compression
objective (adversarial + MSE), each trained by the same code at the same rates, with seeds.

    python -m experiments.dplc_sweep --config configs/dplc.py:mnist --workdir runs/dplc_sweep_mnist \
        --config.sweep.generator=runs/dplc_mnist_g

``--config`` is the stage-1 variant of a data set (``mnist``, ``photos``, ``paper_celeba``, ...); its
``sweep`` block gives the rates (``(m, L)`` pairs: m code channels of L levels), the methods, the
seeds, the steps of each stage-2 run and the stage-1 model (``sweep.generator``, required). Every run
is an ordinary training run in ``WORKDIR/runs/<method>_b<bits>_s<seed>`` (a rerun skips finished
ones; each run's decodings of the report images are kept there in ``decoded.npz``, with the digests
of the run's settings and of the report images: a rerun with other settings is refused). Each model is
then evaluated on data no run saw (MNIST: the 10k test digits; photos: the held-out photos' tiles):
MSE and PSNR of one stochastic decoding (key = seed), and the distribution distance of the decoded
set to the originals (MNIST: the Fréchet distance in the feature space of jaxcomp's own MNIST
classifier, :class:`jaxcomp.metrics.frechet.MNISTFeatures`; photos: SWD of Laplacian-pyramid
patches). Reference rows: the generator's own samples (``G(z)``, z from the prior) and a second set
of real data (MNIST: the validation digits; photos with ``data.holdout=samples_val``: the "val"
originals' tiles, while the "test" ones are reported): the distance between two samples of the data
itself.

Writes ``results.md/.csv`` (mean ± std over seeds), ``results.json``, ``curves.png`` (both metrics
against bits per image) and ``samples_b<bits>.png`` (originals, then one row per method in the order of
``sweep.methods``; seed 0). The plan is checked first (:func:`check_plan`: nothing repeated, no two rates
of the same bits per image); ``sweep.mmd_per_rate`` gives DPLC one lambda per rate.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import numpy as np

from jaxcomp.configs import config_digest, config_script_main
from jaxcomp.files import atomic_file
from jaxcomp.modelfile import params_digest

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "dplc.py")
METHODS = {"dplc": "compress", "cae": "cae", "gan": "gan"}
LABELS = {"dplc": "DPLC (frozen G, MMD)", "cae": "CAE (MSE)", "gan": "GAN compression (adv. + MSE)"}


def stage2_config(config, method: str, code_channels: int, levels: int, seed: int):
    """The stage-2 config of ``method`` at ``(m, L)`` for the data set of stage-1 ``config``."""

    from jaxcomp.configs import load_config

    if method not in METHODS:
        raise ValueError(f"unknown sweep method {method!r}; use {sorted(METHODS)}")
    c = with_stage1_data_and_sizes(load_config(f"{CONFIGS}:{config.sweep.dataset}_{METHODS[method]}"), config)
    c.model.update(code_channels=int(code_channels), levels=int(levels))
    c.compress.generator = config.sweep.generator
    per_rate = mmd_per_rate(config)
    mmd = per_rate[(code_channels, levels)] if per_rate else config.sweep.get("mmd", 0.0)
    if method == "dplc" and mmd > 0:
        c.loss.mmd = float(mmd)
    c.seed = int(seed)
    c.data.seed = int(seed)
    if config.sweep.steps:
        set_steps(c, int(config.sweep.steps), ("optimizer",))
    return c


def mmd_per_rate(config) -> dict[tuple[int, int], float] | None:
    """DPLC's lambda for each ``(m, L)`` of ``sweep.rates`` from ``sweep.mmd_per_rate`` (one value per
    rate, in place of ``sweep.mmd``), or None where it is not given; a ValueError if the counts differ."""
    per_rate = tuple(config.sweep.get("mmd_per_rate", ()))
    if not per_rate:
        return None
    rates = [tuple(r) for r in config.sweep.rates]
    if len(per_rate) != len(rates):
        raise ValueError(f"sweep.mmd_per_rate has {len(per_rate)} values for {len(rates)} rates")
    return {rate: float(value) for rate, value in zip(rates, per_rate)}


def with_stage1_data_and_sizes(c, config):
    """``c`` with the user's data block (paths, splits) and the generator-defining model fields
    (``jaxcomp.codecs.dplc.task.GENERATOR_FIELDS``, e.g. ``--config.model.latent=64``) of the
    stage-1 ``config``; returns ``c``."""
    import ml_collections

    from jaxcomp.codecs.dplc.task import GENERATOR_FIELDS  # the stage-1 generator's, which every run shares

    c.data = ml_collections.ConfigDict(config.data.to_dict())
    c.model.update({k: config.model[k] for k in GENERATOR_FIELDS})
    return c


def set_steps(c, steps: int, optimizers: tuple[str, ...]) -> None:
    """A shorter (or longer) run of ``c``: ``steps`` steps, the learning-rate decays of the named
    optimizer blocks moved in proportion, evaluation and checkpoint at the end."""
    for name in optimizers:
        c[name].boundaries = tuple(int(b * steps / c.steps) for b in c[name].boundaries)
    c.steps = int(steps)
    c.eval_every = c.checkpoint_every = c.steps


def evaluation_images(config) -> tuple[np.ndarray, np.ndarray | None]:
    """``(report images, reference images or None)``, ``uint8 [N, S, S, C]``.

    MNIST: the test digits, against the validation digits (``sweep.split="val"``, for choosing
    settings: the validation digits, against half of themselves). A photo folder with
    ``data.holdout="samples_val"``: tiles of the shipped samples' originals of the "test" role (the
    ``jaxcomp/data/samples/splits.json`` roles; training never reads them), against those of the
    "val" role as the reference (two sets of real photos: the floor of the distance);
    ``sweep.split="val"`` reports on the "val" ones, with no reference. Other data: the validation
    tiles, with no reference (there is no second held-out set)."""
    from jaxcomp.data import build_image_data, mnist_images

    n = config.sweep.eval_images
    split = config.sweep.get("split", "test")
    if split not in ("test", "val"):
        raise ValueError(f"sweep.split must be 'test' or 'val', got {config.sweep.split!r}")
    if config.data.source == "mnist":
        test = mnist_images(config.data.path, "test", config.data.pad_to)[:n]
        val = mnist_images(config.data.path, "val", config.data.pad_to)[:n]
        # selecting settings (sweep.split='val'): the validation digits, against half of themselves
        return (test, val) if split == "test" else (val, val[: len(val) // 2])
    if config.data.source == "folder" and config.data.get("holdout") == "samples_val":
        test = _role_tiles(config.data, "test")
        val = _role_tiles(config.data, "val")
        if test is not None and val is not None:
            return (test[:n], val[:n]) if split == "test" else (val[:n], None)
    tiles = build_image_data(config.data).eval_tiles()[:n]
    if not len(tiles):
        raise ValueError("no evaluation tiles: the data has no validation images")
    return tiles, None


def _role_tiles(data, role: str) -> np.ndarray | None:
    """Non-overlapping ``data.eval_crop`` tiles of the originals of the shipped photos of ``role`` found
    in ``data.path`` (resized as training resizes them), ``uint8 [N, S, S, 3]``; None if there are none."""
    from jaxcomp.data import held_out_names, image_tiles, list_images, load_image
    from jaxcomp.data.images import resize_centre_crop

    names = held_out_names(role)
    files = [f for f in list_images(data.path) if os.path.basename(f) in names]
    if not files:
        return None
    images = [load_image(f) for f in files]
    if data.get("resize", 0):
        images = [resize_centre_crop(im, data.resize) for im in images]
    return np.concatenate([image_tiles(im, data.eval_crop) for im in images])


class DistributionMetric:
    """The distribution distance of the sweep: MNIST Fréchet distance (1-channel 32x32) or SWD."""

    def __init__(self, channels: int, image_size: int):
        self.kind = "fd_mnist" if channels == 1 and image_size == 32 else "swd"
        if self.kind == "fd_mnist":
            from jaxcomp.metrics.frechet import MNISTFeatures

            self.features = MNISTFeatures()
        self._reference: tuple = (None, None)

    @property
    def name(self) -> str:
        return "FD (MNIST classifier)" if self.kind == "fd_mnist" else "SWD x1e3"

    def __call__(self, a: np.ndarray, b: np.ndarray) -> float:
        if self.kind == "fd_mnist":
            from jaxcomp.metrics.frechet import frechet_distance, gaussian_stats

            # every run is scored against the same report set: its features are computed once
            key = (b.shape, hashlib.sha1(np.ascontiguousarray(b).tobytes()).hexdigest())
            if self._reference[0] != key:
                self._reference = (key, gaussian_stats(self.features.features(b)))
            return float(frechet_distance(*gaussian_stats(self.features.features(a)), *self._reference[1]))
        from jaxcomp.metrics import swd

        return float(swd(a, b)["mean"])


def decode_all(task: Any, params: Any, images: np.ndarray, seed: int, batch: int = 500) -> np.ndarray:
    """One stochastic decoding of every image (B's noise from ``seed``): ``uint8 [N, S, S, C]``."""
    import jax
    import jax.numpy as jnp

    from jaxcomp.codecs.dplc.model import to_pixels

    fwd = jax.jit(lambda p, x, k: jnp.round(to_pixels(task.forward(p, x, k)["x_hat"])).astype(jnp.uint8))
    out = []
    for i in range(0, len(images), batch):
        chunk = images[i : i + batch]
        pad = batch - len(chunk)
        x = np.concatenate([chunk, np.repeat(chunk[:1], pad, 0)]) if pad else chunk
        out.append(np.asarray(fwd(params, x, jax.random.fold_in(jax.random.PRNGKey(seed), i)))[: len(chunk)])
    return np.concatenate(out)


def generator_samples(config, n: int, seed: int = 0) -> np.ndarray:
    """``n`` samples ``G(z)`` of the stage-1 model, ``uint8 [n, S, S, C]``."""
    import jax
    import jax.numpy as jnp

    from jaxcomp.codecs.dplc.codec import resolve_model
    from jaxcomp.codecs.dplc.model import Generator, sample_prior, spec_from_config, to_pixels
    from jaxcomp.modelfile import load_model

    g_config, params, _ = load_model(resolve_model(config.sweep.generator), task="dplc_generator")
    spec = spec_from_config(g_config.model)
    z = sample_prior(spec, jax.random.PRNGKey(seed), n)
    x = jax.jit(lambda p, z: Generator(spec).apply({"params": p}, z))(params["generator"]["decoder"], z)
    return np.asarray(jnp.round(to_pixels(x)).astype(jnp.uint8))


def mean_std(values: list[float]) -> tuple[float, float]:
    """``(mean, sample standard deviation)`` of ``values`` (ddof = 1; 0.0 for a single value)."""
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def check_plan(config) -> None:
    """The sweep's plan, checked before anything trains: rates, methods and seeds given, none repeated
    (a repeated seed is one run counted twice in the spread), seeds whole and >= 0, at least one report
    image, ``grid_images`` >= 0, per-rate ``mmd_per_rate`` one per rate, and no two rates of the same
    bits per image (their runs would share a folder, ``<method>_b<bits>_s<seed>``, and a row of the
    table)."""
    import math

    from jaxcomp.checks import count, distinct, seed_list

    s = config.sweep
    rates = distinct([tuple(r) for r in s.rates], "sweep.rates")
    distinct(s.methods, "sweep.methods")
    seed_list(s.seeds, "sweep.seeds")
    count(s.eval_images, "sweep.eval_images", 1)
    count(s.grid_images, "sweep.grid_images", 0)
    mmd_per_rate(config)  # one lambda per rate, if given
    by_bits: dict[float, tuple] = {}
    for m, levels in rates:
        if not (isinstance(m, int) and isinstance(levels, int) and m >= 0 and levels >= 2):
            raise ValueError(f"sweep.rates holds {(m, levels)}: each rate is (m >= 0 code channels, L >= 2 levels)")
        bits = m * math.log2(levels)  # per code position: equal bits per image exactly when this is equal
        if bits in by_bits:
            raise ValueError(f"sweep.rates {by_bits[bits]} and {(m, levels)} code the same bits per image: their "
                             "runs would share one folder and one row of the table; keep one")
        by_bits[bits] = (m, levels)


def warn_unfinished_generator(generator: str) -> None:
    """A warning when the stage-1 model is a training workdir stopped before its config's steps (a
    ``--time-limit`` stop): every stage-2 run would build on an unfinished generator."""
    from jaxcomp.codecs.dplc.codec import resolve_model
    from jaxcomp.modelfile import ModelLoadError, load_workdir

    path = resolve_model(generator)
    if not os.path.isdir(path):
        return
    try:
        g_config, _, notes = load_workdir(path)
    except ModelLoadError:
        return  # the sweep's own loading names the problem
    if int(notes.get("step", 0)) < int(g_config.steps):
        print(f"warning: the generator {path} stopped at step {notes.get('step')} of its {g_config.steps}; the "
              "sweep builds on that unfinished model (finish it with the same training command)", flush=True)


def run(config, workdir: str) -> str:
    from jaxcomp.xla import prefer_xla_cpu_convolutions

    prefer_xla_cpu_convolutions()
    import jax

    from jaxcomp import tasks
    from jaxcomp import train as trainer
    from jaxcomp.codecs.dplc.model import spec_from_config
    from jaxcomp.deadline import Deadline
    from jaxcomp.metrics import reconstruction_scores
    from jaxcomp.reporting import write_table

    s = config.sweep
    if not s.generator:
        raise ValueError("set --config.sweep.generator to the stage-1 model (a dplc_generator workdir or .msgpack)")
    check_plan(config)
    warn_unfinished_generator(s.generator)
    deadline = Deadline(s.get("time_limit", 0.0), "sweep.time_limit")
    os.makedirs(workdir, exist_ok=True)
    test, reference = evaluation_images(config)
    spec = spec_from_config(config.model)
    # pass 1: train (or find finished) runs and decode the report images once, cached in the run dir
    decoded_runs = []
    images_digest = hashlib.sha256(test.tobytes()).hexdigest()[:16]  # the report images, the same for every run
    for m, levels in s.rates:
        for method in s.methods:
            for seed in s.seeds:
                c = stage2_config(config, method, m, levels, seed)
                task, data = tasks.build(c)
                bits = task.spec.bits
                run_dir = os.path.join(workdir, "runs", f"{method}_b{bits:g}_s{seed}")
                cache = os.path.join(run_dir, "decoded.npz")
                # the generator counts by its parameters: one trained further in the same place is another
                made_by = np.array([config_digest(c), images_digest, params_digest(c.compress.generator)])
                if os.path.exists(cache):  # a run of other settings or images is not this one's
                    with np.load(cache) as f:
                        found = f["made_by"] if "made_by" in f.files else None
                    if found is None:  # written before the check: nothing to compare, reused as before
                        print(f"warning: {cache} predates the settings check; reused as it is")
                    elif len(found) == 2 and np.array_equal(found, made_by[:2]):  # before the generator's digest
                        print(f"warning: {cache} predates the generator's check; reused as it is")
                    elif not np.array_equal(found, made_by):
                        raise ValueError(f"{cache} was made with other settings or test images than this sweep's "
                                         f"(config and images digests {made_by.tolist()}, the file's "
                                         f"{found.tolist()}); use another --workdir, "
                                         f"or remove {run_dir} to train it again")
                else:
                    state, _ = trainer.train(c, run_dir, task, data, progress=not s.get("quiet", False),
                                             time_limit=deadline.for_training(run_dir, c.steps))
                    deadline.check_finished(state, c.steps, run_dir)
                    decoded = decode_all(task, jax.device_get(state.params), test, seed)
                    with atomic_file(cache) as f:
                        np.savez_compressed(f, decoded=decoded, images=len(test), made_by=made_by)
                decoded_runs.append((dict(method=method, bits=bits, bpp=bits / spec.image_size ** 2, seed=seed,
                                          code_channels=m, levels=levels), cache))
    # pass 2: the metrics
    metric = DistributionMetric(spec.channels, spec.image_size)
    results: dict[str, Any] = {"metric": metric.name, "eval_images": len(test), "runs": []}
    samples = generator_samples(config, len(test))
    results["generator_samples"] = metric(samples, test)
    results["data_reference"] = metric(reference, test) if reference is not None else None
    grids: dict[float, dict[str, np.ndarray]] = {}
    for row, cache in decoded_runs:
        with np.load(cache) as f:
            decoded = f["decoded"]
        if len(decoded) != len(test):
            raise ValueError(f"{cache} holds {len(decoded)} decoded images, not {len(test)}: remove it to redo")
        row.update(**reconstruction_scores(decoded, test), distance=metric(decoded, test))
        results["runs"].append(row)
        print(json.dumps(row))
        if row["seed"] == s.seeds[0]:
            grids.setdefault(row["bits"], {})[row["method"]] = decoded[: s.grid_images]
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    rows = summarize(results)
    md = write_table(rows, workdir, "results", title=f"DPLC sweep: {config.sweep.dataset}, {len(test)} held-out "
                                                     f"images, seeds {tuple(s.seeds)}; distance = {metric.name}")
    plot_curves(results, os.path.join(workdir, "curves.png"))
    for bits, per_method in grids.items():
        save_grid([test[: s.grid_images]] + [per_method[k] for k in s.methods if k in per_method],
                  os.path.join(workdir, f"samples_b{bits:g}.png"), s.grid_images)
    save_grid([samples[: s.grid_images]], os.path.join(workdir, "generator_samples.png"), s.grid_images)
    return md


def summarize(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (method, bits): mean ± std over seeds, plus the reference rows."""
    rows = []
    keys = sorted({(r["method"], r["bits"]) for r in results["runs"]}, key=lambda k: (k[1], list(METHODS).index(k[0])))
    for method, bits in keys:
        runs = [r for r in results["runs"] if r["method"] == method and r["bits"] == bits]
        mse, mse_sd = mean_std([r["mse"] for r in runs])
        psnr, psnr_sd = mean_std([r["psnr"] for r in runs])
        dist, dist_sd = mean_std([r["distance"] for r in runs])
        rows.append({"method": method, "bits/image": f"{bits:g}", "bpp": f"{runs[0]['bpp']:.4f}", "seeds": len(runs),
                     "MSE": f"{mse:.1f} ± {mse_sd:.1f}", "PSNR (dB)": f"{psnr:.2f} ± {psnr_sd:.2f}",
                     "distance": f"{dist:.2f} ± {dist_sd:.2f}"})
    rows.append({"method": "G(z) samples (reference)", "bits/image": "0", "bpp": "0", "seeds": 1, "MSE": "",
                 "PSNR (dB)": "", "distance": f"{results['generator_samples']:.2f}"})
    if results.get("data_reference") is not None:
        rows.append({"method": "held-out data (reference)", "bits/image": "", "bpp": "", "seeds": 1, "MSE": "",
                     "PSNR (dB)": "", "distance": f"{results['data_reference']:.2f}"})
    return rows


def plot_curves(results: dict[str, Any], path: str) -> None:
    """MSE and distance against bits per image, mean ± std over seeds, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for method in METHODS:
        runs = [r for r in results["runs"] if r["method"] == method]
        if not runs:
            continue
        bits = sorted({r["bits"] for r in runs})
        for ax, key in zip(axes, ("mse", "distance")):
            vals = [[r[key] for r in runs if r["bits"] == b] for b in bits]
            mean = np.array([np.mean(v) for v in vals])
            sd = np.array([np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in vals])
            ax.errorbar(np.array(bits) + 1, mean, yerr=sd, marker="o", capsize=3, label=LABELS[method])
    axes[1].axhline(results["generator_samples"], color="gray", ls="--", label="G(z) samples")
    if results.get("data_reference") is not None:
        axes[1].axhline(results["data_reference"], color="black", ls=":", label="held-out data")
    for ax, title in zip(axes, ("MSE ([0, 255]^2)", results["metric"])):
        ax.set_xscale("log")
        ax.set_xlabel("bits per image + 1")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def save_grid(rows: list[np.ndarray], path: str, wanted: int | None = None) -> None:
    """Rows of images ``uint8 [n, S, S, C]`` side by side into one PNG, each cut to the shortest row's
    length (a run's cached grid may hold fewer images than a later command asks: a warning says so);
    nothing is written for ``wanted`` = 0 or rows without images."""
    from PIL import Image

    n = min((len(r) for r in rows), default=0)
    if wanted is not None:
        n = min(n, int(wanted))
        if n < wanted:
            print(f"warning: {os.path.basename(path)} shows {n} images a row, not {wanted} (the runs' cached grids "
                  "hold fewer)", flush=True)
    if n == 0:
        return
    strips = [np.concatenate(list(r[:n]), axis=1) for r in rows]
    grid = np.concatenate(strips, axis=0)
    Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(path)


def main(argv: list[str] | None = None) -> int:
    return config_script_main(__doc__, "configs/dplc.py:mnist", run, argv, sections=("sweep",))


if __name__ == "__main__":
    raise SystemExit(main())
