"""The ``jaxcomp`` command: image compression with the learned codecs.

    jaxcomp compress photo.png photo.jxc          # lossless, the shipped L3C model
    jaxcomp compress photos/ compressed/          # every image of a folder (progress bar)
    jaxcomp decompress compressed/ restored/      # every .jxc of a folder, written as PNG
    jaxcomp compress --checkpoint runs/l3c_cpu photo.png photo.jxc   # a model of your own
    jaxcomp compress --top-levels 0 photo.png photo.jxc             # L3C's top scale coded uniformly (the paper)
    jaxcomp compress --codec cpm photo.png photo.jxc                 # lossy, context model (med rate)
    jaxcomp compress --codec cpm --checkpoint low photo.png photo.jxc  # shipped low / med / high
    jaxcomp compress --codec cpm --refine 100 photo.png photo.jxc     # latent refined per image
    jaxcomp compress --codec gc photo.png photo.jxc                  # generative, ~0.03 bpp (GC, C=4)
    jaxcomp compress --codec dplc digit.png digit.jxc                # distribution-preserving (DPLC), 32x32 gray

Decompression reads the codec from the file; a file written with the shipped L3C model or one
shipped before it (``jaxcomp.codecs.pretrained.PREVIOUS_L3C``), or with one of the shipped
context-model operating points or GC or DPLC models, is decoded with the matching one (else give
--checkpoint). A DPLC file stores the seed of its decoder's noise, so it always decodes to
the same image.
Exit status: 0 all files done; 1 some files failed (each named on stderr, the others are
done); 2 the command itself is wrong (bad arguments, missing input, unusable checkpoint).
Existing outputs are never overwritten unless --force is given, and an output that is its own
input never (the source would be lost); decompress writes PNG files, named .png.

Compiled model functions are kept in a persistent XLA compilation cache (default
``$JAXCOMP_CACHE_DIR``, ``$JAX_COMPILATION_CACHE_DIR`` or ``~/.cache/jaxcomp/xla``;
``--cache-dir ""`` turns it off, though JAX itself still reads ``$JAX_COMPILATION_CACHE_DIR`` if it is
set), so only the first call for a model and tile shape pays the
compilation, most of a cold call's time. The L3C coder computes every tile at one of a few
bucket shapes (``jaxcomp.codecs.l3c.bucket_sides``), so a folder of differently sized photos
compiles once per bucket, not once per image size, and keeps its compiled functions in
``jaxcomp-executables/`` inside the folder, which later calls load without tracing the model
(``jaxcomp.xla.CachedFunction``). A cached function is the same compiled program, so streams
decode bit-exactly either way. Delete the folder to clear it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import numpy as np

from jaxcomp.data.images import IMAGE_EXTENSIONS
from jaxcomp.files import write_atomic
from jaxcomp.xla import default_cache_dir, enable_compilation_cache

SUFFIX = ".jxc"


class UsageError(Exception):
    pass


def _check_outputs(pairs: list[tuple[str, str]], force: bool, compress: bool) -> None:
    """Refuses (:class:`UsageError`) outputs that would overwrite an existing file without ``force``,
    overwrite their own input (even with ``force``: the source would be lost), land in a folder
    that does not exist, or, decompressing, be named other than ``.png`` (the data written is PNG)."""
    existing = []
    for src, dst in pairs:
        if os.path.exists(dst):
            if os.path.samefile(src, dst):
                raise UsageError(f"{dst} is the input itself; writing it would destroy the input (give "
                                 f"another output path)")
            existing.append(dst)
        parent = os.path.dirname(dst) or "."
        if not os.path.isdir(parent):
            raise UsageError(f"the output folder {parent} does not exist")
        if not compress and not dst.lower().endswith(".png"):
            raise UsageError(f"{dst}: decompress writes PNG files; name the output .png (or give a folder)")
    if existing and not force:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise UsageError(f"{existing[0]} exists{more}; use --force to overwrite")


def _pairs(src: str, dst: str, compress: bool) -> list[tuple[str, str]]:
    if os.path.isdir(src):
        ext = IMAGE_EXTENSIONS if compress else (SUFFIX,)
        names = sorted(f for f in os.listdir(src) if f.lower().endswith(ext))
        if not names:
            raise UsageError(f"no {'images' if compress else SUFFIX + ' files'} in folder {src}")
        if os.path.exists(dst) and not os.path.isdir(dst):
            raise UsageError(f"{dst} exists and is not a folder")
        new_ext = SUFFIX if compress else ".png"
        stems: dict[str, str] = {}
        for n in names:  # a.png and a.bmp would both become a.jxc: the second would replace the first
            stem = os.path.splitext(n)[0]
            if stem in stems:
                raise UsageError(f"{stems[stem]} and {n} in {src} would both be written to {stem}{new_ext}; "
                                 f"rename one of them")
            stems[stem] = n
        os.makedirs(dst, exist_ok=True)
        return [(os.path.join(src, n), os.path.join(dst, os.path.splitext(n)[0] + new_ext)) for n in names]
    if not os.path.exists(src):
        raise UsageError(f"input not found: {src}")
    if os.path.isdir(dst):
        new_ext = SUFFIX if compress else ".png"
        dst = os.path.join(dst, os.path.splitext(os.path.basename(src))[0] + new_ext)
    return [(src, dst)]


class _Codecs:
    """Loads codecs on first use: ``get(name, checkpoint)``; ``for_stream(data)`` picks the codec
    named in a bitstream's header and, for shipped context models, the matching operating point."""

    def __init__(self, checkpoint: str | None, tile: int | None, window: int | None, refine: int = 0,
                 progress: bool = False, top_levels: int | None = None):
        self.checkpoint, self.tile, self.window, self.top_levels = checkpoint, tile, window, top_levels
        self.refine, self.progress = refine, progress
        self._cache: dict = {}

    def get(self, name: str, checkpoint: str | None):
        key = (name, checkpoint)
        if key not in self._cache:
            from jaxcomp.modelfile import ModelLoadError
            from jaxcomp.train import CheckpointError
            try:
                if name == "l3c":
                    from jaxcomp.codecs.l3c import DEFAULT_WINDOW, load_codec
                    window = DEFAULT_WINDOW if self.window is None else self.window
                    codec = load_codec(checkpoint, tile=self.tile or 512, window=window,
                                       top_levels=self.top_levels)
                elif name == "gc":
                    from jaxcomp.codecs.gc import load_codec
                    codec = load_codec(checkpoint)
                elif name == "dplc":
                    from jaxcomp.codecs.dplc.codec import load_codec
                    codec = load_codec(checkpoint)
                else:
                    from jaxcomp.codecs.cpm import load_codec
                    codec = load_codec(checkpoint, tile=self.tile or 1024, refine=self.refine,
                                       progress=self.progress)
            except (ModelLoadError, CheckpointError, ValueError, OSError) as e:
                raise UsageError(f"cannot load the {name} model: {e}") from e
            self._cache[key] = codec
        return self._cache[key]

    def for_stream(self, data: bytes):
        from jaxcomp.coding import BitstreamError, peek

        name, model = peek(data)
        if self.checkpoint is not None:
            return self.get(name, self.checkpoint)
        if name == "l3c":  # the shipped model, then those shipped before it (their streams still decode)
            from jaxcomp.codecs.pretrained import shipped_l3c_models

            candidates = [None] + shipped_l3c_models()[1:]
        else:
            if name == "gc":
                from jaxcomp.codecs.gc import CHECKPOINTS as points
                from jaxcomp.codecs.gc import shipped_model
            elif name == "dplc":
                from jaxcomp.codecs.dplc.codec import CODEC_MODELS as points
                from jaxcomp.codecs.dplc.codec import shipped_model
            else:
                from jaxcomp.codecs.cpm import OPERATING_POINTS as points
                from jaxcomp.codecs.cpm import shipped_model
            candidates = [point for point in points if os.path.exists(shipped_model(point))]
        for point in candidates:
            try:
                codec = self.get(name, point)
            except UsageError:
                if name == "l3c" and point is not None:  # an earlier model's file, unreadable: skip it
                    continue
                raise
            if codec.fingerprint == model:
                return codec
        if name == "l3c":  # the shipped model's own error: a corrupt stream, or another model wrote it
            return self.get(name, None)
        raise BitstreamError(f"written with a {name} model that is not shipped with jaxcomp; "
                             "give the model it was compressed with (--checkpoint)")


