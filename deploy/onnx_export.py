"""
onnx_export.py -- phase 5's deployment, on your computer: the streaming model and the
codec as ONNX graphs, for onnx_runner.py on a small board (no PyTorch there).

    python train.py --causal-encoder --attn-window 300 --out runs/causal   # a streamable model
    python deploy/onnx_export.py --checkpoint runs/causal/best --out solo_onnx
    # copy the folder solo_onnx/ to the board (it holds onnx_runner.py too); there:
    python solo_onnx/onnx_runner.py solo_onnx --backing trio.wav

Writes into --out, atomically (a temporary folder, then one rename; never over an
existing folder without --overwrite):
    encoder_step.onnx, decoder_step.onnx             one frame through the transformer, fp32
    decoder_step.cfg.onnx                            guidance's decoder step (two rows)
    *.int8.onnx, *.int4.onnx                          the same with 8-bit or 4-bit weights
    codec_encoder.onnx, codec_decoder.onnx           EnCodec a chunk at a time, its state carried
    codec_decoder.int8.onnx                          the decoder with its LSTM in int8 (int8, int4)
    runner.json                                      the runner's numbers, each graph's SHA-256
    onnx_runner.py, sound_card.py, guard.py          the runner, its live side, its output checks

The steps are SamplerState's encoder and decoder steps rewritten as pure
functions; tests/test_onnx.py holds their logits, tokens and loss equal to PyTorch's.
"""
import contextlib
import logging
import math
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: model.py, sax/
from sax import guard  # noqa: E402 (first of the project's: a Ctrl-C while torch loads is one line)

guard.quiet_ctrl_c(__name__)

import torch

from sax.settings import check_settings, opt, parse_settings
from model import rope_angles
# the runner checks the graphs and its numbers with the same digests
from onnx_runner import CODEC_DECODER_INT8, FORMAT, numbers_digest, sha256
from sax.codec import load_codec_for, require_causal_codec
from sax.files import write_json
from sax.machine import check_install, set_threads
from sax.streaming_codec import StreamingDecoder, StreamingEncoder, chunk_frames
from sax.checkpoints import fetch_checkpoint, load_model


@dataclass
class ExportConfig:
    checkpoint: str = opt("runs/causal/best",
                          "a causal checkpoint folder (train.py --causal-encoder), or a Hub id")
    out: str = opt("solo_onnx", "folder to write the graphs, runner.json and onnx_runner.py to")
    overwrite: bool = opt(False,
                          "replace the folder if it exists (only once the new one is complete)")
    chunk_ms: float = opt(40.0, "audio chunk the runner encodes at once, in milliseconds "
                                "(its default; onnx_runner.py --chunk-ms chooses another)",
                          above=0, at_most=10_000)
    encodec_weights: str = opt("", "local EnCodec weights (default: "
                                   "what the checkpoint's dataset used)")
    guidance: Optional[float] = opt(None, "the runner's classifier-free guidance coefficient "
                                    "(written to runner.json; onnx_runner.py --cfg-coef "
                                    "chooses another; none: off)", flag="--cfg-coef",
                                    at_least=0, at_most=100)
    threads: int = opt(0, "CPU threads for torch (0: 1 or all, timed at start)",
                       at_least=0, at_most=1024)


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
#   - are written for one position, and for one row, so that splitting heads and merging
#     them back are reshapes, not transposes. Guidance's decoder step runs two rows at once (the
#     band's and the null condition's, sax.sampling.guided_logits): one call reads the
#     weights once for both, and only the split of q, k and v needs a transpose.
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
    return torch.eye(hd) * cos + quarter * sin         # column i: cos_i, and sin_i off the diagonal


def step_turns(position, hd):
    """[3, 1, hd, hd]: the turns for queries (scaled by 1/sqrt(hd), attention's scale),
    keys, and values (none: the identity), to multiply [3, H, 1, hd] at once."""
    turn = rotation(position, hd)
    return torch.stack([turn / math.sqrt(hd), turn, torch.eye(hd)])[:, None]


