"""
baselines.py -- where a model's listening figures sit: the soloists of sax/baselines.py (deaf,
rule, retrieval) and the true lead, scored on a demo dataset's test songs with the probes that
score a trained model, each figure with a bootstrap interval over the songs; with
--checkpoints, the models' row too, on the same windows, its interval over songs and seeds.

    python experiments/baselines.py --data data/demo --out docs/results/baselines-random.json
    python experiments/baselines.py --data data/demo --out runs/b.json \
        --checkpoints runs/default/seed*/best

Token space: the windows train.py's listening test scores (the test songs' windows of the
models' length, 4 s by default; "other" is another test song's window), each soloist's
audio rendered over the whole song with the demo's lead voice, encoded with the dataset's
codec and cut to the same windows; kick AUC and note-in-chord over its own band and, as the
control, the soloist's window for the other song over this song's band, beside the true
lead's, and the plays-with-the-band scores they make (sax/listening.py). A model's solos
are generated over the same windows, as train.py's listening test generates them.
Audio: the audio probes (sax/audio_probes.py) of each soloist over each whole test song
against song i + 1's, beside the true lead's. A model has no audio row offline: the
untrained codec's audio carries nothing (docs/codec.md).
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: sax/
from sax import guard  # noqa: E402 (first of the project's: a Ctrl-C while torch loads is one line)

guard.quiet_ctrl_c(__name__)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from sax.audio_probes import audio_scores, audio_table, hear_band, hear_solo  # noqa: E402
from sax.baselines import band_print, nearest_band, rule_notes  # noqa: E402
from sax.checkpoints import load_model, read_json, resolve_checkpoint  # noqa: E402
from sax.codec import dataset_codec, encode_audio  # noqa: E402
from sax.dataset import load_dataset  # noqa: E402
from sax.demo import render_demo_song  # noqa: E402
from sax.files import write_json  # noqa: E402
from sax.intervals import DRAWS, LEVEL, bootstrap_interval  # noqa: E402
from sax.listening import (ListeningSet, fit_probes, generated_solos,  # noqa: E402
                           listening_windows, partners, score_solos)
from sax.sampling import SAMPLING  # noqa: E402

WHAT = {"true": "the true lead (the demo's rule: a chord tone on each of the band's kicks)",
        "rule": "hears the band's audio: a note on each attack, the loudest chroma class",
        "retrieval": "the true lead of the training song whose band is nearest in chroma and tempo",
        "deaf": "another test song's true lead",
        "model": "the checkpoints' solos, generated over the same windows"}
TOKEN_SCORES = ("plays_with_band_rhythm", "plays_with_band_harmony")
AUDIO_SCORES = ("plays_with_band_onsets", "plays_with_band_beats", "plays_with_band_pitch")


def render(meta, song, soloist=None):
    """(backing, lead, truth) of a demo song at the dataset's codec rate (sax.demo)."""
    s = meta["settings"]
    return render_demo_song(int(song[4:]), s["demo_seconds"], s["seed"],
                            meta["codec"]["sample_rate"], style=s.get("demo_style", "random"),
                            soloist=soloist)


