"""The notebooks run from start to end on small data; their hidden cells assert what they show."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
CELL_TIMEOUT_S = 300


@pytest.mark.parametrize("name", ["quickstart.ipynb"])
def test_notebook_runs_and_its_checks_hold(name, cache_dir, monkeypatch):
    # The kernel inherits the environment: embeddings go to the session's cache, not the user's.
    monkeypatch.setenv("CLEANPAIRS_CACHE", str(cache_dir))
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    checks = [cell for cell in notebook.cells if "hide-cell" in cell.metadata.get("tags", [])]
    assert checks and all(cell.metadata["jupyter"]["source_hidden"] for cell in checks)
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on any failure
    figures = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    ]
    assert len(figures) == 2
