"""
sax/baselines.py -- the soloists a model must beat before a listening figure means anything
(phase 3; experiments/baselines.py scores them beside the true lead).

  deaf       another song's true lead: a real solo, made for another band. Its figures are
             the control of every plays-with-the-band score, so it lands near 0.
  rule       hears the band's audio and copies it: a note at each attack librosa's onset
             detector finds in the band, its pitch class the loudest of the band's chroma
             there (sax/pitch.py's band_chroma). On the demo corpus, whose lead plays a
             chord tone on each of the band's kicks, this is close to the generator's own
             rule: a score near 1 then means copying the band, not musicianship.
  retrieval  the true lead of the training song whose band is nearest to this one, in
             chroma (which key and chords) and tempo (librosa's estimate): a real solo
             for a band that sounds alike, but not for this one's moments.

Like sax/reference.py's soloists, rule plays only in the bars where the true lead plays
(its phrasing is taken as given) and in the demo lead's range and voice, held until the
next note; its notes go to sax.demo.render_lead. A note is (start_s, dur_s, midi).
"""
import numpy as np

from sax.audio_probes import HOP_S
from sax.pitch import band_chroma
from sax.reference import bar_of, lead_bars, nearest_of_class

BASELINES = ("deaf", "rule", "retrieval")
HOLD_S = 0.5  # the longest a rule note is held (the demo lead: at most 2 beats)


def rule_notes(backing, rate, truth, seconds):
    """The rule soloist over a demo band: [(start_s, dur_s, midi)] (see the module's text)."""
    import librosa
    y = np.ascontiguousarray(backing, dtype=np.float32)
    attacks = librosa.onset.onset_detect(y=y, sr=rate, units="time", backtrack=False)
    chroma = band_chroma(y, round(rate * HOP_S), rate).astype(np.float32)      # [F, 12]
    playing = lead_bars(truth)
    starts = [float(t) for t in attacks if bar_of(truth, t) in playing and t < seconds - 0.05]
    notes, last = [], 70
    for i, t in enumerate(starts):
        # the loudest class over the 50 ms after the attack: the notes struck on it
        f = min(int(t / HOP_S), len(chroma) - 1)
        loudest = int(chroma[f:f + 5].sum(axis=0).argmax())
        last = nearest_of_class(loudest, last)
        end = starts[i + 1] if i + 1 < len(starts) else seconds
        notes.append((t, min(end - t, HOLD_S) * 0.9, last))
    return notes


def band_print(backing, rate):
    """What retrieval compares bands by: (mean chroma [12], summing to 1; tempo in BPM)."""
    import librosa
    y = np.ascontiguousarray(backing, dtype=np.float32)
    chroma = band_chroma(y, round(rate * HOP_S), rate).astype(np.float32).mean(axis=0)
    tempo = float(np.atleast_1d(librosa.feature.tempo(y=y, sr=rate))[0])
    return chroma / max(float(chroma.sum()), 1e-9), tempo


def nearest_band(query, library):
    """The index of the band in `library` (band_print's of each) nearest to `query`: the
    chroma's distance (1 - cosine) plus the tempos' (|log2 of their ratio|, so a band
    twice as fast is 1 away: as far as chroma that share nothing)."""
    def distance(a, b):
        cosine = float(a[0] @ b[0]) / max(float(np.linalg.norm(a[0]) * np.linalg.norm(b[0])), 1e-9)
        return 1 - cosine + abs(np.log2(a[1] / b[1]))
    return int(np.argmin([distance(query, b) for b in library]))
