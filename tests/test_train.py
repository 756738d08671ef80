"""train.py: learning, exact resume, precision policy, checkpoints, the Hub, an end-to-end smoke run."""
import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import ROOT, quick_train_config


import train as T
from model import ModelConfig, SoloTransformer
from sax.codec import dataset_codec
from sax.dataset import Windows
from sax.demo import NOTE_NAMES, render_demo_song
from sax.checkpoints import load_model
from sax.checkpoints import model_card, push_to_hub
from sax.evaluation import evaluate, train_flops_per_window
from sax.precision import choose_precision, scaled_step
from sax.dataset import chord_targets, harmony_truth, pitch_targets
from sax.listening import ListeningSet, counting_listener, fit_onset_detector, fit_probes, in_chord_curve, key_change_set, key_change_test, kick_auc, listening_masks, listening_windows, mismatched_windows, plays_with_band, read_pitch_classes, recovery_frames, score_solos


def test_tiny_model_overfits_a_fixed_batch():
    torch.manual_seed(0)
    model = SoloTransformer(ModelConfig(card=64, d_model=64, n_heads=4, d_ff=128, max_frames=24))
    backing = torch.randint(0, 64, (4, 4, 24))
    solo = torch.randint(0, 64, (4, 4, 24))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        loss, _, _ = model.loss(backing, solo)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > 3.5 and loss.item() < 0.5, f"loss went from {first:.2f} to {loss.item():.2f}; expected below 0.5"


def _losses(metrics_file):
    return {r["step"]: r["loss"] for r in map(json.loads, metrics_file.read_text().splitlines()) if "loss" in r}


def test_resume_after_kill_is_exact(demo_dataset, tmp_path):
    """Three real processes with the same settings: one straight through 12 steps, one
    killed with SIGKILL after step 6, then resumed from its last checkpoint (step 4 or 8)."""
    def cmd(out, *extra):
        return [sys.executable, "train.py", "--data", str(demo_dataset[0]), "--out", str(out), "--window-s", "1",
                "--batch-size", "4", "--target-batch", "8", "--warmup-steps", "2", "--eval-windows", "8",
                "--device", "cpu", "--max-steps", "12", "--save-every", "4", "--eval-every", "6", *extra]
    # One thread in every process: the same arithmetic, in the same order, in all three.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    subprocess.run(cmd(tmp_path / "straight"), cwd=ROOT, env=env, check=True, capture_output=True)
    straight = _losses(tmp_path / "straight" / "metrics.jsonl")
    out = tmp_path / "killed"
    proc = subprocess.Popen(cmd(out), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        metrics = out / "metrics.jsonl"
        if metrics.exists() and max(_losses(metrics), default=0) >= 6:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = max(_losses(out / "metrics.jsonl"))
    assert 6 <= killed_at < 12, f"the kill should land mid-run, not at step {killed_at}"
    with open(out / "metrics.jsonl", "a") as f:  # a line cut short, as a kill mid-write leaves it
        f.write('{"step": 99, "lo')
    subprocess.run(cmd(out, "--resume"), cwd=ROOT, env=env, check=True, capture_output=True)
    resumed = _losses(out / "metrics.jsonl")
    assert sorted(resumed) == list(range(1, 13)), f"steps logged after resume: {sorted(resumed)}"
    for step in range(1, 13):
        assert resumed[step] == straight[step], f"step {step}: {resumed[step]} after resume, {straight[step]} straight"
    # The evaluation after the resume averages the same recent losses as the straight run.
    evals = [{r["step"]: r for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines()) if "val_ce" in r}
             for d in (tmp_path / "straight", out)]
    assert evals[0][12]["train_loss"] == evals[1][12]["train_loss"], "train_loss after resume differs"
    # Resuming a finished run changes nothing and says so.
    before = (out / "summary.json").read_text()
    again = subprocess.run(cmd(out, "--resume"), cwd=ROOT, env=env, capture_output=True, text=True)
    assert again.returncode != 0 and "this run is finished" in again.stderr, again.stderr[-500:]
    assert (out / "summary.json").read_text() == before, "a refused resume must not touch summary.json"


def test_mismatched_backing_comes_from_other_songs():
    backing = torch.arange(5).view(5, 1, 1)
    rolled = mismatched_windows(backing, ["a", "a", "b", "b", "c"], spare=None)
    picked = [int(x) for x in rolled.flatten()]
    assert all(["a", "a", "b", "b", "c"][j] != s for j, s in zip(picked, ["a", "a", "b", "b", "c"])), picked
    spare = torch.full((2, 1, 1), 9)
    assert (mismatched_windows(backing[:3], ["a", "a", "a"], spare) == 9).all(), "one song: use the spare windows"


