"""
docs/paper/build.py -- the paper draft's tables, figures and numbers, rebuilt from run
folders, and the PDF compiled from them.

    python docs/paper/build.py --runs runs      # from ablation.py's two tables (below)
    python docs/paper/build.py --quick          # tiny runs made first, in a temporary folder

The runs come from two commands (each resumable; hours on 2 CPU cores):

    python ablation.py                          # runs/ablation: phase 3's settings, 3 seeds each
    python ablation.py --table lookahead        # runs/lookahead: phase 5's lookahead, 3 seeds each

Writes into --out (docs/paper/build by default): numbers.json (every figure the prose
quotes, already formatted: paper.typ reads them from there, so no number in the text
is typed by hand), ablation.typ and lookahead.typ (the tables), lookahead.png (the
curve), and paper.pdf. --quick builds everything from 2-step runs on a 5-song corpus:
the numbers mean nothing, but every step that makes the real draft runs (the test
suite builds it this way).
"""
import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent  # the repository: ablation.py, data.py

# The columns of each table: (key in ablation.py's table.json, heading, decimals).
ABLATION_COLUMNS = (("best_val_ce", "val. CE", 3), ("cond_gain", "cond. gain", 3),
                    ("kick_auc_own", "kick AUC own", 3),
                    ("kick_auc_mismatched", "kick AUC other", 3),
                    ("plays_with_band_rhythm", "rhythm", 2),
                    ("plays_with_band_harmony", "harmony", 2))
LOOKAHEAD_COLUMNS = (("best_val_ce", "val. CE", 3), ("cond_gain", "cond. gain", 3),
                     ("kick_auc_own", "kick AUC offline", 3),
                     ("kick_auc_mismatched", "other band", 3),
                     ("kick_auc_wall_clock", "kick AUC on the wall clock", 3),
                     ("late_ms", "late (ms)", 0))
# The true lead's figures (the same for every run: they score the data, not a model).
TRUE_LEAD = ("kick_auc_true", "kick_auc_true_mismatched", "note_in_chord_true",
             "note_in_chord_true_mismatched")


def read_table(runs, name, command):
    path = Path(runs) / name / "table.json"
    if not path.exists():
        raise SystemExit(f"{path} not found: make it with `{command}` (or build with --quick)")
    return json.loads(path.read_text())


def cell(mean_sd, decimals):
    """'0.690 ± 0.020' from [mean, sd]; an en dash where a figure is undefined."""
    if mean_sd is None:
        return "–"
    return f"{mean_sd[0]:.{decimals}f} ± {mean_sd[1]:.{decimals}f}"


def provenance(table):
    """Where a table came from, for its caption: the command, the seeds, the machine."""
    m = table.get("machine") or {}
    where = (f"{m['cores']}-core {m['cpu']} machine, one thread per run, torch {m['torch']}, "
             f"{m['date']}") if m else "machine not recorded"
    return {"command": table.get("command", "python ablation.py"),
            "seeds": ", ".join(map(str, table["seeds"])), "machine": where}


def typst_table(table, columns, first):
    """A Typst table: one line per row, mean ± standard deviation over the seeds."""
    head = [first, *[label for _, label, _ in columns]]
    cells = []
    for name, row in table["rows"].items():
        cells.append([name, *[cell(row["mean_sd"].get(key), d) for key, _, d in columns]])
    quoted = ", ".join(f"[{c}]" for line in [head, *cells] for c in line)
    return (f"#set text(size: 7.5pt)\n#table(columns: {len(head)}, "
            f"align: (left, {', '.join(['right'] * len(columns))}), stroke: 0.4pt, inset: 3pt, "
            f"{quoted})\n")


def facts():
    """The figures of the setup the prose quotes (the default model's size, a frame's length),
    computed rather than typed."""
    sys.path.insert(0, str(ROOT))
    from model import PRESETS, SoloTransformer, preset_config
    tiny = SoloTransformer(preset_config("tiny", n_codebooks=4, card=1024))
    small = SoloTransformer(preset_config("small", n_codebooks=4, card=1024))
    return {"tiny_params_m": f"{tiny.num_params() / 1e6:.1f}",
            "small_params_m": f"{small.num_params() / 1e6:.1f}",
            "tiny_width": PRESETS["tiny"]["d_model"], "frame_ms": f"{1e3 / 75:.1f}"}


def optional_json(runs, name):
    """runs/<name> read, or None when this runs folder has none (a figure left out)."""
    path = Path(runs) / name
    return json.loads(path.read_text()) if path.exists() else None


def speed_of(runs):
    """tests/benchmark_codec.py --json's figures, formatted, when the runs folder holds them
    (runs/speed.json), else None."""
    raw = optional_json(runs, "speed.json")
    if raw is None:
        return None
    codec = {ms: {"window": f"{c['window_fp32']['p50']:.1f}",
                  "state": f"{c['state_fp32']['p50']:.1f}",
                  "speedup": f"{c['state_fp32']['speedup']:.1f}",
                  "int8": f"{c['state_int8']['p50']:.1f}"} for ms, c in raw["codec"].items()}
    runner = {f"{preset}-{ms}-{variant}": {"rtf": f"{r['realtime_factor']:.1f}",
                                           "delay": f"{r['delay_ms']['p50']:.0f}",
                                           "delay_p99": f"{r['delay_ms']['p99']:.0f}",
                                           "frame": f"{r['frame_ms_p50']:.2f}",
                                           "codec": f"{r['codec_chunk_ms_p50']:.1f}"}
              for preset, chunks in raw.get("runner", {}).items()
              for ms, variants in chunks.items() for variant, r in variants.items()}
    return {"codec": codec, "runner": runner, "machine": raw["machine"],
            "command": raw["command"]}


