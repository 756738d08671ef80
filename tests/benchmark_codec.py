"""Phase 5's codec on a stream, run by hand (pytest does not collect this file):

    python tests/benchmark_codec.py                  # 1 ONNX Runtime thread, as the runner runs
    python tests/benchmark_codec.py --presets tiny   # only the tiny model's runner

Prints, side by side in one run (the machine is shared: compare within a run):
  1. the codec graphs per chunk (encode the chunk + decode its frames), p50 and p99, for
     40 and 80 ms chunks: the fixed windows of before (each chunk encoded with 200 ms of
     the audio before it, each decode in a window of context + chunk frames) against the
     graphs that carry their state (StreamingEncoder and StreamingDecoder, what
     onnx_export.py writes now), in fp32, with the int8 and int4 variants' decoder (its
     LSTM in int8; the fp32 encoder), and with every weight in ONNX Runtime's dynamic int8;
     how many codes each way shares with a whole-file encode and with the fp32 graphs, and
     the decoded audio's SNR against the fp32 graphs';
  2. the whole runner (onnx_runner.py in its own process, 10 s backing, --no-pace, one
     thread, top-k 250) for each preset, int8 and int4 step graphs, 40 and 80 ms chunks:
     real-time factor and the end-to-end delay (chunk + delay pattern + compute), p50 and
     p99.
Random weights: speed does not depend on what the models learned.
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
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "deploy")]  # the spine scripts and sax/; onnx_export.py
import onnx_export  # noqa: E402
import onnx_runner  # noqa: E402
from model import SoloTransformer, preset_config  # noqa: E402
from sax.codec import codec_info, encode_audio, fill_untrained_codebooks, load_codec
from sax.demo import render_demo_song
from sax.files import write_json

CONTEXT_FRAMES = 15  # the 200 ms of audio each chunk re-read before the state was carried


class WindowEncoder(torch.nn.Module):
    """The baseline: EnCodec's encoder on a fixed window, no state."""
    def __init__(self, codec):
        super().__init__()
        self.codec = codec

    def forward(self, audio):
        c = self.codec
        return c.quantizer.encode(c.encoder(audio), c.frame_rate, c.bandwidth).transpose(0, 1)


class WindowDecoder(WindowEncoder):
    def forward(self, codes):
        return self.codec.decoder(self.codec.quantizer.decode(codes.transpose(0, 1)))


def percentiles(times):
    times = sorted(times)
    return statistics.median(times), times[int(0.99 * (len(times) - 1))]


