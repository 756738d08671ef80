"""
generate.py -- a saxophone solo for a backing track: tokens -> sampling -> audio (phases 3-5).

    python generate.py                                   # first validation clip, runs/tiny/best -> samples/
    python generate.py --backing my_trio.wav --out samples/trio   # python data.py --demo-backing my_trio.wav writes one
    python generate.py --backing full_mix.wav --separate # remove the existing lead with Demucs first
    python generate.py --checkpoint you/jazz-sax-tiny    # a model from the Hugging Face Hub (phase 4)
    python generate.py --stream --checkpoint runs/causal/best   # phase 5: frame by frame, with latencies
    python generate.py --export-onnx solo_onnx --checkpoint runs/causal/best   # phase 5: for onnx_runner.py

Writes to the output folder (never over existing files without --overwrite):
    solo.wav      the generated saxophone
    mix.wav       backing + solo, level-matched, never clipping
    backing.wav   the backing as the model heard it (24 kHz mono)
    solo.png      spectrograms of backing and solo, and the solo's tokens
    generation.json  settings, timings (real-time factor) and token statistics
    index.html    the listening page: players, pictures, figures and the command (open it in a browser)
    true_solo.wav, true_mix.wav   for a validation clip (no --backing): the recording's own solo
    solo_0.wav, mix_0.wav, solo_0.png, ...   with --num-samples N, each solo (solo.wav is solo_0.wav)

Backings longer than the model's window are generated in overlapping windows: each
window after the first is prompted with the end of the previous one (the way
MusicGen extends a piece), and the codec decodes in 10 s chunks, so any length works
with bounded memory (3 minutes: 1.1 GB peak for decoding, python tests/benchmark_data.py).
"""
import html
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional
from urllib.parse import quote

import numpy as np
import torch
from tqdm import tqdm

import data
from data import DEVICES, opt, parse_settings, unigram_entropy, write_audio, write_json
from model import StreamingSampler, generate, load_model, resolve_checkpoint, rope_angles


@dataclass
class GenerateConfig:
    checkpoint: str = opt("runs/tiny/best", "checkpoint folder, or a Hugging Face Hub id (user/name)")
    backing: str = opt("", "backing track (any audio file); empty: a validation clip of the checkpoint's dataset")
    separate: bool = opt(False, "the backing is a full mix: remove its lead with Demucs first")
    from_val: int = opt(0, "which validation clip (section) to use when no --backing is given")
    out: str = opt("samples", "output folder")
    overwrite: bool = opt(False, "replace files already in the output folder")
    duration: float = opt(0.0, "seconds to generate (0: the whole backing)")
    temperature: float = opt(1.0, "sampling temperature (0: greedy)")
    top_k: int = opt(250, "sample among the k most likely codes (0: all)")
    top_p: float = opt(1.0, "sample among the codes holding this much probability (1: all)")
    cfg_coef: Optional[float] = opt(None, "classifier-free guidance coefficient, e.g. 3 (none: off; 1: same as off)")
    num_samples: int = opt(1, "solos to generate for the same backing")
    seed: int = opt(0, "sampling seed")
    stride_s: float = opt(0.0, "long backings: seconds between window starts (0: half a window)")
    stream: bool = opt(False, "phase 5: stream the backing frame by frame (needs a causal checkpoint)")
    export_onnx: str = opt("", "phase 5: write the causal checkpoint and the codec as ONNX graphs to this folder "
                               "(for onnx_runner.py), then stop")
    chunk_ms: float = opt(80.0, "streaming: audio chunk size in milliseconds")
    context_ms: float = opt(200.0, "streaming: past audio the codec re-reads with each chunk")
    encodec_weights: str = opt("", "local EnCodec weights (default: what the checkpoint's dataset used)")
    demucs_model: str = opt("htdemucs_6s", "Demucs model for --separate")
    demucs_repo: str = opt("", "local Demucs weights folder for --separate")
    device: str = opt("auto", "auto: the GPU when there is one", DEVICES)
    threads: int = opt(0, "CPU threads for torch (0: torch's default; 1 on a busy machine, docs/troubleshooting.md)")


def fetch_checkpoint(name):
    """A local checkpoint folder, or a Hub repo id downloaded to the local cache.

    A local path wins: a folder named like "runs/tiny" has one slash too, and must not
    be sent to the Hub. Only the files a checkpoint needs are downloaded.
    """
    if resolve_checkpoint(name).exists():
        return Path(name)
    if name.count("/") == 1 and not name.startswith((".", "/")):
        from huggingface_hub import snapshot_download
        try:
            return Path(snapshot_download(name, allow_patterns=["config.json", "model.safetensors", "codec.safetensors",
                                                                "README.md"]))
        except Exception as err:
            raise SystemExit(f"--checkpoint {name}: not a local folder, and the Hub download failed: {err}") from None
    raise SystemExit(f"--checkpoint {name}: no such folder. Train first (python train.py) or give a Hub id user/name.")


def load_codec_for(config, folder, weights, device):
    """The codec the checkpoint's dataset was tokenized with, checked against the model.

    Tokens mean something only for the codec that made them: a model trained on one
    codebook set and decoded with another plays noise without any error. So the
    numbers the model was built for (K, card, frame rate) are compared with the codec's
    before anything runs. An untrained codec's codebooks travel with the checkpoint
    (codec.safetensors, from a Hub download) or stay in its dataset folder.
    """
    numbers = config["data"]["codec"]
    homes = [Path(folder), Path(config["data"]["dir"])]
    home = next((h for h in homes if (h / "codec.safetensors").exists()), homes[-1])
    codec = data.dataset_codec(numbers, home, device, weights)
    got, m = data.codec_info(codec, numbers["weights"]), config["model"]
    mismatch = [(k, got[k], m[k]) for k in ("n_codebooks", "card", "frame_rate") if got[k] != m[k]]
    if mismatch:
        raise SystemExit("the codec does not match the checkpoint: " + ", ".join(
            f"{k} is {a} in the codec but {b} in the model" for k, a, b in mismatch)
            + f". Use the codec settings the model was trained with ({numbers}).")
    return codec, got


