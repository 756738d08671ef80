"""
sax/dataset.py -- the dataset on disk (meta.json and the memory-mapped arrays data.py writes)
and its windows: random ones for training, fixed ones for evaluation.
"""
import json
from pathlib import Path

import numpy as np
import torch

from sax.pitch import event_frames
from sax.plan import check_plan, teacher_plan

# The dataset's format: 2 since the solo's notes are tracked (<split>_notes.npy), 3 since
# the band's chroma is heard (<split>_chroma.npy). HEARD_SINCE: the format that first
# stores each.
FORMAT = 3
HEARD_SINCE = {"notes": 2, "chroma": 3}


def unigram_entropy(solo, card):
    """Entropy (nats) of each codebook's code frequencies in the training solo: [K].

    The cross-entropy of a model that ignores all context and only knows how often
    each code occurs. A trained model must go below it; one that sits at it has
    learned the code frequencies and nothing else. (A uniform guess would score
    log(card) = 6.93 nats for 1024 codes.)
    """
    out = []
    for row in solo:
        p = np.bincount(np.asarray(row, dtype=np.int64), minlength=card) / max(len(row), 1)
        out.append(float(-(p[p > 0] * np.log(p[p > 0])).sum()))
    return out


def load_dataset(data_dir):
    """meta.json of a dataset folder, with a clear message when it is missing or damaged."""
    meta_file = Path(data_dir) / "meta.json"
    fix = (f"rebuild it with python data.py --out {data_dir} (songs already done are reused "
           f"from its cache)")
    if not meta_file.exists():
        raise SystemExit(f"{meta_file} not found: build the dataset "
                         f"first (python data.py --out {data_dir})")
    try:
        meta = json.loads(meta_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SystemExit(f"{meta_file} is damaged ({err}): {fix}") from None
    missing = [k for k in ("codec", "splits",
                           "songs") if k not in (meta if isinstance(meta, dict) else {})]
    if missing:
        raise SystemExit(f"{meta_file} lacks {', '.join(missing)}: "
                         f"not a dataset written by data.py; {fix}")
    return meta


def load_split(data_dir, split):
    """Memory-mapped (backing [K, N], solo [K, N]) of one split: nothing is read until used."""
    return tuple(np.load(Path(data_dir) / f"{split}_{name}.npy",
                         mmap_mode="r") for name in ("backing", "solo"))


def load_heard(data_dir, split, name):
    """What data.py heard beside the tokens of one split, memory-mapped: "notes", the
    solo's tracked notes [N] int8 (-1: no note), or "chroma", the band's chroma [N, 12]
    float16; None for a dataset built before data.py heard it (notes: format 1,
    chroma: formats 1 and 2)."""
    path = Path(data_dir) / f"{split}_{name}.npy"
    return np.load(path, mmap_mode="r") if path.exists() else None


# ----------------------------------------------------------------------------
# Windows: random ones for training, fixed ones for evaluation
# ----------------------------------------------------------------------------

class Windows:
    """Windows of T frames from the segments (solo sections) of one split.

    Arrays stay memory-mapped: a window reads T frames from disk, not the dataset.
    A segment shorter than T is padded with the special token: the loss skips it.
    Windows never cross a segment boundary: two sections of a song are not
    contiguous in time, and a window across the cut would teach a jump that no
    recording contains.
    """

    def __init__(self, data_dir, split, meta, T):
        self.backing, self.solo = load_split(data_dir, split)     # [K, N] each, memory-mapped
        self.notes = load_heard(data_dir, split, "notes")         # [N] or None
        self.chroma = load_heard(data_dir, split, "chroma")       # [N, 12] or None
        self.segments = meta["splits"][split]["segments"]
        self.T, self.card = T, meta["codec"]["card"]
        lengths = np.array([s["length"] for s in self.segments], dtype=np.float64)
        # longer segments, more often
        self.weights = torch.tensor(lengths / lengths.sum()) if len(lengths) else None

    def window(self, seg, start):
        """(backing, solo) [K, T] int64 from segment seg at frame start, padded with card."""
        n = min(self.T, seg["length"] - start)
        out = []
        for array in (self.backing, self.solo):
            w = np.full((array.shape[0], self.T), self.card, dtype=np.int64)
            w[:, :n] = array[:, seg["start"] + start:seg["start"] + start + n]
            out.append(torch.from_numpy(w))
        return out

    def sample(self, batch, gen, where=False):
        """A random batch: (backing, solo) [B, K, T], drawn with the generator gen (saved in
        checkpoints). where=True adds, as fixed() does, each window's (song id, variant,
        first frame in its song): train.py --pitch-aux looks up the notes played there."""
        # Segments are picked in proportion to their length, so every frame of the split
        # is about equally likely to be seen, whatever way the solo was cut into sections.
        # All randomness goes through `gen`, whose state the checkpoint keeps: that is what
        # makes a resumed run draw exactly the batches the uninterrupted run would have.
        picks = torch.multinomial(self.weights, batch, replacement=True, generator=gen).tolist()
        pairs, places = [], []
        for i in picks:
            seg = self.segments[i]
            start = int(torch.randint(0, max(1, seg["length"] - self.T + 1), (1,), generator=gen))
            pairs.append(self.window(seg, start))
            places.append((seg["song"], seg["variant"], seg["song_frame"] + start))
        batch = [torch.stack(x) for x in zip(*pairs)]
        return (*batch, places) if where else batch

    def heard_at(self, array, where, fill):
        """Frames of `array` ([N, ...], one row per frame of the split) under the windows
        found at `where` (sample(where=True), fixed()): [len(where), T, ...], `fill` past
        a segment's end."""
        out = np.full((len(where), self.T, *array.shape[1:]), fill, dtype=np.float32)
        for i, (song, variant, first) in enumerate(where):
            seg = next(s for s in self.segments if s["song"] == song and s["variant"] == variant
                       and s["song_frame"] <= first < s["song_frame"] + s["length"])
            at = seg["start"] + first - seg["song_frame"]
            n = min(self.T, seg["start"] + seg["length"] - at)
            out[i, :n] = array[at:at + n]
        return torch.from_numpy(out)

    def notes_at(self, where):
        """The tracked notes of the windows at `where`: [N, T] long, the pitch class of
        each frame, -1 where none sounds or past the segment's end."""
        return self.heard_at(self.notes, where, -1).long()

    def chroma_at(self, where):
        """The band's chroma under the windows at `where`: [N, T, 12] float, 0 past the
        segment's end."""
        return self.heard_at(self.chroma, where, 0.0)

    def fixed(self, limit=None):
        """Deterministic evaluation windows: each segment cut in consecutive windows.
        Returns (backing, solo [N, K, T], [(song id, variant, the window's first frame in its
        song)]), the first `limit` windows (None: all of them).

        The same windows at every evaluation, so two evaluations differ only because
        the model changed, never because the sample did.
        """
        pairs, where = [], []
        for seg in self.segments:
            for start in range(0, seg["length"], self.T):
                if seg["length"] - start >= self.T // 2 or start == 0:  # skip short leftovers
                    pairs.append(self.window(seg, start))
                    where.append((seg["song"], seg["variant"], seg["song_frame"] + start))
        pairs, where = pairs[:limit], where[:limit]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs]), where


