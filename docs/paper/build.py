"""
docs/paper/build.py -- the paper draft's tables, figures and numbers, rebuilt from run
folders, and the PDF compiled from them.

    python docs/paper/build.py --runs runs      # with the benchmarks' figures in runs/
    python docs/paper/build.py --quick          # a tiny benchmark made first, in a temporary folder

Every table is committed JSON in --results (docs/results), each naming the command that
made it (hours of training on 2 CPU cores, resumable), and every one scored on the test
songs, which chose no checkpoint: the baselines (experiments/baselines.py), the rows the
prose leans on (choices-test.json, 5 seeds), the other training settings
(settings-test.json) and the chord aid's weights and what was tried beside it
(chord-aid-test.json), 3 seeds each
(experiments/ablation.py's table.json), the sampling choice (sampling-test.json), and the
lookahead as the runner played it (live-lookahead.json, experiments/live.py). When they
are in --runs, three optional files of figures (a dash in the draft otherwise):
runs/speed.json (python tests/benchmark_codec.py --json runs/speed.json), runs/bench.json
(python tests/benchmark.py --threads 1 --json runs/bench.json) and runs/quantization.json
(python solo_onnx/onnx_runner.py solo_onnx --loss data/demo --json runs/quantization.json).

Writes into --out (docs/paper/build by default): numbers.json (every figure the prose
quotes, already formatted: paper.typ reads them from there, so no number in the text
is typed by hand), held.typ, settings.typ, lookahead.typ and the others (the tables),
lookahead.png (the curve), and paper.pdf. --quick measures the steps' speed on 30 frames
first: its figures mean nothing, but every step that makes the real draft runs (the test
suite builds it this way).
"""
import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent  # the repository: data.py, experiments/ablation.py
sys.path.insert(0, str(ROOT))  # the repository: model.py, sax/
from sax import guard  # noqa: E402 (the repository's, stdlib only): staged writes, one-line errors

# The columns of each table: (key in ablation.py's table.json, heading, decimals).
ABLATION_COLUMNS = (("best_val_ce", "val. CE", 3), ("cond_gain", "cond. gain", 3),
                    ("kick_auc_own", "kick AUC own", 3),
                    ("kick_auc_mismatched", "kick AUC other", 3),
                    ("plays_with_band_rhythm", "rhythm", 2),
                    ("plays_with_band_harmony", "harmony", 2),
                    ("overfitting_warnings", "overfit warnings", 1))
# The lookahead table: live.py's takes, as the runner played them, without guidance and
# with guidance 3 (the key's suffix); the training run's two figures first.
PLAYED = (("kick_auc_own", "kick AUC"), ("plays_with_band_rhythm", "rhythm"),
          ("plays_with_band_harmony", "harmony"))
LOOKAHEAD_COLUMNS = (("best_val_ce", "val. CE", 3), ("cond_gain", "cond. gain", 3),
                     *((f"{key}@{coef}", f"{label}{mark}", 3 if key.startswith("kick") else 2)
                       for coef, mark in (("none", ""), ("3", " (g)")) for key, label in PLAYED),
                     ("kick_auc_mismatched@3", "other band (g)", 3))
# The other training settings (SETTINGS, below) get a table of their own, beside the default
# they change (no-chord-aux: trained before the chord aid, as they were), with each row's
# size, how often its notes are chord tones over the own band, and how many evaluations
# warned of overfitting (the other band's figures are inside rhythm and harmony).
SETTINGS_COLUMNS = (ABLATION_COLUMNS[:3] + (("note_in_chord_own", "in chord own", 3),)
                    + ABLATION_COLUMNS[4:])
# The rows the prose leans on, trained again and scored on the test songs (ablation.py's
# table.json for them, kept in --results): Table "held" and the #vt(...) contrasts.
HELD = "choices-test.json"
HELD_COMMAND = ("python experiments/ablation.py --rows default default-guidance-3 no-chord-aux "
                "no-solo-dropout no-guidance cross-attention-only --seeds 0 1 2 3 4 "
                "--out runs/ablation-test")
HELD_COLUMNS = (ABLATION_COLUMNS[0], ABLATION_COLUMNS[1], ABLATION_COLUMNS[4],
                ABLATION_COLUMNS[5])  # val. CE, cond. gain, rhythm, harmony: one column wide
