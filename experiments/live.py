"""
live.py -- phase 5's table as the runner plays it: causal models trained over seeds, each
exported and played by the ONNX runner over its corpus's test songs, paced, and the takes
scored on the wall clock (experiments/takes.py), rows side by side.

    python experiments/live.py                            # every row, seeds 0 1 2
    python experiments/live.py --rows riff riff-ahead --seeds 0 1 2 3 4
    python experiments/live.py --list                     # the rows and what each changes

Each run is three commands, each in its own process and skipped when its output is there
(so Ctrl-C and the same command go on where it stopped): `python train.py --data <corpus>
--out <out>/<row>/seed<N> --seed N --threads 1` with the live recipe (LIVE) and the row's
flags; `python deploy/onnx_export.py` into <run>/onnx; `python experiments/takes.py` over
the test songs into <run>/takes-<guidance> (int8, 40 ms chunks, one thread, the runner's
sampling seed N), once without guidance and once with each --cfg-coef. A corpus that is
not there is built first with data.py. <out>/live.json gets, per row and guidance, every
seed's figures, their mean and standard deviation, and for a row with a baseline (same
corpus, same seeds) the paired differences and a paired t-test.
"""
import argparse
import json
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: sax/
from sax.files import write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]  # the repository: train.py, data.py, deploy/
# The README's live recipe: a causal model, a 300-frame window, written 80 ms ahead. No
# listening test at the end: the takes score these models, as they are played.
LIVE = ("--causal-encoder", "--attn-window", "300", "--lookahead-ms", "80", "--no-listen-test")


@dataclass
class Row:
    what: str              # the change, in words
    corpus: str = ""       # its corpus: <--data>-<corpus>, built with `data` ("": --data)
    data: tuple = ()       # data.py flags of its corpus
    flags: tuple = ()      # train.py flags beside LIVE
    baseline: str = ""     # the row it is compared with, seed by seed
    distill: bool = False  # learns from an offline teacher (train.py --distill-from): TEACHER


# The grown corpus of ablation.py's songs-256 rows; the corpus named as ablation.py names its
# folder (<--data>-<its flags>), so that both tables train on one build.
MORE_SONGS = ("--demo-songs", "256", "--split-songs", "64")
ROWS = {
    "random": Row("the live recipe on the default corpus (each bar's kicks drawn afresh)"),
    "random-ahead": Row("with the anticipation aid at weight 1 (train.py --ahead-aux 1)",
                        flags=("--ahead-aux", "1"), baseline="random"),
    "random-chord1": Row("with the chord aid at weight 1 instead of 0.3 (train.py --chord-aux 1)",
                         flags=("--chord-aux", "1"), baseline="random"),
    "random-chord3": Row("with the chord aid at weight 3 (train.py --chord-aux 3)",
                         flags=("--chord-aux", "3"), baseline="random"),
    "random-solo-dropout-0.5": Row("with solo dropout 0.5 instead of 0.3 "
                                   "(train.py --solo-dropout 0.5)",
                                   flags=("--solo-dropout", "0.5"), baseline="random"),
    "random-hold": Row("with held spans in the solo's past (train.py --solo-hold 0.05): a "
                       "late reaction shown in training", flags=("--solo-hold", "0.05"),
                       baseline="random"),
    "random-hold-0.15": Row("with held spans three times as often (train.py --solo-hold 0.15)",
                            flags=("--solo-hold", "0.15"), baseline="random"),
    "random-swap": Row("with foreign spans in the solo's past (train.py --solo-swap 0.01): a "
                       "wrong note of its own to leave for the band's chord",
                       flags=("--solo-swap", "0.01"), baseline="random"),
    "random-distill": Row("distilled from an offline teacher (weight 1): python train.py as it "
                          "stands, which plays with the band offline", distill=True,
                          baseline="random"),
    "random-pitch1": Row("with the pitch aid at weight 1 on the demo's true notes (train.py "
                         "--pitch-aux 1 --pitch-targets truth): a head on the decoder names the "
                         "lead's pitch class",
                         flags=("--pitch-aux", "1", "--pitch-targets", "truth"), baseline="random"),
    "random-songs-256": Row("on 256 demo songs instead of 64 (244 training songs instead of 52, "
                            "the same test songs: data.py --demo-songs 256 --split-songs 64)",
                            corpus="-".join(flag.strip("-") for flag in MORE_SONGS),
                            data=MORE_SONGS, baseline="random"),
    # The lookahead with the chord aid on, as played: L = 80 ms is the recipe itself ("random")
    **{f"random-lookahead-{ms}": Row(f"written {ms} ms ahead instead of 80 (train.py "
                                     f"--lookahead-ms {ms})", flags=("--lookahead-ms", str(ms)),
                                     baseline="random") for ms in (0, 40, 160)},
    "riff": Row("the live recipe on the corpus whose hits repeat (data.py --demo-style riff)",
                corpus="riff", data=("--demo-style", "riff")),
    "riff-ahead": Row("the same with the anticipation aid at weight 1",
                      corpus="riff", data=("--demo-style", "riff"), flags=("--ahead-aux", "1"),
                      baseline="riff"),
    "riff-distill": Row("the same distilled from an offline teacher (weight 1)",
                        corpus="riff", data=("--demo-style", "riff"), distill=True,
                        baseline="riff"),
    "riff-ahead-distill": Row("the anticipation aid and the teacher together",
                              corpus="riff", data=("--demo-style", "riff"),
                              flags=("--ahead-aux", "1"), distill=True, baseline="riff"),
}
# The teacher of a distilled row: python train.py as it stands (offline, non-causal, aligned,
# the chord aid on), seed 0, on the row's corpus, trained once into <out>/teacher-<corpus>.
TEACHER = ("--seed", "0", "--threads", "1", "--no-listen-test")
# the training run's figures the table reports beside the takes (its summary.json)
TRAINING = ("best_val_ce", "cond_gain")
# the figures the table reports: (key, heading)
FIGURES = (("kick_auc_own", "kick AUC own"), ("kick_auc_mismatched", "kick AUC other"),
           ("note_in_chord_own", "in chord own"), ("note_in_chord_mismatched", "in chord other"),
           ("plays_with_band_rhythm", "plays with the band: rhythm"),
           ("plays_with_band_harmony", "harmony"))


