"""Rate-distortion benchmark: learned lossy codecs against JPEG, WebP, JPEG 2000 and AVIF.

    python -m experiments.bench_rd                               # the shipped photos and CPM models
    python -m experiments.bench_rd --images /data/kodak --out runs/rd_kodak
    python -m experiments.bench_rd --checkpoints runs/cpm_a/model.msgpack runs/cpm_b --crop 256
    python -m experiments.bench_rd --checkpoints --codecs jpeg,webp   # baselines' curves only
    python -m experiments.bench_rd --refine 0,100                # also with 100 steps of latent refinement

Rates are real bitstreams: bpp = 8 * bytes / (H * W). Quality is MS-SSIM (Google's msssim.py
definition, ``jaxcomp.metrics.ms_ssim``) and PSNR over RGB, both of the decoded image.

* Learned operating points (``--checkpoints``, default: whichever of the shipped
  ``cpm_low/med/high.msgpack`` exist): per image, the real bpp, the model's estimate (its
  cross-entropy), MS-SSIM, PSNR, encode/decode seconds (after one untimed warm-up run per image,
  which compiles the new shape), and whether ``decompress(compress(x)) == reconstruct(x)``.
* Baselines: an RD curve over a grid of each codec's knob (``--qualities``; ``--bpsp`` for
  JPEG 2000), and for every learned point the baseline's encoding *at matched bitrate*: the best
  one not above the learned codec's real bpp on that image
  (:func:`jaxcomp.baselines.encode_at_bitrate`). Where even the baseline's lowest setting is
  larger, its smallest encoding is used and counted as "over budget".

Writes to ``--out`` (default runs/bench_rd): ``summary.md/.csv`` (means over images per learned
point, and per baseline at its matched bitrate, with "learned MS-SSIM higher on k/N images"),
``per_image.md/.csv``, ``curves.md/.csv`` (baselines' mean bpp / MS-SSIM / PSNR per knob setting),
``rows.csv`` (every encoding measured), ``results.md`` (all tables, also printed) and the plots
``rd_msssim.png`` and ``rd_psnr.png``.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from collections.abc import Sequence

import numpy as np

from experiments._images import add_image_arguments, iter_images, pyplot, results_title, write_results
from jaxcomp.baselines import CodecError, LossyCodec, bits_per_pixel, encode_at_bitrate, lossy_baselines
from jaxcomp.codecs.pretrained import PRETRAINED_DIR
from jaxcomp.coding.container import BitstreamError
from jaxcomp.data import DataError
from jaxcomp.modelfile import ModelLoadError
from jaxcomp.reporting import write_table

DEFAULT_BASELINES = ("jpeg", "webp", "jpeg2000", "avif")
QUALITY_GRID = (2, 5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95)
BPSP_GRID = (0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75)
SHIPPED = ("cpm_low", "cpm_med", "cpm_high")
ROW_COLUMNS = ["image", "height", "width", "kind", "codec", "param", "target", "target_bpp", "bpp",
               "estimated_bpp", "ms_ssim", "psnr", "encode_s", "decode_s", "exact", "reachable"]


def default_checkpoints() -> list[str]:
    """The shipped CPM operating points that exist, low to high rate."""
    paths = [os.path.join(PRETRAINED_DIR, name + ".msgpack") for name in SHIPPED]
    return [p for p in paths if os.path.isfile(p)]


def learned_codecs(args: argparse.Namespace) -> list[tuple[str, object]]:
    """``(name, codec)`` per ``--checkpoints`` entry; a codec has ``compress``, ``decompress``,
    ``estimate_bits`` and ``reconstruct`` (:class:`jaxcomp.codecs.cpm.CPMCodec`)."""
    paths = default_checkpoints() if args.checkpoints is None else list(args.checkpoints)
    refine = list(dict.fromkeys(parse_list(args.refine, int, "--refine", allow_zero=True)))  # 0,100 -> [0, 100]
    if not paths:
        return []
    from jaxcomp.codecs.cpm import load_codec

    loaded = [load_codec(path) for path in paths]  # each model read once; refined copies share it
    out, names = [], set()
    for steps in refine:
        for path, codec in zip(paths, loaded):
            name = os.path.splitext(os.path.basename(os.path.normpath(path)))[0] or path
            name += f"+refine{steps}" if steps else ""
            while name in names:
                name += "'"
            names.add(name)
            out.append((name, codec.with_refinement(steps)))
    return out


def parse_list(text: str, kind: type, what: str, allow_zero: bool = False) -> list:
    """``'5,10,0.5'`` -> ``[5, 10, 0.5]`` (positive numbers, or >= 0 with ``allow_zero``), or
    :class:`CodecError` naming ``what``."""
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
        values = [int(v) if float(v).is_integer() else v for v in values]
    except ValueError as e:
        raise CodecError(f"{what}: {e}") from e
    if not values or any(v < 0 or (v == 0 and not allow_zero) for v in values):
        kind_text = "numbers >= 0" if allow_zero else "positive numbers"
        raise CodecError(f"{what} must be a comma-separated list of {kind_text}, got {text!r}")
    return values


@functools.cache
def _metrics_fn():
    import jax

    from jaxcomp.metrics import ms_ssim, psnr

    return jax.jit(lambda x, y: (ms_ssim(x, y), psnr(x, y)))


def quality_metrics(image: np.ndarray, decoded: Sequence[np.ndarray], chunk: int = 8) -> list[tuple[float, float]]:
    """``(MS-SSIM, PSNR in dB)`` of each decoded image against ``image`` (all ``uint8 [H, W, 3]``).

    Batched in fixed chunks, so each image shape compiles once.
    """
    fn = _metrics_fn()
    ref = np.broadcast_to(image, (chunk,) + image.shape)
    out = []
    for i in range(0, len(decoded), chunk):
        part = list(decoded[i:i + chunk])
        batch = np.stack(part + [part[-1]] * (chunk - len(part)))
        m, p = fn(ref, batch)
        out += [(float(a), float(b)) for a, b in zip(np.asarray(m)[:len(part)], np.asarray(p)[:len(part)])]
    return out


def _timed(fn, *a):
    t0 = time.perf_counter()
    result = fn(*a)
    return result, time.perf_counter() - t0


def bench_image(image: np.ndarray, name: str, learned: list, baselines: list[LossyCodec],
                grids: dict[str, Sequence[float]]) -> list[dict]:
    """Every measurement on one image (``uint8 [H, W, 3]``): learned points, curves, matched encodings."""
    h, w = image.shape[:2]
    base = dict(image=name, height=h, width=w)
    entries: list[tuple[dict, np.ndarray]] = []
    for point, codec in learned:
        warm = codec.with_refinement(min(codec.refine_steps, 1))  # warm-up: compiles this shape
        warm.decompress(warm.compress(image))
        data, enc_s = _timed(codec.compress, image)
        decoded, dec_s = _timed(codec.decompress, data)
        exact = bool(np.array_equal(decoded, codec.reconstruct(image)))
        entries.append((dict(base, kind="learned", codec=point, bpp=bits_per_pixel(len(data), image.shape),
                             estimated_bpp=float(codec.estimate_bits(image)) / (h * w), encode_s=enc_s,
                             decode_s=dec_s, exact=exact), decoded))
    targets = [(r["codec"], r["bpp"]) for r, _ in entries]
    for codec in baselines:
        for param in grids[codec.param]:
            data, enc_s = _timed(codec.encode, image, param)
            decoded, dec_s = _timed(codec.decode, data)
            entries.append((dict(base, kind="curve", codec=codec.name, param=param,
                                 bpp=bits_per_pixel(len(data), image.shape), encode_s=enc_s, decode_s=dec_s),
                            decoded))
        for point, bpp in targets:
            m = encode_at_bitrate(codec, image, bpp)
            entries.append((dict(base, kind="matched", codec=codec.name, param=m.param, target=point, target_bpp=bpp,
                                 bpp=m.bpp, reachable=m.reachable), codec.decode(m.data)))
    for (row, _), (ms, ps) in zip(entries, quality_metrics(image, [d for _, d in entries])):
        row.update(ms_ssim=ms, psnr=ps)
    return [row for row, _ in entries]


def _means(rows: list[dict], keys: Sequence[str]) -> dict:
    return {k: float(np.mean([r[k] for r in rows])) for k in keys}


def _wins(own: dict[str, dict], rows: list[dict], key: str) -> str:
    """"k/N": on how many images the learned row (``own[image]``) beats ``rows`` on ``key``."""
    return f"{sum(own[r['image']][key] > r[key] for r in rows)}/{len(rows)}"


def summarize(rows: list[dict]) -> list[dict]:
    """Per learned point: its means, then each baseline's means at matched bitrate and the win counts."""
    out = []
    for point in dict.fromkeys(r["codec"] for r in rows if r["kind"] == "learned"):
        own = {r["image"]: r for r in rows if r["kind"] == "learned" and r["codec"] == point}
        mine = list(own.values())
        out.append(dict(point=point, codec=point, images=len(mine),
                        **_means(mine, ["bpp", "estimated_bpp", "ms_ssim", "psnr", "encode_s", "decode_s"]),
                        exact=f"{sum(r['exact'] for r in mine)}/{len(mine)}"))
        matched = [r for r in rows if r["kind"] == "matched" and r["target"] == point]
        for codec in dict.fromkeys(r["codec"] for r in matched):
            rs = [r for r in matched if r["codec"] == codec]
            out.append(dict(point=point, codec=f"{codec} (matched)", images=len(rs),
                            **_means(rs, ["bpp", "ms_ssim", "psnr"]), learned_ms_ssim_higher=_wins(own, rs, "ms_ssim"),
                            learned_psnr_higher=_wins(own, rs, "psnr"),
                            over_budget=sum(not r["reachable"] for r in rs)))
    return out


