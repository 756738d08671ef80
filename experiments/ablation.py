"""
ablation.py -- a table of training and sampling settings, each row the mean and spread
of several seeds (phase 3; the tables of docs/phase3 and of the paper).

    python experiments/ablation.py                     # every row, seeds 0 1 2, 2 runs at once
    python experiments/ablation.py --rows default cross-attention-only --seeds 0 1 2 3
    python experiments/ablation.py --list              # the rows and what each changes
    python experiments/ablation.py --table lookahead   # phase 5: the solo L ms ahead

One training run is one `python train.py --out <out>/<row>/seed<N> --seed N --threads 1
<the row's flags>`, in its own process, --jobs of them at a time (one thread each:
two one-thread runs on two cores finish sooner than two runs fighting over both, and
their figures do not depend on the machine's load). Rows that change only how solos
are sampled (guidance, temperature, top-k) reuse the checkpoints of the row they
sample from. Then each run's best/ checkpoint takes sax/listening.py's listening test
with the row's sampling settings (kick AUC, note-in-chord, plays-with-the-band), with
the code as it is now, and <out>/table.md and table.json get a line per row: the mean
and the standard deviation over the seeds of every figure, and the seeds' own values
in the JSON.

Stop it any time (Ctrl-C): a finished run is never redone (its summary.json is there),
an interrupted one continues from its latest/ checkpoint (train.py --resume), and a
scored one is not scored again (<run>/listening.json) unless --rescore.
"""
import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: train.py, sax/
from sax import guard  # noqa: E402 (first of the project's: a Ctrl-C while torch loads is one line)

guard.quiet_ctrl_c(__name__)

import numpy as np
import torch
from tqdm import tqdm

import data
from model import ModelConfig, SoloTransformer
from sax.checkpoints import load_model, read_json, resolve_checkpoint
from sax.codec import dataset_codec
from sax.dataset import load_dataset
from sax.evaluation import overfitting
from sax.files import atomic_write, read_metrics, write_json
from sax.listening import (KEY_CHANGE_SONGS, counting_listener, fit_probes, key_change_set,
                           key_change_test, listening_test, scoring_set, scoring_split)
from sax.machine import DEVICES, check_install
from sax.sampling import SAMPLING
from sax.settings import check_settings, opt, parse_settings


@dataclass
class Row:
    """One line of the table: the train.py flags of its runs and how their solos are sampled."""
    what: str                                     # the change, in words (the table's 2nd column)
    flags: tuple = ()                             # train.py flags beside --out, --seed, --threads
    sampling: dict = field(default_factory=dict)  # listening_test's options (SAMPLING)
    runs_of: str = ""                             # sample the checkpoints of this row (no training)
    data: tuple = ()                              # data.py flags of a dataset of its own:
    #                                               the demo corpus built with them, into
    #                                               <--data>-<flags> (data_folder)


