"""
sax/pitch.py -- what is heard beside the tokens: the solo's notes (a YIN pitch tracker) and
the band's chroma, each checked against the demo corpus's truth.
"""
import math

import numpy as np

# What the solo plays: its pitch class in each codec frame, by the YIN pitch tracker
# (de Cheveigné and Kawahara 2002). train.py --pitch-aux learns from these notes, so it
# works on any recording, not only on the demo corpus whose notes are known. A pitch
# class forgives the tracker's commonest mistake, a note heard an octave off.
# A song cached by an older version of what is heard beside the tokens is done again
# (1: the solo's notes; 2: and the band's chroma, band_chroma below).
TRACKER_VERSION = 2
NOTE_RANGE_HZ = (80.0, 1000.0)  # baritone sax's lowest note to well above the alto's highest


def track_notes(audio, hop, rate, window=1024, dip=0.15, voiced=0.35, rel_db=-30.0):
    """The pitch class (0 = C .. 11 = B) the audio sounds in each hop-sized frame, or -1
    (silence, noise): int8 [ceil(N / hop)], aligned with the codec's frames as
    frame_rms_db is.

    YIN in short: for each frame, a window of `window` samples around its centre;
    d(tau), the energy of the window minus itself shifted by tau samples, is small
    when tau is a period; dividing d by its running mean makes it about 1 where there
    is no period. The first lag whose normalized d dips below `dip` (else the lowest),
    walked down to its local minimum, is the period. The frame counts as a note when
    that minimum is below `voiced` and the frame is within rel_db of the loud frames
    (the 95th percentile). On the demo corpus's lead it names the true pitch class of
    99.6% of the frames where a note sounds (docs/phase1-proof-of-concept.md).
    """
    n = math.ceil(len(audio) / hop)
    lo, hi = int(rate / NOTE_RANGE_HZ[1]), int(rate / NOTE_RANGE_HZ[0]) + 1   # lags, samples
    span = window - hi                                          # samples each difference sums
    padded = np.pad(audio.astype(np.float64), (window // 2, window // 2 + n * hop))
    centres = np.arange(n) * hop + hop // 2           # frame i's centre; its window starts there
    frames = np.lib.stride_tricks.sliding_window_view(padded, window)[centres]   # [F, window]
    # d(tau) = sum_j (x_j - x_{j+tau})^2 over j < span = e(0) + e(tau) - 2 r(tau), where
    # r(tau) = sum_j x_j x_{j+tau} comes from one FFT product and e from running sums.
    spectrum = np.fft.rfft(frames, 2 * window)
    r = np.fft.irfft(np.conj(np.fft.rfft(frames[:, :span], 2 * window)) * spectrum,
                     2 * window)[:, :hi + 1]                                       # [F, hi + 1]
    energy = np.pad(np.cumsum(frames ** 2, axis=1), ((0, 0), (1, 0)))             # [F, window + 1]
    lags = np.arange(hi + 1)
    d = energy[:, span:span + 1] + energy[:, lags + span] - energy[:, lags] - 2 * r
    d[:, 0] = 0.0
    norm = np.ones_like(d)                                  # d / its mean over lags 1 .. tau
    norm[:, 1:] = d[:, 1:] * lags[1:] / np.maximum(np.cumsum(d[:, 1:], axis=1), 1e-12)
    band = norm[:, lo:hi]                                                      # [F, hi - lo]
    dips = band < dip
    first = np.where(dips.any(axis=1), dips.argmax(axis=1), band.argmin(axis=1))   # [F]
    # from there, the first lag that is not above its right neighbour: the local minimum
    is_min = np.concatenate([band[:, :-1] <= band[:, 1:], np.ones((n, 1), bool)], axis=1)
    tau = np.where(np.arange(band.shape[1]) >= first[:, None], is_min, False).argmax(axis=1)
    best = band[np.arange(n), tau]
    tau = tau + lo
    # a parabola through the minimum and its neighbours: the period to a fraction of a sample.
    # Its vertex lies within half a lag of a true minimum; at the search range's lower edge
    # (a neighbour outside it lower still) it could fly off to a negative period, so it
    # is held to that half lag.
    a, b, c = (norm[np.arange(n), np.minimum(tau + i, hi)] for i in (-1, 0, 1))
    curve = a - 2 * b + c
    shift = np.where(curve > 0, 0.5 * (a - c) / np.where(curve > 0, curve, 1), 0.0)
    period = tau + np.clip(shift, -0.5, 0.5)
    midi = 69 + 12 * np.log2(rate / period / 440.0)
    centre = frames[:, window // 2 - hop // 2:window // 2 + hop // 2]
    level = 10 * np.log10((centre ** 2).mean(axis=1) + 1e-18)                   # dBFS
    loud = level > np.percentile(level, 95) + rel_db if n else level > 0
    return np.where((best < voiced) & loud, np.round(midi) % 12, -1).astype(np.int8)


# What the band plays: its chroma, the share of its pitched energy in each of the 12
# pitch classes, in each codec frame. train.py --chord-aux teaches the encoder to name
# it, so that the chord the solo's notes are chosen from is plain in the encoder states
# (docs/phase3). From the backing's audio, so any recording has it, not only the demo
# corpus whose chords are known.
CHROMA_RANGE_HZ = (55.0, 2000.0)  # the bass's low A to the piano's voicings; drums above


def band_chroma(audio, hop, rate, window=8192, block=256):
    """The chroma of the audio in each hop-sized frame: float16 [ceil(N / hop), 12], each
    row summing to 1 (all 0 where it is silent), aligned with the codec's frames.

    The power spectrum of a Hann window of `window` samples (341 ms at 24 kHz: a
    semitone apart is 5 Hz at the bass's low A, and the bins are 2.9 Hz apart; a chord
    lasts longer than the window) around each frame's centre; each spectral peak (a bin
    above its neighbours) in CHROMA_RANGE_HZ adds its power to the pitch class of the
    nearest semitone. Counting peaks only keeps most of the drums' noise out. On the
    demo corpus 73% of the chroma falls on the chord's tones (a third by chance;
    docs/phase1-proof-of-concept.md). Computed `block` frames at a time, to keep the
    spectra small.
    """
    n = math.ceil(len(audio) / hop)
    freqs = np.fft.rfftfreq(window, 1 / rate)
    inside = (freqs >= CHROMA_RANGE_HZ[0]) & (freqs <= CHROMA_RANGE_HZ[1])
    pc = np.round(12 * np.log2(freqs[inside] / 440.0)).astype(int) % 12    # A = 9, C = 0
    fold = np.zeros((inside.sum(), 12), np.float32)
    fold[np.arange(len(pc)), (pc + 9) % 12] = 1.0                           # bin -> class
    padded = np.pad(audio.astype(np.float32), (window // 2, window // 2 + n * hop))
    taper = np.hanning(window).astype(np.float32)
    centres = np.arange(n) * hop + hop // 2
    out = np.zeros((n, 12), np.float32)
    for b in range(0, n, block):
        frames = np.lib.stride_tricks.sliding_window_view(padded, window)[centres[b:b + block]]
        power = np.abs(np.fft.rfft(frames * taper, axis=1)) ** 2               # [block, bins]
        peak = np.zeros_like(power, dtype=bool)
        peak[:, 1:-1] = (power[:, 1:-1] > power[:, :-2]) & (power[:, 1:-1] >= power[:, 2:])
        out[b:b + block] = (power * peak)[:, inside] @ fold
    total = out.sum(axis=1, keepdims=True)
    return np.where(total > 1e-10, out / np.maximum(total, 1e-30), 0.0).astype(np.float16)


def event_frames(event, frame_rate, tempo=1.0, first=0):
    """The frames of a demo truth event (a note or a chord: start_s, end_s) as a slice, in a
    copy played `tempo` times faster, counted from frame `first` of the song (a window's
    start; frames before it are cut)."""
    return slice(max(0, round(event["start_s"] / tempo * frame_rate) - first),
                 max(0, round(event["end_s"] / tempo * frame_rate) - first))


def chroma_on_chords(chroma, truth, frame_rate, semitones=0.0, tempo=1.0):
    """Share of band_chroma's weight that falls on the tones of the demo's chord, over the
    frames inside a chord (the check of the chroma against the corpus's truth; by
    chance about a third)."""
    tones = np.zeros(chroma.shape, dtype=bool)
    for chord in truth["chords"]:
        tones[event_frames(chord, frame_rate, tempo),
              [(pc + round(semitones)) % 12 for pc in chord["pitch_classes"]]] = True
    counted = tones.any(axis=1) & (chroma.sum(axis=1) > 0)
    weight = (chroma.astype(np.float32) * tones).sum(axis=1)
    return float(weight[counted].mean()) if counted.any() else None


def notes_right(tracked, truth, frame_rate, semitones=0.0, tempo=1.0):
    """Share of the frames where the demo's lead plays a note that track_notes names right
    (the check of the tracker against the corpus's truth)."""
    lead = np.full(len(tracked), -1)
    for note in truth["lead_notes"]:
        lead[event_frames(note, frame_rate, tempo)] = (note["midi"] + round(semitones)) % 12
    sounding = lead >= 0
    return float((tracked[sounding] == lead[sounding]).mean()) if sounding.any() else None
