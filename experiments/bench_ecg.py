"""ECG training throughput: recordings/s of the CNN and the CRNN train step, median over steps.

    python -m experiments.bench_ecg --config configs/ecg.py:cpu_cnn configs/ecg.py:cpu_crnn --steps 10
    python -m experiments.bench_ecg --config configs/ecg.py:cnn configs/ecg.py:crnn --seconds 30

Each config runs in its own subprocess (so peak memory is its own) on a batch of synthetic
recordings padded to ``--seconds`` (the challenge's typical 30 s). The step is the full
train step: augmentation, log spectrogram, forward, backward, Adam. The CRNN is timed with
every layer trainable (stage 2 with frozen conv blocks does less work). Peak memory is the
process's max RSS on CPU and the allocator's peak on GPU.
"""

from __future__ import annotations

import argparse
import json
import sys

from experiments._children import run_each_config
from jaxcomp.checks import int_at_least


def bench_one(spec: str, steps: int, warmup: int, seconds: float, overrides: list[str]) -> dict:


    from jaxcomp import train as trainer
    from jaxcomp.configs import load_config
    from jaxcomp.ecg.data import FS, class_weights, pad_batch
    from jaxcomp.ecg.synthetic import synthesize_dataset
    from jaxcomp.ecg.task import ECGTask

    config = load_config(spec, overrides)
    task = ECGTask(config)
    b = config.data.batch_size
    data = synthesize_dataset(b, seed=1, min_seconds=seconds, max_seconds=seconds)
    signal, lengths = pad_batch(data.signals, int(seconds * FS))
    batch = {"signal": signal, "length": lengths, "label": data.labels,
             "weight": class_weights(data.labels)[data.labels]}
    r = trainer.benchmark_train_step(task, batch, steps, warmup)
    step_s = r["step_s"]
    return dict(config=spec, model=config.model.name, params=r["params"], device=r["device"], batch=b,
                seconds=seconds, compile_s=round(r["compile_s"], 2), step_s=round(step_s, 4),
                recordings_per_s=round(b / step_s, 2), peak_mem_mb=round(r["peak_mem_mb"], 1),
                loss=round(r["metrics"]["loss"], 3),
                overrides=" ".join(overrides))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", nargs="+", required=True)
    parser.add_argument("--steps", type=int_at_least(1), default=10)
    parser.add_argument("--warmup", type=int_at_least(0), default=2)
    parser.add_argument("--seconds", type=float, default=30.0, help="recording length of the benchmark batch")
    parser.add_argument("--override", action="append", default=[], help="key=value, applied to every config")
    parser.add_argument("--json", default="", help="append results as JSON lines to this file")
    parser.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._child:
        print(json.dumps(bench_one(args.config[0], args.steps, args.warmup, args.seconds, args.override)))
        return 0
    keys = ["config", "params", "device", "batch", "seconds", "compile_s", "step_s", "recordings_per_s",
            "peak_mem_mb", "overrides"]
    return run_each_config("experiments.bench_ecg", args.config,
                           ["--steps", str(args.steps), "--warmup", str(args.warmup), "--seconds", str(args.seconds)],
                           args.override, keys, args.json)

if __name__ == "__main__":
    sys.exit(main())
