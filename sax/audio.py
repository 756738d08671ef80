"""
sax/audio.py -- audio in and out (any file soundfile or ffmpeg reads, resampled and tamed),
where the solo plays (RMS energy per codec frame), and phase 2's pitch and tempo copies.
"""
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from sax.files import atomic_write

CODEC_RATE = 24_000       # the default codec's (EnCodec 24 kHz); a dataset's is meta's codec
DEMUCS_RATE = 44_100      # Demucs models are trained on 44.1 kHz stereo
SOUNDFILE_FORMATS = {".wav", ".flac", ".aiff", ".aif"}  # read by libsndfile, never by ffmpeg
AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".mp3", ".m4a", ".aiff", ".aif", ".opus", ".webm"}

# ----------------------------------------------------------------------------
# 1. Loading audio
# ----------------------------------------------------------------------------

class SkipSong(Exception):
    """A recording that cannot be used; the message is the reason shown and stored."""


def load_audio(path):
    """Any audio file -> (float32 [channels, samples], rate). soundfile first, then ffmpeg.
    Its samples are checked (checked_samples) before anything else sees them."""
    path = Path(path)
    if path.stat().st_size == 0:  # said plainly, rather than as a decoder's puzzling error
        raise SkipSong("empty file (0 bytes)")
    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)  # [samples, channels]
        warn_if_truncated(path, audio.shape[0], rate)
        return checked_samples(audio.T, rate, path), rate
    except SkipSong:
        raise
    except Exception as err:  # soundfile cannot read mp3 on old libsndfile, nor m4a/webm
        sf_error = str(err).splitlines()[0]
    if path.suffix.lower() in SOUNDFILE_FORMATS:  # soundfile reads these itself: ffmpeg won't help
        raise SkipSong(f"not a readable {path.suffix} file ({sf_error}): is it audio? Export it "
                       "again as WAV or FLAC")
    if shutil.which("ffmpeg") is None:
        raise SkipSong(f"cannot decode ({sf_error}); install ffmpeg to read more formats")
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-f", "f32le", "-ac", "2", "-ar",
           str(DEMUCS_RATE), "-"]
    run = subprocess.run(cmd, capture_output=True)  # a list of arguments, never a shell
    if run.returncode != 0 or not run.stdout:
        raise SkipSong(f"cannot decode (soundfile: {sf_error}; ffmpeg: "
                       f"{run.stderr.decode(errors='replace').strip()[:200]}): "
                       "convert it to WAV or FLAC")
    return checked_samples(np.frombuffer(run.stdout, dtype=np.float32).reshape(-1, 2).T.copy(),
                           DEMUCS_RATE,
                           path), DEMUCS_RATE


def checked_samples(audio, rate, path):
    """audio [C, N] as the pipeline may use it: non-finite samples refused (SkipSong with the
    first bad second), samples past full scale clipped to +-1, with a warning.

    A NaN in a backing reaches every solo frame through attention; a sample of 1e6 (a
    corrupt value, or a float file written unnormalised) would set the backing's level,
    and the solo is matched to that level: a full-scale file. No recording holds
    samples past +-1 (a 16-bit or 24-bit file cannot), so clipping there costs nothing
    real and keeps the level honest.
    """
    bad = ~np.isfinite(audio)
    if bad.any():
        first = np.argmax(bad.any(axis=0)) / rate
        raise SkipSong(f"{int(bad.sum())} samples are not finite (NaN or inf), the first at "
                       f"{first:.3f} s: the file is damaged; export it again from the original")
    audio, said = tame_level(audio, rate)
    if said:
        print(f"WARNING: {path}: {said}")
    return audio


def tame_level(audio, rate, ceiling=0.98):
    """Samples past full scale -> (audio within +-1, what was done in words, or '').

    Two cases. A float file written unnormalised (every sample times 1e5, say) is past
    full scale throughout: it is scaled down as a whole, so that its loud parts peak at
    `ceiling` and the music is kept. A click or a corrupt sample is past it here and
    there: those samples are clipped to +-1, so that they cannot set the level.
    onnx_runner.read_backing applies the same rule (it stands alone on the board).
    """
    magnitude = np.abs(audio)
    over = magnitude > 1.0
    if not over.any():
        return audio, ""
    per_sample = over.reshape(-1, over.shape[-1]).any(axis=0)                      # [N]
    first, peak = np.argmax(per_sample) / rate, float(magnitude.max())
    if over.mean() > 0.01:  # more than 1% of the samples: the whole file is too loud
        factor = ceiling / float(np.percentile(magnitude, 99.9))
        scaled = np.clip(audio * np.float32(factor), -1.0, 1.0)
        return scaled, (f"{over.mean():.1%} of its samples past full scale (peak {peak:.3g}): "
                        f"a file written unnormalised; scaled down as a whole by {factor:.3g}")
    return np.clip(audio, -1.0, 1.0), (
        f"{int(over.sum())} samples past full scale (peak {peak:.3g}, the first at "
        f"{first:.3f} s): a click or a corrupt sample; clipped to +-1 so that it cannot set "
        "the level")


