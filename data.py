"""
data.py -- from recordings (or a built-in synthetic jazz quartet) to token datasets.
Phases 1 and 2 of the proposal.

    python data.py                                  # the demo corpus -> data/demo
    python data.py --input-dir my_jazz/ --out data/mine
    python data.py --urls https://... --out data/web    (needs: pip install yt-dlp)
    python data.py --input-dir my_jazz/ --augment 2 --out data/mine_aug   (phase 2)

The pipeline, one song at a time:
  1. load: any file soundfile can read (ffmpeg for the rest), resampled;
  2. separate: Demucs htdemucs_6s at 44.1 kHz stereo -> backing (drums + bass + piano
     + guitar) and solo (other + vocals: where a saxophone lands), at 24 kHz mono;
     the demo corpus has its true stems and skips this unless --separate;
  3. augment (phase 2): random pitch shifts and tempo changes, the same for both stems;
  4. keep the sections where the solo plays, by RMS energy;
  5. tokenize both stems with EnCodec 24 kHz at 3 kbps: 4 codebooks of 1024 codes, 75 Hz;
  6. split by song into train / val / test and write meta.json + memory-mappable arrays.

Every song is cached on disk by content and settings, so a rerun (or a run after a
crash or kill -9) only does what is missing. Every file is written atomically.

Expected output for the default demo corpus on a 2-core CPU (offline, so after a banner
saying that it falls back to the untrained codec), in about 4 minutes:
    songs: 100%|####| 64/64 [04:14<00:00,  3.98s/song]
    kept 64 songs (0 skipped) -> data/demo: train 52, val 6, test 6 songs; 837 s of training
    audio; 261.2 s
"""
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import guard  # first of the project's: a Ctrl-C while torch loads is one line

guard.quiet_ctrl_c(__name__)

import numpy as np
import soundfile as sf
import torch
from tqdm import tqdm

# data.parse_settings and the rest, as the scripts and tests have long called them
from settings import check_settings, command_line, opt, parse_settings  # noqa: F401

CODEC_RATE = 24_000       # EnCodec 24 kHz model: sample rate of everything tokenized
DEMUCS_RATE = 44_100      # Demucs models are trained on 44.1 kHz stereo
SOUNDFILE_FORMATS = {".wav", ".flac", ".aiff", ".aif"}  # read by libsndfile, never by ffmpeg
AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".mp3", ".m4a", ".aiff", ".aif", ".opus", ".webm"}


DEVICES = ["auto", "cpu", "cuda"]


@dataclass
class DataConfig:
    out: str = opt("data/demo", "dataset folder to write")
    input_dir: str = opt("", "folder of your recordings; empty: the built-in demo corpus")
    urls: list = opt([], "links to download with yt-dlp (optional dependency)")
    demo_songs: int = opt(64, "demo corpus: number of songs", at_least=1, at_most=100_000)
    demo_seconds: float = opt(24.0, "demo corpus: length of each song in seconds",
                              at_least=2, at_most=3600)
    separate: bool = opt(False,
                         "demo corpus: run Demucs on the mix instead of using the true stems")
    demucs_model: str = opt("htdemucs_6s",
                            "Demucs model name (demucs_unittest: small, random, offline)")
    demucs_repo: str = opt("", "local folder holding Demucs weights (offline machines)")
    backing_sources: list = opt(["drums", "bass", "piano", "guitar"],
                                "Demucs stems summed into the backing")
    solo_sources: list = opt(["other", "vocals"],
                             "Demucs stems summed into the solo (a sax lands here)")
    encodec_weights: str = opt("pretrained",
                               "'pretrained' (download once), a local .th file, or 'untrained'")
    bandwidth: float = opt(3.0, "EnCodec bandwidth in kbps: 3.0 gives 4 codebooks",
                           choices=[1.5, 3.0, 6.0, 12.0, 24.0])
    rms_rel_db: float = opt(-30.0, "solo plays where its RMS is above its loud "
                                   "frames' level (95th percentile) + this", at_most=0)
    rms_abs_db: float = opt(-45.0, "... and above this absolute level (dBFS)", at_most=0)
    min_section_s: float = opt(2.0, "shortest section kept, in seconds", above=0)
    merge_gap_s: float = opt(0.75, "silences shorter than this inside a section are kept",
                             at_least=0)
    min_song_s: float = opt(1.0, "shorter recordings are skipped", above=0)
    augment: int = opt(0, "phase 2: random pitch/tempo copies of each training song",
                       at_least=0, at_most=100)
    pitch_semitones: float = opt(2.0, "augmentation: pitch shift drawn from [-x, +x] semitones",
                                 at_least=0, at_most=12)
    tempo_range: float = opt(0.1, "augmentation: tempo ratio drawn from [1 - x, 1 + x]",
                             at_least=0, below=0.5)
    val_fraction: float = opt(0.1, "share of songs for validation (at least one song)",
                              at_least=0, below=1)
    test_fraction: float = opt(0.1,
                               "share of songs for testing (at least one song when there are 3+)",
                               at_least=0, below=1)
    seed: int = opt(0, "seed for the demo corpus, the splits, augmentation and the "
                       "untrained codec",
                    at_least=0)
    device: str = opt("auto", "auto: the GPU when there is one", DEVICES)
    threads: int = opt(0, "CPU threads for torch (0: 1 or all, whichever "
                          "a timing at start finds faster; docs/troubleshooting.md)",
                       at_least=0, at_most=1024)
    demo_backing: str = opt("", "write the backing of a demo song no model "
                                "trained on to this .wav or .flac, and exit")
    overwrite: bool = opt(False, "replace an existing --demo-backing file, or "
                                 "a dataset in --out built with other settings")


# ----------------------------------------------------------------------------
# The installation: one line, not a traceback, when the packages do not load together
# ----------------------------------------------------------------------------
# encodec imports torchaudio, and torchaudio's compiled part (libtorchaudio.so) loads
# only with the torch it was built against. pip cannot see that: torchaudio 2.11.1 asks
# for any torch >= 2.11, yet loads only with a newer torch than 2.11.0. So a fresh
# `pip install` of ranges can pick a pair that fails deep inside `import encodec`.
# The project installs one tested set of versions (requirements.lock), and every
# script calls check_install() before its real work: a broken pair ends in one line
# naming the versions and the command that fixes it (docs/troubleshooting.md).

LOCK_FILE = Path(__file__).resolve().parent / "requirements.lock"
INSTALL_FIX = ("pip install -r requirements.lock (Python 3.11 on Linux x86_64; elsewhere "
               "pip install -r requirements.txt), docs/troubleshooting.md")


def locked_versions(path=LOCK_FILE):
    """{package: version} of the lock's `name==version` lines; {} when there is no lock."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return {}
    pins = [line.split(";")[0].strip().split("==") for line in lines
            if "==" in line and not line.startswith("#")]
    return {name.lower(): version for name, version in pins}


def installed_version(name):
    from importlib import metadata
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def check_install(*extra):
    """Import torchaudio, encodec and each of `extra` (e.g. "demucs"), or exit with one line.

    Called by each script before its real work. What fails is usually the pair torch +
    torchaudio, so the line names both, as installed and as tested.
    """
    import importlib
    for name in ("torchaudio", "encodec", *extra):
        try:
            importlib.import_module(name)
        # OSError: a compiled part that does not load; ImportError: missing
        except Exception as err:
            why = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
            lock = locked_versions()
            tested = (f"; the tested pair is torch {lock['torch']} + "
                      f"torchaudio {lock['torchaudio']}"
                      if {"torch", "torchaudio"} <= set(lock) else "")
            raise SystemExit(f"{name} does not import ({why}). Installed: "
                             f"torch {installed_version('torch')}, torchaudio "
                             f"{installed_version('torchaudio')}{tested}. "
                             f"Fix: {INSTALL_FIX}") from None


def set_threads(n):
    """torch's CPU threads: n, or when n is 0 the faster of 1 thread and all of them, timed
    at start (about 0.2 s) and printed. On a CPU that other work keeps busy, torch's own
    default (one thread per core) ran the demo build 3x slower than 1 thread; on an idle
    many-core machine all the threads win. Returns the number chosen."""
    if n:
        torch.set_num_threads(n)
        return n
    cores = torch.get_num_threads()
    if cores == 1:
        return 1
    timed = {k: matmul_ms(k) for k in (1, cores)}
    best = min(timed, key=timed.get)
    torch.set_num_threads(best)
    print(f"threads: {best} of {cores} (timed at start: 1 thread {timed[1]:.1f} ms, {cores} "
          f"threads {timed[cores]:.1f} ms; --threads N to choose)")
    return best


def matmul_ms(threads, repeats=15):
    """The median of `repeats` timings of a tiny model's typical matmul at `threads` threads.
    The median, not the best: with a busy neighbour, all the threads now and then get
    all the cores (a best time that flatters them), while most calls wait for one."""
    torch.set_num_threads(threads)
    a, b = torch.randn(1024, 512), torch.randn(512, 512)
    a @ b  # warm: the thread pool starts
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def pick_device(name):
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else
                        "cpu" if name == "auto" else name)


# ----------------------------------------------------------------------------
# Atomic writes: a temporary file in the same folder, then a rename, which the
# file system does in one step. A crash leaves the old file or the new one, never half.
# ----------------------------------------------------------------------------

def atomic_write(path, write_fn, mode="wb"):
    """Write a file through write_fn(f), atomically. fsync before the rename: otherwise
    a power cut can leave the new name pointing at data the disk never received."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, mode) as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    # a failed or interrupted write leaves nothing behind, not even the temporary file
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path, obj):
    atomic_write(path, lambda f: json.dump(obj, f, indent=2, ensure_ascii=False), mode="w")


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


