"""The example notebook runs top to bottom (acceptance of the classifier hand-off issue)."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).parent.parent / "examples" / "tour.ipynb"


def test_tour_notebook_executes(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # The kernel is this interpreter (ipykernel's native "python3"), so it sees the installed scip.
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = "".join(o.get("text", "") for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", []))
    assert "cells found" in outputs and "balanced accuracy" in outputs and "AnnData object" in outputs
    # Figures are shown inline (no Agg backend): the scatter, the cells and, last, scanpy's UMAP.
    figures = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
               for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(figures) >= 3 and figures[-1] == len(nb.cells) - 1
    assert "sc.pl.umap" in nb.cells[-1].source
    errors = [o for cell in nb.cells for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
