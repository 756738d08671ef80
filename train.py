"""
train.py -- train the solo transformer with mixed precision on one accelerator (phase 3),
and share it on the Hugging Face Hub (phase 4).

    python train.py                         # demo corpus (built if missing, ~4 min) + tiny preset (~7 min on 2 CPU cores)
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
    latest/ best/   checkpoints: config.json, model.safetensors, state.pt
"""
import json
import math
import os
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from tqdm import tqdm

import data
from data import opt, parse_settings, write_json
from model import ModelConfig, SoloTransformer, codebook_cross_entropy, preset_config, teacher_forcing

DEFAULT_DATA = "data/demo"
# Bigger models want smaller steps: a wider layer sums more terms, so the same step
# size moves its output further. These are the usual orders of magnitude for
# transformers of these sizes trained with AdamW, not values tuned on this project.
DEFAULT_LR = {"tiny": 2e-3, "small": 6e-4, "base": 3e-4}


@dataclass
class TrainConfig:
    data: str = opt(DEFAULT_DATA, "dataset folder; the default one is built from the demo corpus if missing")
    out: str = opt("", "run folder (default runs/<preset>)")
    preset: str = opt("tiny", "model size: tiny, small or base (model.py)")
    causal_encoder: bool = opt(False, "phase 5: train a causal (streamable) model")
    attn_window: Optional[int] = opt(None, "phase 5: attention window in frames (bounds the streaming caches)")
    attn_impl: str = opt("sdpa", "'sdpa' (fused kernel) or 'manual' (the hand-written attention)")
    window_s: float = opt(4.0, "length of the training windows, in seconds")
    batch_size: int = opt(16, "windows per forward pass (lower it when memory runs out)")
    target_batch: int = opt(16, "windows per optimizer step; gradients accumulate over target / batch passes")
    max_steps: int = opt(600, "optimizer steps")
    lr: float = opt(0.0, "peak learning rate (0: by preset, tiny 2e-3, small 6e-4, base 3e-4)")
    min_lr_ratio: float = opt(0.1, "the cosine decay ends at lr * this")
    warmup_steps: int = opt(50, "linear warm-up steps")
    weight_decay: float = opt(0.1, "AdamW weight decay, on weight matrices only")
    grad_clip: float = opt(1.0, "clip the gradient norm to this (0: no clipping)")
    cond_dropout: float = opt(0.1, "probability of training a window with the null backing (guidance)")
    dtype: str = opt("auto", "auto, fp32, bf16 or fp16 (auto: bf16 on Ampere+, fp16 + GradScaler before, fp32 on CPU)")
    compile: bool = opt(False, "torch.compile the model (faster on GPUs, slow start)")
    eval_every: int = opt(100, "evaluate (and save best/) every this many steps")
    eval_windows: int = opt(64, "validation windows per evaluation")
    save_every: int = opt(50, "save latest/ every this many steps")
    resume: bool = opt(False, "continue from <out>/latest")
    seed: int = opt(0, "seed of everything: weights, data order, dropout")
    device: str = opt("auto", "auto, cpu, cuda")
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
# Why not trust torch.cuda.is_bf16_supported(): it says True on a T4, where bf16 is emulated and slow.

def choose_precision(requested, device_type, capability=None):
    """-> (autocast dtype or None, use a GradScaler). capability: (major, minor) on CUDA.

    A pure function of its arguments, so the table above is unit-tested on a CPU.
    """
    if requested == "auto":
        requested = ("bf16" if capability[0] >= 8 else "fp16") if device_type == "cuda" else "fp32"
    if requested == "fp16" and device_type != "cuda":
        raise SystemExit("--dtype fp16 needs a CUDA GPU; on the CPU use --dtype bf16 or fp32")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[requested], requested == "fp16"


def scaled_step(model, optimizer, scaler, grad_clip):
    """Unscale, clip, step. Returns (grad norm, whether the GradScaler skipped the step).

    With the scaler disabled (fp32, bf16) every call here is a plain pass-through, so
    the training loop has one code path for all precisions.
    """
    scaler.unscale_(optimizer)
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip if grad_clip > 0 else float("inf"))
    scale_before = scaler.get_scale()
    scaler.step(optimizer)  # skipped inside when a gradient is inf or nan ...
    scaler.update()         # ... and then the scale is lowered: that is how we see it
    return float(norm), scaler.is_enabled() and scaler.get_scale() < scale_before