def test_bf16_autocast_runs_on_cpu(demo_dataset, tmp_path):
    summary = T.train(quick_train_config(demo_dataset[0], tmp_path, dtype="bf16", max_steps=3))
    assert math.isfinite(summary["val_ce"]), f"bf16 validation loss {summary['val_ce']}"


@pytest.mark.parametrize("requested,device,cap,want", [
    ("auto", "cuda", (7, 5), (torch.float16, True)),    # T4: fp16 + GradScaler
    ("auto", "cuda", (8, 0), (torch.bfloat16, False)),  # A100: bf16, no scaler
    ("auto", "cpu", None, (None, False)),
    ("bf16", "cpu", None, (torch.bfloat16, False)),
    ("fp32", "cuda", (9, 0), (None, False)),
])
def test_precision_policy(requested, device, cap, want):
    assert choose_precision(requested, device, cap) == want, f"{requested} on {device} {cap}"


def test_fp16_on_cpu_is_refused():
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        choose_precision("fp16", "cpu")


def test_grad_scaler_skips_and_counts_non_finite_steps():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)  # the same logic CUDA's fp16 path runs
    before = model.weight.detach().clone()
    scaler.scale(model(torch.full((2, 4), float("inf"))).sum()).backward()
    _, skipped = scaled_step(model, opt, scaler, grad_clip=1.0)
    assert skipped and torch.equal(model.weight, before), "an inf gradient must skip the step"
    opt.zero_grad()
    scaler.scale(model(torch.ones(2, 4)).sum()).backward()
    _, skipped = scaled_step(model, opt, scaler, grad_clip=1.0)
    assert not skipped and not torch.equal(model.weight, before), "a finite gradient must update the weights"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fp16_training_step_on_cuda(demo_dataset, tmp_path):
    summary = T.train(quick_train_config(demo_dataset[0], tmp_path, dtype="fp16", device="cuda", max_steps=3))
    assert math.isfinite(summary["val_ce"])


def test_non_finite_loss_stops_with_a_message(demo_dataset, tmp_path, monkeypatch):
    def nan_loss(self, backing, solo, cond_drop=None, input_drop=None, pitch=None, chords=None):
        p = next(self.parameters())
        return p.sum() * float("nan"), torch.zeros(4), {}
    monkeypatch.setattr(SoloTransformer, "loss", nan_loss)
    with pytest.raises(SystemExit, match=r"step 1: the loss is nan.*learning rate.*no checkpoint was saved"):
        T.train(quick_train_config(demo_dataset[0], tmp_path, max_steps=3))
    assert not (tmp_path / "latest").exists(), "the weights that gave a NaN must not become a checkpoint"


def test_a_diverging_run_keeps_its_last_good_checkpoint(demo_dataset, tmp_path):
    """Train to step 10, then resume with an absurd learning rate: the loss turns
    non-finite, and latest/ must still be step 10, with finite weights, resumable."""
    from safetensors.torch import load_file
    settings = dict(max_steps=10, save_every=5, eval_every=5, listen_test=False)
    T.train(quick_train_config(demo_dataset[0], tmp_path, **settings))
    before = load_file(str(tmp_path / "latest" / "model.safetensors"))
    with pytest.raises(SystemExit, match=r"the loss is (nan|inf).*still holds the last good checkpoint \(step 10\)"):
        T.train(quick_train_config(demo_dataset[0], tmp_path, **{**settings, "max_steps": 20}, resume=True, lr=1e30))
    after = load_file(str(tmp_path / "latest" / "model.safetensors"))
    assert json.loads((tmp_path / "latest" / "config.json").read_text())["step"] == 10
    assert all(torch.equal(before[k], after[k]) for k in before), "latest/ was overwritten"
    summary = T.train(quick_train_config(demo_dataset[0], tmp_path, **{**settings, "max_steps": 12}, resume=True))
    assert summary["steps"] == 12 and math.isfinite(summary["val_ce"]), "resuming the kept checkpoint must work"


