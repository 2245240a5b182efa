"""Seconds per image for a folder of differently sized photos, in one process: what a new image size costs.

    python -m experiments.bench_l3c_sizes                          # the shipped model, tile buckets (default)
    python -m experiments.bench_l3c_sizes --buckets none --out runs/bench_l3c_sizes_none   # every size its own shape
    python -m experiments.bench_l3c_sizes --cache-dir runs/xla_cache   # with the persistent compilation cache
    python -m experiments.bench_l3c_sizes --cli       # also time `jaxcomp compress/decompress` on the folder
    python -m experiments.bench_l3c_sizes --compare-bpsp   # only: bpsp of the 8 shipped photos, buckets vs none

Writes centre crops of photos from ``--photos`` (default ``../shared/data/photos``) at the sizes of
``--sizes`` to ``OUT/images`` (PNG), then compresses and decompresses each one twice with the same
codec in this process: the first call pays whatever compilation that image's shape needs, the second
is the steady state. ``extra s`` = first - second: what an image of an unseen size costs beyond a
warm one. Every decode is checked bit-exact. Writes ``OUT/results.md`` and ``results.csv``.

``--buckets``: ``auto`` (the codec's default bucket ladder), ``one`` (every tile at ``tile x tile``),
``none`` (every tile at its own shape: the behaviour before buckets) or ``default`` (whatever
``load_codec`` does without the argument: for timing an older checkout of jaxcomp with this script).
Without ``--cache-dir`` the persistent compilation cache is off, so the first process pays every
compilation; with it, run twice to see a warm cache (JAX's cache in the folder and jaxcomp's stored
executables in ``jaxcomp-executables`` under it, :class:`jaxcomp.xla.CachedFunction`).
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time

import numpy as np

# (height, width): six sizes, each from another photo: a square, a near-square, a portrait and a
# landscape of the shipped samples' sizes, a two-tile photo and a 1x1 image.
DEFAULT_SIZES = "512x512,480x500,336x512,512x400,480x640,1x1"


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """``"HxW,HxW,..."`` -> ``[(H, W), ...]`` (a ValueError names a bad entry)."""
    out = []
    for part in text.split(","):
        try:
            h, w = (int(v) for v in part.lower().split("x"))
        except ValueError as e:
            raise ValueError(f"--sizes needs HEIGHTxWIDTH entries, got {part!r}") from e
        if h < 1 or w < 1:
            raise ValueError(f"--sizes entries must be positive, got {part!r}")
        out.append((h, w))
    return out


def write_crops(photos: str, sizes: list[tuple[int, int]], folder: str) -> list[str]:
    """One centre crop per size, each from a different photo (cycling through ``photos`` sorted);
    returns the PNG paths (``NN_HxW_photo.png``), written to ``folder``."""
    from PIL import Image

    from jaxcomp.data import centre_crop, list_images, load_image

    files = list_images(photos)
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i, (h, w) in enumerate(sizes):
        src = files[i % len(files)]
        image = load_image(src)
        if image.shape[0] < h or image.shape[1] < w:
            raise ValueError(f"{src} ({image.shape[0]}x{image.shape[1]}) is smaller than {h}x{w}")
        crop = centre_crop(image, h, w)
        name = f"{i:02d}_{h}x{w}_{os.path.splitext(os.path.basename(src))[0]}.png"
        Image.fromarray(crop).save(os.path.join(folder, name))
        paths.append(os.path.join(folder, name))
    return paths


class CompileCounter:
    """Counts JAX traces (each jit cache miss, in-memory) and sums the seconds spent tracing,
    lowering and compiling (or fetching from JAX's persistent cache) since :meth:`reset`, and the
    executables jaxcomp's own cache loaded (:class:`jaxcomp.xla.CachedFunction`) and their seconds:
    a measure of what a new image size costs that the machine's load does not blur."""

    EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
              "/jax/core/compile/backend_compile_duration")

    def __init__(self):
        import jax

        from jaxcomp.xla import EXECUTABLE_LOAD_EVENT

        self.load_event = EXECUTABLE_LOAD_EVENT
        self.traces, self.seconds, self.loads, self.load_seconds = 0, 0.0, 0, 0.0
        jax.monitoring.register_event_duration_secs_listener(self._on_event)

    def _on_event(self, event: str, duration: float, **kwargs) -> None:
        if event in self.EVENTS:
            self.seconds += duration
            self.traces += event == self.EVENTS[0]
        elif event == self.load_event:
            self.loads += 1
            self.load_seconds += duration

    def reset(self) -> tuple[int, float, int, float]:
        """``(traces, compile seconds, executables loaded, load seconds)`` since the last reset."""
        out = (self.traces, self.seconds, self.loads, self.load_seconds)
        self.traces, self.seconds, self.loads, self.load_seconds = 0, 0.0, 0, 0.0
        return out


