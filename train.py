"""
train.py -- train the solo transformer with mixed precision on one accelerator (phase 3),
and share it on the Hugging Face Hub (phase 4).

    python train.py                         # demo corpus (built if missing, ~4.5 min) + tiny preset
                                            # (~7 min on 2 CPU cores)
    python train.py --preset small --data data/mine          # a GPU and your own dataset
    python train.py --resume                # continue exactly where the last checkpoint left off
    python train.py --push-to-hub you/jazz-sax-tiny          # train, then upload runs/tiny/best
    python train.py --push-only runs/tiny/best --push-to-hub you/jazz-sax-tiny   # upload only

What you see: a progress bar (loss, learning rate, frames per second, MFU on CUDA),
an evaluation every --eval-every steps (cross-entropy and perplexity per codebook,
and the conditioning gain: how much worse the model predicts the solo when it hears
another song's backing), and in the run folder (runs/<preset> by default):
    metrics.jsonl   one line per step and per evaluation
    loss.png        train / validation loss and conditioning gain, refreshed at each evaluation
    index.html      the run's listening page: the curves, the evaluations and, at each new best
                    checkpoint, a short solo over one fixed validation clip (page/*.wav, page.json;
                    --page-sample-s 0 turns the samples off)
    latest/ best/   checkpoints: config.json, model.safetensors, state.pt
"""
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Optional

import guard  # first of the project's: a Ctrl-C while torch loads is one line

guard.quiet_ctrl_c(__name__)

import numpy as np
import torch
from tqdm import tqdm

import data
from data import DEVICES, overfitting, unigram_entropy, write_json
from settings import check_settings, command_line, flag_of, non_default, opt, parse_settings
from listening import (ListeningSet, RunPage, chord_targets, counting_listener, fit_probes,
                       knows_the_notes, listening_masks, listening_test, listening_windows,
                       pitch_targets)
from model import (PRESETS, SoloTransformer, build_delay_pattern, load_model, load_weights,
                   position_cross_entropy,
                   preset_config, read_json, resolve_checkpoint, teacher_forcing)

DEFAULT_DATA = "data/demo"
# Bigger models want smaller steps: a wider layer sums more terms, so the same step
# size moves its output further. These are the usual orders of magnitude for
# transformers of these sizes trained with AdamW, not values tuned on this project.
DEFAULT_LR = {"tiny": 2e-3, "small": 6e-4, "base": 3e-4}


@dataclass
class TrainConfig:
    data: str = opt(DEFAULT_DATA,
                    "dataset folder; the default one is built from the demo corpus if missing")
    out: str = opt("", "run folder (default runs/<preset>)")
    preset: str = opt("tiny", "model size (python model.py prints them)", list(PRESETS))
    layers: int = opt(0, "layers in the encoder and in the decoder each (0: the preset's; "
                         "the depth rows of docs/phase3's table)", at_least=0, at_most=64)
    d_model: int = opt(0, "width of the model, with d_ff = 4 x d_model (0: the preset's; "
                          "a multiple of 2 x the preset's heads)", at_least=0, at_most=8192)
    causal_encoder: bool = opt(False, "phase 5: train a causal (streamable) model")
    attn_window: Optional[int] = opt(None, "phase 5: attention window in frames "
                                           "(bounds the streaming caches)", at_least=1)
    lookahead_ms: float = opt(0.0, "phase 5: write the solo this far ahead of the backing "
                                   "heard, in ms (needs --causal-encoder; docs/phase5)",
                              at_least=0, at_most=10_000)
    attn_impl: str = opt("sdpa", "sdpa: the fused kernel; manual: the hand-written attention",
                         ["sdpa", "manual"])
    aligned_backing: bool = opt(True, "add backing frames s-K+1..s (encoder states) "
                                      "to decoder step s, beside cross-attention")
    dropout: Optional[float] = opt(None, "dropout in every block (none: the "
                                         "preset's, tiny 0.2, small and base 0.1)",
                                   at_least=0, below=1)
    window_s: float = opt(4.0, "length of the training windows, in seconds", above=0)
    batch_size: int = opt(16, "windows per forward pass (lower it when memory runs out)",
                          at_least=1, at_most=65_536)
    target_batch: int = opt(16, "windows per optimizer step; gradients "
                                "accumulate over target / batch passes",
                            at_least=1, at_most=1_048_576)
    max_steps: int = opt(500, "optimizer steps", at_least=1)
    lr: float = opt(0.0, "peak learning rate (0: by preset, tiny 2e-3, small 6e-4, base 3e-4)",
                    at_least=0)
    min_lr_ratio: float = opt(0.1, "the cosine decay ends at lr * this", at_least=0, at_most=1)
    warmup_steps: int = opt(50, "linear warm-up steps", at_least=0)
    weight_decay: float = opt(0.1, "AdamW weight decay, on weight matrices only",
                              at_least=0, at_most=10)
    grad_clip: float = opt(1.0, "clip the gradient norm to this (0: no clipping)", at_least=0)
    cond_dropout: float = opt(0.1,
                              "probability of training a window with the null backing (guidance)",
                              at_least=0, below=1)
    solo_dropout: float = opt(0.3, "probability of hiding each of the solo's past tokens from "
                                   "the decoder in training, so that it leans on the band "
                                   "(0.3: the seeds table of docs/phase3)", at_least=0, below=1)
    pitch_aux: float = opt(0.0, "weight of the pitch aid, an auxiliary loss: a head on the "
                                "decoder names the pitch class the solo plays in each frame "
                                "(0: off; docs/phase3)", at_least=0, at_most=1000)
    pitch_targets: str = opt("tracked", "--pitch-aux's notes: tracked in the solo's audio "
                                        "by data.py, or the demo corpus's truth",
                             ["tracked", "truth"])
    pitch_first: bool = opt(False, "with --pitch-aux: the note first, then its codes; the "
                                   "code heads read the pitch class, the true one in "
                                   "training, one drawn from the pitch head when sampling")
    chord_aux: float = opt(0.3, "weight of the chord aid, an auxiliary loss: a head on the "
                                "encoder names the band's pitch classes in each frame "
                                "(0: off; 0.3: the seeds table of docs/phase3)",
                           at_least=0, at_most=1000)
    chord_targets: str = opt("heard", "--chord-aux's targets: the chroma data.py heard in "
                                      "the backing's audio, or the demo corpus's chords",
                             ["heard", "truth"])
    page_sample_s: float = opt(3.0, "seconds of a fixed validation clip generated at each "
                                    "new best checkpoint for the run's index.html (0: none)",
                               at_least=0, at_most=60)
    listen_test: bool = opt(True, "at the end, score solos generated by "
                                  "best/ against the demo band's kicks")
    dtype: str = opt("auto", "auto: bf16 on Ampere+, fp16 + GradScaler before, fp32 on CPU",
                     ["auto", "fp32", "bf16", "fp16"])
    compile: bool = opt(False, "torch.compile the model (faster on GPUs, slow start)")
    eval_every: int = opt(100, "evaluate (and save best/) every this many steps", at_least=1)
    eval_windows: int = opt(64, "validation windows per evaluation", at_least=1, at_most=100_000)
    save_every: int = opt(50, "save latest/ every this many steps", at_least=1)
    resume: bool = opt(False, "continue from <out>/latest")
    overwrite: bool = opt(False, "start a new run in an --out that already "
                                 "holds one (its checkpoints are replaced)")
    seed: int = opt(0, "seed of everything: weights, data order, dropout", at_least=0)
    device: str = opt("auto", "auto: the GPU when there is one", DEVICES)
    threads: int = opt(0, "CPU threads for torch (0: 1 or all, whichever "
                          "a timing at start finds faster; docs/troubleshooting.md)",
                       at_least=0, at_most=1024)
    push_to_hub: str = opt("", "after training, upload best/ to this Hub repo (user/name)")
    push_only: str = opt("", "upload this checkpoint folder and exit, without training")
    hub_private: bool = opt(False, "create the Hub repo as private")


