"""
model.py -- the multi-stream encoder-decoder transformer that hears a backing track
and writes a saxophone solo, as EnCodec tokens (phase 1-3 and 5 of the proposal).

Read it top to bottom:
  1. settings and presets (tiny / small / base),
  2. the MusicGen delay pattern that lets K codebooks be predicted in parallel,
  3. attention, written out by hand (with a switch to the fused kernel),
  4. the encoder-decoder itself: one embedding table per codebook (summed),
     one linear head per codebook,
  5. the loss (cross-entropy per codebook over real positions only),
  6. sampling: the plain reference loop, the KV-cached loop, classifier-free
     guidance, and the frame-by-frame streaming step of phase 5,
  7. loading a checkpoint folder (config.json + model.safetensors).

Nothing here knows the codec: the number of codebooks K, the cardinality `card`
and the frame rate come from the dataset's meta.json. The only files read are
checkpoints, in section 7.

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
import functools
import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
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
    # H: attention heads; D must divide by H and D / H must be even (RoPE)
    n_heads: int = 4
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
    # the pitch class the lead plays in frame s (or a rest). Only the loss uses it.
    pitch_head: bool = False
    # train.py --pitch-first (with the pitch head): the note first, then its codes. The
    # code heads also read the pitch class of frame s, as an embedding added to the
    # decoder state; training hands them the true one, sampling draws it from the pitch
    # head first. The note is then one explicit choice made from the band, instead of
    # something spread over 4 x 1024 codes.
    pitch_first: bool = False
    # training aid (train.py --chord-aux): a 12-way head on the encoder that names the
    # band's harmony in each backing frame (its pitch classes, as a distribution). The
    # decoder finds the band's chord in the encoder states; this hands it the chord there
    # plainly instead of leaving the encoder to find it from the solo's loss alone. Only
    # the loss uses it.
    chord_head: bool = False

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
        assert self.lookahead >= 0 and (self.lookahead == 0 or self.causal_encoder), (
            f"lookahead={self.lookahead}: a causal model's own setting, 0 or more "
            "(an offline model hears the whole backing anyway)")
        assert self.pitch_head or not self.pitch_first, (
            "pitch_first samples the note from the pitch head: set pitch_head=True with it")


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
    B, K, S = seq.shape
    T = S - K + 1
    return torch.stack([seq[:, k, k:k + T] for k in range(K)], dim=1)  # [B, K, T]


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
    # [..., L, hd]: each pair turned by 90 degrees
    turned = torch.cat((-x2, x1), dim=-1)
    return x * cos.to(x.dtype) + turned * sin.to(x.dtype)  # [..., L, hd]


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
        # [B, L, D] -> [B, H, L, hd]
        return x.view(B, L, self.n_heads, D // self.n_heads).transpose(1, 2)

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
                # [B, H, C, hd]: the past and now
                k, v = cache.filled()
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
        # settling into a solo-only language model first (StemGen sums time-aligned
        # context into its input for the same reason).
        self.align_conv = nn.Conv1d(D, D, kernel_size=K) if cfg.aligned_backing else None
        # [1, K, 1]
        self.register_buffer("k_index", torch.arange(K).view(1, K, 1), persistent=False)
        self.apply(self._init_weights)
        # The pitch head: 12 pitch classes and a rest; sampling never reads it. Made after
        # every other weight has drawn its random numbers, so that those start as they
        # would without it.
        self.pitch_head = nn.Linear(D, 13) if cfg.pitch_head else None
        if self.pitch_head is not None:
            self._init_weights(self.pitch_head)
        # pitch-first: one embedding per pitch class and the rest, [13, D]
        self.pitch_emb = nn.Parameter(torch.randn(13, D) * 0.02) if cfg.pitch_first else None
        # The chord head, last of all for the same reason: 12 pitch classes
        self.chord_head = nn.Linear(D, 12) if cfg.chord_head else None
        if self.chord_head is not None:
            self._init_weights(self.chord_head)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

    def num_params(self):
        return sum(p.numel() for p in self.parameters())

    def embed(self, table, tokens):
        """tokens [B, K, L] -> the sum over K of each codebook's embedding: [B, L, D]."""
        rows = table[self.k_index, tokens]                                          # [B, K, L, D]
        return rows.sum(dim=1)                                                      # [B, L, D]

    def rope(self, start, length, device):
        positions = torch.arange(start, start + length, device=device)
        return rope_angles(positions, self.cfg.d_model // self.cfg.n_heads)  # 2 x [L, hd]

    def null_condition(self, backing, drop):
        """Classifier-free guidance: rows of `drop` [B] get the null backing (all special
        tokens)."""
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
        window = recent.transpose(1, 2).reshape(recent.size(0), -1)     # [B, D * K], as conv.weight
        # [B, 1, D]
        return F.linear(window, conv.weight.reshape(conv.out_channels, -1), conv.bias)[:, None]

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

    def predict(self, x):
        """decoder states [B, L, D] -> what the heads predict, [B, K, L, card]: the logits,
        or for a pitch-first model the log-probabilities of each codebook with the note
        summed out, log sum_p p(p | x) p(code | x, p), which are logits too. So the
        validation loss and the conditioning gain mean the same for both kinds of model:
        the cross-entropy of each codebook's own prediction."""
        if self.pitch_emb is None:
            return self.logits(x)
        # [B, 1, L, 13, 1]: log p(note | state), broadcast over codebooks and codes
        prior = self.pitch_logits(x).float().log_softmax(-1)[:, None, :, :, None]
        out = None
        for p in range(13):  # one note at a time: 13 copies of [B, K, L, card] at once are large
            part = self.logits(x + self.pitch_emb[p]).float().log_softmax(-1) + prior[:, :, :, p]
            out = part if out is None else torch.logaddexp(out, part)
        return out

    def forward(self, backing, dec_in):
        """Teacher forcing: backing [B, K, T] and decoder input [B, K, S] -> logits
        [B, K, S, card] (predict)."""
        return self.predict(self.decode(self.encode(backing), dec_in))

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

    def loss(self, backing, solo, cond_drop=None, input_drop=None, pitch=None, chords=None):
        """backing, solo codes [B, K, T] -> (mean cross-entropy, per-codebook cross-entropy
        [K], aux), aux a dict of the training aids' cross-entropies ({} without them).

        cond_drop [B] bool: rows whose backing is replaced by the null condition
        (classifier-free guidance training; train.py draws it).
        input_drop [B, K, S] bool: decoder inputs (the solo's past) hidden behind the
        special token, so the model must lean on the band for what it cannot read
        (train.py's --solo-dropout). The targets stay whole.
        pitch [B, T] long: the lead's pitch class in each frame (12: a rest, -100: not
        counted), for a model with the pitch head (train.py --pitch-aux): aux["pitch"] is
        the pitch head's cross-entropy, read at steps 0 .. T-1.
        chords [B, T, 12] float: the band's harmony in each backing frame, a distribution
        over the 12 pitch classes (all 0: not counted), for a model with the chord head
        (train.py --chord-aux): aux["chord"] is the chord head's cross-entropy.
        """
        if cond_drop is not None:
            backing = self.null_condition(backing, cond_drop)
        target, dec_in = teacher_forcing(solo, self.cfg.card)            # [B, K, S] each
        if input_drop is not None:
            dec_in = dec_in.masked_fill(input_drop, self.cfg.card)
        memory = self.encode(backing)                                    # [B, L + T, D]
        x = self.decode(memory, dec_in)                                  # [B, S, D]
        aux = {}
        if chords is not None:
            # Frame t of the backing is encoder position L + t (L: the lookahead's blanks).
            # A row whose backing was dropped hears no band: it has no chord to name.
            guess = self.chord_head(memory[:, -chords.size(1):]).float()  # [B, T, 12]
            if cond_drop is not None:
                chords = chords.masked_fill(cond_drop[:, None, None], 0.0)
            ce = -(chords * guess.log_softmax(-1)).sum()                 # soft targets
            # the mean over the counted frames: each of them sums to 1
            aux["chord"] = ce / chords.sum().clamp(min=1)
        if pitch is None:
            return (*codebook_cross_entropy(self.predict(x), target, self.cfg.card), aux)
        T, states = pitch.size(1), x
        if self.pitch_emb is not None:
            # pitch-first: the heads read the true note of each frame (a rest on padding
            # and on the K - 1 steps past the last frame), as sampling hands them its own
            note = F.pad(pitch.masked_fill(pitch < 0, 12), (0, x.size(1) - T), value=12)
            states = x + self.pitch_emb[note]                            # [B, S, D]
        codes = codebook_cross_entropy(self.logits(states), target, self.cfg.card)
        # Step s writes codebook 0 of frame s, the frame whose note it must choose.
        guess = self.pitch_logits(x[:, :T])                             # [B, T, 13]
        ce = F.cross_entropy(guess.float().transpose(1, 2), pitch, ignore_index=-100,
                             reduction="sum")
        aux["pitch"] = ce / (pitch != -100).sum().clamp(min=1)           # 0, not nan, if none count
        return (*codes, aux)


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


# ----------------------------------------------------------------------------
# 6. Sampling
# ----------------------------------------------------------------------------

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
    if cfg.pitch_first:
        raise ValueError("a pitch-first model draws each note before its codes: sample it "
                         "with sample_solo")
    B, K, T = backing.shape
    n_frames = n_frames or T
    check_backing_reach(cfg, T, n_frames)
    template = generation_template(n_frames, K, cfg.card, B, backing.device, prompt)  # [B, K, S]
    backing = _prepare(model, backing, cfg_coef)                                   # [B or 2B, K, T]
    gen = torch.Generator(device=backing.device).manual_seed(seed)
    tokens = torch.full((B, K, 1), cfg.card, dtype=torch.long, device=backing.device)  # start token
    for s in range(template.size(-1)):
        inp = tokens if cfg_coef is None else tokens.repeat(2, 1, 1)
        logits = model(backing, inp)[:, :, -1]                                 # [B or 2B, K, card]
        if cfg_coef is not None:
            logits = guided_logits(logits, cfg_coef)
        nxt = sample_next(logits, temperature, top_k, top_p, gen)             # [B, K]
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

    def decoder_step(self, tokens, choose_pitch=None):
        """tokens [B, K] (the previous step's codes) -> logits [B, K, card] for this step.

        A pitch-first model first has its note chosen: choose_pitch(pitch logits [B, 13])
        -> pitch classes [B] (sample_solo's draws it), whose embedding the heads then read.
        """
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
        self.step += 1
        if model.pitch_emb is not None:
            x = x + model.pitch_emb[choose_pitch(model.pitch_logits(x)[:, 0])][:, None]
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

    def choose_pitch(logits):
        """pitch-first: the note of this step, drawn as the codes are (guidance, temperature)
        and shared by the conditional and the null rows: [B or 2B, 13] -> [B or 2B]."""
        if cfg_coef is not None:
            logits = guided_logits(logits, cfg_coef)
        note = sample_next(logits[:, None], temperature, generator=gen)[:, 0]  # [B]
        return note if cfg_coef is None else note.repeat(2)

    tokens = torch.full((B, K), cfg.card, dtype=torch.long, device=backing.device)  # start token
    out = torch.empty(B, K, S, dtype=torch.long, device=backing.device)
    for s in range(S):
        logits = state.decoder_step(tokens if cfg_coef is None else tokens.repeat(2, 1),
                                    choose_pitch)
        if cfg_coef is not None:
            logits = guided_logits(logits, cfg_coef)
        nxt = sample_next(logits, temperature, top_k, top_p, gen)             # [B, K]
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
        if cfg.pitch_first:
            raise ValueError("streaming does not draw a pitch-first model's notes yet: train "
                             "the streaming model without --pitch-first")
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
        if self.cfg_coef is not None:
            logits = guided_logits(logits, self.cfg_coef)
        nxt = sample_next(logits, generator=self.gen, **self.opts)                 # [B, K]
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


# ----------------------------------------------------------------------------
# 7. Checkpoint folders
# ----------------------------------------------------------------------------
# A checkpoint is a folder: config.json (the ModelConfig, the training settings, the
# dataset's codec and the metrics) and model.safetensors (the weights: tensors only,
# nothing that runs code when loaded). train.py writes them; loading lives here, so
# that generate.py, or any script of yours, needs model.py and nothing of training.
# (huggingface_hub's PyTorchModelHubMixin would give save_pretrained/from_pretrained,
# but it writes its own config.json of the constructor's arguments, while this one
# also carries the codec and the data the tokens mean something for.)

def read_json(path, what):
    """A JSON file we wrote -> its object, or one clear line naming the file and the fix."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise SystemExit(f"{path} not found: expected {what}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SystemExit(f"{path} is damaged ({err}): expected {what}") from None
    if not isinstance(obj, dict):
        raise SystemExit(f"{path} is damaged (not a JSON object): expected {what}")
    return obj


def resolve_checkpoint(path):
    """A checkpoint folder, or its leftover .old twin if a crash hit between the two renames."""
    path = Path(path)
    old = path.with_name(f".{path.name}.old")
    return path if path.exists() or not old.exists() else old


def fetch_checkpoint(name):
    """A local checkpoint folder, or a Hub repo id downloaded to the local cache.

    A local path wins: a folder named like "runs/tiny" has one slash too, and must not
    be sent to the Hub. Only the files a checkpoint needs are downloaded.
    """
    if resolve_checkpoint(name).exists():
        return Path(name)
    if name.count("/") == 1 and not name.startswith((".", "/")):
        from huggingface_hub import snapshot_download
        try:
            wanted = ["config.json", "model.safetensors", "codec.safetensors", "README.md"]
            return Path(snapshot_download(name, allow_patterns=wanted))
        except Exception as err:
            raise SystemExit(f"--checkpoint {name}: not a local folder, "
                             f"and the Hub download failed: {err}") from None
    raise SystemExit(f"--checkpoint {name}: no such folder. Train first "
                     "(python train.py) or give a Hub id user/name.")


def load_model(folder, device="cpu"):
    """A checkpoint folder -> (model in eval mode, its config.json dict). Safetensors only."""
    folder = resolve_checkpoint(folder)
    config = read_json(folder / "config.json",
                       "a checkpoint folder (config.json, model.safetensors) written by train.py")
    # Checkpoints from before the aligned path existed were trained without it.
    model = SoloTransformer(model_config_of(config, folder / "config.json"))
    return load_weights(model, folder, device).eval(), config


def model_config_of(config, path):
    """The ModelConfig a checkpoint's config.json describes, each field of the right type,
    or one line naming the file: an edited or foreign config.json must not reach the
    model's constructor (whose assertions would be a traceback)."""
    fix = "copy the checkpoint folder whole, or train again"
    settings = config.get("model") if isinstance(config, dict) else None
    if not isinstance(settings, dict):
        raise SystemExit(f"{path} has no \"model\" settings: not a checkpoint's config.json; {fix}")
    known = {f.name: f for f in fields(ModelConfig)}
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise SystemExit(f"{path}: unknown model setting {', '.join(unknown)} (written by another "
                         f"version, or edited); {fix}")
    for name, value in settings.items():
        want = known[name].type
        if not isinstance(value, ACCEPTS[want]) or (isinstance(value, bool) and want is not bool):
            raise SystemExit(f"{path}: model setting {name} is {value!r}, not "
                             f"{ACCEPTS_NAME[want]}; {fix}")
    try:
        return ModelConfig(**{"aligned_backing": False, **settings})
    except AssertionError as err:  # the constructor's own checks: numbers that cannot fit
        raise SystemExit(f"{path}: {err}; {fix}") from None


# The JSON values each type of ModelConfig field takes (a float field takes 75 as well as 75.0).
ACCEPTS = {int: (int,), float: (int, float), bool: (bool,), str: (str,),
           Optional[int]: (int, type(None))}
ACCEPTS_NAME = {int: "a whole number", float: "a number", bool: "true or false", str: "a text",
                Optional[int]: "a whole number or null"}


def load_weights(model, folder, device="cpu"):
    """Put the weights of a checkpoint folder's model.safetensors into model (on device);
    returns it."""
    from safetensors.torch import load_file
    weights = Path(folder) / "model.safetensors"
    if not weights.exists():
        raise SystemExit(f"{weights} not found: the checkpoint folder is incomplete")
    try:
        tensors = load_file(str(weights), device=str(device))
    except Exception as err:  # safetensors' own error: empty, cut short, or not safetensors
        why = (str(err).strip().splitlines() or [type(err).__name__])[0][:120]
        raise SystemExit(f"{weights} is damaged ({why}): copy the checkpoint folder whole "
                         "again, or train again") from None
    try:
        model.load_state_dict(tensors)
    except RuntimeError as err:  # another preset's weights: one line, not 88
        lines = str(err).strip().splitlines()
        first = lines[-1].strip()[:160] if lines else type(err).__name__
        raise SystemExit(f"{weights} does not fit the model its folder's config.json "
                         f"describes ({first}): the two files come from different "
                         "checkpoints; copy the checkpoint folder whole, or train again") from None
    return model.to(device)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Print the presets, their sizes "
                                                 "and the settings of one of them.")
    parser.add_argument("--preset", choices=list(PRESETS), default="tiny",
                        help="whose settings to print")
    args = parser.parse_args()
    for name in PRESETS:
        cfg = preset_config(name)
        model = SoloTransformer(cfg)
        print(f"{name:6s} d_model={cfg.d_model:4d} layers={cfg.n_enc_layers}+{cfg.n_dec_layers} "
              f"heads={cfg.n_heads:2d}  {model.num_params() / 1e6:6.1f} M parameters")
    print(f"settings of the {args.preset} preset:", asdict(preset_config(args.preset)))
