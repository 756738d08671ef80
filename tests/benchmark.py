"""Speed figures for model.py, run by hand (pytest does not collect this file):

    python tests/benchmark.py --threads 2     # tiny and small, 750 frames (10 s at 75 Hz)
    python tests/benchmark.py --presets tiny --threads 1

Sampling is timed as generate.py samples by default: temperature 1, top-k 250.

Prints, for batch 1 on this machine's CPU:
  - decoder steps per second with the KV cache and with the plain loop (which re-runs
    the whole prefix each step), over the same first --plain-steps steps, and their ratio;
    and, beside the sampled figure, greedy decoding (what the model alone costs);
  - seconds of audio generated per wall-clock second (tokens only, no codec);
  - the phase-5 streaming sampler's per-frame time (median, p99) against the 13.3 ms
    a frame lasts at 75 Hz;
  - one training step (forward + backward) with the hand-written attention and with
    the fused kernel.
Random weights: speed does not depend on what the model has learned.
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from model import SoloTransformer, StreamingSampler, generate, generate_plain, preset_config  # noqa: E402


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["tiny", "small"])
    ap.add_argument("--frames", type=int, default=750, help="backing length in frames")
    ap.add_argument("--plain-steps", type=int, default=150, help="steps timed for the plain loop")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--top-k", type=int, default=250, help="sampling top-k (generate.py's default: 250)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch 1, {args.frames} frames, "
          f"temperature 1, top-k {args.top_k}")
    opts = dict(temperature=1.0, top_k=args.top_k)
    for name in args.presets:
        torch.manual_seed(0)
        cfg = preset_config(name, max_frames=args.frames)
        model = SoloTransformer(cfg).eval()
        K, T, rate = cfg.n_codebooks, args.frames, cfg.frame_rate
        backing = torch.randint(0, cfg.card, (1, K, T))
        generate(model, backing[..., :20], n_frames=20, **opts)  # warm-up
        n = args.plain_steps
        _, t_plain = timed(lambda: generate_plain(model, backing, n_frames=n - K + 1, **opts))
        _, t_cached_n = timed(lambda: generate(model, backing, n_frames=n - K + 1, **opts))
        _, t_cached = timed(lambda: generate(model, backing, **opts))
        _, t_greedy = timed(lambda: generate(model, backing, temperature=0))  # no sampling cost: the model alone
        steps = T + K - 1
        print(f"\n[{name}] {model.num_params() / 1e6:.1f} M parameters")
        print(f"  first {n} steps:  cached {n / t_cached_n:7.1f} steps/s   plain {n / t_plain:7.1f} steps/s"
              f"   ratio {t_plain / t_cached_n:5.1f}x")
        print(f"  all {steps} steps, cached: {steps / t_cached:7.1f} steps/s = "
              f"{T / rate / t_cached:5.2f} s of audio per second (real time = 1); greedy (no top-k draw): "
              f"{steps / t_greedy:7.1f} steps/s")
        # Phase 5: the same size with a causal encoder and a 10 s window, frame by frame.
        torch.manual_seed(0)
        scfg = preset_config(name, max_frames=args.frames, causal_encoder=True, attn_window=args.frames)
        smodel = SoloTransformer(scfg).eval()
        sampler = StreamingSampler(smodel, n_frames=T, **opts)
        times = []
        for t in range(T):
            _, dt = timed(lambda: sampler.push(backing[..., t]))
            times.append(dt * 1e3)
        times.sort()
        p99 = times[int(0.99 * (len(times) - 1))]
        print(f"  streaming per frame: median {statistics.median(times):5.2f} ms, p99 {p99:5.2f} ms "
              f"(budget {1e3 / rate:.1f} ms)")
        # Training step at T frames, manual attention against the fused kernel.
        solo = torch.randint(0, cfg.card, (1, K, T))
        for impl in ("manual", "sdpa"):
            torch.manual_seed(0)
            tmodel = SoloTransformer(preset_config(name, max_frames=T, attn_impl=impl)).train()
            tmodel.loss(backing, solo)[0].backward()  # warm-up
            reps = 3
            t0 = time.perf_counter()
            for _ in range(reps):
                tmodel.zero_grad(set_to_none=True)
                tmodel.loss(backing, solo)[0].backward()
            print(f"  train step (B=1, T={T}), {impl:6s} attention: {(time.perf_counter() - t0) / reps * 1e3:7.1f} ms")


if __name__ == "__main__":
    main()
