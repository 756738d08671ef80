"""
docs/paper/figures.py -- the draft's three figures, drawn from what the build read: the
system (its sizes from model.py's presets), the test songs beside the baselines (from
experiments/baselines.py's JSON) and the lookahead curve (from experiments/live.py's takes,
build.lookahead_of).

Each function draws one PNG at print resolution and returns nothing; build.py calls them
into its staging folder, so a failed drawing leaves the last build as it was.
"""
import numpy as np

DPI = 300
# The rows of the baselines figure, top to bottom: the bounds first and last.
ROWS = (("true", "true lead"), ("rule", "rule soloist"), ("model", "model"),
        ("retrieval", "retrieval"), ("deaf", "deaf (another song's lead)"))
STYLES = (("random", "kicks drawn at random", "#1f5fa8", "o"),
          ("lines", "lines: passing tones, anticipations", "#2e8b57", "D"),
          ("riff", "riff: hits repeat", "#c0561e", "s"))


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")  # no screen needed
    import matplotlib.pyplot as plt
    plt.rcParams.update({"font.size": 7.5, "axes.titlesize": 8})
    return plt


def system_figure(path, facts):
    """The system as one picture: audio in, two stems, tokens, the encoder and decoder with
    their aids, audio out, and the live path in words below."""
    plt = _pyplot()
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
    fig, ax = plt.subplots(figsize=(7.0, 2.5))
    ax.set_xlim(-1.5, 101.5)
    ax.set_ylim(-2, 34)
    ax.axis("off")

    def box(x, y, w, h, text, color="#eef2f8", bold=False):
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.25,rounding_size=0.8",
                                    fc=color, ec="#33475b", lw=0.7))
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=5.8,
                fontweight="bold" if bold else "normal", linespacing=1.3)

    def arrow(x0, y0, x1, y1, text=None):
        ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=7,
                                     lw=0.7, color="#33475b", shrinkA=1, shrinkB=1))
        if text:
            ax.text((x0 + x1) / 2, max(y0, y1) + 0.6, text, ha="center", va="bottom",
                    fontsize=5.6, color="#33475b")

    box(0, 14, 8.5, 7, "recording\n(quartet)")
    box(11, 13.5, 8, 8, "Demucs\nstems")
    box(22, 22, 16.5, 8, "backing\nbass, piano, drums")
    box(22, 5, 16.5, 8, "saxophone\nkept where it plays\n(RMS energy)")
    box(41.5, 22, 13, 8, f"EnCodec\n{facts['codebooks']} x 1024 codes\n{facts['frame_hz']} Hz")
    box(41.5, 5, 13, 8, "EnCodec\n+ delay pattern")
    box(60, 20.5, 17, 11, f"encoder\n{facts['tiny_layers']} layers, width {facts['tiny_width']}\n"
        "chord head:\nthe band's chroma", color="#dde8f5")
    k = facts["codebooks"]
    box(60, 1.5, 17, 13, f"decoder\n{facts['tiny_layers']} layers\n{k} tables summed,\n"
        f"{k} heads in parallel\npitch head (optional)", color="#dde8f5")
    box(80.5, 4, 9, 8, "EnCodec\ndecoder")
    box(92.5, 4, 8.5, 8, "solo\naudio", color="#fbe9dc", bold=True)

    arrow(8.9, 17.5, 10.7, 17.5)
    arrow(19.3, 19.5, 21.7, 25)
    arrow(19.3, 15.5, 21.7, 10)
    arrow(38.8, 26, 41.2, 26)
    arrow(38.8, 9, 41.2, 9)
    arrow(54.8, 26, 59.7, 26, "codes")
    arrow(54.8, 9, 59.7, 9, "past")
    arrow(68.5, 20.2, 68.5, 14.8)
    ax.text(69.3, 17.5, "cross-attention +\ntime-aligned path", fontsize=5.6, color="#33475b",
            va="center")
    arrow(77.3, 8, 80.2, 8)
    arrow(89.8, 8, 92.2, 8)
    ax.text(0, -1.2, f"default model: {facts['tiny_params_m']} M parameters. Live, the encoder "
            "is causal and hears the band L frames late; a numpy-only ONNX runner streams "
            "40 ms chunks.", fontsize=5.8, color="#33475b", style="italic")
    fig.savefig(path, dpi=DPI, bbox_inches="tight", pad_inches=0.02)
    plt.close(fig)


