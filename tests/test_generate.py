"""generate.py: end to end, determinism, windows, guidance, streaming, bad input."""
import dataclasses
import json

import numpy as np
import pytest
import soundfile as sf
import torch

import generate as G

from model import ModelConfig, SoloTransformer
from sax.audio import CODEC_RATE
from sax.codec import load_codec_for
from sax.dataset import load_split
from sax.demo import render_demo_song
from sax.checkpoints import load_model
from sax.sampling import sample_solo
from sax.audio import mix_audio


def run(checkpoint, out, **kw):
    cfg = G.GenerateConfig(checkpoint=str(checkpoint), out=str(out), device="cpu", **kw)
    return json.loads(G.main(cfg).read_text())


def test_end_to_end_from_validation_clip(trained, tmp_path):
    out, _ = trained
    result = run(out / "best", tmp_path / "s", duration=2.0)
    for name in ("solo.wav", "mix.wav", "backing.wav"):
        audio, rate = sf.read(tmp_path / "s" / name)
        assert rate == CODEC_RATE and len(audio) == 2 * CODEC_RATE, f"{name}: {len(audio)} samples at {rate} Hz"
        assert np.abs(audio).max() <= 0.98 + 1e-4, f"{name} clips"
    assert (tmp_path / "s" / "solo.png").stat().st_size > 10_000, "the picture is missing or empty"
    stats = result["solo_tokens"][0]
    assert len(stats) == 4 and all(s["distinct"] > 1 for s in stats), f"token statistics {stats}"
    assert result["timings"]["tokens_realtime_factor"] > 0
    fig = result["listening"]  # a demo validation clip: scored against its band's kicks and chords
    solos = ("own", "mismatched", "true", "true_mismatched")
    assert all(0 <= fig[f"{m}_{s}"] <= 1 for m in ("kick_auc", "note_in_chord") for s in solos), fig
    assert fig["note_in_chord_true"] > 0.6, f"the probe reads the true lead's notes in its chords: {fig}"
    for metric, kind in (("kick_auc", "rhythm"), ("note_in_chord", "harmony")):
        scale = fig[f"{metric}_true"] - fig[f"{metric}_true_mismatched"]
        assert abs(fig[f"plays_with_band_{kind}"] * scale - (fig[f"{metric}_own"] - fig[f"{metric}_mismatched"])) < 1e-9
    assert (tmp_path / "s" / "listening.png").stat().st_size > 10_000, "the probes' picture is missing or empty"
    page = (tmp_path / "s" / "index.html").read_text()
    # the probes' reading of the scored window (the model's 1 s), heard offline; silent
    # where the probes read no onset (sax.listening.read_notes is tested on its own)
    for name in ("reading.wav", "true_reading.wav"):
        audio, rate = sf.read(tmp_path / "s" / name)
        assert rate == CODEC_RATE and len(audio) == CODEC_RATE and np.isfinite(audio).all(), name
        assert f'src="{name}"' in page, name
    assert "not the model's audio" in page
    assert "chord_tone_fit" not in fig, "pitches of the untrained codec's audio mean nothing: no chord-tone fit"


@pytest.mark.parametrize("demo", [True, False])
def test_a_pretrained_codec_adds_the_audio_probes(trained, tmp_path, monkeypatch, capsys, demo):
    """With a codec whose audio means something (here the untrained one, declared pretrained:
    the plumbing, not the figures), the take is scored from the decoded audio too, on the
    demo corpus and on any other dataset (one's own recordings: only the audio probes)."""
    import sax.pages as pages
    real = pages.load_dataset

    def as_pretrained(folder):
        meta = real(folder)
        return {**meta, "demo": meta["demo"] if demo else False,
                "codec": {**meta["codec"], "untrained": False}}
    monkeypatch.setattr(pages, "load_dataset", as_pretrained)
    out, _ = trained
    fig = run(out / "best", tmp_path / "s", duration=2.0)["listening"]
    assert set(fig["audio"]) >= {"plays_with_band_onsets", "plays_with_band_beats",
                                 "plays_with_band_pitch", "onset_f_own", "onset_f_true"}
    assert ("kick_auc_own" in fig) == demo and ("chord_tone_fit" in fig) == demo
    assert "listening from the decoded audio" in capsys.readouterr().out
    page = (tmp_path / "s" / "index.html").read_text()
    assert "From the decoded audio" in page and ("listening.png" in page) == demo