# ----------------------------------------------------------------------------
# Precision: which dtype each device gets
# ----------------------------------------------------------------------------
# | device                       | auto gives                                      |
# | CUDA, compute capability 8+  | bf16 autocast (A100, H100, L4, RTX 30xx/40xx)   |
# | CUDA, older (T4, V100)       | fp16 autocast + GradScaler                      |
# | CPU                          | fp32 (bf16 works, but is slower on most CPUs)   |
# bf16 has fp32's exponent range, so gradients neither overflow nor underflow and no
# scaling is needed. fp16 has 5 exponent bits: small gradients underflow to zero
# unless the loss is scaled up first (GradScaler), and the scale is taken back off
# (unscale_) before clipping, so the clip threshold means what it says.
# Why not trust torch.cuda.is_bf16_supported(): it says True on a T4, where bf16 is emulated
# and slow.

def choose_precision(requested, device_type, capability=None):
    """-> (autocast dtype or None, use a GradScaler). capability: (major, minor) on CUDA.

    A pure function of its arguments, so the table above is unit-tested on a CPU.
    """
    if requested == "auto":
        requested = ("bf16" if capability[0] >= 8 else "fp16") if device_type == "cuda" else "fp32"
    if requested == "fp16" and device_type != "cuda":
        raise SystemExit("--dtype fp16 needs a CUDA GPU; on the CPU use --dtype bf16 or fp32")
    return {"fp32": None, "bf16": torch.bfloat16,
            "fp16": torch.float16}[requested], requested == "fp16"


def scaled_step(model, optimizer, scaler, grad_clip):
    """Unscale, clip, step. Returns (grad norm, whether the GradScaler skipped the step).

    With the scaler disabled (fp32, bf16) every call here is a plain pass-through, so
    the training loop has one code path for all precisions.
    """
    scaler.unscale_(optimizer)
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(),
                                          grad_clip if grad_clip > 0 else float("inf"))
    scale_before = scaler.get_scale()
    scaler.step(optimizer)  # skipped inside when a gradient is inf or nan ...
    scaler.update()         # ... and then the scale is lowered: that is how we see it
    return float(norm), scaler.is_enabled() and scaler.get_scale() < scale_before


@torch.no_grad()
def evaluate(model, backing, solo, other_backing, masks, batch, device, autocast):
    """Validation cross-entropy per codebook, and the conditioning gain in nats: the
    cross-entropy with another song's backing minus that with the clip's own, over all
    frames, per codebook, and on each of `masks` ({name: frames [N, T] bool})."""
    model.eval()
    card, K = model.cfg.card, model.cfg.n_codebooks
    # The frame masks in the delay pattern's layout: codebook k of frame t sits at step t + k.
    delayed = {name: build_delay_pattern(m[:, None, :].expand(-1, K, -1).long(), 0)[0].bool()
               for name, m in masks.items()}                                   # [N, K, S] each

    def mean_ce(backings):
        """{"all" and each mask: mean cross-entropy per codebook [K]}."""
        # Averaged over real positions, not over batches: padded windows hold fewer
        # real codes, and a plain mean of batch means would give them too much weight.
        total = {name: torch.zeros(K) for name in ["all", *masks]}
        count = {name: torch.zeros(K) for name in ["all", *masks]}
        for i in range(0, len(solo), batch):
            b, s = backings[i:i + batch].to(device), solo[i:i + batch].to(device)
            target, dec_in = teacher_forcing(s, card)                          # [B, K, S] each
            with autocast():
                logits = model(b, dec_in)
            ce, real = position_cross_entropy(logits, target, card)            # [B, K, S] each
            ce, real = ce.cpu(), real.cpu()
            for name in total:
                keep = real if name == "all" else real & delayed[name][i:i + batch]
                total[name] += (ce * keep).sum(dim=(0, 2))
                count[name] += keep.sum(dim=(0, 2))
        return {name: total[name] / count[name].clamp(min=1) for name in total}

    own, other = mean_ce(backing), mean_ce(other_backing)
    gain = {name: other[name] - own[name] for name in own}                     # [K] each
    result = {"val_ce": float(own["all"].mean()), "val_ppl": float(own["all"].mean().exp()),
              **{f"ce_q{k + 1}": float(own["all"][k]) for k in range(K)},
              "cond_gain": float(gain["all"].mean()),
              **{f"cond_gain_q{k + 1}": float(gain["all"][k]) for k in range(K)},
              **{f"cond_gain_{name}": float(gain[name].mean()) for name in masks}}
    model.train()
    return result


# ----------------------------------------------------------------------------
# Checkpoints: a folder written whole, then renamed into place
# ----------------------------------------------------------------------------

def save_checkpoint(folder, model, optimizer, scaler, step, gen, cfg, meta, extra, history=None):
    """config.json + model.safetensors + state.pt, atomically (a crash leaves the old folder).

    history: tensors the run needs to resume exactly (recent losses, the overfitting
    check's memory), stored in state.pt. Non-finite weights are refused: a checkpoint
    folder only ever holds a state worth going back to.
    """
    bad = [name for name, p in model.state_dict().items()
           if p.is_floating_point() and not torch.isfinite(p).all()]
    if bad:
        raise SystemExit(f"not saving {folder}: non-finite weights ({', '.join(bad[:3])}...); "
                         "the checkpoint already there is kept")
    # Three files must change together, and no file system renames three files at once.
    # So the whole folder is written under a temporary name and swapped in with two
    # renames; a crash between them leaves `.latest.old`, which resolve_checkpoint finds.
    folder = Path(folder)
    tmp, old = folder.with_name(f".{folder.name}.tmp"), folder.with_name(f".{folder.name}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write_folder(tmp, model, optimizer, scaler, step, gen, cfg, meta, extra, history)
    except BaseException:  # a full disk, Ctrl-C twice: no half-written folder stays behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def write_folder(tmp, model, optimizer, scaler, step, gen, cfg, meta, extra, history):
    """A checkpoint's three files into the folder tmp (save_checkpoint renames it)."""
    from safetensors.torch import save_file
    config = {"model": asdict(model.cfg), "train": asdict(cfg), "step": step,
              "data": {"dir": str(Path(cfg.data).resolve()), "codec": meta["codec"],
                       "demo": meta.get("demo", False),
                       "songs": {k: len(v["songs"]) for k, v in meta["splits"].items()}}, **extra}
    write_json(tmp / "config.json", config)
    # The weights of the plain module: a compiled model's keys carry an "_orig_mod." prefix.
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
              str(tmp / "model.safetensors"))
    # Everything a resumed run needs to continue bit for bit: the optimizer's moments,
    # the GradScaler's scale, and every random generator (dropout, data order).
    # Only tensors, numbers and strings: loadable with torch.load(weights_only=True).
    state = {"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "step": step,
             "rng_torch": torch.get_rng_state(), "rng_data": gen.get_state(),
             "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
             **(history or {})}
    torch.save(state, tmp / "state.pt")


# ----------------------------------------------------------------------------
# Phase 4: the Hugging Face Hub
# ----------------------------------------------------------------------------

