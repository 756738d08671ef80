"""
sax/encodec32.py -- EnCodec 32 kHz, MusicGen's music codec (4 codebooks of 2048 codes at 50 Hz,
2.2 kbps): the codec the proposal names, through transformers' EncodecModel.

The `encodec` package has no 32 kHz model; transformers has it and loads the published
weights (facebook/encodec_32khz on the Hugging Face Hub). This file builds that model
three ways, as sax/codec.py does the 24 kHz one:

    pretrained   from the Hub on first use, then from the Hugging Face cache
    a folder     local weights in the published layout (config.json + model.safetensors)
    untrained    the same architecture with seeded random weights, from the numbers below

and wraps it (Encodec32) so that the rest of the project talks to either codec with the
same few words: sample_rate, frame_rate, bandwidth, causal, encoder, encode, decode.
"""
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch

NAME = "encodec_32khz"
HUB_ID = "facebook/encodec_32khz"

# The published configuration's numbers where they differ from transformers' defaults
# (which are the 24 kHz model's), as transformers' conversion script sets them for
# encodec_32khz. The hop is 8 * 5 * 4 * 4 = 640 samples: 50 frames per second at 32 kHz,
# and 4 codebooks of 11 bits at 50 Hz are the 2.2 kbps of its one bandwidth.
PUBLISHED = {"sampling_rate": 32_000, "upsampling_ratios": [8, 5, 4, 4],
             "target_bandwidths": [2.2], "num_filters": 64, "codebook_size": 2048,
             "use_causal_conv": False, "normalize": False, "use_conv_shortcut": False}


class Encodec32(torch.nn.Module):
    """transformers' EncodecModel, speaking the 24 kHz model's words (the `encodec` package's).

    encode(x [B, 1, N]) -> [(codes [B, K, F], None)] and decode that list -> [B, 1, N']:
    the 24 kHz model's shapes, so encode_audio and decode_codes serve both codecs.
    """

    name = NAME

    def __init__(self, model):
        super().__init__()
        self.model, config = model, model.config
        self.sample_rate = config.sampling_rate
        self.frame_rate = self.sample_rate // config.hop_length      # 50
        self.bandwidth = config.target_bandwidths[0]                  # 2.2 kbps, its only one
        # Read from the configuration, never assumed: a non-causal codec's convolutions
        # look ahead, so it cannot stream (phase 5 refuses it: sax.codec.require_causal_codec).
        self.causal = bool(config.use_causal_conv)

    @property
    def encoder(self):
        """audio [B, 1, N] -> the encoder's output [B, D, F], before quantization."""
        return self.model.encoder

    def codebooks(self):
        """The residual quantizer's stages, first to last: each has embed [card, D],
        inited, encode ([..., D] -> ids) and decode (ids -> [..., D])."""
        return [layer.codebook for layer in self.model.quantizer.layers]

    def n_codebooks(self):
        return self.model.quantizer.get_num_quantizers_for_bandwidth(self.bandwidth)

    def card(self):
        return self.model.config.codebook_size

    def encode(self, x):
        codes = self.model.encode(x, bandwidth=self.bandwidth).audio_codes  # [chunks 1, B, K, F]
        return [(codes[0], None)]

    def decode(self, frames):
        codes = frames[0][0]                                                 # [B, K, F]
        return self.model.decode(codes[None], [None]).audio_values          # [B, 1, F * hop]


def transformers_encodec():
    """transformers' EncodecConfig and EncodecModel, its warnings kept to errors."""
    try:
        import transformers
    except ImportError:
        raise SystemExit("the 32 kHz codec needs transformers: pip install -r "
                         "requirements.lock (or pip install transformers)") from None
    transformers.logging.set_verbosity_error()
    return transformers.EncodecConfig, transformers.EncodecModel


def hub_reachable(timeout=3.0):
    """Whether the Hub can be reached at all: one connection tried, not the retries (about
    25 s) huggingface_hub makes before it gives up on a machine with no network."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("0", "false", ""):
        return False
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # through a proxy: let huggingface_hub find out
    from huggingface_hub import constants
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout).close()
        return True
    except OSError:
        return False


def build(weights, unavailable):
    """The 32 kHz model: weights 'untrained', 'pretrained' (the Hub) or a local folder.

    unavailable(err): the exception to raise when the download fails (sax.codec's
    CodecUnavailable, with its three ways out).
    """
    EncodecConfig, EncodecModel = transformers_encodec()
    if weights == "untrained":
        return Encodec32(EncodecModel(EncodecConfig(**PUBLISHED)))
    if weights == "pretrained":
        try:  # downloaded before: from the Hugging Face cache, with no network at all
            return Encodec32(EncodecModel.from_pretrained(HUB_ID, local_files_only=True,
                                                          dtype=torch.float32))
        except OSError:
            pass  # not in the cache yet
        if not hub_reachable():
            raise unavailable("no connection to the Hugging Face Hub, and the weights are "
                              "not in its cache")
        try:
            model = EncodecModel.from_pretrained(HUB_ID, dtype=torch.float32)
        except Exception as err:  # the Hub down, a cut download
            raise unavailable(err) from None
        return Encodec32(model)
    folder = Path(weights)
    want = f"give a folder holding {HUB_ID}'s config.json and model.safetensors"
    if not (folder / "config.json").is_file():
        raise SystemExit(f"--encodec-weights {weights}: no config.json there; {want}")
    try:
        # safetensors (or a .bin read with weights_only: transformers' own rule); no code runs
        model = EncodecModel.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
    except Exception as err:
        why = (str(err).strip().splitlines() or [type(err).__name__])[0][:120]
        raise SystemExit(f"--encodec-weights {weights}: not loadable ({why}); {want}") from None
    found = {k: getattr(model.config, k) for k in PUBLISHED}
    wrong = [f"{k} {found[k]} (not {v})" for k, v in PUBLISHED.items() if found[k] != v]
    if wrong:
        raise SystemExit(f"--encodec-weights {weights}: not the EnCodec 32 kHz model "
                         f"({', '.join(wrong)}); {want}")
    return Encodec32(model)
