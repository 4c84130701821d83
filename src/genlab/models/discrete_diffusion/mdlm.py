"""Masked (absorbing-state) diffusion over characters: MDLM.

**The forward process.** A window ``x = (x_0, ..., x_{L-1})`` of character ids is corrupted in
continuous time ``t ∈ [0, 1]``: each character is, independently, replaced by the mask token
``m`` (id ``V``, the vocabulary size; never an output) with probability ``1 − α(t)``, and stays
masked once masked (an absorbing state). ``α(0) = 1`` (clean) and ``α(1) = 0`` (every character
masked, the fixed prior). Schedules (``model.schedule``; :class:`Schedule`): ``loglinear``,
``α(t) = 1 − t``, and ``cosine``, ``α(t) = cos(πt/2)``.

**The SUBS parameterization** (Sahoo et al. 2024, sec. 3.2.3). A bidirectional
:class:`~genlab.nets.transformer.Transformer` reads ``z_t`` and gives, at every position, a
distribution ``x_θ(z_t)_l`` over the ``V`` characters only (zero mass on the mask: the head has no
row for it), and an unmasked position carries its character over unchanged. The network is not
told ``t``: the fraction of masks in ``z_t`` says enough (the paper finds time conditioning
unnecessary), and it makes the continuous-time bound independent of the schedule (below).

**The bound** (Sahoo et al. 2024, eq. 10; Shi et al. 2024, MD4)::

    log p(x) ≥ ∫_0^1 α'(t) / (1 − α(t)) · E_q[ Σ_{l masked in z_t} −log x_θ(z_t)_l[x_l] ] dt ... (·)

i.e. ``−∫ w(t) E[Σ_masked CE]`` with ``w(t) = −α'(t) / (1 − α(t))`` (``1/t`` log-linear,
``(π/2) sin(πt/2) / (1 − cos(πt/2))`` cosine). Training minimises it per character
(``model.estimator=time``, MDLM's form): a time ``t`` per window drawn low-discrepancy across the
batch (``t_i = (u + i) / B``, one uniform ``u``, mapped into ``[t_min, 1]``), each character
masked with probability ``1 − α(t)``, the masked cross-entropies weighted by
``(1 − t_min) · w(t)``: an unbiased estimate of the bound truncated at ``t_min``. The weight is
unbounded (``w ≈ 1/t``), so with few windows per step the gradient is noisy;
``model.estimator=count`` draws instead the number ``k`` of masked characters, uniform on
``1..L`` (stratified across the batch), masks ``k`` of them chosen uniformly and weights each by
``L/k``: the same bound with ``t`` integrated out (below), not truncated, with bounded weights.
Every random choice (times or counts, masks) is drawn in :meth:`MDLM.prepare` from the step's
generator (exact resume; one process trains like two).

*Held-out*: substituting ``s = 1 − α(t)`` (the masking probability) turns (·) into
``∫_0^1 (1/s) E_{mask w.p. s}[Σ_{l∈M} log x_θ]ds``; for a mask set of ``k`` characters the
integral over ``s`` is a Beta function, so the bound is exactly

    ELBO(x) = Σ_{k=1}^{L} (1/k) · E_{M uniform, |M| = k} [ Σ_{l ∈ M} log x_θ(x with M masked)_l[x_l] ],

the same for every schedule (the network does not see ``t``). :meth:`MDLM.log_prob` estimates it
with ``elbo_samples`` draws per window, their ``k`` stratified over ``1..L``: unbiased, with
finite variance (sampling ``t`` uniformly instead gives an estimator of infinite variance: a
mask drawn at ``t ≈ 0`` carries the weight ``1/t``). The standard error from the draws' spread
ignores the stratification, so it is conservative. The time estimator of training truncates
``t`` at ``t_min`` (MDLM's ``ε``; the dropped slice is about ``t_min · L · CE`` nats per window);
the held-out figure is the whole integral, a true lower bound.

**Sampling** (ancestral, Sahoo et al. 2024, sec. 3.3 and eq. 7): ``steps`` = T on the grid
``t_i = i/T``; from ``s = t_i`` to ``r = t_{i−1}`` each masked character stays masked with
probability ``(1 − α_r) / (1 − α_s)`` or becomes character ``c`` with probability
``(α_r − α_s) / (1 − α_s) · x_θ(z_s)[c]``; unmasked characters never change. One float64 uniform
per position and step picks the outcome by inverting the CDF of those ``V + 1`` probabilities
(:func:`~genlab.models.autoregressive.gpt.draw_categorical`). At the last step ``α_0 = 1``: every
mask is filled, so a sample never holds the mask token. The network does not see ``t``, so when
no character of the batch changed at a step its output is reused (``cache``, on by default; the
same uniforms are drawn either way, so the samples are identical). NFE counts the passes made.

The discrete-time bound of this T-step chain (Sahoo et al. 2024, eq. 6 with SUBS) is
``Σ_i (α_{t_{i−1}} − α_{t_i}) / (1 − α_{t_i}) · E_q[Σ_{l masked in z_{t_i}} log x_θ(z_{t_i})_l[x_l]]``
(:meth:`MDLM.discrete_elbo`); it rises to the continuous one as T grows. Tests enumerate every
sequence of a tiny model: the chain's probabilities sum to one, the T-step bound is below the
exact log-probability of the chain, and it approaches the continuous bound.

**Conditioning.** ``prompt``: a prefix held fixed; ``length`` characters follow it (0: up to the
context). ``infill``: a template in which each ``_`` is one token to fill (one character with
the ``char`` tokenizer) and every other stretch stays as given, encoded by the run's tokenizer
(``genlab sample RUN --infill "ROMEO: ____ my love ____."``); its length in tokens is the
sample's. A literal ``_`` cannot be given. Characters the ``char`` tokenizer would escape are
refused with a message that lists them.

References:
    Sahoo et al. (2024), "Simple and Effective Masked Diffusion Language Models", NeurIPS.
    Shi et al. (2024), "Simplified and Generalized Masked Diffusion for Discrete Data", NeurIPS.
    Austin et al. (2021), "Structured Denoising Diffusion Models in Discrete State-Spaces".
    Kingma et al. (2021), "Variational Diffusion Models" (low-discrepancy times).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import ClassVar

import torch

from genlab.data.base import Batch
from genlab.data.text import encode
from genlab.data.tokenizer import tokenizer_of
from genlab.errors import ConfigError, DataError
from genlab.models.base import (
    FROM_CONFIG,
    GenerativeModel,
    LogProb,
    ModelSpec,
    Player,
    SampleOption,
    SampleResult,
)
from genlab.models.shared import check_windows, draw_categorical
from genlab.nets.transformer import Transformer
from genlab.progress import chunks, step_range
from genlab.registry import MODELS

BLANK = "_"  # an infill template's character to fill


# --- schedules ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Schedule:
    """A masking schedule: ``alpha(t)``, the probability that a character is still unmasked at time
    ``t``, with ``alpha(0) = 1`` and ``alpha(1) = 0``, and the ELBO weight
    ``−alpha'(t) / (1 − alpha(t))`` per masked character."""

    name: str

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        if self.name == "loglinear":
            return 1.0 - t
        return torch.where(t >= 1.0, torch.zeros_like(t), torch.cos(0.5 * math.pi * t))

    def time_of(self, rate: float) -> float:
        """The time at which a character is masked with probability ``rate`` (``1 − α(t)``)."""
        if self.name == "loglinear":
            return rate
        return 2.0 / math.pi * math.acos(1.0 - rate)

    def weight(self, t: torch.Tensor) -> torch.Tensor:
        """``−α'(t) / (1 − α(t))`` (``t > 0``)."""
        if self.name == "loglinear":
            return 1.0 / t
        h = 0.5 * math.pi * t
        return 0.5 * math.pi * torch.sin(h) / (1.0 - torch.cos(h))