def model_card(config, repo_id):
    """README.md for the Hub: YAML metadata (license, tags, data, metrics) and how to use it.

    The YAML block between the --- lines is what the Hub indexes: the license and tags
    make the model findable, and model-index puts the validation metrics on its page.
    Everything in the card comes from the checkpoint's own config.json, so the card
    cannot claim what the checkpoint does not hold.
    """
    m, codec = config["model"], config["data"]["codec"]
    metrics = {k: v for k, v in config.get("metrics", {}).items() if isinstance(v, (int, float))}
    dataset = ("synthetic demo corpus (data.py)" if config["data"].get("demo")
               else "user recordings (data.py)")
    name = repo_id.split("/")[-1]
    lines = [
        "---", "license: mit", "library_name: pytorch", "pipeline_tag: audio-to-audio",
        "tags: [audio, music, jazz, saxophone, encodec, music-generation]",
        "model-index:", f"  - name: {name}", "    results:",
        "      - task: {type: audio-to-audio}",
        f"        dataset: {{name: {dataset}, type: custom}}",
        "        metrics:",
        *[f"          - {{type: {k}, name: {k}, value: {v:.4f}}}" for k, v in metrics.items()],
        "---", "",
        f"# {name}", "",
        "An encoder-decoder transformer that hears a jazz backing track (as EnCodec tokens) "
        "and writes a saxophone solo, trained with the jazz-sax-solo project's train.py.", "",
        f"- architecture: {m['n_enc_layers']}+{m['n_dec_layers']} layers, d_model {m['d_model']}, "
        f"{m['n_heads']} heads, causal encoder: {m['causal_encoder']}, "
        f"lookahead: {m.get('lookahead', 0)} frames",
        f"- codec: {codec['name']} at {codec['bandwidth_kbps']} kbps: {codec['n_codebooks']} "
        f"codebooks of {codec['card']} codes, {codec['frame_rate']} frames per second"
        + (" (UNTRAINED codec: its decoder ignores the codes, so the audio carries "
           "nothing of the model; for testing the plumbing only)" if codec["untrained"] else ""),
        f"- training data: {dataset}; trained for {config['step']} steps", "",
        "## Metrics (validation split)", "", "| metric | value |", "|---|---|",
        *[f"| {k} | {v:.4f} |" for k, v in metrics.items()], "",
        "## Use", "", "```bash",
        "pip install -r requirements.txt   # from the jazz-sax-solo project",
        f"python generate.py --checkpoint {repo_id} --backing my_backing.wav", "```", "",
    ]
    return "\n".join(lines)


def push_to_hub(folder, repo_id, private=False, api=None):
    """Upload a checkpoint folder with its model card, as one commit. The token comes from
    HF_TOKEN or `hf auth login`, read by the hub client itself: this code never sees or prints it.

    Nothing is written before the upload has succeeded: the model card goes up from
    memory, and is saved into the folder (README.md) only afterwards.
    """
    from huggingface_hub import CommitOperationAdd, HfApi
    folder = resolve_checkpoint(folder)
    config = read_json(folder / "config.json",
                       f"a checkpoint folder: python train.py --push-only {folder}")
    card = model_card(config, repo_id)
    # state.pt (optimizer moments, RNG) is for resuming, not for users: not uploaded.
    files = {"config.json": folder / "config.json",
             "model.safetensors": folder / "model.safetensors",
             "README.md": card.encode()}
    codec_file = Path(config["data"]["dir"]) / "codec.safetensors"
    # its codebooks are needed to decode
    if config["data"]["codec"]["untrained"] and codec_file.exists():
        files["codec.safetensors"] = codec_file
    api = api or HfApi()  # tests pass a stand-in here, to stop at the client's boundary
    try:
        # exist_ok: re-uploads work
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        api.create_commit(repo_id=repo_id, repo_type="model",
                          operations=[CommitOperationAdd(path_in_repo=name, path_or_fileobj=(
                                          content if isinstance(content, bytes) else str(content)))
                                      for name, content in files.items()],
                          commit_message=f"Upload checkpoint at step {config['step']}")
    except Exception as err:  # offline, no token, no rights: the client raises many kinds
        why = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SystemExit(
            f"Could not upload {folder} to {repo_id}: {why}\nNothing was uploaded and "
            f"nothing was changed in {folder}. Ways out: (1) check the network; (2) "
            "log in with `hf auth login`, or set HF_TOKEN to a token with write "
            "access (huggingface.co/settings/tokens); (3) upload later without "
            f"training: python train.py --push-only {folder} --push-to-hub {repo_id}") from None
    data.atomic_write(folder / "README.md", lambda f: f.write(card), mode="w")
    print(f"uploaded {folder} to https://huggingface.co/{repo_id}")


# ----------------------------------------------------------------------------
# The loss curve
# ----------------------------------------------------------------------------

def plot_curves(metrics_file, png, baseline=None, note=""):
    """loss.png from metrics.jsonl: train and validation loss above (with the unigram
    baseline and the best checkpoint marked), conditioning gains below.

    Drawn from the file, not from memory, so a resumed run's plot shows the whole run.
    note: a line printed on the figure (e.g. that the codec was untrained).
    """
    import matplotlib
    matplotlib.use("Agg")  # no screen needed
    import matplotlib.pyplot as plt
    rows = data.read_metrics(metrics_file)
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    evals = [r for r in rows if "val_ce" in r]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6.5), sharex=True)
    if train:
        steps, losses = zip(*train)
        # Per-step losses jump with each random batch; a 10-step mean shows the trend.
        smooth = np.convolve(losses, np.ones(10) / 10,
                             mode="valid") if len(losses) >= 10 else losses
        ax1.plot(steps[len(steps) - len(smooth):], smooth, label="train (10-step mean)")
    if baseline is not None:
        ax1.axhline(baseline, color="gray", ls="--", lw=1, label=f"unigram baseline {baseline:.2f}")
    if evals:
        steps = [r["step"] for r in evals]
        ax1.plot(steps, [r["val_ce"] for r in evals], "o-", label="validation")
        best = min(evals, key=lambda r: r["val_ce"])
        ax1.plot(best["step"], best["val_ce"], "*", ms=16, color="tab:red",
                 label=f"best checkpoint (step {best['step']}, {best['val_ce']:.3f})")
        for key, label in (("cond_gain", "all frames"), ("cond_gain_start",
                                                         "first second of a window"),
                           ("cond_gain_kicks", "the band's kicks (demo truth)")):
            if key in evals[0]:
                ax2.plot(steps, [r.get(key, float("nan")) for r in evals], "o-", label=label)
        ax2.legend(fontsize=8)
    ax1.set_ylabel("cross-entropy (nats)")
    ax1.legend(fontsize=8)
    ax2.axhline(0, color="gray", lw=0.5)
    ax2.set_ylabel("conditioning gain (nats)\n(another song's backing - own)")
    ax2.set_xlabel("step")
    if note:
        fig.suptitle(note, fontsize=9, color="tab:red")
    fig.tight_layout()
    data.atomic_write(png, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)


# ----------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------

def peak_flops(device):
    """Dense bf16/fp16 tensor-core peak of the GPU, for MFU (None when unknown).

    MFU (model FLOPs utilisation) is the share of the GPU's peak that the model's own
    arithmetic uses (train_flops_per_window), divided by the step time and the peak.
    30-50% is good for a model this size; a few percent means the GPU waits on
    something else. Peaks are the vendors' dense (no sparsity) tensor-core figures.
    """
    name = torch.cuda.get_device_name(device)
    for key, peak in [("H200", 989e12), ("H100", 989e12), ("A100", 312e12), ("L40", 181e12),
                      ("L4", 121e12), ("A10", 125e12), ("4090", 165e12), ("3090", 71e12),
                      ("V100", 125e12), ("T4", 65e12)]:
        if key in name:
            return peak
    return None


