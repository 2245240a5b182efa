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
the columns record,class,p_N,p_A,p_O,p_noisy,error (records named by file name, or by their path
where two inputs share a name). --out replaces an earlier predictions CSV but refuses a folder, an
input record and any other existing file. A record that cannot be read is reported
with its error (on stderr and in the CSV's error column) and the others are still classified;
the exit status is then 1. Bad arguments (no such path, an unusable --model) exit with status 2.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys

HEADER = ["record", "class", "p_N", "p_A", "p_O", "p_noisy", "error"]


def check_out(out: str, records: list[str]) -> str | None:
    """Why ``out`` must not be written (``None``: it may): a folder, one of the input records'
    files, or an existing file that is not an earlier predictions CSV of this command."""
    if os.path.isdir(out):
        return f"--out {out} is a folder; name a CSV file"
    inputs = {os.path.realpath(r + ext) for r in records for ext in (".mat", ".hea", ".MAT", ".HEA")}
    if os.path.realpath(out) in inputs:
        return f"--out {out} is one of the input records"
    if os.path.exists(out):
        try:
            with open(out, newline="") as f:
                first = next(csv.reader(f), None)
        except (OSError, UnicodeDecodeError, csv.Error):
            first = None
        if first != HEADER:
            return f"--out {out} exists and is not a predictions CSV of this command: remove it or choose another name"
    return None


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
    problem = check_out(args.out, records) if args.out else None
    if problem:  # before the model is loaded and anything is classified
        print(f"error: {problem}", file=sys.stderr)
        return 2
    # a record is named by its file name, or by its path where two inputs share one
    base = [os.path.basename(r) for r in records]
    shown = [b if base.count(b) == 1 else r for b, r in zip(base, records)]
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

    signals, read, errors = [], [], {}  # read / errors: indices into records
    for i, record in enumerate(records):
        try:
            signals.append(read_challenge_record(record, resample=not args.no_resample))
            read.append(i)
        except ECGDataError as e:
            errors[i] = str(e)
            print(f"error: {e}", file=sys.stderr)
    probs = clf.predict_proba(signals) if signals else []
    by_index = dict(zip(read, probs))

    width = max([12] + [len(n) for n in shown])
    print(f"{'record':<{width}} class  " + "  ".join(f"P({c})" for c in CLASSES))
    rows = []
    for i, name in enumerate(shown):
        if i in by_index:
            p = by_index[i]
            label = CLASSES[int(p.argmax())]
            print(f"{name:<{width}} {label:<5}  " + "  ".join(f"{v:.3f}" for v in p))
            rows.append([name, label] + [f"{v:.6f}" for v in p] + [""])
        else:
            print(f"{name:<{width}} error  {errors[i]}")
            rows.append([name, ""] + [""] * len(CLASSES) + [errors[i]])
    if args.out:
        from jaxcomp.files import atomic_file

        with atomic_file(args.out, "w", makedirs=True) as f:
            w = csv.writer(f)
            w.writerow(HEADER)
            w.writerows(rows)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