# The rows, in the order of the table; each row's flags are all that its runs add to
# `python train.py` as it stands (the "default" row). The chord aid has been on by default
# since the chord-aux rows; the rows that came before it switch it off (OFF), so that
# running one again repeats what it trained, and their text says what changes from that.
TRUTH = ("--pitch-targets", "truth")  # the demo corpus's true notes, not the tracked ones
OFF = ("--chord-aux", "0")
CAUSAL = ("--causal-encoder", "--attn-window", "300")  # phase 5's models, as onnx_export takes
MORE_SONGS = ("--demo-songs", "256", "--split-songs", "64")  # data.py's flags: see songs-256
ROWS = {
    "default": Row("python train.py as it stands (the chord aid at weight 0.3 on the heard "
                   "chroma, solo dropout 0.3), sampled as generate.py samples (guidance 5)"),
    "default-guidance-3": Row("the default's runs sampled with guidance 3 (MusicGen's "
                              "coefficient)", runs_of="default", sampling={"guidance": 3.0}),
    "cond-dropout-0.2": Row("the null backing for guidance trained on 20% of the windows "
                            "instead of 10%", ("--cond-dropout", "0.2")),
    "chord-decoder-0.3": Row("the chord aid as it stands and the band's chord also named "
                             "from the decoder (the pitch head on the heard chroma, weight 0.3)",
                             ("--pitch-aux", "0.3", "--pitch-targets", "chord")),
    "pitch-plan": Row("the chord aid as it stands and the pitch plan: each frame's pitch class "
                      "drawn from the pitch head (weight 1, on the notes data.py tracked), "
                      "then its codes", ("--pitch-aux", "1", "--pitch-plan")),
    "cond-dropout-0.05": Row("the null backing for guidance trained on 5% of the windows "
                             "instead of 10%", ("--cond-dropout", "0.05")),
    "no-chord-aux": Row("no chord aid (the default before it: solo dropout 0.3), sampled as "
                        "generate.py samples (guidance 5)", OFF),
    "no-solo-dropout": Row("no solo dropout (the default before it)",
                           ("--solo-dropout", "0", *OFF)),
    "no-guidance": Row("no solo dropout; sampled without guidance", runs_of="no-solo-dropout",
                       sampling={"guidance": None}),
    "temperature-0.7": Row("no solo dropout; no guidance, temperature 0.7",
                           runs_of="no-solo-dropout",
                           sampling={"guidance": None, "temperature": 0.7}),
    "guidance-5": Row("no solo dropout; guidance 5", runs_of="no-solo-dropout",
                      sampling={"guidance": 5.0}),
    "guidance-3-top-k-50": Row("no solo dropout; guidance 3 and top-k 50",
                               runs_of="no-solo-dropout",
                               sampling={"guidance": 3.0, "top_k": 50}),
    "guidance-3-temperature-0.8": Row("no solo dropout; guidance 3 at temperature 0.8",
                                      runs_of="no-solo-dropout",
                                      sampling={"guidance": 3.0, "temperature": 0.8}),
    "cross-attention-only": Row("no solo dropout, no time-aligned path (cross-attention only)",
                                ("--no-aligned-backing", "--solo-dropout", "0", *OFF)),
    "steps-1000": Row("no solo dropout, 1000 steps instead of 500",
                      ("--max-steps", "1000", "--solo-dropout", "0", *OFF)),
    "augment-1": Row("one pitch/tempo copy of each training song (phase 2's augmentation)",
                     OFF, data=("--augment", "1")),
    "solo-dropout-0.5": Row("50% of the solo's past tokens hidden in training",
                            ("--solo-dropout", "0.5", *OFF)),
    # The architecture: the tiny preset (2+2 layers, width 128, 2.6 M parameters) made
    # shallower, deeper, narrower and wider, each trained as the no-chord-aux row is (500
    # steps, solo dropout 0.3, the preset's learning rate and dropout), so the row
    # asks "does size matter on this corpus, at this budget of steps?"
    "layers-1": Row("1+1 layers instead of 2+2 (2.1 M parameters)", ("--layers", "1", *OFF)),
    "layers-4": Row("4+4 layers instead of 2+2 (3.5 M parameters)", ("--layers", "4", *OFF)),
    "width-32": Row("width 32 instead of 128, d_ff 128 (0.5 M parameters)",
                    ("--d-model", "32", *OFF)),
    "width-64": Row("width 64 instead of 128, d_ff 256 (1.0 M parameters)",
                    ("--d-model", "64", *OFF)),
    "width-96": Row("width 96 instead of 128, d_ff 384 (1.7 M parameters)",
                    ("--d-model", "96", *OFF)),
    "width-192": Row("width 192 instead of 128, d_ff 768 (4.6 M parameters)",
                     ("--d-model", "192", *OFF)),
    # The pitch aid (train.py --pitch-aux): a head on the decoder names the solo's pitch
    # class in each frame. One row learns the notes data.py tracked in the lead's audio, as
    # any dataset would; the others, the demo corpus's true notes (TRUTH).
    "pitch-aux-0.3-tracked": Row("the pitch aid at weight 0.3 on the notes data.py tracked: a "
                                 "head on the decoder names the lead's pitch class in each "
                                 "frame", ("--pitch-aux", "0.3", *OFF)),
    "pitch-aux-0.3": Row("the same on the demo's true notes",
                         ("--pitch-aux", "0.3", *TRUTH, *OFF)),
    "pitch-aux-1": Row("the same on the true notes, weight 1",
                       ("--pitch-aux", "1", *TRUTH, *OFF)),
    "pitch-aux-3": Row("the same on the true notes, weight 3",
                       ("--pitch-aux", "3", *TRUTH, *OFF)),
    "pitch-aux-10": Row("the same on the true notes, weight 10",
                        ("--pitch-aux", "10", *TRUTH, *OFF)),
    "pitch-aux-3-width-192": Row("the same on the true notes, weight 3, at width 192 (4.6 M "
                                 "parameters)",
                                 ("--pitch-aux", "3", "--d-model", "192", *TRUTH, *OFF)),
    "pitch-aux-1-temperature-0.7": Row("weight 1; guidance 3 at temperature 0.7",
                                       runs_of="pitch-aux-1",
                                       sampling={"guidance": 3.0, "temperature": 0.7}),
    "pitch-aux-1-guidance-5": Row("weight 1; guidance 5", runs_of="pitch-aux-1",
                                  sampling={"guidance": 5.0}),
    "pitch-aux-3-temperature-0.7": Row("weight 3; guidance 3 at temperature 0.7",
                                       runs_of="pitch-aux-3",
                                       sampling={"guidance": 3.0, "temperature": 0.7}),
    "pitch-aux-3-guidance-5": Row("weight 3; guidance 5", runs_of="pitch-aux-3",
                                  sampling={"guidance": 5.0}),
    # The chord aid (train.py --chord-aux): a head on the encoder names the band's harmony
    # in each frame, so that the chord the decoder must choose its notes from is plain in
    # the encoder states. Weight 0.3 on the chroma data.py heard in the backing is the default.
    "chord-aux-0.1": Row("the chord aid at weight 0.1 instead of 0.3", ("--chord-aux", "0.1")),
    "chord-aux-1": Row("the chord aid at weight 1", ("--chord-aux", "1")),
    "chord-aux-1-truth": Row("the chord aid at weight 1 on the demo's true chords (each tone an "
                             "equal share) instead of the heard chroma",
                             ("--chord-aux", "1", "--chord-targets", "truth")),
    "chord-solo-dropout-0": Row("the chord aid as it stands, without solo dropout (the decoder "
                                "sees all of the solo's past in training)",
                                ("--solo-dropout", "0")),
    "chord-solo-dropout-0.5": Row("the chord aid as it stands, with solo dropout 0.5 instead of "
                                  "0.3", ("--solo-dropout", "0.5")),
    "chord-aux-0.3-truth": Row("the chord aid at its weight 0.3 on the demo's true chords "
                               "instead of the heard chroma (on beat 4 mostly the walking "
                               "bass's step to the next root)", ("--chord-targets", "truth")),
    # Beside the chord aid as it stands: the pitch aid (the decoder asked to name the note
    # it plays while the encoder names the chord), and a narrower model (width 64, which
    # placed more notes in the chords without the aid).
    "chord-pitch-aux-0.3": Row("the chord aid as it stands and the pitch aid at weight 0.3 on "
                               "the demo's true notes", ("--pitch-aux", "0.3", *TRUTH)),
    "chord-pitch-aux-0.3-tracked": Row("the chord aid as it stands and the pitch aid at weight "
                                       "0.3 on the notes data.py tracked",
                                       ("--pitch-aux", "0.3")),
    "chord-width-64": Row("the chord aid as it stands, at width 64 instead of 128 (1.0 M "
                          "parameters)", ("--d-model", "64")),
    # More of the same: the demo corpus grown to 256 songs (4x the training songs), its
    # validation and test songs those of the 64-song corpus (data.py --split-songs 64).
    "songs-256": Row("the default on 256 demo songs instead of 64 (the same val and test "
                     "songs; 244 train instead of 52)", data=MORE_SONGS),
    "songs-256-steps-1000": Row("the same, 1000 steps instead of 500",
                                ("--max-steps", "1000"), data=MORE_SONGS),
    # Phase 5's table: causal models that write the solo L ms ahead of the backing they
    # have heard. Sampled as the board's runner samples (no guidance: onnx_runner.py has
    # none). Besides the usual figures, each is scored as the live runner would place it
    # on the wall clock, `late` frames behind the band (sax.listening.kick_auc_late), for
    # every lateness the runner may have.
    "lookahead-0ms": Row("causal, window 300, the solo written 0 ms ahead of the backing heard",
                         (*CAUSAL, "--lookahead-ms", "0", "--no-listen-test", *OFF),
                         sampling={"guidance": None}),
    "lookahead-40ms": Row("causal, window 300, the solo written 40 ms ahead of the backing "
                          "heard", (*CAUSAL, "--lookahead-ms", "40", "--no-listen-test", *OFF),
                          sampling={"guidance": None}),
    "lookahead-80ms": Row("causal, window 300, the solo written 80 ms ahead of the backing "
                          "heard", (*CAUSAL, "--lookahead-ms", "80", "--no-listen-test", *OFF),
                          sampling={"guidance": None}),
    "lookahead-160ms": Row("causal, window 300, the solo written 160 ms ahead of the backing "
                           "heard", (*CAUSAL, "--lookahead-ms", "160", "--no-listen-test", *OFF),
                           sampling={"guidance": None}),
    "lookahead-240ms": Row("causal, window 300, the solo written 240 ms ahead of the backing "
                           "heard", (*CAUSAL, "--lookahead-ms", "240", "--no-listen-test", *OFF),
                           sampling={"guidance": None}),
}
LOOKAHEAD_MS = (0, 40, 80, 160, 240)
TABLES = {"phase3": [name for name in ROWS if not name.startswith("lookahead-")],
          "lookahead": [f"lookahead-{ms}ms" for ms in LOOKAHEAD_MS]}

