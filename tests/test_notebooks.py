"""The tutorial notebooks run top to bottom (small settings: the test sets their step counts)."""
import os

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
@pytest.mark.parametrize("name,env", [
    ("induction_heads.ipynb", {"MINITF_TUTORIAL_STEPS": "60"}),
    ("reversal_curse.ipynb", {"MINITF_TUTORIAL_STEPS": "30", "MINITF_TUTORIAL_PHASE2": "10"}),
])
def test_notebook_runs_top_to_bottom(name, env, tmp_path, monkeypatch):
    path = os.path.join(ROOT, "examples", name)
    notebook = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in notebook.cells if c.cell_type == "code"), "strip the outputs"
    for key, value in {**env, "MINITF_TUTORIAL_OUT": str(tmp_path), "MPLBACKEND": "Agg",
                       "PYTHONPATH": ROOT}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": ROOT}}).execute()
    errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
