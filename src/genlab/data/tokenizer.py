"""Tokenizers of text: characters, UTF-8 bytes, or byte-level BPE; what a text model reads.

``data.options.tokenizer`` picks one (``char``, the default, ``bytes`` or ``bpe`` with
``data.options.vocab_size``); it is built from the *training split only* and saved in the run (in
the model's spec, as JSON: no pickle), so training, evaluation, sampling, prompts and infilling
all use the same one.

- ``char``: one token per character of the training text (sorted), plus one **escape** token
  (the last id) that stands for any character the training text lacks. The model learns the
  escape's probability like any token's; the character it stands for is then coded by its UTF-8
  bytes at a stated 8 bits each (:meth:`Tokenizer.escapes`), so any text has a finite, honest
  likelihood. An escape decodes to U+FFFD.
- ``bytes``: the 256 byte values of UTF-8; never meets an unknown character.
- ``bpe``: byte-level BPE (Hugging Face ``tokenizers``, GPT-2's pre-tokenization) trained on the
  training text, ``vocab_size`` ids of which the first 256 are the bytes, so it too never meets an
  unknown character. Decoding ids that do not form valid UTF-8 gives U+FFFD in their place.

A model's figures are reported per character: the nats of a stretch of tokens over the number of
characters that *begin* in it (:meth:`Tokenizer.chars_per_token`: a character split across
tokens is counted once, in the token holding its first byte).

The spec a run saves: ``{"kind": "char", "chars": ..., "escape": true}``, ``{"kind": "bytes"}``
or ``{"kind": "bpe", "json": <the tokenizers JSON>, "sha256": ...}``. A plain string is the
character vocabulary of runs saved before tokenizers existed (no escape: an unknown character
is an error, as it was).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch

from genlab.errors import DataError

KINDS = ("char", "bytes", "bpe")
REPLACEMENT = "\ufffd"  # what an escape, or bytes that are not UTF-8, decode to
BYTE_NATS = math.log(256.0)  # the stated cost of one byte of an escaped character
PIECE = 1 << 16  # characters per piece when BPE learns from or encodes a long text
GROUP = 8  # pieces encoded at once (in parallel threads)


class Tokenizer:
    """Text <-> token ids ``0 .. vocab_size - 1``."""

    kind: str = ""
    vocab_size: int = 0
    escape_id: int | None = None  # the escape token's id (``char`` only)

    def encode(self, text: str, strict: bool = False) -> np.ndarray:
        """int64 ids of ``text``; ``strict``: a character that would be escaped is a DataError
        that lists them (for prompts and templates)."""
        raise NotImplementedError

    def decode(self, ids: Any) -> str:
        """The text of ``ids`` (any ids in range; invalid ones are a DataError)."""
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:
        """What a run saves to rebuild this tokenizer (JSON-able)."""
        raise NotImplementedError

    def chars_per_token(self) -> np.ndarray:
        """``(vocab_size,)`` int64: the number of characters that begin in each token."""
        raise NotImplementedError

    def escapes(self, text: str) -> np.ndarray:
        """The UTF-8 byte counts of the characters of ``text`` that the tokenizer escapes, in
        order (one per escape token of ``encode(text)``); their bytes cost ``BYTE_NATS`` each."""
        return np.zeros(0, dtype=np.int64)

    def ids_tensor(self, text: str, strict: bool = False) -> torch.Tensor:
        return torch.from_numpy(self.encode(text, strict))

    def _check_ids(self, ids: Any) -> list[int]:
        ids = torch.as_tensor(ids).reshape(-1).tolist()
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise DataError(
                f"token id {bad[0]} is outside the vocabulary of {self.vocab_size} "
                f"({self.describe()})"
            )
        return ids

    def describe(self) -> str:
        return f"{self.kind} tokenizer, {self.vocab_size} ids"


class CharTokenizer(Tokenizer):
    """One id per character of ``chars``; with ``escape``, one more id for any other character."""

    kind = "char"

    def __init__(self, chars: str, escape: bool = True) -> None:
        self.chars, self.escape = chars, escape
        self.vocab_size = len(chars) + (1 if escape else 0)
        self.escape_id = len(chars) if escape else None
        table = np.frombuffer(chars.encode("utf-32-le"), dtype=np.uint32)
        self._order = np.argsort(table, kind="stable")
        self._sorted = table[self._order]

    def _lookup(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """(ids, whether each character is in ``chars``)."""
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        if not len(self._sorted):
            return np.zeros(len(codes), np.int64), np.zeros(len(codes), bool)
        pos = np.searchsorted(self._sorted, codes).clip(0, len(self._sorted) - 1)
        known = self._sorted[pos] == codes
        return self._order[pos].astype(np.int64), known

    def encode(self, text: str, strict: bool = False) -> np.ndarray:
        ids, known = self._lookup(text)
        if not known.all():
            if self.escape_id is None or strict:
                raise DataError(
                    unknown_characters(text, self.chars, np.flatnonzero(~known).tolist())
                )
            ids[~known] = self.escape_id
        return ids

    def escapes(self, text: str) -> np.ndarray:
        _, known = self._lookup(text)
        where = np.flatnonzero(~known)
        return np.array([len(text[i].encode("utf-8")) for i in where], dtype=np.int64)

    def decode(self, ids: Any) -> str:
        table = self.chars + (REPLACEMENT if self.escape else "")
        return "".join(table[i] for i in self._check_ids(ids))

    def spec(self) -> dict[str, Any]:
        return {"kind": "char", "chars": self.chars, "escape": self.escape}

    def chars_per_token(self) -> np.ndarray:
        return np.ones(self.vocab_size, dtype=np.int64)

    def describe(self) -> str:
        esc = " and an escape" if self.escape else ""
        return f"{len(self.chars)} characters of the training text{esc}"


class BytesTokenizer(Tokenizer):
    """The 256 byte values of the text's UTF-8."""

    kind = "bytes"
    vocab_size = 256

    def encode(self, text: str, strict: bool = False) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)

    def decode(self, ids: Any) -> str:
        return bytes(self._check_ids(ids)).decode("utf-8", errors="replace")

    def spec(self) -> dict[str, Any]:
        return {"kind": "bytes"}

    def chars_per_token(self) -> np.ndarray:
        return lead_bytes(np.arange(256)).astype(np.int64)

    def describe(self) -> str:
        return "the 256 bytes of UTF-8"


