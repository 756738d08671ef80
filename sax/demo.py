"""
sax/demo.py -- the demo corpus: a synthetic jazz quartet rendered with numpy, in which
listening to the band pays (docs/phase1-proof-of-concept.md#the-demo-corpus).
"""
import math

import numpy as np

from sax.audio import CODEC_RATE

# ----------------------------------------------------------------------------
# 2. The demo corpus: a synthetic jazz quartet, rendered with numpy
# ----------------------------------------------------------------------------
# A demo corpus has one job: to be a place where listening to the band pays. In an
# earlier version the harmony looped a fixed 4-bar form and the lead improvised its own
# rhythm, so inside a 4 s window the solo's own past predicted almost everything the
# backing could say, and the model learned to ignore the band (docs/phase1). Here the
# band carries three things the solo's past cannot tell:
#   harmony   two-bar units (ii-V, V-I, a tritone substitute, ...) whose key changes at
#             random, so the next chord is a surprise that only the backing reveals;
#   rhythm    in each bar the band plays 2 to 4 "kicks" on random swung eighths (piano
#             chord, kick drum and a snare accent together), and the lead plays its
#             notes on those kicks, as a soloist does on an arrangement's hits;
#   dynamics  band and lead swell and fade together, to a level drawn per two bars.
# The lead also rests for a bar between phrases of 2 to 4 bars (the RMS rule of
# section 4 drops those rests). Everything is known, so meta.json keeps the chords,
# kicks, dynamics and lead notes: the ground truth that train.py and generate.py
# score listening against.

CHORD_TONES = {"maj7": [0, 4, 7, 11], "m7": [0, 3, 7, 10], "7": [0, 4, 7, 10],
               "m7b5": [0, 3, 6, 10], "m6": [0, 3, 7, 9]}
# Two-bar units: (semitones above the unit's key, quality) for each bar.
UNITS = {
    "ii-V": [(2, "m7"), (7, "7")],
    "V-I": [(7, "7"), (0, "maj7")],
    "ii-bII7": [(2, "m7"), (1, "7")],      # tritone substitution: Db7 stands in for G7 in C
    "I-vi": [(0, "maj7"), (9, "m7")],
    "minor ii-V": [(2, "m7b5"), (7, "7")],
    "i-IV7": [(0, "m6"), (5, "7")],
}
NOTE_NAMES = ["C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B"]
MODULATION_P = 0.5  # chance that a two-bar unit moves to a new key drawn at random
# part of every demo song's cache key and of meta.json: a new corpus is never mixed with an old one
DEMO_VERSION = 2

# The corpus styles (data.py --demo-style). In "random", the default, each bar's kicks are
# drawn afresh: no listener can know a kick before it sounds, so a solo written ahead of
# the band (phase 5's lookahead) cannot place its notes on them, whatever it learns. In
# "riff" the band plays a figure, as a comping pattern or a riff tune does: the kicks of one
# or two bars, repeated, and in one bar of RIFF_VARY_P a bar drawn afresh instead. There a
# listener that remembers the last bars can know most kicks before they sound.
# In "lines" the band is as in "random", and the lead plays lines rather than the rule alone:
# besides a chord tone on each kick, now and then that tone one swung eighth early (an
# anticipation), and on the free eighths between kicks steps of one or two semitones,
# mostly off the chord (passing tones). A rule that copies the band's attacks and its
# loudest pitch class no longer copies the lead.
DEMO_STYLES = ("random", "riff", "lines")
RIFF_VARY_P = 1 / 6
LINE_ANTICIPATE_P = 0.3  # a kick's tone starts one eighth early, where that eighth is free
LINE_FILL_P = 0.45       # a free eighth carries a passing step
LEAD_RANGE = range(58, 83)  # the lead's notes, Bb3 to Bb5


def bar_kicks(rng):
    """The kicks of one bar: 2 to 4 distinct swung-eighth positions (0..7), sorted."""
    return sorted(int(e) for e in rng.choice(8, size=int(rng.integers(2, 5)), replace=False))


