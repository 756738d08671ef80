"""The figures the README and docs/ quote are the figures the commands wrote.

The JSON they come from is what experiments/ablation.py and the benchmarks wrote: the JSON
of docs/results (ablation-val.json and lookahead-val.json: ablation.py's tables on the
validation windows; the *-test.json tables on the test songs), and the benchmarks' as the
paper's build keeps it in docs/paper/build/ (bench.json, speed.json, quantization.json).
Three checks, strictest first:
  1. every table row named after a row of a table JSON holds that row's figures, cell by
     cell, as mean ± standard deviation at the column's decimals;
  2. every other "mean ± sd" on the pages is some row's figure at the decimals shown;
  3. the figures the README quotes outside those (speed, the cache) are the benchmark's.
The log (docs/log.md) keeps dated runs and is not checked: it is history.
"""
import json
import re
import sys

import pytest

from conftest import ROOT

import ablation

BUILD = ROOT / "docs" / "paper" / "build"
RESULTS = ROOT / "docs" / "results"
PAGES = [ROOT / "README.md"] + sorted(p for p in (ROOT / "docs").glob("*.md") if p.name != "log.md")
TABLES = {name: json.loads((RESULTS / f"{name}.json").read_text())
          for name in ("ablation-val", "lookahead-val", "choices-test", "chord-aid-test",
                       "settings-test", "cond-dropout-test", "cond-dropout-0.05-test",
                       "chord-decoder-test", "pitch-plan-test", "chord-truth-test",
                       "chord-solo-dropout-test")}
# The rows trained again and scored on the test songs: a page's table of them heads its first
# column "row, test songs" (the rows the paper leans on, five seeds), "row, test songs, chord
# aid" (the chord aid's weight and labels beside the default), "row, test songs, more songs"
# (the default on a grown corpus: rows of the same JSON), "row, test songs, settings" (the
# other training settings beside no-chord-aux) or "row, test songs, null backing" (the
# null backing's share beside the default, both trained again), three seeds each.
HELD_HEADINGS = {"row, test songs": "choices-test", "row, test songs, chord aid": "chord-aid-test",
                 "row, test songs, more songs": "chord-aid-test",
                 "row, test songs, settings": "settings-test",
                 "row, test songs, null backing": "cond-dropout-test",
                 "row, test songs, less null backing": "cond-dropout-0.05-test",
                 "row, test songs, chord from the decoder": "chord-decoder-test",
                 "row, test songs, the note first": "pitch-plan-test",
                 "row, test songs, the true chords at the aid's weight": "chord-truth-test",
                 "row, test songs, solo dropout beside the aid": "chord-solo-dropout-test"}
TESTED = [TABLES[name] for name in dict.fromkeys(HELD_HEADINGS.values())]
# experiments/sampling.py: sampling settings on the default's runs, chosen on the validation
# songs (sampling-val.json), the choice checked on the test songs (sampling-test.json); then
# settings beside guidance 5 on the default's runs trained again (sampling-g5-<split>.json).
# Each file: (its split, the setting the others are compared with).
SAMPLING_FILES = {"sampling-val": ("val", "guidance=3"), "sampling-test": ("test", "guidance=3"),
                  "sampling-g5-val": ("val", "guidance=5")}
SAMPLING = {name: json.loads((RESULTS / f"{name}.json").read_text()) for name in SAMPLING_FILES}
PM = re.compile(r"(-?\d+(?:\.\d+)?) ± (\d+(?:\.\d+)?)")
# The phase 5 page heads the lookahead table's columns in words of its own.
LOOKAHEAD_HEADINGS = {"best val CE": "best_val_ce", "conditioning gain": "cond_gain",
                      "kick AUC offline, own band": "kick_auc_own",
                      "kick AUC offline, another song's band": "kick_auc_mismatched",
                      "kick AUC on the wall clock": "kick_auc_wall_clock",
                      "plays with the band: rhythm (offline)": "plays_with_band_rhythm"}
HEADINGS = {heading: key for key, heading, _ in ablation.FIGURES} | LOOKAHEAD_HEADINGS


def decimals(text):
    return len(text.split(".")[1]) if "." in text else 0


def shown(value, places):
    """A figure as the tables print it (no "-0.00": a zero has no sign)."""
    text = f"{value:.{places}f}"
    return text[1:] if re.fullmatch(r"-0\.?0*", text) else text


def pair(mean_sd, places):
    return f"{shown(mean_sd[0], places)} ± {shown(mean_sd[1], places)}"


def row_of(cell, first_heading=""):
    """The table JSON's row a table line names: ablation rows by name (those of the test songs'
    table under its heading), lookahead rows by L."""
    cell = cell.strip("*` ")
    if first_heading in HELD_HEADINGS:
        return TABLES[HELD_HEADINGS[first_heading]]["rows"].get(cell)
    if cell in TABLES["ablation-val"]["rows"]:
        return TABLES["ablation-val"]["rows"][cell]
    found = re.fullmatch(r"(\d+) ms", cell)
    return TABLES["lookahead-val"]["rows"].get(f"lookahead-{found.group(1)}ms") if found else None


