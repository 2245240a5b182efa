"""Fit GC's latent context model (:mod:`jaxcomp.codecs.gc.context`) and store it with the model.

    python -m experiments.gc_context --model runs/gc_c4.msgpack --images ../shared/data/photos \
        --out jaxcomp/codecs/pretrained/gc_c4.msgpack

Encodes every training image (those *not* named like the shipped samples, which stay held out) at
its native size and at half size (the training crops' scale range), counts the symbols in their
contexts, and writes the model with ``params["context_logits"]`` added (the ``.json`` notes record
the images, the smoothing and the fitted model's bits per symbol on the training latents and on the
held-out images against the factorized prior's and the bound's). Fitting uses no held-out image.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="exported GC model (.msgpack) or a training workdir")
    p.add_argument("--images", required=True, help="folder of photos; those named like the shipped samples are "
                                                   "held out and only evaluated")
    p.add_argument("--out", required=True, help="the model with its context table (.msgpack, .json beside it)")
    p.add_argument("--smoothing", type=float, default=0.5, help="added to every context's counts (> 0)")
    p.add_argument("--dtype", default="float16", choices=["float32", "float16"])
    p.add_argument("--force", action="store_true", help="replace an existing --out (and its .json)")
    args = p.parse_args(argv)

    from jaxcomp.checks import finite_number
    from jaxcomp.modelfile import check_new_model_path

    try:  # before any image is encoded
        finite_number(args.smoothing, "--smoothing")
        check_new_model_path(args.out, args.force)
    except ValueError as e:
        p.error(str(e))
    try:
        return _fit(args)
    except (ValueError, OSError) as e:  # DataError, ModelLoadError: a bad image or model file
        print(f"error: {e}", file=sys.stderr)
        return 2


def _fit(args: argparse.Namespace) -> int:
    from PIL import Image
    from tqdm import tqdm

    from jaxcomp.codecs.gc import GCCodec, context, spec_from_config
    from jaxcomp.data import list_images, load_image, sample_image_paths
    from jaxcomp.modelfile import export_params, load_model

    config, params, notes = load_model(args.model, task="gc")
    files = list_images(args.images)
    held = {os.path.basename(q) for q in sample_image_paths()}
    train_files = [f for f in files if os.path.basename(f) not in held]
    test_files = [f for f in files if os.path.basename(f) in held]
    if not train_files:
        print("error: no training images (all are named like the shipped samples)", file=sys.stderr)
        return 2
    spec = spec_from_config(config.model)
    codec = GCCodec(spec, params["generator"])
    train_latents, test_latents = [], []
    for f in tqdm(train_files + test_files, desc="encode", file=sys.stderr):
        image = load_image(f)
        scales = (1.0, 0.5) if f in train_files else (1.0,)
        for s in scales:
            im = image if s == 1.0 else np.asarray(Image.fromarray(image).resize(
                (max(16, round(image.shape[1] * s)), max(16, round(image.shape[0] * s))), Image.BICUBIC))
            (train_latents if f in train_files else test_latents).append(codec.analyse(im))
    logits = context.fit_context_logits(train_latents, spec.channels, args.smoothing)
    pmfs = context.table_pmfs(logits)
    prior = codec.pmfs

    def bits_per_symbol(latents, use_context):
        total = count = 0
        for s in latents:
            pm = context.symbol_pmfs(pmfs, s) if use_context else np.tile(prior, (s.shape[0] * s.shape[1], 1))
            total += float(-np.log2(pm[np.arange(s.size), s.reshape(-1)]).sum())
            count += s.size
        return total / count

    report = dict(bound=math.log2(5),
                  train=dict(images=len(train_files), symbols=int(sum(s.size for s in train_latents)),
                             factorized=bits_per_symbol(train_latents, False),
                             context=bits_per_symbol(train_latents, True)),
                  held_out=dict(images=len(test_files), symbols=int(sum(s.size for s in test_latents)),
                                factorized=bits_per_symbol(test_latents, False) if test_latents else None,
                                context=bits_per_symbol(test_latents, True) if test_latents else None))
    out_params = dict(params, context_logits=logits)
    training = {k: v for k, v in notes.items() if k != "sha256"}
    training["context_model"] = dict(report, smoothing=args.smoothing, fitted_from=os.path.basename(args.model),
                                     images=[os.path.basename(f) for f in train_files])
    export_params(out_params, config, args.out, training, dtype=args.dtype)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
