"""Image-folder plumbing shared by the codec benchmarks (bench_codecs, bench_rd): the common
arguments and the loop that loads, checks and crops each image under a progress bar."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator

import numpy as np

from jaxcomp.baselines import check_image
from jaxcomp.data import DataError, benchmark_image_paths, centre_crop, load_image


def add_image_arguments(p: argparse.ArgumentParser, out: str) -> None:
    """``--images``, ``--max-images``, ``--crop``, ``--out`` (default ``out``) and ``--no-progress``."""
    p.add_argument("--images", default="", help="folder of images (default: the photos shipped with jaxcomp)")
    p.add_argument("--max-images", type=int, default=None, help="only the first N images (sorted by name)")
    p.add_argument("--crop", default="0",
                   help="centre-crop every image to at most CROP x CROP pixels, or WIDTHxHEIGHT (e.g. 768x512)")
    p.add_argument("--held-out", action="store_true",
                   help="only the images named like the shipped samples (in ../shared/data/photos: the "
                        "originals held out from training the shipped models)")
    p.add_argument("--out", default=out, help="output folder (a rerun into it replaces its tables and figures)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")


def iter_images(args: argparse.Namespace, names: set[str] | None = None
                ) -> Iterator[tuple[str, np.ndarray, object]]:
    """``(file name, uint8 [H, W, 3], tqdm bar)`` per image of ``args`` (see :func:`add_image_arguments`),
    only those whose file name is in ``names`` if given (applied before ``--max-images``).

    Raises :class:`jaxcomp.data.DataError` for a missing or empty folder, no image left after the
    filters, or an unreadable image.
    """
    from tqdm import tqdm

    out = getattr(args, "out", "")
    if out and os.path.exists(out) and not os.path.isdir(out):  # found before any image is coded
        raise DataError(f"--out {out} is a file; give a folder for the results")
    crop_h, crop_w = parse_crop(str(args.crop))
    paths = benchmark_image_paths(args.images, None)
    if getattr(args, "held_out", False):
        from jaxcomp.data import sample_image_paths

        shipped = {os.path.basename(p) for p in sample_image_paths()}
        paths = [p for p in paths if os.path.basename(p) in shipped]
        if not paths:
            raise DataError("--held-out: no image in the folder is named like a shipped sample")
    if names is not None:
        paths = [p for p in paths if os.path.basename(p) in names]
        if not paths:
            raise DataError(f"no image of the selected split ({', '.join(sorted(names))}) in the folder")
    if args.max_images is not None:
        if args.max_images < 1:
            raise DataError(f"--max-images must be >= 1, got {args.max_images}")
        paths = paths[:args.max_images]
    progress = tqdm(paths, desc="images", unit="img", disable=args.no_progress, file=sys.stderr)
    for path in progress:
        image = check_image(load_image(path))
        yield os.path.basename(path), centre_crop(image, crop_h, crop_w) if crop_h else image, progress


def parse_crop(text: str) -> tuple[int, int]:
    """``"N"`` -> ``(N, N)``; ``"WxH"`` -> ``(H, W)``; ``"0"`` -> no crop. Bad text is a DataError."""
    try:
        if "x" in text:
            w, h = (int(v) for v in text.lower().split("x"))
        else:
            h = w = int(text)
    except ValueError as e:
        raise DataError(f"--crop must be N or WIDTHxHEIGHT, got {text!r}") from e
    if h < 0 or w < 0 or (h == 0) != (w == 0):
        raise DataError(f"--crop must be >= 0, got {text!r}")
    return h, w


def pyplot():
    """matplotlib's pyplot on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def results_title(images: object, source: str) -> str:
    """``"8 images (photos)"``: a figure title naming how many images and the folder they came from."""
    n = len(images)
    return f"{n} image{'s' if n != 1 else ''} ({os.path.basename(source.rstrip('/'))})"


def write_results(out: str, parts: list[str]) -> str:
    """Joins Markdown ``parts`` with blank lines, writes ``out/results.md`` and returns the text."""
    md = "\n\n".join(p.rstrip("\n") for p in parts) + "\n"
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(md)
    return md
