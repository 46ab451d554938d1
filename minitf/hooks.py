"""Named hook points, TransformerLens style.

Every interesting activation in the model passes through a ``HookPoint`` (an identity
module). A hook function ``fn(activation, hook) -> activation | None`` may read the
activation or return a replacement — that is how caching, ablation and patching work
without touching the model's code.
"""
import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

HookFn = Callable[[torch.Tensor, "HookPoint"], torch.Tensor | None]
NameFilter = str | Callable[[str], bool] | list[str] | None


class HookPoint(nn.Module):
    """Identity module that exposes an activation under a stable dotted name."""

    def __init__(self):
        super().__init__()
        self.name = ""  # filled in by name_hook_points() once the module tree exists

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @property
    def active(self) -> bool:
        """True while some hook is attached (e.g. attention then materializes its pattern)."""
        return bool(self._forward_hooks)


def name_hook_points(model: nn.Module) -> None:
    for name, module in model.named_modules():
        if isinstance(module, HookPoint):
            module.name = name


def hook_points(model: nn.Module) -> dict[str, HookPoint]:
    return {m.name: m for m in model.modules() if isinstance(m, HookPoint)}


def _matcher(names: NameFilter) -> Callable[[str], bool]:
    if names is None:
        return lambda name: True
    if isinstance(names, str):
        return lambda name: name == names
    if callable(names):
        return names
    wanted = set(names)
    return lambda name: name in wanted


@contextlib.contextmanager
def hooks(model: nn.Module, fwd_hooks: list[tuple[NameFilter, HookFn]]) -> Iterator[None]:
    """Attach ``(name or filter, fn)`` pairs for the duration of the block.

    An exact name that matches no hook point is an error (a typo must not silently
    do nothing); a filter function may match zero or more.
    """
    points = hook_points(model)
    handles = []
    try:
        for names, fn in fwd_hooks:
            match = _matcher(names)
            selected = [p for n, p in points.items() if match(n)]
            if not selected and not callable(names):
                raise KeyError(f"no hook point named {names!r}; available: {sorted(points)}")
            for point in selected:
                handles.append(point.register_forward_hook(_wrap(fn)))
        yield
    finally:
        for h in handles:
            h.remove()


def _wrap(fn: HookFn):
    def forward_hook(module, inputs, output):
        return fn(output, module)

    return forward_hook


class ActivationCache(dict):
    """Activations by hook name (dict-like), with a TL-style ``cache["pattern", 0]`` shortcut."""

    _SHORT = {
        "pattern": "attn.hook_pattern", "q": "attn.hook_q", "k": "attn.hook_k",
        "v": "attn.hook_v", "z": "attn.hook_z", "attn_out": "hook_attn_out",
        "resid_pre": "hook_resid_pre", "resid_post": "hook_resid_post",
        "conv_out": "hook_conv_out", "post": "mlp.hook_post",
    }

    def __getitem__(self, key):
        if isinstance(key, tuple):
            short, layer = key
            key = f"blocks.{layer}.{self._SHORT.get(short, short)}"
        return super().__getitem__(key)


def run_with_cache(model: nn.Module, tokens: torch.Tensor, names_filter: NameFilter = None,
                   detach: bool = True):
    """Run the model and return ``(logits, ActivationCache)`` of the hook points selected."""
    cache = ActivationCache()

    def save(act, hook):
        cache[hook.name] = act.detach() if detach else act

    match = _matcher(names_filter)
    with hooks(model, [(lambda name: match(name), save)]):
        logits = model(tokens)
    return logits, cache
