"""
model.py -- the multi-stream encoder-decoder transformer that hears a backing track
and writes a saxophone solo, as EnCodec tokens (phase 1-3 and 5 of the proposal).

Read it top to bottom:
  1. settings and presets (tiny / small / base),
  2. the MusicGen delay pattern that lets K codebooks be predicted in parallel,
  3. attention, written out by hand (with a switch to the fused kernel),
  4. the encoder-decoder itself: one embedding table per codebook (summed),
     one linear head per codebook,
  5. the loss (cross-entropy per codebook over real positions only).

Writing a solo with it (the reference, cached, guided and streaming samplers) is in
sax/sampling.py; loading and saving checkpoint folders in sax/checkpoints.py.
Nothing here knows the codec: the number of codebooks K, the cardinality `card`
and the frame rate come from the dataset's meta.json, and nothing here reads a file.

Run it to print the presets and their parameter counts (--preset NAME: that one's settings):
    python model.py
    tiny   d_model= 128 layers=2+2 heads= 4     2.6 M parameters
    small  d_model= 512 layers=4+4 heads= 8    36.8 M parameters
    base   d_model= 768 layers=8+8 heads=12   144.1 M parameters

Letters used in the shape comments:
    B batch, K codebooks, T frames, S delayed steps (S = T + K - 1),
    D model width, H heads, hd head width (D / H), L new positions, C cache slots,
    card codebook size (the special "no code" token has id card).
"""
import argparse
import math
from dataclasses import asdict, dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


# ----------------------------------------------------------------------------
# 1. Settings
# ----------------------------------------------------------------------------

