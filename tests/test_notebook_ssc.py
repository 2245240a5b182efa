"""Executes notebooks/ssc.ipynb top to bottom (slow: run with ``pytest -m slow``)."""

import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "notebooks", "ssc.ipynb")

# Even smaller settings than the notebook's own, injected in place of its settings cell.
TINY = """AMBIENT_DIM, SUBSPACE_DIM, N_SUBSPACES = 30, 4, 3
INTERSECTION_DIM, RHO, SIGMA = 1, 5.0, 0.3
SMAX_VALUES = (2, 4, 12)
SEED = 0"""


@pytest.mark.slow
def test_notebook_runs():
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:  # the stored outputs (b6cd5e2) are dropped: this run must make its own
        if cell.cell_type == "code":
            cell.outputs = []
    settings = [c for c in nb.cells if c.cell_type == "code" and "SMAX_VALUES =" in c.source]
    assert len(settings) == 1
    settings[0].source = TINY
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": os.path.dirname(NOTEBOOK)}})
    client.execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "SSC-MP" in text and "SSC-OMP" in text
