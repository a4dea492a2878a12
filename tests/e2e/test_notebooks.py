"""Every notebook: paired with its jupytext script, stored without outputs, and it runs."""

from __future__ import annotations

from pathlib import Path

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
ALL = sorted(NOTEBOOKS.glob("*.ipynb"))

pytestmark = pytest.mark.slow


def test_there_are_the_four_notebooks() -> None:
    assert [p.stem for p in ALL] == [
        "01_dpsim_replay",
        "02_emulated_hour",
        "03_forecasts",
        "04_flisr_case",
    ]


@pytest.mark.parametrize("path", ALL, ids=[p.stem for p in ALL])
def test_notebook_is_paired_clean_and_runs(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    script = jupytext.read(path.with_suffix(".py"))
    code = [c.source for c in notebook.cells if c.cell_type == "code"]
    assert code == [c.source for c in script.cells if c.cell_type == "code"], "run jupytext --sync"
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, "stored with outputs"
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": NOTEBOOKS}}
    ).execute()
    images = [
        out
        for cell in notebook.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if "image/png" in out.get("data", {})
    ]
    assert images, "a notebook shows what it found in pictures"
