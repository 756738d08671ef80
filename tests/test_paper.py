"""docs/paper: the draft builds end to end from run folders (--quick: 2-step runs), and no number
in its prose is typed by hand."""
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
def built(demo_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("paper")
    done = subprocess.run([sys.executable, str(PAPER / "build.py"), "--quick", "--quick-data", str(demo_dataset[0]),
                           "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return out


def test_the_draft_builds_to_a_pdf(built):
    pdf = (built / "paper.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and len(pdf) > 50_000, len(pdf)
    for part in ("ablation.typ", "architecture.typ", "pitch.typ", "lookahead.typ", "lookahead.png",
                 "numbers.json"):
        assert (built / part).stat().st_size > 0, part
    # the architecture rows and the pitch-target rows have tables of their own, beside the default
    assert "[layers-1], [2.1]" in (built / "architecture.typ").read_text()
    assert "[pitch-aux-1], [" in (built / "pitch.typ").read_text()
    for row in ("layers-1", "pitch-aux-1"):
        assert row not in (built / "ablation.typ").read_text(), row


def test_numbers_quoted_are_the_tables_values(built):
    """numbers.json (what the prose prints) against the table.json files the build read."""
    numbers = json.loads((built / "numbers.json").read_text())
    for name, columns in (("ablation", build.ABLATION_COLUMNS + build.ARCHITECTURE_COLUMNS
                           + build.PITCH_COLUMNS),
                          ("lookahead", build.LOOKAHEAD_COLUMNS)):
        table = json.loads((built / f"{name}.json").read_text())
        assert set(numbers[name]["rows"]) == set(table["rows"])
        for row, figures in table["rows"].items():
            for key, _, decimals in columns:
                m = figures["mean_sd"].get(key)
                want = "–" if m is None else f"{m[0]:.{decimals}f} ± {m[1]:.{decimals}f}".replace("-", "\N{MINUS SIGN}")
                assert numbers[name]["rows"][row][key] == want, (name, row, key)
            if name == "ablation":
                assert numbers[name]["rows"][row]["params_m"] == f"{figures['runs'][0]['params_m']:.1f}"
        assert numbers[name]["provenance"]["seeds"] == ", ".join(map(str, table["seeds"]))
        assert "--quick" in numbers[name]["provenance"]["command"]
    first = next(iter(json.loads((built / "ablation.json").read_text())["rows"].values()))["runs"][0]
    assert numbers["true_lead"]["kick_auc_true"] == f"{first['kick_auc_true']:.3f}"
    counted = json.loads((built / "ablation.json").read_text())["counting_listener"]
    assert numbers["counted"]["own"] == f"{counted['note_in_chord_counted_own']:.3f}"
    gap = first["note_in_chord_true"] - first["note_in_chord_true_mismatched"]
    harmony = (counted["note_in_chord_counted_own"] - counted["note_in_chord_counted_mismatched"]) / gap
    assert numbers["counted"]["harmony"] == f"{harmony:.2f}"


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
    assert len(asked) >= 6
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
    columns = {"A": build.ABLATION_COLUMNS + build.ARCHITECTURE_COLUMNS + build.PITCH_COLUMNS,
               "L": build.LOOKAHEAD_COLUMNS}
    quoted = re.findall(r'#f\((\w), "([^"]+)", "([^"]+)"\)', source)
    assert len(quoted) > 10
    for rows, row, key in quoted:
        assert row in ablation.ROWS and (rows == "L") == row.startswith("lookahead"), row
        assert key in {k for k, _, _ in columns[rows]}, (rows, key)
