"""
listening.py -- does the model listen to the band? Answered by number and by ear (phase 3).

train.py and generate.py both ask this question; the answers live here, so that neither
script needs the other. Read it top to bottom:
  1. the listening metrics: which frames test listening (the first second of a window,
     the band's kicks), a token-space onset detector fitted on the demo corpus's truth,
     the kick AUC of a solo, and the control that makes each figure mean something:
     the same solo scored over another song's backing;
  2. the chord-tone fit of decoded audio (the pretrained codec only);
  3. the ear: the solo mixed with its backing at a neutral level, and the listening
     pages (generate.py's index.html, and a training run's index.html with a sample at
     each new best checkpoint).

It imports data.py and model.py only; nothing here trains or loads a checkpoint.
It has no command of its own: python train.py and python generate.py run it.

Letters in the shape comments are model.py's: N windows, K codebooks, T frames, card codes.
"""
import html
import json
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np
import torch

import data
from model import sample_solo


# ----------------------------------------------------------------------------
# 1. The listening metrics, in token space
# ----------------------------------------------------------------------------

def listening_masks(meta, where, T, frame_rate):
    """Frames of the evaluation windows where the solo's own past cannot help: {name: [N, T] bool}.

    start: the first second of every window, where the decoder has little or no solo
    behind it. kicks (demo corpus, whose truth is known): the 3 frames (40 ms) from each
    of the band's kicks, where the lead starts a note whose moment and pitch only the
    band announces. The conditioning gain on these frames is the sharpest test of
    listening: a solo language model can do nothing there.
    """
    masks = {"start": (torch.arange(T) < round(frame_rate)).expand(len(where), T)}
    songs = {song["id"]: song for song in meta["songs"]}
    if all("kicks_s" in songs[song].get("truth", {}) for song, _, _ in where):
        masks["kicks"] = torch.zeros(len(where), T, dtype=torch.bool)
        for i, (song, variant, first) in enumerate(where):
            # augmented copies play faster or slower
            tempo = songs[song]["variants"][variant]["tempo"]
            for t in songs[song]["truth"]["kicks_s"]:
                f = round(t / tempo * frame_rate) - first
                masks["kicks"][i, max(0, f):max(0, f + 3)] = True
    return masks


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
            return data.event_frames(event, frame_rate, v["tempo"], first)
        for note in truth["lead_notes"]:
            lead[i, frames(note)] = (note["midi"] + shift) % 12
        for chord in truth["chords"]:
            chords[i, frames(chord), [(pc + shift) % 12 for pc in chord["pitch_classes"]]] = True
    return lead, chords


def knows_the_notes(meta):
    """Whether every song of the dataset carries its lead's notes (the demo corpus does;
    separated recordings do not)."""
    return all("lead_notes" in song.get("truth", {}) for song in meta["songs"])


