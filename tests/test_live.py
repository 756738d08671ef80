"""onnx_runner.py --live without a sound card: a stand-in stream feeds a file to the callback
in real-time-sized blocks from its own thread (as PortAudio does) and records what the
callback played. Covers a take that keeps up, a model too slow for real time (underruns
counted, no crash), a device that disappears, Ctrl-C, and sounddevice missing."""
import dataclasses
import json
import shutil
import signal
import sys
import threading
import time

import numpy as np
import pytest
import soundfile as sf
import torch

import onnx_export as E
import onnx_runner as R
import sound_card
from model import SoloTransformer
from sax.audio import CODEC_RATE
from sax.demo import render_demo_song


class FakeCard:
    """sounddevice.Stream's part that Live uses (.active, .close()), driven like a sound card.

    Called as the open_stream factory: starts a thread that hands the callback one block
    of `audio` every block duration, and keeps what the callback wrote. vanish_after:
    blocks before the device goes away (its stream stops being active). at_block: a
    function called with the block index (the Ctrl-C test sends SIGINT from there).
    """

    def __init__(self, audio, vanish_after=None, at_block=None):
        self.audio, self.vanish_after, self.at_block = audio, vanish_after, at_block
        self.played, self.active = [], False

    def __call__(self, callback, rate, block, devices):
        self.callback, self.rate, self.block, self.devices = callback, rate, block, devices
        self.active = True
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()
        return self

    def run(self):
        t0 = time.perf_counter()
        for i, start in enumerate(range(0, len(self.audio) - self.block + 1, self.block)):
            if not self.active or i == self.vanish_after:
                break
            if self.at_block:
                self.at_block(i)
            indata = self.audio[start:start + self.block, None].copy()
            outdata = np.zeros((self.block, 1), np.float32)
            self.callback(indata, outdata, self.block, None, None)
            self.played.append(outdata[:, 0].copy())
            time.sleep(max(0.0, t0 + (i + 1) * self.block / self.rate - time.perf_counter()))
        self.active = False  # the file has ended, or the device is gone

    def close(self):
        """Stop, and wait for a callback under way to end, as PortAudio's close does."""
        self.active = False
        if threading.current_thread() is not self.thread:
            self.thread.join(timeout=5)


@pytest.fixture(scope="module")
def band():
    """4 s of a demo band the models never trained on, at the codec's rate."""
    return render_demo_song(71, 4.0, seed=0)[0].astype(np.float32)


def take(exported, tmp_path, card, *flags):
    args = R.arguments([str(exported[0]), "--live", "--variant", "fp32", "--out", str(tmp_path),
                        *flags])
    numbers = R.read_folder(exported[0], ["fp32"])
    return R.live(args, numbers, tmp_path, open_stream=card)


@pytest.fixture(scope="module")
def looking_ahead(exported, tmp_path_factory):
    """The exported folder with the step graphs of a model that writes 18 frames (240 ms)
    ahead: the test model's shapes, random weights, runner.json's lookahead and digests."""
    folder = tmp_path_factory.mktemp("ahead") / "solo_onnx"
    shutil.copytree(exported[0], folder)
    torch.manual_seed(0)
    model = SoloTransformer(dataclasses.replace(exported[1].cfg, lookahead=18)).eval()
    E.export_steps(model, folder)
    numbers = json.loads((folder / "runner.json").read_text())
    numbers["lookahead"] = 18
    numbers["sha256"].update({g: R.sha256(folder / g) for graphs in R.STEP_GRAPHS.values() for g in graphs})
    numbers["numbers_sha256"] = R.numbers_digest(numbers)  # the export's own digest, made again
    (folder / "runner.json").write_text(json.dumps(numbers))
    return (folder,)


