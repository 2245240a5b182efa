"""JAX-on-CPU vs PyTorch for conv-net training: measure the gap and try what closes it.

    python -m experiments.bench_conv_gap                       # all variants, 8x128x128x3, 5 steps
    python -m experiments.bench_conv_gap --variants linen_nhwc,torch_nchw --steps 10
    python -m experiments.bench_conv_gap --batch 1 --size 32 --steps 2 --warmup 1   # smoke test
    python -m experiments.bench_conv_gap --list                # variants and their XLA_FLAGS

The reference net: ``--layers`` 3x3 convolutions with bias (3 -> C, (layers-2) x C -> C, C -> 3),
ReLU between them, MSE to a fixed random target, one plain SGD update per step. Every variant
runs in its own subprocess with exactly its own ``XLA_FLAGS`` (the parent's are dropped unless
``--xla-flags`` adds some), so each row has a clean XLA configuration and its own peak RSS.

Columns: ``compile_s`` is ``jit(...).lower().compile()`` for JAX and the first (eager) step for
PyTorch; ``step_s`` the median over ``--steps`` timed steps after ``--warmup`` untimed ones;
``GFLOP/s`` counts 3x the forward conv FLOPs (forward, input grad, weight grad); ``speedup`` is
relative to ``linen_nhwc``; ``conv impl`` says which library XLA handed the convolutions (and
dots) to in the optimized HLO: ``ynn`` (YNNPACK fusion), ``onednn`` (oneDNN custom call) or
``xla`` (XLA's own emitter / Eigen). A flag the installed jaxlib does not know makes XLA abort;
such a row reads "flag not supported", and a flag it accepts but ignores is noted.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections import Counter

RESULT_MARKER = "@@BENCH_CONV_GAP@@"


@dataclasses.dataclass(frozen=True)
class Variant:
    """One row: ``impl`` picks the code path in the child, ``xla_flags`` its XLA_FLAGS."""

    name: str
    impl: str
    xla_flags: str = ""
    devices: int = 1
    doc: str = ""


_YNN_OFF = "--xla_cpu_experimental_ynn_fusion_type="
VARIANTS: list[Variant] = [
    Variant("linen_nhwc", "linen", doc="flax.linen.Conv, NHWC, f32 (the reference)"),
    Variant("lax_nhwc", "lax_nhwc", doc="lax.conv_general_dilated NHWC/HWIO (Linen overhead control)"),
    Variant("lax_nchw", "lax_nchw", doc="lax.conv_general_dilated NCHW/OIHW"),
    Variant("bf16", "bf16", doc="Linen, bf16 params and activations, f32 loss"),
    Variant("remat", "remat", doc="Linen with jax.checkpoint (nn.remat) around each conv+ReLU layer"),
    Variant("donate", "donate", doc="Linen, jit(donate_argnums=params)"),
    Variant("im2col", "im2col", doc="conv as 9 shifted slices + one matmul per layer (dots, not convs)"),
    Variant("xla_eigen_mt_on", "linen", "--xla_cpu_multi_thread_eigen=true", doc="Eigen multi-threading on"),
    Variant("xla_eigen_mt_off", "linen", "--xla_cpu_multi_thread_eigen=false", doc="Eigen single-threaded"),
    Variant("xla_legacy_runtime", "linen", "--xla_cpu_use_thunk_runtime=false",
            doc="pre-thunk runtime (ignored by new jaxlibs)"),
    Variant("xla_fast_math", "linen", "--xla_cpu_enable_fast_math=true", doc="LLVM fast math"),
    Variant("xla_vec512", "linen", "--xla_cpu_prefer_vector_width=512", doc="512-bit vectors (AVX-512 CPUs)"),
    Variant("xla_no_ynn", "linen", _YNN_OFF, doc="YNNPACK library fusions off (XLA/Eigen convs)"),
    Variant("xla_ynn_conv_dot", "linen", "--xla_cpu_experimental_ynn_fusion_type=+individual_convolution,"
            "+individual_dot", doc="YNNPACK for every conv and dot"),
    Variant("xla_onednn", "linen", f"--xla_cpu_experimental_onednn_custom_call=true {_YNN_OFF}",
            doc="oneDNN primitive custom calls (YNN off so it can claim the convs)"),
    Variant("xla_onednn_graph", "linen", "--xla_cpu_use_onednn=true", doc="oneDNN graph fusions (experimental)"),
    Variant("xla_xnn_graph", "linen", "--xla_cpu_use_xnnpack=true "
            "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY",
            doc="XNNPACK greedy graph fusion"),
    Variant("sharded2", "linen", "--xla_force_host_platform_device_count=2", devices=2,
            doc="2 host devices, batch sharded over a 'data' mesh axis"),
    Variant("sharded2_mt_off", "linen", "--xla_force_host_platform_device_count=2 --xla_cpu_multi_thread_eigen=false",
            devices=2, doc="2 host devices, one thread each"),
    Variant("sharded2_no_ynn", "linen", f"--xla_force_host_platform_device_count=2 {_YNN_OFF}", devices=2,
            doc="2 host devices, batch sharded, YNNPACK fusions off"),
    Variant("sharded2_mt_off_no_ynn", "linen",
            f"--xla_force_host_platform_device_count=2 --xla_cpu_multi_thread_eigen=false {_YNN_OFF}",
            devices=2, doc="2 host devices, one thread each, YNNPACK fusions off"),
    Variant("torch_nchw", "torch_nchw", doc="PyTorch eager, NCHW"),
    Variant("torch_channels_last", "torch_channels_last", doc="PyTorch eager, channels_last"),
]
VARIANTS_BY_NAME = {v.name: v for v in VARIANTS}


# ----------------------------------------------------------------------------- child side


def conv_flops(batch: int, size: int, channels: int, layers: int, in_channels: int = 3) -> float:
    """FLOPs of one training step: 3x the forward multiply-adds (x2) of every 3x3 conv."""
    chans = [in_channels] + [channels] * (layers - 1) + [in_channels]
    fwd = sum(2 * batch * size * size * 9 * cin * cout for cin, cout in zip(chans[:-1], chans[1:]))
    return 3.0 * fwd


def conv_impl_summary(hlo: str) -> str:
    """Which library runs the convolutions and dots of an optimized XLA:CPU HLO module.

    Parses computations from ``compiled.as_text()``: an op inside a computation called by a
    ``__ynn_fusion`` counts as ``ynn``; ``__onednn$...`` custom calls as ``onednn``; any other
    ``convolution``/``dot`` as ``xla`` (XLA's emitters / Eigen). Returns e.g. ``conv ynn=24``.
    """
    comp_of_line: list[tuple[str, str]] = []
    current = ""
    for line in hlo.splitlines():
        header = re.match(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s*\(.*\{\s*$", line)
        if header and not line.startswith(" "):
            current = header.group(1)
            continue
        comp_of_line.append((current, line))
    lib_of_comp: dict[str, str] = {}
    for _, line in comp_of_line:
        called = re.search(r"calls=%?([\w.\-]+)", line)
        if called and "__ynn_fusion" in line:
            lib_of_comp[called.group(1)] = "ynn"
        elif called and "__onednn" in line:
            lib_of_comp[called.group(1)] = "onednn"
    counts: dict[str, Counter] = {"conv": Counter(), "dot": Counter()}
    for comp, line in comp_of_line:
        target = re.search(r'custom_call_target="([^"]+)"', line)
        if target and target.group(1).startswith("__onednn"):
            kind = "conv" if "conv" in target.group(1) else "dot" if "matmul" in target.group(1) else None
            if kind:
                counts[kind]["onednn"] += 1
            continue
        for kind, op in (("conv", " convolution("), ("dot", " dot(")):
            if op in line:
                counts[kind][lib_of_comp.get(comp, "xla")] += 1
    parts = []
    for kind, c in counts.items():
        if c:
            parts.append(kind + " " + " ".join(f"{k}={n}" for k, n in sorted(c.items())))
    return "; ".join(parts) or "-"


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _time_steps(step, state, steps: int, warmup: int, block) -> tuple[list[float], object]:
    for _ in range(warmup):
        state = step(state)
    block(state)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        state = step(state)
        block(state)
        times.append(time.perf_counter() - t0)
    return times, state


def _jax_params_lax(rng, chans: list[int], layout: str, dtype):
    import jax
    import jax.numpy as jnp

    params = []
    for cin, cout in zip(chans[:-1], chans[1:]):
        rng, key = jax.random.split(rng)
        w = jax.random.normal(key, (3, 3, cin, cout), jnp.float32) / jnp.sqrt(9.0 * cin)  # HWIO
        if layout == "nchw":
            w = jnp.transpose(w, (3, 2, 0, 1))  # OIHW
        params.append({"w": w.astype(dtype), "b": jnp.zeros((cout,), dtype)})
    return params


def _lax_forward(params, x, layout: str, im2col: bool = False):
    import jax
    import jax.numpy as jnp

    n = len(params)
    for i, p in enumerate(params):
        if im2col:  # NHWC: 9 shifted views side by side, then one [B*H*W, 9*Cin] x [9*Cin, Cout] matmul
            h, w = x.shape[1], x.shape[2]
            xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
            cols = jnp.concatenate([xp[:, dy:dy + h, dx:dx + w, :] for dy in range(3) for dx in range(3)], axis=-1)
            x = cols @ p["w"].reshape(-1, p["w"].shape[-1]) + p["b"]
        elif layout == "nchw":
            x = jax.lax.conv_general_dilated(x, p["w"], (1, 1), "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW"))
            x = x + p["b"][None, :, None, None]
        else:
            x = jax.lax.conv_general_dilated(x, p["w"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
            x = x + p["b"]
        if i < n - 1:
            x = jax.nn.relu(x)
    return x


def _linen_model(channels: int, layers: int, out_channels: int, dtype, remat: bool):
    import flax.linen as nn

    class Block(nn.Module):
        features: int
        relu: bool = True

        @nn.compact
        def __call__(self, x):
            x = nn.Conv(self.features, (3, 3), padding="SAME", dtype=dtype, param_dtype=dtype)(x)
            return nn.relu(x) if self.relu else x

    block_cls = nn.remat(Block) if remat else Block

    class ConvNet(nn.Module):
        @nn.compact
        def __call__(self, x):
            for _ in range(layers - 1):
                x = block_cls(channels)(x)
            return Block(out_channels, relu=False)(x)

    return ConvNet()


def run_jax(args: argparse.Namespace, variant: Variant) -> dict:
    """Times one JAX variant in this process (XLA_FLAGS were set by the parent)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    impl = variant.impl
    ndev = jax.device_count()
    if variant.devices > 1 and ndev < variant.devices:
        raise RuntimeError(f"expected {variant.devices} host devices, got {ndev}")
    if args.batch % max(variant.devices, 1):
        return dict(status=f"skipped: batch {args.batch} not divisible by {variant.devices} devices")
    dtype = jnp.bfloat16 if impl == "bf16" else jnp.float32
    layout = "nchw" if impl == "lax_nchw" else "nhwc"
    cin = args.in_channels
    chans = [cin] + [args.channels] * (args.layers - 1) + [cin]
    shape = (args.batch, cin, args.size, args.size) if layout == "nchw" else (args.batch, args.size, args.size, cin)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(shape, dtype=np.float32)).astype(dtype)
    y = jnp.asarray(rng.standard_normal(shape, dtype=np.float32))
    key = jax.random.PRNGKey(0)

    if impl in ("lax_nhwc", "lax_nchw", "im2col"):
        params = _jax_params_lax(key, chans, layout, dtype)
        apply = lambda p, x: _lax_forward(p, x, layout, im2col=impl == "im2col")
    else:
        model = _linen_model(args.channels, args.layers, cin, dtype, remat=impl == "remat")
        params = model.init(key, x)["params"]
        apply = lambda p, x: model.apply({"params": p}, x)

    lr = args.lr

    def train_step(params, x, y):
        def loss_fn(p):
            out = apply(p, x).astype(jnp.float32)
            return jnp.mean((out - y) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        params = jax.tree_util.tree_map(lambda p, g: p - jnp.asarray(lr, p.dtype) * g.astype(p.dtype), params, grads)
        return params, loss

    jit_kwargs = {"donate_argnums": (0,)} if impl == "donate" else {}
    if variant.devices > 1:
        from jax.sharding import NamedSharding
        from jax.sharding import PartitionSpec as P

        mesh = jax.make_mesh((variant.devices,), ("data",))
        data_sharding = NamedSharding(mesh, P("data"))
        replicated = NamedSharding(mesh, P())
        x, y = jax.device_put(x, data_sharding), jax.device_put(y, data_sharding)
        params = jax.device_put(params, replicated)
        jit_kwargs.update(in_shardings=(replicated, data_sharding, data_sharding),
                          out_shardings=(replicated, replicated))
    step_fn = jax.jit(train_step, **jit_kwargs)

    t0 = time.perf_counter()
    compiled = step_fn.lower(params, x, y).compile()
    compile_s = time.perf_counter() - t0
    impl_summary = conv_impl_summary(compiled.as_text())

    def step(state):
        return compiled(state[0], x, y)

    times, (params, loss) = _time_steps(step, (params, None), args.steps, args.warmup, jax.block_until_ready)
    return dict(
        status="ok", compile_s=compile_s, times=times, loss=float(loss), conv_impl=impl_summary,
        device=f"{jax.devices()[0].platform} x{ndev}", framework=f"jax {jax.__version__}",
    )


def run_torch(args: argparse.Namespace, variant: Variant) -> dict:
    """Times one PyTorch variant in this process (eager, all cores)."""
    try:
        import torch
    except ImportError:
        return dict(status="skipped: torch not importable (pip install torch)")
    import numpy as np

    torch.set_num_threads(args.torch_threads or os.cpu_count() or 1)
    torch.manual_seed(0)
    cin = args.in_channels
    chans = [cin] + [args.channels] * (args.layers - 1) + [cin]
    mods: list[torch.nn.Module] = []
    for i, (a, b) in enumerate(zip(chans[:-1], chans[1:])):
        mods.append(torch.nn.Conv2d(a, b, 3, padding=1))
        if i < len(chans) - 2:
            mods.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*mods)
    rng = np.random.default_rng(0)
    shape = (args.batch, cin, args.size, args.size)
    x = torch.from_numpy(rng.standard_normal(shape, dtype=np.float32))
    y = torch.from_numpy(rng.standard_normal(shape, dtype=np.float32))
    if variant.impl == "torch_channels_last":
        net = net.to(memory_format=torch.channels_last)
        x, y = x.contiguous(memory_format=torch.channels_last), y.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=args.lr)

    def step(_):
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(net(x), y)
        loss.backward()
        opt.step()
        return loss.detach()

    t0 = time.perf_counter()
    step(None)
    compile_s = time.perf_counter() - t0
    times, loss = _time_steps(step, None, args.steps, max(args.warmup - 1, 0), lambda _: None)
    return dict(
        status="ok", compile_s=compile_s, times=times, loss=float(loss), conv_impl="mkldnn" if
        torch.backends.mkldnn.is_available() else "aten", device=f"cpu x{torch.get_num_threads()} threads",
        framework=f"torch {torch.__version__}",
    )


