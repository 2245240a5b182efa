"""Export a trained model from a workdir into a compact file the codecs and the CLI load.

    python -m experiments.export_model --workdir runs/l3c_cpu \
        --out jaxcomp/codecs/pretrained/l3c_cpu.msgpack --command "python -m experiments.train ..."

Writes the parameters (Flax msgpack) and, beside them, a JSON with the training config and
notes: steps, the last validation metrics from metrics.jsonl, wall time, the command, and, for a
run warm-started with ``init_from``, the ``lineage``: every earlier round it continues (file hash,
command, steps, last validation; as the trainer recorded it in ``WORKDIR/lineage.json`` when the
run started), so a chain of fine-tuning rounds stays reproducible from the shipped ``.json`` alone.

A model with batch norm (a classifier, the ECG networks, an understanding network) is exported
as its Flax variables, ``{"params": ..., "batch_stats": ...}`` (its batch norms need their running
statistics to evaluate). A classifier's (``task: classification``) notes also record the
``normalization`` its training batches had: the training set's per-channel pixel mean and
standard deviation (of ``uint8 / 255``), recomputed from the run's own ``config.data`` as the
trainer computed them (:class:`jaxcomp.data.classification.ClassificationBatches`), so whoever
feeds the model images normalises them exactly as training did.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import ml_collections


def classification_normalization(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The per-channel ``mean`` and ``std`` (lists of floats) that the classification run of
    ``config`` normalised its images with: ``(uint8 / 255 - mean) / std``, statistics of the
    training images as the run's ``config.data`` selects and pads them."""
    from jaxcomp.data.classification import build_classification_data

    data = build_classification_data(config.data, process_index=0, process_count=1)
    return {"mean": [float(v) for v in data.mean], "std": [float(v) for v in data.std],
            "formula": "(uint8 / 255 - mean) / std, per channel",
            "train_images": int(len(data.train_labels)), "image_shape": list(data.image_shape)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--out", required=True, help="NAME.msgpack (NAME.json is written beside it)")
    parser.add_argument("--command", default="", help="the training command, recorded in the notes")
    parser.add_argument("--note", default="", help="free text recorded in the notes")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16"],
                        help="storage precision of the parameters (float16: half the file; loaded as float32)")
    parser.add_argument("--force", action="store_true", help="replace an existing NAME.msgpack / NAME.json")
    args = parser.parse_args(argv)
    from jaxcomp.modelfile import check_new_model_path

    try:  # before loading anything; e.g. a shipped model is never replaced by accident
        check_new_model_path(args.out, args.force)
    except ValueError as e:
        parser.error(str(e))

    from jaxcomp.data import DataError
    from jaxcomp.files import read_jsonl
    from jaxcomp.modelfile import ModelLoadError, export_params, load_workdir, workdir_lineage

    try:
        try:
            with open(os.path.join(args.workdir, "config.json")) as f:
                run_config = json.load(f)
        except (ValueError, OSError):
            run_config = None  # load_workdir names the file or folder and what is wrong with it
        classifier = isinstance(run_config, dict) and run_config.get("task") == "classification"
        config, params, notes = load_workdir(args.workdir)
        chain = workdir_lineage(args.workdir, config.get("init_from", ""))
        normalization = classification_normalization(config) if classifier else None
    except (ModelLoadError, DataError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    log_path = os.path.join(args.workdir, "metrics.jsonl")
    records = read_jsonl(log_path) if os.path.exists(log_path) else []
    # the checkpoint's step: a run stopped between checkpoints logged steps that are not exported
    steps = notes["step"]
    records = [r for r in records if isinstance(r.get("step"), int) and r["step"] <= steps]
    evals = [r for r in records if r.get("split") == "eval"]
    train = [r for r in records if r.get("split") == "train"]
    # wall time of training: steps logged between consecutive records divided by their rate (a row
    # at or before the previous one's step, from a log written before rows past a resumed run's
    # checkpoint were set aside, is a repeat and not counted again)
    seconds, prev = 0.0, 0
    for r in train:
        if r["step"] <= prev:
            continue
        if r.get("steps_per_sec"):
            seconds += (r["step"] - prev) / r["steps_per_sec"]
        prev = r["step"]
    training = dict(steps=steps, train_seconds=round(seconds), command=args.command, note=args.note,
                    last_eval=evals[-1] if evals else None)
    if normalization is not None:
        training["normalization"] = normalization
    if chain:
        training["lineage"] = chain
        for entry in chain:
            if entry.get("missing"):
                print(f"warning: the lineage cannot be followed past {entry['model']} (not found)", file=sys.stderr)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        export_params(params, config, args.out, training, dtype=args.dtype)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    size = os.path.getsize(args.out)
    print(json.dumps(dict(out=args.out, bytes=size, **training)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