def test_live_take_follows_the_band_and_writes_what_it_played(exported, band, tmp_path):
    card = FakeCard(band)
    report = take(exported, tmp_path, card, "--seconds", "2")
    assert report["stopped_by"] == "done", report
    assert 2.0 <= report["seconds"] <= 2.2, report["seconds"]
    heard, rate = sf.read(tmp_path / "backing.wav", dtype="float32")
    solo, _ = sf.read(tmp_path / "solo.wav", dtype="float32")
    played = np.concatenate(card.played)[:len(solo)]
    assert rate == CODEC_RATE and len(heard) == len(solo), (len(heard), len(solo))
    # What the card played is the solo.wav written (to 16-bit precision), and it is not silence.
    assert np.abs(played - solo).max() < 1e-3
    assert np.abs(solo).max() > 0, "the model's solo never reached the output"
    assert np.abs(heard - band[:len(heard)]).max() < 1e-3, "backing.wav is not what was heard"
    # Chunk (80 ms) + delay pattern (40 ms) at least, whatever the compute.
    assert report["delay_ms"]["p50"] >= 120, report["delay_ms"]
    written = json.loads((tmp_path / "report.json").read_text())
    assert written["live"] and written["underruns"] == report["underruns"]
    # No lookahead: K - 1 frames of silence went first, and the solo is as late as it is delayed.
    assert report["solo_frames_dropped_at_start"] == -3 and report["lookahead_ms"] == 0
    # late, as measured on the wall clock: the chunk and the pattern at least, and no later than
    # the take's own delay (to a frame): the solo queues behind nothing. The delay itself grows
    # with the machine's load (the suite runs two workers at once), so it is the bound.
    assert 120 <= report["late_ms"]["p50"] <= report["delay_ms"]["p50"] + 1000 / 75, (
        report["late_ms"], report["delay_ms"])
    # take.npz: the codes played and the band frame each sounded against, as late as report.json says
    npz = np.load(tmp_path / "take.npz")
    F = npz["codes"].shape[1]
    late = (npz["sounding"] - np.arange(F)) * 1e3 / 75
    assert F == len(npz["sounding"]) > 100 and (np.diff(npz["sounding"]) >= 1).all()
    assert abs(np.median(late) - report["late_ms"]["p50"]) < 2 * 1e3 / 75, (np.median(late), report["late_ms"])
    assert npz["heard"].shape[1] >= F and bool(npz["paced"])


def test_a_model_that_looks_ahead_plays_on_the_band_frame_it_wrote_for(looking_ahead, band, tmp_path):
    """240 ms ahead, more than the runner's delay here: the first solo frames, whose moment has
    passed when the first chunk is done, are dropped, no more than the band has played, and
    the rest waits in the queue so that each frame plays with the band frame it was written
    for (less than a frame late), the delay behind the band it heard being the 240 ms more."""
    report = take(looking_ahead, tmp_path, FakeCard(band), "--seconds", "2")
    assert report["stopped_by"] == "done" and report["underruns"] == 0, report
    frame_ms = 1e3 / 75
    assert report["lookahead_ms"] == pytest.approx(240)
    assert 6 <= report["solo_frames_dropped_at_start"] <= 18 - 3, report  # at least the first chunk's 6
    assert 0 <= report["late_ms"]["p50"] < frame_ms + 10, report["late_ms"]  # + a 10 ms block
    solo, _ = sf.read(tmp_path / "solo.wav", dtype="float32")
    assert np.abs(solo).max() > 0
    # take.npz: the dropped frames never sounded (-1); the others on their own band frame
    sounding = np.load(tmp_path / "take.npz")["sounding"]
    dropped = report["solo_frames_dropped_at_start"]
    assert (sounding[:dropped] == -1).all() and (sounding[dropped:] >= 0).all()
    assert np.abs(np.median(sounding[dropped:] - np.arange(dropped, len(sounding)))) <= 1


