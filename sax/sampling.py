"""
sax/sampling.py -- writing a solo with a trained model: the plain reference loop (the whole
prefix at every step), the KV-cached loop, classifier-free guidance, and phase 5's
frame-by-frame streaming sampler. tests/test_model.py holds the three token-identical.
"""
import functools

import torch

from model import build_delay_pattern, revert_delay_pattern, rope_angles
from sax.plan import PlanDraw


class KVCache:
    """Keys and values of past positions for one attention layer, preallocated once.

    Writing in place into one buffer avoids re-allocating and copying the whole
    history at every step (what torch.cat would do). With `capacity` smaller than the
    sequence, it is a ring: position p goes to slot p % capacity and overwrites the
    oldest one, so memory stays bounded (phase 5). The order of the slots does not
    matter: the keys already carry their rotary position, and attention is a sum.
    """

    def __init__(self, batch, heads, capacity, head_dim, device, dtype):
        # [B, H, C, hd]
        self.k = torch.zeros(batch, heads, capacity, head_dim, device=device, dtype=dtype)
        self.v = torch.zeros_like(self.k)                                            # [B, H, C, hd]
        self.capacity = capacity
        self.n = 0  # positions written so far: position p lives in slot p % capacity

    def append(self, k, v):
        """Store k, v [B, H, 1, hd] for the next position."""
        slot = self.n % self.capacity
        self.k[:, :, slot] = k[:, :, 0]
        self.v[:, :, slot] = v[:, :, 0]
        self.n += 1

    def filled(self):
        """Keys and values of the filled slots: [B, H, min(n, C), hd] each."""
        m = min(self.n, self.capacity)
        return self.k[:, :, :m], self.v[:, :, :m]

    def positions(self):
        """The position held by each filled slot, [min(n, C)]: the latest p < n with
        p % C == slot."""
        slots = torch.arange(min(self.n, self.capacity), device=self.k.device)
        return self.n - 1 - (self.n - 1 - slots) % self.capacity



def sample_next(logits, temperature=1.0, top_k=0, top_p=1.0, generator=None):
    """Draw one code per (row, codebook): logits [B, K, card] -> codes [B, K].

    temperature 0 is greedy. top_k keeps the k most likely codes; top_p keeps the
    smallest set whose probability reaches p. All codebooks are sampled at once.
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() if temperature == 1.0 else logits.float() / temperature
    if top_k > 0:
        kth = logits.topk(min(top_k, logits.size(-1)), dim=-1).values[..., -1:]  # [B, K, 1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)             # [B, K, card]
        probs = sorted_logits.softmax(dim=-1)
        drop = probs.cumsum(dim=-1) - probs >= top_p            # mass before this code already >= p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    # Inverse-CDF sampling: one uniform number per (row, codebook), and the first code
    # whose cumulative probability exceeds it. Same distribution as torch.multinomial,
    # at a fraction of its cost for one draw (it matters: this runs at every step).
    cdf = logits.softmax(dim=-1).cumsum(dim=-1)                                  # [B, K, card]
    # [B, K, 1]
    u = torch.rand(cdf.shape[:-1] + (1,), generator=generator, device=cdf.device) * cdf[..., -1:]
    # right=True: a code of probability 0 adds nothing to the CDF and can never be picked.
    return torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp(max=cdf.size(-1) - 1)  # [B, K]


def guided_logits(logits, cfg_coef):
    """Classifier-free guidance. logits [2B, K, card]: the first B rows saw the backing,
    the last B the null condition. Returns cond + (coef - 1) * (cond - uncond), [B, K, card].

    That is uncond + coef * (cond - uncond) rearranged so that coef = 1 gives the
    conditional logits bit for bit. coef > 1 pushes the solo further toward what the
    backing suggests.
    """
    cond, uncond = logits.chunk(2, dim=0)
    return cond + (cfg_coef - 1.0) * (cond - uncond)


def chooser(cfg_coef, opts, generator):
    """The samplers' draw, guidance first when on: logits [B or 2B, K, n] -> choices [B, K]."""
    def choose(logits):
        logits = logits if cfg_coef is None else guided_logits(logits, cfg_coef)
        return sample_next(logits, generator=generator, **opts)
    return choose


