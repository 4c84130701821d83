"""A character-level transformer language model (GPT): exact likelihood, ancestral sampling.

The model factorises a window of characters ``x = (x_0, ..., x_{L-1})`` as
``p(x) = Π_i p(x_i | x_{<i})`` (Radford et al. 2018, 2019), each conditional a softmax over the
vocabulary computed by a causal :class:`~genlab.nets.transformer.Transformer`.

**The start token.** Position 0 of the transformer always holds a start token, id ``V`` (the
vocabulary size; it is never predicted), then the window's characters: the input is
``[S, x_0, ..., x_{L-2}]`` and its output at position ``i`` gives ``p(x_i | x_{<i})``. Training
windows are drawn at random offsets of the text, so ``S`` means "the visible context starts here",
not "the text starts here": ``p(x_0 | S)`` is the frequency of a character at a random place.
With this convention ``log_prob`` is exact (the conditionals of one distribution over windows,
summing to one over all ``V^L`` windows; a test checks it) and needs no unigram rule.

**Beyond the context** (``L > context``): character ``x_t`` is predicted from the start token and
the ``context − 1`` characters before it (a sliding window). Sampling and ``log_prob`` use the same
rule, so ``log_prob`` is the exact log-probability of what ``sample`` draws, at any length. With the
KV cache, learned positions cannot be shifted: once the window is full, each new character costs a
full pass over the cropped window, as without the cache.

**Sampling** (``genlab sample RUN --prompt "ROMEO:" --option length=500``): ``temperature``
(0: greedy), ``top_k`` (keep the ``k`` most likely characters, those tied with the ``k``-th
included), ``top_p`` (nucleus sampling, Holtzman et al. 2020, "The curious case of neural text
degeneration": the smallest set of most likely characters whose probability reaches ``p``),
applied in that order; each character is drawn by inversion of its float64 CDF with one uniform
from the ``generator``. ``cache=False`` recomputes the whole window for every character (the
same draws, for checks and benchmarks). ``SampleResult.x`` holds the prompt's ids followed by the
``length`` generated ones; ``genlab.data.text.decode(x[i], model.spec.vocab)`` is the text. NFE
counts forward passes of the batch (one per generated character).

**Tokens**: the data's tokenizer (:mod:`genlab.data.tokenizer`: characters, bytes or BPE, built
from the training split) is saved in the spec, so prompts and samples use it. A character the
``char`` tokenizer lacks is its escape token in an evaluation file (scored, with its bytes at 8
bits each) and refused in a prompt, with a message that lists them.

Dropout draws its masks from torch's global generator (saved in checkpoints, so a resumed run is
bit-identical); with dropout, two processes draw other masks than one (the same training in law,
not bit for bit). Without dropout, nothing in training is random but the window offsets, which the
trainer draws from ``(seed, epoch)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

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


@dataclass
class GPTConfig:
    context: int = 256  # positions of the transformer, the start token included
    hidden: int = 384  # embedding width
    depth: int = 6  # transformer blocks
    heads: int = 6  # attention heads (a divisor of hidden)
    dropout: float = 0.2
    bias: bool = True  # biases in the linear layers and LayerNorms
    rope: bool = False  # rotary positions instead of learned ones (nets/transformer.py)
    length: int = 256  # sampling: characters to generate
    temperature: float = 1.0  # sampling: logits / temperature (0: greedy)
    top_k: int = 0  # sampling: keep the k most likely characters (0: all)
    top_p: float = 1.0  # sampling: nucleus mass (1: all)


@MODELS.register("gpt", help="character-level transformer (GPT), exact likelihood")
class GPT(GenerativeModel):
    """A causal transformer over characters; see the module docstring."""

    Config = GPTConfig
    data_kinds = ("tokens",)

    sample_options = (
        SampleOption("length", "characters to generate", int, FROM_CONFIG),
        SampleOption("temperature", "divides the logits (0: greedy, argmax)", float, FROM_CONFIG),
        SampleOption("top_k", "keep the k most likely characters (0: all)", int, FROM_CONFIG),
        SampleOption(
            "top_p",
            "nucleus sampling: the most likely characters up to this mass (1: all)",
            float,
            FROM_CONFIG,
        ),  # fmt: skip
        SampleOption("prompt", "text to continue (characters of the training text)", str, ""),
        SampleOption(
            "cache", "reuse keys and values of past positions (false: recompute)", bool, True
        ),
    )

    def __init__(self, config: GPTConfig, spec: ModelSpec) -> None:
        super().__init__(config, spec)
        if not spec.vocab:
            raise ConfigError(
                "a gpt model needs a vocabulary: train it on text (data.name=shakespeare or "
                "data.path=FILE.txt)"
            )
        if config.context < 2:
            raise ConfigError(f"model.context must be at least 2, got {config.context}")
        self.vocab_size = tokenizer_of(spec.vocab).vocab_size
        self.bos = self.vocab_size  # the start token's id
        c = config
        self.net = Transformer(
            tokens=self.vocab_size + 1, outputs=self.vocab_size, context=c.context,
            hidden=c.hidden, depth=c.depth, heads=c.heads, dropout=c.dropout, bias=c.bias,
            causal=True, rope=c.rope,
        )  # fmt: skip

    @classmethod
    def from_config(
        cls,
        config: GPTConfig,
        shape: tuple[int, ...],
        num_classes: int | None = None,
        vocab: str | None = None,
    ) -> GPT:
        """From a token stream (``shape == ()``) or a saved spec (``shape == (context,)``): the
        model's examples are windows of ``context`` characters."""
        if tuple(shape) not in ((), (config.context,)):
            raise ConfigError(
                f"a gpt model reads a stream of characters; got examples of shape {tuple(shape)}"
            )
        if num_classes is not None:
            raise ConfigError("a gpt model is not class-conditional: train it on text alone")
        return cls(config, ModelSpec(cls.family, (config.context,), None, vocab))

    @property
    def window(self) -> int:
        """Training examples: windows of ``context`` characters at random offsets of the text."""
        return self.config.context

    # --- training and likelihood ----------------------------------------------------------------
    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        """``[S, x_0, ..., x_{L-2}]`` ``(B, L)``: what predicts ``x`` position by position."""
        start = x.new_full((x.shape[0], 1), self.bos)
        return torch.cat([start, x[:, :-1]], dim=1)

    def players(self) -> list[Player]:
        """One player whose weight decay spares biases and LayerNorm gains (GPT-2, nanoGPT)."""
        return [Player("model", self, decay_vectors=False)]

    def loss(self, batch: Batch, generator: torch.Generator | None = None) -> torch.Tensor:
        """Next-character cross-entropy, mean nats per character over the batch's windows."""
        x = batch.x  # (B, context)
        logits = self.net(self._inputs(x))  # (B, context, V)
        return F.cross_entropy(logits.reshape(-1, self.vocab_size), x.reshape(-1))

    @torch.no_grad()
    def log_prob(self, x: torch.Tensor, *, chunk: int = 256) -> LogProb:
        """Exact ``log p(x)`` in nats of windows ``x`` ``(B, L)`` of character ids (summed over
        positions, float64). Windows longer than the context slide: ``x_t`` for ``t >= context``
        is predicted from the ``context − 1`` characters before it, one pass each. Passes run in
        batches of ``chunk`` windows."""
        x = self._check_ids(x)
        B, L = x.shape
        C = self.config.context
        lp = torch.cat([self._window_log_prob(part) for part in chunks(x[:, :C], chunk)])  # (B,)
        if L > C:  # x_t from [S, x_{t-C+1} .. x_{t-1}], t = C .. L-1
            ctx = x[:, 1 : L - 1].unfold(1, C - 1, 1)  # (B, L - C, C - 1)
            target = x[:, C:]  # (B, L - C)
            flat, tgt = ctx.reshape(-1, C - 1), target.reshape(-1)
            parts = []
            for i in range(0, len(flat), chunk):
                part = flat[i : i + chunk]
                inp = torch.cat([part.new_full((len(part), 1), self.bos), part], dim=1)  # (b, C)
                last = self.net(inp)[:, -1].double().log_softmax(-1)  # (b, V)
                parts.append(last.gather(-1, tgt[i : i + chunk, None])[:, 0])
            lp = lp + torch.cat(parts).reshape(B, L - C).sum(-1)
        return LogProb(lp, "exact", nfe=1 + max(0, L - C))

    def _window_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``Σ_i log p(x_i | S, x_{<i})`` ``(B,)`` of windows within the context, one pass."""
        logits = self.net(self._inputs(x)).double()  # (B, L, V)
        return logits.log_softmax(-1).gather(-1, x[..., None])[..., 0].sum(-1)

    def _check_ids(self, x: torch.Tensor) -> torch.Tensor:
        return check_windows(x, self.family, self.vocab_size, self.device)

    # --- sampling -------------------------------------------------------------------------------
    def check_options(self, options) -> None:
        if options["length"] < 1:
            raise ConfigError(f"length must be at least 1, got {options['length']}")
        check_truncation(options)
        self.encode_prompt(options["prompt"])

    def encode_prompt(self, prompt: str) -> torch.Tensor:
        """The prompt's token ids ``(P,)``; characters the tokenizer would escape are a
        :class:`ConfigError` that lists them."""
        try:
            return encode(prompt, self.spec.vocab, strict=True)
        except DataError as e:
            raise ConfigError(f"prompt: {e}") from None

    def _sample(
        self,
        n: int,
        *,
        labels: torch.Tensor | None,
        generator: torch.Generator | None,
        length: int,
        temperature: float,
        top_k: int,
        top_p: float,
        prompt: str,
        cache: bool,
    ) -> SampleResult:
        """``length`` characters after ``prompt`` for each of ``n`` sequences, one forward pass
        each (see the module docstring for the rules)."""
        C = self.config.context
        ids = self.encode_prompt(prompt).to(self.device)
        P = len(ids)
        seq = torch.empty((n, P + length), dtype=torch.long, device=self.device)
        seq[:, :P] = ids
        kv = self.net.new_cache(n) if cache else None
        start = seq.new_full((n, 1), self.bos)
        for t in step_range(P, P + length):  # seq[:, :t] is known; draw seq[:, t]
            if kv is not None and 0 < kv.length < C:  # the newest character at the next position
                logits = self.net(seq[:, t - 1 : t], cache=kv)[:, -1]
            else:  # the whole window: [S, the last C - 1 characters]
                window = torch.cat([start, seq[:, max(0, t - (C - 1)) : t]], dim=1)
                if kv is not None:
                    kv.clear()
                logits = self.net(window, cache=kv)[:, -1]  # (n, V)
            probs = next_token_probs(logits, temperature, top_k, top_p)
            seq[:, t] = draw_categorical(probs, generator)
        return SampleResult(seq, length)


def next_token_probs(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0
) -> torch.Tensor:
    """The distribution to draw the next token from, float64 ``(B, V)``: ``softmax(logits / T)``
    restricted to the ``top_k`` most likely tokens (ties with the k-th kept; 0: all), then to the
    nucleus, the smallest set of most likely tokens whose probability reaches ``top_p``
    (Holtzman et al. 2020, sec. 3.1; 1: all), renormalised. ``temperature = 0``: the argmax (one
    hot, the first of ties)."""
    logits = logits.double()
    if temperature == 0:
        return F.one_hot(logits.argmax(-1), logits.shape[-1]).double()
    logits = logits / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(-1)
    if top_p < 1.0:
        p, order = probs.sort(-1, descending=True)
        before = p.cumsum(-1) - p  # the mass of the more likely tokens
        keep = torch.zeros_like(probs, dtype=torch.bool).scatter(-1, order, before < top_p)
        probs = probs.masked_fill(~keep, 0.0)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


__all__ = ["GPT", "GPTConfig", "next_token_probs"]


def check_truncation(options) -> None:
    """``temperature``, ``top_k`` and ``top_p`` in range (the GPT's and the code prior's options)."""
    if options["temperature"] < 0:
        raise ConfigError(f"temperature must be >= 0, got {options['temperature']}")
    if options["top_k"] < 0:
        raise ConfigError(f"top_k must be >= 0 (0: off), got {options['top_k']}")
    if not 0.0 < options["top_p"] <= 1.0:
        raise ConfigError(f"top_p must be in (0, 1] (1: off), got {options['top_p']}")
