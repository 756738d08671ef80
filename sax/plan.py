"""The pitch plan (train.py --pitch-plan, model.ModelConfig.pitch_plan): choose the note,
then write it.

Without a plan, each codebook's head turns the decoder's state straight into codes, and
the choice of note (which pitch class, or a rest) is left implicit in them. With a plan
the choice is made first and out loud: at step s the pitch head (the pitch aid's, train.py
--pitch-aux) names frame s's pitch class, one of 12 or a rest, and a draw from it becomes
the frame's plan. Then every codebook's head adds to its logits a learned bias for the
planned class of the frame it writes (codebook k at step s writes frame s - k, by the
delay pattern): a row of `SoloTransformer.pitch_bias` [K, 13, card], which codes a note
of that class makes likely. In training the plan is the solo's own notes, teacher-forced
like the codes; sampling draws it.

The two halves factor each frame coarse to fine, p(class) * p(codes | class): the
harmony becomes a 13-way choice read from states that hear the band, and the code heads
need only sound the class they are given. In a share of the training windows
(UNPLANNED) no class is named (NO_CLASS: no bias), so the code heads also learn to write
without a plan: the validation loss, read without one, stays the codes' own.
"""
import torch

from model import build_delay_pattern

NO_CLASS = 13  # no note named: model.loss pads the bias table with a row of zeros for it
UNPLANNED = 0.3  # the share of training windows whose plan is hidden


def check_plan(cfg):
    """train.py's --pitch-plan without a pitch head trained on notes to draw from: one line."""
    if cfg.pitch_plan and not (cfg.pitch_aux and cfg.pitch_targets != "chord"):
        raise SystemExit("--pitch-plan draws the notes the pitch head names: add --pitch-aux "
                         "(1: its loss beside the codes', a joint likelihood) on notes, "
                         "--pitch-targets tracked or truth")


def plan_steps(pitch, K):
    """The planned class of each position of the delay pattern: pitch [B, T] (0-11 a class,
    12 a rest, -100 unknown) -> [B, K, S], codebook k at step s reads frame s - k's class
    (NO_CLASS where that frame does not exist or its note is unknown): each frame's class,
    once per codebook, laid out as the codes are."""
    known = pitch.masked_fill(pitch < 0, NO_CLASS)                              # [B, T]
    return build_delay_pattern(known[:, None].expand(-1, K, -1), NO_CLASS)[0]  # [B, K, S]


def teacher_plan(pitch, K):
    """Training's plan for windows whose notes are pitch [B, T]: plan_steps, with every class
    of a random UNPLANNED share of the windows hidden (torch's own generator, as dropout)."""
    hidden = torch.rand(pitch.size(0), device=pitch.device) < UNPLANNED           # [B]
    return plan_steps(pitch.masked_fill(hidden[:, None], -100), K)


class PlanDraw:
    """Sampling's half of the plan: at each step, draw the frame's class from the pitch head,
    then add every codebook's bias for the class of its own frame.

    Built per sampler (offline or streaming) for `batch` solos over `steps` steps. The
    class is drawn like the codes (choose: the sampler's guidance, then sample_next with
    its settings and generator); both guidance rows get the same bias, so the plan is
    one per solo.
    """

    def __init__(self, model, batch, steps, device):
        # [K, 14, card]: NO_CLASS's row of zeros padded on, as model.loss does
        self.table = torch.nn.functional.pad(model.pitch_bias, (0, 0, 0, 1))
        self.head = model.pitch_logits
        self.drawn = torch.full((batch, steps), NO_CLASS, dtype=torch.long, device=device)
        self.codebooks = torch.arange(self.table.size(0), device=device)       # [K]

    def __call__(self, x, logits, s, choose):
        """x [R, 1, D] the decoder's state at step s, logits [R, K, card] its code logits (R:
        the solos, twice that with guidance) -> the logits with each codebook's bias."""
        self.drawn[:, s] = choose(self.head(x))[:, 0]                # [R, 1, 13] -> [B]
        frames = s - self.codebooks                                  # [K]: codebook k's frame
        classes = torch.where(frames >= 0, self.drawn[:, frames.clamp(min=0)], NO_CLASS)  # [B, K]
        bias = self.table[self.codebooks, classes]                                  # [B, K, card]
        return logits + bias.repeat(logits.size(0) // bias.size(0), 1, 1).to(logits.dtype)
