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
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

from sax import guard  # first of the project's: a Ctrl-C while torch loads is one line

guard.quiet_ctrl_c(__name__)

import numpy as np
import torch
from tqdm import tqdm

import data
from model import PRESETS, SoloTransformer, preset_config
from sax.checkpoints import push_to_hub, save_checkpoint
from sax.dataset import (Windows, aid_targets, check_aids, load_dataset, missing_heard,
                         unigram_entropy)
from sax.demo import DEMO_VERSION
from sax.distill import load_teacher, teacher_logits
from sax.distributed import (World, any_rank, barrier, gathered, leave, mean, no_sync, start,
                             world_from_env, wrap)
from sax.evaluation import (EvalSet, describe, evaluate, evaluation_set, finish, overfitting,
                            peak_flops, train_flops_per_window)
from sax.files import atomic_write, log_metrics, read_metrics
from sax.machine import DEVICES, check_install, pick_device, set_threads
from sax.pages import RunPage, plot_curves
from sax.past import hidden_tokens, read_past
from sax.precision import choose_precision, scaled_step
from sax.resume import (Progress, StopSignal, refuse_to_overwrite, resume_run, resumed_settings,
                        stop_on_bad_loss)
from sax.settings import check_settings, command_line, opt, parse_settings

DEFAULT_DATA = "data/demo"
# Bigger models want smaller steps: a wider layer sums more terms, so the same step size
# moves its output further. The usual orders of magnitude for AdamW, not tuned here.
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
    solo_hold: float = opt(0.0, "probability that a frame of the solo's past starts a span "
                                "held on the frame before it (a late reaction, up to 0.25 s), "
                                "so that a causal model learns to follow the band out of a "
                                "stale past (0: off; sax/past.py, docs/phase5)",
                          at_least=0, below=1)
    solo_swap: float = opt(0.0, "the same spans, read from another window's solo: a wrong "
                                "note to leave for the band's chord (0: off; sax/past.py)",
                           at_least=0, below=1)
    pitch_aux: float = opt(0.0, "weight of the pitch aid, an auxiliary loss: a head on the "
                                "decoder names the pitch class the solo plays in each frame "
                                "(0: off; docs/phase3)", at_least=0, at_most=1000)
    pitch_targets: str = opt("tracked", "--pitch-aux's notes: tracked in the solo's audio by "
                                        "data.py, the demo's truth, or the band's chord (chord)",
                             ["tracked", "truth", "chord"])
    pitch_plan: bool = opt(False, "with --pitch-aux: the note first, then its codes (sax/plan.py)")
    chord_aux: float = opt(0.3, "weight of the chord aid, an auxiliary loss: a head on the "
                                "encoder names the band's pitch classes in each frame "
                                "(0: off; 0.3: the seeds table of docs/phase3)",
                           at_least=0, at_most=1000)
    ahead_aux: float = opt(0.0, "weight of the anticipation aid (phase 5), an auxiliary loss: "
                                "a head on the encoder names the band's chord and kick in the "
                                "frame the solo is written for, --lookahead-ms past what it has "
                                "heard (0: off; demo corpus; docs/phase5)",
                           at_least=0, at_most=1000)
    distill_from: str = opt("", "phase 5: an offline model's checkpoint on the same dataset, "
                                "whose distributions this one also learns (sax/distill.py)")
    distill: float = opt(1.0, "weight of --distill-from's KL term", at_least=0, at_most=1000)
    chord_targets: str = opt("heard", "--chord-aux's and --ahead-aux's chords: the chroma "
                                      "data.py heard in the backing, or the demo's chords",
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


def ensure_dataset(cfg, world=World()):
    """The dataset's meta.json; the default demo dataset is built on first use.

    Only the default path builds anything: a mistyped --data stops with a message
    rather than silently training on synthetic music. Under torchrun the dataset must be
    there first: ranks waiting minutes for one that builds it would time out.
    """
    meta_file = Path(cfg.data) / "meta.json"
    stale = not meta_file.exists()
    if not stale:  # another version of the demo corpus, or one without what the aids read
        built = load_dataset(cfg.data)
        stale = built.get("demo") != DEMO_VERSION or bool(missing_heard(cfg, built))
    if cfg.data == DEFAULT_DATA and stale and world.many:
        raise SystemExit(f"{cfg.data}: no dataset of the current demo corpus; under torchrun "
                         f"build it first, in one process: python data.py --out {cfg.data}")
    if cfg.data == DEFAULT_DATA and stale:
        print(f"no dataset of the current demo corpus (version {DEMO_VERSION}) "
              f"in {cfg.data}: building it first (python data.py does the same)")
        # overwrite: an older version of the demo corpus is replaced, as said above
        data.build_dataset(data.DataConfig(out=cfg.data, device=cfg.device, overwrite=True))
    return load_dataset(cfg.data)


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
                         "a window read no backing frame (sax.sampling.check_backing_reach)")


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


