"""Lossless codec benchmark: bits per subpixel, encode/decode time and a bit-exact check per image.

    python -m experiments.bench_codecs                           # the shipped photos of the test split
    python -m experiments.bench_codecs --split val               # ... of the validation split
    python -m experiments.bench_codecs --images /data/kodak --max-images 24 --out runs/kodak
    python -m experiments.bench_codecs --codecs png,webp,jpegxl-e9

bpsp = 8 * bytes / (H * W * 3). The total row is 8 * all bytes / all subpixels (larger images
weigh more); the mean column averages the per-image bpsp. Every decode is compared with the
original and the run stops with an error naming the codec and image if one is not bit-exact.

``--split`` (default ``test``) keeps the shipped photos of that role (``jaxcomp/data/samples/splits.json``;
``val`` for decisions, ``test`` for the reported table only, ``all`` for both), and with ``--held-out``
their originals in the folder; other folders are benchmarked whole.

Writes to ``--out`` (default runs/bench_codecs): ``results.md`` (summary + per-image table),
``results.csv`` (one row per image and codec, plus ``TOTAL`` rows) and ``bpsp.png`` (total bpsp
per codec). Learned codecs plug in through :func:`extra_codecs`, which returns more
:class:`jaxcomp.baselines.Codec` objects; one with an ``estimate`` (bits from a model's
likelihoods) gets an extra "estimated bpsp" column next to its real size.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from collections.abc import Sequence

import numpy as np

from experiments._images import add_image_arguments, iter_images, pyplot
from jaxcomp.baselines import (
    Codec,
    CodecError,
    NotLosslessError,
    assert_bit_exact,
    bits_per_subpixel,
    lossless_baselines,
)
from jaxcomp.codecs.l3c import DEFAULT_WINDOW
from jaxcomp.data import DataError
from jaxcomp.modelfile import ModelLoadError


def extra_codecs(args: argparse.Namespace) -> list[Codec]:
    """The learned codecs: L3C with the shipped model or ``--checkpoint`` (unless ``--no-l3c``).

    Its row reports the size of the real bitstream and, as "estimated", the model's
    cross-entropy (the training loss) for the same image.
    """
    if args.no_l3c:
        return []
    from jaxcomp.codecs.l3c import load_codec

    try:
        codec = load_codec(args.checkpoint, tile=args.tile, window=args.window, top_levels=args.top_levels)
    except ModelLoadError:
        raise
    except ValueError as e:  # a setting the codec refuses (tile, window, top levels): one line, no traceback
        raise CodecError(f"L3C: {e}") from e
    return [Codec("l3c", codec.compress, codec.decompress, estimate=codec.estimate_bits,
                  description=f"L3C ({args.checkpoint or 'shipped model'}), tiles of {args.tile}px, "
                              f"PMF window {args.window or 'all levels'}, top levels {codec.top_levels} "
                              f"(min side {codec.top_min_side})",
                  warmup=True)]


def build_codecs(args: argparse.Namespace) -> list[Codec]:
    """``lossless_baselines()`` plus :func:`extra_codecs`, filtered by ``--codecs``."""
    try:
        baselines, missing = lossless_baselines(), ""
    except ImportError as e:  # without imagecodecs: the learned codecs can still be measured, when named
        baselines, missing = [], f" ({e}; --codecs l3c needs none)"
    codecs = baselines + extra_codecs(args)
    if not args.codecs:
        if missing:
            raise CodecError(f"no baseline codecs{missing}")
        return codecs
    by_name = {c.name: c for c in codecs}
    wanted = [n.strip() for n in args.codecs.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in by_name]
    if unknown:
        raise CodecError(f"unknown codec(s) {', '.join(map(repr, unknown))}; available: {', '.join(by_name)}"
                         f"{missing}")
    return [by_name[n] for n in dict.fromkeys(wanted)]


def bench_image(codec: Codec, image: np.ndarray, name: str) -> dict:
    """Encodes, decodes and checks one image (``uint8 [H, W, 3]``); returns a result row."""
    if codec.warmup:
        codec.decode(codec.encode(image))
    t0 = time.perf_counter()
    data = codec.encode(image)
    enc_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    decoded = codec.decode(data)
    dec_s = time.perf_counter() - t0
    assert_bit_exact(codec.name, image, decoded, where=name)
    row = dict(image=name, height=image.shape[0], width=image.shape[1], codec=codec.name, bytes=len(data),
               bpsp=bits_per_subpixel(len(data), image.shape), encode_s=enc_s, decode_s=dec_s, exact=True)
    if codec.estimate is not None:
        bits = float(codec.estimate(image))
        row["estimated_bits"] = bits
        row["estimated_bpsp"] = bits / image.size
    return row


def summarize(rows: list[dict], codecs: Sequence[Codec]) -> list[dict]:
    """One ``TOTAL`` row per codec: pooled bpsp, mean per-image bpsp and summed times."""
    totals = []
    for c in codecs:
        rs = [r for r in rows if r["codec"] == c.name]
        subpixels = sum(r["height"] * r["width"] * 3 for r in rs)
        total = dict(image="TOTAL", height="", width="", codec=c.name, bytes=sum(r["bytes"] for r in rs),
                     bpsp=8.0 * sum(r["bytes"] for r in rs) / subpixels,
                     mean_bpsp=float(np.mean([r["bpsp"] for r in rs])),
                     encode_s=sum(r["encode_s"] for r in rs), decode_s=sum(r["decode_s"] for r in rs),
                     exact=all(r["exact"] for r in rs), images=len(rs), description=c.description)
        if c.estimate is not None:
            total["estimated_bits"] = sum(r["estimated_bits"] for r in rs)
            total["estimated_bpsp"] = total["estimated_bits"] / subpixels
        totals.append(total)
    return totals


def _md_table(header: list[str], lines: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cells) + " |" for cells in lines]
    return "\n".join(out)


def markdown(rows: list[dict], totals: list[dict], images: list[str], source: str) -> str:
    """Summary table (codecs sorted by total bpsp) and a per-image bpsp table."""
    has_est = any("estimated_bpsp" in t for t in totals)
    header = ["codec", "bpsp (total)", "bpsp (mean)"] + (["estimated bpsp"] if has_est else []) + [
        "encode s", "decode s", "bit-exact", "settings"]
    lines = []
    for t in sorted(totals, key=lambda t: t["bpsp"]):
        est = [f"{t['estimated_bpsp']:.4f}" if "estimated_bpsp" in t else ""] if has_est else []
        lines.append([t["codec"], f"{t['bpsp']:.4f}", f"{t['mean_bpsp']:.4f}"] + est + [
            f"{t['encode_s']:.3f}", f"{t['decode_s']:.3f}", "yes" if t["exact"] else "NO", t["description"]])
    codec_names = [t["codec"] for t in totals]
    per_image = []
    for name in images:
        by_codec = {r["codec"]: r for r in rows if r["image"] == name}
        first = next(iter(by_codec.values()))
        per_image.append([name, f"{first['width']}x{first['height']}"]
                         + [f"{by_codec[c]['bpsp']:.3f}" for c in codec_names])
    pixels = sum(r["height"] * r["width"] for r in rows if r["codec"] == codec_names[0])
    return "\n\n".join([
        "# Lossless codec benchmark",
        f"{len(images)} images from `{source}`, {pixels / 1e6:.2f} Mpixel; bpsp = 8 * bytes / (H * W * 3); "
        "total = pooled over all subpixels, mean = average of per-image bpsp. All decodes bit-exact.",
        _md_table(header, lines),
        "## bpsp per image",
        _md_table(["image", "size"] + codec_names, per_image),
    ]) + "\n"


def write_csv(path: str, rows: list[dict]) -> None:
    keys = ["image", "height", "width", "codec", "bytes", "bpsp", "mean_bpsp", "estimated_bits", "estimated_bpsp",
            "encode_s", "decode_s", "exact", "images", "description"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def plot_bpsp(path: str, totals: list[dict], title: str) -> None:
    """Bar chart of total bpsp per codec (sorted), estimated bpsp as a hatched bar where present."""
    plt = pyplot()
    totals = sorted(totals, key=lambda t: t["bpsp"])
    names = [t["codec"] for t in totals]
    xs = np.arange(len(names))
    has_est = any("estimated_bpsp" in t for t in totals)
    width = 0.4 if has_est else 0.7
    fig, ax = plt.subplots(figsize=(max(5.0, 0.8 * len(names) + 2), 4), constrained_layout=True)
    bars = ax.bar(xs - (width / 2 if has_est else 0), [t["bpsp"] for t in totals], width, label="actual")
    ax.bar_label(bars, fmt="%.3f", fontsize=8)
    if has_est:
        est = [t.get("estimated_bpsp", np.nan) for t in totals]
        ax.bar(xs + width / 2, est, width, hatch="//", alpha=0.6, label="estimated")
        ax.legend()
    ax.set_xticks(xs, names, rotation=30, ha="right")
    ax.set_ylabel("bits per subpixel (total)")
    ax.set_title(title)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_image_arguments(p, out=os.path.join("runs", "bench_codecs"))
    p.add_argument("--codecs", default="", help="comma-separated codec names (default: all available)")
    p.add_argument("--checkpoint", default=None, help="L3C model: exported .msgpack or training workdir "
                   "(default: the model shipped with jaxcomp)")
    p.add_argument("--tile", type=int, default=512, help="L3C tile size")
    p.add_argument("--window", type=int, default=DEFAULT_WINDOW,
                   help="L3C coding PMFs over WINDOW levels around the mean + escape (0: all 256 levels)")
    p.add_argument("--top-levels", type=int, default=None,
                   help="L3C: levels of the top scale's own pyramid coded by D(S) (default: 2 for models with "
                        "the subsampled pyramid, else 0 = the paper's uniform code)")
    p.add_argument("--no-l3c", action="store_true", help="baselines only")
    p.add_argument("--split", default="test", choices=["test", "val", "all"],
                   help="the shipped photos (or with --held-out their originals) of this role: test (the reported "
                        "table, default), val (for decisions) or all; other folders are used whole")
    return p.parse_args(argv)


def split_names(args: argparse.Namespace) -> set[str] | None:
    """File names of ``--split`` when the images are the shipped photos or (``--held-out``) their
    originals; ``None`` (every image) for other folders or ``--split all``."""
    if args.split == "all" or (args.images and not args.held_out):
        return None
    from jaxcomp.data import held_out_names

    return held_out_names(args.split)


def run(args: argparse.Namespace) -> tuple[list[dict], list[dict]]:
    """Benchmarks every selected codec on every image; returns (per-image rows, TOTAL rows)."""
    codecs = build_codecs(args)
    rows: list[dict] = []
    for name, image, progress in iter_images(args, split_names(args)):
        for codec in codecs:
            progress.set_postfix_str(f"{codec.name}: {name[:32]}", refresh=False)
            rows.append(bench_image(codec, image, name))
    return rows, summarize(rows, codecs)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        rows, totals = run(args)
    except (DataError, CodecError, ModelLoadError) as e:  # the command's input: exit 2, as bench_rd
        print(f"error: {e}", file=sys.stderr)
        return 2
    except NotLosslessError as e:  # a codec that does not give back its input
        print(f"error: {e}", file=sys.stderr)
        return 1
    images = list(dict.fromkeys(r["image"] for r in rows))
    source = args.images or "jaxcomp/data/samples"
    if split_names(args) is not None:
        source += f" ({args.split} split)"
    md = markdown(rows, totals, images, source)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(md)
    write_csv(os.path.join(args.out, "results.csv"), rows + totals)
    title = f"lossless, {len(images)} image{'s' if len(images) != 1 else ''} ({os.path.basename(source.rstrip('/'))})"
    plot_bpsp(os.path.join(args.out, "bpsp.png"), totals, title)
    print(md)
    print(f"wrote {args.out}/results.md, results.csv, bpsp.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