def read_metrics(path):
    """metrics.jsonl -> its rows. A line cut short (a crash while it was written) is dropped:
    it is the only line a crash can damage, and the next run writes it again."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            print(f"{path}: dropped a damaged line "
                  f"({line[:40]!r}...), left by an interrupted write")
    return rows


def overfitting(history):
    """Validation loss risen twice in a row while the training loss kept falling: the
    failure reported by earlier implementations of this idea. history: the (train loss,
    validation loss) of each evaluation so far. train.py warns when it is True;
    ablation.py counts the evaluations where it was."""
    if len(history) < 3:
        return False
    (train3, val3), (_, val2), (train1, val1) = history[-3:]
    return val1 > val2 > val3 and train1 < train3



# The dataset's format: 2 since the solo's notes are tracked (<split>_notes.npy), 3 since
# the band's chroma is heard (<split>_chroma.npy). HEARD_SINCE: the format that first
# stores each.
FORMAT = 3
HEARD_SINCE = {"notes": 2, "chroma": 3}


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
# 2. The demo corpus: a synthetic jazz quartet, rendered with numpy
# ----------------------------------------------------------------------------
# A demo corpus has one job: to be a place where listening to the band pays. In an
# earlier version the harmony looped a fixed 4-bar form and the lead improvised its own
# rhythm, so inside a 4 s window the solo's own past predicted almost everything the
# backing could say, and the model learned to ignore the band (docs/phase1). Here the
# band carries three things the solo's past cannot tell:
#   harmony   two-bar units (ii-V, V-I, a tritone substitute, ...) whose key changes at
#             random, so the next chord is a surprise that only the backing reveals;
#   rhythm    in each bar the band plays 2 to 4 "kicks" on random swung eighths (piano
#             chord, kick drum and a snare accent together), and the lead plays its
#             notes on those kicks, as a soloist does on an arrangement's hits;
#   dynamics  band and lead swell and fade together, to a level drawn per two bars.
# The lead also rests for a bar between phrases of 2 to 4 bars (the RMS rule of
# section 4 drops those rests). Everything is known, so meta.json keeps the chords,
# kicks, dynamics and lead notes: the ground truth that train.py and generate.py
# score listening against.

CHORD_TONES = {"maj7": [0, 4, 7, 11], "m7": [0, 3, 7, 10], "7": [0, 4, 7, 10],
               "m7b5": [0, 3, 6, 10], "m6": [0, 3, 7, 9]}
# Two-bar units: (semitones above the unit's key, quality) for each bar.
UNITS = {
    "ii-V": [(2, "m7"), (7, "7")],
    "V-I": [(7, "7"), (0, "maj7")],
    "ii-bII7": [(2, "m7"), (1, "7")],      # tritone substitution: Db7 stands in for G7 in C
    "I-vi": [(0, "maj7"), (9, "m7")],
    "minor ii-V": [(2, "m7b5"), (7, "7")],
    "i-IV7": [(0, "m6"), (5, "7")],
}
NOTE_NAMES = ["C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B"]
MODULATION_P = 0.5  # chance that a two-bar unit moves to a new key drawn at random
UNTRAINED_AUDIO = ("the UNTRAINED codec's decoder ignores the codes: every "
                   "file it decodes is the same DC offset (about -0.07) with "
                   "faint fixed tones (-40 dBFS), whatever the model wrote")
# part of every demo song's cache key and of meta.json: a new corpus is never mixed with an old one
DEMO_VERSION = 2


def midi_hz(m):
    return 440.0 * 2 ** ((m - 69) / 12)


def add_tone(buf, start_s, dur_s, hz, amp, harmonics, decay, rate, vibrato=0.0, attack=0.005):
    """Add one additive-synthesis note to buf (in place).

    harmonics: (multiple of hz, amplitude) pairs, which set the timbre: 1/h amplitudes
    give the bright, buzzy spectrum of a reed, a few low ones a round bass. The
    envelope rises over `attack`, decays exponentially, and fades out over the last
    20 ms so that no note ends with a click. vibrato: depth of a 5.5 Hz pitch wobble.
    """
    i0, n = int(start_s * rate), int(dur_s * rate)
    n = min(n, len(buf) - i0)
    if n <= 0:
        return
    t = np.arange(n) / rate
    phase = 2 * np.pi * hz * (t + vibrato * np.sin(2 * np.pi * 5.5 * t) / (2 * np.pi * 5.5))
    wave = sum(a * np.sin(h * phase) for h, a in harmonics)
    release = np.minimum(1.0, (n - np.arange(n)) / (0.02 * rate))     # 20 ms fade at the end
    env = np.minimum(1.0, t / attack) * np.exp(-t / decay) * release
    buf[i0:i0 + n] += amp * wave * env


def add_noise_hit(buf, start_s, dur_s, amp, decay, rate, rng, bright=True):
    """Add a decaying noise burst (a cymbal, hi-hat or snare stroke) to buf (in place)."""
    i0, n = int(start_s * rate), min(int(dur_s * rate), len(buf) - int(start_s * rate))
    if n <= 0:
        return
    noise = rng.standard_normal(n)
    if bright:  # a first difference tilts the noise toward the high frequencies of cymbals
        noise = np.diff(noise, prepend=0.0)
    buf[i0:i0 + n] += amp * noise * np.exp(-np.arange(n) / (decay * rate))


def demo_harmony(n_bars, rng, key_change_bar=None):
    """One chord per bar: a chain of two-bar units, each in the last key or a random new one.

    key_change_bar (even): instead, one key until that bar and from there a key a
    tritone away, where no chord of the old key fits (the robustness check of
    listening.key_change_test). Returns [(root pitch class, quality, unit name, key
    pitch class)] per bar.
    """
    key, bars = int(rng.integers(12)), []
    while len(bars) < n_bars:
        if key_change_bar is not None:
            key = (key + 6) % 12 if len(bars) == key_change_bar else key
        elif bars and rng.random() < MODULATION_P:
            key = int(rng.integers(12))
        name = list(UNITS)[int(rng.integers(len(UNITS)))]
        bars += [((key + offset) % 12, quality, name, key) for offset, quality in UNITS[name]]
    return bars[:n_bars]


def render_demo_song(index, seconds, seed, rate=CODEC_RATE, key_change_at=None):
    """One deterministic demo song -> (backing [N], solo [N], truth dict).

    Rendered straight at 24 kHz mono, the codec's format, as two stems: the band
    (bass + piano + drums) and the lead. Song `index` of seed `seed` is always the
    same song, on any machine: all randomness comes from one numpy generator.
    key_change_at (a share of the song, e.g. 0.5): one key change there, at the start
    of a two-bar unit, and no other (truth["key_change_s"] says when).
    """
    rng = np.random.default_rng([seed, index])
    bpm = float(rng.uniform(100, 190))
    beat = 60.0 / bpm
    swing = beat * 2 / 3  # the swung eighth: the "and" falls two thirds into the beat
    n_bars = math.ceil(seconds / (4 * beat))
    N = int(seconds * rate)
    bass, piano, drums, lead = (np.zeros(N) for _ in range(4))
    change = None if key_change_at is None else int(n_bars * key_change_at) // 2 * 2
    # one bar more: the bass approaches the next root
    harmony = demo_harmony(n_bars + 1, rng, change)
    # Kicks: 2 to 4 distinct swung-eighth positions (0..7) per bar, drawn at random.
    kicks = [sorted(int(e) for e in rng.choice(8, size=int(rng.integers(2, 5)),
                                               replace=False)) for _ in range(n_bars)]
    kick_times = [t for bar in range(n_bars) for e in kicks[bar]
                  if (t := bar * 4 * beat + (e // 2) * beat + (e % 2) * swing) < seconds - 0.05]
    # Phrases: the lead plays 2 to 4 bars, then rests one bar while the band goes on.
    playing, bar = np.zeros(n_bars, dtype=bool), int(rng.integers(0, 2))
    while bar < n_bars:
        length = int(rng.integers(2, 5))
        playing[bar:bar + length] = True
        bar += length + 1
    chords, notes = [], []
    prev_lead = 70
    for bar in range(n_bars):
        root, quality, unit, key = harmony[bar]
        t_bar = bar * 4 * beat
        tones = [(root + i) % 12 for i in CHORD_TONES[quality]]
        chords.append({"bar": bar, "start_s": round(t_bar, 4), "end_s": round(t_bar + 4 * beat, 4),
                       "symbol": NOTE_NAMES[root] + quality, "pitch_classes": tones,
                       "unit": unit, "key": NOTE_NAMES[key]})
        # Walking bass: root on beat 1, chord tones on 2 and 3, a chromatic approach on 4.
        for b in range(4):
            if b == 0:
                pc = root
            elif b == 3:
                pc = (harmony[bar + 1][0] + (1 if rng.random() < 0.5 else -1)) % 12
            else:
                pc = tones[int(rng.integers(1, 4))]
            add_tone(bass, t_bar + b * beat, beat * 0.95, midi_hz(36 + pc), 0.35,
                     [(1, 1.0), (2, 0.4), (3, 0.15)], 0.5, rate)
        # Drums: ride on every beat and the swung "let" of 2 and 4, hi-hat on 2 and 4.
        for b in range(4):
            add_noise_hit(drums, t_bar + b * beat, 0.4, 0.06, 0.12, rate, rng)
            if b in (1, 3):
                add_noise_hit(drums, t_bar + b * beat + swing, 0.3, 0.04, 0.08, rate, rng)
                add_noise_hit(drums, t_bar + b * beat, 0.08, 0.05, 0.02, rate, rng)
        # The kicks: the piano's rootless voicing (3rd, 5th, 7th), the bass drum and a
        # snare accent together. The lead, in a phrase bar, plays a chord tone on each,
        # near its last note (voice leading), held until the next kick (at most 2 beats).
        bar_kicks = [t for t in kick_times if t_bar <= t < t_bar + 4 * beat]
        for i, t_hit in enumerate(bar_kicks):
            for pc in tones[1:]:
                add_tone(piano, t_hit, beat * 1.5, midi_hz(55 + (pc - 7) % 12 + 5), 0.09,
                         [(1, 1.0), (2, 0.5), (3, 0.25), (4, 0.12)], 0.35, rate)
            add_tone(drums, t_hit, 0.25, 55.0, 0.3, [(1, 1.0)], 0.08, rate)
            add_noise_hit(drums, t_hit, 0.15, 0.08, 0.04, rate, rng, bright=False)
            if not playing[bar]:
                continue
            later = [t for t in kick_times if t > t_hit]
            dur = min((later[0] if later else seconds) - t_hit, 2 * beat) * 0.9
            cands = [m for m in range(58, 83) if m % 12 in tones]
            near = sorted(cands, key=lambda m: abs(m - prev_lead) + rng.random() * 3)[:3]
            midi = prev_lead = int(near[int(rng.integers(len(near)))])
            add_tone(lead, t_hit, dur, midi_hz(midi), 0.22, [(h, 1.0 / h) for h in range(1, 9)],
                     1.5, rate,
                     vibrato=0.004, attack=0.02)
            notes.append({"start_s": round(t_hit, 4), "end_s": round(t_hit + dur, 4), "midi": midi})
    # A short low-pass softens the lead's upper harmonics, a little like a reed's.
    lead = np.convolve(lead, [0.25, 0.5, 0.25], mode="same")
    # Dynamics: a level per two bars (-12 to 0 dB), joined by linear swells and fades,
    # applied to band and lead alike: they rise and fall together.
    levels_db = rng.uniform(-12, 0, size=math.ceil(n_bars / 2) + 1)
    unit_times = np.arange(len(levels_db)) * 8 * beat
    envelope = 10 ** (np.interp(np.arange(N) / rate, unit_times, levels_db) / 20)
    backing = (bass + piano + drums) * envelope
    lead = lead * envelope
    gain = min(1.0, 0.9 / (np.abs(backing + lead).max() + 1e-9))  # the mix never clips
    backing, lead = backing * gain, lead * gain
    truth = {"tempo_bpm": round(bpm, 2), "swing_ratio": 2.0, "chords": chords,
             "kicks_s": [round(t, 4) for t in kick_times], "lead_notes": notes,
             "dynamics": [{"start_s": round(float(t), 4), "level_db": round(float(d), 2)}
                          for t, d in zip(unit_times, levels_db)]}
    if change is not None:
        truth["key_change_s"] = round(change * 4 * beat, 4)
    return backing.astype(np.float32), lead.astype(np.float32), truth


# ----------------------------------------------------------------------------
# 3. Separation with Demucs
# ----------------------------------------------------------------------------

OFFLINE_HELP = ("Three ways out: (1) run once on a machine with internet so the "
                "weights are cached; (2) point at local weights ({flag}); (3) use "
                "{fallback} (audio is then not meaningful, but every step runs).")


def load_separator(name, repo=""):
    """A Demucs model by name, from the Hugging Face Hub / the legacy URL, or a local folder.

    htdemucs_6s is the only released Demucs with piano and guitar stems, which is what
    lets the backing keep the piano and the solo keep (mostly) the horn.
    """
    from demucs.pretrained import get_model
    try:
        # demucs_unittest is built with random weights: seeded, so that two runs (or a
        # rerun after a crash) separate every song with the same ones. The caller's
        # random state is left as it was.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = get_model(name, repo=Path(repo) if repo else None)
    except (Exception, SystemExit) as err:  # demucs calls sys.exit on some failures
        where = (f"the local folder {repo}" if repo
                 else "the Hugging Face Hub and the legacy download URL")
        raise SystemExit(f"Could not load the Demucs model {name!r} from {where}: {err}\n"
                         + OFFLINE_HELP.format(
            flag="--demucs-repo DIR", fallback="--demucs-model demucs_unittest")) from None
    return model.eval()


def _sum_sources(stems, sources, wanted):
    picked = [stems[sources.index(s)] for s in wanted if s in sources]
    if not picked:
        raise SystemExit(f"none of the stems {wanted} is in this Demucs model's sources {sources}; "
                         "fix --backing-sources / --solo-sources")
    return sum(picked)


@torch.no_grad()
def separate(model, audio, rate, backing_sources, solo_sources, device, chunk_s=20.0):
    """Any audio [C, N] -> backing and solo at 24 kHz mono, [N'] each.

    Long files go through in chunks of chunk_s seconds, each reduced to two mono
    24 kHz stems at once, so memory stays bounded whatever the length (the price: a
    possible small seam every chunk_s seconds). Given a whole file, Demucs would hold
    all its stems at 44.1 kHz stereo: 1.3 GB for 10 minutes of 6 stems. Within a
    chunk, Demucs itself works through overlapping segments of a few seconds.
    """
    from demucs.apply import apply_model
    sources = list(model.sources)
    mix = channels(resample(audio, rate, model.samplerate), model.audio_channels)  # [2, N44]
    chunk = int(chunk_s * model.samplerate)
    backs, solos = [], []
    for start in tqdm(range(0, mix.shape[1], chunk), desc="separate", leave=False, unit="chunk"):
        x = torch.from_numpy(mix[:, start:start + chunk]).to(device)              # [2, n]
        # Demucs was trained on mixes normalised to zero mean and unit variance (as its
        # own command line does); the stems are scaled back to the input's level after.
        ref = x.mean(0)                                                          # [n], the mono mix
        mean, std = ref.mean(), ref.std() + 1e-8
        # shifts=0: Demucs's default (1) moves the input by a random offset drawn from
        # Python's global random module, so two runs would separate differently.
        stems = apply_model(model, ((x - mean) / std)[None], shifts=0, device=device, split=True,
                            overlap=0.25)[0]
        stems = (stems * std + mean).cpu().numpy()                                 # [sources, 2, n]
        # Sum the chosen stems, then mono, then 24 kHz: two small arrays leave this chunk.
        for out, wanted in ((backs, backing_sources), (solos, solo_sources)):
            stem = channels(_sum_sources(stems, sources, wanted), 1)[0]
            out.append(resample(stem, model.samplerate, CODEC_RATE))
    return np.concatenate(backs).astype(np.float32), np.concatenate(solos).astype(np.float32)


def ser_db(reference, estimate):
    """Signal-to-error ratio in dB: 10 log10(|s|^2 / |s - s_hat|^2).

    0 dB means the error is as loud as the signal; each +10 dB divides the error's
    energy by 10. This is not BSS Eval's SDR (Vincent et al. 2006), which first lets
    a short filter distort the reference and counts only what no filter explains; it
    is simpler and stricter (any gain or phase error counts as error).
    """
    n = min(len(reference), len(estimate))
    err = reference[:n] - estimate[:n]
    return float(10 * np.log10((np.sum(reference[:n] ** 2) + 1e-12) / (np.sum(err ** 2) + 1e-12)))


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


# What the solo plays: its pitch class in each codec frame, by the YIN pitch tracker
# (de Cheveigné and Kawahara 2002). train.py --pitch-aux learns from these notes, so it
# works on any recording, not only on the demo corpus whose notes are known. A pitch
# class forgives the tracker's commonest mistake, a note heard an octave off.
# A song cached by an older version of what is heard beside the tokens is done again
# (1: the solo's notes; 2: and the band's chroma, band_chroma below).
TRACKER_VERSION = 2
NOTE_RANGE_HZ = (80.0, 1000.0)  # baritone sax's lowest note to well above the alto's highest


def track_notes(audio, hop, rate, window=1024, dip=0.15, voiced=0.35, rel_db=-30.0):
    """The pitch class (0 = C .. 11 = B) the audio sounds in each hop-sized frame, or -1
    (silence, noise): int8 [ceil(N / hop)], aligned with the codec's frames as
    frame_rms_db is.

    YIN in short: for each frame, a window of `window` samples around its centre;
    d(tau), the energy of the window minus itself shifted by tau samples, is small
    when tau is a period; dividing d by its running mean makes it about 1 where there
    is no period. The first lag whose normalized d dips below `dip` (else the lowest),
    walked down to its local minimum, is the period. The frame counts as a note when
    that minimum is below `voiced` and the frame is within rel_db of the loud frames
    (the 95th percentile). On the demo corpus's lead it names the true pitch class of
    99.6% of the frames where a note sounds (docs/phase1-proof-of-concept.md).
    """
    n = math.ceil(len(audio) / hop)
    lo, hi = int(rate / NOTE_RANGE_HZ[1]), int(rate / NOTE_RANGE_HZ[0]) + 1   # lags, samples
    span = window - hi                                          # samples each difference sums
    padded = np.pad(audio.astype(np.float64), (window // 2, window // 2 + n * hop))
    centres = np.arange(n) * hop + hop // 2           # frame i's centre; its window starts there
    frames = np.lib.stride_tricks.sliding_window_view(padded, window)[centres]   # [F, window]
    # d(tau) = sum_j (x_j - x_{j+tau})^2 over j < span = e(0) + e(tau) - 2 r(tau), where
    # r(tau) = sum_j x_j x_{j+tau} comes from one FFT product and e from running sums.
    spectrum = np.fft.rfft(frames, 2 * window)
    r = np.fft.irfft(np.conj(np.fft.rfft(frames[:, :span], 2 * window)) * spectrum,
                     2 * window)[:, :hi + 1]                                       # [F, hi + 1]
    energy = np.pad(np.cumsum(frames ** 2, axis=1), ((0, 0), (1, 0)))             # [F, window + 1]
    lags = np.arange(hi + 1)
    d = energy[:, span:span + 1] + energy[:, lags + span] - energy[:, lags] - 2 * r
    d[:, 0] = 0.0
    norm = np.ones_like(d)                                  # d / its mean over lags 1 .. tau
    norm[:, 1:] = d[:, 1:] * lags[1:] / np.maximum(np.cumsum(d[:, 1:], axis=1), 1e-12)
    band = norm[:, lo:hi]                                                      # [F, hi - lo]
    dips = band < dip
    first = np.where(dips.any(axis=1), dips.argmax(axis=1), band.argmin(axis=1))   # [F]
    # from there, the first lag that is not above its right neighbour: the local minimum
    is_min = np.concatenate([band[:, :-1] <= band[:, 1:], np.ones((n, 1), bool)], axis=1)
    tau = np.where(np.arange(band.shape[1]) >= first[:, None], is_min, False).argmax(axis=1)
    best = band[np.arange(n), tau]
    tau = tau + lo
    # a parabola through the minimum and its neighbours: the period to a fraction of a sample.
    # Its vertex lies within half a lag of a true minimum; at the search range's lower edge
    # (a neighbour outside it lower still) it could fly off to a negative period, so it
    # is held to that half lag.
    a, b, c = (norm[np.arange(n), np.minimum(tau + i, hi)] for i in (-1, 0, 1))
    curve = a - 2 * b + c
    shift = np.where(curve > 0, 0.5 * (a - c) / np.where(curve > 0, curve, 1), 0.0)
    period = tau + np.clip(shift, -0.5, 0.5)
    midi = 69 + 12 * np.log2(rate / period / 440.0)
    centre = frames[:, window // 2 - hop // 2:window // 2 + hop // 2]
    level = 10 * np.log10((centre ** 2).mean(axis=1) + 1e-18)                   # dBFS
    loud = level > np.percentile(level, 95) + rel_db if n else level > 0
    return np.where((best < voiced) & loud, np.round(midi) % 12, -1).astype(np.int8)


# What the band plays: its chroma, the share of its pitched energy in each of the 12
# pitch classes, in each codec frame. train.py --chord-aux teaches the encoder to name
# it, so that the chord the solo's notes are chosen from is plain in the encoder states
# (docs/phase3). From the backing's audio, so any recording has it, not only the demo
# corpus whose chords are known.
CHROMA_RANGE_HZ = (55.0, 2000.0)  # the bass's low A to the piano's voicings; drums above


def band_chroma(audio, hop, rate, window=8192, block=256):
    """The chroma of the audio in each hop-sized frame: float16 [ceil(N / hop), 12], each
    row summing to 1 (all 0 where it is silent), aligned with the codec's frames.

    The power spectrum of a Hann window of `window` samples (341 ms at 24 kHz: a
    semitone apart is 5 Hz at the bass's low A, and the bins are 2.9 Hz apart; a chord
    lasts longer than the window) around each frame's centre; each spectral peak (a bin
    above its neighbours) in CHROMA_RANGE_HZ adds its power to the pitch class of the
    nearest semitone. Counting peaks only keeps most of the drums' noise out. On the
    demo corpus 73% of the chroma falls on the chord's tones (a third by chance;
    docs/phase1-proof-of-concept.md). Computed `block` frames at a time, to keep the
    spectra small.
    """
    n = math.ceil(len(audio) / hop)
    freqs = np.fft.rfftfreq(window, 1 / rate)
    inside = (freqs >= CHROMA_RANGE_HZ[0]) & (freqs <= CHROMA_RANGE_HZ[1])
    pc = np.round(12 * np.log2(freqs[inside] / 440.0)).astype(int) % 12    # A = 9, C = 0
    fold = np.zeros((inside.sum(), 12), np.float32)
    fold[np.arange(len(pc)), (pc + 9) % 12] = 1.0                           # bin -> class
    padded = np.pad(audio.astype(np.float32), (window // 2, window // 2 + n * hop))
    taper = np.hanning(window).astype(np.float32)
    centres = np.arange(n) * hop + hop // 2
    out = np.zeros((n, 12), np.float32)
    for b in range(0, n, block):
        frames = np.lib.stride_tricks.sliding_window_view(padded, window)[centres[b:b + block]]
        power = np.abs(np.fft.rfft(frames * taper, axis=1)) ** 2               # [block, bins]
        peak = np.zeros_like(power, dtype=bool)
        peak[:, 1:-1] = (power[:, 1:-1] > power[:, :-2]) & (power[:, 1:-1] >= power[:, 2:])
        out[b:b + block] = (power * peak)[:, inside] @ fold
    total = out.sum(axis=1, keepdims=True)
    return np.where(total > 1e-10, out / np.maximum(total, 1e-30), 0.0).astype(np.float16)


def event_frames(event, frame_rate, tempo=1.0, first=0):
    """The frames of a demo truth event (a note or a chord: start_s, end_s) as a slice, in a
    copy played `tempo` times faster, counted from frame `first` of the song (a window's
    start; frames before it are cut)."""
    return slice(max(0, round(event["start_s"] / tempo * frame_rate) - first),
                 max(0, round(event["end_s"] / tempo * frame_rate) - first))


def chroma_on_chords(chroma, truth, frame_rate, semitones=0.0, tempo=1.0):
    """Share of band_chroma's weight that falls on the tones of the demo's chord, over the
    frames inside a chord (the check of the chroma against the corpus's truth; by
    chance about a third)."""
    tones = np.zeros(chroma.shape, dtype=bool)
    for chord in truth["chords"]:
        tones[event_frames(chord, frame_rate, tempo),
              [(pc + round(semitones)) % 12 for pc in chord["pitch_classes"]]] = True
    counted = tones.any(axis=1) & (chroma.sum(axis=1) > 0)
    weight = (chroma.astype(np.float32) * tones).sum(axis=1)
    return float(weight[counted].mean()) if counted.any() else None


def notes_right(tracked, truth, frame_rate, semitones=0.0, tempo=1.0):
    """Share of the frames where the demo's lead plays a note that track_notes names right
    (the check of the tracker against the corpus's truth)."""
    lead = np.full(len(tracked), -1)
    for note in truth["lead_notes"]:
        lead[event_frames(note, frame_rate, tempo)] = (note["midi"] + round(semitones)) % 12
    sounding = lead >= 0
    return float((tracked[sounding] == lead[sounding]).mean()) if sounding.any() else None


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


# ----------------------------------------------------------------------------
# 6. EnCodec
# ----------------------------------------------------------------------------

class CodecUnavailable(SystemExit):
    """The pretrained EnCodec weights could not be fetched (offline machine)."""


def load_codec(weights, bandwidth, device):
    """EnCodec 24 kHz: weights 'pretrained' (torch hub cache), a local .th path, or 'untrained'.

    A local file is read with torch.load(weights_only=True): tensors only, no code
    can run. (encodec's own loader unpickles freely; it is not used here.)
    """
    from encodec import EncodecModel
    # encodec 0.1.1's own, harmless
    warnings.filterwarnings("ignore", message=".*weight_norm.*deprecated")
    if weights == "untrained":
        codec = EncodecModel.encodec_model_24khz(pretrained=False)
    elif weights == "pretrained":
        try:
            codec = EncodecModel.encodec_model_24khz(pretrained=True)
        except Exception as err:
            raise CodecUnavailable(
                "Could not download the EnCodec 24 kHz weights "
                f"(torch hub, from the encodec release URL): {err}\n"
                + OFFLINE_HELP.format(flag="--encodec-weights path/to/encodec_24khz-d7cc33bc.th",
                                      fallback="--encodec-weights untrained")) from None
    else:
        path = Path(weights)
        if not path.is_file():
            raise SystemExit(f"--encodec-weights {weights}: no such file; "
                             "give the path of encodec_24khz-d7cc33bc.th")
        codec = EncodecModel.encodec_model_24khz(pretrained=False)
        try:
            codec.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as err:  # not torch.save's, cut short, or another model's tensors
            why = (str(err).strip().splitlines() or [type(err).__name__])[0][:120]
            raise SystemExit(f"--encodec-weights {weights}: not the EnCodec 24 kHz weights "
                             f"({why}): give the path of encodec_24khz-d7cc33bc.th") from None
    codec.set_target_bandwidth(bandwidth)  # without it, all 32 codebooks are used
    return codec.eval().to(device)


def codec_info(codec, weights):
    """The codec's numbers, as stored in meta.json: model.py reads K, card, frame_rate here."""
    K = codec.quantizer.get_num_quantizers_for_bandwidth(codec.frame_rate, codec.bandwidth)
    return {"name": "encodec_24khz", "weights": weights, "bandwidth_kbps": codec.bandwidth,
            "sample_rate": codec.sample_rate, "frame_rate": codec.frame_rate,
            "hop": codec.sample_rate // codec.frame_rate,
            "n_codebooks": K, "card": codec.quantizer.bins, "untrained": weights == "untrained"}


@torch.no_grad()
def fill_untrained_codebooks(codec, audio, seed):
    """Give an untrained EnCodec codebooks that depend on the audio (its are all zero).

    Stage by stage: set the codebook's rows to frames drawn (seeded) from the current
    residual of the encoder's output, quantize, subtract, go on to the next stage.
    Quick where EnCodec's own k-means init is not. Tokens then vary with the audio,
    but the decoder ignores them (UNTRAINED_AUDIO): for testing the plumbing only.
    """
    x = torch.from_numpy(audio)[None, None].to(next(codec.parameters()).device)  # [1, 1, N]
    residual = codec.encoder(x)[0].T                                              # [F, D]
    gen = torch.Generator().manual_seed(seed)
    K = codec_info(codec, "untrained")["n_codebooks"]
    for layer in codec.quantizer.vq.layers[:K]:
        book = layer._codebook
        rows = torch.randint(0, residual.size(0), (book.codebook_size,), generator=gen)
        book.embed.copy_(residual[rows.to(residual.device)])
        book.inited.fill_(1)
        residual = residual - book.decode(book.encode(residual))


@torch.no_grad()
def encode_audio(codec, audio, chunk_s=30.0):
    """24 kHz mono [N] -> codes int16 [K, ceil(N / hop)], in chunks so memory stays bounded.

    Each chunk is a whole number of frames, so the chunks' codes join into exactly
    the frames a whole-file encode would number. The encoder's state does not cross
    a chunk boundary: a frame right after one may differ slightly from a whole-file
    encode, a price paid once every 30 s.
    """
    hop = codec.sample_rate // codec.frame_rate
    chunk = int(chunk_s * codec.frame_rate) * hop  # a whole number of frames per chunk
    device = next(codec.parameters()).device
    parts = []
    for start in range(0, len(audio), chunk):
        # [1, 1, n]
        piece = np.ascontiguousarray(audio[start:start + chunk])
        x = torch.from_numpy(piece)[None, None].to(device)
        frames = codec.encode(x)                                        # [(codes [1, K, F], scale)]
        parts.append(torch.cat([c for c, _ in frames], dim=-1)[0].cpu())  # [K, F]
    # [K, F]; card 1024 fits int16
    return torch.cat(parts, dim=-1).numpy().astype(np.int16)


@torch.no_grad()
def decode_codes(codec, codes, chunk_s=10.0, context_s=1.0):
    """codes [K, F] -> 24 kHz mono audio [F * hop], in overlapping chunks so memory stays bounded.

    EnCodec 24 kHz decodes causally: a sample depends on its own frame and the frames
    before it, never after. Its convolutions reach back a fixed distance and its LSTM
    forgets, so each chunk is decoded together with context_s of the frames before it,
    and only the chunk's own samples are kept. With 1 s of context the result matches a
    whole-track decode to about 1e-7 (test_decode_in_chunks_matches_whole); without it,
    each chunk starts with a click. Decoding 3 minutes at once took over 4 GB.
    """
    device = next(codec.parameters()).device
    hop = codec.sample_rate // codec.frame_rate
    chunk, context = max(1, round(chunk_s * codec.frame_rate)), round(context_s * codec.frame_rate)
    codes = np.asarray(codes, dtype=np.int64)
    parts = []
    for start in range(0, codes.shape[-1], chunk):
        # context frames before the chunk
        lo = max(0, start - context)
        x = torch.from_numpy(codes[:, lo:start + chunk])[None].to(device)     # [1, K, n]
        audio = codec.decode([(x, None)])[0, 0].cpu().numpy()                 # [n * hop (+ a few)]
        # the chunk's own samples
        parts.append(audio[(start - lo) * hop:(x.size(-1)) * hop])
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)  # [F * hop]


