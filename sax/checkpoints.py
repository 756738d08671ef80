"""
sax/checkpoints.py -- a checkpoint is a folder: config.json and model.safetensors. Writing one
(train.py), loading one (every script), fetching one from the Hugging Face Hub, and the
model card a push writes.
"""
import json
import os
import shutil
from dataclasses import asdict, fields
from pathlib import Path
from typing import Optional

import torch

from model import ModelConfig, SoloTransformer
from sax.files import atomic_write, write_json

# A checkpoint is a folder: config.json (the ModelConfig, the training settings, the
# dataset's codec and the metrics) and model.safetensors (the weights: tensors only,
# nothing that runs code when loaded). Writing (train.py's) and loading live here, so
# that generate.py, or any script of yours, needs model.py and this file, nothing of training.
# (huggingface_hub's PyTorchModelHubMixin would give save_pretrained/from_pretrained,
# but it writes its own config.json of the constructor's arguments, while this one
# also carries the codec and the data the tokens mean something for.)

def read_json(path, what):
    """A JSON file we wrote -> its object, or one clear line naming the file and the fix."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise SystemExit(f"{path} not found: expected {what}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SystemExit(f"{path} is damaged ({err}): expected {what}") from None
    if not isinstance(obj, dict):
        raise SystemExit(f"{path} is damaged (not a JSON object): expected {what}")
    return obj


def resolve_checkpoint(path):
    """A checkpoint folder, or its leftover .old twin if a crash hit between the two renames."""
    path = Path(path)
    old = path.with_name(f".{path.name}.old")
    return path if path.exists() or not old.exists() else old


def fetch_checkpoint(name):
    """A local checkpoint folder, or a Hub repo id downloaded to the local cache.

    A local path wins: a folder named like "runs/tiny" has one slash too, and must not
    be sent to the Hub. Only the files a checkpoint needs are downloaded.
    """
    if resolve_checkpoint(name).exists():
        return Path(name)
    if name.count("/") == 1 and not name.startswith((".", "/")):
        from huggingface_hub import snapshot_download
        try:
            wanted = ["config.json", "model.safetensors", "codec.safetensors", "README.md"]
            return Path(snapshot_download(name, allow_patterns=wanted))
        except Exception as err:
            raise SystemExit(f"--checkpoint {name}: not a local folder, "
                             f"and the Hub download failed: {err}") from None
    raise SystemExit(f"--checkpoint {name}: no such folder. Train first "
                     "(python train.py) or give a Hub id user/name.")


def load_model(folder, device="cpu"):
    """A checkpoint folder -> (model in eval mode, its config.json dict). Safetensors only."""
    folder = resolve_checkpoint(folder)
    config = read_json(folder / "config.json",
                       "a checkpoint folder (config.json, model.safetensors) written by train.py")
    # Checkpoints from before the aligned path existed were trained without it.
    model = SoloTransformer(model_config_of(config, folder / "config.json"))
    return load_weights(model, folder, device).eval(), config


def model_config_of(config, path):
    """The ModelConfig a checkpoint's config.json describes, each field of the right type,
    or one line naming the file: an edited or foreign config.json must not reach the
    model's constructor (whose assertions would be a traceback)."""
    fix = "copy the checkpoint folder whole, or train again"
    settings = config.get("model") if isinstance(config, dict) else None
    if not isinstance(settings, dict):
        raise SystemExit(f"{path} has no \"model\" settings: not a checkpoint's config.json; {fix}")
    settings = dict(settings)
    for name, default in REMOVED.items():
        if settings.pop(name, default) != default:
            raise SystemExit(f"{path}: trained with {name}, an experiment this version no longer "
                             "has (docs/log.md names the commit that still has it)")
    known = {f.name: f for f in fields(ModelConfig)}
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise SystemExit(f"{path}: unknown model setting {', '.join(unknown)} (written by another "
                         f"version, or edited); {fix}")
    for name, value in settings.items():
        want = known[name].type
        if not isinstance(value, ACCEPTS[want]) or (isinstance(value, bool) and want is not bool):
            raise SystemExit(f"{path}: model setting {name} is {value!r}, not "
                             f"{ACCEPTS_NAME[want]}; {fix}")
    try:
        return ModelConfig(**{"aligned_backing": False, **settings})
    except AssertionError as err:  # the constructor's own checks: numbers that cannot fit
        raise SystemExit(f"{path}: {err}; {fix}") from None


