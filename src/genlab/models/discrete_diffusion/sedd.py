"""Score entropy discrete diffusion (SEDD) over characters: absorbing and uniform transitions.

**The forward process** is a continuous-time Markov chain per character with rates
``σ(t) Q`` (Lou et al. 2024, sec. 2), written with the schedule's ``α(t) = exp(−σ̄(t))``
(:class:`~genlab.models.discrete_diffusion.mdlm.Schedule`; ``σ = −α'/α``):

- ``absorb``: a character jumps to the mask token (an extra id) at rate ``σ(t)``: it is still
  itself with probability ``α(t)``, masked otherwise (the forward process of MDLM);
- ``uniform``: it jumps to any of the ``N`` characters at rate ``σ(t)/N``: it is still itself with
  probability ``α + (1 − α)/N`` and any given other character with ``(1 − α)/N``.

**The network** gives, for every position ``i`` and character ``y``, the log of a *concrete
score* ``s_θ(x_t, t)_{i,y} ≈ p_t(x_t with x_i → y) / p_t(x_t)``, a positive ratio, not a
distribution. ``absorb``: the scaled parameterization of the paper (sec. 3.3 and appendix),
``s_y = exp(o_y) · α/(1 − α)`` at a masked position with the network's output ``o`` (offset by
``−log V``, so that an untrained network starts near normalised scores), which needs no time
input; ``uniform``: ``s_y = exp(o_y)`` from a network that also reads ``t`` (a sinusoidal time
embedding added to the character embeddings).

**The bound** (diffusion-weighted denoising score entropy, Lou et al. 2024, eq. 10 and thm. 3.6):
``−log p_θ(x) ≤ ∫_0^T E_{x_t ~ p_{t|0}(·|x)} Σ_i Σ_{y ≠ x_t^i} σ(t) Q(x_t^i, y)
[s_y − r_y log s_y + K(r_y)] dt + KL(p_{T|0}(·|x) ‖ p_T)``, ``r_y = p_{t|0}(y|x)/p_{t|0}(x_t^i|x)``,
``K(r) = r (log r − 1)``, where ``p_θ`` is the law of the reverse chain (rate ``σ(t) Q(y, a) s_y`` from
``a`` to ``y``) started from ``p_T``:

- ``absorb``, ``T = 1``, ``p_T`` every character masked (KL 0): only masked positions count, and
  with the scaled scores the bracket times ``σ`` is ``w(t) · (Σ_y e^{o_y} − o_x − 1)``,
  ``w = −α'/(1 − α)``: MDLM's bound (:mod:`.mdlm`) with ``−log softmax(o)_x`` replaced by
  ``Σ_y e^{o_y} − o_x − 1``, which is larger unless the scores are normalised. So the family
  reuses MDLM's estimators (times or mask counts, stratified) and its exact enumerations;
- ``uniform``, ``T = model.t_max < 1`` (the rate ``σ`` grows without bound as ``t → 1``),
  ``p_T`` uniform over the characters, the KL computed exactly; times drawn stratified on
  ``[0, T]``, the integrand is bounded there.

Training draws every time, mask and substitution in ``prepare`` from the step's generator. The
held-out figure (``genlab eval``) is this bound with ``elbo_samples`` stratified draws per
window and its standard error. A test solves the reverse chain of a tiny model exactly
(matrix exponentials on a fine time grid) and checks the bound against its log-likelihood, for
both transitions.

**Samplers** (``--sampler``, ``--steps``; Lou et al. 2024, sec. 4.1): ``euler``, a step of the
reverse rates (jump to ``y`` with probability ``Δt · σ(t) Q(y, a) s_y``, the rest: stay; clamped
and renormalised); ``tweedie``, τ-leaping with the Tweedie denoiser
``p(x_r = y | x_t) ∝ [exp(−(σ̄_t − σ̄_r)Q) s]_y · exp((σ̄_t − σ̄_r)Q)(a, y)``, each position
independently. The last ``absorb`` step fills every remaining mask, so no sample holds one. Draws
are float64 inversions of the CDF, as MDLM's. ``cache`` (absorb only, whose network does not see
``t``) reuses the output on steps where nothing changed. ``prompt`` and ``infill`` as MDLM (the
given characters never change; a ``uniform`` sampler starts the blanks from uniform draws).

Reference:
    Lou, Meng & Ermon (2024), "Discrete Diffusion Modeling by Estimating the Ratios of the Data
    Distribution", ICML.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from genlab.data.base import Batch
from genlab.errors import ConfigError
from genlab.models.base import FROM_CONFIG, LogProb, ModelSpec, SampleOption, SampleResult
from genlab.models.discrete_diffusion.mdlm import MDLM, MDLMConfig, stratified_times
from genlab.models.shared import draw_categorical
from genlab.progress import chunks, step_range
from genlab.registry import MODELS, TEXT_SAMPLERS

TRANSITIONS = ("absorb", "uniform")


# --- the samplers: one reverse step for each transition ------------------------------------------
@TEXT_SAMPLERS.register(
    "tweedie", help="τ-leaping with the Tweedie denoiser (Lou et al. 2024, sec. 4.1)",
    families=("sedd",),
)  # fmt: skip
class Tweedie:
    @staticmethod
    def absorb(e: torch.Tensor, move: float, rate: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``(jump, stay)`` of a masked character: ``y`` with ``move · e^{o_y}`` (normalised
        afterwards), stay ``1 − move`` (``move = (α_r − α_s)/(1 − α_s)``)."""
        jump = e * move
        return jump, jump.new_full((*jump.shape[:2], 1), 1.0 - move)

    @staticmethod
    def uniform(s: torch.Tensor, cur: torch.Tensor, d: float, rate: float) -> torch.Tensor:
        """Probabilities ``(n, L, N)``: ``exp(−ΔQ) s`` times ``exp(ΔQ)(a, ·)``, ``Δ = σ̄_t − σ̄_r``."""
        N = s.shape[-1]
        back = math.exp(d) * s + (1 - math.exp(d)) * s.mean(-1, keepdim=True)
        fwd = math.exp(-d) * cur + (1 - math.exp(-d)) / N
        return (back * fwd).clamp(min=0.0)


