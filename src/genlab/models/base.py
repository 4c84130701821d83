"""What every generative model in genlab is.

A model is an ``nn.Module`` that owns its objective (:meth:`GenerativeModel.loss`) and its sampling
(:meth:`GenerativeModel.sample`); where it has a likelihood, :meth:`GenerativeModel.log_prob`
returns it with its kind, never as an unlabelled number. Each family declares a config dataclass
(``Config``) and builds itself from it and from the dataset's shape (``from_config``), so a
checkpoint plus its config is enough to rebuild the model without the data.

Sampling has one signature for every family::

    model.sample(n, *, labels=None, generator=None, **options) -> SampleResult

Each family declares the options it takes (:attr:`GenerativeModel.sample_options`: a diffusion
model's ``sampler``, ``steps``, ``guidance``; a flow's ``temperature``; ...), with their defaults
(the config field of the same name, where there is one). An option the family does not take is a
:class:`~genlab.errors.ConfigError` that names the ones it does, so ``genlab sample --option k=v``
and ``eval.options`` work the same way for every family.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from genlab.data.base import Batch
from genlab.errors import ConfigError

LOG_PROB_KINDS = ("exact", "elbo", "iwae-<k>", "ode-estimate")  # iwae-<k>: e.g. iwae-5000
_IWAE = re.compile(r"iwae-[1-9]\d*")


@dataclass
class LogProb:
    """Per-example log-likelihoods in nats, with what they are.

    ``kind`` is one of ``exact`` (up to the stated solver tolerance for ODE models), ``elbo``,
    ``iwae-<k>`` such as ``iwae-5000`` (lower bounds) or ``ode-estimate`` (Hutchinson trace
    estimate; ``stderr`` set).
    """

    value: torch.Tensor  # (B,) nats
    kind: str
    nfe: int | None = None
    stderr: torch.Tensor | None = None  # (B,) standard error of an estimate
    note: str = ""
    #: what the likelihood is of: ``"data"`` (the examples themselves) or ``"codes"`` (a second
    #: stage's likelihood of the stage-1 codes of the examples, not of their pixels)
    of: str = "data"
    #: the number of variables it is spread over for bits per dimension (None: the data's; a
    #: prior over codes: the positions of the code map)
    dims: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("exact", "elbo", "ode-estimate") and not _IWAE.fullmatch(self.kind):
            raise ValueError(
                f"log-likelihood kind must be one of {LOG_PROB_KINDS}, got {self.kind}"
            )
        if self.of not in ("data", "codes"):
            raise ValueError(f"a log-likelihood is of 'data' or 'codes', got {self.of!r}")

    def nll(self) -> float:
        """Mean negative log-likelihood in nats."""
        return float(-self.value.mean())

    def bits_per_dim(self, dim: int) -> float:
        """Mean NLL in bits per dimension."""
        return self.nll() / (dim * math.log(2.0))


@dataclass
class SampleResult:
    """What sampling returns: the samples, the number of network evaluations (NFE) spent, on
    request the whole path, and the class labels the samples were drawn for."""

    x: torch.Tensor  # (B, *shape)
    nfe: int
    trajectory: torch.Tensor | None = None  # (steps + 1, B, *shape), from noise to data
    labels: torch.Tensor | None = None  # (B,) for class-conditional samples


class _FromConfig:
    def __repr__(self) -> str:
        return "<the config field of the same name>"


FROM_CONFIG: Any = _FromConfig()


@dataclass(frozen=True)
class SampleOption:
    """One keyword that a family's :meth:`~GenerativeModel.sample` takes.

    ``parse`` reads a value given on the command line (``float``, ``int``, ``str``, ``bool``);
    ``None`` marks an option that only Python code can pass (a tensor, a model). ``default`` is
    :data:`FROM_CONFIG` when the model config has a field of the same name that holds it."""

    name: str
    help: str
    parse: Callable[[str], Any] | None = float
    default: Any = None

    def coerce(self, value: Any) -> Any:
        """``value`` checked against ``parse`` (text from a command line or a YAML config is
        read): a :class:`ConfigError` naming the option when it does not fit."""
        if self.parse is None or value is None:
            return value
        kind = {int: "an integer", float: "a number", bool: "true or false", str: "a name"}
        try:
            if self.parse is bool:
                if isinstance(value, bool):
                    return value
                low = str(value).strip().lower()
                if low in ("true", "yes", "1", "on"):
                    return True
                if low in ("false", "no", "0", "off"):
                    return False
                raise ValueError
            if self.parse is str:
                if not isinstance(value, str):
                    raise ValueError
                return value
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
            if self.parse is int:
                if number != int(number):
                    raise ValueError
                return int(number)
            return self.parse(number)
        except (ValueError, TypeError, OverflowError):
            what = kind.get(self.parse, "a valid value")
            raise ConfigError(
                f"sampling option {self.name!r} must be {what}, got {value!r}"
            ) from None


@dataclass(frozen=True)
class Player:
    """A set of parameters that the trainer updates with an optimizer of its own: the one player
    of most families (``"model"``, every trainable parameter), or a GAN's generator and critic.

    ``lr``, ``betas``, ``weight_decay``: the player's AdamW settings (None: ``trainer.*``; the
    warmup/cosine schedule scales each player's own ``lr``). ``decay_vectors``: False exempts
    the parameters with fewer than 2 dimensions (biases, normalization gains) from weight decay,
    as GPT-2 and nanoGPT do. ``updates``: optimizer updates per training step, each on a batch of
    its own (a WGAN critic: 5). ``ema``: keep an EMA of its weights for sampling (a generator, not
    a critic). ``start``: the first step it updates."""

    name: str
    module: nn.Module
    lr: float | None = None
    betas: tuple[float, float] | None = None
    weight_decay: float | None = None
    decay_vectors: bool = True
    updates: int = 1
    ema: bool = True
    start: int = 0


@dataclass(frozen=True)
class LatentSpec:
    """What an autoencoder's :meth:`GenerativeModel.encode` returns and ``decode`` takes, for a
    second stage: ``kind="codes"``: long ids of shape ``shape`` (a VQ code map ``(h, w)``) from a
    vocabulary of ``codes``; ``kind="continuous"``: float latents of shape ``shape`` (``(C, h, w)``
    or ``(D,)``). A codes latent may also offer the continuous ``vectors`` behind its codes (the
    encoder's output before quantization, ``(D, h, w)``), through ``encode_vectors`` and
    ``decode_vectors`` (which quantizes first): latent diffusion models those (Rombach et al.
    2022, sec. 3.1: the quantization is absorbed by the decoder)."""

    kind: str  # "codes" or "continuous"
    shape: tuple[int, ...]
    codes: int = 0  # vocabulary size of "codes" latents
    vectors: tuple[int, ...] | None = None  # codes: the shape of the vectors behind them


@dataclass
class ModelSpec:
    """What is needed, besides the config, to rebuild a model: the data's shape and classes and,
    for text, its vocabulary (the characters, token ``i`` being ``vocab[i]``), so that a run
    samples and decodes from its directory alone."""

    family: str
    shape: tuple[int, ...]
    num_classes: int | None = None
    vocab: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> ModelSpec:
        return ModelSpec(d["family"], tuple(d["shape"]), d.get("num_classes"), d.get("vocab"))


class GenerativeModel(nn.Module):
    """Base class of every family. Subclasses set ``Config`` and
    ``sample_options``, and implement ``loss`` and ``_sample``; likelihood models implement
    ``log_prob``."""

    family: ClassVar[str] = ""  #: set by registering the class in MODELS (its name there)
    Config: ClassVar[type] = object
    #: the keywords ``sample`` takes besides ``labels`` and ``generator``
    sample_options: ClassVar[tuple[SampleOption, ...]] = ()
    #: False for models that are not generative (a noise classifier): evaluation then reports
    #: only :meth:`report`
    can_sample: ClassVar[bool] = True
    #: True for families that condition on the data's class labels when it has them
    conditional: ClassVar[bool] = False
    #: the kinds of data the family trains on (:data:`genlab.data.base.KINDS`)
    data_kinds: ClassVar[tuple[str, ...]] = ("points", "images")
    #: None: a training example is one row of the data. An int ``L``: the data is one token
    #: stream and an example is a window of ``L`` consecutive tokens at any offset (the trainer
    #: shuffles the offsets; validation cuts the held-out stream into consecutive windows).
    window: int | None = None

    def __init__(self, config: Any, spec: ModelSpec) -> None:
        super().__init__()
        self.config = config
        self.spec = spec

    @classmethod
    def from_config(
        cls,
        config: Any,
        shape: tuple[int, ...],
        num_classes: int | None = None,
        vocab: str | None = None,
    ):
        """A fresh model for data of ``shape`` (with ``num_classes`` classes; text: ``vocab``)."""
        return cls(config, ModelSpec(cls.family, tuple(shape), num_classes, vocab))

    @classmethod
    def bind(cls, config: Any, dataset: Any, *, resume: bool = False) -> Any:
        """The config to build a model for training on ``dataset`` with, after resolving what it
        refers to outside the run (a second stage loads its stage-1 run, checks that it fits the
        data and records it in the config, which the run saves). ``resume``: the config is the
        run's own saved one. Default: ``config`` unchanged."""
        return config

    def initialize(self, dataset: Any) -> None:
        """Called once when a fresh training run starts (never on resume nor when a run is
        loaded), after the initial weights are drawn: state taken from outside the run or measured
        on the data (a second stage copies its frozen stage-1 weights and measures the scale of
        its latents). Default: nothing."""

    def loss(self, batch: Batch, generator: torch.Generator | None = None) -> torch.Tensor:
        """The training objective on one batch (a scalar). Noise comes from ``generator``."""
        raise NotImplementedError

    def players(self) -> list[Player]:
        """Who the trainer updates, in order, each step: one player, the whole model, unless a
        family has several (a GAN's critic and generator, each with its own loss)."""
        return [Player("model", self)]

    def player_loss(
        self, player: str, batch: Batch, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The loss of ``player`` on a prepared batch (a scalar): :meth:`loss` for one player."""
        return self.loss(batch, generator)

    def after_update(self, player: str) -> None:
        """Called after each optimizer update of ``player`` (a WGAN clips its critic's weights)."""

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Examples -> their latent representation (a VQ-VAE's codes, a VAE's posterior means),
        for a second stage and ``genlab encode``. Families without an encoder refuse."""
        raise ConfigError(f"{self.family} models have no encoder (genlab encode takes a vae, "
                          "vqvae, vqgan or kl-autoencoder run)")  # fmt: skip

    def latent(self) -> LatentSpec | None:
        """The autoencoder's latent (what :meth:`encode` returns and :meth:`decode` takes), or
        None for families that are not autoencoders. A second stage reads it to build itself."""
        return None

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (as :meth:`latent` describes) -> examples in data space. Families without a
        decoder refuse."""
        raise ConfigError(f"{self.family} models have no decoder (a second stage needs a vae, "
                          "vqvae, vqgan or kl-autoencoder run)")  # fmt: skip

    def training_stats(self) -> dict[str, float]:
        """Figures of the family's own for each training log line, over the steps since the last
        call (a VQ-VAE's codebook usage and perplexity). Default: none."""
        return {}

    def divergence(self) -> str | None:
        """Checked at every log step: why training has gone wrong in a way the non-finite guard
        cannot see (a critic whose outputs run away), or None. The trainer then stops or rolls
        back as ``trainer.on_divergence`` says."""
        return None

    #: True when :meth:`prepare` does work worth taking off the hot path (the trainer then runs it
    #: in background threads, a few batches ahead).
    prepares_batches: bool = False

    def prepare(self, batch: Batch, generator: torch.Generator | None) -> Batch:
        """Draw the randomness of the objective for a whole (global) batch: work that depends on
        data and randomness only, never on the weights (noise, times, an OT pairing). The trainer
        calls it once per step with a generator seeded by ``(seed, step)``, inline or in a worker
        thread, then splits the batch across data-parallel ranks; so a model that draws all its
        randomness here trains identically on any number of processes and resumes exactly."""
        return batch

    def observed(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Real examples as this model represents data (a binary model: binarized), so evaluation
        compares samples and real examples like with like. The identity for most families."""
        return x

    # --- sampling -------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        labels: torch.Tensor | int | None = None,
        generator: torch.Generator | None = None,
        **options: Any,
    ) -> SampleResult:
        """``n`` samples. ``labels`` (an int or ``(n,)``) picks the classes of a class-conditional
        model, which otherwise draws them uniformly from ``generator``; they are returned in
        ``SampleResult.labels``. ``options``: those the family declares (:meth:`options`); the
        others take their defaults."""
        if not self.can_sample:
            raise ConfigError(f"a {self.family} model does not generate samples")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"the number of samples must be a positive integer, got {n!r}")
        opts = self.resolve_options(options)
        labels = self._labels(n, labels, generator, self.label_classes(opts))
        out = self._sample(n, labels=labels, generator=generator, **opts)
        if out.labels is None:
            out.labels = labels
        return out

    def _sample(
        self, n: int, *, labels: torch.Tensor | None, generator: torch.Generator | None, **options
    ) -> SampleResult:
        """The family's sampling, with checked labels and every declared option resolved."""
        raise NotImplementedError

    def options(self, chosen: Mapping[str, Any] | None = None) -> dict[str, SampleOption]:
        """The options :meth:`sample` takes, given those ``chosen`` so far (a diffusion model adds
        the options of the sampler chosen)."""
        return {o.name: o for o in self.sample_options}

    def resolve_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Every declared option, with the given value or its default; an undeclared one is a
        :class:`ConfigError` naming the closest and all allowed ones."""
        allowed = self.options(options)
        for key in options:
            if key not in allowed:
                raise ConfigError(self.unknown_option_message(key, allowed))
        out = {}
        for name, opt in allowed.items():
            if name in options and options[name] is not None:
                out[name] = opt.coerce(options[name])
            elif opt.default is FROM_CONFIG:
                out[name] = getattr(self.config, name)
            else:
                out[name] = opt.default
        self.check_options(out)
        return out

    def check_options(self, options: Mapping[str, Any]) -> None:
        """Refuse a combination of resolved options that cannot work (a :class:`ConfigError`), so
        that it fails before any sampling, or before training when it is in ``eval.options``."""

    def unknown_option_message(self, key: str, allowed: Mapping[str, SampleOption]) -> str:
        names = sorted(allowed)
        likelihood = sorted(o.name for o in self.likelihood_options)
        close = difflib.get_close_matches(key, names + likelihood, n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        takes = f"it takes {', '.join(names)}" if names else "it takes none"
        if likelihood:
            takes += f"; genlab eval also takes the likelihood options {', '.join(likelihood)}"
        return f"{self.family} models take no sampling option {key!r}{hint} ({takes})"

    def label_classes(self, options: Mapping[str, Any]) -> int | None:
        """How many classes ``labels`` may name with these options (None: labels are refused)."""
        return self.spec.num_classes if self.conditional else None

    def _labels(
        self, n: int, labels: Any, generator: torch.Generator | None, k: int | None
    ) -> torch.Tensor | None:
        if k is None:
            if labels is not None:
                raise ConfigError(
                    f"this {self.family} model is not class-conditional (it was trained without "
                    "labels), so it takes no labels"
                )
            return None
        if labels is None:
            dev = generator.device if generator is not None else torch.device("cpu")
            return torch.randint(0, k, (n,), generator=generator, device=dev).to(self.device)
        y = torch.as_tensor(labels)
        if y.is_floating_point() or y.dtype == torch.bool:
            raise ConfigError(f"labels must be integers (class indices), got dtype {y.dtype}")
        y = y.to(torch.long)
        if y.dim() == 0:
            y = y.expand(n)
        if tuple(y.shape) != (n,):
            raise ConfigError(f"labels must be one int or {n} of them, got shape {tuple(y.shape)}")
        if (y < 0).any() or (y >= k).any():
            raise ConfigError(f"labels must be in [0, {k - 1}], got {int(y.min())}..{int(y.max())}")
        return y.to(self.device)

    # --- likelihood and reports -----------------------------------------------------------------
    #: the keywords :meth:`likelihoods` takes (a VAE's ``iwae_k``): ``genlab eval --option`` and
    #: ``eval.nll_options`` give them, checked like sampling options
    likelihood_options: ClassVar[tuple[SampleOption, ...]] = ()

    def log_prob(self, x: torch.Tensor, **options: Any) -> LogProb:
        raise NotImplementedError(f"{self.family} has no likelihood")

    def likelihoods(self, x: torch.Tensor, **options: Any) -> list[LogProb]:
        """Every held-out figure of ``log p(x)`` the family reports, the tightest last (a VAE: the
        ELBO, then the IWAE-k bound from the same draws). Default: :meth:`log_prob` alone."""
        return [self.log_prob(x, **options)]

    def resolve_likelihood_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """The declared likelihood options with their values or defaults; an undeclared one is a
        :class:`ConfigError` naming those the family takes."""
        allowed = {o.name: o for o in self.likelihood_options}
        for key in options:
            if key not in allowed:
                close = difflib.get_close_matches(key, list(allowed), n=3, cutoff=0.5)
                hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
                takes = ", ".join(sorted(allowed)) or "none"
                raise ConfigError(
                    f"{self.family} models take no likelihood option {key!r}{hint} (they take "
                    f"{takes})"
                )
        out = {}
        for name, opt in allowed.items():
            if options.get(name) is not None:
                out[name] = opt.coerce(options[name])
            elif opt.default is FROM_CONFIG:
                out[name] = getattr(self.config, name)
            else:
                out[name] = opt.default
        return out

    @property
    def has_log_prob(self) -> bool:
        return type(self).log_prob is not GenerativeModel.log_prob

    def report(
        self, x: torch.Tensor, labels: torch.Tensor | None = None
    ) -> dict[str, dict[str, Any]]:
        """Figures of the family's own for the evaluation report, ``{name: {"value", "unit",
        "better", ...}}`` (a classifier's accuracy; a VQ-VAE's codebook usage), measured on the
        held-out examples ``x`` (with their ``labels``) that the evaluation reports on (the test
        split by default; the report names it). Default: none."""
        return {}

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device
