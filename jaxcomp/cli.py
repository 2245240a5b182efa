"""The ``jaxcomp`` command: lossless compression of images with a learned codec.

    jaxcomp compress photo.png photo.jxc          # one file
    jaxcomp compress photos/ compressed/          # every image of a folder (progress bar)
    jaxcomp decompress compressed/ restored/      # every .jxc of a folder, written as PNG
    jaxcomp compress --checkpoint runs/l3c_cpu photo.png photo.jxc   # a model of your own

Exit status: 0 all files done; 1 some files failed (each named on stderr, the others are
done); 2 the command itself is wrong (bad arguments, missing input, unusable checkpoint).
Existing outputs are never overwritten unless --force is given.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from jaxcomp.data.images import IMAGE_EXTENSIONS

SUFFIX = ".jxc"


class UsageError(Exception):
    pass


def _pairs(src: str, dst: str, compress: bool) -> list[tuple[str, str]]:
    if os.path.isdir(src):
        ext = IMAGE_EXTENSIONS if compress else (SUFFIX,)
        names = sorted(f for f in os.listdir(src) if f.lower().endswith(ext))
        if not names:
            raise UsageError(f"no {'images' if compress else SUFFIX + ' files'} in folder {src}")
        if os.path.exists(dst) and not os.path.isdir(dst):
            raise UsageError(f"{dst} exists and is not a folder")
        os.makedirs(dst, exist_ok=True)
        new_ext = SUFFIX if compress else ".png"
        return [(os.path.join(src, n), os.path.join(dst, os.path.splitext(n)[0] + new_ext)) for n in names]
    if not os.path.exists(src):
        raise UsageError(f"input not found: {src}")
    if os.path.isdir(dst):
        new_ext = SUFFIX if compress else ".png"
        dst = os.path.join(dst, os.path.splitext(os.path.basename(src))[0] + new_ext)
    return [(src, dst)]


def _write_atomic(path: str, data: bytes) -> None:
    tmp = path + ".partial"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _compress_one(codec, src: str, dst: str) -> tuple[int, int]:
    from jaxcomp.data import load_image

    image = load_image(src, keep_gray=True)  # grayscale stays [H, W] and decodes as grayscale
    data = codec.compress(image)
    _write_atomic(dst, data)
    return image.size, len(data)


def _decompress_one(codec, src: str, dst: str) -> tuple[int, int]:
    import io

    from PIL import Image

    with open(src, "rb") as f:
        data = f.read()
    image = codec.decompress(data)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    _write_atomic(dst, buf.getvalue())
    return image.size, len(data)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jaxcomp", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_ in (("compress", "image file or folder -> .jxc"), ("decompress", ".jxc file or folder -> PNG")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("input")
        p.add_argument("output")
        p.add_argument("--checkpoint", default=None,
                       help="model: exported .msgpack or a training workdir (default: the shipped L3C model)")
        p.add_argument("--codec", default="l3c", choices=["l3c"])
        p.add_argument("--tile", type=int, default=512,
                       help="tile size in pixels when compressing (decoding reads it from the file)")
        p.add_argument("--window", type=int, default=64,
                       help="coding PMFs over WINDOW levels around the model's mean plus an escape, when "
                            "compressing (0: all 256 levels; decoding reads it from the file)")
        p.add_argument("--force", action="store_true", help="overwrite existing outputs")
        p.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    compress = args.command == "compress"
    try:
        pairs = _pairs(args.input, args.output, compress)
        if not args.force:
            existing = [d for _, d in pairs if os.path.exists(d)]
            if existing:
                raise UsageError(f"{existing[0]} exists (and {len(existing) - 1} more); use --force to overwrite")
        from jaxcomp.codecs.l3c import load_codec
        from jaxcomp.codecs.pretrained import ModelLoadError
        from jaxcomp.train import CheckpointError
        try:
            codec = load_codec(args.checkpoint, tile=args.tile, window=args.window)
        except (ModelLoadError, CheckpointError, ValueError, OSError) as e:
            raise UsageError(f"cannot load the model: {e}") from e
    except UsageError as e:
        print(f"jaxcomp {args.command}: error: {e}", file=sys.stderr)
        return 2

    from tqdm.auto import tqdm

    from jaxcomp.coding import BitstreamError
    from jaxcomp.data import DataError

    failures = 0
    total_in = total_out = 0
    work = _compress_one if compress else _decompress_one
    bar = tqdm(pairs, disable=args.quiet or len(pairs) == 1, unit="file", desc=args.command)
    for src, dst in bar:
        try:
            pixels, nbytes = work(codec, src, dst)
        except (BitstreamError, DataError, ValueError, OSError) as e:
            failures += 1
            print(f"jaxcomp {args.command}: {src}: {e}", file=sys.stderr)
            continue
        total_in += pixels
        total_out += nbytes
        if not args.quiet and len(pairs) == 1:
            print(f"{src} -> {dst}: {nbytes} bytes, {8 * nbytes / pixels:.3f} bits per subpixel")
    if not args.quiet and len(pairs) > 1 and total_in:
        print(f"{len(pairs) - failures}/{len(pairs)} files, {8 * total_out / total_in:.3f} bits per subpixel")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