def curve_means(rows: list[dict]) -> list[dict]:
    """Baselines' mean bpp, MS-SSIM and PSNR over images per knob setting."""
    out = []
    curves = [r for r in rows if r["kind"] == "curve"]
    for key in dict.fromkeys((r["codec"], r["param"]) for r in curves):
        rs = [r for r in curves if (r["codec"], r["param"]) == key]
        out.append(dict(codec=key[0], param=key[1], images=len(rs),
                        **_means(rs, ["bpp", "ms_ssim", "psnr", "encode_s", "decode_s"])))
    return out


def per_image_table(rows: list[dict]) -> list[dict]:
    """One row per (image, learned point): its bpp and MS-SSIM, and each baseline's MS-SSIM at that bpp."""
    out = []
    for r in (r for r in rows if r["kind"] == "learned"):
        row = dict(image=r["image"], point=r["codec"], bpp=r["bpp"], ms_ssim=r["ms_ssim"], psnr=r["psnr"],
                   exact=r["exact"])
        for m in rows:
            if m["kind"] == "matched" and m["target"] == r["codec"] and m["image"] == r["image"]:
                row[f"{m['codec']} ms_ssim"] = m["ms_ssim"]
                row[f"{m['codec']} bpp"] = m["bpp"]
        out.append(row)
    return out