def knows_the_notes(meta):
    """Whether every song of the dataset carries its lead's notes (the demo corpus does;
    separated recordings do not)."""
    return all("lead_notes" in song.get("truth", {}) for song in meta["songs"])


def pitch_targets(windows, where, solo, meta=None):
    """train.py --pitch-aux's targets for windows solo [N, K, T] of `windows` (Windows)
    found at `where`: the pitch class the solo plays in each frame, [N, T] long; 12 where
    it rests, and -100 (not counted) where the window is padding.

    The notes data.py tracked in the solo's audio (any dataset of format 2); with `meta`,
    the demo corpus's true notes instead (train.py --pitch-targets truth)."""
    if meta is None:
        notes = windows.notes_at(where)
    else:
        notes, _ = harmony_truth(meta, where, solo.size(-1), meta["codec"]["frame_rate"])
    return notes.masked_fill(notes < 0, 12).masked_fill(solo[:, 0] == windows.card, -100)


def chord_targets(windows, where, backing, meta=None):
    """train.py --chord-aux's targets for windows backing [N, K, T] of `windows`
    (Windows) found at `where`: the band's harmony in each frame as a distribution
    over the 12 pitch classes, [N, T, 12] float, each row summing to 1; all 0 (not
    counted) where the band plays no chord and where the window is padding.

    The chroma data.py heard in the backing's audio (any dataset of format 3); with
    `meta`, the demo corpus's chords instead (train.py --chord-targets truth), each
    chord tone an equal share."""
    if meta is None:
        chroma = windows.chroma_at(where)
    else:
        _, tones = harmony_truth(meta, where, backing.size(-1), meta["codec"]["frame_rate"])
        chroma = tones.float()
    chroma = chroma / chroma.sum(-1, keepdim=True).clamp(min=1e-8)
    return chroma.masked_fill((backing[:, 0] == windows.card)[..., None], 0.0)


