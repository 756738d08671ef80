"""experiments/chord_changes.py: a model's chord head and solo, by frames since the band's
chord changed."""
import json
import sys

import torch

from conftest import ROOT

sys.path.insert(0, str(ROOT / "experiments"))
import chord_changes as C  # noqa: E402


def test_frames_since_change_counts_from_each_change_and_not_before_the_first():
    chords = torch.zeros(1, 8, 12, dtype=torch.bool)
    chords[0, :3, [0, 4, 7]] = True     # C major for 3 frames
    chords[0, 3:6, [2, 5, 9]] = True    # then D minor
    chords[0, 6:, [0, 4, 7]] = True     # then C again
    assert C.frames_since_change(chords)[0].tolist() == [-1, -1, -1, 0, 1, 2, 0, 1]


def test_by_bin_shares_the_counted_frames_of_each_bin():
    since = torch.tensor([[0, 3, 10, 30, 60, 200, -1]])
    hits = torch.tensor([[True, False, True, True, False, True, True]])
    counted = torch.ones_like(hits)
    assert C.by_bin(hits, counted, since) == [0.5, 1.0, 1.0, 0.0, 1.0]
    counted[0, 0] = False
    assert C.by_bin(hits, counted, since)[0] == 0.0


def test_a_run_is_scored_by_bin(trained, tmp_path, demo_dataset):
    """The bins of the true lead, weighted by their frames, give sax.listening's note-in-chord
    over the same frames (those after a change): the two paths read the same notes."""
    from sax.dataset import load_dataset
    from sax.listening import fit_probes, note_in_chord, scoring_set
    data, out = demo_dataset[0], tmp_path / "changes.json"
    C.main(["--data", str(data), "--out", str(out), "--row", "tiny", str(trained[0])])
    table = json.loads(out.read_text())
    row = table["rows"]["tiny"]
    assert table["bins_frames"][0] == [0, 6] and len(row["solo"]) == len(C.BINS)
    run = row["runs"][str(trained[0])]
    assert row["head"] is not None and row["solo"] == run["solo"]  # one run: its own mean
    assert all(0 <= x <= 1 for x in run["solo"] + run["head"] if x is not None)
    # the whole windows' figures: the listening test's, of the same solos (one run: sd 0)
    assert set(run["listening"]) == set(C.LISTENING)
    assert row["listening"]["note_in_chord_own"] == [run["listening"]["note_in_chord_own"], 0.0]
    meta = load_dataset(data)
    T = round(1.0 * meta["codec"]["frame_rate"])               # the fixture's 1 s windows
    ls, probes = scoring_set(data, meta, T)[1], fit_probes(data, meta, T)
    after = ls.harmony_frames(meta["codec"]["card"]) & (C.frames_since_change(ls.chords) >= 0)
    assert sum(run["frames"]) == int(after.sum()) > 0
    binned = sum(x * n for x, n in zip(run["true"], run["frames"]) if n) / sum(run["frames"])
    assert abs(binned - note_in_chord(probes.pitch, ls.solo, ls.chords, after, probes.span)) < 1e-6
    # the generated solo's binned frames are a part of those its whole-window figure counts:
    # its chord tones there are at least the binned ones, at most those and every other frame
    hits = sum(x * n for x, n in zip(run["solo"], run["frames"]) if n)
    every = int(ls.harmony_frames(meta["codec"]["card"]).sum())
    whole = run["listening"]["note_in_chord_own"] * every
    assert hits - 1e-3 <= whole <= hits + every - sum(run["frames"]) + 1e-3
