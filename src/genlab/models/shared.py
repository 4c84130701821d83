"""Helpers that several families share, kept out of any one family's module: drawing from a
categorical by inverting its CDF (the GPT, PixelCNN, the code prior, MDLM and SEDD), binarizing
intensities (the binary autoregressive models and the VAE), checking windows of token ids (the
text families) and per-channel moments over the global batch (the flows' and the vector models'
data-dependent initialisation)."""

from __future__ import annotations

import torch

from genlab.errors import DataError


def draw_categorical(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One index per row of ``probs`` ``(B, V)`` by inverting the float64 CDF at a uniform drawn
    from ``generator`` (on its device); a token of probability 0 is never drawn."""
    dev = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand((len(probs), 1), generator=generator, dtype=torch.float64, device=dev)
    cdf = probs.double().cumsum(-1)  # (B, V)
    idx = torch.searchsorted(cdf, u.to(cdf.device) * cdf[:, -1:], right=True)
    return idx[:, 0].clamp(max=probs.shape[-1] - 1)


def binarize(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Intensities in [0, 1] -> {0, 1} of the same dtype: each value 1 with probability itself
    (uniforms drawn on the CPU from ``generator``, so the draw is the same on any device). Binary
    data passes unchanged."""
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device="cpu").to(x.device)
    return (u < x).to(x.dtype)


def check_windows(
    x, family: str, vocab_size: int, device: torch.device, context: int | None = None
) -> torch.Tensor:
    """Windows of character ids ``(B, L)`` for a text family's ``log_prob``: integer, in
    ``[0, vocab_size)``, at most ``context`` long when given; as int64 on ``device``."""
    x = torch.as_tensor(x)
    if x.is_floating_point() or x.dtype == torch.bool or x.dim() != 2 or x.shape[1] < 1:
        raise DataError(
            f"{family} log_prob takes windows of character ids (B, L), int64; got {x.dtype} "
            f"of shape {tuple(x.shape)}"
        )
    if context is not None and x.shape[1] > context:
        raise DataError(
            f"windows of {x.shape[1]} characters are longer than the context of {context}"
        )
    x = x.to(dtype=torch.long)  # token files hold uint8 / uint16 / int32
    if len(x) and (int(x.min()) < 0 or int(x.max()) >= vocab_size):
        raise DataError(f"token ids must be in [0, {vocab_size - 1}]")
    return x.to(device=device)


@torch.no_grad()
def global_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (unbiased) standard deviation of ``x`` ``(B, C, ...)`` in float64,
    over the global batch under data parallelism (the sums are all-reduced across processes)."""
    flat = x.transpose(0, 1).reshape(x.shape[1], -1).double()  # (C, B·H·W)
    sums = torch.stack(
        [flat.sum(1), flat.square().sum(1), flat.new_full((len(flat),), flat.shape[1])]
    )
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(sums)  # the global batch's sums
    total, squares, count = sums
    mean = total / count
    var = (squares - count * mean**2).clamp(min=0) / (count - 1).clamp(min=1)
    return mean, var.sqrt()
