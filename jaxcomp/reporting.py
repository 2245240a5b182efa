"""Host helpers shared by the experiment drivers: Markdown / CSV tables."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from typing import Any


def _fmt(v) -> str:
    if isinstance(v, float):
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
            return f"{v:.3e}"
        return f"{v:.4f}"
    return str(v)


def markdown_table(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    """Rows of dicts -> a GitHub Markdown table (floats with 4 decimals or scientific)."""
    if not rows:
        return "(no rows)\n"
    columns = list(columns or rows[0].keys())
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def write_table(rows: Sequence[dict], workdir: str, name: str, columns: Sequence[str] | None = None,
                title: str | None = None) -> str:
    """Writes ``workdir/name.md`` and ``workdir/name.csv`` and returns the Markdown text. Each file is
    written whole or not at all (:func:`jaxcomp.files.write_atomic`): a run stopped while writing keeps
    the previous table, never half of one."""
    import io

    from jaxcomp.files import write_atomic

    os.makedirs(workdir, exist_ok=True)
    columns = list(columns or (rows[0].keys() if rows else []))
    md = markdown_table(rows, columns)
    write_atomic(os.path.join(workdir, name + ".md"), (f"## {title}\n\n" if title else "") + md)
    text = io.StringIO(newline="")
    w = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    write_atomic(os.path.join(workdir, name + ".csv"), text.getvalue())
    return md


def check_report_settings(workdir: str, config: Any, name: str = "results.json",
                          may_differ: Sequence[str] = ()) -> None:
    """``ValueError`` if ``workdir/name`` (a driver's JSON report holding, under ``"config"``, the config
    it was made with) was made with other settings than ``config`` (an ``ml_collections.ConfigDict``):
    a rerun with other settings (other ranks, another data seed) replaced the earlier results, which
    took minutes to hours, without a word. The dotted keys ``may_differ`` and the trainer's bookkeeping
    keys aside; with the same settings the report is made again, and one without a ``"config"``
    (written by an older version) is replaced as before. Call it before any work."""
    import json

    from jaxcomp.train import BOOKKEEPING_KEYS, settings_differences

    path = os.path.join(workdir, name)
    if not os.path.isfile(path):
        return
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} is not a readable report ({e}); move it aside or use another --workdir") from e
    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
        return
    differ = settings_differences(config, saved["config"], tuple(BOOKKEEPING_KEYS) + tuple(may_differ))
    if differ:
        raise ValueError(f"{workdir} holds results of other settings: {differ}; use another --workdir (or move "
                         f"{name} aside to replace them)")
