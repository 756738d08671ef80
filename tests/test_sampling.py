"""experiments/sampling.py: each setting scored per draw, each run the mean of its draws, each
row paired run by run with the first, nothing scored twice."""
import json
import shutil

import numpy as np
import pytest

import sampling as S


def test_settings_are_scored_per_draw_and_paired_with_the_first(trained, demo_dataset, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained[0] / "best", run / "best")  # the fixture's folder stays as it was
    out = tmp_path / "table.json"
    argv = ["--runs", str(run), "--try", "guidance=3", "guidance=none,temperature=0",
            "--split", "val", "--draws", "2", "--data", str(demo_dataset[0]), "--out", str(out)]
    S.main(argv)
    table = json.loads(out.read_text())
    assert table["split"] == "val" and table["draws"] == 2
    assert list(table["rows"]) == ["guidance=3", "guidance=none,temperature=0"]
    greedy = table["rows"]["guidance=none,temperature=0"]
    assert greedy["sampling"] == {"temperature": 0.0, "top_k": 250, "guidance": None}
    for row in table["rows"].values():
        (scored,) = row["runs"]
        assert scored["seed"] == 0 and len(scored["draws"]) == 2
        for key in S.FIGURES:  # a run's figure is the mean of its draws
            assert scored[key] == pytest.approx(np.mean([d[key] for d in scored["draws"]]), nan_ok=True)
        assert row["mean_sd"]["kick_auc_own"] == pytest.approx([scored["kick_auc_own"], 0.0])
    # the first row against itself is no difference; the greedy row's own draws are equal
    # (no randomness), the sampled row's are not (seeds 0 and 10)
    assert table["rows"]["guidance=3"]["against_first"]["kick_auc_own"] == [0.0, 0.0, 0.0]
    first = table["rows"]["guidance=3"]["runs"][0]["kick_auc_own"]
    assert greedy["against_first"]["kick_auc_own"][0] == pytest.approx(
        greedy["runs"][0]["kick_auc_own"] - first)
    assert greedy["runs"][0]["draws"][0] == greedy["runs"][0]["draws"][1]
    sampled = table["rows"]["guidance=3"]["runs"][0]["draws"]
    assert sampled[0] != sampled[1]
    # Again: every draw is in the run's sampling.json, so nothing is sampled again.
    stamp = (run / "sampling.json").stat().st_mtime_ns
    assert len(json.loads((run / "sampling.json").read_text())) == 4
    S.main(argv)
    assert (run / "sampling.json").stat().st_mtime_ns == stamp
    assert json.loads(out.read_text())["rows"] == table["rows"]


@pytest.mark.parametrize("bad, said", [("guidance=5,top_p=0.9", "--try guidance=5,top_p=0.9"),
                                       ("guidance=loud", "'loud' is not a number")])
def test_a_setting_it_does_not_know_says_so_before_any_work(tmp_path, bad, said):
    with pytest.raises(SystemExit, match=said):
        S.main(["--runs", str(tmp_path / "none"), "--try", bad, "--out", str(tmp_path / "t.json")])
    assert not (tmp_path / "t.json").exists()


def test_a_folder_without_a_checkpoint_is_named(tmp_path):
    with pytest.raises(SystemExit, match="no best/ checkpoint"):
        S.main(["--runs", str(tmp_path), "--try", "guidance=3", "--out", str(tmp_path / "t.json")])
