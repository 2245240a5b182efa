"""Training-step benchmark: compile time, step time, images/s and peak memory per config.

    python -m experiments.bench_train --config configs/l3c.py:cpu configs/l3c.py:paper --steps 5

Each config runs in its own subprocess (so peak memory is its own) on real crops of the
shipped photos. Peak memory is the process's max RSS on CPU and the allocator's peak on
GPU/TPU. Extra ``--xla-flags`` are passed through XLA_FLAGS to compare XLA options; the
``xla_flags`` column shows what ran (``import jaxcomp`` adds YNNPACK-off on CPU unless
``JAXCOMP_KEEP_YNN=1``, see jaxcomp.xla).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from experiments._children import run_each_config
from jaxcomp.checks import int_at_least


def names_its_data(overrides: list[str]) -> bool:
    """Whether the overrides choose the training data (``data.source`` or ``data.path``); other
    ``data.*`` keys (batch size, crop) keep the paper config's swap to the shipped samples."""
    return any(o.startswith(("data.source=", "data.path=")) for o in overrides)


def _phases(task, state, batch, steps: int) -> dict:
    """Median seconds of the jitted forward pass alone, forward + loss, and forward + loss + gradient
    (no optimizer update), for tasks with a ``model`` and a ``loss(params, image)`` (L3C, CPM):
    where a step's time goes, beside the reference's phases (experiments/bench_l3c_reference.py)."""
    import time

    import jax
    import numpy as np

    if not (hasattr(task, "model") and hasattr(task, "loss")):
        raise SystemExit(f"--phases needs a task with .model and .loss(params, image); {type(task).__name__} has not")
    image = jax.numpy.asarray(batch["image"])
    fns = dict(
        forward_s=jax.jit(lambda p, x: task.model.apply({"params": p}, x)),
        forward_loss_s=jax.jit(lambda p, x: task.loss(p, x)[0]),
        forward_loss_grad_s=jax.jit(jax.grad(lambda p, x: task.loss(p, x)[0])),
    )
    out = {}
    for name, f in fns.items():
        jax.block_until_ready(f(state.params, image))
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            jax.block_until_ready(f(state.params, image))
            times.append(time.perf_counter() - t0)
        out[name] = round(float(np.median(times)), 4)
    return out


def bench_one(spec: str, steps: int, warmup: int, overrides: list[str], phases: bool = False) -> dict:


    from jaxcomp import tasks
    from jaxcomp import train as trainer
    from jaxcomp.configs import apply_overrides, load_config

    config = load_config(spec, overrides)
    if not config.get("data", {}).get("allow_samples", True) and not names_its_data(overrides):
        # a paper-scale config refuses to *train* on the shipped samples; timing a step on them is fine
        # (unless the user names the data: then theirs is timed)
        config = apply_overrides(config, ["data.source=samples", "data.allow_samples=True"])
    task, data = tasks.build(config)
    batch = data.train_batch(0)
    r = trainer.benchmark_train_step(task, batch, steps, warmup)
    step_s = r["step_s"]
    extra = _phases(task, r["state"], batch, steps) if phases else {}
    return dict(
        config=spec, device=r["device"],
        batch=int(batch["image"].shape[0]), crop=int(batch["image"].shape[1]),
        compile_s=round(r["compile_s"], 2), step_s=round(step_s, 4),
        images_per_s=round(batch["image"].shape[0] / step_s, 2),
        peak_mem_mb=round(r["peak_mem_mb"], 1), xla_flags=os.environ.get("XLA_FLAGS", ""),
        overrides=" ".join(overrides),
        # the task's own rate metric (L3C: bpsp, CPM: bpp), as a check that the step computes
        **{k: round(v, 4) for k, v in r["metrics"].items() if k in ("loss", "bpsp", "bpp")},
        **extra,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", nargs="+", required=True)
    parser.add_argument("--steps", type=int_at_least(1), default=5)
    parser.add_argument("--warmup", type=int_at_least(0), default=1)
    parser.add_argument("--override", action="append", default=[], help="key=value, applied to every config")
    parser.add_argument("--xla-flags", default="", help="extra XLA_FLAGS for the measured runs")
    parser.add_argument("--phases", action="store_true",
                        help="also time forward, forward + loss and forward + loss + gradient separately")
    parser.add_argument("--json", default="", help="append results as JSON lines to this file")
    parser.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._child:
        print(json.dumps(bench_one(args.config[0], args.steps, args.warmup, args.override, args.phases)))
        return 0
    env = dict(os.environ)
    if args.xla_flags:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + args.xla_flags).strip()
    keys = ["config", "device", "batch", "crop", "compile_s", "step_s", "images_per_s", "peak_mem_mb",
            "xla_flags", "overrides"]
    if args.phases:
        keys[6:6] = ["forward_s", "forward_loss_s", "forward_loss_grad_s"]
    child = ["--steps", str(args.steps), "--warmup", str(args.warmup)] + (["--phases"] if args.phases else [])
    return run_each_config("experiments.bench_train", args.config, child, args.override, keys,
                           args.json, env)


if __name__ == "__main__":
    sys.exit(main())