# ----------------------------------------------------------------------------
# Data: random windows for training, fixed windows for evaluation
# ----------------------------------------------------------------------------

class Windows:
    """Windows of T frames from the segments (solo sections) of one split.

    Arrays stay memory-mapped: a window reads T frames from disk, not the dataset.
    A segment shorter than T is padded with the special token: the loss skips it.
    Windows never cross a segment boundary: two sections of a song are not
    contiguous in time, and a window across the cut would teach a jump that no
    recording contains.
    """

    def __init__(self, data_dir, split, meta, T):
        self.backing, self.solo = data.load_split(data_dir, split)     # [K, N] each, memory-mapped
        self.segments = meta["splits"][split]["segments"]
        self.T, self.card = T, meta["codec"]["card"]
        lengths = np.array([s["length"] for s in self.segments], dtype=np.float64)
        self.weights = torch.tensor(lengths / lengths.sum()) if len(lengths) else None  # longer segments, more often

    def window(self, seg, start):
        """(backing, solo) [K, T] int64 from segment seg at frame start, padded with card."""
        n = min(self.T, seg["length"] - start)
        out = []
        for array in (self.backing, self.solo):
            w = np.full((array.shape[0], self.T), self.card, dtype=np.int64)
            w[:, :n] = array[:, seg["start"] + start:seg["start"] + start + n]
            out.append(torch.from_numpy(w))
        return out

    def sample(self, batch, gen):
        """A random batch: (backing, solo) [B, K, T], drawn with the generator gen (saved in checkpoints)."""
        # Segments are picked in proportion to their length, so every frame of the split
        # is about equally likely to be seen, whatever way the solo was cut into sections.
        # All randomness goes through `gen`, whose state the checkpoint keeps: that is what
        # makes a resumed run draw exactly the batches the uninterrupted run would have.
        picks = torch.multinomial(self.weights, batch, replacement=True, generator=gen).tolist()
        pairs = []
        for i in picks:
            seg = self.segments[i]
            start = int(torch.randint(0, max(1, seg["length"] - self.T + 1), (1,), generator=gen))
            pairs.append(self.window(seg, start))
        return [torch.stack(x) for x in zip(*pairs)]

    def fixed(self, limit):
        """Deterministic evaluation windows: each segment cut in consecutive windows.
        Returns (backing, solo [N, K, T], song id of each window).

        The same windows at every evaluation, so two evaluations differ only because
        the model changed, never because the sample did.
        """
        pairs, songs = [], []
        for seg in self.segments:
            for start in range(0, seg["length"], self.T):
                if seg["length"] - start >= self.T // 2 or start == 0:  # skip short leftovers
                    pairs.append(self.window(seg, start))
                    songs.append(seg["song"])
        pairs, songs = pairs[:limit], songs[:limit]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs]), songs


def unigram_entropy(solo, card):
    """Entropy (nats) of each codebook's code frequencies in the training solo: [K].

    The cross-entropy of a model that ignores all context and only knows how often
    each code occurs. A trained model must go below it; one that sits at it has
    learned the code frequencies and nothing else. (A uniform guess would score
    log(card) = 6.93 nats for 1024 codes.)
    """
    out = []
    for row in solo:
        p = np.bincount(np.asarray(row, dtype=np.int64), minlength=card) / max(len(row), 1)
        out.append(float(-(p[p > 0] * np.log(p[p > 0])).sum()))
    return out


def mismatched_backing(backing, songs, spare):
    """For each evaluation window, the backing of a window from another song: [N, K, T].

    Within the split when it holds two songs or more (the same windows, rolled until
    no window keeps its own song); otherwise from `spare`, windows of other songs
    (the training split), repeated if there are fewer of them.
    """
    n = len(songs)
    for shift in range(1, n):
        if all(songs[i] != songs[(i + shift) % n] for i in range(n)):
            return backing[[(i + shift) % n for i in range(n)]]
    return spare[torch.arange(n) % len(spare)]


