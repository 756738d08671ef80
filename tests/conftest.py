"""Shared fixtures: everything on the CPU, seeded, offline, with random-weight models."""
import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may reach the network
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def demo_dataset(tmp_path_factory):
    """A small demo dataset built once: 5 songs of 8 s, untrained codec (no weights needed)."""
    from data import DataConfig, build_dataset
    out = tmp_path_factory.mktemp("demo")
    cfg = DataConfig(out=str(out), demo_songs=5, demo_seconds=8.0, encodec_weights="untrained", device="cpu")
    return out, build_dataset(cfg)
