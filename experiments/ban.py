"""Born-Again Networks: teacher -> BAN-1..k, CWTM / DKPP students, BANE ensembles, over seeds.

    python -m experiments.ban --config configs/ban.py:mnist --workdir runs/ban_mnist
    python -m experiments.ban --config configs/ban.py:mnist_cross --workdir runs/ban_cross
    python -m experiments.ban --config configs/ban_lm.py:ptb --workdir runs/ban_ptb

Each model trains in --workdir/seed<S>/<model>/ (a rerun skips finished models). Writes
results.md / results.csv (mean ± std over seeds, the paired difference to the teacher and
the number of seeds where a student beats it), per_seed.csv and results.png into --workdir.
"""

from __future__ import annotations

import os

from jaxcomp.configs import config_script_main


def table_title(config) -> str:
    """The results table's title: model, data, the split it is evaluated on, the seeds and what ± is."""
    seeds = ", ".join(str(s) for s in config.ban.seeds)
    if config.task == "classification":
        title = f"{config.model.name} on {config.data.source} ({config.data.get('eval_on', 'test')} split)"
    else:
        arch = config.model.get("arch", "lstm")
        arch = {"lstm": "LSTM", "char_cnn": "character-CNN"}.get(arch, arch)
        title = (f"{arch} LM ({config.model.layers} x {config.model.hidden}) on "
                 f"{os.path.basename(os.path.normpath(config.data.path))} ({config.data.get('split', 'valid')} split)")
    return title + f"; seeds {seeds}, mean ± sample std (ddof 1) over seeds"


def run(config, workdir: str) -> str:
    from jaxcomp.xla import prefer_xla_cpu_convolutions

    prefer_xla_cpu_convolutions()
    from jaxcomp.distill.generations import plot_summary, run_generations, summarize
    from jaxcomp.reporting import write_table

    rows = run_generations(config, workdir, progress=False)
    write_table(rows, workdir, "per_seed")
    summary = summarize(rows)
    title = table_title(config)
    table = write_table(summary, workdir, "results", columns=list(dict.fromkeys(k for r in summary for k in r)),
                        title=title)
    plot_summary(rows, os.path.join(workdir, "results.png"), title)
    return table


def main(argv: list[str] | None = None) -> int:
    return config_script_main(__doc__, "configs/ban.py:digits", run, argv, sections=("ban", "distill"))


if __name__ == "__main__":
    raise SystemExit(main())