def eighth_s(t_bar, e, beat, swing):
    """When swung eighth e (0..7) of the bar starting at t_bar falls: on the beat, or two
    thirds into it (swing)."""
    return t_bar + (e // 2) * beat + (e % 2) * swing


def near_chord_tone(tones, prev, rng):
    """A chord tone in the lead's range near its last note (voice leading): one of the three
    nearest, with a little chance in the ordering."""
    cands = [m for m in LEAD_RANGE if m % 12 in tones]
    near = sorted(cands, key=lambda m: abs(m - prev) + rng.random() * 3)[:3]
    return int(near[int(rng.integers(len(near)))])


def line_notes(t_bar, beat, swing, kicks, tones, prev, rng, end_s, played):
    """The "lines" lead of one phrase bar into played [(start_s, dur_s, midi)] -> its last
    note. Positions are the bar's swung eighths (0..7); each note lasts until the next
    (at most two beats)."""
    at = {}  # position -> a chord tone (True) or a passing step (False)
    for k in kicks:
        early = k > 0 and k - 1 not in kicks and rng.random() < LINE_ANTICIPATE_P
        at[k - 1 if early else k] = True
    for e in range(8):
        if e not in at and e not in kicks and rng.random() < LINE_FILL_P:
            at[e] = False
    times = [eighth_s(t_bar, e, beat, swing) for e in sorted(at)] + [t_bar + 4 * beat]
    for (e, tone), t, t_next in zip(sorted(at.items()), times, times[1:]):
        if t >= end_s - 0.05:
            break
        if tone:
            prev = near_chord_tone(tones, prev, rng)
        else:  # a step toward the middle of the range at its edges, else either way
            step = int(rng.integers(1, 3)) * (1 if prev < 64 else -1 if prev > 76 else
                                              int(rng.choice([-1, 1])))
            prev = prev + step
        played.append((t, min(t_next - t, 2 * beat) * 0.9, prev))
    return prev


def kick_pattern(n_bars, rng, style):
    """Each bar's kick positions: [[positions] per bar] (see DEMO_STYLES)."""
    if style == "random":
        return [bar_kicks(rng) for _ in range(n_bars)]
    figure = [bar_kicks(rng) for _ in range(int(rng.integers(1, 3)))]  # one or two bars
    return [bar_kicks(rng) if rng.random() < RIFF_VARY_P else figure[bar % len(figure)]
            for bar in range(n_bars)]


def midi_hz(m):
    return 440.0 * 2 ** ((m - 69) / 12)


def add_tone(buf, start_s, dur_s, hz, amp, harmonics, decay, rate, vibrato=0.0, attack=0.005):
    """Add one additive-synthesis note to buf (in place).

    harmonics: (multiple of hz, amplitude) pairs, which set the timbre: 1/h amplitudes
    give the bright, buzzy spectrum of a reed, a few low ones a round bass. The
    envelope rises over `attack`, decays exponentially, and fades out over the last
    20 ms so that no note ends with a click. vibrato: depth of a 5.5 Hz pitch wobble.
    """
    i0, n = int(start_s * rate), int(dur_s * rate)
    n = min(n, len(buf) - i0)
    if n <= 0:
        return
    t = np.arange(n) / rate
    phase = 2 * np.pi * hz * (t + vibrato * np.sin(2 * np.pi * 5.5 * t) / (2 * np.pi * 5.5))
    wave = sum(a * np.sin(h * phase) for h, a in harmonics)
    release = np.minimum(1.0, (n - np.arange(n)) / (0.02 * rate))     # 20 ms fade at the end
    env = np.minimum(1.0, t / attack) * np.exp(-t / decay) * release
    buf[i0:i0 + n] += amp * wave * env


def add_noise_hit(buf, start_s, dur_s, amp, decay, rate, rng, bright=True):
    """Add a decaying noise burst (a cymbal, hi-hat or snare stroke) to buf (in place)."""
    i0, n = int(start_s * rate), min(int(dur_s * rate), len(buf) - int(start_s * rate))
    if n <= 0:
        return
    noise = rng.standard_normal(n)
    if bright:  # a first difference tilts the noise toward the high frequencies of cymbals
        noise = np.diff(noise, prepend=0.0)
    buf[i0:i0 + n] += amp * noise * np.exp(-np.arange(n) / (decay * rate))


def demo_harmony(n_bars, rng, key_change_bar=None):
    """One chord per bar: a chain of two-bar units, each in the last key or a random new one.

    key_change_bar (even): instead, one key until that bar and from there a key a
    tritone away, where no chord of the old key fits (the robustness check of
    listening.key_change_test). Returns [(root pitch class, quality, unit name, key
    pitch class)] per bar.
    """
    key, bars = int(rng.integers(12)), []
    while len(bars) < n_bars:
        if key_change_bar is not None:
            key = (key + 6) % 12 if len(bars) == key_change_bar else key
        elif bars and rng.random() < MODULATION_P:
            key = int(rng.integers(12))
        name = list(UNITS)[int(rng.integers(len(UNITS)))]
        bars += [((key + offset) % 12, quality, name, key) for offset, quality in UNITS[name]]
    return bars[:n_bars]


def phrase_bars(n_bars, rng):
    """Phrases: the lead plays 2 to 4 bars, then rests one bar while the band goes on.
    -> [n_bars] bool, True where the lead plays."""
    playing, bar = np.zeros(n_bars, dtype=bool), int(rng.integers(0, 2))
    while bar < n_bars:
        length = int(rng.integers(2, 5))
        playing[bar:bar + length] = True
        bar += length + 1
    return playing


def walking_bass(bass, t_bar, beat, root, tones, next_root, rate, rng):
    """One bar of walking bass into `bass`: root on beat 1, chord tones on 2 and 3, a
    chromatic approach to the next bar's root on 4."""
    for b in range(4):
        if b == 0:
            pc = root
        elif b == 3:
            pc = (next_root + (1 if rng.random() < 0.5 else -1)) % 12
        else:
            pc = tones[int(rng.integers(1, 4))]
        add_tone(bass, t_bar + b * beat, beat * 0.95, midi_hz(36 + pc), 0.35,
                 [(1, 1.0), (2, 0.4), (3, 0.15)], 0.5, rate)


def ride_and_hats(drums, t_bar, beat, swing, rate, rng):
    """One bar of drums into `drums`: ride on every beat and the swung "let" of 2 and 4,
    hi-hat on 2 and 4."""
    for b in range(4):
        add_noise_hit(drums, t_bar + b * beat, 0.4, 0.06, 0.12, rate, rng)
        if b in (1, 3):
            add_noise_hit(drums, t_bar + b * beat + swing, 0.3, 0.04, 0.08, rate, rng)
            add_noise_hit(drums, t_bar + b * beat, 0.08, 0.05, 0.02, rate, rng)


def render_lead(notes, N, rate):
    """The lead's stem: notes [(start_s, dur_s, midi)] played by the demo's reed-like voice
    into N samples, softened by a short low-pass (before the song's dynamics)."""
    lead = np.zeros(N)
    for start, dur, midi in notes:
        add_tone(lead, start, dur, midi_hz(midi), 0.22, [(h, 1.0 / h) for h in range(1, 9)],
                 1.5, rate, vibrato=0.004, attack=0.02)
    # A short low-pass softens the lead's upper harmonics, a little like a reed's.
    return np.convolve(lead, [0.25, 0.5, 0.25], mode="same")


def render_demo_song(index, seconds, seed, rate=CODEC_RATE, key_change_at=None, style="random",
                     soloist=None):
    """One deterministic demo song -> (backing [N], solo [N], truth dict).

    Rendered straight at `rate` (the codec's; 24 kHz by default), mono, as two stems:
    the band (bass + piano + drums) and the lead. Song `index` of seed `seed` and `style`
    (DEMO_STYLES) is always the same song, on any machine: all randomness comes from one
    numpy generator. key_change_at (a share of the song, e.g. 0.5): one key change there,
    at the start of a two-bar unit, and no other (truth["key_change_s"] says when).
    soloist: a rule that plays over this band instead of the demo's lead, truth -> notes
    [(start_s, dur_s, midi)] (sax/reference.py); the band and its truth stay the same.
    """
    if style not in DEMO_STYLES:
        raise ValueError(f"demo style {style!r}: one of {', '.join(DEMO_STYLES)}")
    rng = np.random.default_rng([seed, index])
    bpm = float(rng.uniform(100, 190))
    beat = 60.0 / bpm
    swing = beat * 2 / 3  # the swung eighth: the "and" falls two thirds into the beat
    n_bars = math.ceil(seconds / (4 * beat))
    N = int(seconds * rate)
    bass, piano, drums = (np.zeros(N) for _ in range(3))
    change = None if key_change_at is None else int(n_bars * key_change_at) // 2 * 2
    # one bar more: the bass approaches the next root
    harmony = demo_harmony(n_bars + 1, rng, change)
    # Kicks: 2 to 4 distinct swung-eighth positions (0..7) per bar, drawn at random.
    kicks = kick_pattern(n_bars, rng, style)
    kick_times = [t for bar in range(n_bars) for e in kicks[bar]
                  if (t := eighth_s(bar * 4 * beat, e, beat, swing)) < seconds - 0.05]
    playing = phrase_bars(n_bars, rng)
    chords, played = [], []  # played: the lead's notes (start_s, dur_s, midi), unrounded
    prev_lead = 70
    for bar in range(n_bars):
        root, quality, unit, key = harmony[bar]
        t_bar = bar * 4 * beat
        tones = [(root + i) % 12 for i in CHORD_TONES[quality]]
        chords.append({"bar": bar, "start_s": round(t_bar, 4), "end_s": round(t_bar + 4 * beat, 4),
                       "symbol": NOTE_NAMES[root] + quality, "pitch_classes": tones,
                       "unit": unit, "key": NOTE_NAMES[key]})
        walking_bass(bass, t_bar, beat, root, tones, harmony[bar + 1][0], rate, rng)
        ride_and_hats(drums, t_bar, beat, swing, rate, rng)
        # The kicks: the piano's rootless voicing (3rd, 5th, 7th), the bass drum and a
        # snare accent together. The lead, in a phrase bar, plays a chord tone on each,
        # near its last note (voice leading), held until the next kick (at most 2 beats).
        bar_kicks = [t for t in kick_times if t_bar <= t < t_bar + 4 * beat]
        for i, t_hit in enumerate(bar_kicks):
            for pc in tones[1:]:
                add_tone(piano, t_hit, beat * 1.5, midi_hz(55 + (pc - 7) % 12 + 5), 0.09,
                         [(1, 1.0), (2, 0.5), (3, 0.25), (4, 0.12)], 0.35, rate)
            add_tone(drums, t_hit, 0.25, 55.0, 0.3, [(1, 1.0)], 0.08, rate)
            add_noise_hit(drums, t_hit, 0.15, 0.08, 0.04, rate, rng, bright=False)
            if not playing[bar] or style == "lines":
                continue
            later = [t for t in kick_times if t > t_hit]
            dur = min((later[0] if later else seconds) - t_hit, 2 * beat) * 0.9
            prev_lead = near_chord_tone(tones, prev_lead, rng)
            played.append((t_hit, dur, prev_lead))
        if playing[bar] and style == "lines":
            prev_lead = line_notes(t_bar, beat, swing, kicks[bar], tones, prev_lead, rng, seconds,
                                   played)
    notes = [{"start_s": round(t, 4), "end_s": round(t + d, 4), "midi": m} for t, d, m in played]
    lead = render_lead(played, N, rate)
    # Dynamics: a level per two bars (-12 to 0 dB), joined by linear swells and fades,
    # applied to band and lead alike: they rise and fall together.
    levels_db = rng.uniform(-12, 0, size=math.ceil(n_bars / 2) + 1)
    unit_times = np.arange(len(levels_db)) * 8 * beat
    envelope = 10 ** (np.interp(np.arange(N) / rate, unit_times, levels_db) / 20)
    backing = (bass + piano + drums) * envelope
    lead = lead * envelope
    gain = min(1.0, 0.9 / (np.abs(backing + lead).max() + 1e-9))  # the mix never clips
    backing, lead = backing * gain, lead * gain
    truth = {"style": style} if style != "random" else {}
    truth |= {"tempo_bpm": round(bpm, 2), "swing_ratio": 2.0, "chords": chords,
             "kicks_s": [round(t, 4) for t in kick_times], "lead_notes": notes,
             "dynamics": [{"start_s": round(float(t), 4), "level_db": round(float(d), 2)}
                          for t, d in zip(unit_times, levels_db)]}
    if change is not None:
        truth["key_change_s"] = round(change * 4 * beat, 4)
    if soloist is not None:  # the same gain as the demo's lead: the band is untouched
        lead = render_lead(soloist(truth), N, rate) * envelope * gain
    return backing.astype(np.float32), lead.astype(np.float32), truth
