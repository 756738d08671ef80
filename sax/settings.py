"""
settings.py -- the scripts' settings: one dataclass per script, each field with its help,
its default and the values it may take, read from the command line.

    @dataclass
    class GenerateConfig:
        top_p: float = opt(1.0, "sample among the codes holding this much probability",
                           above=0, at_most=1)

One source of truth: the dataclass is what the code reads, what --help prints (with each
field's range) and what is stored as JSON next to every output. check_settings() holds
every field to its range before any work, whether the settings came from the command
line or were built in code, so that `--temperature nan` or `--window-s 0` is one line
naming the flag and what it takes, never a traceback or a silent nonsense run.
"""
import argparse
import math
import shlex
import typing
from dataclasses import MISSING, field, fields


def opt(default, help, choices=None, flag=None, at_least=None, above=None, at_most=None,
        below=None):
    """A settings field: its default, its help text (shown by --help), and what it may be.

    choices: the allowed values; flag: a command-line flag other than --field-name (a name
    kept for its users); at_least / above / at_most / below: the bounds of a number. Every
    number must also be finite (nan and inf are refused everywhere); None, where the type
    is Optional, means "off" and is always allowed.
    """
    meta = {"help": help, "choices": choices, "flag": flag, "at_least": at_least,
            "above": above, "at_most": at_most, "below": below}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def number_type(f):
    """int or float for a numeric field (Optional[int] included), else None."""
    kind = f.type
    if typing.get_origin(kind) is typing.Union:
        kind = typing.get_args(kind)[0]
    return kind if kind in (int, float) else None


def bounds_text(f):
    """The range of a numeric field in words, e.g. 'above 0, at most 1'; '' when unbounded."""
    m = f.metadata
    words = [f"{name.replace('_', ' ')} {m[name]:g}"
             for name in ("at_least", "above", "at_most", "below") if m.get(name) is not None]
    return ", ".join(words)


def out_of_range(f, value):
    """What is wrong with `value` for field f, in words, or '' when it fits."""
    if value is None or number_type(f) is None or isinstance(value, bool):
        return ""
    if not math.isfinite(value):
        return "must be a finite number" + (f" ({bounds_text(f)})" if bounds_text(f) else "")
    m = f.metadata
    fits = ((m["at_least"] is None or value >= m["at_least"])
            and (m["above"] is None or value > m["above"])
            and (m["at_most"] is None or value <= m["at_most"])
            and (m["below"] is None or value < m["below"]))
    return "" if fits else f"must be {bounds_text(f)}"


def parse_settings(cls, argv=None, description=None):
    """argparse from a settings dataclass: every field becomes --field-name with its help,
    and the result is checked (check_settings) before it is returned."""
    parser = argparse.ArgumentParser(description=description)
    for f in fields(cls):
        default = f.default_factory() if f.default is MISSING else f.default
        name, kind, choices = flag_of(f), f.type, f.metadata["choices"]
        # The default is shown unless it is empty: then the help says what empty means.
        shown = [] if default in ("", None, []) else [f"default: {default}"]
        help = f.metadata["help"] + "".join(f" ({w})" for w in ["; ".join(
            shown + ([bounds_text(f)] if bounds_text(f) else []))] if w)
        if kind is bool:
            parser.add_argument(name, dest=f.name, action=argparse.BooleanOptionalAction,
                                default=default, help=help)
        elif kind is list:
            parser.add_argument(name, dest=f.name, nargs="*", default=default, help=help)
        else:
            if typing.get_origin(kind) is typing.Union:  # Optional[int]: an int, or "none"
                inner = typing.get_args(kind)[0]
                def kind(s, inner=inner):
                    return None if s.lower() == "none" else inner(s)
                kind.__name__ = inner.__name__  # argparse names it in "invalid int value"
            parser.add_argument(name, dest=f.name, type=kind, default=default, help=help,
                                choices=choices)
    cfg = cls(**vars(parser.parse_args(argv)))
    check_settings(cfg)
    return cfg


def flag_of(f):
    """The command-line flag of a settings field: --field-name, unless opt() gave another."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def command_line(script, cfg):
    """The command that gives these settings: `python script` and every flag that differs
    from its default, as parse_settings reads them back (the listening pages show it)."""
    words = ["python", script]
    for f in fields(cfg):
        default = f.default_factory() if f.default is MISSING else f.default
        value, name = getattr(cfg, f.name), flag_of(f)
        if value == default:
            continue
        if f.type is bool:
            words.append(name if value else "--no-" + name[2:])
        elif f.type is list:
            words += [name, *map(str, value)]
        else:
            words += [name, "none" if value is None else str(value)]
    return shlex.join(words)


def check_settings(cfg):
    """Every field against its declared values (choices) and range (finite, the bounds of
    opt()), for settings parsed or built in code: one line naming the flag, before
    anything is read or created. The checks that need two fields at once, or the data,
    are each script's own (train.check_train_settings, ...)."""
    for f in fields(cfg):
        value, choices = getattr(cfg, f.name), f.metadata.get("choices")
        if choices and value not in choices:
            raise SystemExit(f"{flag_of(f)} {value}: choose one of {', '.join(map(str, choices))}")
        wrong = out_of_range(f, value)
        if wrong:
            raise SystemExit(f"{flag_of(f)} {value}: {wrong}")


def non_default(cfg):
    """{field name: value} of the settings that differ from their defaults."""
    out = {}
    for f in fields(cfg):
        default = f.default_factory() if f.default is MISSING else f.default
        if getattr(cfg, f.name) != default:
            out[f.name] = getattr(cfg, f.name)
    return out
