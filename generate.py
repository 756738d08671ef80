"""
generate.py -- a saxophone solo for a backing track: tokens -> sampling -> audio (phases 3-5).

    python generate.py                          # first validation clip, runs/tiny/best -> samples/
    python generate.py --backing my_trio.wav --out samples/trio
                                 # no backing? python data.py --demo-backing my_trio.wav writes one
    python generate.py --backing full_mix.wav --separate   # remove its lead with Demucs first
    python generate.py --checkpoint you/jazz-sax-tiny      # a model from the Hugging Face Hub
    python generate.py --stream --checkpoint runs/causal/best   # phase 5: frame by frame, latencies

Writes to the output folder (never over existing files without --overwrite):
    solo.wav      the generated saxophone
    mix.wav       backing + solo, level-matched, never clipping
    backing.wav   the backing as the model heard it (24 kHz mono)
    solo.png      spectrograms of backing and solo, and the solo's tokens
    generation.json  settings, timings (real-time factor) and token statistics
    index.html    the listening page: players, pictures, figures and the command (open it in a
                  browser)
    true_solo.wav, true_mix.wav   for a validation clip (no --backing): the recording's own solo
    solo_0.wav, mix_0.wav, solo_0.png, ...   with --num-samples N, each solo (solo.wav is
                                             solo_0.wav)

Backings longer than the model's window are generated in overlapping windows: each
window after the first is prompted with the end of the previous one (the way
MusicGen extends a piece), and the codec decodes in 10 s chunks, so any length works
with bounded memory (3 minutes: 1.1 GB peak for decoding, python tests/benchmark_data.py).
"""
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from sax import guard  # first of the project's: a Ctrl-C while torch loads is one line

guard.quiet_ctrl_c(__name__)

import numpy as np
import torch
from tqdm import tqdm

import data
from sax.audio import (SkipSong, channels, limited, load_audio, mix_audio, resample,
                       write_audio)
from sax.checkpoints import fetch_checkpoint, load_model, read_json, resolve_checkpoint
from sax.codec import (UNTRAINED_AUDIO, decode_codes, encode_audio, load_codec_for,
                       require_causal_codec)
from sax.dataset import load_dataset, load_split, unigram_entropy
from sax.files import atomic_write, write_json
from sax.machine import DEVICES, check_install, pick_device, set_threads
from sax.pages import generation_page, listening_figures
from sax.sampling import SAMPLING, StreamingSampler, sample_solo
from sax.separation import load_separator, separate
from sax.settings import check_settings, command_line, opt, parse_settings
from sax.streaming_codec import StreamingDecoder, StreamingEncoder, chunk_frames


@dataclass
class GenerateConfig:
    checkpoint: str = opt("runs/tiny/best",
                          "checkpoint folder, or a Hugging Face Hub id (user/name)")
    backing: str = opt("", "backing track (any audio file); empty: a "
                           "validation clip of the checkpoint's dataset")
    separate: bool = opt(False, "the backing is a full mix: remove its lead with Demucs first")
    from_val: int = opt(0, "which validation clip (section) to use when no --backing is given",
                        at_least=0)
    out: str = opt("samples", "output folder")
    overwrite: bool = opt(False, "replace files already in the output folder")
    duration: float = opt(0.0, "seconds to generate (0: the whole backing)", at_least=0)
    temperature: float = opt(SAMPLING["temperature"],
                             "sampling temperature (0: greedy)",
                             at_least=0, at_most=100)
    top_k: int = opt(SAMPLING["top_k"], "sample among the k most likely codes (0: all)",
                     at_least=0)
    top_p: float = opt(1.0, "sample among the codes holding this much "
                            "probability (1: all)", above=0, at_most=1)
    guidance: Optional[float] = opt(SAMPLING["guidance"], "classifier-free guidance coefficient "
                                    "(none: off; 1: same as off); 5 made the solos "
                                    "follow the band best (docs/phase3)", flag="--cfg-coef",
                                    at_least=0, at_most=100)
    num_samples: int = opt(1, "solos to generate for the same backing", at_least=1, at_most=64)
    seed: int = opt(0, "sampling seed", at_least=0)
    stride_s: float = opt(0.0, "long backings: seconds between window starts (0: half a window)",
                          at_least=0)
    stream: bool = opt(False,
                       "phase 5: stream the backing frame by frame (needs a causal checkpoint)")
    chunk_ms: float = opt(40.0, "streaming: audio chunk size in milliseconds (docs/phase5: 40 ms "
                                "halves the chunk's share of the delay)", above=0, at_most=10_000)
    encodec_weights: str = opt("", "local EnCodec weights (default: "
                                   "what the checkpoint's dataset used)")
    demucs_model: str = opt("htdemucs_6s", "Demucs model for --separate")
    demucs_repo: str = opt("", "local Demucs weights folder for --separate")
    device: str = opt("auto", "auto: the GPU when there is one", DEVICES)
    threads: int = opt(0, "CPU threads for torch (0: 1 or all, whichever "
                          "a timing at start finds faster; docs/troubleshooting.md)",
                       at_least=0, at_most=1024)


