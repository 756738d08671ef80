"""The two codecs side by side, run by hand (pytest does not collect this file):

    python tests/benchmark_codecs.py                    # 1 thread, writes docs/results/codecs.json
    python tests/benchmark_codecs.py --threads 2 --out /tmp/codecs.json

For EnCodec 24 kHz (3 kbps) and EnCodec 32 kHz (2.2 kbps), in one run on one machine:
their numbers as codec_info reads them from the built model (rate, frames per second,
codebooks, card, causal), parameters and fp32 size, and the time data.py's encode_audio
and generate.py's decode_codes take per second of audio (the median of --repeats runs
over a demo song rendered at each codec's rate). Random weights (the untrained mode,
codebooks filled from the same song): speed does not depend on what a codec learned.
And what the untrained decoder makes of two random 10 s code sequences: its DC offset,
the level of what is left (dBFS), and how far apart the two files are (16-bit steps).
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from sax.codec import (CODECS, codec_info, decode_codes, encode_audio,  # noqa: E402
                       fill_untrained_codebooks, load_codec)
from sax.demo import render_demo_song  # noqa: E402
from sax.files import write_json  # noqa: E402


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def one_codec(name, seconds, repeats):
    spec = CODECS[name]
    torch.manual_seed(0)
    codec = load_codec("untrained", spec["bandwidth"], "cpu", name)
    backing, solo, _ = render_demo_song(0, seconds, 0, spec["sample_rate"])
    audio = (backing + solo).astype(np.float32)
    fill_untrained_codebooks(codec, audio, 0)
    codes = encode_audio(codec, audio)
    numbers = codec_info(codec, "untrained")
    params = sum(p.numel() for p in codec.parameters())
    # the untrained mode saves the whole filled codec (sax.codec.untrained_codec): its size
    from safetensors.torch import save
    state_mb = len(save({k: v.contiguous() for k, v in codec.state_dict().items()})) / 1e6
    encode_s = timed(lambda: encode_audio(codec, audio), repeats)
    decode_s = timed(lambda: decode_codes(codec, codes), repeats)
    # what the untrained decoder makes of two random 10 s code sequences (docs/codec.md)
    gen = torch.Generator().manual_seed(0)
    one, two = (decode_codes(codec, torch.randint(0, numbers["card"], (numbers["n_codebooks"],
                                                                        10 * numbers["frame_rate"]),
                                                  generator=gen).numpy()) for _ in range(2))
    untrained = {"dc": round(float(one.mean()), 4),
                 "tone_dbfs": round(float(20 * np.log10(np.std(one))), 1),
                 "max_difference_16bit_steps": round(float(np.abs(one - two).max()) * 32768, 1)}
    return {**{k: numbers[k] for k in ("sample_rate", "frame_rate", "hop", "n_codebooks", "card",
                                       "bandwidth_kbps", "causal")},
            "parameters_m": round(params / 1e6, 2), "fp32_mb": round(params * 4 / 1e6, 1),
            "untrained_state_mb": round(state_mb),
            "audio_s": seconds, "frames": int(codes.shape[1]),
            "encode_s_per_audio_s": round(encode_s / seconds, 4),
            "decode_s_per_audio_s": round(decode_s / seconds, 4), "untrained_decoder": untrained}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "docs" / "results" / "codecs.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = {name: one_codec(name, args.seconds, args.repeats) for name in CODECS}
    print(f"{'':15} {'rate':>6} {'Hz':>4} {'K':>2} {'card':>5} {'kbps':>5} {'causal':>6} "
          f"{'params':>8} {'encode':>13} {'decode':>13}   ({args.threads} thread(s), "
          f"{args.seconds:g} s of audio, median of {args.repeats})")
    for name, r in rows.items():
        print(f"{name:15} {r['sample_rate']:>6} {r['frame_rate']:>4} {r['n_codebooks']:>2} "
              f"{r['card']:>5} {r['bandwidth_kbps']:>5} {str(r['causal']):>6} "
              f"{r['parameters_m']:>7}M {r['encode_s_per_audio_s']:>9.3f} s/s "
              f"{r['decode_s_per_audio_s']:>9.3f} s/s")
    a, b = rows["encodec_24khz"], rows["encodec_32khz"]
    ratios = {"encode_32_over_24": round(b["encode_s_per_audio_s"] / a["encode_s_per_audio_s"], 2),
              "decode_32_over_24": round(b["decode_s_per_audio_s"] / a["decode_s_per_audio_s"], 2)}
    print(f"32 kHz / 24 kHz, per second of audio: encode {ratios['encode_32_over_24']}x, "
          f"decode {ratios['decode_32_over_24']}x")
    result = {"command": " ".join(["python", "tests/benchmark_codecs.py", *sys.argv[1:]]),
              "threads": args.threads, "torch": torch.__version__, "codecs": rows,
              "ratios": ratios}
    write_json(args.out, result)
    print(f"wrote {args.out}")
    print(json.dumps(ratios))


if __name__ == "__main__":
    main()
