"""
data.py -- from recordings (or a built-in synthetic jazz quartet) to token datasets.
Phases 1 and 2 of the proposal.

    python data.py                                  # the demo corpus -> data/demo
    python data.py --input-dir my_jazz/ --out data/mine
    python data.py --urls https://... --out data/web    (needs: pip install yt-dlp)
    python data.py --input-dir my_jazz/ --augment 2 --out data/mine_aug   (phase 2)

The pipeline, one song at a time (each step's code is in the file named beside it):
  1. load: any file soundfile can read (ffmpeg for the rest), resampled    sax/audio.py
     (or render a song of the built-in demo corpus, with its true stems)    sax/demo.py
  2. separate: Demucs htdemucs_6s at 44.1 kHz stereo -> backing (drums + bass + piano
     + guitar) and solo (other + vocals: where a saxophone lands), mono at the codec's rate;
     the demo corpus skips this unless --separate                          sax/separation.py
  3. augment (phase 2): random pitch shifts and tempo changes, the same
     for both stems                                                         sax/audio.py
  4. keep the sections where the solo plays, by RMS energy                  sax/audio.py
  5. tokenize both stems with EnCodec 24 kHz at 3 kbps: 4 codebooks of
     1024 codes, 75 Hz (--codec encodec_32khz, the proposal's: 4 of 2048 at
     50 Hz, sax/encodec32.py; docs/codec.md says which to choose)          sax/codec.py
     and hear what the tokens do not say: the solo's notes, the band's
     chroma                                                                 sax/pitch.py
  6. split by song into train / val / test and write meta.json +
     memory-mappable arrays (read back by sax/dataset.py)                   this file

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
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from sax import guard  # first of the project's: a Ctrl-C while torch loads is one line

guard.quiet_ctrl_c(__name__)

import numpy as np
import torch
from tqdm import tqdm

from sax.audio import (AUDIO_EXTENSIONS, SkipSong, channels, frame_rms_db, load_audio,
                       pitch_tempo, resample, select_sections, write_audio)
from sax.codec import CODECS, UNTRAINED_AUDIO, codebooks, encode_audio, prepare_codec
from sax.dataset import FORMAT
from sax.demo import DEMO_STYLES, DEMO_VERSION, render_demo_song
from sax.files import atomic_write, remove_stale_temporaries, write_json
from sax.machine import DEVICES, check_install, pick_device, set_threads
from sax.pitch import TRACKER_VERSION, band_chroma, chroma_on_chords, notes_right, track_notes
from sax.separation import load_separator, separate, ser_db
from sax.settings import check_settings, opt, parse_settings


@dataclass
class DataConfig:
    out: str = opt("data/demo", "dataset folder to write")
    input_dir: str = opt("", "folder of your recordings; empty: the built-in demo corpus")
    urls: list = opt([], "links to download with yt-dlp (optional dependency)")
    demo_songs: int = opt(64, "demo corpus: number of songs", at_least=1, at_most=100_000)
    demo_seconds: float = opt(24.0, "demo corpus: length of each song in seconds",
                              at_least=2, at_most=3600)
    demo_style: str = opt("random", "demo corpus: random (kicks drawn afresh), riff (hits repeat: "
                          "anticipation can be learned) or lines (a lead with passing tones)",
                          choices=list(DEMO_STYLES))
    separate: bool = opt(False,
                         "demo corpus: run Demucs on the mix instead of using the true stems")
    demucs_model: str = opt("htdemucs_6s",
                            "Demucs model name (demucs_unittest: small, random, offline)")
    demucs_repo: str = opt("", "local folder holding Demucs weights (offline machines)")
    backing_sources: list = opt(["drums", "bass", "piano", "guitar"],
                                "Demucs stems summed into the backing")
    solo_sources: list = opt(["other", "vocals"],
                             "Demucs stems summed into the solo (a sax lands here)")
    codec: str = opt("encodec_24khz", "encodec_24khz: causal (phase 5 streams it); "
                     "encodec_32khz: the proposal's music codec, phases 1-4 only (docs/codec.md)",
                     choices=list(CODECS))
    encodec_weights: str = opt("pretrained", "'pretrained' (download once), local weights "
                               "(24 kHz: a .th file; 32 kHz: a folder), or 'untrained'")
    bandwidth: float = opt(0.0, "EnCodec bandwidth in kbps (0: the codec's own, 4 codebooks: "
                           "3.0 at 24 kHz, 2.2 at 32 kHz)",
                           choices=[0.0, 1.5, 2.2, 3.0, 6.0, 12.0, 24.0])
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
    split_songs: int = opt(0, "val and test from the first N songs only, the rest train: a "
                              "grown corpus keeps its val and test songs (0: all)", at_least=0)
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
    shard: str = opt("", "i/n: do only songs i, i+n, i+2n, ... (0 <= i < n) into --out's song "
                         "cache, so that n processes or machines sharing --out build it at "
                         "once; a last run without --shard assembles the dataset "
                         "(docs/scaling.md)")


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


def song_stems(source, cfg, separator, device, rate):
    """A source -> (backing, solo), mono at the codec's `rate`, and what is known about the song.

    The cheap checks (length, silence) come before separation, the expensive step.
    """
    # The demo corpus knows its stems (and its score: truth, which the listening metrics
    # use); recordings must be separated. --separate runs Demucs on the demo's mix too, to
    # measure how well separation recovers stems that are known.
    if source["kind"] == "demo":
        backing, solo, truth = render_demo_song(source["index"], cfg.demo_seconds, cfg.seed, rate,
                                                style=cfg.demo_style)
        facts = {"truth": truth}
        if cfg.separate:
            est_backing, est_solo = separate(separator, (backing + solo)[None], rate,
                                             cfg.backing_sources, cfg.solo_sources, device, rate)
            facts["separation_ser_db"] = {"solo": ser_db(solo, est_solo),
                                          "backing": ser_db(backing, est_backing)}
            backing, solo = est_backing, est_solo
        return backing, solo, facts
    audio, found = checked_audio(source, cfg)
    backing, solo = separate(separator, audio, found, cfg.backing_sources, cfg.solo_sources,
                             device, rate)
    return backing, solo, {"original_rate": found, "original_channels": audio.shape[0]}


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
    rate = numbers["sample_rate"]
    backing, solo, extra = song_stems(source, cfg, separator, device, rate)
    rng = np.random.default_rng([cfg.seed, int(key[:8], 16)])
    variants = [(0.0, 1.0)]
    if source["split"] == "train":
        variants += [(float(rng.uniform(-cfg.pitch_semitones, cfg.pitch_semitones)),
                      float(rng.uniform(1 - cfg.tempo_range,
                                        1 + cfg.tempo_range))) for _ in range(cfg.augment)]
    record = {"id": source["id"], "source": source["name"], "split": source["split"],
              "duration_s": round(len(solo) / rate, 3), **extra,
              "notes": TRACKER_VERSION, "variants": []}
    for v, (semitones, tempo) in enumerate(variants):
        # The same transformation on both stems: they stay aligned frame for frame.
        b, s = (backing, solo) if v == 0 else (pitch_tempo(backing, rate, semitones, tempo),
                                               pitch_tempo(solo, rate, semitones, tempo))
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
        notes = track_notes(s, numbers["hop"], rate)                           # [F]
        notes = np.pad(notes, (0, max(0, bk.shape[1] - len(notes))), constant_values=-1)
        chroma = band_chroma(b, numbers["hop"], rate)                          # [F, 12]
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


# ----------------------------------------------------------------------------
# 8. The dataset: sources, splits, arrays, meta.json
# ----------------------------------------------------------------------------

def list_sources(cfg, out):
    """The songs to process: demo songs, files of --input-dir, downloads of --urls.

    Each gets an id (readable name + content hash, unique even for two files with the
    same name in different folders) and a fingerprint of its content for the cache.
    """
    if not cfg.input_dir and not cfg.urls:
        style = "" if cfg.demo_style == "random" else f":{cfg.demo_style}"  # old caches stay valid
        return [{"kind": "demo", "index": i, "id": f"demo{i:03d}", "name": f"demo song {i}",
                 "fingerprint": f"demo{DEMO_VERSION}:{cfg.seed}:{i}:{cfg.demo_seconds}{style}"}
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
    # The content hash, not the path, is the song's identity: a renamed or moved file is
    # still the song already cached, an edited one is a new song.
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
    # A seeded permutation: the same list of songs always gets the same splits (a longer
    # list draws new ones, unless --split-songs N: the first N split as they would alone,
    # and the songs past them all train, so that a grown corpus keeps its val and test).
    n = min(len(sources), cfg.split_songs or len(sources))
    order = np.random.default_rng(cfg.seed).permutation(n)
    n_val = max(1, round(cfg.val_fraction * n)) if n >= 2 else 0
    n_test = max(1, round(cfg.test_fraction * n)) if n >= 3 else 0
    for rank, i in enumerate([*order, *range(n, len(sources))]):
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
# The codec is named in the key by its codebooks (cache_settings_key), not by --codec;
# the demo's style by the songs' fingerprints.
NOT_IN_CACHE_KEY = ("out", "input_dir", "urls", "device", "threads", "demo_songs",
                    "demo_backing", "overwrite", "shard", "codec", "demo_style", "split_songs")


def cache_settings_key(cfg, codec, numbers):
    """The part of every song's cache key that the settings and the codec make.

    It includes the codebooks themselves: tokens made with other codebooks (another
    codec, another untrained fill) must never be reused.
    """
    codebook_id = hashlib.sha256(b"".join(
        book.embed.cpu().numpy().tobytes() for book in codebooks(codec, numbers["n_codebooks"])
    )).hexdigest()[:16]
    settings = {k: v for k, v in asdict(cfg).items() if k not in NOT_IN_CACHE_KEY}
    return json.dumps({**settings, "codebooks": codebook_id}, sort_keys=True)


def check_data_settings(cfg):
    """Each field in its range (settings.check_settings), then what two fields say together."""
    check_settings(cfg)
    shard_of(cfg)  # a --shard that is not i/n with 0 <= i < n is one line
    bandwidths = CODECS[cfg.codec]["bandwidths"]
    if cfg.bandwidth and cfg.bandwidth not in bandwidths:
        raise SystemExit(f"--bandwidth {cfg.bandwidth:g}: {cfg.codec} offers "
                         f"{', '.join(map(str, bandwidths))} kbps (0: its own, "
                         f"{CODECS[cfg.codec]['bandwidth']})")
    if cfg.val_fraction + cfg.test_fraction >= 1:
        raise SystemExit(f"--val-fraction {cfg.val_fraction:g} and --test-fraction "
                         f"{cfg.test_fraction:g}: together below 1, or no song is left to "
                         "train on (0.1 each is usual)")


def shard_of(cfg):
    """--shard i/n -> (i, n); (0, 1) without it: the whole corpus."""
    if not cfg.shard:
        return 0, 1
    i, _, n = cfg.shard.partition("/")
    if not (i.isdigit() and n.isdigit() and int(i) < int(n)):
        raise SystemExit(f"--shard {cfg.shard}: give i/n with 0 <= i < n, e.g. --shard 0/4 "
                         "... --shard 3/4 for four processes")
    return int(i), int(n)


def process_songs(sources, cfg, codec, numbers, separator, device, cache_dir):
    """Every source through process_song -> (records, [the skipped ones with their reasons]).
    A bad file costs its own song only: skipped, its reason shown now and kept in meta.json."""
    settings_key = cache_settings_key(cfg, codec, numbers)
    records, skipped = [], []
    bar = tqdm(sources, desc=f"songs {cfg.shard}".strip(), unit="song")
    for src in bar:
        bar.set_postfix_str(src["name"][-30:])
        try:
            records.append(process_song(src, cfg, codec, numbers, separator, device, cache_dir,
                                        settings_key))
        except SkipSong as why:
            tqdm.write(f"skipped {src['name']}: {why}")
            skipped.append({"source": src["name"], "reason": str(why)})
    return records, skipped


def calibration_audio(sources, cfg):
    """Up to a minute or so of the songs' audio (mono, at the codec's rate; CODECS says how
    long), to fill the untrained codec's codebooks."""
    parts, total = [], 0
    codec_rate, seconds = CODECS[cfg.codec]["sample_rate"], CODECS[cfg.codec]["calibration_s"]
    for src in sources:
        try:
            if src["kind"] == "demo":
                audio = sum(render_demo_song(src["index"], cfg.demo_seconds, cfg.seed,
                                             codec_rate, style=cfg.demo_style)[:2])
            else:  # the first seconds are all that is used: crop before resampling a long file
                audio, rate = checked_audio(src, cfg)
                audio = resample(channels(audio[:, :seconds * rate], 1), rate, codec_rate)[0]
        except (SkipSong, OSError):
            continue
        parts.append(audio.astype(np.float32))
        total += len(audio)
        if total >= seconds * codec_rate:
            break
    if not parts:
        raise SystemExit(f"No song could be used: none of the {len(sources)} files can be read "
                         "(not even to fill the untrained codec's codebooks); nothing written.")
    return np.concatenate(parts)[:seconds * codec_rate]


