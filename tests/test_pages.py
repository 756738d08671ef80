"""The listening pages (generate.py's and train.py's index.html), met as a person meets them.

Parsed: every link and player points at a file beside the page (no network, no
absolute path), every player at audio soundfile can read, every figure equals the JSON
written beside the page. And loaded in a real headless Chromium, from the file system:
no error, every audio element reports its duration, every image draws; a screenshot is
written for a person to look at.
"""
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import generate as G
from conftest import quick_train_config
from sax.codec import UNTRAINED_AUDIO
from sax.settings import command_line, parse_settings


class Page(HTMLParser):
    """What a reader meets in a page: the files it points at and the figures it shows."""

    def __init__(self, path):
        super().__init__()
        self.links, self.audio, self.images, self.scripts, self.figures = [], [], [], 0, {}
        self.text, self._key = [], None
        self.feed(Path(path).read_text())

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "a" and "href" in a:
            self.links.append(a["href"])
        if tag == "audio":
            self.audio.append(a["src"])
        if tag == "img":
            self.images.append(a["src"])
        if tag in ("script", "link", "iframe"):
            self.scripts += 1
        if "data-key" in a:
            self._key = a["data-key"]
            self.figures[self._key] = ""

    def handle_data(self, text):
        self.text.append(text)
        if self._key:
            self.figures[self._key] += text

    def handle_endtag(self, tag):
        self._key = None


def leaves(obj, prefix):
    """Every figure of a JSON object with its dotted path (lists of plain values joined)."""
    if isinstance(obj, dict):
        return [leaf for k, v in obj.items() for leaf in leaves(v, f"{prefix}.{k}")]
    if isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
        return [leaf for i, v in enumerate(obj) for leaf in leaves(v, f"{prefix}.{i}")]
    return [(prefix, ", ".join(map(str, obj)) if isinstance(obj, list) else obj)]


def check_files(folder, page):
    """Every reference is a relative path to a file beside the page; audio reads back with sound in it."""
    refs = page.links + page.audio + page.images
    assert refs and page.scripts == 0
    for ref in refs:
        assert not re.match(r"^[a-z]+:|^/", ref), f"{ref}: not a relative link"
        assert (folder / ref).is_file(), f"{ref}: missing"
    for ref in page.audio:
        audio, rate = sf.read(folder / ref)
        assert rate == 24000 and len(audio) > rate // 2 and np.isfinite(audio).all(), ref
        assert np.sqrt(np.mean(audio ** 2)) > 1e-4, f"{ref}: silent"
    for ref in page.images:
        assert (folder / ref).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", ref


def check_figures(page, record, sections, files=()):
    """Each figure of record[section] is on the page, under its path, as the page rounds it.
    files: keys that name a file (a player's src, checked by check_files), not a figure."""
    checked = 0
    for section in sections:
        for key, value in leaves(record[section], section):
            if key.split(".")[-1] in files:
                continue
            assert key in page.figures, f"{key} ({value}) is not on the page"
            shown = page.figures[key].strip()
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                assert shown == str(value), key
            else:
                assert abs(float(shown) - value) <= 5e-4 + 1e-9 * abs(value), (key, shown, value)
            checked += 1
    return checked


def test_generation_page_from_a_validation_clip(trained, tmp_path):
    folder, _ = trained
    cfg = G.GenerateConfig(checkpoint=str(folder / "best"), out=str(tmp_path), device="cpu", duration=1.0,
                           num_samples=2, seed=3)
    record = json.loads(G.main(cfg).read_text())
    page = Page(tmp_path / "index.html")
    check_files(tmp_path, page)
    # Both solos side by side, the true solo beside them, the backing once.
    assert page.audio == ["backing.wav", "solo_0.wav", "mix_0.wav", "solo_1.wav", "mix_1.wav", "true_solo.wav",
                          "true_mix.wav", "reading.wav", "true_reading.wav"]
    assert page.images == ["solo_0.png", "solo_1.png", "listening.png"]
    # The probes' picture: a row for each of the two solos and the true one, drawn (not blank).
    import matplotlib.image
    pixels = matplotlib.image.imread(tmp_path / "listening.png")
    assert pixels.shape[1] == 1080 and pixels.shape[0] == round((1.9 * 3 + 0.6) * 90), pixels.shape
    assert pixels[..., :3].std() > 0.1, "listening.png is blank"
    # The true solo is the dataset's: its codes decode to the wav on the page (levelled).
    assert record["true_solo_tokens"] is not None and record["listening"]
    n = check_figures(page, record, ["listening", "timings", "solo_tokens", "true_solo_tokens", "backing_tokens",
                                     "settings"])
    assert n > 40
    # The command on the page gives these settings back.
    text = "".join(page.text)
    assert record["command"] in text
    words = record["command"].split()
    assert words[:2] == ["python", "generate.py"]
    assert parse_settings(G.GenerateConfig, words[2:]) == cfg
    assert UNTRAINED_AUDIO in text  # offline: the page says why the audio carries nothing of the tokens