SCHEDULES = ("loglinear", "cosine")
ESTIMATORS = ("time", "count")


def stratified_times(n: int, generator: torch.Generator | None) -> torch.Tensor:
    """``n`` low-discrepancy times in ``[0, 1)`` float64: ``(u + i) / n`` with one uniform ``u``
    (Kingma et al. 2021, appendix I.1), one in each of ``n`` equal strata."""
    dev = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand((), generator=generator, dtype=torch.float64, device=dev).cpu()
    return (u + torch.arange(n, dtype=torch.float64)) / n


@dataclass
class MDLMConfig:
    context: int = 256  # characters per window (training, likelihood and the longest sample)
    hidden: int = 128  # transformer width
    depth: int = 4  # transformer blocks
    heads: int = 4  # attention heads (a divisor of hidden)
    dropout: float = 0.0
    bias: bool = False
    rope: bool = True  # rotary positions (relative; False: learned absolute positions, as the GPT)
    schedule: str = "loglinear"  # loglinear: α = 1 − t; cosine: α = cos(πt/2)
    t_min: float = 1e-3  # training: times drawn in [t_min, 1] (MDLM's ε)
    estimator: str = "time"  # training: time (t, weight w(t)) or count (mask size k, weight S/k)
    # training: the masking probabilities 1 − α(t) drawn, [β, ω] (BD3-LM's clipped schedule, e.g.
    # [0.45, 0.95]); the loss is then the bound's slice over them, validation and the held-out
    # bound the whole of it
    mask_rates: tuple[float, float] = (0.0, 1.0)
    steps: int = 256  # sampling: steps of the ancestral sampler
    length: int = 0  # sampling: characters after the prompt (0: up to the context)
    elbo_samples: int = 64  # held-out bound: mask draws per window


