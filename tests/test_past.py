"""sax/past.py: what the decoder reads of the solo's past in training (--solo-dropout,
--solo-hold), and the model's loss reading it."""
import math

import pytest
import torch

from model import ModelConfig, SoloTransformer, codebook_cross_entropy, teacher_forcing
from sax.past import HOLD_S, foreign_past, held_frames, held_past, hidden_tokens, read_past


def test_held_frames_read_the_frame_before_their_span_and_no_further_back():
    gen = torch.Generator().manual_seed(0)
    source = held_frames(0.1, 64, 200, 7, gen)                                  # [B, T]
    frames = torch.arange(200).expand(64, -1)
    held = source != frames
    assert held.any() and not held[:, 0].any(), "frame 0 has no frame before it to hold"
    assert (source <= frames).all(), "a held frame reads a later one"
    for row, src in zip(held, source):
        t = 0
        while t < 200:
            if not row[t]:
                t += 1
                continue
            end = t
            while end < 200 and row[end] and src[end] == t - 1:
                end += 1
            # a span: every frame reads frame t - 1, and it is 1 to 7 frames long
            assert 1 <= end - t <= 7, f"a span of {end - t} frames, longest 7"
            t = end
    # about a tenth of the free frames starts a span of 4 frames on average
    share = held.float().mean().item()
    assert 0.2 < share < 0.4, f"{share:.2f} of the frames held"


def test_off_draws_nothing_and_leaves_the_solo_alone():
    gen = torch.Generator().manual_seed(3)
    state = gen.get_state()
    solo = torch.randint(0, 32, (2, 4, 20))
    assert held_past(solo, 0.0, 75, gen) is None and hidden_tokens(0.0, (2, 4, 23), gen) is None
    assert torch.equal(gen.get_state(), state), "an aid that is off drew random numbers"
    # on: the held past is the solo's own codes, all K codebooks of a frame held together
    past = held_past(solo, 0.2, 75, gen)
    assert past.shape == solo.shape and not torch.equal(past, solo)
    for b in range(2):
        for t in range(20):
            match = [u for u in range(t + 1) if torch.equal(solo[b, :, u], past[b, :, t])]
            assert match, f"row {b} frame {t} reads no frame of its own solo"


def test_foreign_spans_read_the_next_rows_solo_at_the_same_frames():
    gen = torch.Generator().manual_seed(5)
    state = gen.get_state()
    solo = torch.randint(0, 32, (3, 4, 200))
    assert foreign_past(solo, 0.0, 75, gen) is None and read_past(solo, 0, 0, 75, gen) is None
    assert torch.equal(gen.get_state(), state), "an aid that is off drew random numbers"
    past = foreign_past(solo, 0.05, 75, gen)
    own = (past == solo).all(1)                                                   # [B, T]
    other = (past == solo.roll(1, dims=0)).all(1)
    assert (own | other).all(), "a frame reads neither its own solo nor the next row's"
    assert 0.1 < (~own).float().mean() < 0.6, "spans too rare or too common"
    # held spans first, then foreign ones over them: both corruptions are in the past
    both = read_past(solo, 0.05, 0.05, 75, torch.Generator().manual_seed(5))
    held = held_past(solo, 0.05, 75, torch.Generator().manual_seed(5))
    assert not torch.equal(both, held) and ((both == held).all(1)).float().mean() > 0.3


def test_spans_last_at_most_a_quarter_second():
    gen = torch.Generator().manual_seed(1)
    source = held_frames(0.02, 8, 3000, round(HOLD_S * 75), gen)
    age = torch.arange(3000) - source                                      # how far back each reads
    assert age.max().item() <= round(HOLD_S * 75), f"a frame reads {age.max().item()} frames back"
    assert age.max().item() >= round(HOLD_S * 75) - 2, "the longest spans are never drawn"


def test_the_loss_reads_the_held_past_and_keeps_the_targets():
    torch.manual_seed(0)
    model = SoloTransformer(ModelConfig(card=32, d_model=32, n_heads=4, d_ff=64, max_frames=12)).eval()
    backing, solo = torch.randint(0, 32, (2, 4, 12)), torch.randint(0, 32, (2, 4, 12))
    assert torch.equal(model.loss(backing, solo, past=solo)[0], model.loss(backing, solo)[0])
    # every frame held on frame 0: the decoder reads frame 0 over and over, scored on the truth
    stale = solo[..., :1].expand(-1, -1, 12)
    target, _ = teacher_forcing(solo, 32)
    _, dec_in = teacher_forcing(stale, 32)
    expected = codebook_cross_entropy(model(backing, dec_in), target, 32)[0]
    held = model.loss(backing, solo, past=stale)[0]
    assert torch.allclose(held, expected)
    assert not torch.allclose(held, model.loss(backing, solo)[0])


def test_solo_hold_trains_and_is_refused_out_of_range(demo_dataset, tmp_path):
    import train as T
    from conftest import quick_train_config
    plain = T.train(quick_train_config(demo_dataset[0], tmp_path / "a", max_steps=3))
    held = T.train(quick_train_config(demo_dataset[0], tmp_path / "b", solo_hold=0.2, max_steps=3))
    assert math.isfinite(held["best_val_ce"]) and held["steps"] == 3
    assert held["best_val_ce"] != plain["best_val_ce"], "the held past changed nothing"
    with pytest.raises(SystemExit, match="solo-hold"):
        T.check_train_settings(quick_train_config(demo_dataset[0], tmp_path, solo_hold=1.0))
    swapped = T.train(quick_train_config(demo_dataset[0], tmp_path / "c", solo_swap=0.2,
                                         max_steps=3))
    assert swapped["best_val_ce"] not in (plain["best_val_ce"], held["best_val_ce"])
    with pytest.raises(SystemExit, match="solo-swap"):
        T.check_train_settings(quick_train_config(demo_dataset[0], tmp_path, solo_swap=1.0))
