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
    for part in ("ablation.typ", "lookahead.typ", "lookahead.png", "numbers.json"):
        assert (built / part).stat().st_size > 0, part


def test_numbers_quoted_are_the_tables_values(built):
    """numbers.json (what the prose prints) against the table.json files the build read."""
    numbers = json.loads((built / "numbers.json").read_text())
    for name, columns in (("ablation", build.ABLATION_COLUMNS), ("lookahead", build.LOOKAHEAD_COLUMNS)):
        table = json.loads((built / f"{name}.json").read_text())
        assert set(numbers[name]["rows"]) == set(table["rows"])
        for row, figures in table["rows"].items():
            for key, _, decimals in columns:
                m = figures["mean_sd"].get(key)
                want = "–" if m is None else f"{m[0]:.{decimals}f} ± {m[1]:.{decimals}f}"
                assert numbers[name]["rows"][row][key] == want, (name, row, key)
        assert numbers[name]["provenance"]["seeds"] == ", ".join(map(str, table["seeds"]))
        assert "--quick" in numbers[name]["provenance"]["command"]
    first = next(iter(json.loads((built / "ablation.json").read_text())["rows"].values()))["runs"][0]
    assert numbers["true_lead"]["kick_auc_true"] == f"{first['kick_auc_true']:.3f}"


def test_no_number_in_the_prose_is_typed_by_hand():
    """Every decimal in paper.typ is a length of the layout; the figures come from numbers.json,
    and every figure the prose asks for is one the tables have (a typo would print a dash)."""
    source = (PAPER / "paper.typ").read_text()
    typed = [m.group() for m in re.finditer(r"\d+\.\d+(?!\s*(cm|pt|em|%))", source)]
    assert not typed, f"decimals typed into the draft: {typed}"
    import ablation
    columns = {"A": build.ABLATION_COLUMNS, "L": build.LOOKAHEAD_COLUMNS}
    quoted = re.findall(r'#f\((\w), "([^"]+)", "([^"]+)"\)', source)
    assert len(quoted) > 10
    for rows, row, key in quoted:
        assert row in ablation.ROWS and (rows == "L") == row.startswith("lookahead"), row
        assert key in {k for k, _, _ in columns[rows]}, (rows, key)