def pitch_targets(windows, where, solo, meta=None):
    """train.py --pitch-aux's targets for windows solo [N, K, T] of `windows` (data.Windows)
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
    (data.Windows) found at `where`: the band's harmony in each frame as a distribution
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


def fit_onset_detector(solo, kicks, card):
    """A token-space note-onset detector, fitted on training windows with known kicks.

    solo [N, K, T] codes, kicks [N, T] bool. Returns log-odds [K, card + 1]: for each
    codebook and code, how much more often it occurs in the frames right after a kick
    than elsewhere (add-one smoothed; the padding token scores 0). With an untrained
    codec no rule "a new note changes the code" holds (its codes change on most frames),
    but which codes an attack produces can still be counted.
    """
    valid = solo[:, 0] != card                                                 # [N, T]
    table = torch.zeros(solo.size(1), card + 1)
    for k in range(solo.size(1)):
        at = torch.bincount(solo[:, k][kicks & valid], minlength=card)[:card].double() + 1
        off = torch.bincount(solo[:, k][~kicks & valid], minlength=card)[:card].double() + 1
        table[k, :card] = (at / at.sum()).log() - (off / off.sum()).log()
    return table


def fit_pitch_probe(solo, lead, card):
    """A token-space pitch-class reader, fitted on training windows with known notes.

    solo [N, K, T] codes, lead [N, T] the pitch class sounding (-1: none). Returns
    log-probabilities [K, card + 1, 12]: log p(code | pitch class) for each codebook,
    add-one smoothed (the padding token scores 0 for every class). read_pitch_classes
    adds them up over the codebooks (naive Bayes: the codebooks taken as independent
    witnesses of the note) and picks the likeliest class.
    """
    played = (lead >= 0) & (solo[:, 0] != card)                                 # [N, T]
    table = torch.zeros(solo.size(1), card + 1, 12)
    for k in range(solo.size(1)):
        counts = torch.ones(card, 12).index_put_((solo[:, k][played], lead[played]),
                                                 torch.ones(int(played.sum())), accumulate=True)
        table[k, :card] = (counts / counts.sum(0)).log()
    return table


# Frames each side that read_pitch_classes pools: a note lasts far longer than a 13 ms
# frame, and 5 frames (67 ms) read the true lead's pitch class right 85% of the time
# on the default corpus, against 67% for one frame (docs/phase3).
PITCH_SPAN = 2


def read_pitch_classes(probe, solo, span=PITCH_SPAN):
    """The pitch class a solo sounds in each frame, as the probe reads it: [N, K, T] -> [N, T]."""
    ll = probe[torch.arange(solo.size(1))[None, :, None], solo].sum(dim=1)      # [N, T, 12]
    # the mean over the frames within `span`, fewer at the window's edges
    pooled = torch.nn.functional.avg_pool1d(ll.transpose(1, 2), 2 * span + 1, 1, span,
                                            count_include_pad=False)           # [N, 12, T]
    return pooled.argmax(dim=1)


def note_in_chord(probe, solo, chords, frames, span=PITCH_SPAN):
    """Share of the frames whose pitch class, as the probe reads it, is a tone of the chord
    the band plays then (the note-in-chord ratio). solo [N, K, T]; chords [N, T, 12];
    frames [N, T] bool, those to count. About a third of the 12 classes are chord tones:
    a solo deaf to the harmony scores near 0.3, the true lead near 0.9."""
    read = read_pitch_classes(probe, solo, span)                                 # [N, T]
    hits = chords.gather(2, read[..., None])[..., 0]                             # [N, T]
    return float(hits[frames].float().mean()) if frames.any() else float("nan")


@dataclass
class Probes:
    """The token-space readers, fitted on the training split's truth: two of a solo, and
    one that reads the lead's pitch class from the band's own codes (counting_listener)."""
    onsets: torch.Tensor         # [K, card + 1]: fit_onset_detector
    pitch: torch.Tensor          # [K, card + 1, 12]: fit_pitch_probe, on the lead's codes
    backing_pitch: torch.Tensor  # [K, card + 1, 12]: fit_pitch_probe, on the backing's codes


def fit_probes(data_dir, meta, T):
    """Probes fitted on every window of T frames of the training split of a demo dataset."""
    backing, solo, where = data.Windows(data_dir, "train", meta, T).fixed()
    fr, card = meta["codec"]["frame_rate"], meta["codec"]["card"]
    lead, _ = harmony_truth(meta, where, T, fr)
    return Probes(fit_onset_detector(solo, listening_masks(meta, where, T, fr)["kicks"], card),
                  fit_pitch_probe(solo, lead, card), fit_pitch_probe(backing, lead, card))


def kick_auc(table, solo, kicks, valid):
    """How well a solo's codes mark the band's kicks: the probability that a frame right
    after a kick scores as more onset-like than a frame elsewhere (area under the ROC
    curve). 0.5: the solo ignores the kicks; 1: its attacks fall exactly on them.

    solo [N, K, T]; kicks, valid [N, T] bool (valid: frames that hold real audio).
    """
    # [N, T]: summed log-odds
    score = table[torch.arange(solo.size(1))[None, :, None], solo].sum(dim=1)
    pos, neg = score[kicks & valid], score[~kicks & valid]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    # Mann-Whitney: the AUC is the mean rank of the kick frames among all frames, rescaled.
    # Tied scores share the mean of the ranks they span.
    # sorted values
    _, group, counts = torch.cat([pos, neg]).unique(return_inverse=True, return_counts=True)
    ranks = (counts.cumsum(0) - (counts - 1) / 2)[group]           # 1-based mean rank of each score
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def kick_auc_late(table, solo, kicks, valid, late):
    """Phase 5: kick_auc of a solo heard `late` frames after the band frame it was written for
    (a live runner's delay, less its lookahead): solo frame t is scored at frame t + late,
    on the frames from `late` on."""
    T = solo.size(-1)
    late = min(late, T - 1)
    shifted = torch.cat([solo[..., :1].expand(-1, -1, late), solo[..., :T - late]], dim=-1)
    valid = valid.clone()
    valid[:, :late] = False
    return kick_auc(table, shifted, kicks, valid)


def mismatched_windows(windows, songs, spare):
    """For each evaluation window, the same window of another song: [N, K, T] codes (its
    backing when `windows` are backings, its solo when they are solos).

    Within the split when it holds two songs or more (the same windows, rolled until
    no window keeps its own song); otherwise from `spare`, windows of other songs
    (the training split), repeated if there are fewer of them.
    """
    n = len(songs)
    for shift in range(1, n):
        if all(songs[i] != songs[(i + shift) % n] for i in range(n)):
            return windows[[(i + shift) % n for i in range(n)]]
    return spare[torch.arange(n) % len(spare)]


def plays_with_band(own, mismatched, true, true_mismatched):
    """One figure for "does the solo play with its band": how much better a metric scores
    the generated solo over its own band than over another song's, as a share of the same
    difference for the true lead. 1: as tied to the band as the real soloist; 0: deaf to
    it (the band changes nothing). (m(solo, own) - m(solo, other)) / (m(lead, own) -
    m(lead, other)); nan when the lead itself does not tell the bands apart."""
    scale = true - true_mismatched
    return (own - mismatched) / scale if scale > 0 else float("nan")


@dataclass
class ListeningSet:
    """The windows the listening test scores (demo corpus), with the truth it scores against.

    The control for every figure is the same question asked of a solo that was not made
    for this band: generated over another song's backing, or another song's true lead,
    scored against this window's kicks and chords.
    """
    backing: torch.Tensor        # [N, K, T]
    solo: torch.Tensor           # [N, K, T]: the true lead
    other_backing: torch.Tensor  # [N, K, T]: for each window, another song's backing...
    other_solo: torch.Tensor     # [N, K, T]: ...and that song's true lead
    kicks: torch.Tensor          # [N, T] bool: the 3 frames from each of the band's kicks
    lead: torch.Tensor           # [N, T]: the true lead's pitch class, -1 where it rests
    chords: torch.Tensor         # [N, T, 12] bool: the tones of the band's chord

    def scored_frames(self, card):
        """[N, T] bool: frames of real audio in both true leads (not the special token
        `card`). Every solo is scored on the same frames."""
        return (self.solo[:, 0] != card) & (self.other_solo[:, 0] != card)

    def harmony_frames(self, card):
        """[N, T] bool: the scored frames where the true lead sounds a note inside a chord
        (note-in-chord counts these)."""
        return self.scored_frames(card) & (self.lead >= 0) & self.chords.any(-1)

    @staticmethod
    def of(meta, where, backing, solo, other_backing, other_solo):
        """None unless every window is of a demo song, whose truth is known."""
        T, fr = backing.size(-1), meta["codec"]["frame_rate"]
        masks = listening_masks(meta, where, T, fr)
        if "kicks" not in masks:
            return None
        return ListeningSet(backing, solo, other_backing, other_solo, masks["kicks"],
                            *harmony_truth(meta, where, T, fr))


def listening_windows(data_dir, meta, T, limit=None):
    """The evaluation windows of a dataset: (backing, solo, where, other backing, other solo).

    The validation split (the training split when there is none); "other" is, for each
    window, a window of another song (mismatched_windows).
    """
    split = "val" if meta["splits"]["val"]["segments"] else "train"
    backing, solo, where = data.Windows(data_dir, split, meta, T).fixed(limit)
    spare_backing, spare_solo, _ = data.Windows(data_dir, "train", meta, T).fixed(limit)
    songs = [song for song, _, _ in where]
    return (backing, solo, where, mismatched_windows(backing, songs, spare_backing),
            mismatched_windows(solo, songs, spare_solo))


def score_solos(probes, ls, solos):
    """Kick AUC and note-in-chord of each solo in `solos` ({name: [N, K, T] codes}, scored
    against the band of ls), and, when all four of own, mismatched, true and
    true_mismatched are there, the plays-with-the-band score of each metric."""
    card = probes.onsets.size(1) - 1
    valid, sounding = ls.scored_frames(card), ls.harmony_frames(card)            # [N, T] each
    scores = {}
    for name, solo in solos.items():
        scores[f"kick_auc_{name}"] = kick_auc(probes.onsets, solo, ls.kicks, valid)
        scores[f"note_in_chord_{name}"] = note_in_chord(probes.pitch, solo, ls.chords, sounding)
    if set(solos) >= {"own", "mismatched", "true", "true_mismatched"}:
        for metric, label in (("kick_auc", "rhythm"), ("note_in_chord", "harmony")):
            scores[f"plays_with_band_{label}"] = plays_with_band(
                *(scores[f"{metric}_{name}"] for name in ("own", "mismatched", "true",
                                                          "true_mismatched")))
    return scores


# A listener that only counts: the lead's pitch class guessed from the band's codes by the
# naive-Bayes reader of fit_pitch_probe, fitted on the training split's backing, the
# guesses pooled over half a second (18 frames each side at 75 Hz: a chord lasts longer
# than a note). It learns nothing but which codes of the band come with which note of
# the lead. Its note-in-chord says how much of the harmony a model could take from the
# backing's tokens with no more than counting: on the default corpus its guesses are
# chord tones far more often than chance (docs/phase3), so the chords are in the tokens.
COUNTING_SPAN = 18


def counting_listener(probes, ls):
    """Note-in-chord of the pitch classes counted from the band's codes, over its own band
    and, as the control, over another song's: {note_in_chord_counted_own, ..._mismatched}."""
    frames = ls.harmony_frames(probes.onsets.size(1) - 1)
    return {f"note_in_chord_counted_{name}": note_in_chord(probes.backing_pitch, backing,
                                                           ls.chords, frames, COUNTING_SPAN)
            for name, backing in (("own", ls.backing), ("mismatched", ls.other_backing))}


# The sampling settings of the listening test, the run page's samples and generate.py's
# defaults: those that made the solos play with the band best (docs/phase3, the
# ablation table: guidance 3 doubled the rhythm score of the default run's checkpoints).
SAMPLING = {"temperature": 1.0, "top_k": 250, "guidance": 3.0}


@torch.no_grad()
def listening_test(model, ls, probes, batch, device, seed=0, late=(), **sampling):
    """Solos generated for every window of the ListeningSet, over its own backing and over
    another song's, scored with score_solos beside the true leads. Sampled as generate.py
    samples (SAMPLING; keyword arguments override it). late: lateness in frames at which
    to score the own-band solos' kicks too (kick_auc_late: kick_auc_own_late<n>)."""
    options = {**SAMPLING, **sampling}
    model.eval()
    solos = {"true": ls.solo, "true_mismatched": ls.other_solo}
    for name, backings in (("own", ls.backing), ("mismatched", ls.other_backing)):
        solos[name] = torch.cat([
            sample_solo(model, backings[i:i + batch].to(device), temperature=options["temperature"],
                        top_k=options["top_k"], cfg_coef=options["guidance"], seed=seed + i).cpu()
            for i in range(0, len(backings), batch)])
    model.train()
    scores = score_solos(probes, ls, solos)
    valid = ls.scored_frames(model.cfg.card)
    for n in late:
        scores[f"kick_auc_own_late{n}"] = kick_auc_late(probes.onsets, solos["own"], ls.kicks,
                                                         valid, n)
    return scores


# The robustness check: held-out demo songs (indices past any corpus) whose band changes
# key once, a tritone away, in the middle of a window; how long the solo takes to find
# the new chords. The same seed as the corpus, so the same kind of song.
KEY_CHANGE_SONGS = range(10_000, 10_024)
RECOVERED = 0.1  # back within this much of its note-in-chord before the change


@dataclass
class KeyChangeSet:
    """KEY_CHANGE_SONGS as windows of T frames with the change at frame T // 2."""
    backing: torch.Tensor        # [n, K, T]
    lead: torch.Tensor           # [n, K, T]: the true lead
    lead_pc: torch.Tensor        # [n, T]: its pitch class, -1 where it rests
    chords: torch.Tensor         # [n, T, 12]: the band's chord tones


def key_change_set(codec, T, songs=KEY_CHANGE_SONGS):
    """Render and encode the songs (with a second of audio each side of the window, so
    that the codec hears the window's edges in context)."""
    fr, hop = codec.frame_rate, codec.sample_rate // codec.frame_rate
    windows, records, where = [], [], []
    for index in songs:
        backing, lead, truth = data.render_demo_song(index, 16.0, 0, key_change_at=0.5)
        first = round(truth["key_change_s"] * fr) - T // 2       # the change in mid-window
        margin = min(fr, first)
        part = slice((first - margin) * hop, (first + T + fr) * hop)
        windows.append([torch.from_numpy(data.encode_audio(codec, x[part])[:, margin:margin + T]
                                         .astype(np.int64)) for x in (backing, lead)])
        records.append({"id": index, "truth": truth,
                        "variants": [{"tempo": 1.0, "semitones": 0.0}]})
        where.append((index, 0, first))
    return KeyChangeSet(torch.stack([b for b, _ in windows]), torch.stack([s for _, s in windows]),
                        *harmony_truth({"songs": records}, where, T, fr))


def in_chord_curve(hits, frames, smooth):
    """Per-frame note-in-chord pooled over windows: hits, frames [N, T] bool -> [T], each
    frame the share of hits among counted frames within +-smooth frames (nan: none)."""
    kernel = torch.ones(1, 1, 2 * smooth + 1)
    def pool(x):
        return torch.nn.functional.conv1d(x.sum(0, dtype=torch.float32)[None, None], kernel,
                                          padding=smooth)[0, 0]
    return pool(hits & frames) / pool(frames)


def recovery_frames(curve, at, level):
    """Frames from `at` until the curve is back within RECOVERED of `level` (0: it never
    fell further); None when it does not get back within the window."""
    back = (curve[at:] >= level - RECOVERED).nonzero()
    return int(back[0]) if len(back) else None


@torch.no_grad()
def key_change_test(model, kc, probes, device, solos_per_song=2, seed=0, **sampling):
    """Solos over the KeyChangeSet: the note-in-chord before the change, in the half second
    after it, and the frames until it is back near its level before (curves smoothed
    over half a second), for the generated solos and for the true lead (the check: it
    is back within a fraction of a second, once the notes held over the change end)."""
    options = {**SAMPLING, **sampling}
    card, T = model.cfg.card, kc.backing.size(-1)
    frames = (kc.lead_pc >= 0) & kc.chords.any(-1) & (kc.lead[:, 0] != card)     # [n, T]
    generated = torch.cat([
        sample_solo(model, kc.backing.to(device), temperature=options["temperature"],
                    top_k=options["top_k"], cfg_coef=options["guidance"],
                    seed=seed + 1000 * r).cpu() for r in range(solos_per_song)])
    smooth, at = round(model.cfg.frame_rate / 4), T // 2       # +-0.25 s: half-second curves
    figures = {}
    for name, solo in (("generated", generated), ("true", kc.lead)):
        copies = len(solo) // len(kc.lead)
        counted, chords = frames.repeat(copies, 1), kc.chords.repeat(copies, 1, 1)
        hits = chords.gather(2, read_pitch_classes(probes.pitch, solo)[..., None])[..., 0]
        before = float(hits[:, :at][counted[:, :at]].float().mean())
        after = hits[:, at:at + 2 * smooth][counted[:, at:at + 2 * smooth]]
        figures[f"key_change_in_chord_before_{name}"] = before
        figures[f"key_change_in_chord_after_{name}"] = float(after.float().mean())
        figures[f"key_change_recovery_frames_{name}"] = recovery_frames(
            in_chord_curve(hits, counted, smooth), at, before)
    return figures


def listening_figures(cfg, config, model, codec, solo, n_frames, device, out=None):
    """For a demo validation clip: how the solo follows the band, next to the same figures
    for a solo written over another song's backing, the clip's true lead and another
    song's true lead, all scored against this clip's band (score_solos).

    kick AUC and note-in-chord (tokens, any codec): do the solo's attacks fall on the
    band's kicks, do its pitch classes fit the chords? chord-tone fit (audio, the
    pretrained codec only): the pitches read from the decoded audio instead.
    out: a folder to draw listening.png in (probe_picture), for every take.
    Returns None when the backing is not a demo validation clip (no truth to score against).
    """
    meta = data.load_dataset(config["data"]["dir"])
    segments = meta["splits"]["val"]["segments"]
    if cfg.backing or not meta.get("demo") or not segments:
        return None
    data_dir, fr = config["data"]["dir"], meta["codec"]["frame_rate"]
    seg = segments[cfg.from_val]
    # The first clip of another validation song; with one validation song, of a training song.
    other_split = "val" if any(s["song"] != seg["song"] for s in segments) else "train"
    other = next(s for s in meta["splits"][other_split]["segments"] if s["song"] != seg["song"])
    # [K, n_frames] each
    own_b, true_solo = data.Windows(data_dir, "val", meta, n_frames).window(seg, 0)
    other_b, other_solo = data.Windows(data_dir, other_split, meta, n_frames).window(other, 0)
    # Sampled exactly as the solo it is compared with (same options and seed), so the
    # only difference between the two is the backing.
    mismatched = sample_solo(model, other_b[None].to(device), temperature=cfg.temperature,
                             top_k=cfg.top_k, top_p=cfg.top_p, cfg_coef=cfg.guidance,
                             seed=cfg.seed).cpu()                                # [1, K, n_frames]
    where = [(seg["song"], seg["variant"], seg["song_frame"])]
    ls = ListeningSet.of(meta, where, own_b[None], true_solo[None], other_b[None],
                         other_solo[None])
    probes = fit_probes(data_dir, meta, n_frames)
    solo = solo[:, :, :n_frames].cpu()
    figures = score_solos(probes, ls, {"own": solo[:1], "mismatched": mismatched,
                                       "true": ls.solo, "true_mismatched": ls.other_solo})
    figures["mismatched_backing"] = f"{other_split} clip of song {other['song']}"
    if out is not None:
        takes = [(f"solo {i + 1}" if len(solo) > 1 else "solo", s) for i, s in enumerate(solo)]
        probe_picture(Path(out) / "listening.png", probes, ls,
                      takes + [("the true solo", true_solo)], fr)
    # pitches mean something only when the codec decodes real audio
    if not meta["codec"]["untrained"]:
        chords = next(s for s in meta["songs"] if s["id"] == seg["song"])["truth"]["chords"]
        offset, rate = seg["song_frame"] / fr, meta["codec"]["sample_rate"]
        for name, codes in (("chord_tone_fit", solo[0]), ("chord_tone_fit_mismatched",
                                                           mismatched[0])):
            figures[name] = chord_tone_fit(data.decode_codes(codec, codes.numpy()), chords,
                                           rate, offset)
    return figures


def probe_picture(png, probes, ls, solos, frame_rate, window=0):
    """What the probes read in each solo, drawn against the band's truth: one row per solo
    (solos: [(label, codes [K, T])]), scored against window `window` of the ListeningSet.

    Left, rhythm: the onset score of each frame (the detector's summed log-odds) and,
    in orange, the frames right after the band's kicks: a solo that plays with the band
    peaks inside them. Right, harmony: the band's chord tones in grey, and the pitch
    class the probe reads in each frame where the true lead plays, green when it is a
    chord tone, red when not. With an untrained codec this is the only way to see it.
    """
    import matplotlib
    matplotlib.use("Agg")  # no screen needed
    import matplotlib.pyplot as plt
    card = probes.onsets.size(1) - 1
    real = ls.solo[window, 0] != card                                           # [T]
    # frames before the first padding, and no more than the shortest solo holds
    n = min([int(real.long().cumprod(0).sum())] + [codes.size(-1) for _, codes in solos])
    t = torch.arange(n) / frame_rate                                            # seconds
    kicks, chords = ls.kicks[window, :n], ls.chords[window, :n]
    sounding = ((ls.lead[window, :n] >= 0) & chords.any(-1)).numpy()
    fig, axes = plt.subplots(len(solos), 2, figsize=(12, 1.9 * len(solos) + 0.6),
                             squeeze=False, gridspec_kw={"width_ratios": [1, 1]})
    for row, (label, codes) in enumerate(solos):
        codes = codes[None, :, :n]                                              # [1, K, n]
        score = probes.onsets[torch.arange(codes.size(1))[None, :, None], codes].sum(1)[0]
        left, right = axes[row]
        left.fill_between(t, score.min(), score.max(), where=kicks.numpy(), color="#f0a030",
                          alpha=0.35, step="mid", label="after a band kick")
        left.plot(t, score, color="#1f4e9a", lw=0.8, label="onset score")
        left.set_ylabel(label, fontsize=9)
        # The chord tones as a grey image (12 rows), the read classes as dots on top.
        right.imshow(chords.T.numpy(), aspect="auto", origin="lower", cmap="Greys", vmin=0,
                     vmax=3, extent=(0, n / frame_rate, -0.5, 11.5), interpolation="nearest")
        read = read_pitch_classes(probes.pitch, codes)[0]                       # [n]
        hit = chords.gather(1, read[:, None])[:, 0].numpy()
        for mask, color in ((sounding & hit, "#2a9d4a"), (sounding & ~hit, "#d03030")):
            right.scatter(t.numpy()[mask], read.numpy()[mask], s=3, color=color, lw=0)
        right.set_yticks(range(12), data.NOTE_NAMES, fontsize=6)
    axes[0, 0].set_title("rhythm: onset score, band kicks in orange", fontsize=10)
    axes[0, 1].set_title("harmony: chord tones grey; read pitch class green = in chord, "
                         "red = not", fontsize=10)
    axes[0, 0].legend(loc="upper right", fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("seconds")
    fig.tight_layout()
    data.atomic_write(png, lambda f: fig.savefig(f, format="png", dpi=90))
    plt.close(fig)


# ----------------------------------------------------------------------------
# 2. Harmony, from decoded audio
# ----------------------------------------------------------------------------

def chord_tone_fit(audio, chords, rate, offset_s=0.0, frame_s=0.01):
    """Share of a solo's pitched 10 ms frames whose pitch class is a tone of the chord
    sounding then: how well the solo fits the band's harmony, from audio.

    audio [N] (a decoded solo), chords: a demo song's truth["chords"], offset_s: where
    audio starts in the song. The pitch comes from torchaudio's detect_pitch_frequency
    (normalised autocorrelation with median smoothing): torchaudio is a dependency
    already, and a solo is one line, which is what such a tracker handles. Its
    octave errors do not matter here: only the pitch class counts. Frames more than 30
    dB below the solo's loud frames, or outside every chord, are not counted. About a
    third of the 12 pitch classes are chord tones, so a solo deaf to the harmony scores
    near 0.33; the demo's true lead scores near 1 (tests/test_data.py).
    """
    import torchaudio.functional as AF
    # freq_low 200 Hz keeps the tracker off the sub-octaves it otherwise locks onto with
    # reed-like spectra; a low note then reads an octave up, with the right pitch class.
    hz = AF.detect_pitch_frequency(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)),
                                   rate,
                                   frame_time=frame_s, win_length=9, freq_low=200,
                                   freq_high=1000).numpy()
    hop = len(audio) / max(len(hz), 1)                                 # samples per pitch frame
    level = data.frame_rms_db(audio, int(round(hop)))[:len(hz)]
    loud = level > np.percentile(level, 95) - 30 if len(level) else level
    times = offset_s + (np.arange(len(hz)) + 0.5) * hop / rate
    pitch_class = np.round(12 * np.log2(np.maximum(hz, 1e-6) / 440.0) + 69).astype(int) % 12
    hits = total = 0
    for chord in chords:
        inside = loud & (times >= chord["start_s"]) & (times < chord["end_s"])
        hits += int(np.isin(pitch_class[inside], chord["pitch_classes"]).sum())
        total += int(inside.sum())
    return hits / total if total else float("nan")


