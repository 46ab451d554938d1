"""Configuration: ModelConfig and TrainConfig dataclasses.

Every field is a plain name that can be overridden from the command line with
``--set key=value``; keys are unique across the model, train and task configs so a
user never has to say which config a key belongs to. Validation collects one clear
message per problem and raises them together before any work starts.
"""
import dataclasses
import math
import typing
from dataclasses import dataclass

from minitf.attention import backend_problem
from minitf.errors import ConfigError

POSITIONAL_CHOICES = ("learned", "rope", "none")
ATTN_IMPL_CHOICES = ("auto", "sdpa", "naive", "triton")
DEVICE_CHOICES = ("cpu", "cuda")
PRECISION_CHOICES = ("fp32", "bf16")
ATTENTION_CHOICES = ("softmax", "linear")


@dataclass
class ModelConfig:
    """The transformer's architecture. Every field is a ``--set key=value`` key; docs/config.md
    lists each with its type, default and meaning (generated from the field comments below)."""
    n_layers: int = 2  # transformer blocks
    d_model: int = 64  # residual stream width
    n_heads: int = 4  # attention heads per block
    d_head: int = 16  # width of each head; n_heads * d_head must equal d_model
    d_mlp: int = 0  # 0 = attention-only (the setting in which induction heads are cleanest)
    vocab_size: int = 64  # token ids 0..vocab_size-1 (experiments set it from the task's vocab)
    n_ctx: int = 128  # longest input sequence (learned positions have one embedding per position)
    positional: str = "learned"  # "learned" absolute embeddings, "rope" (rotary, in q and k) or "none"
    layer_norm: bool = True  # pre-LN blocks and a final LayerNorm; False = identities (same hooks)
    tie_embeddings: bool = False  # unembedding = embedding matrix (transposed)
    # Init scale decides whether (and when) induction heads form; measure, don't assume.
    init_std: float = 0.02
    attn_impl: str = "auto"  # attention backend: auto (triton on CUDA where it fits, else sdpa), sdpa, naive, triton
    # Short causal channel-mixing convolution before attention in each block ("smeared keys",
    # Olsson et al. 2022); 0 = off. It lets tiny models bind facts in context much faster.
    conv_kernel: int = 0
    # Vector inputs (in-context regression, Garg et al. 2022): 0 = a token model (embedding in,
    # logits out); d > 0 = inputs (batch, seq, d) floats through a linear read-in to d_model and
    # a scalar linear read-out (output (batch, seq, 1)). Same Block stack and hooks either way.
    d_input: int = 0
    # "softmax" attention, or "linear": softmax-free, unnormalised linear self-attention
    # (von Oswald et al. 2023), pattern = causal_mask ⊙ (q kᵀ / sqrt(d_head)); see minitf.attention.
    attention: str = "softmax"

    def validate(self) -> "ModelConfig":
        """Check every field; returns ``self`` if all are valid, else raises one ``ConfigError``
        listing every problem (with a valid fix for a d_model / n_heads * d_head mismatch)."""
        problems = value_problems(self)
        for name in ("n_layers", "d_model", "n_heads", "d_head", "vocab_size", "n_ctx"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1 (got {getattr(self, name)})")
        if self.d_model != self.n_heads * self.d_head and min(self.d_model, self.n_heads, self.d_head) >= 1:
            problems.append(f"d_model must equal n_heads * d_head (got {self.d_model} vs "
                            f"{self.n_heads}*{self.d_head}); {_head_fix(self.d_model, self.n_heads, self.d_head)}")
        if self.d_mlp < 0:
            problems.append(f"d_mlp must be >= 0, 0 meaning attention-only (got {self.d_mlp})")
        if self.positional not in POSITIONAL_CHOICES:
            problems.append(f"positional must be one of {POSITIONAL_CHOICES} (got {self.positional!r})")
        if self.positional == "rope" and self.d_head % 2:
            problems.append(f"positional='rope' needs an even d_head (got {self.d_head})")
        if self.attn_impl not in ATTN_IMPL_CHOICES:
            problems.append(f"attn_impl must be one of {ATTN_IMPL_CHOICES} (got {self.attn_impl!r})")
        elif self.d_head >= 1 and (why := backend_problem(self.attn_impl, self.d_head)):
            problems.append(why)
        if not self.init_std > 0:
            problems.append(f"init_std must be > 0 (got {self.init_std})")
        if self.conv_kernel < 0:
            problems.append(f"conv_kernel must be >= 0, 0 meaning off (got {self.conv_kernel})")
        if self.d_input < 0:
            problems.append(f"d_input must be >= 0, 0 meaning a token model (got {self.d_input})")
        if self.d_input > 0 and self.tie_embeddings:
            problems.append("tie_embeddings needs a token model: a vector model (d_input > 0) has a linear "
                            "read-in and a scalar read-out, no embedding to tie; set tie_embeddings=false")
        if self.attention not in ATTENTION_CHOICES:
            problems.append(f"attention must be one of {ATTENTION_CHOICES} (got {self.attention!r}); "
                            "'linear' is softmax-free linear self-attention")
        _raise(problems, "ModelConfig")
        return self


# The ModelConfig fields that decide what a model computes from its weights (the rest — init_std,
# attn_impl, n_ctx — change only the initialisation, the backend or the longest input). Saved with
# every weights file and trainer state; a load refuses weights saved under other values.
ARCHITECTURE_FIELDS = ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "vocab_size", "positional",
                       "layer_norm", "tie_embeddings", "conv_kernel", "d_input", "attention")


