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
