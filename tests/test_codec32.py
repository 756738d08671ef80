"""EnCodec 32 kHz (the proposal's codec, sax/encodec32.py): its numbers, its chunked encode
and decode, its three ways to load, and data -> train -> generate on its tokens. Random
weights only (the published configuration's numbers; nothing is downloaded)."""
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from model import build_delay_pattern, revert_delay_pattern
from sax import encodec32
from sax.codec import (CodecUnavailable, codec_info, decode_codes, encode_audio,
                       fill_untrained_codebooks, load_codec)
from sax.demo import render_demo_song

RATE = 32_000


@pytest.fixture(scope="module")
def codec():
    """The untrained 32 kHz codec, its codebooks filled from 16 s of a demo song."""
    torch.manual_seed(0)
    c = load_codec("untrained", 2.2, "cpu", "encodec_32khz")
    backing, solo, _ = render_demo_song(0, 16.0, 0, RATE)
    fill_untrained_codebooks(c, (backing + solo).astype(np.float32), 0)
    return c


def test_the_numbers_are_read_from_the_models(codec):
    big = codec_info(codec, "untrained")
    assert {k: big[k] for k in ("name", "sample_rate", "frame_rate", "hop", "n_codebooks", "card",
                                "bandwidth_kbps", "causal")} == {
        "name": "encodec_32khz", "sample_rate": 32_000, "frame_rate": 50, "hop": 640,
        "n_codebooks": 4, "card": 2048, "bandwidth_kbps": 2.2, "causal": False}
    small = codec_info(load_codec("untrained", 3.0, "cpu"), "untrained")
    assert (small["frame_rate"], small["card"], small["n_codebooks"], small["causal"]) == (75, 1024, 4, True)


def test_chunked_encode_and_decode_equal_whole_file(codec):
    """A non-causal codec needs context on both sides of a chunk: with it, a 2 s chunked
    encode numbers every frame as a whole-file encode does and gives the same codes, but where
    float rounding tips a near tie in the quantizer (measured: 0 frames of 450 on an AVX-512
    machine, 1 on an AVX2 one at one thread and 0 at two, as the kernels sum in another order;
    without the context, 30 frames differ, around every chunk edge), and the decode matches."""
    backing, solo, _ = render_demo_song(1, 9.0, 0, RATE)
    audio = (backing + solo).astype(np.float32)
    whole, chunked = encode_audio(codec, audio, chunk_s=60.0), encode_audio(codec, audio, chunk_s=2.0)
    assert whole.shape == chunked.shape == (4, 450) and whole.dtype == np.int16
    differ = (whole != chunked).any(0)
    assert differ.sum() <= 2, f"{differ.sum()} frames differ: {np.flatnonzero(differ)}"
    assert len(set(whole[0].tolist())) > 50, "the filled codebooks should give varied codes"
    a, b = decode_codes(codec, whole, chunk_s=60.0), decode_codes(codec, whole, chunk_s=2.0)
    assert len(a) == len(b) == 450 * 640
    assert np.abs(a - b).max() < 1e-4, np.abs(a - b).max()


def test_untrained_decoder_ignores_the_codes(codec):
    """What the banners say of the untrained mode holds for this codec too."""
    gen = torch.Generator().manual_seed(0)
    a, b = (decode_codes(codec, torch.randint(0, 2048, (4, 250), generator=gen).numpy())
            for _ in range(2))
    assert abs(a.mean() + 0.07) < 0.01, a.mean()
    assert np.abs(a - b).max() < 1e-3, "two random code sequences should decode to the same sound"


def test_local_folder_in_the_published_layout(tmp_path, codec):
    """--encodec-weights FOLDER: config.json + model.safetensors, as save_pretrained (and the
    Hub repo) lay them out; loaded back, the same model. Wrong folders: one line each."""
    folder = tmp_path / "encodec_32khz"
    codec.model.save_pretrained(folder)
    assert {p.name for p in folder.iterdir()} >= {"config.json", "model.safetensors"}
    loaded = load_codec(str(folder), 2.2, "cpu", "encodec_32khz")
    audio = render_demo_song(2, 3.0, 0, RATE)[0].astype(np.float32)
    assert np.array_equal(encode_audio(codec, audio), encode_audio(loaded, audio))
    with pytest.raises(SystemExit, match="no config.json there"):
        load_codec(str(tmp_path / "nothing"), 2.2, "cpu", "encodec_32khz")
    # a folder of the 24 kHz model's configuration (transformers' default) is not this codec
    EncodecConfig, EncodecModel = encodec32.transformers_encodec()
    EncodecModel(EncodecConfig()).save_pretrained(tmp_path / "other")
    with pytest.raises(SystemExit, match=r"not the EnCodec 32 kHz model \(sampling_rate 24000"):
        load_codec(str(tmp_path / "other"), 2.2, "cpu", "encodec_32khz")
    (folder / "model.safetensors").write_bytes(b"cut short")
    with pytest.raises(SystemExit, match="not loadable"):
        load_codec(str(folder), 2.2, "cpu", "encodec_32khz")


