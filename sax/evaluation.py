"""
sax/evaluation.py -- what train.py measures: the validation cross-entropy per codebook, the
conditioning gain, the overfitting check, the FLOPs behind MFU, and the run's closing summary
and report.
"""
import json
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np
import torch

from model import build_delay_pattern, position_cross_entropy, teacher_forcing
from sax.checkpoints import load_model, read_json, resolve_checkpoint
from sax.codec import UNTRAINED_AUDIO
from sax.files import write_json
from sax.listening import (ListeningSet, counting_listener, fit_probes, listening_masks,
                           listening_test, listening_windows, scoring_set)


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


def overfitting(history):
    """Validation loss risen twice in a row while the training loss kept falling: the
    failure reported by earlier implementations of this idea. history: the (train loss,
    validation loss) of each evaluation so far. train.py warns when it is True;
    ablation.py counts the evaluations where it was."""
    if len(history) < 3:
        return False
    (train3, val3), (_, val2), (train1, val1) = history[-3:]
    return val1 > val2 > val3 and train1 < train3


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
        split, scored = (scoring_set(cfg.data, run.meta, run.T, cfg.eval_windows)
                         if cfg.listen_test else (None, None))
        if scored is not None:
            # Solos written by the best checkpoint (loaded beside the live model, which
            # stays as training left it), scored against the demo band's kicks and chords
            # on the test songs: the validation songs chose the checkpoint.
            best_model, _ = load_model(best_dir, run.device)
            # the run page's probes when it has them (the same deterministic fit), else fitted now
            probes = run.page.probes if run.page.probes is not None else fit_probes(
                cfg.data, run.meta, run.T)
            summary["best"].update(listening_test(best_model, scored, probes,
                                                  cfg.batch_size, run.device, seed=cfg.seed))
            summary["best"].update(counting_listener(probes, scored))
            summary["best"].update(listening_split=split, listening_windows=len(scored.backing))
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
        print(f"listening test (best checkpoint, {best['listening_windows']} windows of the "
              f"{best['listening_split']} songs; "
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
              f"{counted[0]:.3f} / {counted[1]:.3f} (sax.listening.counting_listener: how much "
              "harmony the backing's tokens hold)")
    print(f"Listen: python generate.py --checkpoint {run.out / 'best'}")
    if run.meta["codec"]["untrained"]:
        print("NOTE: this dataset used the UNTRAINED codec: the "
              f"metrics are real, but {UNTRAINED_AUDIO}.")


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