LOSSY = ("cpm", "gc", "dplc")  # codecs whose rate is reported per pixel


def _counts(image: np.ndarray, nbytes: int) -> tuple[int, int, int, bool]:
    """(subpixels coded, pixels, bytes, grayscale?) of an image and its file: a grayscale image counts 3
    subpixels a pixel, the 3 equal channels L3C codes it as, so its bits per subpixel compare with RGB ones."""
    pixels = image.shape[0] * image.shape[1]
    return 3 * pixels if image.ndim == 2 else image.size, pixels, nbytes, image.ndim == 2


def _compress_one(codec, src: str, dst: str) -> tuple[int, int, int, bool]:
    """:func:`_counts` of the image compressed from ``src`` into ``dst``."""
    from jaxcomp.data import load_image

    image = load_image(src, keep_gray=True)  # grayscale stays [H, W] and decodes as grayscale
    if hasattr(codec, "adapt"):  # DPLC: the model's channels (gray from equal RGB channels, RGB from gray)
        image = codec.adapt(image)
    data = codec.compress(image)
    write_atomic(dst, data)
    return _counts(image, len(data))


def _decompress_one(codecs: _Codecs, src: str, dst: str) -> tuple[int, int, int, bool, bool]:
    """As :func:`_compress_one`, for the image decoded from ``src``, and whether its codec is lossy
    (its rate is then reported per pixel)."""
    import io

    from PIL import Image

    from jaxcomp.coding import peek

    with open(src, "rb") as f:
        data = f.read()
    image = codecs.for_stream(data).decompress(data)
    if image.ndim == 3 and image.shape[2] == 1:  # a grayscale DPLC file written from [H, W, 1]
        image = image[..., 0]
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    write_atomic(dst, buf.getvalue())
    return (*_counts(image, len(data)), peek(data)[0] in LOSSY)