@torch.no_grad()
def evaluate(model, backing, solo, other_backing, batch, device, autocast):
    """Validation cross-entropy per codebook, and the conditioning gain in nats:
    the cross-entropy with another song's backing minus that with the clip's own."""
    model.eval()
    card, K = model.cfg.card, model.cfg.n_codebooks

    def mean_ce(backings):
        # Averaged over real positions, not over batches: padded windows hold fewer
        # real codes, and a plain mean of batch means would give them too much weight.
        total, count = torch.zeros(K), torch.zeros(K)
        for i in range(0, len(solo), batch):
            b, s = backings[i:i + batch].to(device), solo[i:i + batch].to(device)
            target, dec_in = teacher_forcing(s, card)                          # [B, K, S] each
            with autocast():
                logits = model(b, dec_in)
            n = (target != card).sum(dim=(0, 2)).float().cpu()                 # real positions per codebook
            total += codebook_cross_entropy(logits, target, card)[1].float().cpu() * n
            count += n
        return total / count.clamp(min=1)

    own = mean_ce(backing)
    result = {"val_ce": float(own.mean()), "val_ppl": float(own.mean().exp()),
              **{f"ce_q{k + 1}": float(own[k]) for k in range(K)},
              "cond_gain": float(mean_ce(other_backing).mean() - own.mean())}
    model.train()
    return result


# ----------------------------------------------------------------------------
# Checkpoints: a folder written whole, then renamed into place
# ----------------------------------------------------------------------------

def save_checkpoint(folder, model, optimizer, scaler, step, gen, cfg, meta, extra):
    """config.json + model.safetensors + state.pt, atomically (a crash leaves the old folder)."""
    from safetensors.torch import save_file
    # Three files must change together, and no file system renames three files at once.
    # So the whole folder is written under a temporary name and swapped in with two
    # renames; a crash between them leaves `.latest.old`, which resolve_checkpoint finds.
    folder = Path(folder)
    tmp, old = folder.with_name(f".{folder.name}.tmp"), folder.with_name(f".{folder.name}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    config = {"model": asdict(model.cfg), "train": asdict(cfg), "step": step,
              "data": {"dir": str(Path(cfg.data).resolve()), "codec": meta["codec"], "demo": meta.get("demo", False),
                       "songs": {k: len(v["songs"]) for k, v in meta["splits"].items()}}, **extra}
    write_json(tmp / "config.json", config)
    # The weights of the plain module: a compiled model's keys carry an "_orig_mod." prefix.
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
    # Everything a resumed run needs to continue bit for bit: the optimizer's moments,
    # the GradScaler's scale, and every random generator (dropout, data order).
    # Only tensors, numbers and strings: loadable with torch.load(weights_only=True).
    state = {"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "step": step,
             "rng_torch": torch.get_rng_state(), "rng_data": gen.get_state(),
             "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
    torch.save(state, tmp / "state.pt")
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def resolve_checkpoint(path):
    """A checkpoint folder, or its leftover .old twin if a crash hit between the two renames."""
    path = Path(path)
    old = path.with_name(f".{path.name}.old")
    return path if path.exists() or not old.exists() else old


def load_model(folder, device="cpu"):
    """A checkpoint folder -> (model in eval mode, its config.json dict). Safetensors only."""
    from safetensors.torch import load_file
    folder = resolve_checkpoint(folder)
    config_file = folder / "config.json"
    if not config_file.exists():
        raise SystemExit(f"{config_file} not found: not a checkpoint folder (expected config.json, model.safetensors)")
    config = json.loads(config_file.read_text())
    model = SoloTransformer(ModelConfig(**config["model"]))
    model.load_state_dict(load_file(str(folder / "model.safetensors"), device=str(device)))
    return model.to(device).eval(), config


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
    dataset = "synthetic demo corpus (data.py)" if config["data"].get("demo") else "user recordings (data.py)"
    name = repo_id.split("/")[-1]
    lines = [
        "---", "license: mit", "library_name: pytorch", "pipeline_tag: audio-to-audio",
        "tags: [audio, music, jazz, saxophone, encodec, music-generation]",
        "model-index:", f"  - name: {name}", "    results:",
        "      - task: {type: audio-to-audio}", f"        dataset: {{name: {dataset}, type: custom}}",
        "        metrics:",
        *[f"          - {{type: {k}, name: {k}, value: {v:.4f}}}" for k, v in metrics.items()],
        "---", "",
        f"# {name}", "",
        "An encoder-decoder transformer that hears a jazz backing track (as EnCodec tokens) and writes a "
        "saxophone solo, trained with the jazz-sax-solo project's train.py.", "",
        f"- architecture: {m['n_enc_layers']}+{m['n_dec_layers']} layers, d_model {m['d_model']}, "
        f"{m['n_heads']} heads, causal encoder: {m['causal_encoder']}",
        f"- codec: {codec['name']} at {codec['bandwidth_kbps']} kbps: {codec['n_codebooks']} codebooks of "
        f"{codec['card']} codes, {codec['frame_rate']} frames per second"
        + (" (UNTRAINED codec: its audio is noise; for testing the plumbing only)" if codec["untrained"] else ""),
        f"- training data: {dataset}; trained for {config['step']} steps", "",
        "## Metrics (validation split)", "", "| metric | value |", "|---|---|",
        *[f"| {k} | {v:.4f} |" for k, v in metrics.items()], "",
        "## Use", "", "```bash", "pip install -r requirements.txt   # from the jazz-sax-solo project",
        f"python generate.py --checkpoint {repo_id} --backing my_backing.wav", "```", "",
    ]
    return "\n".join(lines)


def push_to_hub(folder, repo_id, private=False, api=None):
    """Upload a checkpoint folder with its model card. The token comes from HF_TOKEN or
    `huggingface-cli login`, read by the hub client itself: this code never sees or prints it."""
    from huggingface_hub import HfApi
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    data.atomic_write(folder / "README.md", lambda f: f.write(model_card(config, repo_id)), mode="w")
    api = api or HfApi()  # tests pass a stand-in here, to stop at the client's boundary
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)  # exist_ok: re-uploads work
    api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                      # state.pt (optimizer moments, RNG) is for resuming, not for users:
                      allow_patterns=["config.json", "model.safetensors", "README.md"],
                      commit_message=f"Upload checkpoint at step {config['step']}")
    codec_file = Path(config["data"]["dir"]) / "codec.safetensors"
    if config["data"]["codec"]["untrained"] and codec_file.exists():  # its codebooks are needed to decode
        api.upload_file(path_or_fileobj=str(codec_file), path_in_repo="codec.safetensors", repo_id=repo_id)
    print(f"uploaded {folder} to https://huggingface.co/{repo_id}")


