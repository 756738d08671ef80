"""
sax/codec.py -- the codec: EnCodec 24 kHz (the default, causal) or EnCodec 32 kHz (the
proposal's, sax/encodec32.py); loading either (pretrained, local weights or untrained),
audio -> codes and back, and the codec a dataset or a checkpoint was made with.
"""
import warnings
from pathlib import Path

import numpy as np
import torch

from sax import encodec32
from sax.files import atomic_write
from sax.machine import OFFLINE_HELP

UNTRAINED_AUDIO = ("the UNTRAINED codec's decoder ignores the codes: every "
                   "file it decodes is the same DC offset (about -0.07) with "
                   "faint fixed tones (-36 to -40 dBFS), whatever the model wrote")

# ----------------------------------------------------------------------------
# 6. EnCodec
# ----------------------------------------------------------------------------
# The two codecs data.py --codec offers, with what must be known before one is loaded.
# Everything else (frames per second, codebooks, card, causal) is read from the loaded
# model by codec_info and stored in meta.json, where every later step reads it.
# calibration_s: the audio the untrained mode fills its codebooks from, about 4 frames
# per code (60 s at 75 Hz for 1024 codes; 180 s at 50 Hz for 2048).
CODECS = {
    "encodec_24khz": {"sample_rate": 24_000, "bandwidths": (1.5, 3.0, 6.0, 12.0, 24.0),
                      "bandwidth": 3.0, "calibration_s": 60},
    encodec32.NAME: {"sample_rate": 32_000, "bandwidths": (2.2,), "bandwidth": 2.2,
                     "calibration_s": 180},
}


class CodecUnavailable(SystemExit):
    """The pretrained EnCodec weights could not be fetched (offline machine)."""


def load_codec(weights, bandwidth, device, name="encodec_24khz"):
    """The codec `name` at `bandwidth` kbps: weights 'pretrained' (downloaded once, then
    cached), local weights (24 kHz: a .th file; 32 kHz: a folder), or 'untrained'."""
    if name == encodec32.NAME:  # its one bandwidth, 2.2 kbps (data.py checks --bandwidth)
        codec = encodec32.build(weights, lambda err: CodecUnavailable(
            f"Could not download the EnCodec 32 kHz weights ({encodec32.HUB_ID} from the "
            f"Hugging Face Hub): {err}\n" + OFFLINE_HELP.format(
                flag="--encodec-weights path/to/encodec_32khz/",
                fallback="--encodec-weights untrained")))
        return codec.eval().to(device)
    return load_encodec24(weights, bandwidth).eval().to(device)


def load_encodec24(weights, bandwidth):
    """EnCodec 24 kHz: weights 'pretrained' (torch hub cache), a local .th path, or 'untrained'.

    A local file is read with torch.load(weights_only=True): tensors only, no code
    can run. (encodec's own loader unpickles freely; it is not used here.)
    """
    from encodec import EncodecModel
    # encodec 0.1.1's own, harmless
    warnings.filterwarnings("ignore", message=".*weight_norm.*deprecated")
    if weights == "untrained":
        codec = EncodecModel.encodec_model_24khz(pretrained=False)
    elif weights == "pretrained":
        try:
            codec = EncodecModel.encodec_model_24khz(pretrained=True)
        except Exception as err:
            raise CodecUnavailable(
                "Could not download the EnCodec 24 kHz weights "
                f"(torch hub, from the encodec release URL): {err}\n"
                + OFFLINE_HELP.format(flag="--encodec-weights path/to/encodec_24khz-d7cc33bc.th",
                                      fallback="--encodec-weights untrained")) from None
    else:
        path = Path(weights)
        if not path.is_file():
            raise SystemExit(f"--encodec-weights {weights}: no such file; "
                             "give the path of encodec_24khz-d7cc33bc.th")
        codec = EncodecModel.encodec_model_24khz(pretrained=False)
        try:
            codec.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as err:  # not torch.save's, cut short, or another model's tensors
            why = (str(err).strip().splitlines() or [type(err).__name__])[0][:120]
            raise SystemExit(f"--encodec-weights {weights}: not the EnCodec 24 kHz weights "
                             f"({why}): give the path of encodec_24khz-d7cc33bc.th") from None
    codec.set_target_bandwidth(bandwidth)  # without it, all 32 codebooks are used
    return codec


def codec_info(codec, weights):
    """The codec's numbers, as stored in meta.json: model.py reads K, card, frame_rate here,
    and phase 5 reads `causal` (a codec whose convolutions look ahead cannot stream)."""
    if isinstance(codec, encodec32.Encodec32):
        name, K, card = codec.name, codec.n_codebooks(), codec.card()
    else:
        name, card = "encodec_24khz", codec.quantizer.bins
        K = codec.quantizer.get_num_quantizers_for_bandwidth(codec.frame_rate, codec.bandwidth)
    return {"name": name, "weights": weights, "bandwidth_kbps": codec.bandwidth,
            "sample_rate": codec.sample_rate, "frame_rate": codec.frame_rate,
            "hop": codec.sample_rate // codec.frame_rate,
            "n_codebooks": K, "card": card, "untrained": weights == "untrained",
            "causal": codec_causal(codec)}


