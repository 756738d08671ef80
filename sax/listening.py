"""
sax/listening.py -- does the model listen to the band? Answered by number (phase 3).

train.py, generate.py and experiments/ablation.py all ask this question; the answers live
here, so that none of them needs another. Read it top to bottom:
  1. the listening metrics: which frames test listening (the first second of a window,
     the band's kicks), a token-space onset detector and pitch-class probe fitted on the
     demo corpus's truth, the kick AUC and the note-in-chord of a solo, and the control
     that makes each figure mean something: the same solo scored over another song's
     backing; the key-change test;
  2. the chord-tone fit of decoded audio (the pretrained codec only).
The ear's side (the mix, the listening pages, the pictures) is in sax/pages.py.

Nothing here trains or loads a checkpoint. Letters in the shape comments are model.py's:
N windows, K codebooks, T frames, card codes.
"""
from dataclasses import dataclass, fields

import numpy as np
import torch

from sax.audio import frame_rms_db
from sax.codec import encode_audio
from sax.dataset import Windows, harmony_truth, kick_frames
from sax.demo import render_demo_song
from sax.reference import nearest_of_class
from sax.sampling import SAMPLING, sample_solo


# ----------------------------------------------------------------------------
# 1. The listening metrics, in token space
# ----------------------------------------------------------------------------

# The probes' spans are times, turned into frames at the codec's frame rate (frames_of).
KICK_S = 0.04  # the frames from a kick where the lead's note starts: 3 at 75 Hz


def frames_of(seconds, frame_rate):
    """A span in seconds as a whole number of frames (at least one)."""
    return max(1, round(seconds * frame_rate))


def listening_masks(meta, where, T, frame_rate):
    """Frames of the evaluation windows where the solo's own past cannot help: {name: [N, T] bool}.

    start: the first second of every window, where the decoder has little or no solo
    behind it. kicks (demo corpus, whose truth is known): the 40 ms from each of the
    band's kicks (3 frames at 75 Hz, 2 at 50), where the lead starts a note whose moment
    and pitch only the band announces. The conditioning gain on these frames is the
    sharpest test of listening: a solo language model can do nothing there.
    """
    masks = {"start": (torch.arange(T) < round(frame_rate)).expand(len(where), T)}
    songs = {song["id"]: song for song in meta["songs"]}
    if all("kicks_s" in songs[song].get("truth", {}) for song, _, _ in where):
        masks["kicks"] = kick_frames(meta, where, T, frame_rate, frames_of(KICK_S, frame_rate))
    return masks


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


# Seconds each side that read_pitch_classes pools: a note lasts far longer than a 13 ms
# frame, and 2 frames each side at 75 Hz (5 frames, 67 ms) read the true lead's pitch
# class right 85% of the time on the default corpus, against 67% for one frame (docs/phase3).
PITCH_SPAN_S = 0.027


def read_pitch_classes(probe, solo, span):
    """The pitch class a solo sounds in each frame, as the probe reads it: [N, K, T] -> [N, T]."""
    ll = probe[torch.arange(solo.size(1))[None, :, None], solo].sum(dim=1)      # [N, T, 12]
    # the mean over the frames within `span`, fewer at the window's edges
    pooled = torch.nn.functional.avg_pool1d(ll.transpose(1, 2), 2 * span + 1, 1, span,
                                            count_include_pad=False)           # [N, 12, T]
    return pooled.argmax(dim=1)


# The probes' reading of a solo, made audible (the listening pages): a note wherever the
# onset detector's summed log-odds peak above READ_ONSET nats, its pitch class the pitch
# probe's there. It is as good as the probes are, no better: what they hear in the codes.
READ_ONSET = 2.0
READ_HOLD_S = 0.5  # a read note is held until the next one, at most this long


def read_notes(probes, solo, frame_rate):
    """What the probes read in one solo's codes [K, T], as notes [(start_s, dur_s, midi)]
    for sax.demo.render_lead: the probes' reading, not the model's audio. Each note is
    placed in the demo lead's range, nearest the last (the register is not read)."""
    score = probes.onsets[torch.arange(solo.size(0))[:, None], solo].sum(0)      # [T]
    peaks = [t for t in range(1, len(score) - 1) if score[t] > READ_ONSET
             and score[t] >= score[t - 1] and score[t] > score[t + 1]]
    classes = read_pitch_classes(probes.pitch, solo[None], probes.span)[0]       # [T]
    notes, last = [], 70
    for i, t in enumerate(peaks):
        end = peaks[i + 1] if i + 1 < len(peaks) else len(score)
        last = nearest_of_class(int(classes[t]), last)
        notes.append((t / frame_rate, min((end - t) / frame_rate, READ_HOLD_S) * 0.9, last))
    return notes