# Optional: the chord aid's weight and labels trained again on fewer seeds and scored on the
# test songs (ablation.py's table.json for them and the default), with the default on a
# corpus grown to 256 songs (the same test songs): more #vt(...) contrasts.
CHORD_AID = "chord-aid-test.json"
CHORD_AID_COMMAND = ("python experiments/ablation.py --rows default chord-aux-0.1 chord-aux-1 "
                     "chord-aux-1-truth chord-pitch-aux-0.3 chord-pitch-aux-0.3-tracked "
                     "chord-width-64 songs-256 songs-256-steps-1000 --seeds 0 1 2 "
                     "--out runs/ablation-test")
# The other training settings the prose names (steps, augmentation, size, the pitch aid),
# trained again on three seeds beside no-chord-aux and no-solo-dropout and scored on the
# test songs: Table "settings" and more #vt(...) contrasts.
SETTINGS = "settings-test.json"
SETTINGS_COMMAND = ("python experiments/ablation.py --rows no-chord-aux no-solo-dropout "
                    "solo-dropout-0.5 steps-1000 augment-1 layers-1 layers-4 width-32 width-64 "
                    "width-96 pitch-aux-0.3-tracked pitch-aux-0.3 pitch-aux-3 "
                    "--out runs/ablation-test")
# Optional: experiments/chord_changes.py's rows, the live recipes' solos sampled on time over
# the test songs (phase 5): where the live harmony is lost. A dash in the draft without it.
CHANGES = "chord-changes.json"
CHANGES_COMMAND = "python experiments/chord_changes.py (its command: docs/phase5-streaming.md)"
# Optional: experiments/sampling.py on the test songs, the sampling choice checked with three
# draws per seed. A dash in the draft without it.
SAMPLING = "sampling-test.json"
SAMPLING_COMMAND = ("python experiments/sampling.py --split test (its command: "
                    "docs/phase3-training-evaluation.md)")
# experiments/live.py's rows that change only the lookahead, played by the runner over the
# test songs: Table "lookahead" and the curve.
LIVE = "live-lookahead.json"
LIVE_COMMAND = ("python experiments/live.py --rows random random-lookahead-0 random-lookahead-40 "
                "random-lookahead-160 --cfg-coef 3")


def read_rows(path, command, optional=False):
    """A table's JSON at path (ablation.py's table.json, baselines.py's JSON), checked: a
    missing, damaged or empty file stops the build in one line naming the command that
    makes it. optional: a missing file is None instead."""
    if not path.exists():
        if optional:
            return None
        raise SystemExit(f"{path} not found: make it with `{command}` (or build with --quick)")
    try:
        table = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SystemExit(f"{path} is damaged ({err}): make it again with `{command}`") from None
    if not isinstance(table, dict) or not table.get("rows"):
        raise SystemExit(f"{path} holds no rows: make it again with `{command}`")
    return table


def shown(value, decimals, sign=""):
    """A figure at `decimals`, with a minus sign rather than a hyphen, and no sign on a zero
    (-0.0001 at 2 decimals is 0.00, not −0.00). sign="+": a plus on positive figures."""
    text = f"{value:{sign}.{decimals}f}"
    if float(text) == 0:
        text = f"{0.0:{sign}.{decimals}f}".lstrip("+")
    return text.replace("-", "−")


def cell(mean_sd, decimals):
    """'0.690 ± 0.020' from [mean, sd]; an en dash where a figure is undefined."""
    if mean_sd is None:
        return "–"
    return f"{shown(mean_sd[0], decimals)} ± {shown(mean_sd[1], decimals)}"


def provenance(table):
    """Where a table came from, for its caption: the command, the seeds, the machine."""
    m = table.get("machine") or {}
    where = (f"{m['cores']}-core {m['cpu']} machine, one thread per run, torch {m['torch']}, "
             f"{m['date']}") if m else "machine not recorded"
    return {"command": table.get("command", "python experiments/ablation.py"),
            "seeds": ", ".join(map(str, table["seeds"])), "machine": where}


