"""
sax/streaming_codec.py -- phase 5: EnCodec a chunk at a time, its state carried from chunk to
chunk, as onnx_export.py traces it.
"""
import torch

# Phase 5: the codec, a chunk at a time, its state carried from chunk to chunk.
# EnCodec 24 kHz is causal: every convolution looks back a fixed number of steps,
# and its LSTM carries a state. Run on a whole file, each convolution pads its left
# edge; run on a stream, the "padding" is simply the last inputs of the chunk before,
# and the LSTM starts from where the last chunk left it. A chunk then costs only its
# own samples (re-reading past audio for context cost 3.5 times as much at 200 ms), and
# the codes are those of a whole-file encode, the way the training data were encoded,
# from the first frames on (tests/test_onnx.py measures it). Both classes are
# nn.Modules of plain tensor operations so that onnx_export.py traces them as they are;
# their state is a list of tensors that goes in with a chunk and comes out updated.

def _conv_layers(module):
    """The layers of a SEANet encoder or decoder, in order, residual blocks as
    ("residual", block layers, shortcut layer); names from the encodec package."""
    for layer in module.model:
        kind = type(layer).__name__
        if kind == "SEANetResnetBlock":
            yield "residual", list(layer.block), layer.shortcut
        else:
            yield kind, layer, None


def _carried(conv):
    """Steps of a streamed convolution's state: what whole-file padding puts on the left of
    a Conv1d ((kernel - 1) * dilation - (stride - 1) inputs), or the inputs before the chunk
    that a ConvTranspose1d's outputs still depend on (kernel / stride - 1: see _polyphase)."""
    k, s = conv.kernel_size[0], conv.stride[0]
    if isinstance(conv, torch.nn.ConvTranspose1d):
        if k % s or conv.padding[0] or conv.dilation[0] != 1 or conv.groups != 1:
            raise ValueError(f"a transposed convolution of kernel {k}, stride {s}: the "
                             "streamed codec takes kernels that are a multiple of the stride")
        return k // s - 1
    return (k - 1) * conv.dilation[0] - (s - 1)


def _polyphase(tr, x):
    """A ConvTranspose1d as a plain convolution: x [1, C_in, past + n] (its state, then the
    chunk) -> [1, C_out, n * stride], what the whole-file layer gives for the chunk.

    Output step t * s + r (s the stride, r < s) sums W[:, :, j * s + r] x[t - j] over the
    kernel's k / s taps j: for each phase r, a stride-1 convolution over the inputs. So the
    s phases are one Conv1d of C_out * s channels (taps reversed, as a convolution reads
    them), interleaved after. Same sums; ONNX Runtime runs a Conv1d faster than its
    ConvTranspose, and the state is the last inputs, as for any convolution."""
    c_in, c_out, k = tr.weight.shape
    s = tr.stride[0]
    w = tr.weight.reshape(c_in, c_out, k // s, s).permute(1, 3, 0, 2).flip(-1)
    y = torch.nn.functional.conv1d(x, w.reshape(c_out * s, c_in, k // s))   # [1, C_out * s, n]
    y = y.reshape(1, c_out, s, -1).transpose(2, 3).reshape(1, c_out, -1)    # phases interleaved
    return y + tr.bias[None, :, None]


class StreamingSEANet(torch.nn.Module):
    """One SEANet (EnCodec's encoder or decoder) on a chunk [1, C, n] with its state.

    The state, per layer that needs one: a convolution's last (kernel - 1) * dilation
    - (stride - 1) inputs (what whole-file padding would have put on its left); a
    transposed convolution's last kernel / stride - 1 inputs, which the next chunk's first
    outputs still depend on; the LSTM's (h, c). Zeros to begin with: silence before the music.
    """

    def __init__(self, seanet):
        super().__init__()
        self.seanet = seanet

    def initial_state(self, device="cpu"):
        state = []
        def visit(kind, layer):
            if kind == "SConv1d" and _carried(layer.conv.conv):
                conv = layer.conv.conv
                state.append(torch.zeros(1, conv.in_channels, _carried(conv), device=device))
            elif kind == "SConvTranspose1d" and _carried(layer.convtr.convtr):
                tr = layer.convtr.convtr
                state.append(torch.zeros(1, tr.in_channels, _carried(tr), device=device))
            elif kind == "SLSTM":
                lstm = layer.lstm
                state.extend([torch.zeros(lstm.num_layers, 1, lstm.hidden_size, device=device)] * 2)
        self.walk(visit)
        return state

    def walk(self, visit):
        for kind, layer, shortcut in _conv_layers(self.seanet):
            for k, part in ([(type(b).__name__, b) for b in layer] + [("SConv1d", shortcut)]
                            if kind == "residual" else [(kind, layer)]):
                visit(k, part)

    def forward(self, x, *state):
        """x [1, C, n] and the state -> (y [1, C', n'], *the new state)."""
        state, new = list(state), []

        def run(kind, layer, x):
            if kind in ("SConv1d", "SConvTranspose1d"):
                conv = layer.conv.conv if kind == "SConv1d" else layer.convtr.convtr
                pad = _carried(conv)
                if pad:
                    x = torch.cat([state.pop(0), x], dim=-1)       # the past, then the chunk
                    new.append(x[..., -pad:])  # a constant slice: no shape arithmetic in ONNX
                return conv(x) if kind == "SConv1d" else _polyphase(conv, x)
            if kind == "SLSTM":
                seq = x.permute(2, 0, 1)                                   # [n, 1, C]
                out, (h, c) = layer.lstm(seq, (state.pop(0), state.pop(0)))
                new.extend([h, c])
                return (out + seq).permute(1, 2, 0)                        # the skip
            return layer(x)                                                # ELU and the like

        for kind, layer, shortcut in _conv_layers(self.seanet):
            if kind == "residual":
                y = x
                for part in layer:
                    y = run(type(part).__name__, part, y)
                x = run("SConv1d", shortcut, x) + y
            else:
                x = run(kind, layer, x)
        return (x, *new)


class StreamingEncoder(torch.nn.Module):
    """EnCodec's encoder and quantizer on a chunk: (audio [1, 1, n * hop], *state) ->
    (codes [1, K, n], *state)."""

    def __init__(self, codec):
        super().__init__()
        self.codec, self.seanet = codec, StreamingSEANet(codec.encoder)

    def forward(self, audio, *state):
        emb, *new = self.seanet(audio, *state)
        codes = self.codec.quantizer.encode(emb, self.codec.frame_rate, self.codec.bandwidth)
        return (codes.transpose(0, 1), *new)


class StreamingDecoder(torch.nn.Module):
    """EnCodec's dequantizer and decoder on a chunk: (codes [1, K, n], *state) ->
    (audio [1, 1, n * hop], *state)."""

    def __init__(self, codec):
        super().__init__()
        self.codec, self.seanet = codec, StreamingSEANet(codec.decoder)

    def forward(self, codes, *state):
        return self.seanet(self.codec.quantizer.decode(codes.transpose(0, 1)), *state)


def chunk_frames(cfg, numbers):
    """Frames in one streaming chunk of cfg.chunk_ms (at least one)."""
    return max(1, round(cfg.chunk_ms / 1000 * numbers["frame_rate"]))