def backing_tokens(cfg, config, codec, numbers, device):
    """(backing codes [K, T], backing audio at the codec's rate [N], a description of where it came
    from, the true solo's codes [K, T] of a dataset clip or None for a file).

    From a file: read, checked, optionally separated, tokenized exactly as data.py
    tokenized the training data. From the dataset: the validation clip's codes, and
    their decoded audio as the backing to mix with (what the model "heard").
    """
    if cfg.backing:
        path = Path(cfg.backing)
        if path.is_dir():
            raise SystemExit(f"--backing {path} is a folder: give one audio file")
        if not path.is_file():
            raise SystemExit(f"--backing {path}: no such file")
        try:
            audio, rate = load_audio(path)
        except SkipSong as why:
            raise SystemExit(f"--backing {path}: {why}") from None
        # Under a second the model hears too few frames to follow anything: refuse it early.
        if audio.shape[1] < rate:
            raise SystemExit(f"--backing {path}: {audio.shape[1] / rate:.2f} "
                             "s long; give at least 1 s of backing")
        if cfg.separate:
            separator = load_separator(cfg.demucs_model, cfg.demucs_repo)
            defaults = data.DataConfig()  # the same stem mapping as data.py's default
            mono, _ = separate(separator, audio, rate, defaults.backing_sources,
                               defaults.solo_sources, device, numbers["sample_rate"])
        else:  # already a backing: mono at the codec's rate, as data.py prepares its stems
            mono = resample(channels(audio, 1), rate, numbers["sample_rate"])[0]
        if cfg.duration:  # cut the audio, not the codes: the encoder never sees the rest
            mono = mono[:int(cfg.duration * numbers["sample_rate"])]
        return encode_audio(codec, mono).astype(np.int64), mono, str(path), None
    # No file: a clip of the checkpoint's own dataset, with its true solo beside it (the
    # listening figures compare the generated solo with it). Validation clips first: the
    # model never trained on them.
    data_dir = config["data"]["dir"]
    meta = load_dataset(data_dir)
    segments = meta["splits"]["val"]["segments"] or meta["splits"]["train"]["segments"]
    if not 0 <= cfg.from_val < len(segments):
        raise SystemExit(f"--from-val {cfg.from_val}: the dataset "
                         f"{data_dir} has {len(segments)} validation clips")
    seg = segments[cfg.from_val]
    split = "val" if meta["splits"]["val"]["segments"] else "train"
    length = round(cfg.duration * numbers["frame_rate"]) if cfg.duration else seg["length"]
    end = seg["start"] + length
    codes, truth = (np.asarray(part[:, seg["start"]:min(end, seg["start"] + seg["length"])],
                               dtype=np.int64)
                    for part in load_split(data_dir, split))
    # Named as training was given it (config["train"]["data"], e.g. data/demo): the page
    # shows no absolute path of the machine the checkpoint was trained on.
    given = config.get("train", {}).get("data", Path(data_dir).name)
    source = f"{given} {split} clip {cfg.from_val} (song {seg['song']})"
    return codes, decode_codes(codec, codes), source, truth


