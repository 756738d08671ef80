"""
sax/pages.py -- what a person looks at: the loss curves, and the listening pages (HTML) of a
run and of a generated take.
"""
import html
import json
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np
import torch

from sax.audio import mix_audio, write_audio
from sax.audio_probes import audio_scores, audio_table, hear_band, hear_solo
from sax.codec import UNTRAINED_AUDIO, dataset_codec, decode_codes
from sax.dataset import Windows, load_dataset
from sax.demo import NOTE_NAMES, render_lead
from sax.files import atomic_write, read_metrics, write_json
from sax.listening import (ListeningSet, chord_tone_fit, fit_probes, read_notes,
                           read_pitch_classes, score_solos)
from sax.sampling import SAMPLING, sample_solo
from sax.settings import command_line


def plot_curves(metrics_file, png, baseline=None, note=""):
    """loss.png from metrics.jsonl: train and validation loss above (with the unigram
    baseline and the best checkpoint marked), conditioning gains below.

    Drawn from the file, not from memory, so a resumed run's plot shows the whole run.
    note: a line printed on the figure (e.g. that the codec was untrained).
    """
    import matplotlib
    matplotlib.use("Agg")  # no screen needed
    import matplotlib.pyplot as plt
    rows = read_metrics(metrics_file)
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    evals = [r for r in rows if "val_ce" in r]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6.5), sharex=True)
    if train:
        steps, losses = zip(*train)
        # Per-step losses jump with each random batch; a 10-step mean shows the trend.
        smooth = np.convolve(losses, np.ones(10) / 10,
                             mode="valid") if len(losses) >= 10 else losses
        ax1.plot(steps[len(steps) - len(smooth):], smooth, label="train (10-step mean)")
    if baseline is not None:
        ax1.axhline(baseline, color="gray", ls="--", lw=1, label=f"unigram baseline {baseline:.2f}")
    if evals:
        steps = [r["step"] for r in evals]
        ax1.plot(steps, [r["val_ce"] for r in evals], "o-", label="validation")
        best = min(evals, key=lambda r: r["val_ce"])
        ax1.plot(best["step"], best["val_ce"], "*", ms=16, color="tab:red",
                 label=f"best checkpoint (step {best['step']}, {best['val_ce']:.3f})")
        for key, label in (("cond_gain", "all frames"), ("cond_gain_start",
                                                         "first second of a window"),
                           ("cond_gain_kicks", "the band's kicks (demo truth)")):
            if key in evals[0]:
                ax2.plot(steps, [r.get(key, float("nan")) for r in evals], "o-", label=label)
        ax2.legend(fontsize=8)
    ax1.set_ylabel("cross-entropy (nats)")
    ax1.legend(fontsize=8)
    ax2.axhline(0, color="gray", lw=0.5)
    ax2.set_ylabel("conditioning gain (nats)\n(another song's backing - own)")
    ax2.set_xlabel("step")
    if note:
        fig.suptitle(note, fontsize=9, color="tab:red")
    fig.tight_layout()
    atomic_write(png, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)


