"""
chord_changes.py -- how soon after the band changes chord a model follows it: the chord aid's
head (does the encoder know the new chord?) and the solo (does it play the new chord's
tones?), by frames since the change, on a demo dataset's test songs.

    python experiments/chord_changes.py --data data/demo --out docs/results/chord-changes.json \
        --row offline runs/ablation-test/default/seed0 runs/ablation-test/default/seed1 \
        --row live runs/live/random/seed0 runs/live/random/seed1

Each --row is a name and run folders (their best/ is read), seeds of one recipe. On the test
windows train.py's listening test scores, every frame where the true lead sounds a note
inside a chord is placed by how many frames ago the band's chord last changed (frames with
no change since the window began are left out: how long ago is not known). Per bin:
- head: the share of frames whose chord-head guess (its most likely pitch class, from the
  encoder state of that backing frame) is a tone of the band's chord there;
- solo: note-in-chord of the solos generated over the same windows (guidance 3, as the
  live runner plays, for the offline row too; --guidance 5 as generate.py samples), read
  by the pitch probe;
- true: the true lead's note-in-chord (it too holds a note across a change until its next
  kick).
Means over the row's runs, and each run's figures; and per run, over the whole windows, the
listening test's figures of the same solos beside those over another song's band (kick AUC,
note-in-chord, plays with the band: `listening`), with their mean and sd over the row's runs.

The same three figures by beat of the bar (`beats`: the demo band plays a chord to a bar, so
beat 1 is where it changes), and, once for the windows, what the chord aid's labels say there
(`heard`): the share of the heard chroma's weight on the chord's tones, and how often its
loudest class is one of them. The demo's walking bass, the loudest of the band, plays the
root on beat 1, chord tones on 2 and 3 and a step to the next bar's root on 4.
"""
import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: sax/
from sax import guard  # noqa: E402 (first of the project's: a Ctrl-C while torch loads is one line)

guard.quiet_ctrl_c(__name__)

import torch  # noqa: E402

from sax.checkpoints import load_model  # noqa: E402
from sax.dataset import Windows, load_dataset  # noqa: E402
from sax.files import write_json  # noqa: E402
from sax.listening import (fit_probes, generated_solos, read_pitch_classes,  # noqa: E402
                           score_solos, scoring_set, scoring_split)

# Bins of frames since the change, [low, high): before an 80 ms lookahead hears it (6
# frames at 75 Hz), the first quarter second, two thirds of one, 1.3 s, and later.
BINS = ((0, 6), (6, 20), (20, 50), (50, 100), (100, 10 ** 6))
GUIDANCE = 3.0  # what the live recipes are played with (onnx_export --cfg-coef 3): --guidance


def frames_since_change(chords):
    """chords [N, T, 12] bool -> [N, T] long: frames since the chord last changed within the
    window (0 on the frame of the change), -1 before the window's first change."""
    N, T, _ = chords.shape
    since = torch.full((N, T), -1, dtype=torch.long)
    for t in range(1, T):
        changed = (chords[:, t] != chords[:, t - 1]).any(-1)
        since[:, t] = torch.where(changed, 0, torch.where(since[:, t - 1] >= 0,
                                                          since[:, t - 1] + 1, -1))
    return since


def by_bin(hits, counted, since):
    """hits, counted [N, T] bool -> per bin of BINS, the share of counted frames hit (None
    for an empty bin)."""
    return shares(hits, counted, [(since >= low) & (since < high) for low, high in BINS])


def shares(hits, counted, groups):
    """hits, counted [N, T] and groups ([N, T] masks) -> per group, the share of its counted
    frames hit (hits may be float: a weight per frame; None for an empty group)."""
    out = []
    for group in groups:
        frames = counted & group
        out.append(float(hits[frames].float().mean()) if frames.any() else None)
    return out


WRONG = ("semitone_off", "further_off", "semitone_off_by_chance", "changes_per_frame")