def time_codec(codec, paths: list[str]) -> list[dict]:
    """Compress + decompress each image twice (first call, then steady state); rows of seconds,
    and the traces and compile seconds of the first call."""
    from jaxcomp.data import load_image

    counter = CompileCounter()
    rows = []
    for path in paths:
        image = load_image(path)
        row = dict(image=os.path.basename(path), height=image.shape[0], width=image.shape[1])
        for call in ("first", "warm"):
            counter.reset()
            t0 = time.perf_counter()
            data = codec.compress(image)
            t1 = time.perf_counter()
            out = codec.decompress(data)
            t2 = time.perf_counter()
            if not np.array_equal(out, image):
                raise SystemExit(f"error: {path} does not decode bit-exactly")
            row[f"{call}_encode_s"], row[f"{call}_decode_s"] = t1 - t0, t2 - t1
            row[f"{call}_s"] = t2 - t0
            row[f"{call}_traces"], row[f"{call}_compile_s"], row[f"{call}_loads"], row[f"{call}_load_s"] = \
                counter.reset()
        row["extra_s"] = row["first_s"] - row["warm_s"]
        row["bpsp"] = 8 * len(data) / image.size
        rows.append(row)
        print(f"{row['image']}: first {row['first_s']:.2f} s ({row['first_traces']} traces, "
              f"{row['first_compile_s']:.2f} s compiling; {row['first_loads']} executables loaded in "
              f"{row['first_load_s']:.2f} s), warm {row['warm_s']:.2f} s "
              f"(encode {row['warm_encode_s']:.2f} + decode {row['warm_decode_s']:.2f}), {row['bpsp']:.4f} bpsp",
              flush=True)
    return rows


def time_cli(folder: str, out: str, cache_dir: str) -> dict:
    """Wall seconds of ``jaxcomp compress`` and ``decompress`` on ``folder`` (new processes)."""
    times = {}
    for command, src, dst in (("compress", folder, os.path.join(out, "cli_jxc")),
                              ("decompress", os.path.join(out, "cli_jxc"), os.path.join(out, "cli_png"))):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "jaxcomp.cli", command, src, dst, "--quiet", "--force",
                        "--cache-dir", cache_dir], check=True)
        times[command] = time.perf_counter() - t0
    return times


def compare_bpsp(checkpoint: str | None, tile: int, out: str) -> str:
    """bpsp of every shipped photo coded with the default buckets and without (each tile at its own
    shape, as before buckets): the buckets' padding must cost no bits. Returns a Markdown table."""
    from jaxcomp.codecs.l3c import load_codec
    from jaxcomp.data import load_image, sample_image_paths

    codecs = {"buckets": load_codec(checkpoint, tile=tile), "none": load_codec(checkpoint, tile=tile, buckets=None)}
    lines = ["| photo | size | bpsp, buckets | bpsp, none | difference |", "|---|---|---|---|---|"]
    total = {k: 0 for k in codecs}
    subpixels = 0
    for path in sample_image_paths():
        image = load_image(path)
        sizes = {k: len(c.compress(image)) for k, c in codecs.items()}
        subpixels += image.size
        for k in codecs:
            total[k] += sizes[k]
        b, n = (8 * sizes[k] / image.size for k in ("buckets", "none"))
        lines.append(f"| {os.path.basename(path)} | {image.shape[0]}x{image.shape[1]} | {b:.4f} | {n:.4f} | "
                     f"{100 * (b - n) / n:+.3f}% |")
        print(lines[-1], flush=True)
    b, n = (8 * total[k] / subpixels for k in ("buckets", "none"))
    lines.append(f"| **total** | | {b:.4f} | {n:.4f} | {100 * (b - n) / n:+.3f}% |")
    md = "\n".join(["# L3C bpsp with and without tile buckets (the 8 shipped photos)", "", *lines]) + "\n"
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "bpsp.md"), "w") as f:
        f.write(md)
    return md


