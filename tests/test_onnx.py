"""Phase 5's deployment: the ONNX graphs and onnx_runner.py against the PyTorch path they replace."""
import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

import generate as G
import onnx_export as E
import onnx_runner as R
from model import SoloTransformer, build_delay_pattern, preset_config
from sax.audio import CODEC_RATE
from sax.codec import decode_codes, encode_audio
from sax.dataset import load_split
from sax.demo import render_demo_song
from sax.sampling import SamplerState, StreamingSampler, guided_logits


def pytorch_stream(model, backing, **opts):
    sampler = StreamingSampler(model, backing.shape[1], **opts)
    frames = [] if sampler.ahead is None else list(sampler.ahead[0].unbind(-1))  # a model that looks ahead
    frames += [sampler.push(torch.from_numpy(backing[None, :, t])) for t in range(backing.shape[1])]
    rest = sampler.finish()
    frames = [f[0] if f.dim() == 2 else f for f in frames if f is not None]
    frames += [] if rest is None else list(rest[0].unbind(-1))
    return torch.stack(frames, dim=-1).numpy()                                        # [K, T]


def onnx_stream(folder, backing, variant="fp32", numbers=None, **opts):
    """The runner's SoloStream over backing codes [K, T] -> solo codes [K, T] (opts: its own)."""
    numbers = numbers or R.read_folder(folder)
    stream = R.SoloStream(folder, numbers, backing.shape[1], variant, **opts)
    frames = stream.ahead + [stream.push(backing[:, t]) for t in range(backing.shape[1])]
    return np.stack([f for f in frames if f is not None] + stream.finish(), axis=-1)  # [K, T]


def test_export_writes_a_complete_folder(exported):
    folder, model, *_ = exported
    numbers = R.read_folder(folder)
    names = {p.name for p in folder.iterdir()}
    assert set(numbers["sha256"]) | {"runner.json", "onnx_runner.py", "sound_card.py", "guard.py"} == names, names
    assert numbers["attn_window"] == model.cfg.attn_window == 40 and numbers["n_codebooks"] == 4
    assert numbers["lookahead"] == model.cfg.lookahead == 0
    assert not list(folder.parent.glob(".*tmp*")), "the temporary export folder was left behind"
    # int8 and int4 weights: the step graphs shrink (the embedding tables stay fp32).
    for step in ("encoder_step", "decoder_step"):
        fp32, int8, int4 = ((folder / f"{step}{v}.onnx").stat().st_size for v in ("", ".int8", ".int4"))
        assert int4 < int8 < 0.7 * fp32, f"{step}: int4 {int4}, int8 {int8} bytes vs fp32 {fp32}"


def test_int8_weights_use_seven_bits(exported):
    """The int8 graphs' weights lie in -64..64 (quantize_step's reduce_range), so that x86 CPUs
    without VNNI cannot saturate the 16-bit sums of ONNX Runtime's int8 kernels: a check that
    holds on any CPU, where the logits' gaps below hold only on those the suite runs on."""
    import onnx
    from onnx import numpy_helper
    folder = exported[0]
    for graph in ("encoder_step", "decoder_step", "decoder_step.cfg"):
        weights = [numpy_helper.to_array(t) for t in onnx.load(str(folder / f"{graph}.int8.onnx")).graph.initializer
                   if t.data_type == onnx.TensorProto.INT8 and t.name.endswith("_quantized")]
        assert weights, f"{graph}.int8.onnx: no int8 weights"
        largest = max(int(np.abs(w.astype(np.int16)).max()) for w in weights)
        assert 48 < largest <= 64, f"{graph}.int8.onnx: weights up to {largest} in size, not 7 bits"


