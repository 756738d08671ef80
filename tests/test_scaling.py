"""Past one process: torchrun's ranks take the step one process takes, a torchrun job killed
with SIGKILL resumes bit for bit, and shards of a dataset build give the one-process dataset.

Real processes throughout (torchrun with gloo on the CPU, data.py twice at once), one thread
each, on the small demo corpus of conftest.py.
"""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def train_args(data_dir, out, steps, *extra):
    return ["train.py", "--data", str(data_dir), "--out", str(out), "--window-s", "1", "--batch-size", "2",
            "--target-batch", "8", "--warmup-steps", "2", "--eval-windows", "4", "--device", "cpu",
            "--threads", "1", "--max-steps", str(steps), "--save-every", "4", "--eval-every", "5",
            "--no-listen-test", "--page-sample-s", "0", *extra]


def rows(out):
    """metrics.jsonl's rows without their timings."""
    return [{k: v for k, v in json.loads(line).items() if k not in ("frames_per_s", "mfu")}
            for line in (out / "metrics.jsonl").read_text().splitlines()]


def run(cmd, **kw):
    done = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300, **kw)
    assert done.returncode == 0, done.stdout[-1500:] + done.stderr[-3000:]
    return done


def test_two_gloo_processes_take_the_steps_one_process_takes(demo_dataset, tmp_path):
    """20 steps of 8 windows: one process computes 4 micro-batches of 2, each of two ranks 2 of
    them; DDP averages the gradients once per step. Without dropout (whose masks each rank draws
    from its own generator) every figure agrees to float rounding: the sums run in another
    order (measured: losses within 3e-7 of each other, relative; gradient norms, the most
    sensitive figure, within 1e-4; the conditioning gains, differences of two losses, 2e-7)."""
    data_dir = demo_dataset[0]
    run([sys.executable, *train_args(data_dir, tmp_path / "one", 20, "--dropout", "0")])
    run([*TORCHRUN, *train_args(data_dir, tmp_path / "two", 20, "--dropout", "0")])
    one, two = rows(tmp_path / "one"), rows(tmp_path / "two")
    assert [r["step"] for r in one] == [r["step"] for r in two] and len(one) == 24  # 20 steps, 4 evaluations
    for a, b in zip(one, two):
        for key in a:
            rel = 1e-3 if key == "grad_norm" else 1e-5
            assert a[key] == pytest.approx(b[key], rel=rel, abs=1e-5), (a["step"], key, a[key], b[key])
    config = json.loads((tmp_path / "two" / "latest" / "config.json").read_text())
    assert config["world_size"] == 2 and "world_size" not in json.loads(
        (tmp_path / "one" / "latest" / "config.json").read_text())
    # Rank 0 alone wrote: one metrics.jsonl, one line per step and per evaluation, no doubles.
    assert len({r["step"] for r in two if "loss" in r}) == 20


