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
    a frame lasts at 75 Hz, for a causal model with an attention window of --window
    frames (300, as docs/phase5-streaming.md trains it: every ring holds 300 slots);
  - one training step (forward + backward) with the hand-written attention and with
    the fused kernel;
  - phase 5's deployment, beside the PyTorch streaming sampler: the same causal model
    exported to ONNX (onnx_export.export_steps) and stepped by onnx_runner.SoloStream on
    ONE ONNX Runtime thread, fp32, int8 and int4 weights: per-frame median and p99, frames
    per second; then the whole runner (codec graphs included) on a 10 s backing as a
    separate process: its real-time factor and peak memory (--no-onnx skips this); and the
    floor at batch 1: what reading that many int8 or int4 weights once takes (weight_floor).
--json PATH also writes these figures (the paper's build reads runs/bench.json, made with
`python tests/benchmark.py --threads 1 --json runs/bench.json`: one thread on each side).
Random weights: speed does not depend on what the model has learned.
"""
import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "deploy")]  # the spine scripts and sax/; onnx_export.py
from model import SoloTransformer, preset_config
from sax.codec import codec_info, load_codec
from sax.files import write_json
from sax.sampling import StreamingSampler, sample_solo, sample_solo_plain


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def per_frame(push, finish, T):
    """Time push(t) for every frame and finish() -> (sorted per-frame ms, frames per second)."""
    times = []
    t_all = time.perf_counter()
    for t in range(T):
        _, dt = timed(lambda: push(t))
        times.append(dt * 1e3)
    finish()
    return sorted(times), T / (time.perf_counter() - t_all)


def show(label, times, fps, rate):
    """Print one line of per-frame figures -> them, as the JSON keeps them."""
    p99 = times[int(0.99 * (len(times) - 1))]
    print(f"    {label:28s} median {statistics.median(times):5.2f} ms  p99 {p99:5.2f} ms  "
          f"{fps:7.1f} frames/s = {fps / rate:5.1f}x real time")
    return {"frame_ms_p50": statistics.median(times), "frame_ms_p99": p99, "frames_per_s": fps,
            "realtime_factor": fps / rate}


def onnx_streaming(model, backing, top_k, rate, figures):
    """The causal model exported, stepped by onnx_runner on one thread, fp32, int8 and int4;
    then the whole runner on a 10 s backing in its own process (real time, peak memory).
    Their figures go into `figures`; returns the fastest step's frames per second."""
    import onnx_export
    import onnx_runner
    T = backing.size(-1)
    best = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        codec = load_codec("untrained", 3.0, "cpu")   # random weights: the codec's cost, not its sound
        numbers = codec_info(codec, "untrained")
        onnx_export.write_onnx_folder(model, codec, {"step": 0}, numbers,
                                   onnx_export.ExportConfig(checkpoint="(random weights)"), tmp)
        runner = onnx_runner.read_folder(tmp)
        print("    operators after ONNX Runtime's optimizations, encoder + decoder step: " + ", ".join(
            f"{v} {operators(tmp / e)} + {operators(tmp / d)}" for v, (e, d) in onnx_runner.STEP_GRAPHS.items()))
        for variant in ("fp32", "int8", "int4"):
            stream = onnx_runner.SoloStream(tmp, runner, T, variant, threads=1, top_k=top_k)
            frames = backing[0].numpy()
            times, fps = per_frame(lambda t: stream.push(frames[:, t]), stream.finish, T)
            figures[f"onnx_{variant}"] = show(f"ONNX {variant} (1 thread)", times, fps, rate)
            best = max(best, fps)
        sf.write(tmp / "backing.wav", (0.1 * np.random.default_rng(0).standard_normal(10 * 24000)).astype(np.float32),
                 24000)
        for variant in ("fp32", "int8", "int4"):
            subprocess.run([sys.executable, str(tmp / "onnx_runner.py"), str(tmp), "--backing", str(tmp / "backing.wav"),
                            "--out", str(tmp / variant), "--variant", variant, "--no-pace", "--threads", "1"],
                           check=True, capture_output=True)
            report = json.loads((tmp / variant / "report.json").read_text())
            print(f"    runner, {variant}, 10 s file, codec included: {report['realtime_factor']:4.1f}x real time, "
                  f"per frame p99 {report['frame_ms']['p99']:.2f} ms, codec per {report['chunk_ms']:.0f} ms chunk "
                  f"{report['codec_chunk_ms']['p50']:.1f} ms, peak memory {report['peak_memory_mb']:.0f} MB")
            figures[f"runner_{variant}"] = {key: report[key] for key in (
                "realtime_factor", "chunk_ms", "codec_chunk_ms", "peak_memory_mb", "end_to_end_delay_ms")}
    return best