def wrong_notes(pitch_class, chords, counted):
    """How a solo's notes ([N, T] pitch classes) miss the chord over the counted frames: the
    share of them a semitone from one of its tones (the demo's lead plays no such neighbour),
    the share further off; the share of its misses that would be a semitone off were each
    drawn at random from the classes outside the chord (with four-note chords, 6 or 7 of
    the 8 are); and how often the class read changes from one counted frame to the next."""
    # every class outside the chord, and those of them a semitone from one of its tones
    outside = ~chords                                                              # [N, T, 12]
    beside = outside & (chords.roll(1, dims=-1) | chords.roll(-1, dims=-1))       # [N, T, 12]
    by_chance = beside.sum(-1) / outside.sum(-1).clamp(min=1)                     # [N, T]
    miss, near = counted & ~tones(chords, pitch_class), tones(beside, pitch_class)
    n = counted.sum().clamp(min=1)
    both = counted[:, 1:] & counted[:, :-1]
    changed = (pitch_class[:, 1:] != pitch_class[:, :-1]) & both
    return dict(zip(WRONG, (float((miss & near).sum() / n), float((miss & ~near).sum() / n),
                            float(by_chance[miss].mean()) if miss.any() else None,
                            float(changed.sum() / both.sum().clamp(min=1)))))


def beats_of_bar(meta, where, T):
    """[N, T] long: the beat of the bar (0 to 3) each frame of the windows at `where` falls
    in (demo corpus, four beats to the bar from the song's start; frame f of a copy played
    `tempo` times faster is at f / frame_rate * tempo seconds of the song)."""
    songs, fr = {song["id"]: song for song in meta["songs"]}, meta["codec"]["frame_rate"]
    frames = torch.arange(T, dtype=torch.float64)
    out = torch.empty(len(where), T, dtype=torch.long)
    for i, (song, variant, first) in enumerate(where):
        truth, v = songs[song]["truth"], songs[song]["variants"][variant]
        seconds = (first + frames) / fr * v["tempo"]
        out[i] = torch.floor(seconds * truth["tempo_bpm"] / 60.0).long() % 4
    return out


def scoring_windows(data, meta, T):
    """What every run with windows of T frames is scored on: {ls, probes, beats, heard}, the
    last the chord aid's labels by beat (see the module's docstring)."""
    ls = scoring_set(data, meta, T)[1]
    windows = Windows(data, scoring_split(meta), meta, T)
    where = windows.fixed()[2]                       # the windows scoring_set read, in order
    beats = beats_of_bar(meta, where, T)
    chroma = windows.chroma_at(where)                                   # [N, T, 12]
    inside = ls.chords.any(-1) & (chroma.sum(-1) > 0)
    groups = [beats == b for b in range(4)]
    heard = {"weight_on_chord": shares((chroma * ls.chords).sum(-1), inside, groups),
             "top_class_in_chord": shares(tones(ls.chords, chroma.argmax(-1)), inside, groups),
             "frames": [int((inside & g).sum()) for g in groups]}
    return {"ls": ls, "probes": fit_probes(data, meta, T), "beats": beats, "heard": heard}


def tones(chords, pitch_class):
    """chords [N, T, 12] bool, pitch_class [N, T] -> [N, T] bool: a tone of the chord."""
    return chords.gather(2, pitch_class[..., None])[..., 0]