class BPETokenizer(Tokenizer):
    """Byte-level BPE from a Hugging Face ``tokenizers`` JSON."""

    kind = "bpe"

    def __init__(self, json_str: str) -> None:
        from tokenizers import Tokenizer as HFTokenizer

        self.json = json_str
        self.hf = HFTokenizer.from_str(json_str)
        self.vocab_size = self.hf.get_vocab_size()
        to_byte = {c: b for b, c in byte_alphabet().items()}
        self._bytes = [b""] * self.vocab_size
        for token, i in self.hf.get_vocab().items():
            self._bytes[i] = bytes(to_byte[c] for c in token)
        self._chars = np.array(
            [int(lead_bytes(np.frombuffer(b, np.uint8)).sum()) for b in self._bytes], dtype=np.int64
        )

    @staticmethod
    def train(texts: Iterable[str], vocab_size: int) -> BPETokenizer:
        """A byte-level BPE of ``vocab_size`` ids (at least 256: the bytes) learnt from ``texts``
        (the training split, in pieces)."""
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        if vocab_size < 256:
            raise DataError(
                f"data.options.vocab_size must be at least 256 for a byte-level BPE (its first "
                f"256 ids are the bytes), got {vocab_size}"
            )
        hf = HFTokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            special_tokens=[],
            show_progress=False,
        )
        pieces = (p for t in texts for p in split_pieces(t, PIECE))  # small: the trainer's
        hf.train_from_iterator(pieces, trainer=trainer)  # memory grows with its longest item
        return BPETokenizer(hf.to_str())

    def encode(self, text: str, strict: bool = False) -> np.ndarray:
        pieces, out = list(split_pieces(text, PIECE)), []
        fast = getattr(self.hf, "encode_batch_fast", self.hf.encode_batch)  # no offsets kept
        for i in range(0, len(pieces), GROUP):  # a few pieces at a time: Encodings are large
            out += [np.asarray(e.ids, dtype=np.int64) for e in fast(pieces[i : i + GROUP])]
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)

    def decode(self, ids: Any) -> str:
        return b"".join(self._bytes[i] for i in self._check_ids(ids)).decode(
            "utf-8", errors="replace"
        )

    def spec(self) -> dict[str, Any]:
        return {
            "kind": "bpe",
            "json": self.json,
            "sha256": hashlib.sha256(self.json.encode()).hexdigest(),
        }

    def chars_per_token(self) -> np.ndarray:
        return self._chars

    def describe(self) -> str:
        return f"byte-level BPE of {self.vocab_size} ids"