def sampling(fn):
    """Decorator of the samplers: no autograd, and the model in eval mode while they run.

    Dropout left on would make every draw, greedy included, depend on a coin the
    caller never sees; the model's previous mode is restored afterwards, so calling
    a sampler in the middle of training (the sample on the run's page at each new best
    checkpoint) changes nothing.
    """
    @functools.wraps(fn)
    def run(model, *args, **kwargs):
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                return fn(model, *args, **kwargs)
        finally:
            model.train(was_training)
    return run


def check_backing_reach(cfg, n_backing, n_frames):
    """Refuse a solo that would outrun its backing's attention window.

    With attn_window = w, step s reads backing frames s - w + 1 .. s. The last step of
    n_frames frames is s = n_frames + K - 2, so it still reads a frame only while
    n_frames <= n_backing + w - K. Past that, cross-attention would have no key at all
    (a softmax over nothing: NaN), a state training never produces. A model with
    lookahead L hears L positions more (its L frames of "nothing heard yet").
    """
    reach = n_backing + cfg.lookahead + (cfg.attn_window or 0) - cfg.n_codebooks
    if cfg.attn_window is not None and n_frames > reach:
        raise ValueError(f"{n_frames} solo frames over {n_backing} backing frames: with "
                         f"attn_window {cfg.attn_window} the last steps would see no backing at "
                         f"all; generate at most {reach} frames (the backing's length "
                         "+ lookahead + attn_window - K)")


def generation_template(n_frames, n_codebooks, card, batch, device, prompt=None):
    """What is already decided before sampling, as a delayed sequence [B, K, S].

    card where the pattern has no code (forced), the prompt's codes where a prompt
    [B, K, P] is given (forced: generate.py continues a previous window this way),
    and -1 where the model must sample.
    """
    codes = torch.full((batch, n_codebooks, n_frames), -1, dtype=torch.long, device=device)
    if prompt is not None:
        if prompt.size(-1) > n_frames:
            raise ValueError(f"the prompt has {prompt.size(-1)} frames, "
                             f"more than the {n_frames} frames to generate")
        codes[..., :prompt.size(-1)] = prompt
    return build_delay_pattern(codes, card)[0]   # [B, K, S]


def _prepare(model, backing, cfg_coef):
    """Double the batch for guidance: conditional rows first, null-condition rows after."""
    if cfg_coef is None:
        return backing
    null = model.null_condition(backing, torch.ones(backing.size(0), dtype=torch.bool,
                                                    device=backing.device))
    return torch.cat([backing, null])


@sampling
def sample_solo_plain(model, backing, n_frames=None, temperature=1.0, top_k=0, top_p=1.0,
                   seed=0, cfg_coef=None, prompt=None):
    """The reference sampler: at every step, run the whole model on the whole prefix.

    Quadratic work, no cache, easy to trust. sample_solo() must give the same tokens.
    backing [B, K, T] -> solo codes [B, K, n_frames].
    """
    cfg = model.cfg
    B, K, T = backing.shape
    n_frames = n_frames or T
    check_backing_reach(cfg, T, n_frames)
    template = generation_template(n_frames, K, cfg.card, B, backing.device, prompt)  # [B, K, S]
    backing = _prepare(model, backing, cfg_coef)                                   # [B or 2B, K, T]
    choose = chooser(cfg_coef, dict(temperature=temperature, top_k=top_k, top_p=top_p),
                     torch.Generator(device=backing.device).manual_seed(seed))
    plan = PlanDraw(model, B, template.size(-1), backing.device) if cfg.pitch_plan else None
    tokens = torch.full((B, K, 1), cfg.card, dtype=torch.long, device=backing.device)  # start token
    for s in range(template.size(-1)):
        inp = tokens if cfg_coef is None else tokens.repeat(2, 1, 1)
        x = model.decode(model.encode(backing), inp)[:, -1:]                    # [B or 2B, 1, D]
        logits = model.logits(x)[:, :, 0]                                      # [B or 2B, K, card]
        nxt = choose(logits if plan is None else plan(x, logits, s, choose))  # [B, K]
        nxt = torch.where(template[..., s] >= 0, template[..., s], nxt)       # forced positions win
        tokens = torch.cat([tokens, nxt[..., None]], dim=-1)
    return revert_delay_pattern(tokens[..., 1:])                               # [B, K, n_frames]