@torch.no_grad()
def score_run(folder, data, meta, cache, seed, guidance=GUIDANCE):
    """One run's {head, solo, true} by bin (head None without a chord head)."""
    model, _ = load_model(Path(folder) / "best")
    T = model.cfg.max_frames
    if T not in cache:
        cache[T] = scoring_windows(data, meta, T)
    ls, probes, beats = cache[T]["ls"], cache[T]["probes"], cache[T]["beats"]
    since = frames_since_change(ls.chords)
    counted = ls.harmony_frames(model.cfg.card)
    on_beat = [beats == b for b in range(4)]
    head = head_beats = None
    if model.chord_head is not None:
        memory = model.encode(ls.backing)                 # [N, L + T, D]: frame t at L + t
        guessed = tones(ls.chords, model.chord_head(memory[:, -T:]).argmax(-1))
        head = by_bin(guessed, ls.chords.any(-1) & (since >= 0), since)
        head_beats = shares(guessed, ls.chords.any(-1), on_beat)
    # the same guidance for every row: by default 3, the live runner's (runner.json)
    solos = generated_solos(model, ls, 16, torch.device("cpu"), seed=seed, guidance=guidance)
    read = {name: read_pitch_classes(probes.pitch, solos[name], probes.span)
            for name in ("own", "true")}
    hit = {name: tones(ls.chords, pitch_class) for name, pitch_class in read.items()}
    return {"head": head, "solo": by_bin(hit["own"], counted, since),
            "true": by_bin(hit["true"], counted, since),
            "frames": [int((counted & (since >= a) & (since < b)).sum()) for a, b in BINS],
            "beats": {"head": head_beats, "solo": shares(hit["own"], counted, on_beat),
                      "true": shares(hit["true"], counted, on_beat),
                      "frames": [int((counted & g).sum()) for g in on_beat]},
            "wrong": {name: wrong_notes(pitch_class, ls.chords, counted)
                      for name, pitch_class in read.items()},
            # the same solos over every frame, beside those over another song's band
            "listening": {key: value for key, value in score_solos(probes, ls, solos).items()
                          if key in LISTENING}}


# The whole windows' figures of each run (sax.listening.score_solos), sampled offline, on
# time: what the model plays when nothing it hears is late.
LISTENING = ("kick_auc_own", "kick_auc_mismatched", "note_in_chord_own",
             "note_in_chord_mismatched", "plays_with_band_rhythm", "plays_with_band_harmony")


def mean_and_sd(runs):
    """{figure: [mean, sd]} of LISTENING over runs (sd over seeds, 0 for one run)."""
    out = {}
    for key in LISTENING:
        values = [run["listening"][key] for run in runs]
        out[key] = [statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0]
    return out


def mean_or_none(values):
    """The mean of the values that are numbers (None when none is)."""
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def mean_of(runs, key):
    """The mean over runs of each bin's figure: None for a bin some run has no figure in, and
    None for the whole key when a run has none (a model without a chord head)."""
    values = [run[key] for run in runs]
    if any(v is None for v in values):
        return None
    return [None if None in column else sum(column) / len(column) for column in zip(*values)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/demo", help="the demo dataset the runs trained on")
    parser.add_argument("--row", nargs="+", action="append", required=True,
                        metavar=("NAME", "RUN"), help="a row: its name, then run folders")
    parser.add_argument("--out", required=True, help="the JSON to write")
    parser.add_argument("--guidance", type=float, default=GUIDANCE,
                        help="the solos' guidance (3: the live runner's; 5: generate.py's)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    meta, cache, rows = load_dataset(args.data), {}, {}
    for name, *folders in args.row:
        if not folders:
            raise SystemExit(f"--row {name}: name a run folder after it")
        runs = {}
        for folder in folders:
            runs[folder] = score_run(folder, args.data, meta, cache, seed=0, guidance=args.guidance)
            print(name, folder, json.dumps(runs[folder]), flush=True)
        beats = [run["beats"] for run in runs.values()]
        rows[name] = {"runs": runs, **{key: mean_of(list(runs.values()), key)
                                       for key in ("head", "solo", "true")},
                      "beats": {key: mean_of(beats, key) for key in ("head", "solo", "true")},
                      "wrong": {name: {key: mean_or_none([run["wrong"][name][key]
                                                          for run in runs.values()])
                                       for key in WRONG} for name in ("own", "true")},
                      "listening": mean_and_sd(list(runs.values()))}
    write_json(Path(args.out), {"command": " ".join(["python experiments/chord_changes.py",
                                                     *(argv or sys.argv[1:])]),
                                "data": args.data, "split": scoring_split(meta),
                                "guidance": args.guidance,
                                "bins_frames": [list(b) for b in BINS], "rows": rows,
                                "heard_by_beat": {str(T): w["heard"] for T, w in cache.items()}})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
