"""
ceiling.py -- where the limit is for a live solo: what the reference soloists of
sax/reference.py score when each note is decided L ms before it sounds, on a dataset's
test songs, with the listening probes that score the runner's takes (experiments/takes.py).

    python experiments/ceiling.py --data data/demo --out runs/ceiling/random.json
    python experiments/ceiling.py --data data/demo-riff --out runs/ceiling/riff.json

For every L of --lookahead-ms and every soloist (heard, grid, echo), each test song's band
is rendered from the demo corpus with the soloist playing over it instead of the demo's
lead (sax.demo.render_demo_song's soloist), the solo is encoded with the dataset's codec,
and scored as a take on time is scored: kick AUC and note-in-chord over its own band and,
as the control, song i + 1's solo over song i's band, beside the true lead's, and the
plays-with-the-band scores they make. The ceiling at each L is the best soloist's figure:
what a listener that hears only the past has been shown to reach there, not a bound.
The JSON says which corpus style (meta.json's demo_style) and which split each row is on.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: sax/
from sax import guard  # noqa: E402 (first of the project's: a Ctrl-C while torch loads is one line)

guard.quiet_ctrl_c(__name__)

from tqdm import tqdm  # noqa: E402

from sax.codec import dataset_codec, encode_audio  # noqa: E402
from sax.dataset import load_dataset  # noqa: E402
from sax.files import write_json  # noqa: E402
from sax.listening import fit_probes  # noqa: E402
from sax.reference import SOLOISTS, reference_notes  # noqa: E402
from takes import band_truth, score_played, song_audio  # noqa: E402

LOOKAHEAD_MS = (0, 40, 80, 160, 240)  # as experiments/ablation.py's lookahead table
# the figures a ceiling is given for (the best soloist's, each on its own)
CEILING_OF = ("kick_auc_own", "note_in_chord_own", "plays_with_band_rhythm",
              "plays_with_band_harmony")


def soloist_of(name, lookahead_ms, seconds, seed):
    """sax.demo's soloist hook: the band's truth -> the reference soloist's notes."""
    return lambda truth: reference_notes(truth, name, lookahead_ms / 1e3, seconds, seed)


def ceiling(data_dir, split="test", lookaheads=LOOKAHEAD_MS, soloists=SOLOISTS):
    """Every (L, soloist) row's figures on the split's songs, and the ceiling at each L."""
    meta = load_dataset(data_dir)
    songs, seconds = meta["splits"][split]["songs"], meta["settings"]["demo_seconds"]
    codec = dataset_codec(meta["codec"], data_dir, "cpu")
    heard = [encode_audio(codec, song_audio(meta, s)[0]) for s in songs]       # [K, T] each
    T = min(h.shape[1] for h in heard)
    ls = band_truth(data_dir, meta, songs, [h[:, :T] for h in heard], codec)
    probes = fit_probes(data_dir, meta, min(T, 300))
    rows = []
    for ms in tqdm(lookaheads, desc=f"{Path(data_dir).name}: lookahead", unit="L"):
        for name in soloists:
            played = [encode_audio(codec, song_audio(meta, s, soloist_of(name, ms, seconds, i))[1])
                      [:, :T] for i, s in enumerate(songs)]
            rows.append({"lookahead_ms": ms, "soloist": name,
                         "figures": score_played(probes, ls, played)})
    best = {f"{ms:g}": {key: max(r["figures"][key] for r in rows if r["lookahead_ms"] == ms)
                      for key in CEILING_OF} for ms in lookaheads}
    return {"data": str(data_dir), "style": meta["settings"].get("demo_style", "random"),
            "split": split, "songs": songs, "frames": T, "rows": rows, "ceiling": best}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="a demo dataset (python data.py)")
    parser.add_argument("--out", required=True, help="the JSON file to write")
    parser.add_argument("--split", default="test", choices=["test", "val", "train"])
    parser.add_argument("--lookahead-ms", type=float, nargs="+", default=list(LOOKAHEAD_MS))
    args = parser.parse_args(argv)
    result = {"command": " ".join(["python", "experiments/ceiling.py", *(argv or sys.argv[1:])]),
              **ceiling(Path(args.data), args.split, args.lookahead_ms)}
    write_json(Path(args.out), result)
    print(f"{result['style']} corpus, {len(result['songs'])} {args.split} songs: the best "
          "reference soloist at each L (plays with the band: rhythm / harmony)")
    for ms, best in result["ceiling"].items():
        print(f"  L = {float(ms):g} ms: {best['plays_with_band_rhythm']:.2f} / "
              f"{best['plays_with_band_harmony']:.2f}")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    guard.loaded()
    main()