def table_rows(page):
    """(line number, heading -> cell, the row's JSON) for every table line naming a JSON row."""
    head = None
    for n, line in enumerate(page.read_text().splitlines(), 1):
        if not line.startswith("|"):
            head = None
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if head is None:
            head = [c.strip("* ") for c in cells]
            continue
        row = row_of(cells[0], head[0])
        if row is not None:
            yield n, dict(zip(head, cells)), row


# experiments/live.py's tables: live.json (the riff rows and random-ahead), live-random.json
LIVE = sorted((ROOT / "docs" / "results").glob("live*.json"))


def played_cells(m):
    """The cells phase 5's tables of played or sampled solos give a row's mean_sd m: kick AUC
    and note-in-chord (own band / another's), then rhythm and harmony."""
    return (f"{pair(m['kick_auc_own'], 3)} / {pair(m['kick_auc_mismatched'], 3)} | "
            f"{pair(m['note_in_chord_own'], 3)} / {pair(m['note_in_chord_mismatched'], 3)} | "
            f"{pair(m['plays_with_band_rhythm'], 2)} | {pair(m['plays_with_band_harmony'], 2)} |")


def all_pairs():
    """Every figure of the table JSONs (and of docs/results/takes.json and live*.json) as (mean, sd)."""
    takes = json.loads((ROOT / "docs" / "results" / "takes.json").read_text())["rows"]
    # keyed by file and row: a row may be trained again in another table (random, say)
    live = {f"{path.name} {name}": row for path in LIVE
            for name, row in json.loads(path.read_text())["rows"].items()}
    played = {f"{name} {coef}": entry for name, row in live.items()
              for coef, entry in row["guidance"].items()}
    played |= {f"{name} training": {"mean_sd": row["training"]} for name, row in live.items()}
    changes = json.loads((ROOT / "docs" / "results" / "chord-changes.json").read_text())["rows"]
    played |= {f"{name} on time": {"mean_sd": row["listening"]} for name, row in changes.items()}
    return [mean_sd for table in [*TABLES.values(), *SAMPLING.values(), {"rows": takes},
                                  {"rows": played}]
            for row in table["rows"].values() for mean_sd in row["mean_sd"].values()
            if mean_sd is not None]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_table_rows_hold_their_json_figures(page):
    wrong = []
    for n, cells, row in table_rows(page):
        for heading, cell in cells.items():
            key, found = HEADINGS.get(heading), PM.search(cell.replace("*", ""))
            if key is None or not found or row["mean_sd"].get(key) is None:
                continue
            want = pair(row["mean_sd"][key], decimals(found.group(1)))
            if found.group(0) != want:
                wrong.append(f"{page.name}:{n}: {heading} {found.group(0)}, the JSON's {want}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_mean_and_spread_quoted_is_a_figure_of_the_tables(page):
    figures = all_pairs()
    wrong = []
    for n, line in enumerate(page.read_text().splitlines(), 1):
        for found in PM.finditer(line.replace("*", "")):
            places = decimals(found.group(1))
            if not any(pair(mean_sd, places) == found.group(0) for mean_sd in figures):
                wrong.append(f"{page.name}:{n}: {found.group(0)} is no figure of "
                             f"{', '.join(f'{k}.json' for k in TABLES)}")
    assert not wrong, "\n".join(wrong)


def test_the_pages_quote_only_rows_the_code_still_has():
    """A table line of a row that experiments/ablation.py no longer has (pitch-first, say) is
    history: it belongs in the log, with the commit that still has the row."""
    names = {id(row): name for table in TABLES.values() for name, row in table["rows"].items()}
    gone = [f"{page.name}:{n}: {names[id(row)]}" for page in PAGES
            for n, _, row in table_rows(page) if names[id(row)] not in ablation.ROWS]
    assert not gone, "rows ablation.py no longer has:\n" + "\n".join(gone)


def bench():
    return json.loads((BUILD / "bench.json").read_text())


def test_the_readme_quotes_the_benchmark():
    readme = (ROOT / "README.md").read_text()
    presets = bench()["presets"]
    for name in ("tiny", "small"):
        p = presets[name]
        figure = f"{p['offline_steps_per_s']:,.0f} steps/s = {p['offline_realtime_factor']:.1f}x real time"
        assert f"| {name} | {p['params_m']:.1f} M |" in readme and figure in readme, (name, figure)
    assert f"{presets['tiny']['cached_vs_plain']:.0f}x faster than recomputing the prefix" in readme
    assert "--threads 1" in bench()["command"] and "python tests/benchmark.py --threads 1" in readme


def baselines(style):
    """docs/results/baselines-<style>.json: experiments/baselines.py on the test songs."""
    return json.loads((ROOT / "docs" / "results" / f"baselines-{style}.json").read_text())


def two_places(value):
    """A figure at 2 decimals as the pages print it (never "-0.00")."""
    text = f"{value:.2f}"
    return "0.00" if text == "-0.00" else text


def with_interval(row, part, key):
    """A baselines figure as the pages write it: value [low, high]."""
    low, high = row[f"{part}_interval"][key]
    return f"{two_places(row[part][key])} [{two_places(low)}, {two_places(high)}]"


def test_the_readme_quotes_the_default_run_on_the_test_songs():
    """The README's figures of `python train.py`: the five seeds' runs as
    experiments/baselines.py scored them on the test songs, beside the rule soloist."""
    readme = (ROOT / "README.md").read_text()
    r = baselines("random")
    model, rule = r["rows"]["model"], r["rows"]["rule"]
    assert r["split"] == "test" and len(model["checkpoints"]) == 5 and "seeds 0 to 4" in readme
    for key, label in (("plays_with_band_rhythm", "rhythm"), ("plays_with_band_harmony", "harmony")):
        line = (f"| plays with the band: {label} | {with_interval(model, 'token', key)} | "
                f"{with_interval(rule, 'token', key)} |")
        assert line in readme, line
    phase5 = " ".join((ROOT / "docs" / "phase5-streaming.md").read_text().split())
    assert (f"offline default on the same test songs ({model['token']['plays_with_band_rhythm']:.2f} "
            f"and {model['token']['plays_with_band_harmony']:.2f} over five seeds") in phase5
    for key in ("val_ce", "cond_gain"):
        values = [run[key] for run in model["training"]]
        assert f"{min(values):.3f} to {max(values):.3f} nats" in readme, key


BASELINE_NAMES = {"model": "the model: `python train.py`, seeds 0-4",
                  "rule": "rule: the band's attacks, its loudest chroma class",
                  "retrieval": "retrieval: the nearest training band's lead",
                  "deaf": "deaf: another test song's lead"}


def test_phase3_quotes_the_baselines_on_the_test_songs():
    """Every row of docs/phase3's baselines table, cell by cell, and the audio probes'
    figures of the true lead, from docs/results/baselines-<style>.json."""
    page = (ROOT / "docs" / "phase3-training-evaluation.md").read_text()
    flat = " ".join(page.split())
    for style in ("random", "lines", "riff"):
        r = baselines(style)
        assert r["style"] == style and r["split"] == "test" and len(r["songs"]) == 6
        assert r["draws"] == 1000 and r["level"] == 0.95
        for name, row in r["rows"].items():
            if name == "true":
                continue
            cells = [with_interval(row, "token", f"plays_with_band_{k}") for k in ("rhythm", "harmony")]
            cells += ([with_interval(row, "audio", f"plays_with_band_{k}")
                       for k in ("onsets", "beats", "pitch")] if "audio" in row else ["not offline"] * 3)
            label = BASELINE_NAMES[name]
            if name == "model" and style != "random":  # trained on that corpus
                label = f"the model: `python train.py --data data/demo-{style}`, seeds 0-4"
            line = f"| {style} | {label} | " + " | ".join(cells) + " |"
            assert line in page, line
        a = r["rows"]["true"]["audio"]
        pairs = [f"{a[f'{m}_true']:.3f} / {a[f'{m}_true_mismatched']:.3f}"
                 for m in ("onset_f", "pitch_in_chroma", "beat_f")]
        assert all(p in flat for p in pairs), (style, pairs)
    assert (f"the {baselines('random')['windows']} windows of the default corpus's 6 test songs, "
            f"the {baselines('lines')['windows']} of the lines corpus's, "
            f"the {baselines('riff')['windows']} of the riff corpus's") in flat
    riff = baselines("riff")["rows"]["true"]["token"]
    assert (f"kick AUC {riff['kick_auc_true']:.3f} against {riff['kick_auc_true_mismatched']:.3f}"
            in flat)
    # the lines corpus: its true lead's gaps, the model's note-in-chord, its five runs
    lines = baselines("lines")["rows"]
    true = lines["true"]["token"]
    assert (f"AUC {true['kick_auc_true']:.3f} against {true['kick_auc_true_mismatched']:.3f}, "
            f"note-in-chord {true['note_in_chord_true']:.3f} against "
            f"{true['note_in_chord_true_mismatched']:.3f}") in flat
    assert (f"{lines['model']['token']['note_in_chord_own']:.3f} of its frames on the own band's "
            f"chord against the lead's {true['note_in_chord_true']:.3f}") in flat
    for key, words in (("val_ce", "On the lines corpus: {} nats"), ("cond_gain", "conditioning gain of {}")):
        values = [run[key] for run in lines["model"]["training"]]
        assert words.format(f"{min(values):.3f} to {max(values):.3f}") in flat, key


# The figures the phase 3 page compares row by row on the test songs, in its words.
DIFFERENCE_WORDS = {"rhythm": "plays_with_band_rhythm", "harmony": "plays_with_band_harmony",
                    "conditioning gain": "cond_gain", "best val CE": "best_val_ce",
                    "kick AUC own": "kick_auc_own", "kick AUC other": "kick_auc_mismatched"}
DIFFERENCE = re.compile(r"^- `([\w.-]+)` − `([\w.-]+)`: (.+)$")


def test_phase3_quotes_the_paired_differences_on_the_test_songs():
    """Each line `a` − `b`: figure d [low, high]; ... of the phase 3 page is the paired
    Student-t interval over the seeds of docs/results/choices-test.json (or
    chord-aid-test.json or settings-test.json, for the rows only they hold), worded as the
    paper's build words it (docs/paper/build.py's contrasts_of): one place computes them."""
    sys.path.insert(0, str(ROOT / "docs" / "paper"))
    import build  # docs/paper/build.py
    page = (ROOT / "docs" / "phase3-training-evaluation.md").read_text().splitlines()
    # the true lead's figures on these songs: the denominators of their scores
    run = TABLES["choices-test"]["rows"]["default"]["runs"][0]
    assert (f"kick AUC of {run['kick_auc_true']:.3f} over its own band and "
            f"{run['kick_auc_true_mismatched']:.3f} over another's, and a note-in-chord of "
            f"{run['note_in_chord_true']:.3f} against {run['note_in_chord_true_mismatched']:.3f}"
            in " ".join(" ".join(page).split()))
    found = [m.groups() for m in map(DIFFERENCE.match, page) if m]
    assert len(found) >= 4, "the page compares the rows it leans on"
    decimals = {key: d for key, _, d in build.ABLATION_COLUMNS}
    for a, b, text in found:
        for part in text.rstrip(".").split("; "):
            words, figure = re.fullmatch(f"({'|'.join(DIFFERENCE_WORDS)}) (.+)", part).groups()
            key = DIFFERENCE_WORDS[words]
            source = f'#vt("{a}", "{b}", "{key}")'
            want = build.contrasts_of({"vs": (), "vt": TESTED}, source,
                                      decimals)[f"test|{a}|{b}|{key}"]
            assert figure == want, f"{a} − {b}, {words}: the page says {figure}, the JSON {want}"


def test_phase3_quotes_the_sampling_settings_chosen_on_validation_and_checked_on_test():
    """Each row of phase 3's tables of sampling settings is its row of its JSON
    (SAMPLING_FILES): rhythm and harmony as mean ± sd over the five runs, each beside its
    paired difference from the first setting, worded as the paper's build words a
    difference."""
    sys.path.insert(0, str(ROOT / "docs" / "paper"))
    import build  # docs/paper/build.py
    page = (ROOT / "docs" / "phase3-training-evaluation.md").read_text()
    for file, table in SAMPLING.items():
        first = next(iter(table["rows"]))
        assert (table["split"], first) == SAMPLING_FILES[file] and table["draws"] == 3
        for name, row in table["rows"].items():
            assert [r["seed"] for r in row["runs"]] == [0, 1, 2, 3, 4]
            cells = []
            for key in ("plays_with_band_rhythm", "plays_with_band_harmony"):
                cells += [pair(row["mean_sd"][key], 2),
                          "–" if name == first else build.difference(*row["against_first"][key])]
            line = f"| `{name}` | " + " | ".join(cells) + " |"
            assert line in page, line


def test_phase3_quotes_the_true_leads_figures():
    """The true lead's figures (the same in every run: they score the data, not a model),
    quoted as the denominators of the plays-with-the-band scores."""
    page = (ROOT / "docs" / "phase3-training-evaluation.md").read_text()
    run = TABLES["ablation-val"]["rows"]["default"]["runs"][0]
    kick, kick_other = run["kick_auc_true"], run["kick_auc_true_mismatched"]
    chord, chord_other = run["note_in_chord_true"], run["note_in_chord_true_mismatched"]
    assert (f"AUC of {kick:.3f} over its own band and {kick_other:.3f} over another song's, "
            f"and a note-in-chord of\n{chord:.3f} against {chord_other:.3f}") in page


def frame_cell(step):
    """One step's timing as the phase 5 table writes it."""
    return (f"{step['frame_ms_p50']:.2f} ms (p99 {step['frame_ms_p99']:.2f}), {step['frames_per_s']:.0f} "
            f"frames/s = {step['realtime_factor']:.1f}x real time")


def step_row(name, p):
    """A row of phase 5's table of the streaming steps, from bench.json's figures of a preset."""
    fastest = max(p[f"onnx_{v}"]["frames_per_s"] for v in ("fp32", "int8", "int4"))
    runner = " / ".join(f"{p[f'runner_{v}']['realtime_factor']:.1f}x" for v in ("fp32", "int8", "int4"))
    return (f"| {name} | {frame_cell(p['torch_stream'])} | {p['onnx_fp32']['frame_ms_p50']:.2f} ms | "
            f"{p['onnx_int8']['frame_ms_p50']:.2f} ms | {frame_cell(p['onnx_int4'])} | "
            f"{fastest / p['torch_stream']['frames_per_s']:.2f}x | {runner} real time |")


def test_phase5_tables_quote_the_benchmark():
    page = (ROOT / "docs" / "phase5-streaming.md").read_text()
    presets = bench()["presets"]
    for name in ("tiny", "small"):
        assert step_row(name, presets[name]) in page, step_row(name, presets[name])
    tiny, small = presets["tiny"], presets["small"]
    ratio = {n: p["onnx_int4"]["frames_per_s"] / p["torch_stream"]["frames_per_s"] for n, p in presets.items()}
    assert (f"{ratio['tiny']:.1f}x (tiny) and {ratio['small']:.1f}x (small) as many frames per second"
            in page.replace("\n  ", " "))
    assert (f"small: fp32 {small['onnx_fp32']['frame_ms_p50']:.2f} ms, int4 "
            f"{small['onnx_int4']['frame_ms_p50']:.2f} ms") in page
    delay = tiny["runner_int8"]["end_to_end_delay_ms"]["p50"]
    assert f"some {delay:.0f} ms after it" in page.replace("\n", " ")


def test_phase5_quotes_the_quantization_losses():
    page = (ROOT / "docs" / "phase5-streaming.md").read_text().replace("\n", " ")
    losses = json.loads((BUILD / "quantization.json").read_text())["losses"]
    cost = {v: shown(losses[v] - losses["fp32"], 4) for v in ("int8", "int4")}
    cost = {v: c if c.startswith("-") or float(c) == 0 else "+" + c for v, c in cost.items()}
    assert (f"fp32 {losses['fp32']:.4f} nats, int8 {losses['int8']:.4f} ({cost['int8']}), "
            f"int4 {losses['int4']:.4f} ({cost['int4']})") in page


def test_phase5_bullets_quote_the_benchmark():
    page = " ".join((ROOT / "docs" / "phase5-streaming.md").read_text().split())
    tiny, small = bench()["presets"]["tiny"], bench()["presets"]["small"]
    for preset in (tiny, small):
        ts = preset["torch_stream"]
        assert f"| {ts['frame_ms_p50']:.2f} ms | {ts['frame_ms_p99']:.2f} ms | met, " in page
    quoted = [f"Tiny's p99 per frame is {tiny['onnx_int4']['frame_ms_p99']:.2f} ms with int4 weights",
              f"Small's steps run at {small['onnx_int4']['realtime_factor']:.1f}x real time with int4 weights and "
              f"{small['onnx_int8']['realtime_factor']:.1f}x with int8",
              f"at {small['runner_int4']['realtime_factor']:.1f}x and {small['runner_int8']['realtime_factor']:.1f}x",
              f"costs {small['weight_floor_ms']['int8']:.2f} ms in int8 and {small['weight_floor_ms']['int4']:.2f} ms in int4"]
    for text in quoted:
        assert text in page, text


def test_phase5_codec_and_runner_tables_quote_the_codec_benchmark():
    page = (ROOT / "docs" / "phase5-streaming.md").read_text()
    speed = json.loads((BUILD / "speed.json").read_text())
    for ms, c in speed["codec"].items():
        window, state, lstm8, int8 = c["window_fp32"], c["state_fp32"], c["state_lstm8"], c["state_int8"]
        row = (f"| {ms} ms | {window['p50']:.1f} / {window['p99']:.1f} ms | {state['p50']:.1f} / "
               f"{state['p99']:.1f} ms ({state['speedup']:.1f}x faster) | {lstm8['p50']:.1f} / "
               f"{lstm8['p99']:.1f} ms ({lstm8['vs_fp32']:.2f}x fp32's time) | {int8['p50']:.1f} / {int8['p99']:.1f} ms |")
        assert row in page, row
        assert f"decoded audio {lstm8['audio_snr_db']:.0f} dB above its difference" in " ".join(page.split())
    for preset, chunks in speed["runner"].items():
        for variant in ("int8", "int4"):
            cells = [f"{chunks[ms][variant]['realtime_factor']:.1f}x" for ms in ("40", "80")]
            delays = [f"{chunks[ms][variant]['delay_ms']['p50']:.0f} / {chunks[ms][variant]['delay_ms']['p99']:.0f} ms"
                      for ms in ("40", "80")]
            row = f"| {preset}, {variant} | {cells[0]} | {delays[0]} | {cells[1]} | {delays[1]} |"
            assert row in page.replace("**", ""), row


def test_scaling_quotes_its_benchmarks():
    page = " ".join((ROOT / "docs" / "scaling.md").read_text().split())
    s = json.loads((ROOT / "docs" / "results" / "scaling.json").read_text())
    memory = json.loads((ROOT / "docs" / "results" / "memory.json").read_text())["presets"]
    ratio = s["two_processes_frames_per_s"] / s["one_process_frames_per_s"]
    for text in (f"| window loading alone (`Windows.sample`, memory-mapped) | {s['window_loading_frames_per_s']:,.0f} |",
                 f"| training, one process | {s['one_process_frames_per_s']:,.0f} |",
                 f"| training, two processes under torchrun (gloo) | {s['two_processes_frames_per_s']:,.0f} "
                 f"({ratio:.2f}x) |",
                 f"gradients ({s['params'] / 1e6:.2f} M fp32 values) between the two processes took "
                 f"{s['allreduce_ms']:.1f} ms",
                 f"the {ratio:.2f}x is what", f"below the {s['window_loading_frames_per_s'] / 1e6:.1f}e6 one thread",
                 *(f"{name} {memory[name]['peak_mb']:,} MB" for name in ("tiny", "small", "base"))):
        assert text in page, text


def sci(x):
    """3.31e+07 -> 3.31e7, as the page writes it."""
    return re.sub(r"e\+?0*(\d)", r"e\1", f"{x:.3g}")


def test_scalings_estimates_are_the_models_flops():
    """The GPU estimates of docs/scaling.md: the FLOPs per frame the code counts, at 40% of an
    H100's dense bf16 peak (989e12 FLOP/s, sax.evaluation.peak_flops)."""
    from model import SoloTransformer, preset_config
    from sax.evaluation import train_flops_per_window
    page = " ".join((ROOT / "docs" / "scaling.md").read_text().split())
    rate = 0.4 * 989e12
    for name in ("tiny", "small", "base"):
        model = SoloTransformer(preset_config(name, n_codebooks=4, card=1024, max_frames=300))
        per_frame = train_flops_per_window(model, 300) / 300
        assert sci(rate / per_frame) in page, (name, sci(rate / per_frame))
        if name != "tiny":
            assert sci(per_frame) in page, (name, sci(per_frame))
            assert f"{1e9 * per_frame / rate / 3600:.2f}" in page, name


def test_the_codec_page_quotes_its_benchmark():
    """docs/codec.md's sizes, speeds and untrained-decoder figures: docs/results/codecs.json."""
    page = (ROOT / "docs" / "codec.md").read_text()
    c = json.loads((ROOT / "docs" / "results" / "codecs.json").read_text())
    small, big, ratios = c["codecs"]["encodec_24khz"], c["codecs"]["encodec_32khz"], c["ratios"]
    assert c["threads"] == 1 and c["command"] == "python tests/benchmark_codecs.py"
    for text in (f"| parameters (fp32 size) | {small['parameters_m']:.2f} M ({small['fp32_mb']:.1f} MB) | "
                 f"{big['parameters_m']:.2f} M ({big['fp32_mb']:.1f} MB) |",
                 f"| encode, per second of audio | {small['encode_s_per_audio_s']:.3f} s | "
                 f"{big['encode_s_per_audio_s']:.3f} s ({ratios['encode_32_over_24']:.2f}x) |",
                 f"| decode, per second of audio | {small['decode_s_per_audio_s']:.3f} s | "
                 f"{big['decode_s_per_audio_s']:.3f} s ({ratios['decode_32_over_24']:.2f}x) |",
                 f"it runs {min(ratios.values()):.1f} times faster",
                 f"`codec.safetensors` ({small['untrained_state_mb']} MB and {big['untrained_state_mb']} MB)",
                 *(f"| {name} | {r['untrained_decoder']['dc']:.4f} | {r['untrained_decoder']['tone_dbfs']:.1f} dBFS | "
                   f"{r['untrained_decoder']['max_difference_16bit_steps']:.1f} 16-bit steps |"
                   for name, r in (("24 kHz", small), ("32 kHz", big)))):
        assert text in page, text
    # the numbers codec_info read from the two built models
    for text in (f"| frames per second | {small['frame_rate']} (hop of {small['hop']} samples) | "
                 f"{big['frame_rate']} (hop of {big['hop']} samples) |",
                 f"| codes per codebook (card) | {small['card']} | {big['card']} |",
                 f"| sample rate | {small['sample_rate'] // 1000} kHz mono | {big['sample_rate'] // 1000} kHz mono |",
                 f"| bits per second | 4 x 10 bits x {small['frame_rate']} = {small['bandwidth_kbps']:.1f} kbps | "
                 f"4 x 11 bits x {big['frame_rate']} = {big['bandwidth_kbps']:.1f} kbps |"):
        assert text in page, text
    assert (small["causal"], big["causal"], small["n_codebooks"], big["n_codebooks"]) == (True, False, 4, 4)


def test_the_codec_page_quotes_the_models_sizes():
    """The tiny model's parameters with each codec's card, as docs/codec.md says them."""
    from model import SoloTransformer, preset_config
    page = " ".join((ROOT / "docs" / "codec.md").read_text().split())
    sizes = [sum(p.numel() for p in SoloTransformer(preset_config("tiny", n_codebooks=4, card=card)).parameters())
             for card in (1024, 2048)]
    assert f"from {sizes[0] / 1e6:.1f} M to {sizes[1] / 1e6:.1f} M parameters" in page, sizes


def test_phase5_quotes_what_guidance_costs():
    """docs/phase5's guidance table and its ring figures: docs/results/guidance.json."""
    page = " ".join((ROOT / "docs" / "phase5-streaming.md").read_text().split())
    g = json.loads((ROOT / "docs" / "results" / "guidance.json").read_text())
    cols = [g["presets"][name][variant] for name, variant in
            (("tiny", "int8"), ("tiny", "int4"), ("small", "int8"), ("small", "int4"))]
    rows = [" | ".join(f"{c['step_ms_p50']['plain']:.2f} -> {c['step_ms_p50']['guided']:.2f} ms "
                       f"({c['step_ratio']:.2f}x)" for c in cols),
            " | ".join(f"{c['runner']['plain']['realtime_factor']:.1f}x -> "
                       f"{c['runner']['guided']['realtime_factor']:.1f}x" for c in cols),
            " | ".join(f"{c['runner']['plain']['end_to_end_delay_ms_p50']:.0f} -> "
                       f"{c['runner']['guided']['end_to_end_delay_ms_p50']:.0f} ms" for c in cols),
            " | ".join(f"{c['runner']['plain']['codec_chunk_ms_p50']:.1f} -> "
                       f"{c['runner']['guided']['codec_chunk_ms_p50']:.1f} ms" for c in cols)]
    codec = [c["runner"][side]["codec_chunk_ms_p50"] for c in cols for side in ("plain", "guided")]
    small = g["presets"]["small"]
    assert g["cfg_coef"] == 3.0 and g["threads"] == 1
    for text in (*rows, f"one row's rings hold {small['ring_mb_per_row']} MB for small",
                 f"of which the null row reads {small['ring_mb_null_row']} MB",
                 f"they take {min(codec):.1f} to {max(codec):.1f} ms per chunk of three frames",
                 f"{small['int4_graphs_mb']} MB of int4 step graphs",
                 f"small's step costs about {round(small['int4']['step_ratio'], 1)} times as much"):
        assert text in page, text


def test_phase5_quotes_the_takes_as_played():
    """docs/phase5's table of takes scored as played, over three seeds: docs/results/takes.json."""
    page = " ".join((ROOT / "docs" / "phase5-streaming.md").read_text().split())
    r = json.loads((ROOT / "docs" / "results" / "takes.json").read_text())
    for name, label in (("none", "no guidance (the runner's default)"), ("3", "`--cfg-coef 3`")):
        m, seeds = r["rows"][name]["mean_sd"], r["rows"][name]["seeds"]
        assert sorted(seeds) == ["0", "1", "2"]
        assert all(t["paced"] and t["split"] == "test" and len(t["songs"]) == 6 for t in seeds.values())
        text = f"| {label} | {played_cells(m)}"
        assert text in page, text
    f = r["rows"]["none"]["seeds"]["0"]["figures"]
    assert (f"| the true lead | {f['kick_auc_true']:.3f} / {f['kick_auc_true_mismatched']:.3f} | "
            f"{f['note_in_chord_true']:.3f} / {f['note_in_chord_true_mismatched']:.3f} |") in page
    g = r["guided_minus_plain"]
    for key, word in (("plays_with_band_rhythm", "rhythm"), ("plays_with_band_harmony", "harmony")):
        assert f"{word} {', '.join(f'{d:+.2f}' for d in g[key]['differences'])}" in page, key
        assert all(d > 0 for d in g[key]["differences"]) and g[key]["p_two_sided"] > 0.05
    assert (f"p = {g['plays_with_band_rhythm']['p_two_sided']:.2f} for rhythm, "
            f"{g['plays_with_band_harmony']['p_two_sided']:.2f} for harmony") in page
    late = {round(v, 1) for t in r["rows"]["none"]["seeds"].values() for v in t["late_ms_mean"].values()}
    worst = max(v for t in r["rows"]["3"]["seeds"].values() for v in t["late_ms_mean"].values())
    assert late == {13.3} and f"up to {worst:.1f} ms on average over a song" in page


def test_phase5_quotes_the_ceiling_of_a_listener_that_hears_only_the_past():
    """docs/phase5's ceiling tables, one per corpus: docs/results/ceiling-<style>.json
    (experiments/ceiling.py), every soloist at every L, the ceiling and the true lead."""
    page = " ".join((ROOT / "docs" / "phase5-streaming.md").read_text().split())
    for style in ("random", "riff"):
        r = json.loads((ROOT / "docs" / "results" / f"ceiling-{style}.json").read_text())
        assert r["style"] == style and r["split"] == "test" and len(r["songs"]) == 6
        rows = {}
        for row in r["rows"]:
            rows.setdefault(row["lookahead_ms"], {})[row["soloist"]] = row["figures"]
        for ms, by in rows.items():
            cells = [f"{by[s]['plays_with_band_rhythm']:.2f} / {by[s]['plays_with_band_harmony']:.2f}"
                     for s in ("heard", "grid", "echo")]
            best = r["ceiling"][f"{ms:g}"]
            line = (f"| {style} | {ms:g} ms | " + " | ".join(cells) + f" | "
                    f"**{best['plays_with_band_rhythm']:.2f} / {best['plays_with_band_harmony']:.2f}** |")
            assert line in page, line
        f = r["rows"][0]["figures"]
        assert (f"| {style} | {f['kick_auc_true']:.3f} / {f['kick_auc_true_mismatched']:.3f} | "
                f"{f['note_in_chord_true']:.3f} / {f['note_in_chord_true_mismatched']:.3f} |") in page, style


@pytest.mark.parametrize("path", LIVE, ids=lambda p: p.name)
def test_phase5_quotes_the_live_table(path):
    """docs/phase5's tables of causal models as the runner played them: docs/results/live*.json
    (experiments/live.py), every row and guidance, and the paired tests against the baseline."""
    page = " ".join((ROOT / "docs" / "phase5-streaming.md").read_text().split())
    r = json.loads(path.read_text())
    assert r["split"] == "test" and r["variant"] == "int8" and len(r["seeds"]) >= 3
    for name, row in r["rows"].items():
        for coef, e in row["guidance"].items():
            m = e["mean_sd"]
            assert all(len(t) == 6 for t in [e["songs"]]) and sorted(e["seeds"]) == [str(s) for s in r["seeds"]]
            line = f"| {name} | {coef} | {played_cells(m)}"
            assert line in page, line
            for key in (k for k in e if k.startswith("vs_")):  # the paired tests, in words
                for figure, word in (("plays_with_band_rhythm", "rhythm"), ("plays_with_band_harmony", "harmony")):
                    v = e[key][figure]
                    text = (f"{name} {coef}: {word} {', '.join(f'{d:+.2f}' for d in v['diffs'])} "
                            f"(p = {v['p_paired_t']:.2f})")
                    assert text in page, text
        t = row["training"]
        late = ", ".join(f"{row['guidance'][c]['late_ms_mean']:.1f} ms ({c})" for c in row["guidance"])
        line = f"| {name} | {pair(t['best_val_ce'], 3)} | {pair(t['cond_gain'], 3)} | {late} |"
        assert line in page, line


def test_phase5_compares_the_anticipation_aid_with_the_live_recipe_on_the_default_corpus():
    """The random-ahead row of live.json against the live recipe's takes (takes.json), seed by
    seed: the differences and the paired t-test the page quotes."""
    import live
    page = " ".join((ROOT / "docs" / "phase5-streaming.md").read_text().split())
    aided = json.loads((ROOT / "docs" / "results" / "live.json").read_text())["rows"]["random-ahead"]
    plain = json.loads((ROOT / "docs" / "results" / "takes.json").read_text())["rows"]
    for coef in ("none", "3"):
        for key, word in (("plays_with_band_rhythm", "rhythm"), ("plays_with_band_harmony", "harmony")):
            d = [aided["guidance"][coef]["seeds"][s][key] - plain[coef]["seeds"][s]["figures"][key]
                 for s in ("0", "1", "2")]
            text = (f"random-ahead {coef}: {word} {', '.join(f'{x:+.2f}' for x in d)} "
                    f"(p = {live.paired_t(d):.2f})")
            assert text in page, text


def test_phase5_quotes_the_emulated_board():
    """docs/phase5's arm64 table: docs/results/board.json (tests/emulated_board.py)."""
    page = (ROOT / "docs" / "phase5-streaming.md").read_text()
    b = json.loads((ROOT / "docs" / "results" / "board.json").read_text())["variants"]
    # every variant: fp32, int8, int4, each also with guidance ("int8 cfg3": "int8, guidance 3")
    assert {"fp32", "int8", "int4", "fp32 cfg3", "int8 cfg3", "int4 cfg3"} <= set(b)
    for v, r in b.items():
        graphs = v.replace(" cfg", ", guidance ")
        gap = f"{r['max_logit_gap']:.1e}" if v.startswith("fp32") else f"{r['max_logit_gap']:.2f}"
        codes = (f"equal over {r['frames']} frames" if r["codes_equal"]
                 else f"part at frame {r['first_differing_frame']} of {r['frames']}")
        assert f"| {graphs} | {gap} | {codes} |" in page, v


def test_phase3_quotes_the_chord_aid_and_the_solo_by_beat():
    """docs/phase3's tables of the chord aid's labels, the chord head, the solo and the true
    lead by beat of the bar, and of how the solos miss the chord:
    docs/results/chord-beats.json (experiments/chord_changes.py, guidance 5)."""
    page = (ROOT / "docs" / "phase3-training-evaluation.md").read_text()
    r = json.loads((ROOT / "docs" / "results" / "chord-beats.json").read_text())
    assert r["split"] == "test" and r["guidance"] == 5.0
    assert all(len(row["runs"]) == 3 for row in r["rows"].values())
    cells = lambda xs: " | ".join(f"{x:.2f}" for x in xs) + " |"  # noqa: E731
    (heard,) = r["heard_by_beat"].values()
    assert ("| the chord aid's labels | the heard chroma's weight on the chord's tones | "
            + cells(heard["weight_on_chord"])) in page
    assert "| the chord aid's labels | its loudest class a chord tone | " + cells(
        heard["top_class_in_chord"]) in page
    for name, row in r["rows"].items():
        for key, what in (("head", "chord head"), ("solo", "solo")):
            assert f"| {name} | {what} | " + cells(row["beats"][key]) in page, (name, key)
    first = next(iter(r["rows"].values()))
    assert "| true lead | solo | " + cells(first["beats"]["true"]) in page
    for name, wrong in [(n, row["wrong"]["own"]) for n, row in r["rows"].items()] + [
            ("true lead", first["wrong"]["true"])]:
        assert (f"| {name} | {wrong['semitone_off']:.2f} | {wrong['further_off']:.2f} | "
                f"{wrong['semitone_off_by_chance']:.2f} | {wrong['changes_per_frame']:.3f} |"
                in page), name


def test_phase5_quotes_where_the_live_solo_loses_the_chord():
    """docs/phase5's table of the chord head and the solo by frames since the band's chord
    changed: docs/results/chord-changes.json (experiments/chord_changes.py)."""
    page = (ROOT / "docs" / "phase5-streaming.md").read_text()
    r = json.loads((ROOT / "docs" / "results" / "chord-changes.json").read_text())
    assert r["split"] == "test" and all(len(row["runs"]) >= 3 for row in r["rows"].values())
    for name, row in r["rows"].items():
        for key, what in (("head", "chord head"), ("solo", "solo")):
            line = f"| {name} | {what} | " + " | ".join(f"{x:.2f}" for x in row[key]) + " |"
            assert line in page, line
    true = next(iter(r["rows"].values()))["true"]
    assert "| true lead | solo | " + " | ".join(f"{x:.2f}" for x in true) + " |" in page
    # the same solos over the whole windows, beside another band's: a row each, after the
    # column that says what the recipe hears
    for name, row in r["rows"].items():
        cells = "| " + played_cells(row["listening"])
        assert any(line.startswith(f"| {name} | ") and line.endswith(cells)
                   for line in page.splitlines()), (name, cells)