class SamplerState:
    """Cached sampling state: one decoder self-attention KVCache per layer, and the
    cross-attention keys and values of the encoder output.

    Two kinds, built by two constructors: SamplerState.offline (sample_solo): the whole
    backing is known, its cross-attention keys and values are projected once.
    SamplerState.streaming (StreamingSampler, phase 5): encoder_step adds one backing
    frame at a time to the encoder's and the cross-attention's caches.
    """

    @classmethod
    def offline(cls, model, memory, total_steps):
        """From the encoder states of the whole backing, memory [B, T, D]."""
        state = cls(model, memory.size(0), total_steps, memory.device, memory.dtype)
        enc_rope = model.rope(0, memory.size(1), memory.device)
        state.cross_kv = [block.cross_attn.project_kv(memory, enc_rope) for block in model.decoder]
        if model.align_conv is not None:
            state.aligned = model.aligned(memory, total_steps)                 # [B, S, D]
        state.n_backing = memory.size(1)
        return state

    @classmethod
    def streaming(cls, model, batch, total_steps, device, dtype):
        """Empty: the backing arrives frame by frame through encoder_step."""
        state = cls(model, batch, total_steps, device, dtype)
        cfg, cap = model.cfg, state.self_caches[0].capacity
        hd = cfg.d_model // cfg.n_heads
        def cache():
            return KVCache(batch, cfg.n_heads, cap, hd, device, dtype)
        state.enc_caches = [cache() for _ in model.encoder]
        state.cross_caches = [cache() for _ in model.decoder]
        # the aligned path's window: the last K encoder states, zeros at first
        if model.align_conv is not None:
            state.recent = torch.zeros(batch, cfg.n_codebooks, cfg.d_model, device=device,
                                       dtype=dtype)
        return state

    def __init__(self, model, batch, total_steps, device, dtype):
        """What both kinds share: the decoder's self-attention caches and the rotary tables."""
        cfg = model.cfg
        self.model, self.step = model, 0
        hd = cfg.d_model // cfg.n_heads
        # Rotary angles of every step, computed once rather than at every step.
        # 2 x [total_steps, hd]
        self.cos, self.sin = rope_angles(torch.arange(total_steps, device=device), hd)
        # A streaming model keeps only attn_window positions: memory stays bounded.
        cap = total_steps if cfg.attn_window is None else min(total_steps, cfg.attn_window)
        self.self_caches = [KVCache(batch, cfg.n_heads, cap, hd, device, dtype)
                            for _ in model.decoder]
        self.cross_kv = None  # offline: per layer (keys, values) [B, H, T, hd] of the whole backing
        self.cross_caches = None  # streaming: per layer KVCache of encoder frames seen so far
        self.enc_caches = None  # streaming: per encoder layer KVCache
        self.aligned = None  # aligned-path input of every step, offline: [B, S, D]
        self.recent = None  # streaming: encoder states of the last K frames [B, K, D], oldest first
        self.n_backing = 0  # encoder frames available
        self.x = None  # the decoder's state at the last step, [B, 1, D]

    def decoder_step(self, tokens):
        """tokens [B, K] (the previous step's codes) -> logits [B, K, card] for this step."""
        model, cfg, s = self.model, self.model.cfg, self.step
        x = model.embed(model.dec_emb, tokens[..., None])                      # [B, 1, D]
        if self.aligned is not None:
            x = x + self.aligned[:, s:s + 1]                                   # [B, 1, D]
        elif self.recent is not None:
            if s >= self.n_backing:  # the backing has ended: zeros enter the window, as in training
                self.recent = torch.cat([self.recent[:, 1:], torch.zeros_like(self.recent[:, :1])],
                                        dim=1)
            x = x + model.aligned_step(self.recent)                           # [B, 1, D]
        rope = self.cos[s:s + 1], self.sin[s:s + 1]
        for i, (block, cache) in enumerate(zip(model.decoder, self.self_caches)):
            if self.cross_kv is not None:
                # Offline: the slice of backing frames that step s may see (all of them,
                # or up to frame s and within the window for a causal model).
                kv, mask = self.cross_kv[i], None
                if cfg.causal_encoder:
                    hi = min(s + 1, self.n_backing)
                    lo = 0 if cfg.attn_window is None else max(0, s - cfg.attn_window + 1)
                    kv = kv[0][:, :, lo:hi], kv[1][:, :, lo:hi]
            else:
                # Streaming: the cache holds the latest frames; after the backing has
                # ended, positions that fell out of the window are masked as in training.
                cache_x = self.cross_caches[i]
                kv = cache_x.filled()
                seen = cache_x.positions() > s - cfg.attn_window if cfg.attn_window else None
                mask = seen[None, :] if cfg.attn_window else None
            x = block(x, rope, kv=kv, cross_mask=mask, cache=cache, fused=True)  # [B, 1, D]
        self.step, self.x = self.step + 1, x  # the state, for a pitch plan (sax/plan.py)
        return model.logits(x)[:, :, 0]                                        # [B, K, card]

    def encoder_step(self, frame):
        """Phase 5: one new backing frame [B, K] through the causal encoder, with its own
        KV cache; its state's cross-attention keys and values join the decoder's caches."""
        model, t = self.model, self.n_backing
        x = model.embed(model.enc_emb, frame[..., None])                        # [B, 1, D]
        rope = self.cos[t:t + 1], self.sin[t:t + 1]
        for block, cache in zip(model.encoder, self.enc_caches):
            x = block(x, rope, cache=cache, fused=True)                         # [B, 1, D]
        x = model.enc_norm(x)                                                   # [B, 1, D]
        if self.recent is not None:  # the aligned path's window: this frame and the K - 1 before
            self.recent = torch.cat([self.recent[:, 1:], x], dim=1)             # [B, K, D]
        for block, cache in zip(model.decoder, self.cross_caches):
            k, v = block.cross_attn.project_kv(x, rope)                         # 2 x [B, H, 1, hd]
            cache.append(k, v)
        self.n_backing += 1