def _stream_codec(path: str) -> str:
    """The codec named in a file's header (``"l3c"`` if it is unreadable: decoding reports that)."""
    from jaxcomp.coding import BitstreamError, peek

    try:
        with open(path, "rb") as f:
            return peek(f.read(64))[0]
    except (BitstreamError, OSError):
        return "l3c"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jaxcomp", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_ in (("compress", "image file or folder -> .jxc"), ("decompress", ".jxc file or folder -> PNG")):
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("input", help="a file, or a folder (every image / every .jxc file in it)")
        p.add_argument("output", help="for a file input: a file in an existing folder (decompress: a .png), or an "
                                      "existing folder to write <input name>.jxc / .png into; for a folder input: a "
                                      "folder (made if missing)")
        p.add_argument("--checkpoint", default=None,
                       help="model: exported .msgpack or a training workdir; for cpm also low, med or high, "
                            "for gc c4 (shipped; c2 and c8 once trained and exported, docs/gc.md), for dplc "
                            "a stage-2 model (default: the shipped L3C model / the shipped med-rate context "
                            "model / gc c4 / dplc mnist)")
        if name == "compress":
            p.add_argument("--codec", default="l3c", choices=["l3c", "cpm", "gc", "dplc"],
                           help="l3c: lossless (default); cpm: lossy, 3D context model (CVPR'18); "
                                "gc: generative, extreme rates (ICCV'19); dplc: distribution-preserving, "
                                "fixed-size images (NeurIPS'18)")
            p.add_argument("--top-levels", type=int, default=None, metavar="R",
                           help="l3c: code the top scale through up to R levels of its own subsampled pyramid "
                                "(fewer on small tiles; default 2 for models with the subsampled pyramid, such "
                                "as the shipped one; 0: 8 uniform "
                                "bits per subpixel, the paper's code; decoding reads it from the file)")
            p.add_argument("--refine", type=int, default=0, metavar="STEPS",
                           help="cpm: optimise each image's latent for STEPS steps under the model's training "
                                "loss before coding (slower encoding, better rate-distortion; decoding unchanged)")
            p.add_argument("--tile", type=int, default=None,
                           help="tile size in pixels (default: 512 for l3c, 1024 for cpm; decoding reads it "
                                "from the file)")
            p.add_argument("--window", type=int, default=None,
                           help="l3c: coding PMFs over WINDOW levels around the model's mean plus an escape "
                                "(default 64; 0 or 256: all 256 levels; decoding reads it from the file)")
        p.add_argument("--cache-dir", default=None,
                       help="persistent XLA compilation cache (default: $JAXCOMP_CACHE_DIR, "
                            "$JAX_COMPILATION_CACHE_DIR or ~/.cache/jaxcomp/xla; \"\" to turn it off, though JAX "
                            "itself still reads $JAX_COMPILATION_CACHE_DIR if it is set)")
        p.add_argument("--force", action="store_true", help="overwrite existing outputs")
        p.add_argument("--quiet", action="store_true", help="no progress bar and no per-file summary lines")
    args = parser.parse_args(argv)
    compress = args.command == "compress"
    try:
        pairs = _pairs(args.input, args.output, compress)
        _check_outputs(pairs, args.force, compress)
        refine = getattr(args, "refine", 0)
        if refine < 0:
            raise UsageError(f"--refine must be >= 0 steps, got {refine}")
        if refine and args.codec != "cpm":
            raise UsageError("--refine applies to the lossy codec only (--codec cpm)")
        top_levels = getattr(args, "top_levels", None)
        if top_levels is not None and args.codec != "l3c":
            raise UsageError("--top-levels applies to the lossless codec only (--codec l3c)")
        if compress and args.window is not None and args.codec != "l3c":
            raise UsageError("--window applies to the lossless codec only (--codec l3c)")
        if compress and args.tile is not None and args.tile <= 0:
            raise UsageError(f"--tile must be > 0 pixels, got {args.tile}")
        if compress and args.tile is not None and args.codec not in ("l3c", "cpm"):
            raise UsageError(f"--tile applies to --codec l3c and cpm only (--codec {args.codec} codes whole images)")
        enable_compilation_cache(default_cache_dir() if args.cache_dir is None else args.cache_dir)
        codecs = _Codecs(args.checkpoint, getattr(args, "tile", None), getattr(args, "window", None), refine,
                         progress=not args.quiet and len(pairs) == 1, top_levels=top_levels)
        if compress:
            codec = codecs.get(args.codec, args.checkpoint)
        elif args.checkpoint is not None:
            codecs.get(_stream_codec(pairs[0][0]), args.checkpoint)  # an unusable model is a usage error
    except UsageError as e:
        print(f"jaxcomp {args.command}: error: {e}", file=sys.stderr)
        return 2

    from flax.errors import ScopeParamNotFoundError, ScopeParamShapeError
    from tqdm.auto import tqdm

    from jaxcomp.coding import BitstreamError
    from jaxcomp.data import DataError

    failures = 0
    total_in = total_px = total_out = 0
    any_lossy = False

    def rate(nbytes: int, subpixels: int, pixels: int, gray: bool = False, lossy: bool = False) -> str:
        if lossy:
            return f"{8 * nbytes / pixels:.4f} bits per pixel"
        if gray:  # what the codec coded: 3 equal channels
            return (f"{8 * nbytes / subpixels:.3f} bits per subpixel (a grayscale image, coded as 3 equal "
                    f"channels: {8 * nbytes / pixels:.3f} bits per gray pixel)")
        return f"{8 * nbytes / subpixels:.3f} bits per subpixel"

    bar = tqdm(pairs, disable=args.quiet or len(pairs) == 1, unit="file", desc=args.command)
    for src, dst in bar:
        try:
            if compress:
                subpixels, pixels, nbytes, gray = _compress_one(codec, src, dst)
                lossy = args.codec in LOSSY
            else:
                subpixels, pixels, nbytes, gray, lossy = _decompress_one(codecs, src, dst)
        except (UsageError, BitstreamError, DataError, ValueError, OSError) as e:
            failures += 1
            message = str(e)  # load_image's errors already start with the path
            print(f"jaxcomp {args.command}: {message if message.startswith(src + ':') else f'{src}: {message}'}",
                  file=sys.stderr)
            continue
        except (ScopeParamNotFoundError, ScopeParamShapeError) as e:  # every file would fail the same way
            print(f"jaxcomp {args.command}: error: the model's parameters do not fit the architecture its .json "
                  f"describes (a damaged or edited .json?): {str(e).splitlines()[0]}", file=sys.stderr)
            return 2
        total_in += subpixels
        total_px += pixels
        total_out += nbytes
        if not args.quiet and len(pairs) == 1:
            print(f"{src} -> {dst}: {nbytes} bytes, {rate(nbytes, subpixels, pixels, gray, lossy)}")
        any_lossy = any_lossy or lossy
    if not args.quiet and len(pairs) > 1 and total_in:  # per pixel if any file is lossy
        print(f"{len(pairs) - failures}/{len(pairs)} files, {rate(total_out, total_in, total_px, lossy=any_lossy)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