def window_plan(T, W, stride):
    """The (start, end) frame ranges of the windows that cover T frames:
    [(0, W), (stride, stride + W), ...]."""
    plan = [(0, min(W, T))]
    # Each window overlaps the previous one by W - stride frames: that overlap is the
    # prompt it continues from (windowed_generate), so the solo has no seam.
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
    opts = dict(temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
                cfg_coef=cfg.guidance)
    solo = None
    for w, (start, end) in enumerate(window_plan(T, W, window_stride(cfg, frame_rate, W))):
        prompt = None if solo is None else solo[..., start:]                    # [B, K, W - stride]
        # A new seed per window: with the same seed, window w would redraw the random
        # numbers of window 0 and could echo its phrases.
        part = sample_solo(model, backing[..., start:end], seed=cfg.seed + w, prompt=prompt,
                           progress=progress, **opts)
        # [B, K, end]
        solo = part if prompt is None else torch.cat([solo, part[..., prompt.size(-1):]], dim=-1)
    return solo


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
    panels = ((axes[0], backing_audio, "backing"), (axes[1], solo_audio, "generated solo"))
    for ax, audio, title in panels:
        with np.errstate(divide="ignore"):  # a silent backing: log10(0) is -inf, drawn black
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
    atomic_write(png, lambda f: fig.savefig(f, format="png", dpi=90))
    plt.close(fig)


class CodecStream:
    """The codec on a stream, its state carried from chunk to chunk (StreamingEncoder and
    StreamingDecoder, the modules onnx_export.py traces): encode(audio chunk) -> codes,
    decode(new solo frames of N solos) -> their audio."""

    def __init__(self, codec, n_solos):
        device = next(codec.parameters()).device
        self.encoder, self.decoder = StreamingEncoder(codec), StreamingDecoder(codec)
        self.enc_state = self.encoder.seanet.initial_state(device)   # zeros: silence before
        self.dec_state = [self.decoder.seanet.initial_state(device) for _ in range(n_solos)]
        self.device = device

    @torch.no_grad()
    def encode(self, audio):
        """audio [n * hop] (numpy) -> codes [K, n] (on the codec's device)."""
        x = torch.from_numpy(np.ascontiguousarray(audio))[None, None].to(self.device)
        codes, *self.enc_state = self.encoder(x, *self.enc_state)
        return codes[0]

    @torch.no_grad()
    def decode(self, frames):
        """N solos' new frames [N, K, n] -> their audio, a list of N arrays [n * hop]."""
        out = []
        for i, codes in enumerate(frames.to(self.device)):
            audio, *self.dec_state[i] = self.decoder(codes[None], *self.dec_state[i])
            out.append(audio[0, 0].cpu().numpy())
        return out


def stream_report(frame_ms, codec_ms, delay_ms, chunk_ms, numbers, cfg, lookahead=0):
    """The streaming latencies: per frame, per chunk, and end to end (chunk + delay pattern +
    compute); and how late the solo lands behind the band frame it was written for, live:
    the delay less the model's lookahead (frames), never below 0 (an early solo waits)."""
    pct = lambda xs, q: float(np.percentile(xs, q)) if xs else float("nan")  # noqa: E731
    pattern_ms = (numbers["n_codebooks"] - 1) * 1e3 / numbers["frame_rate"]
    ahead_ms = lookahead * 1e3 / numbers["frame_rate"]
    late = [max(0.0, chunk_ms + pattern_ms + d - ahead_ms) for d in delay_ms]
    return {"transformer_frame_ms": {"median": pct(frame_ms, 50), "p99": pct(frame_ms, 99)},
            "codec_chunk_ms": {"median": pct(codec_ms, 50), "p99": pct(codec_ms, 99)},
            "compute_delay_ms": {"median": pct(delay_ms, 50), "p99": pct(delay_ms, 99)},
            "chunk_ms": chunk_ms, "delay_pattern_ms": pattern_ms,
            "end_to_end_delay_ms": {"median": chunk_ms + pattern_ms + pct(delay_ms, 50),
                                    "p99": chunk_ms + pattern_ms + pct(delay_ms, 99)},
            "lookahead_ms": ahead_ms, "late_ms": {"median": pct(late, 50), "p99": pct(late, 99)},
            "frame_budget_ms": 1e3 / numbers["frame_rate"], "solos": cfg.num_samples,
            "guidance": cfg.guidance}


