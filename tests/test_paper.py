"""docs/paper: the draft builds end to end from the committed tables of docs/results (--quick:
with a 30-frame benchmark) into a two-column workshop paper whose body ends by page 6, every
page renders, no number in its prose is typed by hand, and what the prose says of the
baselines holds in their JSON."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAPER = ROOT / "docs" / "paper"
sys.path.insert(0, str(PAPER))
import build  # noqa: E402  (docs/paper/build.py)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("paper")
    done = subprocess.run([sys.executable, str(PAPER / "build.py"), "--quick", "--out", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return out


def test_the_draft_builds_to_a_pdf(built):
    pdf = (built / "paper.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and len(pdf) > 50_000, len(pdf)
    for part in ("held.typ", "settings.typ", "lookahead.typ", "baselines.typ",
                 "audio.typ", "system.png", "baselines.png", "lookahead.png", "numbers.json"):
        assert (built / part).stat().st_size > 0, part
    # the other settings have a table of their own, beside the default they change, with
    # each row's size in millions of parameters
    table = (built / "settings.typ").read_text()
    for cell in ("[no-chord-aux], [2.6]", "[layers-1], [2.1]", "[width-32], [0.5]",
                 "[width-64], [1.0]", "[steps-1000], [", "[augment-1], [", "[pitch-aux-3], ["):
        assert cell in table, cell
    # the draft prints no table scored on the validation windows that chose the checkpoints
    assert not (built / "ablation.typ").exists()
    # the baselines' table holds the bounds, the model and both corpus styles
    table = (built / "baselines.typ").read_text()
    for cell in ("[true lead]", "[rule soloist]", "[retrieval]", "[deaf]", "[model (5 seeds)]",
                 "[riff]"):
        assert cell in table, cell


def test_the_body_fits_six_two_column_pages_and_every_page_renders(built, tmp_path):
    """A workshop paper: its references start by page 7, and each page, rendered as an image
    as a reader's viewer would, carries ink in both columns."""
    import numpy as np
    import typst
    from PIL import Image
    assert 5 <= json.loads((built / "pages.json").read_text())["references_page"] <= 7
    assert "columns: 2" in (PAPER / "paper.typ").read_text()
    typst.compile(str(built / "paper.typ"), output=str(tmp_path / "p{p}.png"), root=str(built),
                  format="png", ppi=50)
    pages = sorted(tmp_path.glob("p*.png"))
    assert len(pages) >= 6, len(pages)
    for page in pages:  # the last page may end in its left column
        ink = np.asarray(Image.open(page).convert("L")) < 200  # text at 50 ppi is grey
        half = ink.shape[1] // 2
        assert ink[:, :half].mean() > 0.02, page.name
        assert page == pages[-1] or ink[:, half:].mean() > 0.02, page.name


def test_the_figures_are_drawn_not_copied(built):
    """The three figures are drawn by the build (figures.py), at print resolution; none is a
    committed image copied in."""
    from PIL import Image
    source = (PAPER / "build.py").read_text()
    assert "listening_probes.png" not in source and '"lookahead.png": Path(runs)' not in source
    for name, wide in (("system.png", 1500), ("baselines.png", 800), ("lookahead.png", 800)):
        with Image.open(built / name) as image:
            assert image.size[0] >= wide, (name, image.size)

