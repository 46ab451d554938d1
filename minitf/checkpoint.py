"""Run-folder artifacts: weights (safetensors), config + vocab (JSON), trainer state.

Every file is written atomically (``minitf.fileio``). The trainer state used for resume
is a single file holding model weights, optimizer state, RNG states and the step, so a
kill between two writes can never pair weights of one step with an optimizer of another.
Every load failure becomes one ``CheckpointError`` / ``CheckpointNotFoundError`` that
says what is wrong and what to do.
"""
import dataclasses
import io
import json
import os
import struct

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from minitf.artifacts import CONFIG, TRAINER_STATE, VOCAB, WEIGHTS, phase_weights
from minitf.config import ARCHITECTURE_FIELDS, ModelConfig, architecture, from_dict
from minitf.data import Vocab
from minitf.errors import CheckpointError, CheckpointNotFoundError, ConfigError
from minitf.fileio import atomic_write_bytes, atomic_write_json, to_json

__all__ = ["CONFIG", "VOCAB", "WEIGHTS", "TRAINER_STATE", "save_weights", "load_weights", "load", "unwrap"]

# Wrappers add these to every key: torch.compile's OptimizedModule and DistributedDataParallel.
WRAPPER_PREFIXES = ("_orig_mod.", "module.")


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain model inside ``torch.compile(model)`` and/or ``DistributedDataParallel(model)``."""
    while True:
        inner = getattr(model, "_orig_mod", None) or (
            model.module if isinstance(getattr(model, "module", None), torch.nn.Module) else None)
        if inner is None:
            return model
        model = inner


def strip_wrapper_prefixes(tensors: dict) -> dict:
    """Keys without the compile / DDP wrapper prefixes (files written by wrapped models load)."""
    out = {}
    for key, value in tensors.items():
        changed = True
        while changed:
            changed = False
            for prefix in WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        out[key] = value
    return out


def save_weights(model: torch.nn.Module, path) -> None:
    """Weights as safetensors, the config in its metadata (``config``, and ``architecture``: the
    fields that decide what the weights compute, checked by every load); a compiled / DDP model
    saves the plain model's keys, so the file loads into ``Transformer(cfg)``."""
    model = unwrap(model)
    # Clone so tied (shared) tensors serialize as separate entries, which safetensors requires.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    metadata = {"config": to_json(vars(model.cfg), sort_keys=True),
                "architecture": to_json(architecture(model.cfg), sort_keys=True)}
    if getattr(model, "own_architecture", False):  # a phase trained on purpose with another config than the run's
        metadata["own_architecture"] = "1"
    atomic_write_bytes(path, save_safetensors(tensors, metadata=metadata))


def saved_architecture(data: bytes) -> dict | None:
    """The architecture a safetensors file's metadata records (``architecture``, or for files
    written before it existed the same fields of ``config``); None for a file without either (an
    old or foreign file: loaded on names and shapes alone)."""
    try:
        (size,) = struct.unpack("<Q", data[:8])
        meta = json.loads(data[8:8 + size]).get("__metadata__") or {}
        if "architecture" in meta:
            return json.loads(meta["architecture"])
        if "config" in meta:
            config = json.loads(meta["config"])
            if "kind" in config:  # a meta-learner's config: every field is architecture
                return config
            return {k: config[k] for k in ARCHITECTURE_FIELDS if k in config}
    except (struct.error, ValueError, TypeError, AttributeError):
        return None
    return None