# --quick: what every run gets on top of its row's flags, so that a table builds in a minute.
QUICK = ("--window-s", "1", "--batch-size", "4", "--target-batch", "4", "--max-steps", "2",
         "--warmup-steps", "1", "--eval-every", "2", "--save-every", "2", "--eval-windows", "4",
         "--page-sample-s", "0", "--no-listen-test", "--device", "cpu")

# key_change_test's frames until the solo is back in the new key's chords:
# null in table.json for a run that is not back within the window (left out of the mean).
KEY_CHANGE = "key_change_recovery_frames_generated"

# The figures of each run, in the table's order: (key, column heading, decimals).
FIGURES = (("best_val_ce", "best val CE", 3), ("cond_gain", "conditioning gain", 3),
           ("cond_gain_kicks", "gain at kicks", 3), ("kick_auc_own", "kick AUC own", 3),
           ("kick_auc_mismatched", "kick AUC other", 3), ("note_in_chord_own", "in chord own", 3),
           ("note_in_chord_mismatched", "in chord other", 3),
           ("plays_with_band_rhythm", "plays with band: rhythm", 2),
           ("plays_with_band_harmony", "plays with band: harmony", 2),
           ("key_change_in_chord_before_generated", "in chord before a key change", 3),
           ("key_change_in_chord_after_generated", "in chord 0.5 s after it", 3),
           (KEY_CHANGE, "frames to recover", 0),
           ("overfitting_warnings", "overfit warnings", 1),
           ("frames_per_s", "frames/s (1 thread)", 0))
