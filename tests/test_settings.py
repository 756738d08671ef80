"""Every numeric setting of every script, walked with nan, inf, -1, 0 and a huge value.

Each combination must end in one of two ways: refused in one line that names the flag (by
argparse, exit 2, or by the script's checks, exit 1), or accepted and then a run that
finishes (trained, generated, built) or stops in one line. Never a traceback. The walk is
generated from the settings dataclasses, so a field added tomorrow is walked too.
"""
import dataclasses
import math

import pytest
from conftest import quick_train_config

import ablation as A
import data
import generate as G
import onnx_export as E
from sax import settings
import train as T
from sax.audio import CODEC_RATE

VALUES = ["nan", "inf", "-1", "0", "1e12"]
# script -> (settings class, the checks its main() runs before any work)
SCRIPTS = {"data.py": (data.DataConfig, data.check_data_settings),
           "train.py": (T.TrainConfig, T.check_train_settings),
           "generate.py": (G.GenerateConfig, G.check_generate_settings),
           "onnx_export.py": (E.ExportConfig, settings.check_settings),
           "ablation.py": (A.AblationConfig, settings.check_settings)}
# Budgets: a huge one is a long run, not an error (checked, not run to its end).
BUDGETS = {("train.py", "max_steps")}


def numeric_fields(cls):
    return [f for f in dataclasses.fields(cls) if settings.number_type(f)]


CASES = [(script, f.name, value) for script, (cls, _) in SCRIPTS.items()
         for f in numeric_fields(cls) for value in VALUES]


def verdict(script, name, value, capsys):
    """'refused' (one line naming the flag) or the accepted settings."""
    cls, check = SCRIPTS[script]
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    flag = settings.flag_of(f)
    with pytest.raises(SystemExit) as stop:
        cfg = settings.parse_settings(cls, [flag, value])
        check(cfg)
        raise SystemExit(cfg)  # accepted: handed out through the same door
    if isinstance(stop.value.code, cls):
        return stop.value.code
    if stop.value.code == 2:  # argparse: "invalid int value" and the like, on stderr
        line = capsys.readouterr().err.strip().splitlines()[-1]
    else:
        line = str(stop.value.code)
    assert "\n" not in line and flag in line, f"{script} {flag} {value}: {line!r}"
    return "refused"


def test_the_walk_covers_every_numeric_setting():
    assert len(CASES) >= 5 * 45, len(CASES)  # the figure the note quotes: combinations tried
    walked = {(s, n) for s, n, _ in CASES}
    assert ("train.py", "window_s") in walked and ("generate.py", "guidance") in walked


@pytest.mark.parametrize("script,name,value", CASES)
def test_a_bad_number_is_refused_in_one_line_or_runs(script, name, value, capsys):
    result = verdict(script, name, value, capsys)
    if result == "refused":
        return
    number = float(value)
    assert math.isfinite(number), f"{script} --{name} {value} was accepted"
    f = next(f for f in dataclasses.fields(SCRIPTS[script][0]) if f.name == name)
    assert not settings.out_of_range(f, getattr(result, name)), (script, name, value)


def accepted(script, skip=("threads",)):
    """(field name, value) of the walk's values that the script's settings accept (finite,
    in range), as a run would get them; budgets and the thread count left out."""
    cls = SCRIPTS[script][0]
    for f in numeric_fields(cls):
        if f.name in skip or (script, f.name) in BUDGETS:
            continue
        for value in VALUES:
            kind = settings.number_type(f)
            try:
                parsed = kind(float(value)) if kind is int else float(value)
            except (ValueError, OverflowError):
                continue
            if not settings.out_of_range(f, parsed):
                yield f.name, parsed


def runs_or_stops_in_one_line(run, cfg):
    """1 when run(cfg) finished, 0 when it stopped in one line; anything else fails the test."""
    try:
        run(cfg)
        return 1
    except SystemExit as stop:
        assert isinstance(stop.code, str) and "\n" not in stop.code, stop.code
        return 0


def test_every_accepted_training_setting_trains_or_stops_in_one_line(demo_dataset, tmp_path):
    ran = 0
    for name, value in accepted("train.py"):
        cfg = quick_train_config(demo_dataset[0], tmp_path / f"{name}{value}", max_steps=2, eval_every=2,
                                 save_every=2, eval_windows=2, page_sample_s=0, listen_test=False)
        setattr(cfg, name, value)
        ran += runs_or_stops_in_one_line(T.train, cfg)
    assert ran >= 8, f"only {ran} accepted settings trained"


def test_every_accepted_sampling_setting_generates_or_stops_in_one_line(trained, tmp_path):
    ran = 0
    for name, value in accepted("generate.py"):
        cfg = G.GenerateConfig(checkpoint=str(trained[0] / "best"), out=str(tmp_path / f"{name}{value}"),
                               device="cpu", duration=1.0)
        setattr(cfg, name, value)
        ran += runs_or_stops_in_one_line(G.main, cfg)
    assert ran >= 8, f"only {ran} accepted sampling settings generated"


# The runner's hand-written arguments (it stands alone on the board, without settings.py).
RUNNER_FLAGS = ["--threads", "--temperature", "--top-k", "--seed", "--chunk-ms", "--prime-ms", "--block-ms",
                "--seconds"]
RUNNER_CASES = [(flag, value) for flag in RUNNER_FLAGS for value in VALUES]


def test_every_runner_number_is_refused_in_one_line_or_takes(exported, tmp_path, capsys):
    import numpy as np
    import soundfile as sf

    import onnx_runner as R
    backing = tmp_path / "b.wav"
    sf.write(backing, np.zeros(CODEC_RATE, np.float32), CODEC_RATE)
    refused = ran = 0
    for flag, value in RUNNER_CASES:
        argv = [str(exported[0]), "--backing", str(backing), "--out", str(tmp_path / f"o{flag}{value}"),
                "--no-pace", "--variant", "fp32", flag, value]
        try:
            R.arguments(argv)
        except SystemExit as stop:
            assert stop.code == 2
            line = capsys.readouterr().err.strip().splitlines()[-1]
            assert flag in line, line
            refused += 1
            continue
        assert math.isfinite(float(value)), f"{flag} {value} was accepted"
        try:
            R.main(argv)
            ran += 1
        except SystemExit as stop:
            assert isinstance(stop.code, str) and "\n" not in stop.code, (flag, value, stop.code)
    assert refused + ran == len(RUNNER_CASES) == 40 and ran >= 4, (refused, ran)
