"""Figures for data.py, run by hand (pytest does not collect this file):

    python tests/benchmark_data.py              # tokenization speed, then a 10-minute file end to end
    python tests/benchmark_data.py --minutes 3  # a shorter file
    python tests/benchmark_data.py --only decode   # decoding memory only

Prints:
  - the EnCodec tokenization real-time factor on this machine (seconds of audio per
    second of work, 24 kHz model at 3 kbps; random weights run at the speed of the real ones);
  - the peak memory (max resident set size) of data.py processing one long 44.1 kHz
    stereo file: load, Demucs separation (the small random demucs_unittest model, since
    no weights can be downloaded here), RMS selection, tokenization of both stems.
  - the peak memory of decoding --decode-minutes of codes (generate.py's last step),
    in 10 s chunks as decode_codes does, beside the whole track at once (the old way).
Each long run is a child process, so that its peak memory is its own.
"""
import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from sax.audio import resample
from sax.codec import encode_audio, fill_untrained_codebooks, load_codec
from sax.demo import render_demo_song


def tokenization_rtf(seconds=60.0):
    torch.manual_seed(0)
    codec = load_codec("untrained", 3.0, "cpu")
    audio = np.concatenate([sum(render_demo_song(i, 20.0, seed=0)[:2]) for i in range(3)])[:int(seconds * 24000)]
    fill_untrained_codebooks(codec, audio, seed=0)
    encode_audio(codec, audio[:24000])  # warm-up
    t0 = time.perf_counter()
    codes = encode_audio(codec, audio)
    dt = time.perf_counter() - t0
    print(f"tokenization: {seconds:.0f} s of 24 kHz audio -> codes {codes.shape} in {dt:.2f} s = "
          f"{seconds / dt:.1f}x real time ({torch.get_num_threads()} threads)")


def long_file(minutes):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        song = np.concatenate([sum(render_demo_song(i, 30.0, seed=0)[:2]) for i in range(2 * minutes)])
        stereo = resample(np.stack([song, 0.9 * song]), 24000, 44100)
        sf.write(folder / "long.wav", stereo.T, 44100, subtype="PCM_16")
        print(f"long file: {minutes} min, 44.1 kHz stereo, {(folder / 'long.wav').stat().st_size / 1e6:.0f} MB on disk")
        gb, secs = child_peak(
            "import time, data, torch; torch.manual_seed(0); t0 = time.time()\n"
            f"data.build_dataset(data.DataConfig(out={str(Path(tmp) / 'out')!r}, input_dir={str(folder)!r},"
            " demucs_model='demucs_unittest', encodec_weights='untrained', device='cpu'))")
        print(f"long file through data.py: peak memory {gb:.2f} GB (target < 3 GB), {secs} s")


def child_peak(code):
    """Run python code in a fresh process; its printed "PEAK_RSS_MB n SECONDS s" line -> (GB, seconds)."""
    code += ("\nimport resource; print(f'PEAK_RSS_MB {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}"
             " SECONDS {time.time() - t0:.0f}')")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    line = next((ln for ln in run.stdout.splitlines() if ln.startswith("PEAK_RSS_MB")), None)
    if line is None:
        print(run.stdout[-2000:], run.stderr[-2000:])
        raise SystemExit("the child run failed")
    _, peak, _, secs = line.split()
    return int(peak) / 1024, int(secs)


def decoding_peak(minutes, threads):
    """Peak memory of decoding a backing of `minutes` to audio: in chunks, and all at once."""
    for label, chunk_s in (("10 s chunks + 1 s context (decode_codes)", 10.0), ("whole track at once", 1e9)):
        gb, secs = child_peak(
            f"import time, numpy as np, torch; torch.set_num_threads({threads}); torch.manual_seed(0)\n"
            "from sax.codec import decode_codes, load_codec\n"
            "codec = load_codec('untrained', 3.0, 'cpu')\n"
            f"codes = np.random.default_rng(0).integers(0, 1024, (4, {minutes} * 60 * 75))\n"
            f"t0 = time.time(); audio = decode_codes(codec, codes, chunk_s={chunk_s})\n"
            "assert len(audio) == codes.shape[1] * 320")
        print(f"decoding {minutes} min of codes, {label}: peak memory {gb:.2f} GB, {secs} s ({threads} threads)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=int, default=10, help="length of the long file through data.py")
    ap.add_argument("--decode-minutes", type=int, default=3, help="length of the backing decoded to audio")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--only", choices=["all", "tokenize", "long", "decode"], default="all")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.only in ("all", "tokenize"):
        tokenization_rtf()
    if args.only in ("all", "long"):
        long_file(args.minutes)
    if args.only in ("all", "decode"):
        decoding_peak(args.decode_minutes, args.threads)
    print(f"(this process: peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2:.2f} GB)")
