"""Shared fixtures: everything on the CPU, seeded, offline, with random-weight models."""
import os
import sys
from pathlib import Path

import pytest
import torch
from sax.codec import load_codec_for
from sax.dataset import load_split
from sax.checkpoints import load_model

ROOT = Path(__file__).resolve().parent.parent
# the spine scripts and sax/ at the top; the deployment and the experiments in folders of their own
for folder in (ROOT, ROOT / "deploy", ROOT / "experiments"):
    sys.path.insert(0, str(folder))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may reach the network
os.environ.setdefault("OMP_NUM_THREADS", "1")  # the scripts that tests run as child processes, too

# One thread: tiny models run faster on one than on several, the figures repeat exactly,
# and a busy machine (another process on the cores) does not slow the suite tenfold.
torch.set_num_threads(1)


def pytest_configure(config):
    """librosa's trackers compiled (numba) in each process before any test runs. On a fresh
    install, a worker whose first librosa call came deep into the suite, after other tests
    had run in it, crashed in numba's peak picking (a segfault, in two runs of the suite,
    in the same test; the test alone passes); compiled first, they have not crashed."""
    import numpy as np
    import librosa
    y = np.random.default_rng(0).normal(0, 0.1, 24000).astype(np.float32)
    librosa.onset.onset_detect(y=y, sr=24000, units="time")
    librosa.beat.beat_track(y=y, sr=24000, units="time")


@pytest.fixture(scope="session")
def demo_dataset(tmp_path_factory):
    """A small demo dataset built once: 5 songs of 8 s, untrained codec (no weights needed)."""
    from data import DataConfig, build_dataset
    out = tmp_path_factory.mktemp("demo")
    cfg = DataConfig(out=str(out), demo_songs=5, demo_seconds=8.0, encodec_weights="untrained", device="cpu")
    return out, build_dataset(cfg)


def quick_train_config(data_dir, out, **overrides):
    """TrainConfig for tests: the tiny preset on 1 s windows, a handful of steps, CPU."""
    from train import TrainConfig
    settings = dict(data=str(data_dir), out=str(out), preset="tiny", window_s=1.0, batch_size=4, target_batch=8,
                    max_steps=6, warmup_steps=2, eval_every=3, save_every=3, eval_windows=8, device="cpu", seed=0)
    settings.update(overrides)
    return TrainConfig(**settings)


@pytest.fixture(scope="session")
def trained(demo_dataset, tmp_path_factory):
    """(run folder, summary) of a short tiny-model run on the demo dataset."""
    from train import train
    out = tmp_path_factory.mktemp("run")
    return out, train(quick_train_config(demo_dataset[0], out))


@pytest.fixture(scope="session")
def trained_causal(demo_dataset, tmp_path_factory):
    """A short run of a causal (streamable) tiny model with a 40-frame attention window."""
    from train import train
    out = tmp_path_factory.mktemp("causal")
    train(quick_train_config(demo_dataset[0], out, causal_encoder=True, attn_window=40, max_steps=3))
    return out


@pytest.fixture(scope="session")
def exported(trained_causal, tmp_path_factory):
    """(export folder, model, codec, codec numbers, val backing codes [K, T], val solo codes [K, T])."""
    import numpy as np
    import onnx_export
    folder = trained_causal / "best"
    out = tmp_path_factory.mktemp("onnx") / "solo_onnx"
    onnx_export.main(onnx_export.ExportConfig(checkpoint=str(folder), out=str(out), chunk_ms=80))
    model, config = load_model(folder)
    codec, numbers = load_codec_for(config, folder, "", "cpu")
    backing, solo = load_split(config["data"]["dir"], "train")  # sections of the run's songs, end to end
    return out, model, codec, numbers, backing[:, :150].astype(np.int64), solo[:, :150].astype(np.int64)
