"""Past one process, measured: window loading, one process against two, and the all-reduce.

    python tests/benchmark_scaling.py                 # the tiny preset, 1 thread per process
    python tests/benchmark_scaling.py --json runs/scaling.json

Prints, on the demo corpus (an 8-song one built first into a temporary folder):
  1. window loading alone (sax.dataset.Windows.sample, memory-mapped): frames per second;
  2. one train.py process against two under torchrun (gloo, one thread each), the same
     global batch: median frames per second of the training steps of each;
  3. the all-reduce of one step's gradients (the model's parameter count, in fp32) between
     the two processes, alone: milliseconds per step.
Figures of one machine at one moment: compare them within a run.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def loading(data_dir, batch, T, seconds=3.0):
    """Frames per second of drawing training windows alone (no model)."""
    import torch

    from sax.dataset import Windows, load_dataset
    windows = Windows(data_dir, "train", load_dataset(data_dir), T)
    gen, frames, t0 = torch.Generator().manual_seed(0), 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        backing, _ = windows.sample(batch, gen)
        frames += backing.shape[0] * T
    return frames / (time.perf_counter() - t0)


def training(data_dir, out, processes, steps, preset):
    """Median frames per second of a run's steps (the first two left out: warm-up)."""
    args = ["train.py", "--data", str(data_dir), "--out", str(out), "--preset", preset, "--window-s", "1",
            "--batch-size", "4", "--target-batch", "16", "--max-steps", str(steps), "--eval-every",
            str(steps), "--save-every", str(steps), "--eval-windows", "4", "--no-listen-test",
            "--page-sample-s", "0", "--threads", "1", "--device", "cpu"]
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
                if processes > 1 else [sys.executable])
    subprocess.run([*launcher, *args], cwd=ROOT, env=ENV, check=True, capture_output=True)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(r["frames_per_s"] for r in rows if "frames_per_s" in r and r["step"] > 2)


def allreduce_ms(preset, repeats=20):
    """Run under torchrun: the mean time of all-reducing a gradient of the preset's size."""
    import torch
    import torch.distributed as dist

    from model import SoloTransformer, preset_config
    dist.init_process_group("gloo")
    n = SoloTransformer(preset_config(preset, n_codebooks=4, card=1024)).num_params()
    grad = torch.randn(n)
    dist.all_reduce(grad)  # warm: the connections open
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(repeats):
        dist.all_reduce(grad)
    ms = (time.perf_counter() - t0) / repeats * 1e3
    if dist.get_rank() == 0:
        print(json.dumps({"params": n, "allreduce_ms": ms}))
    dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--json", help="also write the figures to this JSON file")
    ap.add_argument("--allreduce-only", action="store_true", help=argparse.SUPPRESS)  # the torchrun child
    args = ap.parse_args()
    if args.allreduce_only:
        return allreduce_ms(args.preset)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run([sys.executable, "data.py", "--out", str(tmp / "data"), "--demo-songs", "8",
                        "--encodec-weights", "untrained", "--threads", "1", "--device", "cpu"],
                       cwd=ROOT, env=ENV, check=True, capture_output=True)
        load = loading(tmp / "data", 4, 75)
        one = training(tmp / "data", tmp / "one", 1, args.steps, args.preset)
        two = training(tmp / "data", tmp / "two", 2, args.steps, args.preset)
        reduce = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                                 "--nproc_per_node=2", __file__, "--allreduce-only", "--preset", args.preset],
                                cwd=ROOT, env=ENV, check=True, capture_output=True, text=True)
        allreduce = json.loads(reduce.stdout.strip().splitlines()[-1])
    figures = {"preset": args.preset, "window_loading_frames_per_s": load, "one_process_frames_per_s": one,
               "two_processes_frames_per_s": two, "allreduce_ms": allreduce["allreduce_ms"],
               "params": allreduce["params"], "threads_per_process": 1, "cpus": os.cpu_count(),
               "command": "python tests/benchmark_scaling.py" + (f" --preset {args.preset}"
                                                                 if args.preset != "tiny" else "")}
    print(f"{args.preset}: window loading alone {load:,.0f} frames/s; training: one process {one:,.0f} "
          f"frames/s, two under torchrun {two:,.0f} frames/s ({two / one:.2f}x); all-reduce of "
          f"{allreduce['params'] / 1e6:.2f} M fp32 gradients between the two: {allreduce['allreduce_ms']:.1f} ms "
          f"per step (1 thread per process, {os.cpu_count()} CPUs)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