def train_flops_per_window(model, T):
    """Training FLOPs (forward + backward) of one window of T frames, counted as in
    PaLM's appendix B (Chowdhery et al. 2022; docs/references.bib).

    6 per parameter per position it is applied at (2 forward, 4 backward), counting
    only the parameters that do matmuls: an embedding table is a lookup, not a matmul,
    and in the tiny preset the two tables hold 41% of the parameters. Encoder weights
    act on T frames, decoder weights (with the heads and the aligned path) on
    S = T + K - 1 steps. Plus attention's own two matmuls, 12 x d_model FLOPs per
    query-key pair (forward and backward): T x T in the encoder, S x S and S x T in
    the decoder. Masked pairs are counted too, as PaLM does.
    """
    cfg = model.cfg
    S = T + cfg.n_codebooks - 1
    counts = {"enc": 0, "dec": 0}
    for name, p in model.named_parameters():
        if "emb" not in name:
            counts["enc" if name.startswith(("encoder.", "enc_")) else "dec"] += p.numel()
    attention_pairs = cfg.n_enc_layers * T * T + cfg.n_dec_layers * (S * S + S * T)
    return 6 * (counts["enc"] * T + counts["dec"] * S) + 12 * cfg.d_model * attention_pairs


def heard_wanted(cfg):
    """What the training aids read that data.py heard beside the tokens (the dataset must
    be of a format that stores it, data.HEARD_SINCE): "notes" for --pitch-aux on the
    tracked notes, "chroma" for --chord-aux on the heard chroma (the default targets)."""
    return ([name for name, on in (("notes", cfg.pitch_aux > 0 and cfg.pitch_targets == "tracked"),
                                   ("chroma", cfg.chord_aux > 0 and cfg.chord_targets == "heard"))
             if on])


def missing_heard(cfg, meta):
    """Of heard_wanted(cfg), what the dataset of `meta` was built too early to store."""
    return [name for name in heard_wanted(cfg)
            if meta.get("format", 1) < data.HEARD_SINCE[name]]


def ensure_dataset(cfg):
    """The dataset's meta.json; the default demo dataset is built on first use.

    Only the default path builds anything: a mistyped --data stops with a message
    rather than silently training on synthetic music.
    """
    meta_file = Path(cfg.data) / "meta.json"
    stale = not meta_file.exists()
    if not stale:  # another version of the demo corpus, or one without what the aids read
        built = data.load_dataset(cfg.data)
        stale = built.get("demo") != data.DEMO_VERSION or bool(missing_heard(cfg, built))
    if cfg.data == DEFAULT_DATA and stale:
        print(f"no dataset of the current demo corpus (version {data.DEMO_VERSION}) "
              f"in {cfg.data}: building it first (python data.py does the same)")
        # overwrite: an older version of the demo corpus is replaced, as said above
        data.build_dataset(data.DataConfig(out=cfg.data, device=cfg.device, overwrite=True))
    return data.load_dataset(cfg.data)


def check_train_settings(cfg):
    """One clear line for each setting that cannot work, before anything is written."""
    check_settings(cfg)  # preset, dtype, device, attn_impl: their allowed values
    if cfg.target_batch % cfg.batch_size:
        low = cfg.target_batch // cfg.batch_size * cfg.batch_size
        raise SystemExit(f"--target-batch {cfg.target_batch} must be a multiple of --batch-size "
                         f"{cfg.batch_size} (gradients accumulate over whole batches): try "
                         f"--target-batch {low or cfg.batch_size} or {low + cfg.batch_size}")
    heads = PRESETS[cfg.preset]["n_heads"]
    if cfg.d_model % (2 * heads):
        raise SystemExit(f"--d-model {cfg.d_model}: 0 (the preset's) or a multiple of "
                         f"{2 * heads} (the {cfg.preset} preset's {heads} heads, each an even "
                         "width for the rotary embedding)")
    if cfg.attn_window is not None and not cfg.causal_encoder:
        raise SystemExit(f"--attn-window {cfg.attn_window}: only with --causal-encoder (it bounds "
                         "the streaming caches of phase 5)")
    if cfg.lookahead_ms and not cfg.causal_encoder:
        raise SystemExit(f"--lookahead-ms {cfg.lookahead_ms:g}: only with --causal-encoder "
                         "(an offline model hears the whole backing anyway)")
    if cfg.pitch_first and not cfg.pitch_aux:
        raise SystemExit("--pitch-first draws each note from the pitch head, which only "
                         "--pitch-aux trains: give it a weight, e.g. --pitch-aux 1")
    if cfg.pitch_first and cfg.causal_encoder:
        raise SystemExit("--pitch-first with --causal-encoder: streaming and the board's "
                         "runner do not draw notes yet; train the streaming model without "
                         "--pitch-first")
    if cfg.resume and cfg.overwrite:
        raise SystemExit("--resume continues the run in --out and "
                         "--overwrite replaces it: choose one")


def check_against_data(cfg, meta):
    """The settings that depend on the dataset: its codec numbers (K, card, frame rate) and
    the length of its sections. Checked before a window is allocated: a window longer than
    every section is padding past the longest, and its attention grows as its square (a
    1000 s window asks for tens of GB)."""
    numbers = meta["codec"]
    longest = max((s["length"] for s in meta["splits"]["train"]["segments"]), default=0)
    if round(cfg.window_s * numbers["frame_rate"]) > longest:
        raise SystemExit(f"--window-s {cfg.window_s:g}: longer than the longest training "
                         f"section of {cfg.data} ({longest / numbers['frame_rate']:.1f} s): "
                         f"choose at most --window-s {longest / numbers['frame_rate']:.1f}, "
                         "or add longer recordings")
    if cfg.attn_window is not None and cfg.attn_window < numbers["n_codebooks"]:
        raise SystemExit(f"--attn-window {cfg.attn_window}: at least the "
                         f"{numbers['n_codebooks']} codebooks, or the last steps of "
                         "a window read no backing frame (model.check_backing_reach)")


def refuse_to_overwrite(out, cfg):
    """A new run never replaces an old one's checkpoints and metrics without --overwrite."""
    held = [name for name in ("latest", "best",
                              "metrics.jsonl") if resolve_checkpoint(out / name).exists()]
    if cfg.overwrite or not held:
        return
    if "latest" not in held:  # stopped before its first save of latest/: nothing to resume
        raise SystemExit(f"{out} holds a run stopped before its first save ({', '.join(held)}, "
                         "no latest/): --overwrite starts it again, or choose another --out")
    if not cfg.resume:
        raise SystemExit(f"{out} already holds a run ({', '.join(held)}): --resume continues "
                         "it, --overwrite starts over in its place, or choose another --out")


# A resumed run is the run it resumes: its settings come from latest/config.json. Its
# budgets may change on --resume, when given, and are said (how long it runs, what it
# reports; and the learning rate, the one optimizer setting allowed: a lower --lr from
# the last good checkpoint is the way back from a diverged run, docs/troubleshooting.md);
# where it runs comes from the command. A flag given for any other setting (the model,
# the data, the rest of the optimizer, the seed) is refused, with both values.
BUDGETS = ("max_steps", "eval_every", "save_every", "eval_windows", "page_sample_s",
           "listen_test", "lr")
WHERE = ("device", "threads", "compile", "push_to_hub", "push_only", "hub_private", "out",
         "resume", "overwrite")