def test_numbers_quoted_are_the_tables_values(built):
    """numbers.json (what the prose prints) against the table.json files the build read."""
    numbers = json.loads((built / "numbers.json").read_text())
    live = json.loads((built / build.LIVE).read_text())
    for name, file, columns in (("held", build.HELD, build.HELD_COLUMNS),
                                ("settings", build.SETTINGS, build.HELD_COLUMNS),
                                ("lookahead", None, build.LOOKAHEAD_COLUMNS)):
        table = json.loads((built / file).read_text()) if file else build.lookahead_of(live)
        assert set(numbers[name]["rows"]) == set(table["rows"])
        assert numbers[name]["split"] == table["split"] == "test"  # none chose a checkpoint
        assert numbers[name]["provenance"]["command"] == table["command"]
        for row, figures in table["rows"].items():
            for key, _, decimals in columns:
                m = figures["mean_sd"].get(key)
                want = "–" if m is None else f"{m[0]:.{decimals}f} ± {m[1]:.{decimals}f}".replace("-", "\N{MINUS SIGN}")
                assert numbers[name]["rows"][row][key] == want, (name, row, key)
        assert numbers[name]["provenance"]["seeds"] == ", ".join(map(str, table["seeds"]))
    # the lookahead table is the runner's takes on the test songs, as live.py tabled them: the
    # build's mean and sd of each take's figure are live.py's, and each row has its lookahead
    assert numbers["lookahead"]["split"] == live["split"] == "test"
    assert numbers["lookahead"]["provenance"]["command"] == live["command"]
    for name, row in live["rows"].items():
        for coef, taken in row["guidance"].items():
            for key, (mean, sd) in taken["mean_sd"].items():
                assert build.lookahead_of(live)["rows"][name]["mean_sd"][f"{key}@{coef}"] == \
                    pytest.approx([mean, sd]), (name, coef, key)
            late = numbers["lookahead"]["rows"][name][f"late_ms@{coef}"]
            assert late == f"{taken['late_ms_mean']:.0f}", (name, coef)
    ms = [float(row["ms"]) for row in numbers["lookahead"]["rows"].values()]
    assert ms == sorted(ms) and 80.0 in ms and 0.0 in ms, ms
    # the baselines: each figure and interval as experiments/baselines.py wrote it
    for style in ("random", "lines", "riff"):
        raw = json.loads((built / f"baselines-{style}.json").read_text())
        quoted = numbers["baselines"][style]
        assert quoted["split"] == raw["split"] == "test" and quoted["songs"] == len(raw["songs"])
        for row, figures in raw["rows"].items():
            for key in ("rhythm", "harmony"):
                value = figures["token"][f"plays_with_band_{key}"]
                low, high = figures["token_interval"][f"plays_with_band_{key}"]
                assert quoted["rows"][row][key] == build.shown(value, 2), (style, row, key)
                assert quoted["rows"][row][f"{key}_ci"] == f"[{build.shown(low, 2)}, {build.shown(high, 2)}]"
    model = json.loads((built / "baselines-random.json").read_text())["rows"]["model"]
    assert numbers["baselines"]["random"]["rows"]["model"]["n_seeds"] == len(model["seeds"])


def test_speed_table_quotes_the_benchmark(built):
    """The table of the steps (tests/benchmark.py --json, 30 frames in quick mode): each cell is
    the benchmark's figure, and each ratio is ONNX's frames per second over PyTorch's."""
    numbers = json.loads((built / "numbers.json").read_text())["bench"]
    raw = json.loads((built / "bench.json").read_text())
    assert "tests/benchmark.py" in numbers["command"] and "1 torch thread" in numbers["machine"]
    tiny, quoted = raw["presets"]["tiny"], numbers["presets"]["tiny"]
    for way in ("torch_stream", "onnx_fp32", "onnx_int8", "onnx_int4"):
        assert quoted[way]["p50"] == f"{tiny[way]['frame_ms_p50']:.2f}", way
        ratio = tiny[way]["frames_per_s"] / tiny["torch_stream"]["frames_per_s"]
        assert quoted[way]["vs_torch"] == f"{ratio:.1f}", way
    # every figure the prose asks of the table is one the build writes (a typo would print a dash)
    asked = re.findall(r'#b\("(\w+)", "(\w+)", "(\w+)"\)', (PAPER / "paper.typ").read_text())
    assert len(asked) >= 3
    for preset, way, field in asked:
        assert preset in ("tiny", "small") and field in quoted[way], (preset, way, field)


