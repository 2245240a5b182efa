"""Where a 3x3 convolution's training time goes on CPU: forward, input gradient, weight gradient.

    python -m experiments.bench_conv_grads                                   # JAX rows only
    python -m experiments.bench_conv_grads --torch-python /path/to/python    # + PyTorch rows, ratios
    python -m experiments.bench_conv_grads --dw-variants                     # + other weight-gradient forms
    python -m experiments.bench_conv_grads --winograd                        # + the conv as Winograd F(2x2, 3x3)
    python -m experiments.bench_conv_grads --bias                            # + the bias gradient, two ways

One ``C -> C`` 3x3 convolution (SAME padding, no bias) on ``[batch, size, size, C]`` float32 inputs,
the shape of L3C's residual blocks (``configs/l3c.py:paper``: C = 64; its scales run at 64², 32²
and 16² for 128² crops). Each operation is timed on its own, the best of ``--repeats`` calls after
one warm-up:

* JAX (``jax.jit``, the process's ``XLA_FLAGS``; ``import jaxcomp`` turns YNNPACK's convolution
  fusions off, ``--keep-ynn`` keeps them): the forward ``conv``, ``dx`` = the VJP with respect to the
  input, ``dw`` = the VJP with respect to the kernel, each a separate jitted function of the
  forward's inputs and a fixed cotangent. XLA picks its own thread count (all cores it sees).
* PyTorch (run by ``--torch-python``, which needs only torch; NCHW and channels_last; ``--threads``,
  default: the cores this process may use): the forward under ``no_grad``, and ``dx`` / ``dw`` as
  ``autograd.grad`` of an output computed once (``retain_graph``), so only the backward is timed.
* ``--dw-variants``: the weight gradient written other ways, each checked against the VJP's: as a
  convolution with batch and features swapped, as 9 shifted matrix products, as 3 products of a
  width-im2col, as one im2col product.
* ``--winograd``: rows for the whole convolution written as Winograd's F(2x2, 3x3) in JAX (fewer
  multiplications, more memory traffic), forward and autodiff gradients; each run checks its forward
  against XLA's (the table names the largest difference), a test its gradients.
* ``--bias``: the gradient of a per-channel bias added to a ``[batch, size, size, C]`` output, as
  the VJP of a broadcast add (XLA's CPU backend turns the sum into a tree of ``reduce-window`` ops)
  and as the VJP of :func:`jaxcomp.nn.add_channel_bias` (a product with a vector of ones), which
  every ``jaxcomp.nn`` convolution uses.

The table gives milliseconds per call and, with PyTorch rows, JAX's time over the faster PyTorch
layout's for each operation: a ratio above 1 is where JAX is slower. ``--json`` writes the rows
with the arguments and the load average.
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


def _dw_variants(jax, jnp) -> dict:
    """The weight gradient ``[3, 3, Ci, Co]`` of a SAME 3x3 conv from ``x [B, H, W, Ci]`` and the
    output cotangent ``g [B, H, W, Co]``, written four other ways."""

    def padded_shifts(x, h, w):
        xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        return [[xp[:, i:i + h, j:j + w, :] for j in range(3)] for i in range(3)]

    def swapped_conv(x, g):  # batch contracted as the conv's feature dimension
        return jax.lax.conv_general_dilated(x, g, (1, 1), ((1, 1), (1, 1)),
                                            dimension_numbers=("CHWN", "IHWO", "HWNC"))

    def nine_dots(x, g):
        b, h, w, ci = x.shape
        gf = g.reshape(-1, g.shape[-1])
        sh = padded_shifts(x, h, w)
        return jnp.stack([jnp.stack([sh[i][j].reshape(-1, ci).T @ gf for j in range(3)]) for i in range(3)])

    def width_im2col(x, g):
        b, h, w, ci = x.shape
        gf = g.reshape(-1, g.shape[-1])
        sh = padded_shifts(x, h, w)
        rows = [jnp.concatenate(sh[i], axis=-1).reshape(-1, 3 * ci).T @ gf for i in range(3)]
        return jnp.stack(rows).reshape(3, 3, ci, -1)

    def im2col(x, g):
        b, h, w, ci = x.shape
        sh = padded_shifts(x, h, w)
        cols = jnp.stack([sh[i][j] for i in range(3) for j in range(3)], axis=3)  # [B, H, W, 9, Ci]
        return jnp.einsum("bhwkc,bhwo->kco", cols, g).reshape(3, 3, ci, -1)

    return {"swapped conv": swapped_conv, "9 shifted dots": nine_dots, "width im2col, 3 dots": width_im2col,
            "im2col, 1 dot": im2col}


def winograd_conv(jnp):
    """A SAME 3x3 convolution ``x [B, H, W, Ci] * w [3, 3, Ci, Co]`` (H, W even) as Winograd's minimal
    filtering F(2x2, 3x3) (Lavin & Gray 2016): 4x4 input tiles of stride 2 and the kernel go to the
    transform domain, 16 independent ``[tiles, Ci] x [Ci, Co]`` products, back to 2x2 output tiles --
    2.25x fewer multiplications than the direct convolution; its gradients are JAX's autodiff of it."""
    bt = jnp.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], jnp.float32)
    g = jnp.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], jnp.float32)
    at = jnp.array([[1, 1, 1, 0], [0, 1, -1, -1]], jnp.float32)

    def conv(x, w):
        b, h, wd, _ = x.shape
        th, tw = h // 2, wd // 2
        xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        rows = jnp.stack([xp[:, i:i + 2 * th:2] for i in range(4)], axis=2)  # [B, th, 4, W + 2, Ci]
        tiles = jnp.stack([rows[:, :, :, j:j + 2 * tw:2] for j in range(4)], axis=3)  # [B, th, 4, 4, tw, Ci]
        v = jnp.einsum("ai,btijwc,dj->adbtwc", bt, tiles, bt)
        u = jnp.einsum("ai,ijco,dj->adco", g, w, g)
        m = jnp.einsum("adbtwc,adco->adbtwo", v, u)
        y = jnp.einsum("ia,adbtwo,jd->btiwjo", at, m, at)  # [B, th, 2, tw, 2, Co]
        return y.reshape(b, h, wd, -1)

    return conv


