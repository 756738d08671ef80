"""
sampling.py -- how a trained model should be sampled: sampling settings (guidance, temperature,
top-k) tried on finished runs, chosen on the validation songs and then confirmed on the test
songs, which chose neither the checkpoint nor the setting (phase 3: sax/sampling.py's SAMPLING).

    python experiments/sampling.py --split val --out runs/sampling-val.json \
        --runs runs/ablation-test/default/seed{0,1,2,3,4} \
        --try guidance=3 guidance=2 guidance=4 guidance=5 guidance=7 temperature=0.8 top_k=50
    python experiments/sampling.py --split test --out docs/results/sampling-test.json \
        --runs runs/ablation-test/default/seed{0,1,2,3,4} --try guidance=3 guidance=5

Each setting changes SAMPLING only where it says (guidance=none samples without guidance).
Each run's best/ takes sax/listening.py's listening test (the windows of the split; kick AUC,
note-in-chord, plays with the band) with each setting, --draws times (sampling seeds s,
s + 10, s + 20, ... for the run of seed s): one draw of a few dozen windows moves a figure
by about a tenth, which is as much as the settings differ. A run's figure is the mean of
its draws; a row's is the mean and sd over the runs, and its difference from the first
setting is paired run by run, with a 95% Student-t interval over the runs
(sax.intervals.paired_interval). Scores are kept in each run's sampling.json, so a second
call scores only what is new.
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: sax/
from sax import guard  # noqa: E402 (first of the project's: a Ctrl-C while torch loads is one line)

guard.quiet_ctrl_c(__name__)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from sax.checkpoints import load_model, read_json  # noqa: E402
from sax.dataset import load_dataset  # noqa: E402
from sax.files import write_json  # noqa: E402
from sax.intervals import paired_interval  # noqa: E402
from sax.listening import ListeningSet, fit_probes, listening_test, listening_windows  # noqa: E402
from sax.sampling import SAMPLING  # noqa: E402

FIGURES = ("plays_with_band_rhythm", "plays_with_band_harmony", "kick_auc_own",
           "kick_auc_mismatched", "note_in_chord_own", "note_in_chord_mismatched")
NUMBERS = {"guidance": float, "temperature": float, "top_k": int}


def setting_of(text):
    """'guidance=5,top_k=50' -> {"guidance": 5.0, "top_k": 50}; a clear error otherwise."""
    setting = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        if key not in NUMBERS or not value:
            raise SystemExit(f"--try {text}: each part is one of {', '.join(NUMBERS)} = a "
                             "number (guidance=none: no guidance), e.g. guidance=5,top_k=50")
        try:
            setting[key] = None if (key, value) == ("guidance", "none") else NUMBERS[key](value)
        except ValueError:
            raise SystemExit(f"--try {text}: {value!r} is not a number for {key}") from None
    return setting


def scored(run, setting, split, draws, sets, models):
    """(the run's seed, the listening figures of each draw of one setting on one run), cached
    in its sampling.json, keyed by the whole sampling, the split and the sampling seed.
    models: {run: model}, so that a run's checkpoint is read once whatever is left to score."""
    cache_file = Path(run) / "sampling.json"
    cache = json.loads(cache_file.read_text()) if cache_file.exists() else {}
    seed = read_json(Path(run) / "best" / "config.json", "a checkpoint")["train"]["seed"]
    figures = []
    for draw in range(draws):
        key = json.dumps({**SAMPLING, **setting, "split": split, "seed": seed + 10 * draw},
                         sort_keys=True)
        if key not in cache:
            if run not in models:
                models[run] = load_model(Path(run) / "best", "cpu")[0]
            model = models[run]
            ls, probes = sets(model.cfg.max_frames)
            scores = listening_test(model, ls, probes, 16, torch.device("cpu"),
                                    seed=seed + 10 * draw, **setting)
            cache[key] = {k: scores[k] for k in FIGURES}
            write_json(cache_file, cache)  # after each draw: a Ctrl-C loses at most one
        figures.append(cache[key])
    return seed, figures


def table(runs, tries, split, draws, data):
    """Every setting's row: each run's figures (the mean of its draws), the mean and sd over
    the runs, and the paired difference from the first setting."""
    meta, made = load_dataset(data), {}

    def sets(T):  # the split's windows and the probes, built once per window length
        if T not in made:
            backing, solo, where, other, other_solo = listening_windows(data, meta, T, None, split)
            made[T] = (ListeningSet.of(meta, where, backing, solo, other, other_solo),
                       fit_probes(data, meta, T))
        return made[T]

    rows, models = {}, {}
    with tqdm(total=len(tries) * len(runs) * draws, desc=f"listening tests ({split})") as bar:
        for text in tries:
            per_run = []
            for run in runs:
                seed, got = scored(run, setting_of(text), split, draws, sets, models)
                bar.update(draws)
                per_run.append({"run": str(run), "seed": seed,
                                **{k: float(np.mean([g[k] for g in got])) for k in FIGURES},
                                "draws": got})
            rows[text] = {"sampling": {**SAMPLING, **setting_of(text)}, "runs": per_run,
                          "mean_sd": {k: [float(np.mean([r[k] for r in per_run])),
                                          float(np.std([r[k] for r in per_run], ddof=1))
                                          if len(per_run) > 1 else 0.0] for k in FIGURES}}
    first = rows[tries[0]]["runs"]
    for row in rows.values():
        row["against_first"] = {k: paired_interval([r[k] for r in row["runs"]],
                                                   [r[k] for r in first]) for k in FIGURES}
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", required=True, help="finished run folders")
    parser.add_argument("--try", dest="tries", nargs="+", required=True,
                        help="settings, the first the one the others are compared with")
    parser.add_argument("--split", default="val", choices=["val", "test"])
    parser.add_argument("--draws", type=int, default=3, help="sampling seeds per run and setting")
    parser.add_argument("--data", default="data/demo", help="the runs' dataset")
    parser.add_argument("--out", required=True, help="the JSON file to write")
    args = parser.parse_args(argv)
    for text in args.tries:
        setting_of(text)  # every setting checked before any work
    missing = [r for r in args.runs if not (Path(r) / "best" / "config.json").exists()]
    if missing or args.draws < 1:
        raise SystemExit(f"--runs {missing[0]}: no best/ checkpoint there; give finished runs "
                         "(train.py --out)" if missing else "--draws: 1 or more")
    torch.set_num_threads(1)
    rows = table(args.runs, args.tries, args.split, args.draws, args.data)
    write_json(Path(args.out), {
        "command": " ".join(["python", "experiments/sampling.py", *(argv or sys.argv[1:])]),
        "split": args.split, "draws": args.draws, "data": args.data, "rows": rows})
    print(f"{len(args.runs)} runs x {args.draws} draws on the {args.split} songs "
          f"(plays with the band: rhythm, harmony; difference from {args.tries[0]})")
    for text, row in rows.items():
        (rh, rh_sd), (ha, ha_sd) = (row["mean_sd"][k] for k in FIGURES[:2])
        d_rh, d_ha = (row["against_first"][k] for k in FIGURES[:2])
        print(f"  {text:30s} {rh:.2f} ± {rh_sd:.2f} ({d_rh[0]:+.2f} [{d_rh[1]:+.2f}, "
              f"{d_rh[2]:+.2f}])  {ha:.2f} ± {ha_sd:.2f} ({d_ha[0]:+.2f} [{d_ha[1]:+.2f}, "
              f"{d_ha[2]:+.2f}])")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    guard.loaded()
    main()
