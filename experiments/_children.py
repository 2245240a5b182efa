"""Runs a benchmark once per config, each in its own subprocess, and prints one table.

Shared by the training-step benchmarks (bench_train, bench_ecg): a child process per config
keeps each row's peak memory its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence


def run_each_config(module: str, configs: Sequence[str], child_args: Sequence[str], overrides: Sequence[str],
                    keys: Sequence[str], json_path: str = "", env: dict[str, str] | None = None) -> int:
    """``python -m MODULE --_child --config C CHILD_ARGS --override ...`` for each config ``C``.

    Each child prints its row as a JSON line last. Prints every row as it comes, then a Markdown
    table of ``keys``; appends the rows to ``json_path`` as JSON lines if given. Returns the
    first failing child's exit status (with its stderr), else 0; 2 with one ``error:`` line
    for a config or override that does not exist (checked before any child starts).
    """
    from jaxcomp.configs import ConfigError, load_config
    from jaxcomp.files import append_jsonl

    for spec in configs:
        try:
            load_config(spec, overrides)
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    rows = []
    for spec in configs:
        cmd = [sys.executable, "-m", module, "--_child", "--config", spec, *child_args]
        for o in overrides:
            cmd += ["--override", o]
        out = subprocess.run(cmd, env=dict(os.environ) if env is None else env, capture_output=True, text=True)
        if out.returncode:
            print(out.stderr[-3000:], file=sys.stderr)
            return out.returncode
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    print("\n| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r[k]) for k in keys) + " |")
    if json_path:
        append_jsonl(json_path, rows)
    return 0
