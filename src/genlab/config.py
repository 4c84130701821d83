"""Configs: dataclasses, loaded from YAML, overridable as ``key=value``, validated with messages that
name the key and the allowed values. The resolved config is saved in every run directory.

A config has five sections::

    name: demo
    data:    {name: moons, n: 50000, ...}                # DataConfig
    model:   {family: flow-matching, hidden: 256, ...}   # the family's own Config dataclass
    trainer: {steps: 10000, batch_size: 256, ...}        # TrainerConfig
    eval:    {n: 2000, seeds: 3, ...}                    # EvalConfig
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from genlab.errors import ConfigError, UnknownNameError
from genlab.registry import MODELS


@dataclass
class DataConfig:
    name: str | None = "moons"  # a registered dataset (see `genlab list`), or null with `path`
    path: str | None = None  # a file or folder: .npy/.npz/.csv points, images, .txt
    n: int = 50_000  # points drawn from a synthetic dataset
    val_fraction: float = 0.1  # held out for validation: checkpoint selection, early stopping
    test_fraction: float = 0.1  # held out for test: what `genlab eval` reports (not for a known
    # law, whose evaluation draws fresh samples); training and selection never see it
    seed: int = 0  # seeds the draw and the train/validation/test split
    options: dict = field(default_factory=dict)  # extra options for the loader
    pairs: str | None = None  # an .npz of (x, noise) pairs from `genlab reflow`: the training
    # examples, each with its own noise (model.coupling=pairs); the dataset's true law is kept


@dataclass
class TrainerConfig:
    steps: int = 10_000
    batch_size: int = 256  # the global batch (split across ranks under DDP)
    lr: float = 2e-3  # peak learning rate of AdamW
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup: int = 200  # linear warmup steps
    schedule: Literal["cosine", "constant"] = "cosine"  # after warmup
    min_lr_ratio: float = 0.0  # the cosine schedule ends at lr * min_lr_ratio
    grad_clip: float = 0.0  # max global gradient norm (0: off; costs one pass over the gradients)
    ema_decay: float = 0.999  # EMA of weights used for sampling (0 disables)
    ema_every: int = (
        1  # update the EMA every N steps (with decay**N; as ema-pytorch's update_every)
    )
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # autocast dtype (fp16 only on CUDA)
    hflip: bool = False  # images: mirror each training example left-right with probability 1/2
    compile: bool = False  # torch.compile each player's networks (stderr says so if unavailable)
    # convolution weights and image batches in NHWC memory order (faster convolutions on GPUs;
    # the same numbers up to rounding, checkpoints unchanged)
    channels_last: bool = False
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    threads: int = 0  # torch intra-op threads on CPU (0: torch's default)
    log_every: int = 100
    eval_every: int = 0  # periodic evaluation + sample plot (0: only at the end)
    val_every: int = 0  # validation loss every N steps, keeping the best checkpoint (0: off)
    val_batches: int = 0  # validation batches per check (0: the whole validation split)
    early_stopping: int = 0  # stop after this many validations without improvement (0: off)
    max_skipped: int = 100  # act after this many non-finite steps in a row (0: never)
    on_divergence: Literal["stop", "rollback"] = "stop"  # stop, or reload the last checkpoint
    rollback_lr_factor: float = 0.5  # ... and multiply the learning rate by this (at most 3 times)
    checkpoint_every: int = 2_000
    keep_last: int = 3  # checkpoints kept (older ones are removed)
    progress: bool = True  # progress bar
    progress_every: float = 30.0  # seconds between progress lines when output is not a terminal
    tensorboard: bool = True  # TensorBoard events when the package is installed
    init_from: str | None = None  # a run directory whose (EMA) weights start this run (reflow)


@dataclass
class EvalConfig:
    n: int = 2_000  # samples per seed (at most half the real examples when they are the reference)
    seeds: int = 3  # sampling seeds (metrics are averaged; their spread is reported)
    options: dict = field(default_factory=dict)  # sampling options of the family (`genlab sample
    # --option`): sampler, steps, schedule, guidance, temperature, ...; unset: the model's defaults
    metrics: list[str] | None = None  # None: every registered metric for the data's kind
    floor: bool = True  # also score real data against the reference (what a perfect model would)
    nll: bool = True  # also the held-out likelihood where the model has one
    nll_n: int = 2_000  # held-out examples (text: characters) for the likelihood
    nll_options: dict = field(default_factory=dict)  # the family's likelihood options (a VAE's
    # iwae_k); `genlab eval --option` routes them here
    features: str | None = None  # images: a feature-network folder (default: genlab's own, trained
    # on the data and cached by its content hash)
    split: Literal["test", "val"] = "test"  # held-out part to report on: test (never seen by
    # training or selection); val (it chose the checkpoint) for diagnosis only
    scorer: str | None = None  # text: an autoregressive run on the same text that scores `n`
    # samples (generative perplexity, with their unigram entropy); unset: text samples are not drawn


@dataclass
class Config:
    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    model: Any = None  # the family's Config dataclass
    family: str = "flow-matching"
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        if self.model is None:
            self.model = MODELS.get(self.family).Config()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "data": _asdict(self.data),
            "model": {"family": self.family, **_asdict(self.model)},
            "trainer": _asdict(self.trainer),
            "eval": _asdict(self.eval),
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_yaml())


def _asdict(obj: Any) -> dict[str, Any]:
    d = dataclasses.asdict(obj)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


# --- building from dicts, files and overrides ------------------------------------------------------
def from_dict(raw: dict[str, Any]) -> Config:
    """Validate a nested dict (as read from YAML) into a :class:`Config`."""
    if not isinstance(raw, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {type(raw).__name__}")
    sections = {"name", "data", "model", "trainer", "eval"}
    _check_keys(raw, sections, "")
    model_raw = raw.get("model") or {}
    if not isinstance(model_raw, dict):
        raise ConfigError(f"config section 'model' must be a mapping, got {model_raw!r}")
    model_raw = dict(model_raw)
    family = model_raw.pop("family", "flow-matching")
    try:
        model_cls = MODELS.get(str(family)).Config
    except UnknownNameError as e:
        raise ConfigError(f"model.family: {e}") from None
    name = raw.get("name", "run")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"name must be a non-empty string, got {name!r}")
    return Config(
        name=name,
        data=_build(DataConfig, raw.get("data") or {}, "data"),
        model=_build(model_cls, model_raw, "model"),
        family=str(family),
        trainer=_build(TrainerConfig, raw.get("trainer") or {}, "trainer"),
        eval=_build(EvalConfig, _legacy_eval(raw.get("eval") or {}), "eval"),
    )


_OLD_DEFAULT_METRICS = ["w2", "sliced_w2", "mmd", "energy"]


def _legacy_eval(raw: Any) -> Any:
    """Run directories written before sampling options were unified hold ``eval.sampler``,
    ``eval.steps`` and ``eval.schedule``: they are sampling options now. They also hold the old
    default metric list (point metrics), which is now ``null``: the defaults for the data's kind."""
    if not isinstance(raw, dict):
        return raw
    if raw.get("metrics") == _OLD_DEFAULT_METRICS and "options" not in raw:
        raw = {**raw, "metrics": None}
    if not any(k in raw for k in ("sampler", "steps", "schedule")):
        return raw
    raw = dict(raw)
    options = dict(raw.get("options") or {})
    for key in ("sampler", "steps", "schedule"):
        value = raw.pop(key, None)
        if value is not None:
            options.setdefault(key, value)
    raw["options"] = options
    return raw


