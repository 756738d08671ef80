"""Phase 5 scored as played: the runner's take.npz, the solo on the wall clock, and
experiments/takes.py's figures (the exported runner over demo songs, paced)."""
import json
from pathlib import Path

import numpy as np
import pytest

import onnx_runner as R
import takes as T
from sax.codec import dataset_codec, encode_audio
from sax.dataset import load_dataset


def test_sounding_frames_wait_for_their_band_frame_and_play_back_to_back():
    """Early frames wait for the band frame they were written for; a late one sounds when it
    is ready; none sounds before the one ahead of it has played."""
    fr = 75
    ready = np.array([0.0, 0.0, 5 / fr, 5 / fr, 5.4 / fr, 20 / fr])
    assert R.sounding_frames(ready, fr).tolist() == [0, 1, 5, 6, 7, 20]
    assert R.sounding_frames(np.zeros(4), fr).tolist() == [0, 1, 2, 3]


def test_wall_clock_solo_holds_each_frame_until_the_next_starts():
    codes = np.array([[1, 2, 3]])
    assert T.wall_clock_solo(codes, np.array([0, 1, 2]), 4, 9).tolist() == [[1, 2, 3, 3]]
    assert T.wall_clock_solo(codes, np.array([2, 3, 5]), 6, 9).tolist() == [[9, 9, 1, 2, 2, 3]]


def test_a_take_of_the_true_lead_scores_as_the_true_lead(demo_dataset):
    """Scored on the wall clock, a take that plays the true lead on time scores exactly the
    true lead's figures; the same lead 150 ms late loses the kicks (a lower kick AUC)."""
    out, meta = demo_dataset
    songs = meta["splits"]["train"]["songs"][:3]
    codec_takes, late_takes = {}, {}
    codec = dataset_codec(meta["codec"], out, "cpu")
    for song in songs:
        backing, solo = T.song_audio(meta, song)
        heard, lead = encode_audio(codec, backing), encode_audio(codec, solo)
        F = lead.shape[1]
        codec_takes[song] = {"codes": lead, "sounding": np.arange(F), "heard": heard, "paced": True}
        late_takes[song] = {**codec_takes[song], "sounding": np.arange(F) + 11}
    on_time, late = T.score_takes(out, meta, codec_takes), T.score_takes(out, meta, late_takes)
    f = on_time["figures"]
    assert f["kick_auc_own"] == f["kick_auc_true"] and f["note_in_chord_own"] == f["note_in_chord_true"]
    assert f["plays_with_band_rhythm"] == pytest.approx(1.0) and f["plays_with_band_harmony"] == pytest.approx(1.0)
    assert late["figures"]["kick_auc_own"] < f["kick_auc_own"] - 0.05, (late["figures"], f)
    assert late["late_ms_mean"][songs[0]] == pytest.approx(11 * 1e3 / meta["codec"]["frame_rate"])


def test_takes_plays_the_runner_paced_and_scores_it(exported, tmp_path):
    """The whole command on the exported test model: its dataset's training songs, 2 s each,
    paced; a take.npz per song, takes.json with every figure."""
    folder = exported[0]
    data = load_dataset_dir(exported)
    result = T.main(["--folder", str(folder), "--data", str(data), "--out", str(tmp_path / "takes"),
                     "--split", "train", "--seconds", "2", "--variant", "fp32"])
    meta = load_dataset(data)
    songs = meta["splits"]["train"]["songs"]
    for song in songs:
        take = np.load(tmp_path / "takes" / song / "take.npz")
        F = take["codes"].shape[1]
        assert F == take["sounding"].shape[0] == take["ready_s"].shape[0] and F > 100
        assert (take["sounding"] >= np.arange(F)).all() and (np.diff(take["sounding"]) >= 1).all()
        assert bool(take["paced"]) and take["heard"].shape[1] == F
    assert result["paced"] and json.loads((tmp_path / "takes" / "takes.json").read_text())["songs"] == songs
    assert all(0 <= result["figures"][f"{m}_{s}"] <= 1 for m in ("kick_auc", "note_in_chord")
               for s in ("own", "mismatched", "true", "true_mismatched"))
    assert all(v > 0 for v in result["late_ms_mean"].values()), "paced, a take lands after its band frame"


def load_dataset_dir(exported):
    """The dataset the exported test model was trained on (its checkpoint's config names it)."""
    runner = json.loads((exported[0] / "runner.json").read_text())
    config = json.loads((Path(runner["checkpoint"]) / "config.json").read_text())
    return Path(config["data"]["dir"])
