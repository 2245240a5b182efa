"""Born-Again Networks: the table of a generations run whose seeds were trained by separate processes.

    python -m experiments.ban_collect --config configs/ban.py:mnist_soft --workdir runs/ban_soft --seeds 0
    python -m experiments.ban_collect --config configs/ban.py:mnist_soft --workdir runs/ban_soft

(``--config.a.b=v`` overrides: those the chains were trained with; a chain of other settings is
refused by name.)

``experiments/ban.py`` run once per seed (``--config.ban.seeds="(S,)"``, in parallel) trains
every chain but each process's table holds one seed. With ``--seeds``, this restores the finished
models of those seeds (``teacher``, ``ban-1`` .. ``ban-<generations>``, as far as they exist),
and saves their evaluation logits to ``seed<S>/logits.npz`` (run one process per seed to
parallelise); without it, it reads every ``seed*/logits.npz`` and writes what
``experiments/ban.py`` writes over all seeds: ``per_seed.csv``, ``results.md`` / ``.csv`` (mean ±
std, paired difference to the teacher with its 95% t-interval, seeds better than the teacher;
BANE and the independent-ensemble control) and ``results.png``, replacing the per-seed processes'
tables there. Only the generations every seed finished enter the table; the students of
``ban.variants`` (CWTM, DKPP, ...) and a cross-architecture run's ``student CE`` are not collected
(their rows are in the per-seed processes' printed output and their model folders).
"""

from __future__ import annotations

import argparse
import glob
import os
import sys


def check_saved_settings(config, saved_json: str, path: str, seed: int) -> None:
    """ValueError unless the config saved with a seed's logits (JSON, ``""`` for files of an older version)
    has ``config``'s settings, by the trainer's rule (:func:`jaxcomp.train.settings_differences`; the
    bookkeeping keys and :data:`jaxcomp.distill.generations.PER_MODEL_KEYS` aside): the table is not
    made under other settings (e.g. the tiny run's logits under the paper config's title)."""
    import json

    from jaxcomp.distill.generations import PER_MODEL_KEYS
    from jaxcomp.train import BOOKKEEPING_KEYS, settings_differences

    again = f"run --seeds {seed} again with the config and overrides the chain was trained with"
    if not saved_json:
        raise ValueError(f"{path} was saved by an older version, without its settings; {again}")
    differ = settings_differences(config, json.loads(saved_json), BOOKKEEPING_KEYS + PER_MODEL_KEYS)
    if differ:
        raise ValueError(f"{path} was saved under other settings than --config gives: {differ}; {again}")


def save_logits(config, workdir: str, seed: int) -> str:
    """Evaluation logits of the finished models of one seed's chain -> ``seed<S>/logits.npz``."""
    import jax
    import numpy as np

    from jaxcomp import tasks
    from jaxcomp.distill.generations import finished_chain
    from jaxcomp.distill.task import load_teacher
    from jaxcomp.files import atomic_file

    data = tasks.build_data(config, "classification")
    images = data.eval_arrays()["image"]
    base = os.path.join(workdir, f"seed{seed}")
    out = {"__config__": np.array(config.to_json_best_effort())}
    for model, path in finished_chain(config, base):
        teacher = load_teacher(path, data=data)
        apply = jax.jit(lambda x, t=teacher: t.model.apply(t.variables, x, train=False))
        out[model] = np.concatenate([np.asarray(apply(images[i : i + 500])) for i in range(0, len(images), 500)])
        print(f"seed {seed} {model}: restored", flush=True)
    if len(out) == 1:  # only the config: an empty file read as a chain of no models failed the table with a KeyError
        raise ValueError(f"{base}: no finished model (teacher/checkpoints/{config.steps} is missing); run "
                         f"experiments/ban.py with this config and workdir first")
    target = os.path.join(base, "logits.npz")
    with atomic_file(target) as f:
        np.savez(f, **out)
    return target


def collect(config, workdir: str) -> str:
    """The table over every ``seed*/logits.npz`` (the generations all seeds finished)."""
    import numpy as np

    from jaxcomp import tasks
    from jaxcomp.distill.generations import (
        Member,
        classification_metrics,
        ensemble_metrics,
        independent_ensembles,
        plot_summary,
        summarize,
    )
    from jaxcomp.reporting import write_table

    labels = tasks.build_data(config, "classification").eval_arrays()["label"]
    chains = {}
    for path in sorted(glob.glob(os.path.join(workdir, "seed*", "logits.npz"))):
        seed = int(os.path.basename(os.path.dirname(path))[4:])
        with np.load(path) as f:
            chains[seed] = {k: f[k] for k in f.files}
        check_saved_settings(config, str(chains[seed].pop("__config__", "")), path, seed)
        wrong = {k: v.shape for k, v in chains[seed].items() if v.shape[0] != len(labels)}
        if wrong:
            raise ValueError(f"{path}: logits of {wrong} for {len(labels)} evaluation images of this config")
    if not chains:
        raise ValueError(f"no seed*/logits.npz under {workdir}: run with --seeds first")
    generations = min(len(c) for c in chains.values()) - 1
    rows, teachers = [], []
    for seed in sorted(chains):
        names = ["teacher"] + [f"BAN-{g}" for g in range(1, generations + 1)]
        members = [Member(n, "", {}, chains[seed][n.lower()], None) for n in names]
        teachers.append((seed, members[0]))
        for m in members:
            rows.append({"seed": seed, "model": m.name, **classification_metrics(m.logits, labels)})
        for k in range(2, generations + 1):
            rows.append({"seed": seed, "model": f"BANE-1..{k}", **ensemble_metrics(members[1 : k + 1], labels)})
        if generations >= 2:  # as experiments/ban.py: with one generation this is BANE's one pair
            rows.append({"seed": seed, "model": f"teacher + BAN-1..{generations}", **ensemble_metrics(members, labels)})
    with config.unlocked():
        config.ban.generations = generations
    if len(teachers) >= 2:
        rows.extend(independent_ensembles(config, teachers))
    write_table(rows, workdir, "per_seed")
    summary = summarize(rows)
    title = f"{config.model.name} on {config.data.source}, {len(chains)} seeds"
    table = write_table(summary, workdir, "results", columns=list(dict.fromkeys(k for r in summary for k in r)),
                        title=title)
    plot_summary(rows, os.path.join(workdir, "results.png"), title)
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="the run's config, configs/NAME.py:VARIANT")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--seeds", default="", help="comma-separated: save these seeds' logits (else: the table)")
    from jaxcomp.configs import ConfigError, split_cli_overrides

    try:  # --config.a.b=v: the overrides the chain was trained with (experiments/ban.py's)
        overrides, rest = split_cli_overrides(sys.argv[1:] if argv is None else list(argv))
    except ConfigError as e:
        parser.error(str(e))
    args = parser.parse_args(rest)

    from jaxcomp.xla import prefer_xla_cpu_convolutions

    prefer_xla_cpu_convolutions()
    from jaxcomp.configs import load_config

    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    try:
        config = load_config(args.config, overrides)
        if config.get("task") != "classification" or "ban" not in config:
            raise ValueError(f"{args.config}: ban_collect tabulates the classification runs of experiments/ban.py")
        if seeds:
            for seed in seeds:
                print(save_logits(config, args.workdir, seed))
        else:
            print(collect(config, args.workdir))
    except (ValueError, OSError) as e:  # a config, workdir or logits file that is not what is needed
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