# Phase 5's table: the same training figures, the offline kick AUC, and the kick AUC of
# the solo as the live runner places it: `late` frames behind the band frame it was
# written for, the runner's delay (--runner-delay-ms) less the row's lookahead.
LATE = range(0, 31)  # lateness scored for every run, in frames (0 to 400 ms at 75 Hz)
def figures_of(*keys):
    return tuple(next(f for f in FIGURES if f[0] == key) for key in keys)


LOOKAHEAD_FIGURES = (figures_of("best_val_ce", "cond_gain", "kick_auc_own", "kick_auc_mismatched")
                     + (("kick_auc_wall_clock", "kick AUC on the wall clock", 3),
                        ("late_ms", "late on the wall clock (ms)", 0))
                     + figures_of("plays_with_band_rhythm", "overfitting_warnings", "frames_per_s"))
TABLE_FIGURES = {"phase3": FIGURES, "lookahead": LOOKAHEAD_FIGURES}


@dataclass
class AblationConfig:
    table: str = opt("phase3", "which table: phase3 (training and sampling settings) or "
                               "lookahead (phase 5's anticipation)", list(TABLES))
    rows: list = opt([], "rows to run, by name (--list shows them; default: the table's)")
    seeds: list = opt([0, 1, 2], "training seeds: each row is the mean and spread over these")
    out: str = opt("", "folder of the runs (<out>/<row>/seed<N>) and the table "
                       "(default runs/ablation, runs/lookahead for --table lookahead)")
    data: str = opt("data/demo", "dataset folder (the default one is built first if missing)")
    jobs: int = opt(2, "training runs at once, one CPU thread each", at_least=1, at_most=64)
    rescore: bool = opt(False, "score every checkpoint again (after a change to sax/listening.py)")
    list: bool = opt(False, "print the rows and exit")
    device: str = opt("cpu", "where the listening test samples", DEVICES)
    quick: bool = opt(False, "tiny runs (2 steps on 1 s windows, 2 key-change songs): a check "
                             "that the table builds end to end (the tests', the paper's --quick)")
    runner_delay_ms: float = opt(165.0, "--table lookahead: the live runner's end-to-end delay "
                                        "(onnx_runner.py's report, p50), to place each solo "
                                        "on the wall clock", at_least=0, at_most=10_000)


