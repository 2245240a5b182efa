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
    p.add_argument("--crop", type=int, default=0, help="centre-crop every image to at most CROP x CROP")
    p.add_argument("--out", default=out, help="output folder")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")


def iter_images(args: argparse.Namespace) -> Iterator[tuple[str, np.ndarray, object]]:
    """``(file name, uint8 [H, W, 3], tqdm bar)`` per image of ``args`` (see :func:`add_image_arguments`).

    Raises :class:`jaxcomp.data.DataError` for a missing or empty folder or an unreadable image.
    """
    from tqdm import tqdm

    if args.crop < 0:
        raise DataError(f"--crop must be >= 0, got {args.crop}")
    paths = benchmark_image_paths(args.images, args.max_images)
    progress = tqdm(paths, desc="images", unit="img", disable=args.no_progress, file=sys.stderr)
    for path in progress:
        image = check_image(load_image(path))
        yield os.path.basename(path), centre_crop(image, args.crop) if args.crop else image, progress


def pyplot():
    """matplotlib's pyplot on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