# ----------------------------------------------------------------------------
# The run: set up once, then step, evaluate and save until max_steps
# ----------------------------------------------------------------------------
# train() at the bottom is the whole loop, on one screen. What it needs lives in one Run
# that setup_run builds: it keeps each helper's argument list short, and makes plain what
# a step may change (weights, optimizer, generator, progress) and what it only reads.

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
    train_w: Windows
    evals: EvalSet
    baseline: list               # unigram cross-entropy per codebook: what "learned nothing" scores
    progress: Progress
    page: Optional[RunPage]      # rank 0's (None on the other ranks of a torchrun job)
    loss_fn: object              # train_model.loss, or its DistributedDataParallel (torchrun)
    world: World = World()       # one process, or torchrun's ranks (sax/distributed.py)
    last: dict = field(default_factory=dict)  # the latest evaluation's metrics
    peak: Optional[float] = None  # the GPU's peak FLOP/s, for MFU (None on the CPU or unknown)
    teacher: Optional[SoloTransformer] = None  # --distill-from's frozen model

    @property
    def metrics_file(self):
        return self.out / "metrics.jsonl"

    @property
    def accum(self):
        """Micro-batches this process computes per step: its share of target_batch."""
        return self.cfg.target_batch // (self.cfg.batch_size * self.world.size)

    def autocast(self):
        # Matmuls run in bf16/fp16 inside this context; the weights, the optimizer and
        # the loss's softmax (codebook_cross_entropy casts to float) stay in fp32.
        return torch.autocast(self.device.type,
                              dtype=self.amp_dtype) if self.amp_dtype else nullcontext()

    def checkpoint(self, name, rank_rngs=None):
        """Save best/ or latest/: weights, optimizer, scaler, generators and progress.
        rank_rngs: every rank's torch generator state, for an exact resume under torchrun."""
        p = self.progress
        extra = {"best_val": p.best_val, "skipped_steps": p.skipped,
                 "unigram_baseline": self.baseline, "metrics": self.last,
                 **({"world_size": self.world.size} if self.world.many else {})}
        tensors = {**p.tensors(), **({"rng_torch_ranks": torch.stack(rank_rngs)}
                                     if self.world.many and rank_rngs else {})}
        save_checkpoint(self.out / name, self.model, self.optimizer, self.scaler, p.step, self.gen,
                        self.cfg, self.meta, extra, tensors)


