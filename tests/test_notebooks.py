"""Every notebook runs top to bottom (tiny settings via JAXCOMP_NOTEBOOK_FAST=1)."""

import pathlib

import pytest

HERE = pathlib.Path(__file__).resolve().parent
# notebooks with a dedicated test (tests/test_notebook_<name>.py, e.g. with injected settings) run there
NOTEBOOKS = [p for p in sorted((HERE.parent / "notebooks").glob("*.ipynb"))
             if not (HERE / f"test_notebook_{p.stem}.py").exists()]


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("JAXCOMP_NOTEBOOK_FAST", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors


def test_stored_outputs_name_no_machine_paths():
    """What a notebook shows as stored output (stdout, stderr, tracebacks, HTML) names no path of
    the machine that ran it: no home, work, temporary or virtual-environment folder."""
    import json
    import re

    machine = re.compile(r"(/(work|home|Users|tmp|private|root)/|[A-Za-z]:\\\\Users|site-packages)")
    for path in sorted((HERE.parent / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        for i, cell in enumerate(cells):
            for output in cell.get("outputs", []):
                text = json.dumps({k: v for k, v in output.items() if k != "metadata"})
                text = re.sub(r'"image/png": "[^"]*"', "", text)  # pictures are base64, not paths
                found = machine.search(text)
                if found:
                    context = text[max(0, found.start() - 40):found.end() + 40]
                    pytest.fail(f"{path.name} cell {i} stores a machine path: ...{context}...")
