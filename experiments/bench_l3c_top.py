"""What coding the top scale through its own pyramid (``top_levels``) gains or costs, by image size.

    python -m experiments.bench_l3c_top                        # the validation originals, sides 16..256
    python -m experiments.bench_l3c_top --sides 64,128 --crops 8 --out runs/bench_l3c_top_small

Cuts ``--crops`` square crops of each side in ``--sides`` at random positions (seeded by the side)
from each validation original in ``--photos`` (``jaxcomp/data/samples/splits.json``; ``--split
test`` only for a final check, never to choose), compresses every crop with the L3C codec at
``top_levels`` 0, 1 and 2 with every level coded (``top_min_side=1``) and with the codec's default
rule (:data:`jaxcomp.codecs.l3c.DEFAULT_TOP_MIN_SIDE`), decodes each stream bit-exactly, and reports
total bpsp (8 * bytes / subpixels, headers included) per side and setting, with the side of the top
map that each level codes. Writes ``OUT/results.md`` and ``results.csv``.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys

import numpy as np

from jaxcomp.checks import int_at_least


def crop_positions(height: int, width: int, side: int, count: int, seed: int) -> list[tuple[int, int]]:
    """``count`` top-left corners ``(y, x)`` of ``side x side`` crops inside ``height x width``
    (drawn with ``seed``); ValueError if the image is smaller than ``side``."""
    if height < side or width < side:
        raise ValueError(f"an image of {height}x{width} has no {side}x{side} crop")
    rng = np.random.default_rng(seed)
    return [(int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))) for _ in range(count)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", default="../shared/data/photos", help="folder holding the shipped photos' originals")
    p.add_argument("--split", default="val", choices=["val", "test"])
    p.add_argument("--sides", default="16,32,64,96,128,160,192,256", help="crop sides in px, comma-separated")
    p.add_argument("--crops", type=int_at_least(1), default=4, help="crops per photo and side")
    p.add_argument("--checkpoint", default=None, help="an exported L3C model (default: the shipped one)")
    p.add_argument("--out", default="runs/bench_l3c_top")
    args = p.parse_args(argv)

    from jaxcomp.codecs import l3c
    from jaxcomp.data import DataError, held_out_names, load_image

    try:
        sides = [int(v) for v in args.sides.split(",")]
    except ValueError:
        p.error(f"--sides needs comma-separated integers, got {args.sides!r}")
    if min(sides) < 1:
        p.error(f"--sides must be positive, got {args.sides!r}")
    names = sorted(held_out_names(args.split))
    paths = [os.path.join(args.photos, n) for n in names]
    missing = [q for q in paths if not os.path.isfile(q)]
    if missing:
        print(f"error: the {args.split} originals are not in {args.photos!r} (missing {missing[0]})", file=sys.stderr)
        return 2
    try:
        images = [load_image(q) for q in paths]
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    small = [(q, im.shape) for q, im in zip(paths, images) if min(im.shape[:2]) < max(sides)]
    if small:  # before the codecs load
        (q, shape), = small[:1]
        p.error(f"--sides {max(sides)}: {q} is {shape[0]}x{shape[1]}, it has no {max(sides)}x{max(sides)} crop")
    settings = {"top 0": (0, 1), "top 1, every level": (1, 1), "top 2, every level": (2, 1),
                f"top 2, min side {l3c.DEFAULT_TOP_MIN_SIDE} (default)": (2, None)}
    codecs = {name: l3c.load_codec(args.checkpoint, top_levels=t, top_min_side=m) for name, (t, m) in settings.items()}
    scales = next(iter(codecs.values())).spec.scales
    rows = []
    for side in sides:
        bits = dict.fromkeys(settings, 0)
        subpixels = 0
        for image in images:
            for y, x in crop_positions(*image.shape[:2], side, args.crops, seed=side):
                crop = image[y:y + side, x:x + side]
                for name, codec in codecs.items():
                    data = codec.compress(crop)
                    if not np.array_equal(codec.decompress(data), crop):
                        raise SystemExit(f"error: a {side}x{side} crop does not decode bit-exactly ({name})")
                    bits[name] += 8 * len(data)
                subpixels += crop.size
        top = (side + (-side % 2**scales)) >> scales  # x(S) of the crop padded to 2**scales
        row = {"side": side, "top map sides coded at levels 1, 2": f"{top}, {-(-top // 2)}",
               "crops": len(images) * args.crops}
        row.update({name: bits[name] / subpixels for name in settings})
        rows.append(row)
        print(", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(f"bpsp of {args.crops} random square crops per {args.split} original and side (headers included)\n\n")
        f.write("| " + " | ".join(rows[0]) + " |\n|" + "---|" * len(rows[0]) + "\n")
        for r in rows:
            f.write("| " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in r.values()) + " |\n")
    print(f"wrote {args.out}/results.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