def stream(model, codec, backing_audio, cfg, numbers):
    """Phase 5: feed the backing in chunks as if it arrived live.

    Returns (solo codes [N, K, T], the N solos' audio as decoded chunk by chunk, report),
    N = --num-samples: the solos are written side by side over the same live backing.

    Per chunk: the codec encodes it (carrying its state from the chunk before, so the
    codes are those of a whole-file encode), the transformer takes each new frame
    (encoder step, then decoder step), and the solo frames the delay pattern has
    completed are decoded to audio, the decoder too carrying its state.
    """
    # Latency has three parts. (1) The chunk: audio must arrive before it is encoded,
    # so a chunk of 80 ms adds up to 80 ms. (2) The delay pattern: codebook K-1 of frame
    # t is written at step t + K - 1, so a frame's audio is complete K - 1 frames (40 ms
    # at 75 Hz) after its backing. (3) Compute: codec encode, transformer, codec decode.
    # The report gives all three; real time needs (3) below the chunk's duration.
    hop, rate = numbers["hop"], numbers["sample_rate"]
    chunk = chunk_frames(cfg, numbers) * hop                                  # in samples
    n_frames = len(backing_audio) // hop
    if n_frames * hop < chunk:
        raise SystemExit(f"the backing is {len(backing_audio) / rate * 1e3:.0f} ms "
                         f"long, shorter than one chunk ({chunk / rate * 1e3:.0f} "
                         "ms): give a longer backing or a smaller --chunk-ms")
    backing_audio = backing_audio[:n_frames * hop]                                 # whole frames
    # The sampler holds the caches, on the model's device and in its dtype; each push()
    # is one encoder step and one decoder step for all N solos (and their null rows
    # when guidance is on).
    sampler = StreamingSampler(model, n_frames, batch=cfg.num_samples, temperature=cfg.temperature,
                               top_k=cfg.top_k,
                               top_p=cfg.top_p, seed=cfg.seed, cfg_coef=cfg.guidance)
    codec_stream = CodecStream(codec, cfg.num_samples)
    # A model with a lookahead has written its first frames before any backing arrived.
    solo_frames = [] if sampler.ahead is None else list(sampler.ahead.cpu().unbind(-1))
    audio_out, frame_ms, codec_ms, delay_ms, decoded = [], [], [], [], 0
    def decode_rest():
        return codec_stream.decode(torch.stack(solo_frames[decoded:], dim=-1))
    for start in tqdm(range(0, n_frames * hop, chunk), desc="stream", unit="chunk"):
        arrived = time.perf_counter()  # the chunk's last sample has just arrived
        t0 = time.perf_counter()
        new = codec_stream.encode(backing_audio[start:start + chunk])                # [K, n]
        codec_ms.append((time.perf_counter() - t0) * 1e3)
        for f in range(new.size(-1)):
            t1 = time.perf_counter()
            done = sampler.push(new[None, :, f])                                    # [N, K] or None
            frame_ms.append((time.perf_counter() - t1) * 1e3)
            if done is not None:
                solo_frames.append(done.cpu())
        # The chunk's compute ends when its completed solo frames are audio: that moment,
        # minus the chunk's arrival, is the compute delay reported below.
        if len(solo_frames) > decoded:  # decode what is complete, the decoder's state carried
            t2 = time.perf_counter()
            audio_out.append(decode_rest())
            codec_ms[-1] += (time.perf_counter() - t2) * 1e3
            decoded = len(solo_frames)
            delay_ms.append((time.perf_counter() - arrived) * 1e3)
    # the backing has ended: the last K - 1 frames (fewer, or none, with a lookahead)
    rest = sampler.finish()
    solo_frames.extend([] if rest is None else rest.cpu().unbind(-1))
    if len(solo_frames) > decoded:
        audio_out.append(decode_rest())
    solo = torch.stack(solo_frames, dim=-1)                                            # [N, K, T]
    report = stream_report(frame_ms, codec_ms, delay_ms, chunk / rate * 1e3, numbers, cfg,
                           model.cfg.lookahead)
    audio = [np.concatenate([part[i] for part in audio_out]) for i in range(cfg.num_samples)]
    return solo, audio, report