def typst_table(table, columns, first, rows=None, params=False, labels=None):
    """A Typst table: one line per row (those named, else all), mean ± standard deviation over
    the seeds; with params, each row's parameter count after its name; labels: {row: what
    its first cell says} instead of its name."""
    rows = [name for name in rows or table["rows"] if name in table["rows"]]
    head = [first, *(["params (M)"] if params else []), *[label for _, label, _ in columns]]
    cells = []
    for name in rows:
        row = table["rows"][name]
        size = [f"{row['runs'][0]['params_m']:.1f}"] if params else []
        cells.append([(labels or {}).get(name, name), *size,
                      *[cell(row["mean_sd"].get(key), d) for key, _, d in columns]])
    quoted = ", ".join(f"[{c}]" for line in [head, *cells] for c in line)
    return (f"#set text(size: 7.5pt)\n#table(columns: {len(head)}, "
            f"align: (left, {', '.join(['right'] * (len(head) - 1))}), stroke: 0.4pt, inset: 3pt, "
            f"{quoted})\n")


def facts():
    """The figures of the setup the prose quotes (the default model's size, a frame's length),
    computed rather than typed."""
    from model import PRESETS, SoloTransformer, preset_config
    tiny = SoloTransformer(preset_config("tiny", n_codebooks=4, card=1024))
    small = SoloTransformer(preset_config("small", n_codebooks=4, card=1024))
    return {"tiny_params_m": f"{tiny.num_params() / 1e6:.1f}",
            "small_params_m": f"{small.num_params() / 1e6:.1f}",
            "tiny_width": PRESETS["tiny"]["d_model"],
            "tiny_layers": PRESETS["tiny"]["n_enc_layers"], "codebooks": 4, "frame_hz": 75,
            "frame_ms": f"{1e3 / 75:.1f}"}


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


def bench_of(runs):
    """tests/benchmark.py --json's figures, formatted, when the runs folder holds them
    (runs/bench.json: one frame at a time, PyTorch's streaming sampler against the exported
    steps on ONNX Runtime), else None."""
    raw = optional_json(runs, "bench.json")
    if raw is None:
        return None
    presets = {}
    for name, fig in raw["presets"].items():
        torch_fps = fig["torch_stream"]["frames_per_s"]
        presets[name] = {"params_m": f"{fig['params_m']:.1f}", **{
            way: {"p50": f"{fig[way]['frame_ms_p50']:.2f}",
                  "p99": f"{fig[way]['frame_ms_p99']:.2f}",
                  "rtf": f"{fig[way]['realtime_factor']:.1f}",
                  "vs_torch": f"{fig[way]['frames_per_s'] / torch_fps:.1f}"}
            for way in ("torch_stream", "onnx_fp32", "onnx_int8", "onnx_int4") if way in fig}}
    return {"presets": presets, "machine": raw["machine"], "command": raw["command"]}


def quantization_of(runs):
    """onnx_runner.py --loss --json's losses, formatted, when the runs folder holds them
    (runs/quantization.json), else None."""
    raw = optional_json(runs, "quantization.json")
    if raw is None:
        return None
    fp32 = raw["losses"]["fp32"]
    return {"fp32": f"{fp32:.4f}", "command": raw["command"],
            # five decimals: int8's difference is a few hundred-thousandths of a nat
            **{f"{v}_cost": shown(raw['losses'][v] - fp32, 5, "+") for v in ("int8", "int4")}}


def lookahead_of(live):
    """live.py's JSON of the lookahead rows -> a table shaped as ablation.py's table.json
    ({rows: {name: {what, runs, mean_sd}}, seeds, command}), the rows in order of lookahead.
    Each run is one seed: its lookahead, its training figures, and its takes' figures as
    "<figure>@<guidance>"; mean_sd is live.py's own, under the same names; late_ms is each
    guidance's lateness, the mean over seeds."""
    sys.path.insert(0, str(ROOT / "experiments"))
    from live import LIVE as RECIPE  # the live recipe's flags: its lookahead
    rows = {}
    for name, row in live["rows"].items():
        flags = row["flags"] if "--lookahead-ms" in row["flags"] else RECIPE
        ms = float(flags[flags.index("--lookahead-ms") + 1])
        runs = [{"seed": int(seed), "lookahead_ms": ms, **row["training_seeds"][seed],
                 **{f"{key}@{coef}": value for coef, taken in row["guidance"].items()
                    for key, value in taken["seeds"][seed].items()}}
                for seed in map(str, live["seeds"])]
        rows[name] = {"what": row["what"], "runs": runs,
                      "late_ms": {coef: taken["late_ms_mean"]
                                  for coef, taken in row["guidance"].items()},
                      "mean_sd": {**row["training"],
                                  **{f"{key}@{coef}": mean_sd
                                     for coef, taken in row["guidance"].items()
                                     for key, mean_sd in taken["mean_sd"].items()}}}
    order = sorted(rows, key=lambda name: rows[name]["runs"][0]["lookahead_ms"])
    return {**{key: live[key] for key in ("command", "seeds", "split", "variant", "chunk_ms")},
            "rows": {name: rows[name] for name in order}}