def codec_causal(codec):
    """Whether the codec streams: read from the model, never assumed (the 32 kHz model's
    configuration; the 24 kHz model's padded convolutions, each causal or not)."""
    if isinstance(codec, encodec32.Encodec32):
        return codec.causal
    return all(conv.causal for part in (codec.encoder, codec.decoder)
               for conv in part.modules() if hasattr(conv, "causal"))


def codebooks(codec, K):
    """The first K stages of the codec's residual quantizer (each: embed [card, D],
    inited, encode, decode)."""
    if isinstance(codec, encodec32.Encodec32):
        return codec.codebooks()[:K]
    return [layer._codebook for layer in codec.quantizer.vq.layers[:K]]


def require_causal_codec(numbers, what):
    """Phase 5 tokenizes and decodes a chunk at a time: refused, in one line, for a codec
    whose convolutions look ahead. (meta.json without "causal" is the 24 kHz codec's.)"""
    if not numbers.get("causal", True):
        raise SystemExit(f"{what} needs a causal codec: {numbers['name']} looks ahead (its "
                         "convolutions are not causal), so it cannot stream; use the causal "
                         "24 kHz codec: python data.py --codec encodec_24khz, and train on that")


@torch.no_grad()
def fill_untrained_codebooks(codec, audio, seed):
    """Give an untrained EnCodec codebooks that depend on the audio (its are all zero).

    Stage by stage: set the codebook's rows to frames drawn (seeded) from the current
    residual of the encoder's output, quantize, subtract, go on to the next stage.
    Quick where EnCodec's own k-means init is not. Tokens then vary with the audio,
    but the decoder ignores them (UNTRAINED_AUDIO): for testing the plumbing only.
    """
    x = torch.from_numpy(audio)[None, None].to(next(codec.parameters()).device)  # [1, 1, N]
    residual = codec.encoder(x)[0].T                                              # [F, D]
    gen = torch.Generator().manual_seed(seed)
    for book in codebooks(codec, codec_info(codec, "untrained")["n_codebooks"]):
        rows = torch.randint(0, residual.size(0), (book.codebook_size,), generator=gen)
        book.embed.copy_(residual[rows.to(residual.device)])
        book.inited.fill_(1)
        residual = residual - book.decode(book.encode(residual))