# ----------------------------------------------------------------------------
# main: settings checked, checkpoint and backing loaded, solos sampled, files written
# ----------------------------------------------------------------------------

def check_generate_settings(cfg):
    """One clear line for each setting that cannot work, before anything is loaded or written.

    The ranges are declared beside each default (GenerateConfig). Each bad value would
    otherwise run without a word and give nonsense: a negative temperature flips the
    distribution (the least likely code first), a top-p of 0 keeps no code at all, a
    negative guidance coefficient pushes the solo away from the band, a NaN one writes a
    solo of one code per codebook.
    """
    check_settings(cfg)


def output_names(cfg):
    """The files main() writes into --out."""
    names = ["solo.wav", "mix.wav", "backing.wav", "solo.png", "generation.json", "index.html"]
    if cfg.num_samples > 1:
        names += [f"{k}_{i}.{ext}" for i in range(cfg.num_samples)
                  for k, ext in (("solo", "wav"), ("mix", "wav"), ("solo", "png"))]
    if not cfg.backing:  # a dataset clip: its true solo is written beside the generated ones
        names += ["true_solo.wav", "true_mix.wav"]
    return names


def sample_tokens(model, codec, codes, backing_audio, cfg, numbers, device):
    """The solos' codes [N, K, T], offline (windowed) or streamed -> (codes, streamed audio or
    None, streaming report or None)."""
    if cfg.stream:
        return stream(model, codec, backing_audio[:codes.shape[1] * numbers["hop"]], cfg, numbers)
    # Several samples for one backing run as one batch: the same cost per step as one.
    backing = torch.from_numpy(codes)[None].repeat(cfg.num_samples, 1, 1).to(device)     # [B, K, T]
    # The progress bar counts decoder steps: each window of n frames takes n + K - 1 of
    # them (the delay pattern), and the windows of a long backing overlap.
    W = model.cfg.max_frames
    plan = window_plan(codes.shape[1], W, window_stride(cfg, numbers["frame_rate"], W))
    total_steps = sum(end - start + numbers["n_codebooks"] - 1 for start, end in plan)
    with tqdm(total=total_steps, desc="generate", unit="step") as bar:
        return windowed_generate(model, backing, cfg, numbers["frame_rate"],
                                 lambda: bar.update(1)), None, None


def write_takes(out, cfg, solos, solo, backing_audio, numbers):
    """solo.wav, mix.wav and solo.png of each take (solo_0.wav ... with several) -> the page's
    [(label, solo wav, mix wav, png)]. Written atomically, like everything else."""
    rate = numbers["sample_rate"]
    note = ("UNTRAINED codec: its decoder ignores the codes, so the "
            "spectrograms show nothing of what the model wrote;\nonly "
            "the tokens panel does (docs/codec.md)" if numbers["untrained"] else "")
    takes = []
    for i, s in enumerate(solos):
        mix, level = mix_audio(backing_audio, s)
        suffix = f"_{i}" if cfg.num_samples > 1 else ""
        names = (f"solo{suffix}.wav", f"mix{suffix}.wav", f"solo{suffix}.png")
        write_audio(out / names[0], level, rate)
        write_audio(out / names[1], mix, rate)
        plot(out / names[2], backing_audio[:len(s)], level, solo[i].cpu().numpy(), rate,
             numbers["frame_rate"], numbers["card"], note)
        takes.append((f"solo {i + 1} of {len(solos)}" if cfg.num_samples > 1 else "the solo",
                      *names))
        if i == 0 and cfg.num_samples > 1:  # the first sample also under the plain names
            for plain, name in zip(("solo.wav", "mix.wav", "solo.png"), names):
                copy = (out / name).read_bytes()
                atomic_write(out / plain, lambda f, copy=copy: f.write(copy))
    return takes