def resumed_settings(cfg, folder):
    """cfg with the settings of the run in folder (latest/config.json): the budgets cfg
    gives (said when they change) and where it runs are this command's, the rest the run's.
    A flag that differs from its default and from the run's value is refused with its name
    and both values. A flag at its default reads as not given."""
    stored = read_json(resolve_checkpoint(folder) / "config.json",
                       "a checkpoint written by train.py; start again with --overwrite")
    stored = stored.get("train")
    if not isinstance(stored, dict):
        raise SystemExit(f"{folder}/config.json holds no \"train\" settings: not a checkpoint "
                         "of train.py; start again with --overwrite")
    given, own = non_default(cfg), {f.name: f for f in fields(cfg)}
    clash = [(own[name], stored[name], value) for name, value in given.items()
             if name in stored and name not in BUDGETS + WHERE and stored[name] != value]
    if clash:
        said = "; ".join(f"{flag_of(f)} {new} (the run's: {old})" for f, old, new in clash)
        budgets = ", ".join(flag_of(own[name]) for name in BUDGETS)
        raise SystemExit(f"--resume: {said}. A resumed run keeps its own settings "
                         f"({folder}/config.json); only {budgets} and where it runs may "
                         "change. Drop the flag, or start a new run with another --out")
    for name in BUDGETS:
        if name in given and name in stored and stored[name] != given[name]:
            print(f"--resume: {flag_of(own[name])} {given[name]} (the run had {stored[name]})")
    kept = {name: value for name, value in stored.items() if name in own
            and name not in WHERE and not (name in BUDGETS and name in given)}
    resumed = replace(cfg, **kept)
    check_train_settings(resumed)  # an edited config.json is one line too
    return resumed


@dataclass
class Progress:
    """What a run has done so far: everything a checkpoint must hold besides weights,
    optimizer and random states, for a resumed run to carry on exactly."""
    step: int = 0                 # optimizer steps taken (metrics.jsonl counts from 1)
    best_val: float = float("inf")
    skipped: int = 0              # steps the fp16 GradScaler skipped
    # losses of the last eval_every steps: train_loss at an evaluation
    recent: list = field(default_factory=list)
    # (train_loss, val_ce) at each evaluation: the overfitting check
    history: list = field(default_factory=list)

    def tensors(self):
        """The two lists as tensors, for state.pt (loadable with weights_only=True)."""
        return {"recent_losses": torch.tensor(self.recent, dtype=torch.float64),
                "val_history": torch.tensor(self.history, dtype=torch.float64).reshape(-1, 2)}


