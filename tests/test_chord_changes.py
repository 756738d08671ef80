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


def test_shares_weigh_float_hits_and_leave_empty_groups_none():
    hits = torch.tensor([[0.2, 0.4, 1.0, 0.0]])
    counted = torch.tensor([[True, True, False, True]])
    groups = [torch.tensor([[True, True, True, False]]), torch.tensor([[False, False, True, False]])]
    first, second = C.shares(hits, counted, groups)
    assert abs(first - 0.3) < 1e-6 and second is None   # frame 3 is not in the first group


def test_wrong_notes_tell_a_neighbour_from_a_note_further_off():
    chords = torch.zeros(1, 5, 12, dtype=torch.bool)
    chords[0, :, [0, 4, 7, 11]] = True                       # Cmaj7 throughout
    pitch_class = torch.tensor([[0, 1, 1, 2, 9]])            # in, a semitone off twice, 2 off twice
    counted = torch.tensor([[True, True, True, True, False]])
    wrong = C.wrong_notes(pitch_class, chords, counted)
    assert wrong["semitone_off"] == 0.5 and wrong["further_off"] == 0.25
    # outside Cmaj7 (0 4 7 11): 1 3 5 6 8 10 are a semitone from a tone, 2 and 9 are not
    assert wrong["semitone_off_by_chance"] == 0.75
    assert abs(wrong["changes_per_frame"] - 2 / 3) < 1e-6   # 0 -> 1, 1 -> 1, 1 -> 2


def test_beats_of_bar_count_four_to_the_bar_from_the_songs_start():
    """120 bpm at 75 frames a second: a beat is 37.5 frames; a copy played twice as fast
    (tempo 2) changes beat every 18.75 of its frames, and a window starting at frame 300
    (4 s of the song: bar 2) starts on beat 1."""
    meta = {"codec": {"frame_rate": 75},
            "songs": [{"id": "s", "truth": {"tempo_bpm": 120.0},
                       "variants": [{"tempo": 1.0}, {"tempo": 2.0}]}]}
    beats = C.beats_of_bar(meta, [("s", 0, 0), ("s", 1, 0), ("s", 0, 300)], 160)
    assert beats[0, :38].eq(0).all() and beats[0, 38:75].eq(1).all() and beats[0, 75] == 2
    assert beats[0, 150] == 0                               # the next bar
    assert beats[1, :19].eq(0).all() and beats[1, 19] == 1 and beats[1, 75] == 0
    assert beats[2].tolist() == beats[0].tolist()


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
    # by beat of the bar: the four beats share every counted frame, so the true lead's and
    # the solo's beats, weighted by their frames, give their whole-window note-in-chord
    beats = run["beats"]
    assert row["beats"]["solo"] == beats["solo"] and sum(beats["frames"]) == every
    for name, key in (("true", None), ("solo", "note_in_chord_own")):
        weighted = sum(x * n for x, n in zip(beats[name], beats["frames"]) if n) / every
        whole = (run["listening"][key] if key else note_in_chord(
            probes.pitch, ls.solo, ls.chords, ls.harmony_frames(meta["codec"]["card"]), probes.span))
        assert abs(weighted - whole) < 1e-6, name
    # the notes that miss the chord: a semitone off or further, a share of the counted frames
    for name in ("own", "true"):
        wrong = run["wrong"][name]
        hits = (run["listening"]["note_in_chord_own"] if name == "own" else
                note_in_chord(probes.pitch, ls.solo, ls.chords,
                              ls.harmony_frames(meta["codec"]["card"]), probes.span))
        assert abs(wrong["semitone_off"] + wrong["further_off"] + hits - 1) < 1e-5, name
        assert 0 <= wrong["changes_per_frame"] <= 1 and row["wrong"][name] == wrong
        assert wrong["semitone_off_by_chance"] is None or 0.5 < wrong["semitone_off_by_chance"] <= 1
    # the chord aid's labels by beat: the heard chroma's weight on the chord, and its top class
    heard = table["heard_by_beat"][str(T)]
    assert len(heard["frames"]) == 4 and sum(heard["frames"]) > 0
    values = [x for x in heard["weight_on_chord"] + heard["top_class_in_chord"] if x is not None]
    assert values and all(0 <= x <= 1 for x in values)