# Settings of experiments since removed, with their default: a checkpoint that kept the
# default loads as before; one that used the experiment is refused in one line.
REMOVED = {"pitch_first": False}

# The JSON values each type of ModelConfig field takes (a float field takes 75 as well as 75.0).
ACCEPTS = {int: (int,), float: (int, float), bool: (bool,), str: (str,),
           Optional[int]: (int, type(None))}
ACCEPTS_NAME = {int: "a whole number", float: "a number", bool: "true or false", str: "a text",
                Optional[int]: "a whole number or null"}


def load_weights(model, folder, device="cpu"):
    """Put the weights of a checkpoint folder's model.safetensors into model (on device);
    returns it."""
    from safetensors.torch import load_file
    weights = Path(folder) / "model.safetensors"
    if not weights.exists():
        raise SystemExit(f"{weights} not found: the checkpoint folder is incomplete")
    try:
        tensors = load_file(str(weights), device=str(device))
    except Exception as err:  # safetensors' own error: empty, cut short, or not safetensors
        why = (str(err).strip().splitlines() or [type(err).__name__])[0][:120]
        raise SystemExit(f"{weights} is damaged ({why}): copy the checkpoint folder whole "
                         "again, or train again") from None
    try:
        model.load_state_dict(tensors)
    except RuntimeError as err:  # another preset's weights: one line, not 88
        lines = str(err).strip().splitlines()
        first = lines[-1].strip()[:160] if lines else type(err).__name__
        raise SystemExit(f"{weights} does not fit the model its folder's config.json "
                         f"describes ({first}): the two files come from different "
                         "checkpoints; copy the checkpoint folder whole, or train again") from None
    return model.to(device)


# ----------------------------------------------------------------------------
# Checkpoints: a folder written whole, then renamed into place
# ----------------------------------------------------------------------------

def save_checkpoint(folder, model, optimizer, scaler, step, gen, cfg, meta, extra, history=None):
    """config.json + model.safetensors + state.pt, atomically (a crash leaves the old folder).

    history: tensors the run needs to resume exactly (recent losses, the overfitting
    check's memory), stored in state.pt. Non-finite weights are refused: a checkpoint
    folder only ever holds a state worth going back to.
    """
    bad = [name for name, p in model.state_dict().items()
           if p.is_floating_point() and not torch.isfinite(p).all()]
    if bad:
        raise SystemExit(f"not saving {folder}: non-finite weights ({', '.join(bad[:3])}...); "
                         "the checkpoint already there is kept")
    # Three files must change together, and no file system renames three files at once.
    # So the whole folder is written under a temporary name and swapped in with two
    # renames; a crash between them leaves `.latest.old`, which resolve_checkpoint finds.
    folder = Path(folder)
    tmp, old = folder.with_name(f".{folder.name}.tmp"), folder.with_name(f".{folder.name}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write_folder(tmp, model, optimizer, scaler, step, gen, cfg, meta, extra, history)
    except BaseException:  # a full disk, Ctrl-C twice: no half-written folder stays behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def write_folder(tmp, model, optimizer, scaler, step, gen, cfg, meta, extra, history):
    """A checkpoint's three files into the folder tmp (save_checkpoint renames it)."""
    from safetensors.torch import save_file
    config = {"model": asdict(model.cfg), "train": asdict(cfg), "step": step,
              "data": {"dir": str(Path(cfg.data).resolve()), "codec": meta["codec"],
                       "demo": meta.get("demo", False),
                       "songs": {k: len(v["songs"]) for k, v in meta["splits"].items()}}, **extra}
    write_json(tmp / "config.json", config)
    # The weights of the plain module: a compiled model's keys carry an "_orig_mod." prefix.
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
              str(tmp / "model.safetensors"))
    # Everything a resumed run needs to continue bit for bit: the optimizer's moments,
    # the GradScaler's scale, and every random generator (dropout, data order).
    # Only tensors, numbers and strings: loadable with torch.load(weights_only=True).
    state = {"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "step": step,
             "rng_torch": torch.get_rng_state(), "rng_data": gen.get_state(),
             "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
             **(history or {})}
    torch.save(state, tmp / "state.pt")


# ----------------------------------------------------------------------------
# Phase 4: the Hugging Face Hub
# ----------------------------------------------------------------------------

