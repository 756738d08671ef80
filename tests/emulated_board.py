"""The exported runner on an ARM board, emulated, against this machine (pytest runs it only
when asked: python -m pytest -m slow tests/test_board.py):

    python tests/emulated_board.py --folder solo_onnx     # an exported folder
    python tests/emulated_board.py                        # a random-weight tiny model, exported first

Needs Debian's qemu-user-static and mmdebstrap (apt-get install qemu-user-static mmdebstrap).
Built once in --cache (nothing of the arm64 side runs while it is built):
  - an arm64 Debian bookworm root with its python3 (mmdebstrap --variant=extract),
  - numpy, onnxruntime and soundfile: the lock's versions as aarch64 wheels (pip download
    --platform), unpacked beside it: what the board's `pip install` gets.
Then the folder's own onnx_runner.py runs under qemu-aarch64-static, in a mount namespace
whose /proc/cpuinfo describes a Cortex-A72 (a Raspberry Pi 4's core): under qemu-user the
process would read the x86 host's, on which ONNX Runtime's CPU probe crashes at import.
For fp32, int8 and int4, each without guidance and with guidance 3 (the decoder step on two
rows, GUIDED_COEF), on both machines, from the same inputs:
  1. the teacher-forced logits of every step (onnx_runner.SoloStream.next_logits over a
     seeded backing and solo; with guidance, the guided logits): the largest difference,
     arm64 against x86;
  2. a greedy take of a 4 s demo backing (onnx_runner.py --temperature 0 --no-pace, and
     --cfg-coef): its take.npz codes compared, and the first frame that differs, if one does.
Emulated times say nothing of a board's speed: none is printed.
"""
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "deploy")]

CPUINFO = "".join(f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"
                  "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\n"
                  "CPU part\t: 0xd08\nCPU revision\t: 3\n\n" for i in range(4))
CPUINFO += "Hardware\t: BCM2835\nModel\t\t: Raspberry Pi 4 Model B\n"
BOARD_PACKAGES = ("numpy", "onnxruntime", "soundfile")
# The guidance the README plays with: the variants run once without it and once with it.
GUIDED_COEF = 3
VARIANTS = [(variant, coef) for coef in ("none", str(GUIDED_COEF))
            for variant in ("fp32", "int8", "int4")]


def variant_name(variant, coef):
    """board.json's key of a variant: "int8", or "int8 cfg3" with guidance 3."""
    return variant if coef == "none" else f"{variant} cfg{coef}"

# Run on both machines: the teacher-forced logits of every step of one variant -> a .npy
LOGITS = r'''
import sys
import numpy as np
folder, out, variant, coef = sys.argv[1:5]
sys.path.insert(0, folder)
import onnx_runner as R
numbers = R.read_folder(folder, [variant])
K, card, T = numbers["n_codebooks"], numbers["card"], 40
rng = np.random.default_rng(0)
backing, solo = rng.integers(0, card, (K, T)), rng.integers(0, card, (K, T))
stream = R.SoloStream(folder, numbers, T, variant, look_ahead=False,
                      cfg_coef=None if coef == "none" else float(coef))
target = np.full((K, T + K - 1), card)
for k in range(K):
    target[k, k:k + T] = solo[k]
heard = np.concatenate([np.full((K, stream.lookahead), card), backing], axis=1)
logits = []
for s in range(T + K - 1):
    if s < heard.shape[1]:
        stream.encoder_step(heard[:, s])
    stream.tokens = target[None, :, s - 1] if s else np.full((1, K), card)
    logits.append(stream.next_logits()[0])
np.save(out, np.stack(logits))
'''


def locked(name):
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line.lower().startswith(name + "=="):
            return line.split("==")[1].strip()
    raise SystemExit(f"{name} is not in requirements.lock")


def build_board(cache):
    """The arm64 root and the board's packages in `cache`, built once -> (root, site)."""
    root, site, wheels = cache / "root", cache / "site", cache / "wheels"
    cache.mkdir(parents=True, exist_ok=True)
    if not (root / "usr" / "bin" / "python3").exists():
        subprocess.run(["mmdebstrap", "--arch=arm64", "--variant=extract",
                        "--include=python3,python3-minimal,libpython3.11-stdlib,libstdc++6,"
                        "libgcc-s1,zlib1g,libffi8", "bookworm", str(root)], check=True)
    if not (site / "onnxruntime").exists():
        platform = [a for p in ("manylinux_2_28_aarch64", "manylinux_2_27_aarch64",
                                "manylinux_2_17_aarch64", "manylinux2014_aarch64")
                    for a in ("--platform", p)]
        target = ["--only-binary=:all:", *platform, "--python-version", "3.11",
                  "--implementation", "cp", "--abi", "cp311", "--abi", "abi3", "--abi", "none"]
        pins = [f"{name}=={locked(name)}" for name in BOARD_PACKAGES]
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", *target, "-d",
                        str(wheels), *pins], check=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--find-links",
                        str(wheels), "--target", str(site), *target, *pins], check=True)
    return root, site