def test_step_logits_equal_pytorch(exported):
    """Every step's logits, fed the same tokens, against SamplerState.streaming, to 1e-5.

    The tight check: a briefly trained model's greedy tokens would survive a small slip
    (one key too many in a window moves the logits by about 6e-4, and no argmax).
    """
    folder, model, _, _, backing, solo = exported
    K, T = solo.shape
    stream = R.SoloStream(folder, R.read_folder(folder), T, "fp32")
    state = SamplerState.streaming(model, 1, T + K - 1, "cpu", torch.float32)
    target = build_delay_pattern(torch.from_numpy(solo)[None], model.cfg.card)[0]                   # [1, K, S]
    worst = 0.0
    with torch.no_grad():
        for s in range(T + K - 1):
            if s < T:
                stream.encoder_step(backing[:, s])
                state.encoder_step(torch.from_numpy(backing[None, :, s]))
            tokens = target[:, :, s - 1] if s else torch.full((1, K), model.cfg.card)
            stream.tokens = tokens.numpy()
            worst = max(worst, np.abs(stream.next_logits() - state.decoder_step(tokens).numpy()).max())
    assert worst < 1e-5, f"logits differ by up to {worst:.2e}"


def test_greedy_tokens_equal_pytorch(exported):
    """150 frames through a 40-slot ring: the rings wrap three times, and the backing ends
    before the last K - 1 steps (zeros enter the aligned window, old frames are masked)."""
    folder, model, _, _, backing, _ = exported
    want = pytorch_stream(model, backing, temperature=0.0)
    got = onnx_stream(folder, backing, temperature=0.0)
    assert got.shape == want.shape == backing.shape
    assert np.array_equal(got, want), f"first difference at frame {np.argwhere(got != want)[0]}"