def load(
    path: str | Path | None = None, overrides: list[str] | None = None, *, saved: bool = False
) -> Config:
    """Read a YAML config (or start from defaults) and apply ``key=value`` overrides.

    ``saved``: ``path`` is a run's own ``config.yaml``. One written before genlab had a test split
    (no ``data.test_fraction``) is read with ``test_fraction: 0``, so the run keeps the split it
    was trained on (its evaluation then needs ``--split val`` or ``--data``)."""
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}" + _close_files(p))
        try:
            raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError as e:
            raise ConfigError(f"{p} is not UTF-8 text: {e}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{p} is not valid YAML: {' '.join(str(e).split())}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{p} must hold a mapping of sections, got {type(raw).__name__}")
        if saved and isinstance(raw.get("data"), dict):
            raw["data"].setdefault("test_fraction", 0.0)
    for item in overrides or []:
        apply_override(raw, item)
    return from_dict(raw)


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set ``a.b=value`` in a nested dict; the value is parsed as YAML (``128``, ``true``, ``null``)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key=value (e.g. trainer.steps=3000)")
    key, _, text = item.partition("=")
    key = key.strip()
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    parts = key.split(".")
    if not all(parts):
        raise ConfigError(f"override key {key!r} is malformed")
    node = raw
    for part in parts[:-1]:
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"cannot set {key}: {part!r} is not a section")
        node = nxt
    node[parts[-1]] = value


def _check_keys(raw: dict[str, Any], allowed: set[str], prefix: str) -> None:
    for k in raw:
        if k not in allowed:
            close = difflib.get_close_matches(str(k), sorted(allowed), n=3, cutoff=0.5)
            hint = (
                f"; did you mean {' or '.join(repr(prefix + c) for c in close)}?" if close else ""
            )
            raise ConfigError(
                f"unknown config key {prefix + str(k)!r}{hint} (allowed: {', '.join(sorted(allowed))})"
            )