def plot_rd(path: str, curves: list[dict], summary: list[dict], metric: str, title: str) -> None:
    """Baselines' mean curves (lines), learned points (large markers) and matched baselines (x)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.8), constrained_layout=True)
    colours = {}
    for codec in dict.fromkeys(c["codec"] for c in curves):
        cs = sorted((c for c in curves if c["codec"] == codec), key=lambda c: c["bpp"])
        (line,) = ax.plot([c["bpp"] for c in cs], [c[metric] for c in cs], ".-", label=codec, lw=1)
        colours[codec] = line.get_color()
    learned = [s for s in summary if s["codec"] == s["point"]]
    families = dict.fromkeys(s["point"].partition("+")[2] for s in learned)  # "" or "refine100", ...
    for family, style in zip(families, ("k*-", "m*-", "c*-", "y*-")):
        points = sorted((s for s in learned if s["point"].partition("+")[2] == family), key=lambda s: s["bpp"])
        ax.plot([s["bpp"] for s in points], [s[metric] for s in points], style, ms=12,
                label=f"learned{', ' + family if family else ''} (real bpp)")
        for i, s in enumerate(points):  # alternate below-right / above-left so close points' labels do not overlap
            below = i % 2 == 0
            ax.annotate(s["point"], (s["bpp"], s[metric]), textcoords="offset points", fontsize=7,
                        xytext=(6, -10) if below else (-6, 6), ha="left" if below else "right")
    for s in summary:
        codec = s["codec"].removesuffix(" (matched)")
        if s["codec"] != s["point"] and codec in colours:
            ax.plot(s["bpp"], s[metric], "x", color=colours[codec], ms=8)
    if any(s["codec"] != s["point"] for s in summary):
        ax.plot([], [], "x", color="grey", ms=8, label="baseline at matched bpp")
    if learned:  # zoom on the learned codecs' range, showing at least two points of every curve
        lowest = [sorted(c["bpp"] for c in curves if c["codec"] == codec)[:2][-1] for codec in colours]
        xmax = max([2.0 * max(s["bpp"] for s in learned)] + [1.05 * b for b in lowest]
                   + [1.05 * s["bpp"] for s in summary])
        shown = [p[metric] for p in curves + summary if p["bpp"] <= xmax and np.isfinite(p[metric])]
        ax.set_xlim(0, xmax)
        lo, hi = min(shown), max(shown)
        ax.set_ylim(lo - 0.05 * (hi - lo) - 1e-3, hi + 0.05 * (hi - lo) + 1e-3)
    ax.set_xlabel("bits per pixel (real bitstreams, mean over images)")
    ax.set_ylabel({"ms_ssim": "MS-SSIM (RGB)", "psnr": "PSNR (dB, RGB)"}[metric])
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_image_arguments(p, out=os.path.join("runs", "bench_rd"))
    p.add_argument("--codecs", default=",".join(DEFAULT_BASELINES),
                   help="comma-separated lossy baselines (known: jpeg, webp, jpeg2000, avif, jpegxl; '' for none)")
    p.add_argument("--checkpoints", nargs="*", default=None,
                   help="learned models (exported .msgpack, training workdir, or low/med/high); default: the "
                        "shipped cpm_{low,med,high}.msgpack that exist; give none for baselines only")
    p.add_argument("--refine", default="0",
                   help="steps of encoder-side latent refinement of the learned codecs (CPMCodec.refine); a "
                        "comma-separated list benchmarks each (e.g. 0,100; refined points are named +refineN)")
    p.add_argument("--qualities", default=",".join(map(str, QUALITY_GRID)), help="baselines' quality grid")
    p.add_argument("--bpsp", default=",".join(map(str, BPSP_GRID)), help="JPEG 2000's grid (bits per subpixel)")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> list[dict]:
    """Every row (learned, curve and matched) for every image."""
    grids = dict(quality=parse_list(args.qualities, float, "--qualities"), bpsp=parse_list(args.bpsp, float, "--bpsp"))
    names = [n.strip() for n in args.codecs.split(",") if n.strip()]
    baselines = lossy_baselines(list(dict.fromkeys(names))) if names else []
    for codec in baselines:  # a setting past the knob's range is clamped by the library: a mislabelled point
        flag = "--qualities" if codec.param == "quality" else "--bpsp"
        lo, hi = codec.param_range
        outside = [v for v in grids[codec.param] if not lo <= v <= hi]
        if outside:
            raise CodecError(f"{flag}: {codec.name}'s {codec.param} must be in [{lo:g}, {hi:g}], got "
                             f"{', '.join(f'{v:g}' for v in outside)}")
    learned = learned_codecs(args)
    if not learned and not baselines:
        raise CodecError("nothing to benchmark: no learned checkpoints and no baselines")
    rows: list[dict] = []
    for name, image, progress in iter_images(args):
        progress.set_postfix_str(name[:40], refresh=False)
        if min(image.shape[:2]) < 16:
            raise DataError(f"{name}: {image.shape[0]}x{image.shape[1]} is too small for MS-SSIM (16 px a side)")
        rows += bench_image(image, name, learned, baselines, grids)
    return rows


def report(rows: list[dict], args: argparse.Namespace) -> str:
    """Writes every table and plot to ``args.out``; returns the Markdown of ``results.md``."""
    out = args.out
    images = list(dict.fromkeys(r["image"] for r in rows))
    source = args.images or "jaxcomp/data/samples"
    summary, curves, per_image = summarize(rows), curve_means(rows), per_image_table(rows)
    write_table(rows, out, "rows", columns=ROW_COLUMNS)
    os.remove(os.path.join(out, "rows.md"))  # every encoding: CSV only
    parts = [
        "# Rate-distortion benchmark",
        f"{len(images)} images from `{source}`"
        + (f", centre crops of at most {args.crop} px" if args.crop != "0" else "")
        + (", held-out images only" if args.held_out else "")
        + "; bpp = 8 * bytes / (H * W) of real bitstreams; MS-SSIM and PSNR over RGB of the decoded image. "
        "Baselines *at matched bitrate*: the best encoding not above the learned codec's bpp on each image.",
    ]
    union = lambda table: list(dict.fromkeys(k for r in table for k in r))  # noqa: E731
    if summary:
        parts += ["## Means over images", write_table(summary, out, "summary", columns=union(summary)),
                  "## Per image (baselines at matched bitrate)",
                  write_table(per_image, out, "per_image", columns=union(per_image))]
    else:
        parts.append("No learned checkpoints (see --checkpoints): baselines' curves only.")
    if curves:
        parts += ["## Baselines' curves (means over images per setting)", write_table(curves, out, "curves")]
    title = results_title(images, source)
    for metric in ("ms_ssim", "psnr"):
        plot_rd(os.path.join(out, f"rd_{metric.replace('_', '')}.png"), curves, summary, metric, title)
    return write_results(out, parts)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        rows = run(args)
    except (DataError, CodecError, ModelLoadError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BitstreamError as e:  # a learned codec that cannot decode its own bitstream
        print(f"error: {e}", file=sys.stderr)
        return 1
    md = report(rows, args)
    print(md)
    print(f"wrote {args.out}/results.md, summary, per_image, curves (.md/.csv), rows.csv, rd_msssim.png, rd_psnr.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())