def test_no_number_in_the_prose_is_typed_by_hand():
    """Every decimal in paper.typ is a length of the layout; the figures come from numbers.json,
    and every figure the prose asks for is one the tables have (a typo would print a dash)."""
    source = (PAPER / "paper.typ").read_text()
    prose = re.sub(r'"[^"\n]*"', '""', source)  # a row's name in quotes ("solo-dropout-0.5") is no figure
    typed = [m.group() for m in re.finditer(r"\d+\.\d+(?!\s*(cm|pt|em|%))", prose)]
    assert not typed, f"decimals typed into the draft: {typed}"
    import ablation
    live = json.loads((ROOT / "docs" / "results" / build.LIVE).read_text())["rows"]
    columns = {"A": build.ABLATION_COLUMNS + build.SETTINGS_COLUMNS, "L": build.LOOKAHEAD_COLUMNS}
    quoted = re.findall(r'#f\(L, "([^"]+)", "([^"]+)"\)', source)
    assert len(quoted) > 5
    for row, key in quoted:
        assert row in live, row
        assert key in {k for k, _, _ in columns["L"]} | {"ms", "late_ms@none", "late_ms@3"}, key
    # the contrasts: two rows of one table, a column the tables have
    contrasts = build.CONTRAST.findall(source)
    assert len(contrasts) > 10
    every = {k for cols in columns.values() for k, _, _ in cols}
    tested = [json.loads((ROOT / "docs" / "results" / name).read_text())["rows"]
              for name in (build.HELD, build.SETTINGS, build.CHORD_AID)]
    for macro, a, b, key in contrasts:
        assert key in every, (a, b, key)
        if macro == "vt":  # the rows trained again and scored on the test songs: both in one table
            assert {a, b} <= set(ablation.ROWS), (a, b)
            assert any(a in rows and b in rows for rows in tested), (a, b)
        else:  # #vs: the lookahead rows as the runner played them, also on the test songs
            assert {a, b} <= set(live), (a, b)
    # the sampling choice on the test songs: every (setting, key) asked is one sampling_of gives
    sampling = build.sampling_of(json.loads((ROOT / "docs" / "results" / build.SAMPLING)
                                            .read_text()))
    asked = re.findall(r'#sg\("([^"]+)", "([^"]+)"\)', source)
    assert asked and all(key in sampling["rows"].get(row, {}) for row, key in asked), asked
    # the baselines' figures: every (style, row, key) asked is one the committed JSON gives
    results = ROOT / "docs" / "results"
    made = {style: build.baselines_of(json.loads((results / f"baselines-{style}.json").read_text()))
            for style in ("random", "lines", "riff")}
    asked = re.findall(r'#tb\("(\w+)", "(\w+)", "(\w+)"\)', source)
    asked += [("random", row, key) for row, key in re.findall(r'#f\(BR\.rows, "(\w+)", "(\w+)"\)', source)]
    assert len(asked) > 20
    for style, row, key in asked:
        assert key in made[style]["rows"][row], (style, row, key)