@sampling
def sample_solo(model, backing, n_frames=None, temperature=1.0, top_k=0, top_p=1.0, seed=0,
             cfg_coef=None, prompt=None, progress=None):
    """KV-cached sampling: backing [B, K, T] -> solo codes [B, K, n_frames].

    The encoder runs once; each decoder layer's cross-attention keys and values are
    projected once; each step feeds one new token column through the decoder.
    cfg_coef: classifier-free guidance coefficient (None: plain conditional).
    prompt [B, K, P]: solo codes to continue from (they are forced, not sampled).
    progress: an optional callable, called once per step (generate.py's tqdm bar).
    """
    cfg = model.cfg
    B, K, T = backing.shape
    n_frames = n_frames or T
    check_backing_reach(cfg, T, n_frames)
    template = generation_template(n_frames, K, cfg.card, B, backing.device, prompt)  # [B, K, S]
    S = template.size(-1)
    cond = _prepare(model, backing, cfg_coef)                                     # [B or 2B, K, T]
    state = SamplerState.offline(model, model.encode(cond), S)       # encoder once, [B or 2B, T, D]
    gen = torch.Generator(device=backing.device).manual_seed(seed)
    tokens = torch.full((B, K), cfg.card, dtype=torch.long, device=backing.device)  # start token
    out = torch.empty(B, K, S, dtype=torch.long, device=backing.device)
    choose = chooser(cfg_coef, dict(temperature=temperature, top_k=top_k, top_p=top_p), gen)
    plan = PlanDraw(model, B, S, backing.device) if cfg.pitch_plan else None
    for s in range(S):
        logits = state.decoder_step(tokens if cfg_coef is None else tokens.repeat(2, 1))
        nxt = choose(logits if plan is None else plan(state.x, logits, s, choose))  # [B, K]
        tokens = torch.where(template[..., s] >= 0, template[..., s], nxt)    # forced positions win
        out[..., s] = tokens
        if progress is not None:
            progress()
    return revert_delay_pattern(out)                                              # [B, K, n_frames]


