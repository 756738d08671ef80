"""Fault tests: a careless or hostile user. Each case asserts the exit code, that there is
no traceback (one line), the message, and that nothing already written changed.

Bad audio in (NaN, a 1e6 spike, a header promising hours); Ctrl-C in train.py (an exact
resume) and in the runner (the take so far is kept); nothing overwritten without
--overwrite; settings refused before any work.
"""
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import ROOT, quick_train_config

import data
import generate as G
from sax import settings
import onnx_runner as R
import train as T
from sax.audio import CODEC_RATE, SkipSong, load_audio, write_audio
from sax.dataset import Windows
from sax.demo import render_demo_song
from sax.files import read_metrics
from sax.settings import parse_settings


def run_script(*args, timeout=300):
    """A script as a user runs it -> (exit code, stdout, stderr)."""
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return proc.returncode, proc.stdout, proc.stderr


def one_line_failure(code, err, *words):
    """Exit code 1, no traceback, the last stderr line holds every word."""
    assert code == 1, f"exit code {code}: {err[-600:]}"
    assert "Traceback" not in err, err[-1500:]
    line = err.strip().splitlines()[-1]
    assert all(w in line for w in words), line


def snapshot(folder):
    """{relative path: bytes} of every file under folder: 'nothing changed' is this, equal."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def bad_backings(tmp_path_factory):
    """A 3 s demo backing, and three damaged copies: NaNs, one sample at 1e6, a header promising 3 hours."""
    folder = tmp_path_factory.mktemp("bad")
    audio = render_demo_song(70, 3.0, seed=0)[0].astype(np.float32)
    files = {"good": audio, "nan": audio.copy(), "spike": audio.copy()}
    files["nan"][1000:2000] = np.nan
    files["spike"][3000] = 1e6
    for name, a in files.items():
        sf.write(folder / f"{name}.wav", a, CODEC_RATE, subtype="FLOAT")
    raw = bytearray((folder / "good.wav").read_bytes())
    at = raw.index(b"data")
    raw[at + 4:at + 8] = (3 * 3600 * CODEC_RATE * 4).to_bytes(4, "little")  # 3 hours of float32 promised
    (folder / "short.wav").write_bytes(bytes(raw))
    return folder


# ----------------------------------------------------------------------------
# Audio in, audio out
# ----------------------------------------------------------------------------

def assert_safe_level(path, ceiling=0.99):
    """A written file as a listener meets it: finite, below full scale, and not a wall of clipped samples."""
    audio, _ = sf.read(path, dtype="float32")
    assert np.isfinite(audio).all(), f"{path}: non-finite samples"
    assert np.abs(audio).max() <= ceiling, f"{path}: peak {np.abs(audio).max()}"
    assert (np.abs(audio) > 0.9).mean() < 0.01, f"{path}: {(np.abs(audio) > 0.9).mean():.0%} of samples near full scale"


def test_data_readers_refuse_nan_and_tame_a_spike(bad_backings, capsys):
    with pytest.raises(SkipSong, match=r"1000 samples are not finite \(NaN or inf\), the first at 0.042 s"):
        load_audio(bad_backings / "nan.wav")
    audio, _ = load_audio(bad_backings / "spike.wav")
    assert np.abs(audio).max() <= 1.0
    assert "1 samples past full scale (peak 1e+06, the first at 0.125 s)" in capsys.readouterr().out
    load_audio(bad_backings / "short.wav")
    assert "its header promises 10800.0 s, the file holds 3.0 s" in capsys.readouterr().out
    # data.py's songs go through the same reader: a damaged recording is skipped, with its reason.
    with pytest.raises(SkipSong, match="not finite"):
        data.checked_audio({"path": bad_backings / "nan.wav"}, data.DataConfig())


def test_generate_refuses_a_nan_backing_in_one_line(trained, bad_backings, tmp_path):
    out = tmp_path / "out"
    code, _, err = run_script("generate.py", "--checkpoint", trained[0] / "best", "--backing",
                              bad_backings / "nan.wav", "--out", out, "--device", "cpu")
    one_line_failure(code, err, "nan.wav", "not finite", "0.042 s", "export it again")
    assert not out.exists(), "nothing may be written for a refused backing"


def test_generate_over_a_spike_is_never_full_scale(trained, bad_backings, tmp_path, capsys):
    out = tmp_path / "out"
    G.main(G.GenerateConfig(checkpoint=str(trained[0] / "best"), backing=str(bad_backings / "spike.wav"),
                            out=str(out), device="cpu"))
    assert "past full scale" in capsys.readouterr().out, "the spike must be said"
    for name in ("solo.wav", "mix.wav"):
        assert_safe_level(out / name)
    assert_safe_level(out / "backing.wav", ceiling=1.0)  # the backing as heard: the click clipped to full scale


def test_writers_refuse_non_finite_audio_and_bound_the_level(tmp_path, capsys):
    path = tmp_path / "x.wav"
    write_audio(path, np.zeros(100, np.float32), CODEC_RATE)
    before = path.read_bytes()
    bad = np.zeros(100, np.float32)
    bad[50] = np.nan
    with pytest.raises(SystemExit, match="not finite"):
        write_audio(path, bad, CODEC_RATE)
    with pytest.raises(SystemExit, match="not finite"):
        R.write_wav(path, bad, CODEC_RATE)
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["x.wav"], "a refused write changed files"
    loud = np.full(100, 3.0, np.float32)
    write_audio(tmp_path / "loud.wav", loud, CODEC_RATE)
    R.write_wav(tmp_path / "loud2.wav", loud, CODEC_RATE)
    assert "past full scale" in capsys.readouterr().out
    for name in ("loud.wav", "loud2.wav"):
        assert np.abs(sf.read(tmp_path / name)[0]).max() <= 0.99


def test_runner_refuses_nan_and_tames_a_spike(exported, bad_backings, tmp_path, capsys):
    folder = exported[0]
    with pytest.raises(SystemExit, match=r"nan.wav: 1000 samples are not finite .* 0.042 s"):
        R.main([str(folder), "--backing", str(bad_backings / "nan.wav"), "--out", str(tmp_path / "n"), "--no-pace"])
    assert not (tmp_path / "n").exists()
    R.main([str(folder), "--backing", str(bad_backings / "spike.wav"), "--out", str(tmp_path / "s"), "--no-pace",
            "--variant", "fp32"])
    out = capsys.readouterr().out
    assert "past full scale" in out
    for name in ("solo.wav", "mix.wav"):
        assert_safe_level(tmp_path / "s" / name)


# ----------------------------------------------------------------------------
# Ctrl-C in train.py: saved at the end of the step, resumed bit for bit, exit 130
# ----------------------------------------------------------------------------

def weights(folder):
    from safetensors.torch import load_file
    return load_file(str(folder / "model.safetensors"))


def metric_rows(run):
    return [{k: v for k, v in row.items() if k not in ("frames_per_s", "mfu")}
            for row in read_metrics(run / "metrics.jsonl")]


@pytest.fixture(scope="module")
def uninterrupted(demo_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    T.train(quick_train_config(demo_dataset[0], out, page_sample_s=0))
    return out


# 2 micro-batches per step: draw 3 is the first of step 2 (Ctrl-C between its two
# micro-steps), draw 8 the last of step 4 (after the evaluation of step 3).
@pytest.mark.parametrize("draw", [3, 8])
def test_ctrl_c_then_resume_is_bit_identical(demo_dataset, uninterrupted, tmp_path, monkeypatch, draw):
    cfg = quick_train_config(demo_dataset[0], tmp_path, page_sample_s=0)
    original, calls = Windows.sample, []

    def sample_then_interrupt(self, batch, gen, where=False):
        calls.append(1)
        if len(calls) == draw:
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, in the middle of the step
        return original(self, batch, gen, where)

    monkeypatch.setattr(Windows, "sample", sample_then_interrupt)
    with pytest.raises(SystemExit) as stop:
        T.train(cfg)
    assert stop.value.code == 130, "Ctrl-C must exit 130, as shells expect"
    step = (draw + 1) // 2
    assert json.loads((tmp_path / "latest" / "config.json").read_text())["step"] == step, \
        "the step under way must finish before the save"
    monkeypatch.setattr(Windows, "sample", original)
    T.train(quick_train_config(demo_dataset[0], tmp_path, page_sample_s=0, resume=True))
    whole, resumed = weights(uninterrupted / "latest"), weights(tmp_path / "latest")
    assert all(torch.equal(whole[k], resumed[k]) for k in whole), "resumed weights differ from the whole run's"
    assert metric_rows(tmp_path) == metric_rows(uninterrupted), "resumed metrics differ from the whole run's"


def test_a_first_run_that_builds_the_demo_corpus_trains_as_a_second_run(demo_dataset, tmp_path,
                                                                        monkeypatch):
    """python train.py on a fresh clone builds data/demo in its own process, and building
    draws from torch's generator (the codec's weights): the seed must come after it, so that
    the first run and every later one start from the same weights and train alike."""
    monkeypatch.chdir(tmp_path)

    def build_drawing(config):  # what the real build does to the generator, in little
        torch.rand(1000)
        shutil.copytree(demo_dataset[0], config.out)

    monkeypatch.setattr(T.data, "build_dataset", build_drawing)
    first, again = (quick_train_config(T.DEFAULT_DATA, tmp_path / name, page_sample_s=0,
                                       max_steps=2, listen_test=False) for name in ("a", "b"))
    T.train(first)     # builds data/demo here
    T.train(again)     # finds it
    assert metric_rows(tmp_path / "a") == metric_rows(tmp_path / "b")


def test_a_ctrl_c_while_the_ranks_agree_is_not_lost(demo_dataset, tmp_path, monkeypatch):
    """A Ctrl-C that lands while the ranks agree whether to stop (the all-reduce, where a rank
    spends much of each step waiting for the others) stops the run at the next step's end;
    the agreement must not overwrite the flag the handler raised."""
    cfg = quick_train_config(demo_dataset[0], tmp_path, page_sample_s=0)
    calls = []

    def agree_while_interrupted(flag, world):
        calls.append(1)
        if len(calls) == 2:  # the agreement at the end of step 2
            os.kill(os.getpid(), signal.SIGINT)  # handled before this call returns the flag
        return flag

    monkeypatch.setattr(T, "any_rank", agree_while_interrupted)
    with pytest.raises(SystemExit) as stop:
        T.train(cfg)
    assert stop.value.code == 130, "the Ctrl-C was lost: the run went on to its last step"
    assert json.loads((tmp_path / "latest" / "config.json").read_text())["step"] == 3


def test_ctrl_c_in_a_real_run_says_how_to_continue(demo_dataset, tmp_path):
    out = tmp_path / "run"
    args = ["train.py", "--data", demo_dataset[0], "--out", out, "--preset", "tiny", "--window-s", "1",
            "--batch-size", "4", "--target-batch", "8", "--max-steps", "400", "--eval-every", "400",
            "--save-every", "400", "--eval-windows", "4", "--device", "cpu", "--threads", "1", "--page-sample-s", "0",
            "--no-listen-test"]
    proc = subprocess.Popen([sys.executable, *map(str, args)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while time.time() < deadline and not ((out / "metrics.jsonl").exists()
                                          and len((out / "metrics.jsonl").read_text().splitlines()) >= 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, (proc.returncode, stderr[-800:])
    assert "Traceback" not in stderr, stderr[-1500:]
    assert "interrupted: saved" in stdout and "--resume" in stdout, stdout[-600:]
    step = json.loads((out / "latest" / "config.json").read_text())["step"]
    assert step == len(read_metrics(out / "metrics.jsonl")), "latest/ must hold the last finished step"


# ----------------------------------------------------------------------------
# Nothing overwritten without --overwrite
# ----------------------------------------------------------------------------

def test_data_py_keeps_an_existing_demo_backing_and_refuses_a_file_as_out(tmp_path):
    path = tmp_path / "trio.wav"
    path.write_bytes(b"my own recording")
    code, _, err = run_script("data.py", "--demo-backing", path, "--demo-seconds", "2")
    one_line_failure(code, err, "trio.wav already exists", "--overwrite")
    assert path.read_bytes() == b"my own recording"
    code, _, err = run_script("data.py", "--out", path, "--encodec-weights", "untrained")
    one_line_failure(code, err, "is a file", "give a folder")
    assert path.read_bytes() == b"my own recording"
    code, _, _ = run_script("data.py", "--demo-backing", path, "--demo-seconds", "2", "--overwrite")
    assert code == 0 and sf.info(str(path)).duration == pytest.approx(2.0)


def test_data_py_keeps_a_dataset_of_other_settings(demo_dataset, tmp_path):
    copy = tmp_path / "demo"
    shutil.copytree(demo_dataset[0], copy)
    before = snapshot(copy)
    with pytest.raises(SystemExit, match=r"other settings \(demo_seconds\).*--overwrite"):
        data.build_dataset(data.DataConfig(out=str(copy), demo_songs=5, demo_seconds=9.0,
                                           encodec_weights="untrained", device="cpu"))
    assert snapshot(copy) == before


def test_train_keeps_an_existing_run(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    before = snapshot(run)
    data_dir = json.loads((run / "best" / "config.json").read_text())["train"]["data"]
    with pytest.raises(SystemExit, match="already holds a run .*--resume continues it, --overwrite starts over"):
        T.train(quick_train_config(data_dir, run))
    assert snapshot(run) == before


def test_runner_keeps_an_existing_take(exported, bad_backings, tmp_path):
    folder = exported[0]
    out = tmp_path / "take"
    out.mkdir()
    (out / "solo.wav").write_bytes(b"last night's take")
    with pytest.raises(SystemExit, match="already holds solo.wav: pass --overwrite"):
        R.main([str(folder), "--backing", str(bad_backings / "good.wav"), "--out", str(out), "--no-pace"])
    assert (out / "solo.wav").read_bytes() == b"last night's take"
    (tmp_path / "afile").write_text("x")
    with pytest.raises(SystemExit, match="is a file"):
        R.main([str(folder), "--backing", str(bad_backings / "good.wav"), "--out", str(tmp_path / "afile")])


# ----------------------------------------------------------------------------
# One line, naming the file and the fix
# ----------------------------------------------------------------------------

def run_edited(exported, bad_backings, tmp_path, edit, resign=False):
    """The runner on a copy of the export whose runner.json has `edit` -> its one line.
    resign: the digest of the numbers written again, as someone editing with care would."""
    folder = tmp_path / "edited"
    shutil.copytree(exported[0], folder)
    numbers = {**json.loads((folder / "runner.json").read_text()), **edit}
    if resign:
        numbers["numbers_sha256"] = R.numbers_digest(numbers)
    (folder / "runner.json").write_text(json.dumps(numbers))
    with pytest.raises(SystemExit) as err:
        R.main([str(folder), "--backing", str(bad_backings / "good.wav"), "--out", str(tmp_path / "o"),
                "--no-pace", "--variant", "fp32"])
    assert not (tmp_path / "o").exists()
    return str(err.value)


@pytest.mark.parametrize("edit,words", [
    ({"chunk_frames": 0}, ["chunk_frames", "not a valid number", "export the folder again"]),
    ({"lookahead": -3}, ["lookahead", "not a valid number", "export the folder again"]),
    ({"lookahead": 50}, ["runner.json was edited", "export the folder again"]),
    ({"hop": 160}, ["runner.json was edited", "export the folder again"]),
])
def test_an_edited_runner_json_is_one_line(exported, bad_backings, tmp_path, edit, words):
    message = run_edited(exported, bad_backings, tmp_path, edit)
    assert all(w in message for w in words), message


# Edited with the digest made again: the graphs' own shapes still catch each number they hold.
@pytest.mark.parametrize("edit,words", [
    ({"attn_window": 64}, ["rings for layers, heads, slots", "export the folder again"]),
    ({"d_model": 256, "head_dim": 128}, ["rings for layers, heads, slots"]),
    ({"n_codebooks": 3}, ["codebooks, codes, width", "export the folder again"]),
    ({"card": 512}, ["codebooks, codes, width", "[4, 1024", "[4, 512"]),
    ({"hop": 160}, ["one hop of 160 samples", "export the folder again"]),
])
def test_numbers_that_disagree_with_the_graphs_are_one_line(exported, bad_backings, tmp_path, edit, words):
    message = run_edited(exported, bad_backings, tmp_path, edit, resign=True)
    assert all(w in message for w in words), message


def test_weights_of_another_preset_are_one_line(trained, tmp_path):
    folder = tmp_path / "mixed"
    shutil.copytree(trained[0] / "best", folder)
    config = json.loads((folder / "config.json").read_text())
    config["model"]["d_model"] = 256  # config.json of a wider model beside tiny's weights
    (folder / "config.json").write_text(json.dumps(config))
    code, _, err = run_script("generate.py", "--checkpoint", folder, "--out", tmp_path / "o", "--device", "cpu")
    one_line_failure(code, err, "model.safetensors does not fit", "config.json", "copy the checkpoint folder whole")
    assert not (tmp_path / "o").exists()


def test_ctrl_c_in_the_runner_keeps_the_take_so_far(exported, bad_backings, tmp_path, monkeypatch, capsys):
    original, pushed = R.SoloStream.push, []

    def push_then_stop(self, frame):
        pushed.append(1)
        if len(pushed) == 60:  # 0.8 s into the take
            raise KeyboardInterrupt
        return original(self, frame)

    monkeypatch.setattr(R.SoloStream, "push", push_then_stop)
    with pytest.raises(SystemExit) as stop:
        R.main([str(exported[0]), "--backing", str(bad_backings / "good.wav"), "--out", str(tmp_path / "t"),
                "--no-pace", "--variant", "fp32"])
    assert stop.value.code == 130
    assert "stopped by Ctrl-C: wrote the" in capsys.readouterr().out
    solo, rate = sf.read(tmp_path / "t" / "solo.wav")
    assert 0.3 < len(solo) / rate < 0.8, f"{len(solo) / rate} s kept of a take stopped at 0.8 s"
    assert json.loads((tmp_path / "t" / "report.json").read_text())["interrupted"] is True


# ----------------------------------------------------------------------------
# Settings refused before any work
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("flag,value,words", [
    ("--temperature", "-1", ["--temperature -1.0", "must be at least 0"]),
    ("--top-k", "-5", ["--top-k -5", "must be at least 0"]),
    ("--top-p", "1.5", ["--top-p 1.5", "must be above 0, at most 1"]),
    ("--top-p", "0", ["--top-p 0.0", "must be above 0, at most 1"]),
    ("--cfg-coef", "-3", ["--cfg-coef -3.0", "must be at least 0"]),
    ("--cfg-coef", "nan", ["--cfg-coef nan", "must be a finite number"]),
    ("--temperature", "nan", ["--temperature nan", "must be a finite number"]),
])
def test_generate_refuses_bad_sampling_settings(tmp_path, monkeypatch, flag, value, words):
    monkeypatch.setattr(G, "fetch_checkpoint", lambda *a: pytest.fail("a setting must be refused before loading"))
    cfg = G.GenerateConfig(out=str(tmp_path / "o"))
    field = next(f for f in dataclasses.fields(cfg) if settings.flag_of(f) == flag)
    setattr(cfg, field.name, type(getattr(cfg, field.name))(value))  # as built in code ...
    with pytest.raises(SystemExit) as err:
        G.main(cfg)
    assert all(w in str(err.value) for w in words), str(err.value)
    with pytest.raises(SystemExit) as err:  # ... and as parsed from the command line
        parse_settings(G.GenerateConfig, [flag, value, "--out", str(tmp_path / "o")])
    assert all(w in str(err.value) for w in words), str(err.value)
    assert not (tmp_path / "o").exists()


def test_sampling_ranges_are_in_the_help():
    code, out, _ = run_script("generate.py", "--help")
    assert code == 0 and "at least 0" in out and "above 0, at most 1" in out
    code, out, _ = run_script("deploy/onnx_runner.py", "--help")
    assert code == 0 and "at least 1" in out


@pytest.mark.parametrize("threads", ["0", "-1", "x"])
def test_runner_refuses_threads_below_one(threads):
    code, _, err = run_script("deploy/onnx_runner.py", "folder", "--backing", "x.wav", "--threads", threads)
    assert code == 2 and "Traceback" not in err and "--threads" in err.strip().splitlines()[-1], err


def test_stream_on_a_non_causal_checkpoint_is_refused_before_loading(trained, tmp_path, monkeypatch):
    monkeypatch.setattr(G, "load_model", lambda *a: pytest.fail("the weights must not load first"))
    with pytest.raises(SystemExit, match="--stream needs a causal model"):
        G.main(G.GenerateConfig(checkpoint=str(trained[0] / "best"), stream=True, out=str(tmp_path / "o")))


def test_a_folder_trimmed_to_one_variant_runs_it(exported, bad_backings, tmp_path):
    folder = tmp_path / "int8_only"
    shutil.copytree(exported[0], folder)
    for graph in {*R.STEP_GRAPHS["fp32"], *R.STEP_GRAPHS["int4"], "codec_decoder.onnx"}:
        (folder / graph).unlink()  # the int8 variant decodes with codec_decoder.int8.onnx
    report = R.main([str(folder), "--backing", str(bad_backings / "good.wav"), "--out", str(tmp_path / "o"),
                     "--no-pace", "--variant", "int8"])
    assert report["solo_frames"] > 0
    # the trimmed folder plays what the whole one plays with its int8 graphs, code for code
    def codes(where):
        numbers = R.read_folder(where, ["int8"])
        backing = R.read_backing(bad_backings / "good.wav", numbers)
        stream = R.SoloStream(where, numbers, len(backing) // numbers["hop"], "int8", seed=3)
        return R.follow(stream, R.Codec(where, numbers, variant="int8"), backing, numbers, pace=False)[0]
    assert np.array_equal(codes(folder), codes(exported[0]))
    with pytest.raises(SystemExit, match=r"encoder_step.int4.onnx is missing.*: int8\)"):
        R.main([str(folder), "--backing", str(bad_backings / "good.wav"), "--out", str(tmp_path / "p"),
                "--variant", "int4"])


def test_runner_says_when_a_wav_header_promises_more(exported, bad_backings, tmp_path, capsys):
    report = R.main([str(exported[0]), "--backing", str(bad_backings / "short.wav"), "--out", str(tmp_path / "o"),
                     "--no-pace", "--variant", "fp32"])
    assert "its header promises 10800.0 s, the file holds 3.0 s" in capsys.readouterr().out
    assert report["seconds"] == pytest.approx(3.0, abs=0.1), "the take is the 3 s the file holds"
