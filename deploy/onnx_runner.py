"""
onnx_runner.py -- phase 5 on the device: a saxophone solo over a backing that arrives
live, with ONNX Runtime and numpy only (no PyTorch).

    python deploy/onnx_export.py --checkpoint runs/causal/best --out solo_onnx   # on your computer
    # copy the folder solo_onnx/ to the board (it holds this file too); there:
    pip install numpy onnxruntime soundfile
    python solo_onnx/onnx_runner.py solo_onnx --backing trio.wav --out live

The backing file is played in as a live input would arrive: chunk by chunk, each one
only once the wall clock has reached its last sample (--no-pace: as fast as possible,
to measure throughput). Each chunk is encoded by the codec graph, each new frame goes
through the encoder step and the decoder step, a code is sampled per codebook with the
same inverse-CDF rule as model.sample_next, and the finished solo frames are decoded.
Writes solo.wav, mix.wav and report.json, and prints per-frame latency percentiles,
the end-to-end delay and the peak memory.

With a band, --live reads an input device and plays the solo on an output device
(pip install sounddevice; section 5), and writes what it heard and played:

    python solo_onnx/onnx_runner.py solo_onnx --live --input-device 1 --output-device 1

The step graphs come with three kinds of weights (--variant): int8 (the default), int4
(the fastest) and fp32. What int8 and int4 cost on your model, as validation loss:

    python solo_onnx/onnx_runner.py solo_onnx --loss data/demo    # the folder data.py wrote

--cfg-coef 3 samples with classifier-free guidance: each decoder step runs two rows at
once (the band's and the null condition's, sax.sampling.guided_logits), through the
export's decoder_step.cfg graphs; runner.json's cfg_coef is the default (none: off).

This is the deployment; the lesson is model.StreamingSampler, which does the same
steps in PyTorch (docs/phase5-streaming.md). tests/test_onnx.py holds the two equal.
"""
import argparse
import hashlib
import json
import math
import os
import resource
import sys
import time
from pathlib import Path

try:  # standard library only: copied beside this file into the export (onnx_export.py)
    import guard
except ModuleNotFoundError:  # run from the repository, where it lives in sax/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from sax import guard

guard.quiet_ctrl_c(__name__)  # a Ctrl-C while numpy and ONNX Runtime load: one line, exit 130

try:  # the board holds only these three packages: a missing one is one line, not a traceback
    import numpy as np
    import onnxruntime as ort
    import soundfile as sf
except ImportError as err:
    raise SystemExit(f"{err.name or err} does not import ({err}). On the "
                     "board: pip install numpy onnxruntime soundfile; "
                     "on a computer: pip install -r requirements.lock") from None

from sound_card import Live, open_sound_card  # noqa: E402 (beside this file: --live's two threads)

# runner.json's "format": 5 since the int8 and int4 variants decode with the LSTM in int8
# (4: guidance's null condition runs no encoder step; 3: the codec graphs carry their state)
FORMAT = 5
# The codec decoder of the int8 and int4 variants: its LSTM in int8
# (onnx_export.quantize_codec_decoder)
CODEC_DECODER_INT8 = "codec_decoder.int8.onnx"
STEP_GRAPHS = {"fp32": ("encoder_step.onnx", "decoder_step.onnx"),
               "int8": ("encoder_step.int8.onnx", "decoder_step.int8.onnx"),
               "int4": ("encoder_step.int4.onnx", "decoder_step.int4.onnx")}
CODEC_GRAPHS = {"fp32": ("codec_encoder.onnx", "codec_decoder.onnx"),
                "int8": ("codec_encoder.onnx", CODEC_DECODER_INT8),
                "int4": ("codec_encoder.onnx", CODEC_DECODER_INT8)}
# Guidance: the one-row encoder step, and the decoder step on two rows (onnx_export.GUIDED)
GUIDED_GRAPHS = {v: (encoder, decoder.replace("_step.", "_step.cfg."))
                 for v, (encoder, decoder) in STEP_GRAPHS.items()}


# ----------------------------------------------------------------------------
# 1. The exported folder
# ----------------------------------------------------------------------------

def sha256(path):
    """A file's SHA-256, as runner.json records it for each graph."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def numbers_digest(numbers):
    """The SHA-256 of runner.json's numbers (all but this digest itself), as the export
    records it: a hand-edited hop, width or lookahead would otherwise run silently wrong
    (the graphs were traced for the exported numbers)."""
    kept = {k: v for k, v in numbers.items() if k != "numbers_sha256"}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()


def read_folder(folder, variants=tuple(STEP_GRAPHS)):
    """runner.json of an exported folder, after checking its numbers and that every graph
    the given variants need (with the codec's) is the one it names. A folder trimmed to
    one variant (a board short of space) runs that variant."""
    folder = Path(folder)
    path = folder / "runner.json"
    try:
        numbers = json.loads(path.read_text())
    except FileNotFoundError:
        raise SystemExit(f"{path} not found: give a folder written by python "
                         f"onnx_export.py --checkpoint CAUSAL_CHECKPOINT --out {folder}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SystemExit(f"{path} is damaged ({err}): export the folder again") from None
    if numbers.get("format") != FORMAT:
        raise SystemExit(f"{path}: written for runner format {numbers.get('format')}, "
                         f"this runner reads format {FORMAT}: use the onnx_runner.py "
                         "inside that folder, or export the folder again")
    check_numbers(numbers, path)
    if "numbers_sha256" in numbers and numbers_digest(numbers) != numbers["numbers_sha256"]:
        raise SystemExit(f"{path} was edited: its numbers are not those the graphs were "
                         "exported with (the chunk is --chunk-ms's to choose): export the "
                         "folder again, or restore the file")
    names = [g for v in variants for g in CODEC_GRAPHS[v] + STEP_GRAPHS[v]]
    check_graphs_named(folder, numbers, list(dict.fromkeys(names)))
    return numbers


def check_graphs_named(folder, numbers, names):
    """Each graph of `names` is in the folder, and is the one runner.json names (SHA-256)."""
    path = folder / "runner.json"
    for name in names:
        digest = numbers["sha256"].get(name)
        if digest is None and name in sum(GUIDED_GRAPHS.values(), ()):
            raise SystemExit(f"{folder}: exported without guidance's graphs ({name}): "
                             "export the folder again, or run with --cfg-coef none")
        if digest is None or not (folder / name).exists():
            raise SystemExit(f"{folder / name} is missing: copy the whole exported "
                             "folder (or choose a --variant whose graphs are "
                             f"there: {', '.join(present_variants(folder)) or 'none'})")
        if sha256(folder / name) != digest:
            raise SystemExit(f"{folder / name} is not the graph {path} was written with (a file "
                             "from another export?): export the folder again, or copy it whole")


def present_variants(folder):
    """The variants whose step graphs and codec graphs are all in the folder."""
    return [v for v in STEP_GRAPHS
            if all((Path(folder) / g).exists() for g in STEP_GRAPHS[v] + CODEC_GRAPHS[v])]


def check_numbers(numbers, path):
    """runner.json's numbers: whole, positive (no window is null, lookahead may be 0), so that an
    edited file is one line here rather than an error deep inside ONNX Runtime."""
    wanted = ["n_codebooks", "card", "d_model", "n_heads", "head_dim", "n_enc_layers",
              "n_dec_layers",
              "sample_rate", "hop", "chunk_frames"]
    bad = [k for k in wanted if not (isinstance(numbers.get(k), int) and numbers[k] >= 1)]
    lookahead = numbers.get("lookahead", 0)  # folders exported before it look 0 frames ahead
    bad += [] if isinstance(lookahead, int) and lookahead >= 0 else ["lookahead"]
    window = numbers.get("attn_window")
    bad += [] if window is None or (isinstance(window, int) and window >= 1) else ["attn_window"]
    bad += [] if isinstance(numbers.get("frame_rate"),
                            (int, float)) and numbers["frame_rate"] > 0 else ["frame_rate"]
    if bad or not isinstance(numbers.get("sha256"), dict):
        raise SystemExit(f"{path}: {', '.join(bad) or 'sha256'} missing or not a valid "
                         "number (was the file edited?): export the folder again")
    if numbers.get("codec_causal", True) is not True:  # onnx_export.py refuses to write one
        raise SystemExit(f"{path}: its codec looks ahead (not causal), so it cannot stream: "
                         "export a model trained on the causal codec (data.py --codec "
                         "encodec_24khz)")


def session(path, threads):
    """An ONNX Runtime session on the CPU with `threads` threads for each operator."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # One fusion left out: it folds attention's 1/sqrt(hd) into the matmul that scores
    # the ring (FusedMatMul), whose kernel took about twice as long as the plain MatMul
    # plus a separate scaling, measured on this graph (docs/phase5-streaming.md).
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"],
                                disabled_optimizers=["MatMulScaleFusion"])