def check_architecture(model: torch.nn.Module, saved: dict | None, where) -> None:
    """Raise ``CheckpointError`` when weights saved under the architecture ``saved`` (from their
    metadata) would compute something else in ``model``: a field that differs (e.g.
    ``tie_embeddings``, ``positional``, ``n_heads``, ``attention``), named with both values. Fields
    the file does not record are not compared (old files load as before)."""
    mine = architecture(getattr(unwrap(model), "cfg", None))
    if not saved or not mine:
        return
    kinds = {str(d.get("kind", "Transformer")) for d in (saved, mine)}
    if len(kinds) > 1:
        theirs = saved.get("kind", "Transformer")
        raise CheckpointError(f"{where} holds the weights of a {theirs} model, not of a {mine.get('kind', 'Transformer')}"
                              "; load it with minitf.load(RUN_DIR, model=NAME), which builds the model it was saved from")
    diff = [k for k in mine if k in saved and saved[k] != mine[k]]
    if diff:
        said = ", ".join(f"{k}={saved[k]!r}" for k in diff[:3])
        have = ", ".join(f"{k}={mine[k]!r}" for k in diff[:3])
        raise CheckpointError(f"{where} does not match the model config: it was saved from a model with {said}, "
                              f"this model has {have} (the weights would compute something else); load it with the "
                              "config it was saved with (the config.json saved beside it), or retrain")


def load_weights(model: torch.nn.Module, path) -> None:
    """Load a weights file into ``model`` (plain, compiled or DDP-wrapped); raises
    ``CheckpointNotFoundError`` / ``CheckpointError`` (corrupt, or another config)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointNotFoundError(f"weights file {path} does not exist")
    try:
        with open(path, "rb") as f:
            data = f.read()
        tensors = load_safetensors(data)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"weights file {path} is corrupt or truncated ({e}); "
                              "resume from an earlier run or retrain") from None
    check_architecture(model, saved_architecture(data), f"weights file {path}")
    _load_state_dict(unwrap(model), strip_wrapper_prefixes(tensors), path)


def check_weights_file(path) -> None:
    """Raise ``CheckpointNotFoundError`` / ``CheckpointError`` unless ``path`` is a readable
    safetensors file (header and data), without building a model."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointNotFoundError(f"weights file {path} does not exist")
    try:
        with open(path, "rb") as f:
            load_safetensors(f.read())
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"weights file {path} is corrupt or truncated ({e})") from None


def _load_state_dict(model, tensors, where) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(v.shape)}"
             for k, v in expected.items() if k in tensors and tensors[k].shape != v.shape]
    if missing or unexpected or wrong:
        detail = "; ".join(filter(None, [
            f"missing {missing[:4]}" if missing else "",
            f"unexpected {unexpected[:4]}" if unexpected else "",
            f"shape mismatch {wrong[:3]}" if wrong else ""]))
        raise CheckpointError(f"checkpoint {where} does not match the model config ({detail}); "
                              "load it with the config.json saved beside it")
    model.load_state_dict(tensors)


def save_trainer_state(path, state: dict) -> None:
    """Write ``state`` (model weights, optimizer state, RNG states, step; any ``torch.save``-able
    dict) to ``path`` as one file, atomically, so resume never pairs parts of different steps."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_trainer_state(path) -> dict:
    """The dict written by ``save_trainer_state``, tensors on CPU (``torch.load`` with
    ``weights_only=True``: loading never runs code). Raises ``CheckpointNotFoundError`` if
    ``path`` does not exist, ``CheckpointError`` if it is corrupt or truncated."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointNotFoundError(f"no trainer state at {path}: the run has no checkpoint to resume from")
    try:
        # weights_only: a checkpoint must never be able to run code when loaded.
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated/corrupt pickles
        raise CheckpointError(f"trainer state {path} is corrupt or truncated ({type(e).__name__})") from None


def read_run_config(run_dir) -> dict:
    """The parsed ``config.json`` of a run folder (a dict with at least a ``"model"`` key).
    Raises ``CheckpointNotFoundError`` if the folder or its config.json is missing,
    ``CheckpointError`` if the JSON is corrupt or has no ``"model"`` key."""
    path = os.path.join(run_dir, CONFIG)
    if not os.path.isdir(run_dir):
        raise CheckpointNotFoundError(f"run folder {run_dir} does not exist")
    if not os.path.exists(path):
        raise CheckpointNotFoundError(f"{path} does not exist: {run_dir} is not a minitf run folder")
    try:
        with open(path, encoding="utf-8-sig") as f:  # an editor's byte-order mark is not corruption
            data = json.load(f)
        data["model"]  # noqa: B018 — presence check
        return data
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path} is corrupt ({type(e).__name__}: {e})") from None


