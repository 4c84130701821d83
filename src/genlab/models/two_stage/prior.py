"""A transformer prior over the codes of a VQ autoencoder: the second stage of VQGAN (Esser et al.
2021, "Taming transformers for high-resolution image synthesis", sec. 3.2) and of VQ-VAE (van den
Oord et al. 2017, with a PixelCNN there).

The stage-1 encoder maps an image to a code map ``(h, w)`` of ids in ``[0, K)``; read in raster
order it is a sequence ``s = (s_0, ..., s_{L-1})``, ``L = h · w``, and the prior factorises
``p(s | y) = Π_i p(s_i | s_{<i}, y)`` with a causal :class:`~genlab.nets.transformer.Transformer`.

**Tokens.** Ids ``0 .. K-1`` are the codes; ``K + c`` is the token of class ``c`` (data with
labels); ``K + C`` (``C`` classes, 0 without labels) is the start token of an unconditional model.
Position 0 holds the class token in place of the start token (Esser et al. 2021, sec. 3.2), then
the codes: the input is ``[c, s_0, ..., s_{L-2}]`` and its output at position ``i`` gives
``p(s_i | s_{<i}, y)`` over the ``K`` codes only (the head is tied to the code embeddings). The
context is ``L``: a code map is always seen whole.

**Training** encodes each batch with the frozen stage 1 in :meth:`VQGANPrior.prepare` (a pure
function of the data, so training resumes exactly and is the same on any number of processes)
and minimises the cross-entropy of the codes.

**Sampling** draws the ``L`` codes one position at a time with the KV cache (``cache=False``
recomputes the whole prefix: the same draws), with ``temperature`` (0: greedy), ``top_k`` and
``top_p`` (nucleus) applied as for the character GPT
(:func:`~genlab.models.autoregressive.gpt.next_token_probs`), each code drawn by inverting its
float64 CDF with one uniform from the ``generator``; the code maps are decoded by the stage-1
decoder in the same call. NFE counts the transformer passes (``L``).

**Likelihood**: :meth:`VQGANPrior.log_prob` of images is the exact ``log p(s)`` in nats of their
stage-1 codes (marginal over the classes, uniform as sampling draws them; or ``log p(s | y)`` given
``labels``), labelled ``of="codes"`` with ``dims = L``: the evaluation reports it in bits per
code, never as an image likelihood (the decoder is deterministic and lossy: there is no density
of pixels here).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from genlab.data.base import Batch
from genlab.errors import ConfigError, DataError
from genlab.models.autoregressive.gpt import (
    check_truncation,
    next_token_probs,
)
from genlab.models.base import (
    FROM_CONFIG,
    LogProb,
    ModelSpec,
    Player,
    SampleOption,
    SampleResult,
)
from genlab.models.shared import draw_categorical
from genlab.models.two_stage.stage1 import TwoStage
from genlab.nets.transformer import Transformer
from genlab.registry import MODELS


@dataclass
class PriorConfig:
    autoencoder: str | None = None  # the stage-1 run directory (a VQ autoencoder on the same data)
    stage1: dict | None = None  # written when training starts: what the stage-1 run was
    hidden: int = 128  # embedding width
    depth: int = 4  # transformer blocks
    heads: int = 4  # attention heads (a divisor of hidden)
    dropout: float = 0.0
    bias: bool = True
    temperature: float = 1.0  # sampling: logits / temperature (0: greedy)
    top_k: int = 0  # sampling: keep the k most likely codes (0: all)
    top_p: float = 1.0  # sampling: nucleus mass (1: all)


@MODELS.register(
    "vqgan-prior", help="transformer prior over a VQ autoencoder's codes, decoded in one call"
)
class VQGANPrior(TwoStage):
    """A class-conditional causal transformer over stage-1 code maps; see the module docstring."""

    Config = PriorConfig
    latent_kind = "codes"
    other_family = "ldm"
    data_kinds = ("images",)  # its stage 1 (vqvae, vqgan) encodes images only

    sample_options = (
        SampleOption("temperature", "divides the logits (0: greedy, argmax)", float, FROM_CONFIG),
        SampleOption("top_k", "keep the k most likely codes (0: all)", int, FROM_CONFIG),
        SampleOption(
            "top_p",
            "nucleus sampling: the most likely codes up to this mass (1: all)",
            float,
            FROM_CONFIG,
        ),  # fmt: skip
        SampleOption(
            "cache", "reuse keys and values of past positions (false: recompute)", bool, True
        ),  # fmt: skip
    )

    def __init__(self, config: PriorConfig, spec: ModelSpec) -> None:
        super().__init__(config, spec)
        h, w = self.latent_spec.shape
        self.map_shape = (h, w)
        self.length = h * w  # L: positions of a code map in raster order
        self.codes = self.latent_spec.codes  # K
        self.classes = spec.num_classes or 0
        self.start = self.codes + self.classes  # the start token of an unconditional model
        c = config
        self.net = Transformer(
            tokens=self.codes + self.classes + 1, outputs=self.codes, context=self.length,
            hidden=c.hidden, depth=c.depth, heads=c.heads, dropout=c.dropout, bias=c.bias,
            causal=True,
        )  # fmt: skip

    def players(self) -> list[Player]:
        """The transformer alone (the stage 1 is frozen); no weight decay on biases and gains."""
        return [Player("model", self.net, decay_vectors=False)]

    # --- codes ------------------------------------------------------------------------------------
    def codes_of(self, x: torch.Tensor) -> torch.Tensor:
        """Examples -> their stage-1 code sequences ``(B, L)`` in raster order (long)."""
        return self.encode_latents(x).reshape(len(x), self.length).to(torch.long)

    def first_tokens(self, y: torch.Tensor | None, n: int) -> torch.Tensor:
        """Position 0 ``(n, 1)``: the class token ``K + y``, or the start token without labels."""
        if self.classes and y is not None:
            return (self.codes + y.to(device=self.device, dtype=torch.long)).reshape(n, 1)
        if self.classes:
            raise ConfigError("this prior is class-conditional: give the labels")
        return torch.full((n, 1), self.start, dtype=torch.long, device=self.device)

    def _logits(self, s: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """``(B, L, K)``: the logits of ``p(s_i | s_{<i}, y)`` for code sequences ``s`` ``(B, L)``."""
        inp = torch.cat([self.first_tokens(y, len(s)), s[:, :-1]], dim=1)  # (B, L)
        return self.net(inp)

    # --- training ---------------------------------------------------------------------------------
    def prepare(self, batch: Batch, generator: torch.Generator | None) -> Batch:
        """The batch's stage-1 codes ``aux["codes"]`` ``(B, L)`` (no randomness: the stage-1
        encoder is frozen and deterministic)."""
        return Batch(batch.x, batch.y, batch.noise, batch.t,
                     {**batch.aux, "codes": self.codes_of(batch.x)})  # fmt: skip

    def loss(self, batch: Batch, generator: torch.Generator | None = None) -> torch.Tensor:
        """Cross-entropy of the codes, mean nats per code."""
        s = batch.aux.get("codes")
        if s is None:  # not prepared by the trainer
            s = self.codes_of(batch.x)
        y = batch.y if self.classes else None
        logits = self._logits(s, y)  # (B, L, K)
        return F.cross_entropy(logits.reshape(-1, self.codes), s.reshape(-1))

    # --- likelihood -------------------------------------------------------------------------------
    @torch.no_grad()
    def log_prob(
        self, x: torch.Tensor, *, labels: torch.Tensor | None = None, chunk: int = 256
    ) -> LogProb:
        """Exact ``log p(s)`` in nats of the stage-1 codes ``s`` of examples ``x`` (see
        :meth:`code_log_prob`), labelled as a likelihood of codes."""
        return self.code_log_prob(self.codes_of(x), labels=labels, chunk=chunk)

    @torch.no_grad()
    def code_log_prob(
        self, s: torch.Tensor, *, labels: torch.Tensor | None = None, chunk: int = 256
    ) -> LogProb:
        """Exact ``log p(s)`` ``(B,)`` in nats (float64) of code sequences ``s`` ``(B, L)`` or
        code maps ``(B, h, w)``. A class-conditional prior without ``labels`` gives the marginal
        ``log Σ_y p(y) p(s | y)`` with ``p(y) = 1/C``, the law :meth:`sample` draws from when it
        is given no labels; with ``labels`` ``(B,)``, ``log p(s | y)``."""
        s = self._check_codes(s)
        if labels is not None:
            labels = torch.as_tensor(labels, device=self.device).reshape(-1).to(torch.long)
            if not self.classes:
                raise ConfigError("this prior is not class-conditional: it takes no labels")
            if len(labels) != len(s):
                raise ConfigError(f"{len(s)} code maps but {len(labels)} labels")
        parts = []
        for i in range(0, len(s), chunk):
            part = s[i : i + chunk]
            if labels is not None or not self.classes:
                y = None if labels is None else labels[i : i + chunk]
                parts.append(self._sequence_log_prob(part, y))
            else:  # the marginal over the classes
                per_class = torch.stack(
                    [
                        self._sequence_log_prob(
                            part, torch.full((len(part),), c, device=self.device)
                        )
                        for c in range(self.classes)
                    ]
                )  # fmt: skip  (C, b)
                parts.append(per_class.logsumexp(0) - math.log(self.classes))
        passes = self.classes if self.classes and labels is None else 1
        note = (
            f"exact likelihood of the stage-1 codes ({self.map_shape[0]}x{self.map_shape[1]} "
            f"map of {self.codes} codes), not of the pixels"
        )
        return LogProb(torch.cat(parts), "exact", nfe=passes, note=note, of="codes",
                       dims=self.length)  # fmt: skip

    def _sequence_log_prob(self, s: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """``Σ_i log p(s_i | s_{<i}, y)`` ``(B,)``, float64, one pass."""
        logits = self._logits(s, y).double()
        return logits.log_softmax(-1).gather(-1, s[..., None])[..., 0].sum(-1)

    def _check_codes(self, s: torch.Tensor) -> torch.Tensor:
        s = torch.as_tensor(s)
        if s.is_floating_point() or s.dtype == torch.bool:
            raise DataError(f"codes must be integer ids, got {s.dtype}")
        if s.dim() >= 2 and math.prod(s.shape[1:]) == self.length:
            s = s.reshape(len(s), self.length)
        else:
            raise DataError(
                f"codes must be maps (B, {self.map_shape[0]}, {self.map_shape[1]}) or sequences "
                f"(B, {self.length}); got shape {tuple(s.shape)}"
            )
        if len(s) and (int(s.min()) < 0 or int(s.max()) >= self.codes):
            raise DataError(f"codes must be in [0, {self.codes - 1}]")
        return s.to(device=self.device, dtype=torch.long)

    # --- sampling ---------------------------------------------------------------------------------
    def check_options(self, options) -> None:
        check_truncation(options)

    @torch.no_grad()
    def sample_codes(
        self,
        n: int,
        *,
        labels: torch.Tensor | None,
        generator: torch.Generator | None,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        cache: bool = True,
    ) -> torch.Tensor:
        """``n`` code maps ``(n, h, w)`` drawn position by position (raster order)."""
        first = self.first_tokens(labels, n)  # (n, 1)
        s = torch.empty((n, self.length), dtype=torch.long, device=self.device)
        kv = self.net.new_cache(n) if cache else None
        for t in range(self.length):  # s[:, :t] is known; draw s[:, t]
            if kv is not None:  # feed only the newest token, at position t
                logits = self.net(first if t == 0 else s[:, t - 1 : t], cache=kv)[:, -1]
            else:
                logits = self.net(torch.cat([first, s[:, :t]], dim=1))[:, -1]  # (n, K)
            probs = next_token_probs(logits, temperature, top_k, top_p)
            s[:, t] = draw_categorical(probs, generator)
        return s.reshape(n, *self.map_shape)

    def _sample(
        self,
        n: int,
        *,
        labels: torch.Tensor | None,
        generator: torch.Generator | None,
        **options: Any,
    ) -> SampleResult:
        """Code maps from the prior, decoded by the stage-1 decoder."""
        codes = self.sample_codes(n, labels=labels, generator=generator, **options)
        return SampleResult(self.decode_latents(codes), self.length)


__all__ = ["PriorConfig", "VQGANPrior"]