def prepare_codec(cfg, out, calibration, device, fallback_ok):
    """The dataset's codec: loaded, or (untrained mode) filled once and saved in `out`.

    fallback_ok (the demo corpus only): when the download fails, go on untrained with
    a banner. Your own recordings never fall back silently.
    """
    if cfg.encodec_weights != "untrained":
        try:
            codec = load_codec(cfg.encodec_weights, cfg.bandwidth, device)
            return codec, codec_info(codec, cfg.encodec_weights)
        except CodecUnavailable as err:
            if not fallback_ok:
                raise
            print("=" * 78 + f"\n{err}\n\nThe demo corpus goes on with "
                             "the UNTRAINED codec: training and its\n"
                  "metrics are real, but the audio carries nothing of the tokens (its decoder\n"
                  "ignores them). For real audio, get the weights (docs/troubleshooting.md)\n"
                  "and rerun with --encodec-weights PATH.\n" + "=" * 78)
    codec = untrained_codec(out, cfg.bandwidth, device, seed=cfg.seed, calibration=calibration)
    return codec, codec_info(codec, "untrained")


def untrained_codec(folder, bandwidth, device, seed=0, calibration=None):
    """The untrained codec whose codebooks are saved in folder/codec.safetensors.

    When the file is missing and calibration (a function returning audio) is given,
    the codebooks are filled from that audio and saved there, once: every later run,
    and generate.py, must decode with the very same codebooks or the tokens mean nothing.
    """
    from safetensors.torch import load_file, save
    state_file = Path(folder) / "codec.safetensors"
    torch.manual_seed(seed)  # the untrained encoder and decoder: seeded random weights
    codec = load_codec("untrained", bandwidth, device)
    if state_file.exists():
        codec.load_state_dict(load_file(str(state_file), device=str(device)))
    elif calibration is not None:
        fill_untrained_codebooks(codec, calibration(), seed)
        state = {k: v.detach().cpu().contiguous() for k, v in codec.state_dict().items()}
        atomic_write(state_file, lambda f: f.write(save(state)))
    else:
        raise SystemExit(f"{state_file} is missing: this model was trained on "
                         "tokens of the untrained codec, whose codebooks "
                         "live there. Rebuild the dataset with data.py.")
    return codec