def lr_at(step, cfg, peak_lr):
    """The learning rate of optimizer step `step` (0-based): linear warm-up, then cosine
    decay to min_lr_ratio * peak [SGDR, Loshchilov & Hutter].

    Warm-up: at step 0 Adam's moment estimates rest on a single batch, and a full-size
    step taken on them can throw the weights far off; growing the rate over the first
    steps lets the estimates settle first. Cosine decay: large steps early to move
    fast, small steps late to settle into a minimum.
    """
    if step < cfg.warmup_steps:
        return peak_lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    return peak_lr * (cfg.min_lr_ratio
                      + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(model, cfg, peak_lr, device):
    """AdamW with weight decay on the weight matrices only.

    Weight decay pulls weights toward zero. On the weight matrices that is a useful
    brake; on LayerNorm gains and biases it only fights the normalisation, and on the
    embeddings it would shrink codes the model rarely sees, so those are left alone.
    """
    decayed = lambda n, p: p.dim() >= 2 and "emb" not in n  # noqa: E731
    groups = [{"params": [p for n, p in model.named_parameters() if decayed(n, p)],
               "weight_decay": cfg.weight_decay},
              {"params": [p for n, p in model.named_parameters() if not decayed(n, p)],
               "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=peak_lr, betas=(0.9, 0.95), fused=device.type == "cuda")


@dataclass
class EvalSet:
    """The fixed evaluation data, built once: windows of the validation songs, and for
    each the backing of another song (the conditioning gain compares the two)."""
    backing: torch.Tensor        # [N, K, T]
    solo: torch.Tensor           # [N, K, T]
    other: torch.Tensor          # [N, K, T]: another song's backing for each window
    masks: dict                  # {name: [N, T] bool}: frames of the listening metrics
    listening: Optional[ListeningSet]  # the same windows with the demo band's truth, or None


def evaluation_set(cfg, meta, T):
    """EvalSet of the validation split (the training split when there is none, with a warning)."""
    if not meta["splits"]["val"]["segments"]:
        print("WARNING: the dataset has no validation songs; "
              "evaluating on training songs (add recordings)")
    backing, solo, where, other, other_solo = listening_windows(cfg.data, meta, T,
                                                                cfg.eval_windows)
    return EvalSet(backing, solo, other, listening_masks(meta, where, T,
                                                         meta["codec"]["frame_rate"]),
                   ListeningSet.of(meta, where, backing, solo, other, other_solo))


def resume_run(folder, model, optimizer, scaler, gen, cfg, device):
    """Load latest/ into the model, optimizer, scaler and random generators -> Progress.

    Refuses a finished run (step >= max_steps) before changing anything.
    """
    ckpt = resolve_checkpoint(folder)
    if not ckpt.exists():
        raise SystemExit(f"--resume: no checkpoint in {folder}; start without --resume")
    state = load_state(ckpt / "state.pt")
    if state["step"] >= cfg.max_steps:
        raise SystemExit(f"{ckpt} is at step {state['step']}: this run is finished "
                         f"(--max-steps {cfg.max_steps}), and nothing was changed. To train "
                         "on, resume with a larger --max-steps (the cosine schedule then "
                         "stretches to the new end), or start a new run with another --out.")
    config = read_json(ckpt / "config.json",
                       "a checkpoint written by train.py; start without --resume")
    load_weights(model, ckpt, device)
    optimizer.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng_torch"])
    gen.set_state(state["rng_data"])
    if state["rng_cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng_cuda"])
    print(f"resumed from {ckpt} at step {state['step']}")
    return Progress(step=state["step"], best_val=config.get("best_val", float("inf")),
                    skipped=config.get("skipped_steps", 0),
                    recent=state.get("recent_losses", torch.zeros(0)).tolist(),
                    history=[tuple(row) for row in state.get("val_history",
                                                             torch.zeros(0, 2)).tolist()])


def load_state(path):
    """state.pt (the optimizer and random states), or one line when it is missing or damaged."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise SystemExit(f"{path} not found: the checkpoint folder is incomplete; resume from a "
                         "whole copy, or start again with --overwrite") from None
    except Exception as err:  # cut short, empty, or not torch.save's: torch names no file
        why = (str(err).strip().splitlines() or [type(err).__name__])[0][:120]
        raise SystemExit(f"{path} is damaged ({why}): resume from a whole copy of the run, "
                         "or start again with --overwrite") from None
    if not isinstance(state, dict) or not {"optimizer", "step", "rng_torch"} <= set(state):
        raise SystemExit(f"{path} is not a state.pt written by train.py: resume from a whole "
                         "copy of the run, or start again with --overwrite")
    return state


def log_metrics(metrics_file, row):
    """Append one row to metrics.jsonl. JSON lines: one object per line, appended as
    training goes; any tool (pandas, jq, a spreadsheet) reads it, and a crash loses at
    most the line being written."""
    with open(metrics_file, "a") as f:
        f.write(json.dumps(row) + "\n")


# ----------------------------------------------------------------------------
# The run: set up once, then step, evaluate and save until max_steps
# ----------------------------------------------------------------------------
# train() at the bottom is the whole loop, on one screen. What it needs lives in one
# Run object that setup_run builds: passing one object keeps each helper's argument list
# short, and makes plain what a step may change (the weights, the optimizer, the
# generator, the progress) and what it only reads (the settings, the data).

@dataclass
class Run:
    """Everything one training run holds, built once by setup_run and carried by each step."""
    cfg: TrainConfig
    out: Path
    device: torch.device
    meta: dict                   # the dataset's meta.json
    T: int                       # frames per training window
    model: SoloTransformer       # the weights checkpoints save
    train_model: torch.nn.Module  # the same weights, compiled or not: what the steps run
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    amp_dtype: Optional[torch.dtype]  # autocast's dtype, None for fp32
    peak_lr: float
    gen: torch.Generator         # data order and condition dropout (saved in checkpoints)
    train_w: data.Windows
    evals: EvalSet
    baseline: list               # unigram cross-entropy per codebook: what "learned nothing" scores
    progress: Progress
    page: RunPage
    last: dict = field(default_factory=dict)  # the latest evaluation's metrics
    peak: Optional[float] = None  # the GPU's peak FLOP/s, for MFU (None on the CPU or unknown)

    @property
    def metrics_file(self):
        return self.out / "metrics.jsonl"

    @property
    def accum(self):
        return self.cfg.target_batch // self.cfg.batch_size

    def autocast(self):
        # Matmuls run in bf16/fp16 inside this context; the weights, the optimizer and
        # the loss's softmax (codebook_cross_entropy casts to float) stay in fp32.
        return torch.autocast(self.device.type,
                              dtype=self.amp_dtype) if self.amp_dtype else nullcontext()

    def checkpoint(self, name):
        """Save best/ or latest/: weights, optimizer, scaler, generators and progress."""
        p = self.progress
        extra = {"best_val": p.best_val, "skipped_steps": p.skipped,
                 "unigram_baseline": self.baseline, "metrics": self.last}
        save_checkpoint(self.out / name, self.model, self.optimizer, self.scaler, p.step, self.gen,
                        self.cfg, self.meta, extra, p.tensors())


def setup_run(cfg):
    """Dataset, model, optimizer, data and evaluation set, resumed or new -> Run. The
    settings are checked (train() did it) and cfg.out is set, before anything is created:
    a typo leaves no empty run folder behind."""
    out = guard.output_folder(cfg.out)
    refuse_to_overwrite(out, cfg)
    if cfg.resume:  # the run's own settings, from latest/config.json
        cfg = resumed_settings(cfg, out / "latest")
    device = data.pick_device(cfg.device)
    data.set_threads(cfg.threads)
    # The order below is part of the result: the seed comes before the model, so its
    # initial weights repeat; nothing else draws from torch's generator in between.
    torch.manual_seed(cfg.seed)
    meta = ensure_dataset(cfg)
    check_against_data(cfg, meta)
    if cfg.pitch_aux and cfg.pitch_targets == "truth" and not knows_the_notes(meta):
        raise SystemExit(f"--pitch-targets truth: the dataset in {cfg.data} does not know its "
                         "lead's true notes (only the demo corpus does). Fix: the notes data.py "
                         "tracked, --pitch-targets tracked")
    if cfg.chord_aux and cfg.chord_targets == "truth" and not knows_the_notes(meta):
        raise SystemExit(f"--chord-targets truth: the dataset in {cfg.data} does not know its "
                         "band's chords (only the demo corpus does). Fix: the chroma data.py "
                         "heard, --chord-targets heard")
    for name in missing_heard(cfg, meta):
        flag, what = {"notes": ("--pitch-aux", "tracked the solo's notes"),
                      "chroma": ("--chord-aux", "heard the band's chroma")}[name]
        raise SystemExit(f"{flag}: the dataset in {cfg.data} was built before data.py {what}. "
                         f"Fix: python data.py --out {cfg.data} with the settings it was built "
                         f"with (its songs are done again, with their {name}), or turn the "
                         f"aid off with {flag} 0")
    T = round(cfg.window_s * meta["codec"]["frame_rate"])
    model = SoloTransformer(model_config(cfg, meta["codec"], T)).to(device)  # K, card: the data's
    # latest/ and best/, each the weights and Adam's two moments, and one being written
    guard.output_folder(out, need_bytes=3 * 3 * 4 * model.num_params())
    out.mkdir(parents=True, exist_ok=True)
    peak_lr = cfg.lr or DEFAULT_LR[cfg.preset]
    optimizer = make_optimizer(model, cfg, peak_lr, device)
    capability = torch.cuda.get_device_capability(device) if device.type == "cuda" else None
    amp_dtype, use_scaler = choose_precision(cfg.dtype, device.type, capability)
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
    # Its own generator for the data order and the condition dropout: the checkpoint
    # saves its state, so a resumed run draws the batches the whole run would have.
    gen = torch.Generator().manual_seed(cfg.seed)
    train_w = data.Windows(cfg.data, "train", meta, T)
    evals = evaluation_set(cfg, meta, T)
    baseline = unigram_entropy(train_w.solo, meta["codec"]["card"])
    progress = start_or_resume(out, model, optimizer, scaler, gen, cfg, device)
    page = RunPage(out, cfg, meta, evals, device, progress.step)
    # The compiled module shares its weights with `model`; checkpoints save `model`, so
    # their keys never carry torch.compile's "_orig_mod." prefix.
    train_model = torch.compile(model) if cfg.compile else model
    peak = peak_flops(device) if device.type == "cuda" else None
    return Run(cfg, out, device, meta, T, model, train_model, optimizer, scaler, amp_dtype, peak_lr,
               gen, train_w, evals, baseline, progress, page, peak=peak)


def model_config(cfg, numbers, T):
    """The preset's ModelConfig with the dataset's codec numbers and this run's options."""
    # None or 0 means "the preset's own": only a size or dropout the user gave overrides it.
    dropout = {} if cfg.dropout is None else {"dropout": cfg.dropout}
    depth = {"n_enc_layers": cfg.layers, "n_dec_layers": cfg.layers} if cfg.layers else {}
    width = {"d_model": cfg.d_model, "d_ff": 4 * cfg.d_model} if cfg.d_model else {}
    return preset_config(cfg.preset, n_codebooks=numbers["n_codebooks"], card=numbers["card"],
                         frame_rate=numbers["frame_rate"], max_frames=T,
                         causal_encoder=cfg.causal_encoder, attn_window=cfg.attn_window,
                         lookahead=round(cfg.lookahead_ms * numbers["frame_rate"] / 1e3),
                         attn_impl=cfg.attn_impl, cond_dropout=cfg.cond_dropout,
                         aligned_backing=cfg.aligned_backing, pitch_head=cfg.pitch_aux > 0,
                         pitch_first=cfg.pitch_first, chord_head=cfg.chord_aux > 0,
                         **dropout, **depth, **width)


def start_or_resume(out, model, optimizer, scaler, gen, cfg, device):
    """Progress of a new run (metrics.jsonl emptied), or of latest/ carried on (its later lines
    dropped)."""
    metrics_file = out / "metrics.jsonl"
    if not cfg.resume:
        metrics_file.unlink(missing_ok=True)
        return Progress()
    progress = resume_run(out / "latest", model, optimizer, scaler, gen, cfg, device)
    if metrics_file.exists():  # lines logged after the checkpoint will be logged again: drop them
        keep = "".join(json.dumps(row) + "\n" for row in data.read_metrics(metrics_file)
                       if row["step"] <= progress.step)
        data.atomic_write(metrics_file, lambda f: f.write(keep), mode="w")
    return progress


def describe(run):
    """What the run is about to do, printed once, and settings.json."""
    cfg, numbers, model = run.cfg, run.meta["codec"], run.model
    print("settings:", json.dumps(asdict(cfg)))
    m = model.cfg
    print(f"model: {cfg.preset} ({m.n_enc_layers}+{m.n_dec_layers} layers, d_model {m.d_model}), "
          f"{model.num_params() / 1e6:.2f} M parameters; K={m.n_codebooks} card={m.card} "
          f"{m.frame_rate} Hz; window "
          f"{run.T} frames; {run.accum} micro-batches of {cfg.batch_size}; device {run.device} "
          f"({torch.get_num_threads()} CPU threads), precision "
          f"{run.amp_dtype or torch.float32}{' + GradScaler' if run.scaler.is_enabled() else ''}")
    print(f"training audio: {run.meta['splits']['train']['frames'] / numbers['frame_rate']:.0f} s "
          f"in {len(run.train_w.segments)} sections; validation: {len(run.evals.backing)} windows")
    print("unigram baseline (cross-entropy of code frequencies alone): "
          + " ".join(f"q{k + 1}={h:.3f}" for k, h in enumerate(run.baseline))
          + f"  mean={np.mean(run.baseline):.3f} nats")
    write_json(run.out / "settings.json", {"train": asdict(cfg), "model": asdict(model.cfg)})


def aid_targets(run, where, backing, solo):
    """The training aids' targets for a batch of windows found at `where` (None when off):
    --pitch-aux, the notes the lead plays, [B, T]; --chord-aux, the band's harmony,
    [B, T, 12]. From what data.py heard, or with --*-targets truth the demo's score."""
    cfg, pitch, chords = run.cfg, None, None
    if cfg.pitch_aux:
        truth = run.meta if cfg.pitch_targets == "truth" else None
        pitch = pitch_targets(run.train_w, where, solo, truth).to(run.device)
    if cfg.chord_aux:
        truth = run.meta if cfg.chord_targets == "truth" else None
        chords = chord_targets(run.train_w, where, backing, truth).to(run.device)
    return pitch, chords


def train_step(run):
    """One optimizer step over target_batch windows -> its metrics.jsonl row."""
    cfg, progress, t0 = run.cfg, run.progress, time.time()
    lr = lr_at(progress.step, cfg, run.peak_lr)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    loss_sum, aux_sum = 0.0, {}
    for _ in range(run.accum):
        backing, solo, where = run.train_w.sample(cfg.batch_size, run.gen, where=True)  # [B, K, T]
        pitch, chords = aid_targets(run, where, backing, solo)
        # Classifier-free guidance needs one model that knows both p(solo | backing)
        # and p(solo): some windows are trained with the null backing instead.
        drop = torch.rand(cfg.batch_size, generator=run.gen) < cfg.cond_dropout  # [B]
        # Solo dropout: hidden past tokens, [B, K, S] (drawn only when on, so that a run
        # with --solo-dropout 0 draws exactly the random stream of the runs before it).
        hide = None
        if cfg.solo_dropout > 0:
            S = run.T + solo.size(1) - 1
            hide = (torch.rand(cfg.batch_size, solo.size(1), S, generator=run.gen)
                    < cfg.solo_dropout).to(run.device)
        with run.autocast():
            loss, _, aux = run.train_model.loss(backing.to(run.device), solo.to(run.device),
                                                drop.to(run.device), hide, pitch=pitch,
                                                chords=chords)
        # The auxiliary losses join the gradient only; the logged loss stays the codes'
        # cross-entropy, comparable with every other run's.
        weights = {"pitch": cfg.pitch_aux, "chord": cfg.chord_aux}
        total = loss + sum(weights[name] * ce for name, ce in aux.items())
        # Gradients add up over the micro-batches, so each is scaled by 1 / accum: the
        # sum is then the gradient of the mean loss over the whole target batch.
        run.scaler.scale(total / run.accum).backward()
        loss_sum += loss.item() / run.accum
        for name, ce in aux.items():
            aux_sum[name] = aux_sum.get(name, 0.0) + ce.item() / run.accum
    # Under fp16 an overflow is routine: the GradScaler skips that step and lowers its
    # scale. Anywhere else a non-finite loss is a real fault: stop and say so. (A nan in
    # a training aid's term would spoil the weights too.)
    if not math.isfinite(loss_sum + sum(aux_sum.values())) and not run.scaler.is_enabled():
        stop_on_bad_loss(run, loss_sum + sum(aux_sum.values()))
    # Clipping caps the size of one update: a rare batch with a huge gradient (a burst
    # of unusual codes) then nudges the weights instead of wrecking them.
    norm, was_skipped = scaled_step(run.model, run.optimizer, run.scaler, cfg.grad_clip)
    run.optimizer.zero_grad(set_to_none=True)  # None, not zeros: the next backward writes, not adds
    progress.skipped += was_skipped
    progress.step += 1
    progress.recent = (progress.recent + [loss_sum])[-cfg.eval_every:]
    # Throughput in frames per second is comparable across machines and presets: at
    # 75 Hz, 7500 frames/s means 100 s of (backing + solo) audio learned per second.
    dt = time.time() - t0
    row = {"step": progress.step, "loss": loss_sum, "lr": lr, "grad_norm": norm,
           "frames_per_s": cfg.target_batch * run.T / dt}
    row.update({f"{name}_ce": ce for name, ce in aux_sum.items()})  # pitch_ce, chord_ce
    if run.peak:
        row["mfu"] = cfg.target_batch * train_flops_per_window(run.model, run.T) / dt / run.peak
    log_metrics(run.metrics_file, row)
    return row


def stop_on_bad_loss(run, loss):
    """A non-finite loss outside fp16: stop, saving nothing (the weights that gave it are the
    broken ones, and latest/ must keep the last good state), and say where to go back to."""
    good = resolve_checkpoint(run.out / "latest")
    kept = (f"{good} still holds the last good checkpoint (step "
            f"{read_json(good / 'config.json', 'a checkpoint')['step']}): "
            "resume from it with a lower --lr"
            if good.exists() else "no checkpoint was saved before it")
    raise SystemExit(f"step {run.progress.step + 1}: the loss is {loss}. Likely causes: a "
                     f"learning rate too high (--lr {run.peak_lr}), fp16 overflow (try "
                     f"--dtype bf16 or fp32), or corrupt tokens in {run.cfg.data}. {kept}.")


def evaluate_and_save(run):
    """Validation metrics, the overfitting check, best/ and its sample on the page, the plot."""
    progress, evals = run.progress, run.evals
    last = evaluate(run.model, evals.backing, evals.solo, evals.other, evals.masks,
                    run.cfg.batch_size, run.device, run.autocast)
    last["train_loss"] = float(np.mean(progress.recent))
    run.last = last
    log_metrics(run.metrics_file, {"step": progress.step, **last})
    tqdm.write(f"step {progress.step}: train {last['train_loss']:.3f}  val {last['val_ce']:.3f} "
               f"(ppl {last['val_ppl']:.1f})  "
               + " ".join(f"ce_q{k + 1} {last[f'ce_q{k + 1}']:.3f}"
                          for k in range(run.model.cfg.n_codebooks))
               + f"  cond_gain {last['cond_gain']:+.3f}"
               + "".join(f" ({name} {last[f'cond_gain_{name}']:+.3f})" for name in evals.masks))
    progress.history.append((last["train_loss"], last["val_ce"]))
    if overfitting(progress.history):
        tqdm.write("WARNING: validation loss has risen twice while training loss fell: the model "
                   "is overfitting. More data (--augment in data.py), more dropout or fewer steps.")
    if last["val_ce"] < progress.best_val:
        progress.best_val = last["val_ce"]
        run.checkpoint("best")
        run.page.sample(run.model, progress.step, last)
    note = ("tokens of the UNTRAINED codec: the losses are real, but its decoder ignores the codes"
            if run.meta["codec"]["untrained"] else "")
    plot_curves(run.metrics_file, run.out / "loss.png", float(np.mean(run.baseline)), note)
    run.page.write(run.metrics_file)


class StopSignal:
    """Ctrl-C during training, deferred to the end of the step under way.

    A step cut in the middle leaves the data generator moved, gradients half summed, or
    the optimizer stepped with the step counter not yet moved: a checkpoint of that
    moment does not resume to the same run. So the first Ctrl-C only raises a flag,
    which the loop reads between steps; a second one stops at once (latest/ then holds
    the last scheduled save).
    """

    def __enter__(self):
        self.requested, self.previous = False, None
        # signals reach the main thread only
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self.note)
        return self

    def note(self, signum, frame):
        self.requested = True
        # the second Ctrl-C is a KeyboardInterrupt
        signal.signal(signal.SIGINT, signal.default_int_handler)
        tqdm.write("Ctrl-C: finishing this step, then saving latest/ (Ctrl-C again stops at once)")

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def train(cfg):
    """The whole run; returns the summary dict (also written to summary.json).

    Ctrl-C ends the step under way, saves latest/ and exits with code 130, after saying
    how to continue; --resume then gives exactly the run that was not interrupted. One
    process at a time in a run folder: a second train.py on the same --out refuses.
    """
    check_train_settings(cfg)
    cfg.out = cfg.out or f"runs/{cfg.preset}"
    with guard.FolderLock(cfg.out, "train.py"):
        return train_loop(setup_run(cfg))


def train_loop(run):
    """Step, evaluate and save until max_steps (the run's own settings, run.cfg)."""
    cfg = run.cfg
    describe(run)
    bar = tqdm(total=cfg.max_steps, initial=run.progress.step, desc="train", unit="step")
    # The loop, as the README tells it: a step (target_batch windows, one optimizer
    # update); every eval_every steps an evaluation, which saves best/ when the
    # validation loss is the lowest yet; every save_every steps latest/, for --resume.
    with StopSignal() as stop:
        while run.progress.step < cfg.max_steps:
            row = train_step(run)
            step = row["step"]
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.3f}", lr=f"{row['lr']:.1e}",
                            fps=f"{row['frames_per_s']:.0f}",
                            **({"mfu": f"{row['mfu']:.1%}"} if "mfu" in row else {}),
                            **({"skipped": run.progress.skipped} if run.progress.skipped else {}))
            if step % cfg.eval_every == 0 or step == cfg.max_steps:
                evaluate_and_save(run)
            if step % cfg.save_every == 0 or step == cfg.max_steps or stop.requested:
                run.checkpoint("latest")
            # Ctrl-C was pressed during this step: latest/ now holds its end, exactly.
            if stop.requested and step < cfg.max_steps:
                bar.close()
                again = command_line("train.py", replace(cfg, resume=True, overwrite=False))
                print(f"interrupted: saved {run.out / 'latest'} at step "
                      f"{step}. Continue exactly where it stopped with: {again}")
                raise SystemExit(130)  # 128 + SIGINT, as shells report a Ctrl-C
    bar.close()
    return finish(run)


