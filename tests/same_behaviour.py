"""Does a change compute anything differently? One digest of everything the pipeline makes.

    python tests/same_behaviour.py /tmp/after                       # this checkout
    python tests/same_behaviour.py /tmp/before --repo ../old-clone  # another checkout
    diff /tmp/before/digest.txt /tmp/after/digest.txt               # nothing: the same behaviour

On one thread and the same seeds it builds an 8-song demo corpus, trains two 12-step runs
(the default model and phase 5's causal one), generates 3 s with each (offline and
streamed), exports the causal model, runs the exported runner (fp32 and int8) and its
--loss, and samples tokens with the reference, cached, guided and streaming samplers. The
digest holds the dataset's arrays (MD5), meta.json, every metrics.jsonl row, summary.json,
the weights, generation.json, the sampled tokens, the runner's takes and losses and the
graphs (MD5), with timings, peak memory and folder paths left out. It reads a checkout of
either layout (helpers in sax/ and the runner in deploy/, or all at the top), so a move of
code can be checked against the commit before it. About 90 s on a 2-core CPU.
"""
import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

TIMINGS = ("timings", "peak_memory", "build_seconds", "checkpoint", "time", "sec_per", "_s_",
           "fps", "ms", "rtf", "real_time", "elapsed", "wall", "per_s", "steps_per", "speed",
           "threads")
TOKENS = '''
import sys
from pathlib import Path
import numpy as np, torch
torch.set_num_threads(1)
sys.path.insert(0, ".")
try:
    from sax.sampling import StreamingSampler, sample_solo, sample_solo_plain
    from sax.checkpoints import load_model
except ImportError:  # the layout before sax/
    from model import StreamingSampler, load_model, sample_solo, sample_solo_plain
out = Path(sys.argv[1])
backing = torch.from_numpy(np.load(out / "data" / "val_backing.npy")[:, :200].astype(np.int64))[None]
res = {}
for name in ("run", "causal"):
    model = load_model(out / name / "best")[0]
    res[f"{name}_cached"] = sample_solo(model, backing, 150, top_k=250, seed=3)
    res[f"{name}_guided"] = sample_solo(model, backing, 150, top_k=250, seed=3, cfg_coef=3.0)
    res[f"{name}_plain"] = sample_solo_plain(model, backing, 60, top_k=250, seed=3)
stream = StreamingSampler(load_model(out / "causal" / "best")[0], 150, top_k=250, seed=5, cfg_coef=3.0)
got = [f for f in (stream.push(backing[..., t]) for t in range(150)) if f is not None]
if stream.ahead is not None:
    got = [stream.ahead[..., i] for i in range(stream.ahead.size(-1))] + got
rest = stream.finish()
res["streaming"] = torch.stack(got, -1) if rest is None else torch.cat([torch.stack(got, -1), rest], -1)
np.savez(out / "tokens.npz", **{k: v.numpy() for k, v in res.items()})
'''


def run_all(repo, out):
    """Every command of the pipeline, on one thread, into out (the commands' logs beside)."""
    export = "deploy/onnx_export.py" if (repo / "deploy" / "onnx_export.py").exists() else "onnx_export.py"
    one = ["--threads", "1"]
    short = ["--max-steps", "12", "--eval-every", "6", "--save-every", "6", *one]
    steps = {
        "data": ["data.py", "--demo-songs", "8", "--demo-seconds", "12", "--out", out / "data", *one],
        "train": ["train.py", "--data", out / "data", "--out", out / "run", *short],
        "causal": ["train.py", "--data", out / "data", "--out", out / "causal", *short,
                   "--causal-encoder", "--attn-window", "300", "--lookahead-ms", "80"],
        "gen": ["generate.py", "--checkpoint", out / "run" / "best", "--out", out / "gen",
                "--duration", "3", *one],
        "stream": ["generate.py", "--checkpoint", out / "causal" / "best", "--out", out / "stream",
                   "--duration", "3", "--stream", *one],
        "export": [export, "--checkpoint", out / "causal" / "best", "--out", out / "onnx", *one],
        "take": [out / "onnx" / "onnx_runner.py", out / "onnx", "--backing", out / "gen" / "backing.wav",
                 "--out", out / "take", "--variant", "fp32", "--no-pace", "--seed", "0", *one],
        "take8": [out / "onnx" / "onnx_runner.py", out / "onnx", "--backing", out / "gen" / "backing.wav",
                  "--out", out / "take8", "--variant", "int8", "--no-pace", "--seed", "0", *one],
        "loss": [out / "onnx" / "onnx_runner.py", out / "onnx", "--loss", out / "data", "--json",
                 out / "loss.json", *one],
        "tokens": ["-c", TOKENS, out],
    }
    for name, args in steps.items():
        with open(out / f"{name}.log", "w") as log:
            done = subprocess.run([sys.executable, *map(str, args)], cwd=repo, stdout=log, stderr=log)
        if done.returncode:
            raise SystemExit(f"{name} failed ({done.returncode}): see {out / f'{name}.log'}")


def clean(obj):
    if isinstance(obj, dict):
        return {k: clean(v) for k, v in obj.items() if not any(t in k for t in TIMINGS)}
    return [clean(v) for v in obj] if isinstance(obj, list) else obj


def digest(out):
    import numpy as np
    md5 = lambda path: hashlib.md5(Path(path).read_bytes()).hexdigest()  # noqa: E731
    said = lambda obj: json.dumps(clean(obj), sort_keys=True)  # noqa: E731
    lines = [f"data {f.name} {md5(f)}" for f in sorted((out / "data").glob("*.npy"))]
    lines.append("meta " + said(json.loads((out / "data" / "meta.json").read_text())))
    for run in ("run", "causal"):
        rows = (out / run / "metrics.jsonl").read_text().splitlines()
        lines += [f"{run} metrics {i} " + said(json.loads(row)) for i, row in enumerate(rows)]
        lines.append(f"{run} summary " + said(json.loads((out / run / "summary.json").read_text())))
        lines.append(f"{run} weights {md5(out / run / 'best' / 'model.safetensors')}")
    for name in ("gen", "stream"):
        lines.append(f"{name} generation " + said(json.loads((out / name / "generation.json").read_text())))
    tokens = np.load(out / "tokens.npz")
    lines += [f"tokens {k} {hashlib.md5(tokens[k].tobytes()).hexdigest()} {tokens[k].shape}"
              for k in sorted(tokens.files)]
    for take in ("take", "take8"):
        lines.append(f"{take} solo.wav {md5(out / take / 'solo.wav')}")
        lines.append(f"{take} report " + said(json.loads((out / take / "report.json").read_text())))
    lines.append("loss " + said(json.loads((out / "loss.json").read_text())))
    lines += [f"graph {f.name} {md5(f)}" for f in sorted((out / "onnx").glob("*.onnx"))]
    return "\n".join(lines).replace(str(out), "OUT") + "\n"


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="an empty or new folder for the runs and digest.txt")
    ap.add_argument("--repo", default=str(Path(__file__).resolve().parents[1]),
                    help="the checkout to run (default: this one)")
    args = ap.parse_args()
    out, repo = Path(args.out).resolve(), Path(args.repo).resolve()
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty: give a new folder")
    out.mkdir(parents=True, exist_ok=True)
    run_all(repo, out)
    (out / "digest.txt").write_text(digest(out))
    print(f"wrote {out / 'digest.txt'}: diff it against another checkout's")
