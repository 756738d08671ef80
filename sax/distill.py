"""
sax/distill.py -- a teacher for a causal model (phase 5, train.py --distill-from).

A live model hears the band only up to L frames before the frame it writes
(--lookahead-ms), and maximum likelihood alone teaches it little about a future it cannot
hear: the band's kick that the lead's note lands on is, to it, noise. An offline model
(non-causal, aligned: python train.py as it stands) hears the whole window, so its
distribution over each code says what the band made likely there. Distillation trains
the causal student toward those distributions on the same windows, a KL term beside the
codes' loss (model.distillation): the student learns to spread its guesses where the
teacher, who heard, put them (ReaLchords trains an online accompanist this way from a
teacher that sees the future [@wu2024realchords]).

The teacher is frozen and evaluated once per micro-batch, under no_grad: it costs one
forward pass of its size per step, and nothing in the student's checkpoint.
"""
import torch

from model import teacher_forcing
from sax.checkpoints import load_model


def load_teacher(path, meta, device):
    """A checkpoint to distil from, frozen on `device`; one line when it does not fit the
    dataset (its codes are another codec's) or is itself a causal model."""
    teacher, _ = load_model(path, device)
    codec, cfg = meta["codec"], teacher.cfg
    if (cfg.n_codebooks, cfg.card) != (codec["n_codebooks"], codec["card"]):
        raise SystemExit(f"--distill-from {path}: a model of {cfg.n_codebooks} x {cfg.card} codes, "
                         f"the dataset's are {codec['n_codebooks']} x {codec['card']}. Fix: a "
                         "teacher trained on this dataset (python train.py --data ...)")
    if cfg.causal_encoder:
        raise SystemExit(f"--distill-from {path}: a causal model hears no more than its student. "
                         "Fix: a teacher trained without --causal-encoder")
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


@torch.no_grad()
def teacher_logits(teacher, backing, solo):
    """The teacher's logits for every code of the windows, hearing the whole band and the
    whole solo past: backing, solo [B, K, T] -> [B, K, S, card]."""
    _, dec_in = teacher_forcing(solo, teacher.cfg.card)                        # [B, K, S]
    return teacher.logits(teacher.decode(teacher.encode(backing), dec_in))
