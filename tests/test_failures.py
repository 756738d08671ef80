"""The cases of an independent fault test, one test each: a take never lost, a run never
silently wrong, one line instead of a traceback (tests/test_faults.py holds the older ones).

A full disk and a read-only folder are made real where the machine allows it (/proc takes
no new file, even from root) and otherwise simulated at the one call that writes (an
OSError with ENOSPC, as the kernel raises it).
"""
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import ROOT, quick_train_config

import ablation as A
import data
import generate as G
from sax import guard
import onnx_runner as R
import train as T
from sax.audio import CODEC_RATE, load_audio
from sax.codec import load_codec
from sax.files import read_metrics
from sax import machine
from sax.machine import set_threads


def one_line(stop):
    """The message of a SystemExit, asserted to be one line."""
    text = str(stop.value.code if hasattr(stop, "value") else stop)
    assert "\n" not in text.strip(), text
    return text


def files_of(folder):
    folder = Path(folder)
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def gen_config(trained, out, **kw):
    return G.GenerateConfig(checkpoint=str(trained[0] / "best"), out=str(out), device="cpu", **kw)


# ----------------------------------------------------------------------------
# 1. Audio in and out: an unnormalised file scaled as a whole; backing.wav limited
# ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def loud_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("loud")
    t = np.arange(3 * CODEC_RATE) / CODEC_RATE
    sine = np.sin(2 * np.pi * 220 * t).astype(np.float32)
    sf.write(folder / "huge.wav", 1e5 * sine, CODEC_RATE, subtype="FLOAT")
    sf.write(folder / "square.wav", np.sign(sine) * 1.0, CODEC_RATE, subtype="FLOAT")
    sf.write(folder / "silent.wav", np.zeros_like(sine), CODEC_RATE)
    return folder, sine


def test_an_unnormalised_file_is_scaled_as_a_whole_not_clipped(loud_files, capsys):
    folder, sine = loud_files
    audio, _ = load_audio(folder / "huge.wav")
    said = capsys.readouterr().out
    assert "scaled down as a whole by" in said and "99.8% of its samples past full scale" in said, said
    # the music kept: the sine at 0.98, not a square of clipped samples
    assert np.abs(audio).max() == pytest.approx(0.98, abs=1e-3)
    assert np.corrcoef(audio[0], sine)[0, 1] > 0.9999
    assert (np.abs(audio) > 0.97).mean() < 0.15  # a clipped one: 99.8%
    backing = R.read_backing(folder / "huge.wav", {"sample_rate": CODEC_RATE, "chunk_frames": 3, "hop": 320})
    assert "scaled down as a whole" in capsys.readouterr().out
    assert np.abs(backing - audio[0]).max() < 1e-5, "the runner and data.py must tame a file alike"


def test_backing_wav_is_limited_like_the_solo_and_the_mix(trained, loud_files, tmp_path):
    folder, _ = loud_files
    for name in ("huge", "square"):
        G.main(gen_config(trained, tmp_path / name, backing=str(folder / f"{name}.wav"), duration=1.0))
        for wav in ("backing.wav", "solo.wav", "mix.wav"):
            audio, _ = sf.read(tmp_path / name / wav)
            assert np.abs(audio).max() <= 0.981, (name, wav, np.abs(audio).max())


def test_a_silent_backing_is_said(trained, loud_files, tmp_path, capsys):
    G.main(gen_config(trained, tmp_path / "s", backing=str(loud_files[0] / "silent.wav"), duration=1.0))
    assert "NOTE: the backing is silent" in capsys.readouterr().out


def test_a_folder_or_a_text_file_as_backing_is_one_line(trained, tmp_path, monkeypatch):
    (tmp_path / "notes.wav").write_text("my notes")
    for backing, words in ((tmp_path, "is a folder: give one audio file"),
                           (tmp_path / "notes.wav", "not a readable .wav file")):
        with pytest.raises(SystemExit) as stop:
            G.main(gen_config(trained, tmp_path / "o", backing=str(backing)))
        assert words in one_line(stop) and "ffmpeg" not in one_line(stop)
    with pytest.raises(SystemExit, match="is a folder: give one WAV or FLAC file"):
        R.read_backing(tmp_path, {"sample_rate": CODEC_RATE})