def _build(cls: type, raw: Any, section: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"config section {section!r} must be a mapping, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _check_keys(raw, set(fields), section + ".")
    hints = typing.get_type_hints(cls)
    values = {k: _coerce(v, hints[k], f"{section}.{k}") for k, v in raw.items()}
    obj = cls(**values)
    _check_ranges(obj, section)
    return obj


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert where it is lossless."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin is Literal:
        if value not in args:
            close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"{key} must be one of {', '.join(repr(a) for a in args)}, got {value!r}{hint}"
            )
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if tp is int:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (isinstance(value, float) and not math.isfinite(value))  # int(nan) raises
            or value != int(value)
        ):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{key} must be a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        try:
            value = float(value)  # an int beyond ~1.8e308 overflows
        except OverflowError:
            raise ConfigError(f"{key} must be finite, got {value!r}") from None
        if not math.isfinite(value):
            raise ConfigError(f"{key} must be finite, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return str(value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{key} must be a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is list or origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        if args:
            return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
        return list(value)
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        bad = [k for k in value if not isinstance(k, str)]
        if bad:  # e.g. data.options are passed on as keyword arguments
            raise ConfigError(f"{key} keys must be names (strings), got {bad[0]!r}")
        return dict(value)
    return value


# value ranges: (section, key) -> (predicate, description)
_RANGES: dict[str, tuple[Any, str]] = {
    "steps": (lambda v: v >= 1, "at least 1"),
    "batch_size": (lambda v: v >= 1, "at least 1"),
    "lr": (lambda v: v > 0, "positive"),
    "weight_decay": (lambda v: v >= 0, "non-negative"),
    "warmup": (lambda v: v >= 0, "non-negative"),
    "min_lr_ratio": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "grad_clip": (lambda v: v >= 0, "non-negative (0 disables)"),
    "ema_decay": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "log_every": (lambda v: v >= 1, "at least 1"),
    "ema_every": (lambda v: v >= 1, "at least 1"),
    "eval_every": (lambda v: v >= 0, "non-negative (0: only at the end)"),
    "val_every": (lambda v: v >= 0, "non-negative (0: off)"),
    "val_batches": (lambda v: v >= 0, "non-negative (0: the whole split)"),
    "early_stopping": (lambda v: v >= 0, "non-negative (0: off)"),
    "max_skipped": (lambda v: v >= 0, "non-negative (0: never)"),
    "rollback_lr_factor": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "checkpoint_every": (lambda v: v >= 1, "at least 1"),
    "keep_last": (lambda v: v >= 1, "at least 1"),
    "progress_every": (lambda v: v > 0, "positive"),
    "threads": (lambda v: v >= 0, "non-negative"),
    "n": (lambda v: v >= 1, "at least 1"),
    "seeds": (lambda v: v >= 1, "at least 1"),
    "nll_n": (lambda v: v >= 1, "at least 1"),
    "val_fraction": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "test_fraction": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "hidden": (lambda v: v >= 1, "at least 1"),
    "depth": (lambda v: v >= 1, "at least 1"),
    "time_dim": (lambda v: v >= 2 and v % 2 == 0, "an even number >= 2"),
    "sigma": (lambda v: v >= 0, "non-negative"),
    "seed": (lambda v: 0 <= v < 2**32, "in [0, 2**32)"),
    "betas": (lambda v: all(0 <= b < 1 for b in v), "in [0, 1)"),
}
DEVICE = re.compile(r"auto|(cpu|cuda|mps)(:\d+)?")


def _check_ranges(obj: Any, section: str) -> None:
    for f in dataclasses.fields(obj):
        rule = _RANGES.get(f.name)
        v = getattr(obj, f.name)
        numeric = isinstance(v, (int, float)) or (
            isinstance(v, tuple) and all(isinstance(b, (int, float)) for b in v)
        )
        if rule is not None and numeric and not rule[0](v):
            raise ConfigError(f"{section}.{f.name} must be {rule[1]}, got {v!r}")
    if isinstance(obj, TrainerConfig) and not DEVICE.fullmatch(obj.device):
        raise ConfigError(
            f"{section}.device must be auto, cpu, cuda, cuda:N or mps, got {obj.device!r}"
        )
    if isinstance(obj, DataConfig) and obj.name is None and obj.path is None:
        raise ConfigError("data needs a dataset name (data.name=moons) or a file (data.path=FILE)")


def _close_files(p: Path) -> str:
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        return ""
    names = [c.name for c in parent.iterdir()]
    close = difflib.get_close_matches(p.name, names, n=3, cutoff=0.6)
    return f"; did you mean {', '.join(str(parent / c) for c in close)}?" if close else ""