def ring_attention(q, ring_k, ring_v, bias, k=None, v=None):
    """One query over a ring of keys and values: model.attention for a single position.

    q [B, H, 1, hd], already scaled by 1/sqrt(hd); ring_k, ring_v [B, H, C, hd]; bias [C]:
    0 for a slot the query may see, -inf for one it may not (the mask, added). k, v
    [B, H, 1, hd]: in self-attention, this position's own key and value, always seen.
    -> [B, H, 1, hd]. (B: 1 row, or 2 with guidance.)
    """
    B, H, C, hd = ring_k.shape
    # Keys times the query as a column: [C, hd] @ [hd, 1] per head. ONNX Runtime runs this
    # orientation faster than the query as a row against keys held transposed (measured:
    # docs/phase5-streaming.md), and a column of one query is the same memory as its row.
    scores = ring_k @ q.view(B, H, hd, 1)                                 # [B, H, C, 1]
    if k is None:
        return (scores.view(B, H, 1, C) + bias).softmax(dim=-1) @ ring_v
    # [B, H, 1, C + 1]
    scores = torch.cat([scores.view(B, H, 1, C), (q * k).sum(-1, keepdim=True)], dim=-1)
    weights = (scores + torch.cat([bias, bias.new_zeros(1)])).softmax(dim=-1)
    past, now = weights.split([C, 1], dim=-1)                           # [B, H, 1, C], [B, H, 1, 1]
    return past @ ring_v + now * v                                      # [B, H, 1, hd]