def harmony_truth(meta, where, T, frame_rate):
    """What sounds in each frame of the windows (demo corpus): (lead [N, T] long, the pitch
    class of the true lead's note, -1 where it rests; chords [N, T, 12] bool, the tones
    of the band's chord, all False outside every chord).

    An augmented copy plays `tempo` times faster and `semitones` higher; its pitch
    classes move by the nearest whole semitone (a shift of 1.4 reads as 1).
    """
    songs = {song["id"]: song for song in meta["songs"]}
    lead = torch.full((len(where), T), -1, dtype=torch.long)
    chords = torch.zeros(len(where), T, 12, dtype=torch.bool)
    for i, (song, variant, first) in enumerate(where):
        truth, v = songs[song]["truth"], songs[song]["variants"][variant]
        shift = round(v["semitones"])
        def frames(event, v=v, first=first):  # an event's seconds -> frames of the window
            return event_frames(event, frame_rate, v["tempo"], first)
        for note in truth["lead_notes"]:
            lead[i, frames(note)] = (note["midi"] + shift) % 12
        for chord in truth["chords"]:
            chords[i, frames(chord), [(pc + shift) % 12 for pc in chord["pitch_classes"]]] = True
    return lead, chords


def kick_frames(meta, where, T, frame_rate, span):
    """[N, T] bool: the `span` frames from each of the band's kicks in the windows (demo
    corpus; an augmented copy plays `tempo` times faster)."""
    songs = {song["id"]: song for song in meta["songs"]}
    kicks = torch.zeros(len(where), T, dtype=torch.bool)
    for i, (song, variant, first) in enumerate(where):
        tempo = songs[song]["variants"][variant]["tempo"]
        for t in songs[song]["truth"]["kicks_s"]:
            f = round(t / tempo * frame_rate) - first
            kicks[i, max(0, f):max(0, f + span)] = True
    return kicks


def check_aids(cfg, meta):
    """train.py's aids that read the demo corpus's score, on a dataset that has none, or that
    need another aid (the pitch plan, sax/plan.py): one line."""
    check_plan(cfg)
    needs = [(cfg.pitch_aux and cfg.pitch_targets == "truth", "--pitch-targets truth",
              "lead's true notes", "the notes data.py tracked, --pitch-targets tracked"),
             ((cfg.chord_aux or cfg.pitch_aux and cfg.pitch_targets == "chord")
              and cfg.chord_targets == "truth", "--chord-targets truth",
              "band's chords", "the chroma data.py heard, --chord-targets heard"),
             (cfg.ahead_aux, "--ahead-aux", "band's kicks", "--ahead-aux 0")]
    for on, flag, what, fix in needs:
        if on and not knows_the_notes(meta):
            raise SystemExit(f"{flag}: the dataset in {cfg.data} does not know its {what} "
                             f"(only the demo corpus does). Fix: {fix}")


def aid_targets(run, where, backing, solo):
    """The training aids' targets for a batch of windows found at `where`, as the keywords
    of SoloTransformer.loss (only those that are on):
    --pitch-aux, the notes the lead plays, [B, T] (--pitch-targets chord: the band's
    harmony, as --chord-aux's); --chord-aux, the band's harmony,
    [B, T, 12]; --ahead-aux, the harmony and the kicks ([B, T] bool, the frame of each).
    From what data.py heard, or with --*-targets truth the demo's score."""
    cfg, pitch, chords, ahead = run.cfg, None, None, None
    named = cfg.pitch_aux and cfg.pitch_targets == "chord"  # the band's chord, from the decoder
    if cfg.chord_aux or cfg.ahead_aux or named:  # the band's harmony, once for every aid naming it
        truth = run.meta if cfg.chord_targets == "truth" else None
        harmony = chord_targets(run.train_w, where, backing, truth).to(run.device)
        chords = harmony if cfg.chord_aux else None
    if cfg.pitch_aux:
        truth = run.meta if cfg.pitch_targets == "truth" else None
        pitch = harmony if named else pitch_targets(run.train_w, where, solo, truth).to(run.device)
    if cfg.ahead_aux:
        ahead = (harmony, kick_frames(run.meta, where, backing.size(-1),
                                      run.meta["codec"]["frame_rate"], 1).to(run.device))
    plan = teacher_plan(pitch, solo.size(1)) if cfg.pitch_plan else None  # sax/plan.py
    aids = {"pitch": pitch, "chords": chords, "ahead": ahead, "plan": plan}
    return {name: value for name, value in aids.items() if value is not None}


def heard_wanted(cfg):
    """What the training aids read that data.py heard beside the tokens (the dataset must
    be of a format that stores it, HEARD_SINCE): "notes" for --pitch-aux on the tracked
    notes, "chroma" for --chord-aux, --ahead-aux or --pitch-targets chord on the heard chroma
    (the default)."""
    chroma = ((max(cfg.chord_aux, cfg.ahead_aux) > 0 or cfg.pitch_aux > 0
               and cfg.pitch_targets == "chord") and cfg.chord_targets == "heard")
    return [name for name, on in (("notes", cfg.pitch_aux > 0 and cfg.pitch_targets == "tracked"),
                                  ("chroma", chroma)) if on]


def missing_heard(cfg, meta):
    """Of heard_wanted(cfg), what the dataset of `meta` was built too early to store."""
    return [name for name in heard_wanted(cfg)
            if meta.get("format", 1) < HEARD_SINCE[name]]