def architecture(cfg) -> dict:
    """``{field: value}`` of what a model with config ``cfg`` computes: the ``ARCHITECTURE_FIELDS``
    of a ModelConfig, every field of another config dataclass (e.g. a meta-learner's), ``{}``
    for None."""
    if cfg is None:
        return {}
    if isinstance(cfg, ModelConfig):
        return {name: getattr(cfg, name) for name in ARCHITECTURE_FIELDS}
    if dataclasses.is_dataclass(cfg):
        return dataclasses.asdict(cfg)
    return dict(vars(cfg))


@dataclass
class TrainConfig:
    """The optimisation schedule (steps, batch, AdamW, evaluation/checkpoint cadence, device).
    Every field is a ``--set key=value`` key; docs/config.md lists each with its type, default
    and meaning (generated from the field comments below)."""
    steps: int = 600  # optimizer steps of the (first) training phase
    batch_size: int = 32  # sequences per step
    lr: float = 3e-3  # peak AdamW learning rate (after warmup; cosine decay to 10%)
    warmup: int = 50  # steps of linear warmup
    weight_decay: float = 0.01  # AdamW weight decay, on matrices only
    grad_clip: float = 1.0  # 0 = no clipping
    seed: int = 0  # seeds the initial weights, the data streams and the evaluation sets
    eval_every: int = 100  # 0 = only at the end
    checkpoint_every: int = 200  # 0 = only at the end
    log_every: int = 10  # steps between loss rows in metrics.jsonl
    device: str = "cpu"  # "cpu" or "cuda" (--device)
    skip_nonfinite: int = 0  # steps with NaN/inf loss or gradients to skip (no update) before stopping
    # fp32, or bf16: the training forward pass under bf16 autocast (matmuls in bf16 on the CPU's
    # matrix units or the GPU); weights, optimizer state, the loss's reduction and evaluation stay fp32
    precision: str = "fp32"

    def validate(self) -> "TrainConfig":
        """Check every field; returns ``self`` if all are valid, else raises one ``ConfigError``
        listing every problem."""
        problems = value_problems(self)
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1 (got {getattr(self, name)})")
        for name in ("warmup", "eval_every", "checkpoint_every", "weight_decay", "grad_clip", "skip_nonfinite"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0 (got {getattr(self, name)})")
        if self.log_every < 1:
            problems.append(f"log_every must be >= 1 (got {self.log_every})")
        if not self.lr > 0:
            problems.append(f"lr must be > 0 (got {self.lr})")
        if self.device not in DEVICE_CHOICES:
            problems.append(f"device must be one of {DEVICE_CHOICES} (got {self.device!r})")
        if self.precision not in PRECISION_CHOICES:
            problems.append(f"precision must be one of {PRECISION_CHOICES} (got {self.precision!r})")
        _raise(problems, "TrainConfig")
        return self


# What the consumers of numeric settings accept, in one place (``value_problems``, which every
# config's validation runs: model, train, task and experiment settings alike):
# - a float is finite: every float setting feeds arithmetic (lr, init_std, fractions, noise) where
#   NaN / inf fails later, mid-run, or trains silently on NaN;
# - an int fits torch's and numpy's int64;
# - a key in ``LIMITS`` lies in its range: the seed feeds ``np.random.default_rng`` (no negative
#   seeds) and ``torch.manual_seed`` (at most 2**64 - 1); 0 <= seed < 2**32 suits both.
INT64 = (-(2 ** 63), 2 ** 63 - 1)
LIMITS = {"seed": (0, 2 ** 32 - 1, "numpy's and torch's seed range")}


def value_problems(cfg) -> list[str]:
    """One line per field of the config dataclass ``cfg`` whose value its consumer cannot take:
    a non-finite float, an int outside int64, a ``LIMITS`` key outside its range."""
    problems = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, bool):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{f.name} must be a finite number (got {value})")
        elif isinstance(value, int):
            lo, hi, why = LIMITS.get(f.name, (*INT64, "a 64-bit integer"))
            if not lo <= value <= hi:
                problems.append(f"{f.name} must be in {lo}..{hi}, {why} (got {value})")
    return problems


def seed_range(first: int | None, n: int, flag: str = "--seeds") -> list[int]:
    """Seeds ``first .. first + n - 1`` (``first`` None: 0), each checked against ``LIMITS["seed"]``
    before the list is built (``--seeds 10**12`` must not build a trillion-entry list first)."""
    first = 0 if first is None else first
    lo, hi, why = LIMITS["seed"]
    if n < 1 or first < lo or first + n - 1 > hi:
        raise ConfigError(f"{flag} {n} from seed {first} needs seeds {first}..{first + n - 1}; each must be in "
                          f"{lo}..{hi}, {why}")
    return list(range(first, first + n))


