"""k-fold cross-validation of the CNN and the staged CRNN on synthetic or real CinC 2017 data.

    python -m experiments.ecg_cv --config configs/ecg.py:cpu_cnn --workdir runs/ecg_cv
    python -m experiments.ecg_cv --config configs/ecg.py:cnn --workdir runs/ecg_cv_real \
        --config.data.source=challenge --config.data.path=/path/to/training2017

Per seed (cv.seeds) and fold (cv.folds, default all data.num_folds): train the CNN, score it on
the held-out fold, train the CRNN from its conv blocks (stage 2, cv.crnn_steps), score it; with
"crnn_e2e" in cv.models (the paper-size configs' default) also its end-to-end phases 2-4
(cv.crnn_e2e_phases of cv.crnn_e2e_steps, each from the last one's best validation model).
Writes results.jsonl, results.md (F1 per fold, mean +- std) and confusion.png into --workdir
and prints the table. Started again, it skips finished runs; a workdir whose results were made
with other settings (anything but cv.seeds, cv.folds, cv.models and the budget cv.time_limit) is
refused. ``cv.time_limit`` (seconds for the whole command) stops the model in training with a
checkpoint and writes no row for it; the same command continues.
"""

from __future__ import annotations

from jaxcomp.configs import config_script_main


def run(config, workdir):
    from jaxcomp.ecg.experiments import cross_validate

    return cross_validate(config, workdir)


def main(argv: list[str] | None = None) -> int:
    from jaxcomp.xla import prefer_xla_cpu_convolutions

    prefer_xla_cpu_convolutions()
    return config_script_main(__doc__, "configs/ecg.py:cpu_cnn", run, argv, sections=("cv",))


if __name__ == "__main__":
    raise SystemExit(main())
