"""Run-folder artifacts: weights (safetensors), config + vocab (JSON), trainer state.

Every file is written atomically (``minitf.fileio``). The trainer state used for resume
is a single file holding model weights, optimizer state, RNG states and the step, so a
kill between two writes can never pair weights of one step with an optimizer of another.
Every load failure becomes one ``CheckpointError`` / ``CheckpointNotFoundError`` that
says what is wrong and what to do.
"""
import io
import json
import os

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from minitf.artifacts import CONFIG, TRAINER_STATE, VOCAB, WEIGHTS, phase_weights
from minitf.config import ModelConfig, from_dict
from minitf.data import Vocab
from minitf.errors import CheckpointError, CheckpointNotFoundError, ConfigError
from minitf.fileio import atomic_write_bytes, atomic_write_json

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
    """Weights as safetensors, the config in its metadata; a compiled / DDP model saves the
    plain model's keys, so the file loads into ``Transformer(cfg)``."""
    model = unwrap(model)
    # Clone so tied (shared) tensors serialize as separate entries, which safetensors requires.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    metadata = {"config": json.dumps(vars(model.cfg), sort_keys=True)}
    atomic_write_bytes(path, save_safetensors(tensors, metadata=metadata))


def load_weights(model: torch.nn.Module, path) -> None:
    """Load a weights file into ``model`` (plain, compiled or DDP-wrapped); raises
    ``CheckpointNotFoundError`` / ``CheckpointError`` (corrupt, or another config)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointNotFoundError(f"weights file {path} does not exist")
    try:
        with open(path, "rb") as f:
            tensors = load_safetensors(f.read())
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"weights file {path} is corrupt or truncated ({e}); "
                              "resume from an earlier run or retrain") from None
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
        with open(path) as f:
            data = json.load(f)
        data["model"]  # noqa: B018 — presence check
        return data
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path} is corrupt ({type(e).__name__}: {e})") from None


def write_run_config(run_dir, data: dict) -> None:
    """Write ``data`` as ``run_dir/config.json``, atomically (the folder must exist)."""
    atomic_write_json(os.path.join(run_dir, CONFIG), data)


def load(path, phase: str | None = None, device=None):
    """``model, vocab = minitf.load(PATH)``: a trained model (eval mode, vocab attached) and its vocab.

    ``path`` is a run folder or a ``.safetensors`` file inside one (its config.json and
    vocab.json are read from the same folder). A run folder loads ``model.safetensors``, the
    weights at the end of the run — for a multi-phase run (headline, semantic) that is the
    last phase trained (e.g. ``phase2_self``); ``phase="phase1"`` loads
    ``model-phase1.safetensors`` instead. ``device``: where to put the model (default CPU).
    Raises ``CheckpointNotFoundError`` / ``CheckpointError`` with the fix.
    """
    from minitf.model import Transformer

    path = os.fspath(path)
    if path.endswith(".safetensors") and not os.path.isdir(path):
        if phase is not None:
            raise CheckpointError("pass either a .safetensors file or phase=..., not both")
        run_dir, weights = os.path.dirname(path) or ".", path
        if not os.path.exists(weights):
            raise CheckpointNotFoundError(f"weights file {weights} does not exist")
    else:
        run_dir = path
        weights = os.path.join(run_dir, phase_weights(phase) if phase else WEIGHTS)
    data = read_run_config(run_dir)
    if phase is not None and not os.path.exists(weights):
        have = sorted(n[len("model-"):-len(".safetensors")] for n in os.listdir(run_dir)
                      if n.startswith("model-") and n.endswith(".safetensors"))
        raise CheckpointNotFoundError(f"{run_dir} has no weights for phase {phase!r}; phases saved: "
                                      f"{', '.join(have) or 'none'}")
    try:
        cfg = from_dict(ModelConfig, data["model"]).validate()
    except ConfigError as e:
        raise CheckpointError(f"{os.path.join(run_dir, CONFIG)} holds an invalid model config: {e}") from None
    model = Transformer(cfg)
    load_weights(model, weights)
    vocab = Vocab.load(os.path.join(run_dir, VOCAB))
    if len(vocab) > cfg.vocab_size:
        raise CheckpointError(f"vocab.json has {len(vocab)} tokens but the model only {cfg.vocab_size}")
    model.vocab = vocab
    if device is not None:
        model = model.to(device)
    return model.eval(), vocab