def lookahead_numbers(lookahead):
    """numbers.json's figures of the lookahead table, formatted as the table formats them."""
    ahead = {name: {key: cell(row["mean_sd"].get(key), d) for key, _, d in LOOKAHEAD_COLUMNS}
             | {"ms": f"{row['runs'][0]['lookahead_ms']:g}"}
             | {f"late_ms@{coef}": f"{late:.0f}" for coef, late in row["late_ms"].items()}
             for name, row in lookahead["rows"].items()}
    return {"rows": ahead, "provenance": provenance(lookahead),
            "split": lookahead["split"], "variant": lookahead["variant"],
            "chunk_ms": f"{lookahead['chunk_ms']:g}"}


def held_of(held):
    """numbers.json's figures of the rows scored on the test songs: where they came from, the
    split scored, how many seeds, and each row's cells as Table "held" prints them."""
    return {"provenance": provenance(held), "split": held["split"],
            "n_seeds": len(held["seeds"]),
            "rows": {name: {key: cell(row["mean_sd"].get(key), d) for key, _, d in HELD_COLUMNS}
                     for name, row in held["rows"].items()}}


def on_time_of(changes):
    """numbers.json's figures of chord_changes.py's rows: each row's rhythm and harmony over
    the whole test windows, sampled on time, as mean ± sd over its seeds (None without it)."""
    if changes is None:
        return None
    return {"rows": {name: {key: cell(row["listening"][f"plays_with_band_{key}"], 2)
                            for key in ("rhythm", "harmony")}
                     for name, row in changes["rows"].items() if "listening" in row}}


def sampling_of(table):
    """numbers.json's figures of sampling.py's test table: each setting's rhythm and harmony
    (mean ± sd over the runs) and its paired difference from the first setting with its
    interval, as "+0.08 [+0.02, +0.13]" (None without it)."""
    if table is None:
        return None
    return {"draws": table["draws"], "rows": {
        name: {**{key: cell(row["mean_sd"][f"plays_with_band_{key}"], 2)
                  for key in ("rhythm", "harmony")},
               **{f"{key}_vs_first": difference(*row["against_first"][f"plays_with_band_{key}"])
                  for key in ("rhythm", "harmony")}}
        for name, row in table["rows"].items()}}


def difference(mean, low, high, decimals=2):
    """'+0.08 [+0.02, +0.13]': a paired difference and its interval, signed."""
    low, high = shown(low, decimals, "+"), shown(high, decimals, "+")
    return f"{shown(mean, decimals, '+')} [{low}, {high}]"


def bracket(interval, decimals=2):
    """'[0.73, 0.94]' from [low, high]; an en dash where there is none."""
    if interval is None:
        return "–"
    return f"[{shown(interval[0], decimals)}, {shown(interval[1], decimals)}]"