def dataset_codec(numbers, home, device, weights=""):
    """The codec a dataset was tokenized with, from its numbers (meta.json's "codec"):
    the untrained one from home/codec.safetensors, or the pretrained weights (`weights`
    says where they are on this machine; default: where the dataset found them)."""
    if numbers["untrained"]:
        return untrained_codec(home, numbers["bandwidth_kbps"], device)
    return load_codec(weights or numbers["weights"], numbers["bandwidth_kbps"], device)

def load_codec_for(config, folder, weights, device):
    """The codec the checkpoint's dataset was tokenized with, checked against the model.

    Tokens mean something only for the codec that made them: a model trained on one
    codebook set and decoded with another plays noise without any error. So the
    numbers the model was built for (K, card, frame rate) are compared with the codec's
    before anything runs. An untrained codec's codebooks travel with the checkpoint
    (codec.safetensors, from a Hub download) or stay in its dataset folder.
    """
    numbers = config["data"]["codec"]
    homes = [Path(folder), Path(config["data"]["dir"])]
    home = next((h for h in homes if (h / "codec.safetensors").exists()), homes[-1])
    codec = dataset_codec(numbers, home, device, weights)
    found, m = codec_info(codec, numbers["weights"]), config["model"]
    mismatch = [(k, found[k], m[k]) for k in ("n_codebooks", "card",
                                              "frame_rate") if found[k] != m[k]]
    if mismatch:
        raise SystemExit("the codec does not match the checkpoint: " + ", ".join(
            f"{k} is {a} in the codec but {b} in the model" for k, a, b in mismatch)
            + f". Use the codec settings the model was trained with ({numbers}).")
    return codec, found