def finish(run):
    """The summary: last and best metrics, and the listening test of best/ on the demo corpus."""
    cfg, progress, last = run.cfg, run.progress, run.last
    history = progress.history
    summary = {"steps": progress.step, "best_val_ce": progress.best_val,
               "unigram_baseline": float(np.mean(run.baseline)), "skipped_steps": progress.skipped,
               # how many evaluations printed the overfitting warning
               "overfitting_warnings": sum(overfitting(history[:i + 1])
                                           for i in range(len(history))),
               **last}
    best_dir = resolve_checkpoint(run.out / "best")
    if best_dir.exists():
        summary["best"] = read_json(best_dir / "config.json", "a checkpoint").get("metrics", {})
        if cfg.listen_test and run.evals.listening is not None:
            # Solos written by the best checkpoint (loaded beside the live model, which
            # stays as training left it), scored against the demo band's kicks and chords.
            best_model, _ = load_model(best_dir, run.device)
            # the run page's probes when it has them (the same deterministic fit), else fitted now
            probes = run.page.probes if run.page.probes is not None else fit_probes(
                cfg.data, run.meta, run.T)
            summary["best"].update(listening_test(best_model, run.evals.listening, probes,
                                                  cfg.batch_size, run.device, seed=cfg.seed))
            summary["best"].update(counting_listener(probes, run.evals.listening))
    write_json(run.out / "summary.json", summary)
    report(run, summary)
    return summary