# ----------------------------------------------------------------------------
# 2. Work never overwritten or lost
# ----------------------------------------------------------------------------

def test_a_second_train_on_one_out_refuses_naming_the_first(demo_dataset, tmp_path):
    out = tmp_path / "run"
    with guard.FolderLock(out, "train.py"):  # the first run, holding the folder
        with pytest.raises(SystemExit) as stop:
            T.train(quick_train_config(demo_dataset[0], out))
    assert f"in use by another train.py (pid {os.getpid()})" in one_line(stop)
    assert not out.exists(), "the refused run wrote into the first one's folder"
    assert not (tmp_path / ".run.lock").exists(), "the lock is gone with its holder"


def test_the_lock_is_released_by_kill_9(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]); "
                               "from sax import guard; guard.FolderLock(sys.argv[2], 'train.py').__enter__(); "
                               "print('held', flush=True); time.sleep(60)", str(ROOT), str(tmp_path / "run")],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(SystemExit, match=f"pid {holder.pid}"):
        guard.FolderLock(tmp_path / "run", "train.py").__enter__()
    holder.kill()
    holder.wait()
    with guard.FolderLock(tmp_path / "run", "train.py"):  # taken over: the kernel let it go
        pass


def test_a_second_generate_into_one_out_refuses(trained, exported, tmp_path):
    out = tmp_path / "take"
    with guard.FolderLock(out, "generate.py"):
        with pytest.raises(SystemExit) as stop:
            G.main(gen_config(trained, out))
    assert "in use by another generate.py" in one_line(stop)
    backing = tmp_path / "b.wav"
    sf.write(backing, np.zeros(CODEC_RATE, np.float32), CODEC_RATE)
    with guard.FolderLock(out, "onnx_runner.py"):
        with pytest.raises(SystemExit, match="in use by another onnx_runner.py"):
            R.main([str(exported[0]), "--backing", str(backing), "--out", str(out), "--no-pace"])


def test_outputs_are_checked_before_the_work(trained, exported, tmp_path, monkeypatch):
    (tmp_path / "taken.wav").write_text("a file")
    monkeypatch.setattr(G, "fetch_checkpoint", lambda *a: pytest.fail("the output must be checked first"))
    with pytest.raises(SystemExit) as stop:
        G.main(gen_config(trained, tmp_path / "taken.wav"))
    assert "is a file: give a folder" in one_line(stop)
    with pytest.raises(SystemExit) as stop:  # /proc takes no new file, even from root
        G.main(gen_config(trained, "/proc/take"))
    assert "cannot write in /proc" in one_line(stop)
    with pytest.raises(SystemExit) as stop:
        T.train(quick_train_config(trained[0], tmp_path / "taken.wav"))
    assert "is a file" in one_line(stop)
    monkeypatch.setattr(R.SoloStream, "__init__", lambda *a: pytest.fail("the take must not start"))
    backing = tmp_path / "b.wav"
    sf.write(backing, np.zeros(CODEC_RATE, np.float32), CODEC_RATE)
    with pytest.raises(SystemExit, match="cannot write in /proc"):
        R.main([str(exported[0]), "--backing", str(backing), "--out", "/proc/take", "--no-pace"])


def test_too_little_disk_is_refused_before_the_work(trained, exported, tmp_path, monkeypatch):
    full = shutil.disk_usage(tmp_path)._replace(free=1000)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: full)
    with pytest.raises(SystemExit) as stop:
        G.main(gen_config(trained, tmp_path / "take"))
    assert "MB free, and this will write about" in one_line(stop)
    assert not (tmp_path / "take").exists()
    backing = tmp_path / "b.wav"
    sf.write(backing, np.zeros(CODEC_RATE, np.float32), CODEC_RATE)
    with pytest.raises(SystemExit, match="MB free, and this will write about"):
        R.main([str(exported[0]), "--backing", str(backing), "--out", str(tmp_path / "t"), "--no-pace"])


def disk_full_at(monkeypatch, module, name, after):
    """module.name raises ENOSPC from its call number `after` on, as a full disk does."""
    original, calls = getattr(module, name), []

    def writer(*args, **kwargs):
        calls.append(1)
        if len(calls) >= after:
            raise OSError(errno.ENOSPC, "No space left on device", str(args[0]))
        return original(*args, **kwargs)
    monkeypatch.setattr(module, name, writer)