def codec_per_chunk(codec, tmp, band, hop):
    """Section 1: the codec graphs, chunk by chunk over `band`."""
    import logging
    from onnxruntime.quantization import QuantType, quantize_dynamic
    logging.getLogger().setLevel(logging.ERROR)  # the quantizer's advice to pre-process first
    whole = encode_audio(codec, band).astype(np.int64)
    n, figures = len(band) // hop, {}
    for chunk in (3, 6):  # 40 and 80 ms at 75 Hz
        folder = tmp / f"chunk{chunk}"
        folder.mkdir()
        onnx_export.export_codec(codec, 4, chunk, hop, folder)  # stateful, fp32
        logging.getLogger().setLevel(logging.ERROR)  # again: importing the quantizer reset it
        window = CONTEXT_FRAMES + chunk
        onnx_export.export_graph(WindowEncoder(codec), (torch.zeros(1, 1, window * hop),),
                                 folder / "window_encoder.onnx", ["audio"], ["codes"], None)
        onnx_export.export_graph(WindowDecoder(codec), (torch.zeros(1, 4, window, dtype=torch.long),),
                                 folder / "window_decoder.onnx", ["codes"], ["audio"], None)
        for name in ("codec_encoder", "codec_decoder"):  # all of it, dynamically: not used
            quantize_dynamic(str(folder / f"{name}.onnx"), str(folder / f"{name}.dynamic8.onnx"),
                             weight_type=QuantType.QInt8, op_types_to_quantize=["Conv", "ConvTranspose",
                                                                                "LSTM", "MatMul"])
        # the baseline, as the runner ran it: context + chunk samples in, the chunk's frames kept
        enc = onnx_runner.session(folder / "window_encoder.onnx", 1)
        dec = onnx_runner.session(folder / "window_decoder.onnx", 1)
        padded = np.concatenate([np.zeros(CONTEXT_FRAMES * hop, np.float32), band])
        times, codes = [], []
        for start in range(0, (n - n % chunk), chunk):
            t0 = time.perf_counter()
            win = padded[start * hop:(start + window) * hop][None, None]
            codes.append(enc.run(None, {"audio": win})[0][0][:, -chunk:])
            frames = whole[:, max(0, start + chunk - window):start + chunk]
            frames = np.concatenate([np.repeat(frames[:, :1], window - frames.shape[1], 1), frames], 1)
            dec.run(None, {"codes": frames[None]})
            times.append((time.perf_counter() - t0) * 1e3)
        base = percentiles(times[2:])
        base_codes = np.concatenate(codes, -1)
        print(f"  {chunk * 1000 // 75} ms chunks:")
        row = figures[chunk * 1000 // 75] = {"window_fp32": {"p50": base[0], "p99": base[1]}}
        print(f"    fixed windows (200 ms context), fp32: p50 {base[0]:5.1f} ms  p99 {base[1]:5.1f} ms; "
              f"codes shared with a whole-file encode {(base_codes == whole[:, :base_codes.shape[1]]).mean():.1%}")
        results, audio = {}, {}
        # fp32 (the fp32 variant's); the fp32 encoder with the decoder whose LSTM is int8 (the
        # int8 and int4 variants'); every weight dynamically quantized to int8 (not used)
        for variant, graphs, runner_variant in (
                ("fp32", None, "fp32"), ("lstm8", None, "int8"),
                ("int8", ("codec_encoder.dynamic8.onnx", "codec_decoder.dynamic8.onnx"), "fp32")):
            c = onnx_runner.Codec(folder, {"hop": hop, "n_codebooks": 4}, 1, graphs, runner_variant)
            times, codes, sound = [], [], []
            frames = list(whole.T)
            for start in range(0, (n - n % chunk), chunk):
                t0 = time.perf_counter()
                codes.append(c.encode(band[start * hop:(start + chunk) * hop]))
                sound.append(c.decode_new(frames[:start + chunk], start))
                times.append((time.perf_counter() - t0) * 1e3)
            results[variant], audio[variant] = np.concatenate(codes, -1), np.concatenate(sound)
            p50, p99 = percentiles(times[2:])
            shared = (results[variant] == whole[:, :results[variant].shape[1]]).mean()
            row[f"state_{variant}"] = {"p50": p50, "p99": p99, "speedup": base[0] / p50,
                                      "codes_shared_with_whole_file": float(shared)}
            extra = ""
            if variant != "fp32":
                same = (results[variant] == results["fp32"]).mean()
                error = np.sum((audio[variant] - audio["fp32"]) ** 2)
                snr = row[f"state_{variant}"]["audio_snr_db"] = float(
                    10 * np.log10(np.sum(audio["fp32"] ** 2) / max(error, 1e-30)))
                ratio = row[f"state_{variant}"]["vs_fp32"] = p50 / row["state_fp32"]["p50"]
                extra = (f"; codes shared with the fp32 graphs' {same:.1%}; decoded audio "
                         f"{snr:.0f} dB SNR against theirs; time {ratio:.2f}x fp32's")
            print(f"    state carried, {variant:8s}:         p50 {p50:5.1f} ms  p99 {p99:5.1f} ms "
                  f"({base[0] / p50:4.1f}x faster); codes shared with a whole-file encode {shared:.1%}{extra}")
    return figures


def runners(presets, tmp, hop):
    """Section 2: the whole runner, 10 s backing, per preset, variant and chunk."""
    backing = tmp / "backing.wav"
    import soundfile as sf
    sf.write(backing, render_demo_song(71, 10.0, seed=0)[0].astype(np.float32), 24000)
    figures = {}
    for name in presets:
        torch.manual_seed(0)
        model = SoloTransformer(preset_config(name, max_frames=750, causal_encoder=True, attn_window=300)).eval()
        for chunk_ms in (40, 80):
            folder = tmp / f"{name}{chunk_ms}"
            folder.mkdir()
            torch.manual_seed(0)
            codec = load_codec("untrained", 3.0, "cpu")
            numbers = codec_info(codec, "untrained")
            onnx_export.write_onnx_folder(model, codec, {"step": 0}, numbers,
                                          onnx_export.ExportConfig(checkpoint="(random weights)",
                                                                   chunk_ms=chunk_ms), folder)
            for variant in ("int8", "int4"):
                out = folder / f"take-{variant}"
                subprocess.run([sys.executable, str(folder / "onnx_runner.py"), str(folder), "--backing", str(backing),
                                "--out", str(out), "--variant", variant, "--no-pace", "--threads", "1"],
                               check=True, capture_output=True)
                r = json.loads((out / "report.json").read_text())
                d = r["end_to_end_delay_ms"]
                figures.setdefault(name, {}).setdefault(chunk_ms, {})[variant] = {
                    "realtime_factor": r["realtime_factor"], "frame_ms_p50": r["frame_ms"]["p50"],
                    "codec_chunk_ms_p50": r["codec_chunk_ms"]["p50"], "delay_ms": d}
                print(f"  {name:5s} {variant} {chunk_ms} ms chunks: {r['realtime_factor']:4.1f}x real time; "
                      f"per frame p50 {r['frame_ms']['p50']:.2f} ms; codec per chunk p50 "
                      f"{r['codec_chunk_ms']['p50']:4.1f} ms; delay p50 {d['p50']:.0f} ms, p99 {d['p99']:.0f} ms")
    return figures


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["tiny", "small"])
    ap.add_argument("--no-runner", dest="runner", action="store_false", help="only section 1")
    ap.add_argument("--json", help="also write the figures here (the paper's build reads "
                                   "runs/speed.json)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    codec = load_codec("untrained", 3.0, "cpu").eval()
    band = render_demo_song(71, 10.0, seed=0)[0].astype(np.float32)
    fill_untrained_codebooks(codec, band, 0)  # as data.py does: codes that vary
    codec = onnx_export.plain_weights(codec)
    hop = codec.sample_rate // codec.frame_rate
    print("1 ONNX Runtime thread; untrained EnCodec 24 kHz (random weights: the pretrained one's speed); "
          "a 10 s demo band")
    import os
    import platform
    figures = {"machine": f"{os.cpu_count()}-core {platform.machine()}, 1 ONNX Runtime thread, "
                          f"{time.strftime('%Y-%m-%d')}",
               "command": " ".join(["python", "tests/benchmark_codec.py", *sys.argv[1:]])}
    with tempfile.TemporaryDirectory() as tmp:
        print("1. the codec per chunk (encode the chunk + decode its frames):")
        figures["codec"] = codec_per_chunk(codec, Path(tmp), band, hop)
        if args.runner:
            print("2. the whole runner, codec included (onnx_runner.py --no-pace --threads 1):")
            figures["runner"] = runners(args.presets, Path(tmp), hop)
    if args.json:
        write_json(args.json, figures)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
