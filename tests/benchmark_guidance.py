"""What guidance costs the runner, run by hand (pytest does not collect this file):

    python tests/benchmark_guidance.py                  # tiny and small, writes docs/results/guidance.json
    python tests/benchmark_guidance.py --presets tiny --out /tmp/guidance.json

For each preset, a causal model as the README's live recipe trains it (attention window
300, 80 ms of lookahead; random weights: speed does not depend on what was learned) is
exported by onnx_export.write_onnx_folder, then, on ONE ONNX Runtime thread:
  1. the transformer's step alone (encoder step + decoder step + sampling, top-k 250),
     per frame, without guidance and with --cfg-coef 3 (both rows in one decoder call, the
     null condition's encoder states heard once: onnx_export.GuidedDecoderStep),
     the two timed in turns of 20 frames (30 turns each), so that a busy machine slows both alike:
     the median per frame and the ratio, for the int8 and int4 weights;
  2. the whole runner on a 10 s backing (codec graphs included, --no-pace) in its own
     process, without and with guidance: its real-time factor, end-to-end delay, and the
     transformer's time per frame and the codec graphs' per chunk (p50s).
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
sys.path[:0] = [str(ROOT), str(ROOT / "deploy")]
import onnx_export  # noqa: E402
import onnx_runner  # noqa: E402
from model import SoloTransformer, preset_config  # noqa: E402
from sax.codec import codec_info, load_codec  # noqa: E402
from sax.files import write_json  # noqa: E402

COEF = 3.0


def step_times(folder, numbers, variant, frames, rounds):
    """Per-frame ms of the step without and with guidance, timed in turns -> (plain, guided)."""
    K, T = frames.shape
    streams = {coef: onnx_runner.SoloStream(folder, numbers, T, variant, threads=1, top_k=250,
                                            cfg_coef=coef) for coef in (None, COEF)}
    times = {None: [], COEF: []}
    t = 0
    for _ in range(rounds):
        for coef, stream in streams.items():
            for i in range(t, t + 20):
                t0 = time.perf_counter()
                stream.push(frames[:, i])
                times[coef].append((time.perf_counter() - t0) * 1e3)
        t += 20
    return statistics.median(times[None]), statistics.median(times[COEF])


def runner_take(folder, backing, variant, coef):
    out = folder / f"take_{variant}_{coef}"
    subprocess.run([sys.executable, str(folder / "onnx_runner.py"), str(folder), "--backing",
                    str(backing), "--out", str(out), "--variant", variant, "--no-pace",
                    "--threads", "1", "--cfg-coef", str(coef)], check=True, capture_output=True)
    report = json.loads((out / "report.json").read_text())
    assert report["cfg_coef"] == (None if coef == "none" else coef), report["cfg_coef"]
    return {"realtime_factor": report["realtime_factor"],
            "end_to_end_delay_ms_p50": report["end_to_end_delay_ms"]["p50"],
            "frame_ms_p50": report["frame_ms"]["p50"],
            "codec_chunk_ms_p50": report["codec_chunk_ms"]["p50"]}


def one_preset(name, rounds):
    torch.manual_seed(0)
    model = SoloTransformer(preset_config(name, max_frames=1000, causal_encoder=True, attn_window=300,
                                          lookahead=6)).eval()
    row = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        codec = load_codec("untrained", 3.0, "cpu")
        numbers = codec_info(codec, "untrained")
        onnx_export.write_onnx_folder(model, codec, {"step": 0}, numbers,
                                      onnx_export.ExportConfig(checkpoint="(random weights)"), tmp)
        runner = onnx_runner.read_folder(tmp)
        frames = np.random.default_rng(0).integers(0, model.cfg.card, (model.cfg.n_codebooks, 20 * rounds))
        sf.write(tmp / "backing.wav", (0.1 * np.random.default_rng(0).standard_normal(10 * 24000))
                 .astype(np.float32), 24000)
        # What a row's rings hold (keys and values of every attention, window slots each),
        # against the bytes of the step graphs: guidance reads the weights once, and beside
        # the band's rings only the null row's self-attention rings (GuidedDecoderStep).
        def ring_mb(layers):
            return round(layers * 2 * runner["n_heads"] * runner["attn_window"]
                         * runner["head_dim"] * 4 / 1e6, 1)
        row["ring_mb_per_row"] = ring_mb(runner["n_enc_layers"] + 2 * runner["n_dec_layers"])
        row["ring_mb_null_row"] = ring_mb(runner["n_dec_layers"])
        for variant in ("int8", "int4"):
            row[f"{variant}_graphs_mb"] = round(sum((tmp / g).stat().st_size
                                                    for g in onnx_runner.STEP_GRAPHS[variant]) / 1e6, 1)
        print(f"  {name}: the rings of one row {row['ring_mb_per_row']} MB (guidance's null row: "
              f"{row['ring_mb_null_row']} MB); the step graphs "
              f"int8 {row['int8_graphs_mb']} MB, int4 {row['int4_graphs_mb']} MB")
        for variant in ("int8", "int4"):
            plain, guided = step_times(tmp, runner, variant, frames, rounds)
            takes = {label: runner_take(tmp, tmp / "backing.wav", variant, coef)
                     for label, coef in (("plain", "none"), ("guided", COEF))}
            row[variant] = {"step_ms_p50": {"plain": plain, "guided": guided},
                            "step_ratio": guided / plain, "runner": takes,
                            "runner_realtime_ratio": takes["plain"]["realtime_factor"]
                            / takes["guided"]["realtime_factor"]}
            print(f"  {name} {variant}: step {plain:.2f} ms -> {guided:.2f} ms with guidance "
                  f"({guided / plain:.2f}x); runner {takes['plain']['realtime_factor']:.1f}x -> "
                  f"{takes['guided']['realtime_factor']:.1f}x real time, delay p50 "
                  f"{takes['plain']['end_to_end_delay_ms_p50']:.0f} -> "
                  f"{takes['guided']['end_to_end_delay_ms_p50']:.0f} ms")
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="*", default=["tiny", "small"])
    parser.add_argument("--rounds", type=int, default=30, help="turns of 20 frames each")
    parser.add_argument("--out", default=str(ROOT / "docs" / "results" / "guidance.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"guidance {COEF:g} against none, one ONNX Runtime thread, window 300, lookahead 6 frames")
    result = {"command": " ".join(["python", "tests/benchmark_guidance.py", *sys.argv[1:]]),
              "cfg_coef": COEF, "threads": 1,
              "presets": {name: one_preset(name, args.rounds) for name in args.presets}}
    write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