# ----------------------------------------------------------------------------
# 1. Training: one train.py process per (row, seed)
# ----------------------------------------------------------------------------
# Why seeds: on a small model and a small corpus, one run's figure moves a lot with
# nothing changed but the seed (the initial weights, the order of the windows, the
# dropout masks) or even the thread count (the order of floating-point sums). A row
# is a claim about a setting only when its mean moves by more than the spread of its
# seeds; the table prints both so that a reader can check.
# Why processes: each run is exactly what a user gets from `python train.py` with
# those flags (its own interpreter, its own random state, its checkpoints and log),
# and ablation.py never imports train.py, an entry script.

def run_folder(cfg, name, seed):
    """Where a run lives: a sampling row's runs are its training row's."""
    return Path(cfg.out) / (ROWS[name].runs_of or name) / f"seed{seed}"


def data_folder(cfg, name):
    """The dataset a row trains on: --data, or its own one built with data.py's flags."""
    row = ROWS[ROWS[name].runs_of or name]
    return f"{cfg.data}-{'-'.join(a.strip('-') for a in row.data)}" if row.data else cfg.data


def build_data(cfg, name):
    """A row's own dataset, built once by data.py (the demo corpus with the row's flags)."""
    folder, row = data_folder(cfg, name), ROWS[ROWS[name].runs_of or name]
    if row.data and not (Path(folder) / "meta.json").exists():
        command = [sys.executable, str(ROOT / "data.py"), "--out", folder, *row.data]
        if subprocess.run(command).returncode:
            raise SystemExit(f"{' '.join(command[1:])} failed: see its output above")


def train_command(cfg, name, seed):
    """The train.py command of one run, whatever state kill -9 left its folder in: --resume
    when an interrupted run left latest/, --overwrite when it stopped before its first
    save (best/ or metrics.jsonl without latest/: nothing to resume), plain when empty."""
    folder = run_folder(cfg, name, seed)
    started = any(resolve_checkpoint(folder / n).exists() for n in ("best", "metrics.jsonl"))
    resume = (["--resume"] if resolve_checkpoint(folder / "latest").exists()
              else ["--overwrite"] if started else [])
    return [sys.executable, str(ROOT / "train.py"), "--data", data_folder(cfg, name),
            "--out", str(folder),
            "--seed", str(seed), "--threads", "1", *ROWS[ROWS[name].runs_of or name].flags,
            *(QUICK if cfg.quick else ()), *resume]


ROOT = Path(__file__).resolve().parents[1]  # the repository, where train.py lives

# Set by a Ctrl-C (or a failed run): no new run starts after it.
STOP = threading.Event()


def train_one(cfg, name, seed):
    """Run train.py for one (row, seed), unless it finished before. Its output goes to
    <run>/train.log; a failure stops the table with the log's last lines."""
    folder = run_folder(cfg, name, seed)
    if (folder / "summary.json").exists() or STOP.is_set():
        return
    folder.mkdir(parents=True, exist_ok=True)
    command = train_command(cfg, name, seed)
    with open(folder / "train.log", "a") as log:
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode
    if code:
        STOP.set()
    if code == 130:  # Ctrl-C: train.py saved latest/ and said so
        raise KeyboardInterrupt
    if code:
        tail = (folder / "train.log").read_text(errors="replace")[-800:]
        raise SystemExit(f"{' '.join(command[1:])} failed (exit {code}); "
                         f"the end of {folder / 'train.log'}:\n{tail}")


# ----------------------------------------------------------------------------
# 2. Scoring: the listening tests of each run's best checkpoint, with today's code
# ----------------------------------------------------------------------------
# train.py's own summary holds the figures of training (losses, conditioning gain);
# the listening figures are recomputed here, so that every row of a table is scored by
# the same code and the same sampling even when the runs are older than a change to
# sax/listening.py (--rescore), and so that sampling rows need no training at all.

