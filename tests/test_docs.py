"""The docs as a reader meets them: every citation resolves, every link leads somewhere.

A course write-up copies `[@key]` citations into its own bibliography and follows the
docs' links: a key missing from docs/references.bib, an entry with its authors cut to
"and others", or a link to a page that moved would each cost the reader an evening.
"""
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]


def bib_entries():
    """docs/references.bib -> {key: {field: value}} (a small parser: one field per line)."""
    entries, key = {}, None
    for line in (ROOT / "docs" / "references.bib").read_text().splitlines():
        if m := re.match(r"@(\w+)\{([\w:-]+),", line):
            key = m.group(2)
            assert key not in entries, f"references.bib: {key} twice"
            entries[key] = {"type": m.group(1)}
        elif key and (m := re.match(r"\s+(\w+)\s*=\s*\{(.*)\},?$", line)):
            entries[key][m.group(1).lower()] = m.group(2)
    return entries


def cited_keys():
    keys = {}
    for page in PAGES:
        for group in re.findall(r"\[(@[^\]]+)\]", page.read_text()):
            for key in re.findall(r"@([a-z]+\d{4}[a-z0-9]*)", group):
                keys.setdefault(key, page.name)
    # The paper draft cites in Typst's own way: @key anywhere in its text.
    for key in re.findall(r"@([a-z]+\d{4}[a-z0-9]*)", (ROOT / "docs" / "paper" / "paper.typ").read_text()):
        keys.setdefault(key, "paper.typ")
    return keys


def test_every_citation_is_in_the_bibliography_and_every_entry_is_cited():
    entries, cited = bib_entries(), cited_keys()
    missing = {k: page for k, page in cited.items() if k not in entries}
    assert not missing, f"cited but not in docs/references.bib: {missing}"
    unused = sorted(set(entries) - set(cited))
    assert not unused, f"in docs/references.bib but cited on no page: {unused}"


def test_bibliography_entries_are_complete():
    """Each entry names all its authors, a year and where it appeared, the way BibTeX reads it."""
    venue_field = {"article": "journal", "inproceedings": "booktitle"}
    for key, e in bib_entries().items():
        for field in ("title", "author", "year"):
            assert e.get(field), f"{key}: no {field}"
        assert "others" not in e["author"], f"{key}: every author, not 'and others'"
        assert e["type"] in venue_field, f"{key}: @{e['type']} (expected @article or @inproceedings)"
        assert e.get(venue_field[e["type"]]), f"{key}: @{e['type']} needs a {venue_field[e['type']]} field"
        # a proceedings paper with neither (ISMIR 2020's BebopNet) gives the page its authors keep
        assert e.get("doi") or e.get("eprint") or e.get("url"), \
            f"{key}: give a DOI, an arXiv eprint or, for a paper with neither, its authors' url"


def test_citation_cff_parses_and_lists_full_references():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    for field in ("cff-version", "message", "title", "version", "authors"):
        assert cff.get(field), f"CITATION.cff: no {field}"
    assert cff["references"], "CITATION.cff: no references"
    for ref in cff["references"]:
        assert ref.get("title") and ref.get("year") and ref.get("authors"), f"CITATION.cff: incomplete {ref.get('title')}"
        for person in ref["authors"]:
            assert person.get("family-names") and person.get("given-names"), f"{ref['title']}: {person}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_lead_to_files_and_headings(page):
    """[text](target) links inside the repository: the file exists, and a #heading exists on it."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # links inside code blocks are examples
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.exists(), f"{page.name}: link to {target}, no such file"
        if anchor and file.suffix == ".md":
            headings = re.findall(r"^#+\s+(.*)$", file.read_text(), flags=re.M)
            slugs = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}
            assert anchor in slugs, f"{page.name}: link to {target}, no heading #{anchor} on {file.name}"


# ----------------------------------------------------------------------------
# The pages describe the software as it is; what changed and when is docs/log.md's alone.
# ----------------------------------------------------------------------------
LOG = ROOT / "docs" / "log.md"
HASH = re.compile(r"(?<![\w/.-])[0-9a-f]{7,40}(?![\w.-])")
NAMED_COMMIT = re.compile(r"\bcommits?\s+`?[0-9a-f]{7,40}\b", re.I)
DATE = re.compile(r"\b20\d\d-[01]\d-[0-3]\d\b")
TOLD = re.compile(r"earlier session|this session|an earlier run|gone since|since commit|"
                  r"the old default|(first|second|third|fourth|fifth|sixth|seventh|eighth) "
                  r"default run|as of commit|until commit|up to commit|in this one\b", re.I)


def history_in(line):
    """What in a line narrates history: a commit hash, a date, a remark on what happened
    when. URLs, DOIs and a weight file's name (encodec_24khz-d7cc33bc.th) cite, not narrate."""
    bare = re.sub(r"https?://\S+|doi\.org/\S+|\b[\w-]+-[0-9a-f]{8}\.th\b", "", line)
    hashes = [h for h in HASH.findall(bare) if re.search(r"[a-f]", h) and re.search(r"\d", h)]
    return hashes + NAMED_COMMIT.findall(bare) + DATE.findall(bare) + [m.group(0) for m in TOLD.finditer(bare)]


def test_the_history_detector_finds_what_it_is_for():
    for line in ("measured on a fresh clone of a849c20", "up to commit `7384967`", "on 2026-11-30",
                 "172 steps/s in an earlier session", "the old default's rhythm"):
        assert history_in(line), line
    for line in ("encodec_24khz-d7cc33bc.th", "https://github.com/x/y/commit/a849c20", "1,729 steps/s",
                 "2.036 ± 0.011", "git rev-parse HEAD"):
        assert not history_in(line), line


@pytest.mark.parametrize("page", [p for p in sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]
                                  if p != LOG], ids=lambda p: p.name)
def test_no_page_but_the_log_narrates_history(page):
    found = [f"{page.name}:{n}: {history_in(line)}" for n, line in enumerate(page.read_text().splitlines(), 1)
             if history_in(line)]
    assert not found, "history belongs in docs/log.md:\n" + "\n".join(found)


# ----------------------------------------------------------------------------
# Every `module.name` the pages cite exists: a function that moved or was renamed is a dead end.
# ----------------------------------------------------------------------------
MODULES = {"data": ROOT / "data.py", "model": ROOT / "model.py", "train": ROOT / "train.py",
           "generate": ROOT / "generate.py", "onnx_export": ROOT / "deploy" / "onnx_export.py",
           "onnx_runner": ROOT / "deploy" / "onnx_runner.py", "sound_card": ROOT / "deploy" / "sound_card.py",
           "ablation": ROOT / "experiments" / "ablation.py",
           **{f"sax.{p.stem}": p for p in (ROOT / "sax").glob("*.py")}}
# top-level modules that live in sax/ now: `listening.kick_auc` would send a reader nowhere
NOT_AT_THE_TOP = {"listening", "settings", "guard"}


def top_level_names(path):
    import ast
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign):
            names.add(node.target.id)
    return names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_module_name_cited_exists(page):
    names = {module: top_level_names(path) for module, path in MODULES.items()}
    cited = re.findall(r"`((?:sax\.)?\w+)\.(\w+)", page.read_text())
    files = {"py", "safetensors", "log", "json", "jsonl", "png", "pt", "wav", "html"}  # model.safetensors
    missing = sorted({f"{m}.{n}" for m, n in cited if n not in files and (
        (m in names and n not in names[m]) or m in NOT_AT_THE_TOP)})
    assert not missing, f"{page.name} cites {missing}, which its module does not define"