def build_dataset(cfg):
    """The whole pipeline; returns the meta dict written to <out>/meta.json."""
    t0 = time.time()
    check_data_settings(cfg)
    # --bandwidth 0 is the codec's own: settled here, so that meta.json says which it was
    cfg = replace(cfg, bandwidth=cfg.bandwidth or CODECS[cfg.codec]["bandwidth"])
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
    remove_stale_temporaries(out)
    # Demucs is loaded only when something needs separating (the demo has true stems).
    needs_demucs = not is_demo or cfg.separate
    separator = load_separator(cfg.demucs_model, cfg.demucs_repo) if needs_demucs else None

    # Every shard fills the untrained codec from the same calibration audio, so all of them
    # (and the assembling run) tokenize with the same codebooks.
    codec, numbers = prepare_codec(cfg, out, lambda: calibration_audio(sources, cfg), device,
                                   fallback_ok=is_demo)
    i, n = shard_of(cfg)
    records, skipped_now = process_songs(sources[i::n], cfg, codec, numbers, separator, device,
                                         cache_dir)
    skipped += skipped_now
    if n > 1:  # a shard fills the cache; the run without --shard writes the dataset
        print(f"shard {cfg.shard}: {len(records)} songs in {cache_dir} ({len(skipped_now)} "
              f"skipped). Once every shard is done: python data.py --out {out} with the same "
              "settings and no --shard writes the dataset from the cache")
        return {"shard": cfg.shard, "songs": records, "skipped": skipped}
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
RUN_ONLY_SETTINGS = {"out", "device", "threads", "overwrite", "demo_backing", "shard"}


def refuse_to_replace(out, cfg):
    """--out must be a folder; one holding a dataset of other settings is kept without --overwrite.
    The same settings again are a resume: songs already done come from the cache."""
    if out.exists() and not out.is_dir():
        raise SystemExit(f"--out {out} is a file: give a folder for the dataset")
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
        raise SystemExit(f"--demo-backing {path} already exists: pass --overwrite or another name")
    rate = CODECS[cfg.codec]["sample_rate"]
    backing, _, truth = render_demo_song(cfg.demo_songs, cfg.demo_seconds, cfg.seed, rate,
                                         style=cfg.demo_style)
    write_audio(path, backing, rate)
    print(f"wrote {path}: {cfg.demo_seconds:.0f} s of demo backing at {truth['tempo_bpm']:.0f} bpm "
          f"({rate} Hz mono). Try: python generate.py --backing {path}")


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