def write_run_config(run_dir, data: dict) -> None:
    """Write ``data`` as ``run_dir/config.json``, atomically (the folder must exist)."""
    atomic_write_json(os.path.join(run_dir, CONFIG), data)


def model_names(run_dir) -> list[str]:
    """The names of the models a run folder holds, one per ``model-<name>.safetensors`` (the
    weights at the end of each phase), sorted."""
    if not os.path.isdir(run_dir):
        return []
    return sorted(n[len("model-"):-len(".safetensors")] for n in os.listdir(run_dir)
                  if n.startswith("model-") and n.endswith(".safetensors"))


# The experiments' ``main_model`` names when config.json began recording them as "default_model":
# runs made before say nothing, and these load their main model, not the last phase trained (e.g.
# ginc's control). Frozen history (later runs record their own), kept here rather than looked up in
# the experiment registry, which imports this module; tests/test_checkpoints.py checks it against
# the registry.
MAIN_MODELS_BEFORE_RECORDED = {
    "ginc": ("mixture",),
    "semantic": ("structured_phase2",),
    "metalearn": ("icl_mixture", "icl_pairwise", "icl_prototype", "icl_amortization", "icl_mixture", "icl_unknown"),
}


def default_model(run_dir, data: dict | None = None) -> str | None:
    """The name of the model ``minitf.load(run_dir)`` loads: the first of the experiment's
    ``main_model`` names (recorded in config.json as ``"default_model"``; for runs made before,
    the registered experiment's) whose weights the folder holds; None when the experiment names
    none (then ``model.safetensors``, the last phase trained, is the default)."""
    data = read_run_config(run_dir) if data is None else data
    names = data.get("default_model")
    if names is None:  # a run made before config.json recorded it
        names = list(MAIN_MODELS_BEFORE_RECORDED.get(data.get("experiment"), ()))
    if isinstance(names, str):
        names = [names]
    have = set(model_names(run_dir))
    return next((n for n in names if n in have), None)


def models(run_dir) -> dict:
    """``{"default": name or None, "names": [...]}``: the model ``minitf.load(run_dir)`` loads
    (None: ``model.safetensors``, the last phase trained) and every name ``minitf.load(run_dir,
    model=NAME)`` takes."""
    return {"default": default_model(run_dir), "names": model_names(run_dir)}