def test_generation_page_for_a_backing_file(trained, tmp_path):
    folder, _ = trained
    rng = np.random.default_rng(0)
    sf.write(tmp_path / "trio.wav", (0.1 * rng.standard_normal(2 * 24000)).astype(np.float32), 24000)
    out = tmp_path / "out"
    record = json.loads(G.main(G.GenerateConfig(checkpoint=str(folder / "best"), out=str(out), device="cpu",
                                                backing=str(tmp_path / "trio.wav"))).read_text())
    page = Page(out / "index.html")
    check_files(out, page)
    assert page.audio == ["backing.wav", "solo.wav", "mix.wav"]  # no truth for a file
    assert record["listening"] is None and record["true_solo_tokens"] is None
    check_figures(page, record, ["timings", "solo_tokens", "backing_tokens", "settings"])


def test_command_line_round_trip():
    cfg = G.GenerateConfig(checkpoint="runs/x y/best", top_k=0, guidance=None, stream=True, device="cpu")
    words = command_line("generate.py", cfg)
    # guidance is on by default (3): turning it off is written "none", and read back so
    assert words == "python generate.py --checkpoint 'runs/x y/best' --top-k 0 --cfg-coef none --stream --device cpu"
    import shlex
    assert parse_settings(G.GenerateConfig, shlex.split(words)[2:]) == cfg
    from train import TrainConfig
    t = TrainConfig(listen_test=False, attn_window=None, page_sample_s=0.0)
    assert command_line("train.py", t) == "python train.py --page-sample-s 0.0 --no-listen-test"
    assert parse_settings(TrainConfig, shlex.split(command_line("train.py", t))[2:]) == t


def test_run_page_grows_with_each_best_and_survives_a_resume(demo_dataset, tmp_path):
    from train import train
    cfg = quick_train_config(demo_dataset[0], tmp_path, max_steps=6, eval_every=2, save_every=2, page_sample_s=0.5)
    train(cfg)
    record = json.loads((tmp_path / "page.json").read_text())
    page = Page(tmp_path / "index.html")
    check_files(tmp_path, page)
    evals = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in evals if "val_ce" in r]
    assert [e["step"] for e in record["evaluations"]] == [2, 4, 6] == [r["step"] for r in evals]
    # One sample per new best checkpoint, each at the best's validation loss.
    bests, best = [], float("inf")
    for r in evals:
        if r["val_ce"] < best:
            best = r["val_ce"]
            bests.append((r["step"], r["val_ce"]))
    assert [(s["step"], s["val_ce"]) for s in record["samples"]] == bests
    assert page.audio[:2] == ["page/backing.wav", "page/true_mix.wav"]
    assert set(page.audio[2:]) == {s[k] for s in record["samples"] for k in ("solo", "mix")}
    assert "loss.png" in page.images
    # Under each sample, the picture of what the probes read in it (demo corpus).
    assert [s["probes"] for s in record["samples"]] == [p for p in page.images if p.endswith("_probes.png")][::-1]
    assert check_figures(page, record, ["evaluations", "samples"], files=("solo", "mix", "probes")) >= 3 * 5
    assert record["command"].startswith("python train.py --data ")
    # A resumed run keeps the samples up to its checkpoint and redoes the rest.
    record["samples"].append({"step": 99, "val_ce": 0.0, "cond_gain": 0.0, "solo": "x", "mix": "y",
                              "seconds_to_make": 0.0})  # as if logged after the checkpoint
    (tmp_path / "page.json").write_text(json.dumps(record))
    train(quick_train_config(demo_dataset[0], tmp_path, max_steps=8, eval_every=2, save_every=2,
                             page_sample_s=0.5, resume=True))
    again = json.loads((tmp_path / "page.json").read_text())
    assert [s["step"] for s in again["samples"]][:len(bests)] == [s for s, _ in bests]
    assert 99 not in [s["step"] for s in again["samples"]]
    assert [e["step"] for e in again["evaluations"]] == [2, 4, 6, 8]
    check_files(tmp_path, Page(tmp_path / "index.html"))


