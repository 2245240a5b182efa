"""Train (and evaluate) any gradient-based system from a config.

    python -m experiments.train --config configs/l3c.py:cpu --workdir runs/l3c_cpu \
        [--config.data.source=folder --config.data.path=DIR ...]

Resumes from the last checkpoint in --workdir; --eval-only evaluates that checkpoint (or, with
none there, the model ``--config.init_from=`` names on this command line: an exported .msgpack or
another workdir; a config's own default starting model is not scored in place of a mistyped workdir)
and prints the scores, leaving the workdir's config.json and metrics.jsonl as its training wrote
them. One process at a time trains or evaluates a workdir (``WORKDIR/train.lock``).
--time-limit SECONDS stops (with a checkpoint) once that much wall-clock time has passed; the
same command then continues the run, as if it had not stopped (for leased machines with a
per-command limit, or a shared CPU).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from jaxcomp import tasks
from jaxcomp.configs import ConfigError, load_config, split_cli_overrides


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        overrides, rest = split_cli_overrides(argv)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="configs/NAME.py[:VARIANT]")
    parser.add_argument("--workdir", required=True, help="checkpoints, config.json, metrics, TensorBoard")
    parser.add_argument("--eval-only", action="store_true",
                        help="evaluate the latest checkpoint in --workdir, or, with none there, the model "
                             "--config.init_from= names")
    parser.add_argument("--allow-changed-config", action="store_true",
                        help="continue a --workdir whose saved config.json has other settings (refused otherwise: "
                             "the model would mix both; the old file is kept aside as config.json.<time>)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                        help="stop with a checkpoint after this much wall-clock time from the start of "
                             "training (compilation included); run the same command again to continue")
    args = parser.parse_args(rest)
    if args.time_limit is not None and not args.time_limit > 0:  # also NaN
        parser.error(f"--time-limit must be > 0 seconds, got {args.time_limit:g}")
    if os.path.exists(args.workdir) and not os.path.isdir(args.workdir):
        parser.error(f"--workdir {args.workdir} is a file, not a folder")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("jaxcomp").setLevel(logging.INFO)

    from jaxcomp.xla import prefer_xla_cpu_convolutions

    prefer_xla_cpu_convolutions()  # before JAX starts: ~1.5x faster CPU training steps
    from flax.errors import ScopeParamNotFoundError, ScopeParamShapeError

    from jaxcomp import train as trainer  # after argument errors, which need no JAX
    from jaxcomp.data import DataError

    try:
        config = load_config(args.config, overrides)
        trainer.check_settings(config)
        if args.eval_only:  # before anything is built: a mistyped workdir fails at once
            from jaxcomp.files import latest_complete_checkpoint

            named = any(o.split("=", 1)[0].strip() == "init_from" for o in overrides) and config.get("init_from", "")
            if latest_complete_checkpoint(args.workdir) is None and not named:
                raise trainer.CheckpointError(f"--eval-only: no checkpoint in {args.workdir} (an untrained model, or "
                                              f"the config's starting model, would be scored; to score a model file "
                                              f"or another workdir, name it: --config.init_from=PATH)")
        if not args.eval_only and not args.allow_changed_config:  # before anything is built
            # a run continued under other settings mixes both and is labelled with the new ones; more steps
            # (a longer run) and the starting model (read at step 0 only) may change
            trainer.check_same_settings(config, args.workdir, trainer.BOOKKEEPING_KEYS + ("steps", "init_from"))
        trainer.maybe_initialize_distributed(config)
        task, data = tasks.build(config)
        if args.eval_only:  # writes nothing into the workdir: its config.json and log stay its training's
            state, metrics = trainer.evaluate_run(config, args.workdir, task, data)
        else:
            state, metrics = trainer.train(config, args.workdir, task, data, progress=not args.no_progress,
                                           time_limit=args.time_limit)
    except (ConfigError, DataError, trainer.CheckpointError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (ScopeParamNotFoundError, ScopeParamShapeError) as e:  # a loaded model (teacher, codec, G) of other layers
        print(f"error: a model this run loads does not fit the architecture its config gives: "
              f"{str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    step = int(state.step)
    if step < config.steps and not args.eval_only:
        print(f"stopped by --time-limit at step {step} of {config.steps}; run the same command to continue",
              file=sys.stderr)
    print(json.dumps({"workdir": args.workdir, "step": step, "eval": metrics}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