# ----------------------------------------------------------------------------
# 2. The transformer's streaming steps
# ----------------------------------------------------------------------------

class Ring:
    """Keys and values of the past positions of every layer: position p lives in slot
    p % C (model.KVCache, as numpy arrays the graphs read).

    Keys and values [layers, rows, H, C, hd], as KVCache lays them out. The graphs
    return each step's keys and values; write() stores them here.
    """

    def __init__(self, prefix, layers, rows, heads, capacity, head_dim):
        self.k = np.zeros((layers, rows, heads, capacity, head_dim), np.float32)
        self.v = np.zeros_like(self.k)
        self.held = np.full(capacity, -1)  # the position each slot holds (-1: none yet)
        # The graphs' inputs: one per layer and kind (enc_k0, enc_v0, ...), views of the
        # arrays above, so that ONNX Runtime reads the ring where it lies.
        self.inputs = {f"{prefix}_{kv}{i}": ring[i] for i in range(layers)
                       for kv, ring in (("k", self.k), ("v", self.v))}

    def bias(self, now, window):
        """[C]: 0 for the slots a query at position `now` may attend to (filled, and within
        the window: p > now - window), -inf for the others. The slot `now` is about to
        overwrite fails the second test, so the graph sees exactly the last `window`
        positions."""
        seen = self.held >= 0
        if window:
            seen &= self.held > now - window
        return np.where(seen, np.float32(0), np.float32(-np.inf))

    def write(self, position, k, v):
        """k, v: per layer, position's keys and values [rows, H, 1, hd], as a step graph returns
        them."""
        slot = position % self.held.size
        for i in range(len(k)):
            self.k[i, :, :, slot], self.v[i, :, :, slot] = k[i][:, :, 0], v[i][:, :, 0]
        self.held[slot] = position


def sample(logits, temperature, top_k, u):
    """logits [rows, K, card] -> codes [rows, K], the rule of model.sample_next.

    u [rows, K]: one uniform number in [0, 1) per code. Greedy when temperature is 0.
    """
    if temperature == 0:
        return logits.argmax(axis=-1)
    z = logits / np.float32(temperature)
    if 0 < top_k < z.shape[-1]:
        # the k-th largest, [rows, K, 1]
        kth = np.partition(z, -top_k, axis=-1)[..., -top_k:-top_k + 1]
        z = np.where(z < kth, -np.inf, z)                               # exp(-inf) = 0: never drawn
    p = np.exp(z - z.max(axis=-1, keepdims=True))
    cdf = np.cumsum(p / p.sum(axis=-1, keepdims=True), axis=-1)           # [rows, K, card]
    # The first code whose cumulative probability exceeds u (searchsorted, right side).
    code = (cdf <= (u * cdf[..., -1])[..., None]).sum(axis=-1)
    return np.minimum(code, z.shape[-1] - 1)


