"""VQ-VAE (van den Oord et al. 2017): a convolutional autoencoder whose latent map is quantized to a
codebook (:class:`~genlab.nets.quantize.VectorQuantizer`: straight-through gradients, an EMA
codebook, k-means initialization and dead-code restarts).

The encoder maps an image ``(C, H, W)`` to a ``(code_dim, h, w)`` map (``model.downsample``
stride-2 convolutions: ``h = H / 2^downsample``), each position is replaced by its nearest code,
and the decoder maps the codes back. The loss is the reconstruction's mean squared error plus the
quantizer's loss (commitment ``β``, and the codebook term without EMA). The trainer's log lines
carry the **codebook usage** (fraction of the codes used since the last line) and the
**perplexity** of the codes' frequencies (:meth:`VQVAE.training_stats`); ``genlab eval`` reports
the held-out reconstruction error, usage and perplexity.

:meth:`VQVAE.encode` gives the discrete codes ``(B, h, w)`` and :meth:`VQVAE.decode` images from
codes: the interface of a second stage (a prior over the codes, the two-stage issue). Until one is
trained, :meth:`sample` draws every position's code independently from the codes' training
frequencies (the EMA cluster sizes): a baseline prior, not a good one, so the samples show what
the codebook holds rather than digits.

Reference:
    van den Oord, Vinyals & Kavukcuoglu (2017), "Neural Discrete Representation Learning",
    NeurIPS. Razavi, van den Oord & Vinyals (2019), "Generating Diverse High-Fidelity Images with
    VQ-VAE-2" (EMA codebooks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from genlab.data.base import Batch
from genlab.errors import ConfigError
from genlab.models.autoencoders.conv_autoencoder import ConvAutoencoder
from genlab.models.base import LatentSpec, ModelSpec, SampleResult
from genlab.nets.quantize import VectorQuantizer, code_statistics
from genlab.registry import MODELS


@dataclass
class VQVAEConfig:
    codes: int = 512  # codebook size K
    code_dim: int = 16  # dimension of each code
    channels: int = 32  # feature maps (2x after the first downsampling)
    downsample: int = 2  # stride-2 convolutions: the code map is H / 2^downsample
    beta: float = 0.25  # commitment weight
    ema: bool = True  # EMA codebook (False: a codebook loss)
    decay: float = 0.99  # EMA decay
    kmeans_init: bool = True  # k-means on the first batch's encoder outputs
    restart: bool = True  # dead-code restarts from encoder outputs
    restart_threshold: float = 1.0  # EMA cluster size below which a code is dead


@MODELS.register(
    "vqvae", help="VQ-VAE: quantized autoencoder, EMA codebook, restarts (van den Oord 2017)"
)
class VQVAE(ConvAutoencoder):
    """See the module docstring."""

    Config: ClassVar[type] = VQVAEConfig

    def __init__(self, config: VQVAEConfig, spec: ModelSpec) -> None:
        super().__init__(config, spec)
        c = config
        if c.downsample < 0 or min(c.channels, c.code_dim, c.codes) < 1:
            raise ConfigError("model.downsample must be >= 0; channels, code_dim, codes >= 1")
        self._build_encoder(c.channels, c.downsample, c.code_dim)
        self.quantizer = VectorQuantizer(
            c.codes, c.code_dim, beta=c.beta, ema=c.ema, decay=c.decay,
            kmeans_init=c.kmeans_init, restart=c.restart, restart_threshold=c.restart_threshold,
        )  # fmt: skip
        self._build_decoder(c.channels, c.downsample, c.code_dim)
        self.register_buffer("window_counts", torch.zeros(c.codes), persistent=False)

    # --- the autoencoder ------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> their codes ``(B, h, w)`` (long)."""
        was = self.training
        self.eval()
        with torch.no_grad():
            idx = self.quantizer(self.encoder(x)).indices
        self.train(was)
        return idx

    def latent(self) -> LatentSpec:
        h, w = self.sizes[-1]
        return LatentSpec("codes", (h, w), self.config.codes, vectors=(self.config.code_dim, h, w))

    def encode_vectors(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> the encoder's output before quantization ``(B, code_dim, h, w)``."""
        was = self.training
        self.eval()
        with torch.no_grad():
            z = self.encoder(x)
        self.train(was)
        return z

    def decode_vectors(self, z: torch.Tensor) -> torch.Tensor:
        """Vectors ``(B, code_dim, h, w)`` -> each to its nearest code -> images (the decoder
        absorbs the quantization: ``decode_vectors(encode_vectors(x)) == decode(encode(x))``)."""
        return self.decode(self.quantizer.indices_of(z))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``(B, h, w)`` -> images ``(B, C, H, W)``."""
        return self._decode(self.quantizer.lookup(codes))

    def reconstruct(self, x: torch.Tensor):
        q = self.quantizer(self.encoder(x))
        return self._decode(q.z_q), q

    def loss(self, batch: Batch, generator: torch.Generator | None = None) -> torch.Tensor:
        """Reconstruction MSE (mean over elements) plus the quantizer's loss."""
        xhat, q = self.reconstruct(batch.x)
        self._count_codes(q.indices)
        return F.mse_loss(xhat, batch.x) + q.loss

    @torch.no_grad()
    def _count_codes(self, indices: torch.Tensor) -> None:
        """In training, add the codes of a batch to the window of :meth:`training_stats`."""
        if self.training:
            self.window_counts += torch.bincount(indices.flatten(), minlength=self.config.codes)

    def training_stats(self) -> dict[str, float]:
        """Codebook usage and code perplexity since the last call (this process's batches)."""
        if float(self.window_counts.sum()) == 0:
            return {}
        usage, perplexity = map(float, code_statistics(self.window_counts))
        self.window_counts.zero_()
        return {"codebook_usage": usage, "perplexity": perplexity}

    # --- sampling and reports -------------------------------------------------------------------
    def _sample(
        self, n: int, *, labels: torch.Tensor | None, generator: torch.Generator | None
    ) -> SampleResult:
        """Codes drawn independently per position from the codes' training frequencies."""
        freq = self.quantizer.cluster_size.double().clamp(min=0).cpu()
        if float(freq.sum()) <= 0:
            freq = torch.ones_like(freq)
        h, w = self.sizes[-1]
        idx = torch.multinomial(freq / freq.sum(), n * h * w, replacement=True, generator=generator)
        x = self.decode(idx.view(n, h, w).to(self.device))
        return SampleResult(x.clamp(-1, 1), 1)

    @torch.no_grad()
    def report(self, x, labels=None) -> dict[str, dict]:
        x = x[:2000].to(self.device)
        if len(x) == 0:
            return {}
        self.eval()
        counts = torch.zeros(self.config.codes, dtype=torch.float64)
        err = 0.0
        for chunk in torch.split(x, 256):
            xhat, q = self.reconstruct(chunk)
            err += float(F.mse_loss(xhat, chunk, reduction="sum"))
            counts += torch.bincount(
                q.indices.flatten().cpu(), minlength=self.config.codes
            ).double()
        usage, perplexity = map(float, code_statistics(counts))
        return {
            "reconstruction_mse": {"value": err / x.numel(), "unit": "per element, [-1, 1] scale",
                                   "better": "lower"},
            "codebook_usage": {"value": usage, "unit": f"of {self.config.codes} codes",
                               "better": "higher"},
            "perplexity": {"value": perplexity, "unit": "codes", "better": "higher"},
        }  # fmt: skip


__all__ = ["VQVAE", "VQVAEConfig"]