def jax_rows(batch: int, sizes: list[int], channels: int, repeats: int, keep_ynn: bool,
             dw_variants: bool = False, winograd: bool = False) -> tuple[list[dict], list[dict]]:
    """Best-of-``repeats`` seconds of forward, dx and dw per input size (NHWC / HWIO, float32), and
    with ``dw_variants`` the seconds and max |difference| of the other weight-gradient forms; with
    ``winograd`` also rows for the convolution written as Winograd's F(2x2, 3x3) (its ``rel_err``:
    max |difference| of its forward relative to max |XLA forward|)."""
    if keep_ynn:
        os.environ["JAXCOMP_KEEP_YNN"] = "1"
    import jax
    import jax.numpy as jnp
    import numpy as np

    import jaxcomp  # noqa: F401  (sets the project's XLA flags before JAX starts)
    from jaxcomp.xla import cpu_convolutions

    dn = ("NHWC", "HWIO", "NHWC")

    def conv(x, w):
        return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn)

    def ops(conv):
        return (jax.jit(conv), jax.jit(lambda x, w, g: jax.vjp(lambda x_: conv(x_, w), x)[1](g)[0]),
                jax.jit(lambda x, w, g: jax.vjp(lambda w_: conv(x, w_), w)[1](g)[0]))

    impl = f"jax {jax.__version__} ({cpu_convolutions()} convolutions)"
    convs = {impl: ops(conv)}
    if winograd:
        convs[f"jax {jax.__version__} Winograd F(2x2, 3x3)"] = ops(winograd_conv(jnp))
    fwd, dx, dw = convs[impl]
    variants = {k: jax.jit(f) for k, f in _dw_variants(jax, jnp).items()} if dw_variants else {}
    rng = np.random.default_rng(0)
    rows, vrows = [], []
    for size in sizes:
        x = jax.device_put(rng.standard_normal((batch, size, size, channels), np.float32))
        w = jax.device_put(0.05 * rng.standard_normal((3, 3, channels, channels), np.float32))
        g = jax.device_put(rng.standard_normal((batch, size, size, channels), np.float32))
        ref_out = np.asarray(fwd(x, w))
        for name, (f_fwd, f_dx, f_dw) in convs.items():
            if size % 2 and f_fwd is not fwd:
                continue  # F(2x2, 3x3) tiles need an even side
            times = {op: _best(lambda f=f, a=a: jax.block_until_ready(f(*a)), repeats)
                     for op, f, a in (("forward", f_fwd, (x, w)), ("dx", f_dx, (x, w, g)), ("dw", f_dw, (x, w, g)))}
            err = 0.0 if name == impl else float(np.abs(np.asarray(f_fwd(x, w)) - ref_out).max()
                                                  / np.abs(ref_out).max())
            rows.append(dict(impl=name, size=size, rel_err=err, **times))
            if name == impl:
                base = times
        ref = np.asarray(dw(x, w, g))
        for name, f in variants.items():
            err = float(np.abs(np.asarray(f(x, g)) - ref).max() / np.abs(ref).max())
            t = _best(lambda f=f, x=x, g=g: jax.block_until_ready(f(x, g)), repeats)
            vrows.append(dict(impl=impl, variant=name, size=size, dw=t, vs_vjp=t / base["dw"], rel_err=err))
    return rows, vrows


