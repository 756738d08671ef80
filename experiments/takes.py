"""
takes.py -- phase 5 scored as the runner played it: the exported runner follows the backings
of a dataset's held-out demo songs at the pace of a live input, and each take is scored on
the wall clock against the band it sounded with.

    python experiments/takes.py --folder solo_onnx --data data/demo --out runs/takes
    python experiments/takes.py --folder solo_onnx --data data/demo --out runs/takes_g3 --cfg-coef 3

For every song of --split (the test songs by default: never trained on, never used to
choose a checkpoint): its backing is rendered from the demo corpus (sax.demo, the band's
audio itself: offline the codec's decoder could not give it back) and played into the
exported folder's onnx_runner.py, in its own process, paced, one thread, 40 ms chunks.
The runner writes take.npz: the codes it played and the band frame each sounded against
(onnx_runner.sounding_frames). Here each take becomes the solo as heard beside the band
(wall_clock_solo) and takes sax/listening.py's probes: kick AUC and note-in-chord over
its own band, and over another song's band (the control: the take made for song i+1,
scored against song i's kicks and chords), beside the true lead's two, and the
plays-with-the-band scores they make. <out>/takes.json holds the figures, each song's
lateness and the command. A take already on disk is not played again (delete its folder).
"""
import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: sax/
from sax import guard  # noqa: E402 (first of the project's: a Ctrl-C while torch loads is one line)

guard.quiet_ctrl_c(__name__)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from sax.audio import write_audio  # noqa: E402
from sax.codec import dataset_codec, encode_audio  # noqa: E402
from sax.dataset import load_dataset  # noqa: E402
from sax.demo import render_demo_song  # noqa: E402
from sax.files import write_json  # noqa: E402
from sax.listening import ListeningSet, fit_probes, score_solos  # noqa: E402


def wall_clock_solo(codes, sounding, T, card):
    """The solo as it sounded beside the band: codes [K, F] and the band frame each sounded
    against (take.npz's sounding [F]) -> [K, T], column b the solo frame sounding with band
    frame b: the latest one to have started, the special token `card` before the first."""
    out = np.full((codes.shape[0], T), card, np.int64)
    for f, b in enumerate(sounding):
        if b < T:
            out[:, b:] = codes[:, f:f + 1]  # it sounds from b on, until a later frame starts
    return out


def song_audio(meta, song, soloist=None):
    """(backing, solo) of a demo song, rendered at the dataset's codec rate (solo: the demo's
    lead, or what `soloist` plays over the band: sax.demo.render_demo_song)."""
    settings = meta["settings"]
    if not song.startswith("demo"):
        raise SystemExit(f"{song}: takes.py scores demo songs only (their kicks and chords "
                         "are known); build the dataset with python data.py")
    backing, solo, _ = render_demo_song(int(song[4:]), settings["demo_seconds"], settings["seed"],
                                        meta["codec"]["sample_rate"],
                                        style=settings.get("demo_style", "random"),
                                        soloist=soloist)
    return backing, solo


def play(args, meta, song, out):
    """One take of `song` by the exported runner, in its own process -> take.npz's arrays."""
    folder = out / song
    if not (folder / "take.npz").exists():
        backing, _ = song_audio(meta, song)
        rate = meta["codec"]["sample_rate"]
        wav = out / "backings" / f"{song}.wav"
        write_audio(wav, backing[:int(args.seconds * rate)] if args.seconds else backing, rate)
        command = [sys.executable, str(Path(args.folder) / "onnx_runner.py"), args.folder,
                   "--backing", str(wav), "--out", str(folder), "--overwrite", "--variant",
                   args.variant, "--threads", "1", "--chunk-ms", str(args.chunk_ms),
                   "--seed", str(args.seed), "--cfg-coef", str(args.cfg_coef)]
        subprocess.run(command + (["--no-pace"] if args.no_pace else []), check=True)
    return dict(np.load(folder / "take.npz"))


def as_tensor(arrays):
    """[K, T] numpy codes per song -> [N, K, T] int64."""
    return torch.from_numpy(np.stack(arrays).astype(np.int64))