def test_bad_settings_and_files_give_one_line_and_leave_nothing(demo_dataset, tmp_path):
    for overrides, message in ((dict(preset="tinny"), "--preset tinny: choose one of tiny, small, base"),
                               (dict(batch_size=3, target_batch=8), "--target-batch 8 must be a multiple of"),
                               (dict(dtype="fp64"), "--dtype fp64: choose one of"),
                               (dict(data=str(tmp_path / "nowhere")), "meta.json not found")):
        with pytest.raises(SystemExit, match=message):
            T.train(quick_train_config(demo_dataset[0], tmp_path / "run", **overrides))
        assert not (tmp_path / "run").exists(), f"{overrides}: a refused run left its folder behind"
    broken = tmp_path / "broken"
    broken.mkdir()
    for text, message in (("", "meta.json is damaged"), ('{"codec": {', "meta.json is damaged"),
                          ("{}", "lacks codec, splits, songs")):
        (broken / "meta.json").write_text(text)
        with pytest.raises(SystemExit, match=message):
            T.train(quick_train_config(broken, tmp_path / "run"))
    run = subprocess.run([sys.executable, "train.py", "--preset", "tinny"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 2 and "invalid choice: 'tinny'" in run.stderr, run.stderr[-300:]
    help_text = subprocess.run([sys.executable, "train.py", "--help"], cwd=ROOT, capture_output=True, text=True).stdout
    assert "(default: )" not in help_text and "{tiny,small,base}" in help_text, help_text[:600]


def test_checkpoint_is_safetensors_and_weights_only(trained):
    out, _ = trained
    from safetensors.torch import load_file
    weights = load_file(str(out / "best" / "model.safetensors"))
    assert not any(k.startswith("_orig_mod.") for k in weights), "compiled-model keys leaked into the checkpoint"
    state = torch.load(out / "latest" / "state.pt", weights_only=True)
    assert state["step"] == 6 and "optimizer" in state and "rng_data" in state, f"state keys {list(state)}"
    model, config = load_model(out / "best")
    assert config["model"]["card"] == 1024 and model.cfg.n_codebooks == 4
    assert not list(out.glob(".*.tmp")) and not list(out.glob(".*.old")), "temporary checkpoint folders left behind"


def test_smoke_end_to_end(trained):
    out, summary = trained
    for name in ("metrics.jsonl", "loss.png", "summary.json", "settings.json", "best/config.json", "latest/state.pt"):
        assert (out / name).exists(), f"{name} missing from the run folder"
    assert summary["steps"] == 6 and math.isfinite(summary["val_ce"]), summary
    assert {"ce_q1", "ce_q4", "val_ppl", "cond_gain", "unigram_baseline"} <= set(summary), f"summary keys {summary}"
    assert abs(summary["val_ppl"] - math.exp(summary["val_ce"])) < 1e-3 * summary["val_ppl"]


def test_exported_folder_gives_identical_logits(trained):
    out, _ = trained
    from safetensors.torch import load_file
    model, config = load_model(out / "best")
    fresh = SoloTransformer(model.cfg)
    fresh.load_state_dict(load_file(str(out / "best" / "model.safetensors")))
    fresh.eval()
    backing, dec_in = torch.randint(0, 1024, (1, 4, 20)), torch.randint(0, 1025, (1, 4, 23))
    assert torch.equal(model(backing, dec_in), fresh(backing, dec_in)), "reloaded weights give other logits"


def test_model_card_is_valid(trained):
    from huggingface_hub import ModelCard
    out, _ = trained
    config = json.loads((out / "best" / "config.json").read_text())
    card = ModelCard(model_card(config, "someone/jazz-sax-tiny"))
    assert card.data.license == "mit" and "jazz" in card.data.tags, card.data
    results = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert abs(results["val_ce"] - config["metrics"]["val_ce"]) < 1e-3, f"card metrics {results}"
    assert "python generate.py --checkpoint someone/jazz-sax-tiny" in card.text


class FakeHub:
    """Stands in for huggingface_hub.HfApi at the boundary: records what would be sent."""

    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kw):
        self.calls.append(("create_repo", repo_id, kw))

    def create_commit(self, **kw):
        self.calls.append(("create_commit", kw["repo_id"], kw))


class OfflineHub(FakeHub):
    """A client whose every call fails as it does with no network."""

    def create_repo(self, repo_id, **kw):
        raise ConnectionError("[Errno -3] Temporary failure in name resolution")


def test_push_to_hub_up_to_the_client(trained, monkeypatch, capsys, tmp_path):
    out, _ = trained
    folder = tmp_path / "best"
    __import__("shutil").copytree(out / "best", folder)
    monkeypatch.setenv("HF_TOKEN", "hf_secret_token_value")
    with pytest.raises(SystemExit, match=r"(?s)Temporary failure.*Nothing was uploaded.*hf auth login.*--push-only"):
        push_to_hub(folder, "someone/jazz-sax-tiny", api=OfflineHub())
    assert not (folder / "README.md").exists(), "nothing may be written before the upload succeeds"
    hub = FakeHub()
    push_to_hub(folder, "someone/jazz-sax-tiny", private=True, api=hub)
    assert [c[0] for c in hub.calls] == ["create_repo", "create_commit"], hub.calls
    assert hub.calls[0][2]["private"] is True and hub.calls[0][2]["exist_ok"] is True
    sent = {op.path_in_repo for op in hub.calls[1][2]["operations"]}
    # An untrained-codec model must ship its codebooks (codec.safetensors); state.pt stays home.
    assert sent == {"config.json", "model.safetensors", "README.md", "codec.safetensors"}, sent
    assert (folder / "README.md").exists(), "after the upload, the model card is kept in the folder"
    assert "hf_secret_token_value" not in capsys.readouterr().out, "the token must never be printed"


def test_model_can_listen_on_a_task_where_the_solo_is_the_backing():
    """When the solo is a function of the backing (a fixed permutation of each frame's
    codes), a short training run must show a large conditioning gain, on every codebook
    and on the first frames of the window, where the solo has no past to lean on."""
    torch.manual_seed(0)
    card, K, F = 32, 4, 16  # F frames (T is the train module here)
    perm = torch.randperm(card)
    model = SoloTransformer(ModelConfig(n_codebooks=K, card=card, d_model=64, n_heads=4, d_ff=128, max_frames=F,
                                        aligned_backing=True))  # it learns a frame-to-frame map in few steps
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(120):
        backing = torch.randint(0, card, (16, K, F))
        loss, _, _ = model.loss(backing, perm[backing])
        opt.zero_grad()
        loss.backward()
        opt.step()
    backing = torch.randint(0, card, (32, K, F))
    other = backing.roll(1, dims=0)
    masks = {"start": (torch.arange(F) < 4).expand(32, F)}
    got = T_evaluate(model, backing, perm[backing], other, masks)
    assert got["cond_gain"] > 1.0, f"conditioning gain {got['cond_gain']:.3f} nats on a task made of listening"
    assert min(got[f"cond_gain_q{k + 1}"] for k in range(K)) > 0.5, f"per codebook: {got}"
    assert got["cond_gain_start"] > 1.0, f"gain over the first frames {got['cond_gain_start']:.3f}"
    # And a model that never saw a backing gains nothing from one: the metric can tell.
    deaf = SoloTransformer(ModelConfig(n_codebooks=K, card=card, d_model=64, n_heads=4, d_ff=128, max_frames=F))
    assert abs(T_evaluate(deaf, backing, perm[backing], other, masks)["cond_gain"]) < 0.05


def T_evaluate(model, backing, solo, other, masks):
    from contextlib import nullcontext
    return evaluate(model, backing, solo, other, masks, batch=16, device=torch.device("cpu"), autocast=nullcontext)


def test_listening_metrics_tell_the_true_lead_own_band_from_another(demo_dataset):
    """On the demo corpus's true lead: the kick AUC scores its own band's kicks clearly
    above another song's, and the gain masks cover the frames they say."""
    out, meta = demo_dataset
    backing, solo, where = Windows(out, "train", meta, 75).fixed(64)
    masks = listening_masks(meta, where, 75, meta["codec"]["frame_rate"])
    assert set(masks) == {"start", "kicks"} and masks["start"].all(), "a 1 s window is all 'first second'"
    kicks = masks["kicks"]
    assert 0.03 < kicks.float().mean() < 0.3, f"share of kick frames {kicks.float().mean():.2f}"
    songs = [song for song, _, _ in where]
    other = mismatched_windows(torch.arange(len(songs)).view(-1, 1, 1), songs, None).flatten()
    valid = solo[:, 0] != meta["codec"]["card"]
    detector = fit_onset_detector(solo, kicks, meta["codec"]["card"])
    own, mismatched = kick_auc(detector, solo, kicks, valid), kick_auc(detector, solo, kicks[other], valid)
    assert own > 0.65 and own > mismatched + 0.1, f"true lead: kick AUC {own:.3f} own band, {mismatched:.3f} another's"


def test_harmony_probe_tells_the_true_lead_own_chords_from_another_song(demo_dataset):
    """The pitch-class probe, fitted on the training songs' notes, reads the validation
    songs' true lead in their own chords far more often than in another song's."""
    out, meta = demo_dataset
    card, T = meta["codec"]["card"], 75
    probes = fit_probes(out, meta, T)
    backing, solo, where, other, other_solo = listening_windows(out, meta, T)
    ls = ListeningSet.of(meta, where, backing, solo, other, other_solo)
    assert (probes.span, probes.counting_span) == (2, 18), "the spans at 75 Hz"
    read = read_pitch_classes(probes.pitch, solo, probes.span)
    sounding = (ls.lead >= 0) & (solo[:, 0] != card)
    accuracy = (read == ls.lead)[sounding].float().mean()
    assert accuracy > 0.4, f"the probe reads the true pitch class in {accuracy:.0%} of frames (chance 1/12)"
    scores = score_solos(probes, ls, {"true": ls.solo, "true_mismatched": ls.other_solo})
    own, other_band = scores["note_in_chord_true"], scores["note_in_chord_true_mismatched"]
    assert own > 0.6 and own > other_band + 0.25, f"true lead: note-in-chord {own:.3f} own chords, {other_band:.3f} another's"


def test_the_chords_can_be_counted_from_the_band_codes(demo_dataset):
    """counting_listener: the lead's pitch class guessed from the backing's codes alone
    lands on the band's chord tones far more often over its own band than over another song's
    (the harmony is in the backing's tokens, for a model to take)."""
    out, meta = demo_dataset
    T = 75
    probes = fit_probes(out, meta, T)
    backing, solo, where, other_backing, other_solo = listening_windows(out, meta, T)
    ls = ListeningSet.of(meta, where, backing, solo, other_backing, other_solo)
    counted = counting_listener(probes, ls)
    own, other = counted["note_in_chord_counted_own"], counted["note_in_chord_counted_mismatched"]
    assert own > other + 0.2, f"counted from the band: {own:.3f} in its own chords, {other:.3f} in another's"


def test_harmony_truth_follows_the_notes_and_chords():
    meta = {"songs": [{"id": "s", "variants": [{"tempo": 1.0, "semitones": 0.0}, {"tempo": 2.0, "semitones": 1.2}],
                       "truth": {"lead_notes": [{"start_s": 0.1, "end_s": 0.2, "midi": 62}],
                                 "chords": [{"start_s": 0.0, "end_s": 0.3, "pitch_classes": [0, 4, 7]}]}}]}
    lead, chords = harmony_truth(meta, [("s", 0, 0), ("s", 1, 0)], 40, 100)
    assert (lead[0, 10:20] == 2).all() and (lead[0, :10] == -1).all() and (lead[0, 20:] == -1).all()
    # twice as fast, a semitone (1.2, rounded) higher
    assert (lead[1, 5:10] == 3).all() and (lead[1, 10:] == -1).all()
    assert chords[0, :30].nonzero()[:, 1].unique().tolist() == [0, 4, 7] and not chords[0, 30:].any()
    assert chords[1, :15].nonzero()[:, 1].unique().tolist() == [1, 5, 8] and not chords[1, 15:].any()


def test_plays_with_band_scales_by_the_true_lead():
    assert plays_with_band(0.7, 0.5, 0.8, 0.5) == pytest.approx(2 / 3)
    assert plays_with_band(0.5, 0.5, 0.8, 0.5) == 0  # deaf
    assert np.isnan(plays_with_band(0.7, 0.5, 0.5, 0.5))  # the lead tells nothing: no scale


def test_kick_auc_is_a_rank_statistic():
    table = torch.tensor([[0.0, 1.0, 2.0, 0.0]])                   # codes 0..2, padding id 3
    solo = torch.tensor([[[2, 0, 0, 1, 0, 2]]])                     # [N=1, K=1, T=6]
    kicks = torch.tensor([[True, False, False, True, False, False]])
    valid = torch.ones(1, 6, dtype=torch.bool)
    # kick frames score 2 and 1, the others 0, 0, 0, 2. Of the 8 (kick, other) pairs the
    # 2 wins 3 and ties 1, the 1 wins 3 and loses 1: (6 + 0.5) / 8.
    assert abs(kick_auc(table, solo, kicks, valid) - 6.5 / 8) < 1e-6
    # Frames that are not audio (valid False) are not counted, whatever their codes score:
    # with frames 4 and 5 invalid and holding onset-like codes, the pairs are 2 kicks x 2
    # others, all won: 1.0. Counting them would give (3 + 2) / 8.
    padded, valid[0, 4:] = solo.clone(), False
    padded[0, 0, 4:] = 2
    assert kick_auc(table, padded, kicks, valid) == 1.0
    assert kick_auc(table, padded, kicks, torch.ones_like(valid)) == 5 / 8


def test_mfu_counts_matmul_parameters_and_attention():
    model = SoloTransformer(ModelConfig(card=64, d_model=32, n_heads=4, n_enc_layers=1, n_dec_layers=1, d_ff=64,
                                        max_frames=10))
    frames, steps = 10, 13  # S = T + K - 1
    tables = model.enc_emb.numel() + model.dec_emb.numel()  # lookups, not matmuls: not counted
    enc = sum(p.numel() for n, p in model.named_parameters() if n.startswith(("encoder.", "enc_norm")))
    dec = model.num_params() - tables - enc
    attention = 12 * 32 * (frames * frames + steps * steps + steps * frames)
    assert train_flops_per_window(model, frames) == 6 * (enc * frames + dec * steps) + attention


def test_solo_dropout_trains(demo_dataset, tmp_path):
    summary = T.train(quick_train_config(demo_dataset[0], tmp_path, solo_dropout=0.3, max_steps=3))
    assert math.isfinite(summary["best_val_ce"]) and summary["steps"] == 3
    with pytest.raises(SystemExit, match="solo-dropout"):
        T.check_train_settings(quick_train_config(demo_dataset[0], tmp_path, solo_dropout=1.0))


def test_lookahead_ms_becomes_frames_of_a_causal_model(demo_dataset, tmp_path):
    """--lookahead-ms 80 at 75 Hz: 6 frames in the checkpoint's config; refused without --causal-encoder
    or below 0."""
    T.train(quick_train_config(demo_dataset[0], tmp_path / "a", causal_encoder=True, attn_window=75,
                               lookahead_ms=80, max_steps=2, listen_test=False))
    assert json.loads((tmp_path / "a" / "best" / "config.json").read_text())["model"]["lookahead"] == 6
    for bad, words in ((dict(lookahead_ms=80), "--lookahead-ms 80: only with --causal-encoder"),
                       (dict(causal_encoder=True, lookahead_ms=-40), "--lookahead-ms -40(.0)?: must be at least 0")):
        with pytest.raises(SystemExit, match=words):
            T.check_train_settings(quick_train_config(demo_dataset[0], tmp_path / "b", **bad))


def test_layers_and_width_override_the_preset(demo_dataset, tmp_path):
    """--layers 1 --d-model 64: the checkpoint is a 1+1-layer model of width 64 (d_ff 256), and
    it loads back; a width the heads cannot split is refused before anything is written."""
    T.train(quick_train_config(demo_dataset[0], tmp_path / "a", layers=1, d_model=64, max_steps=2,
                               listen_test=False))
    model, _ = load_model(tmp_path / "a" / "best", "cpu")
    m = model.cfg
    assert (m.n_enc_layers, m.n_dec_layers, m.d_model, m.d_ff, m.n_heads) == (1, 1, 64, 256, 4)
    assert len(model.encoder) == 1 and len(model.decoder) == 1
    for bad, words in ((dict(d_model=100), "--d-model 100: 0 .* or a multiple of 8"),
                       (dict(layers=-1), "--layers -1: must be at least 0")):
        with pytest.raises(SystemExit, match=words):
            T.train(quick_train_config(demo_dataset[0], tmp_path / "b", **bad))
        assert not (tmp_path / "b").exists()


def test_a_key_change_song_changes_key_once_in_the_middle():
    _, _, truth = render_demo_song(10_000, 16.0, 0, key_change_at=0.5)
    keys = [NOTE_NAMES.index(c["key"]) for c in truth["chords"]]
    change = next(c["bar"] for c in truth["chords"] if c["start_s"] == truth["key_change_s"])
    assert set(keys[:change]) == {keys[0]} and set(keys[change:]) == {(keys[0] + 6) % 12}
    assert change % 2 == 0 and abs(change - len(keys) / 2) <= 2


def test_recovery_is_counted_from_the_change():
    hits = torch.tensor([[1, 1, 1, 1, 0, 0, 0, 1, 1, 1]], dtype=torch.bool)
    frames = torch.ones_like(hits)
    curve = in_chord_curve(hits, frames, 0)
    assert curve.tolist() == hits[0].float().tolist()
    assert recovery_frames(curve, 4, 1.0) == 3  # back (within 0.1) 3 frames after
    assert recovery_frames(curve, 4, 0.05) == 0  # never fell further than 0.1
    assert recovery_frames(curve[:7], 4, 1.0) is None  # not back within the window
    smooth = in_chord_curve(hits, frames, 1)
    assert smooth[5].item() == 0 and smooth[4].item() == pytest.approx(1 / 3)


def test_key_change_test_reports_before_after_and_recovery(trained, demo_dataset):
    out, meta = demo_dataset[0], demo_dataset[1]
    model, config = load_model(trained[0] / "best")
    codec = dataset_codec(meta["codec"], out, "cpu")
    kc = key_change_set(codec, model.cfg.max_frames, songs=[10_000, 10_001])
    assert kc.backing.shape == kc.lead.shape == (2, 4, model.cfg.max_frames)
    figures = key_change_test(model, kc, fit_probes(out, meta, model.cfg.max_frames),
                                        torch.device("cpu"))
    for who in ("generated", "true"):
        assert 0 <= figures[f"key_change_in_chord_before_{who}"] <= 1
        assert 0 <= figures[f"key_change_in_chord_after_{who}"] <= 1
        frames = figures[f"key_change_recovery_frames_{who}"]
        assert frames is None or 0 <= frames <= model.cfg.max_frames // 2
    # The true lead, on 4 s windows, shows what the test measures: its notes fit the chords
    # before the change (well above the third that chance gives), the notes held over it
    # do not, and it is back within the second half of the window.
    T = 300
    kc = key_change_set(codec, T, songs=[10_000, 10_001])
    wide = SoloTransformer(dataclasses.replace(model.cfg, max_frames=T)).eval()
    true = key_change_test(wide, kc, fit_probes(out, meta, T), torch.device("cpu"))
    assert true["key_change_in_chord_before_true"] > 0.5, true
    assert true["key_change_in_chord_after_true"] < true["key_change_in_chord_before_true"] - 0.3, true
    assert true["key_change_recovery_frames_true"] is not None, true
    assert 0 < true["key_change_recovery_frames_true"] < T // 2, true


def dataset_with_meta(data_dir, folder, meta):
    """The dataset of data_dir as another one would be: its arrays linked into `folder`,
    beside `meta` as its meta.json (written again on each call) -> folder."""
    if not folder.exists():
        folder.mkdir()
        for name in os.listdir(data_dir):
            if name != "meta.json":
                os.symlink(os.path.join(data_dir, name), folder / name)
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def test_chord_aux_trains_on_the_bands_chroma_and_is_refused_without_it(demo_dataset, tmp_path):
    """--chord-aux 1: the targets are the band's chroma data.py heard in the backing's
    audio, each counted frame a distribution over the 12 pitch classes (0 on padding),
    most of whose weight falls on the demo's chord tones; --chord-targets truth gives the
    chord tones themselves, an equal share each. The run logs the head's loss and saves a
    model with the head; a dataset built before the chroma was heard, or one that does
    not know its chords, is refused before anything is written."""
    data_dir, meta = demo_dataset
    assert meta["format"] == 3 and meta["chroma_on_chords"] > 0.6, meta["chroma_on_chords"]
    windows = Windows(data_dir, "train", meta, 75)
    backing, solo, where = windows.sample(6, torch.Generator().manual_seed(0), where=True)
    heard = chord_targets(windows, where, backing)
    truth = chord_targets(windows, where, backing, meta)
    padding = backing[:, 0] == meta["codec"]["card"]
    assert heard.shape == truth.shape == (6, 75, 12) and (heard[padding] == 0).all()
    counted = truth.sum(-1) > 0                                      # inside a chord, not padding
    assert torch.allclose(heard[counted].sum(-1), torch.ones(int(counted.sum())), atol=2e-2)
    assert torch.allclose(truth[counted].sum(-1), torch.ones(int(counted.sum())))
    on_tones = (heard * (truth > 0)).sum(-1)[counted].mean()
    assert on_tones > 0.6, f"the heard chroma is not the band's chord: {on_tones:.2f} on its tones"

    T.train(quick_train_config(data_dir, tmp_path / "a", chord_aux=1.0, max_steps=6,
                               listen_test=False))
    rows = [r for r in map(json.loads, (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    # the head learns: from about ln 12 (an untrained head's guess) to below it, by the 6th step
    untrained = math.log(12)
    assert len(rows) == 6 and abs(rows[0]["chord_ce"] - untrained) < 0.3, rows[0]
    assert rows[-1]["chord_ce"] < untrained - 0.05 and rows[-1]["chord_ce"] < rows[0]["chord_ce"] - 0.05, \
        [r["chord_ce"] for r in rows]
    assert all("pitch_ce" not in r for r in rows)
    model, _ = load_model(tmp_path / "a" / "best", "cpu")
    assert model.cfg.chord_head and model.chord_head is not None
    # --pitch-targets chord: the pitch head on the decoder names the same chroma (12 classes)
    T.train(quick_train_config(data_dir, tmp_path / "c", chord_aux=0.0, pitch_aux=1.0,
                               pitch_targets="chord", max_steps=6, listen_test=False))
    rows = [r for r in map(json.loads, (tmp_path / "c" / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert abs(rows[0]["pitch_ce"] - untrained) < 0.3 and rows[-1]["pitch_ce"] < untrained - 0.05, \
        [r["pitch_ce"] for r in rows]
    assert all("chord_ce" not in r for r in rows)

    stripped = json.loads((data_dir / "meta.json").read_text())
    stripped["format"] = 2  # built before data.py heard the chroma
    older = dataset_with_meta(data_dir, tmp_path / "older", stripped)
    with pytest.raises(SystemExit, match="built before data.py heard the band's chroma.*--chord-aux 0"):
        T.train(quick_train_config(older, tmp_path / "b", chord_aux=1.0))
    with pytest.raises(SystemExit, match="built before data.py heard the band's chroma.*--pitch-aux 0"):
        T.train(quick_train_config(older, tmp_path / "b", chord_aux=0.0, pitch_aux=1.0,
                                   pitch_targets="chord"))
    for song in stripped["songs"]:
        song.pop("truth", None)
    stripped["format"] = 3
    dataset_with_meta(data_dir, older, stripped)
    with pytest.raises(SystemExit, match="--chord-targets truth: the dataset in .* does not know"):
        T.train(quick_train_config(older, tmp_path / "b", chord_aux=1.0, chord_targets="truth"))
    assert not (tmp_path / "b").exists()
    with pytest.raises(SystemExit, match="--chord-aux -1.0: must be at least 0"):
        T.check_train_settings(quick_train_config(data_dir, tmp_path / "b", chord_aux=-1.0))


def test_pitch_aux_trains_on_the_notes_and_is_refused_without_them(demo_dataset, tmp_path):
    """--pitch-aux 1: the targets are the pitch classes data.py tracked in the solo (12 for a
    rest, -100 on padding), nearly always the true lead's; --pitch-targets truth gives the
    true ones. The run logs the head's loss beside the codes' and saves a model with the
    head; a dataset without the notes asked for is refused before anything is written."""
    data_dir, meta = demo_dataset
    windows = Windows(data_dir, "train", meta, 75)
    backing, solo, where = windows.sample(6, torch.Generator().manual_seed(0), where=True)
    again = windows.sample(6, torch.Generator().manual_seed(0))
    assert torch.equal(again[1], solo), "where=True must draw the same windows"
    lead, _ = harmony_truth(meta, where, 75, meta["codec"]["frame_rate"])
    truth = pitch_targets(windows, where, solo, meta)
    played = solo[:, 0] != meta["codec"]["card"]
    assert torch.equal(truth[played], lead.masked_fill(lead < 0, 12)[played])
    assert (truth[~played] == -100).all() and (truth[played] >= 0).all() and (lead >= 0).any()
    tracked = pitch_targets(windows, where, solo)
    assert (tracked[~played] == -100).all()
    sounding = played & (lead >= 0)
    assert (tracked[sounding] == truth[sounding]).float().mean() > 0.9, "the tracked notes are not the lead's"

    T.train(quick_train_config(data_dir, tmp_path / "a", pitch_aux=1.0, max_steps=6, listen_test=False))
    rows = [r for r in map(json.loads, (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    # from about ln 13 (12 classes and a rest, an untrained head's guess) to below it
    untrained = math.log(13)
    assert len(rows) == 6 and abs(rows[0]["pitch_ce"] - untrained) < 0.3, rows[0]
    assert rows[-1]["pitch_ce"] < untrained - 0.05 and rows[-1]["pitch_ce"] < rows[0]["pitch_ce"] - 0.05, \
        [r["pitch_ce"] for r in rows]
    model, _ = load_model(tmp_path / "a" / "best", "cpu")
    assert model.cfg.pitch_head and model.pitch_head is not None

    stripped = json.loads((data_dir / "meta.json").read_text())
    for song in stripped["songs"]:
        song.pop("truth", None)
    unknown = dataset_with_meta(data_dir, tmp_path / "unknown", stripped)
    with pytest.raises(SystemExit, match="--pitch-targets truth: the dataset in .* does not know its lead's"):
        T.train(quick_train_config(unknown, tmp_path / "b", pitch_aux=1.0, pitch_targets="truth"))
    assert not (tmp_path / "b").exists()
    stripped["format"] = 1  # built before data.py tracked the notes (format 2 has them)
    dataset_with_meta(data_dir, unknown, stripped)
    with pytest.raises(SystemExit, match="built before data.py tracked the solo's notes"):
        T.train(quick_train_config(unknown, tmp_path / "b", pitch_aux=1.0))
    assert not (tmp_path / "b").exists()
    with pytest.raises(SystemExit, match="--pitch-aux -1.0: must be at least 0"):
        T.check_train_settings(quick_train_config(data_dir, tmp_path / "b", pitch_aux=-1.0))


def test_the_pitch_plan_trains_samples_and_is_refused_where_it_cannot_work(demo_dataset, tmp_path):
    """--pitch-plan with --pitch-aux (sax/plan.py): the run logs the pitch head's loss, saves a
    model with the plan's bias, trained away from zero, and its listening test samples with
    the plan; without the pitch head on notes it is refused in one line, and the ONNX export
    (whose runner draws no plan) refuses its checkpoint."""
    data_dir, _ = demo_dataset
    summary = T.train(quick_train_config(data_dir, tmp_path / "plan", pitch_aux=1.0, pitch_plan=True,
                                         page_sample_s=0.5))
    rows = [r for r in map(json.loads, (tmp_path / "plan" / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert len(rows) == 6 and all(math.isfinite(r["pitch_ce"]) for r in rows)
    model, _ = load_model(tmp_path / "plan" / "best", "cpu")
    assert model.cfg.pitch_plan and model.pitch_bias.abs().max() > 0
    assert summary["best"]["listening_windows"] > 0 and math.isfinite(summary["best"]["note_in_chord_own"])
    for bad in (dict(pitch_aux=0.0), dict(pitch_aux=1.0, pitch_targets="chord")):
        with pytest.raises(SystemExit, match="--pitch-plan draws the notes the pitch head names"):
            T.train(quick_train_config(data_dir, tmp_path / "bad", pitch_plan=True, **bad))
        assert not (tmp_path / "bad").exists()
    sys.path.insert(0, str(ROOT / "deploy"))
    import onnx_export as E
    causal = SoloTransformer(ModelConfig(card=8, d_model=16, n_heads=2, n_enc_layers=1, n_dec_layers=1,
                                         d_ff=32, causal_encoder=True, pitch_head=True, pitch_plan=True))
    with pytest.raises(SystemExit, match="draws a pitch plan"):
        E.export_onnx(causal, None, {}, {}, dataclasses.make_dataclass("C", [("checkpoint", str)])("c"),
                      tmp_path / "onnx")