class StreamingSampler:
    """Phase 5: follow live backing frame by frame with a causal model.

    push(frame [B, K]) takes one backing frame as it arrives and returns the solo
    frame [B, K] that the delay pattern has just completed (None for the first K - 1
    frames: codebook K-1 of frame t is only decided at step t + K - 1). finish()
    returns the last K - 1 frames once the backing has ended. With the same seed it
    gives exactly the tokens of sample_solo() on the same causal model, guidance included.
    A model with lookahead L (cfg.lookahead) finishes frame t when backing frame
    t + K - 1 - L arrives: the frames due before the first push are in `ahead`, and
    finish() returns what is left (max(0, K - 1 - L) frames).

    The caches live on the model's device in the model's dtype (a bf16 model on a GPU
    gets bf16 caches), and the model is put in eval mode for as long as the sampler
    uses it. batch: solos written at once over the same backing (each row draws its own).
    """

    def __init__(self, model, n_frames, batch=1, temperature=1.0, top_k=0, top_p=1.0, seed=0,
                 cfg_coef=None):
        cfg = model.cfg
        if not cfg.causal_encoder:
            raise ValueError("streaming needs a model trained with "
                             "causal_encoder=True (train.py --causal-encoder)")
        weight = next(model.parameters())
        device, dtype = weight.device, weight.dtype
        model.eval()  # no dropout while sampling; a sampler lives as long as the stream
        self.model, self.K, self.card = model, cfg.n_codebooks, cfg.card
        self.n_frames, self.cfg_coef = n_frames, cfg_coef
        self.opts = dict(temperature=temperature, top_k=top_k, top_p=top_p)
        self.template = generation_template(n_frames, self.K, cfg.card, batch, device)  # [B, K, S]
        # guidance: conditional rows, then null rows
        rows = batch if cfg_coef is None else 2 * batch
        self.state = SamplerState.streaming(model, rows, self.template.size(-1), device, dtype)
        self.gen = torch.Generator(device=device).manual_seed(seed)
        self.choose = chooser(cfg_coef, self.opts, self.gen)
        self.plan = (PlanDraw(model, batch, self.template.size(-1), device) if cfg.pitch_plan
                     else None)
        self.tokens = torch.full((batch, self.K), cfg.card, dtype=torch.long, device=device)
        self.recent = []  # the last K delayed columns, from which finished frames are read
        # Anticipation (cfg.lookahead = L): the model hears L frames of "nothing" before the
        # band, so L steps run before any backing arrives, and every push then finishes
        # the solo frame L frames ahead of the one it brings. The frames decided before
        # the first push (L - K + 1 of them when L >= K) wait in `ahead` [B, K, n], or None.
        silence = torch.full((1, self.K), cfg.card, dtype=torch.long, device=device)
        with torch.inference_mode():
            early = [self._step(silence) for _ in range(cfg.lookahead)]
        early = [f for f in early if f is not None]
        self.ahead = torch.stack(early, dim=-1) if early else None

    def _decode_one(self):
        s = self.state.step
        tokens = self.tokens if self.cfg_coef is None else self.tokens.repeat(2, 1)
        logits = self.state.decoder_step(tokens)
        if self.plan is not None:  # the frame's note first (sax/plan.py)
            logits = self.plan(self.state.x, logits, s, self.choose)
        nxt = self.choose(logits)                                                  # [B, K]
        self.tokens = torch.where(self.template[..., s] >= 0, self.template[..., s], nxt)
        self.recent = (self.recent + [self.tokens])[-self.K:]
        if s < self.K - 1:
            return None
        # Frame s - K + 1 is complete: codebook k of it was written at step s - K + 1 + k.
        return torch.stack([self.recent[k][:, k] for k in range(self.K)], dim=1)  # [B, K]

    def _step(self, frame):
        """One backing frame [1 or B, K] through the encoder, then one decoder step (when any
        is left) -> a finished solo frame [B, K], or None."""
        frame = frame.to(self.tokens.device).expand(self.tokens.size(0), -1)      # [B, K]
        if self.state.step >= self.template.size(-1):
            return None  # a model that looks ahead has written every frame already
        self.state.encoder_step(_prepare(self.model, frame[..., None], self.cfg_coef)[..., 0])
        return self._decode_one()

    @torch.inference_mode()
    def push(self, frame):
        """One backing frame [B, K] (or [1, K], shared by every row) -> a finished solo frame
        [B, K], or None."""
        if self.state.n_backing - self.model.cfg.lookahead >= self.n_frames:
            raise ValueError(f"the sampler was built for {self.n_frames} frames and all "
                             "of them have been pushed; build it with a larger n_frames")
        return self._step(frame)

    @torch.inference_mode()
    def finish(self):
        """The backing has ended: the remaining steps -> the last frames [B, K, n] (None when
        none are left)."""
        cfg = self.model.cfg
        check_backing_reach(cfg, self.state.n_backing - cfg.lookahead, self.n_frames)
        rest = [self._decode_one() for _ in range(self.template.size(-1) - self.state.step)]
        rest = [r for r in rest if r is not None]
        # [B, K, K - 1] when every frame was pushed
        return torch.stack(rest, dim=-1) if rest else None


# The sampling settings of the listening test, the run page's samples and generate.py's
# defaults: those that made the default run's solos play with the band best on the
# validation songs, then checked on the test songs (experiments/sampling.py, docs/phase3:
# guidance 5 over 3 raised both scores over five seeds; beside guidance 5, temperature 0.8,
# top-k 50 and guidance 7 add no harmony on the validation songs).
SAMPLING = {"temperature": 1.0, "top_k": 250, "guidance": 5.0}