def test_a_model_without_window_exports_rings_that_grow(tmp_path):
    """attn_window None: the graphs' slot axis stays free (traced at 8 slots, run at 43)."""
    torch.manual_seed(0)
    model = SoloTransformer(preset_config("tiny", max_frames=64, causal_encoder=True)).eval()
    E.export_steps(model, tmp_path)
    cfg = model.cfg
    numbers = {"n_codebooks": cfg.n_codebooks, "d_model": cfg.d_model, "card": cfg.card, "attn_window": None,
               "n_enc_layers": cfg.n_enc_layers, "n_dec_layers": cfg.n_dec_layers, "n_heads": cfg.n_heads,
               "head_dim": cfg.d_model // cfg.n_heads}
    backing = np.random.default_rng(0).integers(0, cfg.card, (cfg.n_codebooks, 40))
    want = pytorch_stream(model, backing, temperature=0.0)
    got = onnx_stream(tmp_path, backing, numbers=numbers, temperature=0.0)
    assert np.array_equal(got, want), f"first difference at frame {np.argwhere(got != want)[0]}"


@pytest.mark.parametrize("window", [None, 12])
def test_a_model_that_looks_ahead_streams_the_same_tokens(tmp_path, window):
    """lookahead 6 (80 ms), from runner.json: the runner hears 6 frames of nothing first, as
    StreamingSampler does; 3 solo frames are finished before the first backing frame."""
    torch.manual_seed(0)
    model = SoloTransformer(preset_config("tiny", max_frames=64, causal_encoder=True, attn_window=window,
                                          lookahead=6)).eval()
    E.export_steps(model, tmp_path)
    cfg = model.cfg
    numbers = {"n_codebooks": cfg.n_codebooks, "d_model": cfg.d_model, "card": cfg.card, "attn_window": window,
               "n_enc_layers": cfg.n_enc_layers, "n_dec_layers": cfg.n_dec_layers, "n_heads": cfg.n_heads,
               "head_dim": cfg.d_model // cfg.n_heads, "lookahead": 6}
    backing = np.random.default_rng(0).integers(0, cfg.card, (cfg.n_codebooks, 30))
    want = pytorch_stream(model, backing, temperature=0.0)
    assert len(R.SoloStream(tmp_path, numbers, 30, "fp32").ahead) == 3
    got = onnx_stream(tmp_path, backing, numbers=numbers, temperature=0.0)
    assert np.array_equal(got, want), f"first difference at frame {np.argwhere(got != want)[0]}"
    # teacher forcing hears the same 6 frames of nothing first: the graphs' loss is training's
    solo = np.random.default_rng(1).integers(0, cfg.card, (cfg.n_codebooks, 30))
    stream = R.SoloStream(tmp_path, numbers, 30, "fp32", look_ahead=False)
    with torch.no_grad():
        ce = model.loss(torch.from_numpy(backing)[None], torch.from_numpy(solo)[None])[0].item()
    assert abs(R.teacher_forced_ce(stream, backing, solo) - ce) < 1e-4


def test_seeded_sampling_equal_given_the_same_draws(exported):
    """top-k 250 at temperature 1: the runner's numpy sampler, fed the uniform numbers that
    torch's generator gives sample_next, picks the same codes."""
    folder, model, _, _, backing, _ = exported
    want = pytorch_stream(model, backing, temperature=1.0, top_k=250, seed=5)
    gen = torch.Generator().manual_seed(5)  # the same stream of draws, one [1, K, 1] per step
    draws = lambda shape: torch.rand((*shape, 1), generator=gen).numpy()[..., 0]  # noqa: E731
    got = onnx_stream(folder, backing, temperature=1.0, top_k=250, uniform=draws)
    assert np.array_equal(got, want), f"first difference at frame {np.argwhere(got != want)[0]}"
    assert len(np.unique(got)) > 20, "sampling at temperature 1 should spread over many codes"


def guided_logit_gaps(folder, model, backing, solo, coef=3.0):
    """{variant: the largest gap between the runner's guided logits and PyTorch's} over every
    step, teacher-forced on `solo` (two rows, the band's and the null condition's)."""
    K, T = solo.shape
    numbers = R.read_folder(folder)
    target = build_delay_pattern(torch.from_numpy(solo)[None], model.cfg.card)[0]
    gaps = {}
    for variant in ("fp32", "int8", "int4"):
        stream = R.SoloStream(folder, numbers, T, variant, cfg_coef=coef)
        state = SamplerState.streaming(model, 2, T + K - 1, "cpu", torch.float32)
        null = torch.full((1, K), model.cfg.card)
        worst = 0.0
        with torch.no_grad():
            for s in range(T + K - 1):
                if s < T:
                    stream.encoder_step(backing[:, s])
                    state.encoder_step(torch.cat([torch.from_numpy(backing[None, :, s]), null]))
                tokens = target[:, :, s - 1] if s else torch.full((1, K), model.cfg.card)
                stream.tokens = tokens.numpy()
                want = guided_logits(state.decoder_step(tokens.repeat(2, 1)), coef).numpy()
                worst = max(worst, float(np.abs(stream.next_logits() - want).max()))
        gaps[variant] = worst
    return gaps


def test_guided_steps_equal_pytorch(exported):
    """Guidance's decoder step on two rows, the null condition heard once (GuidedDecoderStep):
    fp32 equals SamplerState's guided logits, which run the null row through the encoder
    at every frame, to 1e-5 (measured: 3e-6); int8 within 0.1 and int4 within 0.4 of them
    (measured on this model: 0.021 and 0.086, against 0.009 and 0.078 unguided; guidance
    at 3 is 3 cond - 2 uncond, so each row's error can count up to 5 times). int8 with
    full-range weights gave 0.18 on an x86 CPU without VNNI (AVX2): test_int8_weights_use_seven_bits."""
    folder, model, _, _, backing, solo = exported
    gaps = guided_logit_gaps(folder, model, backing[:, :60], solo[:, :60])
    assert gaps["fp32"] < 1e-5, gaps
    assert gaps["int8"] < 0.1 and gaps["int4"] < 0.4, gaps


def test_guided_tokens_equal_pytorch(exported):
    """The runner's --cfg-coef 3 writes StreamingSampler(cfg_coef=3)'s codes: greedy over 150
    frames (the rings wrap), and sampled at temperature 1, top-k 250, given the same draws."""
    folder, model, _, _, backing, _ = exported
    want = pytorch_stream(model, backing, temperature=0.0, cfg_coef=3.0)
    got = onnx_stream(folder, backing, temperature=0.0, cfg_coef=3.0)
    assert np.array_equal(got, want), f"first difference at frame {np.argwhere(got != want)[0]}"
    want = pytorch_stream(model, backing, temperature=1.0, top_k=250, seed=5, cfg_coef=3.0)

    def draws(seed):  # torch's stream of draws for sample_next, one [1, K, 1] per step
        gen = torch.Generator().manual_seed(seed)
        return lambda shape: torch.rand((*shape, 1), generator=gen).numpy()[..., 0]
    got = onnx_stream(folder, backing, temperature=1.0, top_k=250, uniform=draws(5), cfg_coef=3.0)
    assert np.array_equal(got, want), f"first difference at frame {np.argwhere(got != want)[0]}"
    plain = onnx_stream(folder, backing, temperature=1.0, top_k=250, uniform=draws(5))
    assert (plain != got).any(0).mean() > 0.1, "the same draws with guidance should pick other codes"


def test_the_runners_guidance_from_the_command_line(exported, tmp_path):
    """--cfg-coef on the runner, runner.json's cfg_coef as its default, and a folder exported
    without the two-row graphs refused in one line."""
    folder, _, codec, _, backing, _ = exported
    audio = decode_codes(codec, backing[:, :30])
    sf.write(tmp_path / "trio.wav", audio, CODEC_RATE)
    args = [str(folder), "--backing", str(tmp_path / "trio.wav"), "--variant", "fp32", "--no-pace"]
    assert json.loads((folder / "runner.json").read_text())["cfg_coef"] is None, "off by default"
    plain = R.main(args + ["--out", str(tmp_path / "a")])
    guided = R.main(args + ["--out", str(tmp_path / "b"), "--cfg-coef", "3"])
    assert (plain["cfg_coef"], guided["cfg_coef"]) == (None, 3.0)
    assert plain["solo_frames"] == guided["solo_frames"] == 30
    trimmed = tmp_path / "trimmed"
    shutil.copytree(folder, trimmed)
    (trimmed / "decoder_step.cfg.onnx").unlink()
    with pytest.raises(SystemExit, match="decoder_step.cfg.onnx is missing"):
        R.main([str(trimmed), "--backing", str(tmp_path / "trio.wav"), "--variant", "fp32",
                "--out", str(tmp_path / "c"), "--cfg-coef", "3"])
    R.main([str(trimmed), "--backing", str(tmp_path / "trio.wav"), "--variant", "fp32",
            "--out", str(tmp_path / "d"), "--no-pace"])  # without guidance it runs


def test_teacher_forced_loss_equals_training_and_int8_int4_are_close(exported):
    """The graphs' cross-entropy on a known solo equals model.loss (the training loss) for
    fp32, and int8 or int4 weights cost at most 0.02 nats."""
    folder, model, _, _, backing, solo = exported
    numbers = R.read_folder(folder)
    with torch.no_grad():
        want = model.loss(torch.from_numpy(backing[None, :, :75]), torch.from_numpy(solo[None, :, :75]))[0].item()
    ce = {v: R.teacher_forced_ce(R.SoloStream(folder, numbers, 75, v), backing[:, :75], solo[:, :75])
          for v in ("fp32", "int8", "int4")}
    assert abs(ce["fp32"] - want) < 1e-4, f"graphs {ce['fp32']:.5f} vs model.loss {want:.5f}"
    assert abs(ce["int8"] - ce["fp32"]) < 0.02 and abs(ce["int4"] - ce["fp32"]) < 0.02, ce


def test_variant_losses_on_the_validation_split(exported, trained_causal, tmp_path):
    """onnx_runner.py FOLDER --loss DATA_DIR: each variant's loss on validation clips; the
    fp32 graphs' equals model.loss on the same clips, int8 and int4 are within 0.02 nats;
    --json writes them (the paper's build reads that file)."""
    folder, model, *_ = exported
    data_dir = G.load_model(trained_causal / "best")[1]["data"]["dir"]
    losses = R.main([str(folder), "--loss", data_dir, "--json", str(tmp_path / "q.json")])
    written = json.loads((tmp_path / "q.json").read_text())
    assert written["losses"] == losses and "--loss" in written["command"]
    backing, solo = load_split(data_dir, "val")
    T = min(300, backing.shape[1])
    clip = lambda codes, s: torch.from_numpy(codes[None, :, s:s + T].astype(np.int64))  # noqa: E731
    with torch.no_grad():
        want = np.mean([model.loss(clip(backing, s), clip(solo, s))[0].item()
                        for s in np.linspace(0, backing.shape[1] - T, 4).astype(int)])
    assert set(losses) == {"fp32", "int8", "int4"}
    assert abs(losses["fp32"] - want) < 1e-4, (losses, want)
    assert abs(losses["int8"] - losses["fp32"]) < 0.02 and abs(losses["int4"] - losses["fp32"]) < 0.02, losses


def test_codec_graphs_carry_their_state_like_the_pytorch_modules(exported):
    """The codec graphs, chunk after chunk with their state carried, against StreamingEncoder
    and StreamingDecoder (what generate.py --stream runs): the state and the audio to 1e-4, the
    codes equal but in a frame where float rounding tips a near tie in the quantizer."""
    folder, _, codec, numbers, backing, _ = exported
    hop, onnx_codec = numbers["hop"], R.Codec(folder, R.read_folder(folder))
    stream = G.CodecStream(codec, 1)
    audio = decode_codes(codec, backing[:, :60]) + (
        0.1 * np.random.default_rng(0).standard_normal(60 * hop)).astype(np.float32)
    got, want = [], []
    for start in range(0, 60 * hop, 7 * hop):  # chunks of 7 frames, the last one of 4
        got.append(onnx_codec.encode(audio[start:start + 7 * hop]))
        want.append(stream.encode(audio[start:start + 7 * hop]).numpy())
    got, want = np.concatenate(got, -1), np.concatenate(want, -1)
    # Where they differ, one frame's first code sat on a near tie (a margin of 1e-4 between the two
    # nearest codebook entries, against a median of 2e-2, when this was written): its residual then
    # moves the frame's other codebooks too, and nothing more (codes do not feed back).
    differ = (got != want).any(axis=0)
    assert got.shape == want.shape == (4, 60) and differ.sum() <= 2, np.argwhere(differ)
    for a, b in zip(onnx_codec.state[onnx_codec.encoder], stream.enc_state):
        assert np.abs(a - b.numpy()).max() < 1e-4
    frames = list(backing[:, :30].T)
    heard = [onnx_codec.decode_new(frames[:n], done) for done, n in ((0, 3), (3, 9), (9, 30))]
    wanted = [stream.decode(torch.from_numpy(backing[None, :, a:b]))[0] for a, b in ((0, 3), (3, 9), (9, 30))]
    for a, b in zip(heard, wanted):
        assert a.shape == b.shape and np.abs(a - b).max() < 1e-4 * max(1.0, np.abs(b).max())


def test_the_int8_codec_decoder_sounds_like_the_fp32_one(exported):
    """The int8 and int4 variants' decoder (its LSTM in int8, onnx_export.quantize_codec_decoder)
    over calls of uneven lengths: the audio within 40 dB of the fp32 decoder's (measured 111 dB
    when this was written: the untrained codec's LSTM adds little to its output, so this checks
    the plumbing, not the pretrained codec's error); the graph holds no fp32 LSTM."""
    import onnx
    folder, _, _, _, backing, _ = exported
    numbers = R.read_folder(folder)
    ops = [n.op_type for n in onnx.load(str(folder / R.CODEC_DECODER_INT8)).graph.node]
    assert ops.count("DynamicQuantizeLSTM") == 2 and "LSTM" not in ops, ops  # its two layers
    frames, audio = list(backing[:, :60].T), {}
    for variant in ("fp32", "int8"):
        codec, done, parts = R.Codec(folder, numbers, variant=variant), 0, []
        for n in (7, 12, 13, 20, 60):
            parts.append(codec.decode_new(frames[:n], done))
            done = n
        audio[variant] = np.concatenate(parts)
    a, b = audio["fp32"], audio["int8"]
    assert a.shape == b.shape == (60 * numbers["hop"],)
    snr = 10 * np.log10(np.sum(a ** 2) / np.sum((a - b) ** 2))
    assert snr > 40, f"{snr:.1f} dB"


@pytest.mark.parametrize("stride, taps", [(8, 2), (5, 2), (4, 3), (3, 1)])
def test_a_transposed_convolution_streams_as_a_plain_one(stride, taps):
    """streaming_codec._polyphase, chunk by chunk with the last inputs carried, equals
    ConvTranspose1d on the whole input (cut where EnCodec's causal layer cuts it) to 1e-5."""
    from sax.streaming_codec import _carried, _polyphase
    torch.manual_seed(stride)
    tr = torch.nn.ConvTranspose1d(6, 5, stride * taps, stride)
    x = torch.randn(1, 6, 11)
    with torch.no_grad():
        whole = tr(x)[..., :11 * stride]
        past, got = torch.zeros(1, 6, _carried(tr)), []
        for a, b in ((0, 3), (3, 4), (4, 11)):
            chunk = torch.cat([past, x[..., a:b]], dim=-1)
            got.append(_polyphase(tr, chunk))
            past = chunk[..., chunk.shape[-1] - _carried(tr):]
    assert torch.allclose(torch.cat(got, dim=-1), whole, atol=1e-5)


def test_streamed_codec_equals_a_whole_file_encode_after_its_first_frames(exported):
    """Carrying the state, a stream's codes are a whole-file encode's (how the training data were
    encoded) once the first 0.2 s are past, but for a near tie; decoded audio too (to 1e-5) after
    the first 10 frames.
    Only the start differs: a whole file pads its left edge by reflection, a stream by silence."""
    folder, _, codec, numbers, *_ = exported
    hop, stream = numbers["hop"], G.CodecStream(codec, 1)
    band = render_demo_song(71, 3.0, seed=0)[0].astype(np.float32)
    whole = encode_audio(codec, band).astype(np.int64)                          # [K, 225]
    streamed = np.concatenate([stream.encode(band[s:s + 6 * hop]).numpy()
                               for s in range(0, len(band), 6 * hop)], axis=-1)
    assert streamed.shape == whole.shape
    differ = (streamed != whole).any(axis=0)
    assert differ[15:].sum() <= 2, np.argwhere(differ)  # a near tie may tip a frame (see above)
    audio = np.concatenate([stream.decode(torch.from_numpy(whole[None, :, s:s + 6]))[0]
                            for s in range(0, whole.shape[1], 6)])
    want = decode_codes(codec, whole)
    assert len(audio) == len(want) and np.abs(audio - want)[10 * hop:].max() < 1e-5


def test_runner_follows_a_backing_like_generate_stream(exported, tmp_path):
    """The whole device path from a WAV file (codec graphs included) against generate.py --stream."""
    folder, model, codec, numbers, backing, _ = exported
    audio = decode_codes(codec, backing[:, :90])                                # 1.2 s of backing
    sf.write(tmp_path / "trio.wav", np.stack([audio, audio], axis=1), CODEC_RATE)      # stereo: mixed down
    report = R.main([str(folder), "--backing", str(tmp_path / "trio.wav"), "--out", str(tmp_path / "live"),
                     "--variant", "fp32", "--temperature", "0", "--no-pace"])
    # The runner samples one solo without guidance: generate.py --stream likewise, on the same
    # samples the runner read from the file (16-bit, mixed down).
    cfg = G.GenerateConfig(temperature=0.0, chunk_ms=80, guidance=None)
    numbers_r = R.read_folder(folder, ["fp32"])
    heard = R.read_backing(tmp_path / "trio.wav", numbers_r)
    solo, solo_audio, _ = G.stream(model, codec, heard, cfg, numbers)
    assert report["solo_frames"] == solo.shape[-1] == 90
    got, rate = sf.read(tmp_path / "live" / "solo.wav")
    assert rate == CODEC_RATE and len(got) == len(solo_audio[0]) == 90 * numbers["hop"]
    # The codes, not the audio: the untrained codec decodes any two code sequences within
    # 2^-15 of each other, so only the tokens tell the runner's solo from another. The runner's
    # own path from the same file (its codec graphs, its steps) writes generate.py --stream's.
    frames, _, _, _ = R.follow(R.SoloStream(folder, numbers_r, 90, "fp32", temperature=0.0),
                               R.Codec(folder, numbers_r), heard, numbers_r, pace=False)
    assert np.array_equal(frames, solo[0].numpy()), "the runner's tokens differ from generate.py --stream's"
    # Greedy, a 3-step model writes few codes; the band's codes, which vary, are held equal too.
    hop = numbers["hop"]
    ours, theirs = R.Codec(folder, numbers_r), G.CodecStream(codec, 1)
    for start in range(0, 90 * hop, 6 * hop):
        a = ours.encode(heard[start:start + 6 * hop])
        b = theirs.encode(heard[start:start + 6 * hop]).numpy()
        assert np.array_equal(a, b), f"the runner's codec graph heard other codes at sample {start}"
    assert len(np.unique(R.Codec(folder, numbers_r).encode(heard[:90 * hop]))) > 20
    mix, _ = sf.read(tmp_path / "live" / "mix.wav")
    assert 0.01 < np.sqrt(np.mean(mix ** 2)) and np.abs(mix).max() <= 0.98 + 1e-4
    written = json.loads((tmp_path / "live" / "report.json").read_text())
    assert written["frame_ms"]["p50"] > 0 and written["peak_memory_mb"] > 0
    # The measured compute part of the delay: at least the chunk's frames' own steps, at most the take.
    compute = written["end_to_end_delay_ms"]["p50"] - written["chunk_ms"] - written["delay_pattern_ms"]
    assert 0.5 * numbers["frame_rate"] * written["chunk_ms"] / 1e3 * written["frame_ms"]["p50"] <= compute
    assert compute <= written["wall_s"] * 1e3


def test_the_runner_chooses_its_chunk(exported, tmp_path):
    """The codec graphs take any number of frames, so --chunk-ms is the runner's to choose: 40 ms
    chunks give a take of the same length and audio as 80 ms chunks (the untrained codec's audio,
    whatever the codes: the codes themselves are held equal in the codec tests above), sooner."""
    folder, _, codec, _, backing, _ = exported
    sf.write(tmp_path / "b.wav", decode_codes(codec, backing[:, :60]), CODEC_RATE)
    takes = {}
    for ms in (40, 80):
        takes[ms] = R.main([str(folder), "--backing", str(tmp_path / "b.wav"), "--out", str(tmp_path / str(ms)),
                            "--chunk-ms", str(ms), "--variant", "fp32", "--temperature", "0", "--no-pace"])
        assert takes[ms]["chunk_ms"] == ms and takes[ms]["solo_frames"] == 60
    a, b = (sf.read(tmp_path / str(ms) / "solo.wav")[0] for ms in (40, 80))
    assert len(a) == len(b)
    # the tokens of the two chunk sizes, compared (the untrained codec's audio would match anyway)
    numbers_r = R.read_folder(folder, ["fp32"])
    codes = {}
    for frames_per_chunk in (3, 6):
        numbers_r["chunk_frames"] = frames_per_chunk
        codes[frames_per_chunk] = R.follow(R.SoloStream(folder, numbers_r, 60, "fp32", temperature=0.0),
                                           R.Codec(folder, numbers_r), R.read_backing(tmp_path / "b.wav", numbers_r),
                                           numbers_r, pace=False)[0]
    assert np.array_equal(codes[3], codes[6])
    assert takes[40]["end_to_end_delay_ms"]["p50"] < takes[80]["end_to_end_delay_ms"]["p50"]


def test_paced_run_waits_for_the_audio(exported, tmp_path):
    """Paced like a live input, a 1 s backing cannot finish in much less than 1 s."""
    folder, _, codec, _, backing, _ = exported
    sf.write(tmp_path / "b.wav", decode_codes(codec, backing[:, :75]), CODEC_RATE)
    report = R.main([str(folder), "--backing", str(tmp_path / "b.wav"), "--out", str(tmp_path / "p")])
    assert report["paced"] and report["wall_s"] >= 0.95, report["wall_s"]


def test_bad_input_one_clear_line(exported, trained, trained_causal, tmp_path):
    folder, _, codec, _, backing, _ = exported

    def fails(args, *words):
        with pytest.raises(SystemExit) as err:
            R.main([str(a) for a in args] + ["--out", str(tmp_path / "never")])
        assert all(w in str(err.value) for w in words), str(err.value)

    good = tmp_path / "ok.wav"
    sf.write(good, decode_codes(codec, backing[:, :30]), CODEC_RATE)
    sf.write(tmp_path / "44k.wav", np.zeros(44100, np.float32), 44100)
    fails([folder, "--backing", tmp_path / "44k.wav"], "44100 Hz", "ffmpeg")
    sf.write(tmp_path / "short.wav", np.zeros(1000, np.float32), CODEC_RATE)
    fails([folder, "--backing", tmp_path / "short.wav"], "shorter than one chunk")
    (tmp_path / "text.wav").write_text("not audio")
    fails([folder, "--backing", tmp_path / "text.wav"], "cannot read", "WAV")
    fails([tmp_path / "nowhere", "--backing", good], "runner.json not found", "onnx_export.py")
    fails([folder, "--loss", tmp_path], "val_backing.npy", "data.py")
    # A graph from another export: runner.json no longer describes the folder.
    mixed = tmp_path / "mixed"
    shutil.copytree(folder, mixed)
    # (the default variant's graph: a folder is checked for the graphs the run uses)
    (mixed / "decoder_step.int8.onnx").write_bytes((mixed / "decoder_step.int4.onnx").read_bytes())
    fails([mixed, "--backing", good], "decoder_step.int8.onnx", "export the folder again")
    numbers = json.loads((folder / "runner.json").read_text())
    (mixed / "runner.json").write_text(json.dumps({**numbers, "format": 1}))
    fails([mixed, "--backing", good], "format 1", "export the folder again")
    (mixed / "runner.json").write_text("{")
    fails([mixed, "--backing", good], "damaged")
    # Export: a model that reads the whole backing cannot stream; an existing folder is kept.
    with pytest.raises(SystemExit, match="causal"):
        E.main(E.ExportConfig(checkpoint=str(trained[0] / "best"), out=str(tmp_path / "x")))
    assert not (tmp_path / "x").exists()
    with pytest.raises(SystemExit, match="--overwrite"):
        E.main(E.ExportConfig(checkpoint=str(trained_causal / "best"), out=str(folder)))


def test_failed_export_leaves_nothing(trained_causal, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("quantizer crashed")
    monkeypatch.setattr("onnxruntime.quantization.quantize_dynamic", broken)
    with pytest.raises(RuntimeError):
        E.main(E.ExportConfig(checkpoint=str(trained_causal / "best"), out=str(tmp_path / "e")))
    assert list(tmp_path.iterdir()) == [], "a failed export left files behind"