def test_run_page_without_samples(demo_dataset, tmp_path):
    from train import train
    train(quick_train_config(demo_dataset[0], tmp_path, max_steps=3, page_sample_s=0.0))
    page = Page(tmp_path / "index.html")
    check_files(tmp_path, page)
    assert page.audio == [] and not (tmp_path / "page").exists()


# ----------------------------------------------------------------------------
# A real browser
# ----------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")

# Loaded before the page's own content: records every element that fails to load and,
# once the page has loaded, each audio element's duration and each image's width,
# into the document's body, where --dump-dom prints it.
HARNESS = """<script>
const failed = [];
window.addEventListener("error", e => failed.push(e.target.src || e.message), true);
window.addEventListener("load", async () => {
  const audio = [...document.querySelectorAll("audio")];
  await Promise.all(audio.map(a => a.readyState >= 1 ? null : new Promise(done => {
    a.addEventListener("loadedmetadata", done); a.addEventListener("error", done); a.load(); })));
  const out = {failed, durations: audio.map(a => [a.getAttribute("src"), a.duration]),
               images: [...document.images].map(i => [i.getAttribute("src"), i.naturalWidth])};
  const pre = document.createElement("pre"); pre.id = "harness"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def browse(page, shot=None):
    """Load page in headless Chromium -> (what the harness saw, Chromium's console lines)."""
    check = page.with_name("_browser_check.html")
    check.write_text(page.read_text().replace("<head>", "<head>" + HARNESS, 1))
    common = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
              "--autoplay-policy=no-user-gesture-required", "--enable-logging=stderr", "--v=0",
              f"--user-data-dir={page.parent / '.chromium'}"]
    try:
        run = subprocess.run(common + ["--virtual-time-budget=15000", "--dump-dom", check.as_uri()],
                             capture_output=True, text=True, timeout=120)
        if shot:
            subprocess.run(common + ["--window-size=1280,1800", "--hide-scrollbars", f"--screenshot={shot}",
                                     page.as_uri()], capture_output=True, timeout=120)
    finally:
        check.unlink()
        shutil.rmtree(page.parent / ".chromium", ignore_errors=True)
    found = re.search(r'<pre id="harness">(.*?)</pre>', run.stdout, re.S)
    assert found, f"the harness did not report: {run.stderr[-2000:]}"
    import html
    console = [line for line in run.stderr.splitlines() if "CONSOLE" in line]
    return json.loads(html.unescape(found.group(1))), console


@pytest.mark.skipif(CHROMIUM is None, reason="no headless browser: apt-get install chromium")
def test_pages_in_a_real_browser(trained, demo_dataset, tmp_path):
    folder, _ = trained
    gen = tmp_path / "gen"
    G.main(G.GenerateConfig(checkpoint=str(folder / "best"), out=str(gen), device="cpu", duration=1.0,
                            num_samples=2))
    from train import train
    run = tmp_path / "run"
    train(quick_train_config(demo_dataset[0], run, max_steps=2, eval_every=2, page_sample_s=0.5))
    shots = Path(os.environ.get("PAGE_SCREENSHOTS", tmp_path))
    for name, page in (("generate", gen / "index.html"), ("train", run / "index.html")):
        seen, console = browse(page, shots / f"{name}_page.png")
        assert seen["failed"] == [] and console == [], (name, seen["failed"], console)
        assert len(seen["durations"]) == len(Page(page).audio) > 0
        for src, seconds in seen["durations"]:
            assert seconds and seconds > 0.4, (name, src, seconds)  # Chromium decoded the header: a playable file
        assert seen["images"] and all(width > 100 for _, width in seen["images"]), (name, seen["images"])
        assert (shots / f"{name}_page.png").stat().st_size > 10_000


def test_page_samples_leave_training_unchanged(demo_dataset, tmp_path):
    """The samples draw from their own generator and load the codec under a forked RNG:
    with or without them, a run's losses are the same to the last bit."""
    from train import train
    runs = []
    for seconds in (0.0, 0.5):
        out = tmp_path / f"run{seconds}"
        train(quick_train_config(demo_dataset[0], out, max_steps=4, eval_every=2, page_sample_s=seconds))
        runs.append([json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()])
    strip = lambda rows: [{k: v for k, v in r.items() if k != "frames_per_s"} for r in rows]  # noqa: E731
    assert strip(runs[0]) == strip(runs[1])
    assert json.loads((tmp_path / "run0.5" / "page.json").read_text())["samples"]
