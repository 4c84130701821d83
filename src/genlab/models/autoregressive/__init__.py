"""Autoregressive models: an exact likelihood as a product of conditionals, sampled one element at
a time (today the character-level transformer, :mod:`genlab.models.autoregressive.gpt`)."""

from genlab.models.autoregressive.gpt import GPT, GPTConfig

__all__ = ["GPT", "GPTConfig"]