# Phase 5: the codec, a chunk at a time, its state carried from chunk to chunk.
# EnCodec 24 kHz is causal: every convolution looks back a fixed number of steps,
# and its LSTM carries a state. Run on a whole file, each convolution pads its left
# edge; run on a stream, the "padding" is simply the last inputs of the chunk before,
# and the LSTM starts from where the last chunk left it. A chunk then costs only its
# own samples (re-reading past audio for context cost 3.5 times as much at 200 ms), and
# the codes are those of a whole-file encode, the way the training data were encoded,
# from the first frames on (tests/test_onnx.py measures it). Both classes are
# nn.Modules of plain tensor operations so that onnx_export.py traces them as they are;
# their state is a list of tensors that goes in with a chunk and comes out updated.

def _conv_layers(module):
    """The layers of a SEANet encoder or decoder, in order, residual blocks as
    ("residual", block layers, shortcut layer); names from the encodec package."""
    for layer in module.model:
        kind = type(layer).__name__
        if kind == "SEANetResnetBlock":
            yield "residual", list(layer.block), layer.shortcut
        else:
            yield kind, layer, None


def _carried(conv):
    """Steps of a streamed convolution's state: what whole-file padding puts on the left of
    a Conv1d ((kernel - 1) * dilation - (stride - 1) inputs), or the overhang of a
    ConvTranspose1d into the next chunk (kernel - stride outputs)."""
    k, s = conv.kernel_size[0], conv.stride[0]
    if isinstance(conv, torch.nn.ConvTranspose1d):
        return k - s
    return (k - 1) * conv.dilation[0] - (s - 1)


class StreamingSEANet(torch.nn.Module):
    """One SEANet (EnCodec's encoder or decoder) on a chunk [1, C, n] with its state.

    The state, per layer that needs one: a convolution's last (kernel - 1) * dilation
    - (stride - 1) inputs (what whole-file padding would have put on its left); a
    transposed convolution's last kernel - stride outputs, which the next chunk's first
    inputs still add to; the LSTM's (h, c). Zeros to begin with: silence before the music.
    """

    def __init__(self, seanet):
        super().__init__()
        self.seanet = seanet

    def initial_state(self, device="cpu"):
        state = []
        def visit(kind, layer):
            if kind == "SConv1d" and _carried(layer.conv.conv):
                conv = layer.conv.conv
                state.append(torch.zeros(1, conv.in_channels, _carried(conv), device=device))
            elif kind == "SConvTranspose1d":
                tr = layer.convtr.convtr
                state.append(torch.zeros(1, tr.out_channels, _carried(tr), device=device))
            elif kind == "SLSTM":
                lstm = layer.lstm
                state.extend([torch.zeros(lstm.num_layers, 1, lstm.hidden_size, device=device)] * 2)
        self.walk(visit)
        return state

    def walk(self, visit):
        for kind, layer, shortcut in _conv_layers(self.seanet):
            for k, part in ([(type(b).__name__, b) for b in layer] + [("SConv1d", shortcut)]
                            if kind == "residual" else [(kind, layer)]):
                visit(k, part)

    def forward(self, x, *state):
        """x [1, C, n] and the state -> (y [1, C', n'], *the new state)."""
        state, new = list(state), []

        def run(kind, layer, x):
            if kind == "SConv1d":
                conv = layer.conv.conv
                pad = _carried(conv)
                if pad:
                    x = torch.cat([state.pop(0), x], dim=-1)       # the past, then the chunk
                    new.append(x[..., x.size(-1) - pad:])
                return conv(x)
            if kind == "SConvTranspose1d":
                tr = layer.convtr.convtr
                y = tr(x)                                   # [1, C, (n - 1) * stride + kernel]
                tail, n = _carried(tr), x.size(-1) * tr.stride[0]
                # the last chunk's overhang added in; this chunk's overhang kept (bias once)
                y = torch.cat([y[..., :tail] + state.pop(0), y[..., tail:]], dim=-1)
                new.append(y[..., n:] - tr.bias[None, :, None])
                return y[..., :n]
            if kind == "SLSTM":
                seq = x.permute(2, 0, 1)                                   # [n, 1, C]
                out, (h, c) = layer.lstm(seq, (state.pop(0), state.pop(0)))
                new.extend([h, c])
                return (out + seq).permute(1, 2, 0)                        # the skip
            return layer(x)                                                # ELU and the like

        for kind, layer, shortcut in _conv_layers(self.seanet):
            if kind == "residual":
                y = x
                for part in layer:
                    y = run(type(part).__name__, part, y)
                x = run("SConv1d", shortcut, x) + y
            else:
                x = run(kind, layer, x)
        return (x, *new)