# ----------------------------------------------------------------------------
# 3. By ear: the mix, and the listening pages
# ----------------------------------------------------------------------------

def mix_audio(backing, solo):
    """Level-match the solo to the backing (equal RMS), add, and scale each down only if it
    would clip.

    The codec does not keep loudness exactly, and a model's solo may come out much
    quieter or louder than the band; equal RMS is a neutral starting point for
    listening. Scaling the sum down (never clipping it) keeps the waveform intact.
    The DC offset (the mean) of each is removed first: it is inaudible, but an RMS
    that counts it would match levels on it, and an offset added to the band pushes
    the mix toward the limiter (the untrained codec decodes to little more than one).
    """
    n = min(len(backing), len(solo))
    b, s = backing[:n] - backing[:n].mean(), solo[:n] - solo[:n].mean()
    rms = lambda x: float(np.sqrt(np.mean(x ** 2)) + 1e-9)  # noqa: E731
    # At most +40 dB: a nearly silent solo stays quiet instead of its noise floor being
    # raised to the band's level. The backing's level is trustworthy: every reader
    # clips samples past full scale (data.checked_samples), so no spike can set it.
    s = s * min(rms(b) / rms(s), MAX_SOLO_GAIN)
    mix = b + s
    return limited(mix), limited(s)


