"""colab/*.ipynb run top to bottom, headless, on small data (what CI runs; each notebook's last
cells assert its results). TFSCALPEL_FULL is forced off so a set variable cannot turn this into
the full-data run."""
import glob
import os
import time

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "colab", "*.ipynb")))


def test_there_are_the_three_notebooks():
    names = [os.path.basename(p) for p in NOTEBOOKS]
    assert names == ["01_quick_start.ipynb", "02_node_pruning_cnn.ipynb",
                     "03_export_benchmark.ipynb"], names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs_top_to_bottom(path, monkeypatch, request):
    monkeypatch.setenv("TFSCALPEL_FULL", "0")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    started = time.time()
    # Raises CellExecutionError (with the cell and its traceback) on the first failing cell.
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": os.path.dirname(path)}}).execute()
    elapsed = time.time() - started
    last = [c for c in nb.cells if c.cell_type == "code"][-1]
    text = "".join(o.get("text", "") for o in last.outputs if o.get("output_type") == "stream")
    assert "OK" in text, f"the last cell of {path} did not report OK:\n{text}"
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.get("output_type") == "error"]
    assert not errors
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"\n[notebook] {os.path.basename(path)}: {elapsed:.1f} s")