def test_a_disk_full_mid_take_leaves_the_folder_as_it_was(trained, tmp_path, monkeypatch, capsys):
    out = tmp_path / "take"
    G.main(gen_config(trained, out, duration=1.0))
    before = files_of(out)
    disk_full_at(monkeypatch, G, "write_audio", after=3)  # backing.wav, solo.wav written, then full
    with pytest.raises(SystemExit) as stop:
        with guard.one_line_errors():
            G.main(gen_config(trained, out, duration=1.0, seed=1, overwrite=True))
    assert stop.value.code == 1
    assert "the disk is full: could not write" in capsys.readouterr().err
    assert files_of(out) == before, "a take cut by a full disk changed the folder"


def test_a_disk_full_at_a_save_leaves_no_temporary_checkpoint(demo_dataset, tmp_path, monkeypatch, capsys):
    disk_full_at(monkeypatch, torch, "save", after=2)  # the first save lands, the second does not
    with pytest.raises(SystemExit):
        with guard.one_line_errors():
            T.train(quick_train_config(demo_dataset[0], tmp_path, page_sample_s=0, listen_test=False))
    assert "the disk is full" in capsys.readouterr().err
    assert not [p.name for p in tmp_path.glob(".*tmp*")], list(tmp_path.iterdir())
    assert json.loads((tmp_path / "best" / "config.json").read_text())["step"] == 3  # the save before is kept


def test_the_paper_build_checks_its_inputs_before_writing(tmp_path):
    sys.path.insert(0, str(ROOT / "docs" / "paper"))
    import build as B
    out = tmp_path / "build"
    out.mkdir()
    (out / "numbers.json").write_text("last build")
    runs, results = tmp_path / "runs", tmp_path / "results"
    runs.mkdir()
    shutil.copytree(ROOT / "docs" / "results", results)  # the committed tables, one spoiled below
    cases = ((json.dumps({"rows": {}}), "holds no rows"),
             ("{ cut", "is damaged"),
             (json.dumps({"rows": {"default": {"runs": [{}]}}, "seeds": [0]}), "lacks what the draft reads"))
    for table, words in cases:
        (results / B.SETTINGS).write_text(table)
        with pytest.raises(SystemExit) as stop:
            B.build(runs, out, results)
        assert words in one_line(stop), (words, str(stop.value))
        assert files_of(out) == {"numbers.json": b"last build"}, "a refused build wrote into --out"
    # the baselines' JSON (experiments/baselines.py): missing, or damaged
    (results / "baselines-random.json").unlink()
    with pytest.raises(SystemExit, match="baselines-random.json not found"):
        B.build(runs, out, results)
    (results / "baselines-random.json").write_text("{ cut")
    with pytest.raises(SystemExit, match="baselines-random.json is damaged"):
        B.build(runs, out, results)
    assert files_of(out) == {"numbers.json": b"last build"}, "a refused build wrote into --out"
    assert not list(tmp_path.glob(".build.tmp*"))


# ----------------------------------------------------------------------------
# 3. Resume is the run it resumes
# ----------------------------------------------------------------------------

@pytest.fixture
def interrupted(demo_dataset, tmp_path):
    """A run of 6 steps stopped at step 3 (latest/ at 3), as --max-steps 3 leaves it."""
    T.train(quick_train_config(demo_dataset[0], tmp_path, max_steps=3, page_sample_s=0, listen_test=False))
    return tmp_path


@pytest.mark.parametrize("change,words", [
    (dict(causal_encoder=True, attn_window=300), ["--causal-encoder True (the run's: False)",
                                                  "--attn-window 300 (the run's: None)"]),
    (dict(weight_decay=0.5), ["--weight-decay 0.5 (the run's: 0.1)"]),
    (dict(seed=5), ["--seed 5 (the run's: 0)"]),
    (dict(batch_size=8), ["--batch-size 8 (the run's: 4)"]),
    (dict(layers=3), ["--layers 3 (the run's: 0)"]),
])
def test_resume_refuses_a_changed_setting_with_both_values(demo_dataset, interrupted, change, words):
    before = files_of(interrupted)
    with pytest.raises(SystemExit) as stop:
        T.train(quick_train_config(demo_dataset[0], interrupted, max_steps=6, resume=True, page_sample_s=0,
                                   listen_test=False, **change))
    assert all(w in one_line(stop) for w in words) and "Drop the flag" in one_line(stop), one_line(stop)
    assert files_of(interrupted) == before