def note_in_chord(probe, solo, chords, frames, span):
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
    span: int                    # frames each side read_pitch_classes pools: PITCH_SPAN_S
    counting_span: int           # ... and counting_listener's: COUNTING_SPAN_S


def fit_probes(data_dir, meta, T):
    """Probes fitted on every window of T frames of the training split of a demo dataset."""
    backing, solo, where = Windows(data_dir, "train", meta, T).fixed()
    fr, card = meta["codec"]["frame_rate"], meta["codec"]["card"]
    lead, _ = harmony_truth(meta, where, T, fr)
    return Probes(fit_onset_detector(solo, listening_masks(meta, where, T, fr)["kicks"], card),
                  fit_pitch_probe(solo, lead, card), fit_pitch_probe(backing, lead, card),
                  frames_of(PITCH_SPAN_S, fr), frames_of(COUNTING_SPAN_S, fr))


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
    partner = partners(songs)
    return windows[partner] if partner is not None else spare[torch.arange(len(songs)) % len(spare)]


def partners(songs):
    """For each window (of song songs[i]), the window of another song that mismatched_windows
    pairs it with: the windows rolled by the smallest shift that moves every window off its
    own song; None when the windows are all of one song."""
    n = len(songs)
    for shift in range(1, n):
        if all(songs[i] != songs[(i + shift) % n] for i in range(n)):
            return [(i + shift) % n for i in range(n)]
    return None


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

    def rows(self, index):
        """The set of the windows `index` (a bootstrap's draw: repeats allowed)."""
        return ListeningSet(*(getattr(self, f.name)[index] for f in fields(self)))

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


def scoring_split(meta):
    """The split whose songs score a trained model: the test songs, never trained on and
    never used to choose a checkpoint (the validation songs choose it); the validation
    songs when there are no test songs, the training songs when there are neither."""
    return next((split for split in ("test", "val") if meta["splits"][split]["segments"]),
                "train")


def listening_windows(data_dir, meta, T, limit=None, split=None):
    """The evaluation windows of a dataset: (backing, solo, where, other backing, other solo).

    split: the validation split by default (the training split when there is none), the
    windows that choose the checkpoint; scoring_split(meta) names the ones that score it.
    "other" is, for each window, a window of another song (mismatched_windows).
    """
    split = split or ("val" if meta["splits"]["val"]["segments"] else "train")
    backing, solo, where = Windows(data_dir, split, meta, T).fixed(limit)
    spare_backing, spare_solo, _ = Windows(data_dir, "train", meta, T).fixed(limit)
    songs = [song for song, _, _ in where]
    return (backing, solo, where, mismatched_windows(backing, songs, spare_backing),
            mismatched_windows(solo, songs, spare_solo))


def scoring_set(data_dir, meta, T, limit=None):
    """(split, ListeningSet) of the windows that score a finished run: scoring_split's
    songs, the test songs, not the validation songs that chose its checkpoint (None for
    the set unless the dataset is the demo corpus, whose truth is known)."""
    split = scoring_split(meta)
    backing, solo, where, other, other_solo = listening_windows(data_dir, meta, T, limit, split)
    return split, ListeningSet.of(meta, where, backing, solo, other, other_solo)


def score_solos(probes, ls, solos):
    """Kick AUC and note-in-chord of each solo in `solos` ({name: [N, K, T] codes}, scored
    against the band of ls), and, when all four of own, mismatched, true and
    true_mismatched are there, the plays-with-the-band score of each metric."""
    card = probes.onsets.size(1) - 1
    valid, sounding = ls.scored_frames(card), ls.harmony_frames(card)            # [N, T] each
    scores = {}
    for name, solo in solos.items():
        scores[f"kick_auc_{name}"] = kick_auc(probes.onsets, solo, ls.kicks, valid)
        scores[f"note_in_chord_{name}"] = note_in_chord(probes.pitch, solo, ls.chords, sounding,
                                                        probes.span)
    if set(solos) >= {"own", "mismatched", "true", "true_mismatched"}:
        for metric, label in (("kick_auc", "rhythm"), ("note_in_chord", "harmony")):
            scores[f"plays_with_band_{label}"] = plays_with_band(
                *(scores[f"{metric}_{name}"] for name in ("own", "mismatched", "true",
                                                          "true_mismatched")))
    return scores