def block_step(block, x, turns, ring, bias, cross=None, cross_bias=None, null=None):
    """model.Block for one position x [B, 1, D] over its rings (ring: keys, values;
    cross: the backing frames' keys and values) -> (x [B, 1, D], this position's k, v).

    turns: step_turns at this position. The block's own weights and layers; only the
    attention over the rings and the rotary turn are written differently.
    null [1, 1, D]: with guidance, what the null condition's row (row 1) reads from the
    backing frames, so that only the band's row (row 0) reads the cross ring (see
    GuidedDecoderStep).
    """
    attn = block.self_attn
    B, H, D = x.size(0), attn.n_heads, x.size(-1)
    qkv = attn.qkv_proj(block.norm1(x))                                   # [B, 1, 3D]
    # q, k turned; v as is
    if B == 1:  # one row: q, k and v apart by a reshape alone
        q, k, v = (qkv.view(3, H, 1, D // H) @ turns).split(1)          # 3 x [1, H, 1, hd]
    else:       # rows inside each of q, k and v: [3, B * H, 1, hd], then 3 x [B, H, 1, hd]
        qkv = qkv.view(B, 3, H, 1, D // H).transpose(0, 1).reshape(3, B * H, 1, D // H)
        q, k, v = (part.view(B, H, 1, D // H) for part in (qkv @ turns).split(1))
    x = x + attn.out_proj(ring_attention(q, *ring, bias, k, v).view(B, 1, D))
    # decoder blocks: the backing frames' ring, nothing new to add to it
    if block.cross_attn is not None:
        c = block.cross_attn
        rows = B if null is None else 1  # with guidance only the band's row reads the ring
        q = c.q_proj(block.norm2(x[:rows])).view(rows, H, 1, D // H) @ turns[0]  # [rows, H, 1, hd]
        heard = ring_attention(q, *cross, cross_bias).view(rows, 1, D)
        if null is not None:
            heard = torch.cat([heard, null])                                  # [2, 1, D]
        x = x + c.out_proj(heard)
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
       cross [L_dec, 2, H, 1, hd]: this frame's keys and values for the cross-attention
       rings, state [1, 1, D] (the encoder output, for the aligned path's window).
    One row, with guidance too: the null condition's row needs no encoder step (see
    GuidedDecoderStep).
    """

    def __init__(self, model):
        super().__init__()
        self.model = model
        # Every decoder layer's cross-attention keys and values of this frame, in one matmul.
        self.cross_kv = joined_linear([block.cross_attn.kv_proj for block in model.decoder])

    def forward(self, frame, position, enc_bias, *rings):
        m, H, D = self.model, self.model.cfg.n_heads, self.model.cfg.d_model
        L = len(m.decoder)
        x = m.embed(m.enc_emb, frame[..., None])                              # [1, 1, D]
        turns = step_turns(position, D // H)                                   # [3, 1, hd, hd]
        new = []
        for block, ring in zip(m.encoder, pairs(rings)):
            x, k, v = block_step(block, x, turns, ring, enc_bias)
            new += [k, v]
        x = m.enc_norm(x)                                                      # [1, 1, D]
        # keys turned, values as is
        cross = self.cross_kv(x).view(L, 2, H, 1, D // H) @ turns[1:]
        return (*new, cross, x)


class DecoderStep(torch.nn.Module):
    """One decoder step (SamplerState.decoder_step as a function), for one row.

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
        return self.step(tokens, position, recent, self_bias, cross_bias, rings)

    def step(self, tokens, position, recent, self_bias, cross_bias, rings, null=None):
        m, H, D = self.model, self.model.cfg.n_heads, self.model.cfg.d_model
        B = tokens.size(0)
        x = m.embed(m.dec_emb, tokens[..., None])                             # [B, 1, D]
        if m.align_conv is not None:
            x = x + self.aligned(recent.view(B, 1, -1))
        turns = step_turns(position, D // H)
        L = len(m.decoder)
        new = []
        nulls = [None] * L if null is None else null  # per layer, [1, 1, D] with guidance
        for block, ring, cross, layer_null in zip(m.decoder, pairs(rings[:2 * L]),
                                                  pairs(rings[2 * L:]), nulls):
            x, k, v = block_step(block, x, turns, ring, self_bias, cross, cross_bias, layer_null)
            new += [k, v]
        # [B, K, 1, card] -> [B, K, card]
        return (m.logits(x).view(B, m.cfg.n_codebooks, m.cfg.card), *new)


# Guidance runs the decoder on two rows: the band's, and the null condition's, whose
# backing is the special token at every frame (model.null_condition). That second backing
# needs no encoder of its own. Every null frame enters the encoder as the same vector (no
# position is added to it: rotary turns act on keys and queries only), and attention
# returns a weighted mean of values that are all that same frame's, that is the value
# itself, whatever the weights; norms and feed-forward layers act frame by frame. So every
# layer's output is the same at every position: one encoder state, one key and value per
# decoder layer, computed once (the runner's SoloStream.hear_nothing, the one-row encoder
# step at position 0). For the same reason the null row's cross-attention reads that
# value back, whatever its query: it is an input here, and only the band's row reads the
# cross ring. Per step this saves the null row's encoder step and its cross-attention
# rings (a third of small's ring bytes), leaving its own self-attention ring to read.

class GuidedDecoderStep(DecoderStep):
    """DecoderStep on guidance's two rows: tokens [2, K] (the same codes twice), recent
    [2, K, D], null [L_dec, 1, 1, D] (per decoder layer, the null condition's cross-attention
    values, heads side by side), then the rings: the self rings with two rows [2, H, C, hd],
    the cross rings with the band's row only [1, H, C, hd] -> logits [2, K, card] (the
    band's row, then the null condition's) and the self rings' new keys and values."""

    def forward(self, tokens, position, recent, self_bias, cross_bias, null, *rings):
        return self.step(tokens, position, recent, self_bias, cross_bias, rings, null)


def export_graph(module, args, path, inputs, outputs, dynamic):
    """torch.onnx.export with its TorchScript tracer (dynamo=False: nothing beyond the onnx
    package)."""
    import warnings
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notes on Python ints and deprecation
        torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs,
                          dynamic_axes=dynamic, opset_version=20, dynamo=False)


# The step graphs' names: one row (name.onnx), and guidance's decoder step on two rows
# (decoder_step.cfg.onnx); each also .int8 and .int4. Guidance's encoder step is the
# one-row graph (GuidedDecoderStep says why).
GUIDED = ".cfg"


def export_steps(model, folder, guided=False):
    """The transformer's two streaming steps as ONNX graphs in folder, fp32, int8 and int4
    weights, for one row; guided: guidance's decoder step (decoder_step.cfg.onnx ...)."""
    mcfg = model.cfg
    K, H, D, L = mcfg.n_codebooks, mcfg.n_heads, mcfg.d_model, mcfg.n_dec_layers
    # Every shape fixed where it can be: the rows, and rings of attn_window slots. ONNX
    # Runtime then folds away the shape arithmetic the tracer records (a third of the
    # nodes), which at one frame per call is most of the time. Only a model without a
    # window keeps the ring length free (it grows with the song).
    hd, B = D // H, 2 if guided else 1
    C = mcfg.attn_window or 8
    free = not mcfg.attn_window
    # Example inputs for the tracer: only their shapes matter (zeros are fine).
    rings = lambda layers, rows=B: [torch.zeros(rows, H, C, hd)  # noqa: E731
                                    for _ in range(2 * layers)]
    bias = torch.zeros(C)
    frame, position = torch.zeros(B, K, dtype=torch.long), torch.zeros(1, dtype=torch.long)

    def slots(names):  # the axis that counts slots, free only without a window
        return {n: {2: "slots"} for n in names} if free else {}

    own, cross = ring_names("self", L), ring_names("cross", L)
    biases = {"self_bias": {0: "slots"}, "cross_bias": {0: "slots"}} if free else {}
    if guided:
        export_graph(GuidedDecoderStep(model),
                     (frame, position, torch.zeros(B, K, D), bias, bias, torch.zeros(L, 1, 1, D),
                      *rings(L), *rings(L, rows=1)), folder / f"decoder_step{GUIDED}.onnx",
                     ["tokens", "position", "recent", "self_bias", "cross_bias", "null", *own,
                      *cross], ["logits", *ring_names("new_self", L)],
                     {**slots(own + cross), **biases})
        quantize_step(folder, "decoder_step" + GUIDED)
        return
    enc = ring_names("enc", mcfg.n_enc_layers)
    export_graph(EncoderStep(model), (frame, position, bias, *rings(mcfg.n_enc_layers)),
                 folder / "encoder_step.onnx", ["frame", "position", "enc_bias", *enc],
                 [*ring_names("new_enc", mcfg.n_enc_layers), "cross", "state"],
                 {**slots(enc), **({"enc_bias": {0: "slots"}} if free else {})})
    export_graph(DecoderStep(model),
                 (frame, position, torch.zeros(B, K, D), bias, bias, *rings(L), *rings(L)),
                 folder / "decoder_step.onnx",
                 ["tokens", "position", "recent", "self_bias", "cross_bias", *own, *cross],
                 ["logits", *ring_names("new_self", L)], {**slots(own + cross), **biases})
    for name in ("encoder_step", "decoder_step"):
        quantize_step(folder, name)


def quantize_step(folder, name):
    """folder/name.onnx -> name.int8.onnx and name.int4.onnx: fewer bytes per weight.

    At one frame per call every weight is read once per frame, so the bytes of the
    weights are most of a step's time (docs/phase5-streaming.md measures both variants).
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import (DefaultWeightOnlyQuantConfig,
                                                                 MatMulNBitsQuantizer)
    from onnxruntime.quantization.shape_inference import quant_pre_process
    with quiet_quantizers():
        # int8: every MatMul with a constant weight (the linear layers and the heads), one
        # scale per output channel; activations are quantized on the fly, per call, to
        # unsigned 8 bits. Attention's own matmuls (both sides computed) stay fp32. The
        # pre-processing folds constants first, so that every such weight counts as constant.
        # reduce_range: the weights use 7 of their 8 bits (-64..64). On x86 without VNNI
        # (AVX2, or AVX-512 without it) ONNX Runtime multiplies pairs of unsigned by signed
        # bytes into 16 bits, which saturate with full-range weights: there the guided
        # logits strayed 0.18 from fp32 instead of 0.02 (tests/test_onnx.py); with 7 bits
        # they stay within 0.03 on every CPU, at the same speed.
        quant_pre_process(str(folder / f"{name}.onnx"), str(folder / f"{name}.pre.onnx"))
        quantize_dynamic(str(folder / f"{name}.pre.onnx"), str(folder / f"{name}.int8.onnx"),
                         weight_type=QuantType.QInt8, per_channel=True, reduce_range=True,
                         op_types_to_quantize=["MatMul", "Gemm"])
        # int4: the same weights in ONNX Runtime's MatMulNBits, 4 bits each with one scale
        # per block of 32 along the input (symmetric: no zero point); accuracy level 4
        # lets the kernel multiply in int8, the activations quantized per block. It takes
        # MatMul only, so it reads the graph as exported (the pre-processing above turns
        # MatMul + Add into Gemm).
        config = DefaultWeightOnlyQuantConfig(block_size=32, is_symmetric=True, accuracy_level=4,
                                              bits=4)
        quantizer = MatMulNBitsQuantizer(onnx.load(str(folder / f"{name}.onnx")),
                                         algo_config=config)
        quantizer.process()
        quantizer.model.save_model_to_file(str(folder / f"{name}.int4.onnx"),
                                           use_external_data_format=False)
    (folder / f"{name}.pre.onnx").unlink()


def plain_weights(codec):
    """EnCodec with its weight norm folded into plain weights, in place (the same function):
    the graphs then hold each convolution's weights as constants, as ONNX Runtime's
    quantizer wants them (int8 codec graphs ran slower than fp32 here: docs/phase5)."""
    for module in codec.modules():
        if hasattr(module, "weight_g"):
            torch.nn.utils.remove_weight_norm(module)
    return codec


def export_codec(codec, n_codebooks, chunk_frames, hop, folder):
    """EnCodec as two ONNX graphs that carry their state (StreamingEncoder and
    StreamingDecoder): audio or codes of any number of frames in, with the state the last
    chunk left; codes or audio out, with the new state. Traced at one chunk."""
    codec = plain_weights(codec.float().cpu().eval())
    for name, module, example, x, y in (
            ("codec_encoder", StreamingEncoder(codec), torch.zeros(1, 1, chunk_frames * hop),
             "audio", "codes"),
            ("codec_decoder", StreamingDecoder(codec),
             torch.zeros(1, n_codebooks, chunk_frames, dtype=torch.long), "codes", "audio")):
        state = module.seanet.initial_state()
        names = [f"state{i}" for i in range(len(state))]
        export_graph(module, (example, *state), folder / f"{name}.onnx", [x, *names],
                     [y, *[f"new_{n}" for n in names]],
                     {x: {2: "length"}, y: {2: "length"}})  # any number of frames
    quantize_codec_decoder(folder / "codec_decoder.onnx", folder / CODEC_DECODER_INT8)


def quantize_codec_decoder(source, out):
    """The int8 and int4 variants' codec decoder: its two LSTM layers (57% of its weights, the
    recurrent half read again at every frame) in int8 by ONNX Runtime's dynamic quantization
    (DynamicQuantizeLSTM, 7-bit weights as quantize_step's), the rest fp32. Only the decoder:
    the encoder's codes are what the model hears, and they tip at near ties when its sums
    move (docs/phase5)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    with quiet_quantizers():
        quantize_dynamic(str(source), str(out), weight_type=QuantType.QInt8, reduce_range=True,
                         op_types_to_quantize=["LSTM"])


@contextlib.contextmanager
def quiet_quantizers():
    """ONNX Runtime's quantizers log a note per node: errors only while they run, and the
    caller's logging as it was afterwards, even when a quantizer fails."""
    root = logging.getLogger()
    level, _ = root.level, root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def write_onnx_folder(model, codec, config, numbers, cfg, folder):
    """The graphs, runner.json and onnx_runner.py into folder (a temporary one: see export_onnx)."""
    mcfg = model.cfg
    print("the transformer's two steps, and guidance's decoder step on two rows ...")
    export_steps(model, folder)
    export_steps(model, folder, guided=True)
    print("... and the codec, which carries its state from chunk to chunk")
    chunk = chunk_frames(cfg, numbers)
    export_codec(codec, mcfg.n_codebooks, chunk, numbers["hop"], folder)
    # the runner and what it imports: the sound card's side, and guard.py (standard library only)
    for name in ("onnx_runner.py", "sound_card.py"):
        shutil.copy(Path(__file__).with_name(name), folder / name)
    shutil.copy(Path(guard.__file__), folder / "guard.py")
    graphs = [f"{step}{variant}.onnx" for variant in ("", ".int8", ".int4") for step in
              ("encoder_step", "decoder_step", f"decoder_step{GUIDED}")]
    graphs += ["codec_encoder.onnx", "codec_decoder.onnx", CODEC_DECODER_INT8]
    runner = {"format": FORMAT, "checkpoint": str(cfg.checkpoint), "step": config["step"],
              "n_codebooks": mcfg.n_codebooks, "card": mcfg.card, "d_model": mcfg.d_model,
              "n_heads": mcfg.n_heads,
              "head_dim": mcfg.d_model // mcfg.n_heads, "n_enc_layers": mcfg.n_enc_layers,
              "n_dec_layers": mcfg.n_dec_layers, "attn_window": mcfg.attn_window,
              "lookahead": mcfg.lookahead,
              "aligned_backing": model.align_conv is not None,
              "sample_rate": numbers["sample_rate"], "frame_rate": numbers["frame_rate"],
              "hop": numbers["hop"],
              "chunk_frames": chunk,
              "codec_untrained": numbers["untrained"], "codec_causal": numbers.get("causal", True),
              "cfg_coef": cfg.guidance,
              "sha256": {g: sha256(folder / g) for g in graphs}}
    runner["numbers_sha256"] = numbers_digest(runner)  # an edited runner.json is seen
    write_json(folder / "runner.json", runner)
    return graphs


def export_onnx(model, codec, config, numbers, cfg, out):
    """Write the ONNX folder for onnx_runner.py, atomically (a temporary folder, then one rename).

    encoder_step / decoder_step (.onnx fp32; .int8.onnx and .int4.onnx with int8 or
    4-bit weights for the linear layers), codec_encoder.onnx (fixed window of context + chunk
    audio),
    codec_decoder.onnx (fixed window of frames), runner.json (the numbers the runner
    needs and each graph's SHA-256), and onnx_runner.py itself (with sound_card.py and
    guard.py, numpy and the standard library only): copy the folder to the
    board, and it has everything.
    """
    if not model.cfg.causal_encoder:
        raise SystemExit("onnx_export.py needs a causal model (trained with "
                         f"--causal-encoder): {cfg.checkpoint} reads the "
                         "whole backing at once, which no live input can give")
    if model.cfg.pitch_plan:
        raise SystemExit(f"onnx_export.py: {cfg.checkpoint} draws a pitch plan (--pitch-plan), "
                         "which the runner's graphs do not: sample it with generate.py --stream")
    model = model.float().cpu().eval()
    out = refuse_to_replace(out, cfg)
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


def refuse_to_replace(out, cfg):
    """--out checked before any work: an existing one only with --overwrite, and a place
    that can be written, with room for the graphs (about 40 bytes a parameter: fp32, int8
    and int4 copies of the two steps, and the codec's)."""
    out = Path(out)
    if out.exists() and not cfg.overwrite:
        raise SystemExit(f"{out} already exists; pass --overwrite or choose another --out")
    return guard.output_folder(out, need_bytes=100e6)


def main(cfg):
    """Load the checkpoint and its codec, then write the folder; returns its path."""
    check_settings(cfg)
    refuse_to_replace(cfg.out, cfg)
    set_threads(cfg.threads)
    folder = fetch_checkpoint(cfg.checkpoint)
    model, config = load_model(folder, "cpu")
    # the runner streams the codec a chunk at a time: one that looks ahead cannot be exported
    require_causal_codec(config["data"]["codec"], "onnx_export.py")
    codec, numbers = load_codec_for(config, folder, cfg.encodec_weights, "cpu")
    return export_onnx(model, codec, config, numbers, cfg, cfg.out)


if __name__ == "__main__":
    guard.loaded()
    settings = parse_settings(ExportConfig, description=__doc__.split("\n\n")[0])
    check_install("onnx", "onnxruntime")
    with guard.one_line_errors("export on a machine with more memory"):
        main(settings)
    sys.exit(0)