def _head_fix(d_model: int, n_heads: int, d_head: int) -> str:
    """A suggested fix that is itself valid: n_heads * d_head == d_model afterwards."""
    fixes = []
    if d_model % n_heads == 0:
        fixes.append(f"set d_head={d_model // n_heads}")
    if d_model % d_head == 0:
        fixes.append(f"set n_heads={d_model // d_head}")
    fixes.append(f"set d_model={n_heads * d_head}")
    return " or ".join(fixes)


def _raise(problems, what):
    nonfinite = {p.split()[0] for p in problems if "must be a finite number" in p}  # say it once per field
    problems = [p for p in problems if "must be a finite number" in p or p.split()[0] not in nonfinite]
    if len(problems) == 1:
        raise ConfigError(f"invalid {what}: {problems[0]}")
    if problems:
        raise ConfigError(f"invalid {what}: " + "; ".join(problems))


def to_dict(cfg) -> dict:
    """The config dataclass as a plain (JSON-serialisable) dict, ``{field: value}``."""
    return dataclasses.asdict(cfg)


def from_dict(cls, data: dict):
    """Build a config from a dict, refusing unknown keys (a typo must not pass silently)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} keys {unknown}; valid keys: {sorted(names)}")
    hints = typing.get_type_hints(cls)
    values = {k: _coerce(k, v, hints[k]) for k, v in data.items()}
    return cls(**values)


def type_name(typ) -> str:
    """A field type as docs and errors write it: ``int``, ``str``, ``tuple[int, ...]``."""
    if typing.get_origin(typ) is tuple:
        return f"tuple[{typing.get_args(typ)[0].__name__}, ...]"
    return typ.__name__


def check_list(key: str, values: tuple, *, allowed: tuple | None = None, at_least: int | None = None,
               nonempty: bool = True) -> tuple:
    """Returns ``values`` (a ``tuple[T, ...]`` field); raises ``ValueError`` naming ``key`` if it is
    empty (with ``nonempty``), repeats an item, has an item outside ``allowed`` or below ``at_least``."""
    shown = ",".join(map(str, values))
    if nonempty and not values:
        raise ValueError(f"{key} needs at least one value (got {shown!r})")
    if len(set(values)) != len(values):
        raise ValueError(f"{key} needs distinct values (got {shown!r})")
    if allowed is not None and any(v not in allowed for v in values):
        raise ValueError(f"{key} must be distinct comma-separated names from {', '.join(allowed)} (got {shown!r})")
    if at_least is not None and any(v < at_least for v in values):
        raise ValueError(f"{key} must all be >= {at_least} (got {shown!r})")
    return values


def _coerce_list(key, value, typ):
    """A ``tuple[T, ...]`` field from a JSON list or a command-line comma list ("2,3,5"; blanks
    dropped, so "" is the empty tuple); each item coerced to ``T``."""
    item = typing.get_args(typ)[0]
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{key} must be a comma list of {item.__name__} like "
                          f"{'1,2,3' if item is int else 'a,b'} (got {value!r})")
    try:
        return tuple(_coerce(key, v, item) for v in value)
    except ConfigError:
        raise ConfigError(f"{key} must be a comma list of {item.__name__} (got {value!r})") from None


def _coerce(key, value, typ):
    """Check/convert a value (a JSON value or a command-line string) to a field's type."""
    if typing.get_origin(typ) is tuple:
        return _coerce_list(key, value, typ)
    if isinstance(value, str) and typ is not str:
        text = value.strip()
        try:
            if typ is bool:
                if text.lower() in ("true", "1", "yes"):
                    return True
                if text.lower() in ("false", "0", "no"):
                    return False
                raise ValueError
            if typ is int:
                return int(text)
            if typ is float:
                return float(text)
        except ValueError:
            raise ConfigError(f"{key} must be of type {typ.__name__} (got {value!r})") from None
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ is int and isinstance(value, bool) or not isinstance(value, typ):
        raise ConfigError(f"{key} must be of type {typ.__name__} (got {value!r})")
    return value


def apply_overrides(configs: list, overrides: list[str]) -> list:
    """Apply ``key=value`` strings to whichever of ``configs`` owns ``key``; returns new configs."""
    owners = {}
    for i, cfg in enumerate(configs):
        for f in dataclasses.fields(cfg):
            if f.name in owners:  # keys must be unique so `--set key=v` is unambiguous
                raise ConfigError(f"config key {f.name!r} is defined twice")
            owners[f.name] = i
    updates = [dict() for _ in configs]
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value (got {item!r})")
        key, value = item.split("=", 1)
        key = key.strip()
        if key not in owners:
            raise ConfigError(f"unknown --set key {key!r}; valid keys: {', '.join(sorted(owners))}")
        cfg = configs[owners[key]]
        typ = typing.get_type_hints(type(cfg))[key]
        updates[owners[key]][key] = _coerce(key, value, typ)
    return [dataclasses.replace(cfg, **upd) for cfg, upd in zip(configs, updates)]

