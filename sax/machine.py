"""
sax/machine.py -- what the machine gives a script: the installed packages checked against the
lock, torch's CPU threads (timed at start), and the device.
"""
import time
from pathlib import Path

import numpy as np
import torch

DEVICES = ["auto", "cpu", "cuda"]
OFFLINE_HELP = ("Three ways out: (1) run once on a machine with internet so the "
                "weights are cached; (2) point at local weights ({flag}); (3) use "
                "{fallback} (audio is then not meaningful, but every step runs).")

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

LOCK_FILE = Path(__file__).resolve().parents[1] / "requirements.lock"
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
