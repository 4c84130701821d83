"""Metrics of text samples: generative perplexity under an autoregressive scorer, read beside
each sample's unigram entropy (a sampler that repeats itself scores a deceptively good
perplexity)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from genlab.eval.metrics.base import Metric, register


def generative_perplexity(x: torch.Tensor, score: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """``exp`` of the scorer's mean negative log-likelihood per character of the rows of ``x``
    ``(n, L)`` (token ids): how likely an autoregressive model of the same text finds them."""
    return math.exp(-float(score(x).double().sum()) / x.numel())


def unigram_entropy(x: torch.Tensor) -> float:
    """The mean over rows of ``x`` ``(n, L)`` of the entropy, in bits, of the row's character
    frequencies. A sampler that repeats itself scores a deceptively good generative perplexity and
    a low entropy; real text of the same length sets the floor."""
    out = []
    for row in x.long():
        p = torch.bincount(row).double()
        p = p[p > 0] / len(row)
        out.append(float(-(p * p.log2()).sum()))
    return sum(out) / len(out)


_TEXT = ("tokens",)
register(
    Metric(
        "gen_ppl",
        lambda c: generative_perplexity(c.x, c.score),
        "perplexity per character",
        "generative perplexity: exp of an autoregressive scorer's nats per character of the samples",
        _TEXT,
        ("scorer",),
    ),
    Metric(
        "unigram_entropy",
        lambda c: unigram_entropy(c.x),
        "bits",
        "entropy of each sample's character frequencies (read beside gen_ppl; the floor is real text)",
        _TEXT,
        ("scorer",),  # drawn with gen_ppl: text is sampled only when there is a scorer
        toward_floor=True,  # a repetitive sampler scores low, an untrained one high
    ),
)
