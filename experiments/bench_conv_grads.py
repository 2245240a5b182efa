"""Where a 3x3 convolution's training time goes on CPU: forward, input gradient, weight gradient.

    python -m experiments.bench_conv_grads                                   # JAX rows only
    python -m experiments.bench_conv_grads --torch-python /path/to/python    # + PyTorch rows, ratios

One ``C -> C`` 3x3 convolution (SAME padding, no bias) on ``[batch, size, size, C]`` float32 inputs,
the shape of L3C's residual blocks (``configs/l3c.py:paper``: C = 64; its scales run at 64², 32²
and 16² for 128² crops). Each operation is timed on its own, the best of ``--repeats`` calls after
one warm-up, with the given thread count:

* JAX (``jax.jit``, the process's ``XLA_FLAGS``; ``import jaxcomp`` turns YNNPACK's convolution
  fusions off, ``--keep-ynn`` keeps them): the forward ``conv``, ``dx`` = the VJP with respect to the
  input, ``dw`` = the VJP with respect to the kernel, each a separate jitted function of the
  forward's inputs and a fixed cotangent.
* PyTorch (run by ``--torch-python``, which needs only torch; NCHW and channels_last): the forward
  under ``no_grad``, and ``dx`` / ``dw`` as ``autograd.grad`` of one output, minus the forward's time
  (PyTorch has no public call for one gradient without its forward).

The table gives milliseconds per call and, with PyTorch rows, JAX's time over the faster PyTorch
layout's for each operation: a ratio above 1 is where JAX is slower.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

MARKER = "@@CONV_GRADS@@"


def _best(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def jax_rows(batch: int, sizes: list[int], channels: int, repeats: int, keep_ynn: bool) -> list[dict]:
    """Best-of-``repeats`` seconds of forward, dx and dw per input size (NHWC / HWIO, float32)."""
    if keep_ynn:
        os.environ["JAXCOMP_KEEP_YNN"] = "1"
    import jax
    import numpy as np

    import jaxcomp  # noqa: F401  (sets the project's XLA flags before JAX starts)
    from jaxcomp.xla import cpu_convolutions

    dn = ("NHWC", "HWIO", "NHWC")

    def conv(x, w):
        return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn)

    fwd = jax.jit(conv)
    dx = jax.jit(lambda x, w, g: jax.vjp(lambda x_: conv(x_, w), x)[1](g)[0])
    dw = jax.jit(lambda x, w, g: jax.vjp(lambda w_: conv(x, w_), w)[1](g)[0])
    rng = np.random.default_rng(0)
    rows = []
    for size in sizes:
        x = jax.device_put(rng.standard_normal((batch, size, size, channels), np.float32))
        w = jax.device_put(0.05 * rng.standard_normal((3, 3, channels, channels), np.float32))
        g = jax.device_put(rng.standard_normal((batch, size, size, channels), np.float32))
        times = {name: _best(lambda f=f, a=a: jax.block_until_ready(f(*a)), repeats)
                 for name, f, a in (("forward", fwd, (x, w)), ("dx", dx, (x, w, g)), ("dw", dw, (x, w, g)))}
        rows.append(dict(impl=f"jax {jax.__version__} ({cpu_convolutions()} convolutions)", size=size, **times))
    return rows


def torch_rows(batch: int, sizes: list[int], channels: int, repeats: int, threads: int) -> list[dict]:
    """The same operations in PyTorch, NCHW and channels_last (this function imports only torch)."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    rows = []
    for layout in ("nchw", "channels_last"):
        for size in sizes:
            conv = torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False)
            x = torch.randn(batch, channels, size, size)
            if layout == "channels_last":
                conv = conv.to(memory_format=torch.channels_last)
                x = x.contiguous(memory_format=torch.channels_last)
            rows.append(dict(impl=f"torch {torch.__version__} {layout}", size=size,
                             **_torch_times(torch, conv, x.requires_grad_(True), repeats)))
    return rows


def _torch_times(torch, conv, x, repeats: int) -> dict:
    g = torch.randn_like(conv(x))

    def forward():
        with torch.no_grad():
            conv(x)

    t_fwd = _best(forward, repeats)
    t_dx = _best(lambda: torch.autograd.grad(conv(x), x, g), repeats) - t_fwd
    t_dw = _best(lambda: torch.autograd.grad(conv(x), conv.weight, g), repeats) - t_fwd
    return dict(forward=t_fwd, dx=t_dx, dw=t_dw)


def markdown(rows: list[dict]) -> str:
    """Milliseconds per operation; with torch rows, JAX's time over the faster torch layout's."""
    ops = ("forward", "dx", "dw")
    lines = ["| implementation | size | forward ms | dx ms | dw ms | forward + dx + dw ms |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['impl']} | {r['size']} | " + " | ".join(f"{1e3 * r[o]:.1f}" for o in ops)
                     + f" | {1e3 * sum(r[o] for o in ops):.1f} |")
    ratios = []
    for r in rows:
        if not r["impl"].startswith("jax"):
            continue
        ref = [t for t in rows if t["impl"].startswith("torch") and t["size"] == r["size"]]
        if ref:
            best = {o: min(t[o] for t in ref) for o in ops}
            best_total = min(sum(t[o] for o in ops) for t in ref)
            ratios.append(f"| {r['impl']} / fastest torch | {r['size']} | "
                          + " | ".join(f"{r[o] / best[o]:.2f}x" for o in ops)
                          + f" | {sum(r[o] for o in ops) / best_total:.2f}x |")
    return "\n".join(lines + ratios) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--sizes", default="64,32,16", help="comma-separated input sides")
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="PyTorch threads")
    p.add_argument("--keep-ynn", action="store_true", help="leave jaxlib's YNNPACK conv fusions on")
    p.add_argument("--torch-python", default="", help="a Python with torch: adds PyTorch rows")
    p.add_argument("--json", default="", help="also write the rows here")
    p.add_argument("--_torch-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        p.error(f"--sizes must be comma-separated integers, got {args.sizes!r}")
    if min(sizes) < 1 or args.batch < 1 or args.channels < 1 or args.repeats < 1:
        p.error("--sizes, --batch, --channels and --repeats must be positive")
    if args._torch_child:
        print(MARKER + json.dumps(torch_rows(args.batch, sizes, args.channels, args.repeats, args.threads)))
        return 0
    rows = jax_rows(args.batch, sizes, args.channels, args.repeats, args.keep_ynn)
    if args.torch_python:
        cmd = [args.torch_python, os.path.abspath(__file__), "--_torch-child", f"--batch={args.batch}",
               f"--sizes={args.sizes}", f"--channels={args.channels}", f"--repeats={args.repeats}",
               f"--threads={args.threads}"]
        out = subprocess.run(cmd, capture_output=True, text=True)
        lines = [line for line in out.stdout.splitlines() if line.startswith(MARKER)]
        if out.returncode or not lines:
            raise SystemExit(f"the PyTorch side failed ({args.torch_python}):\n{out.stderr[-2000:]}")
        rows += json.loads(lines[-1][len(MARKER):])
    print(markdown(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
