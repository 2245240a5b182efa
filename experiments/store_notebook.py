"""Execute a notebook top to bottom and store it with its outputs (figures inline, no machine paths).

    python -m experiments.store_notebook notebooks/l3c_codec.ipynb [notebooks/strassen.ipynb ...]

Runs each notebook in a fresh ``python3`` kernel from its own folder, with matplotlib's inline
backend (a ``MPLBACKEND=Agg`` inherited from the shell would store no figure at all: it is
removed for the kernel) and without ``JAXCOMP_NOTEBOOK_FAST`` (the stored outputs are the
notebook's own settings). Refuses to store a notebook whose run raised an error, or one in which
a cell that makes a figure (``plt.show()``, ``plt.figure(``, ``plt.subplots(``) stored no picture. Machine paths in the
text outputs (the project folder, the home folder, the virtual environment) are replaced by
relative ones, as ``tests/test_notebooks.py::test_stored_outputs_name_no_machine_paths``
requires, and a progress bar's redraws are stored as its final state (:func:`collapse_progress`).
The file is replaced atomically; ``--check`` runs and reports without writing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def strip_paths(text: str) -> str:
    """``text`` without machine paths: an installed package's file as the package's own path
    (``.../site-packages/tqdm/auto.py`` -> ``tqdm/auto.py``), the project folder as ``.`` and the
    home folder as ``~``."""
    text = re.sub(r"[^\s'\"]*site-packages/", "", text)
    text = text.replace(PROJECT + os.sep, "").replace(PROJECT, ".")
    return text.replace(os.path.expanduser("~") + os.sep, "~/")


def _clean(value):
    if isinstance(value, str):
        return strip_paths(value)
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {k: (v if k == "image/png" else _clean(v)) for k, v in value.items()}
    return value


def collapse_progress(outputs: list[dict]) -> list[dict]:
    """A cell's outputs with consecutive stream outputs of one stream (``stdout``/``stderr``) merged
    and each line reduced to what a terminal shows of it: the text after its last carriage return
    (a progress bar's redraws, dozens of outputs, become its final state). Other outputs and their
    order are kept."""
    merged: list[dict] = []
    for output in outputs:
        if (output.get("output_type") == "stream" and merged and merged[-1].get("output_type") == "stream"
                and merged[-1].get("name") == output.get("name")):
            merged[-1] = {**merged[-1], "text": "".join(merged[-1]["text"]) + "".join(output["text"])}
        else:
            merged.append(dict(output))
    for output in merged:
        if output.get("output_type") == "stream":
            lines = "".join(output["text"]).split("\n")
            shown = [next((p for p in reversed(line.split("\r")) if p), "") for line in lines]
            output["text"] = "\n".join(shown).splitlines(keepends=True)  # nbformat's list of lines
    return [o for o in merged if o.get("output_type") != "stream" or "".join(o["text"]).strip()]


FIGURE_CALLS = ("plt.show()", "plt.figure(", "plt.subplots(")


def missing_figures(cells: list) -> list[int]:
    """Indices of code cells that make a figure (``plt.show()``, ``plt.figure(``, ``plt.subplots(``)
    but stored no picture."""
    out = []
    for i, cell in enumerate(cells):
        source = "".join(cell.get("source", ""))
        if cell.get("cell_type") != "code" or not any(call in source for call in FIGURE_CALLS):
            continue
        if not any("image/png" in o.get("data", {}) for o in cell.get("outputs", [])):
            out.append(i)
    return out


def store(path: str, check_only: bool = False, timeout: int = 1800) -> tuple[float, list[int]]:
    """Executes ``path``; returns ``(seconds, cells without their figure)``. Raises RuntimeError for
    a cell that raised (naming it), leaving the file untouched."""
    import nbclient
    import nbformat

    from jaxcomp.files import write_atomic

    try:
        nb = nbformat.read(path, as_version=4)
    except (ValueError, nbformat.ValidationError) as e:  # NotJSONError is a ValueError
        raise RuntimeError(f"{path}: not a readable notebook ({type(e).__name__}: {str(e)[:200]})") from e
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    env_backup = {k: os.environ.pop(k) for k in ("MPLBACKEND", "JAXCOMP_NOTEBOOK_FAST") if k in os.environ}
    t0 = time.perf_counter()
    try:
        nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": os.path.dirname(os.path.abspath(path))}}).execute()
    except nbclient.exceptions.CellExecutionError as e:
        raise RuntimeError(f"{path}: a cell raised; nothing stored:\n{str(e)[-1500:]}") from e
    except nbclient.exceptions.CellTimeoutError as e:
        raise RuntimeError(f"{path}: a cell ran past --timeout {timeout} s; nothing stored ({str(e)[:300]})") from e
    finally:
        os.environ.update(env_backup)
    seconds = time.perf_counter() - t0
    data = _clean(json.loads(nbformat.writes(nb)))
    for cell in data["cells"]:
        if cell.get("cell_type") == "code":
            cell["outputs"] = collapse_progress(cell["outputs"])
    missing = missing_figures(data["cells"])
    if not check_only and not missing:
        write_atomic(path, (json.dumps(data, indent=1, ensure_ascii=False) + "\n").encode())
    return seconds, missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="+")
    parser.add_argument("--check", action="store_true", help="run and report, do not write")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    args = parser.parse_args(argv)
    status = 0
    for path in args.notebooks:  # every path before the first run (a run may take half an hour)
        if not (path.endswith(".ipynb") and os.path.isfile(path)):
            print(f"error: {path}: not a notebook file", file=sys.stderr)
            return 2
    for path in args.notebooks:
        try:
            seconds, missing = store(path, args.check, args.timeout)
        except RuntimeError as e:
            print(f"error: {e}", file=sys.stderr)
            status = 1
            continue
        if missing:
            print(f"error: {path}: cells {missing} make a figure but stored none; not written", file=sys.stderr)
            status = 1
        else:
            print(f"{path}: ran in {seconds:.0f} s{'' if args.check else ', stored'}")
    return status


if __name__ == "__main__":
    sys.exit(main())