def test_no_network_gives_the_three_ways_out():
    """Offline (the suite sets HF_HUB_OFFLINE), at once: no retries, the three ways named."""
    with pytest.raises(CodecUnavailable) as err:
        load_codec("pretrained", 2.2, "cpu", "encodec_32khz")
    text = str(err.value)
    assert "facebook/encodec_32khz" in text and "--encodec-weights path/to/encodec_32khz/" in text
    assert "--encodec-weights untrained" in text


def test_delay_pattern_at_card_2048():
    codes = torch.randint(0, 2048, (2, 4, 30))
    seq, mask = build_delay_pattern(codes, special=2048)
    assert seq.shape == (2, 4, 33) and int(seq.max()) == 2048 and seq.dtype == codes.dtype
    assert int((seq == 2048).sum()) == 2 * 4 * 3 and int(mask.sum()) == 4 * 30
    assert torch.equal(revert_delay_pattern(seq), codes)
    # the arrays data.py writes are int16: 2048 and its special token fit
    assert int(np.int16(2048)) == 2048


@pytest.fixture(scope="module")
def run32(tmp_path_factory):
    """data.py --codec encodec_32khz (3 songs of 6 s, untrained), then train.py for 4 steps."""
    from conftest import quick_train_config
    from data import DataConfig, build_dataset
    from train import train
    data_dir = tmp_path_factory.mktemp("demo32")
    meta = build_dataset(DataConfig(out=str(data_dir), codec="encodec_32khz", demo_songs=3,
                                    demo_seconds=6.0, encodec_weights="untrained", device="cpu"))
    out = tmp_path_factory.mktemp("run32")
    train(quick_train_config(data_dir, out, max_steps=4, eval_every=2, save_every=2))
    return data_dir, meta, out


def test_data_train_generate_on_its_tokens(run32, tmp_path):
    import generate as G
    data_dir, meta, out = run32
    numbers = meta["codec"]
    assert (numbers["name"], numbers["frame_rate"], numbers["card"], numbers["causal"]) == (
        "encodec_32khz", 50, 2048, False)
    assert meta["settings"]["bandwidth"] == 2.2, "--bandwidth 0 is settled to the codec's own"
    train = np.load(data_dir / "train_solo.npy")
    assert train.shape[0] == 4 and 0 <= train.min() and train.max() < 2048 and train.dtype == np.int16
    config = json.loads((out / "best" / "config.json").read_text())
    assert (config["model"]["card"], config["model"]["frame_rate"], config["model"]["n_codebooks"]) == (
        2048, 50, 4)
    cfg = G.GenerateConfig(checkpoint=str(out / "best"), out=str(tmp_path / "s"), device="cpu",
                           duration=2.0)
    result = json.loads(G.main(cfg).read_text())
    audio, rate = sf.read(tmp_path / "s" / "solo.wav")
    assert rate == RATE and len(audio) == 2 * RATE, (rate, len(audio))
    assert result["codec"]["name"] == "encodec_32khz" and len(result["solo_tokens"][0]) == 4
    # phase 5 streams its codec: refused in one line naming the causal one
    with pytest.raises(SystemExit, match="needs a causal codec: encodec_32khz .*encodec_24khz"):
        G.main(G.GenerateConfig(checkpoint=str(out / "best"), out=str(tmp_path / "x"),
                                device="cpu", stream=True))


def test_export_and_runner_refuse_it(run32, tmp_path, exported):
    import onnx_export
    import onnx_runner
    _, _, out = run32
    with pytest.raises(SystemExit, match="onnx_export.py needs a causal codec: encodec_32khz"):
        onnx_export.main(onnx_export.ExportConfig(checkpoint=str(out / "best"), out=str(tmp_path / "o")))
    numbers = json.loads((exported[0] / "runner.json").read_text())
    assert numbers["codec_causal"] is True
    numbers["codec_causal"] = False
    with pytest.raises(SystemExit, match="looks ahead .*encodec_24khz"):
        onnx_runner.check_numbers(numbers, "runner.json")


def test_bandwidth_the_codec_lacks_is_one_line(tmp_path):
    from data import DataConfig, build_dataset
    with pytest.raises(SystemExit, match=r"--bandwidth 3: encodec_32khz offers 2.2 kbps"):
        build_dataset(DataConfig(out=str(tmp_path / "d"), codec="encodec_32khz", bandwidth=3.0))
    assert not (tmp_path / "d").exists(), "nothing is created before the settings are checked"
