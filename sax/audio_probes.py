"""
sax/audio_probes.py -- does a solo play with its band? Answered from audio, with the field's
own trackers, so that anyone can compute it: on decoded solos (the pretrained codec), on the
demo corpus, or on one's own recordings with their true sax stem as the reference.

sax/listening.py asks the same question in token space, with probes fitted on the demo
corpus's truth; those need no audio, but they read codes, and only on the demo corpus.
Here every figure comes from the two waveforms alone:

  onsets  the solo's note onsets against the band's, both from librosa's onset detector,
          scored with mir_eval's onset F-measure (a hit: within 50 ms). The band's onsets
          hold its kicks, its walking bass and its cymbals; a soloist who plays with the
          band starts its notes on them far more often than one who plays with another.
  beats   the beats librosa's beat tracker finds in the solo against those it finds in
          the band, scored with mir_eval's beat F-measure (within 70 ms), as Wu et al.
          2025 score beat alignment (docs/references.bib).
  pitch   the share of the solo's pitched frames (sax/pitch.py's YIN tracker) whose pitch
          class is one of the 3 strongest of the band's chroma (sax/pitch.py's band_chroma)
          over the second each side: about a quarter by chance, more for a solo that
          plays the band's chords.

None is a score on its own: a solo with few notes, or a busy band, moves all three. Each
means something beside its control, the same solo over another song's band, and beside
the true lead's own two: audio_table gives the four, and audio_scores makes them one
figure with sax/listening's plays_with_band, 1 for as tied to the band as the real
soloist, 0 for deaf.
tests/test_audio_probes.py checks that they tell the demo's true lead over its own band
from the same lead over another's.
"""
import numpy as np

from sax.audio import frame_rms_db
from sax.listening import plays_with_band
from sax.pitch import band_chroma, track_notes

HOP_S = 0.01           # the pitch and chroma frames: 10 ms
ONSET_WINDOW_S = 0.05  # mir_eval's onset window: a hit is within 50 ms
CHROMA_SPAN_S = 1.0    # the band's chroma is pooled over this much each side of a frame
SILENT_DB = -70.0      # a frame quieter than this (dBFS) sounds no note
TOP_CLASSES = 3        # a solo's pitch class counts when it is one of the band's 3 strongest
METRICS = ("onset_f", "beat_f", "pitch_in_chroma")
LABELS = {"onset_f": "onsets", "beat_f": "beats", "pitch_in_chroma": "pitch"}


def onsets_and_beats(y, rate):
    """{onsets, beats}: times in seconds, from librosa's onset detector and beat tracker
    (imported here, when first needed: it takes a few seconds to load)."""
    import librosa
    return {"onsets": librosa.onset.onset_detect(y=y, sr=rate, units="time"),
            "beats": librosa.beat.beat_track(y=y, sr=rate, units="time")[1]}


def hear_band(audio, rate):
    """What the probes read of a band: {onsets, beats: times in seconds; strongest [F, 3]:
    the 3 strongest pitch classes of its chroma over the second each side of each 10 ms
    frame (where the band is silent, an arbitrary 3)}."""
    y, hop = np.ascontiguousarray(audio, dtype=np.float32), round(rate * HOP_S)
    chroma = band_chroma(y, hop, rate).astype(np.float32)                      # [F, 12]
    span = round(CHROMA_SPAN_S / HOP_S)
    # the chroma summed over the frames within `span` of each frame (a chord lasts a bar)
    pooled = np.cumsum(np.pad(chroma, ((span + 1, span), (0, 0))), axis=0)
    pooled = pooled[2 * span + 1:] - pooled[:-2 * span - 1]                    # [F, 12]
    return {**onsets_and_beats(y, rate), "strongest": np.argsort(-pooled, axis=1)[:, :TOP_CLASSES]}


def hear_solo(audio, rate):
    """What the probes read of a solo: {onsets, beats: times in seconds; pitch [F]: the
    pitch class of each 10 ms frame, -1 where none sounds}."""
    y, hop = np.ascontiguousarray(audio, dtype=np.float32), round(rate * HOP_S)
    # The tracker keeps frames within 30 dB of the solo's loud ones; a solo that is all
    # silence has no loud ones, so frames under SILENT_DB have no pitch at all.
    pitch = np.where(frame_rms_db(y, hop) > SILENT_DB, track_notes(y, hop, rate), -1)
    return {**onsets_and_beats(y, rate), "pitch": pitch}


def audio_figures(solo, band):
    """One solo against one band, each as hear_solo / hear_band read it: {onset_f, beat_f,
    pitch_in_chroma} (nan where the solo plays no note, or no beat is found)."""
    import mir_eval
    figures = {"onset_f": float("nan"), "beat_f": float("nan")}
    if len(solo["onsets"]) and len(band["onsets"]):
        figures["onset_f"] = mir_eval.onset.f_measure(band["onsets"], solo["onsets"],
                                                      window=ONSET_WINDOW_S)[0]
    if len(solo["beats"]) and len(band["beats"]):
        figures["beat_f"] = mir_eval.beat.f_measure(band["beats"], solo["beats"])
    n = min(len(solo["pitch"]), len(band["strongest"]))
    pitched = np.nonzero(solo["pitch"][:n] >= 0)[0]
    figures["pitch_in_chroma"] = (float((band["strongest"][pitched] ==
                                         solo["pitch"][pitched, None]).any(axis=1).mean())
                                  if len(pitched) else float("nan"))
    return {name: float(value) for name, value in figures.items()}


SOLOS = ("own", "mismatched", "true", "true_mismatched")


def audio_table(solos, true_solos, bands):
    """The audio probes of one solo per song against the bands, beside the true leads':
    {<metric>_<solo>: [n] one value per song}, the solo one of SOLOS: the solo over its own
    band, song i + 1's solo over song i's band (the control, paired as experiments/takes.py
    pairs takes), and the same two for the true leads. solos, true_solos: hear_solo's
    readings; bands: hear_band's (read once, a band or a true lead serves many tables);
    two songs at least."""
    if len(bands) < 2:
        raise ValueError("the audio probes need two songs at least (each is the other's control)")
    other = [(i + 1) % len(bands) for i in range(len(bands))]
    table = {}
    for names, read in ((SOLOS[:2], solos), (SOLOS[2:], true_solos)):
        for name, pick in zip(names, (range(len(bands)), other)):
            rows = [audio_figures(read[j], bands[i]) for i, j in enumerate(pick)]
            for metric in METRICS:
                table[f"{metric}_{name}"] = np.array([r[metric] for r in rows])
    return table


def mean_of_numbers(values):
    """The mean of the values that are numbers (nan when none is)."""
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else float("nan")


def audio_scores(table, songs=None):
    """The means over the songs (all, or the indices `songs`, e.g. a bootstrap draw) of an
    audio_table, and plays_with_band_<onsets|beats|pitch> of each metric."""
    pick = slice(None) if songs is None else np.asarray(songs)
    scores = {key: mean_of_numbers(values[pick]) for key, values in table.items()}
    for metric in METRICS:
        scores[f"plays_with_band_{LABELS[metric]}"] = plays_with_band(
            *(scores[f"{metric}_{name}"] for name in SOLOS))
    return scores
