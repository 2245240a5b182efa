"""Training throughput of a zoo classifier (default WRN-28-2, CIFAR-100 size): images per second.

    python -m experiments.bench_classifier                      # WRN-28-2, batch 128, 32x32x3
    python -m experiments.bench_classifier --model wrn-28-10 --batch 64 --steps 10
    python -m experiments.bench_classifier --teacher             # a BAN student step (teacher forward included)
    python -m experiments.bench_classifier --json out.json
    python -m experiments.bench_classifier --device-augment      # the step crops + flips the padded batch itself
    python -m experiments.bench_classifier --pipeline            # the input pipeline alone, no model

Times the jitted train step of ``ClassificationTask`` (SGD, batch norm, the config of
configs/ban.py:paper_wrn_28_2) on random normal inputs (the step's cost does not depend on the
pixel values), after ``--warmup`` steps that include compilation. Reports the median and
inter-quartile range of the step time over ``--steps`` steps, images/s from the median, and
the peak resident memory of the process. Numbers measured while other processes share the
CPU are lower than on a quiet machine: say so when quoting them.

``--pipeline`` times the CIFAR input pipeline alone on 50 000 random uint8 32x32x3 images in
memory (jaxcomp.data.classification.ClassificationBatches): batches of ``--batch`` with the pad-4
crop + flip done on the host in numpy (``crop_flip``), and with the host only gathering and
normalising padded images while the crop + flip runs jitted on the device (``crop_flip_device``,
:func:`jaxcomp.data.classification.device_augment`), images/s over ``--steps`` batches each,
of the whole pipeline and of its host part (making the numpy batch) alone.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time

from jaxcomp.checks import int_at_least


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/ban.py:paper_wrn_28_2", help="configs/NAME.py:VARIANT")
    parser.add_argument("--model", default="", help="override model.name (e.g. wrn-28-10, resnet56)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=32, help="image height and width")
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--steps", type=int_at_least(1), default=10, help="timed steps")
    parser.add_argument("--warmup", type=int_at_least(0), default=2, help="untimed steps (the first compiles)")
    parser.add_argument("--teacher", action="store_true", help="time a BAN step with a same-size teacher")
    parser.add_argument("--device-augment", action="store_true",
                        help="feed 4-pixel-padded images and crop + flip them inside the step (crop_flip_device)")
    parser.add_argument("--pipeline", action="store_true", help="time the input pipeline alone (no model)")
    parser.add_argument("--json", default="", help="also write the result to this file")
    args = parser.parse_args(argv)
    if args.pipeline:
        return _pipeline(args)

    from jaxcomp.xla import prefer_xla_cpu_convolutions

    prefer_xla_cpu_convolutions()
    import jax
    import numpy as np

    from jaxcomp import train as trainer
    from jaxcomp.configs import ConfigError, load_config
    from jaxcomp.distill.task import ClassificationTask, teacher_from_state
    from jaxcomp.models import count_params

    overrides = [f"data.batch_size={args.batch}"] + ([f"model.name={args.model}"] if args.model else [])
    overrides += ["data.augment=crop_flip_device", "data.pad=4"] if args.device_augment else ["data.augment=crop_flip"]
    pad = 4 if args.device_augment else 0
    try:
        config = load_config(args.config, overrides)
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rng = np.random.default_rng(0)
    shape = (args.batch, args.size + 2 * pad, args.size + 2 * pad, args.channels)
    batch = {"image": rng.standard_normal(shape).astype(np.float32),
             "label": rng.integers(0, config.model.num_classes, args.batch).astype(np.int32)}
    mesh = trainer.make_mesh()
    teachers = []
    if args.teacher:
        teacher_task = ClassificationTask(config)
        teachers = [teacher_from_state(teacher_task, trainer.init_state(teacher_task, batch, jax.random.PRNGKey(1),
                                                                        mesh))]
        config.unlock()
        config.distill.loss = "ban"
        config.lock()
    task = ClassificationTask(config, teachers=teachers)
    state = trainer.init_state(task, batch, jax.random.PRNGKey(0), mesh)
    step, _ = trainer.compile_steps(task, mesh)
    sharded = trainer.shard_batch(batch, mesh)
    key = jax.random.PRNGKey(0)
    times = []
    for i in range(args.warmup + args.steps):
        start = time.perf_counter()
        state, metrics = step(state, sharded, key, np.int32(i))
        jax.block_until_ready((state, metrics))
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    times = np.asarray(times)
    median = float(np.median(times))
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    result = {
        "model": config.model.name, "params": count_params(task.model, (1, args.size, args.size, args.channels)),
        "num_classes": config.model.num_classes, "batch": args.batch,
        "image": [args.size, args.size, args.channels], "teacher": args.teacher,
        "device_augment": args.device_augment,
        "steps": args.steps, "median_step_s": round(median, 4),
        "iqr_step_s": [round(float(np.percentile(times, 25)), 4), round(float(np.percentile(times, 75)), 4)],
        "images_per_s": round(args.batch / median, 1), "peak_rss_mb": round(peak_rss_mb, 1),
        "device": f"{jax.devices()[0].platform}:{jax.devices()[0].device_kind} x{jax.device_count()}",
        "cpu": platform.processor() or platform.machine(),
    }
    print(json.dumps(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


def _pipeline(args) -> int:
    import jax
    import numpy as np

    from jaxcomp.data.classification import ClassificationBatches, device_augment

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (50_000, args.size, args.size, args.channels), dtype=np.uint8)
    labels = rng.integers(0, 100, 50_000).astype(np.int32)
    augment = jax.jit(device_augment, static_argnums=(2, 3))
    key = jax.random.PRNGKey(0)
    result = {"batch": args.batch, "image": [args.size, args.size, args.channels], "batches": args.steps,
              "device": f"{jax.devices()[0].platform}:{jax.devices()[0].device_kind}"}
    for kind in ("crop_flip", "crop_flip_device"):
        data = ClassificationBatches((images, labels), None, args.batch, augment=kind, pad=4, seed=0)
        times, host = [], []
        for step in range(args.warmup + args.steps):
            start = time.perf_counter()
            batch = data.train_batch(step)
            host_done = time.perf_counter()
            x = jax.device_put(batch["image"])
            if kind == "crop_flip_device":
                x = augment(x, jax.random.fold_in(key, step), 4, True)
            jax.block_until_ready(x)
            if step >= args.warmup:
                times.append(time.perf_counter() - start)
                host.append(host_done - start)
        result[f"{kind}_images_per_s"] = round(args.batch * len(times) / float(np.sum(times)), 1)
        result[f"{kind}_host_part_images_per_s"] = round(args.batch * len(host) / float(np.sum(host)), 1)
    print(json.dumps(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