def test_seed_makes_it_deterministic(trained, tmp_path):
    out, _ = trained
    a = sf.read(tmp_path / "a" / "solo.wav")[0] if run(out / "best", tmp_path / "a", duration=1.5, seed=3) else None
    b = sf.read(tmp_path / "b" / "solo.wav")[0] if run(out / "best", tmp_path / "b", duration=1.5, seed=3) else None
    c = sf.read(tmp_path / "c" / "solo.wav")[0] if run(out / "best", tmp_path / "c", duration=1.5, seed=4) else None
    assert np.array_equal(a, b), "same seed, different solo"
    assert not np.array_equal(a, c), "different seeds gave the same solo"


def test_windows_join_over_their_overlap():
    torch.manual_seed(0)
    model = SoloTransformer(ModelConfig(card=32, d_model=32, n_heads=4, d_ff=64, max_frames=20)).eval()
    backing = torch.randint(0, 32, (2, 4, 53))
    cfg = G.GenerateConfig(stride_s=8 / 75, seed=5, top_k=0)
    solo = G.windowed_generate(model, backing, cfg, 75.0, progress=None)
    assert solo.shape == (2, 4, 53) and solo.max() < 32, f"solo {tuple(solo.shape)}"
    # Window 2 starts at frame 8 and was prompted with frames 8..19 of window 1: running it
    # again by hand must give back exactly the frames the loop kept.
    again = sample_solo(model, backing[..., 8:28], seed=6, prompt=solo[..., 8:20], top_k=0,
                        cfg_coef=cfg.guidance)  # guided, as generate.py samples by default
    assert torch.equal(again, solo[..., 8:28]), "window 2 does not continue window 1 consistently"


def test_guidance_path(trained, tmp_path):
    out, _ = trained
    plain = run(out / "best", tmp_path / "p", duration=1.0, temperature=0.0)
    one = run(out / "best", tmp_path / "one", duration=1.0, temperature=0.0, guidance=1.0)
    three = run(out / "best", tmp_path / "three", duration=1.0, temperature=0.0, guidance=3.0)
    assert plain["solo_tokens"] == one["solo_tokens"], "guidance 1 must equal plain sampling"
    assert np.array_equal(sf.read(tmp_path / "p" / "solo.wav")[0], sf.read(tmp_path / "one" / "solo.wav")[0])
    assert three["settings"]["guidance"] == 3.0
    # ... and guidance 3 must change what is written: the tokens themselves, greedy, same seed.
    model, config = load_model(out / "best")
    backing = torch.from_numpy(np.asarray(load_split(config["data"]["dir"], "val")[0][:, :75],
                                          dtype=np.int64))[None]
    # The same seed draws the same random numbers: only the guided distribution can differ.
    drawn = {coef: sample_solo(model, backing, temperature=1.0, seed=0, cfg_coef=coef) for coef in (None, 1.0, 3.0)}
    assert torch.equal(drawn[None], drawn[1.0])
    assert not torch.equal(drawn[None], drawn[3.0]), "guidance 3 wrote the unguided solo"


