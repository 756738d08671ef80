"""model.py: delay pattern, loss masking, causality, attention kernels, sampling, presets."""
from dataclasses import asdict

import pytest
import torch

from model import PRESETS, ModelConfig, SoloTransformer, attention, attention_mask, build_delay_pattern, codebook_cross_entropy, preset_config, revert_delay_pattern, teacher_forcing
from sax.checkpoints import model_config_of
from sax.sampling import StreamingSampler, sample_next, sample_solo, sample_solo_plain


def stream_all(sampler, backing):
    """Push every frame of backing [1, K, T] into sampler, then finish: solo [B, K, n_frames]."""
    ahead = [] if sampler.ahead is None else list(sampler.ahead.unbind(-1))  # a model that looks ahead
    frames = ahead + [f for f in (sampler.push(backing[..., t]) for t in range(backing.size(-1))) if f is not None]
    rest = sampler.finish()
    return torch.cat(frames and [torch.stack(frames, dim=-1)] + ([rest] if rest is not None else []), dim=-1)

CARD = 32


def tiny_model(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = ModelConfig(n_codebooks=4, card=CARD, d_model=32, n_heads=4, n_enc_layers=2, n_dec_layers=2,
                      d_ff=64, max_frames=64, **kw)
    return SoloTransformer(cfg).eval()


def random_codes(B, K, T, seed=1):
    return torch.randint(0, CARD, (B, K, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("K,T", [(1, 1), (1, 7), (2, 3), (4, 5), (4, 50), (8, 2)])
def test_delay_pattern_round_trip_and_positions(K, T):
    codes = random_codes(3, K, T)
    seq, mask = build_delay_pattern(codes, CARD)
    assert seq.shape == (3, K, T + K - 1), f"delayed shape {tuple(seq.shape)}"
    assert torch.equal(revert_delay_pattern(seq), codes), "revert(build(x)) != x"
    for k in range(K):
        for s in range(T + K - 1):
            t = s - k
            if 0 <= t < T:
                assert mask[k, s] and torch.equal(seq[:, k, s], codes[:, k, t]), f"k={k} s={s} should hold frame {t}"
            else:
                assert not mask[k, s] and (seq[:, k, s] == CARD).all(), f"k={k} s={s} should be the special token"


def test_loss_ignores_logits_at_special_positions():
    torch.manual_seed(0)
    codes = random_codes(2, 4, 6)
    target, mask = build_delay_pattern(codes, CARD)
    logits = torch.randn(2, 4, target.size(-1), CARD)
    base, per_k = codebook_cross_entropy(logits, target, CARD)
    changed = logits.clone()
    changed[:, ~mask] = torch.randn_like(changed[:, ~mask]) * 100
    changed[0, 3, 0] = float("inf")  # a padded position: must not turn the loss into nan
    again, per_k2 = codebook_cross_entropy(changed, target, CARD)
    assert torch.equal(base, again) and torch.equal(per_k, per_k2), "logits at special positions moved the loss"
    real = logits.clone()
    real[:, mask] += torch.randn_like(real[:, mask])
    assert not torch.equal(codebook_cross_entropy(real, target, CARD)[0], base), "real positions must count"


def _grad_of_output_wrt_inputs(model, backing, dec_in, out_step):
    """d(logits at decoder step out_step)/d(embedded inputs), through input embeddings made leaf tensors."""
    enc_x = model.embed(model.enc_emb, backing).detach().requires_grad_()
    dec_x = model.embed(model.dec_emb, dec_in).detach().requires_grad_()
    model.embed = lambda table, tokens: enc_x if table is model.enc_emb else dec_x
    model(backing, dec_in)[:, :, out_step].sum().backward()
    del model.embed
    return enc_x.grad, dec_x.grad


@pytest.mark.parametrize("causal,aligned", [(False, False), (True, False), (True, True)])
def test_causality_by_gradient(causal, aligned):
    model = tiny_model(causal_encoder=causal, aligned_backing=aligned)
    backing, dec_in = random_codes(1, 4, 12), random_codes(1, 4, 15, seed=2)
    step = 5
    enc_grad, dec_grad = _grad_of_output_wrt_inputs(model, backing, dec_in, step)
    future_dec = dec_grad[:, step + 1:].abs().sum()
    assert future_dec == 0, f"decoder output at step {step} moved with future decoder inputs ({future_dec})"
    assert dec_grad[:, :step + 1].abs().sum() > 0, "decoder output must depend on its past"
    future_enc = enc_grad[:, step + 1:].abs().sum()
    if causal:
        assert future_enc == 0, f"causal encoder: step {step} saw future backing frames ({future_enc})"
    else:
        assert future_enc > 0, "offline encoder: the decoder should see the whole backing"


def test_window_limits_what_is_seen():
    model = tiny_model(causal_encoder=True, attn_window=4, aligned_backing=True)
    backing, dec_in = random_codes(1, 4, 30), random_codes(1, 4, 33, seed=2)
    step = 25
    enc_grad, dec_grad = _grad_of_output_wrt_inputs(model, backing, dec_in, step)
    # Each attention hop reaches back at most window - 1 = 3 positions. Decoder inputs:
    # two self-attention hops. Backing: the aligned path's convolution (K - 1 = 3 frames
    # back) into the decoder input, then the decoder's two self-attention hops, and
    # before it two encoder hops (the cross-attention route reaches less far).
    dec_reach, enc_reach = step - 2 * 3, step - 3 - 2 * 3 - 2 * 3
    assert dec_grad[:, :dec_reach].abs().sum() == 0, "decoder window leaked"
    assert enc_grad[:, :enc_reach].abs().sum() == 0, "encoder/cross window leaked"
    assert dec_grad[:, dec_reach].abs().sum() > 0 and enc_grad[:, enc_reach].abs().sum() > 0, "reach too short"


@pytest.mark.parametrize("causal,window", [(False, None), (True, None), (True, 3)])
def test_manual_attention_equals_fused(causal, window):
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 4, 9, 8), torch.randn(2, 4, 11, 8), torch.randn(2, 4, 11, 8)
    mask = attention_mask(9, 11, causal, window, "cpu", q_start=2)
    a, b = attention(q, k, v, mask, "manual"), attention(q, k, v, mask, "sdpa")
    assert torch.allclose(a, b, atol=1e-6), f"manual vs sdpa differ by {(a - b).abs().max()}"
    m1, m2 = tiny_model(attn_impl="manual"), tiny_model(attn_impl="sdpa")
    backing, dec_in = random_codes(2, 4, 10), random_codes(2, 4, 13, seed=3)
    diff = (m1(backing, dec_in) - m2(backing, dec_in)).abs().max()
    assert diff < 1e-5, f"whole model: manual vs sdpa differ by {diff}"


@pytest.mark.parametrize("causal,cfg_coef,aligned", [(False, None, False), (True, None, False), (False, 3.0, False),
                                                     (False, None, True), (True, 3.0, True)])
def test_cached_greedy_equals_plain_loop(causal, cfg_coef, aligned):
    model = tiny_model(causal_encoder=causal, aligned_backing=aligned)
    backing = random_codes(2, 4, 10)
    plain = sample_solo_plain(model, backing, temperature=0, cfg_coef=cfg_coef)
    cached = sample_solo(model, backing, temperature=0, cfg_coef=cfg_coef)
    assert plain.shape == (2, 4, 10) and torch.equal(plain, cached), "KV-cached tokens differ from the plain loop"
    sampled_plain = sample_solo_plain(model, backing, temperature=1.0, seed=7)
    sampled_cached = sample_solo(model, backing, temperature=1.0, seed=7)
    assert torch.equal(sampled_plain, sampled_cached), "seeded sampling differs between the two loops"


def test_prompt_is_kept():
    model = tiny_model()
    backing, prompt = random_codes(1, 4, 10), random_codes(1, 4, 4, seed=9)
    out = sample_solo(model, backing, prompt=prompt, seed=3)
    assert torch.equal(out[..., :4], prompt), "the prompt frames must come back unchanged"


def test_top_k_one_is_greedy_and_special_never_sampled():
    model = tiny_model()
    backing = random_codes(2, 4, 10)
    assert torch.equal(sample_solo(model, backing, temperature=1.0, top_k=1, seed=5),
                       sample_solo(model, backing, temperature=0)), "top-k=1 must equal greedy"
    for kw in [dict(temperature=1.5), dict(temperature=1.0, top_p=0.9), dict(temperature=0.8, top_k=5)]:
        out = sample_solo(model, backing, seed=11, **kw)
        assert out.max() < CARD and out.min() >= 0, f"sampled the special token with {kw}"
    logits = torch.randn(3, 4, CARD)
    assert (sample_next(logits, top_p=1e-6, generator=torch.Generator().manual_seed(0)) == logits.argmax(-1)).all(), \
        "a tiny top-p must keep only the most likely code"


def test_guidance_coefficient_one_is_conditional():
    model = tiny_model()
    backing = random_codes(2, 4, 10)
    plain = sample_solo(model, backing, temperature=1.0, seed=4)
    guided_one = sample_solo(model, backing, temperature=1.0, seed=4, cfg_coef=1.0)
    assert torch.equal(plain, guided_one), "cfg_coef=1 must be exactly conditional sampling"
    guided_three = sample_solo(model, backing, temperature=0, cfg_coef=3.0)
    assert not torch.equal(sample_solo(model, backing, temperature=0), guided_three), \
        "cfg_coef=3 should change something (the null condition is not the backing)"


@pytest.mark.parametrize("window,aligned", [(None, False), (6, False), (None, True), (6, True)])
def test_streaming_equals_offline(window, aligned):
    model = tiny_model(causal_encoder=True, attn_window=window, aligned_backing=aligned)
    backing = random_codes(1, 4, 20)
    offline = sample_solo(model, backing, temperature=1.0, seed=13)
    sampler = StreamingSampler(model, n_frames=20, temperature=1.0, seed=13)
    streamed = stream_all(sampler, backing)
    assert torch.equal(streamed, offline), "streamed tokens differ from offline generation"
    if window:
        assert sampler.state.self_caches[0].k.size(2) == window, "cache must be bounded by the window"


def test_streaming_guidance_and_several_solos_equal_offline():
    model = tiny_model(causal_encoder=True, attn_window=6, aligned_backing=True)
    backing = random_codes(1, 4, 15)
    for cfg_coef in (None, 3.0):
        offline = sample_solo(model, backing.repeat(2, 1, 1), temperature=1.0, seed=5, cfg_coef=cfg_coef)
        streamed = stream_all(StreamingSampler(model, 15, batch=2, temperature=1.0, seed=5, cfg_coef=cfg_coef), backing)
        assert streamed.shape == (2, 4, 15), f"two solos expected, got {tuple(streamed.shape)}"
        assert torch.equal(streamed, offline), f"cfg_coef={cfg_coef}: streamed tokens differ from offline generation"
        assert not torch.equal(streamed[0], streamed[1]), "the two solos of one batch should differ"
    unguided = stream_all(StreamingSampler(model, 15, temperature=0, seed=5), backing)
    guided = stream_all(StreamingSampler(model, 15, temperature=0, seed=5, cfg_coef=3.0), backing)
    assert not torch.equal(unguided, guided), "cfg_coef=3 must change what streaming writes"


@pytest.mark.parametrize("lookahead,window", [(2, None), (3, 6), (9, 6), (9, None)])
def test_lookahead_streaming_equals_offline(lookahead, window):
    """A model that writes L frames ahead: streamed tokens equal offline ones, guidance too, with L
    below, at and above K - 1 (where frames are finished before the first backing frame arrives)."""
    model = tiny_model(causal_encoder=True, attn_window=window, lookahead=lookahead)
    backing = random_codes(1, 4, 20)
    for cfg_coef in (None, 3.0):
        offline = sample_solo(model, backing, temperature=1.0, seed=13, cfg_coef=cfg_coef)
        sampler = StreamingSampler(model, n_frames=20, temperature=1.0, seed=13, cfg_coef=cfg_coef)
        early = 0 if sampler.ahead is None else sampler.ahead.size(-1)
        assert early == max(0, lookahead - 3), f"L={lookahead}: {early} frames before any backing"
        assert torch.equal(stream_all(sampler, backing), offline), f"L={lookahead} cfg={cfg_coef}: streamed != offline"
    assert torch.equal(offline, sample_solo_plain(model, backing, temperature=1.0, seed=13, cfg_coef=3.0))


@pytest.mark.parametrize("lookahead", [0, 5])
def test_lookahead_writes_each_frame_from_the_band_L_frames_before(lookahead):
    """Solo frame t is written from backing frames <= t - L: changing backing frame j moves no
    logit of a step before j + L (step s holds codebook k of frame s - k), and moves step j + L."""
    model = tiny_model(causal_encoder=True, lookahead=lookahead)
    backing, solo, j = random_codes(1, 4, 24), random_codes(1, 4, 24, seed=2), 10
    changed = backing.clone()
    changed[..., j] = (changed[..., j] + 1) % CARD
    dec_in = build_delay_pattern(torch.cat([torch.full((1, 4, 1), CARD), solo[..., :-1]], -1), CARD)[0]
    with torch.no_grad():
        a, b = model(backing, dec_in), model(changed, dec_in)                     # [1, K, S, card]
    moved = (a - b).abs().amax(dim=(0, 1, 3))                                     # [S]
    assert moved[:j + lookahead].max() == 0, f"a step before {j + lookahead} heard backing frame {j}"
    assert moved[j + lookahead] > 0, f"step {j + lookahead} should hear backing frame {j}"


def test_streaming_takes_the_models_dtype():
    model = tiny_model(causal_encoder=True, attn_window=6, aligned_backing=True).to(torch.bfloat16)
    backing = random_codes(1, 4, 12)
    sampler = StreamingSampler(model, 12, temperature=1.0, seed=2)
    streamed = stream_all(sampler, backing)
    assert sampler.state.self_caches[0].k.dtype == torch.bfloat16, "caches must take the model's dtype"
    assert streamed.shape == (1, 4, 12) and ((streamed >= 0) & (streamed < CARD)).all(), "bf16 stream: bad codes"


def test_samplers_refuse_what_they_cannot_do():
    model = tiny_model(causal_encoder=True, attn_window=6)
    backing = random_codes(1, 4, 10)
    # The window reaches back 6 frames: at most 10 + 6 - 4 = 12 solo frames over 10 backing frames.
    reach = sample_solo(model, backing, n_frames=12, temperature=0)
    assert torch.equal(reach, sample_solo_plain(model, backing, n_frames=12, temperature=0)), "cached != plain at reach"
    for sampler in (sample_solo, sample_solo_plain):
        with pytest.raises(ValueError, match="no backing"):
            sampler(model, backing, n_frames=13)
    with pytest.raises(ValueError, match="prompt"):
        sample_solo(model, backing, n_frames=5, prompt=random_codes(1, 4, 6))
    sampler = StreamingSampler(model, n_frames=3)
    for t in range(3):
        sampler.push(backing[..., t])
    with pytest.raises(ValueError, match="all of them have been pushed"):
        sampler.push(backing[..., 3])
    with pytest.raises(ValueError, match="causal"):
        StreamingSampler(tiny_model(), n_frames=3)


def test_samplers_use_eval_mode_and_restore_the_mode():
    model = tiny_model(dropout=0.5).train()
    backing = random_codes(1, 4, 10)
    greedy = [sample_solo(model, backing, temperature=0) for _ in range(2)]
    assert torch.equal(*greedy), "greedy sampling must not depend on dropout"
    assert torch.equal(greedy[0], sample_solo_plain(model, backing, temperature=0)), "plain sampler ran with dropout"
    assert model.training, "the sampler must give the model back in the mode it found it"


@pytest.mark.parametrize("name,lo,hi", [("tiny", 1e6, 3e6), ("small", 25e6, 45e6), ("base", 100e6, 200e6)])
def test_preset_sizes(name, lo, hi):
    assert name in PRESETS
    n = SoloTransformer(preset_config(name)).num_params()
    assert lo <= n <= hi, f"{name} has {n / 1e6:.1f} M parameters, outside [{lo / 1e6}, {hi / 1e6}] M"


def test_bf16_autocast_is_finite():
    model = tiny_model(causal_encoder=True, attn_window=5)
    backing, solo = random_codes(2, 4, 12), random_codes(2, 4, 12, seed=4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, per_k, _ = model.loss(backing, solo, cond_drop=torch.tensor([True, False]))
    assert torch.isfinite(loss) and torch.isfinite(per_k).all(), f"bf16 loss not finite: {per_k}"
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None), "non-finite grad"


def test_solo_dropout_hides_the_past_and_keeps_the_targets():
    torch.manual_seed(0)
    model = SoloTransformer(ModelConfig(card=32, d_model=32, n_heads=4, d_ff=64, max_frames=12)).eval()
    backing, solo = torch.randint(0, 32, (2, 4, 12)), torch.randint(0, 32, (2, 4, 12))
    S = 12 + 4 - 1
    none = torch.zeros(2, 4, S, dtype=torch.bool)
    assert torch.equal(model.loss(backing, solo, input_drop=none)[0], model.loss(backing, solo)[0])
    # Every input hidden: the model reads only special tokens, and is scored on the same targets.
    from model import codebook_cross_entropy, teacher_forcing
    target, dec_in = teacher_forcing(solo, 32)
    blind = codebook_cross_entropy(model(backing, torch.full_like(dec_in, 32)), target, 32)[0]
    assert torch.allclose(model.loss(backing, solo, input_drop=~none)[0], blind)
    assert not torch.allclose(blind, model.loss(backing, solo)[0])


def test_the_pitch_head_trains_and_leaves_the_rest_as_it_was():
    """pitch_head=True (train.py --pitch-aux): every other weight starts as without it, so the
    code loss is the same; the third loss value trains the head, here on a pitch that the
    backing spells out (its first code mod 12) from about log 13 to a fraction of it; frames
    marked -100 are not counted."""
    plain, model = tiny_model(), tiny_model(pitch_head=True).train()
    for name, weight in plain.state_dict().items():
        assert torch.equal(weight, model.state_dict()[name]), f"{name} starts otherwise with the pitch head"
    backing, solo = random_codes(8, 4, 12), random_codes(8, 4, 12, seed=2)
    pitch = backing[:, 0] % 12                                                      # [B, T]
    ce, _, aux = model.loss(backing, solo, pitch=pitch)
    pitch_ce = aux["pitch"]
    assert torch.equal(ce, plain.loss(backing, solo)[0])
    assert abs(pitch_ce.item() - torch.log(torch.tensor(13.0)).item()) < 0.2, pitch_ce
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(40):
        ce, _, aux = model.loss(backing, solo, pitch=pitch)
        pitch_ce = aux["pitch"]
        optimizer.zero_grad()
        (ce + pitch_ce).backward()
        optimizer.step()
    assert pitch_ce.item() < 0.6, f"the pitch head did not learn a pitch the backing spells out: {pitch_ce}"
    assert model.loss(backing, solo, pitch=torch.full_like(pitch, -100))[2]["pitch"].item() == 0.0


def test_the_chord_head_trains_and_leaves_the_rest_as_it_was():
    """chord_head=True (train.py --chord-aux): every other weight starts as without it, so
    the code loss is the same; aux["chord"], the soft cross-entropy of the head on the
    encoder against a distribution over the 12 pitch classes, starts near log 12 and
    trains down on a chord the backing spells out (a triad on its first code mod 12).
    Frames of all zeros and rows with the null backing are not counted, and a model with
    a lookahead reads the chord of frame t at encoder position L + t."""
    plain, model = tiny_model(), tiny_model(chord_head=True).train()
    for name, weight in plain.state_dict().items():
        assert torch.equal(weight, model.state_dict()[name]), f"{name} starts otherwise with the chord head"
    backing, solo = random_codes(8, 4, 12), random_codes(8, 4, 12, seed=2)
    root = backing[:, 0] % 12                                                       # [B, T]
    chords = torch.zeros(8, 12, 12).scatter_(2, torch.stack([root, (root + 4) % 12,
                                                             (root + 7) % 12], -1), 1 / 3)
    ce, _, aux = model.loss(backing, solo, chords=chords)
    assert torch.equal(ce, plain.loss(backing, solo)[0])
    assert abs(aux["chord"].item() - torch.log(torch.tensor(12.0)).item()) < 0.2, aux
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(40):
        ce, _, aux = model.loss(backing, solo, chords=chords)
        optimizer.zero_grad()
        (ce + aux["chord"]).backward()
        optimizer.step()
    # the floor is log 3 (three equal tones), about 1.10
    assert aux["chord"].item() < 1.4, f"the chord head did not learn a chord the backing spells out: {aux}"
    assert model.loss(backing, solo, chords=torch.zeros_like(chords))[2]["chord"].item() == 0.0
    everyone = torch.ones(8, dtype=torch.bool)
    assert model.loss(backing, solo, cond_drop=everyone, chords=chords)[2]["chord"].item() == 0.0
    ahead = tiny_model(chord_head=True, causal_encoder=True, lookahead=3)
    with torch.no_grad():
        memory = ahead.encode(backing)                                          # [B, 3 + T, D]
        want = -(chords * ahead.chord_head(memory[:, 3:]).log_softmax(-1)).sum() / 96
        assert torch.allclose(ahead.loss(backing, solo, chords=chords)[2]["chord"], want)


def test_the_pitch_head_names_the_bands_chord_from_the_decoder():
    """pitch given as chords are ([B, T, 12] float, train.py --pitch-targets chord): aux["pitch"]
    is the soft cross-entropy of the pitch head's first 12 classes, read from decoder step t,
    against the band's chord in frame t; frames of all zeros and rows with the null backing
    are not counted, and the head trains down on a chord the backing spells out."""
    model = tiny_model(pitch_head=True).train()
    backing, solo = random_codes(8, 4, 12), random_codes(8, 4, 12, seed=2)
    root = backing[:, 0] % 12                                                       # [B, T]
    chords = torch.zeros(8, 12, 12).scatter_(2, torch.stack([root, (root + 4) % 12,
                                                             (root + 7) % 12], -1), 1 / 3)
    chords[:, :2] = 0.0  # two frames of no chord: not counted
    with torch.no_grad():
        dec_in = teacher_forcing(solo, model.cfg.card)[1]
        guess = model.pitch_logits(model.decode(model.encode(backing), dec_in)[:, :12])[..., :12]
        want = -(chords * guess.log_softmax(-1)).sum() / (8 * 10)
        assert torch.allclose(model.loss(backing, solo, pitch=chords)[2]["pitch"], want)
        drop = torch.zeros(8, dtype=torch.bool)
        drop[:3] = True
        other = chords.clone()
        other[:3] = torch.roll(other[:3], 1, dims=-1)  # dropped rows: their chords are not read
        assert torch.equal(model.loss(backing, solo, cond_drop=drop, pitch=chords)[2]["pitch"],
                           model.loss(backing, solo, cond_drop=drop, pitch=other)[2]["pitch"])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(80):  # the decoder reaches the band through the encoder: slower than its head
        ce, _, aux = model.loss(backing, solo, pitch=chords)
        optimizer.zero_grad()
        (ce + aux["pitch"]).backward()
        optimizer.step()
    # the floor is log 3 (three equal tones), about 1.10
    assert aux["pitch"].item() < 1.4, f"the decoder did not learn to name the chord: {aux}"


def test_a_checkpoint_of_a_removed_experiment_is_one_line():
    """pitch_first (the note drawn before its codes) has left the code (docs/log.md names the
    commit that still has it): a checkpoint that kept it off loads as before; one trained with
    it is refused in one line naming the file."""
    cfg = tiny_model().cfg
    assert model_config_of({"model": {**asdict(cfg), "pitch_first": False}}, "c.json") == cfg
    with pytest.raises(SystemExit, match="c.json: trained with pitch_first, an experiment"):
        model_config_of({"model": {**asdict(cfg), "pitch_first": True}}, "c.json")


def test_the_pitch_plan_biases_each_codebook_by_its_frames_class():
    """pitch_plan (train.py --pitch-plan, sax/plan.py): codebook k at step s reads the class of
    frame s - k (NO_CLASS: none, or unknown); the loss adds that class's row of pitch_bias to
    the logits, none for NO_CLASS; training hides the plan of about UNPLANNED of the windows;
    every other weight starts as without the plan."""
    from sax.plan import NO_CLASS, UNPLANNED, plan_steps, teacher_plan
    steps = plan_steps(torch.tensor([[2, 12, -100]]), 2)                      # [1, K, S]
    assert steps.tolist() == [[[2, 12, NO_CLASS, NO_CLASS], [NO_CLASS, 2, 12, NO_CLASS]]]
    head, model = tiny_model(pitch_head=True), tiny_model(pitch_head=True, pitch_plan=True)
    for name, weight in head.state_dict().items():
        assert torch.equal(weight, model.state_dict()[name]), f"{name} starts otherwise with the plan"
    with torch.no_grad():
        model.pitch_bias.normal_(0, 2.0)
    backing, solo = random_codes(3, 4, 10), random_codes(3, 4, 10, seed=2)
    pitch = torch.randint(-1, 13, (3, 10), generator=torch.Generator().manual_seed(3))
    pitch[pitch < 0] = -100
    plan = plan_steps(pitch, 4)
    target, dec_in = teacher_forcing(solo, CARD)
    with torch.no_grad():
        logits = model(backing, dec_in)                                           # [B, K, S, card]
        for b in range(3):  # written out: codebook k at step s sounds frame s - k's note
            for k in range(4):
                for t in range(10):
                    if pitch[b, t] >= 0:
                        logits[b, k, t + k] += model.pitch_bias[k, pitch[b, t]]
        got = model.loss(backing, solo, plan=plan)[0]
        assert torch.allclose(got, codebook_cross_entropy(logits, target, CARD)[0])
        unplanned = model.loss(backing, solo, plan=torch.full_like(plan, NO_CLASS))[0]
        assert torch.allclose(model.loss(backing, solo)[0], unplanned) and not torch.allclose(got, unplanned)
    torch.manual_seed(0)
    hidden = (teacher_plan(torch.zeros(4000, 5, dtype=torch.long), 4) == NO_CLASS).all(-1).all(-1)
    assert abs(hidden.float().mean() - UNPLANNED) < 0.03


@pytest.mark.parametrize("cfg_coef", [None, 3.0])
def test_the_pitch_plan_is_drawn_then_sounded(cfg_coef):
    """Sampling with a plan: the cached, reference and streaming samplers draw the same classes
    and codes; a pitch head sure of class 5, whose bias makes code 7 certain, writes 7 in
    every real position, guided or not."""
    model = tiny_model(pitch_head=True, pitch_plan=True, causal_encoder=True)
    with torch.no_grad():
        model.pitch_bias.normal_(0, 2.0)
    backing = random_codes(1, 4, 12)
    cached = sample_solo(model, backing, seed=4, cfg_coef=cfg_coef)
    assert torch.equal(cached, sample_solo_plain(model, backing, seed=4, cfg_coef=cfg_coef))
    assert torch.equal(cached, stream_all(StreamingSampler(model, 12, seed=4, cfg_coef=cfg_coef), backing))
    with torch.no_grad():
        model.pitch_head.bias[5] = 50.0
        model.pitch_bias.zero_()
        model.pitch_bias[:, 5, 7] = 60.0
    assert (sample_solo(model, backing, seed=4, cfg_coef=cfg_coef) == 7).all()
    assert not (sample_solo(tiny_model(causal_encoder=True), backing, seed=4) == 7).all()