# ----------------------------------------------------------------------------
# The listening pages: generate.py's take, and a training run's page
# ----------------------------------------------------------------------------


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
    atomic_write(path, lambda f: f.write(page), mode="w")


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
        parts.append(f'<p class="note">Offline: {html.escape(UNTRAINED_AUDIO)}. To hear the '
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
    listening = result.get("listening") or {}
    if "kick_auc_own" in listening:
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
                  "<p><b>The probes' reading, played</b>: the notes the two probes read in "
                  "the codes (a note at each peak of the onset score, its pitch class the "
                  "pitch probe's), played by the demo corpus's synthesizer. This is what the "
                  "probes hear in the tokens, not the model's audio; it can be heard offline, "
                  "where the untrained codec's audio carries nothing.</p>",
                  player("solo 1, as the probes read it", "reading.wav"),
                  player("the true solo, as the probes read it", "true_reading.wav")]
    if "audio" in listening:
        parts += ["<h3>From the audio</h3>",
                  "<p>From the decoded audio (sax/audio_probes.py): the solo's onsets against "
                  "the band's (onset F-measure), the beats tracked in each (beat F-measure), "
                  "and how often the solo's pitch class is one of the band's 3 strongest "
                  "chroma classes; each solo over its own band and over the other clip's, "
                  "beside the true solos. <i>plays_with_band</i>: as above, per figure.</p>"]
    if listening:
        parts.append(figures_table("listening", listening))
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
                    self.codec = dataset_codec(meta["codec"], cfg.data, device)
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
            self.backing_audio = decode_codes(self.codec, self.clip.numpy())
            true_mix, _ = mix_audio(self.backing_audio,
                                    decode_codes(self.codec, evals.solo[0, :, :n].numpy()))
            for name, audio in (("backing", self.backing_audio), ("true_mix", true_mix)):
                write_audio(self.out / "page" / f"{name}.wav", audio, self.rate)

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
            mix, solo = mix_audio(self.backing_audio, decode_codes(self.codec, codes))
            # Paths relative to the run folder, as the page links them.
            names = {kind: f"page/step{step:06d}_{kind}.wav" for kind in ("solo", "mix")}
            write_audio(self.out / names["solo"], solo, self.rate)
            write_audio(self.out / names["mix"], mix, self.rate)
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
        rows = [r for r in read_metrics(metrics_file) if "val_ce" in r]
        keys = ["step", "train_loss", "val_ce", "val_ppl", "cond_gain"]
        record = {"command": command_line("train.py", self.cfg),
                  "untrained_codec": self.untrained,
                  "evaluations": [{k: r[k] for k in keys if k in r} for r in rows],
                  "samples": self.samples}
        write_json(self.file, record)
        parts = [f"<h1>Training run <code>{html.escape(self.out.name)}</code></h1>",
                 f"<p>{len(rows)} evaluation{'s' if len(rows) != 1 else ''} so far; the "
                 "figures are those of <a href=\"page.json\">page.json</a> and <a "
                 "href=\"metrics.jsonl\">metrics.jsonl</a>. Checkpoints: "
                 "<code>best/</code>, <code>latest/</code>.</p>"]
        if self.untrained:
            parts.append(f'<p class="note">Offline: {html.escape(UNTRAINED_AUDIO)}. The '
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
        read = read_pitch_classes(probes.pitch, codes, probes.span)[0]          # [n]
        hit = chords.gather(1, read[:, None])[:, 0].numpy()
        for mask, color in ((sounding & hit, "#2a9d4a"), (sounding & ~hit, "#d03030")):
            right.scatter(t.numpy()[mask], read.numpy()[mask], s=3, color=color, lw=0)
        right.set_yticks(range(12), NOTE_NAMES, fontsize=6)
    axes[0, 0].set_title("rhythm: onset score, band kicks in orange", fontsize=10)
    axes[0, 1].set_title("harmony: chord tones grey; read pitch class green = in chord, "
                         "red = not", fontsize=10)
    axes[0, 0].legend(loc="upper right", fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("seconds")
    fig.tight_layout()
    atomic_write(png, lambda f: fig.savefig(f, format="png", dpi=90))
    plt.close(fig)


def listening_figures(cfg, config, model, codec, solo, n_frames, device, out=None):
    """For a validation clip: how the solo follows the band, next to the same figures for a
    solo written over another song's backing, the clip's true lead and another song's
    true lead, all scored against this clip's band.

    On the demo corpus, whose truth is known: kick AUC and note-in-chord (tokens, any
    codec: do the solo's attacks fall on the band's kicks, do its pitch classes fit the
    chords?, score_solos), and chord-tone fit (the pitches read from the decoded audio).
    With the pretrained codec, on any dataset (one's own recordings too, the clip's true
    sax stem as the reference): the audio probes (sax/audio_probes.py: onsets, beats and
    pitch against the band's, decoded), under "audio".
    out: a folder to draw listening.png in (probe_picture), for every take.
    Returns None when the backing is not a validation clip, or neither applies.
    """
    meta = load_dataset(config["data"]["dir"])
    segments = meta["splits"]["val"]["segments"]
    pretrained = not meta["codec"]["untrained"]  # decoded audio means something
    if cfg.backing or not segments or not (meta.get("demo") or pretrained):
        return None
    data_dir, fr = config["data"]["dir"], meta["codec"]["frame_rate"]
    seg = segments[cfg.from_val]
    # The first clip of another validation song; with one validation song, of a training song.
    other_split = "val" if any(s["song"] != seg["song"] for s in segments) else "train"
    other = next(s for s in meta["splits"][other_split]["segments"] if s["song"] != seg["song"])
    # [K, n_frames] each
    own_b, true_solo = Windows(data_dir, "val", meta, n_frames).window(seg, 0)
    other_b, other_solo = Windows(data_dir, other_split, meta, n_frames).window(other, 0)
    # Sampled exactly as the solo it is compared with (same options and seed), so the
    # only difference between the two is the backing.
    mismatched = sample_solo(model, other_b[None].to(device), temperature=cfg.temperature,
                             top_k=cfg.top_k, top_p=cfg.top_p, cfg_coef=cfg.guidance,
                             seed=cfg.seed).cpu()                                # [1, K, n_frames]
    solo = solo[:, :, :n_frames].cpu()
    figures = {"mismatched_backing": f"{other_split} clip of song {other['song']}"}
    if meta.get("demo"):
        where = [(seg["song"], seg["variant"], seg["song_frame"])]
        ls = ListeningSet.of(meta, where, own_b[None], true_solo[None], other_b[None],
                             other_solo[None])
        probes = fit_probes(data_dir, meta, n_frames)
        figures.update(score_solos(probes, ls, {"own": solo[:1], "mismatched": mismatched,
                                                "true": ls.solo, "true_mismatched": ls.other_solo}))
        if out is not None:
            takes = [(f"solo {i + 1}" if len(solo) > 1 else "solo", s) for i, s in enumerate(solo)]
            probe_picture(Path(out) / "listening.png", probes, ls,
                          takes + [("the true solo", true_solo)], fr)
            # what the probes read, made audible: heard offline too, whatever the codec
            rate, hop = meta["codec"]["sample_rate"], meta["codec"]["sample_rate"] // fr
            for name, codes in (("reading.wav", solo[0]), ("true_reading.wav", true_solo)):
                write_audio(Path(out) / name, render_lead(read_notes(probes, codes, fr),
                                                          codes.size(-1) * hop, rate), rate)
    if pretrained:  # pitches and onsets mean something only when the codec decodes real audio
        rate = meta["codec"]["sample_rate"]
        def audio(codes):
            return decode_codes(codec, codes.numpy())
        if meta.get("demo"):
            chords = next(s for s in meta["songs"] if s["id"] == seg["song"])["truth"]["chords"]
            offset = seg["song_frame"] / fr
            for name, codes in (("chord_tone_fit", solo[0]), ("chord_tone_fit_mismatched",
                                                               mismatched[0])):
                figures[name] = chord_tone_fit(audio(codes), chords, rate, offset)
        # the two clips as two songs: each solo over its own band, and over the other's,
        # up to the first padded frame of any of them (a short section is padded with the
        # special token, which the codec cannot decode)
        clips = [solo[0], mismatched[0], true_solo, other_solo, own_b, other_b]
        real = torch.stack([(c != meta["codec"]["card"]).all(0) for c in clips]).all(0)
        n = int(real.long().cumprod(0).sum())
        if n >= fr:  # a second at least: less holds too few notes to score
            solos = [hear_solo(audio(c[:, :n]), rate) for c in clips[:4]]
            bands = [hear_band(audio(c[:, :n]), rate) for c in clips[4:]]
            figures["audio"] = audio_scores(audio_table(solos[:2], solos[2:], bands))
    return figures