def backing_tokens(cfg, config, codec, numbers, device):
    """(backing codes [K, T], backing audio at 24 kHz [N], a description of where it came
    from, the true solo's codes [K, T] of a dataset clip or None for a file).

    From a file: read, checked, optionally separated, tokenized exactly as data.py
    tokenized the training data. From the dataset: the validation clip's codes, and
    their decoded audio as the backing to mix with (what the model "heard").
    """
    if cfg.backing:
        path = Path(cfg.backing)
        if not path.is_file():
            raise SystemExit(f"--backing {path}: no such file")
        try:
            audio, rate = data.load_audio(path)
        except data.SkipSong as why:
            raise SystemExit(f"--backing {path}: {why}. Convert it to WAV or FLAC, or install ffmpeg.") from None
        if audio.shape[1] < rate:
            raise SystemExit(f"--backing {path}: {audio.shape[1] / rate:.2f} s long; give at least 1 s of backing")
        if cfg.separate:
            separator = data.load_separator(cfg.demucs_model, cfg.demucs_repo)
            defaults = data.DataConfig()  # the same stem mapping as data.py's default
            mono, _ = data.separate(separator, audio, rate, defaults.backing_sources, defaults.solo_sources, device)
        else:
            mono = data.resample(data.channels(audio, 1), rate, data.CODEC_RATE)[0]
        if cfg.duration:
            mono = mono[:int(cfg.duration * data.CODEC_RATE)]
        return data.encode_audio(codec, mono).astype(np.int64), mono, str(path), None
    data_dir = config["data"]["dir"]
    meta = data.load_dataset(data_dir)
    segments = meta["splits"]["val"]["segments"] or meta["splits"]["train"]["segments"]
    if not 0 <= cfg.from_val < len(segments):
        raise SystemExit(f"--from-val {cfg.from_val}: the dataset {data_dir} has {len(segments)} validation clips")
    seg = segments[cfg.from_val]
    split = "val" if meta["splits"]["val"]["segments"] else "train"
    end = seg["start"] + (round(cfg.duration * numbers["frame_rate"]) if cfg.duration else seg["length"])
    codes, truth = (np.asarray(part[:, seg["start"]:min(end, seg["start"] + seg["length"])], dtype=np.int64)
                    for part in data.load_split(data_dir, split))
    return codes, data.decode_codes(codec, codes), f"{data_dir} {split} clip {cfg.from_val} (song {seg['song']})", truth


def listening_figures(model, codec, config, cfg, solo, n_frames, device):
    """For a demo validation clip: how the solo follows the band, next to a solo written
    over another song's backing and scored against this clip's band (the sanity check).

    kick AUC (tokens, any codec): do the solo's note attacks fall on the band's kicks?
    chord-tone fit (audio, the pretrained codec only): do its pitches fit the chords?
    Returns None when the backing is not a demo validation clip (no truth to score against).
    """
    meta = data.load_dataset(config["data"]["dir"])
    segments = meta["splits"]["val"]["segments"]
    if cfg.backing or not meta.get("demo") or not segments:
        return None
    # The listening evaluation belongs to training (train.py defines it and runs it at
    # every evaluation); sampling itself never needs train.py.
    from train import Windows, kick_auc, listening_masks, train_onset_detector
    data_dir, fr, card = config["data"]["dir"], meta["codec"]["frame_rate"], meta["codec"]["card"]
    seg = segments[cfg.from_val]
    # The first clip of another validation song; with one validation song, of a training song.
    other_split = "val" if any(s["song"] != seg["song"] for s in segments) else "train"
    other = next(s for s in meta["splits"][other_split]["segments"] if s["song"] != seg["song"])
    own_b, true_solo = Windows(data_dir, "val", meta, n_frames).window(seg, 0)   # [K, n_frames] each
    other_b, _ = Windows(data_dir, other_split, meta, n_frames).window(other, 0)
    # Sampled exactly as the solo it is compared with (same options and seed), so the
    # only difference between the two is the backing.
    mismatched = generate(model, other_b[None].to(device), temperature=cfg.temperature, top_k=cfg.top_k,
                          top_p=cfg.top_p, cfg_coef=cfg.cfg_coef, seed=cfg.seed).cpu()  # [1, K, n_frames]
    where = [(seg["song"], seg["variant"], seg["song_frame"])]
    kicks = listening_masks(meta, where, n_frames, fr)["kicks"]                # [1, n_frames]
    valid = (true_solo[0] != card)[None] & (own_b[0] != card)[None]            # [1, n_frames]: real audio
    detector = train_onset_detector(data_dir, meta, n_frames)
    figures = {"kick_auc": kick_auc(detector, solo[:1, :, :n_frames].cpu(), kicks, valid),
               "kick_auc_mismatched": kick_auc(detector, mismatched, kicks, valid),
               "kick_auc_true_lead": kick_auc(detector, true_solo[None], kicks, valid),
               "mismatched_backing": f"{other_split} clip of song {other['song']}"}
    if not meta["codec"]["untrained"]:  # pitches mean something only when the codec decodes real audio
        chords = next(s for s in meta["songs"] if s["id"] == seg["song"])["truth"]["chords"]
        offset, rate = seg["song_frame"] / fr, meta["codec"]["sample_rate"]
        for name, codes in (("chord_tone_fit", solo[0, :, :n_frames]), ("chord_tone_fit_mismatched", mismatched[0])):
            figures[name] = data.chord_tone_fit(data.decode_codes(codec, codes.cpu().numpy()), chords, rate, offset)
    return figures


def window_plan(T, W, stride):
    """The (start, end) frame ranges of the windows that cover T frames: [(0, W), (stride, stride + W), ...]."""
    plan = [(0, min(W, T))]
    while plan[-1][1] < T:
        start = plan[-1][0] + stride
        plan.append((start, min(start + W, T)))
    return plan


