"""Tokenizers (char with an escape, bytes, byte-level BPE), the token cache, and bits per
character for any tokenizer on any text."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import genlab
from genlab.cli import main
from genlab.data import load, token_cache
from genlab.data.base import Dataset
from genlab.data.tokenizer import (
    BPETokenizer,
    BytesTokenizer,
    CharTokenizer,
    byte_alphabet,
    split_pieces,
    tokenizer_of,
    train_tokenizer,
)
from genlab.errors import DataError
from genlab.eval.likelihood import held_out_nll
from genlab.models.base import GenerativeModel, LogProb, ModelSpec

ROOT = Path(__file__).resolve().parents[1]
BOOK = "".join(f"{i} Über the quick brown fox — jumps over the lazy dog 🦊.\n" for i in range(300))
_BPE = {}


def bpe() -> BPETokenizer:
    if "tok" not in _BPE:
        _BPE["tok"] = BPETokenizer.train([BOOK], 300)
    return _BPE["tok"]


any_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=60)


@settings(max_examples=60, deadline=None)
@given(any_text)
def test_bytes_and_bpe_decode_their_encoding_of_any_unicode_and_count_each_character_once(text):
    for tok in (BytesTokenizer(), bpe()):
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert int(tok.chars_per_token()[ids].sum()) == len(text)


@settings(max_examples=60, deadline=None)
@given(any_text)
def test_char_tokenizer_escapes_unknown_characters_and_records_their_bytes(text):
    tok = CharTokenizer("abc \n", escape=True)
    ids = tok.encode(text)
    unknown = [c for c in text if c not in "abc \n"]
    assert len(ids) == len(text) and int((ids == tok.escape_id).sum()) == len(unknown)
    assert tok.escapes(text).tolist() == [len(c.encode("utf-8")) for c in unknown]
    assert tok.decode(ids) == "".join(c if c in "abc \n" else "\ufffd" for c in text)
    if unknown:  # strict (prompts, templates): refused, naming the first one
        with pytest.raises(
            DataError, match=re.escape(repr(unknown[0])) + ".*not in the vocabulary"
        ):
            tok.encode(text, strict=True)
    else:
        assert np.array_equal(tok.encode(text, strict=True), ids)


def test_byte_alphabet_is_byte_level_bpes_and_bpe_tokens_are_their_bytes():
    from tokenizers import pre_tokenizers

    alphabet = byte_alphabet()
    assert sorted(alphabet) == list(range(256)) and len(set(alphabet.values())) == 256
    assert set(alphabet.values()) == set(pre_tokenizers.ByteLevel.alphabet())
    tok = bpe()
    text = "Über 🦊 naïve\tcafé\r\n"
    ids = tok.encode(text)
    assert b"".join(tok._bytes[i] for i in ids) == text.encode("utf-8")
    assert tok.vocab_size == 300 and len(ids) < len(text.encode("utf-8"))


def test_bpe_training_is_deterministic_and_pieces_encode_like_the_whole():
    a, b = BPETokenizer.train([BOOK], 300), BPETokenizer.train(list(split_pieces(BOOK, 500)), 300)
    assert a.json == b.json  # the same merges from the same text, however it is cut
    whole = np.asarray(a.hf.encode(BOOK).ids)
    pieces = list(split_pieces(BOOK, 500))
    assert len(pieces) > 5 and "".join(pieces) == BOOK
    assert np.array_equal(a.encode(BOOK), whole)
    assert np.array_equal(np.concatenate([a.encode(p) for p in pieces]), whole)


def test_tokenizer_specs_rebuild_the_same_tokenizer_and_a_plain_string_has_no_escape():
    for tok in (CharTokenizer("xyz"), BytesTokenizer(), bpe()):
        again = tokenizer_of(json.loads(json.dumps(tok.spec())))
        assert again.vocab_size == tok.vocab_size and again.kind == tok.kind
        assert np.array_equal(again.encode("xyz zz"), tok.encode("xyz zz"))
    legacy = tokenizer_of("abc")
    assert legacy.vocab_size == 3 and legacy.escape_id is None
    with pytest.raises(DataError, match="'z'.*not in the vocabulary"):
        legacy.encode("abz")
    with pytest.raises(DataError, match="at least 256"):
        train_tokenizer("bpe", [BOOK], 100)
    with pytest.raises(DataError, match="bpe tokenizer only"):
        train_tokenizer("char", [BOOK], 300)
    with pytest.raises(DataError, match="one of char, bytes, bpe"):
        train_tokenizer("words", [BOOK], None)


# --- the text loader and its token cache ----------------------------------------------------------
@pytest.mark.parametrize("kind", ["char", "bytes", "bpe"])
def test_the_tokenizer_is_built_from_the_training_block_alone(tmp_path, kind):
    """Poison check: another validation and test block leave the tokenizer and the training
    tokens unchanged."""
    opts = {"tokenizer": kind, **({"vocab_size": 300} if kind == "bpe" else {})}
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text(BOOK + "x" * 3000, encoding="utf-8")
    b.write_text(BOOK + "Ωé字" * 1000, encoding="utf-8")  # only the held-out blocks differ
    da = load(path=a, val_fraction=0.1, test_fraction=0.1, **opts)
    db = load(path=b, val_fraction=0.1, test_fraction=0.1, **opts)
    assert len(da.train) and da.meta["vocab"] == db.meta["vocab"]
    assert torch.equal(da.train, db.train)
    assert da.meta["chars"]["train"] == int(0.8 * len(BOOK + "x" * 3000) + 0.5)
    tok = tokenizer_of(da.meta["vocab"])
    for ds, path in ((da, a), (db, b)):  # the three blocks are the file, in order
        text = path.read_text(encoding="utf-8")
        parts = [ds.train, ds.val, ds.test]
        if kind == "char" and "Ω" in text:  # escaped in the held-out blocks: U+FFFD
            assert set(ds.meta["escapes"]["test"]) == {2, 3}
            continue
        assert "".join(tok.decode(p) for p in parts) == text
        counts = [int(tok.chars_per_token()[p.long().numpy()].sum()) for p in parts]
        assert counts == [ds.meta["chars"][s] for s in ("train", "val", "test")]


def test_token_files_are_written_once_mapped_after_and_read_in_blocks_like_the_whole(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(token_cache, "BLOCK", 4096)  # many blocks: cuts inside every split
    path = tmp_path / "book.txt"
    path.write_text(BOOK * 3, encoding="utf-8")
    ds = load(path=path, tokenizer="bpe", vocab_size=300)
    tok = tokenizer_of(ds.meta["vocab"])
    assert ds.train.dtype == torch.uint16 and not ds.train.is_floating_point()
    text = path.read_text(encoding="utf-8")
    a = ds.meta["chars"]["train"]
    assert np.array_equal(ds.train.long().numpy(), tok.encode(text[:a]))
    entries = list(token_cache.tokens_dir().glob("*/meta.json"))
    stamp = {e: e.stat().st_mtime_ns for e in entries}
    again = load(path=path, tokenizer="bpe", vocab_size=300)
    assert torch.equal(again.train, ds.train)
    arrays, _ = token_cache.load_tokens(
        path, "book", n=None, val_fraction=0.1, test_fraction=0.1, tokenizer="bpe", vocab_size=300
    )
    assert all(isinstance(a, np.memmap) for a in arrays.values())  # mapped, not read
    assert {e: e.stat().st_mtime_ns for e in entries} == stamp  # mapped, not tokenized again
    path.write_text(BOOK * 3 + "more", encoding="utf-8")  # another text: another entry
    assert len(load(path=path, tokenizer="bpe", vocab_size=300).test) > len(ds.test)


def test_a_damaged_token_entry_empty_and_binary_files_are_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path / "cache"))  # its own: it damages an entry
    path = tmp_path / "book.txt"
    path.write_text(BOOK, encoding="utf-8")
    load(path=path, tokenizer="bytes")
    (entry,) = token_cache.tokens_dir().iterdir()
    (entry / "train.bin").write_bytes(b"xx")
    with pytest.raises(DataError, match="token cache entry .* is damaged"):
        load(path=path, tokenizer="bytes")
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(DataError, match="is empty"):
        load(path=tmp_path / "empty.txt", tokenizer="bpe")
    (tmp_path / "blob.txt").write_bytes(b"abc\x00\x01\x02")
    with pytest.raises(DataError, match="looks binary.*NUL byte at byte offset 3"):
        load(path=tmp_path / "blob.txt", tokenizer="bytes")
    (tmp_path / "latin.txt").write_bytes("abc héllo".encode("latin-1"))
    with pytest.raises(DataError, match="not valid UTF-8: byte 0xe9 at byte offset 5"):
        load(path=tmp_path / "latin.txt", tokenizer="bytes")


# --- bits per character -------------------------------------------------------------------------
class Uniform(GenerativeModel):
    """Every token equally likely: its nats are known in closed form."""

    family = "uniform"
    data_kinds = ("tokens",)

    def __init__(self, vocab, window: int) -> None:
        super().__init__(None, ModelSpec("uniform", (window,), None, vocab))
        self.V = tokenizer_of(vocab).vocab_size
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def log_prob(self, x: torch.Tensor) -> LogProb:
        nats = -x.shape[1] * math.log(self.V)
        return LogProb(torch.full((len(x),), nats, dtype=torch.float64), "exact", nfe=1)


@pytest.mark.parametrize("kind", ["char", "bytes", "bpe"])
def test_bits_per_character_count_every_character_once_and_charge_escaped_bytes(kind):
    text = "Ωmega 🦊 naïve " * 40
    tok = {"char": CharTokenizer("aeimnv "), "bytes": BytesTokenizer(), "bpe": bpe()}[kind]
    ids = torch.from_numpy(tok.encode(text))
    escapes = tok.escapes(text).tolist()
    data = Dataset("t", "tokens", ids, ids[:0], meta={"vocab": tok.spec(), "escapes":
                   {"train": escapes, "val": [], "test": []}})  # fmt: skip
    held = Dataset("f", "tokens", ids, ids[:0], meta=data.meta)
    window = 8
    nll = held_out_nll(Uniform(tok.spec(), window), data, held, 10**6)
    used = ids[: len(ids) // window * window]
    chars = int(tok.chars_per_token()[used.numpy()].sum())
    n_esc = int((used == tok.escape_id).sum()) if tok.escape_id is not None else 0
    nats = len(used) * math.log(tok.vocab_size) + sum(escapes[:n_esc]) * math.log(256)
    assert nll["chars"] == chars and nll["tokens"] == len(used) and nll["escaped"] == n_esc
    assert nll["bits_per_char"] == pytest.approx(nats / chars / math.log(2), rel=1e-12)
    assert nll["bits_per_token"] == pytest.approx(nats / len(used) / math.log(2), rel=1e-12)
    if kind == "char":
        assert n_esc > 0 and nll["bits_per_char"] > math.log2(tok.vocab_size)
    else:
        assert chars < len(used)  # several tokens to a character somewhere


TINY = ["model.context=16", "model.hidden=16", "model.depth=1", "model.heads=2",
        "trainer.steps=20", "trainer.batch_size=8", "trainer.warmup=2", "trainer.progress=false",
        "trainer.tensorboard=false", "eval.nll_n=4000"]  # fmt: skip


@pytest.mark.parametrize("kind", ["char", "bytes", "bpe"])
def test_every_tokenizer_trains_scores_any_text_finitely_and_samples_valid_text(
    tmp_path, capsys, kind
):
    """The bar: a text with characters the training text lacks gets a finite bits/char from
    ``genlab eval RUN --data other.txt``, for every tokenizer; samples decode to text."""
    book = tmp_path / "book.txt"
    book.write_text(BOOK, encoding="utf-8")
    opts = [f"data.options.tokenizer={kind}"] + (["data.options.vocab_size=300"] * (kind == "bpe"))
    args = ["train", str(ROOT / "configs" / "char-gpt-shakespeare.yaml"), f"data.path={book}",
            *opts, *TINY, "--out", str(tmp_path / "run"), "--no-eval"]  # fmt: skip
    assert main(args) == 0
    other = tmp_path / "other.txt"
    other.write_text("Жили-были 🐻 дед да баба. " * 30, encoding="utf-8")  # Cyrillic: unseen
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "run"), "--data", str(other), "--json"]) == 0
    nll = json.loads(capsys.readouterr().out)["nll"]
    assert math.isfinite(nll["bits_per_char"]) and nll["tokenizer"] == kind
    assert nll["chars"] > 0 and nll["split"] == "file"
    out = tmp_path / "s.txt"
    assert main(["sample", str(tmp_path / "run"), "--n", "2", "--out", str(out)]) == 0
    assert out.read_bytes().decode("utf-8")  # valid UTF-8
    run = genlab.load_run(tmp_path / "run")
    assert run.model.spec.vocab["kind"] == kind