def warn_if_truncated(path, frames, rate):
    """A WAV whose header promises more audio than the file holds (a copy cut short): say so.
    soundfile reads what is there and reports that length, so the header is read here
    (onnx_runner.wav_header_frames does the same on the board, where this file is not)."""
    with open(path, "rb") as f:
        head = f.read(4096)
    at, fmt = head.find(b"data"), head.find(b"fmt ")
    # not a WAV; unknown length
    if head[:4] != b"RIFF" or at < 0 or fmt < 0 or head[at + 4:at + 8] == b"\xff" * 4:
        return
    channels = int.from_bytes(head[fmt + 10:fmt + 12], "little")
    bits = int.from_bytes(head[fmt + 22:fmt + 24], "little")              # per sample
    frame_bytes = channels * bits // 8
    promised = int.from_bytes(head[at + 4:at + 8], "little") // max(1, frame_bytes)
    if promised > frames + 1:
        print(f"WARNING: {path}: its header promises {promised / rate:.1f} "
              f"s, the file holds {frames / rate:.1f} s (a copy cut "
              f"short?): using the {frames / rate:.1f} s it holds")


def resample(audio, rate_from, rate_to):
    """float32 [..., samples] from one sample rate to another (band-limited, torchaudio)."""
    if rate_from == rate_to:
        return audio
    import torchaudio.functional as AF  # imported here: encodec needs torchaudio anyway
    return AF.resample(torch.from_numpy(np.ascontiguousarray(audio)), int(rate_from),
                       int(rate_to)).numpy()


def channels(audio, n):
    """[C, samples] -> [n, samples]: average to mono, or repeat mono to stereo.

    Demucs wants stereo (it was trained on it); EnCodec 24 kHz is mono. Averaging the
    channels keeps centre-panned instruments at full level and halves hard-panned ones.
    """
    mono = audio.mean(axis=0, keepdims=True)
    return mono if n == 1 else (audio if audio.shape[0] == n else np.repeat(mono, n, axis=0))


# ----------------------------------------------------------------------------
# 4. Where the solo plays: RMS energy per codec frame
# ----------------------------------------------------------------------------

def frame_rms_db(audio, hop):
    """RMS level in dBFS of each hop-sized frame: [ceil(N / hop)], aligned with codec frames.

    With hop = the codec's hop (320 samples at 24 kHz), frame i of the RMS is token
    frame i, so a section found here is a slice of the token arrays, no conversion.
    """
    n = math.ceil(len(audio) / hop)
    frames = np.pad(audio, (0, n * hop - len(audio))).reshape(n, hop)          # [F, hop]
    return 20 * np.log10(np.sqrt((frames.astype(np.float64) ** 2).mean(axis=1)) + 1e-9)


def select_sections(rms_db, frame_rate, rel_db, abs_db, min_section_s, merge_gap_s):
    """Frames where the solo plays -> list of (start, end) frame ranges, end exclusive.

    A frame is active when it is above abs_db and within rel_db of the loud frames
    (the 95th percentile), so a quiet recording is judged against itself. Silences
    shorter than merge_gap_s inside a phrase are kept (breaths, rests between notes);
    what is left shorter than min_section_s is dropped (a stray note is not a solo).
    """
    if len(rms_db) == 0:
        return []
    threshold = max(abs_db, np.percentile(rms_db, 95) + rel_db)
    active = rms_db > threshold                                                  # [F] bool
    # Where `active` switches on (+1) and off (-1): padding with 0 at both ends makes
    # every run start and end inside the array.
    edges = np.flatnonzero(np.diff(np.concatenate([[0], active.astype(np.int8), [0]])))
    runs = list(zip(edges[::2], edges[1::2]))  # [(start, end), ...] of active frames
    merged = []
    for start, end in runs:
        if merged and start - merged[-1][1] < merge_gap_s * frame_rate:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return [(int(s), int(e)) for s, e in merged if e - s >= min_section_s * frame_rate]


# ----------------------------------------------------------------------------
# 5. Phase 2: pitch and tempo augmentation
# ----------------------------------------------------------------------------

