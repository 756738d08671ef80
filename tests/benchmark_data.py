"""Figures for data.py, run by hand (pytest does not collect this file):

    python tests/benchmark_data.py              # tokenization speed, then a 10-minute file end to end
    python tests/benchmark_data.py --minutes 3  # a shorter file

Prints:
  - the EnCodec tokenization real-time factor on this machine (seconds of audio per
    second of work, 24 kHz model at 3 kbps; random weights run at the speed of the real ones);
  - the peak memory (max resident set size) of data.py processing one long 44.1 kHz
    stereo file: load, Demucs separation (the small random demucs_unittest model, since
    no weights can be downloaded here), RMS selection, tokenization of both stems.
The long file runs in a child process so that its peak memory is its own.
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
import data  # noqa: E402


def tokenization_rtf(seconds=60.0):
    torch.manual_seed(0)
    codec = data.load_codec("untrained", 3.0, "cpu")
    audio = np.concatenate([sum(data.render_demo_song(i, 20.0, seed=0)[:2]) for i in range(3)])[:int(seconds * 24000)]
    data.fill_untrained_codebooks(codec, audio, seed=0)
    data.encode_audio(codec, audio[:24000])  # warm-up
    t0 = time.perf_counter()
    codes = data.encode_audio(codec, audio)
    dt = time.perf_counter() - t0
    print(f"tokenization: {seconds:.0f} s of 24 kHz audio -> codes {codes.shape} in {dt:.2f} s = "
          f"{seconds / dt:.1f}x real time ({torch.get_num_threads()} threads)")


def long_file(minutes):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        song = np.concatenate([sum(data.render_demo_song(i, 30.0, seed=0)[:2]) for i in range(2 * minutes)])
        stereo = data.resample(np.stack([song, 0.9 * song]), 24000, 44100)
        sf.write(folder / "long.wav", stereo.T, 44100, subtype="PCM_16")
        print(f"long file: {minutes} min, 44.1 kHz stereo, {(folder / 'long.wav').stat().st_size / 1e6:.0f} MB on disk")
        cmd = [sys.executable, "-c", (
            "import resource, time, data, torch; torch.manual_seed(0); t=time.time();"
            f"data.build_dataset(data.DataConfig(out={str(Path(tmp) / 'out')!r}, input_dir={str(folder)!r},"
            " demucs_model='demucs_unittest', encodec_weights='untrained', device='cpu'));"
            "print(f'PEAK_RSS_MB {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}"
            " SECONDS {time.time() - t:.0f}')")]
        run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        line = next((ln for ln in run.stdout.splitlines() if ln.startswith("PEAK_RSS_MB")), None)
        if line is None:
            print(run.stdout[-2000:], run.stderr[-2000:])
            raise SystemExit("the long-file run failed")
        _, peak, _, secs = line.split()
        print(f"long file through data.py: peak memory {int(peak) / 1024:.2f} GB (target < 3 GB), {secs} s")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=int, default=10)
    args = ap.parse_args()
    tokenization_rtf()
    long_file(args.minutes)
    print(f"(this process: peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2:.2f} GB)")
