"""
sax/resume.py -- a run that stops and goes on exactly: what a run has done (Progress), the
settings a resumed run keeps, its state loaded back, and Ctrl-C deferred to the end of a step.
"""
import signal
import threading
from dataclasses import dataclass, field, fields, replace

import torch
from tqdm import tqdm

from sax.checkpoints import load_weights, read_json, resolve_checkpoint
from sax.settings import flag_of, non_default


def refuse_to_overwrite(out, cfg):
    """A new run never replaces an old one's checkpoints and metrics without --overwrite."""
    held = [name for name in ("latest", "best",
                              "metrics.jsonl") if resolve_checkpoint(out / name).exists()]
    if cfg.overwrite or not held:
        return
    if "latest" not in held:  # stopped before its first save of latest/: nothing to resume
        raise SystemExit(f"{out} holds a run stopped before its first save ({', '.join(held)}, "
                         "no latest/): --overwrite starts it again, or choose another --out")
    if not cfg.resume:
        raise SystemExit(f"{out} already holds a run ({', '.join(held)}): --resume continues "
                         "it, --overwrite starts over in its place, or choose another --out")


# A resumed run is the run it resumes: its settings come from latest/config.json. Its
# budgets may change on --resume, when given, and are said (how long it runs, what it
# reports; and the learning rate, the one optimizer setting allowed: a lower --lr from
# the last good checkpoint is the way back from a diverged run, docs/troubleshooting.md);
# where it runs comes from the command. A flag given for any other setting (the model,
# the data, the rest of the optimizer, the seed) is refused, with both values.
BUDGETS = ("max_steps", "eval_every", "save_every", "eval_windows", "page_sample_s",
           "listen_test", "lr")


WHERE = ("device", "threads", "compile", "push_to_hub", "push_only", "hub_private", "out",
         "resume", "overwrite")


def resumed_settings(cfg, folder):
    """cfg with the settings of the run in folder (latest/config.json): the budgets cfg
    gives (said when they change) and where it runs are this command's, the rest the run's.
    A flag that differs from its default and from the run's value is refused with its name
    and both values. A flag at its default reads as not given."""
    stored = read_json(resolve_checkpoint(folder) / "config.json",
                       "a checkpoint written by train.py; start again with --overwrite")
    stored = stored.get("train")
    if not isinstance(stored, dict):
        raise SystemExit(f"{folder}/config.json holds no \"train\" settings: not a checkpoint "
                         "of train.py; start again with --overwrite")
    given, own = non_default(cfg), {f.name: f for f in fields(cfg)}
    clash = [(own[name], stored[name], value) for name, value in given.items()
             if name in stored and name not in BUDGETS + WHERE and stored[name] != value]
    if clash:
        said = "; ".join(f"{flag_of(f)} {new} (the run's: {old})" for f, old, new in clash)
        budgets = ", ".join(flag_of(own[name]) for name in BUDGETS)
        raise SystemExit(f"--resume: {said}. A resumed run keeps its own settings "
                         f"({folder}/config.json); only {budgets} and where it runs may "
                         "change. Drop the flag, or start a new run with another --out")
    for name in BUDGETS:
        if name in given and name in stored and stored[name] != given[name]:
            print(f"--resume: {flag_of(own[name])} {given[name]} (the run had {stored[name]})")
    kept = {name: value for name, value in stored.items() if name in own
            and name not in WHERE and not (name in BUDGETS and name in given)}
    return replace(cfg, **kept)


@dataclass
class Progress:
    """What a run has done so far: everything a checkpoint must hold besides weights,
    optimizer and random states, for a resumed run to carry on exactly."""
    step: int = 0                 # optimizer steps taken (metrics.jsonl counts from 1)
    best_val: float = float("inf")
    skipped: int = 0              # steps the fp16 GradScaler skipped
    # losses of the last eval_every steps: train_loss at an evaluation
    recent: list = field(default_factory=list)
    # (train_loss, val_ce) at each evaluation: the overfitting check
    history: list = field(default_factory=list)

    def tensors(self):
        """The two lists as tensors, for state.pt (loadable with weights_only=True)."""
        return {"recent_losses": torch.tensor(self.recent, dtype=torch.float64),
                "val_history": torch.tensor(self.history, dtype=torch.float64).reshape(-1, 2)}


