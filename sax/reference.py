"""
sax/reference.py -- reference soloists: simple rules that play over a demo band, to say
what a listening figure can reach (phase 5's ceiling for a solo written ahead of the band).

A live solo is written `lookahead` seconds before it sounds (train.py --lookahead-ms L):
what sounds at time t was decided from the band heard up to t - L. On the demo corpus the
lead's rule is known (a note on each of the band's kicks, a tone of the bar's chord), so
the best a listener that hears only the past can do is a question about the band: can its
kicks and chords be known L seconds early? Each soloist here is one answer, a rule that
reads the band's truth as it would have been heard by then:

  heard  a note on each kick as soon as it is heard: L late (at L = 0, the lead's own rule);
  grid   a note on every swung eighth of the bar: the beat grid alone, which holds every kick;
  echo   a note where the band kicked in most of the last bars one figure back (the figure
         one or two bars long, whichever has foretold the bars heard so far best): what a
         riff (data.py --demo-style riff) repeats.

Each takes its pitch from the chord heard by then (the chord sounding at t - L), a tone
near its last note, and phrases as the demo's lead does (plays in the bars where the lead
plays): the phrasing is the soloist's own choice, not the band's, so it is taken as given.
experiments/ceiling.py renders each with the demo's lead voice, encodes it with the
dataset's codec and scores it with sax/listening.py's probes; the best of them, at each L,
is a ceiling that a causal model can reach, not a bound that none can pass.

A note is (start_s, dur_s, midi), as sax.demo.render_lead plays it.
"""
import numpy as np

SOLOISTS = ("heard", "grid", "echo")
LOW, HIGH = 58, 83  # the demo lead's range (MIDI), as sax/demo.py draws it


def nearest_of_class(pitch_class, last):
    """The note (MIDI) of `pitch_class` in the demo lead's range nearest to `last`: how a
    soloist that knows only a pitch class voices it (sax/baselines.py, the probes' reading
    in sax/listening.py)."""
    return min((m for m in range(LOW, HIGH) if m % 12 == pitch_class), key=lambda m: abs(m - last))


def eighth_times(truth, bar):
    """The 8 swung-eighth positions of a bar, in seconds (the demo's grid: the "and" two
    thirds into the beat)."""
    beat = 60.0 / truth["tempo_bpm"]
    return [bar * 4 * beat + (e // 2) * beat + (e % 2) * beat * 2 / 3 for e in range(8)]


def bar_of(truth, t):
    """The bar an event at time t falls in (the truth's times are rounded to 0.1 ms: an event
    on a bar line may read a hair early)."""
    return int((t + 1e-3) // (4 * 60.0 / truth["tempo_bpm"]))


def kick_positions(truth):
    """{bar: set of eighth positions} of the band's kicks."""
    bars = {}
    for t in truth["kicks_s"]:
        bar = bar_of(truth, t)
        e = int(np.argmin([abs(t - g) for g in eighth_times(truth, bar)]))
        bars.setdefault(bar, set()).add(e)
    return bars


def lead_bars(truth):
    """The bars in which the demo's lead plays (its phrases)."""
    return {bar_of(truth, n["start_s"]) for n in truth["lead_notes"]}


def chord_at(truth, t):
    """The pitch classes of the chord sounding at time t (the first chord before the song)."""
    for chord in truth["chords"]:
        if chord["start_s"] <= t < chord["end_s"]:
            return chord["pitch_classes"]
    return truth["chords"][0 if t < truth["chords"][0]["start_s"] else -1]["pitch_classes"]


def echo_period(kicks, bar, heard):
    """The figure's length in bars (1 or 2) that has foretold the heard bars best: for each
    period P, the positions of bars b that bar b - P got right, over the bars before `bar`
    that are wholly heard (`heard`: the time up to which the band is heard)."""
    score = {}
    for period in (1, 2):
        score[period] = sum(len(kicks.get(b, set()) ^ kicks.get(b - period, set())) == 0
                            for b in range(2, bar) if b - period >= 0 and b + 1 <= heard)
    return 2 if score[2] > score[1] else 1


def echoes(kicks, bar, e, decided, truth):
    """Does the echo soloist play position e of `bar`, deciding at time `decided`? It asks
    the last 3 bars one figure back (bar - P, bar - 2P, bar - 3P) that were heard at that
    position: most kicked there, or half did and the latest did (a bar varied now and then
    is outvoted). With none heard yet, it plays (the grid)."""
    period = echo_period(kicks, bar, decided / (4 * 60.0 / truth["tempo_bpm"]))
    votes = [e in kicks.get(b, set()) for b in range(bar - period, -1, -period)
             if eighth_times(truth, b)[e] <= decided][:3]
    if not votes:
        return True
    return 2 * sum(votes) > len(votes) or (2 * sum(votes) == len(votes) and votes[0])


def onsets(truth, soloist, lookahead_s, seconds):
    """Where the soloist starts its notes: sorted times in seconds (see SOLOISTS)."""
    if soloist not in SOLOISTS:
        raise ValueError(f"soloist {soloist!r}: one of {', '.join(SOLOISTS)}")
    playing = lead_bars(truth)
    if soloist == "heard":
        times = [t + lookahead_s for t in truth["kicks_s"]
                 if bar_of(truth, t + lookahead_s) in playing]
    else:
        kicks, times = kick_positions(truth), []
        for bar in sorted(playing):
            for e, t in enumerate(eighth_times(truth, bar)):
                if soloist == "echo" and not echoes(kicks, bar, e, t - lookahead_s, truth):
                    continue
                times.append(t)
    return sorted(t for t in times if t < seconds - 0.05)


def reference_notes(truth, soloist, lookahead_s, seconds, seed=0):
    """The notes a reference soloist plays over a demo band, deciding each `lookahead_s`
    before it sounds: [(start_s, dur_s, midi)]. Its rhythm is onsets(); each note is a tone
    of the chord heard by then, one of the 3 nearest its last note (voice leading, as the
    demo's lead draws it), held until the next note, at most 2 beats."""
    rng = np.random.default_rng(seed)
    beat = 60.0 / truth["tempo_bpm"]
    starts = onsets(truth, soloist, lookahead_s, seconds)
    notes, last = [], 70
    for i, t in enumerate(starts):
        tones = chord_at(truth, t - lookahead_s)
        near = sorted((m for m in range(LOW, HIGH) if m % 12 in tones),
                      key=lambda m: abs(m - last) + rng.random() * 3)[:3]
        last = int(near[int(rng.integers(len(near)))])
        end = starts[i + 1] if i + 1 < len(starts) else seconds
        notes.append((t, min(end - t, 2 * beat) * 0.9, last))
    return notes