def corpus(args, row):
    """The row's dataset folder, built with data.py when it is not there."""
    folder = Path(f"{args.data}-{row.corpus}" if row.corpus else args.data)
    if not (folder / "meta.json").exists():
        run([sys.executable, str(ROOT / "data.py"), "--out", str(folder), *row.data])
    return folder


def run(command, log=None):
    """One command in its own process (its output to `log`, else to the terminal); a failure
    stops the table with the end of its log."""
    if log is None:
        code = subprocess.run(command).returncode
    else:
        with open(log, "a") as out:
            code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT).returncode
    if code:
        tail = f": the end of {log}:\n{Path(log).read_text(errors='replace')[-800:]}" if log else ""
        raise SystemExit(f"{' '.join(map(str, command[1:]))} failed (exit {code}){tail}")


def train_once(folder, command):
    """train.py `command` into `folder`, unless it finished there (summary.json); an
    interrupted run goes on from its latest/ checkpoint."""
    if (folder / "summary.json").exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    resume = ["--resume"] if (folder / "latest").exists() else []
    run([sys.executable, *command, "--out", str(folder), *resume], folder / "train.log")


def play_one(args, name, seed):
    """Train, export and play one (row, seed): {guidance: takes.json, "training": summary.json's
    validation figures}."""
    row, folder = ROWS[name], Path(args.out) / name / f"seed{seed}"
    data = corpus(args, row)
    flags = row.flags
    if row.distill:
        teacher = Path(args.out) / f"teacher-{row.corpus or 'default'}"
        train_once(teacher, [str(ROOT / "train.py"), "--data", str(data), *TEACHER])
        flags = (*flags, "--distill-from", str(teacher / "best"))
    train_once(folder, [str(ROOT / "train.py"), "--data", str(data), "--seed", str(seed),
                        "--threads", "1", *LIVE, *flags])
    if not (folder / "onnx" / "runner.json").exists():
        run([sys.executable, str(ROOT / "deploy" / "onnx_export.py"), "--checkpoint",
             str(folder / "best"), "--out", str(folder / "onnx"), "--threads", "1",
             "--overwrite"], folder / "export.log")
    takes = {}
    for coef in ["none", *args.cfg_coef]:
        out = folder / f"takes-{coef}"
        if not (out / "takes.json").exists():
            run([sys.executable, str(ROOT / "experiments" / "takes.py"), "--folder",
                 str(folder / "onnx"), "--data", str(data), "--out", str(out), "--seed",
                 str(seed), "--cfg-coef", coef], folder / "takes.log")
        takes[coef] = json.loads((out / "takes.json").read_text())
    summary = json.loads((folder / "summary.json").read_text())
    return {**takes, "training": {key: summary.get(key) for key in TRAINING}}


