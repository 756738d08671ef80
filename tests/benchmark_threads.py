"""The thread default, measured as a user meets it: `python data.py` on demo songs (the
demo build, where torch's own default of one thread per core ran 3x slower than one
thread on a busy machine), at --threads 0 (the default: 1 or all, timed at start), 1 and
all cores, side by side in one run, interleaved, with and without busy neighbours.

    python tests/benchmark_threads.py                     # 4 songs, 3 rounds, idle and 1 busy core
    python tests/benchmark_threads.py --json runs/threads.json

Prints seconds per song for each setting (median over the rounds, and the spread) and
what --threads 0 chose each time. Ratios are the figures to read: the machine's load
moves the seconds.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build(threads, songs, folder):
    """One demo build -> (seconds per song, the threads line data.py printed or '')."""
    shutil.rmtree(folder, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # torch's own default
    t0 = time.perf_counter()
    run = subprocess.run([sys.executable, str(ROOT / "data.py"), "--out", str(folder), "--demo-songs",
                          str(songs), "--encodec-weights", "untrained", "--threads", str(threads)],
                         capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if run.returncode:
        raise SystemExit(f"data.py failed: {run.stderr[-800:]}")
    chose = re.search(r"threads: (\d+) of (\d+)", run.stdout)
    return seconds / songs, (chose.group(0) if chose else "")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--songs", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--busy", type=int, nargs="*", default=[0, 1],
                    help="busy-loop neighbours during each condition")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    cores = os.cpu_count()
    settings = [0, 1, cores]
    result = {"cores": cores, "songs": args.songs, "rounds": args.rounds, "conditions": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for busy in args.busy:
            neighbours = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
            try:
                per = {t: [] for t in settings}
                chose = []
                for _ in range(args.rounds):
                    for t in settings:  # interleaved: a change of load hits every setting alike
                        s, line = build(t, args.songs, Path(tmp) / "d")
                        per[t].append(s)
                        if t == 0:
                            chose.append(line)
            finally:
                for p in neighbours:
                    p.kill()
            figures = {str(t): {"median_s_per_song": statistics.median(v), "min": min(v), "max": max(v)}
                       for t, v in per.items()}
            result["conditions"][f"busy_{busy}"] = {"seconds": figures, "threads_0_chose": chose}
            print(f"{busy} busy neighbour(s), {cores} cores, {args.songs} songs x {args.rounds} rounds:")
            for t in settings:
                f = figures[str(t)]
                name = "--threads 0 (default)" if t == 0 else f"--threads {t}"
                print(f"  {name:22s} {f['median_s_per_song']:.2f} s/song (min {f['min']:.2f}, max "
                      f"{f['max']:.2f}); {f['median_s_per_song'] / figures['1']['median_s_per_song']:.2f}x "
                      "the time of --threads 1")
            print(f"  --threads 0 chose: {'; '.join(chose)}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