class StreamingEncoder(torch.nn.Module):
    """EnCodec's encoder and quantizer on a chunk: (audio [1, 1, n * hop], *state) ->
    (codes [1, K, n], *state)."""

    def __init__(self, codec):
        super().__init__()
        self.codec, self.seanet = codec, StreamingSEANet(codec.encoder)

    def forward(self, audio, *state):
        emb, *new = self.seanet(audio, *state)
        codes = self.codec.quantizer.encode(emb, self.codec.frame_rate, self.codec.bandwidth)
        return (codes.transpose(0, 1), *new)


class StreamingDecoder(torch.nn.Module):
    """EnCodec's dequantizer and decoder on a chunk: (codes [1, K, n], *state) ->
    (audio [1, 1, n * hop], *state)."""

    def __init__(self, codec):
        super().__init__()
        self.codec, self.seanet = codec, StreamingSEANet(codec.decoder)

    def forward(self, codes, *state):
        return self.seanet(self.codec.quantizer.decode(codes.transpose(0, 1)), *state)


def chunk_frames(cfg, numbers):
    """Frames in one streaming chunk of cfg.chunk_ms (at least one)."""
    return max(1, round(cfg.chunk_ms / 1000 * numbers["frame_rate"]))


# ----------------------------------------------------------------------------
# 7. One song, cached
# ----------------------------------------------------------------------------

def checked_audio(source, cfg):
    """A file source's audio (float32 [C, N], rate), or SkipSong with the reason:
    unreadable, too short or silent. Cheap next to separation, so these checks run
    over every file before the splits are drawn."""
    audio, rate = load_audio(source["path"])
    seconds = audio.shape[1] / rate
    if seconds < cfg.min_song_s:
        raise SkipSong(f"too short: {seconds:.2f} s, at least {cfg.min_song_s} s needed")
    if np.abs(audio).max() < 1e-4:
        raise SkipSong("silent: the whole file is below -80 dBFS")
    return audio, rate


def song_stems(source, cfg, separator, device):
    """A source -> (backing, solo) at 24 kHz mono and what is known about the song.

    The cheap checks (length, silence) come before separation, the expensive step.
    """
    if source["kind"] == "demo":
        backing, solo, truth = render_demo_song(source["index"], cfg.demo_seconds, cfg.seed)
        facts = {"truth": truth}
        if cfg.separate:
            est_backing, est_solo = separate(separator, (backing + solo)[None], CODEC_RATE,
                                             cfg.backing_sources, cfg.solo_sources, device)
            facts["separation_ser_db"] = {"solo": ser_db(solo, est_solo),
                                          "backing": ser_db(backing, est_backing)}
            backing, solo = est_backing, est_solo
        return backing, solo, facts
    audio, rate = checked_audio(source, cfg)
    backing, solo = separate(separator, audio, rate, cfg.backing_sources, cfg.solo_sources, device)
    return backing, solo, {"original_rate": rate, "original_channels": audio.shape[0]}


def process_song(source, cfg, codec, numbers, separator, device, cache_dir, settings_key):
    """Separate, augment, select and tokenize one song; cached by content and settings.

    The cache key hashes the file's bytes (a renamed file is not redone, an edited one
    is) and every setting that changes the result, including the codec's codebooks.
    Variant 0 is the song as recorded; variants 1.. are its augmented copies.
    """
    # The split is part of the key: augmented copies are made for training songs only.
    key = hashlib.sha256((source["fingerprint"] + source["split"]
                          + settings_key).encode()).hexdigest()[:20]
    cached = cache_dir / f"{key}.json"
    if cached.exists():
        record = json.loads(cached.read_text())
        if record.get("notes") == TRACKER_VERSION:  # else made before the notes were tracked
            return record
    backing, solo, extra = song_stems(source, cfg, separator, device)
    rng = np.random.default_rng([cfg.seed, int(key[:8], 16)])
    variants = [(0.0, 1.0)]
    if source["split"] == "train":
        variants += [(float(rng.uniform(-cfg.pitch_semitones, cfg.pitch_semitones)),
                      float(rng.uniform(1 - cfg.tempo_range,
                                        1 + cfg.tempo_range))) for _ in range(cfg.augment)]
    record = {"id": source["id"], "source": source["name"], "split": source["split"],
              "duration_s": round(len(solo) / CODEC_RATE, 3), **extra,
              "notes": TRACKER_VERSION, "variants": []}
    for v, (semitones, tempo) in enumerate(variants):
        # The same transformation on both stems: they stay aligned frame for frame.
        b, s = (backing, solo) if v == 0 else (pitch_tempo(backing, CODEC_RATE, semitones, tempo),
                                               pitch_tempo(solo, CODEC_RATE, semitones, tempo))
        sections = select_sections(frame_rms_db(s, numbers["hop"]), numbers["frame_rate"],
                                   cfg.rms_rel_db,
                                   cfg.rms_abs_db, cfg.min_section_s, cfg.merge_gap_s)
        if not sections:
            if v == 0:
                raise SkipSong("no section where the solo plays (solo RMS never "
                               f"above the threshold for {cfg.min_section_s} s; "
                               "see --rms-rel-db / --rms-abs-db)")
            continue
        codes_file = cache_dir / f"{key}_{v}.npz"
        # The whole song is tokenized, then cut: tokens at a section's edge were made
        # with the audio around them, as at generation time.
        bk, sk = encode_audio(codec, b), encode_audio(codec, s)  # [K, F] each
        notes = track_notes(s, numbers["hop"], CODEC_RATE)                     # [F]
        notes = np.pad(notes, (0, max(0, bk.shape[1] - len(notes))), constant_values=-1)
        chroma = band_chroma(b, numbers["hop"], CODEC_RATE)                    # [F, 12]
        chroma = np.pad(chroma, ((0, max(0, bk.shape[1] - len(chroma))), (0, 0)))
        atomic_write(codes_file, lambda f: np.savez(f, backing=bk, solo=sk,
                                                    notes=notes[:bk.shape[1]],
                                                    chroma=chroma[:bk.shape[1]]))
        kept = sum(e - st for st, e in sections)
        record["variants"].append({"semitones": round(semitones, 3), "tempo": round(tempo, 4),
                                   "codes": codes_file.name, "frames": int(bk.shape[1]),
                                   "sections": sections,
                                   "kept_s": round(kept / numbers["frame_rate"], 2),
                                   "kept_fraction": round(kept / max(bk.shape[1], 1), 3)})
        if "truth" in extra:  # the demo corpus: how often the tracker names the true note
            record["variants"][-1]["notes_right"] = notes_right(
                notes, extra["truth"], numbers["frame_rate"], semitones, tempo)
            record["variants"][-1]["chroma_on_chords"] = chroma_on_chords(
                chroma, extra["truth"], numbers["frame_rate"], semitones, tempo)
    write_json(cached, record)  # last: the song counts as done only once everything is on disk
    return record


def unigram_entropy(solo, card):
    """Entropy (nats) of each codebook's code frequencies in the training solo: [K].

    The cross-entropy of a model that ignores all context and only knows how often
    each code occurs. A trained model must go below it; one that sits at it has
    learned the code frequencies and nothing else. (A uniform guess would score
    log(card) = 6.93 nats for 1024 codes.)
    """
    out = []
    for row in solo:
        p = np.bincount(np.asarray(row, dtype=np.int64), minlength=card) / max(len(row), 1)
        out.append(float(-(p[p > 0] * np.log(p[p > 0])).sum()))
    return out


# ----------------------------------------------------------------------------
# 8. The dataset: sources, splits, arrays, meta.json
# ----------------------------------------------------------------------------