@torch.no_grad()
def encode_audio(codec, audio, chunk_s=30.0, context_s=1.0):
    """Mono audio at the codec's rate [N] -> codes int16 [K, ceil(N / hop)], in chunks so
    memory stays bounded.

    Each chunk is a whole number of frames, so the chunks' codes join into exactly
    the frames a whole-file encode would number. The causal 24 kHz encoder's state does
    not cross a chunk boundary: a frame right after one may differ slightly from a
    whole-file encode, a price paid once every 30 s. The 32 kHz encoder looks ahead as
    well as back, so each of its chunks is encoded with context_s of audio on both sides
    and only the chunk's own frames are kept: the codes then equal a whole-file encode but
    where float rounding tips a near tie in the quantizer (tests/test_codec32.py).
    """
    hop = codec.sample_rate // codec.frame_rate
    chunk = int(chunk_s * codec.frame_rate) * hop  # a whole number of frames per chunk
    context = 0 if codec_causal(codec) else int(context_s * codec.frame_rate) * hop
    device = next(codec.parameters()).device
    parts = []
    for start in range(0, len(audio), chunk):
        lo = max(0, start - context)
        # [1, 1, n]
        piece = np.ascontiguousarray(audio[lo:start + chunk + context])
        x = torch.from_numpy(piece)[None, None].to(device)
        frames = codec.encode(x)                                        # [(codes [1, K, F], scale)]
        codes = torch.cat([c for c, _ in frames], dim=-1)[0].cpu()        # [K, F]
        first = (start - lo) // hop                                       # the chunk's own frames
        parts.append(codes[:, first:first + chunk // hop])
    # [K, F]; card 2048 fits int16
    return torch.cat(parts, dim=-1).numpy().astype(np.int16)



@torch.no_grad()
def decode_codes(codec, codes, chunk_s=10.0, context_s=1.0):
    """codes [K, F] -> mono audio at the codec's rate [F * hop], in overlapping chunks so
    memory stays bounded.

    EnCodec 24 kHz decodes causally: a sample depends on its own frame and the frames
    before it, never after. Its convolutions reach back a fixed distance and its LSTM
    forgets, so each chunk is decoded together with context_s of the frames before it,
    and only the chunk's own samples are kept. With 1 s of context the result matches a
    whole-track decode to about 1e-7 (test_decode_in_chunks_matches_whole); without it,
    each chunk starts with a click. Decoding 3 minutes at once took over 4 GB. The 32 kHz
    decoder looks ahead too: its chunks get context_s of frames after them as well.
    """
    device = next(codec.parameters()).device
    hop = codec.sample_rate // codec.frame_rate
    chunk, context = max(1, round(chunk_s * codec.frame_rate)), round(context_s * codec.frame_rate)
    after = 0 if codec_causal(codec) else context
    codes = np.asarray(codes, dtype=np.int64)
    parts = []
    for start in range(0, codes.shape[-1], chunk):
        # context frames before the chunk (and after it, for a codec that looks ahead)
        lo = max(0, start - context)
        x = torch.from_numpy(codes[:, lo:start + chunk + after])[None].to(device)  # [1, K, n]
        audio = codec.decode([(x, None)])[0, 0].cpu().numpy()                 # [n * hop (+ a few)]
        # the chunk's own samples
        own = min(start + chunk, codes.shape[-1]) - lo
        parts.append(audio[(start - lo) * hop:own * hop])
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)  # [F * hop]


def prepare_codec(cfg, out, calibration, device, fallback_ok):
    """The dataset's codec: loaded, or (untrained mode) filled once and saved in `out`.

    fallback_ok (the demo corpus only): when the download fails, go on untrained with
    a banner. Your own recordings never fall back silently.
    """
    if cfg.encodec_weights != "untrained":
        try:
            codec = load_codec(cfg.encodec_weights, cfg.bandwidth, device, cfg.codec)
            return codec, codec_info(codec, cfg.encodec_weights)
        except CodecUnavailable as err:
            if not fallback_ok:
                raise
            print("=" * 78 + f"\n{err}\n\nThe demo corpus goes on with "
                             "the UNTRAINED codec: training and its\n"
                  "metrics are real, but the audio carries nothing of the tokens (its decoder\n"
                  "ignores them). For real audio, get the weights (docs/troubleshooting.md)\n"
                  "and rerun with --encodec-weights PATH.\n" + "=" * 78)
    codec = untrained_codec(out, cfg.bandwidth, device, seed=cfg.seed, calibration=calibration,
                            name=cfg.codec)
    return codec, codec_info(codec, "untrained")


def untrained_codec(folder, bandwidth, device, seed=0, calibration=None, name="encodec_24khz"):
    """The untrained codec whose codebooks are saved in folder/codec.safetensors.

    When the file is missing and calibration (a function returning audio) is given,
    the codebooks are filled from that audio and saved there, once: every later run,
    and generate.py, must decode with the very same codebooks or the tokens mean nothing.
    """
    from safetensors.torch import load_file, save
    state_file = Path(folder) / "codec.safetensors"
    torch.manual_seed(seed)  # the untrained encoder and decoder: seeded random weights
    codec = load_codec("untrained", bandwidth, device, name)
    if state_file.exists():
        codec.load_state_dict(load_file(str(state_file), device=str(device)))
    elif calibration is not None:
        fill_untrained_codebooks(codec, calibration(), seed)
        state = {k: v.detach().cpu().contiguous() for k, v in codec.state_dict().items()}
        atomic_write(state_file, lambda f: f.write(save(state)))
    else:
        raise SystemExit(f"{state_file} is missing: this model was trained on "
                         "tokens of the untrained codec, whose codebooks "
                         "live there. Rebuild the dataset with data.py.")
    return codec



def dataset_codec(numbers, home, device, weights=""):
    """The codec a dataset was tokenized with, from its numbers (meta.json's "codec"):
    the untrained one from home/codec.safetensors, or the pretrained weights (`weights`
    says where they are on this machine; default: where the dataset found them)."""
    if numbers["untrained"]:
        return untrained_codec(home, numbers["bandwidth_kbps"], device, name=numbers["name"])
    return load_codec(weights or numbers["weights"], numbers["bandwidth_kbps"], device,
                      numbers["name"])

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
    codec = dataset_codec(numbers, home, device, weights)
    found, m = codec_info(codec, numbers["weights"]), config["model"]
    mismatch = [(k, found[k], m[k]) for k in ("n_codebooks", "card",
                                              "frame_rate") if found[k] != m[k]]
    if mismatch:
        raise SystemExit("the codec does not match the checkpoint: " + ", ".join(
            f"{k} is {a} in the codec but {b} in the model" for k, a, b in mismatch)
            + f". Use the codec settings the model was trained with ({numbers}).")
    return codec, found