def resume_run(folder, model, optimizer, scaler, gen, cfg, device, world=None):
    """Load latest/ into the model, optimizer, scaler and random generators -> Progress.

    Refuses a finished run (step >= max_steps) before changing anything. Under torchrun
    (world: sax.distributed.World) each rank takes back its own torch generator.
    """
    ckpt = resolve_checkpoint(folder)
    if not ckpt.exists():
        raise SystemExit(f"--resume: no checkpoint in {folder}; start without --resume")
    state = load_state(ckpt / "state.pt")
    if state["step"] >= cfg.max_steps:
        raise SystemExit(f"{ckpt} is at step {state['step']}: this run is finished "
                         f"(--max-steps {cfg.max_steps}), and nothing was changed. To train "
                         "on, resume with a larger --max-steps (the cosine schedule then "
                         "stretches to the new end), or start a new run with another --out.")
    config = read_json(ckpt / "config.json",
                       "a checkpoint written by train.py; start without --resume")
    load_weights(model, ckpt, device)
    optimizer.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng_torch"])
    ranks = state.get("rng_torch_ranks")
    if world is not None and world.many:
        if ranks is not None and len(ranks) == world.size:
            torch.set_rng_state(ranks[world.rank].clone())  # its own storage: no view
        elif world.main:
            print(f"--resume: {ckpt} was saved by {1 if ranks is None else len(ranks)} "
                  f"process(es), resumed by {world.size}: the same global batches, other "
                  "dropout masks (not bit for bit the run that was not interrupted)")
    gen.set_state(state["rng_data"])
    if state["rng_cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng_cuda"])
    print(f"resumed from {ckpt} at step {state['step']}")
    return Progress(step=state["step"], best_val=config.get("best_val", float("inf")),
                    skipped=config.get("skipped_steps", 0),
                    recent=state.get("recent_losses", torch.zeros(0)).tolist(),
                    history=[tuple(row) for row in state.get("val_history",
                                                             torch.zeros(0, 2)).tolist()])


def load_state(path):
    """state.pt (the optimizer and random states), or one line when it is missing or damaged."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise SystemExit(f"{path} not found: the checkpoint folder is incomplete; resume from a "
                         "whole copy, or start again with --overwrite") from None
    except Exception as err:  # cut short, empty, or not torch.save's: torch names no file
        why = (str(err).strip().splitlines() or [type(err).__name__])[0][:120]
        raise SystemExit(f"{path} is damaged ({why}): resume from a whole copy of the run, "
                         "or start again with --overwrite") from None
    if not isinstance(state, dict) or not {"optimizer", "step", "rng_torch"} <= set(state):
        raise SystemExit(f"{path} is not a state.pt written by train.py: resume from a whole "
                         "copy of the run, or start again with --overwrite")
    return state


class StopSignal:
    """Ctrl-C during training, deferred to the end of the step under way.

    A step cut in the middle leaves the data generator moved, gradients half summed, or
    the optimizer stepped with the step counter not yet moved: a checkpoint of that
    moment does not resume to the same run. So the first Ctrl-C only raises a flag,
    which the loop reads between steps; a second one stops at once (latest/ then holds
    the last scheduled save).
    """

    def __enter__(self):
        self.requested, self.previous = False, None
        # signals reach the main thread only
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self.note)
        return self

    def note(self, signum, frame):
        self.requested = True
        # the second Ctrl-C is a KeyboardInterrupt
        signal.signal(signal.SIGINT, signal.default_int_handler)
        tqdm.write("Ctrl-C: finishing this step, then saving latest/ (Ctrl-C again stops at once)")

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def stop_on_bad_loss(run, loss):
    """A non-finite loss outside fp16: stop, saving nothing (the weights that gave it are the
    broken ones, and latest/ must keep the last good state), and say where to go back to."""
    good = resolve_checkpoint(run.out / "latest")
    kept = (f"{good} still holds the last good checkpoint (step "
            f"{read_json(good / 'config.json', 'a checkpoint')['step']}): "
            "resume from it with a lower --lr"
            if good.exists() else "no checkpoint was saved before it")
    raise SystemExit(f"step {run.progress.step + 1}: the loss is {loss}. Likely causes: a "
                     f"learning rate too high (--lr {run.peak_lr}), fp16 overflow (try "
                     f"--dtype bf16 or fp32), or corrupt tokens in {run.cfg.data}. {kept}.")
