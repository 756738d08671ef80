"""
sax/separation.py -- Demucs: a full mix -> backing (drums, bass, piano, guitar) and solo.
"""
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from sax.audio import CODEC_RATE, channels, resample
from sax.machine import OFFLINE_HELP

# ----------------------------------------------------------------------------
# 3. Separation with Demucs
# ----------------------------------------------------------------------------



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
def separate(model, audio, rate, backing_sources, solo_sources, device, out_rate=CODEC_RATE,
             chunk_s=20.0):
    """Any audio [C, N] -> backing and solo, mono at out_rate (the codec's), [N'] each.

    Long files go through in chunks of chunk_s seconds, each reduced to two mono
    codec-rate stems at once, so memory stays bounded whatever the length (the price: a
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
        # Sum the chosen stems, then mono, then the codec's rate: two small arrays leave
        # this chunk.
        for out, wanted in ((backs, backing_sources), (solos, solo_sources)):
            stem = channels(_sum_sources(stems, sources, wanted), 1)[0]
            out.append(resample(stem, model.samplerate, out_rate))
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