def time_stretch(audio, rate, n_fft=1024, hop=256):
    """Phase vocoder: play audio [N] `rate` times faster, same pitch -> [round(N / rate)].

    The STFT frames are read at a step of `rate` frames; magnitudes are interpolated
    between neighbours and each bin's phase advances by its measured frequency, so
    sustained tones stay smooth. Its known limit: transients (drum hits, note attacks)
    are smeared over a frame (~40 ms), the familiar "phasey" sound.

    This is torchaudio.functional.phase_vocoder written out so it can be read, with one
    change: the running phase is summed in float64. It grows by up to pi * hop radians a
    frame (800 rad at the top bin), so after a 3-minute song it is millions of radians,
    where float32 keeps only about half a radian of precision (docs/phase2-augmentation.md
    measures the noise that makes). tests/test_data.py holds it equal to the library's.
    """
    x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    window = torch.hann_window(n_fft)
    spec = torch.stft(x, n_fft, hop, window=window, return_complex=True)      # [F, M]
    n_frames = spec.size(1)
    spec = torch.nn.functional.pad(spec, (0, 2))                         # frames i + 1 always exist
    # expected advance per hop, [F, 1]
    omega = torch.linspace(0, math.pi * hop, spec.size(0), dtype=torch.float64)[:, None]
    steps = torch.arange(0, n_frames, rate, dtype=torch.float64)        # fractional frame positions
    i = steps.floor().long()
    frac = (steps - i).float()[None, :]
    a, b = spec[:, i], spec[:, i + 1]                                          # [F, M'] each
    mag = (1 - frac) * a.abs() + frac * b.abs()
    dphi = b.angle().double() - a.angle().double() - omega
    dphi = dphi - 2 * math.pi * torch.round(dphi / (2 * math.pi))              # wrap to [-pi, pi]
    # Output frame j has the first input frame's phase plus the advances of frames 0..j-1.
    phase = torch.cat([spec[:, :1].angle().double(), (omega + dphi)[:, :-1]], dim=1).cumsum(dim=1)
    phase = torch.remainder(phase, 2 * math.pi).float()       # small again: float32 is exact enough
    out = torch.istft(torch.polar(mag, phase), n_fft, hop, window=window,
                      length=round(len(audio) / rate))
    return out.numpy()


def pitch_tempo(audio, rate, semitones, tempo):
    """Shift pitch by `semitones` and play `tempo` times faster: [N] -> [~N / tempo].

    Stretch by tempo / f (f = 2 ** (semitones / 12)), then resample by f, which raises
    every frequency by f and brings the duration back. The resampling ratio is rounded
    to a 50 Hz grid so that its filter stays small: the pitch is off by under 2 cents.
    """
    f = 2 ** (semitones / 12)
    stretched = time_stretch(audio, tempo / f)
    return resample(stretched, int(round(rate * f / 50) * 50), rate)


def write_audio(path, audio, rate):
    """An audio file, atomically, after the check every file the project writes passes:
    finite samples, at most full scale. A NaN plays as a full-scale click in most players,
    and a 16-bit file clips whatever lies past +-1, so either would reach the listener's
    ears at full level. Both are bugs upstream (every reader refuses or tames bad input
    first), named here before anything is written."""
    audio = np.asarray(audio, dtype=np.float32)
    bad = ~np.isfinite(audio)
    if bad.any():
        raise SystemExit(f"not writing {path}: {int(bad.sum())} of its samples are not "
                         "finite (NaN or inf), the first at "
                         f"{np.argmax(bad.reshape(len(audio), -1).any(axis=1)) / rate:.2f} "
                         "s. Nothing was written; this is a bug, please report it with "
                         "the command you ran")
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    if peak > 1.0:
        print(f"WARNING: {path}: peak {peak:.3g}, past full scale: "
              "scaled down to 0.98 before writing")
        audio = audio * np.float32(0.98 / peak)
    atomic_write(path, lambda f: sf.write(f, audio, rate, format=Path(path).suffix[1:].upper()))


def mix_audio(backing, solo):
    """Level-match the solo to the backing (equal RMS), add, and scale each down only if it
    would clip.

    The codec does not keep loudness exactly, and a model's solo may come out much
    quieter or louder than the band; equal RMS is a neutral starting point for
    listening. Scaling the sum down (never clipping it) keeps the waveform intact.
    The DC offset (the mean) of each is removed first: it is inaudible, but an RMS
    that counts it would match levels on it, and an offset added to the band pushes
    the mix toward the limiter (the untrained codec decodes to little more than one).
    """
    n = min(len(backing), len(solo))
    b, s = backing[:n] - backing[:n].mean(), solo[:n] - solo[:n].mean()
    rms = lambda x: float(np.sqrt(np.mean(x ** 2)) + 1e-9)  # noqa: E731
    # At most +40 dB: a nearly silent solo stays quiet instead of its noise floor being
    # raised to the band's level. The backing's level is trustworthy: every reader
    # clips samples past full scale (checked_samples), so no spike can set it.
    s = s * min(rms(b) / rms(s), MAX_SOLO_GAIN)
    mix = b + s
    return limited(mix), limited(s)


MAX_SOLO_GAIN = 100.0  # +40 dB


def limited(x, ceiling=0.98):
    """x scaled down (never clipped) so that its peak is at most `ceiling`, as float32."""
    peak = float(np.abs(x).max()) if len(x) else 0.0
    return (x * (ceiling / peak) if peak > ceiling else x).astype(np.float32)
