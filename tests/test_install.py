"""The installation: requirements.lock agrees with requirements.txt, the installed torch and
torchaudio load together, and a pair that does not load is one line from every script."""
import os
import subprocess
import sys

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import ROOT

from sax.machine import installed_version, locked_versions


def requirements():
    """{name: Requirement} of requirements.txt."""
    lines = (line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines())
    reqs = [Requirement(line) for line in lines if line]
    return {canonicalize_name(r.name): r for r in reqs}


def lock():
    """{name: (version, direct)} of requirements.lock; direct: pinned because requirements.txt asks for it."""
    text = (ROOT / "requirements.lock").read_text()
    pins, name = {}, None
    for line in text.splitlines():
        if "==" in line and not line.startswith(" ") and not line.startswith("#"):
            name, version = line.split(";")[0].strip().split("==")
            name = canonicalize_name(name)
            pins[name] = [version, False]
        elif name and "-r requirements.txt" in line:
            pins[name][1] = True
    return {k: tuple(v) for k, v in pins.items()}


def test_lock_says_which_python_and_platform_it_is_for():
    header = (ROOT / "requirements.lock").read_text().splitlines()[:3]
    assert any("--python-version 3.11" in line and "requirements.txt -o requirements.lock" in line for line in header), \
        "the lock's header must give the command that wrote it, with its Python version"


def test_every_requirement_is_locked_inside_its_range():
    pins = lock()
    for name, req in requirements().items():
        assert name in pins, f"{name} is in requirements.txt but not in requirements.lock: refresh the lock"
        assert req.specifier.contains(pins[name][0], prereleases=True), \
            f"{name}=={pins[name][0]} in the lock is outside requirements.txt's {req.specifier}"


def test_nothing_is_locked_as_direct_that_requirements_txt_does_not_ask_for():
    reqs = requirements()
    extra = [name for name, (_, direct) in lock().items() if direct and name not in reqs]
    assert not extra, f"the lock pins {extra} for requirements.txt, which no longer asks for them: refresh the lock"


def test_torch_and_torchaudio_are_pinned_as_one_pair():
    # torchaudio's wheels do not say which torch their compiled part was built against,
    # so any range wider than one version admits a pair that cannot load.
    reqs = requirements()
    for name in ("torch", "torchaudio"):
        specs = list(reqs[name].specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"{name} must be pinned (==) in requirements.txt"


def test_the_installed_pair_loads():
    """torchaudio's compiled part loads with the installed torch, and encodec on top of it
    (in a fresh interpreter: nothing the other tests imported can hide a failure)."""
    code = ("import torch, torchaudio, encodec, torchaudio.functional as F; "
            "x = F.resample(torch.randn(1, 2400), 24000, 16000); assert x.shape == (1, 1600), x.shape; "
            "print(torch.__version__, torchaudio.__version__)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, f"torch + torchaudio do not load together: {run.stderr[-800:]}"
    pins = lock()
    torch_v, audio_v = run.stdout.split()
    # Local build tags (+cu130, +cpu) are the same release.
    assert (torch_v.split("+")[0], audio_v.split("+")[0]) == (pins["torch"][0], pins["torchaudio"][0]), \
        f"installed torch {torch_v} + torchaudio {audio_v}, locked {pins['torch'][0]} + {pins['torchaudio'][0]}"


def test_locked_versions_reads_the_lock():
    pins = locked_versions()
    assert pins["torch"] == lock()["torch"][0] and pins["torchaudio"] == lock()["torchaudio"][0]
    assert locked_versions(ROOT / "no-such.lock") == {}


# A torchaudio whose compiled part does not load, as a mismatched wheel fails.
BROKEN_TORCHAUDIO = "raise OSError('Could not load this library: /venv/torchaudio/lib/libtorchaudio.so')\n"


@pytest.mark.parametrize("args", [
    ["data.py", "--demo-backing", "{out}/trio.wav"],
    ["train.py", "--out", "{out}/run", "--max-steps", "1"],
    ["generate.py", "--out", "{out}/samples"],
], ids=["data", "train", "generate"])
def test_a_pair_that_does_not_load_is_one_line(tmp_path, args):
    fake = tmp_path / "fake"
    (fake / "torchaudio").mkdir(parents=True)
    (fake / "torchaudio" / "__init__.py").write_text(BROKEN_TORCHAUDIO)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(fake)}
    run = subprocess.run([sys.executable, *[a.format(out=out) for a in args]], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got {len(lines)}: {run.stderr}"
    line = lines[0]
    assert "torchaudio does not import (Could not load this library" in line, line
    assert f"torch {installed_version('torch')}" in line, line
    assert f"torchaudio {installed_version('torchaudio')}" in line, line
    assert "pip install -r requirements.lock" in line and "the tested pair is torch" in line, line
    assert not out.exists(), "nothing may be written before the check"


def test_the_board_runner_names_a_missing_package(tmp_path):
    fake = tmp_path / "fake"
    (fake / "onnxruntime").mkdir(parents=True)
    (fake / "onnxruntime" / "__init__.py").write_text("raise ImportError('no onnxruntime here', name='onnxruntime')\n")
    run = subprocess.run([sys.executable, "deploy/onnx_runner.py", "folder", "--backing", "x.wav"], cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(fake)}, capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.strip().startswith("onnxruntime does not import") and "pip install numpy onnxruntime soundfile" \
        in run.stderr, run.stderr