def load(path, phase: str | None = None, device=None, model: str | None = None):
    """``model, vocab = minitf.load(PATH)``: a trained model (eval mode, vocab attached) and its vocab.

    ``path`` is a run folder or a ``.safetensors`` file inside one (its config.json and
    vocab.json are read from the same folder). A run folder holds one model per phase
    (``model-<name>.safetensors``); ``model="control"`` loads the one named so (``phase=`` is the
    same argument under its older name), and a name it does not hold is a
    ``CheckpointNotFoundError`` listing the names it does. Without a name it loads the run's
    default model: the one its experiment names (ginc: ``mixture``, not the ``control``;
    semantic: ``structured_phase2``; metalearn: the transformer, ``icl_mixture`` when trained),
    else ``model.safetensors``, the last phase trained (headline: e.g. ``phase2_self``).
    ``minitf.checkpoint.models(run_dir)`` lists the default and every name; the loaded model's
    ``run_model`` attribute says which it is. A model that is not a Transformer (metalearn's
    matching / prototypical networks and CNP) is built from the config saved with its weights.
    ``device``: where to put the model (default CPU). Raises ``CheckpointNotFoundError`` /
    ``CheckpointError`` with the fix.
    """
    from minitf.model import Transformer

    if phase is not None and model is not None and phase != model:
        raise CheckpointError(f"pass the model's name once: model={model!r} or phase={phase!r}, not both")
    name = model if model is not None else phase
    path = os.fspath(path)
    if path.endswith(".safetensors") and not os.path.isdir(path):
        if name is not None:
            raise CheckpointError("pass either a .safetensors file or model=NAME, not both")
        run_dir, weights = os.path.dirname(path) or ".", path
        if not os.path.exists(weights):
            raise CheckpointNotFoundError(f"weights file {weights} does not exist")
        data = read_run_config(run_dir)
        base = os.path.basename(path)
        name = base[len("model-"):-len(".safetensors")] if base.startswith("model-") else None
    else:
        run_dir = path
        data = read_run_config(run_dir)
        have = model_names(run_dir)
        if name is None:
            name = default_model(run_dir, data)
        elif name not in have:
            raise CheckpointNotFoundError(f"{run_dir} has no model (phase) named {name!r}; phases saved: "
                                          f"{', '.join(have) or 'none'}; load one with minitf.load(run_dir, model=NAME)")
        weights = os.path.join(run_dir, phase_weights(name) if name else WEIGHTS)
    try:
        # a phase may train another architecture than the run's model on purpose (icl_gd's depth
        # sweep; marked own_architecture when saved): then its own saved config builds it. Any other
        # weights are built from config.json's model, and a mismatch is refused below.
        saved = _saved_config(weights)
        fields = {f.name for f in dataclasses.fields(ModelConfig)}
        cfg = from_dict(ModelConfig, {**data["model"], **{k: v for k, v in saved.items() if k in fields}}).validate()
    except ConfigError as e:
        raise CheckpointError(f"{os.path.join(run_dir, CONFIG)} holds an invalid model config: {e}") from None
    vocab = Vocab.load(os.path.join(run_dir, VOCAB))
    other = _saved_meta_learner(weights)
    if other is not None:  # a meta-learner (metalearn's matching / prototypical networks, CNP)
        net = other
        load_weights(net, weights)
    else:
        net = Transformer(cfg)
        load_weights(net, weights)
        if len(vocab) > cfg.vocab_size:
            raise CheckpointError(f"vocab.json has {len(vocab)} tokens but the model only {cfg.vocab_size}")
    net.vocab = vocab
    net.run_model = name or "model"
    if device is not None:
        net = net.to(device)
    return net.eval(), vocab


def _saved_config(weights) -> dict:
    """The model config saved in ``weights``' metadata when the phase was trained on purpose with
    its own architecture (``own_architecture``), else {}."""
    try:
        with open(weights, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            meta = json.loads(f.read(min(size, 1 << 24))).get("__metadata__") or {}
        config = json.loads(meta.get("config", "{}")) if meta.get("own_architecture") == "1" else {}
    except (OSError, struct.error, ValueError, TypeError, AttributeError):
        return {}
    return config if isinstance(config, dict) and "kind" not in config else {}


def _saved_meta_learner(weights):
    """An untrained meta-learner built from the config in ``weights``' metadata when the file holds
    one (its config has a ``kind``), else None."""
    if not os.path.exists(weights):
        return None
    with open(weights, "rb") as f:
        head = f.read(8)
        try:
            (size,) = struct.unpack("<Q", head)
            meta = json.loads(f.read(min(size, 1 << 24))).get("__metadata__") or {}
            config = json.loads(meta.get("config", "{}"))
        except (struct.error, ValueError, TypeError, AttributeError):
            return None
    if not isinstance(config, dict) or "kind" not in config:
        return None
    from minitf import meta_learners

    try:
        return meta_learners.build(config["kind"], config["d"], config.get("hidden", 64), config.get("d_embed", 32))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"weights file {weights} holds a meta-learner with an invalid config ({e})") from None