class SoloStream:
    """push(backing frame [K]) -> the solo frame [K] the delay pattern has just finished,
    or None for the first K - 1 frames; finish() -> the last K - 1 frames. With a
    lookahead of L frames, the first L - K + 1 solo frames are in `ahead` before any
    push, and finish() gives max(0, K - 1 - L).

    model.StreamingSampler's steps, one solo, with guidance or without (cfg_coef): the same
    tokens (tested).
    uniform(shape): the draws for sampling (default: numpy's generator seeded by `seed`).
    """

    def __init__(self, folder, numbers, n_frames, variant="int8", threads=1, temperature=1.0,
                 top_k=250, seed=0, uniform=None, look_ahead=True, cfg_coef=None):
        # Guidance: row 0 hears the band, row 1 the null condition (nothing), in one
        # decoder call; the encoder runs the band's row alone (hear_nothing says why).
        self.cfg_coef, rows = cfg_coef, 1 if cfg_coef is None else 2
        encoder, decoder = (STEP_GRAPHS if cfg_coef is None else GUIDED_GRAPHS)[variant]
        self.encoder, self.decoder = session(Path(folder) / encoder,
                                             threads), session(Path(folder) / decoder, threads)
        self.check_graphs(numbers, folder)
        K, D = numbers["n_codebooks"], numbers["d_model"]
        self.K, self.card, self.n_frames = K, numbers["card"], n_frames
        self.window = numbers["attn_window"]
        self.temperature, self.top_k = temperature, top_k
        rng = np.random.default_rng(seed)
        self.uniform = uniform or (lambda shape: rng.random(shape, dtype=np.float32))
        self.lookahead = numbers.get("lookahead", 0)
        # A windowed model needs only `window` slots; without a window, room for every step.
        slots = self.window or n_frames + K - 1 + self.lookahead
        def ring(prefix, layers, rows=1):
            return Ring(prefix, numbers[layers], rows, numbers["n_heads"], slots,
                        numbers["head_dim"])
        self.enc_ring, self.self_ring = ring("enc", "n_enc_layers"), ring("self", "n_dec_layers",
                                                                            rows)
        self.cross_ring = ring("cross", "n_dec_layers")       # the backing frames' keys and values
        # encoder states of the last K frames, oldest first
        self.recent = np.zeros((rows, K, D), np.float32)
        self.tokens = np.full((1, K), self.card, np.int64)  # the start token
        if cfg_coef is not None:
            self.null_state, self.null_values = self.hear_nothing(numbers)
        self.columns = []                                   # the last K delayed columns written
        self.n_backing = self.step = 0
        # no `recent` without the aligned path
        self.wants = {i.name for i in self.decoder.get_inputs()}
        # A model that looks L frames ahead hears L frames of "nothing" (the special
        # token) before the band: the solo frames they finish wait in `ahead`
        # (model.StreamingSampler does the same).
        # (look_ahead=False leaves those steps to the caller: teacher_forced_ce.)
        silence = np.full(K, self.card, np.int64)
        self.ahead = [f for f in (self.step_with(silence)
                                  for _ in range(self.lookahead if look_ahead else 0))
                      if f is not None]

    def check_graphs(self, numbers, folder):
        """The step graphs' cache inputs against runner.json: layers, heads, head width."""
        steps = ((self.encoder, "enc", "n_enc_layers"), (self.decoder, "self", "n_dec_layers"))
        for graph, prefix, layers in steps:
            shapes = {i.name: i.shape for i in graph.get_inputs()}
            found = [sum(f"{prefix}_k{i}" in shapes for i in range(len(shapes))),
                     *shapes[f"{prefix}_k0"][1:]]
            # layers, heads, ring slots (the window; a name when the ring grows), head width
            want = [numbers[layers], numbers["n_heads"], numbers["attn_window"] or found[2],
                    numbers["head_dim"]]
            if found != want:
                raise SystemExit(f"{folder}: a step graph has rings for layers, "
                                 f"heads, slots, head width {found}, runner.json says "
                                 f"{want} (was it edited?): export the folder again")
        shapes = {i.name: i.shape for i in self.decoder.get_inputs()}
        found = [shapes["tokens"][-1], self.decoder.get_outputs()[0].shape[-1]]
        want = [numbers["n_codebooks"], numbers["card"]]
        if "recent" in shapes:
            found, want = found + [shapes["recent"][-1]], want + [numbers["d_model"]]
        if found != want:
            raise SystemExit(f"{folder}: the decoder step writes codebooks, codes, width "
                             f"{found}, runner.json says {want} (was it edited?): export the "
                             "folder again")

    def hear_nothing(self, numbers):
        """Guidance's null condition, heard once -> (its encoder state [1, 1, D], its
        cross-attention values per decoder layer [L_dec, 1, 1, D]).

        Its backing is the special token at every frame, and then every encoder layer
        gives the same output at every position (onnx_export.GuidedDecoderStep says why):
        the encoder step at position 0, over empty rings, gives it.
        """
        frame = np.full((1, self.K), self.card, np.int64)
        *_, cross, state = self.encoder.run(None, {
            "frame": frame, "position": np.array([0]),
            "enc_bias": self.enc_ring.bias(0, self.window), **self.enc_ring.inputs})
        # cross [L_dec, 2 (keys, values), H, 1, hd]: the values, heads side by side
        return state, cross[:, 1].reshape(numbers["n_dec_layers"], 1, 1, numbers["d_model"])

    def encoder_step(self, frame):
        t = self.n_backing
        # new: k0, v0, k1, v1, ...; cross [L_dec, 2, H, 1, hd]
        *new, cross, state = self.encoder.run(None, {
            "frame": frame[None].astype(np.int64), "position": np.array([t]),
            "enc_bias": self.enc_ring.bias(t, self.window), **self.enc_ring.inputs})
        self.enc_ring.write(t, new[::2], new[1::2])
        self.cross_ring.write(t, cross[:, 0, None], cross[:, 1, None])
        if self.cfg_coef is not None:  # the null condition's row: its one state, every frame
            state = np.concatenate([state, self.null_state])
        self.recent = np.concatenate([self.recent[:, 1:], state], axis=1)
        self.n_backing += 1

    def next_logits(self):
        """The decoder step for self.tokens, the previous step's codes -> logits [1, K, card]
        (with guidance: sax.sampling.guided_logits of the two rows, in the same order)."""
        s = self.step
        # the backing has ended: zeros enter the aligned window, as in training
        if s >= self.n_backing:
            zeros = np.zeros_like(self.recent[:, :1])
            self.recent = np.concatenate([self.recent[:, 1:], zeros], axis=1)
        tokens, null = ((self.tokens, {}) if self.cfg_coef is None else
                        (np.repeat(self.tokens, 2, axis=0), {"null": self.null_values}))
        feed = {"tokens": tokens, "position": np.array([s]), "recent": self.recent, **null,
                "self_bias": self.self_ring.bias(s, self.window),
                "cross_bias": self.cross_ring.bias(s, self.window),
                **self.self_ring.inputs, **self.cross_ring.inputs}
        logits, *new = self.decoder.run(None,
                                        {name: x for name, x in feed.items() if name in self.wants})
        self.self_ring.write(s, new[::2], new[1::2])
        self.step += 1
        if self.cfg_coef is not None:  # cond + (coef - 1) * (cond - uncond), in float32
            cond, uncond = logits[:1], logits[1:]
            logits = cond + np.float32(self.cfg_coef - 1.0) * (cond - uncond)
        return logits

    def decoder_step(self):
        s = self.step
        # [1, K]
        codes = sample(self.next_logits(), self.temperature, self.top_k, self.uniform((1, self.K)))
        # The delay pattern: codebook k writes frame s - k, and only frames 0 .. n_frames - 1.
        frame = s - np.arange(self.K)
        self.tokens = np.where((frame >= 0) & (frame < self.n_frames), codes, self.card)
        self.columns = (self.columns + [self.tokens[0]])[-self.K:]
        if s < self.K - 1:
            return None
        return np.array([self.columns[k][k] for k in range(self.K)])  # frame s - K + 1, complete

    def step_with(self, frame):
        """One backing frame in, one decoder step (when any is left) -> a finished frame or None."""
        if self.step >= self.n_frames + self.K - 1:
            return None  # looking ahead, every frame is written already
        self.encoder_step(frame)
        return self.decoder_step()

    def push(self, frame):
        if self.n_backing - self.lookahead >= self.n_frames:
            raise ValueError(f"all {self.n_frames} frames have been pushed")
        return self.step_with(frame)

    def finish(self):
        rest = [self.decoder_step() for _ in range(self.n_frames + self.K - 1 - self.step)]
        return [r for r in rest if r is not None]