def listening_set(cfg, cache, T):
    """(ListeningSet, Probes) for windows of T frames, built once per T."""
    if ("listening", T) not in cache:
        meta = cache["meta"]
        # the test songs score (the validation songs chose each run's checkpoint)
        cache["listening", T] = (scoring_set(cfg.data, meta, T)[1], fit_probes(cfg.data, meta, T))
    return cache["listening", T]


def scoring_sets(cfg, cache, T):
    """(ListeningSet, Probes, KeyChangeSet) for windows of T frames, built once per T."""
    if ("key change", T) not in cache:
        codec = dataset_codec(cache["meta"]["codec"], cfg.data, cfg.device)
        songs = KEY_CHANGE_SONGS[:2 if cfg.quick else None]
        cache["key change", T] = key_change_set(codec, T, songs)
    return (*listening_set(cfg, cache, T), cache["key change", T])


def score_one(cfg, name, seed, cache):
    """The run's figures: its summary, the median training speed, and the listening test and
    the key-change test of its best/ with the row's sampling (cached in
    <run>/listening.json by sampling)."""
    folder = run_folder(cfg, name, seed)
    summary = read_json(folder / "summary.json", "a finished run")
    rows = read_metrics(folder / "metrics.jsonl")
    speed = [r["frames_per_s"] for r in rows if "frames_per_s" in r]
    history = [(r["train_loss"], r["val_ce"]) for r in rows if "val_ce" in r]
    # keyed by every sampling option, defaults included, and by the split scored: a new
    # default is a new score
    sampling = {**SAMPLING, **ROWS[name].sampling}
    split = scoring_split(cache["meta"])
    scores_file = folder / "listening.json"
    key = json.dumps({**sampling, "split": split}, sort_keys=True)
    scores = {} if cfg.rescore or not scores_file.exists() else json.loads(scores_file.read_text())
    model_cfg = read_json(folder / "best" / "config.json", "a checkpoint")["model"]
    late = LATE if model_cfg.get("causal_encoder") else ()  # streamable: scored on the wall clock
    if KEY_CHANGE not in scores.get(key, {}) or (late and "kick_auc_own_late0" not in scores[key]):
        model, config = load_model(folder / "best", cfg.device)
        ls, probes, kc = scoring_sets(cfg, cache, model.cfg.max_frames)
        device = torch.device(cfg.device)
        scores[key] = {**listening_test(model, ls, probes, 16, device, seed=seed, late=late,
                                        **sampling),
                       **key_change_test(model, kc, probes, device, seed=seed, **sampling)}
        write_json(scores_file, scores)
    if late:  # the runner's delay less the lookahead, in whole frames, never below 0
        fr = model_cfg["frame_rate"]
        n = max(0, round(cfg.runner_delay_ms * fr / 1e3) - model_cfg.get("lookahead", 0))
        scores[key] = {**scores[key], "late_ms": n * 1e3 / fr,
                       "lookahead_ms": model_cfg.get("lookahead", 0) * 1e3 / fr,
                       "kick_auc_wall_clock": scores[key][f"kick_auc_own_late{min(n, LATE[-1])}"]}
    best = summary.get("best", {})
    size = SoloTransformer(ModelConfig(**model_cfg)).num_params() / 1e6  # the architecture rows'
    return {"seed": seed, "params_m": size, "best_val_ce": summary["best_val_ce"],
            "cond_gain": best.get("cond_gain"), "cond_gain_kicks": best.get("cond_gain_kicks"),
            # evaluations that printed train.py's overfitting warning
            "overfitting_warnings": sum(overfitting(history[:i + 1])
                                        for i in range(len(history))),
            "frames_per_s": float(np.median(speed)), **scores[key]}


# ----------------------------------------------------------------------------
# 3. The table: mean and standard deviation over the seeds
# ----------------------------------------------------------------------------

def mean_and_spread(values):
    """(mean, sample standard deviation) of the values that are numbers (not None, not nan:
    a plays-with-the-band score is nan where the true lead tells no difference), or None."""
    values = [v for v in values if v is not None and not np.isnan(v)]
    if not values:
        return None
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def shown(value, decimals):
    """A figure at `decimals`, with no sign on a zero (-0.001 at 2 decimals is 0.00)."""
    text = f"{value:.{decimals}f}"
    return text.lstrip("-") if float(text) == 0 else text