@MODELS.register(
    "mdlm", help="masked diffusion language model (Sahoo 2024): SUBS, ELBO bound, infilling"
)
class MDLM(GenerativeModel):
    """Masked diffusion over windows of characters; see the module docstring."""

    Config: ClassVar[type] = MDLMConfig
    data_kinds = ("tokens",)

    sample_options = (
        SampleOption("steps", "steps of the ancestral sampler", int, FROM_CONFIG),
        SampleOption("length", "characters after the prompt (0: up to the context)", int,
                     FROM_CONFIG),
        SampleOption("prompt", "a prefix held fixed (characters of the training text)", str, ""),
        SampleOption("infill", f"a template; each {BLANK!r} is a character to fill, the others "
                     "stay", str, ""),
        SampleOption("cache", "reuse the network's output when no character changed", bool, True),
    )  # fmt: skip
    likelihood_options = (
        SampleOption("elbo_samples", "mask draws per window of the held-out bound", int,
                     FROM_CONFIG),
    )  # fmt: skip

    def __init__(self, config: MDLMConfig, spec: ModelSpec) -> None:
        super().__init__(config, spec)
        c = config
        if not spec.vocab:
            raise ConfigError(
                f"a {self.family} model needs a vocabulary: train it on text "
                "(data.name=shakespeare or data.path=FILE.txt)"
            )
        if c.schedule not in SCHEDULES:
            raise ConfigError(
                f"model.schedule must be one of {', '.join(SCHEDULES)}, got {c.schedule!r}"
            )
        if c.estimator not in ESTIMATORS:
            raise ConfigError(
                f"model.estimator must be one of {', '.join(ESTIMATORS)}, got {c.estimator!r}"
            )
        if not 0.0 <= c.t_min < 1.0:
            raise ConfigError(f"model.t_min must be in [0, 1), got {c.t_min}")
        rates = c.mask_rates if isinstance(c.mask_rates, (list, tuple)) else ()
        if len(rates) != 2 or not 0.0 <= rates[0] < rates[1] <= 1.0:
            raise ConfigError(
                "model.mask_rates must be [low, high] with 0 <= low < high <= 1 (the masking "
                f"probabilities drawn in training), got {c.mask_rates!r}"
            )
        if c.context < 1:
            raise ConfigError(f"model.context must be at least 1, got {c.context}")
        self.schedule = Schedule(c.schedule)
        if c.estimator == "time" and self.schedule.time_of(rates[1]) <= c.t_min:
            raise ConfigError(
                f"model.mask_rates={list(rates)} ends before model.t_min={c.t_min}: no "
                "time is left to train on"
            )
        self.vocab_size = tokenizer_of(spec.vocab).vocab_size
        self.mask_id = self._mask_id()  # the mask token's id: one embedding row, no output
        self.net = self._make_net()

    def _mask_id(self) -> int:
        return self.vocab_size

    def _make_net(self) -> Transformer:
        c = self.config
        return Transformer(
            tokens=self.vocab_size + (1 if self.mask_id >= 0 else 0), outputs=self.vocab_size,
            context=c.context,
            hidden=c.hidden, depth=c.depth, heads=c.heads, dropout=c.dropout, bias=c.bias,
            causal=False, rope=c.rope,
        )  # fmt: skip

    @classmethod
    def from_config(
        cls,
        config: MDLMConfig,
        shape: tuple[int, ...],
        num_classes: int | None = None,
        vocab: str | None = None,
    ) -> MDLM:
        """From a token stream (``shape == ()``) or a saved spec (``(context,)``)."""
        if tuple(shape) not in ((), (config.context,)):
            raise ConfigError(
                f"a {cls.family} model reads a stream of characters; got examples of shape "
                f"{tuple(shape)}"
            )
        if num_classes is not None:
            raise ConfigError(f"a {cls.family} model is not class-conditional: train it on text")
        return cls(config, ModelSpec(cls.family, (config.context,), None, vocab))

    @property
    def window(self) -> int:
        """Training examples: windows of ``context`` characters at random offsets of the text."""
        return self.config.context

    def players(self) -> list[Player]:
        """One player; weight decay spares biases and LayerNorm gains (as the GPT)."""
        return [Player("model", self, decay_vectors=False)]

    # --- the denoiser -----------------------------------------------------------------------------
    def logits(self, z: torch.Tensor) -> torch.Tensor:
        """The network's logits over the ``V`` characters ``(B, L, V)`` for partly masked ``z``."""
        return self.net(z)

    def log_terms(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``log x_θ(z)_l[x_l]`` ``(B, L)``: the per-character term of the bound, weighted and
        summed over the masked characters (SEDD replaces it by its score entropy)."""
        return logits.log_softmax(-1).gather(-1, x[..., None])[..., 0]

    def fill_probs(self, logits: torch.Tensor, alpha: torch.Tensor, i: int) -> torch.Tensor:
        """The categorical ``(n, L, V + 1)`` (unnormalized; the last entry: stay masked) of a
        masked character from ``t_i`` to ``t_{i−1}`` on the grid whose ``α`` is ``alpha``."""
        a_s, a_r = float(alpha[i]), float(alpha[i - 1])
        move = (a_r - a_s) / (1.0 - a_s)  # P(a mask is filled at this step)
        probs = logits.double().softmax(-1)
        return torch.cat([probs * move, probs.new_full((*probs.shape[:2], 1), 1.0 - move)], -1)

    def block(self, L: int, size: int | None = None) -> int:
        """Characters per diffusion block of a window of ``L`` (``size``: another block size than
        the model's, for block diffusion): MDLM diffuses the whole window, one block."""
        if size not in (None, L):
            raise ConfigError(f"a {self.family} model diffuses whole windows: no block size")
        return L

    def pair_logits(
        self, z: torch.Tensor, x: torch.Tensor, size: int | None = None
    ) -> torch.Tensor:
        """Logits ``(B, L, V)`` of the noised window ``z`` whose blocks (of ``size``) may see the
        clean ``x`` of the blocks before them. MDLM: one block, so ``x`` is unused."""
        self.block(z.shape[1], size)
        return self.logits(z)

    # --- training -------------------------------------------------------------------------------
    def prepare(self, batch: Batch, generator: torch.Generator | None) -> Batch:
        """The randomness of one step, one draw per block of each window (MDLM: per window),
        stratified across all of them: the masks ``aux["mask"]`` ``(B, L)`` (True: masked) and
        each block's weight per masked character ``aux["weight"]`` ``(B, blocks)``.

        ``model.estimator=time``: a time ``t`` in ``[t_min, 1]`` (also in ``batch.t``), each
        character masked with probability ``1 − α(t)``, weight ``(1 − t_min) · w(t)``,
        ``w(t) = −α'(t)/(1 − α(t))`` (the bound truncated at ``t_min``).
        ``count``: the number ``k`` of masked characters, uniform on ``1..S`` (``S``: the block),
        ``k`` of them chosen uniformly, weight ``S/k``: the same bound with ``t`` integrated out
        (see the module docstring), bounded weights and so a less noisy gradient.

        ``model.mask_rates = [β, ω]`` (in training only; validation, in eval mode, draws the
        whole range): masking probabilities in ``[β, ω]`` only, BD3-LM's clipped schedule
        (Arriola et al. 2025, sec. 5), times ``t`` with ``1 − α(t)`` in it (and at least
        ``t_min``) or counts ``k`` in ``[⌈βS⌉, ⌊ωS⌋]`` (at least the one count ``⌈βS⌉`` when no
        count of a block of ``S`` falls in the range), with the same weights times the width of
        the range: an unbiased estimate of the bound's slice over those rates."""
        x = batch.x
        B, L = x.shape
        S = self.block(L)
        nb = L // S
        dev = generator.device if generator is not None else torch.device("cpu")
        strata = stratified_times(B * nb, generator).reshape(B, nb)  # (B, nb) in [0, 1)
        u = torch.rand((B, L), generator=generator, dtype=torch.float64, device=dev).cpu()
        # the trainer's mode: training steps clip, validation (eval mode) draws the whole bound.
        # Sound because prepare runs on the training thread (prepares_batches stays False: no
        # batch is drawn ahead, while a validation has the model in eval mode)
        low, high = self.config.mask_rates if self.training else (0.0, 1.0)
        t = None
        if self.config.estimator == "time":
            t0 = max(self.config.t_min, self.schedule.time_of(low))
            t1 = self.schedule.time_of(high)
            t = t0 + (t1 - t0) * strata
            mask = u < (1.0 - self.schedule.alpha(t)).repeat_interleave(S, dim=1)  # (B, L)
            # ∫_{t0}^{t1} = (t1 − t0) · E over t uniform on [t0, t1]
            weight = self.schedule.weight(t) * (t1 - t0)
            t = t.to(x.device)
        else:
            k0 = max(1, math.ceil(low * S - 1e-9))
            k1 = max(k0, math.floor(high * S + 1e-9))
            k = (strata * (k1 - k0 + 1)).long().clamp(max=k1 - k0) + k0  # (B, nb) in k0..k1
            rank = u.reshape(B, nb, S).argsort(-1).argsort(-1)  # a random order per block
            mask = (rank < k[..., None]).reshape(B, L)
            weight = (k1 - k0 + 1) / k.double()
        aux = {**batch.aux, "mask": mask.to(x.device), "weight": weight.to(x.device)}
        return Batch(x, batch.y, batch.noise, t, aux)

    def loss(self, batch: Batch, generator: torch.Generator | None = None) -> torch.Tensor:
        """The continuous-time negative ELBO (·) in nats per character:
        ``Σ_blocks weight · Σ_{l masked} CE_l / L``, averaged over the batch."""
        if "mask" not in batch.aux:
            batch = self.prepare(batch, generator)
        x, mask = batch.x, batch.aux["mask"]
        L = x.shape[1]
        z = x.masked_fill(mask, self.mask_id)
        logits = self.pair_logits(z, x)
        ce = -self.log_terms(logits, x)  # (B, L)
        w = batch.aux["weight"].to(ce.dtype).repeat_interleave(self.block(L), dim=1)  # (B, L)
        return (w * ce * mask).sum(1).mean() / L

    # --- likelihood -------------------------------------------------------------------------------
    @torch.no_grad()
    def log_prob(
        self,
        x: torch.Tensor,
        *,
        elbo_samples: int | None = None,
        generator: torch.Generator | None = None,
        chunk: int = 256,
        block_size: int | None = None,
    ) -> LogProb:
        """The continuous-time ELBO ``≤ log p(x)`` in nats per window ``x`` ``(B, L)``, estimated
        with ``elbo_samples`` mask draws per window (their sizes stratified; see the module
        docstring), with each window's standard error. ``chunk``: sequences per pass.
        ``block_size``: block diffusion's blocks (default: the model's; MDLM takes none). With
        blocks of 1 the bound is tight: the exact likelihood, labelled ``exact``, in one pass."""
        x = self._check_ids(x)
        S = self.block(x.shape[1], block_size)
        K = int(elbo_samples or self.config.elbo_samples)
        if K < 1:
            raise ConfigError(f"elbo_samples must be at least 1, got {K}")
        B, L = x.shape
        if S == 1:  # one character per block, always masked: the exact autoregressive likelihood
            values = [self._count_terms(part, 1, generator, S)[:, 0] for part in chunks(x, chunk)]
            note = "exact: blocks of 1 character, each predicted from the ones before it"
            return LogProb(torch.cat(values), "exact", nfe=1, note=note)
        values, errors = [], []
        for part in chunks(x, max(1, chunk // K)):
            terms = self._count_terms(part, K, generator, S)  # (b, K)
            values.append(terms.mean(1))
            errors.append(terms.std(1) / math.sqrt(K) if K > 1 else torch.zeros(len(part)))
        note = (
            f"continuous-time ELBO (masked diffusion{self._blocks_note(L, S)}), {K} mask draws per "
            f"window of {L} characters, their sizes stratified; the standard error ignores the "
            "stratification (conservative)"
        )
        return LogProb(torch.cat(values), "elbo", nfe=K, stderr=torch.cat(errors), note=note)

    def _blocks_note(self, L: int, S: int) -> str:
        return "" if S == L else f" in blocks of {S}"

    def _count_terms(
        self, x: torch.Tensor, K: int, generator: torch.Generator | None, S: int
    ) -> torch.Tensor:
        """``(n, K)`` unbiased draws of the ELBO of each window: the sum over its blocks (of
        ``S`` characters) of ``S/k · Σ_{l∈M} log x_θ``, with ``k = |M|`` uniform on ``1..S``
        (stratified over the ``K`` draws) and ``M`` uniform among the sets of that size."""
        n, L = x.shape
        nb = L // S
        dev = generator.device if generator is not None else torch.device("cpu")
        u = torch.rand((n, nb, K), generator=generator, dtype=torch.float64, device=dev).cpu()
        strata = (torch.arange(K, dtype=torch.float64) + u) / K  # (n, nb, K) in [0, 1)
        k = ((strata * S).long().clamp(max=S - 1) + 1).transpose(1, 2)  # (n, K, nb) in 1..S
        scores = torch.rand((n, K, nb, S), generator=generator, device=dev).cpu()
        rank = scores.argsort(-1).argsort(-1)  # a uniform random order within each block
        mask = (rank < k[..., None]).reshape(n, K, L).to(x.device)  # exactly k per block
        xs = x[:, None].expand(n, K, L).reshape(n * K, L)
        z = xs.masked_fill(mask.reshape(n * K, L), self.mask_id)
        lp = self.log_terms(self.pair_logits(z, xs, S).double(), xs).reshape(n, K, L)
        weight = (S / k.to(lp)).repeat_interleave(S, dim=-1)  # (n, K, L)
        return (lp * mask * weight).sum(-1)

    def _block_masks(self, L: int, S: int, device: torch.device) -> torch.Tensor:
        """Every non-empty mask lying within one block of ``S`` ``(M, L)`` (``S <= 12``)."""
        if S > 12:
            raise ValueError("the exact bounds enumerate 2^S masks per block: S <= 12 only")
        within = [[(m >> j) & 1 for j in range(S)] for m in range(1, 2**S)]
        out = []
        for blk in range(L // S):
            for w in within:
                row = [0] * L
                row[blk * S : (blk + 1) * S] = w
                out.append(row)
        return torch.tensor(out, dtype=torch.bool, device=device)

    @torch.no_grad()
    def discrete_elbo(
        self, x: torch.Tensor, steps: int, block_size: int | None = None
    ) -> torch.Tensor:
        """The ELBO ``(B,)`` in nats of the ``steps``-step chain the sampler draws from (in each
        block), exact: every mask of each block enumerated (blocks of at most 12); see the module
        docstring."""
        x = self._check_ids(x)
        B, L = x.shape
        S = self.block(L, block_size)
        masks = self._block_masks(L, S, x.device)  # (M, L)
        lp = self._masked_log_probs(x, masks, S)  # (B, M): Σ_{l∈M} log x_θ
        k = masks.sum(1).double()
        L = S  # a mask's probability is over its block
        grid = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
        alpha = self.schedule.alpha(grid)
        total = torch.zeros(B, dtype=torch.float64, device=x.device)
        for i in range(1, steps + 1):
            s_mask = 1.0 - alpha[i]  # P(a character is masked at t_i)
            q = s_mask**k * (1 - s_mask) ** (L - k)  # (M,) P(z_{t_i} has exactly this mask)
            coef = (alpha[i - 1] - alpha[i]) / (1.0 - alpha[i])
            total = total + coef * (lp * q.to(lp)).sum(1)
        return total

    @torch.no_grad()
    def continuous_elbo_exact(self, x: torch.Tensor, block_size: int | None = None) -> torch.Tensor:
        """The continuous-time ELBO ``(B,)`` in nats with every mask of each block (of ``S``
        characters, at most 12) enumerated: ``Σ_M (|M| − 1)! (S − |M|)! / S! · Σ_{l∈M} log x_θ``."""
        x = self._check_ids(x)
        L = self.block(x.shape[1], block_size)
        masks = self._block_masks(x.shape[1], L, x.device)
        k = masks.sum(1).tolist()
        w = torch.tensor(
            [math.factorial(j - 1) * math.factorial(L - j) / math.factorial(L) for j in k],
            dtype=torch.float64,
        )
        return (self._masked_log_probs(x, masks, L) * w.to(x.device)).sum(1)

    def _masked_log_probs(self, x: torch.Tensor, masks: torch.Tensor, S: int) -> torch.Tensor:
        """``Σ_{l∈M} log x_θ(x with M masked)_l[x_l]`` ``(B, M)`` for every mask of ``masks``."""
        B, L = x.shape
        M = len(masks)
        xs = x[:, None].expand(B, M, L)
        z = xs.masked_fill(masks[None], self.mask_id).reshape(B * M, L)
        logits = self.pair_logits(z, xs.reshape(B * M, L), S).double()
        lp = self.log_terms(logits, xs.reshape(B * M, L)).reshape(B, M, L)
        return (lp * masks[None]).sum(-1)

    def _check_ids(self, x: torch.Tensor) -> torch.Tensor:
        return check_windows(x, self.family, self.vocab_size, self.device, self.config.context)

    # --- sampling -------------------------------------------------------------------------------
    def check_options(self, options) -> None:
        if options["steps"] < 1:
            raise ConfigError(f"steps must be at least 1, got {options['steps']}")
        if options["length"] < 0:
            raise ConfigError(f"length must be at least 0 (0: up to the context), got "
                              f"{options['length']}")  # fmt: skip
        self.start(options)  # the prompt or template fits and uses known characters

    def _encode(self, what: str, text: str) -> torch.Tensor:
        try:
            return encode(text, self.spec.vocab, strict=True)
        except DataError as e:
            raise ConfigError(f"{what}: {e}") from None

    def start(self, options) -> torch.Tensor:
        """The sampler's first state ``(L,)``: the prompt's ids then masks, or the infill template
        with its blanks masked."""
        prompt, infill, C = options["prompt"], options["infill"], self.config.context
        if infill:
            if prompt:
                raise ConfigError("give a prompt or an infill template, not both")
            self._encode("infill", infill.replace(BLANK, ""))  # names every unknown character
            parts = []  # each stretch of given text encoded, each blank one masked token
            for piece in re.split(f"({re.escape(BLANK)}+)", infill):
                if piece.startswith(BLANK):
                    parts.append(torch.full((len(piece),), self.mask_id, dtype=torch.long))
                elif piece:
                    parts.append(self._encode("infill", piece))
            z = torch.cat(parts)
            if len(z) > self._max_length():
                raise ConfigError(self._too_long("the infill template", len(z)))
            return z
        ids = self._encode("prompt", prompt) if prompt else torch.zeros(0, dtype=torch.long)
        P = len(ids)
        length = options["length"] or max(0, min(self._max_length(), C) - P)
        if P + length > self._max_length():
            raise ConfigError(self._too_long(f"a prompt of {P} + length {length}", P + length))
        if length < 1:
            raise ConfigError(f"the prompt of {P} characters fills the context of {C}: nothing "
                              "left to sample")  # fmt: skip
        return torch.cat([ids, torch.full((length,), self.mask_id, dtype=torch.long)])

    def _max_length(self) -> int:
        return self.config.context

    def _too_long(self, what: str, n: int) -> str:
        return (
            f"{what} is {n} characters, more than the context of {self.config.context} "
            "(block diffusion, bd3lm, samples any length)"
        )

    def _sample(
        self,
        n: int,
        *,
        labels: torch.Tensor | None,
        generator: torch.Generator | None,
        steps: int,
        length: int,
        prompt: str,
        infill: str,
        cache: bool,
    ) -> SampleResult:
        z = self.start({"prompt": prompt, "infill": infill, "length": length})
        z = z.to(self.device)[None].repeat(n, 1)  # (n, L)
        z, nfe = self.denoise(z, steps, generator, cache)
        return SampleResult(z, nfe)

    def denoise(
        self,
        z: torch.Tensor,
        steps: int,
        generator: torch.Generator | None,
        cache: bool = True,
        logits_fn=None,
        fill=None,
    ) -> tuple[torch.Tensor, int]:
        """Run the ``steps``-step ancestral sampler from ``z`` ``(n, L)`` (masks where to draw,
        every other character kept): the filled ``z`` and the number of network passes.
        ``logits_fn``: the denoiser (default :meth:`logits`); ``fill``: the step's categorical
        (default :meth:`fill_probs`).

        With ``cache``, a row's output is reused until one of its characters changes; with the
        default denoiser (rows independent) only the rows that changed are passed through the
        network again (a pass over some rows counts as one), otherwise the whole batch is, once
        any row changed."""
        rowwise = logits_fn is None
        logits_fn = logits_fn or self.logits
        fill = fill or self.fill_probs
        alpha = self.schedule.alpha(torch.linspace(0, 1, steps + 1, dtype=torch.float64))
        n, L = z.shape
        V = self.vocab_size
        logits, nfe, stale = None, 0, None
        for i in step_range(steps, 0, -1):  # from t_i to t_{i-1}
            masked = z == self.mask_id  # (n, L)
            if logits is None or not cache:
                logits = logits_fn(z)  # (n, L, V)
                nfe += 1
            elif stale is not None:  # the rows that changed at the last step
                logits[stale] = logits_fn(z[stale])
                nfe += 1
            cat = fill(logits, alpha, i)  # (n, L, V + 1)
            draw = draw_categorical(cat.reshape(n * L, V + 1), generator).reshape(n, L)
            new = torch.where(masked & (draw < V), draw.to(z.device), z)
            changed = (new != z).any(dim=1)  # (n,)
            stale = None
            if bool(changed.any()):  # the next step needs a new pass for these rows
                if rowwise:
                    stale = changed
                else:
                    logits = None
            z = new
        if bool((z == self.mask_id).any()):  # the last step fills every mask (α_0 = 1)
            raise RuntimeError("the sampler left a mask token (a bug)")
        return z, nfe


__all__ = ["MDLM", "MDLMConfig", "Schedule", "stratified_times"]
