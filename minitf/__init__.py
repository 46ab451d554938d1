"""minitf: a minimal decoder-only transformer toolkit for in-context vs in-weights studies."""
from minitf.checkpoint import load, models
from minitf.config import ModelConfig, TrainConfig
from minitf.data import Vocab
from minitf.hooks import ActivationCache, HookPoint, hooks, run_with_cache
from minitf.model import Transformer

__all__ = ["load", "models", "ModelConfig", "TrainConfig", "Vocab", "Transformer", "HookPoint", "hooks",
           "run_with_cache", "ActivationCache"]