# ----------------------------------------------------------------------------
# The loss curve
# ----------------------------------------------------------------------------

def plot_curves(metrics_file, png):
    """loss.png from metrics.jsonl: train and validation loss above, conditioning gain below.

    Drawn from the file, not from memory, so a resumed run's plot shows the whole run.
    """
    import matplotlib
    matplotlib.use("Agg")  # no screen needed
    import matplotlib.pyplot as plt
    rows = [json.loads(line) for line in Path(metrics_file).read_text().splitlines()]
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    val = [(r["step"], r["val_ce"], r.get("cond_gain", float("nan"))) for r in rows if "val_ce" in r]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    if train:
        steps, losses = zip(*train)
        # Per-step losses jump with each random batch; a 10-step mean shows the trend.
        smooth = np.convolve(losses, np.ones(10) / 10, mode="valid") if len(losses) >= 10 else losses
        ax1.plot(steps[len(steps) - len(smooth):], smooth, label="train (10-step mean)")
    if val:
        ax1.plot([v[0] for v in val], [v[1] for v in val], "o-", label="validation")
        ax2.plot([v[0] for v in val], [v[2] for v in val], "o-", color="tab:green")
    ax1.set_ylabel("cross-entropy (nats)")
    ax1.legend()
    ax2.axhline(0, color="gray", lw=0.5)
    ax2.set_ylabel("conditioning gain (nats)")
    ax2.set_xlabel("step")
    fig.tight_layout()
    data.atomic_write(png, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)


# ----------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------

def peak_flops(device):
    """Dense bf16/fp16 tensor-core peak of the GPU, for MFU (None when unknown).

    MFU (model FLOPs utilisation) is the share of the GPU's peak that the model's own
    arithmetic uses (Chowdhery et al. 2022, appendix B; docs/references.bib): 6 x parameters x tokens per step (2 for the
    forward pass, 4 for the backward), divided by the step time and the peak. 30-50%
    is good for a model this size; a few percent means the GPU waits on something else.
    Peaks are the vendors' dense (no sparsity) tensor-core figures.
    """
    name = torch.cuda.get_device_name(device)
    for key, peak in [("H200", 989e12), ("H100", 989e12), ("A100", 312e12), ("L40", 181e12), ("L4", 121e12),
                      ("A10", 125e12), ("4090", 165e12), ("3090", 71e12), ("V100", 125e12), ("T4", 65e12)]:
        if key in name:
            return peak
    return None