def report(run, summary):
    """The closing lines: where the run ended, how it listens, what to run next."""
    best, last, baseline = summary.get("best", {}), run.last, np.mean(run.baseline)
    print(f"done: {summary['steps']} steps. validation cross-entropy {last['val_ce']:.3f} nats "
          f"(best {summary['best_val_ce']:.3f}) against the unigram baseline {baseline:.3f}; "
          f"conditioning gain {last['cond_gain']:+.3f} nats (at the best checkpoint "
          f"{best.get('cond_gain', last['cond_gain']):+.3f}). Best checkpoint: {run.out / 'best'}.")
    if "kick_auc_own" in best:
        print(f"listening test (best checkpoint, {len(run.evals.backing)} validation windows; "
              "generated over the own band / over another song's; the true lead over its "
              "own band / another's):")
        for metric, label, kind in (("kick_auc", "kick AUC", "rhythm"),
                                    ("note_in_chord", "note-in-chord", "harmony")):
            print(f"  {label:14s} {best[metric + '_own']:.3f} / "
                  f"{best[metric + '_mismatched']:.3f}   true lead {best[metric + '_true']:.3f} / "
                  f"{best[metric + '_true_mismatched']:.3f}   plays with the band "
                  f"({kind}) {best['plays_with_band_' + kind]:.2f} (1: as the real lead, 0: deaf)")
        counted = best["note_in_chord_counted_own"], best["note_in_chord_counted_mismatched"]
        print(f"  {'':14s} the lead's notes counted from the band's codes alone "
              f"{counted[0]:.3f} / {counted[1]:.3f} (listening.counting_listener: how much "
              "harmony the backing's tokens hold)")
    print(f"Listen: python generate.py --checkpoint {run.out / 'best'}")
    if run.meta["codec"]["untrained"]:
        print("NOTE: this dataset used the UNTRAINED codec: the "
              f"metrics are real, but {data.UNTRAINED_AUDIO}.")


if __name__ == "__main__":
    guard.loaded()
    config = parse_settings(TrainConfig, description=__doc__.split("\n\n")[0])
    data.check_install()
    if config.push_only:
        if not config.push_to_hub:
            raise SystemExit("--push-only needs --push-to-hub user/name")
        push_to_hub(config.push_only, config.push_to_hub, config.hub_private)
        sys.exit(0)
    try:
        with guard.one_line_errors("lower --batch-size (gradients then accumulate over more "
                                   "passes: --target-batch stays) or --window-s"):
            train(config)
    except KeyboardInterrupt:  # a second Ctrl-C, or one before the first step
        print(f"\nstopped by Ctrl-C; {Path(config.out or 'runs/' + config.preset) / 'latest'} "
              "holds the last scheduled save, if any: continue with --resume", file=sys.stderr)
        sys.exit(130)
    if config.push_to_hub:
        push_to_hub(Path(config.out) / "best", config.push_to_hub, config.hub_private)
