"""The house as a reader meets it: four scripts that read in a sitting, one idea per file
beside them, imports that run one way, a README that fits on a few screens."""
import ast
import re

from conftest import ROOT

SPINE = ["data.py", "model.py", "train.py", "generate.py"]
FILES = sorted(p for p in [*ROOT.glob("*.py"), *(ROOT / "sax").glob("*.py"), *(ROOT / "deploy").glob("*.py"),
                           *(ROOT / "experiments").glob("*.py"), ROOT / "docs" / "paper" / "build.py"])


def module_of(path):
    rel = path.relative_to(ROOT).with_suffix("")
    return ".".join(rel.parts[1:] if rel.parts[0] in ("deploy", "experiments") else rel.parts)


def test_the_four_scripts_read_in_a_sitting():
    for name in SPINE:
        text = (ROOT / name).read_text()
        assert len(text.splitlines()) <= 600, f"{name}: {len(text.splitlines())} lines, at most 600"
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                assert length <= 80, f"{name}:{node.lineno} {node.name}: {length} lines, at most 80"


def test_no_file_over_a_thousand_lines():
    long = [f"{p.relative_to(ROOT)}: {n}" for p in FILES if (n := len(p.read_text().splitlines())) > 1000]
    assert not long, long


def test_imports_run_one_way():
    """The project's modules and the ones each imports (at the top or inside a function):
    no module reaches back to itself."""
    known = {module_of(p): p for p in FILES}
    edges = {}
    for name, path in known.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        edges[name] = {m for m in found if m in known and m != name}

    def reaches(start, target, seen=()):
        return any(m == target or (m not in seen and reaches(m, target, (*seen, m))) for m in edges[start])
    circles = sorted(name for name in edges if reaches(name, name))
    assert not circles, f"import circles through {circles}"
    assert not edges["model"], f"model.py imports {edges['model']}: the transformer stands alone"
    assert all(not m.startswith(("train", "generate")) for deps in edges.values() for m in deps), \
        "no module imports an entry script (train.py, generate.py)"


def test_the_readme_fits_and_lists_every_file():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 150, f"README.md: {len(readme.splitlines())} lines, under 150"
    tree = readme[readme.index("## The files"):]
    for path in FILES:
        if path.name != "__init__.py":
            assert re.search(rf"(^|\s|/){re.escape(path.name)}\s", tree, re.M), f"the README's tree lacks {path.name}"