def unknown_characters(text: str, vocab: str, where: list[int] | None = None) -> str:
    """The message for the characters of ``text`` outside ``vocab`` (at positions ``where``, when
    known): each distinct one with its first position, at most 10 of them."""
    where = [i for i, c in enumerate(text) if c not in set(vocab)] if where is None else where
    first: dict[str, int] = {}
    for i in where:
        first.setdefault(text[i], i)
    shown = [f"{c!r} (first at position {i})" for c, i in list(first.items())[:10]]
    more = f" and {len(first) - 10} more" if len(first) > 10 else ""
    verb = "is" if len(first) == 1 else "are"
    what = "character" if len(first) == 1 else f"{len(first)} characters"
    return (
        f"{what} {', '.join(shown)}{more} {verb} not in the vocabulary ({len(vocab)} characters "
        "of the training text)"
    )


def lead_bytes(b: np.ndarray) -> np.ndarray:
    """Whether each byte value begins a character in UTF-8 (is not a continuation byte)."""
    return (np.asarray(b) & 0xC0) != 0x80


def byte_alphabet() -> dict[int, str]:
    """Byte-level BPE's printable stand-in for each byte (Radford et al. 2019, GPT-2): the
    printable Latin-1 bytes stand for themselves, the others for U+0100 onwards, in order."""
    keep = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    out = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in out:
            out[b] = chr(256 + extra)
            extra += 1
    return out


def split_pieces(text: str, size: int) -> Iterator[str]:
    """``text`` in pieces of about ``size`` characters cut just after a newline that a
    non-space character follows, where byte-level BPE's pre-tokenization cuts anyway, so the
    pieces encode to exactly the tokens of the whole (a stretch without such a newline is cut
    where ``size`` ends)."""
    start = 0
    while len(text) - start > size:
        cut = text.find("\n", start + size)
        while cut != -1 and cut + 1 < len(text) and text[cut + 1].isspace():
            cut = text.find("\n", cut + 1)
        if cut == -1 or cut + 1 >= len(text):
            break
        yield text[start : cut + 1]
        start = cut + 1
    if start < len(text) or not text:
        yield text[start:]


def train_tokenizer(kind: str, texts: Iterable[str], vocab_size: int | None) -> Tokenizer:
    """A tokenizer of ``kind`` built from the training text (``texts``: its pieces)."""
    if kind not in KINDS:
        raise DataError(f"data.options.tokenizer must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind != "bpe" and vocab_size is not None:
        raise DataError(
            f"data.options.vocab_size applies to the bpe tokenizer only (the {kind} tokenizer's "
            "vocabulary is fixed by the text)"
        )
    if kind == "bytes":
        return BytesTokenizer()
    if kind == "bpe":
        return BPETokenizer.train(texts, 4096 if vocab_size is None else int(vocab_size))
    chars: set[str] = set()
    for t in texts:
        chars.update(t)
    return CharTokenizer("".join(sorted(chars)), escape=True)


_CACHE: dict[str, Tokenizer] = {}


def tokenizer_of(vocab: str | dict[str, Any] | Tokenizer) -> Tokenizer:
    """The tokenizer a spec describes (a plain string: a character vocabulary without escape)."""
    if isinstance(vocab, Tokenizer):
        return vocab
    if isinstance(vocab, str):
        key = "str:" + vocab
    elif isinstance(vocab, dict) and vocab.get("kind") in KINDS:
        kind = vocab["kind"]
        if kind == "bpe":  # the JSON's own hash when the spec does not carry it
            sha = vocab.get("sha256") or hashlib.sha256(vocab["json"].encode()).hexdigest()
            key = "bpe:" + sha
        else:
            key = f"{kind}:{vocab.get('escape')}:{vocab.get('chars', '')}"
    else:
        raise DataError(f"not a tokenizer spec: {str(vocab)[:80]!r}")
    tok = _CACHE.get(key)
    if tok is None:
        if isinstance(vocab, str):
            tok = CharTokenizer(vocab, escape=False)
        elif vocab["kind"] == "char":
            tok = CharTokenizer(vocab["chars"], escape=bool(vocab.get("escape", True)))
        elif vocab["kind"] == "bytes":
            tok = BytesTokenizer()
        else:
            tok = BPETokenizer(vocab["json"])
        if len(_CACHE) > 32:
            _CACHE.clear()
        _CACHE[key] = tok
    return tok