def baselines_of(table):
    """numbers.json's figures of one corpus style: each row's token and audio figures with
    their intervals, formatted as Tables 1 and 2 print them."""
    rows = {}
    for name, row in table["rows"].items():
        t, ti = row["token"], row["token_interval"]
        fig = {"rhythm": shown(t["plays_with_band_rhythm"], 2),
               "rhythm_ci": bracket(ti["plays_with_band_rhythm"]),
               "harmony": shown(t["plays_with_band_harmony"], 2),
               "harmony_ci": bracket(ti["plays_with_band_harmony"]),
               "kick_own": shown(t["kick_auc_own"], 3),
               "kick_other": shown(t["kick_auc_mismatched"], 3),
               "chord_own": shown(t["note_in_chord_own"], 3),
               "chord_other": shown(t["note_in_chord_mismatched"], 3)}
        if "audio" in row:
            a, ai = row["audio"], row["audio_interval"]
            fig |= {"onsets": shown(a["plays_with_band_onsets"], 2),
                    "onsets_ci": bracket(ai["plays_with_band_onsets"]),
                    "pitch": shown(a["plays_with_band_pitch"], 2),
                    "pitch_ci": bracket(ai["plays_with_band_pitch"]),
                    **{f"{k}_{side}": shown(a[f"{k}_{key}"], 3)
                       for k in ("onset_f", "beat_f", "pitch_in_chroma")
                       for side, key in (("own", "own"), ("other", "mismatched"))}}
        if "seeds" in row:
            fig |= {f"seeds_{k}": ", ".join(shown(s[f"plays_with_band_{k}"], 2)
                                            for s in row["seeds"])
                    for k in ("rhythm", "harmony")}
            fig["n_seeds"] = len(row["seeds"])
        rows[name] = fig
    return {"rows": rows, "split": table["split"], "songs": len(table["songs"]),
            "windows": table["windows"], "draws": table["draws"],
            "level": f"{table['level'] * 100:.0f}", "command": table["command"]}


# Table 1 and 2: the rows of the baselines JSON in the order the text reads them, bounds first
# and last, and the columns of each.
BASELINE_ROWS = (("true", "true lead"), ("rule", "rule soloist"), ("model", "model"),
                 ("retrieval", "retrieval"), ("deaf", "deaf"))
TOKEN_COLUMNS = (("kick_own", "kick AUC own"), ("kick_other", "other"), ("rhythm", "rhythm"),
                 ("rhythm_ci", "95% interval"), ("chord_own", "in chord own"),
                 ("chord_other", "other"), ("harmony", "harmony"), ("harmony_ci", "95% interval"))
AUDIO_COLUMNS = (("onset_f_own", "onset F own"), ("onset_f_other", "other"), ("onsets", "onsets"),
                 ("onsets_ci", "95% interval"), ("pitch_in_chroma_own", "pitch in chroma own"),
                 ("pitch_in_chroma_other", "other"), ("pitch", "pitch"),
                 ("pitch_ci", "95% interval"))
STYLE_NAMES = {"random": "kicks at random", "lines": "lines", "riff": "riff"}


def baselines_typst(styles, columns):
    """A Typst table of the baselines (and the model where scored) on each corpus style."""
    head = ["corpus", "row", *[label for _, label in columns]]
    cells = []
    for style, numbers in styles.items():
        for name, label in BASELINE_ROWS:
            row = numbers["rows"].get(name)
            if row is None or columns[0][0] not in row:
                continue
            if name == "model":
                label = f"model ({row['n_seeds']} seeds)"
            cells.append([STYLE_NAMES.get(style, style), label,
                          *[row.get(key, "–") for key, _ in columns]])
    quoted = ", ".join(f"[{c}]" for line in [head, *cells] for c in line)
    return (f"#set text(size: 7pt)\n#table(columns: {len(head)}, "
            f"align: (left, left, {', '.join(['right'] * (len(head) - 2))}), stroke: 0.4pt, "
            f"inset: 2.5pt, {quoted})\n")


# A contrast the prose draws between two rows of a table: #vs("a", "b", "key") in paper.typ
# for the phase 3 and lookahead tables, #vt(...) for the rows trained again and scored on
# the test songs. Each is computed seed by seed (sax.intervals.paired_interval) and worded
# with its interval, and as not significant where that interval holds zero.
CONTRAST = re.compile(r'#(vs|vt)\("([^"]+)", "([^"]+)", "([^"]+)"\)')