def test_a_model_too_slow_for_real_time_underruns_without_crashing(exported, band, tmp_path,
                                                                   monkeypatch):
    push = R.SoloStream.push

    def slow_push(self, frame):  # 20 ms a frame against a budget of 13.3 ms
        time.sleep(0.02)
        return push(self, frame)

    monkeypatch.setattr(R.SoloStream, "push", slow_push)
    report = take(exported, tmp_path, FakeCard(band), "--seconds", "3")
    assert report["stopped_by"] == "done"
    # 20 ms of work for 13.3 ms of music: the model keeps up with two thirds of the band, and
    # the input it cannot take in time, about a third of the take, is dropped and counted
    assert report["underruns"] > 0, "a model slower than real time must leave gaps, counted"
    take_ms = report["seconds"] * 1e3
    assert 0.15 * take_ms <= report["dropped_input_ms"] <= 0.6 * take_ms, (report["dropped_input_ms"], take_ms)
    assert sf.info(str(tmp_path / "solo.wav")).duration == pytest.approx(report["seconds"], abs=0.02)


def test_a_device_that_disappears_ends_the_take_cleanly(exported, band, tmp_path):
    report = take(exported, tmp_path, FakeCard(band, vanish_after=80), "--seconds", "3")
    assert "audio device stopped" in report["stopped_by"], report["stopped_by"]
    assert 0.7 <= report["seconds"] <= 0.9, report["seconds"]  # 80 blocks of 10 ms
    assert (tmp_path / "solo.wav").exists() and (tmp_path / "report.json").exists()


def test_ctrl_c_ends_the_take_writes_it_and_exits_130(exported, band, tmp_path, capsys):
    def interrupt(i):
        if i == 100:  # 1 s in; to the main thread, as a terminal's Ctrl-C is handled there
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    # Python's own Ctrl-C handler, as in a terminal: a suite started in the background
    # (nohup, `&`) inherits SIGINT ignored, and Python then installs no handler at all.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(SystemExit) as stop:
            take(exported, tmp_path, FakeCard(band, at_block=interrupt), "--seconds", "3")
    finally:
        signal.signal(signal.SIGINT, previous)
    assert stop.value.code == 130
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["stopped_by"] == "Ctrl-C" and 0.9 <= report["seconds"] <= 1.3, report
    assert "stopped (Ctrl-C)" in capsys.readouterr().out


def test_live_without_sounddevice_is_one_line(exported, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # `import sounddevice` now fails
    with pytest.raises(SystemExit, match="--live needs sounddevice.*pip install sounddevice"):
        R.main([str(exported[0]), "--live", "--out", str(tmp_path / "o"), "--variant", "fp32"])


def test_the_rings_never_wait_and_keep_the_newest():
    ring = sound_card.AudioRing(5)
    assert ring.read(1) is None, "an empty ring gives nothing, at once"
    assert ring.write(np.arange(3, dtype=np.float32)) == 0
    assert ring.write(np.arange(3, 7, dtype=np.float32)) == 2, "two old samples dropped"
    assert list(ring.read(5)) == [2, 3, 4, 5, 6] and len(ring) == 0


def test_a_queue_that_runs_dry_mid_block_plays_what_is_left_then_silence():
    """The callback alone: a block the queue can only partly fill plays the solo it holds,
    then silence, and counts one underrun (nothing is held back to sound late)."""
    numbers = {"sample_rate": 100, "hop": 4, "chunk_frames": 2, "n_codebooks": 4}
    session = sound_card.Live(None, None, numbers, seconds=1.0, block=10, prime_ms=0.0)
    session.out.write(np.ones(14, np.float32))
    band, played = np.zeros((10, 1), np.float32), np.full((10, 1), 7.0, np.float32)
    session.callback(band, played, 10, None, None)
    assert (played == 1).all() and session.counts["underruns"] == 0
    session.callback(band, played, 10, None, None)  # 4 samples left for a block of 10
    assert list(played[:, 0]) == [1] * 4 + [0] * 6 and session.counts["underruns"] == 1
    assert session.n_heard == 20 and not session.playing and len(session.out) == 0