def ensure_dataset(cfg):
    """The dataset's meta.json; the default demo dataset is built on first use.

    Only the default path builds anything: a mistyped --data stops with a message
    rather than silently training on synthetic music.
    """
    if not (Path(cfg.data) / "meta.json").exists() and cfg.data == DEFAULT_DATA:
        print(f"no dataset in {cfg.data}: building the demo corpus first (python data.py does the same)")
        data.build_dataset(data.DataConfig(out=cfg.data, device=cfg.device))
    return data.load_dataset(cfg.data)


def train(cfg):
    """The whole run; returns the final evaluation dict."""
    cfg.out = cfg.out or f"runs/{cfg.preset}"
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    device = data.pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    meta = ensure_dataset(cfg)
    codec = meta["codec"]
    T = round(cfg.window_s * codec["frame_rate"])
    mcfg = preset_config(cfg.preset, n_codebooks=codec["n_codebooks"], card=codec["card"],
                         frame_rate=codec["frame_rate"], max_frames=T, causal_encoder=cfg.causal_encoder,
                         attn_window=cfg.attn_window, attn_impl=cfg.attn_impl, cond_dropout=cfg.cond_dropout)
    model = SoloTransformer(mcfg).to(device)  # K, card and the frame rate come from the data, not from code
    lr = cfg.lr or DEFAULT_LR[cfg.preset]
    assert cfg.target_batch % cfg.batch_size == 0, \
        f"--target-batch {cfg.target_batch} must be a multiple of --batch-size {cfg.batch_size}"
    accum = cfg.target_batch // cfg.batch_size

    # Weight decay pulls weights toward zero. On the weight matrices that is a useful
    # brake; on LayerNorm gains and biases it only fights the normalisation, and on the
    # embeddings it would shrink codes the model rarely sees, so those are left alone.
    matrices = [p for n, p in model.named_parameters() if p.dim() >= 2 and "emb" not in n]
    others = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "emb" not in n)]
    optimizer = torch.optim.AdamW([{"params": matrices, "weight_decay": cfg.weight_decay},
                                   {"params": others, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95),
                                  fused=device.type == "cuda")
    amp_dtype, use_scaler = choose_precision(cfg.dtype, device.type,
                                             torch.cuda.get_device_capability(device) if device.type == "cuda" else None)
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)

    def autocast():
        # Matmuls run in bf16/fp16 inside this context; the weights, the optimizer and
        # the loss's softmax (codebook_cross_entropy casts to float) stay in fp32.
        return torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else nullcontext()

    gen = torch.Generator().manual_seed(cfg.seed)  # data order and condition dropout
    train_w = Windows(cfg.data, "train", meta, T)
    # Evaluation data is built once: fixed windows, and for each the backing of another
    # song, for the conditioning gain. Above zero, the decoder listens to the backing.
    val_split = "val" if meta["splits"]["val"]["segments"] else "train"
    if val_split == "train":
        print("WARNING: the dataset has no validation songs; evaluating on training songs (add recordings)")
    val_b, val_s, val_songs = Windows(cfg.data, val_split, meta, T).fixed(cfg.eval_windows)
    val_other = mismatched_backing(val_b, val_songs, train_w.fixed(cfg.eval_windows)[0])
    baseline = unigram_entropy(train_w.solo, codec["card"])  # what "learned nothing" scores

    step, best_val, skipped = 0, float("inf"), 0
    metrics_file = out / "metrics.jsonl"
    if cfg.resume:
        ckpt = resolve_checkpoint(out / "latest")
        if not ckpt.exists():
            raise SystemExit(f"--resume: no checkpoint in {out / 'latest'}; start without --resume")
        from safetensors.torch import load_file
        model.load_state_dict(load_file(str(ckpt / "model.safetensors"), device=str(device)))
        state = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        step = state["step"]
        torch.set_rng_state(state["rng_torch"])
        gen.set_state(state["rng_data"])
        if state["rng_cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        config = json.loads((ckpt / "config.json").read_text())
        best_val, skipped = config.get("best_val", best_val), config.get("skipped_steps", 0)
        # Lines logged after the checkpoint will be logged again: drop them.
        if metrics_file.exists():
            keep = [line for line in metrics_file.read_text().splitlines() if json.loads(line)["step"] <= step]
            data.atomic_write(metrics_file, lambda f: f.write("".join(line + "\n" for line in keep)), mode="w")
        print(f"resumed from {ckpt} at step {step}")
    elif metrics_file.exists():
        metrics_file.unlink()
    # The compiled module shares its weights with `model`; checkpoints save `model`, so
    # their keys never carry torch.compile's "_orig_mod." prefix.
    train_model = torch.compile(model) if cfg.compile else model

    print("settings:", json.dumps(asdict(cfg)))
    print(f"model: {cfg.preset}, {model.num_params() / 1e6:.2f} M parameters; K={mcfg.n_codebooks} "
          f"card={mcfg.card} {mcfg.frame_rate} Hz; window {T} frames; {accum} micro-batches of {cfg.batch_size}; "
          f"device {device}, precision {amp_dtype or torch.float32}{' + GradScaler' if use_scaler else ''}")
    print(f"training audio: {meta['splits']['train']['frames'] / codec['frame_rate']:.0f} s in "
          f"{len(train_w.segments)} sections; validation: {len(val_b)} windows")
    print("unigram baseline (cross-entropy of code frequencies alone): "
          + " ".join(f"q{k + 1}={h:.3f}" for k, h in enumerate(baseline)) + f"  mean={np.mean(baseline):.3f} nats")
    write_json(out / "settings.json", {"train": asdict(cfg), "model": asdict(mcfg)})

    def log(row):
        # JSON lines: one object per line, appended as training goes; any tool (pandas,
        # jq, a spreadsheet) reads it, and a crash loses at most the line being written.
        with open(metrics_file, "a") as f:
            f.write(json.dumps(row) + "\n")

    def checkpoint(name, extra=None):
        save_checkpoint(out / name, model, optimizer, scaler, step, gen, cfg, meta,
                        {"best_val": best_val, "skipped_steps": skipped, "unigram_baseline": baseline, **(extra or {})})

    # Throughput in frames per second is comparable across machines and presets: at
    # 75 Hz, 7500 frames/s means 100 s of (backing + solo) audio learned per second.
    peak = peak_flops(device) if device.type == "cuda" else None
    frames_per_step = cfg.target_batch * T
    flops_per_step = 6 * model.num_params() * frames_per_step  # forward + backward, ignoring attention
    history = []  # (train loss mean, val loss) at each evaluation, for the overfitting warning
    recent = []
    last = {}
    bar = tqdm(total=cfg.max_steps, initial=step, desc="train", unit="step")
    model.train()
    try:
        while step < cfg.max_steps:
            t0 = time.time()
            # Linear warm-up, then cosine decay to min_lr_ratio * lr [SGDR, Loshchilov & Hutter].
            # Warm-up: at step 0 Adam's moment estimates rest on a single batch, and a
            # full-size step taken on them can throw the weights far off; growing the
            # rate over the first steps lets the estimates settle first. Cosine decay:
            # large steps early to move fast, small steps late to settle into a minimum.
            if step < cfg.warmup_steps:
                lr_now = lr * (step + 1) / cfg.warmup_steps
            else:
                progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
                lr_now = lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
            for group in optimizer.param_groups:
                group["lr"] = lr_now
            loss_sum = 0.0
            for _ in range(accum):
                backing, solo = train_w.sample(cfg.batch_size, gen)              # [B, K, T] each
                # Classifier-free guidance needs one model that knows both p(solo | backing)
                # and p(solo): some windows are trained with the null backing instead.
                drop = torch.rand(cfg.batch_size, generator=gen) < cfg.cond_dropout  # [B]
                with autocast():
                    loss, _ = train_model.loss(backing.to(device), solo.to(device), drop.to(device))
                # Gradients add up over the micro-batches, so each is scaled by 1 / accum: the
                # sum is then the gradient of the mean loss over the whole target batch.
                scaler.scale(loss / accum).backward()
                loss_sum += loss.item() / accum
            # Under fp16 an overflow is routine: the GradScaler skips that step and lowers
            # its scale. Anywhere else a non-finite loss is a real fault: stop and say so.
            if not math.isfinite(loss_sum) and not use_scaler:
                checkpoint("latest")
                raise SystemExit(
                    f"step {step}: the loss is {loss_sum}. Likely causes: a learning rate too high (--lr {lr}), "
                    f"fp16 overflow (try --dtype bf16 or fp32), or corrupt tokens in {cfg.data}. "
                    f"The last good state is in {out / 'latest'}.")
            # Clipping caps the size of one update: a rare batch with a huge gradient (a
            # burst of unusual codes) then nudges the weights instead of wrecking them.
            norm, was_skipped = scaled_step(model, optimizer, scaler, cfg.grad_clip)
            optimizer.zero_grad(set_to_none=True)  # None, not zeros: the next backward writes, not adds
            skipped += was_skipped
            step += 1
            dt = time.time() - t0
            recent = (recent + [loss_sum])[-cfg.eval_every:]
            row = {"step": step, "loss": loss_sum, "lr": lr_now, "grad_norm": norm, "frames_per_s": frames_per_step / dt}
            if peak:
                row["mfu"] = flops_per_step / dt / peak
            log(row)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum:.3f}", lr=f"{lr_now:.1e}", fps=f"{frames_per_step / dt:.0f}",
                            **({"mfu": f"{row['mfu']:.1%}"} if peak else {}), **({"skipped": skipped} if skipped else {}))
            # Every eval_every steps: validation metrics, the overfitting check, best/, the plot.
            if step % cfg.eval_every == 0 or step == cfg.max_steps:
                last = evaluate(model, val_b, val_s, val_other, cfg.batch_size, device, autocast)
                last["train_loss"] = float(np.mean(recent))
                log({"step": step, **last})
                tqdm.write(f"step {step}: train {last['train_loss']:.3f}  val {last['val_ce']:.3f} (ppl "
                           f"{last['val_ppl']:.1f})  " + " ".join(f"ce_q{k + 1} {last[f'ce_q{k + 1}']:.3f}"
                                                           for k in range(mcfg.n_codebooks))
                           + f"  cond_gain {last['cond_gain']:+.3f}")
                # Overfitting, the failure reported by earlier implementations of this idea:
                # validation loss rising twice in a row while the training loss keeps falling.
                history.append((last["train_loss"], last["val_ce"]))
                if len(history) >= 3 and history[-1][1] > history[-2][1] > history[-3][1] \
                        and history[-1][0] < history[-3][0]:
                    tqdm.write("WARNING: validation loss has risen twice while training loss fell: the model "
                               "is overfitting. More data (--augment in data.py), more dropout or fewer steps.")
                if last["val_ce"] < best_val:
                    best_val = last["val_ce"]
                    checkpoint("best", {"metrics": last})
                plot_curves(metrics_file, out / "loss.png")
            if step % cfg.save_every == 0 or step == cfg.max_steps:
                checkpoint("latest", {"metrics": last})
    except KeyboardInterrupt:  # Ctrl-C: keep the work done so far, then stop cleanly
        checkpoint("latest", {"metrics": last})
        bar.close()
        print(f"\ninterrupted: saved {out / 'latest'} at step {step}; continue with --resume")
        return last
    bar.close()
    summary = {"steps": step, "best_val_ce": best_val, "unigram_baseline": float(np.mean(baseline)),
               "skipped_steps": skipped, **last}
    write_json(out / "summary.json", summary)
    print(f"done: {step} steps. validation cross-entropy {last.get('val_ce', float('nan')):.3f} nats (best "
          f"{best_val:.3f}) against the unigram baseline {np.mean(baseline):.3f}; conditioning gain "
          f"{last.get('cond_gain', float('nan')):+.3f} nats. Best checkpoint: {out / 'best'}.\n"
          f"Listen: python generate.py --checkpoint {out / 'best'}")
    if meta["codec"]["untrained"]:
        print("NOTE: this dataset used the UNTRAINED codec: the metrics are real, generated audio will be noise.")
    return summary


if __name__ == "__main__":
    config = parse_settings(TrainConfig, description=__doc__.split("\n\n")[0])
    if config.push_only:
        if not config.push_to_hub:
            raise SystemExit("--push-only needs --push-to-hub user/name")
        push_to_hub(config.push_only, config.push_to_hub, config.hub_private)
        sys.exit(0)
    train(config)
    if config.push_to_hub:
        push_to_hub(Path(config.out) / "best", config.push_to_hub, config.hub_private)