def main(cfg):
    """Generate and write everything; returns the path of generation.json.

    --out is checked before any work (a folder, writable, no take of its own replaced
    without --overwrite) and held by one generate.py at a time. The files are written to
    a hidden folder inside it and moved into place at the end: a failure or a Ctrl-C
    leaves the folder as it was, never half a take.
    """
    check_generate_settings(cfg)
    out = guard.output_folder(cfg.out)
    # Refuse before any work: a student's favourite take is never overwritten by accident.
    clash = [n for n in output_names(cfg) if (out / n).exists()]
    if clash and not cfg.overwrite:
        raise SystemExit(f"{out} already holds {', '.join(clash)}; "
                         "pass --overwrite or choose another --out")
    set_threads(cfg.threads)
    with guard.FolderLock(out, "generate.py"):
        return generate(cfg, out)


def generate(cfg, out):
    """main()'s work, in a locked --out: load, sample, write the take."""
    device = pick_device(cfg.device)
    # Checkpoint, then codec (checked against it), then the backing as tokens.
    folder = fetch_checkpoint(cfg.checkpoint)
    # --stream on a model that reads the whole backing at once cannot work: said from its
    # config.json, before the weights and the codec take seconds to load.
    if cfg.stream:
        require_causal(folder)
    model, config = load_model(folder, device)
    codec, numbers = load_codec_for(config, folder, cfg.encodec_weights, device)
    codes, backing_audio, source, truth = backing_tokens(cfg, config, codec, numbers, device)
    seconds = codes.shape[1] / numbers["frame_rate"]
    # 16-bit wavs of every file in output_names, and about a megabyte for each picture
    guard.output_folder(out, need_bytes=len(output_names(cfg)) * (2 * len(backing_audio) + 1e6))
    print(f"checkpoint {folder} (step {config['step']}), backing: {source}, {seconds:.1f} s")
    if numbers["untrained"]:
        print(f"NOTE: {UNTRAINED_AUDIO}; judge it by the token metrics (docs/codec.md)")
    peak = float(np.abs(backing_audio).max()) if len(backing_audio) else 0.0
    if peak < 1e-4:  # below -80 dBFS: nothing for the model to follow
        print(f"NOTE: the backing is silent (peak {peak:.1e}): the model hears no band, so "
              "the solo follows nothing; give a backing with music in it")
    t0 = time.perf_counter()
    solo, streamed_audio, report = sample_tokens(model, codec, codes, backing_audio, cfg,
                                                 numbers, device)
    token_s = time.perf_counter() - t0
    t1 = time.perf_counter()  # decoding is timed apart: it is the codec's cost, not the model's
    # Streaming already decoded its audio chunk by chunk, as a live listener would hear it.
    solos = streamed_audio or [decode_codes(codec, s.cpu().numpy()) for s in solo]
    decode_s = time.perf_counter() - t1
    # Real-time factor: seconds of audio per second of work; above 1 is faster than real time.
    result = {"settings": asdict(cfg), "command": command_line("generate.py", cfg),
              "checkpoint": str(folder), "step": config["step"], "backing": source,
              "seconds": seconds, "codec": numbers,
              "timings": {"tokens_s": token_s, "decode_s": decode_s,
                          "tokens_realtime_factor": seconds * cfg.num_samples / token_s,
                          "total_realtime_factor":
                              seconds * cfg.num_samples / (token_s + decode_s)},
              "solo_tokens": [token_stats(s.cpu().numpy(), numbers["card"]) for s in solo],
              "backing_tokens": token_stats(codes, numbers["card"]), "streaming": report,
              "true_solo_tokens": None if truth is None else token_stats(truth, numbers["card"])}
    with guard.staged(out) as stage:
        result["listening"] = listening_figures(cfg, config, model, codec, solo,
                                                min(codes.shape[1], model.cfg.max_frames),
                                                device, stage)
        write_take(stage, cfg, result, solos, solo, backing_audio, codec, truth, numbers)
    print_result(out, result)
    return out / "generation.json"


