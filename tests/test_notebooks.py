"""Every notebook runs top to bottom (tiny settings via JAXCOMP_NOTEBOOK_FAST=1)."""

import pathlib

import pytest

HERE = pathlib.Path(__file__).resolve().parent
# notebooks with a dedicated test (tests/test_notebook_<name>.py, e.g. with injected settings) run there
NOTEBOOKS = [p for p in sorted((HERE.parent / "notebooks").glob("*.ipynb"))
             if not (HERE / f"test_notebook_{p.stem}.py").exists()]


# notebooks that read ../shared/data (MNIST and the photos; JAXCOMP_DATA): skipped where it is absent
SHARED_DATA = HERE.parent.parent / "shared" / "data"
NEEDS_SHARED_DATA = {"understanding"}


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    if path.stem in NEEDS_SHARED_DATA:
        if not (SHARED_DATA / "mnist" / "mnist.npz").is_file() or not (SHARED_DATA / "photos").is_dir():
            pytest.skip(f"{path.name} needs ../shared/data (mnist/mnist.npz and photos/)")
        monkeypatch.setenv("JAXCOMP_DATA", str(SHARED_DATA))
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


def test_stored_notebooks_are_whole_runs():
    """A notebook stored with outputs holds one whole top-to-bottom run (``experiments/store_notebook``):
    every code cell executed in order, no error, and a picture in every cell that makes a figure (a
    run under ``MPLBACKEND=Agg`` stores none, which left figures the text refers to missing)."""
    import json
    import sys

    sys.path.insert(0, str(HERE.parent))
    from experiments.store_notebook import missing_figures

    for path in sorted((HERE.parent / "notebooks").glob("*.ipynb")):
        cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
        counts = [c.get("execution_count") for c in cells]
        if not any(counts) and not any(c.get("outputs") for c in cells):
            continue  # stored without outputs: fine
        assert counts == list(range(1, len(cells) + 1)), f"{path.name}: execution counts {counts}"
        errors = [i for i, c in enumerate(cells) for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, f"{path.name}: code cells {errors} stored an error"
        assert not missing_figures(json.loads(path.read_text())["cells"]), f"{path.name}: figures missing"


def test_progress_bars_are_stored_as_their_final_state():
    """``store_notebook`` stores a progress bar's redraws (one stream output each, joined by carriage
    returns) as the line a terminal shows at the end, keeps other text and the order of outputs, and
    no stored notebook holds a carriage return or a printed warning in a text output."""
    import json
    import sys

    sys.path.insert(0, str(HERE.parent))
    from experiments.store_notebook import collapse_progress

    def stream(name, text):
        return {"output_type": "stream", "name": name, "text": text}

    image = {"output_type": "display_data", "data": {"image/png": "..."}, "metadata": {}}
    outputs = [stream("stderr", "\rtrain:   0%| 0/9"), stream("stderr", "\rtrain:  50%| 4/9"),
               stream("stdout", "step 4\n"), stream("stderr", "\rtrain: 100%| 9/9\n"),
               stream("stdout", "a\nb\r\n"), image, stream("stdout", "after\rAFTER\n")]
    got = collapse_progress(outputs)
    assert [(o["output_type"], "".join(o.get("text", ""))) for o in got] == [
        ("stream", "train:  50%| 4/9"), ("stream", "step 4\n"), ("stream", "train: 100%| 9/9\n"),
        ("stream", "a\nb\n"), ("display_data", ""), ("stream", "AFTER\n")]
    assert got[4] == image and outputs[0]["text"] == "\rtrain:   0%| 0/9"  # its input is not modified
    for path in sorted((HERE.parent / "notebooks").glob("*.ipynb")):
        for i, cell in enumerate(json.loads(path.read_text())["cells"]):
            for output in cell.get("outputs", []):
                text = "".join(output.get("text", ""))
                assert "\r" not in text, f"{path.name} cell {i}: a progress bar's redraws"
                assert "Warning:" not in text, f"{path.name} cell {i} stores a warning: {text[:200]}"