def descendants(pid):
    """Every process below pid (torchrun's agent starts the ranks in processes of their own)."""
    found, todo = [], [pid]
    while todo:
        try:
            kids = [int(k) for task in Path(f"/proc/{todo.pop()}/task").iterdir()
                    for k in (task / "children").read_text().split()]
        except OSError:
            kids = []
        found += kids
        todo += kids
    return found


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="walks /proc to kill the whole job")
def test_a_torchrun_job_killed_with_sigkill_resumes_bit_for_bit(demo_dataset, tmp_path):
    """Dropout on (each rank its own masks): the job killed, agent and ranks, after its first
    save, then resumed with --resume, logs what the uninterrupted job logs and ends on the
    same weights, because latest/ keeps every rank's generator."""
    data_dir = demo_dataset[0]
    run([*TORCHRUN, *train_args(data_dir, tmp_path / "straight", 16)])
    out = tmp_path / "killed"
    job = subprocess.Popen([*TORCHRUN, *train_args(data_dir, out, 16)], cwd=ROOT, env=ENV,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    saved, deadline = out / "latest" / "config.json", time.time() + 240
    while time.time() < deadline:
        try:
            if json.loads(saved.read_text())["step"] >= 4:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.02)
    for pid in [job.pid, *descendants(job.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    job.wait()
    killed_at = json.loads(saved.read_text())["step"]
    assert 4 <= killed_at < 16, f"the kill should land mid-run, not at step {killed_at}"
    run([*TORCHRUN, *train_args(data_dir, out, 16, "--resume")])
    assert rows(out) == rows(tmp_path / "straight")
    weights = [hashlib.md5((d / "latest" / "model.safetensors").read_bytes()).hexdigest()
               for d in (out, tmp_path / "straight")]
    assert weights[0] == weights[1]


def test_ctrl_c_stops_every_rank_after_saving_latest(demo_dataset, tmp_path):
    """torchrun passes a Ctrl-C (SIGINT) on to the ranks: they agree to stop at the end of the
    same step, rank 0 saves latest/ there and says, once, how to continue."""
    out = tmp_path / "stopped"
    job = subprocess.Popen([*TORCHRUN, *train_args(demo_dataset[0], out, 200)], cwd=ROOT, env=ENV,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and not ((out / "metrics.jsonl").exists()
                                          and len((out / "metrics.jsonl").read_text().splitlines()) >= 3):
        time.sleep(0.02)
    job.send_signal(signal.SIGINT)
    said = job.communicate(timeout=120)[0]
    steps = [r["step"] for r in rows(out) if "loss" in r]
    saved = json.loads((out / "latest" / "config.json").read_text())["step"]
    assert steps and saved == steps[-1] < 200, (saved, steps)
    assert said.count("interrupted: saved") == 1 and "torchrun <its options> train.py" in said, said[-2000:]


def test_a_target_batch_the_ranks_cannot_share_is_one_line(demo_dataset, tmp_path):
    args = train_args(demo_dataset[0], tmp_path / "odd", 2)
    args[args.index("--target-batch") + 1] = "6"  # 3 micro-batches of 2 for 2 ranks
    done = subprocess.run([*TORCHRUN, *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "a multiple of --batch-size x processes (4)" in done.stdout + done.stderr
    assert not (tmp_path / "odd").exists()


def digests(folder):
    """A dataset's arrays (MD5) and its meta.json without the build's time and folder."""
    meta = json.loads((folder / "meta.json").read_text())
    meta.pop("build_seconds")
    meta["settings"].pop("out")
    return {f.name: hashlib.md5(f.read_bytes()).hexdigest() for f in sorted(folder.glob("*.npy"))}, meta


def test_two_shards_at_once_then_the_assembling_run_give_the_one_process_dataset(tmp_path):
    demo = ["data.py", "--demo-songs", "4", "--demo-seconds", "6", "--encodec-weights", "untrained",
            "--device", "cpu", "--threads", "1"]
    run([sys.executable, *demo, "--out", str(tmp_path / "one")])
    shared = tmp_path / "shared"
    shards = [subprocess.Popen([sys.executable, *demo, "--out", str(shared), "--shard", f"{i}/2"], cwd=ROOT,
                               env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
              for i in range(2)]
    for shard in shards:
        said = shard.communicate(timeout=300)[0]
        assert shard.returncode == 0, said[-2000:]
        assert "songs in" in said and "no --shard writes the dataset" in said
    assert not (shared / "meta.json").exists(), "a shard wrote the dataset"
    assert len(list((shared / "cache").glob("*.json"))) == 4, "the two shards did not cache every song"
    cached = {f: f.stat().st_mtime_ns for f in (shared / "cache").iterdir()}
    run([sys.executable, *demo, "--out", str(shared)])
    assert {f: f.stat().st_mtime_ns for f in cached} == cached, "the assembling run redid a song"
    assert digests(shared) == digests(tmp_path / "one")


def test_a_shard_that_is_not_i_of_n_is_one_line(tmp_path):
    for bad in ("2/2", "1", "a/b", "-1/2"):
        done = subprocess.run([sys.executable, "data.py", "--out", str(tmp_path / "d"), "--shard", bad], cwd=ROOT,
                              env=ENV, capture_output=True, text=True, timeout=120)
        assert done.returncode != 0 and "--shard" in done.stderr.strip().splitlines()[-1], (bad, done.stderr[-300:])
    assert not (tmp_path / "d").exists()


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="walks /proc to find the ranks")
def test_a_rank_that_dies_ends_the_job_naming_it_not_a_hang(demo_dataset, tmp_path):
    """SIGKILL to one rank mid-run: torchrun stops the other and ends the job, within seconds,
    with the dead rank named; latest/ keeps the last save whole."""
    out = tmp_path / "broken"
    job = subprocess.Popen([*TORCHRUN, *train_args(demo_dataset[0], out, 400)], cwd=ROOT, env=ENV,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and not (out / "latest" / "config.json").exists():
        time.sleep(0.05)
    ranks = [pid for pid in descendants(job.pid)
             if "train.py" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")]
    assert len(ranks) == 2, ranks
    os.kill(ranks[-1], signal.SIGKILL)
    t0 = time.time()
    said = job.communicate(timeout=120)[0]
    assert job.returncode != 0 and time.time() - t0 < 60, "the job hung after a rank died"
    assert "exitcode  : -9" in said and "rank      : " in said, said[-1500:]
    assert json.loads((out / "latest" / "config.json").read_text())["step"] >= 4
