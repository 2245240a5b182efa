"""Benchmark of the GAN extreme-compression codec (GC, Agustsson et al. 2019) against a learned
MSE/MS-SSIM codec and classical codecs at their lowest rates.

    python -m experiments.bench_gc                                   # shipped photos, shipped GC model
    python -m experiments.bench_gc --images ../shared/data/photos --held-out    # 768x512 crops
    python -m experiments.bench_gc --checkpoints c4,runs/gc_c8 --codecs jpeg,webp --max-images 4
    python -m experiments.bench_gc --checkpoints ''                  # no GC: CPM low + lowest rates only

At extreme rates (GC: well under 0.1 bpp) MSE-trained codecs blur and classical codecs break
into blocks or cannot get there at all, so besides PSNR and MS-SSIM the benchmark reports a
*distribution* distance that needs no downloaded weights: the sliced Wasserstein distance of
Laplacian-pyramid patches (Karras et al. 2018; :func:`jaxcomp.metrics.swd`) between the set of
originals and the set of a method's reconstructions (x 1e3, mean over pyramid levels; lower is
closer to the statistics of real photos).

Per image (``--crop WxH`` centre crop, default 768x512):

* GC at each ``--checkpoints`` entry (``default`` = the shipped model, a name like ``c4``, a
  ``.msgpack`` or a training workdir; loaded lazily from ``jaxcomp.codecs.gc.load_codec``): the
  real bpp = 8 * bytes / (H * W), the paper's bound ``codec.bound_bpp`` (C log2(5) / 256), and
  whether compressing and decompressing twice gives the same bytes and bit-identical pixels
  (``exact``). Timings are of the second, warm run.
* CPM ``--cpm`` (default ``low``, the lowest-rate MSE/MS-SSIM codec jaxcomp ships) at its own rate.
* Each classical codec (``--codecs``) (1) at its lowest reachable rate on that image (the
  smallest file over its highest-compression settings, :func:`lowest_rate`) and (2) at 2x GC's
  bpp on that image (the best setting with ``bpp <= 2 * gc_bpp``,
  :func:`jaxcomp.baselines.encode_at_bitrate`); when even its smallest file is larger, that file
  is used and the image counts as not reached.

Writes to ``--out`` (default runs/bench_gc): ``summary.md/.csv`` (per method: means over images
of bpp, PSNR, MS-SSIM, the set's SWD, and on how many images it reached its rate),
``swd.md/.csv`` (SWD per pyramid level), ``rows.csv`` (every encoding), ``results.md`` (all tables,
also printed), ``bpp_swd.png`` (bpp against SWD per method) and ``grids/<image>.png``: original |
GC | CPM low | the classical codec with the best MS-SSIM at <= 2x GC's bits, one row per GC model.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Sequence

import numpy as np

from experiments._images import add_image_arguments, iter_images, pyplot, results_title, write_results
from jaxcomp.baselines import CodecError, LossyCodec, RateMatch, bits_per_pixel, encode_at_bitrate, lossy_baselines
from jaxcomp.coding.container import BitstreamError
from jaxcomp.data import DataError, benchmark_image_paths
from jaxcomp.modelfile import ModelLoadError
from jaxcomp.reporting import write_table

DEFAULT_BASELINES = ("jpeg", "webp", "jpeg2000", "avif")
DEFAULT_CROP = "768x512"
LOWEST_WINDOW = 5  # qualities lo .. lo + 4 tried for the lowest rate (sizes wobble by bytes at the floor)
MIN_SIDE = 16  # MS-SSIM (5 scales) and two SWD levels
ROW_COLUMNS = ["image", "height", "width", "method", "kind", "codec", "param", "target", "target_bpp", "bpp",
               "bound_bpp", "ms_ssim", "psnr", "reachable", "exact", "encode_s", "decode_s"]


# ----------------------------------------------------------------------------- arguments


def parse_names(text: str) -> list[str]:
    """``'a, b,,a'`` -> ``['a', 'b']``: a comma-separated list, blanks and repeats dropped."""
    return list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_image_arguments(p, out=os.path.join("runs", "bench_gc"))
    p.set_defaults(crop=DEFAULT_CROP)
    p.add_argument("--checkpoints", default="default",
                   help="comma-separated GC models: 'default' (the shipped one), a name like c4, a .msgpack or a "
                        "training workdir; '' for none (then no rate-matched baselines)")
    p.add_argument("--cpm", default="low",
                   help="the CPM operating point (low/med/high, .msgpack, workdir); '' for none")
    p.add_argument("--codecs", default=",".join(DEFAULT_BASELINES),
                   help="comma-separated classical codecs (known: jpeg, webp, jpeg2000, avif, jpegxl; '' for none)")
    p.add_argument("--rate-factor", type=float, default=2.0,
                   help="classical codecs are matched to this many times GC's bpp on each image")
    p.add_argument("--swd-patches", type=int, default=128, help="SWD: 7x7 neighbourhoods per image and level")
    p.add_argument("--swd-seed", type=int, default=0, help="SWD: seed of positions and directions")
    return p.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    """Errors a run would otherwise meet only after loading models: :class:`DataError` /
    :class:`CodecError` with a message."""
    benchmark_image_paths(args.images)  # a missing or empty folder
    if args.max_images is not None and args.max_images < 1:
        raise DataError(f"--max-images must be >= 1, got {args.max_images}")
    if not args.rate_factor > 0:
        raise CodecError(f"--rate-factor must be > 0, got {args.rate_factor}")
    if args.swd_patches < 1:
        raise CodecError(f"--swd-patches must be >= 1, got {args.swd_patches}")


# ----------------------------------------------------------------------------- codecs


def gc_display_name(checkpoint: str) -> str:
    """``'default'`` -> ``'GC'``; ``'runs/gc_c8/'`` -> ``'GC gc_c8'``; ``'c4.msgpack'`` -> ``'GC c4'``."""
    if checkpoint == "default":
        return "GC"
    return "GC " + (os.path.splitext(os.path.basename(os.path.normpath(checkpoint)))[0] or checkpoint)


def load_gc_codecs(checkpoints: Sequence[str]) -> list[tuple[str, object]]:
    """``(display name, codec)`` per checkpoint; a codec has ``compress``, ``decompress`` and
    ``bound_bpp``. Imported lazily: the GC codec is optional for the rest of the script."""
    if not checkpoints:
        return []
    try:
        from jaxcomp.codecs.gc import load_codec
    except ImportError as e:
        raise CodecError(f"the GC codec is not available (jaxcomp.codecs.gc.load_codec: {e}); "
                         "run with --checkpoints '' for the other methods only") from e
    out, names = [], set()
    for ckpt in checkpoints:
        name = gc_display_name(ckpt)
        while name in names:
            name += "'"
        names.add(name)
        out.append((name, _load(load_codec, None if ckpt == "default" else ckpt, "--checkpoints")))
    return out


def _load(load_codec, checkpoint: str | None, option: str):
    """``load_codec(checkpoint)``; a missing or unreadable model is a :class:`CodecError` naming ``option``."""
    try:
        return load_codec(checkpoint)
    except ModelLoadError:
        raise
    except (OSError, ValueError) as e:
        raise CodecError(f"{option} {checkpoint or 'default'}: {e}") from e


def load_cpm_codec(checkpoint: str) -> tuple[str, object] | None:
    """``('CPM <point>', codec)`` for ``--cpm``, or ``None`` for ``''``."""
    if not checkpoint:
        return None
    from jaxcomp.codecs.cpm import load_codec

    name = os.path.splitext(os.path.basename(os.path.normpath(checkpoint)))[0] or checkpoint
    return f"CPM {name}", _load(load_codec, checkpoint, "--cpm")


def lowest_rate(codec: LossyCodec, image: np.ndarray, window: int = LOWEST_WINDOW) -> RateMatch:
    """The smallest encoding of ``image`` (``uint8 [H, W, 3]``) the codec makes: its lowest rate.

    For a ``"quality"`` knob, the smallest file over the ``window`` lowest integer qualities of
    ``param_range`` (at the floor sizes wobble by a few bytes; on a tie the higher quality wins);
    for a ``"bpsp"`` knob (a target rate, JPEG 2000), the smallest over targets from the range's
    low end down by factors of 10, where the codec's rate control falls back to its smallest
    encoding. ``reachable`` is always ``True`` (it is the codec's own floor).
    """
    if codec.param == "quality":
        lo, hi = int(math.ceil(codec.param_range[0])), int(math.floor(codec.param_range[1]))
        params = list(range(lo, min(lo + window, hi + 1)))
    elif codec.param == "bpsp":
        params = [codec.param_range[0] * 10.0 ** -k for k in range(window)]
    else:
        raise CodecError(f"codec {codec.name!r}: unknown knob {codec.param!r}")
    best = None
    for param in params:
        data = bytes(codec.encode(image, param))
        better_tie = codec.param == "quality" and best is not None and len(data) == len(best[0]) and param > best[1]
        if best is None or len(data) < len(best[0]) or better_tie:
            best = (data, float(param))
    data, param = best
    return RateMatch(data, param, bits_per_pixel(len(data), image.shape), True)


# ----------------------------------------------------------------------------- one image


def _timed(fn, *a):
    t0 = time.perf_counter()
    result = fn(*a)
    return result, time.perf_counter() - t0


def bench_image(image: np.ndarray, name: str, gcs: Sequence[tuple[str, object]], cpm: tuple[str, object] | None,
                baselines: Sequence[LossyCodec], rate_factor: float = 2.0) -> tuple[list[dict], list[np.ndarray]]:
    """Every encoding of one image (``uint8 [H, W, 3]``): rows (without quality metrics) and the
    decoded images, ``uint8 [H, W, 3]``, in the same order."""
    h, w = image.shape[:2]
    base = dict(image=name, height=h, width=w)
    rows, decoded = [], []

    def add(row: dict, pixels: np.ndarray) -> None:
        pixels = np.asarray(pixels)
        if pixels.shape != image.shape or pixels.dtype != np.uint8:
            raise CodecError(f"{row['method']} on {name}: decoded {pixels.dtype}{list(pixels.shape)}, "
                             f"expected uint8{list(image.shape)}")
        rows.append(dict(base, **row))
        decoded.append(pixels)

    targets = []
    for method, codec in gcs:
        first = codec.compress(image)  # also the warm-up: compiles this shape
        first_pixels = codec.decompress(first)
        data, enc_s = _timed(codec.compress, image)
        pixels, dec_s = _timed(codec.decompress, data)
        exact = bytes(data) == bytes(first) and np.array_equal(pixels, first_pixels)
        bpp = bits_per_pixel(len(data), image.shape)
        add(dict(method=method, kind="gc", codec=method, bpp=bpp, bound_bpp=float(codec.bound_bpp), exact=exact,
                 reachable=True, encode_s=enc_s, decode_s=dec_s), pixels)
        targets.append((method, bpp))
    if cpm is not None:
        method, codec = cpm
        data, enc_s = _timed(codec.compress, image)
        pixels, dec_s = _timed(codec.decompress, data)
        add(dict(method=method, kind="cpm", codec=method, bpp=bits_per_pixel(len(data), image.shape),
                 reachable=True, encode_s=enc_s, decode_s=dec_s), pixels)
    for codec in baselines:
        m = lowest_rate(codec, image)
        add(dict(method=f"{codec.name} (lowest)", kind="lowest", codec=codec.name, param=m.param, bpp=m.bpp,
                 reachable=True), codec.decode(m.data))
        for target, bpp in targets:
            m = encode_at_bitrate(codec, image, rate_factor * bpp)
            add(dict(method=f"{codec.name} (<= {rate_factor:g}x {target})", kind="matched", codec=codec.name,
                     param=m.param, target=target, target_bpp=rate_factor * bpp, bpp=m.bpp, reachable=m.reachable),
                codec.decode(m.data))
    return rows, decoded


def grid_panels(image: np.ndarray, rows: Sequence[dict], decoded: Sequence[np.ndarray],
                rate_factor: float = 2.0) -> list[list[tuple[str, np.ndarray]]]:
    """The panels of one image's grid: per GC model a row original | GC | CPM | the classical codec
    with the highest MS-SSIM among those within ``rate_factor`` x GC's bits (if none is, the
    smallest of their files, labelled over budget). Without GC, one row: original | CPM | each
    classical codec at its lowest rate. ``rows`` need ``ms_ssim``."""
    label = lambda r: f"{r['method']}: {r['bpp']:.3f} bpp"  # noqa: E731
    entries = list(zip(rows, decoded))
    original = ("original", image)
    cpm = [(label(r), d) for r, d in entries if r["kind"] == "cpm"]
    gcs = [(r, d) for r, d in entries if r["kind"] == "gc"]
    if not gcs:
        return [[original] + cpm + [(label(r), d) for r, d in entries if r["kind"] == "lowest"]]
    out = []
    for g, pixels in gcs:
        row = [original, (label(g), pixels)] + cpm
        matched = [(r, d) for r, d in entries if r["kind"] == "matched" and r["target"] == g["method"]]
        fits = [(r, d) for r, d in matched if r["reachable"]]
        if fits:
            r, d = max(fits, key=lambda e: e[0]["ms_ssim"])
            row.append((f"best classical, {r['codec']}: {r['bpp']:.3f} bpp", d))
        elif matched:
            r, d = min(matched, key=lambda e: e[0]["bpp"])
            row.append((f"{r['codec']} over budget: {r['bpp']:.3f} > {rate_factor:g}x{g['bpp']:.3f} bpp", d))
        out.append(row)
    return out


def write_grid(path: str, panels: Sequence[Sequence[tuple[str, np.ndarray]]], pad: int = 4) -> None:
    """A PNG of labelled images: ``panels[row][col] = (label, uint8 [H, W, 3])``, each under a
    white strip with its label (PIL's default font, scaled with the panels); rows may have different lengths."""
    from PIL import Image, ImageDraw, ImageFont

    if not panels or not any(panels):
        raise ValueError("write_grid: no panels")
    cell_w = max(im.shape[1] for row in panels for _, im in row)
    size = int(np.clip(cell_w // 40, 10, 24))  # readable on 768 px panels, 16 px strips on small ones
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        font = ImageFont.load_default()
    strip = size + 6
    cell_h = max(im.shape[0] for row in panels for _, im in row) + strip
    cols = max(len(row) for row in panels)
    canvas = Image.new("RGB", (cols * cell_w + (cols + 1) * pad, len(panels) * cell_h + (len(panels) + 1) * pad),
                       "white")
    draw = ImageDraw.Draw(canvas)
    for i, row in enumerate(panels):
        for j, (text, im) in enumerate(row):
            x, y = pad + j * (cell_w + pad), pad + i * (cell_h + pad)
            draw.text((x + 2, y + 2), text, fill="black", font=font)
            canvas.paste(Image.fromarray(np.asarray(im, np.uint8)), (x, y + strip))
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    canvas.save(path)


# ----------------------------------------------------------------------------- the set


def run(args: argparse.Namespace) -> tuple[list[dict], dict[str, dict]]:
    """All rows (with MS-SSIM and PSNR) and ``{method: swd dict}``; writes the grids on the way."""
    from experiments.bench_rd import quality_metrics
    from jaxcomp.metrics import swd

    check_args(args)
    names = parse_names(args.codecs)
    baselines = lossy_baselines(names) if names else []
    gcs = load_gc_codecs(parse_names(args.checkpoints))
    cpm = load_cpm_codec(args.cpm.strip())
    if not gcs and cpm is None and not baselines:
        raise CodecError("nothing to benchmark: no GC checkpoints, no CPM and no classical codecs")
    rows: list[dict] = []
    originals: list[np.ndarray] = []
    reconstructions: dict[str, list[np.ndarray]] = {}
    for name, image, progress in iter_images(args):
        progress.set_postfix_str(name[:40], refresh=False)
        if min(image.shape[:2]) < MIN_SIDE:
            raise DataError(f"{name}: {image.shape[0]}x{image.shape[1]} is too small (at least {MIN_SIDE} px a side)")
        image_rows, decoded = bench_image(image, name, gcs, cpm, baselines, args.rate_factor)
        for row, (ms, ps) in zip(image_rows, quality_metrics(image, decoded)):
            row.update(ms_ssim=ms, psnr=ps)
        for row, pixels in zip(image_rows, decoded):
            reconstructions.setdefault(row["method"], []).append(pixels)
        originals.append(image)
        rows += image_rows
        stem = os.path.splitext(name)[0]
        write_grid(os.path.join(args.out, "grids", stem + ".png"),
                   grid_panels(image, image_rows, decoded, args.rate_factor))
    swds = {method: swd(originals, recs, patches_per_image=args.swd_patches, seed=args.swd_seed)
            for method, recs in reconstructions.items()}
    return rows, swds


def summarize(rows: Sequence[dict], swds: dict[str, dict]) -> list[dict]:
    """One row per method: means over images, the set's SWD, and counts."""
    out = []
    for method in dict.fromkeys(r["method"] for r in rows):
        rs = [r for r in rows if r["method"] == method]
        n = len(rs)
        row = dict(method=method, kind=rs[0]["kind"], images=n,
                   **{k: float(np.mean([r[k] for r in rs])) for k in ("bpp", "psnr", "ms_ssim")},
                   swd=swds[method]["mean"] if method in swds else float("nan"))
        if rs[0]["kind"] == "gc":
            row.update(bound_bpp=float(np.mean([r["bound_bpp"] for r in rs])),
                       within_bound=f"{sum(r['bpp'] <= r['bound_bpp'] for r in rs)}/{n}",
                       exact=f"{sum(bool(r['exact']) for r in rs)}/{n}")
        if rs[0]["kind"] == "matched":
            row.update(target_bpp=float(np.mean([r["target_bpp"] for r in rs])),
                       reached=f"{sum(bool(r['reachable']) for r in rs)}/{n}")
        out.append(row)
    return out


def swd_table(swds: dict[str, dict]) -> list[dict]:
    return [dict(method=m, **{k: v for k, v in s.items()}) for m, s in swds.items()]


def plot_bpp_swd(path: str, summary: Sequence[dict], title: str) -> None:
    """Mean bpp (log axis) against the set's SWD, one marker per method."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 4.8), constrained_layout=True)
    styles = dict(gc=("*", 14), cpm=("s", 8), lowest=("o", 7), matched=("x", 8))
    colours: dict[str, str] = {}
    for s in summary:
        marker, size = styles.get(s["kind"], ("o", 7))
        key = s["method"].split(" (")[0] if s["kind"] in ("lowest", "matched") else s["method"]
        (pt,) = ax.plot(s["bpp"], s["swd"], marker, ms=size, color=colours.get(key), label=s["method"],
                        linestyle="none")
        colours.setdefault(key, pt.get_color())
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("bits per pixel (real files, mean over images)")
    ax.set_ylabel("SWD x 1e3 (originals vs reconstructions; lower = more realistic)")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="best")
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(rows: list[dict], swds: dict[str, dict], args: argparse.Namespace) -> str:
    """Writes the tables and the plot to ``args.out``; returns the Markdown of ``results.md``."""
    out = args.out
    images = list(dict.fromkeys(r["image"] for r in rows))
    source = args.images or "jaxcomp/data/samples"
    summary = summarize(rows, swds)
    write_table(rows, out, "rows", columns=ROW_COLUMNS)
    os.remove(os.path.join(out, "rows.md"))  # every encoding: CSV only
    columns = list(dict.fromkeys(k for r in summary for k in r))
    parts = [
        "# GC benchmark: extreme rates",
        f"{len(images)} images from `{source}`"
        + (f", centre crops of at most {args.crop} px" if args.crop != "0" else "")
        + (", held-out images only" if args.held_out else "")
        + "; bpp = 8 * bytes / (H * W) of real files; MS-SSIM and PSNR over RGB, means over images; SWD x 1e3 of "
        f"7x7 Laplacian-pyramid patches ({args.swd_patches} per image and level, seed {args.swd_seed}), the set of "
        f"originals against the set of reconstructions, mean over levels. Classical codecs at their lowest rate, and "
        f"at <= {args.rate_factor:g}x GC's bpp per image (`reached`: on how many images they got there; elsewhere "
        "their smallest file is used).",
        "## Means over images",
        write_table(summary, out, "summary", columns=columns),
        "## SWD per pyramid level (level0 = finest detail)",
        write_table(swd_table(swds), out, "swd"),
    ]
    title = results_title(images, source)
    plot_bpp_swd(os.path.join(out, "bpp_swd.png"), summary, title)
    return write_results(out, parts)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        rows, swds = run(args)
    except (DataError, CodecError, ModelLoadError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BitstreamError as e:  # a learned codec that cannot decode its own bitstream
        print(f"error: {e}", file=sys.stderr)
        return 1
    md = report(rows, swds, args)
    print(md)
    print(f"wrote {args.out}/results.md, summary and swd (.md/.csv), rows.csv, bpp_swd.png, grids/*.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
