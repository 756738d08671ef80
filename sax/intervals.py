"""
sax/intervals.py -- how far a figure could move with other songs and other seeds: a
percentile bootstrap over the songs a figure is scored on and the seeds it was trained with.

A table's mean hides how much of it is the songs drawn: six test songs, each with its own
tempo and figure, can move a plays-with-the-band score by tenths. Drawing the songs again
with replacement (and the seeds, for a trained model), recomputing the figure on each draw,
and keeping the middle 95% of the draws gives an interval a reader can weigh a difference
against (Efron 1979, docs/references.bib). The songs are drawn whole: a
song's windows share its band, so they are not independent witnesses.
"""
import numpy as np

DRAWS = 1000
LEVEL = 0.95


def bootstrap_interval(statistic, n_songs, n_seeds=1, draws=DRAWS, level=LEVEL, seed=0):
    """The percentile interval of statistic(songs, seeds) over `draws` draws, each drawing
    n_songs song indices and n_seeds seed indices with replacement: [low, high] (None
    where no draw gives a number). statistic returns a float (nan when a draw gives none:
    e.g. a plays-with-the-band score whose true lead, on those songs, tells no bands apart)."""
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng.integers(n_songs, size=n_songs),
                                 rng.integers(n_seeds, size=n_seeds)) for _ in range(draws)])
    values = values[np.isfinite(values)]
    if not len(values):
        return None
    tail = (1 - level) / 2 * 100
    return [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))]


def paired_interval(a, b, level=LEVEL):
    """How far apart two rows are, seed by seed: the mean of a[i] - b[i] and its Student-t
    interval over the seeds, [mean, low, high] (low = high = mean from one seed). The two rows
    must share their seeds, in the same order: seed i of each row drew the same data and the
    same initial weights where the architectures agree, so the pairs cancel what the seed
    alone moves. With three seeds the interval is wide (t = 4.3 at 95%): a difference it
    straddles zero with is one those seeds cannot tell from none."""
    from scipy import stats
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    mean = float(d.mean())
    if len(d) < 2:
        return [mean, mean, mean]
    half = float(stats.t.ppf((1 + level) / 2, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
    return [mean, mean - half, mean + half]