def teacher_forced_ce(stream, backing, solo):
    """Mean cross-entropy (nats) of the step graphs on a known solo: backing, solo codes [K, T].

    The decoder reads the true previous codes instead of its own samples (teacher
    forcing, as in training): what int8 weights cost, measured on the validation set.
    """
    K, T = solo.shape
    # the delay pattern: codebook k is late by k steps
    target = np.full((K, T + K - 1), stream.card)
    for k in range(K):
        target[k, k:k + T] = solo[k]
    # What the model hears: L frames of nothing first when it looks L frames ahead (the
    # stream must be built with look_ahead=False, so that no step has run yet).
    heard = np.concatenate([np.full((K, stream.lookahead), stream.card), backing], axis=1)
    nll = []
    for s in range(T + K - 1):
        if s < heard.shape[1]:
            stream.encoder_step(heard[:, s])
        stream.tokens = target[None, :, s - 1] if s else np.full((1, K), stream.card)
        z = stream.next_logits()[0].astype(np.float64)                               # [K, card]
        log_p = z - z.max(axis=-1, keepdims=True)
        log_p -= np.log(np.exp(log_p).sum(axis=-1, keepdims=True))
        nll += [-log_p[k, target[k, s]] for k in range(K) if target[k, s] != stream.card]
    return float(np.mean(nll))


# ----------------------------------------------------------------------------
# 3. The codec, in fixed windows
# ----------------------------------------------------------------------------

class Codec:
    """EnCodec's two graphs, each with the state it carries from one call to the next
    (data.StreamingEncoder, StreamingDecoder): encode a chunk of audio, decode new frames.
    Any number of frames per call; the audio and the frames must come in order, once."""

    def __init__(self, folder, numbers, threads=1, graphs=None, variant="fp32"):
        graphs = graphs or CODEC_GRAPHS[variant]  # int8 and int4: the decoder's LSTM in int8
        self.encoder, self.decoder = (session(Path(folder) / g, threads) for g in graphs)
        self.hop = numbers["hop"]
        # Zeros to begin with: silence before the music (the state's shapes are fixed).
        self.state = {graph: [np.zeros(i.shape, np.float32) for i in graph.get_inputs()[1:]]
                      for graph in (self.encoder, self.decoder)}
        # the inputs' names, read once here rather than at every chunk
        self.names = {graph: [i.name for i in graph.get_inputs()]
                      for graph in (self.encoder, self.decoder)}
        self.check(numbers, folder)

    def check(self, numbers, folder):
        """One hop of silence through the encoder (its state then thrown away): one frame of
        n_codebooks codes, or runner.json's hop or codebooks are not the graph's."""
        feed = dict(zip(self.names[self.encoder],
                        [np.zeros((1, 1, self.hop), np.float32), *self.state[self.encoder]]))
        try:
            shape = list(self.encoder.run(None, feed)[0].shape[-2:])
        except Exception as err:  # ONNX Runtime's own error: a length the graph cannot take
            shape = [f"none ({str(err).splitlines()[0][:80]})"]
        if shape != [numbers["n_codebooks"], 1]:
            raise SystemExit(f"{folder}: one hop of {self.hop} samples gives codes of shape "
                             f"{shape}, not one frame of {numbers['n_codebooks']} codebooks "
                             "(was runner.json edited?): export the folder again")

    def run(self, graph, x):
        feed = dict(zip(self.names[graph], [x, *self.state[graph]]))
        out, *self.state[graph] = graph.run(None, feed)
        return out

    def encode(self, audio):
        """audio [n * hop] -> codes [K, n]."""
        return self.run(self.encoder, audio[None, None].astype(np.float32))[0]

    def decode_new(self, frames, done):
        """Audio of frames[done:] (solo frames [K] each, in order), [len(frames[done:]) * hop]."""
        if done >= len(frames):
            return np.zeros(0, np.float32)
        codes = np.stack(frames[done:], axis=-1)[None].astype(np.int64)       # [1, K, n]
        return self.run(self.decoder, codes)[0, 0]


# ----------------------------------------------------------------------------
# 4. Following a backing in real time
# ----------------------------------------------------------------------------

def read_backing(path, numbers):
    """A mono float32 backing at the codec's rate, or one line saying what to do."""
    if Path(path).is_dir():
        raise SystemExit(f"--backing {path} is a folder: give one WAV or FLAC file")
    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)    # [N, channels]
    except Exception as err:
        raise SystemExit(f"--backing {path}: cannot read it ({err}); "
                         "give a WAV or FLAC file") from None
    if rate != numbers["sample_rate"]:
        raise SystemExit(f"--backing {path}: {rate} Hz, the codec needs "
                         f"{numbers['sample_rate']} Hz; convert it first, e.g. ffmpeg "
                         f"-i {path} -ac 1 -ar {numbers['sample_rate']} backing_24k.wav")
    promised = wav_header_frames(path)
    if promised > len(audio) + 1:
        print(f"WARNING: {path}: its header promises {promised / rate:.1f} "
              f"s, the file holds {len(audio) / rate:.1f} s (a copy cut "
              f"short?): using the {len(audio) / rate:.1f} s it holds")
    if audio.shape[1] > 1:
        print(f"{path}: {audio.shape[1]} channels, mixed down to mono (their mean)")
    audio = audio.mean(axis=1)
    # The same guards as data.load_audio (this file stands alone on the board): a NaN
    # would reach every solo frame, and a sample of 1e6 would set the level the solo is
    # matched to, so the solo would come out at full scale.
    bad = ~np.isfinite(audio)
    if bad.any():
        raise SystemExit(f"--backing {path}: {int(bad.sum())} samples are not finite "
                         f"(NaN or inf), the first at {np.argmax(bad) / rate:.3f} s: "
                         "the file is damaged; export it again")
    over = np.abs(audio) > 1.0
    if over.mean() > 0.01:  # written unnormalised (data.tame_level's rule): scaled as a whole
        factor = 0.98 / float(np.percentile(np.abs(audio), 99.9))
        print(f"WARNING: {path}: {over.mean():.1%} of its samples past full scale (peak "
              f"{np.abs(audio).max():.3g}): a file written unnormalised; scaled down as a "
              f"whole by {factor:.3g}")
        audio = np.clip(audio * np.float32(factor), -1.0, 1.0)
    elif over.any():
        print(f"WARNING: {path}: {int(over.sum())} samples past full scale (peak "
              f"{np.abs(audio).max():.3g}, the first at {np.argmax(over) / rate:.3f} "
              "s): clipped to +-1 so that they cannot set the level")
        audio = np.clip(audio, -1.0, 1.0)
    chunk = numbers["chunk_frames"] * numbers["hop"]
    if len(audio) < chunk:
        raise SystemExit(f"--backing {path}: {len(audio) / rate * 1e3:.0f} ms, shorter "
                         f"than one chunk ({chunk / rate * 1e3:.0f} ms): give a longer "
                         "backing or a smaller --chunk-ms")
    return audio


