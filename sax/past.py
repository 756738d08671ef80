"""What the decoder reads of the solo's own past in training (train.py).

Teacher forcing shows the decoder the true lead up to the frame before the one it writes.
Sampling shows it its own notes instead, and the two part where the model could not know
what the lead did: a causal model that hears the band 80 ms late (phase 5) cannot start
the lead's note on a chord change it has not yet heard, so its own past is still on the old
note when the change reaches it. Teacher forcing never showed it such a past (the true
lead had already moved), so it learned to continue what it hears itself play.

Three corruptions of the past, the targets left whole:
- hidden tokens (--solo-dropout): each past token replaced by the special token, so that
  the model leans on the band for what it cannot read;
- held spans (--solo-hold): a span of frames reads as a copy of the frame before it, as if
  the soloist had held on where the lead moved on, so that the model learns to follow the
  band out of a stale past (the same spirit as scheduled sampling, at no extra forward pass);
- foreign spans (--solo-swap): a span of frames reads another window's solo at the same
  frames, a note that most often is not of the band's chord, so that the model learns to
  leave a wrong note of its own for what the band says.
"""
import torch

# The longest held span: a quarter of a second, about three times the live recipe's
# lookahead (80 ms), a late reaction and then some.
HOLD_S = 0.25


def hidden_tokens(rate, shape, gen, device="cpu"):
    """Solo dropout: [B, K, S] bool on device, True for a past token hidden (each with
    probability `rate`); None when rate is 0 (and then nothing is drawn from gen)."""
    return (torch.rand(shape, generator=gen) < rate).to(device) if rate > 0 else None


def held_frames(rate, B, T, longest, gen):
    """[B, T] long: the frame each frame of the past is read from. A span starts at each
    frame t >= 1 with probability `rate` (none starts inside another) and lasts 1 to
    `longest` frames, all of them reading frame t - 1; every other frame reads itself."""
    start = torch.rand(B, T, generator=gen) < rate
    length = torch.randint(1, longest + 1, (B, T), generator=gen)
    source = torch.arange(T).repeat(B, 1)                                       # [B, T]
    left = torch.zeros(B, dtype=torch.long)   # frames still held in each row's span
    held = torch.zeros(B, dtype=torch.long)   # the frame they read
    for t in range(1, T):
        begin = start[:, t] & (left == 0)
        held = torch.where(begin, t - 1, held)
        left = torch.where(begin, length[:, t], left)
        source[:, t] = torch.where(left > 0, held, source[:, t])
        left = (left - 1).clamp(min=0)
    return source


def held_past(solo, rate, frame_rate, gen, device="cpu"):
    """--solo-hold: solo codes [B, K, T] -> the past as the decoder reads it, [B, K, T] on
    device,
    spans of frames held on the frame before them (held_frames, at most HOLD_S long);
    None when rate is 0 (and then nothing is drawn from gen)."""
    if rate <= 0:
        return None
    B, K, T = solo.shape
    source = held_frames(rate, B, T, max(1, round(HOLD_S * frame_rate)), gen)    # [B, T]
    return solo.gather(2, source[:, None, :].expand(B, K, T)).to(device)


def foreign_past(solo, rate, frame_rate, gen, device="cpu"):
    """--solo-swap: solo codes [B, K, T] -> the past as the decoder reads it, [B, K, T] on
    device: spans placed as held_frames places them, every frame of a span read from the
    next row's solo (another window) at the same frame; None when rate is 0 (and then
    nothing is drawn from gen)."""
    if rate <= 0:
        return None
    B, K, T = solo.shape
    source = held_frames(rate, B, T, max(1, round(HOLD_S * frame_rate)), gen)    # [B, T]
    inside = (source != torch.arange(T))[:, None, :]                            # [B, 1, T]
    return torch.where(inside, solo.roll(1, dims=0), solo).to(device)


def read_past(solo, hold, swap, frame_rate, gen, device="cpu"):
    """The past as train.py hands it to the decoder: held spans (rate `hold`), then foreign
    spans over them (rate `swap`) -> [B, K, T] on device; None when both are off (and then
    nothing is drawn from gen, so such a run draws the random stream of the runs before)."""
    past = held_past(solo, hold, frame_rate, gen)
    swapped = foreign_past(solo if past is None else past, swap, frame_rate, gen)
    past = swapped if swapped is not None else past
    return None if past is None else past.to(device)
