"""Classify PhysioNet/CinC 2017 challenge-format ECG records: class (N/A/O/~) and probabilities per record.

    python -m experiments.ecg_predict RECORD.mat [RECORD2.mat ...]
    python -m experiments.ecg_predict FOLDER --out predictions.csv
    python -m experiments.ecg_predict FOLDER --model runs/ecg_cv/seed0/fold0/crnn/best.msgpack

A record is RECORD.hea + RECORD.mat (MATLAB v4, variable 'val' = int16 ADC values [1, n], as in
the challenge's training2017/); a FOLDER is every record in it. Records at another sampling rate
than 300 Hz are resampled (--no-resample refuses them). The default model is the one shipped with
the package (jaxcomp/ecg/pretrained/MODEL.md): trained on SYNTHETIC recordings only, it is a
demonstration of the pipeline, NOT a clinical or challenge-grade classifier.

Prints one line per record (record, class, P(N), P(A), P(O), P(~)); with --out also a CSV with
the columns record,class,p_N,p_A,p_O,p_noisy,error. A record that cannot be read is reported
with its error (on stderr and in the CSV's error column) and the others are still classified;
the exit status is then 1. Bad arguments (no such path, an unusable --model) exit with status 2.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", metavar="RECORD.mat|FOLDER")
    parser.add_argument("--model", default="", help="an exported ECG model (.msgpack) or a training workdir "
                                                    "(default: the shipped model)")
    parser.add_argument("--out", default="", help="also write the predictions to this CSV file")
    parser.add_argument("--no-resample", action="store_true",
                        help="refuse records whose header gives another sampling rate than 300 Hz")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--quiet", action="store_true", help="no model line before the table")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")

    from jaxcomp.xla import prefer_xla_cpu_convolutions

    prefer_xla_cpu_convolutions()  # before JAX starts
    from jaxcomp.ecg.challenge import find_records, read_challenge_record
    from jaxcomp.ecg.data import CLASSES, ECGDataError
    from jaxcomp.modelfile import ModelLoadError

    try:
        records = [r for p in args.paths for r in find_records(p)]
    except ECGDataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from jaxcomp.ecg.pretrained import load_classifier, model_summary

    try:
        clf = load_classifier(args.model or None, batch_size=args.batch_size)
    except (ModelLoadError, ValueError, OSError) as e:
        print(f"error: cannot load the model: {e}", file=sys.stderr)
        return 2
    if not args.quiet:
        s = model_summary(clf)
        val = f", validation F1 {s['val_f1']:.3f}" if isinstance(s["val_f1"], float) else ""
        print(f"# model {s['path']} ({s['model']}, {s['params']:,} parameters{val}; trained on "
              f"{s['data'] or 'unknown data'})")

    signals, names, errors = [], [], {}
    for record in records:
        name = os.path.basename(record)
        try:
            signals.append(read_challenge_record(record, resample=not args.no_resample))
            names.append(name)
        except ECGDataError as e:
            errors[name] = str(e)
            print(f"error: {e}", file=sys.stderr)
    probs = clf.predict_proba(signals) if signals else []
    by_name = {n: p for n, p in zip(names, probs)}

    print(f"{'record':<12} class  " + "  ".join(f"P({c})" for c in CLASSES))
    rows = []
    for record in records:
        name = os.path.basename(record)
        if name in by_name:
            p = by_name[name]
            label = CLASSES[int(p.argmax())]
            print(f"{name:<12} {label:<5}  " + "  ".join(f"{v:.3f}" for v in p))
            rows.append([name, label] + [f"{v:.6f}" for v in p] + [""])
        else:
            print(f"{name:<12} error  {errors[name]}")
            rows.append([name, ""] + [""] * len(CLASSES) + [errors[name]])
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["record", "class", "p_N", "p_A", "p_O", "p_noisy", "error"])
            w.writerows(rows)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