def quantization_of(runs):
    """onnx_runner.py --loss --json's losses, formatted, when the runs folder holds them
    (runs/quantization.json), else None."""
    raw = optional_json(runs, "quantization.json")
    if raw is None:
        return None
    fp32 = raw["losses"]["fp32"]
    return {"fp32": f"{fp32:.4f}", "command": raw["command"],
            **{f"{v}_cost": f"{raw['losses'][v] - fp32:+.4f}" for v in ("int8", "int4")}}


def numbers_of(ablation, lookahead):
    """numbers.json: every figure the prose quotes, formatted as the tables format it."""
    rows = {name: {key: cell(row["mean_sd"].get(key), d) for key, _, d in ABLATION_COLUMNS}
            for name, row in ablation["rows"].items()}
    first = next(iter(ablation["rows"].values()))["runs"][0]
    ahead = {name: {key: cell(row["mean_sd"].get(key), d) for key, _, d in LOOKAHEAD_COLUMNS}
             for name, row in lookahead["rows"].items()}
    return {"ablation": {"rows": rows, "provenance": provenance(ablation),
                         "n_seeds": len(ablation["seeds"])},
            "true_lead": {key: f"{first[key]:.3f}" for key in TRUE_LEAD},
            "lookahead": {"rows": ahead, "provenance": provenance(lookahead),
                          "runner_delay_ms": f"{lookahead['runner_delay_ms']:g}"}}


def quick_runs(tmp, corpus=None):
    """2-step runs of two rows of each table, one seed, on a 5-song demo corpus (built here
    unless given) -> the runs folder."""
    python, runs = sys.executable, tmp / "runs"
    steps = [] if corpus else [[python, ROOT / "data.py", "--out", tmp / "data", "--demo-songs",
                                "5", "--demo-seconds", "8", "--encodec-weights", "untrained"]]
    corpus = corpus or tmp / "data"
    steps += [[python, ROOT / "ablation.py", "--quick", "--rows", "default", "no-solo-dropout",
               "--seeds", "0", "--data", corpus, "--out", runs / "ablation"],
              [python, ROOT / "ablation.py", "--quick", "--table", "lookahead", "--rows",
               "lookahead-0ms", "lookahead-80ms", "--seeds", "0", "--data", corpus,
               "--out", runs / "lookahead", "--runner-delay-ms", "80"]]
    for command in steps:
        done = subprocess.run([str(c) for c in command], capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"{' '.join(map(str, command[1:]))} failed:\n{done.stdout[-1500:]}"
                             f"{done.stderr[-1500:]}")
    return runs


def build(runs, out):
    """Tables, numbers and figures from the runs folder, then the PDF -> its path."""
    import typst
    ablation = read_table(runs, "ablation", "python ablation.py")
    lookahead = read_table(runs, "lookahead", "python ablation.py --table lookahead")
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.typ").write_text(typst_table(ablation, ABLATION_COLUMNS, "row"))
    (out / "lookahead.typ").write_text(typst_table(lookahead, LOOKAHEAD_COLUMNS, "row"))
    numbers = {**numbers_of(ablation, lookahead), "facts": facts(), "speed": speed_of(runs),
               "quantization": quantization_of(runs)}
    (out / "numbers.json").write_text(json.dumps(numbers, indent=2, ensure_ascii=False))
    for name in ("ablation", "lookahead"):  # the tables as read, beside what was made of them
        shutil.copy(Path(runs) / name / "table.json", out / f"{name}.json")
    shutil.copy(Path(runs) / "lookahead" / "lookahead.png", out / "lookahead.png")
    shutil.copy(ROOT / "docs" / "img" / "listening_probes.png", out / "listening_probes.png")
    # paper.typ reads build/...: compiled from a copy beside the build folder's files
    shutil.copy(HERE / "paper.typ", out / "paper.typ")
    shutil.copy(ROOT / "docs" / "references.bib", out / "references.bib")
    pdf = out / "paper.pdf"
    typst.compile(str(out / "paper.typ"), output=str(pdf), root=str(out))
    return pdf


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", default=str(ROOT / "runs"), help="folder holding ablation/ and "
                    "lookahead/ (ablation.py's --out of each table)")
    ap.add_argument("--out", default=str(HERE / "build"), help="where the PDF and its parts go")
    ap.add_argument("--quick", action="store_true", help="tiny runs made first (meaningless "
                    "numbers, every step exercised)")
    ap.add_argument("--quick-data", help="--quick: a demo dataset to use instead of building one")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = quick_runs(Path(tmp), args.quick_data) if args.quick else Path(args.runs)
        pdf = build(runs, Path(args.out))
    print(f"wrote {pdf} (and its tables and numbers beside it)")


if __name__ == "__main__":
    main()
