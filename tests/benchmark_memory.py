"""What each preset needs at its defaults: the peak memory of `python train.py --preset P`
on the CPU (fp32, batch 16, 4 s windows, 64 evaluation windows), for one step with its
evaluation and its two saves, each run in a process of its own.

    python tests/benchmark_memory.py                      # tiny small base, 1 thread
    python tests/benchmark_memory.py --presets tiny --json runs/memory.json

A 6-song demo corpus (untrained codec) is built in a temporary folder first. The listening
test and the page's sample are off (they sample solos, which on the CPU takes minutes for
the larger presets); on a GPU the figure is the accelerator's, not measured here.
"""
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def peak_of(command):
    """Run command in a child of a fresh Python: -> (its peak resident memory in MB, seconds)."""
    probe = ("import resource, subprocess, sys, time; t = time.time(); "
             "done = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, time.time() - t, "
             "done.returncode); sys.stderr.write(done.stderr[-600:])")
    run = subprocess.run([sys.executable, "-c", probe, *map(str, command)], capture_output=True, text=True)
    mb, seconds, code = run.stdout.split()
    if code != "0":
        raise SystemExit(f"{' '.join(map(str, command[1:]))} failed: {run.stderr}")
    return float(mb), float(seconds)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", nargs="*", default=["tiny", "small", "base"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "data"
        subprocess.run([sys.executable, ROOT / "data.py", "--out", corpus, "--demo-songs", "6",
                        "--encodec-weights", "untrained", "--threads", str(args.threads)],
                       check=True, capture_output=True)
        for preset in args.presets:
            mb, seconds = peak_of([sys.executable, ROOT / "train.py", "--preset", preset, "--data", corpus,
                                   "--out", Path(tmp) / preset, "--max-steps", "1", "--eval-every", "1",
                                   "--no-listen-test", "--page-sample-s", "0", "--device", "cpu",
                                   "--threads", str(args.threads)])
            figures[preset] = {"peak_mb": round(mb), "seconds": round(seconds, 1)}
            print(f"{preset:6s} peak {mb:,.0f} MB, {seconds:.0f} s for one step at the defaults "
                  f"(CPU, fp32, {args.threads} thread)")
    if args.json:
        Path(args.json).write_text(json.dumps({"threads": args.threads, "presets": figures}, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