# A listener that only counts: the lead's pitch class guessed from the band's codes by the
# naive-Bayes reader of fit_pitch_probe, fitted on the training split's backing, the
# guesses pooled over about half a second (0.24 s each side: 18 frames at 75 Hz; a chord
# lasts longer than a note). It learns nothing but which codes of the band come with which note of
# the lead. Its note-in-chord says how much of the harmony a model could take from the
# backing's tokens with no more than counting: on the default corpus its guesses are
# chord tones far more often than chance (docs/phase3), so the chords are in the tokens.
COUNTING_SPAN_S = 0.24


def counting_listener(probes, ls):
    """Note-in-chord of the pitch classes counted from the band's codes, over its own band
    and, as the control, over another song's: {note_in_chord_counted_own, ..._mismatched}."""
    frames = ls.harmony_frames(probes.onsets.size(1) - 1)
    return {f"note_in_chord_counted_{name}": note_in_chord(probes.backing_pitch, backing,
                                                           ls.chords, frames,
                                                           probes.counting_span)
            for name, backing in (("own", ls.backing), ("mismatched", ls.other_backing))}


@torch.no_grad()
def generated_solos(model, ls, batch, device, seed=0, **sampling):
    """The four solos score_solos compares: generated over each window's own backing and
    over another song's (sampled as generate.py samples: SAMPLING, keyword arguments
    override it), and the true leads: {own, mismatched, true, true_mismatched: [N, K, T]}."""
    options = {**SAMPLING, **sampling}
    model.eval()
    solos = {"true": ls.solo, "true_mismatched": ls.other_solo}
    for name, backings in (("own", ls.backing), ("mismatched", ls.other_backing)):
        solos[name] = torch.cat([
            sample_solo(model, backings[i:i + batch].to(device), temperature=options["temperature"],
                        top_k=options["top_k"], cfg_coef=options["guidance"], seed=seed + i).cpu()
            for i in range(0, len(backings), batch)])
    model.train()
    return solos


@torch.no_grad()
def listening_test(model, ls, probes, batch, device, seed=0, late=(), **sampling):
    """Solos generated for every window of the ListeningSet, over its own backing and over
    another song's, scored with score_solos beside the true leads. Sampled as generate.py
    samples (SAMPLING; keyword arguments override it). late: lateness in frames at which
    to score the own-band solos' kicks too (kick_auc_late: kick_auc_own_late<n>)."""
    solos = generated_solos(model, ls, batch, device, seed, **sampling)
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
        backing, lead, truth = render_demo_song(index, 16.0, 0, key_change_at=0.5)
        first = round(truth["key_change_s"] * fr) - T // 2       # the change in mid-window
        margin = min(fr, first)
        part = slice((first - margin) * hop, (first + T + fr) * hop)
        windows.append([torch.from_numpy(encode_audio(codec, x[part])[:, margin:margin + T]
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
        read = read_pitch_classes(probes.pitch, solo, probes.span)                # [n, T]
        hits = chords.gather(2, read[..., None])[..., 0]
        before = float(hits[:, :at][counted[:, :at]].float().mean())
        after = hits[:, at:at + 2 * smooth][counted[:, at:at + 2 * smooth]]
        figures[f"key_change_in_chord_before_{name}"] = before
        figures[f"key_change_in_chord_after_{name}"] = float(after.float().mean())
        figures[f"key_change_recovery_frames_{name}"] = recovery_frames(
            in_chord_curve(hits, counted, smooth), at, before)
    return figures


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
    level = frame_rms_db(audio, int(round(hop)))[:len(hz)]
    loud = level > np.percentile(level, 95) - 30 if len(level) else level
    times = offset_s + (np.arange(len(hz)) + 0.5) * hop / rate
    pitch_class = np.round(12 * np.log2(np.maximum(hz, 1e-6) / 440.0) + 69).astype(int) % 12
    hits = total = 0
    for chord in chords:
        inside = loud & (times >= chord["start_s"]) & (times < chord["end_s"])
        hits += int(np.isin(pitch_class[inside], chord["pitch_classes"]).sum())
        total += int(inside.sum())
    return hits / total if total else float("nan")