def command_line(cfg):
    """The command that rebuilds this table (its non-default options)."""
    rows = "" if cfg.rows == TABLES[cfg.table] else " --rows " + " ".join(cfg.rows)
    seeds = ("" if cfg.seeds == AblationConfig().seeds  # the default seeds
             else " --seeds " + " ".join(map(str, cfg.seeds)))
    out = "" if cfg.out == default_out(cfg.table) else f" --out {cfg.out}"
    return ("python experiments/ablation.py" + (" --quick" if cfg.quick else "")
            + ("" if cfg.table == "phase3" else f" --table {cfg.table}") + rows + seeds + out
            + ("" if cfg.table != "lookahead" else f" --runner-delay-ms {cfg.runner_delay_ms:g}"))


def default_out(table):
    """Where a table's runs go unless --out says: runs/ablation for phase 3's, runs/<table>."""
    return "runs/ablation" if table == "phase3" else f"runs/{table}"


def machine():
    """Where the table was made: each run used one thread of this machine."""
    import os
    import platform
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__,
            "threads_per_run": 1, "date": time.strftime("%Y-%m-%d")}


def write_table(cfg, results, counted):
    """table.json (every run's figures, each row's mean and spread, and `counted`: the data's
    own figures, counting_listener's) and table.md."""
    figures = TABLE_FIGURES[cfg.table]
    keys = [key for key, _, _ in figures] + [key for key in results[next(iter(results))][0]
                                             if key.startswith("kick_auc_own_late")
                                             or key == "lookahead_ms"]
    rows = {name: {"what": ROWS[name].what, "runs": runs,
                   "mean_sd": {key: mean_and_spread([r.get(key) for r in runs]) for key in keys}}
            for name, runs in results.items()}
    extra = {"runner_delay_ms": cfg.runner_delay_ms} if cfg.table == "lookahead" else {}
    split = scoring_split(load_dataset(cfg.data))  # the songs every row's listening test is on
    write_json(Path(cfg.out) / "table.json", {"seeds": cfg.seeds, "split": split, "rows": rows,
                                              **extra,
                                              "counting_listener": counted,
                                              "command": command_line(cfg), "machine": machine()})
    head = "| row | what | seeds | " + " | ".join(label for _, label, _ in figures) + " |"
    lines = [head, "|" + "---|" * (3 + len(figures))]
    for name, row in rows.items():
        cells = []
        for key, _, decimals in figures:
            m = row["mean_sd"][key]
            cells.append("" if m is None else f"{shown(m[0], decimals)} ± {shown(m[1], decimals)}")
        lines.append(f"| {name} | {row['what']} | {len(row['runs'])} | " + " | ".join(cells) + " |")
    command = command_line(cfg)
    note = (f"\nMean ± standard deviation over seeds {', '.join(map(str, cfg.seeds))}; "
            f"listening figures on the {split} songs; "
            f"written by `{command}` ({time.strftime('%Y-%m-%d')}).\n")
    note += ("A listener that only counts the band's codes (counting_listener) "
             f"picks chord tones {counted['note_in_chord_counted_own']:.3f} of the time over its "
             f"own band, {counted['note_in_chord_counted_mismatched']:.3f} over another song's.\n")
    if cfg.table == "lookahead":
        note += (f"On the wall clock: each solo heard the runner's delay ({cfg.runner_delay_ms:g} "
                 "ms, --runner-delay-ms) less its lookahead behind the band frame it was "
                 "written for, never early; sampled as the runner samples (no guidance).\n")
        lookahead_picture(rows, Path(cfg.out) / "lookahead.png", cfg.runner_delay_ms)
    atomic_write(Path(cfg.out) / "table.md", lambda f: f.write("\n".join(lines) + "\n" + note),
                      mode="w")
    return "\n".join(lines)