def test_backing_file_and_bad_inputs(trained, tmp_path):
    out, _ = trained
    backing, _, _ = render_demo_song(2, 3.0, seed=0)
    sf.write(tmp_path / "trio.wav", backing, CODEC_RATE)
    result = run(out / "best", tmp_path / "f", backing=str(tmp_path / "trio.wav"))
    assert abs(result["seconds"] - 3.0) < 0.02 and len(sf.read(tmp_path / "f" / "solo.wav")[0]) == 3 * CODEC_RATE
    with pytest.raises(SystemExit, match="already holds"):
        run(out / "best", tmp_path / "f", backing=str(tmp_path / "trio.wav"))
    (tmp_path / "junk.wav").write_text("not audio")
    with pytest.raises(SystemExit, match=r"junk\.wav: not a readable \.wav file .*is it audio"):
        run(out / "best", tmp_path / "g", backing=str(tmp_path / "junk.wav"))
    sf.write(tmp_path / "short.wav", backing[:CODEC_RATE // 2], CODEC_RATE)
    with pytest.raises(SystemExit, match=r"short\.wav: 0\.50 s long; give at least 1 s"):
        run(out / "best", tmp_path / "h", backing=str(tmp_path / "short.wav"))
    bad = tmp_path / "bad_ckpt"
    bad.mkdir()
    for name in ("model.safetensors", "config.json"):
        (bad / name).write_bytes((out / "best" / name).read_bytes())
    config = json.loads((bad / "config.json").read_text())
    config["data"]["dir"] = str(out.parent / "missing")  # its codec must then come from the folder
    (bad / "codec.safetensors").write_bytes((trained_data_dir(out) / "codec.safetensors").read_bytes())
    config["model"]["card"] = 2048
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(SystemExit, match="card is 1024 in the codec but 2048 in the model"):
        load_codec_for(config, bad, "", "cpu")


def trained_data_dir(run_dir):
    return __import__("pathlib").Path(json.loads((run_dir / "best" / "config.json").read_text())["data"]["dir"])


def test_streaming_generation(trained_causal, tmp_path):
    result = run(trained_causal / "best", tmp_path / "st", duration=1.0, stream=True, chunk_ms=40)
    report = result["streaming"]
    assert report["transformer_frame_ms"]["p99"] > 0 and report["codec_chunk_ms"]["median"] > 0, report
    # The measured compute delay covers at least the chunk's own frames (3 at 40 ms), each a step.
    assert report["compute_delay_ms"]["median"] >= 0.5 * 3 * report["transformer_frame_ms"]["median"], report
    audio, rate = sf.read(tmp_path / "st" / "solo.wav")
    assert rate == CODEC_RATE and len(audio) == CODEC_RATE, f"streamed solo {len(audio)} samples"


def test_streaming_several_solos_and_guidance(trained_causal, tmp_path):
    result = run(trained_causal / "best", tmp_path / "two", duration=1.0, stream=True, num_samples=2, seed=1)
    assert result["streaming"]["solos"] == 2
    solos = [sf.read(tmp_path / "two" / f"solo_{i}.wav")[0] for i in range(2)]
    assert all(len(a) == CODEC_RATE for a in solos), "each streamed solo must cover the backing"
    # Guidance must reach the streamed tokens: with the same seed (the same uniform draws),
    # sampling with and without it differs. (Greedy can agree: a briefly trained model's
    # argmax may be one held code either way.)
    folder = trained_causal / "best"
    model, config = G.load_model(folder)
    codec, info = load_codec_for(config, folder, "", "cpu")
    cfg = G.GenerateConfig(checkpoint=str(folder), duration=1.0, temperature=1.0, chunk_ms=40, guidance=None)
    codes, audio, _, _ = G.backing_tokens(cfg, config, codec, info, "cpu")
    plain, _, _ = G.stream(model, codec, audio[:codes.shape[1] * info["hop"]], cfg, info)
    cfg.guidance = 3.0
    guided, guided_audio, report = G.stream(model, codec, audio[:codes.shape[1] * info["hop"]], cfg, info)
    assert report["guidance"] == 3.0 and len(guided_audio) == 1
    assert plain.shape == guided.shape == (1, 4, codes.shape[1])
    assert not torch.equal(plain, guided), "--cfg-coef 3 left the streamed solo unchanged"


def test_streaming_a_model_that_looks_ahead_writes_the_offline_solo(trained_causal):
    """generate.stream with a model that writes 160 ms (12 frames) ahead: the frames finished
    before the first chunk come first, finish() has none left, and the tokens are offline
    sample_solo()'s on the streamed codec's backing codes; the report says how late it lands."""
    folder = trained_causal / "best"
    model, config = G.load_model(folder)
    codec, info = load_codec_for(config, folder, "", "cpu")
    torch.manual_seed(0)
    ahead = SoloTransformer(dataclasses.replace(model.cfg, lookahead=12)).eval()
    cfg = G.GenerateConfig(checkpoint=str(folder), duration=1.0, temperature=1.0, chunk_ms=80, guidance=None)
    codes, audio, _, _ = G.backing_tokens(cfg, config, codec, info, "cpu")
    audio = audio[:codes.shape[1] * info["hop"]]
    solo, solo_audio, report = G.stream(ahead, codec, audio, cfg, info)
    stream = G.CodecStream(codec, 1)
    heard = torch.cat([stream.encode(audio[s:s + 6 * info["hop"]]) for s in range(0, len(audio), 6 * info["hop"])], -1)
    want = G.sample_solo(ahead, heard[None], temperature=1.0, top_k=cfg.top_k, seed=cfg.seed)
    assert solo.shape == want.shape == (1, 4, codes.shape[1]) and torch.equal(solo, want)
    assert len(solo_audio[0]) == len(audio)
    assert report["lookahead_ms"] == 160


def test_stream_report_counts_lateness_from_the_delay_less_the_lookahead():
    """Hand-made timings: an 80 ms chunk, the 40 ms pattern (K = 4 at 75 Hz), compute delays of
    10, 20 and 30 ms. Written 80 ms ahead (6 frames) the solo lands 50, 60, 70 ms late; 160 ms
    ahead (12 frames), early each time, it waits and lands on time (0, never negative)."""
    numbers = {"n_codebooks": 4, "frame_rate": 75.0}
    cfg = G.GenerateConfig()
    six = G.stream_report([1.0], [2.0], [10.0, 20.0, 30.0], 80.0, numbers, cfg, lookahead=6)
    assert six["delay_pattern_ms"] == pytest.approx(40) and six["lookahead_ms"] == pytest.approx(80)
    assert six["end_to_end_delay_ms"]["median"] == pytest.approx(140)
    assert six["late_ms"]["median"] == pytest.approx(60) and six["late_ms"]["p99"] == pytest.approx(69.8)
    twelve = G.stream_report([1.0], [2.0], [10.0, 20.0, 30.0], 80.0, numbers, cfg, lookahead=12)
    assert twelve["late_ms"] == {"median": 0.0, "p99": 0.0}


def test_stream_needs_a_causal_model(trained, tmp_path):
    out, _ = trained
    with pytest.raises(SystemExit, match="needs a causal model"):
        run(out / "best", tmp_path / "x", duration=1.0, stream=True)


def test_mix_removes_dc_before_matching_levels():
    t = np.arange(CODEC_RATE) / CODEC_RATE
    band, lead = 0.2 * np.sin(2 * np.pi * 110 * t), 0.01 * np.sin(2 * np.pi * 440 * t)
    mix, level = mix_audio(band + 0.3, lead - 0.07)  # offsets like the untrained codec's
    assert abs(mix.mean()) < 1e-3 and abs(level.mean()) < 1e-3, "the offsets must not reach the mix"
    assert abs(np.std(level) / np.std(band) - 1) < 1e-3, "the solo's level must match the band's, without offsets"
    assert np.abs(mix).max() < 0.98, "two 0.2-peak sines need no limiting once the offsets are gone"