def soloists_audio(meta, songs):
    """{soloist: [its audio over each song]} for true, rule, retrieval and deaf, and the bands."""
    rate, seconds = meta["codec"]["sample_rate"], meta["settings"]["demo_seconds"]
    rendered = [render(meta, s) for s in tqdm(songs, desc="render test songs", unit="song")]
    bands = [b for b, _, _ in rendered]
    library = meta["splits"]["train"]["songs"]
    prints, leads = [], []
    for song in tqdm(library, desc="retrieval: training bands", unit="song"):
        band, lead, _ = render(meta, song)
        prints.append(band_print(band, rate))
        leads.append(lead)
    n = len(songs)
    audio = {"true": [lead for _, lead, _ in rendered],
             "rule": [render(meta, s, lambda truth, b=b: rule_notes(b, rate, truth, seconds))[1]
                      for s, b in zip(songs, bands)],
             "retrieval": [leads[nearest_band(band_print(b, rate), prints)] for b in bands],
             # song i + n // 2's lead: neither its own nor, paired with song i + 1's, the
             # control's (audio_table pairs song i with song i + 1)
             "deaf": [rendered[(i + n // 2) % n][1] for i in range(n)]}
    return audio, bands


def cut(codes, where, song_index, T, card):
    """[N, K, T] windows of per-song codes ([K, F] each) at the listening windows' frames."""
    out = torch.full((len(where), codes[0].shape[0], T), card, dtype=torch.long)
    for i, (song, variant, first) in enumerate(where):
        part = torch.from_numpy(codes[song_index[song]][:, first:first + T].astype(np.int64))
        out[i, :, :part.shape[1]] = part
    return out


def token_row(probes, ls, runs, song_rows, draws):
    """The figures of one soloist (runs: [{own, mismatched, true, true_mismatched}], one per
    seed), averaged over the runs, with the interval of each plays-with-the-band score."""
    per_run = [score_solos(probes, ls, solos) for solos in runs]
    figures = {key: float(np.mean([r[key] for r in per_run])) for key in per_run[0]}

    def statistic(key):
        def on(songs, seeds):
            rows = torch.tensor([i for s in songs for i in song_rows[s]])
            return float(np.mean([score_solos(probes, ls.rows(rows),
                                              {k: v[rows] for k, v in runs[r].items()})[key]
                                  for r in seeds]))
        return on
    intervals = {key: bootstrap_interval(statistic(key), len(song_rows), len(runs), draws)
                 for key in TOKEN_SCORES}
    return {"token": figures, "token_interval": intervals,
            **({"seeds": per_run} if len(runs) > 1 else {})}


def baselines(data_dir, checkpoints=(), split="test", draws=DRAWS):
    """Every row's figures and intervals on the split's songs (see the module's text)."""
    meta = load_dataset(data_dir)
    card, rate = meta["codec"]["card"], meta["codec"]["sample_rate"]
    configs = [read_json(resolve_checkpoint(c) / "config.json", "a checkpoint folder")
               for c in checkpoints]
    T = configs[0]["model"]["max_frames"] if configs else round(4.0 * meta["codec"]["frame_rate"])
    backing, solo, where, other, other_solo = listening_windows(data_dir, meta, T, split=split)
    songs = sorted({song for song, _, _ in where})
    partner = partners([song for song, _, _ in where])
    if partner is None or len(songs) < 3:
        raise SystemExit(f"{data_dir}: the {split} split has {len(songs)} song(s); the baselines "
                         "need three at least (rebuild with more songs: python data.py "
                         "--demo-songs 64)")
    records = {song["id"]: song for song in meta["songs"]}
    if any(records[s]["variants"][v]["tempo"] != 1.0 or records[s]["variants"][v]["semitones"]
           for s, v, _ in where):
        raise SystemExit(f"{data_dir}: the {split} windows include augmented copies; "
                         "the baselines render the songs as they are")
    ls = ListeningSet.of(meta, where, backing, solo, other, other_solo)
    probes = fit_probes(data_dir, meta, T)
    song_index = {s: i for i, s in enumerate(songs)}
    song_rows = [[i for i, (s, _, _) in enumerate(where) if s == song] for song in songs]
    audio, bands = soloists_audio(meta, songs)
    codec = dataset_codec(meta["codec"], data_dir, "cpu")
    # what the audio probes read of each band and each soloist, read once
    heard = [hear_band(b, rate) for b in bands]
    read = {name: [hear_solo(a, rate) for a in played] for name, played in audio.items()}
    rows = {}
    for name in tqdm(("true", "rule", "retrieval", "deaf"), desc="score the baselines"):
        if name == "true":
            own = ls.solo
        elif name == "deaf":
            own = ls.other_solo      # window i: the partner song's true lead over this band
        else:
            own = cut([encode_audio(codec, a) for a in audio[name]], where, song_index, T, card)
        solos = {"own": own, "mismatched": own[partner], "true": ls.solo,
                 "true_mismatched": ls.other_solo}
        table = audio_table(read[name], read["true"], heard)
        rows[name] = {"what": WHAT[name], **token_row(probes, ls, [solos], song_rows, draws),
                      "audio": audio_scores(table),
                      "audio_interval": {key: bootstrap_interval(
                          lambda s, _, key=key: audio_scores(table, s)[key], len(songs), 1, draws)
                          for key in AUDIO_SCORES}}
    if checkpoints:
        runs = []
        for folder, config in tqdm(list(zip(checkpoints, configs)), desc="model: generate",
                                   unit="checkpoint"):
            model, _ = load_model(folder, "cpu")
            runs.append(generated_solos(model, ls, 16, torch.device("cpu"),
                                        seed=config["train"]["seed"]))
        # what each checkpoint's training measured on the validation songs that chose it
        training = [{"val_ce": c["metrics"]["val_ce"], "cond_gain": c["metrics"]["cond_gain"],
                     "step": c["step"]} for c in configs]
        rows["model"] = {"what": WHAT["model"], "checkpoints": [str(c) for c in checkpoints],
                         "sampling": dict(SAMPLING), "training": training,
                         **token_row(probes, ls, runs, song_rows, draws)}
    return {"data": str(data_dir), "style": meta["settings"].get("demo_style", "random"),
            "split": split, "songs": songs, "windows": len(where), "frames": T,
            "draws": draws, "level": LEVEL, "rows": rows}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="a demo dataset (python data.py)")
    parser.add_argument("--out", required=True, help="the JSON file to write")
    parser.add_argument("--checkpoints", nargs="*", default=[],
                        help="trained models to score beside the baselines (one per seed)")
    parser.add_argument("--split", default="test", choices=["test", "val", "train"])
    parser.add_argument("--draws", type=int, default=DRAWS, help="bootstrap draws")
    args = parser.parse_args(argv)
    result = {"command": " ".join(["python", "experiments/baselines.py",
                                   *(argv if argv is not None else sys.argv[1:])]),
              **baselines(Path(args.data), args.checkpoints, args.split, args.draws)}
    write_json(Path(args.out), result)
    print(f"{result['style']} corpus, {len(result['songs'])} {args.split} songs "
          f"({result['windows']} windows): plays with the band, rhythm / harmony (token "
          "probes) and onsets / beats / pitch (audio probes), 95% intervals over the songs")
    for name, row in result["rows"].items():
        cells = [f"{row['token'][k]:.2f} [{lo:.2f}, {hi:.2f}]" for k in TOKEN_SCORES
                 for lo, hi in [row["token_interval"][k] or (np.nan, np.nan)]]
        if "audio" in row:
            cells += [f"{row['audio'][k]:.2f}" for k in AUDIO_SCORES]
        print(f"  {name:10s} " + "  ".join(cells))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    guard.loaded()
    main()