def model_card(config, repo_id):
    """README.md for the Hub: YAML metadata (license, tags, data, metrics) and how to use it.

    The YAML block between the --- lines is what the Hub indexes: the license and tags
    make the model findable, and model-index puts the validation metrics on its page.
    Everything in the card comes from the checkpoint's own config.json, so the card
    cannot claim what the checkpoint does not hold.
    """
    m, codec = config["model"], config["data"]["codec"]
    metrics = {k: v for k, v in config.get("metrics", {}).items() if isinstance(v, (int, float))}
    dataset = ("synthetic demo corpus (data.py)" if config["data"].get("demo")
               else "user recordings (data.py)")
    name = repo_id.split("/")[-1]
    lines = [
        "---", "license: mit", "library_name: pytorch", "pipeline_tag: audio-to-audio",
        "tags: [audio, music, jazz, saxophone, encodec, music-generation]",
        "model-index:", f"  - name: {name}", "    results:",
        "      - task: {type: audio-to-audio}",
        f"        dataset: {{name: {dataset}, type: custom}}",
        "        metrics:",
        *[f"          - {{type: {k}, name: {k}, value: {v:.4f}}}" for k, v in metrics.items()],
        "---", "",
        f"# {name}", "",
        "An encoder-decoder transformer that hears a jazz backing track (as EnCodec tokens) "
        "and writes a saxophone solo, trained with the jazz-sax-solo project's train.py.", "",
        f"- architecture: {m['n_enc_layers']}+{m['n_dec_layers']} layers, d_model {m['d_model']}, "
        f"{m['n_heads']} heads, causal encoder: {m['causal_encoder']}, "
        f"lookahead: {m.get('lookahead', 0)} frames",
        f"- codec: {codec['name']} at {codec['bandwidth_kbps']} kbps: {codec['n_codebooks']} "
        f"codebooks of {codec['card']} codes, {codec['frame_rate']} frames per second"
        + (" (UNTRAINED codec: its decoder ignores the codes, so the audio carries "
           "nothing of the model; for testing the plumbing only)" if codec["untrained"] else ""),
        f"- training data: {dataset}; trained for {config['step']} steps", "",
        "## Metrics (validation split)", "", "| metric | value |", "|---|---|",
        *[f"| {k} | {v:.4f} |" for k, v in metrics.items()], "",
        "## Use", "", "```bash",
        "pip install -r requirements.txt   # from the jazz-sax-solo project",
        f"python generate.py --checkpoint {repo_id} --backing my_backing.wav", "```", "",
    ]
    return "\n".join(lines)


def push_to_hub(folder, repo_id, private=False, api=None):
    """Upload a checkpoint folder with its model card, as one commit. The token comes from
    HF_TOKEN or `hf auth login`, read by the hub client itself: this code never sees or prints it.

    Nothing is written before the upload has succeeded: the model card goes up from
    memory, and is saved into the folder (README.md) only afterwards.
    """
    from huggingface_hub import CommitOperationAdd, HfApi
    folder = resolve_checkpoint(folder)
    config = read_json(folder / "config.json",
                       f"a checkpoint folder: python train.py --push-only {folder}")
    card = model_card(config, repo_id)
    # state.pt (optimizer moments, RNG) is for resuming, not for users: not uploaded.
    files = {"config.json": folder / "config.json",
             "model.safetensors": folder / "model.safetensors",
             "README.md": card.encode()}
    codec_file = Path(config["data"]["dir"]) / "codec.safetensors"
    # its codebooks are needed to decode
    if config["data"]["codec"]["untrained"] and codec_file.exists():
        files["codec.safetensors"] = codec_file
    api = api or HfApi()  # tests pass a stand-in here, to stop at the client's boundary
    try:
        # exist_ok: re-uploads work
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        api.create_commit(repo_id=repo_id, repo_type="model",
                          operations=[CommitOperationAdd(path_in_repo=name, path_or_fileobj=(
                                          content if isinstance(content, bytes) else str(content)))
                                      for name, content in files.items()],
                          commit_message=f"Upload checkpoint at step {config['step']}")
    except Exception as err:  # offline, no token, no rights: the client raises many kinds
        why = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SystemExit(
            f"Could not upload {folder} to {repo_id}: {why}\nNothing was uploaded and "
            f"nothing was changed in {folder}. Ways out: (1) check the network; (2) "
            "log in with `hf auth login`, or set HF_TOKEN to a token with write "
            "access (huggingface.co/settings/tokens); (3) upload later without "
            f"training: python train.py --push-only {folder} --push-to-hub {repo_id}") from None
    atomic_write(folder / "README.md", lambda f: f.write(card), mode="w")
    print(f"uploaded {folder} to https://huggingface.co/{repo_id}")
