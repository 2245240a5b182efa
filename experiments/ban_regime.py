"""Born-Again Networks: how much dark knowledge is in a teacher's training-set outputs, per regime.

    python -m experiments.ban_regime --workdir runs/ban_regime                  # every setting
    python -m experiments.ban_regime --workdir runs/ban_regime --settings base,n10k
    python -m experiments.ban_regime --chains runs/ban_soft --config configs/ban.py:mnist_soft [--config.a.b=v]
    python -m experiments.ban_regime --workdir runs/ban_regime --time-limit 540  # in slices

Tests docs/ban.md's hypothesis that MNIST-1000 teachers fit their training set, so that their
outputs there are nearly one-hot. For each setting (overrides of ``configs/ban.py:mnist``), one
teacher and one BAN-1 student (seed 0) are trained with the last 5000 MNIST training images held
out as a **validation** split (``data.holdout_last=5000``, ``data.eval_on=holdout``; the test
split is not touched), then the teacher's evaluation-mode predictions on its own (un-augmented)
training images are summarised: mean predictive entropy (nats), mean max-probability, the share
of images with max-probability above 0.99, accuracy against the labels it was trained on and
against the clean labels. The validation errors of the teacher and of BAN-1 say whether a
student gains in that regime. Writes ``regime.md`` / ``regime.csv`` into ``--workdir``; each
model trains in ``--workdir/<setting>/seed0/<model>/`` (a rerun skips finished models).
``--time-limit SECONDS`` is the budget of the whole command, all settings together: the model in
training stops there, checkpointed, the table keeps the settings finished so far, and the same
command continues.

``--chains DIR`` instead summarises the same training-set statistics for every finished model of an
``experiments/ban.py`` run in DIR (``seed*/teacher``, ``ban-1``, ...; ``--config`` and ``--config.a.b=v``
overrides are that run's: models of other settings are refused by name, a chain ends at its first
unfinished model), into ``DIR/train_outputs.md``.
"""

from __future__ import annotations

import argparse
import os
import sys

#: name -> (description, overrides of configs/ban.py:mnist)
SETTINGS: dict[str, tuple[str, list[str]]] = {
    "base": ("1000 images, 64 epochs, shift 1 (configs/ban.py:mnist)", []),
    "noise40": ("1000 images, 40% symmetric label noise, 64 epochs", ["data.label_noise=0.4"]),
    "short": ("1000 images, 10 epochs (160 steps)", ["steps=160", "optimizer.decay_steps=160",
                                                      "checkpoint_every=160"]),
    "pad3": ("1000 images, 64 epochs, shift 3", ["data.pad=3"]),
    "n10k": ("10000 images, 6.4 epochs (1000 steps)", ["data.train_size=10000"]),
    "noise40_200": ("1000 images, 40% label noise, 12.8 epochs (200 steps; configs/ban.py:mnist_soft)",
                    ["data.label_noise=0.4", "steps=200", "optimizer.decay_steps=200", "checkpoint_every=200"]),
}

VALIDATION = ["data.holdout_last=5000", "data.eval_on=holdout"]
SINGLE = ["ban.seeds=(0,)", "ban.generations=1", "ban.variants=()"]


