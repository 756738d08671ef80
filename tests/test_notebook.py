"""docs/colab.ipynb: a valid notebook, committed without outputs, whose shell commands use
only flags the scripts accept, and which runs top to bottom on the CPU.

The run is the notebook's smoke mode (NOTEBOOK_SMOKE=1: five short songs, the untrained
codec, a few steps), in a scratch folder holding a copy of the scripts, without the
cells tagged colab-only (clone and install, Hub login and upload: they need the network).
"""
import os
import re
import shlex
import shutil
import sys
from pathlib import Path

import nbformat
import pytest

import data
import generate
import train
from sax.settings import parse_settings

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "docs" / "colab.ipynb"
SCRIPTS = {"data.py": data.DataConfig, "train.py": train.TrainConfig, "generate.py": generate.GenerateConfig}


def notebook():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    return nb


def settings(nb, smoke):
    """The names the settings cell defines, in smoke mode or as on Colab."""
    cell = next(c for c in nb.cells if c.cell_type == "code" and "SMOKE =" in c.source)
    saved = os.environ.get("NOTEBOOK_SMOKE")
    os.environ["NOTEBOOK_SMOKE"] = "1" if smoke else "0"
    try:
        names = {}
        exec(cell.source, names)
    finally:
        if saved is None:
            del os.environ["NOTEBOOK_SMOKE"]
        else:
            os.environ["NOTEBOOK_SMOKE"] = saved
    return names


def test_notebook_is_valid_and_committed_without_outputs():
    nb = notebook()
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    assert "colab.research.google.com/assets/colab-badge.svg" in nb.cells[0].source
    assert nb.metadata["accelerator"] == "GPU"


@pytest.mark.parametrize("smoke", [False, True], ids=["colab", "smoke"])
def test_notebook_commands_use_only_flags_the_scripts_accept(smoke):
    nb = notebook()
    names = settings(nb, smoke)
    seen = set()
    for cell in nb.cells:
        for line in cell.source.splitlines() if cell.cell_type == "code" else []:
            command = re.match(r"\s*!python (\S+\.py)(.*)", line)
            if not command:
                continue
            script, rest = command.groups()
            # IPython expands {NAME} in a shell line with the notebook's variables.
            args = shlex.split(re.sub(r"\{(\w+)\}", lambda m: str(names.get(m.group(1), "x")), rest))
            parse_settings(SCRIPTS[script], args)  # an unknown flag or a bad value exits here
            seen.add(script)
    assert seen == set(SCRIPTS)


def test_notebook_runs_top_to_bottom_on_the_cpu(tmp_path, monkeypatch):
    from nbclient import NotebookClient
    nb = notebook()
    nb.cells = [c for c in nb.cells if "colab-only" not in c.metadata.get("tags", [])]
    for name in ("data.py", "model.py", "train.py", "generate.py", "requirements.lock"):
        shutil.copy(ROOT / name, tmp_path / name)
    for folder in ("sax", "deploy"):  # what the spine scripts lean on, and the deployment
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setenv("NOTEBOOK_SMOKE", "1")
    # `!python` must be this environment's Python, as it is Colab's on Colab.
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert (tmp_path / "runs/colab/best/model.safetensors").exists()
    assert (tmp_path / "runs/colab/index.html").exists() and (tmp_path / "samples/colab/index.html").exists()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    players = [o for o in outputs if "<audio" in o.get("data", {}).get("text/html", "")]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(players) == 4 and len(images) == 2  # 3 mixes of step 5 and the own backing's; two pictures
    assert not [o for o in outputs if o.output_type == "error"]