def paired_t(diffs):
    """Two-sided p of a paired t-test on the differences (Student's t with n - 1 degrees of
    freedom, its tail integrated numerically: no scipy needed)."""
    d, n = np.asarray(diffs, float), len(diffs)
    if n < 2 or np.ptp(d) == 0:  # no spread: a t-test has nothing to say
        return float("nan")
    t, df = abs(d.mean()) / (d.std(ddof=1) / math.sqrt(n)), n - 1
    x = np.linspace(t, t + 2000, 400_001)   # the density past 2000 is negligible for df >= 2
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    density = np.exp(log_c - (df + 1) / 2 * np.log1p(x ** 2 / df))
    return float(min(1.0, 2 * np.trapezoid(density, x)))


def table(results, seeds):
    """{row: {training: {figure: [mean, sd]}, training_seeds: {N: figures}, guidance: {coef:
    {seeds: {N: figures}, mean_sd: {figure: [mean, sd]}, vs_<baseline>}}}} from play_one's
    takes and runs."""
    out = {}
    for name, by_seed in results.items():
        training = {key: [by_seed[s]["training"][key] for s in seeds] for key in TRAINING}
        out[name] = {"what": ROWS[name].what, "data": list(ROWS[name].data),
                     "flags": list(ROWS[name].flags), "distill": ROWS[name].distill,
                     "training": {key: [float(np.mean(v)), float(np.std(v, ddof=1))]
                                  for key, v in training.items() if None not in v},
                     "training_seeds": {str(s): by_seed[s]["training"] for s in seeds},
                     "guidance": {}}
        for coef in (c for c in by_seed[seeds[0]] if c != "training"):
            figures = {s: by_seed[s][coef]["figures"] for s in seeds}
            entry = {"seeds": {str(s): f for s, f in figures.items()},
                     "late_ms_mean": float(np.mean([list(by_seed[s][coef]["late_ms_mean"].values())
                                                    for s in seeds])),
                     "songs": by_seed[seeds[0]][coef]["songs"]}
            entry["mean_sd"] = {key: [float(np.mean(v)), float(np.std(v, ddof=1))]
                                for key, _ in FIGURES if (v := [figures[s][key] for s in seeds])}
            base = ROWS[name].baseline
            if base in results:
                entry["vs_" + base] = {key: {
                    "diffs": (d := [figures[s][key] - results[base][s][coef]["figures"][key]
                                    for s in seeds]),
                    "mean": float(np.mean(d)), "p_paired_t": paired_t(d)}
                    for key, _ in FIGURES}
            out[name]["guidance"][coef] = entry
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cfg-coef", nargs="*", default=["3"],
                        help="guidance coefficients to play besides none")
    parser.add_argument("--data", default="data/demo", help="the default corpus's folder; a "
                        "row's own corpus is <data>-<its data.py flags>")
    parser.add_argument("--out", default="runs/live")
    parser.add_argument("--list", action="store_true", help="print the rows and exit")
    args = parser.parse_args(argv)
    if args.list:
        for name, row in ROWS.items():
            print(f"{name:14} {row.what}")
        return None
    results = {name: {seed: play_one(args, name, seed) for seed in args.seeds}
               for name in args.rows}
    result = {"command": " ".join(["python", "experiments/live.py", *(argv or sys.argv[1:])]),
              "seeds": args.seeds, "split": "test", "variant": "int8", "chunk_ms": 40.0,
              "rows": table(results, args.seeds)}
    write_json(Path(args.out) / "live.json", result)
    for name, row in result["rows"].items():
        for coef, entry in row["guidance"].items():
            print(f"{name:14} guidance {coef:5}" + "".join(
                f"  {head}: {entry['mean_sd'][key][0]:.2f} ± {entry['mean_sd'][key][1]:.2f}"
                for key, head in FIGURES[-2:]))
    print(f"wrote {Path(args.out) / 'live.json'}")
    return result


if __name__ == "__main__":
    main()