def training_set_outputs(workdir: str, config) -> dict[str, float]:
    """Summary of the model trained in ``workdir`` on ``config``'s training images (no augmentation)."""
    import jax
    import numpy as np

    from jaxcomp.configs import apply_overrides
    from jaxcomp.data.classification import build_classification_data
    from jaxcomp.distill.task import load_teacher

    data = build_classification_data(config.data)
    teacher = load_teacher(workdir, data=data)
    clean = build_classification_data(apply_overrides(config, ["data.label_noise=0.0"]).data).train_labels
    apply = jax.jit(lambda x: jax.nn.log_softmax(teacher.model.apply(teacher.variables, x, train=False)))
    logp = np.concatenate([np.asarray(apply(data.normalize(data.train_images[i : i + 500])))
                           for i in range(0, len(data.train_labels), 500)]).astype(np.float64)
    p = np.exp(logp)
    top = p.max(-1)
    return {"train_entropy": float(np.mean(-np.sum(p * logp, -1))), "train_max_prob": float(np.mean(top)),
            "share_max_prob_gt_0.99": float(np.mean(top > 0.99)),
            "train_acc_given_labels": 100.0 * float(np.mean(p.argmax(-1) == data.train_labels)),
            "train_acc_clean_labels": 100.0 * float(np.mean(p.argmax(-1) == clean))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="")
    parser.add_argument("--chains", default="", help="a finished experiments/ban.py workdir to summarise instead")
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated, of {', '.join(SETTINGS)}")
    parser.add_argument("--config", default="configs/ban.py:mnist")
    parser.add_argument("--time-limit", type=float, default=0.0,
                        help="seconds for the whole command, all settings together (0: none); the same command "
                             "continues")
    from jaxcomp.configs import ConfigError, split_cli_overrides

    try:  # --config.a.b=v (with --chains): the overrides the chains were trained with
        overrides, rest = split_cli_overrides(sys.argv[1:] if argv is None else list(argv))
    except ConfigError as e:
        parser.error(str(e))
    args = parser.parse_args(rest)
    if bool(args.workdir) == bool(args.chains):
        print("error: give exactly one of --workdir and --chains", file=sys.stderr)
        return 2
    if args.chains:
        return _chains(args.chains, args.config, overrides)
    if overrides:  # each setting is its own overrides of configs/ban.py:mnist
        print(f"error: --config.X overrides go with --chains (the chains' training overrides); the settings here "
              f"are fixed: {', '.join(SETTINGS)}", file=sys.stderr)
        return 2
    names = [s for s in args.settings.split(",") if s]
    unknown = [s for s in names if s not in SETTINGS]
    if not names:
        print(f"error: --settings names no setting; known: {', '.join(SETTINGS)}", file=sys.stderr)
        return 2
    if unknown:
        print(f"error: unknown settings {unknown}; known: {', '.join(SETTINGS)}", file=sys.stderr)
        return 2

    from jaxcomp.xla import prefer_xla_cpu_convolutions

    prefer_xla_cpu_convolutions()
    from jaxcomp.configs import load_config
    from jaxcomp.deadline import Deadline, OutOfTime
    from jaxcomp.distill.generations import run_generations
    from jaxcomp.reporting import write_table

    try:
        deadline = Deadline(args.time_limit, "--time-limit")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    table = []
    for name in names:
        description, overrides = SETTINGS[name]
        config = load_config(args.config, VALIDATION + SINGLE + overrides)
        base = os.path.join(args.workdir, name)
        try:
            rows = {r["model"]: r for r in run_generations(config, base, progress=False, deadline=deadline)}
        except OutOfTime as e:
            print(f"stopped: {e}; run the same command to continue (finished models are kept)", file=sys.stderr)
            return 0
        stats = training_set_outputs(os.path.join(base, "seed0", "teacher"), config)
        row = {"setting": name, "description": description, **{k: round(v, 4) for k, v in stats.items()},
               "teacher_val_error": round(rows["teacher"]["error"], 2),
               "ban1_val_error": round(rows["BAN-1"]["error"], 2),
               "ban1_minus_teacher": round(rows["BAN-1"]["error"] - rows["teacher"]["error"], 2)}
        print(row, flush=True)
        table.append(row)
        write_table(table, args.workdir, "regime", columns=list(table[0]), title="teacher outputs on its training set")
    return 0


def _chains(workdir: str, config_spec: str, overrides: list[str] = ()) -> int:
    import glob

    from jaxcomp.configs import load_config
    from jaxcomp.reporting import write_table

    seeds = sorted(glob.glob(os.path.join(workdir, "seed*")))
    if not seeds:  # a mistyped path made an empty report in a new folder
        print(f"error: --chains {workdir}: no seed*/ folders of a finished experiments/ban.py run there",
              file=sys.stderr)
        return 2
    from jaxcomp.distill.generations import finished_chain

    try:
        config = load_config(config_spec, list(overrides))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:  # models of another config (scored on the wrong images) or stopped by a time limit are not summarised
        chains = [(seed_dir, finished_chain(config, seed_dir)) for seed_dir in seeds]
    except ValueError as e:
        print(f"error: {e} (--config and --config.X overrides must be those the chains were trained with)",
              file=sys.stderr)
        return 2
    rows = []
    for seed_dir, chain in chains:
        for model, path in chain:
            stats = training_set_outputs(path, config)
            rows.append({"seed": os.path.basename(seed_dir), "model": model,
                         **{k: round(v, 4) for k, v in stats.items()}})
            print(rows[-1], flush=True)
    if not rows:
        print(f"error: --chains {workdir}: no finished model (teacher/checkpoints/{config.steps}) of {config_spec}",
              file=sys.stderr)
        return 2
    write_table(rows, workdir, "train_outputs", title="outputs on the training set")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