def list_sources(cfg, out):
    """The songs to process: demo songs, files of --input-dir, downloads of --urls.

    Each gets an id (readable name + content hash, unique even for two files with the
    same name in different folders) and a fingerprint of its content for the cache.
    """
    if not cfg.input_dir and not cfg.urls:
        return [{"kind": "demo", "index": i, "id": f"demo{i:03d}", "name": f"demo song {i}",
                 "fingerprint": f"demo{DEMO_VERSION}:{cfg.seed}:{i}:{cfg.demo_seconds}"}
                for i in range(cfg.demo_songs)]
    paths = []
    if cfg.input_dir:
        folder = Path(cfg.input_dir)
        if not folder.is_dir():
            raise SystemExit(f"--input-dir {folder}: no such folder")
        paths += sorted(p for p in folder.rglob("*")
                        if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
    if cfg.urls:
        paths += download_urls(cfg.urls, Path(out) / "downloads")
    sources = []
    for p in paths:
        digest = hashlib.sha256(p.read_bytes()).hexdigest()[:16]
        safe = "".join(c if c.isalnum() else "_" for c in p.stem)[:40]
        sources.append({"kind": "file", "path": str(p), "id": f"{safe}_{digest[:8]}",
                        "name": str(p),
                        "fingerprint": f"file:{digest}"})
    if not sources:
        raise SystemExit(f"no audio files ({', '.join(sorted(AUDIO_EXTENSIONS))}) "
                         f"found in {cfg.input_dir or cfg.urls}")
    return sources


def download_urls(urls, folder):
    """Download each link's audio with yt-dlp (optional); files already there are reused."""
    try:
        import yt_dlp
    except ImportError:
        raise SystemExit("--urls needs yt-dlp: pip install yt-dlp "
                         "(and ffmpeg to decode what it fetches)") from None
    folder.mkdir(parents=True, exist_ok=True)
    opts = {"format": "bestaudio/best", "outtmpl": str(folder / "%(id)s.%(ext)s"),
            "nooverwrites": True,
            "quiet": True, "noprogress": True}
    paths = []
    with yt_dlp.YoutubeDL(opts) as ydl:
        for url in tqdm(urls, desc="download", unit="url"):
            found = ydl.extract_info(url, download=True)
            paths.append(Path(ydl.prepare_filename(found)))
    return paths


def assign_splits(sources, cfg):
    """Split by song, never by window, so no song is heard on both sides.

    Windows of one song share its tune, key and sound: with windows split at random,
    validation would reward memorising songs, and look better than the model is.
    """
    order = np.random.default_rng(cfg.seed).permutation(len(sources))
    n = len(sources)
    n_val = max(1, round(cfg.val_fraction * n)) if n >= 2 else 0
    n_test = max(1, round(cfg.test_fraction * n)) if n >= 3 else 0
    for rank, i in enumerate(order):
        sources[i]["split"] = ("val" if rank < n_val else
                               "test" if rank < n_val + n_test else "train")


def write_split_arrays(out, split, records, cache_dir):
    """Concatenate the kept sections of a split into backing / solo arrays [K, N] (int16),
    the solo's tracked notes [N] (int8, track_notes) and the band's chroma [N, 12]
    (float16, band_chroma).

    One flat array per stem and split, plus a list of segments (where each section
    starts and how long it is): train.py memory-maps the arrays and reads only the
    windows it draws, so a dataset larger than memory trains just as well.
    """
    backs, solos, notes, chromas, segments, offset = [], [], [], [], [], 0
    for rec in records:
        for v, var in enumerate(rec["variants"]):
            codes = np.load(cache_dir / var["codes"])
            for start, end in var["sections"]:
                backs.append(codes["backing"][:, start:end])
                solos.append(codes["solo"][:, start:end])
                notes.append(codes["notes"][start:end])
                chromas.append(codes["chroma"][start:end])
                segments.append({"song": rec["id"], "variant": v, "start": offset,
                                 "length": end - start,
                                 "song_frame": start})
                offset += end - start
    for name, parts in (("backing", backs), ("solo", solos)):
        array = np.concatenate(parts, axis=1) if parts else np.zeros((0, 0), dtype=np.int16)
        atomic_write(Path(out) / f"{split}_{name}.npy", lambda f: np.save(f, array))
    # the tracked pitch class of each solo frame (-1: none), [N] int8 beside the tokens
    array = np.concatenate(notes) if notes else np.zeros(0, dtype=np.int8)
    atomic_write(Path(out) / f"{split}_notes.npy", lambda f: np.save(f, array))
    # the band's chroma in each frame, [N, 12] float16
    array = np.concatenate(chromas) if chromas else np.zeros((0, 12), dtype=np.float16)
    atomic_write(Path(out) / f"{split}_chroma.npy", lambda f: np.save(f, array))
    return segments


def usable_sources(sources, cfg, out):
    """Recordings that pass the cheap checks (readable, long enough, not silent) -> (those,
    [the skipped ones with their reasons]). The demo corpus's songs all pass."""
    skipped = []
    if sources[0]["kind"] != "file":
        return sources, skipped
    usable = []
    for src in tqdm(sources, desc="check", unit="file"):
        try:
            checked_audio(src, cfg)
            usable.append(src)
        except SkipSong as why:
            tqdm.write(f"skipped {src['name']}: {why}")
            skipped.append({"source": src["name"], "reason": str(why)})
    if not usable:
        raise SystemExit(f"No song could be used: all {len(sources)} files were "
                         f"skipped (reasons above); nothing written to {out}.")
    return usable, skipped


# Settings that change nothing in a song's tokens: left out of the cache key, so that
# changing them reuses every song already done (each source's own fingerprint covers
# which files or demo songs there are).
NOT_IN_CACHE_KEY = ("out", "input_dir", "urls", "device", "threads", "demo_songs",
                    "demo_backing", "overwrite")


def cache_settings_key(cfg, codec, numbers):
    """The part of every song's cache key that the settings and the codec make.

    It includes the codebooks themselves: tokens made with other codebooks (another
    codec, another untrained fill) must never be reused.
    """
    codebook_id = hashlib.sha256(b"".join(
        layer._codebook.embed.cpu().numpy().tobytes()
        for layer in codec.quantizer.vq.layers[:numbers["n_codebooks"]]
    )).hexdigest()[:16]
    settings = {k: v for k, v in asdict(cfg).items() if k not in NOT_IN_CACHE_KEY}
    return json.dumps({**settings, "codebooks": codebook_id}, sort_keys=True)


def check_data_settings(cfg):
    """Each field in its range (settings.check_settings), then what two fields say together."""
    check_settings(cfg)
    if cfg.val_fraction + cfg.test_fraction >= 1:
        raise SystemExit(f"--val-fraction {cfg.val_fraction:g} and --test-fraction "
                         f"{cfg.test_fraction:g}: together below 1, or no song is left to "
                         "train on (0.1 each is usual)")


def build_dataset(cfg):
    """The whole pipeline; returns the meta dict written to <out>/meta.json."""
    t0 = time.time()
    check_data_settings(cfg)
    out, device = Path(cfg.out), pick_device(cfg.device)
    refuse_to_replace(out, cfg)
    guard.output_folder(out)  # writable, before any song is done
    # before anything is created: a wrong --input-dir leaves nothing behind
    sources = list_sources(cfg, out)
    # The cheap checks run over every file first, and the splits are drawn over the files
    # that pass them: a folder with bad files still gets validation and test songs.
    # Splits come before the expensive work because augmentation is for training songs only.
    sources, skipped = usable_sources(sources, cfg, out)
    assign_splits(sources, cfg)
    is_demo = sources[0]["kind"] == "demo"
    # Nothing a later run would trust may stay behind if no song survives: a new folder
    # is removed whole, and a codec calibrated by this run is removed from an old one.
    new_folder, had_codec = not out.exists(), (out / "codec.safetensors").exists()
    cache_dir = out / "cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    for stale in out.rglob(".*.tmp*"):  # left by a run that was killed mid-write
        stale.unlink()
    # Demucs is loaded only when something needs separating (the demo has true stems).
    needs_demucs = not is_demo or cfg.separate
    separator = load_separator(cfg.demucs_model, cfg.demucs_repo) if needs_demucs else None

    def calibration():  # up to 60 s of audio for the untrained codec's codebooks
        parts, total = [], 0
        for src in sources:
            try:
                if is_demo:
                    audio = sum(render_demo_song(src["index"], cfg.demo_seconds, cfg.seed)[:2])
                else:  # the first 60 s is all that is used: crop before resampling a long file
                    audio, rate = checked_audio(src, cfg)
                    audio = resample(channels(audio[:, :60 * rate], 1), rate, CODEC_RATE)[0]
            except (SkipSong, OSError):
                continue
            parts.append(audio.astype(np.float32))
            total += len(audio)
            if total >= 60 * CODEC_RATE:
                break
        if not parts:
            raise SystemExit(f"No song could be used: none of the {len(sources)} files can be read "
                             "(not even to fill the untrained codec's codebooks); nothing written.")
        return np.concatenate(parts)[:60 * CODEC_RATE]

    codec, numbers = prepare_codec(cfg, out, calibration, device, fallback_ok=is_demo)
    settings_key = cache_settings_key(cfg, codec, numbers)

    # A bad file costs its own song only: it is skipped, with its reason shown now and
    # kept in meta.json, and the loop goes on.
    records = []
    bar = tqdm(sources, desc="songs", unit="song")
    for src in bar:
        bar.set_postfix_str(src["name"][-30:])
        try:
            records.append(process_song(src, cfg, codec, numbers, separator, device, cache_dir,
                                        settings_key))
        except SkipSong as why:
            tqdm.write(f"skipped {src['name']}: {why}")
            skipped.append({"source": src["name"], "reason": str(why)})
    if not records:
        if new_folder:
            shutil.rmtree(out)
        elif not had_codec:
            (out / "codec.safetensors").unlink(missing_ok=True)
        raise SystemExit(f"No song could be used ({len(skipped)} skipped, "
                         f"reasons above); nothing written to {out}.")

    # The arrays are rebuilt from the cache at every run (cheap: tokens only), so a
    # rerun with more songs or after a crash always writes a consistent dataset.
    splits = {}
    for split in tqdm(("train", "val", "test"), desc="write", unit="split"):
        chosen = [r for r in records if r["split"] == split]
        segments = write_split_arrays(out, split, chosen, cache_dir)
        splits[split] = {"songs": [r["id"] for r in chosen], "segments": segments,
                         "frames": sum(s["length"] for s in segments)}
    meta = {"format": FORMAT, "codec": numbers, "separation": None if separator is None else {
                "model": cfg.demucs_model, "backing_sources": cfg.backing_sources,
                "solo_sources": cfg.solo_sources},
            "settings": asdict(cfg), "splits": splits, "songs": records, "skipped": skipped,
            "demo": DEMO_VERSION if is_demo else False, "build_seconds": round(time.time() - t0, 1),
            # the demo corpus: the share of the lead's note frames whose pitch class the
            # tracker named right; the share of the band's chroma on its chord's tones
            **{name: heard_check(records, name) for name in ("notes_right", "chroma_on_chords")}}
    write_json(out / "meta.json", meta)  # written last: its presence means the dataset is complete
    counts = ", ".join(f"{k} {len(v['songs'])}" for k, v in splits.items())
    print(f"kept {len(records)} songs ({len(skipped)} skipped) -> {out}: {counts} "
          f"songs; {splits['train']['frames'] / numbers['frame_rate']:.0f} s of "
          f"training audio; {meta['build_seconds']} s")
    print_heard_checks(meta)
    if numbers["untrained"]:
        print(f"NOTE: tokens come from the UNTRAINED codec; {UNTRAINED_AUDIO} (docs/codec.md).")
    return meta


def heard_check(records, name):
    """The demo corpus: one of the checks of what data.py heard against the truth
    (notes_right, chroma_on_chords), over every song and copy; None for recordings."""
    values = [var[name] for r in records for var in r["variants"] if var.get(name) is not None]
    return round(float(np.mean(values)), 4) if values else None


def print_heard_checks(meta):
    if meta["notes_right"] is not None:
        print(f"the solo's notes, tracked: the true pitch class in {meta['notes_right']:.1%} "
              "of the frames where the demo's lead plays a note")
    if meta["chroma_on_chords"] is not None:
        print(f"the band's chroma, heard: {meta['chroma_on_chords']:.1%} of it on the tones of "
              "the demo's chords (a third by chance)")


# Settings that change where and how the dataset is built, not what it holds.
RUN_ONLY_SETTINGS = {"out", "device", "threads", "overwrite", "demo_backing"}


def refuse_to_replace(out, cfg):
    """--out must be a folder; one holding a dataset of other settings is kept without --overwrite.
    The same settings again are a resume: songs already done come from the cache."""
    if out.exists() and not out.is_dir():
        raise SystemExit(f"--out {out} is a file: give a folder for "
                         "the dataset (meta.json and the token arrays)")
    if cfg.overwrite or not (out / "meta.json").exists():
        return
    try:
        old = json.loads((out / "meta.json").read_text()).get("settings", {})
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return  # a damaged meta.json: the rebuild writes it again, as load_dataset advises
    new = asdict(cfg)
    changed = [k for k in new if k in old and k not in RUN_ONLY_SETTINGS and old[k] != new[k]]
    if changed:
        raise SystemExit(f"{out} holds a dataset built with other settings ({', '.join(changed)}): "
                         "--overwrite rebuilds it in place, or choose another --out")


def write_demo_backing(cfg):
    """A backing track to try generate.py on: bass, piano and drums of demo song number
    cfg.demo_songs, one past the corpus, so no model trained on the corpus has heard it."""
    path = Path(cfg.demo_backing)
    if path.suffix.lower() not in (".wav", ".flac"):
        raise SystemExit(f"--demo-backing {path}: give a .wav or .flac file name")
    if path.exists() and not cfg.overwrite:
        raise SystemExit(f"--demo-backing {path} already exists: pass "
                         "--overwrite or choose another file name")
    backing, _, truth = render_demo_song(cfg.demo_songs, cfg.demo_seconds, cfg.seed)
    write_audio(path, backing, CODEC_RATE)
    print(f"wrote {path}: {cfg.demo_seconds:.0f} s of demo backing at {truth['tempo_bpm']:.0f} bpm "
          f"({CODEC_RATE} Hz mono). Try: python generate.py --backing {path}")


def load_dataset(data_dir):
    """meta.json of a dataset folder, with a clear message when it is missing or damaged."""
    meta_file = Path(data_dir) / "meta.json"
    fix = (f"rebuild it with python data.py --out {data_dir} (songs already done are reused "
           f"from its cache)")
    if not meta_file.exists():
        raise SystemExit(f"{meta_file} not found: build the dataset "
                         f"first (python data.py --out {data_dir})")
    try:
        meta = json.loads(meta_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SystemExit(f"{meta_file} is damaged ({err}): {fix}") from None
    missing = [k for k in ("codec", "splits",
                           "songs") if k not in (meta if isinstance(meta, dict) else {})]
    if missing:
        raise SystemExit(f"{meta_file} lacks {', '.join(missing)}: "
                         f"not a dataset written by data.py; {fix}")
    return meta


def load_split(data_dir, split):
    """Memory-mapped (backing [K, N], solo [K, N]) of one split: nothing is read until used."""
    return tuple(np.load(Path(data_dir) / f"{split}_{name}.npy",
                         mmap_mode="r") for name in ("backing", "solo"))


def load_heard(data_dir, split, name):
    """What data.py heard beside the tokens of one split, memory-mapped: "notes", the
    solo's tracked notes [N] int8 (-1: no note), or "chroma", the band's chroma [N, 12]
    float16; None for a dataset built before data.py heard it (notes: format 1,
    chroma: formats 1 and 2)."""
    path = Path(data_dir) / f"{split}_{name}.npy"
    return np.load(path, mmap_mode="r") if path.exists() else None


# ----------------------------------------------------------------------------
# Windows: random ones for training, fixed ones for evaluation
# ----------------------------------------------------------------------------

class Windows:
    """Windows of T frames from the segments (solo sections) of one split.

    Arrays stay memory-mapped: a window reads T frames from disk, not the dataset.
    A segment shorter than T is padded with the special token: the loss skips it.
    Windows never cross a segment boundary: two sections of a song are not
    contiguous in time, and a window across the cut would teach a jump that no
    recording contains.
    """

    def __init__(self, data_dir, split, meta, T):
        self.backing, self.solo = load_split(data_dir, split)     # [K, N] each, memory-mapped
        self.notes = load_heard(data_dir, split, "notes")         # [N] or None
        self.chroma = load_heard(data_dir, split, "chroma")       # [N, 12] or None
        self.segments = meta["splits"][split]["segments"]
        self.T, self.card = T, meta["codec"]["card"]
        lengths = np.array([s["length"] for s in self.segments], dtype=np.float64)
        # longer segments, more often
        self.weights = torch.tensor(lengths / lengths.sum()) if len(lengths) else None

    def window(self, seg, start):
        """(backing, solo) [K, T] int64 from segment seg at frame start, padded with card."""
        n = min(self.T, seg["length"] - start)
        out = []
        for array in (self.backing, self.solo):
            w = np.full((array.shape[0], self.T), self.card, dtype=np.int64)
            w[:, :n] = array[:, seg["start"] + start:seg["start"] + start + n]
            out.append(torch.from_numpy(w))
        return out

    def sample(self, batch, gen, where=False):
        """A random batch: (backing, solo) [B, K, T], drawn with the generator gen (saved in
        checkpoints). where=True adds, as fixed() does, each window's (song id, variant,
        first frame in its song): train.py --pitch-aux looks up the notes played there."""
        # Segments are picked in proportion to their length, so every frame of the split
        # is about equally likely to be seen, whatever way the solo was cut into sections.
        # All randomness goes through `gen`, whose state the checkpoint keeps: that is what
        # makes a resumed run draw exactly the batches the uninterrupted run would have.
        picks = torch.multinomial(self.weights, batch, replacement=True, generator=gen).tolist()
        pairs, places = [], []
        for i in picks:
            seg = self.segments[i]
            start = int(torch.randint(0, max(1, seg["length"] - self.T + 1), (1,), generator=gen))
            pairs.append(self.window(seg, start))
            places.append((seg["song"], seg["variant"], seg["song_frame"] + start))
        batch = [torch.stack(x) for x in zip(*pairs)]
        return (*batch, places) if where else batch

    def heard_at(self, array, where, fill):
        """Frames of `array` ([N, ...], one row per frame of the split) under the windows
        found at `where` (sample(where=True), fixed()): [len(where), T, ...], `fill` past
        a segment's end."""
        out = np.full((len(where), self.T, *array.shape[1:]), fill, dtype=np.float32)
        for i, (song, variant, first) in enumerate(where):
            seg = next(s for s in self.segments if s["song"] == song and s["variant"] == variant
                       and s["song_frame"] <= first < s["song_frame"] + s["length"])
            at = seg["start"] + first - seg["song_frame"]
            n = min(self.T, seg["start"] + seg["length"] - at)
            out[i, :n] = array[at:at + n]
        return torch.from_numpy(out)

    def notes_at(self, where):
        """The tracked notes of the windows at `where`: [N, T] long, the pitch class of
        each frame, -1 where none sounds or past the segment's end."""
        return self.heard_at(self.notes, where, -1).long()

    def chroma_at(self, where):
        """The band's chroma under the windows at `where`: [N, T, 12] float, 0 past the
        segment's end."""
        return self.heard_at(self.chroma, where, 0.0)

    def fixed(self, limit=None):
        """Deterministic evaluation windows: each segment cut in consecutive windows.
        Returns (backing, solo [N, K, T], [(song id, variant, the window's first frame in its
        song)]), the first `limit` windows (None: all of them).

        The same windows at every evaluation, so two evaluations differ only because
        the model changed, never because the sample did.
        """
        pairs, where = [], []
        for seg in self.segments:
            for start in range(0, seg["length"], self.T):
                if seg["length"] - start >= self.T // 2 or start == 0:  # skip short leftovers
                    pairs.append(self.window(seg, start))
                    where.append((seg["song"], seg["variant"], seg["song_frame"] + start))
        pairs, where = pairs[:limit], where[:limit]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs]), where



if __name__ == "__main__":
    guard.loaded()
    config = parse_settings(DataConfig, description=__doc__.split("\n\n")[0])
    check_install(*(["demucs"] if config.input_dir or config.urls or config.separate else []))
    set_threads(config.threads)
    try:
        with guard.one_line_errors("lower --demo-seconds, or split long recordings"):
            if config.demo_backing:
                write_demo_backing(config)
                sys.exit(0)
            print("settings:", json.dumps(asdict(config)), f"({torch.get_num_threads()} threads)")
            build_dataset(config)
    except KeyboardInterrupt:  # every song done so far is in the cache, written whole
        raise SystemExit("\nstopped by Ctrl-C: the songs done so far are cached "
                         f"in {config.out}; the same command goes on from there") from None
    sys.exit(0)