def lookahead_picture(rows, png, delay_ms):
    """Phase 5's curve: kick AUC against lookahead, offline and on the wall clock, and what
    each lookahead costs in validation loss (mean and standard deviation over seeds)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    stat = lambda key: np.array([rows[n]["mean_sd"].get(key) or (np.nan, np.nan)  # noqa: E731
                                 for n in rows]).T
    ms = stat("lookahead_ms")[0]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for key, label, style in (("kick_auc_own", "offline: over its own band", "o-"),
                              ("kick_auc_wall_clock", f"live: on the wall clock (runner delay "
                                                      f"{delay_ms:g} ms)", "s-"),
                              ("kick_auc_mismatched", "offline: over another song's band", "^--")):
        mean, sd = stat(key)
        left.errorbar(ms, mean, yerr=sd, fmt=style, capsize=3, label=label)
    left.axhline(0.5, color="grey", lw=0.8, ls=":")
    left.axvline(delay_ms, color="tab:red", lw=0.8, ls=":", label="the runner's delay")
    left.set_xlabel("lookahead L (ms)")
    left.set_ylabel("kick AUC of the generated solo")
    left.set_title("does the solo land on the band's kicks?")
    left.legend(fontsize=8)
    mean, sd = stat("best_val_ce")
    right.errorbar(ms, mean, yerr=sd, fmt="o-", capsize=3)
    right.set_xlabel("lookahead L (ms)")
    right.set_ylabel("best validation cross-entropy (nats)")
    right.set_title("what looking ahead costs")
    fig.tight_layout()
    atomic_write(png, lambda f: fig.savefig(f, format="png", dpi=90))
    plt.close(fig)


def main(cfg):
    try:
        cfg.seeds = [int(seed) for seed in cfg.seeds]  # the command line gives words
    except ValueError:
        raise SystemExit(f"--seeds {' '.join(map(str, cfg.seeds))}: whole numbers, "
                         "e.g. --seeds 0 1 2") from None
    if not cfg.seeds or min(cfg.seeds) < 0:
        raise SystemExit(f"--seeds {' '.join(map(str, cfg.seeds)) or '(none)'}: one or more "
                         "whole numbers, 0 or more, e.g. --seeds 0 1 2")
    check_settings(cfg)
    cfg.rows = cfg.rows or TABLES[cfg.table]
    cfg.out = cfg.out or default_out(cfg.table)
    unknown = [name for name in cfg.rows if name not in ROWS]
    if unknown:
        raise SystemExit(f"--rows: no row {', '.join(unknown)}; the rows are {', '.join(ROWS)}")
    if cfg.data == "data/demo" and not (Path(cfg.data) / "meta.json").exists():
        # built once here, before the parallel runs, which would otherwise each build it
        data.build_dataset(data.DataConfig(out=cfg.data))
    for name in cfg.rows:  # rows with a dataset of their own: built first, one at a time
        build_data(cfg, name)
    runs = sorted({(ROWS[name].runs_of or name, seed) for name in cfg.rows for seed in cfg.seeds})
    print(f"{len(runs)} training runs ({cfg.jobs} at a time, 1 thread each) into {cfg.out}; "
          f"train.py's output in each run's train.log")
    # Threads only wait here: each one starts a train.py process and waits for it, so
    # `jobs` runs go at once, each on its own core with --threads 1.
    with ThreadPoolExecutor(cfg.jobs) as pool, tqdm(total=len(runs), desc="runs") as bar:
        try:
            for _ in pool.map(lambda run: train_one(cfg, *run), runs):
                bar.update(1)
        except BaseException:  # Ctrl-C or a failed run: start nothing more
            STOP.set()
            raise
    if STOP.is_set():  # a run of another thread was interrupted
        raise KeyboardInterrupt
    # Scored one after another in this process: sampling is quick next to training.
    cache = {"meta": load_dataset(cfg.data)}
    results = {name: [score_one(cfg, name, seed, cache) for seed in cfg.seeds]
               for name in tqdm(cfg.rows, desc="listening tests")}
    # what counting the band's codes gives, on the windows of the first row's models
    T = read_json(run_folder(cfg, cfg.rows[0], cfg.seeds[0]) / "best" / "config.json",
                  "a checkpoint")["model"]["max_frames"]
    ls, probes = listening_set(cfg, cache, T)
    print(write_table(cfg, results, counting_listener(probes, ls)))
    print(f"wrote {Path(cfg.out) / 'table.md'} and table.json")


if __name__ == "__main__":
    guard.loaded()
    config = parse_settings(AblationConfig, description=__doc__.split("\n\n")[0])
    check_install()
    if config.list:
        for row_name, row in ROWS.items():
            flags = ROWS[row.runs_of or row_name].flags
            print(f"{row_name:26s} {row.what}: train.py {' '.join(flags) or '(defaults)'}"
                  + (f", sampled with {row.sampling}" if row.sampling else ""))
        sys.exit(0)
    torch.set_num_threads(1)
    try:
        with guard.one_line_errors("lower --jobs"):
            main(config)
    except KeyboardInterrupt:
        raise SystemExit("\nstopped by Ctrl-C: finished runs are kept and an interrupted "
                         "one continues from its latest/; the same command goes on from "
                         "there") from None