@dataclass
class ModelConfig:
    n_codebooks: int = 4          # K: parallel token streams (EnCodec 24 kHz at 3 kbps gives 4)
    card: int = 1024              # codes per codebook, ids 0 .. card - 1
    # Id `card` is the one special token, and it has four jobs: the filler of the delay
    # pattern where a codebook has no frame yet (or any more), the decoder's start
    # token, the padding of a short window (the loss skips it), and, for a whole
    # backing, the null condition of classifier-free guidance.
    frame_rate: float = 75.0      # codec frames per second; used only to turn frames into seconds
    d_model: int = 128            # D: width of every token vector
    n_heads: int = 4              # H: attention heads; D / H must be a whole, even number (RoPE)
    n_enc_layers: int = 2         # encoder blocks (read the backing)
    n_dec_layers: int = 2         # decoder blocks (write the solo)
    d_ff: int = 512               # hidden width of each feed-forward block
    dropout: float = 0.0          # dropout on attention outputs and feed-forward blocks
    # longest window (in frames) trained on; generate.py windows longer tracks
    max_frames: int = 750
    # phase 5: encoder and cross-attention see only frames that have arrived
    causal_encoder: bool = False
    # phase 5: self/cross-attention sees at most this many past positions
    attn_window: Optional[int] = None
    # phase 5: write the solo this many frames ahead of the backing heard (0: aligned).
    # Live, the solo is heard a chunk, the delay pattern and the compute after the band
    # played the frame it answers; a model that guesses that far ahead lands on the beat.
    lookahead: int = 0
    # "manual": attention written out below; "sdpa": F.scaled_dot_product_attention
    attn_impl: str = "manual"
    # training: probability that a clip's backing is replaced by the null condition
    cond_dropout: float = 0.1
    # also add backing frames s-K+1..s (encoder states) to the decoder input at step s
    aligned_backing: bool = True
    # training aid (train.py --pitch-aux): a 13-way head that reads, from decoder step s,
    # the lead's pitch class in frame s or a rest (or the band's chord). Only the loss uses it,
    pitch_head: bool = False
    # and the pitch plan's draws (train.py --pitch-plan, sax/plan.py): the note, then its codes
    pitch_plan: bool = False
    # training aid (train.py --chord-aux): a 12-way head on the encoder that names the
    # band's harmony in each backing frame (its pitch classes, as a distribution), so that
    # the encoder states hold the chord plainly instead of leaving the encoder to find it
    # from the solo's loss alone. Only the loss uses it.
    chord_head: bool = False
    # training aid (train.py --ahead-aux): a 13-way head on the encoder that, at the position
    # whence the decoder writes solo frame t, names the band's chord (12 pitch classes) and
    # whether a kick falls in frame t. With a lookahead of L frames that position heard the
    # band up to frame t - L only: the states must carry its near future. Only the loss uses it.
    ahead_head: bool = False

    def __post_init__(self):
        assert self.d_model % self.n_heads == 0, \
            f"d_model={self.d_model} must divide by n_heads={self.n_heads}"
        assert (self.d_model // self.n_heads) % 2 == 0, \
            "head width must be even for rotary embeddings"
        assert self.attn_impl in ("manual", "sdpa"), \
            f"attn_impl must be 'manual' or 'sdpa', not {self.attn_impl!r}"
        assert self.attn_window is None or self.causal_encoder, (
            "attn_window bounds the caches of streaming (phase 5); set causal_encoder=True with it")
        # The last decoder step (frame T-1 of codebook K-1) comes K-1 steps after the last
        # backing frame; a shorter window would leave it no backing frame to look at.
        assert self.attn_window is None or self.attn_window >= self.n_codebooks, (
            f"attn_window={self.attn_window} must be at least n_codebooks={self.n_codebooks}")
        assert self.pitch_head or not self.pitch_plan, "the pitch plan is drawn from the pitch head"
        assert self.lookahead >= 0 and (self.lookahead == 0 or self.causal_encoder), (
            f"lookahead={self.lookahead}: a causal model's own setting, 0 or more "
            "(an offline model hears the whole backing anyway)")


# The three sizes of the proposal. K, card and frame_rate are filled in from the dataset.
PRESETS = {
    # 2.6 M parameters: trains on a 2-core laptop CPU in minutes.
    # Dropout 0.2: on the 14-minute demo corpus, 0.1 overfits by step 400 (docs/phase3, ablations).
    "tiny": dict(d_model=128, n_heads=4, n_enc_layers=2, n_dec_layers=2, d_ff=512, dropout=0.2),
    # 36.8 M parameters: an hour or two on one consumer GPU.
    "small": dict(d_model=512, n_heads=8, n_enc_layers=4, n_dec_layers=4, d_ff=2048, dropout=0.1),
    # 144.1 M parameters: the proposal's 10^8 scale, for a rented A100/H100.
    "base": dict(d_model=768, n_heads=12, n_enc_layers=8, n_dec_layers=8, d_ff=3072, dropout=0.1),
}


def preset_config(name, **overrides):
    """A ModelConfig for a preset name, with any field overridden (K, card, frame_rate...)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return ModelConfig(**{**PRESETS[name], **overrides})


# ----------------------------------------------------------------------------
# 2. The delay pattern (MusicGen)
# ----------------------------------------------------------------------------
# EnCodec gives K codes per frame, and codebook k refines what codebooks 0..k-1 left.
# Predicting all K of frame t at once would make them independent guesses; predicting
# them one after another would make the sequence K times longer. The delay pattern is
# the compromise: codebook k of frame t is placed at step t + k, so at every step the
# model predicts K codes at once, and each code already sees the coarser codes of its
# own frame (they were placed at earlier steps). K = 4, T = 5 (S = T + K - 1 = 8):
#
#   step s ->   0    1    2    3    4    5    6    7
#   k = 0      a0   a1   a2   a3   a4   .    .    .
#   k = 1      .    b0   b1   b2   b3   b4   .    .
#   k = 2      .    .    c0   c1   c2   c3   c4   .
#   k = 3      .    .    .    d0   d1   d2   d3   d4
#
# "." holds the special token (id = card): it is fed to the model like any token, but
# never predicted, and the loss skips it.

def build_delay_pattern(codes, special):
    """codes [B, K, T] -> delayed sequence [B, K, S] and the mask [K, S] of real positions."""
    B, K, T = codes.shape
    S = T + K - 1
    seq = codes.new_full((B, K, S), special)                  # [B, K, S]
    mask = torch.zeros(K, S, dtype=torch.bool, device=codes.device)
    for k in range(K):
        seq[:, k, k:k + T] = codes[:, k]                      # codebook k shifted right by k steps
        mask[k, k:k + T] = True
    return seq, mask


def revert_delay_pattern(seq):
    """delayed sequence [B, K, S] -> codes [B, K, T]; the exact inverse of build_delay_pattern."""
    T = seq.size(2) - seq.size(1) + 1                                            # S - K + 1
    return torch.stack([seq[:, k, k:k + T] for k in range(seq.size(1))], dim=1)  # [B, K, T]


# ----------------------------------------------------------------------------
# 3. Attention
# ----------------------------------------------------------------------------

def attention(q, k, v, mask=None, impl="manual"):
    """Scaled dot-product attention.

    q [B, H, Lq, hd], k and v [B, H, Lk, hd]; mask [Lq, Lk] bool, True where a query
    may look (None: everywhere). Returns [B, H, Lq, hd].
    """
    if impl == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    # The same thing, written out: how well each query matches each key ...
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # [B, H, Lq, Lk]
    if mask is not None:
        # -inf, not -1e9: -1e9 overflows to -inf in fp16 anyway and is not a real
        # number in bf16 either; -inf gives exactly zero weight after the softmax.
        # A row of all -inf would give NaN: every query here keeps at least one key
        # (itself in self-attention; in cross-attention the samplers refuse a solo
        # that outruns its backing's window, see check_backing_reach).
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(dim=-1)                         # [B, H, Lq, Lk], rows sum to 1
    return weights @ v                                       # [B, H, Lq, hd]


def attention_mask(n_q, n_k, causal, window, device, q_start=0):
    """Which keys each query may see: [n_q, n_k] bool, or None when it may see all.

    Query i sits at position q_start + i, key j at position j. causal: only j <= i.
    window: only the last `window` positions, j > i - window.
    """
    if not causal and window is None:
        return None
    q = torch.arange(q_start, q_start + n_q, device=device)[:, None]  # [n_q, 1]
    k = torch.arange(n_k, device=device)[None, :]                     # [1, n_k]
    mask = torch.ones(n_q, n_k, dtype=torch.bool, device=device)
    if causal:
        mask &= k <= q
    if window is not None:
        mask &= k > q - window
    return mask


def rope_angles(positions, head_dim):
    """Rotary position embedding: cos and sin [L, hd] for integer positions [L].

    Why rotary: a query at position i and a key at position j are rotated by angles
    proportional to i and j, so their dot product depends only on i - j. The model
    learns "what was two beats ago", not "what was at frame 312", which is what
    lets generate.py slide over tracks longer than any training window and lets the
    phase-5 streaming cache forget old positions without retraining.
    """
    pairs = torch.arange(0, head_dim, 2, device=positions.device).float()    # [hd/2]
    inv_freq = 10000.0 ** (-pairs / head_dim)                                # [hd/2]
    angles = positions.float()[:, None] * inv_freq[None, :]  # [L, hd/2]
    angles = torch.cat((angles, angles), dim=-1)             # [L, hd]: pair i uses angle i twice
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    """Rotate each pair (x[i], x[i + hd/2]) of x [..., L, hd] by its angle; cos, sin [L, hd].

    (x1, x2) turned by angle a is (x1 cos a - x2 sin a, x2 cos a + x1 sin a).
    """
    x1, x2 = x.chunk(2, dim=-1)                            # 2 x [..., L, hd/2]
    turned = torch.cat((-x2, x1), dim=-1)                # [..., L, hd]: each pair turned 90 degrees
    return x * cos.to(x.dtype) + turned * sin.to(x.dtype)  # [..., L, hd]


class MultiHeadAttention(nn.Module):
    """Self-attention (queries, keys and values from x) or cross-attention (keys and
    values from the encoder output), with rotary positions on queries and keys."""

    def __init__(self, cfg: ModelConfig, cross: bool):
        super().__init__()
        self.cross, self.n_heads, self.impl = cross, cfg.n_heads, cfg.attn_impl
        D = cfg.d_model
        if cross:
            self.q_proj = nn.Linear(D, D)
            self.kv_proj = nn.Linear(D, 2 * D)   # keys and values in one matmul
        else:
            self.qkv_proj = nn.Linear(D, 3 * D)  # queries, keys and values in one matmul
        self.out_proj = nn.Linear(D, D)
        self.dropout = nn.Dropout(cfg.dropout)

    def split_heads(self, x):
        B, L, D = x.shape
        return x.view(B, L, self.n_heads, D // self.n_heads).transpose(1, 2)  # -> [B, H, L, hd]

    def merge_heads(self, x):
        B, H, L, hd = x.shape
        return x.transpose(1, 2).reshape(B, L, H * hd)                  # [B, H, L, hd] -> [B, L, D]

    def project_kv(self, context, rope):
        """Cross-attention keys and values of the encoder output [B, T, D], computed once."""
        k, v = self.kv_proj(context).chunk(2, dim=-1)       # 2 x [B, T, D]
        k, v = self.split_heads(k), self.split_heads(v)     # 2 x [B, H, T, hd]
        return apply_rope(k, *rope), v

    def forward(self, x, rope, mask=None, kv=None, cache=None, fused=False):
        """x [B, L, D] -> [B, L, D].

        rope: (cos, sin) for the L query positions. Cross-attention takes kv, the
        (keys, values) from project_kv. Self-attention with a cache (generation) takes
        one new position at a time and attends to everything the cache holds.
        fused: use the fused kernel whatever cfg.attn_impl says. The cached one-frame
        steps of sample_solo() and StreamingSampler do (one call instead of four matters
        when each step is a single frame); whole-sequence passes (training, the encoder
        pass of sample_solo(), the reference sample_solo_plain) follow cfg.attn_impl.
        """
        if self.cross:
            q = apply_rope(self.split_heads(self.q_proj(x)), *rope)  # [B, H, L, hd]
            k, v = kv
        else:
            B, L, D = x.shape
            # [B, L, 3, H, hd]
            qkv = self.qkv_proj(x).view(B, L, 3, self.n_heads, D // self.n_heads)
            qkv = qkv.permute(2, 0, 3, 1, 4)             # [3, B, H, L, hd]
            qk = apply_rope(qkv[:2], *rope)              # [2, B, H, L, hd]: q and k rotated at once
            q, k, v = qk[0], qk[1], qkv[2]               # 3 x [B, H, L, hd]
            if cache is not None:
                cache.append(k, v)
                k, v = cache.filled()                    # [B, H, C, hd]: the past and now
        y = attention(q, k, v, mask, "sdpa" if fused else self.impl)  # [B, H, L, hd]
        return self.dropout(self.out_proj(self.merge_heads(y)))      # [B, L, D]


class FeedForward(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.d_model, cfg.d_ff)
        self.fc2 = nn.Linear(cfg.d_ff, cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x):
        # tanh-approximated GELU: the same curve within 1e-3, and several times cheaper on a CPU
        # [B, L, D] -> [B, L, d_ff] -> [B, L, D]
        return self.dropout(self.fc2(F.gelu(self.fc1(x), approximate="tanh")))


class Block(nn.Module):
    """A pre-norm transformer block: x + attention(norm(x)), [x + cross(norm(x))], x + ffn(norm(x)).

    Pre-norm (normalise the input of each sub-layer, not its output) keeps a clean
    residual path from the embeddings to the heads, which is what lets deep stacks
    train without a carefully tuned warm-up.
    """

    def __init__(self, cfg: ModelConfig, cross: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.d_model)
        self.self_attn = MultiHeadAttention(cfg, cross=False)
        self.cross_attn = MultiHeadAttention(cfg, cross=True) if cross else None
        self.norm2 = nn.LayerNorm(cfg.d_model) if cross else None
        self.norm3 = nn.LayerNorm(cfg.d_model)
        self.ffn = FeedForward(cfg)

    def forward(self, x, rope, self_mask=None, kv=None, cross_mask=None, cache=None, fused=False):
        x = x + self.self_attn(self.norm1(x), rope, self_mask, cache=cache, fused=fused)
        if self.cross_attn is not None:
            x = x + self.cross_attn(self.norm2(x), rope, cross_mask, kv=kv, fused=fused)
        return x + self.ffn(self.norm3(x))  # [B, L, D]


# ----------------------------------------------------------------------------
# 4. The encoder-decoder
# ----------------------------------------------------------------------------

class SoloTransformer(nn.Module):
    """Encoder: backing codes [B, K, T] -> states [B, T, D].
    Decoder: delayed solo tokens [B, K, S] + encoder states -> logits [B, K, S, card]."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        K, D, V = cfg.n_codebooks, cfg.d_model, cfg.card + 1
        # One embedding table per codebook, stored side by side as [K, card + 1, D] so that
        # all K look-ups are one gather. Row `card` is the special token. The encoder and
        # the decoder read different instruments, so each has its own tables.
        self.enc_emb = nn.Parameter(torch.randn(K, V, D) * 0.02)  # [K, card + 1, D]
        self.dec_emb = nn.Parameter(torch.randn(K, V, D) * 0.02)  # [K, card + 1, D]
        self.encoder = nn.ModuleList(Block(cfg, cross=False) for _ in range(cfg.n_enc_layers))
        self.decoder = nn.ModuleList(Block(cfg, cross=True) for _ in range(cfg.n_dec_layers))
        self.enc_norm = nn.LayerNorm(D)
        self.dec_norm = nn.LayerNorm(D)
        # One linear head per codebook, stored side by side as [D, K, card] so that all K
        # run as one matmul. card outputs, not card + 1: the special token is never predicted.
        self.heads = nn.Parameter(torch.randn(D, K, cfg.card) * 0.02)  # [D, K, card]
        # The time-aligned path, beside cross-attention: step s of the decoder also gets
        # the encoder states of backing frames s-K+1 .. s, mixed by a causal convolution
        # of width K and added to its input. Those are exactly the frames whose codes step
        # s predicts (codebook k of frame s - k, by the delay pattern). Cross-attention
        # must first learn *where* to look; this path hands each step the band at its own
        # moment from the first update on, so the model starts to listen early instead of
        # settling into a solo language model first (as StemGen sums aligned context in).
        self.align_conv = nn.Conv1d(D, D, kernel_size=K) if cfg.aligned_backing else None
        self.register_buffer("k_index", torch.arange(K).view(1, K, 1), persistent=False)  # [1,K,1]
        self.apply(self._init_weights)
        # The training aids' heads (only a pitch plan is sampled): pitch, 12 classes and a rest;
        # chord, 12; anticipation, 12 and a kick. Made last, in this order, so that every
        # other weight draws the random numbers it would draw without them.
        for name, n, on in (("pitch_head", 13, cfg.pitch_head), ("chord_head", 12, cfg.chord_head),
                            ("ahead_head", 13, cfg.ahead_head)):
            setattr(self, name, nn.Linear(D, n) if on else None)
            if on:
                self._init_weights(getattr(self, name))
        # The pitch plan's bias of each codebook's codes for each class (12 and a rest).
        self.pitch_bias = nn.Parameter(torch.zeros(K, 13, cfg.card)) if cfg.pitch_plan else None

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

    def num_params(self):
        return sum(p.numel() for p in self.parameters())

    def embed(self, table, tokens):
        """tokens [B, K, L] -> the sum over K of each codebook's embedding: [B, L, D]."""
        return table[self.k_index, tokens].sum(dim=1)                 # [B, K, L, D] -> [B, L, D]

    def rope(self, start, length, device):
        positions = torch.arange(start, start + length, device=device)
        return rope_angles(positions, self.cfg.d_model // self.cfg.n_heads)  # 2 x [L, hd]

    def null_condition(self, backing, drop):
        """Classifier-free guidance: rows of drop [B] hear the null backing (special tokens)."""
        return torch.where(drop[:, None, None], torch.full_like(backing, self.cfg.card), backing)

    def heard(self, backing):
        """Phase 5, anticipation: backing [B, K, T] -> what the model hears, [B, K, L + T].

        A model with lookahead L hears the band L frames late: L frames of the special
        token ("nothing heard yet") go in front. Decoder step s still reads encoder
        positions <= s, so solo frame t is written from backing frames <= t - L: the
        solo is a guess L frames ahead of what was heard. Everything else (masks, the
        aligned path, the streaming caches, the exported graphs) is unchanged.
        """
        L = self.cfg.lookahead
        return F.pad(backing, (L, 0), value=self.cfg.card) if L else backing

    def encode(self, backing):
        """backing codes [B, K, T] -> encoder states [B, L + T, D] (L = cfg.lookahead, often 0)."""
        backing = self.heard(backing)
        cfg, T = self.cfg, backing.size(-1)
        x = self.embed(self.enc_emb, backing)                                       # [B, T, D]
        rope = self.rope(0, T, x.device)
        mask = attention_mask(T, T, cfg.causal_encoder, cfg.attn_window, x.device)  # [T, T] or None
        for block in self.encoder:
            x = block(x, rope, self_mask=mask)
        return self.enc_norm(x)                                                     # [B, T, D]

    def aligned(self, memory, S):
        """encoder states [B, T, D] -> the aligned input [B, S, D]: step s gets frames s-K+1 .. s.

        K - 1 zero frames on the left make the convolution causal (step 0 sees frame 0
        only); on the right, steps past the last backing frame see what is left of it.
        """
        K, T = self.cfg.n_codebooks, memory.size(1)
        # S = T + K - 1 in training; a solo longer than its backing needs more
        right = max(K - 1, S - T)
        x = F.pad(memory.transpose(1, 2), (K - 1, right))           # [B, D, T + K - 1 + right]
        return self.align_conv(x).transpose(1, 2)[:, :S]            # [B, T + right, D] -> [B, S, D]

    def aligned_step(self, recent):
        """The aligned input of one step from the encoder states of its K frames [B, K, D],
        oldest first -> [B, 1, D]: the training convolution at one output position."""
        conv = self.align_conv
        window = recent.transpose(1, 2).reshape(recent.size(0), -1)     # [B, D * K], as the weight
        return F.linear(window, conv.weight.flatten(1), conv.bias)[:, None]        # [B, 1, D]

    def logits(self, x):
        """decoder states [B, L, D] -> logits [B, K, L, card], all K heads as one matmul."""
        B, L, D = x.shape
        _, K, card = self.heads.shape
        out = self.dec_norm(x) @ self.heads.view(D, K * card)           # [B, L, K * card]
        # (An einsum("bld,dkc->bklc") says the same, but may re-lay out the weights on
        # every call: at one frame per step that copy cost more than the whole model.)
        return out.view(B, L, K, card).transpose(1, 2)                  # [B, K, L, card]

    def pitch_logits(self, x):
        """decoder states [B, L, D] -> the pitch head's logits [B, L, 13] (12 classes, a rest)."""
        return self.pitch_head(self.dec_norm(x))

    def forward(self, backing, dec_in):
        """Teacher forcing: backing [B, K, T] and decoder input [B, K, S] -> logits
        [B, K, S, card]."""
        return self.logits(self.decode(self.encode(backing), dec_in))

    def decode(self, memory, dec_in):
        """encoder states [B, T, D] and decoder input [B, K, S] -> decoder states [B, S, D]."""
        cfg, S = self.cfg, dec_in.size(-1)
        x = self.embed(self.dec_emb, dec_in)                                        # [B, S, D]
        if self.align_conv is not None:
            x = x + self.aligned(memory, S)                                         # [B, S, D]
        rope = self.rope(0, S, x.device)
        enc_rope = self.rope(0, memory.size(1), x.device)
        self_mask = attention_mask(S, S, True, cfg.attn_window, x.device)    # [S, S]: the past only
        # Step s of the decoder is "about" frame s. A causal (streaming) model may read
        # the backing only up to frame s; an offline one reads all of it.
        cross_mask = attention_mask(S, memory.size(1), cfg.causal_encoder, cfg.attn_window,
                                    x.device)
        for block in self.decoder:
            kv = block.cross_attn.project_kv(memory, enc_rope)                   # 2 x [B, H, T, hd]
            x = block(x, rope, self_mask=self_mask, kv=kv, cross_mask=cross_mask)
        return x                                                                    # [B, S, D]

    # ------------------------------------------------------------------------
    # 5. The loss
    # ------------------------------------------------------------------------

    def loss(self, backing, solo, cond_drop=None, input_drop=None, pitch=None, chords=None,
             ahead=None, teacher=None, past=None, plan=None):
        """backing, solo codes [B, K, T] -> (mean cross-entropy, per-codebook cross-entropy
        [K], aux), aux a dict of the training aids' cross-entropies ({} without them).

        cond_drop [B] bool: rows whose backing is replaced by the null condition (classifier-
        free guidance training; train.py draws it). input_drop [B, K, S] bool: decoder inputs
        (the solo's past) hidden behind the special token, so the model must lean on the band
        for what it cannot read (--solo-dropout). past [B, K, T]: the solo as the decoder reads
        its past instead of solo itself (--solo-hold, sax/past.py). The targets stay whole.
        The training aids (train.py), each giving aux[name] its loss: pitch [B, T] long, the
        lead's pitch class in each frame (12: a rest, -100: not counted; the pitch head, read
        at steps 0 .. T-1), or [B, T, 12] float as chords are (it names the band's chord, its
        13th class unread); chords [B, T, 12] float, the band's harmony in each backing frame
        as a distribution (all 0: not counted; the chord head); ahead, the same chords and
        kicks [B, T] bool (anticipation_loss); teacher [B, K, S, card], another model's logits
        on the same windows (distillation). plan [B, K, S]: the class of the note each
        position sounds (the pitch plan, teacher-forced, sax/plan.py).
        """
        if cond_drop is not None:
            backing = self.null_condition(backing, cond_drop)
        target, dec_in = teacher_forcing(solo, self.cfg.card)            # [B, K, S] each
        dec_in = dec_in if past is None else teacher_forcing(past, self.cfg.card)[1]
        if input_drop is not None:
            dec_in = dec_in.masked_fill(input_drop, self.cfg.card)
        memory = self.encode(backing)                                    # [B, L + T, D]
        x = self.decode(memory, dec_in)                                  # [B, S, D]
        aux = {}
        if chords is not None:  # backing frame t is encoder position L + t (L: the lookahead)
            aux["chord"] = self.named_chord(self.chord_head(memory[:, -chords.size(1):]), chords,
                                            cond_drop)
        aux |= {"ahead": self.anticipation_loss(memory, *ahead, cond_drop)} if ahead else {}
        logits = self.logits(x)                                          # [B, K, S, card]
        if plan is not None:  # each code head's bias for its frame's class (13: no note named, 0)
            logits = logits + F.pad(self.pitch_bias, (0, 0, 0, 1))[self.k_index, plan]
        if teacher is not None:  # another model's distributions: distillation
            aux["distill"] = distillation(logits, teacher, target, self.cfg.card, cond_drop)
        codes = codebook_cross_entropy(logits, target, self.cfg.card)
        if pitch is None:
            return (*codes, aux)
        # Step s writes codebook 0 of frame s, the frame whose note it must choose.
        guess = self.pitch_logits(x[:, :pitch.size(1)]).float()         # [B, T, 13]
        if pitch.is_floating_point():  # the band's chord, [B, T, 12] (--pitch-targets chord)
            return (*codes, aux | {"pitch": self.named_chord(guess[..., :12], pitch, cond_drop)})
        ce = F.cross_entropy(guess.transpose(1, 2), pitch, ignore_index=-100, reduction="sum")
        aux["pitch"] = ce / (pitch != -100).sum().clamp(min=1)           # 0, not nan, if none count
        return (*codes, aux)

    def anticipation_loss(self, memory, chords, kicks, cond_drop=None):
        """The anticipation head's loss: from encoder position p, whence the decoder writes solo
        frame p (it heard backing frames <= p - L), name frame p's chord (cross-entropy) and
        whether a kick falls there (binary). memory [B, L + T, D]; chords, kicks [B, T, ...]."""
        L, T = self.cfg.lookahead, chords.size(1)
        guess = self.ahead_head(memory[:, L:T]).float()                 # [B, T - L, 13]
        chords, kicks = chords[:, L:], kicks[:, L:].float()              # the frames it names
        counted = chords.sum(-1) > 0                                     # [B, T - L]: real frames
        if cond_drop is not None:  # a row that hears no band has no future to name
            counted = counted & ~cond_drop[:, None]
        kick_ce = F.binary_cross_entropy_with_logits(guess[..., 12], kicks, reduction="none")
        return (self.named_chord(guess[..., :12], chords, cond_drop)
                + kick_ce[counted].sum() / counted.sum().clamp(min=1))

    @staticmethod
    def named_chord(guess, chords, cond_drop=None):
        """Cross-entropy of logits guess [B, T, 12] against chords [B, T, 12], the mean over the
        counted frames (each sums to 1; all 0: not counted); rows of cond_drop [B] hear no band."""
        if cond_drop is not None:
            chords = chords.masked_fill(cond_drop[:, None, None], 0.0)
        return -(chords * guess.float().log_softmax(-1)).sum() / chords.sum().clamp(min=1)


def teacher_forcing(solo, card):
    """solo codes [B, K, T] -> (target, decoder input), both delayed [B, K, S].

    The decoder reads the target shifted right by one step; the special token doubles
    as the start token, so step 0 predicts from "nothing yet".
    """
    target, _ = build_delay_pattern(solo, card)                           # [B, K, S]
    return target, F.pad(target[..., :-1], (1, 0), value=card)            # [B, K, S] each


def position_cross_entropy(logits, target, card):
    """Cross-entropy at every position: logits [B, K, S, card], target [B, K, S] ->
    (ce [B, K, S], 0 where the target is the special token; real [B, K, S] bool).

    The positions that hold the special token are not the model's to predict: they
    are fixed by the pattern. Counting them would reward the model for a certainty it
    did not earn, and `card` is not even one of the logits' classes.
    """
    B, K, S, V = logits.shape
    real = target != card                                            # [B, K, S]
    safe_target = target.masked_fill(~real, 0)                       # any valid class; masked below
    ce = F.cross_entropy(logits.float().reshape(-1, V), safe_target.reshape(-1), reduction="none")
    return torch.where(real, ce.view(B, K, S), 0.0), real           # where(), not *: inf * 0 is nan


def codebook_cross_entropy(logits, target, card):
    """Cross-entropy per codebook over real positions only: (mean over codebooks, [K])."""
    ce, real = position_cross_entropy(logits, target, card)                   # [B, K, S] each
    per_codebook = ce.sum(dim=(0, 2)) / real.sum(dim=(0, 2)).clamp(min=1)     # [K]
    return per_codebook.mean(), per_codebook


def distillation(logits, teacher, target, card, cond_drop=None):
    """KL(teacher || model) per real position, averaged: logits, teacher [B, K, S, card]. A
    teacher that heard the whole band (offline) hands a causal model what the band's future
    made likely; rows that hear no band (cond_drop) have nothing to learn from it."""
    real = target != card                                                 # [B, K, S]
    if cond_drop is not None:
        real = real & ~cond_drop[:, None, None]
    log_p, log_q = teacher.float().log_softmax(-1), logits.float().log_softmax(-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1)                          # [B, K, S]
    return kl[real].sum() / real.sum().clamp(min=1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="The presets, their sizes, one's settings.")
    parser.add_argument("--preset", choices=list(PRESETS), default="tiny", help="whose settings")
    args = parser.parse_args()
    for name in PRESETS:
        cfg, model = preset_config(name), SoloTransformer(preset_config(name))
        print(f"{name:6s} d_model={cfg.d_model:4d} layers={cfg.n_enc_layers}+{cfg.n_dec_layers} "
              f"heads={cfg.n_heads:2d}  {model.num_params() / 1e6:6.1f} M parameters")
    print(f"settings of the {args.preset} preset:", asdict(preset_config(args.preset)))