def load_average() -> str:
    try:
        return " / ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", default=os.path.join("..", "shared", "data", "photos"),
                   help="folder of photos to crop (default ../shared/data/photos)")
    p.add_argument("--sizes", default=DEFAULT_SIZES, help="HEIGHTxWIDTH,... one crop per entry, in this order")
    p.add_argument("--buckets", default="auto", choices=["auto", "one", "none", "default"])
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--checkpoint", default=None, help="L3C model (default: the shipped one)")
    p.add_argument("--cache-dir", default="", help="persistent XLA compilation cache (default: off)")
    p.add_argument("--cli", action="store_true", help="also time the jaxcomp command on the folder")
    p.add_argument("--compare-bpsp", action="store_true",
                   help="only compare the bpsp of the shipped photos with and without buckets (OUT/bpsp.md)")
    p.add_argument("--out", default=os.path.join("runs", "bench_l3c_sizes"))
    args = p.parse_args(argv)
    if args.compare_bpsp:
        import jaxcomp  # noqa: F401

        print(compare_bpsp(args.checkpoint, args.tile, args.out))
        return 0

    import jaxcomp  # noqa: F401  (XLA's CPU convolutions, before JAX starts)
    from jaxcomp.xla import enable_compilation_cache

    enable_compilation_cache(args.cache_dir)
    from jaxcomp.codecs.l3c import load_codec
    from jaxcomp.data import DataError

    folder = os.path.join(args.out, "images")
    try:  # before any timing: sizes, the photos and their crops
        paths = write_crops(args.photos, parse_sizes(args.sizes), folder)
    except (ValueError, DataError, OSError) as e:
        p.error(str(e))
    kwargs = {} if args.buckets == "default" else {
        "buckets": {"auto": "auto", "none": None, "one": [args.tile]}[args.buckets]}
    load_before = load_average()
    t0 = time.perf_counter()
    codec = load_codec(args.checkpoint, tile=args.tile, **kwargs)
    load_s = time.perf_counter() - t0
    rows = time_codec(codec, paths)
    cli = time_cli(folder, args.out, args.cache_dir) if args.cli else None
    load_after = load_average()

    later = rows[1:]
    lines = [
        "# L3C seconds per image over differently sized photos (one process)",
        f"buckets={args.buckets} ({getattr(codec, 'buckets', 'n/a')}), tile {args.tile}, persistent cache "
        f"{args.cache_dir or 'off'}; model loaded in {load_s:.2f} s; load average (1/5/15 min) {load_before} "
        f"before, {load_after} after (2 cores).",
        "| image | size | first s | traces (compile s) | executables loaded (s) | warm s (encode + decode) "
        "| warm traces | extra s | bpsp |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['image']} | {r['height']}x{r['width']} | {r['first_s']:.2f} | {r['first_traces']} "
                     f"({r['first_compile_s']:.2f}) | {r['first_loads']} ({r['first_load_s']:.2f}) | "
                     f"{r['warm_s']:.2f} ({r['warm_encode_s']:.2f} + {r['warm_decode_s']:.2f}) | "
                     f"{r['warm_traces']} | {r['extra_s']:.2f} | {r['bpsp']:.4f} |")
    lines.append("\nOne image: no unseen size after the first." if not later else
                 f"\nAfter the first image: traces {sum(r['first_traces'] for r in later)}, compile s "
                 f"{sum(r['first_compile_s'] for r in later):.2f}, executables loaded "
                 f"{sum(r['first_loads'] for r in later)} ({sum(r['first_load_s'] for r in later):.2f} s); "
                 f"extra s max {max(r['extra_s'] for r in later):.2f}, "
                 f"mean {np.mean([r['extra_s'] for r in later]):.2f}; first-call s summed "
                 f"{sum(r['first_s'] for r in rows):.2f}, warm s summed {sum(r['warm_s'] for r in rows):.2f}.")
    if cli:
        n = len(paths)
        lines.append(f"\n`jaxcomp compress` on the folder ({n} images, a new process): {cli['compress']:.1f} s "
                     f"({cli['compress'] / n:.1f} s per image); `decompress`: {cli['decompress']:.1f} s "
                     f"({cli['decompress'] / n:.1f} s per image).")
    md = "\n".join(lines) + "\n"
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(md)
    with open(os.path.join(args.out, "results.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