def write_take(stage, cfg, result, solos, solo, backing_audio, codec, truth, numbers):
    """Every file of the take into the folder `stage` (guard.staged moves them into --out)."""
    rate = numbers["sample_rate"]
    # Every wav goes through write_audio: finite, never past full scale, written
    # whole or not at all. The solo is level-matched to the backing (mix_audio), and the
    # backing limited like the two (a brickwalled master stays below full scale).
    write_audio(stage / "backing.wav", limited(backing_audio[:len(solos[0])]), rate)
    takes = write_takes(stage, cfg, solos, solo, backing_audio, numbers)
    # the recording's own solo over the same clip, decoded and levelled the same way
    if truth is not None:
        true_mix, true_level = mix_audio(backing_audio, decode_codes(codec, truth))
        write_audio(stage / "true_solo.wav", true_level, rate)
        write_audio(stage / "true_mix.wav", true_mix, rate)
    # generation.json first, then the page drawn from the same dict: the two never disagree.
    write_json(stage / "generation.json", result)
    true_files = None if truth is None else ("true_solo.wav", "true_mix.wav")
    generation_page(stage, result, takes, true_files)


def require_causal(folder):
    """--stream needs a causal checkpoint and a causal codec: checked from its config.json,
    before the weights load."""
    config = read_json(resolve_checkpoint(folder) / "config.json",
                       "a checkpoint folder written by train.py")
    require_causal_codec(config.get("data", {}).get("codec", {}), "--stream")
    if not config.get("model", {}).get("causal_encoder"):
        raise SystemExit(f"--stream needs a causal model: {folder} was "
                         "trained without --causal-encoder (train one with "
                         "python train.py --causal-encoder --attn-window 300)")


LISTENING_SOLOS = ("own", "mismatched", "true", "true_mismatched")


def print_result(out, result):
    """The closing lines: what was written, how fast, how it listens, and the streaming delays."""
    timings, fig, report = result["timings"], result["listening"], result["streaming"]
    print(f"wrote {out}/index.html (open it in a browser), solo.wav, mix.wav, "
          f"backing.wav, solo.png, generation.json: {result['seconds']:.1f} s "
          f"of audio; tokens {timings['tokens_realtime_factor']:.1f}x real "
          f"time, with decoding {timings['total_realtime_factor']:.1f}x")
    if fig and "kick_auc_own" in fig:
        print("listening (this clip's band; solo 1 / a solo written over another song's "
              "backing / the true lead / another song's true lead): kick AUC "
              + " / ".join(f"{fig['kick_auc_' + n]:.3f}" for n in LISTENING_SOLOS)
              + "; note-in-chord " + " / ".join(f"{fig['note_in_chord_' + n]:.3f}"
                                                for n in LISTENING_SOLOS)
              + f"; plays with the band: rhythm {fig['plays_with_band_rhythm']:.2f}, harmony "
              f"{fig['plays_with_band_harmony']:.2f} (1: as the real lead, 0: deaf)"
              + (f"; chord-tone fit {fig['chord_tone_fit']:.2f} vs "
                 f"{fig['chord_tone_fit_mismatched']:.2f}"
                 if "chord_tone_fit" in fig else ""))
    if fig and "audio" in fig:
        a = fig["audio"]
        print("listening from the decoded audio (sax/audio_probes.py; this clip's solo and "
              "another's, each over both bands, beside the true solos): plays with the band: "
              + ", ".join(f"{label} {a['plays_with_band_' + label]:.2f}"
                          for label in ("onsets", "beats", "pitch")))
    if report:
        frame = report["transformer_frame_ms"]
        print(f"streaming: transformer per frame median {frame['median']:.2f} ms, p99 "
              f"{frame['p99']:.2f} ms (budget {report['frame_budget_ms']:.1f} ms); codec per chunk "
              f"median {report['codec_chunk_ms']['median']:.1f} ms; end-to-end delay median "
              f"{report['end_to_end_delay_ms']['median']:.0f} ms; the model looks "
              f"{report['lookahead_ms']:.0f} ms ahead, so the solo lands "
              f"{report['late_ms']['median']:.0f} ms behind the band frame it was written for")


if __name__ == "__main__":
    guard.loaded()
    settings = parse_settings(GenerateConfig, description=__doc__.split("\n\n")[0])
    check_install(*(["demucs"] if settings.separate else []))
    try:
        with guard.one_line_errors("lower --num-samples, or give a shorter --duration"):
            main(settings)
    except KeyboardInterrupt:  # the take is moved into --out only once whole: nothing half-made
        raise SystemExit("\nstopped by Ctrl-C: nothing of this take was written; "
                         "--out is as it was") from None
    sys.exit(0)