def test_resume_takes_the_runs_settings_and_a_longer_budget(demo_dataset, interrupted, tmp_path_factory, capsys):
    # Given only --resume and a budget, the run goes on with its own settings (window 1 s, batch 4) ...
    T.train(T.TrainConfig(data=str(demo_dataset[0]), out=str(interrupted), resume=True, max_steps=6,
                          device="cpu"))
    said = capsys.readouterr().out
    assert "--max-steps 6 (the run had 3)" in said and "--lr" not in said.split("settings:")[0], said
    whole = tmp_path_factory.mktemp("whole")
    T.train(quick_train_config(demo_dataset[0], whole, page_sample_s=0, listen_test=False))
    rows = lambda run: [{k: v for k, v in r.items() if k not in ("frames_per_s", "mfu")}  # noqa: E731
                        for r in read_metrics(run / "metrics.jsonl")]
    # ... and is the same run as one of 6 steps from the start, step for step
    assert rows(interrupted)[:3] == rows(whole)[:3]
    config = json.loads((interrupted / "latest" / "config.json").read_text())["train"]
    assert config["window_s"] == 1.0 and config["batch_size"] == 4 and config["max_steps"] == 6


def test_a_run_stopped_before_its_first_save_says_how_to_start_it_again(demo_dataset, trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    shutil.rmtree(run / "latest")  # kill -9 before the first save of latest/
    for resume in (False, True):
        with pytest.raises(SystemExit) as stop:
            T.train(quick_train_config(demo_dataset[0], run, resume=resume))
        assert "stopped before its first save" in one_line(stop) and "--overwrite starts it again" in one_line(stop)
    cfg = A.AblationConfig(out=str(tmp_path), data=str(demo_dataset[0]))
    folder = A.run_folder(cfg, "default", 0)
    folder.mkdir(parents=True)
    assert A.train_command(cfg, "default", 0)[-1] != "--overwrite"  # empty: a plain start
    (folder / "metrics.jsonl").write_text("")
    assert A.train_command(cfg, "default", 0)[-1] == "--overwrite"
    (folder / "latest").mkdir()
    assert A.train_command(cfg, "default", 0)[-1] == "--resume"


def test_a_window_longer_than_every_section_is_refused_before_allocating(demo_dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(T, "SoloTransformer", lambda *a: pytest.fail("nothing may be allocated first"))
    with pytest.raises(SystemExit) as stop:
        T.train(quick_train_config(demo_dataset[0], tmp_path / "r", window_s=1000))
    assert "--window-s 1000: longer than the longest training section" in one_line(stop)


# ----------------------------------------------------------------------------
# 4. Damaged files: one line naming the file and the fix
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("damage,words", [
    (lambda p: p.write_bytes(b""), "model.safetensors is damaged"),
    (lambda p: p.write_bytes(p.read_bytes()[:1000]), "model.safetensors is damaged"),
    (lambda p: p.write_bytes(b"\x00" * 64), "model.safetensors is damaged"),
])
def test_damaged_weights_are_one_line_in_every_script(trained, tmp_path, damage, words):
    folder = tmp_path / "ckpt"
    shutil.copytree(trained[0] / "best", folder)
    damage(folder / "model.safetensors")
    with pytest.raises(SystemExit) as stop:
        G.main(G.GenerateConfig(checkpoint=str(folder), out=str(tmp_path / "o"), device="cpu"))
    assert words in one_line(stop) and "copy the checkpoint folder whole" in one_line(stop)
    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    damage(run / "latest" / "model.safetensors")
    with pytest.raises(SystemExit) as stop:
        T.train(quick_train_config(json.loads((run / "latest" / "config.json").read_text())["train"]["data"],
                                   run, resume=True, max_steps=9))
    assert words in one_line(stop)


@pytest.mark.parametrize("edit,words", [
    (lambda c: {**c, "model": {**c["model"], "colour": "blue"}}, "unknown model setting colour"),
    (lambda c: {**c, "model": {**c["model"], "d_model": "wide"}}, "d_model is 'wide', not a whole number"),
    (lambda c: {k: v for k, v in c.items() if k != "model"}, 'has no "model" settings'),
    (lambda c: [1, 2], "not a JSON object"),
])
def test_an_edited_config_json_is_one_line(trained, tmp_path, edit, words):
    folder = tmp_path / "ckpt"
    shutil.copytree(trained[0] / "best", folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(edit(config)))
    with pytest.raises(SystemExit) as stop:
        G.main(G.GenerateConfig(checkpoint=str(folder), out=str(tmp_path / "o"), device="cpu"))
    assert words in one_line(stop), one_line(stop)


@pytest.mark.parametrize("damage,words", [
    (lambda p: p.write_bytes(p.read_bytes()[:500]), "state.pt is damaged"),
    (lambda p: p.write_bytes(b""), "state.pt is damaged"),
    (lambda p: p.unlink(), "state.pt not found"),
])
def test_a_damaged_state_pt_is_one_line_on_resume(trained, tmp_path, damage, words):
    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    damage(run / "latest" / "state.pt")
    data_dir = json.loads((run / "latest" / "config.json").read_text())["train"]["data"]
    with pytest.raises(SystemExit) as stop:
        T.train(quick_train_config(data_dir, run, resume=True, max_steps=9))
    assert words in one_line(stop) and "--overwrite" in one_line(stop)


def test_files_that_are_not_codec_weights_are_one_line(tmp_path):
    (tmp_path / "w.th").write_text("not weights")
    with pytest.raises(SystemExit) as stop:
        load_codec(str(tmp_path / "w.th"), 3.0, "cpu")
    assert "not the EnCodec 24 kHz weights" in one_line(stop)


def test_ablation_refuses_no_seeds_and_no_jobs():
    for cfg, words in ((A.AblationConfig(seeds=[]), "--seeds (none)"), (A.AblationConfig(jobs=0), "--jobs 0"),
                       (A.AblationConfig(seeds=["-1"]), "--seeds -1")):
        with pytest.raises(SystemExit) as stop:
            A.main(cfg)
        assert words in one_line(stop), one_line(stop)


def test_val_and_test_fractions_leave_songs_to_train_on(tmp_path):
    for val, test in ((1.5, 0.1), (0.6, 0.5)):
        with pytest.raises(SystemExit) as stop:
            data.build_dataset(data.DataConfig(out=str(tmp_path / "d"), val_fraction=val, test_fraction=test))
        assert "--val-fraction" in one_line(stop)
    assert not (tmp_path / "d").exists()


def test_ctrl_c_while_loading_is_one_line(tmp_path):
    proc = subprocess.Popen([sys.executable, "generate.py", "--out", str(tmp_path / "o")], cwd=ROOT,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)  # inside `import torch`, which takes a second or more
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err[-800:]
    assert err.strip().splitlines()[-1] == "stopped by Ctrl-C while loading: nothing was done"


def test_memory_run_out_is_one_line(capsys):
    with pytest.raises(SystemExit):
        with guard.one_line_errors("lower --batch-size"):
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:118] DefaultCPUAllocator: can't allocate memory")
    assert capsys.readouterr().err.strip() == ("out of memory ([enforce fail at alloc_cpu.cpp:118] "
                                               "DefaultCPUAllocator: can't allocate memory): lower --batch-size")
    with pytest.raises(ValueError):  # anything else is a bug: it keeps its traceback
        with guard.one_line_errors():
            raise ValueError("a bug")


# ----------------------------------------------------------------------------
# 6. Threads: the default does not thrash
# ----------------------------------------------------------------------------

def test_the_thread_default_times_one_against_all_and_says_so(monkeypatch, capsys):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setattr(machine, "matmul_ms", lambda k: {1: 5.0, 2: 9.0}[k])  # a busy neighbour
        assert set_threads(0) == 1 and torch.get_num_threads() == 1
        assert "threads: 1 of 2 (timed at start: 1 thread 5.0 ms, 2 threads 9.0 ms" in capsys.readouterr().out
        torch.set_num_threads(2)
        monkeypatch.setattr(machine, "matmul_ms", lambda k: {1: 9.0, 2: 5.0}[k])  # an idle machine
        assert set_threads(0) == 2
        assert set_threads(3) == 3 and torch.get_num_threads() == 3  # --threads N kept
    finally:
        torch.set_num_threads(before)