def baselines_figure(path, styles):
    """Plays with the band, rhythm and harmony, for each row of the baselines JSON on each
    corpus style it holds: the figure with its 95% interval. 0 is a deaf soloist's score,
    1 the true lead's."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(3.35, 2.25), sharey=True)
    present = [s for s in STYLES if s[0] in styles]
    for ax, key, title in zip(axes, ("plays_with_band_rhythm", "plays_with_band_harmony"),
                              ("rhythm", "harmony")):
        for k, (style, label, color, marker) in enumerate(present):
            rows = styles[style]["rows"]
            offset = (k - (len(present) - 1) / 2) * 0.22
            for i, (name, _) in enumerate(ROWS):
                if name not in rows:
                    continue
                value = rows[name]["token"][key]
                low, high = rows[name]["token_interval"][key]
                y = i + offset
                ax.plot([low, high], [y, y], color=color, lw=1.0)
                ax.plot(value, y, marker=marker, color=color, ms=3.2, ls="none",
                        label=label if i == 0 else None)
        for x, style in ((0, ":"), (1, "--")):
            ax.axvline(x, color="#777777", lw=0.6, ls=style)
        ends = [end for style, *_ in present for row in styles[style]["rows"].values()
                for end in row["token_interval"][key]] + [0, 1]
        ax.set_xlim(min(ends) - 0.12, max(ends) + 0.12)
        ax.set_title(title)
        ax.grid(axis="x", lw=0.3, color="#dddddd")
    axes[0].set_yticks(range(len(ROWS)), [label for _, label in ROWS])
    axes[0].invert_yaxis()
    handles, labels = axes[0].get_legend_handles_labels()
    fig.supxlabel("plays with the band (0: deaf, 1: the true lead)", fontsize=7, x=0.6, y=0.12)
    fig.legend(handles, labels, loc="lower center", ncol=2, frameon=False, fontsize=6.2,
               bbox_to_anchor=(0.6, -0.03))
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=DPI, bbox_inches="tight", pad_inches=0.02)
    plt.close(fig)


def lookahead_figure(path, table):
    """Kick AUC against the lookahead L, as the runner played each take over the test songs:
    over the own band without guidance and with it, and, guided, over another song's band;
    each seed a dot, the mean a line. 0.5 is chance."""
    plt = _pyplot()
    rows = list(table["rows"].values())  # in order of lookahead (build.lookahead_of)
    ms = [r["runs"][0]["lookahead_ms"] for r in rows]
    fig, ax = plt.subplots(figsize=(3.35, 2.0))
    series = (("kick_auc_own@3", "own band, guided", "#c0561e", "s", "-"),
              ("kick_auc_own@none", "own band, unguided", "#1f5fa8", "o", "--"),
              ("kick_auc_mismatched@3", "another song's band, guided", "#6b6b6b", "^", "-"))
    for key, label, color, marker, line in series:
        seeds = [[run[key] for run in r["runs"]] for r in rows]
        ax.plot(ms, [np.mean(s) for s in seeds], color=color, lw=1.0, ls=line, marker=marker,
                ms=3.2, label=label)
        for x, s in zip(ms, seeds):
            ax.plot([x] * len(s), s, color=color, marker=marker, ms=1.8, ls="none", alpha=0.45)
    ax.axhline(0.5, color="#777777", lw=0.6, ls=":")
    ax.text(ms[-1], 0.502, "chance", ha="right", va="bottom", fontsize=6, color="#555555")
    low = min(0.45, *[run[k] for r in rows for run in r["runs"] for k, *_ in series])
    ax.set_ylim(low - 0.01, None)
    ax.set_xticks(ms)
    ax.set_xlabel("lookahead L (ms)")
    ax.set_ylabel("kick AUC")
    ax.grid(lw=0.3, color="#dddddd")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=2, frameon=False,
              fontsize=6.2)
    fig.savefig(path, dpi=DPI, bbox_inches="tight", pad_inches=0.02)
    plt.close(fig)