def child_main(args: argparse.Namespace) -> int:
    variant = VARIANTS_BY_NAME[args._child]
    result = run_torch(args, variant) if variant.impl.startswith("torch") else run_jax(args, variant)
    result["peak_rss_mb"] = _peak_rss_mb()
    print(RESULT_MARKER + json.dumps(result), flush=True)
    return 0


# ----------------------------------------------------------------------------- parent side

_UNSUPPORTED = ("Unknown flag in XLA_FLAGS", "Illegal value for --", "Flag parsing failed")
_IGNORED = re.compile(r'"?(xla_[a-z0-9_]+)"? is no longer supported')


def run_variant(variant: Variant, args: argparse.Namespace) -> dict:
    """Runs ``variant`` in a fresh subprocess and returns its table row."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    flags = " ".join(f for f in (variant.xla_flags, args.xla_flags) if f)
    if flags and not variant.impl.startswith("torch"):
        env["XLA_FLAGS"] = flags
    env.setdefault("JAX_PLATFORMS", "cpu")
    cmd = [sys.executable, "-m", "experiments.bench_conv_gap", "--_child", variant.name]
    for key in ("batch", "size", "channels", "layers", "in_channels", "steps", "warmup", "lr", "torch_threads"):
        cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    row = dict(variant=variant.name, xla_flags=env.get("XLA_FLAGS", ""), note="")
    try:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {**row, "status": f"timeout after {args.timeout}s"}
    stderr = out.stderr or ""
    ignored = sorted(set(_IGNORED.findall(stderr)))
    if ignored:
        row["note"] = "ignored by this jaxlib: " + ", ".join(ignored)
    results = [ln for ln in out.stdout.splitlines() if ln.startswith(RESULT_MARKER)]
    if out.returncode or not results:
        if any(s in stderr for s in _UNSUPPORTED):
            bad = re.search(r"(?:Unknown flag in XLA_FLAGS: |Illegal value for )(\S+)", stderr)
            return {**row, "status": "flag not supported" + (f" ({bad.group(1)})" if bad else "")}
        tail = [ln for ln in stderr.strip().splitlines() if ln.strip()][-1:] or [f"exit code {out.returncode}"]
        return {**row, "status": f"failed: {tail[0][:200]}"}
    res = json.loads(results[-1][len(RESULT_MARKER):])
    row.update({k: v for k, v in res.items() if k != "times"})
    if res.get("status") == "ok":
        times = res["times"]
        step_s = statistics.median(times)
        flops = conv_flops(args.batch, args.size, args.channels, args.layers, args.in_channels)
        row.update(step_s=step_s, step_min_s=min(times), step_max_s=max(times), images_per_s=args.batch / step_s,
                   gflops=flops / step_s / 1e9)
    return row


COLUMNS = [
    ("variant", "variant", "{}"), ("status", "status", "{}"), ("compile_s", "compile s", "{:.2f}"),
    ("step_s", "step s (median)", "{:.4f}"), ("images_per_s", "images/s", "{:.2f}"), ("gflops", "GFLOP/s", "{:.1f}"),
    ("speedup", "speedup vs linen_nhwc", "{:.2f}x"), ("peak_rss_mb", "peak RSS MB", "{:.0f}"),
    ("conv_impl", "conv impl", "{}"), ("xla_flags", "XLA_FLAGS", "{}"), ("note", "note", "{}"),
]


def markdown_table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(title for _, title, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        cells = []
        for key, _, fmt in COLUMNS:
            v = r.get(key)
            cells.append("" if v is None or v == "" else (fmt.format(v) if isinstance(v, (int, float)) else str(v)))
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default="all", help="comma-separated variant names, or 'all' (see --list)")
    p.add_argument("--list", action="store_true", help="print the variants and exit")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=128, help="image height = width")
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--layers", type=int, default=8, help="number of 3x3 conv layers (>= 2)")
    p.add_argument("--in-channels", type=int, default=3)
    p.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps after compilation")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--torch-threads", type=int, default=0, help="torch.set_num_threads (0: os.cpu_count())")
    p.add_argument("--xla-flags", default="", help="extra XLA_FLAGS appended for every JAX variant")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per variant")
    p.add_argument("--json", default="", help="write the rows as a JSON list to this file")
    p.add_argument("--csv", default="", help="write the rows as CSV to this file")
    p.add_argument("--_child", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for key in ("batch", "size", "channels", "in_channels", "steps"):
        if getattr(args, key) < 1:
            p.error(f"--{key.replace('_', '-')} must be >= 1")
    if args.layers < 2:
        p.error("--layers must be >= 2")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    return args


def select_variants(spec: str) -> list[Variant]:
    if spec.strip() in ("", "all"):
        return list(VARIANTS)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in VARIANTS_BY_NAME]
    if unknown:
        raise SystemExit(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS_BY_NAME)}")
    return [VARIANTS_BY_NAME[n] for n in names]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args._child:
        return child_main(args)
    if args.list:
        for v in VARIANTS:
            print(f"{v.name:22s} {v.doc}" + (f"  [XLA_FLAGS={v.xla_flags}]" if v.xla_flags else ""))
        return 0
    variants = select_variants(args.variants)
    print(f"net: {args.layers} conv3x3 layers, {args.channels} channels; batch {args.batch}x{args.size}x{args.size}"
          f"x{args.in_channels}; {args.warmup} warmup + {args.steps} timed steps; {os.cpu_count()} CPUs", flush=True)
    rows = []
    for v in variants:
        t0 = time.perf_counter()
        row = run_variant(v, args)
        rows.append(row)
        shown = f"{row['step_s']:.4f} s/step" if "step_s" in row else row["status"]
        print(f"  {v.name:22s} {shown}  ({time.perf_counter() - t0:.0f}s)", flush=True)
    base = next((r for r in rows if r["variant"] == "linen_nhwc" and "step_s" in r), None)
    for r in rows:
        if base and "step_s" in r:
            r["speedup"] = base["step_s"] / r["step_s"]
    print()
    print(markdown_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(args={k: v for k, v in vars(args).items() if not k.startswith("_")}, rows=rows), f, indent=1)
    if args.csv:
        keys = [k for k, _, _ in COLUMNS] + ["step_min_s", "step_max_s", "loss", "device", "framework"]
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    failed = [r for r in rows if r["status"].startswith(("failed", "timeout"))]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