def on_board(root, site, args, cwd):
    """python3 `args` on the emulated arm64 board (its own /proc/cpuinfo, its packages)."""
    cpuinfo = Path(cwd) / "cpuinfo"
    cpuinfo.write_text(CPUINFO)
    python = " ".join(["qemu-aarch64-static", "-cpu", "cortex-a72", "-L", str(root),
                       str(root / "usr" / "bin" / "python3.11"), *map(str, args)])
    script = f"mount --bind {cpuinfo} /proc/cpuinfo && PYTHONPATH={site} exec {python}"
    return subprocess.run(["unshare", "--mount", "sh", "-c", script], check=True,
                          capture_output=True, text=True, cwd=cwd)


def random_export(folder):
    """A tiny causal model (window 300, 80 ms of lookahead: the live recipe) with random
    weights, exported with the untrained codec."""
    import torch
    import onnx_export
    from model import SoloTransformer, preset_config
    from sax.codec import codec_info, load_codec
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    model = SoloTransformer(preset_config("tiny", max_frames=1000, causal_encoder=True,
                                          attn_window=300, lookahead=6)).eval()
    codec = load_codec("untrained", 3.0, "cpu")
    onnx_export.write_onnx_folder(model, codec, {"step": 0}, codec_info(codec, "untrained"),
                                  onnx_export.ExportConfig(checkpoint="(random weights)"), folder)


def compare(folder, cache, work):
    """Both machines over the same inputs -> {variant: {max_logit_gap, codes_equal, ...}}."""
    from sax.audio import write_audio
    from sax.demo import render_demo_song
    root, site = build_board(cache)
    numbers = json.loads((folder / "runner.json").read_text())
    backing = render_demo_song(0, 4.0, 0, numbers["sample_rate"])[0]
    write_audio(work / "trio.wav", backing, numbers["sample_rate"])
    (work / "logits.py").write_text(LOGITS)
    out = {}
    for variant, coef in VARIANTS:
        runs, name = {}, variant_name(variant, coef)
        for machine in ("x86_64", "arm64"):
            stem = f"{machine}_{name.replace(' ', '_')}"
            logits, take = work / f"{stem}.npy", work / stem
            command = [[folder / "onnx_runner.py", folder, "--backing", work / "trio.wav", "--out",
                        take, "--variant", variant, "--temperature", "0", "--no-pace",
                        "--overwrite", "--cfg-coef", coef],
                       [work / "logits.py", folder, logits, variant, coef]]
            for args in command:
                if machine == "x86_64":
                    subprocess.run([sys.executable, *map(str, args)], check=True,
                                   capture_output=True)
                else:
                    on_board(root, site, args, work)
            runs[machine] = (np.load(logits), np.load(take / "take.npz")["codes"])
        (lx, cx), (la, ca) = runs["x86_64"], runs["arm64"]
        differ = np.flatnonzero((cx != ca).any(0))
        out[name] = {"max_logit_gap": float(np.abs(lx - la).max()),
                     "logit_scale": float(np.abs(lx).max()),
                     "frames": int(cx.shape[1]), "codes_equal": bool(len(differ) == 0),
                     "first_differing_frame": int(differ[0]) if len(differ) else None}
        print(f"{name}: logits differ by at most {out[name]['max_logit_gap']:.2e} (largest "
              f"logit {out[name]['logit_scale']:.1f}); greedy codes over "
              f"{out[name]['frames']} frames "
              + ("equal" if not len(differ) else f"first differ at frame {differ[0]}"), flush=True)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", help="an exported folder (default: a random tiny model)")
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "jazz-sax-solo" / "arm64"))
    parser.add_argument("--json", help="also write the comparison to this file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = Path(args.folder) if args.folder else tmp / "solo_onnx"
        if not args.folder:
            random_export(folder)
        result = compare(folder.resolve(), Path(args.cache), tmp)
        numbers = json.loads((folder / "runner.json").read_text())  # read while it is there
    if args.json:
        command = " ".join(["python", "tests/emulated_board.py", *(argv or sys.argv[1:])])
        what = {"checkpoint": numbers["checkpoint"], "runner_format": numbers["format"]}
        Path(args.json).write_text(json.dumps({"command": command, "folder": what,
                                               "backing": "4 s of demo song 0",
                                               "variants": result}, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
