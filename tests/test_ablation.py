"""ablation.py: runs each (row, seed) once, scores it, and reports each row's mean and spread."""
import json

import numpy as np
import pytest

import ablation as A

QUICK = ("--window-s", "1", "--batch-size", "4", "--target-batch", "4", "--max-steps", "2",
         "--warmup-steps", "1", "--eval-every", "2", "--save-every", "2", "--eval-windows", "4",
         "--page-sample-s", "0", "--no-listen-test", "--device", "cpu")


@pytest.fixture
def rows(monkeypatch):
    monkeypatch.setattr(A, "ROWS", {"quick": A.Row("two steps", QUICK),
                                    "quick-greedy": A.Row("the same runs, greedy", runs_of="quick",
                                                          sampling={"temperature": 0.0, "guidance": None})})


def test_table_is_the_mean_and_spread_of_its_seeds_and_nothing_runs_twice(demo_dataset, tmp_path, rows):
    data_dir, _ = demo_dataset
    cfg = A.AblationConfig(rows=["quick", "quick-greedy"], seeds=["0", "1"], out=str(tmp_path / "abl"),
                           data=str(data_dir))
    A.main(cfg)
    table = json.loads((tmp_path / "abl" / "table.json").read_text())
    assert list(table["rows"]) == ["quick", "quick-greedy"]
    # what rebuilds it: the rows, the seeds and the folder, each named as they differ from the defaults
    assert table["command"] == ("python experiments/ablation.py --rows quick quick-greedy --seeds 0 1"
                                f" --out {tmp_path / 'abl'}")
    assert {r["params_m"] for r in table["rows"]["quick"]["runs"]} == {2.567308}  # the tiny preset's, with the chord head
    for name, row in table["rows"].items():
        assert [r["seed"] for r in row["runs"]] == [0, 1]
        for key, _, _ in A.FIGURES:
            values = [r[key] for r in row["runs"] if not np.isnan(r[key])]  # nan: not defined for that run
            if not values:
                assert row["mean_sd"][key] is None, (name, key)
            else:
                spread = np.std(values, ddof=1) if len(values) > 1 else 0.0
                assert row["mean_sd"][key] == pytest.approx([np.mean(values), spread]), (name, key)
    # The sampling row reused the training row's two runs, and scored them its own way.
    runs = sorted(p.parent.name for p in (tmp_path / "abl").glob("*/*/summary.json"))
    assert runs == ["seed0", "seed1"]
    scores = json.loads((tmp_path / "abl" / "quick" / "seed0" / "listening.json").read_text())
    assert len(scores) == 2 and all(0 <= s["kick_auc_own"] <= 1 for s in scores.values())
    greedy = [r["kick_auc_own"] for r in table["rows"]["quick-greedy"]["runs"]]
    sampled = [r["kick_auc_own"] for r in table["rows"]["quick"]["runs"]]
    assert greedy != sampled, "the sampling row must score its own solos"
    md = (tmp_path / "abl" / "table.md").read_text()
    assert md.count("\n| quick") == 2 and " ± " in md
    counted = table["counting_listener"]  # the data's own figure, beside the runs'
    assert set(counted) == {"note_in_chord_counted_own", "note_in_chord_counted_mismatched"}
    assert f"{counted['note_in_chord_counted_own']:.3f}" in md
    # Again: every run finished and scored, so nothing is trained or sampled again.
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "abl").glob("*/*/*.json")}
    A.main(cfg)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "abl").glob("*/*/*.json")} == stamps


def test_unknown_row_and_bad_seed_say_so(tmp_path, rows):
    with pytest.raises(SystemExit, match="no row nope"):
        A.main(A.AblationConfig(rows=["nope"], out=str(tmp_path)))
    with pytest.raises(SystemExit, match="whole numbers"):
        A.main(A.AblationConfig(rows=["quick"], seeds=["x"], out=str(tmp_path)))


def test_the_live_table_trains_on_the_grown_corpus_of_the_songs_rows():
    """experiments/live.py's random-songs-256 and this table's songs-256 rows name one build
    (live.py keeps its own copy of the flags, so as not to import this file's torch)."""
    import live
    row = live.ROWS["random-songs-256"]
    assert row.data == A.ROWS["songs-256"].data == A.ROWS["songs-256-steps-1000"].data
    cfg = A.AblationConfig(data="data/demo")
    assert A.data_folder(cfg, "songs-256") == f"data/demo-{row.corpus}"


def test_a_row_with_its_own_dataset_builds_it_once(tmp_path, monkeypatch):
    monkeypatch.setattr(A, "ROWS", {"aug": A.Row("augmented", data=("--augment", "1")),
                                    "aug-greedy": A.Row("the same runs", runs_of="aug", sampling={"top_k": 1})})
    cfg = A.AblationConfig(data=str(tmp_path / "demo"))
    folder = tmp_path / "demo-augment-1"
    assert A.data_folder(cfg, "aug") == A.data_folder(cfg, "aug-greedy") == str(folder)
    assert A.train_command(cfg, "aug", 0)[2:4] == ["--data", str(folder)]
    calls = []

    def fake_data_py(command):  # stands in for `python data.py ...`: records it, writes meta.json
        calls.append(command[2:])
        folder.mkdir()
        (folder / "meta.json").write_text("{}")
        return type("Done", (), {"returncode": 0})()

    monkeypatch.setattr(A.subprocess, "run", fake_data_py)
    A.build_data(cfg, "aug")
    A.build_data(cfg, "aug-greedy")  # the same dataset: already there
    assert calls == [["--out", str(folder), "--augment", "1"]]


def test_lookahead_table_places_each_solo_on_the_wall_clock(demo_dataset, tmp_path, monkeypatch):
    """--table lookahead: causal runs scored at every lateness; the wall-clock figure is the one at
    the runner's delay less the row's lookahead (80 ms less 40 ms: 3 frames at 75 Hz), and the curve is drawn."""
    causal = QUICK + ("--causal-encoder", "--attn-window", "75")
    monkeypatch.setattr(A, "ROWS", {"ahead-0": A.Row("aligned", causal, sampling={"guidance": None}),
                                    "ahead-40": A.Row("40 ms ahead", causal + ("--lookahead-ms", "40"),
                                                      sampling={"guidance": None})})
    cfg = A.AblationConfig(table="lookahead", rows=["ahead-0", "ahead-40"], seeds=["0"], out=str(tmp_path / "la"),
                           data=str(demo_dataset[0]), runner_delay_ms=80)
    A.main(cfg)
    rows = json.loads((tmp_path / "la" / "table.json").read_text())["rows"]
    for name, lookahead_ms, late in (("ahead-0", 0, 6), ("ahead-40", 40, 3)):
        run = rows[name]["runs"][0]
        assert run["lookahead_ms"] == lookahead_ms and run["late_ms"] == pytest.approx(late * 1e3 / 75)
        assert run["kick_auc_wall_clock"] == run[f"kick_auc_own_late{late}"]
        assert run["kick_auc_own_late0"] == run["kick_auc_own"], "0 frames late is the offline score"
        assert len({run[f"kick_auc_own_late{n}"] for n in A.LATE}) > 5, "lateness must move the score"
    md = (tmp_path / "la" / "table.md").read_text()
    assert "kick AUC on the wall clock" in md and "--table lookahead" in md
    assert (tmp_path / "la" / "lookahead.png").stat().st_size > 10_000