def wav_header_frames(path):
    """The frames a WAV file's header promises (0 when not a WAV, or its length is unknown):
    soundfile reports what the file holds, so a copy cut short is seen only here."""
    with open(path, "rb") as f:
        head = f.read(4096)
    at, fmt = head.find(b"data"), head.find(b"fmt ")
    if head[:4] != b"RIFF" or at < 0 or fmt < 0 or head[at + 4:at + 8] == b"\xff" * 4:
        return 0
    channels = int.from_bytes(head[fmt + 10:fmt + 12], "little")
    bits = int.from_bytes(head[fmt + 22:fmt + 24], "little")              # per sample
    frame_bytes = channels * bits // 8
    return int.from_bytes(head[at + 4:at + 8], "little") // max(1, frame_bytes)


def follow(stream, codec, backing, numbers, pace=True):
    """Feed the backing chunk by chunk -> (solo frames [K, T], solo audio, timings in ms, whether
    Ctrl-C stopped it). Ctrl-C ends the loop at once, keeping the audio decoded so far."""
    hop = numbers["hop"]
    whole = backing[:len(backing) // hop * hop]  # whole frames
    # a model that looks ahead has finished its first frames before the first chunk
    frames, audio = list(stream.ahead), []
    # ready: when each solo frame was decoded, in seconds from the band's first sample;
    # heard: the band's codes as the codec graph made them (take.npz keeps both)
    ms = {"frame": [], "codec": [], "delay": [], "ready": [0.0] * len(frames), "heard": []}
    try:
        decoded = chunks(stream, codec, whole, numbers, pace, frames, audio, ms)
    except KeyboardInterrupt:  # a live take stopped by hand: what was played is kept
        none = np.zeros((numbers["n_codebooks"], 0), np.int64)
        done = np.stack(frames, axis=-1) if frames else none
        return done, np.concatenate(audio) if audio else np.zeros(0, np.float32), ms, True
    frames += stream.finish()
    audio.append(codec.decode_new(frames, decoded))
    ms["ready"] += [time.perf_counter() - ms["began"]] * (len(frames) - len(ms["ready"]))
    return np.stack(frames, axis=-1), np.concatenate(audio), ms, False


def chunks(stream, codec, backing, numbers, pace, frames, audio, ms):
    """follow()'s loop over the chunks -> how many solo frames are decoded. It appends to the
    lists it is given as it goes, so that an interrupted take keeps every finished chunk."""
    hop, rate, chunk_frames = numbers["hop"], numbers["sample_rate"], numbers["chunk_frames"]
    chunk, n_samples = chunk_frames * hop, len(backing)
    decoded = 0
    began = ms["began"] = time.perf_counter()
    for start in range(0, n_samples, chunk):
        end = min(start + chunk, n_samples)
        if pace:  # a live input: this chunk exists only once the clock has reached its last sample
            arrived = began + end / rate
            time.sleep(max(0.0, arrived - time.perf_counter()))
        else:
            arrived = time.perf_counter()
        t0 = time.perf_counter()
        new = codec.encode(backing[start:end])                                       # [K, n]
        ms["codec"].append((time.perf_counter() - t0) * 1e3)
        ms["heard"].append(new)
        for f in range(new.shape[1]):
            t1 = time.perf_counter()
            done = stream.push(new[:, f])
            ms["frame"].append((time.perf_counter() - t1) * 1e3)
            if done is not None:
                frames.append(done)
        if len(frames) > decoded:
            t2 = time.perf_counter()
            audio.append(codec.decode_new(frames, decoded))
            ms["codec"][-1] += (time.perf_counter() - t2) * 1e3
            decoded = len(frames)
            ms["delay"].append((time.perf_counter() - arrived) * 1e3)
            ms["ready"] += [time.perf_counter() - began] * (decoded - len(ms["ready"]))
    return decoded


def mix(backing, solo):
    """Solo level-matched to the backing (equal RMS, means removed, at most +40 dB), summed;
    each scaled down, never clipped, to a peak of at most 0.98 (listening.mix_audio's rule)."""
    n = min(len(backing), len(solo))
    b, s = backing[:n] - backing[:n].mean(), solo[:n] - solo[:n].mean()
    gain = (np.sqrt(np.mean(b ** 2)) + 1e-9) / (np.sqrt(np.mean(s ** 2)) + 1e-9) if n else 1.0
    s = s * min(gain, 100.0)
    return limited(b + s), limited(s)


def limited(x, ceiling=0.98):
    """x scaled down, never clipped, to a peak of at most `ceiling` (listening.limited)."""
    peak = float(np.abs(x).max()) if len(x) else 0.0
    return (x * min(1.0, ceiling / max(peak, 1e-9))).astype(np.float32)


def peak_memory_mb():
    """This process's peak resident memory. Linux's VmHWM counts from the program's start;
    ru_maxrss (elsewhere) may include what a parent process held before starting it."""
    try:
        line = next(x for x in Path("/proc/self/status").read_text().splitlines()
                    if x.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_atomic(path, write):
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_wav(path, audio, rate):
    """A WAV file, atomically, once its samples are checked: finite and at most full scale
    (data.write_audio's check; a NaN or a clipped sample reaches the listener at full level)."""
    if not np.isfinite(audio).all():
        raise SystemExit(f"not writing {path}: some samples are not "
                         "finite (a bug, please report it)")
    peak = float(np.abs(audio).max()) if len(audio) else 0.0
    if peak > 1.0:
        print(f"WARNING: {path}: peak {peak:.3g}, past full scale: scaled down to 0.98")
        audio = audio * np.float32(0.98 / peak)
    write_atomic(path, lambda p: sf.write(p, audio, rate, format="WAV"))


# ----------------------------------------------------------------------------
# 5. Live: a sound card in, a sound card out (the ring buffers and the two threads are in
# sound_card.py, beside this file)
# ----------------------------------------------------------------------------

def live(args, numbers, out, open_stream=open_sound_card):
    """--live: follow the band through the input device; writes what was heard and played."""
    rate = numbers["sample_rate"]
    block = max(1, round(args.block_ms / 1e3 * rate))
    n_frames = int(args.seconds * numbers["frame_rate"]) + numbers["chunk_frames"]
    args.cfg_coef = chosen_guidance(args, numbers)
    if numbers["attn_window"] is None:
        print("note: this model has no attention window, so its caches grow with the take "
              "(export one trained with --attn-window for long sets)")
    solo_stream = SoloStream(args.folder, numbers, n_frames, args.variant, args.threads,
                             args.temperature, args.top_k, args.seed, cfg_coef=args.cfg_coef)
    codec = Codec(args.folder, numbers, args.threads, variant=args.variant)
    # The session exists before the stream opens: the card may call back at once.
    session = Live(None, codec, numbers, args.seconds, block, args.play_mix, args.prime_ms)
    session.stream = open_stream(session.callback, rate, block,
                                 (args.input_device, args.output_device))
    out.mkdir(parents=True, exist_ok=True)  # only once the card is open: a failure leaves nothing
    print(f"live: {rate} Hz, blocks of {block} samples, {args.variant} graphs; "
          f"playing {'the mix' if args.play_mix else 'the solo'}; Ctrl-C stops")
    why = session.run(solo_stream)
    # The card's thread may be inside a callback still (heard appended, played not yet):
    # keep the blocks both lists hold, so that the files line up sample for sample.
    blocks = min(len(session.heard), len(session.played))
    heard = np.concatenate(session.heard[:blocks]) if blocks else np.zeros(0, np.float32)
    played = np.concatenate(session.played[:blocks]) if blocks else np.zeros(0, np.float32)
    write_wav(out / "backing.wav", limited(heard), rate)
    write_wav(out / "solo.wav", played, rate)
    write_wav(out / "mix.wav", mix(heard, played)[0] if len(played) else played, rate)
    write_live_take(out / "take.npz", session, numbers)
    pct = lambda xs, q: float(np.percentile(xs, q)) if xs else float("nan")  # noqa: E731
    report = {"live": True, "stopped_by": why, "seconds": len(heard) / rate, "block": block,
              "variant": args.variant, "cfg_coef": args.cfg_coef, **session.counts,
              "delay_ms": {"p50": pct(session.delay_ms, 50), "p99": pct(session.delay_ms, 99)},
              "lookahead_ms": solo_stream.lookahead * 1e3 / numbers["frame_rate"],
              "late_ms": {"p50": pct(session.late_ms, 50), "p99": pct(session.late_ms, 99)},
              "solo_frames_dropped_at_start": session.skipped,
              "output_queue_ms": {"p50": pct(session.queued_ms, 50)}}
    write_atomic(out / "report.json", lambda p: Path(p).write_text(json.dumps(report, indent=2)))
    print(f"stopped ({why}) after {report['seconds']:.1f} s: underruns {report['underruns']}, "
          f"overruns {report['overruns']} ({report['dropped_input_ms']:.0f} ms of input "
          f"dropped), sound card flags {report['card_flags']}; delay "
          f"p50 {report['delay_ms']['p50']:.0f} ms, p99 {report['delay_ms']['p99']:.0f} ms "
          f"behind the band heard; looking {report['lookahead_ms']:.0f} ms ahead, the solo "
          f"lands {report['late_ms']['p50']:.0f} ms (p50) behind the band frame it was "
          f"written for; wrote {out}/backing.wav, solo.wav, mix.wav, report.json, take.npz")
    if why == "Ctrl-C":
        raise SystemExit(130)
    return report


def variant_losses(folder, numbers, data_dir, clips=4, frames=300):
    """Teacher-forced cross-entropy of every variant on `clips` clips of `frames` frames
    spread over data_dir's validation split (data.py's val_backing.npy, val_solo.npy)
    -> {variant: nats}. The same clips for every variant, so the differences are what
    fewer bits per weight cost on this model."""
    split = []
    for name in ("val_backing.npy", "val_solo.npy"):
        path = data_dir / name
        try:
            split.append(np.load(path, mmap_mode="r"))
        except (OSError, ValueError) as e:
            raise SystemExit(f"{path}: cannot read it ({e}); --loss wants the folder data.py wrote "
                             f"(val_backing.npy, val_solo.npy)") from None
    backing, solo = split
    if backing.shape != solo.shape or backing.shape[0] != numbers["n_codebooks"]:
        raise SystemExit(f"{data_dir}: validation codes of shape {backing.shape} and "
                         f"{solo.shape}, the graphs want [{numbers['n_codebooks']}, "
                         "frames] each: a dataset of another codec?")
    frames = min(frames, backing.shape[1])
    starts = np.linspace(0, backing.shape[1] - frames, clips).astype(int)
    losses = {}
    for variant in present_variants(folder):  # fp32 first: the others are measured against it
        losses[variant] = float(np.mean([
            teacher_forced_ce(SoloStream(folder, numbers, frames, variant, look_ahead=False),
                              backing[:, s:s + frames].astype(np.int64),
                              solo[:, s:s + frames].astype(np.int64)) for s in starts]))
        against = (f"{losses[variant] - losses['fp32']:+.4f} against fp32" if "fp32" in losses
                   else "no fp32 graphs")
        print(f"{variant}: {losses[variant]:.4f} nats ({against}), "
              f"{clips} validation clips of {frames} frames")
    return losses


FROM_EXPORT = object()  # --cfg-coef not given: runner.json's cfg_coef


def chosen_guidance(args, numbers):
    """--cfg-coef, or the export's guidance (runner.json's cfg_coef; off when it names none)."""
    return numbers.get("cfg_coef") if args.cfg_coef is FROM_EXPORT else args.cfg_coef


def coef_or_none(text):
    """--cfg-coef: 'none' (off) or a guidance coefficient in [0, 100]."""
    return None if text.lower() == "none" else at_least(0.0, float, 100.0)(text)


def at_least(low, kind, high=None):
    """An argparse type: a finite number of `kind`, at least `low` (and at most `high`), or
    one line saying so (settings.opt's ranges, for a runner that stands alone)."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{value} is not a finite number")
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{value} is not within [{low}, {high}]"
                                             if high is not None else f"{value} is below {low}")
        return value
    return parse


def arguments(argv):
    parser = argparse.ArgumentParser(description="Phase 5 on the device: a solo over "
                                                 "a live backing, ONNX Runtime only.")
    parser.add_argument("folder", help="the folder written by python deploy/onnx_export.py")
    parser.add_argument("--backing", help="backing track: WAV or FLAC at the codec's rate (24 kHz)")
    parser.add_argument("--out", default="live",
                        help="output folder for solo.wav, mix.wav, report.json, take.npz")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace solo.wav, mix.wav, report.json, take.npz in --out")
    parser.add_argument("--variant", choices=list(STEP_GRAPHS), default="int8",
                        help="the step graphs' weights: int8 (default), int4 "
                             "(fastest, about 0.01 nats of loss) or fp32; a "
                             "folder holding one variant's graphs runs that one")
    parser.add_argument("--threads", type=at_least(1, int, 1024), default=1,
                        help="ONNX Runtime threads per operator "
                        "(at least 1; default 1)")
    parser.add_argument("--temperature", type=at_least(0.0, float, 100.0), default=1.0,
                        help="sampling temperature (0: greedy; at least 0)")
    parser.add_argument("--top-k", type=at_least(0, int), default=250,
                        help="sample among the k most likely codes (0: all; at least 0)")
    parser.add_argument("--seed", type=at_least(0, int), default=0, help="sampling seed")
    parser.add_argument("--cfg-coef", type=coef_or_none, default=FROM_EXPORT,
                        help="classifier-free guidance coefficient, a number in [0, 100], or "
                             "none (off); default: the export's (runner.json's cfg_coef)")
    parser.add_argument("--chunk-ms", type=at_least(1.0, float, 10_000.0),
                        help="audio encoded at once, in ms (rounded to whole frames; default: "
                             "the export's, runner.json's chunk_frames): shorter is sooner, "
                             "and costs more per second of audio")
    parser.add_argument("--no-pace", action="store_true",
                        help="do not wait for the wall clock: measure throughput")
    parser.add_argument("--live", action="store_true", help="follow the band through an input "
                        "device and play the solo on an output device (needs: pip install "
                        "sounddevice)")
    parser.add_argument("--input-device", help="--live: input device, a name or a number "
                        "(python -m sounddevice lists them; default: the system's)")
    parser.add_argument("--output-device", help="--live: output device (default: the system's)")
    parser.add_argument("--play-mix", action="store_true", help="--live: play the band with the "
                        "solo, not the solo alone")
    parser.add_argument("--prime-ms", type=at_least(0.0, float, 10_000.0), default=20.0,
                        help="--live: solo queued before playing starts, against the model's "
                             "jitter (default 20; more: fewer gaps, later solo)")
    parser.add_argument("--block-ms", type=at_least(1.0, float, 1000.0), default=10.0,
                        help="--live: sound card block in milliseconds (at least 1; default 10)")
    parser.add_argument("--seconds", type=at_least(1.0, float, 86_400.0), default=600.0,
                        help="--live: the longest take, in seconds (default 600); Ctrl-C ends "
                             "it sooner")
    parser.add_argument("--loss", metavar="DATA_DIR",
                        help="instead of following a backing: what int8 and int4 "
                        "weights cost, as each variant's teacher-forced "
                        "loss on DATA_DIR's validation split")
    parser.add_argument("--json", help="--loss: also write the losses to this JSON file")
    args = parser.parse_args(argv)
    if not args.loss and not args.backing and not args.live:
        parser.error("--backing is needed (or --live, or --loss DATA_DIR)")
    return args


def output_folder(out, overwrite, names=("solo.wav", "mix.wav", "report.json", "take.npz"),
                  need_bytes=0):
    """--out as a folder to write into, checked before the take: not a file, no take
    replaced without --overwrite, writable and with `need_bytes` free (guard.output_folder)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SystemExit(f"--out {out} is a file: give a folder for "
                         "solo.wav, mix.wav and report.json")
    clash = [name for name in names if (out / name).exists()]
    if clash and not overwrite:
        raise SystemExit(f"{out} already holds {', '.join(clash)}: "
                         "pass --overwrite or choose another --out")
    return guard.output_folder(out, need_bytes)


def make_report(args, numbers, ms, seconds, wall, frames, interrupted):
    """report.json: per-frame and per-chunk times, end-to-end delay, real-time factor, memory."""
    pct = lambda xs, q: float(np.percentile(xs, q)) if xs else float("nan")  # noqa: E731
    chunk_ms = numbers["chunk_frames"] * 1e3 / numbers["frame_rate"]
    pattern_ms = (numbers["n_codebooks"] - 1) * 1e3 / numbers["frame_rate"]
    compute_s = (sum(ms["frame"]) + sum(ms["codec"])) / 1e3
    ahead_ms = numbers.get("lookahead", 0) * 1e3 / numbers["frame_rate"]
    return {"backing": str(args.backing), "seconds": seconds, "variant": args.variant,
            "threads": args.threads, "cfg_coef": args.cfg_coef,
            "paced": not args.no_pace, "interrupted": interrupted,
            "frame_ms": {"p50": pct(ms["frame"], 50), "p90": pct(ms["frame"], 90),
                         "p99": pct(ms["frame"], 99),
                         "max": float(max(ms["frame"], default=float("nan")))},
            "frame_budget_ms": 1e3 / numbers["frame_rate"],
            "codec_chunk_ms": {"p50": pct(ms["codec"], 50), "p99": pct(ms["codec"], 99)},
            "end_to_end_delay_ms": {q: chunk_ms + pattern_ms + pct(ms["delay"], int(q[1:]))
                                    for q in ("p50", "p99")},
            # Live, a solo written L ms ahead lands the delay less L behind the band frame
            # it was written for (never before it: an early solo waits in the queue).
            "lookahead_ms": ahead_ms,
            "late_ms": {q: max(0.0, chunk_ms + pattern_ms + pct(ms["delay"], int(q[1:])) - ahead_ms)
                        for q in ("p50", "p99")},
            "chunk_ms": chunk_ms, "delay_pattern_ms": pattern_ms,
            "realtime_factor": seconds / compute_s if compute_s else float("nan"), "wall_s": wall,
            "peak_memory_mb": peak_memory_mb(), "solo_frames": int(frames.shape[1])}


def main(argv=None):
    args = arguments(argv)
    numbers = read_folder(args.folder,
                          present_variants(args.folder) if args.loss else [args.variant])
    args.cfg_coef = chosen_guidance(args, numbers)
    if args.cfg_coef is not None and not args.loss:  # guidance's two-row graphs, checked too
        check_graphs_named(Path(args.folder), numbers, GUIDED_GRAPHS[args.variant])
    if args.loss:
        losses = variant_losses(args.folder, numbers, Path(args.loss))
        if args.json:  # the paper's build reads runs/quantization.json
            write_atomic(Path(args.json), lambda p: Path(p).write_text(json.dumps(
                {"losses": losses, "data": str(args.loss), "folder": str(args.folder),
                 "command": " ".join(["python", sys.argv[0] if argv is None else "onnx_runner.py",
                                      *(argv or sys.argv[1:])])},
                indent=2)))
            print(f"wrote {args.json}")
        return losses
    if args.chunk_ms:  # the codec graphs take any number of frames: the chunk is the runner's
        numbers["chunk_frames"] = max(1, round(args.chunk_ms * numbers["frame_rate"] / 1e3))
    taken = ("solo.wav", "mix.wav", "report.json", "take.npz")
    taken += ("backing.wav",) if args.live else ()
    out = output_folder(args.out, args.overwrite, taken)
    with guard.FolderLock(out, "onnx_runner.py"):
        if args.live:  # 16-bit wavs of the longest take: solo, mix and the band heard
            output_folder(out, True, taken, 3 * 2 * args.seconds * numbers["sample_rate"])
            return live(args, numbers, out)
        return take(args, numbers, out)


def take(args, numbers, out):
    """Follow a backing file: the stream, the files, the closing lines -> report."""
    backing = read_backing(args.backing, numbers)
    output_folder(out, True, need_bytes=2 * 2 * len(backing) + 1e6)  # 16-bit solo and mix
    n_frames = len(backing) // numbers["hop"]
    args.cfg_coef = chosen_guidance(args, numbers)
    stream = SoloStream(args.folder, numbers, n_frames, args.variant, args.threads,
                        args.temperature, args.top_k, args.seed, cfg_coef=args.cfg_coef)
    codec = Codec(args.folder, numbers, args.threads, variant=args.variant)
    print(f"{args.backing}: {len(backing) / numbers['sample_rate']:.1f} s, {args.variant} graphs, "
          f"{args.threads} thread(s), "
          f"{'paced like a live input' if not args.no_pace else 'as fast as possible'}")
    t0 = time.perf_counter()
    solo_frames, solo, ms, interrupted = follow(stream, codec, backing, numbers,
                                                pace=not args.no_pace)
    rate = numbers["sample_rate"]
    seconds, wall = len(solo) / rate, time.perf_counter() - t0
    mixed, levelled = mix(backing, solo)
    out.mkdir(parents=True, exist_ok=True)
    write_wav(out / "solo.wav", levelled, rate)
    write_wav(out / "mix.wav", mixed, rate)
    report = make_report(args, numbers, ms, seconds, wall, solo_frames, interrupted)
    write_atomic(out / "report.json", lambda p: Path(p).write_text(json.dumps(report, indent=2)))
    write_take(out / "take.npz", solo_frames, ms, numbers, paced=not args.no_pace)
    if interrupted:
        print(f"\nstopped by Ctrl-C: wrote the {seconds:.1f} s made "
              f"so far to {out}/solo.wav, mix.wav, report.json, take.npz")
        raise SystemExit(130)
    frame, delay = report["frame_ms"], report["end_to_end_delay_ms"]
    print("per frame (encoder + decoder step + sampling): p50 "
          f"{frame['p50']:.2f} ms, p90 {frame['p90']:.2f} ms, p99 "
          f"{frame['p99']:.2f} ms (budget {report['frame_budget_ms']:.1f} "
          f"ms); codec per chunk p50 {report['codec_chunk_ms']['p50']:.1f} ms")
    print(f"end-to-end delay p50 {delay['p50']:.0f} ms, p99 {delay['p99']:.0f} ms (chunk "
          f"{report['chunk_ms']:.0f} + delay pattern {report['delay_pattern_ms']:.0f} + compute); "
          f"looking {report['lookahead_ms']:.0f} ms ahead, live the solo would land "
          f"{report['late_ms']['p50']:.0f} ms behind the band frame it was written for; "
          f"{report['realtime_factor']:.1f}x real time; peak memory "
          f"{report['peak_memory_mb']:.0f} MB")
    print(f"wrote {out}/solo.wav, mix.wav, report.json, take.npz")
    return report


def sounding_frames(ready_s, frame_rate):
    """The band frame each solo frame sounded against, played as soon as it was ready: never
    before the band frame it was written for (an early frame waits), never before the frame
    ahead of it has played (the solo plays back to back). ready_s [F] -> [F] int."""
    out, last = np.zeros(len(ready_s), np.int64), -1
    for f, ready in enumerate(ready_s):
        last = out[f] = max(f, round(ready * frame_rate), last + 1)
    return out


def write_live_take(path, session, numbers):
    """take.npz of a --live take: the sounding frames as the session queued them
    (sound_card.Live), ready_s unknown (NaN); a live input is paced."""
    K = numbers["n_codebooks"]
    codes = np.stack(session.frames, axis=-1) if session.frames else np.zeros((K, 0), np.int64)
    F = min(codes.shape[1], len(session.sounding))
    save_take(path, codes[:, :F], np.full(F, np.nan), np.asarray(session.sounding[:F]),
              session.heard_codes, numbers, paced=True)


def write_take(path, solo_frames, ms, numbers, paced):
    """take.npz of a take from a file: the sounding frames from when each was ready."""
    F = solo_frames.shape[1]
    # frames finished but not yet decoded when Ctrl-C came: ready now
    now = time.perf_counter() - ms.get("began", time.perf_counter())
    ready = np.asarray((ms["ready"] + [now] * F)[:F], np.float64)
    save_take(path, solo_frames, ready, sounding_frames(ready, numbers["frame_rate"]),
              ms["heard"], numbers, paced)


def save_take(path, codes, ready_s, sounding, heard, numbers, paced):
    """take.npz: what the runner played, to be scored on the wall clock (experiments/takes.py).

    codes [K, F] int16, the solo frames in order; ready_s [F], when each was decoded (seconds
    from the band's first sample); sounding [F], the band frame each sounded against
    (sounding_frames; -1: never played); heard [K, T] int16, the band's codes as the runner's
    codec made them (here a list of [K, n] chunks); paced: whether the backing arrived at the
    pace of a live input (if not, ready_s is compute time only, and sounding says when the
    frames would have played had it been)."""
    heard = (np.concatenate(heard, axis=1) if heard
             else np.zeros((numbers["n_codebooks"], 0), np.int64))
    def save(p):
        with open(p, "wb") as f:
            np.savez(f, codes=codes.astype(np.int16), ready_s=ready_s,
                     sounding=np.asarray(sounding, np.int64), heard=heard.astype(np.int16),
                     frame_rate=numbers["frame_rate"], lookahead=numbers.get("lookahead", 0),
                     paced=paced)
    write_atomic(path, save)


if __name__ == "__main__":
    guard.loaded()
    try:
        with guard.one_line_errors("a shorter --seconds, or an export with --attn-window"):
            main()
    except KeyboardInterrupt:  # before the take began (loading): nothing was made, nothing written
        raise SystemExit("\nstopped by Ctrl-C before the take began: nothing was written") from None
