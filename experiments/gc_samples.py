"""Images sampled from GC's latent space (ICCV'19, Sec. 6.3): a grid and how close they come to photos.

    python -m experiments.gc_samples --sampler runs/gc_sampler                # the trained WGAN-GP
    python -m experiments.gc_samples --sampler runs/gc_sampler --images ../shared/data/photos --held-out

Three sets of ``--n`` images of ``crop`` x ``crop`` pixels, each decoded by the frozen GC generator,
are compared with ``--n`` real crops (random crops of the images, by seed) by the sliced Wasserstein
distance of Laplacian-pyramid patches (:func:`jaxcomp.metrics.swd`):

* ``wgan-gp``: latents drawn from the trained latent generator;
* ``prior``: latent symbols drawn i.i.d. from GC's factorized prior (the baseline: what the
  entropy model knows about the latent, no spatial structure);
* ``reconstruction``: GC's own reconstructions of the real crops (the ceiling: real latents).

Each is repeated for ``--seeds`` (draws of the samples and of the real crops); the table gives
mean +- std. Writes ``samples.md/.csv`` and ``grid_<set>.png`` (the first seed; e.g.
``grid_real_another_draw.png``) to ``--out``; an ``--out`` that holds those of an earlier run is
refused before anything is computed, unless ``--force`` (replace them).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np


def random_crops(images: list[np.ndarray], n: int, crop: int, seed: int) -> np.ndarray:
    """``n`` random ``crop`` x ``crop`` crops, ``uint8 [n, crop, crop, 3]``, images drawn in turn."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        im = images[i % len(images)]
        if min(im.shape[:2]) < crop:
            raise ValueError(f"an image of {im.shape[1]}x{im.shape[0]} is smaller than the {crop}-pixel crop")
        y = rng.integers(0, im.shape[0] - crop + 1)
        x = rng.integers(0, im.shape[1] - crop + 1)
        out.append(im[y:y + crop, x:x + crop])
    return np.stack(out)


def grid(images: np.ndarray, cols: int) -> np.ndarray:
    """``[n, h, w, 3]`` -> one ``uint8`` mosaic with 2-pixel white gaps."""
    n, h, w, _ = images.shape
    rows = -(-n // cols)
    out = np.full((rows * (h + 2) - 2, cols * (w + 2) - 2, 3), 255, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        out[r * (h + 2):r * (h + 2) + h, c * (w + 2):c * (w + 2) + w] = im
    return out


def _seeds(text: str) -> list[int]:
    """``--seeds`` ``"0,1,2"`` -> ``[0, 1, 2]`` (``ValueError`` naming the flag for an entry that is
    not an integer; :func:`jaxcomp.checks.seed_list` then refuses an empty, negative or repeated one)."""
    entries = [e.strip() for e in text.split(",")] if text.strip() else []
    try:
        return [int(e) for e in entries]
    except ValueError:
        raise ValueError(f"--seeds must be comma-separated whole numbers >= 0, got {text!r}") from None


def previous_outputs(out: str) -> list[str]:
    """The files of an earlier run in ``out`` that a run would replace: ``samples.md``, ``samples.csv``,
    ``grid_*.png`` (sorted names; none when ``out`` does not exist)."""
    if not os.path.isdir(out):
        return []
    return sorted(f for f in os.listdir(out)
                  if f in ("samples.md", "samples.csv") or (f.startswith("grid_") and f.endswith(".png")))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sampler", required=True, help="training workdir or exported .msgpack of a gc_sampler run")
    p.add_argument("--images", default="", help="folder of real photos (default: the photos shipped with jaxcomp)")
    p.add_argument("--held-out", action="store_true", help="only the images named like the shipped samples")
    p.add_argument("--n", type=int, default=16, help="images per set and seed")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated, distinct whole numbers >= 0")
    p.add_argument("--out", default="runs/gc_samples")
    p.add_argument("--force", action="store_true",
                   help="replace the samples.md/.csv and grid_*.png of an earlier run in --out")
    args = p.parse_args(argv)
    from jaxcomp.checks import seed_list
    from jaxcomp.files import check_output_folder

    try:  # before the sampling, not after it
        seeds = seed_list(_seeds(args.seeds), "--seeds")
        check_output_folder(args.out)
        existing = previous_outputs(args.out)
        if existing and not args.force:
            raise ValueError(f"{args.out} holds the output of an earlier run ({', '.join(existing)}): choose "
                             f"another --out, or pass --force to replace it")
    except ValueError as e:
        p.error(str(e))

    from jaxcomp.codecs.gc.sampler import (
        LatentSamplerTask,
        decode_latents,
        image_latents,
        prior_sample_images,
        sample_images,
    )
    from jaxcomp.data import DataError, benchmark_image_paths, load_image, sample_image_paths
    from jaxcomp.metrics import swd
    from jaxcomp.modelfile import ModelLoadError, load_model
    from jaxcomp.reporting import write_table

    try:
        if args.n < 2:
            raise ValueError(f"--n must be >= 2, got {args.n}")
        config, params, _ = load_model(args.sampler, task="gc_sampler")
        task = LatentSamplerTask(config)
        paths = benchmark_image_paths(args.images)
        if args.held_out:
            shipped = {os.path.basename(q) for q in sample_image_paths()}
            paths = [q for q in paths if os.path.basename(q) in shipped]
            if not paths:
                raise DataError("--held-out: no image in the folder is named like a shipped sample")
        photos = [load_image(q) for q in paths]
        crop = config.data.crop
        small = [q for q, im in zip(paths, photos) if min(im.shape[:2]) < crop]
        if small:  # before the sampling: random_crops would stop on it midway
            raise DataError(f"{small[0]}: smaller than the sampler's {crop}x{crop} crops ({len(small)} such "
                            f"image(s) in {args.images})")
    except (ModelLoadError, DataError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = []
    first = {}
    for seed in seeds:
        real = random_crops(photos, args.n, crop, seed)
        latents = image_latents(task, real)
        sets = {"wgan-gp": sample_images(task, params, args.n, seed), "prior": prior_sample_images(task, args.n, seed),
                "reconstruction": decode_latents(task, latents, seed), "real (another draw)":
                random_crops(photos, args.n, crop, 1000 + seed)}
        for name, images in sets.items():
            rows.append(dict(set=name, seed=seed, **swd(real, images, seed=seed)))
            first.setdefault(name, images)
        first.setdefault("real", real)
    table = []
    for name in dict.fromkeys(r["set"] for r in rows):
        values = [r["mean"] for r in rows if r["set"] == name]
        table.append({"set": name, "swd_mean": f"{np.mean(values):.1f} +- {np.std(values):.1f}",
                      "seeds": len(values)})
    os.makedirs(args.out, exist_ok=True)
    text = write_table(table, args.out, "samples",
                       title=f"SWD (x1e3) to {args.n} real {crop}x{crop} crops, mean +- std over seeds {seeds}")
    print(text)
    from PIL import Image

    for name, images in first.items():
        safe = name.replace(" (", "_").replace(")", "").replace(" ", "_")  # "real (another draw)": real_another_draw
        Image.fromarray(grid(images[:16], 4)).save(os.path.join(args.out, f"grid_{safe}.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