def setup_run(cfg, world=World()):
    """Dataset, model, optimizer, data and evaluation set, resumed or new -> Run. The
    settings are checked (train() did it) and cfg.out is set, before anything is created:
    a typo leaves no empty run folder behind. Under torchrun every rank builds the same
    model from the same seed; rank 0 alone writes."""
    out = guard.output_folder(cfg.out)
    refuse_to_overwrite(out, cfg)
    if cfg.resume:  # the run's own settings, from latest/config.json
        cfg = resumed_settings(cfg, out / "latest")
        check_train_settings(cfg)  # an edited config.json is one line too
    device = start(world, pick_device(cfg.device))
    set_threads(cfg.threads)
    # The order below is part of the result: the seed comes before the model, so its
    # initial weights repeat; nothing else draws from torch's generator in between. It
    # comes after the dataset, which a first run builds here (its codec draws from it).
    meta = ensure_dataset(cfg, world)
    torch.manual_seed(cfg.seed)
    check_against_data(cfg, meta)
    check_aids(cfg, meta)  # an aid that needs the demo's score (on a dataset without), or another
    with torch.random.fork_rng():  # a teacher's own weights draw nothing the student's would
        teacher = load_teacher(cfg.distill_from, meta, device) if cfg.distill_from else None
    for name in missing_heard(cfg, meta):
        flag, what = {"notes": ("--pitch-aux", "tracked the solo's notes"),
                      "chroma": ("--chord-aux" if cfg.chord_aux or cfg.pitch_targets != "chord"
                                 else "--pitch-aux", "heard the band's chroma")}[name]
        raise SystemExit(f"{flag}: the dataset in {cfg.data} was built before data.py {what}. "
                         f"Fix: python data.py --out {cfg.data} with the settings it was built "
                         f"with (its songs are done again, with their {name}), or turn the "
                         f"aid off with {flag} 0")
    T = round(cfg.window_s * meta["codec"]["frame_rate"])
    model = SoloTransformer(model_config(cfg, meta["codec"], T)).to(device)  # K, card: the data's
    if world.rank:  # dropout masks of their own on the other ranks (sax/distributed.py)
        torch.manual_seed(cfg.seed + 1_000_003 * world.rank)
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
    train_w = Windows(cfg.data, "train", meta, T)
    evals = evaluation_set(cfg, meta, T)
    baseline = unigram_entropy(train_w.solo, meta["codec"]["card"])
    progress = start_or_resume(out, model, optimizer, scaler, gen, cfg, device, world)
    page = RunPage(out, cfg, meta, evals, device, progress.step) if world.main else None
    # The compiled module shares its weights with `model`; checkpoints save `model`, so
    # their keys never carry torch.compile's "_orig_mod." prefix.
    train_model = torch.compile(model) if cfg.compile else model
    peak = peak_flops(device) if device.type == "cuda" else None
    return Run(cfg, out, device, meta, T, model, train_model, optimizer, scaler, amp_dtype, peak_lr,
               gen, train_w, evals, baseline, progress, page, wrap(train_model, world, device),
               world, peak=peak, teacher=teacher)


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
                         chord_head=cfg.chord_aux > 0, ahead_head=cfg.ahead_aux > 0,
                         pitch_plan=cfg.pitch_plan, **dropout, **depth, **width)


def start_or_resume(out, model, optimizer, scaler, gen, cfg, device, world=World()):
    """Progress of a new run (metrics.jsonl emptied), or of latest/ carried on (its later lines
    dropped). Rank 0 alone touches metrics.jsonl."""
    metrics_file = out / "metrics.jsonl"
    if not cfg.resume:
        if world.main:
            metrics_file.unlink(missing_ok=True)
        return Progress()
    progress = resume_run(out / "latest", model, optimizer, scaler, gen, cfg, device, world)
    # lines logged after the checkpoint will be logged again: drop them
    if world.main and metrics_file.exists():
        keep = "".join(json.dumps(row) + "\n" for row in read_metrics(metrics_file)
                       if row["step"] <= progress.step)
        atomic_write(metrics_file, lambda f: f.write(keep), mode="w")
    return progress