def test_a_contrast_is_paired_by_seed_and_says_when_it_is_not_significant():
    """contrasts_of: row a minus row b seed by seed, with Student's t over the seeds; the words
    say 'not significant' exactly when the interval holds zero."""
    from sax.intervals import paired_interval
    mean, low, high = paired_interval([3.0, 4.0, 5.0], [1.0, 1.0, 1.0])
    assert mean == pytest.approx(3.0) and high - mean == pytest.approx(4.302653 / 3 ** 0.5, rel=1e-5)

    def row(*gains):  # seeds 2, 1, 0 in that order: pairing must go by seed, not by position
        return {"runs": [{"seed": s, "cond_gain": g} for s, g in zip((2, 1, 0), gains)]}

    table = {"rows": {"a": row(0.2, 0.1, 0.3), "b": row(0.0, 0.2, 0.1), "c": row(0.0, 0.0, 0.0),
                      "d": row(0.9, 1.1, 1.0)}}
    source = ('#vs("a", "b", "cond_gain"), #vs("a", "c", "cond_gain") and #vs("d", "c", "cond_gain"); '
              '#vt("d", "c", "cond_gain") from the test songs\' table, #vt("a", "c", "cond_gain") not in it')
    test_songs = {"rows": {"c": table["rows"]["a"], "d": table["rows"]["d"]}}
    words = build.contrasts_of({"vs": (table,), "vt": (test_songs,)}, source, {"cond_gain": 3})
    # #vt reads its own table, under keys of its own: its c is the other table's a, so d - c by
    # seed is 0.7, 1.0, 0.7: mean 0.8, half-width 4.303 x 0.173 / sqrt(3) = 0.430
    assert words["test|d|c|cond_gain"] == "+0.800 [+0.370, +1.230]" and "test|a|c|cond_gain" not in words
    minus = "\N{MINUS SIGN}"
    # a - b by seed: 0.2, -0.1, 0.2
    assert words["a|b|cond_gain"].startswith("+0.100 [") and words["a|b|cond_gain"].endswith(
        ", not significant over 3 seeds")
    # a - c: 0.2, 0.1, 0.3: mean 0.2, half-width 4.303 x 0.1 / sqrt(3) = 0.248, so it holds zero
    assert words["a|c|cond_gain"] == f"+0.200 [{minus}0.048, +0.448], not significant over 3 seeds"
    # d - c: mean 1.0, the same half-width: clear of zero, no such words
    assert words["d|c|cond_gain"] == "+1.000 [+0.752, +1.248]"


def test_what_the_prose_says_of_the_baselines_holds_in_their_json():
    """The sentences of the results section that compare rows, checked against the committed
    JSON they quote: if a rerun changes the order, this fails and the prose must change."""
    results = ROOT / "docs" / "results"
    rows = json.loads((results / "baselines-random.json").read_text())["rows"]
    token = {name: row["token"] for name, row in rows.items()}
    ci = {name: row["token_interval"] for name, row in rows.items()}
    # the rule soloist's harmony is above the model's, and its interval reaches the true lead's
    assert token["rule"]["plays_with_band_harmony"] > token["model"]["plays_with_band_harmony"]
    assert ci["rule"]["plays_with_band_harmony"][1] >= 1
    # its rhythm is below the model's
    assert token["rule"]["plays_with_band_rhythm"] < token["model"]["plays_with_band_rhythm"]
    # retrieval and the deaf soloist stay at or below zero (within a fifth)
    for name in ("retrieval", "deaf"):
        for key in ("plays_with_band_rhythm", "plays_with_band_harmony"):
            assert token[name][key] < 0.2, (name, key)
    # from audio: the true lead's own band apart from another's on onsets and pitch, barely on
    # beats; the rule soloist past 1 on both scores
    audio = rows["true"]["audio"]
    onset_gap = audio["onset_f_own"] - audio["onset_f_mismatched"]
    pitch_gap = audio["pitch_in_chroma_own"] - audio["pitch_in_chroma_mismatched"]
    beat_gap = audio["beat_f_own"] - audio["beat_f_mismatched"]
    assert onset_gap > 0.1 and pitch_gap > 0.1 and beat_gap < onset_gap / 2
    assert rows["rule"]["audio"]["plays_with_band_onsets"] > 1
    assert rows["rule"]["audio"]["plays_with_band_pitch"] > 1
    # lines: the rule soloist clearly below the true lead in rhythm and past it in harmony;
    # the model between the bounds, its notes chord tones less often than the lead's
    lines = json.loads((results / "baselines-lines.json").read_text())["rows"]
    assert lines["rule"]["token_interval"]["plays_with_band_rhythm"][1] < 1
    assert lines["rule"]["token_interval"]["plays_with_band_harmony"][0] > 1
    for key in ("plays_with_band_rhythm", "plays_with_band_harmony"):
        assert 0 < lines["model"]["token"][key] < 1, key
    assert lines["model"]["token"]["note_in_chord_own"] < lines["true"]["token"]["note_in_chord_own"]
    # the targets (0.9 rhythm, 0.8 harmony) are said not to be met
    assert token["model"]["plays_with_band_rhythm"] < 0.9 or token["model"]["plays_with_band_harmony"] < 0.8