def contrasts_of(tables, source, decimals_of):
    """{"a|b|key": words} for every #vs(...) the draft's source asks for, each from the table
    of tables["vs"] (phase 3's or the lookahead's) that holds both rows; "test|a|b|key" for
    every #vt(...), from tables["vt"]."""
    from sax.intervals import paired_interval
    out = {}
    for macro, a, b, key in CONTRAST.findall(source):
        table = next((t for t in tables[macro] if a in t["rows"] and b in t["rows"]), None)
        if table is None:
            continue
        runs_a, runs_b = table["rows"][a]["runs"], table["rows"][b]["runs"]
        seeds = [r["seed"] for r in runs_a if r["seed"] in {q["seed"] for q in runs_b}]
        value = {name: {r["seed"]: r.get(key) for r in runs} for name, runs in
                 ((a, runs_a), (b, runs_b))}
        seeds = [s for s in seeds if value[a][s] is not None and value[b][s] is not None]
        if not seeds:
            continue
        mean, low, high = paired_interval([value[a][s] for s in seeds],
                                          [value[b][s] for s in seeds])
        d = decimals_of[key]
        words = difference(mean, low, high, d)
        if len(seeds) > 1 and low <= 0 <= high:
            words += f", not significant over {len(seeds)} seeds"
        out[("test|" if macro == "vt" else "") + f"{a}|{b}|{key}"] = words
    return out


def references_page(source, root):
    """The page the references start on (paper.typ marks the spot with <references-start>):
    a workshop paper's body is held to the pages before it and at most this one."""
    import typst
    found = json.loads(typst.query(str(source), "<references-start>", field="value",
                                   root=str(root)))
    return found[0] if found else None


def quick_runs(tmp):
    """The steps' benchmark on 30 frames -> a runs folder holding its bench.json."""
    runs = tmp / "runs"
    command = [sys.executable, ROOT / "tests" / "benchmark.py", "--presets", "tiny", "--frames",
               "30", "--plain-steps", "10", "--threads", "1", "--json", runs / "bench.json"]
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(map(str, command[1:]))} failed:\n{done.stdout[-1500:]}"
                         f"{done.stderr[-1500:]}")
    return runs


def build(runs, out, results=ROOT / "docs" / "results"):
    """Tables, numbers and figures from the runs folder and the baselines' JSON, then the
    PDF -> its path.

    Every input is read and every part made in memory before a byte is written; the parts
    and the PDF are then written to a hidden folder in --out and moved in, so a bad
    table.json or a failed compile leaves the last build as it was."""
    import typst
    from figures import baselines_figure, lookahead_figure, system_figure
    # the default corpus's baselines are the draft's first results; the other styles' optional
    styles = {style: table for style in ("random", "lines", "riff")
              if (table := read_rows(path := Path(results) / f"baselines-{style}.json",
                                     f"python experiments/baselines.py --data DATA --out {path}",
                                     optional=style != "random"))}
    held = read_rows(Path(results) / HELD, HELD_COMMAND + f" and copy its table.json to {HELD}")
    changes = read_rows(Path(results) / CHANGES, CHANGES_COMMAND, optional=True)
    sampling = read_rows(Path(results) / SAMPLING, SAMPLING_COMMAND, optional=True)
    chord_aid = read_rows(Path(results) / CHORD_AID, CHORD_AID_COMMAND, optional=True)
    settings = read_rows(Path(results) / SETTINGS,
                         SETTINGS_COMMAND + f" and copy its table.json to {SETTINGS}")
    live = read_rows(Path(results) / LIVE, LIVE_COMMAND + f" and copy its live.json to {LIVE}")
    copies = {"paper.typ": HERE / "paper.typ", "references.bib": ROOT / "docs" / "references.bib",
              **{f"baselines-{style}.json": Path(results) / f"baselines-{style}.json"
                 for style in styles},
              **{name: Path(results) / name for name in (HELD, SETTINGS, LIVE)},
              **{name: Path(runs) / name for name in ("speed.json", "bench.json",
                                                      "quantization.json")
                 if (Path(runs) / name).exists()}}  # the optional figures
    try:
        lookahead = lookahead_of(live)
        parts = made_parts(runs, lookahead, styles, held, settings, changes, sampling,
                           chord_aid)
    except (KeyError, IndexError, StopIteration, TypeError, ValueError) as err:
        raise SystemExit(f"{runs}: a table lacks what the draft reads ({type(err).__name__}: "
                         f"{err}): make it again (ablation.py, baselines.py, live.py), or build "
                         "with --quick") from None
    numbers = json.loads(parts["numbers.json"])
    with guard.staged(out) as stage:
        for name, text in parts.items():
            (stage / name).write_text(text)
        for name, path in copies.items():
            shutil.copy(path, stage / name)
        system_figure(stage / "system.png", numbers["facts"])
        baselines_figure(stage / "baselines.png", styles)
        lookahead_figure(stage / "lookahead.png", lookahead)
        # paper.typ reads build/...: compiled from the copy beside the build folder's files
        typst.compile(str(stage / "paper.typ"), output=str(stage / "paper.pdf"), root=str(stage))
        pages = references_page(stage / "paper.typ", stage)
        (stage / "pages.json").write_text(json.dumps({"references_page": pages}) + "\n")
    return out / "paper.pdf", pages