def window_stride(cfg, frame_rate, W):
    """Frames between window starts: --stride-s, or half a window; at least 1, at most W."""
    return max(1, min(round(cfg.stride_s * frame_rate) or W // 2, W))


def windowed_generate(model, backing, cfg, frame_rate, progress):
    """backing [B, K, T] -> solo [B, K, T], window by window for any T.

    Window w covers frames [start, start + W). Its first W - stride frames were written
    by the previous window: they are given as a prompt (forced, not sampled), and only
    the last stride frames are new. Memory is that of one window, whatever T is.
    """
    # The model never saw a sequence longer than W frames in training: its attention
    # patterns past W are untested. So each call sees at most W frames. The overlap
    # (W - stride frames) is what carries the solo's line from one window to the next:
    # a longer overlap gives smoother joins, a shorter one fewer wasted steps.
    W, T = model.cfg.max_frames, backing.size(-1)
    opts = dict(temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p, cfg_coef=cfg.cfg_coef)
    solo = None
    for w, (start, end) in enumerate(window_plan(T, W, window_stride(cfg, frame_rate, W))):
        prompt = None if solo is None else solo[..., start:]                             # [B, K, W - stride]
        # A new seed per window: with the same seed, window w would redraw the random
        # numbers of window 0 and could echo its phrases.
        part = generate(model, backing[..., start:end], seed=cfg.seed + w, prompt=prompt, progress=progress, **opts)
        solo = part if prompt is None else torch.cat([solo, part[..., prompt.size(-1):]], dim=-1)  # [B, K, end]
    return solo


def mix_audio(backing, solo):
    """Level-match the solo to the backing (equal RMS), add, and scale down only if it would clip.

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
    s = s * (rms(b) / rms(s))
    mix = b + s
    peak = np.abs(mix).max()
    return (mix * (0.98 / peak) if peak > 0.98 else mix).astype(np.float32), s.astype(np.float32)


def token_stats(codes, card):
    """Distinct codes and entropy (nats) per codebook of codes [K, T].

    A quick check without ears: a solo stuck on a few codes (entropy near 0) is a
    drone or silence; one spread over all 1024 (entropy near log 1024 = 6.9) is noise.
    """
    return [{"distinct": int(len(np.unique(row))), "entropy_nats": round(h, 3)}
            for row, h in zip(codes, unigram_entropy(codes, card))]


def plot(png, backing_audio, solo_audio, solo_codes, rate, frame_rate, card, note=""):
    """Spectrograms of backing and solo over the same time axis, and the solo's tokens.

    Lined up, they show at a glance whether the solo plays when the band plays, in a
    sensible register (a sax's fundamentals sit below 1 kHz), and whether the tokens
    change with the music or sit on one code. note: a line printed on the figure.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(3, 1, figsize=(10, 8.5), sharex=True)
    for ax, audio, title in ((axes[0], backing_audio, "backing"), (axes[1], solo_audio, "generated solo")):
        *_, image = ax.specgram(audio + 1e-9, NFFT=1024, Fs=rate, noverlap=768, cmap="magma")
        fig.colorbar(image, ax=ax, pad=0.01, label="power (dB)")
        ax.set_ylim(0, 6000)
        ax.set_ylabel("Hz")
        ax.set_title(title)
    K, T = solo_codes.shape  # one row per codebook, one column per frame
    # Code ids are names, not amounts: code 17 sounds no more like code 18 than like
    # code 900. So each id gets a colour through a fixed shuffle, and neighbouring ids
    # do not look alike; what the panel shows is where codes hold and where they change.
    shuffled = np.random.default_rng(0).permutation(card + 1)[solo_codes]
    image = axes[2].imshow(shuffled, aspect="auto", interpolation="nearest", cmap="turbo",
                           extent=(0, T / frame_rate, K + 0.5, 0.5))
    fig.colorbar(image, ax=axes[2], pad=0.01, ticks=[]).set_label("code id\n(shuffled colours)")
    axes[2].set_ylabel("codebook")
    axes[2].set_title("solo tokens: one colour per code id, no order between colours; "
                      "a run of one colour is a held code")
    axes[2].set_xlabel("seconds")
    if note:
        fig.suptitle(note, fontsize=9, color="tab:red")
    fig.tight_layout()
    data.atomic_write(png, lambda f: fig.savefig(f, format="png", dpi=90))
    plt.close(fig)


# ----------------------------------------------------------------------------
# Phase 3, by ear: the listening page (index.html beside the audio)
# ----------------------------------------------------------------------------
# One static file for a person to open: players for every wav, the pictures, the
# figures and the command that made them. It opens from the file system with no
# server, no network and no script, and links only to files beside it, so the folder
# can be zipped and sent. Every figure sits in an element whose data-key is its path
# in the JSON written beside it (generation.json, or a run's page.json), which is how
# tests/test_pages.py holds the page to the numbers. train.py writes the same kind of
# page for a run, with a sample at each new best checkpoint.

PAGE_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 76rem; margin: 1.5rem auto; padding: 0 1rem; color: #1d1d1f; }
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


def figure(key, value, tag="td"):
    """One figure in an element (a table cell by default), tagged with its path in the JSON (data-key)."""
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    return f'<{tag}{" class=n" if numeric else ""} data-key="{html.escape(key)}">{shown(value)}</{tag}>'


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
    rows = "".join(f"<tr><th>{html.escape(key[len(prefix) + 1:])}</th>{figure(key, value)}</tr>"
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
            f'<title>{html.escape(title)}</title><style>{PAGE_STYLE}</style></head>\n<body>\n{body}\n</body></html>\n')
    data.atomic_write(path, lambda f: f.write(page), mode="w")


def token_table(columns):
    """Distinct codes and entropy per codebook, a column per take: columns [(label, key, stats)]."""
    head = "".join(f"<th colspan=2>{html.escape(label)}</th>" for label, _, _ in columns)
    rows = "".join(
        f"<tr><th>codebook {k + 1}</th>" + "".join(
            figure(f"{key}.{k}.distinct", stats[k]["distinct"]) + figure(f"{key}.{k}.entropy_nats",
                                                                                   stats[k]["entropy_nats"])
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
             f"<p>Checkpoint <code>{html.escape(result['checkpoint'])}</code> at step {result['step']}; "
             f"{result['seconds']:.1f} s. Written by <code>generate.py</code>; the figures are those of "
             f"<a href=\"generation.json\">generation.json</a>.</p>"]
    if result["codec"]["untrained"]:
        parts.append(f'<p class="note">Offline: {html.escape(data.UNTRAINED_AUDIO)}. To hear the model, train '
                     f"on tokens of the pretrained codec; here, judge the tokens panel of the pictures and the "
                     f"figures below (docs/codec.md).</p>")
    # One backing for all; then one box per take, side by side (a flex row that wraps on
    # a narrow screen), so that N solos over the same band are compared by ear at once.
    parts += ["<h2>Listen</h2>", player("the backing, as the model heard it", "backing.wav"), '<div class="takes">']
    for label, solo, mix, png in takes:
        parts.append(f'<section class="take"><h3>{html.escape(label)}</h3>{player("solo", solo)}'
                     f'{player("solo + backing", mix)}{picture(label, png)}</section>')
    if truth:  # the recording's own solo over the same clip: what the model is aiming at
        parts.append(f'<section class="take"><h3>the true solo (the recording)</h3>{player("solo", truth[0])}'
                     f'{player("solo + backing", truth[1])}</section>')
    parts.append("</div>")
    if result.get("listening"):
        parts += ["<h2>Does it follow the band?</h2>",
                  "<p>Kick AUC: how well the solo's note attacks line up with the band's kicks (0.5: not at all), "
                  "over its own backing and, as the control, for a solo written over another song's backing "
                  "(docs/phase3-training-evaluation.md).</p>", figures_table("listening", result["listening"])]
    # Token statistics, a column per take: generated solos, the true solo, the backing.
    # Their data-keys are the paths in generation.json (solo_tokens.0.2.entropy_nats).
    columns = [(label, f"solo_tokens.{i}", stats)
               for i, ((label, *_), stats) in enumerate(zip(takes, result["solo_tokens"]))]
    if result.get("true_solo_tokens"):
        columns.append(("true solo", "true_solo_tokens", result["true_solo_tokens"]))
    columns.append(("backing", "backing_tokens", result["backing_tokens"]))
    parts += ["<h2>Tokens</h2><p>A solo stuck on a few codes (entropy near 0) is a drone; one spread over all "
              "of them (near 6.9 nats) is noise.</p>", token_table(columns),
              "<h2>Timings</h2>", figures_table("timings", result["timings"])]
    if result.get("streaming"):
        parts += ["<h2>Streaming</h2>", figures_table("streaming", result["streaming"])]
    # The command that reproduces the page, then every setting (defaults included).
    parts += ["<h2>How it was made</h2>", f"<pre>{html.escape(result['command'])}</pre>",
              figures_table("settings", result["settings"])]
    write_page(out / "index.html", f"Solo over {result['backing']}", "\n".join(parts))


def stream_windows(cfg, numbers):
    """The streaming codec's fixed windows, in frames: (chunk, context, decode window).

    Each chunk of audio is encoded together with `context` frames of the audio before
    it (silence before the music starts), always the same number of samples; solo
    frames are decoded in windows of context + chunk frames. Fixed sizes are what the
    exported codec graphs take (onnx_runner.py), so both paths cut the audio alike.
    """
    chunk = max(1, round(cfg.chunk_ms / 1000 * numbers["frame_rate"]))
    context = round(cfg.context_ms / 1000 * numbers["frame_rate"])
    return chunk, context, context + chunk


def stream(model, codec, backing_audio, cfg, numbers):
    """Phase 5: feed the backing in chunks as if it arrived live.

    Returns (solo codes [N, K, T], the N solos' audio as decoded chunk by chunk, report),
    N = --num-samples: the solos are written side by side over the same live backing.

    Per chunk: the codec encodes it (re-reading context_ms of past audio, so the
    causal encoder's convolutions see what came before), the transformer takes each
    new frame (encoder step, then decoder step), and the solo frames the delay pattern
    has completed are decoded to audio, again with past frames as context.
    """
    # Latency has three parts. (1) The chunk: audio must arrive before it is encoded,
    # so a chunk of 80 ms adds up to 80 ms. (2) The delay pattern: codebook K-1 of frame
    # t is written at step t + K - 1, so a frame's audio is complete K - 1 frames (40 ms
    # at 75 Hz) after its backing. (3) Compute: codec encode, transformer, codec decode.
    # The report gives all three; real time needs (3) below the chunk's duration.
    hop, rate, K = numbers["hop"], numbers["sample_rate"], numbers["n_codebooks"]
    chunk_frames, context_frames, decode_frames = stream_windows(cfg, numbers)
    chunk, context = chunk_frames * hop, context_frames * hop                       # in samples
    n_frames = len(backing_audio) // hop
    if n_frames < chunk_frames:
        raise SystemExit(f"the backing is {len(backing_audio) / rate * 1e3:.0f} ms long, shorter than one chunk "
                         f"({chunk / rate * 1e3:.0f} ms): give a longer backing or a smaller --chunk-ms")
    # Before the music starts, a live input hears silence: `context` zeros in front.
    padded = np.concatenate([np.zeros(context, np.float32), backing_audio[:n_frames * hop]])
    # The sampler holds the caches, on the model's device and in its dtype; each push()
    # is one encoder step and one decoder step for all N solos (and their null rows
    # when guidance is on).
    sampler = StreamingSampler(model, n_frames, batch=cfg.num_samples, temperature=cfg.temperature, top_k=cfg.top_k,
                               top_p=cfg.top_p, seed=cfg.seed, cfg_coef=cfg.cfg_coef)
    device = next(model.parameters()).device
    solo_frames, audio_out, frame_ms, codec_ms, delay_ms, decoded = [], [], [], [], [], 0

    def decode_new(frames, done):
        """Audio of frames[done:] of each solo [N arrays], at most a chunk per decode, each in a
        window of decode_frames frames ending at its last frame (the first frame repeated
        where the solo has not begun yet): the causal decoder hears what came before."""
        pieces = []
        while done < len(frames):
            new = min(chunk_frames, len(frames) - done)
            window = frames[max(0, done + new - decode_frames):done + new]
            window = [window[0]] * (decode_frames - len(window)) + window
            codes = torch.stack(window, dim=-1).numpy()                                # [N, K, decode_frames]
            pieces.append([data.decode_codes(codec, c)[-new * hop:] for c in codes])
            done += new
        return [np.concatenate(p) for p in zip(*pieces)]
    for start in tqdm(range(0, n_frames * hop, chunk), desc="stream", unit="chunk"):
        arrived = time.perf_counter()  # the chunk's last sample has just arrived
        end = min(start + chunk, n_frames * hop)
        t0 = time.perf_counter()
        # EnCodec 24 kHz is causal: a frame depends only on audio up to its end. Re-reading
        # context_ms of the past gives its convolutions (and, approximately, its LSTM)
        # the history a whole-file encode would have had; only the new frames are kept.
        codes = data.encode_audio(codec, padded[end - chunk:end + context])              # [K, context + chunk frames]
        new = torch.from_numpy(codes[:, -((end - start) // hop):].astype(np.int64)).to(device)  # [K, n]
        codec_ms.append((time.perf_counter() - t0) * 1e3)
        for f in range(new.size(-1)):
            t1 = time.perf_counter()
            done = sampler.push(new[None, :, f])                                          # [N, K] or None
            frame_ms.append((time.perf_counter() - t1) * 1e3)
            if done is not None:
                solo_frames.append(done.cpu())
        # The chunk's compute ends when its completed solo frames are audio: that moment,
        # minus the chunk's arrival, is the compute delay reported below.
        if len(solo_frames) > decoded:  # decode what is complete, with past frames as context
            t2 = time.perf_counter()
            audio_out.append(decode_new(solo_frames, decoded))
            codec_ms[-1] += (time.perf_counter() - t2) * 1e3
            decoded = len(solo_frames)
            delay_ms.append((time.perf_counter() - arrived) * 1e3)
    solo_frames.extend(sampler.finish().cpu().unbind(-1))  # the backing has ended: the last K - 1 frames
    audio_out.append(decode_new(solo_frames, decoded))
    solo = torch.stack(solo_frames, dim=-1)                                            # [N, K, T]
    pct = lambda xs, q: float(np.percentile(xs, q)) if xs else float("nan")  # noqa: E731
    pattern_ms = (K - 1) * 1e3 / numbers["frame_rate"]
    report = {"transformer_frame_ms": {"median": pct(frame_ms, 50), "p99": pct(frame_ms, 99)},
              "codec_chunk_ms": {"median": pct(codec_ms, 50), "p99": pct(codec_ms, 99)},
              "compute_delay_ms": {"median": pct(delay_ms, 50), "p99": pct(delay_ms, 99)},
              "chunk_ms": chunk / rate * 1e3, "delay_pattern_ms": pattern_ms,
              "end_to_end_delay_ms": {"median": chunk / rate * 1e3 + pattern_ms + pct(delay_ms, 50),
                                      "p99": chunk / rate * 1e3 + pattern_ms + pct(delay_ms, 99)},
              "frame_budget_ms": 1e3 / numbers["frame_rate"], "solos": cfg.num_samples,
              "cfg_coef": cfg.cfg_coef}
    audio = [np.concatenate([part[i] for part in audio_out]) for i in range(cfg.num_samples)]
    return solo, audio, report


# ----------------------------------------------------------------------------
# Phase 5, deployment: the streaming model and the codec as ONNX graphs
# ----------------------------------------------------------------------------
# A board without PyTorch runs the same streaming steps through ONNX Runtime
# (onnx_runner.py). An ONNX graph is a pure function: it cannot keep a KVCache object
# between calls, so the caches become inputs, and each step's new keys and values
# become outputs that the runner writes into its own ring buffers (slot p % capacity,
# as KVCache does). At one frame per call, two things cost the time (measured:
# docs/phase5-streaming.md): copying a ring, and the number of operators (each costs
# a few microseconds, however small its tensors). So the steps below:
#   - take one input per layer and ring, not one stacked tensor (taking layer i out of
#     a stack is a copy of it);
#   - score this position's own key and value beside the ring (ring_attention), never
#     joined to it (torch.cat would copy the whole ring);
#   - turn queries and keys by their rotary angle with one matmul (rotation), with the
#     1/sqrt(hd) of attention folded into the queries' turn;
#   - are written for one row and one position, so that splitting heads and merging
#     them back are reshapes, not transposes.
# The steps are written out again here rather than calling model.Block, for these
# reasons; tests/test_onnx.py holds their logits equal to SamplerState's.

def rotation(position, hd):
    """The rotary turn at one position as a matrix [hd, hd]: x @ rotation(p) equals
    model.apply_rope(x, *rope_angles(p)) for any x [..., hd]. One matmul instead of
    apply_rope's split, negation, concatenation, two products and sum."""
    cos, sin = rope_angles(position, hd)                                  # 2 x [1, hd]
    eye, zero = torch.eye(hd // 2), torch.zeros(hd // 2, hd // 2)
    # x @ quarter = cat(-x2, x1): apply_rope's "turned by 90 degrees", as a matrix.
    quarter = torch.cat([torch.cat([zero, eye], dim=1), torch.cat([-eye, zero], dim=1)])  # [hd, hd]
    return torch.eye(hd) * cos + quarter * sin                            # column i: cos_i, and sin_i off the diagonal


def step_turns(position, hd):
    """[3, 1, hd, hd]: the turns for queries (scaled by 1/sqrt(hd), attention's scale),
    keys, and values (none: the identity), to multiply [3, H, 1, hd] at once."""
    turn = rotation(position, hd)
    return torch.stack([turn / math.sqrt(hd), turn, torch.eye(hd)])[:, None]


def ring_attention(q, ring_k, ring_v, bias, k=None, v=None):
    """One query over a ring of keys and values: model.attention for a single position.

    q [1, H, 1, hd], already scaled by 1/sqrt(hd); ring_k, ring_v [1, H, C, hd]; bias [C]:
    0 for a slot the query may see, -inf for one it may not (the mask, added). k, v
    [1, H, 1, hd]: in self-attention, this position's own key and value, always seen.
    -> [1, H, 1, hd].
    """
    H, C, hd = ring_k.shape[1:]
    # Keys times the query as a column: [C, hd] @ [hd, 1] per head. ONNX Runtime runs this
    # orientation faster than the query as a row against keys held transposed (measured:
    # docs/phase5-streaming.md), and a column of one query is the same memory as its row.
    scores = ring_k @ q.view(1, H, hd, 1)                                 # [1, H, C, 1]
    if k is None:
        return (scores.view(1, H, 1, C) + bias).softmax(dim=-1) @ ring_v
    scores = torch.cat([scores.view(1, H, 1, C), (q * k).sum(-1, keepdim=True)], dim=-1)  # [1, H, 1, C + 1]
    weights = (scores + torch.cat([bias, bias.new_zeros(1)])).softmax(dim=-1)
    past, now = weights.split([C, 1], dim=-1)                             # [1, H, 1, C], [1, H, 1, 1]
    return past @ ring_v + now * v                                        # [1, H, 1, hd]


def block_step(block, x, turns, ring, bias, cross=None, cross_bias=None):
    """model.Block for one position x [1, 1, D] over its rings (ring: keys, values;
    cross: the backing frames' keys and values) -> (x [1, 1, D], this position's k, v).

    turns: step_turns at this position. The block's own weights and layers; only the
    attention over the rings and the rotary turn are written differently.
    """
    attn = block.self_attn
    H, D = attn.n_heads, x.size(-1)
    qkv = attn.qkv_proj(block.norm1(x)).view(3, H, 1, D // H) @ turns    # [3, H, 1, hd]: q, k turned; v as is
    q, k, v = qkv.split(1)                                                # 3 x [1, H, 1, hd]
    x = x + attn.out_proj(ring_attention(q, *ring, bias, k, v).view(1, 1, D))
    if block.cross_attn is not None:  # decoder blocks: the backing frames' ring, nothing new to add to it
        c = block.cross_attn
        q = c.q_proj(block.norm2(x)).view(1, H, 1, D // H) @ turns[0]     # [1, H, 1, hd]
        x = x + c.out_proj(ring_attention(q, *cross, cross_bias).view(1, 1, D))
    return x + block.ffn(block.norm3(x)), k, v


def ring_names(prefix, layers):
    """The graphs' ring inputs: enc_k0, enc_v0, enc_k1, ... (keys, values per layer)."""
    return [f"{prefix}_{kv}{i}" for i in range(layers) for kv in "kv"]


def pairs(rings):
    """[k0, v0, k1, v1, ...] -> [(k0, v0), (k1, v1), ...]."""
    return list(zip(rings[::2], rings[1::2]))


def joined_linear(layers):
    """One nn.Linear doing the work of several on the same input (their outputs side by
    side): one matmul with a wide weight instead of several narrow ones."""
    joined = torch.nn.Linear(layers[0].in_features, sum(lin.out_features for lin in layers))
    with torch.no_grad():
        joined.weight.copy_(torch.cat([lin.weight for lin in layers]))
        joined.bias.copy_(torch.cat([lin.bias for lin in layers]))
    return joined


class EncoderStep(torch.nn.Module):
    """One backing frame through the causal encoder (SamplerState.encoder_step as a function).

    frame [1, K] int64, position [1] int64, enc_bias [C] (0: a slot this step may see,
    -inf: not), then per encoder layer its ring: keys, values [1, H, C, hd]
    -> per encoder layer this frame's key and value [1, H, 1, hd] (for the encoder's rings),
       cross [L_dec, 2, H, 1, hd]: this frame's keys and values for the cross-attention rings,
       state [1, 1, D] (the encoder output, for the aligned path's window).
    """

    def __init__(self, model):
        super().__init__()
        self.model = model
        # Every decoder layer's cross-attention keys and values of this frame, in one matmul.
        self.cross_kv = joined_linear([block.cross_attn.kv_proj for block in model.decoder])

    def forward(self, frame, position, enc_bias, *rings):
        m, H, D = self.model, self.model.cfg.n_heads, self.model.cfg.d_model
        x = m.embed(m.enc_emb, frame[..., None])                              # [1, 1, D]
        turns = step_turns(position, D // H)                                   # [3, 1, hd, hd]
        new = []
        for block, ring in zip(m.encoder, pairs(rings)):
            x, k, v = block_step(block, x, turns, ring, enc_bias)
            new += [k, v]
        x = m.enc_norm(x)                                                      # [1, 1, D]
        cross = self.cross_kv(x).view(len(m.decoder), 2, H, 1, D // H) @ turns[1:]  # keys turned, values as is
        return (*new, cross, x)


class DecoderStep(torch.nn.Module):
    """One decoder step (SamplerState.decoder_step as a function).

    tokens [1, K] int64 (the previous step's codes), position [1] int64, recent [1, K, D]
    (encoder states of the last K frames, oldest first: the aligned path), self_bias
    and cross_bias [C], then per decoder layer its own ring (self_k, self_v) and then
    per layer the backing frames' ring (cross_k, cross_v), laid out as in EncoderStep
    -> logits [1, K, card], then per decoder layer this step's key and value [1, H, 1, hd].
    """

    def __init__(self, model):
        super().__init__()
        self.model = model
        if model.align_conv is not None:
            # model.aligned_step as one linear layer over `recent` as it lies, [K * D]:
            # the convolution's weight [D, D, K] laid out to match, once, here. No
            # transpose at every step, and a 3-D input makes it a MatMul, which both
            # quantizers take (aligned_step's 2-D linear exports as a Gemm, which the
            # int4 one leaves in fp32: 4 MB read per step for small).
            conv, (K, D) = model.align_conv, (model.cfg.n_codebooks, model.cfg.d_model)
            self.aligned = torch.nn.Linear(K * D, D)
            with torch.no_grad():
                self.aligned.weight.copy_(conv.weight.permute(0, 2, 1).reshape(D, K * D))
                self.aligned.bias.copy_(conv.bias)

    def forward(self, tokens, position, recent, self_bias, cross_bias, *rings):
        m, H, D = self.model, self.model.cfg.n_heads, self.model.cfg.d_model
        x = m.embed(m.dec_emb, tokens[..., None])                             # [1, 1, D]
        if m.align_conv is not None:
            x = x + self.aligned(recent.view(1, 1, -1))
        turns = step_turns(position, D // H)
        L = len(m.decoder)
        new = []
        for block, ring, cross in zip(m.decoder, pairs(rings[:2 * L]), pairs(rings[2 * L:])):
            x, k, v = block_step(block, x, turns, ring, self_bias, cross, cross_bias)
            new += [k, v]
        return (m.logits(x).view(1, m.cfg.n_codebooks, m.cfg.card), *new)  # [1, K, 1, card] -> [1, K, card]


class CodecEncoder(torch.nn.Module):
    """EnCodec's encoder and quantizer: audio [1, 1, N] -> codes [1, K, N / hop]."""

    def __init__(self, codec):
        super().__init__()
        self.codec = codec

    def forward(self, audio):
        c = self.codec
        return c.quantizer.encode(c.encoder(audio), c.frame_rate, c.bandwidth).transpose(0, 1)


class CodecDecoder(torch.nn.Module):
    """EnCodec's dequantizer and decoder: codes [1, K, F] -> audio [1, 1, F * hop]."""

    def __init__(self, codec):
        super().__init__()
        self.codec = codec

    def forward(self, codes):
        return self.codec.decoder(self.codec.quantizer.decode(codes.transpose(0, 1)))


def export_graph(module, args, path, inputs, outputs, dynamic):
    """torch.onnx.export with its TorchScript tracer (dynamo=False: nothing beyond the onnx package)."""
    import warnings
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notes on Python ints and deprecation
        torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs,
                          dynamic_axes=dynamic, opset_version=20, dynamo=False)


def export_steps(model, folder):
    """The transformer's two streaming steps as ONNX graphs in folder: fp32, int8 and int4 weights."""
    mcfg = model.cfg
    K, H, D, L = mcfg.n_codebooks, mcfg.n_heads, mcfg.d_model, mcfg.n_dec_layers
    # Every shape fixed where it can be: one row, and rings of attn_window slots. ONNX
    # Runtime then folds away the shape arithmetic the tracer records (a third of the
    # nodes), which at one frame per call is most of the time. Only a model without a
    # window keeps the ring length free (it grows with the song).
    hd, B = D // H, 1
    C = mcfg.attn_window or 8
    free = not mcfg.attn_window
    # Example inputs for the tracer: only their shapes matter (zeros are fine).
    rings = lambda layers: [torch.zeros(B, H, C, hd) for _ in range(2 * layers)]  # noqa: E731
    bias = torch.zeros(C)
    frame, position = torch.zeros(B, K, dtype=torch.long), torch.zeros(1, dtype=torch.long)

    def slots(names):  # the axis that counts slots, free only without a window
        return {n: {2: "slots"} for n in names} if free else {}

    enc, own, cross = ring_names("enc", mcfg.n_enc_layers), ring_names("self", L), ring_names("cross", L)
    export_graph(EncoderStep(model), (frame, position, bias, *rings(mcfg.n_enc_layers)),
                 folder / "encoder_step.onnx", ["frame", "position", "enc_bias", *enc],
                 [*ring_names("new_enc", mcfg.n_enc_layers), "cross", "state"],
                 {**slots(enc), **({"enc_bias": {0: "slots"}} if free else {})})
    export_graph(DecoderStep(model), (frame, position, torch.zeros(B, K, D), bias, bias, *rings(L), *rings(L)),
                 folder / "decoder_step.onnx", ["tokens", "position", "recent", "self_bias", "cross_bias",
                                                *own, *cross], ["logits", *ring_names("new_self", L)],
                 {**slots(own + cross), **({"self_bias": {0: "slots"}, "cross_bias": {0: "slots"}} if free else {})})
    for name in ("encoder_step", "decoder_step"):
        quantize_step(folder, name)


def quantize_step(folder, name):
    """folder/name.onnx -> name.int8.onnx and name.int4.onnx: fewer bytes per weight.

    At one frame per call every weight is read once per frame, so the bytes of the
    weights are most of a step's time (docs/phase5-streaming.md measures both variants).
    """
    import logging
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer
    from onnxruntime.quantization.shape_inference import quant_pre_process
    root = logging.getLogger()
    level, _ = root.level, root.setLevel(logging.ERROR)  # the quantizers' notes, node by node
    try:
        # int8: every MatMul with a constant weight (the linear layers and the heads), one
        # scale per output channel; activations are quantized on the fly, per call.
        # Attention's own matmuls (both sides computed) stay fp32. The pre-processing
        # folds constants first, so that every such weight counts as constant.
        quant_pre_process(str(folder / f"{name}.onnx"), str(folder / f"{name}.pre.onnx"))
        quantize_dynamic(str(folder / f"{name}.pre.onnx"), str(folder / f"{name}.int8.onnx"),
                         weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul", "Gemm"])
        # int4: the same weights in ONNX Runtime's MatMulNBits, 4 bits each with one scale
        # per block of 32 along the input (symmetric: no zero point); accuracy level 4
        # lets the kernel multiply in int8, the activations quantized per block. It takes
        # MatMul only, so it reads the graph as exported (the pre-processing above turns
        # MatMul + Add into Gemm).
        config = DefaultWeightOnlyQuantConfig(block_size=32, is_symmetric=True, accuracy_level=4, bits=4)
        quantizer = MatMulNBitsQuantizer(onnx.load(str(folder / f"{name}.onnx")), algo_config=config)
        quantizer.process()
        quantizer.model.save_model_to_file(str(folder / f"{name}.int4.onnx"), use_external_data_format=False)
    finally:
        root.setLevel(level)  # the caller's logging as it was, even when a quantizer fails
    (folder / f"{name}.pre.onnx").unlink()


def export_codec(codec, n_codebooks, encode_samples, decode_frames, folder):
    """EnCodec as two ONNX graphs of fixed sizes: encode_samples of audio, decode_frames of codes."""
    codec = codec.float().cpu().eval()
    export_graph(CodecEncoder(codec), (torch.zeros(1, 1, encode_samples),), folder / "codec_encoder.onnx",
                 ["audio"], ["codes"], None)
    export_graph(CodecDecoder(codec), (torch.zeros(1, n_codebooks, decode_frames, dtype=torch.long),),
                 folder / "codec_decoder.onnx", ["codes"], ["audio"], None)


def write_onnx_folder(model, codec, config, numbers, cfg, folder):
    """The graphs, runner.json and onnx_runner.py into folder (a temporary one: see export_onnx)."""
    import shutil
    from onnx_runner import FORMAT, sha256  # the runner checks the graphs with the same digest
    mcfg = model.cfg
    print("the transformer's two steps ...")
    export_steps(model, folder)
    print("... and the codec, for fixed windows")
    chunk, context, decode = stream_windows(cfg, numbers)
    export_codec(codec, mcfg.n_codebooks, (context + chunk) * numbers["hop"], decode, folder)
    shutil.copy(Path(__file__).with_name("onnx_runner.py"), folder / "onnx_runner.py")
    graphs = [f"{step}{variant}.onnx" for variant in ("", ".int8", ".int4") for step in ("encoder_step", "decoder_step")]
    graphs += ["codec_encoder.onnx", "codec_decoder.onnx"]
    runner = {"format": FORMAT, "checkpoint": str(cfg.checkpoint), "step": config["step"],
              "n_codebooks": mcfg.n_codebooks, "card": mcfg.card, "d_model": mcfg.d_model, "n_heads": mcfg.n_heads,
              "head_dim": mcfg.d_model // mcfg.n_heads, "n_enc_layers": mcfg.n_enc_layers,
              "n_dec_layers": mcfg.n_dec_layers, "attn_window": mcfg.attn_window,
              "aligned_backing": model.align_conv is not None,
              "sample_rate": numbers["sample_rate"], "frame_rate": numbers["frame_rate"], "hop": numbers["hop"],
              "chunk_frames": chunk, "context_frames": context, "decode_frames": decode,
              "codec_untrained": numbers["untrained"],
              "sha256": {g: sha256(folder / g) for g in graphs}}
    data.write_json(folder / "runner.json", runner)
    return graphs


def export_onnx(model, codec, config, numbers, cfg, out):
    """Write the ONNX folder for onnx_runner.py, atomically (a temporary folder, then one rename).

    encoder_step / decoder_step (.onnx fp32; .int8.onnx and .int4.onnx with int8 or
    4-bit weights for the linear layers), codec_encoder.onnx (fixed window of context + chunk audio),
    codec_decoder.onnx (fixed window of frames), runner.json (the numbers the runner
    needs and each graph's SHA-256), and onnx_runner.py itself: copy the folder to the
    board, and it has everything.
    """
    import shutil
    if not model.cfg.causal_encoder:
        raise SystemExit(f"--export-onnx needs a causal model (trained with --causal-encoder): "
                         f"{cfg.checkpoint} reads the whole backing at once, which no live input can give")
    model = model.float().cpu().eval()
    out = Path(out)
    if out.exists() and not cfg.overwrite:
        raise SystemExit(f"{out} already exists; pass --overwrite or choose another --export-onnx folder")
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    print(f"exporting to {out}")
    try:
        graphs = write_onnx_folder(model, codec, config, numbers, cfg, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # nothing half-written stays behind
        raise
    if out.exists():  # --overwrite: the old folder goes only once the new one is complete
        old = out.with_name(f".{out.name}.old{os.getpid()}")
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old)
    else:
        tmp.rename(out)
    sizes = ", ".join(f"{g} {(out / g).stat().st_size / 1e6:.1f} MB" for g in graphs)
    print(f"wrote {out}: {sizes}. On the device: python onnx_runner.py {out} --backing trio.wav")
    return out


def main(cfg):
    """Generate and write everything; returns the path of generation.json."""
    data.check_settings(cfg)
    if cfg.num_samples < 1:
        raise SystemExit(f"--num-samples {cfg.num_samples}: must be at least 1")
    data.set_threads(cfg.threads)
    if cfg.export_onnx:  # phase 5's deployment: graphs for onnx_runner.py, no sampling here
        folder = fetch_checkpoint(cfg.checkpoint)
        model, config = load_model(folder, "cpu")
        codec, numbers = load_codec_for(config, folder, cfg.encodec_weights, "cpu")
        return export_onnx(model, codec, config, numbers, cfg, cfg.export_onnx)
    # Refuse before any work: a student's favourite take is never overwritten by accident.
    out = Path(cfg.out)
    names = ["solo.wav", "mix.wav", "backing.wav", "solo.png", "generation.json", "index.html"]
    if cfg.num_samples > 1:
        names += [f"{k}_{i}.{ext}" for i in range(cfg.num_samples) for k, ext in (("solo", "wav"), ("mix", "wav"),
                                                                                   ("solo", "png"))]
    if not cfg.backing:  # a dataset clip: its true solo is written beside the generated ones
        names += ["true_solo.wav", "true_mix.wav"]
    clash = [n for n in names if (out / n).exists()]
    if clash and not cfg.overwrite:
        raise SystemExit(f"{out} already holds {', '.join(clash)}; pass --overwrite or choose another --out")
    device = data.pick_device(cfg.device)
    # Checkpoint, then codec (checked against it), then the backing as tokens.
    folder = fetch_checkpoint(cfg.checkpoint)
    model, config = load_model(folder, device)
    codec, numbers = load_codec_for(config, folder, cfg.encodec_weights, device)
    codes, backing_audio, source, truth = backing_tokens(cfg, config, codec, numbers, device)
    print(f"checkpoint {folder} (step {config['step']}), backing: {source}, {codes.shape[1] / numbers['frame_rate']:.1f} s")
    if config["data"]["codec"]["untrained"]:
        print(f"NOTE: {data.UNTRAINED_AUDIO}; judge it by the token metrics (docs/codec.md)")
    t0 = time.perf_counter()
    report = None
    if cfg.stream:
        if not model.cfg.causal_encoder:
            raise SystemExit(f"--stream needs a causal model: {folder} was trained without --causal-encoder")
        solo, streamed_audio, report = stream(model, codec, backing_audio[:codes.shape[1] * numbers["hop"]], cfg, numbers)
    else:
        # Several samples for one backing run as one batch: the same cost per step as one.
        backing = torch.from_numpy(codes)[None].repeat(cfg.num_samples, 1, 1).to(device)  # [B, K, T]
        W = model.cfg.max_frames
        plan = window_plan(codes.shape[1], W, window_stride(cfg, numbers["frame_rate"], W))
        total_steps = sum(end - start + numbers["n_codebooks"] - 1 for start, end in plan)  # decoder steps
        with tqdm(total=total_steps, desc="generate", unit="step") as bar:
            solo = windowed_generate(model, backing, cfg, numbers["frame_rate"], lambda: bar.update(1))
    token_s = time.perf_counter() - t0
    t1 = time.perf_counter()  # decoding is timed apart: it is the codec's cost, not the model's
    # Streaming already decoded its audio chunk by chunk, as a live listener would hear it.
    solos = streamed_audio if cfg.stream else [data.decode_codes(codec, s.cpu().numpy()) for s in solo]
    decode_s = time.perf_counter() - t1
    seconds = codes.shape[1] / numbers["frame_rate"]
    rate = numbers["sample_rate"]
    write_audio(out / "backing.wav", backing_audio[:len(solos[0])], rate)
    # Written atomically, like everything else: a killed run leaves no half file.
    note = ("UNTRAINED codec: its decoder ignores the codes, so the spectrograms show nothing of what the model "
            "wrote;\nonly the tokens panel does (docs/codec.md)" if numbers["untrained"] else "")
    takes = []  # (label, solo wav, mix wav, png) of each sample, for the page
    for i, s in enumerate(solos):
        mix, level = mix_audio(backing_audio, s)
        suffix = f"_{i}" if cfg.num_samples > 1 else ""
        names_i = (f"solo{suffix}.wav", f"mix{suffix}.wav", f"solo{suffix}.png")
        write_audio(out / names_i[0], level, rate)
        write_audio(out / names_i[1], mix, rate)
        plot(out / names_i[2], backing_audio[:len(s)], level, solo[i].cpu().numpy(), rate, numbers["frame_rate"],
             numbers["card"], note)
        takes.append((f"solo {i + 1} of {len(solos)}" if cfg.num_samples > 1 else "the solo", *names_i))
        if i == 0 and cfg.num_samples > 1:  # the first sample also under the plain names
            for plain, name in zip(("solo.wav", "mix.wav", "solo.png"), names_i):
                data.atomic_write(out / plain, lambda f, name=name: f.write((out / name).read_bytes()))
    if truth is not None:  # the recording's own solo over the same clip, decoded and levelled the same way
        true_mix, true_level = mix_audio(backing_audio, data.decode_codes(codec, truth))
        write_audio(out / "true_solo.wav", true_level, rate)
        write_audio(out / "true_mix.wav", true_mix, rate)
    # Real-time factor: seconds of audio per second of work; above 1 is faster than real time.
    result = {"settings": asdict(cfg), "command": data.command_line("generate.py", cfg),
              "checkpoint": str(folder), "step": config["step"], "backing": source,
              "seconds": seconds, "codec": numbers,
              "timings": {"tokens_s": token_s, "decode_s": decode_s,
                          "tokens_realtime_factor": seconds * cfg.num_samples / token_s,
                          "total_realtime_factor": seconds * cfg.num_samples / (token_s + decode_s)},
              "solo_tokens": [token_stats(s.cpu().numpy(), numbers["card"]) for s in solo],
              "backing_tokens": token_stats(codes, numbers["card"]), "streaming": report,
              "true_solo_tokens": None if truth is None else token_stats(truth, numbers["card"]),
              "listening": listening_figures(model, codec, config, cfg, solo, min(codes.shape[1], model.cfg.max_frames),
                                             device)}
    write_json(out / "generation.json", result)
    generation_page(out, result, takes, None if truth is None else ("true_solo.wav", "true_mix.wav"))
    print(f"wrote {out}/index.html (open it in a browser), solo.wav, mix.wav, backing.wav, solo.png, "
          f"generation.json: {seconds:.1f} s of audio; "
          f"tokens {result['timings']['tokens_realtime_factor']:.1f}x real time, "
          f"with decoding {result['timings']['total_realtime_factor']:.1f}x")
    if result["listening"]:
        fig = result["listening"]
        print(f"listening: kick AUC {fig['kick_auc']:.3f} over its own backing, {fig['kick_auc_mismatched']:.3f} for a "
              f"solo written over another song's (0.5: deaf to the band; the true lead {fig['kick_auc_true_lead']:.3f})"
              + (f"; chord-tone fit {fig['chord_tone_fit']:.2f} vs {fig['chord_tone_fit_mismatched']:.2f}"
                 if "chord_tone_fit" in fig else ""))
    if report:
        print("streaming: transformer per frame median {median:.2f} ms, p99 {p99:.2f} ms".format(
            **report["transformer_frame_ms"]) + f" (budget {report['frame_budget_ms']:.1f} ms); codec per chunk "
              f"median {report['codec_chunk_ms']['median']:.1f} ms; end-to-end delay median "
              f"{report['end_to_end_delay_ms']['median']:.0f} ms")
    return out / "generation.json"


if __name__ == "__main__":
    settings = parse_settings(GenerateConfig, description=__doc__.split("\n\n")[0])
    data.check_install(*(["demucs"] if settings.separate else []), *(["onnx", "onnxruntime"] if settings.export_onnx else []))
    main(settings)
    sys.exit(0)