def band_truth(data_dir, meta, songs, heard, codec=None):
    """The listening set of demo songs: heard [K, T] per song (the band's codes, as the
    runner's codec graph heard them or as the dataset's codec encodes them) with each song's
    true lead, and for song i its control, song i + 1 (two songs at least)."""
    if len(songs) < 2:
        raise SystemExit("scoring takes needs two songs at least (each is the other's control)")
    T = heard[0].shape[1]
    codec = codec or dataset_codec(meta["codec"], data_dir, "cpu")
    true = [encode_audio(codec, song_audio(meta, s)[1])[:, :T] for s in songs]       # [K, T] each
    other = [(i + 1) % len(songs) for i in range(len(songs))]            # song i's control: i + 1
    # the truth of each song's band (its kicks and chords) over its first T frames
    return ListeningSet.of(meta, [(s, 0, 0) for s in songs], as_tensor(heard), as_tensor(true),
                           as_tensor([heard[j] for j in other]),
                           as_tensor([true[j] for j in other]))


def score_played(probes, ls, played):
    """The listening figures of solos as they sounded ([K, T] per song, in band_truth's
    order), each over its own band and, as the control, song i + 1's solo over song i's band,
    beside the true lead's."""
    other = [(i + 1) % len(played) for i in range(len(played))]
    return score_solos(probes, ls, {"own": as_tensor(played),
                                    "mismatched": as_tensor([played[j] for j in other]),
                                    "true": ls.solo, "true_mismatched": ls.other_solo})


def score_takes(data_dir, meta, takes):
    """{song: take.npz's arrays} (two songs at least) -> the listening figures of the takes
    on the wall clock, each against its own band and another's, beside the true lead's."""
    songs, card, fr = list(takes), meta["codec"]["card"], meta["codec"]["frame_rate"]
    T = min(int(t["heard"].shape[1]) for t in takes.values())
    played = [wall_clock_solo(takes[s]["codes"], takes[s]["sounding"], T, card) for s in songs]
    ls = band_truth(data_dir, meta, songs, [takes[s]["heard"][:, :T] for s in songs])
    figures = score_played(fit_probes(data_dir, meta, min(T, 300)), ls, played)
    late = {s: float(np.mean(takes[s]["sounding"] - np.arange(len(takes[s]["sounding"])))
                     * 1e3 / fr) for s in songs}
    return {"songs": songs, "frames": T, "figures": figures, "late_ms_mean": late,
            "paced": all(bool(t["paced"]) for t in takes.values())}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", required=True, help="the folder onnx_export.py wrote")
    parser.add_argument("--data", required=True, help="the dataset the model was trained on")
    parser.add_argument("--out", required=True, help="folder for the takes and takes.json")
    parser.add_argument("--split", default="test", choices=["test", "val", "train"])
    parser.add_argument("--variant", default="int8", choices=["fp32", "int8", "int4"])
    parser.add_argument("--cfg-coef", default="none", help="guidance (none: off)")
    parser.add_argument("--chunk-ms", type=float, default=40.0)
    parser.add_argument("--seed", type=int, default=0, help="the runner's sampling seed")
    parser.add_argument("--seconds", type=float, default=0.0, help="play this much of each song "
                        "(0: all of it)")
    parser.add_argument("--no-pace", action="store_true", help="as fast as possible: the "
                        "wall clock then says nothing of a live take")
    args = parser.parse_args(argv)
    data_dir, out = Path(args.data), Path(args.out)
    meta = load_dataset(data_dir)
    songs = meta["splits"][args.split]["songs"]
    takes = {song: play(args, meta, song, out) for song in songs}
    result = {"command": " ".join(["python", "experiments/takes.py", *(argv or sys.argv[1:])]),
              "split": args.split, "variant": args.variant, "cfg_coef": args.cfg_coef,
              "chunk_ms": args.chunk_ms, **score_takes(data_dir, meta, takes)}
    write_json(out / "takes.json", result)
    f = result["figures"]
    paced = "paced" if result["paced"] else "not paced"
    print(f"{len(songs)} {args.split} songs, as played ({paced}):"
          f" kick AUC {f['kick_auc_own']:.3f} / {f['kick_auc_mismatched']:.3f} (true lead "
          f"{f['kick_auc_true']:.3f} / {f['kick_auc_true_mismatched']:.3f}), note-in-chord "
          f"{f['note_in_chord_own']:.3f} / {f['note_in_chord_mismatched']:.3f} (true lead "
          f"{f['note_in_chord_true']:.3f} / {f['note_in_chord_true_mismatched']:.3f}); plays with "
          f"the band: rhythm {f['plays_with_band_rhythm']:.2f}, harmony "
          f"{f['plays_with_band_harmony']:.2f}. Wrote {out / 'takes.json'}")
    return result


if __name__ == "__main__":
    guard.loaded()
    main()