def made_parts(runs, lookahead, styles, held, settings, changes=None, sampling=None,
               chord_aid=None):
    """{file name: text} of the tables and numbers.json, made from the lookahead rows as
    played (lookahead_of), the baselines' JSON, the rows scored on the test songs (held,
    settings: ablation.py's table.json) and, when given, the live recipes
    sampled on time (changes: chord_changes.py's JSON), the sampling choice on the test
    songs (sampling.py's) and the chord aid's rows on the test songs (chord_aid)."""
    baselines = {style: baselines_of(table) for style, table in styles.items()}
    decimals = {key: d for key, _, d in ABLATION_COLUMNS + SETTINGS_COLUMNS + LOOKAHEAD_COLUMNS}
    numbers = {"lookahead": lookahead_numbers(lookahead), "facts": facts(), "speed": speed_of(runs),
               "quantization": quantization_of(runs), "bench": bench_of(runs),
               "baselines": baselines, "held": held_of(held), "settings": held_of(settings),
               "on_time": on_time_of(changes),
               "sampling": sampling_of(sampling),
               "chord_aid": held_of(chord_aid) if chord_aid else None,
               "contrasts": contrasts_of({"vs": (lookahead,),
                                          "vt": (held, settings,
                                                 *([chord_aid] if chord_aid else []))},
                                         (HERE / "paper.typ").read_text(), decimals)}
    return {"settings.typ": typst_table(settings, SETTINGS_COLUMNS, "row", params=True),
            "held.typ": typst_table(held, HELD_COLUMNS, "row"),
            "lookahead.typ": typst_table(lookahead, LOOKAHEAD_COLUMNS, "L (ms)", labels={
                name: row["ms"] for name, row in numbers["lookahead"]["rows"].items()}),
            "baselines.typ": baselines_typst(baselines, TOKEN_COLUMNS),
            "audio.typ": baselines_typst(baselines, AUDIO_COLUMNS),
            "numbers.json": json.dumps(numbers, indent=2, ensure_ascii=False)}


def again(out, tmp):
    """A runs folder made of the optional figures a build folder already holds: the draft
    rebuilt without the benchmarks."""
    runs = tmp / "runs"
    if not (out / "numbers.json").exists():
        raise SystemExit(f"{out / 'numbers.json'} not found: --again rebuilds from a finished "
                         "build folder; build once with --runs first")
    runs.mkdir()
    for name in ("speed.json", "bench.json", "quantization.json"):
        if (out / name).exists():
            shutil.copy(out / name, runs / name)
    return runs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", default=str(ROOT / "runs"), help="folder holding the benchmarks' "
                    "speed.json, bench.json and quantization.json (each optional)")
    ap.add_argument("--results", default=str(ROOT / "docs" / "results"), help="folder holding "
                    "experiments/baselines.py's baselines-random.json (and -lines, -riff if "
                    f"there), {HELD}, {SETTINGS} and {LIVE}")
    ap.add_argument("--out", default=str(HERE / "build"), help="where the PDF and its parts go")
    ap.add_argument("--again", action="store_true", help="rebuild from the tables --out already "
                    "holds (no runs needed: a changed text or figure, the same numbers)")
    ap.add_argument("--quick", action="store_true", help="a tiny benchmark made first "
                    "(meaningless speed figures, every step exercised)")
    args = ap.parse_args()
    with guard.one_line_errors(), tempfile.TemporaryDirectory() as tmp:
        if args.quick:
            runs = quick_runs(Path(tmp))
        elif args.again:
            runs = again(Path(args.out), Path(tmp))
        else:
            runs = Path(args.runs)
        pdf, pages = build(runs, Path(args.out), Path(args.results))
    print(f"wrote {pdf} (the references start on page {pages}; its tables and numbers beside it)")


if __name__ == "__main__":
    main()
