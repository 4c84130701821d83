"""What every generative model in genlab is.

A model is an ``nn.Module`` that owns its objective (:meth:`GenerativeModel.loss`) and its sampling
(:meth:`GenerativeModel.sample`); where it has a likelihood, :meth:`GenerativeModel.log_prob`
returns it with its kind, never as an unlabelled number. Each family declares a config dataclass
(``Config``) and builds itself from it and from the dataset's shape (``from_config``), so a
checkpoint plus its config is enough to rebuild the model without the data.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from genlab.data.base import Batch
from genlab.sampling.ode import SampleResult

LOG_PROB_KINDS = ("exact", "elbo", "iwae", "ode-estimate")


@dataclass
class LogProb:
    """Per-example log-likelihoods in nats, with what they are.

    ``kind`` is one of ``exact`` (up to the stated solver tolerance for ODE models), ``elbo``,
    ``iwae`` (lower bounds) or ``ode-estimate`` (Hutchinson trace estimate; ``stderr`` set).
    """

    value: torch.Tensor  # (B,) nats
    kind: str
    nfe: int | None = None
    stderr: torch.Tensor | None = None  # (B,) standard error of an estimate
    note: str = ""

    def __post_init__(self) -> None:
        if self.kind not in LOG_PROB_KINDS:
            raise ValueError(
                f"log-likelihood kind must be one of {LOG_PROB_KINDS}, got {self.kind}"
            )

    def nll(self) -> float:
        """Mean negative log-likelihood in nats."""
        return float(-self.value.mean())

    def bits_per_dim(self, dim: int) -> float:
        """Mean NLL in bits per dimension."""
        return self.nll() / (dim * math.log(2.0))


@dataclass
class ModelSpec:
    """What is needed, besides the config, to rebuild a model: the data's shape and classes."""

    family: str
    shape: tuple[int, ...]
    num_classes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> ModelSpec:
        return ModelSpec(d["family"], tuple(d["shape"]), d.get("num_classes"))


class GenerativeModel(nn.Module):
    """Base class of every family. Subclasses set ``family`` and ``Config`` and implement ``loss``
    and ``sample``; likelihood models implement ``log_prob``."""

    family: ClassVar[str] = ""
    Config: ClassVar[type] = object
    default_sampler: ClassVar[str | None] = None

    def __init__(self, config: Any, spec: ModelSpec) -> None:
        super().__init__()
        self.config = config
        self.spec = spec

    @classmethod
    def from_config(cls, config: Any, shape: tuple[int, ...], num_classes: int | None = None):
        return cls(config, ModelSpec(cls.family, tuple(shape), num_classes))

    def loss(self, batch: Batch, generator: torch.Generator | None = None) -> torch.Tensor:
        """The training objective on one batch (a scalar). Noise comes from ``generator``."""
        raise NotImplementedError

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

    @torch.no_grad()
    def sample(self, n: int, **options: Any) -> SampleResult:
        raise NotImplementedError

    def log_prob(self, x: torch.Tensor, **options: Any) -> LogProb:
        raise NotImplementedError(f"{self.family} has no likelihood")

    @property
    def has_log_prob(self) -> bool:
        return type(self).log_prob is not GenerativeModel.log_prob

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device