MAX_SOLO_GAIN = 100.0  # +40 dB


def limited(x, ceiling=0.98):
    """x scaled down (never clipped) so that its peak is at most `ceiling`, as float32."""
    peak = float(np.abs(x).max()) if len(x) else 0.0
    return (x * (ceiling / peak) if peak > ceiling else x).astype(np.float32)


# One static file for a person to open: players for every wav, the pictures, the
# figures and the command that made them. It opens from the file system with no
# server, no network and no script, and links only to files beside it, so the folder
# can be zipped and sent. Every figure sits in an element whose data-key is its path
# in the JSON written beside it (generation.json, or a run's page.json), which is how
# tests/test_pages.py holds the page to the numbers. train.py writes the same kind of
# page for a run, with a sample at each new best checkpoint.

PAGE_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 76rem; margin: 1.5rem auto;
       padding: 0 1rem; color: #1d1d1f; }
h1 { font-size: 1.45rem; margin-bottom: .2rem; } h2 { font-size: 1.15rem; margin-top: 1.8rem; }
.note { background: #fff4e5; border-left: 4px solid #e8a33d; padding: .5rem .8rem; }
.takes { display: flex; flex-wrap: wrap; gap: 1rem; }
.take { border: 1px solid #d8d8de; border-radius: 6px; padding: .6rem .8rem; flex: 1 1 22rem; }
.take h3 { margin: 0 0 .4rem; font-size: 1rem; }
figure { margin: .3rem 0; } figcaption { font-size: .85rem; color: #555; }
audio { width: 100%; } img { max-width: 100%; border: 1px solid #eee; }
table { border-collapse: collapse; font-size: .9rem; }
td, th { border-bottom: 1px solid #e4e4e8; padding: .2rem .6rem; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f4f4f6; padding: .6rem; white-space: pre-wrap; overflow-wrap: anywhere; }
"""


def shown(value):
    """A figure as the page shows it: integers whole, other numbers to 3 decimals."""
    # bool is a subclass of int in Python: True must print as True, not as 1.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return html.escape(str(value))
    return str(value) if isinstance(value, int) else f"{value:.3f}"


def value_cell(key, value, tag="td"):
    """One figure in an element (a table cell by default), tagged with its path in the JSON
    (data-key)."""
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    kind = " class=n" if numeric else ""
    return f'<{tag}{kind} data-key="{html.escape(key)}">{shown(value)}</{tag}>'


def flatten(obj, prefix):
    """Nested dicts and lists -> [(dotted path, value)]: {"a": {"b": 1}} -> [("a.b", 1)]."""
    if isinstance(obj, dict):
        return [pair for k, v in obj.items() for pair in flatten(v, f"{prefix}.{k}")]
    if isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
        return [pair for i, v in enumerate(obj) for pair in flatten(v, f"{prefix}.{i}")]
    # A list of plain values (a setting such as backing_sources) is one figure, joined.
    return [(prefix, ", ".join(map(str, obj)) if isinstance(obj, list) else obj)]


def figures_table(prefix, obj):
    """Every figure of obj (a dict from the JSON, under the key `prefix`) as rows of a table."""
    rows = "".join(f"<tr><th>{html.escape(key[len(prefix) + 1:])}</th>{value_cell(key, value)}</tr>"
                   for key, value in flatten(obj, prefix))
    return f"<table>{rows}</table>"


def player(label, src):
    """An audio player with a caption. preload="metadata": the browser reads each file's
    header (its duration) when the page opens, and the audio only when played."""
    return (f'<figure><figcaption>{html.escape(label)}</figcaption>'
            f'<audio controls preload="metadata" src="{quote(src)}"></audio></figure>')


def picture(alt, src):
    # quote(): a file name with a space or a '#' still links to the file, not elsewhere.
    return f'<img src="{quote(src)}" alt="{html.escape(alt)}">'


def write_page(path, title, body):
    """A self-contained HTML page, written atomically."""
    page = (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{html.escape(title)}</title><style>{PAGE_STYLE}</style></head>\n'
            f'<body>\n{body}\n</body></html>\n')
    data.atomic_write(path, lambda f: f.write(page), mode="w")


def token_table(columns):
    """Distinct codes and entropy per codebook, a column per take: columns [(label, key, stats)]."""
    head = "".join(f"<th colspan=2>{html.escape(label)}</th>" for label, _, _ in columns)
    rows = "".join(
        f"<tr><th>codebook {k + 1}</th>" + "".join(
            value_cell(f"{key}.{k}.distinct", stats[k]["distinct"])
            + value_cell(f"{key}.{k}.entropy_nats", stats[k]["entropy_nats"])
            for _, key, stats in columns) + "</tr>"
        for k in range(len(columns[0][2])))
    sub = "".join("<th>distinct</th><th>entropy (nats)</th>" for _ in columns)
    return f"<table><tr><th></th>{head}</tr><tr><th></th>{sub}</tr>{rows}</table>"


def generation_page(out, result, takes, truth):
    """index.html for generate.py's folder. takes: [(label, solo wav, mix wav, png)]; truth:
    (solo wav, mix wav) of the true solo of a validation clip, or None."""
    # The page is a list of HTML pieces joined at the end: each section below is a few
    # lines of markup, in the order a reader meets them (listen first, numbers after).
    n = len(takes)
    parts = [f"<h1>{n} solo{'s' if n > 1 else ''} over {html.escape(result['backing'])}</h1>",
             f"<p>Checkpoint <code>{html.escape(result['checkpoint'])}</code> at step "
             f"{result['step']}; {result['seconds']:.1f} s. Written by <code>generate.py</code>; "
             "the figures are those of <a href=\"generation.json\">generation.json</a>.</p>"]
    if result["codec"]["untrained"]:
        parts.append(f'<p class="note">Offline: {html.escape(data.UNTRAINED_AUDIO)}. To hear the '
                     "model, train on tokens of the pretrained codec; here, judge the tokens panel "
                     "of the pictures and the figures below (docs/codec.md).</p>")
    # One backing for all; then one box per take, side by side (a flex row that wraps on
    # a narrow screen), so that N solos over the same band are compared by ear at once.
    parts += ["<h2>Listen</h2>", player("the backing, as the model heard it", "backing.wav"),
              '<div class="takes">']
    for label, solo, mix, png in takes:
        parts.append(f'<section class="take"><h3>{html.escape(label)}</h3>{player("solo", solo)}'
                     f'{player("solo + backing", mix)}{picture(label, png)}</section>')
    if truth:  # the recording's own solo over the same clip: what the model is aiming at
        parts.append('<section class="take"><h3>the true solo (the recording)</h3>'
                     f'{player("solo", truth[0])}{player("solo + backing", truth[1])}</section>')
    parts.append("</div>")
    if result.get("listening"):
        parts += ["<h2>Does it follow the band?</h2>",
                  "<p>What two probes read in the tokens (docs/phase3-training-evaluation.md). "
                  "Kick AUC: do the solo's note attacks fall on the band's kicks (0.5: not "
                  "at all)? Note-in-chord: is the pitch class it plays a tone of the band's "
                  "chord (about 0.3 by chance)? Each is asked of solo 1 (<i>own</i>), of a "
                  "solo written over another song's backing (<i>mismatched</i>), of the "
                  "clip's true lead and of another song's true lead, all against this "
                  "clip's band. <i>plays_with_band</i>: the solo's own-minus-mismatched "
                  "difference over the true lead's (1: as tied to the band as the real "
                  "soloist, 0: deaf to it).</p>",
                  picture("what the probes read in each solo, against the band's kicks "
                          "and chords", "listening.png"),
                  figures_table("listening", result["listening"])]
    # Token statistics, a column per take: generated solos, the true solo, the backing.
    # Their data-keys are the paths in generation.json (solo_tokens.0.2.entropy_nats).
    columns = [(label, f"solo_tokens.{i}", stats)
               for i, ((label, *_), stats) in enumerate(zip(takes, result["solo_tokens"]))]
    if result.get("true_solo_tokens"):
        columns.append(("true solo", "true_solo_tokens", result["true_solo_tokens"]))
    columns.append(("backing", "backing_tokens", result["backing_tokens"]))
    parts += ["<h2>Tokens</h2><p>A solo stuck on a few codes (entropy near 0) is a drone; "
              "one spread over all of them (near 6.9 nats) is noise.</p>", token_table(columns),
              "<h2>Timings</h2>", figures_table("timings", result["timings"])]
    if result.get("streaming"):
        parts += ["<h2>Streaming</h2>", figures_table("streaming", result["streaming"])]
    # The command that reproduces the page, then every setting (defaults included).
    parts += ["<h2>How it was made</h2>", f"<pre>{html.escape(result['command'])}</pre>",
              figures_table("settings", result["settings"])]
    write_page(out / "index.html", f"Solo over {result['backing']}", "\n".join(parts))


# "Is it getting better?" answered by ear: at each new best checkpoint, the model as it
# is then writes a short solo over one fixed validation clip (--page-sample-s seconds,
# seeded, sampled as generate.py samples: SAMPLING), and index.html lines the samples up, step
# by step, next to the loss curves, the clip's backing and its true solo. The page's
# figures live in page.json beside it; the page is redrawn from that file at every
# evaluation, so a resumed run's page shows the whole run.

# The figures of each sample on the run's page: (key in page.json, label).
SAMPLE_FIGURES = (("val_ce", "validation loss (nats)"), ("cond_gain", "conditioning gain (nats)"),
                  ("seconds_to_make", "seconds to generate and decode"))


class RunPage:
    """page.json + index.html + the sample wavs (in <run>/page/) of one run."""

    def __init__(self, out, cfg, meta, evals, device, resumed_at):
        # resumed_at: the step of the checkpoint a resumed run starts from (0: a new run).
        self.out, self.cfg, self.device = Path(out), cfg, device
        self.untrained = meta["codec"]["untrained"]
        self.file = self.out / "page.json"
        try:
            old = json.loads(self.file.read_text()) if resumed_at and self.file.exists() else {}
        # a damaged page costs its samples, not the run
        except (json.JSONDecodeError, UnicodeDecodeError):
            print(f"WARNING: {self.file} is damaged: the page starts again from this step")
            old = {}
        # A resumed run redoes the steps after its checkpoint: their samples are redone too.
        self.samples = [s for s in old.get("samples", []) if s["step"] <= resumed_at]
        # The codec turns the sampled codes into audio. Without one (page_sample_s 0, or
        # weights that will not load), the page keeps its curves and table, no players.
        self.codec = self.clip = None
        # The probes (demo corpus): a picture at each sample of what they read in it.
        self.listening, self.frame_rate = evals.listening, meta["codec"]["frame_rate"]
        self.probes = (fit_probes(cfg.data, meta, evals.backing.size(-1))
                       if self.listening is not None and cfg.page_sample_s > 0 else None)
        if cfg.page_sample_s > 0:
            try:
                # the codec seeds torch: training's randomness stays its own
                with torch.random.fork_rng(devices=[]):
                    self.codec = data.dataset_codec(meta["codec"], cfg.data, device)
            except (OSError, RuntimeError, SystemExit) as err:  # the page must never stop a run
                print(f"WARNING: no samples on the run's page: the codec of {cfg.data} "
                      f"did not load ({err}). Pass --page-sample-s 0 to skip them.")
        if self.codec is not None:
            # The clip: the start of the first evaluation window, up to page_sample_s
            # seconds, and no further than its real frames (a short section is padded
            # with the special token, which the codec cannot decode).
            card = meta["codec"]["card"]
            real = ((evals.backing[0] != card) & (evals.solo[0] != card)).all(0)  # [T]: not padding
            n = min(int(real.long().cumprod(0).sum()),
                    round(cfg.page_sample_s * meta["codec"]["frame_rate"]))
            self.clip = evals.backing[0, :, :n]                                         # [K, n]
            # Written once per run: the clip's backing, and its true solo mixed exactly as
            # the samples will be (the page plays that mix), so that the two compare fairly.
            self.rate = meta["codec"]["sample_rate"]
            self.backing_audio = data.decode_codes(self.codec, self.clip.numpy())
            true_mix, _ = mix_audio(self.backing_audio,
                                    data.decode_codes(self.codec, evals.solo[0, :, :n].numpy()))
            for name, audio in (("backing", self.backing_audio), ("true_mix", true_mix)):
                data.write_audio(self.out / "page" / f"{name}.wav", audio, self.rate)

    def sample(self, model, step, metrics):
        """A new best checkpoint: its solo over the clip, added to page.json (atomically)."""
        if self.clip is not None:
            # Seeded and sampled as generate.py samples (SAMPLING): two
            # samples differ only because the weights changed. sample_solo() puts the model
            # in eval mode and back, and draws from its own generator, so training's
            # dropout and data order are exactly what they would be without the page.
            t0 = time.perf_counter()
            codes = sample_solo(model, self.clip[None].to(self.device),
                                temperature=SAMPLING["temperature"], top_k=SAMPLING["top_k"],
                                cfg_coef=SAMPLING["guidance"],
                                seed=self.cfg.seed)[0].cpu().numpy()                  # [K, n]
            mix, solo = mix_audio(self.backing_audio, data.decode_codes(self.codec, codes))
            # Paths relative to the run folder, as the page links them.
            names = {kind: f"page/step{step:06d}_{kind}.wav" for kind in ("solo", "mix")}
            data.write_audio(self.out / names["solo"], solo, self.rate)
            data.write_audio(self.out / names["mix"], mix, self.rate)
            if self.probes is not None:
                names["probes"] = f"page/step{step:06d}_probes.png"
                probe_picture(self.out / names["probes"], self.probes, self.listening,
                              [(f"step {step}", torch.from_numpy(codes)),
                               ("the true solo", self.listening.solo[0])], self.frame_rate)
            # One sample per step: a resumed run that reaches this best again replaces it.
            self.samples = [s for s in self.samples if s["step"] != step] + [
                {"step": step, "val_ce": metrics["val_ce"], "cond_gain": metrics["cond_gain"],
                 "seconds_to_make": time.perf_counter() - t0, **names}]

    def write(self, metrics_file):
        """page.json and index.html from the evaluations so far and the samples."""
        # Everything the page shows goes to page.json first; the HTML is drawn from that
        # record, never from other state, so the two cannot disagree.
        rows = [r for r in data.read_metrics(metrics_file) if "val_ce" in r]
        keys = ["step", "train_loss", "val_ce", "val_ppl", "cond_gain"]
        record = {"command": data.command_line("train.py", self.cfg),
                  "untrained_codec": self.untrained,
                  "evaluations": [{k: r[k] for k in keys if k in r} for r in rows],
                  "samples": self.samples}
        data.write_json(self.file, record)
        parts = [f"<h1>Training run <code>{html.escape(self.out.name)}</code></h1>",
                 f"<p>{len(rows)} evaluation{'s' if len(rows) != 1 else ''} so far; the "
                 "figures are those of <a href=\"page.json\">page.json</a> and <a "
                 "href=\"metrics.jsonl\">metrics.jsonl</a>. Checkpoints: "
                 "<code>best/</code>, <code>latest/</code>.</p>"]
        if self.untrained:
            parts.append(f'<p class="note">Offline: {html.escape(data.UNTRAINED_AUDIO)}. The '
                         "losses are real; the audio below carries nothing of the tokens "
                         "(docs/codec.md).</p>")
        curves = picture("training and validation loss, conditioning gain", "loss.png")
        parts += ["<h2>Loss</h2>", curves]
        if self.samples:
            parts += ["<h2>Progress, by ear</h2>",
                      "<p>The same validation clip at each new best checkpoint: "
                      f"{self.cfg.page_sample_s:g} s, seed {self.cfg.seed}, top-k "
                      f"{SAMPLING['top_k']}, guidance {SAMPLING['guidance']:g}. Listen "
                      "for the solo locking onto the band's "
                      "kicks and chords as the validation loss falls; on the demo corpus "
                      "the picture under each sample shows what the probes read in it "
                      "(onsets against the band's kicks, pitch classes against its "
                      "chords), above the same for the true solo.</p>",
                      player("the clip's backing", "page/backing.wav"),
                      player("its true solo, with the backing", "page/true_mix.wav"),
                      '<div class="takes">']
            # Newest first: the latest best is what one opens the page for. j is the
            # sample's index in page.json, which its data-keys name.
            for i, s in enumerate(reversed(self.samples)):
                j = len(self.samples) - 1 - i
                parts.append(
                    '<section class="take"><h3>step '
                    f'{value_cell(f"samples.{j}.step", s["step"], "span")}</h3><table>'
                    + "".join(f"<tr><th>{label}</th>{value_cell(f'samples.{j}.{key}', s[key])}</tr>"
                              for key, label in SAMPLE_FIGURES)
                    + f'</table>{player("solo", s["solo"])}'
                    f'{player("solo + backing", s["mix"])}'
                    + (picture(f"what the probes read at step {s['step']}", s["probes"])
                       if "probes" in s else "") + '</section>')
            parts.append("</div>")
        head = "".join(f"<th>{k}</th>" for k in keys)
        body = "".join("<tr>" + "".join(value_cell(f"evaluations.{i}.{k}",
                                                   e[k]) if k in e else "<td></td>"
                                        for k in keys) + "</tr>"
                       for i, e in enumerate(record["evaluations"]))
        parts += ["<h2>Evaluations</h2>", f"<table><tr>{head}</tr>{body}</table>",
                  "<h2>How it was made</h2>", f"<pre>{html.escape(record['command'])}</pre>"]
        write_page(self.out / "index.html", f"Run {self.out.name}", "\n".join(parts))