def train_step(run):
    """One optimizer step over target_batch windows -> its metrics.jsonl row."""
    cfg, progress, t0 = run.cfg, run.progress, time.time()
    lr = lr_at(progress.step, cfg, run.peak_lr)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    loss_sum, aux_sum, world = 0.0, {}, run.world
    # Every rank draws every micro-batch of the step from the same generator, and computes
    # its own share (i % world): together they take the step one process would take.
    mine = range(world.rank, cfg.target_batch // cfg.batch_size, world.size)
    for i in range(cfg.target_batch // cfg.batch_size):
        backing, solo, where = run.train_w.sample(cfg.batch_size, run.gen, where=True)  # [B, K, T]
        aids = aid_targets(run, where, backing, solo) if i in mine else {}  # the loss's keywords
        if run.teacher is not None and i in mine:  # it hears the whole band, so its future
            with run.autocast():
                aids["teacher"] = teacher_logits(run.teacher, *(x.to(run.device)
                                                                for x in (backing, solo)))
        # Classifier-free guidance needs one model that knows both p(solo | backing)
        # and p(solo): some windows are trained with the null backing instead.
        drop = torch.rand(cfg.batch_size, generator=run.gen) < cfg.cond_dropout  # [B]
        # The solo's past as the decoder reads it (sax/past.py): tokens hidden, [B, K, S],
        # and spans held, [B, K, T]; each drawn only when on, so that a run with both off
        # draws exactly the random stream of the runs before them.
        K = solo.size(1)
        hide = hidden_tokens(cfg.solo_dropout, (cfg.batch_size, K, run.T + K - 1), run.gen,
                             run.device)
        past = read_past(solo, cfg.solo_hold, cfg.solo_swap, run.model.cfg.frame_rate, run.gen,
                         run.device)
        if i not in mine:
            continue  # another rank's micro-batch
        aids |= {"past": past} if past is not None else {}  # a keyword only when on
        with no_sync(run.loss_fn, world, last=i == mine[-1]):
            with run.autocast():
                loss, _, aux = run.loss_fn(backing.to(run.device), solo.to(run.device),
                                           drop.to(run.device), hide, **aids)
            # The auxiliary losses join the gradient only; the logged loss stays the codes'
            # cross-entropy, comparable with every other run's.
            weights = {"pitch": cfg.pitch_aux, "chord": cfg.chord_aux, "ahead": cfg.ahead_aux,
                       "distill": cfg.distill}
            total = loss + sum(weights[name] * ce for name, ce in aux.items())
            # Gradients add up over the micro-batches, so each is scaled by 1 / accum: the
            # sum is then the gradient of the mean loss over the whole target batch.
            run.scaler.scale(total / run.accum).backward()
        loss_sum += loss.item() / run.accum
        for name, ce in aux.items():
            aux_sum[name] = aux_sum.get(name, 0.0) + ce.item() / run.accum
    loss_sum = mean(loss_sum, world)  # the whole step's, on every rank
    aux_sum = {name: mean(ce, world) for name, ce in aux_sum.items()}
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
    if world.main:
        log_metrics(run.metrics_file, row)
    return row


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


def train(cfg):
    """The whole run; returns the summary dict (also written to summary.json).

    Ctrl-C ends the step under way, saves latest/ and exits with code 130, after saying
    how to continue; --resume then gives exactly the run that was not interrupted. One
    process at a time in a run folder: a second train.py on the same --out refuses.
    """
    check_train_settings(cfg)
    cfg.out = cfg.out or f"runs/{cfg.preset}"
    world = world_from_env()
    if cfg.target_batch % (cfg.batch_size * world.size):
        raise SystemExit(f"--target-batch {cfg.target_batch} over {world.size} processes: a "
                         f"multiple of --batch-size x processes ({cfg.batch_size * world.size}), "
                         "so that every rank computes the same number of micro-batches")
    try:  # one process at a time in a run folder; under torchrun the job is that process (rank 0)
        with guard.FolderLock(cfg.out, "train.py") if world.main else nullcontext():
            return train_loop(setup_run(cfg, world))
    finally:
        leave(world)


def train_loop(run):
    """Step, evaluate and save until max_steps (the run's own settings, run.cfg)."""
    cfg, world = run.cfg, run.world
    if world.main:
        describe(run)
    bar = tqdm(total=cfg.max_steps, initial=run.progress.step, desc="train", unit="step",
               disable=not world.main)
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
                if world.main:  # the others wait: evaluation is rank 0's (docs/scaling.md)
                    evaluate_and_save(run)
                barrier(world)
            # One rank's Ctrl-C stops all, at the same step. Only the handler writes
            # stop.requested: a Ctrl-C that lands while the ranks agree counts next step.
            stopping = any_rank(stop.requested, world)
            if step % cfg.save_every == 0 or step == cfg.max_steps or stopping:
                rank_rngs = gathered(torch.get_rng_state(), world)  # every rank's dropout
                if world.main:
                    run.checkpoint("latest", rank_rngs)
                barrier(world)
            # Ctrl-C was pressed during this step: latest/ now holds its end, exactly.
            if stopping and step < cfg.max_steps:
                bar.close()
                again = command_line("train.py", replace(cfg, resume=True, overwrite=False))
                if world.many:  # the job's own launcher, whatever its options were
                    again = again.replace("python train.py", "torchrun <its options> train.py", 1)
                if world.main:
                    print(f"interrupted: saved {run.out / 'latest'} at step "
                          f"{step}. Continue exactly where it stopped with: {again}")
                leave(world)  # together, after the save's barrier: no rank leaves one behind
                raise SystemExit(130)  # 128 + SIGINT, as shells report a Ctrl-C
    bar.close()
    barrier(world)  # every rank past its last step and save; then the group goes, together
    leave(world)
    return finish(run) if world.main else {}  # the summary and listening test: rank 0's alone


if __name__ == "__main__":
    guard.loaded()
    config = parse_settings(TrainConfig, description=__doc__.split("\n\n")[0])
    check_install()
    if config.push_only:
        if not config.push_to_hub:
            raise SystemExit("--push-only needs --push-to-hub user/name")
        if world_from_env().main:  # one upload, even if started under torchrun
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
    if config.push_to_hub and world_from_env().main:  # under torchrun, rank 0 uploads
        push_to_hub(Path(config.out) / "best", config.push_to_hub, config.hub_private)
