"""Text samples in the evaluation: generative perplexity under an autoregressive scorer run on the
same text, and the samples' unigram entropy, each with the floor of real text windows."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from families import TINY

import genlab
from genlab.errors import DataError
from genlab.eval.metrics import generative_perplexity, unigram_entropy


def tiny_run(family: str, out, *extra: str):
    tiny = TINY[family]
    cfg = genlab.load_config(tiny.path, tiny.args("trainer.steps=15", *extra))
    return genlab.train(cfg, out, evaluate=False, verbose=False)


def test_unigram_entropy_and_perplexity_by_hand():
    x = torch.tensor([[0, 0, 1, 1], [2, 2, 2, 2]])
    assert unigram_entropy(x) == pytest.approx(0.5)  # 1 bit and 0 bits
    uniform = lambda rows: torch.full((len(rows),), 4 * math.log(1 / 3))  # noqa: E731
    assert generative_perplexity(x, uniform) == pytest.approx(3.0)


@pytest.fixture(scope="module")
def text_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("text-eval")
    return {f: tiny_run(f, root / f) for f in ("gpt", "mdlm")}


def test_text_samples_are_scored_by_the_scorer_with_real_text_as_the_floor(text_runs):
    mdlm, gpt = text_runs["mdlm"], text_runs["gpt"]
    ev = dataclasses.replace(mdlm.config.eval, n=6, seeds=1, nll=False, scorer=str(gpt.dir))
    report = genlab.evaluate(mdlm, cfg=ev)
    m = report["metrics"]
    assert set(m) == {"gen_ppl", "unigram_entropy"}
    # the same draws by hand: seed 0, the model's default options
    x = mdlm.model.sample(6, generator=torch.Generator().manual_seed(0)).x
    lp = genlab.load_run(gpt.dir).model.log_prob(x).value  # the scorer as eval loads it (EMA)
    assert m["gen_ppl"]["value"] == pytest.approx(math.exp(-float(lp.sum()) / x.numel()))
    assert m["unigram_entropy"]["value"] == pytest.approx(unigram_entropy(x))
    assert m["gen_ppl"]["floor"] > 1 and m["unigram_entropy"]["floor"] > 0
    assert m["gen_ppl"]["kind"] == "estimate" and m["gen_ppl"]["n"] == 6
    # no scorer: no text is sampled
    plain = genlab.evaluate(mdlm, cfg=dataclasses.replace(ev, scorer=None))
    assert plain["metrics"] == {}


def test_a_scorer_that_cannot_score_is_refused_with_the_reason(text_runs, tmp_path):
    mdlm = text_runs["mdlm"]
    ev = dataclasses.replace(mdlm.config.eval, n=4, seeds=1, nll=False)
    with pytest.raises(DataError, match="exact likelihood"):
        genlab.evaluate(mdlm, cfg=dataclasses.replace(ev, scorer=str(mdlm.dir)))
    book = tmp_path / "book.txt"
    book.write_text("abc abd abe " * 300)
    other = tiny_run("gpt", tmp_path / "other", f"data.path={book}", "data.name=null")
    with pytest.raises(DataError, match="another tokenizer"):
        genlab.evaluate(mdlm, cfg=dataclasses.replace(ev, scorer=str(other.dir)))
    with pytest.raises(DataError, match="not found|not a genlab run|no run"):
        genlab.evaluate(mdlm, cfg=dataclasses.replace(ev, scorer=str(tmp_path / "nothing")))