@TEXT_SAMPLERS.register(
    "euler", help="an Euler step of the reverse rates, clamped (Lou et al. 2024, sec. 4.1)",
    families=("sedd",),
)  # fmt: skip
class Euler:
    @staticmethod
    def absorb(e: torch.Tensor, move: float, rate: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``(jump, stay)``: ``y`` with ``Δt · w(t_s) · e^{o_y}``, stay ``1 − Σ`` clamped at 0."""
        jump = e * rate
        return jump, (1.0 - jump.sum(-1, keepdim=True)).clamp(min=0.0)

    @staticmethod
    def uniform(s: torch.Tensor, cur: torch.Tensor, d: float, rate: float) -> torch.Tensor:
        """Probabilities ``(n, L, N)``: jump to ``y`` with ``Δt · σ(t)/N · s_y``, the rest stays."""
        jump = rate * s * (1 - cur)
        return jump + cur * (1.0 - jump.sum(-1, keepdim=True)).clamp(min=0.0)


def text_sampler(name: str, family: str):
    """The registered text sampler ``name`` that ``family`` takes; a :class:`ConfigError` naming
    the ones it takes (and a close one, on a typo) otherwise."""
    takes = [e.name for e in TEXT_SAMPLERS.in_order() if family in e.meta.get("families", ())]
    if name not in takes:
        close = difflib.get_close_matches(str(name), takes, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"sampler must be one of {', '.join(takes)}, got {name!r}{hint}")
    return TEXT_SAMPLERS.get(name)


@dataclass
class SEDDConfig(MDLMConfig):
    transition: str = "absorb"  # absorb (to a mask token) or uniform (to any character)
    sampler: str = "tweedie"  # tweedie (τ-leaping, Tweedie denoiser) or euler
    t_max: float = 0.99  # uniform: the forward process ends at T = t_max (prior KL added)


def score_entropy(o: torch.Tensor, r: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``Σ_y keep_y · (e^{o_y} − r_y o_y + K(r_y))``, ``K(r) = r (log r − 1)`` (0 at ``r = 0``):
    the score entropy of log-scores ``o`` against true ratios ``r``, over the last axis."""
    K = torch.where(r > 0, r * (torch.log(r.clamp(min=1e-300)) - 1), torch.zeros_like(r))
    return ((o.exp() - r * o + K) * keep).sum(-1)


class TimeEmbedding(nn.Module):
    """``t`` ``(B,)`` -> ``(B, hidden)``: sinusoidal features of ``1000 t``, then an MLP."""

    def __init__(self, hidden: int, features: int = 32) -> None:
        super().__init__()
        self.features = features
        self.mlp = nn.Sequential(nn.Linear(features, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.features // 2
        freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=t.device) / half)
        angles = 1000.0 * t.to(freqs.dtype)[:, None] * freqs  # (B, half)
        w = self.mlp[0].weight
        return self.mlp(torch.cat([angles.sin(), angles.cos()], -1).to(w.dtype))


@MODELS.register(
    "sedd", help="score entropy discrete diffusion (Lou 2024): absorbing/uniform, Euler/Tweedie"
)
class SEDD(MDLM):
    """Score entropy discrete diffusion over windows of characters; see the module docstring."""

    Config: ClassVar[type] = SEDDConfig
    sample_options = (
        SampleOption("sampler", "a text sampler (genlab list: tweedie, euler)", str, FROM_CONFIG),
        *MDLM.sample_options,
    )

    def __init__(self, config: SEDDConfig, spec: ModelSpec) -> None:
        if config.transition not in TRANSITIONS:
            raise ConfigError(f"model.transition must be one of {', '.join(TRANSITIONS)}, got "
                              f"{config.transition!r}")  # fmt: skip
        text_sampler(config.sampler, "sedd")  # an unknown name fails here, with a suggestion
        self.uniform = config.transition == "uniform"
        if self.uniform and config.estimator != "time":
            raise ConfigError("model.estimator=count is for the absorbing transition only")
        if self.uniform and tuple(config.mask_rates) != (0.0, 1.0):
            raise ConfigError("model.mask_rates is for the absorbing transition only")
        if not 0.0 < config.t_max < 1.0:
            raise ConfigError(f"model.t_max must be in (0, 1), got {config.t_max}")
        super().__init__(config, spec)
        if self.uniform:
            self.temb = TimeEmbedding(config.hidden)

    def _mask_id(self) -> int:
        """Absorb: the extra token ``V``. Uniform: none (-1 marks a blank to draw)."""
        return -1 if self.config.transition == "uniform" else self.vocab_size

    def check_options(self, options) -> None:
        text_sampler(options["sampler"], self.family)
        super().check_options(options)

    # --- absorb: MDLM's machinery with the score entropy as the per-character term ----------------
    def logits(self, z: torch.Tensor) -> torch.Tensor:
        """Absorb: log-scores ``o`` ``(B, L, V)`` (before the ``α/(1 − α)`` scaling), offset by
        ``−log V`` so that an untrained network's scores sum to about one at each position (as
        a distribution would: the score entropy then starts near MDLM's loss, not ``V`` nats)."""
        return self.net(z) - math.log(self.vocab_size)

    def log_terms(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``−(Σ_y e^{o_y} − o_x − 1)`` ``(B, L)``: minus the scaled score entropy of a masked
        character (``≤ log softmax(o)_x``, equal when the scores are normalised)."""
        o = logits
        return o.gather(-1, x[..., None])[..., 0] - o.exp().sum(-1) + 1.0

    def fill_probs(
        self, logits: torch.Tensor, alpha: torch.Tensor, i: int, sampler: str = "tweedie"
    ) -> torch.Tensor:
        """Absorb: ``y`` with ``move · e^{o_y}`` (Tweedie: ``move = (α_r − α_s)/(1 − α_s)``, then
        normalised; Euler: ``Δt · w(t_s)``, stay ``1 − Σ``, clamped), the last step fills."""
        a_s, a_r = float(alpha[i]), float(alpha[i - 1])
        e = logits.double().exp()  # (n, L, V)
        steps = len(alpha) - 1
        t_s = torch.tensor(i / steps, dtype=torch.float64)
        rate = float(self.schedule.weight(t_s)) / steps  # Δt · σ_s · α_s / (1 − α_s)
        move = (a_r - a_s) / (1.0 - a_s)
        jump, stay = text_sampler(sampler, self.family).absorb(e, move, rate)
        if i == 1:  # t_0 = 0: every mask is filled
            stay = torch.zeros_like(stay)
        return torch.cat([jump, stay], -1)

    # --- uniform ----------------------------------------------------------------------------------
    def scores(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Uniform: log-scores ``o`` ``(B, L, N)`` of ``z`` at times ``t`` ``(B,)``."""
        emb = self.net.tok(z) + self.temb(t)[:, None]
        return self.net(embeddings=emb)

    def _sigma_bar(self, t: torch.Tensor) -> torch.Tensor:
        return -torch.log(self.schedule.alpha(t))

    def _uniform_terms(self, x: torch.Tensor, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``σ(t)/N · Σ_{y ≠ z_i} [s_y − r_y log s_y + K(r_y)]`` ``(B, L)`` for clean ``x``, noised
        ``z`` at times ``t`` ``(B,)`` float64."""
        N = self.vocab_size
        a = self.schedule.alpha(t)  # (B,)
        sigma = self.schedule.weight(t) * (1.0 - a) / a  # −α'/α
        o = self.scores(z, t)  # (B, L, N)
        p_y = ((1.0 - a) / N)[:, None, None] + a[:, None, None] * (
            torch.arange(N, device=x.device) == x[..., None]
        )  # (B, L, N): p_{t|0}(y | x_i)
        r = (p_y / p_y.gather(-1, z[..., None])).to(o.dtype)  # ratios to the current character
        keep = torch.arange(N, device=x.device) != z[..., None]
        return (sigma / N).to(o.dtype)[:, None] * score_entropy(o, r, keep)

    def _prior_kl(self, L: int) -> float:
        """``KL(p_{T|0}(·|x) ‖ uniform)`` in nats for a window of ``L`` (the same for every x)."""
        per = getattr(self, "_prior_kl_per", None)  # computed once, on the host, from the config
        if per is None:
            N = self.vocab_size
            a = float(self.schedule.alpha(torch.tensor(self.config.t_max, dtype=torch.float64)))
            same, other = a + (1 - a) / N, (1 - a) / N
            per = same * math.log(N * same) + (N - 1) * other * math.log(N * other)
            self._prior_kl_per = per
        return L * per

    def _corrupt(self, x: torch.Tensor, t: torch.Tensor, generator) -> torch.Tensor:
        """Uniform forward draws at times ``t`` ``(B,)``: each character resampled uniformly with
        probability ``1 − α(t)``."""
        dev = generator.device if generator is not None else torch.device("cpu")
        u = torch.rand(x.shape, generator=generator, dtype=torch.float64, device=dev).cpu()
        new = torch.randint(0, self.vocab_size, x.shape, generator=generator, device=dev).cpu()
        swap = (u < (1.0 - self.schedule.alpha(t))[:, None]).to(x.device)
        return torch.where(swap, new.to(x.device), x)

    def prepare(self, batch: Batch, generator: torch.Generator | None) -> Batch:
        """Absorb: MDLM's draws. Uniform: a time per window, stratified on ``[0, T]``, and the
        noised window ``aux["z"]``."""
        if not self.uniform:
            return super().prepare(batch, generator)
        x = batch.x
        t = self.config.t_max * stratified_times(len(x), generator)
        z = self._corrupt(x, t, generator)
        return Batch(x, batch.y, batch.noise, t.to(x.device), {**batch.aux, "z": z})

    def loss(self, batch: Batch, generator: torch.Generator | None = None) -> torch.Tensor:
        """The negative bound in nats per character (uniform: ``T · terms + prior KL``)."""
        if not self.uniform:
            return super().loss(batch, generator)
        if "z" not in batch.aux:
            batch = self.prepare(batch, generator)
        x, L = batch.x, batch.x.shape[1]
        terms = self._uniform_terms(x, batch.aux["z"], batch.t.double()).sum(1)  # (B,)
        total = self.config.t_max * terms + self._prior_kl(L)
        return total.mean().to(self.net.tok.weight.dtype) / L

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
        """The bound ``≤ log p(x)`` in nats per window, with its standard error (absorb: MDLM's
        estimator of it; uniform: ``elbo_samples`` stratified times on ``[0, T]`` per window)."""
        if not self.uniform:
            lp = super().log_prob(x, elbo_samples=elbo_samples, generator=generator, chunk=chunk,
                                  block_size=block_size)  # fmt: skip
            lp.note = "score entropy (absorbing), " + lp.note
            return lp
        x = self._check_ids(x)
        K = int(elbo_samples or self.config.elbo_samples)
        if K < 1:
            raise ConfigError(f"elbo_samples must be at least 1, got {K}")
        B, L = x.shape
        values, errors = [], []
        for part in chunks(x, max(1, chunk // K)):
            n = len(part)
            dev = generator.device if generator is not None else torch.device("cpu")
            u = torch.rand((n, K), generator=generator, dtype=torch.float64, device=dev).cpu()
            t = self.config.t_max * (torch.arange(K, dtype=torch.float64) + u) / K  # (n, K)
            xs = part[:, None].expand(n, K, L).reshape(n * K, L)
            z = self._corrupt(xs, t.reshape(-1), generator)
            terms = self._uniform_terms(xs, z, t.reshape(-1).to(x.device)).sum(1).reshape(n, K)
            draws = -(self.config.t_max * terms + self._prior_kl(L))  # (n, K)
            values.append(draws.mean(1))
            errors.append(draws.std(1) / math.sqrt(K) if K > 1 else torch.zeros(n))
        note = (
            f"score entropy (uniform), {K} stratified times on [0, {self.config.t_max}] per "
            f"window of {L} characters, plus the prior KL at t = {self.config.t_max}"
        )
        return LogProb(torch.cat(values), "elbo", nfe=K, stderr=torch.cat(errors), note=note)

    def continuous_elbo_exact(self, x: torch.Tensor, block_size: int | None = None):
        if self.uniform:
            raise NotImplementedError("uniform SEDD: see log_prob (tests solve the chain)")
        return super().continuous_elbo_exact(x, block_size)

    # --- sampling -------------------------------------------------------------------------------
    def _sample(
        self,
        n: int,
        *,
        labels: torch.Tensor | None,
        generator: torch.Generator | None,
        sampler: str,
        steps: int,
        length: int,
        prompt: str,
        infill: str,
        cache: bool,
    ) -> SampleResult:
        start = self.start({"prompt": prompt, "infill": infill, "length": length})
        if not self.uniform:
            z = start.to(self.device)[None].repeat(n, 1)

            def fill(logits, alpha, i):
                return self.fill_probs(logits, alpha, i, sampler)

            z, nfe = self.denoise(z, steps, generator, cache, fill=fill)
            return SampleResult(z, nfe)
        free = (start == -1).to(self.device)[None].expand(n, -1)  # (n, L): positions to draw
        dev = generator.device if generator is not None else torch.device("cpu")
        noise = torch.randint(0, self.vocab_size, (n, len(start)), generator=generator,
                              device=dev).cpu()  # fmt: skip
        z = torch.where(free, noise.to(self.device), start.clamp(min=0).to(self.device))
        T, N = self.config.t_max, self.vocab_size
        grid = torch.linspace(0, T, steps + 1, dtype=torch.float64)
        sbar = self._sigma_bar(grid)
        step = text_sampler(sampler, self.family)
        for i in step_range(steps, 0, -1):
            t = grid[i].expand(n).to(self.device)
            s = self.scores(z, t).double().exp()  # (n, L, N)
            s = s.scatter(-1, z[..., None], 1.0)  # the ratio of the current character to itself
            cur = torch.nn.functional.one_hot(z, N).double()
            a = float(self.schedule.alpha(grid[i]))
            sigma = float(self.schedule.weight(grid[i])) * (1 - a) / a
            probs = step.uniform(s, cur, float(sbar[i] - sbar[i - 1]), (T / steps) * sigma / N)
            draw = draw_categorical(probs.reshape(-1, N), generator).reshape(n, -1)
            z = torch.where(free, draw.to(self.device), z)
        return SampleResult(z, steps)


__all__ = ["SEDD", "SEDDConfig", "score_entropy"]