def bias_rows(batch: int, sizes: list[int], channels: int, repeats: int) -> list[dict]:
    """Best-of-``repeats`` seconds of a bias gradient per output size: the VJP of ``y + b`` (broadcast)
    and of :func:`jaxcomp.nn.add_channel_bias`, and their max |difference| relative to max |gradient|."""
    import jax
    import numpy as np

    from jaxcomp.nn import add_channel_bias

    forms = {"broadcast add": lambda y, b: y + b, "jaxcomp.nn.add_channel_bias": add_channel_bias}
    grads = {k: jax.jit(lambda y, b, g, f=f: jax.vjp(lambda b_: f(y, b_), b)[1](g)[0]) for k, f in forms.items()}
    rng = np.random.default_rng(0)
    rows = []
    for size in sizes:
        y = jax.device_put(rng.standard_normal((batch, size, size, channels), np.float32))
        b = jax.device_put(np.zeros((channels,), np.float32))
        g = jax.device_put(rng.standard_normal((batch, size, size, channels), np.float32))
        exact = np.asarray(g, np.float64).sum((0, 1, 2))
        for name, f in grads.items():
            t = _best(lambda f=f, y=y, b=b, g=g: jax.block_until_ready(f(y, b, g)), repeats)
            err = float(np.abs(np.asarray(f(y, b, g)) - exact).max() / np.abs(exact).max())
            rows.append(dict(form=name, size=size, ms=1e3 * t, rel_err=err))
    return rows


def markdown_bias(brows: list[dict]) -> str:
    """The bias-gradient forms: ms and max |difference| from a float64 sum, relative to its max."""
    lines = ["| bias gradient as the VJP of | size | ms | max rel. difference from float64 |", "|---|---|---|---|"]
    lines += [f"| {r['form']} | {r['size']} | {r['ms']:.2f} | {r['rel_err']:.1e} |" for r in brows]
    return "\n".join(lines) + "\n"


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
    out = conv(x)  # one graph, differentiated again and again: only the backward is timed
    g = torch.randn_like(out)

    def forward():
        with torch.no_grad():
            conv(x)

    return dict(forward=_best(forward, repeats),
                dx=_best(lambda: torch.autograd.grad(out, x, g, retain_graph=True), repeats),
                dw=_best(lambda: torch.autograd.grad(out, conv.weight, g, retain_graph=True), repeats))


def markdown(rows: list[dict]) -> str:
    """Milliseconds per operation; with torch rows, JAX's time over the faster torch layout's."""
    ops = ("forward", "dx", "dw")
    lines = ["| implementation | size | forward ms | dx ms | dw ms | forward + dx + dw ms |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        note = f" (forward within {r['rel_err']:.0e} of XLA's)" if r.get("rel_err") else ""
        lines.append(f"| {r['impl']}{note} | {r['size']} | " + " | ".join(f"{1e3 * r[o]:.1f}" for o in ops)
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


def markdown_variants(vrows: list[dict]) -> str:
    """The weight-gradient forms: ms, time over the VJP's, max |difference| relative to max |dw|."""
    lines = ["| weight gradient as | size | ms | time / VJP's | max rel. difference |", "|---|---|---|---|---|"]
    lines += [f"| {r['variant']} | {r['size']} | {1e3 * r['dw']:.1f} | {r['vs_vjp']:.2f}x | {r['rel_err']:.1e} |"
              for r in vrows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--sizes", default="64,32,16", help="comma-separated input sides")
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                   help="PyTorch threads (default: the cores this process may use; XLA picks its own)")
    p.add_argument("--dw-variants", action="store_true", help="also time other weight-gradient forms")
    p.add_argument("--winograd", action="store_true",
                   help="also time the convolution written as Winograd's F(2x2, 3x3) (even sizes)")
    p.add_argument("--bias", action="store_true", help="also time a bias gradient as broadcast and as a product")
    p.add_argument("--timeout", type=float, default=1800, help="seconds for the PyTorch side")
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
    load_before = os.getloadavg()
    rows, vrows = jax_rows(args.batch, sizes, args.channels, args.repeats, args.keep_ynn, args.dw_variants,
                           args.winograd)
    if args.torch_python:
        rows += run_torch_side(args)
    print(markdown(rows))
    if vrows:
        print(markdown_variants(vrows))
    brows = bias_rows(args.batch, sizes, args.channels, args.repeats) if args.bias else []
    if brows:
        print(markdown_bias(brows))
    if args.json:
        meta = {k: v for k, v in vars(args).items() if k not in ("json", "_torch_child")}
        with open(args.json, "w") as f:
            json.dump(dict(args=meta, load_before=load_before, load_after=os.getloadavg(), rows=rows,
                           dw_variants=vrows, bias=brows), f, indent=1)
    return 0


def run_torch_side(args: argparse.Namespace) -> list[dict]:
    """Runs this script under ``args.torch_python`` for the PyTorch rows (a clear error if it fails)."""
    cmd = [args.torch_python, os.path.abspath(__file__), "--_torch-child", f"--batch={args.batch}",
           f"--sizes={args.sizes}", f"--channels={args.channels}", f"--repeats={args.repeats}",
           f"--threads={args.threads}"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SystemExit(f"the PyTorch side could not run ({args.torch_python}): {e}") from None
    lines = [line for line in out.stdout.splitlines() if line.startswith(MARKER)]
    if out.returncode or not lines:
        raise SystemExit(f"the PyTorch side failed ({args.torch_python}, exit status {out.returncode}):\n"
                         f"{out.stderr[-2000:]}")
    return json.loads(lines[-1][len(MARKER):])


if __name__ == "__main__":
    sys.exit(main())
