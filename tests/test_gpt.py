"""The character-level GPT and its transformer backbone against independently derived facts: the
causal mask (gradients), the KV cache (the same logits and the same samples as recomputing), the
likelihood (a hand-written product of conditionals that sums to one over every sequence), the
top-k / nucleus filters on a hand-made distribution, and the command line end to end."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch

import genlab
from genlab.cli import main
from genlab.data.base import Dataset
from genlab.data.text import SAMPLE_SEPARATOR, decode, encode
from genlab.errors import ConfigError, DataError
from genlab.models.autoregressive.gpt import GPT, GPTConfig, next_token_probs
from genlab.models.base import ModelSpec
from genlab.models.shared import draw_categorical
from genlab.nets.transformer import Transformer
from genlab.train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
RECIPE = str(ROOT / "configs" / "char-gpt-shakespeare.yaml")


def tiny_net(causal: bool = True, context: int = 6) -> Transformer:
    torch.manual_seed(0)
    return Transformer(5, 4, context, hidden=16, depth=2, heads=2, causal=causal).double().eval()


def tiny_gpt(vocab: str = "abc", context: int = 4, **kw) -> GPT:
    torch.manual_seed(0)
    cfg = GPTConfig(context=context, hidden=16, depth=2, heads=2, dropout=0.0, **kw)
    model = GPT.from_config(cfg, (), vocab=vocab).double().eval()
    with torch.no_grad():  # larger weights than the init: conditionals far from uniform
        for p in model.parameters():
            p.mul_(3.0 if p.dim() > 1 else 1.0)
    return model


# --- the backbone -----------------------------------------------------------------------------
def jacobian_mask(net: Transformer) -> torch.Tensor:
    """``dep[i, j]``: does the output at position i depend on the input embedding at j?"""
    T = net.context
    emb = torch.randn(1, T, net.hidden, dtype=torch.float64, requires_grad=True)
    out = net(embeddings=emb)  # (1, T, outputs)
    dep = torch.zeros(T, T, dtype=torch.bool)
    for i in range(T):
        (g,) = torch.autograd.grad(out[0, i].sum(), emb, retain_graph=True)
        dep[i] = g[0].abs().amax(-1) > 0
    return dep


def test_causal_outputs_do_not_depend_on_later_positions():
    dep = jacobian_mask(tiny_net(causal=True))
    T = len(dep)
    assert torch.equal(dep, torch.ones(T, T, dtype=torch.bool).tril())  # j <= i only, all of them


def test_bidirectional_outputs_depend_on_every_position():
    assert jacobian_mask(tiny_net(causal=False)).all()


def test_the_model_conditional_of_x_i_ignores_x_i_and_later():
    # the GPT's start-token shift: the logits for x_i see x_0 .. x_{i-1} only (gradient w.r.t. the
    # embeddings of the characters at positions >= i is zero)
    model = tiny_gpt(context=6)
    x = torch.tensor([[0, 2, 1, 1, 0, 2]])
    emb = model.net.tok(model._inputs(x)).detach().requires_grad_(True)  # (1, 6, C) of [S, x_0..]
    logp = model.net(embeddings=emb).log_softmax(-1).gather(-1, x[..., None])[0, :, 0]  # (6,)
    for i in range(6):
        (g,) = torch.autograd.grad(logp[i], emb, retain_graph=True)
        seen = g[0].abs().amax(-1) > 0  # input position k holds x_{k-1} (position 0: S)
        assert seen[: i + 1].all() and not seen[i + 1 :].any()  # x_j, j >= i: input j + 1 > i


def test_the_kv_cache_gives_the_logits_of_the_whole_sequence():
    net = tiny_net(context=7)
    idx = torch.randint(0, 5, (3, 7), generator=torch.Generator().manual_seed(1))
    cache = net.new_cache(3)
    parts = [net(idx[:, :3], cache=cache), net(idx[:, 3:5], cache=cache), net(idx[:, 5:6], cache=cache),
             net(idx[:, 6:7], cache=cache)]  # fmt: skip
    assert cache.length == 7
    torch.testing.assert_close(torch.cat(parts, 1), net(idx), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="past the context"):
        net(idx[:, :1], cache=cache)
    cache.clear()  # reused from position 0
    torch.testing.assert_close(net(idx[:, :4], cache=cache), net(idx[:, :4]), rtol=0, atol=1e-12)
    # bidirectional: earlier positions' keys change with later tokens, so there is no cache
    with pytest.raises(ValueError, match="causal"):
        tiny_net(causal=False).new_cache(1)


def test_the_backbone_refuses_bad_shapes():
    with pytest.raises(ConfigError, match="multiple of model.heads"):
        Transformer(5, 5, 8, hidden=10, heads=3)
    with pytest.raises(ConfigError, match="outputs"):
        Transformer(5, 6, 8)


# --- likelihood -------------------------------------------------------------------------------
def hand_log_prob(model: GPT, x: torch.Tensor) -> torch.Tensor:
    """``Σ_t log p(x_t | S, the last context - 1 characters before t)``, one pass per position."""
    C, out = model.config.context, []
    for row in x:
        total = torch.zeros((), dtype=torch.float64)
        for t in range(len(row)):
            inp = torch.cat([torch.tensor([model.bos]), row[max(0, t - (C - 1)) : t]])
            logits = model.net(inp[None])[0, -1]
            total = total + logits.double().log_softmax(-1)[row[t]]
        out.append(total)
    return torch.stack(out)


@pytest.mark.parametrize("length", [1, 3, 4, 9])
def test_log_prob_is_the_sum_of_the_conditionals(length):
    model = tiny_gpt(context=4)
    x = torch.randint(0, 3, (5, length), generator=torch.Generator().manual_seed(length))
    lp = model.log_prob(x, chunk=3)  # several chunks of sliding passes for length 9
    assert lp.kind == "exact" and lp.value.dtype == torch.float64
    torch.testing.assert_close(lp.value, hand_log_prob(model, x), rtol=0, atol=1e-10)


@pytest.mark.parametrize("length", [3, 5])  # within the context, and sliding past it
def test_probabilities_of_every_sequence_sum_to_one(length):
    model = tiny_gpt(vocab="abc", context=3)
    every = torch.tensor(list(itertools.product(range(3), repeat=length)))  # (3^L, L)
    lp = model.log_prob(every).value
    assert lp.max() < -0.01  # not a degenerate model
    assert float(lp.logsumexp(0)) == pytest.approx(0.0, abs=1e-12)


def test_log_prob_refuses_what_is_not_character_ids():
    model = tiny_gpt()
    with pytest.raises(DataError, match="character ids"):
        model.log_prob(torch.zeros(2, 3))
    with pytest.raises(DataError, match=r"\[0, 2\]"):
        model.log_prob(torch.tensor([[0, 3]]))


# --- sampling ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "opts",
    [{}, {"temperature": 0.7, "top_k": 2}, {"top_p": 0.8, "prompt": "cab"}, {"prompt": "abcabca"}],
)
def test_cached_and_recomputed_sampling_draw_the_same_characters(opts):
    model = tiny_gpt(vocab="abc", context=5)
    runs = [
        model.sample(4, generator=torch.Generator().manual_seed(3), length=17, cache=c, **opts)
        for c in (True, False)
    ]
    prompt = opts.get("prompt", "")
    assert runs[0].x.shape == (4, len(prompt) + 17)  # past the context of 5: the window slides
    assert torch.equal(runs[0].x, runs[1].x)
    assert runs[0].nfe == runs[1].nfe == 17
    assert all(decode(row, "abc").startswith(prompt) for row in runs[0].x)
    assert len({tuple(r.tolist()) for r in runs[0].x}) > 1  # the draws are random


def test_samples_follow_the_model_conditionals():
    # the first character after S: its frequencies over many draws match p(x_0 | S)
    model = tiny_gpt(vocab="abcd", context=4)
    x = model.sample(20_000, generator=torch.Generator().manual_seed(0), length=1).x[:, 0]
    p = model.net(torch.tensor([[model.bos]]))[0, -1].double().softmax(-1)
    freq = torch.bincount(x, minlength=4).double() / len(x)
    assert (freq - p).abs().max() < 4 * math.sqrt(0.25 / len(x))


def test_top_k_and_top_p_keep_exactly_the_right_tokens():
    p = torch.tensor([0.15, 0.05, 0.5, 0.1, 0.2], dtype=torch.float64)  # order: 2, 4, 0, 3, 1
    logits = p.log()[None]

    def kept(**kw) -> set[int]:
        q = next_token_probs(logits, **kw)[0]
        assert float(q.sum()) == pytest.approx(1.0, abs=1e-12)
        keep = {int(i) for i in torch.nonzero(q)}
        torch.testing.assert_close(q[list(keep)], p[list(keep)] / p[list(keep)].sum())
        return keep

    assert kept() == {0, 1, 2, 3, 4}
    assert kept(top_k=1) == {2}
    assert kept(top_k=3) == {2, 4, 0}
    assert kept(top_p=0.4) == {2}  # 0.5 reaches 0.4
    assert kept(top_p=0.6) == {2, 4}  # 0.5 < 0.6 <= 0.7
    assert kept(top_p=0.8) == {2, 4, 0}  # 0.7 < 0.8 <= 0.85
    assert kept(top_k=2, top_p=0.9) == {2, 4}  # the nucleus of what top-k left: 5/7 < 0.9
    assert kept(top_k=2, top_p=0.7) == {2}  # 5/7 reaches 0.7


def test_temperature_scales_the_logits_and_zero_is_the_argmax():
    logits = torch.tensor([[1.0, 3.0, 2.0, 3.0 - 1e-3]], dtype=torch.float64)
    torch.testing.assert_close(next_token_probs(logits, 0.5), (logits / 0.5).softmax(-1))
    assert torch.equal(next_token_probs(logits, 0.0), torch.tensor([[0.0, 1.0, 0.0, 0.0]]).double())
    cold = next_token_probs(logits, 1e-5)
    assert float(cold[0, 1]) == pytest.approx(1.0, abs=1e-12)
    model = tiny_gpt(vocab="abc", context=5)
    greedy = [model.sample(2, generator=torch.Generator().manual_seed(s), length=9, temperature=0).x
              for s in (0, 1)]  # fmt: skip
    assert torch.equal(greedy[0], greedy[1]) and torch.equal(greedy[0][0], greedy[0][1])


def test_draws_never_pick_a_token_of_probability_zero():
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.5, 0.0]], dtype=torch.float64).expand(5000, 5)
    idx = draw_categorical(probs, torch.Generator().manual_seed(0))
    assert set(idx.tolist()) == {1, 3}


def test_bad_sampling_options_and_unknown_prompt_characters_are_clear_errors():
    model = tiny_gpt(vocab="abc ")
    with pytest.raises(ConfigError, match=r"2 characters 'x' \(first at position 1\), 'é'.*not in"):
        model.sample(1, prompt="axé x")
    for bad, match in (({"top_p": 0.0}, "top_p"), ({"top_k": -1}, "top_k"),
                       ({"temperature": -1.0}, "temperature"), ({"length": 0}, "length")):  # fmt: skip
        with pytest.raises(ConfigError, match=match):
            model.sample(1, **bad)


def test_a_gpt_needs_text_and_other_families_refuse_text(tmp_path):
    with pytest.raises(ConfigError, match="needs a vocabulary"):
        GPT.from_config(GPTConfig(), ())
    with pytest.raises(ConfigError, match="stream of characters"):
        GPT.from_config(GPTConfig(), (2,), vocab="ab")
    cfg = genlab.load_config(RECIPE, ["data.name=moons", "data.n=100"])
    with pytest.raises(DataError, match="gpt models train on tokens, and the data 'moons' holds"):
        genlab.build_model(cfg, genlab.load_data(cfg))
    text = tmp_path / "t.txt"
    text.write_text("hello world\n" * 20)
    cfg = genlab.load_config(None, [f"data.path={text}"])
    with pytest.raises(DataError, match="flow-matching models train on points or images"):
        genlab.build_model(cfg, genlab.load_data(cfg))


def test_the_spec_carries_the_vocabulary_and_reads_old_checkpoints():
    spec = ModelSpec("gpt", (8,), None, "ab\n")
    assert ModelSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert ModelSpec.from_dict({"family": "ddpm", "shape": [2], "num_classes": None}).vocab is None


# --- training ---------------------------------------------------------------------------------
TEXT = "".join(f"{w} the quick brown fox jumps over the lazy dog.\n" for w in range(60))
TINY = ["model.context=16", "model.hidden=16", "model.depth=1", "model.heads=2", "model.length=20",
        "trainer.steps=30", "trainer.batch_size=8", "trainer.warmup=2", "trainer.val_every=10",
        "trainer.checkpoint_every=10", "trainer.log_every=10", "trainer.progress=false",
        "trainer.tensorboard=false", "eval.nll_n=10000"]  # fmt: skip


def test_training_examples_are_windows_of_the_stream_at_shuffled_offsets(tmp_path):
    stream = torch.arange(1000) % 7
    ds = Dataset("s", "tokens", stream[:900], stream[900:], meta={"vocab": "abcdefg"})
    cfg = genlab.load_config(RECIPE, TINY)
    model = genlab.build_model(cfg, ds)
    tr = Trainer(model, ds, cfg, tmp_path / "run")
    starts = []
    for _ in range(3):
        x = tr.batcher.next().x  # (8, 16)
        assert x.shape == (8, 16)
        for row in x:  # a window of the training stream: consecutive characters
            assert torch.equal(row, (row[0] + torch.arange(16)) % 7)
        starts.append(tr.batcher._perm[tr.batcher.pos - 8 : tr.batcher.pos])
    assert len(torch.cat(starts).unique()) == 24  # offsets without replacement within an epoch
    assert len(tr.batcher.x) == 900 - 16 + 1  # every offset of the training part, no copy
    assert tr.batcher.x.untyped_storage().data_ptr() == ds.train.untyped_storage().data_ptr()
    assert 0 < tr.validate() < 10  # consecutive windows of the held-out part


def test_cli_trains_samples_with_a_prompt_and_evaluates_text(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    book = tmp_path / "book.txt"
    book.write_text(TEXT, encoding="utf-8")
    assert main(["train", RECIPE, "data.path=book.txt", *TINY, "--out", "run"]) == 0
    out = capsys.readouterr().out
    assert "bits/char [exact]" in out
    book.unlink()  # sampling needs the run directory alone
    args = ["sample", "run", "--n", "2", "--prompt", "the", "--option", "length=40",
            "--option", "temperature=0.8", "--option", "top_p=0.9", "--out", "s.txt"]  # fmt: skip
    assert main(args) == 0
    texts = (
        (tmp_path / "s.txt").read_text(encoding="utf-8").removesuffix("\n").split(SAMPLE_SEPARATOR)
    )
    assert len(texts) == 2 and all(t.startswith("the") and len(t) == 43 for t in texts)
    assert main(["sample", "run", "--n", "1", "--prompt", "THE", "--out", "s2.txt"]) == 2
    err = capsys.readouterr().err
    assert "'T' (first at position 0), 'H'" in err and "not in the vocabulary" in err
    assert main(["sample", "run", "--n", "1", "--out", "s.png"]) == 2
    assert "this run makes text" in capsys.readouterr().err


def test_cli_eval_of_a_text_run_and_a_file_with_unknown_characters(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "book.txt").write_text(TEXT, encoding="utf-8")
    assert main(["train", RECIPE, "data.path=book.txt", *TINY, "--out", "run", "--no-eval"]) == 0
    capsys.readouterr()
    assert main(["eval", "run", "--json"]) == 0
    nll = json.loads(capsys.readouterr().out)["nll"]
    assert nll["kind"] == "exact" and 0 < nll["bits_per_char"] < math.log2(len(set(TEXT)))
    # a file with characters the training text lacks: each is the escape token, its bytes
    # charged at 8 bits each, so the figure is finite (and dearer than the text without them)
    held = tmp_path / "other.txt"
    held.write_text("Zebra!" + TEXT[6:502], encoding="utf-8")
    assert main(["eval", "run", "--data", str(held), "--json"]) == 0
    other = json.loads(capsys.readouterr().out)["nll"]
    assert other["split"] == "file" and other["escaped"] == 2 and other["chars"] == 496
    assert math.isfinite(other["bits_per_char"]) and other["tokenizer"] == "char"
    assert other["nats"] * other["n"] > 2 * 8 * math.log(2)  # at least the escaped bytes'
    # a prompt with them is refused, naming them
    assert main(["sample", "run", "--prompt", "Zebra!", "--out", "p.txt"]) == 2
    assert "'Z' (first at position 0), '!' (first at position 5)" in capsys.readouterr().err


def test_prompt_is_refused_for_a_family_without_one(tmp_path, capsys):
    out = tmp_path / "fm"
    flow = str(ROOT / "configs" / "flow-matching-moons.yaml")
    args = ["train", flow, "data.n=200", "model.hidden=8", "model.depth=1", "trainer.steps=2",
            "trainer.progress=false", "trainer.tensorboard=false", "--out", str(out), "--no-eval"]  # fmt: skip
    assert main(args) == 0
    # a diffusion-family model takes a prompt only when it was trained on captions
    assert main(["sample", str(out), "--prompt", "hi", "--out", str(tmp_path / "s.npy")]) == 2
    assert "prompt: this model is not text-conditioned" in capsys.readouterr().err
    gan = str(ROOT / "configs" / "gan-8gaussians.yaml")
    args = ["train", gan, "data.n=200", "model.hidden=8", "model.depth=1", "trainer.steps=2",
            "trainer.progress=false", "trainer.tensorboard=false", "--out", str(tmp_path / "gan"),
            "--no-eval"]  # fmt: skip
    assert main(args) == 0
    assert main(["sample", str(tmp_path / "gan"), "--prompt", "hi", "--out", "s.npy"]) == 2
    assert "--prompt: gan models take no prompt" in capsys.readouterr().err


def test_a_run_samples_the_same_after_loading(tmp_path):
    book = tmp_path / "book.txt"
    book.write_text(TEXT, encoding="utf-8")
    run = genlab.train(RECIPE, tmp_path / "run", overrides=["data.path=" + str(book), *TINY],
                       evaluate=False, verbose=False)  # fmt: skip
    again = genlab.load_run(tmp_path / "run")
    chars = "".join(sorted(set(TEXT)))  # the training block holds every character of TEXT
    assert again.model.spec.vocab == {"kind": "char", "chars": chars, "escape": True}
    kw = {"length": 30, "prompt": "the"}
    a = run.model.sample(2, generator=torch.Generator().manual_seed(0), **kw).x
    b = again.model.sample(2, generator=torch.Generator().manual_seed(0), **kw).x
    assert torch.equal(a, b)
    assert encode("the", again.model.spec.vocab).tolist() == a[0, :3].tolist()


def test_a_stopped_and_resumed_run_reaches_the_same_weights(tmp_path):
    # windows are drawn from (seed, epoch, position) and dropout from the checkpointed global RNG
    stream = torch.randint(0, 5, (700,), generator=torch.Generator().manual_seed(0))
    ds = Dataset("s", "tokens", stream[:600], stream[600:], meta={"vocab": "abcde"})
    cfg = genlab.load_config(RECIPE, [*TINY, "trainer.steps=12", "trainer.checkpoint_every=4",
                                      "model.dropout=0.2", "trainer.ema_decay=0.9"])  # fmt: skip

    def trainer(name: str) -> Trainer:
        torch.manual_seed(0)
        return Trainer(genlab.build_model(cfg, ds), ds, cfg, tmp_path / name)

    full = trainer("full")
    full.fit()
    trainer("part").fit(stop_at=8)
    resumed = trainer("part")
    resumed.fit(resume=True)
    a, b = full.state_tensors(), resumed.state_tensors()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_weight_decay_spares_biases_and_layernorm_gains():
    # GPT-2 / nanoGPT: AdamW decays matrices and embeddings only; with zero gradients one step
    # shrinks those by lr * weight_decay and leaves every vector as it is
    from genlab.config import TrainerConfig
    from genlab.train.optim import make_optimizer

    model = tiny_gpt()
    (player,) = model.players()
    params = list(model.parameters())
    opt = make_optimizer(
        params, TrainerConfig(lr=0.1, weight_decay=0.5), torch.device("cpu"), player
    )
    before = [q.detach().clone() for q in params]
    for q in params:
        q.grad = torch.zeros_like(q)
    opt.step()
    assert any(q.dim() < 2 for q in params) and any(q.dim() >= 2 for q in params)
    for q, b in zip(params, before):
        if q.dim() < 2:
            assert torch.equal(q.detach(), b)
        else:
            torch.testing.assert_close(q.detach(), b * (1 - 0.1 * 0.5))
