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


def run(config, workdir: str) -> str:
    from jaxcomp.xla import prefer_xla_cpu_convolutions

    prefer_xla_cpu_convolutions()
    from jaxcomp.distill.generations import plot_summary, run_generations, summarize
    from jaxcomp.reporting import write_table

    rows = run_generations(config, workdir, progress=False)
    write_table(rows, workdir, "per_seed")
    summary = summarize(rows)
    if config.task == "classification":
        title = f"{config.model.name} on {config.data.source}"
    else:
        title = f"LSTM LM ({config.model.layers} x {config.model.hidden}) on {os.path.basename(config.data.path)}"
    table = write_table(summary, workdir, "results", columns=list(dict.fromkeys(k for r in summary for k in r)),
                        title=title)
    plot_summary(rows, os.path.join(workdir, "results.png"), title)
    return table


def main(argv: list[str] | None = None) -> int:
    return config_script_main(__doc__, "configs/ban.py:digits", run, argv, sections=("ban", "distill"))


if __name__ == "__main__":
    raise SystemExit(main())