def operators(path):
    """How many operators ONNX Runtime runs, one after another, for one call of a graph
    (after its fusions, as onnx_runner.session sets them up). Each costs a few
    microseconds however small its tensors: at one frame per call that adds up."""
    import onnx
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.optimized_model_filepath = str(path.with_suffix(".optimized"))
    opts.log_severity_level = 3  # its warning that the saved graph suits this CPU only: it is only counted
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"], disabled_optimizers=["MatMulScaleFusion"])
    return len(onnx.load(opts.optimized_model_filepath).graph.node)


def weight_floor(model):
    """What reading the weights alone costs per frame on one ONNX Runtime thread, in ms,
    for int8 and int4 weights: a chain of matmuls holding as many weights as the model's
    linear layers and heads (every one is read once per frame at batch 1), quantized as
    onnx_export.quantize_step quantizes the steps. No step can be faster."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    import onnx_export
    import onnx_runner
    D = model.cfg.d_model
    n = sum(p.numel() for name, p in model.named_parameters() if p.dim() >= 2 and "emb" not in name)
    rng = np.random.default_rng(0)
    nodes, weights, x = [], [], "x"
    for i in range(max(1, round(n / (8 * D * D)))):  # pairs D -> 4D -> D: 8 D^2 weights each
        for j, shape in enumerate(((D, 4 * D), (4 * D, D))):
            weights.append(numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.02, f"w{i}_{j}"))
            nodes.append(helper.make_node("MatMul", [x, f"w{i}_{j}"], [f"y{i}_{j}"]))
            x = f"y{i}_{j}"
    graph = helper.make_graph(nodes, "floor", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, D])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, None)], weights)
    floors = {}
    with tempfile.TemporaryDirectory() as tmp:
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), f"{tmp}/f.onnx")
        onnx_export.quantize_step(Path(tmp), "f")
        feed = {"x": rng.standard_normal((1, 1, D)).astype(np.float32)}
        for variant in ("int8", "int4"):
            sess = onnx_runner.session(f"{tmp}/f.{variant}.onnx", 1)
            times = [timed(lambda: sess.run(None, feed))[1] * 1e3 for _ in range(200)]
            floors[variant] = statistics.median(times[20:])
    return floors, n


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["tiny", "small"])
    ap.add_argument("--frames", type=int, default=750, help="backing length in frames")
    ap.add_argument("--plain-steps", type=int, default=150, help="steps timed for the plain loop")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--top-k", type=int, default=250, help="sampling top-k (generate.py's default: 250)")
    ap.add_argument("--window", type=int, default=300,
                    help="phase 5's attention window in frames (300: the training command of docs/phase5)")
    ap.add_argument("--no-onnx", dest="onnx", action="store_false", help="skip the ONNX Runtime figures")
    ap.add_argument("--json", help="also write the figures here (the paper's build reads runs/bench.json)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import os
    import platform
    figures = {"machine": f"{os.cpu_count()}-core {platform.machine()}, {torch.get_num_threads()} torch "
                          f"thread(s), 1 ONNX Runtime thread, {time.strftime('%Y-%m-%d')}",
               "command": " ".join(["python", "tests/benchmark.py", *sys.argv[1:]]),
               "torch_threads": torch.get_num_threads(), "top_k": args.top_k, "frames": args.frames,
               "presets": {}}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch 1, {args.frames} frames, "
          f"temperature 1, top-k {args.top_k}")
    opts = dict(temperature=1.0, top_k=args.top_k)
    for name in args.presets:
        torch.manual_seed(0)
        cfg = preset_config(name, max_frames=args.frames)
        model = SoloTransformer(cfg).eval()
        K, T, rate = cfg.n_codebooks, args.frames, cfg.frame_rate
        backing = torch.randint(0, cfg.card, (1, K, T))
        sample_solo(model, backing[..., :20], n_frames=20, **opts)  # warm-up
        n = args.plain_steps
        _, t_plain = timed(lambda: sample_solo_plain(model, backing, n_frames=n - K + 1, **opts))
        _, t_cached_n = timed(lambda: sample_solo(model, backing, n_frames=n - K + 1, **opts))
        _, t_cached = timed(lambda: sample_solo(model, backing, **opts))
        _, t_greedy = timed(lambda: sample_solo(model, backing, temperature=0))  # no sampling cost: the model alone
        steps = T + K - 1
        fig = figures["presets"][name] = {
            "params_m": model.num_params() / 1e6, "cached_vs_plain": t_plain / t_cached_n,
            "offline_steps_per_s": steps / t_cached, "offline_realtime_factor": T / rate / t_cached}
        print(f"\n[{name}] {model.num_params() / 1e6:.1f} M parameters")
        print(f"  first {n} steps:  cached {n / t_cached_n:7.1f} steps/s   plain {n / t_plain:7.1f} steps/s"
              f"   ratio {t_plain / t_cached_n:5.1f}x")
        print(f"  all {steps} steps, cached: {steps / t_cached:7.1f} steps/s = "
              f"{T / rate / t_cached:5.2f} s of audio per second (real time = 1); greedy (no top-k draw): "
              f"{steps / t_greedy:7.1f} steps/s")
        # Phase 5: the same size with a causal encoder and a window, frame by frame.
        torch.manual_seed(0)
        scfg = preset_config(name, max_frames=args.frames, causal_encoder=True, attn_window=args.window)
        smodel = SoloTransformer(scfg).eval()
        sampler = StreamingSampler(smodel, n_frames=T, **opts)
        print(f"  streaming (window {args.window} frames), one frame = encoder step + decoder step + "
              f"top-k {args.top_k} draw (budget {1e3 / rate:.1f} ms per frame):")
        times, torch_fps = per_frame(lambda t: sampler.push(backing[..., t]), sampler.finish, T)
        fig["torch_stream"] = show(f"PyTorch ({torch.get_num_threads()} threads)", times, torch_fps, rate)
        if args.onnx:
            onnx_fps = onnx_streaming(smodel, backing, args.top_k, rate, fig)
            floors, n_weights = weight_floor(smodel)
            print(f"    floor: reading {n_weights / 1e6:.1f} M weights once costs " + ", ".join(
                f"{ms:.2f} ms {v} (at most {1e3 / ms / rate:.1f}x real time)" for v, ms in floors.items()) +
                " on 1 thread, before attention's rings and the draw")
            print(f"    fastest ONNX: {onnx_fps / torch_fps:4.2f}x PyTorch streaming, "
                  f"{onnx_fps / (T / t_cached):4.2f}x PyTorch sample_solo() (offline, cached)")
            fig["weight_floor_ms"] = floors
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
            ms = (time.perf_counter() - t0) / reps * 1e3
            fig[f"train_step_ms_{impl}"] = ms
            print(f"  train step (B=1, T={T}), {impl:6s} attention: {ms:7.1f} ms")
    if args.json:
        write_json(args.json, figures)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
