"""Discrete diffusion over text against independently derived facts: the schedules' weights
(autograd), the training randomness (drawn in ``prepare``, stratified), the bound (every sequence
of a tiny model enumerated: the sampler's T-step chain sums to one, its T-step ELBO is below its
exact log-probability and approaches the continuous ELBO, and the Monte-Carlo held-out estimate
is unbiased for the enumerated continuous ELBO), the sampler (its frequencies match the enumerated
chain; the cache changes nothing but the passes; no mask token; prompts and infill templates
kept) and the command line end to end."""

from __future__ import annotations

import argparse
import itertools
import json
import math
from pathlib import Path

import pytest
import torch

from genlab.cli import _sampling_options, main
from genlab.data.base import Batch
from genlab.data.text import SAMPLE_SEPARATOR, decode
from genlab.errors import ConfigError, DataError, GenlabError
from genlab.models.discrete_diffusion.bd3lm import BD3LM, BD3LMConfig
from genlab.models.discrete_diffusion.mdlm import MDLM, MDLMConfig, Schedule, stratified_times
from genlab.models.discrete_diffusion.sedd import SEDD, SEDDConfig

ROOT = Path(__file__).resolve().parents[1]


def tiny_mdlm(vocab: str = "ab", context: int = 3, schedule: str = "loglinear", **kw) -> MDLM:
    torch.manual_seed(0)
    cfg = MDLMConfig(context=context, hidden=16, depth=2, heads=2, schedule=schedule, **kw)
    model = MDLM.from_config(cfg, (), vocab=vocab).double().eval()
    with torch.no_grad():  # larger weights than the init: conditionals far from uniform
        for p in model.parameters():
            p.mul_(3.0 if p.dim() > 1 else 1.0)
    return model


def every(V: int, L: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product(range(V), repeat=L)))  # (V^L, L)


# --- schedules and training randomness --------------------------------------------------------
@pytest.mark.parametrize("name", ["loglinear", "cosine"])
def test_schedules_go_from_clean_to_all_masked_with_the_elbo_weight(name):
    s = Schedule(name)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    assert s.alpha(t).tolist() == [1.0, 0.0]
    t = torch.linspace(0.05, 0.95, 7, dtype=torch.float64).requires_grad_(True)
    a = s.alpha(t)
    (da,) = torch.autograd.grad(a.sum(), t)
    torch.testing.assert_close(s.weight(t.detach()), -da / (1 - a.detach()))
    assert (da < 0).all()


def test_stratified_times_put_one_time_in_each_stratum():
    t = stratified_times(8, torch.Generator().manual_seed(3))
    assert torch.equal((t * 8).floor(), torch.arange(8.0, dtype=torch.float64))
    assert not torch.equal(t, stratified_times(8, torch.Generator().manual_seed(4)))


def test_prepare_draws_every_mask_from_the_generator_at_rate_one_minus_alpha():
    model = tiny_mdlm(vocab="abcd", context=3, schedule="cosine")
    x = torch.randint(0, 4, (64, 3), generator=torch.Generator().manual_seed(0))
    a, b = (model.prepare(Batch(x), torch.Generator().manual_seed(5)) for _ in range(2))
    assert torch.equal(a.t, b.t) and torch.equal(a.aux["mask"], b.aux["mask"])
    assert float(a.t.min()) >= model.config.t_min
    # the rate: many rows of one wide window
    wide = MDLM.from_config(MDLMConfig(context=4000, hidden=8, depth=1, heads=1), (), vocab="ab")
    big = wide.prepare(Batch(torch.zeros(4, 4000, dtype=torch.long)), torch.Generator())
    rate = big.aux["mask"].double().mean(1)
    assert big.t.shape == (4, 1)  # one block: one time per window
    expect = 1 - wide.schedule.alpha(big.t[:, 0])
    assert (rate - expect).abs().max() < 4 * math.sqrt(0.25 / 4000)


def test_the_loss_is_the_weighted_cross_entropy_of_the_masked_characters():
    model = tiny_mdlm(vocab="abc", context=5)
    x = torch.randint(0, 3, (4, 5), generator=torch.Generator().manual_seed(1))
    batch = model.prepare(Batch(x), torch.Generator().manual_seed(2))
    total = 0.0
    for i in range(4):
        m = batch.aux["mask"][i]
        z = x[i].masked_fill(m, model.mask_id)
        logp = model.net(z[None])[0].log_softmax(-1)
        ce = -sum(float(logp[j, x[i, j]].detach()) for j in range(5) if m[j])
        w = float(model.schedule.weight(batch.t[i])) * (1 - model.config.t_min)
        total += w * ce / 5
    assert float(model.loss(batch).detach()) == pytest.approx(total / 4, rel=1e-10)


@pytest.mark.parametrize(
    ("estimator", "schedule", "rates"),
    [("time", "loglinear", (0.0, 1.0)), ("count", "loglinear", (0.0, 1.0)),
     ("time", "cosine", (0.3, 0.8)), ("count", "loglinear", (0.3, 0.8))],
)  # fmt: skip
def test_the_training_loss_is_an_unbiased_estimate_of_the_bound(estimator, schedule, rates):
    # E[loss] = −ELBO/L, the time estimator's ELBO truncated at t_min: enumerated masks, with
    # the integral over the masking rate s = 1 − α(t) by quadrature (the count estimator: t
    # integrated out, no truncation). Clipped rates [β, ω] (training only): the slice of the
    # bound over s in [β, ω] (counts: k in [⌈βL⌉, ⌊ωL⌋]).
    model = tiny_mdlm(vocab="abc", context=3, schedule=schedule, estimator=estimator, t_min=0.05,
                      mask_rates=rates).train()  # fmt: skip
    x = torch.tensor([[0, 2, 1]])
    masks = model._block_masks(3, 3, x.device)
    f = model._masked_log_probs(x, masks, 3)[0].detach()  # (7,)
    k = masks.sum(1).double()
    if estimator == "time":
        s0 = max(1 - float(model.schedule.alpha(torch.tensor(0.05, dtype=torch.float64))), rates[0])
        s = torch.linspace(s0, rates[1], 200_001, dtype=torch.float64)[:, None]
        integrand = s ** (k - 1) * (1 - s) ** (3 - k)  # (1/s) · P(exactly this mask | s)
        w = torch.trapezoid(integrand, s[:, 0], dim=0)
    else:
        k0, k1 = max(1, math.ceil(rates[0] * 3)), math.floor(rates[1] * 3)
        w = torch.tensor([math.factorial(int(j) - 1) * math.factorial(3 - int(j)) / 6
                          if k0 <= j <= k1 else 0.0 for j in k])  # fmt: skip
    expect = -float((w * f).sum()) / 3
    with torch.no_grad():
        losses = [float(model.loss(model.prepare(Batch(x.repeat(2000, 1)),
                                                 torch.Generator().manual_seed(i))))
                  for i in range(20)]  # fmt: skip
    mean, se = sum(losses) / 20, torch.tensor(losses).std().item() / math.sqrt(20)
    assert abs(mean - expect) < 4 * se + 1e-9, (mean, expect, se)
    assert se < 0.02 * expect


@pytest.mark.parametrize("estimator", ["time", "count"])
def test_clipped_mask_rates_train_only_and_validation_sees_the_whole_range(estimator):
    model = tiny_mdlm(vocab="ab", context=8, estimator=estimator, mask_rates=[0.45, 0.95])
    x = torch.zeros(512, 8, dtype=torch.long)
    model.train()
    rates = model.prepare(Batch(x), torch.Generator().manual_seed(0))
    if estimator == "time":
        s = 1 - model.schedule.alpha(rates.t)
        assert float(s.min()) >= 0.45 - 1e-12 and float(s.max()) <= 0.95 + 1e-12
    else:  # k in [⌈0.45·8⌉, ⌊0.95·8⌋] = [4, 7] characters masked
        assert set(rates.aux["mask"].sum(1).tolist()) == {4, 5, 6, 7}
    model.eval()  # validation: the whole bound, as without clipping
    # (the mode is the trainer's only while no batch is prepared ahead, in another thread)
    assert not model.prepares_batches
    whole = model.prepare(Batch(x), torch.Generator().manual_seed(0))
    plain = tiny_mdlm(vocab="ab", context=8, estimator=estimator)
    same = plain.prepare(Batch(x), torch.Generator().manual_seed(0))
    assert torch.equal(whole.aux["mask"], same.aux["mask"])
    assert torch.equal(whole.aux["weight"], same.aux["weight"])
    for bad in ([0.5, 0.5], [0.2], [-0.1, 0.5], [0.3, 1.2]):
        with pytest.raises(ConfigError, match="mask_rates"):
            tiny_mdlm(mask_rates=bad)
    with pytest.raises(ConfigError, match="t_min"):
        tiny_mdlm(mask_rates=[0.0, 0.01], t_min=0.05)
    with pytest.raises(ConfigError, match="absorbing"):
        SEDD.from_config(SEDDConfig(context=4, hidden=8, depth=1, heads=1, transition="uniform",
                                    mask_rates=[0.3, 0.8]), (), vocab="ab")  # fmt: skip


# --- the bound, against the enumerated chain --------------------------------------------------
@torch.no_grad()
def chain_probabilities(model: MDLM, L: int, steps: int) -> dict[tuple[int, ...], float]:
    """The law of the sampler's ``steps``-step chain, every path summed: ``{sequence: prob}``."""
    V, m = model.vocab_size, model.mask_id
    alpha = model.schedule.alpha(torch.linspace(0, 1, steps + 1, dtype=torch.float64))
    law = {(m,) * L: 1.0}
    for i in range(steps, 0, -1):
        move = float((alpha[i - 1] - alpha[i]) / (1 - alpha[i]))
        nxt: dict[tuple[int, ...], float] = {}
        for z, pz in law.items():
            probs = model.net(torch.tensor([z]))[0].softmax(-1)  # (L, V)
            choices = []
            for j in range(L):
                if z[j] != m:
                    choices.append([(z[j], 1.0)])
                else:
                    opts = [(c, move * float(probs[j, c])) for c in range(V)]
                    choices.append([*opts, (m, 1.0 - move)])
            for combo in itertools.product(*choices):
                p = pz * math.prod(q for _, q in combo)
                if p > 0:
                    key = tuple(c for c, _ in combo)
                    nxt[key] = nxt.get(key, 0.0) + p
        law = nxt
    return law


@pytest.mark.parametrize("schedule", ["loglinear", "cosine"])
@pytest.mark.parametrize("steps", [1, 2, 5])
def test_the_t_step_elbo_is_below_the_exact_log_probability_of_the_chain(schedule, steps):
    model = tiny_mdlm(vocab="abc", context=3, schedule=schedule)
    law = chain_probabilities(model, 3, steps)
    xs = every(3, 3)
    assert all(m not in key for key in law for m in [model.mask_id])  # no mask survives
    assert sum(law.values()) == pytest.approx(1.0, abs=1e-12)
    logp = torch.tensor([math.log(law[tuple(x.tolist())]) for x in xs], dtype=torch.float64)
    elbo = model.discrete_elbo(xs, steps)
    gap = logp - elbo
    assert (gap >= -1e-12).all(), gap.min()
    if steps == 1:  # one pass fills every character independently: the posterior is certain,
        assert gap.abs().max() < 1e-12  # and the bound is tight
    else:
        assert gap.max() > 1e-3  # a bound, not (by accident) the same number


def test_the_t_step_elbo_approaches_the_continuous_elbo():
    model = tiny_mdlm(vocab="abc", context=3)
    xs = every(3, 3)
    cont = model.continuous_elbo_exact(xs)
    errs = [float((model.discrete_elbo(xs, T) - cont).abs().max()) for T in (2, 8, 32, 128, 512)]
    assert all(b < a for a, b in zip(errs, errs[1:])), errs
    assert errs[-1] < 2e-3 * float(cont.abs().min())
    # and the continuous bound does not depend on the schedule (the network does not see t)
    cos = tiny_mdlm(vocab="abc", context=3, schedule="cosine")
    torch.testing.assert_close(cos.continuous_elbo_exact(xs), cont)
    errs_cos = [float((cos.discrete_elbo(xs, T) - cont).abs().max()) for T in (8, 512)]
    assert errs_cos[1] < errs_cos[0] and errs_cos[1] < 2e-3 * float(cont.abs().min())


def test_the_held_out_estimate_is_unbiased_with_an_honest_standard_error():
    model = tiny_mdlm(vocab="abc", context=6)
    x = torch.randint(0, 3, (4, 6), generator=torch.Generator().manual_seed(0))
    exact = model.continuous_elbo_exact(x)
    lp = model.log_prob(x, elbo_samples=4000, generator=torch.Generator().manual_seed(1))
    assert lp.kind == "elbo" and lp.value.dtype == torch.float64 and lp.nfe == 4000
    z = (lp.value - exact) / lp.stderr
    assert z.abs().max() < 4, z
    assert (lp.stderr < 0.05).all()
    # the error shrinks with the draws (and the bias an L/(k+1) weight would bring, about 10%
    # of the value here, is far outside 4 standard errors)
    small = model.log_prob(x, elbo_samples=8, generator=torch.Generator().manual_seed(1))
    assert small.stderr.gt(lp.stderr).all()
    assert (4 * lp.stderr < 0.05 * exact.abs()).all()


def test_log_prob_refuses_what_is_not_character_ids():
    model = tiny_mdlm(vocab="abc", context=4)
    with pytest.raises(DataError, match="character ids"):
        model.log_prob(torch.zeros(2, 3))
    with pytest.raises(DataError, match=r"\[0, 2\]"):
        model.log_prob(torch.tensor([[0, 3]]))
    with pytest.raises(DataError, match="longer than the context"):
        model.log_prob(torch.zeros(1, 5, dtype=torch.long))


# --- sampling ---------------------------------------------------------------------------------
@pytest.mark.parametrize("steps", [1, 3])
def test_samples_follow_the_enumerated_chain(steps):
    model = tiny_mdlm(vocab="ab", context=3)
    law = chain_probabilities(model, 3, steps)
    n = 20_000
    x = model.sample(n, generator=torch.Generator().manual_seed(0), steps=steps).x
    codes = (x * torch.tensor([4, 2, 1])).sum(1)
    freq = torch.bincount(codes, minlength=8).double() / n
    p = torch.tensor([law[tuple(s.tolist())] for s in every(2, 3)], dtype=torch.float64)
    assert (freq - p).abs().max() < 4 * math.sqrt(0.25 / n)


@pytest.mark.parametrize("opts", [{}, {"prompt": "ab"}, {"infill": "a_b__a_"}])
def test_the_cache_changes_the_passes_not_the_samples(opts):
    model = tiny_mdlm(vocab="ab ", context=8)
    runs = [model.sample(2, generator=torch.Generator().manual_seed(3), steps=60, cache=c, **opts)
            for c in (True, False)]  # fmt: skip
    assert torch.equal(runs[0].x, runs[1].x)
    assert runs[1].nfe == 60 and runs[0].nfe < 20  # at most one pass per filled character
    assert len({tuple(r.tolist()) for r in runs[0].x}) > 1


def test_the_cache_passes_only_the_rows_that_changed(monkeypatch):
    model = tiny_mdlm(vocab="abc", context=8)
    rows, logits = [], model.logits

    def counting(z):
        rows.append(len(z))
        return logits(z)

    monkeypatch.setattr(model, "logits", counting)
    runs, passed = [], []
    for c in (True, False):
        rows.clear()
        runs.append(model.sample(16, generator=torch.Generator().manual_seed(2), steps=100,
                                 cache=c).x)  # fmt: skip
        passed.append(sum(rows))
    assert torch.equal(runs[0], runs[1])
    # without the cache every step passes all 16 rows; with it, a row is passed once at the start
    # and then at most once per step at which one of its 8 characters was filled
    assert passed[1] == 16 * 100
    assert 16 < passed[0] <= 16 * (1 + 8)


@pytest.mark.parametrize("steps", [1, 7, 500])
def test_samples_never_hold_the_mask_token(steps):
    model = tiny_mdlm(vocab="abcd", context=12, schedule="cosine")
    x = model.sample(64, generator=torch.Generator().manual_seed(steps), steps=steps).x
    assert x.shape == (64, 12) and int(x.max()) < model.vocab_size and int(x.min()) >= 0


def test_prompts_and_infill_templates_keep_the_given_characters():
    vocab = "abcdefgh ."
    model = tiny_mdlm(vocab=vocab, context=20)
    g = torch.Generator().manual_seed(0)
    out = model.sample(16, generator=g, steps=9, prompt="bad", length=10).x
    assert out.shape == (16, 13)
    assert all(decode(r, vocab).startswith("bad") for r in out)
    template = "a __ f.__ h_"
    out = model.sample(16, generator=g, steps=9, infill=template).x
    assert out.shape == (16, len(template))
    texts = [decode(r, vocab) for r in out]
    for text in texts:
        assert all(c == t for c, t in zip(text, template) if t != "_")
    assert len({t for t in texts}) > 1
    full = model.sample(2, generator=g, steps=4).x  # length 0: the whole context
    assert full.shape == (2, 20)


def test_bad_prompts_templates_and_options_are_clear_errors():
    model = tiny_mdlm(vocab="abc ", context=10)
    with pytest.raises(ConfigError, match=r"infill: 2 characters 'x' \(first at position 1\), 'é'"):
        model.sample(1, infill="ax_é_x")
    with pytest.raises(ConfigError, match=r"prompt: character 'Z'"):
        model.sample(1, prompt="aZ")
    with pytest.raises(ConfigError, match="more than the context of 10.*bd3lm"):
        model.sample(1, infill="a" * 11)
    with pytest.raises(ConfigError, match="more than the context"):
        model.sample(1, prompt="ab", length=9)
    with pytest.raises(ConfigError, match="not both"):
        model.sample(1, prompt="ab", infill="a_")
    for bad, match in (({"steps": 0}, "steps"), ({"length": -1}, "length")):
        with pytest.raises(ConfigError, match=match):
            model.sample(1, **bad)
    with pytest.raises(ConfigError, match="model.schedule"):
        MDLM.from_config(MDLMConfig(schedule="linear"), (), vocab="ab")
    with pytest.raises(ConfigError, match="needs a vocabulary"):
        MDLM.from_config(MDLMConfig(), ())


def test_infill_is_refused_by_a_family_without_it():
    from genlab.models.autoregressive.gpt import GPT, GPTConfig

    gpt = GPT.from_config(GPTConfig(context=4, hidden=8, depth=1, heads=1), (), vocab="ab")
    args = argparse.Namespace(option=[], infill="a_b", prompt=None)
    with pytest.raises(GenlabError, match="--infill: gpt models take no infill"):
        _sampling_options(args, gpt)
    assert _sampling_options(args, tiny_mdlm(context=4)) == {"infill": "a_b"}


# --- the command line -------------------------------------------------------------------------
TEXT = "".join(f"{w} the quick brown fox jumps over the lazy dog.\n" for w in range(60))
TINY = ["model.context=32", "model.hidden=16", "model.depth=1", "model.heads=2",
        "model.steps=16", "model.elbo_samples=4", "trainer.steps=20", "trainer.batch_size=8",
        "trainer.warmup=2", "trainer.val_every=10", "trainer.checkpoint_every=10",
        "trainer.log_every=10", "trainer.progress=false", "trainer.tensorboard=false",
        "eval.nll_n=2000"]  # fmt: skip


@pytest.mark.parametrize(
    ("config", "over", "sampler"),
    [
        ("mdlm-shakespeare.yaml", [], []),
        ("bd3lm-shakespeare.yaml", ["model.block_size=4", "model.steps=4"], []),
        ("sedd-shakespeare.yaml", ["model.transition=absorb"], []),
        ("sedd-shakespeare.yaml", ["model.transition=uniform"], ["--sampler", "euler"]),
    ],
    ids=["mdlm", "bd3lm-4", "sedd-absorb", "sedd-uniform"],
)
def test_cli_trains_on_any_text_evaluates_a_bound_and_fills_blanks(
    tmp_path, capsys, monkeypatch, config, over, sampler
):
    monkeypatch.chdir(tmp_path)
    # the held-out part holds characters ("Z", "!") the training part lacks
    book = tmp_path / "book.txt"
    book.write_text(TEXT + "Zebra!" * 40, encoding="utf-8")
    cmd = ["train", str(ROOT / "configs" / config), "data.path=book.txt", *TINY, *over,
           "trainer.steps=60"]  # fmt: skip
    assert main([*cmd, "--out", "run"]) == 0
    out = capsys.readouterr().out
    assert "bits/char [elbo]" in out and " ± " in out
    assert main(["eval", "run", "--json", "--option", "elbo_samples=8"]) == 0
    nll = json.loads(capsys.readouterr().out)["nll"]
    assert nll["kind"] == "elbo" and nll["nfe"] == 8 and nll["estimator_stderr"] > 0
    assert main(["eval", "run", "--json", "--split", "val", "--option", "elbo_samples=32"]) == 0
    val = json.loads(capsys.readouterr().out)["nll"]
    # a model that learned the text: its bound on held-out text like the training text (the
    # validation block) beats the uniform model's log2(V) by 3 standard errors; the test block,
    # "Zebra!" with characters training never saw, costs more
    uniform = math.log2(len(set(TEXT)) + 1)  # the training text's characters and the escape
    assert val["bits_per_char"] + 3 * val["bits_per_char_stderr"] < uniform
    assert nll["bits_per_char"] > val["bits_per_char"] and nll["split"] == "test"
    book.unlink()  # sampling: the run directory alone
    template = "the ____ brown ___ x"
    args = ["sample", "run", "--n", "3", "--infill", template, *sampler, "--out", "f.txt"]
    assert main(args) == 0
    texts = (tmp_path / "f.txt").read_text(encoding="utf-8").removesuffix("\n")
    texts = texts.split(SAMPLE_SEPARATOR)
    assert len(texts) == 3
    for text in texts:
        assert len(text) == len(template)
        assert all(c == t for c, t in zip(text, template) if t != "_")
    args = ["sample", "run", "--n", "2", "--prompt", "the", "--steps", "8", "--option",
            "length=20", *sampler, "--out", "s.txt"]  # fmt: skip
    assert main(args) == 0
    assert "NFE" in capsys.readouterr().out
    texts = (tmp_path / "s.txt").read_text(encoding="utf-8").removesuffix("\n")
    assert all(t.startswith("the") and len(t) == 23 for t in texts.split(SAMPLE_SEPARATOR))
    assert main(["sample", "run", "--n", "1", "--infill", "q_é", "--out", "bad.txt"]) == 2
    assert "'é' (first at position" in capsys.readouterr().err


# --- block diffusion --------------------------------------------------------------------------
def tiny_bd3(block_size: int, vocab: str = "abc", context: int = 4, **kw) -> BD3LM:
    torch.manual_seed(0)
    cfg = BD3LMConfig(context=context, hidden=16, depth=2, heads=2, block_size=block_size, **kw)
    model = BD3LM.from_config(cfg, (), vocab=vocab).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0 if p.dim() > 1 else 1.0)
    return model


def test_the_two_copy_mask_lets_a_noised_block_see_itself_and_earlier_clean_blocks_only():
    model = tiny_bd3(2, vocab="abcd", context=6)
    L, S = 6, 2
    z = torch.randint(0, 5, (1, L), generator=torch.Generator().manual_seed(0))
    x = torch.randint(0, 4, (1, L), generator=torch.Generator().manual_seed(1))
    base = model.pair_logits(z, x)[0]
    for copy in ("noised", "clean"):
        for p in range(L):
            z2, x2 = z.clone(), x.clone()
            if copy == "noised":
                z2[0, p] = (z2[0, p] + 1) % 5
            else:
                x2[0, p] = (x2[0, p] + 1) % 4
            changed = (model.pair_logits(z2, x2)[0] - base).abs().amax(-1) > 1e-12  # (L,)
            for i in range(L):
                may = i // S == p // S if copy == "noised" else p // S < i // S
                assert bool(changed[i]) == may, (copy, p, i)


def test_block_size_one_is_an_autoregressive_model():
    model = tiny_bd3(1, vocab="abc", context=4)
    xs = every(3, 4)
    lp = model.log_prob(xs, elbo_samples=3)
    assert lp.kind == "exact" and lp.nfe == 1  # one character per block, always masked: one pass
    hand = torch.zeros(len(xs), dtype=torch.float64)
    for l in range(4):  # log p(x_l | x_<l): the prefix clean (causal), then a mask at l
        inp = torch.cat([xs[:, :l], torch.full((len(xs), 1), model.mask_id)], 1)
        out = model.net(inp, mask=torch.ones(l + 1, l + 1, dtype=torch.bool).tril())[:, -1]
        hand += out.log_softmax(-1).gather(-1, xs[:, l : l + 1])[:, 0]
    torch.testing.assert_close(lp.value, hand, rtol=0, atol=1e-10)
    assert float(lp.value.logsumexp(0)) == pytest.approx(0.0, abs=1e-10)  # sums to one
    assert lp.value.max() < -0.5


def test_one_block_of_the_whole_window_is_mdlm_on_the_same_weights():
    bd3 = tiny_bd3(4, vocab="abc", context=4)
    mdlm = MDLM.from_config(MDLMConfig(context=4, hidden=16, depth=2, heads=2), (), vocab="abc")
    mdlm = mdlm.double().eval()
    mdlm.load_state_dict(bd3.state_dict())
    xs = every(3, 4)
    torch.testing.assert_close(bd3.continuous_elbo_exact(xs), mdlm.continuous_elbo_exact(xs))
    torch.testing.assert_close(bd3.discrete_elbo(xs, 5), mdlm.discrete_elbo(xs, 5))
    a, b = (m.log_prob(xs, elbo_samples=6, generator=torch.Generator().manual_seed(2)).value
            for m in (bd3, mdlm))  # fmt: skip
    torch.testing.assert_close(a, b)
    batch = mdlm.prepare(Batch(xs[:16]), torch.Generator().manual_seed(3))
    torch.testing.assert_close(bd3.loss(batch), mdlm.loss(batch))


def test_the_held_out_estimate_in_blocks_is_unbiased():
    # the estimate of a window in blocks is the sum of per-block MDLM estimates, unbiased:
    # against the enumerated bound, within 4 standard errors, for two block sizes
    for S in (2, 4):
        model = tiny_bd3(S, vocab="abc", context=8)
        x = torch.randint(0, 3, (3, 8), generator=torch.Generator().manual_seed(S))
        exact = model.continuous_elbo_exact(x)
        lp = model.log_prob(x, elbo_samples=2000, generator=torch.Generator().manual_seed(0))
        assert ((lp.value - exact) / lp.stderr).abs().max() < 4


@pytest.mark.parametrize(
    "S, opts",
    [(1, {"length": 9}), (2, {"length": 15, "prompt": "ab"}), (4, {"infill": "a_b__c__a_____b"}),
     (2, {"length": 3})],
)  # fmt: skip
def test_the_kv_cache_draws_the_same_tokens_as_recomputing(S, opts):
    model = tiny_bd3(S, vocab="abc", context=8)
    runs = [model.sample(3, generator=torch.Generator().manual_seed(5), steps=12, cache=c, **opts)
            for c in (True, False)]  # fmt: skip
    assert torch.equal(runs[0].x, runs[1].x)
    assert runs[0].nfe < runs[1].nfe
    x = runs[0].x
    assert int(x.max()) < model.vocab_size  # no mask token, at any length
    if "infill" in opts:
        t = opts["infill"]
        assert x.shape[1] == len(t)
        assert all(decode(r, "abc")[i] == c for r in x for i, c in enumerate(t) if c != "_")
    else:
        P = len(opts.get("prompt", ""))
        assert x.shape[1] == P + opts["length"]  # past the context of 8: the window slides
        assert all(decode(r, "abc").startswith(opts.get("prompt", "")) for r in x)


def test_a_block_size_must_divide_the_context():
    with pytest.raises(ConfigError, match="divisor of model.context=8"):
        BD3LM.from_config(BD3LMConfig(context=8, block_size=3), (), vocab="ab")


def test_one_set_of_weights_is_scored_with_other_block_sizes():
    model = tiny_bd3(2, vocab="abc", context=4)
    xs = every(3, 4)
    lp = model.log_prob(xs, block_size=1)  # exact: the autoregressive limit
    assert lp.kind == "exact" and lp.stderr is None
    assert float(lp.value.logsumexp(0)) == pytest.approx(0.0, abs=1e-10)
    whole = MDLM.from_config(MDLMConfig(context=4, hidden=16, depth=2, heads=2), (), vocab="abc")
    whole = whole.double().eval()
    whole.load_state_dict(model.state_dict())
    torch.testing.assert_close(
        model.continuous_elbo_exact(xs, block_size=4), whole.continuous_elbo_exact(xs)
    )
    assert not torch.allclose(model.continuous_elbo_exact(xs), whole.continuous_elbo_exact(xs))
    with pytest.raises(DataError, match="blocks of 3"):
        model.log_prob(xs, block_size=3)
    with pytest.raises(ConfigError, match="no block size"):
        whole.log_prob(xs, block_size=2)


BD3_TINY = [t.replace("model.steps=16", "model.steps=4") for t in TINY] + ["model.block_size=4"]


def test_cli_block_diffusion_trains_evaluates_and_samples_any_length(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "book.txt").write_text(TEXT, encoding="utf-8")
    recipe = str(ROOT / "configs" / "bd3lm-shakespeare.yaml")
    assert main(["train", recipe, "data.path=book.txt", *BD3_TINY, "--out", "run"]) == 0
    assert "bits/char [elbo]" in capsys.readouterr().out
    assert main(["eval", "run", "--json", "--option", "block_size=1"]) == 0
    nll = json.loads(capsys.readouterr().out)["nll"]
    assert nll["kind"] == "exact" and not nll.get("estimator_stderr")  # blocks of 1: the AR
    assert main(["sample", "run", "--n", "2", "--option", "length=100", "--out", "s.txt"]) == 0
    texts = (tmp_path / "s.txt").read_text(encoding="utf-8").removesuffix("\n")
    assert [len(t) for t in texts.split(SAMPLE_SEPARATOR)] == [100, 100]  # past the context of 32


@torch.no_grad()
def block_chain_probabilities(model: BD3LM, L: int, steps: int) -> dict[tuple[int, ...], float]:
    """The law of BD3-LM's sampler, every path summed: block after block, each an MDLM chain
    whose denoiser is the training pass (``pair_logits``) with the clean prefix."""
    V, m, S = model.vocab_size, model.mask_id, model.config.block_size
    alpha = model.schedule.alpha(torch.linspace(0, 1, steps + 1, dtype=torch.float64))
    law = {(): 1.0}
    for j in range(L // S):
        nxt_law: dict[tuple[int, ...], float] = {}
        for prefix, pp in law.items():
            blk = {(m,) * S: 1.0}
            for i in range(steps, 0, -1):
                move = float((alpha[i - 1] - alpha[i]) / (1 - alpha[i]))
                nxt: dict[tuple[int, ...], float] = {}
                for z, pz in blk.items():
                    full_z = torch.tensor([[*prefix, *z] + [0] * (L - len(prefix) - S)])
                    full_x = torch.tensor([[*prefix] + [0] * (L - len(prefix))])
                    probs = model.pair_logits(full_z, full_x)[0, j * S : (j + 1) * S].softmax(-1)
                    choices = []
                    for a in range(S):
                        if z[a] != m:
                            choices.append([(z[a], 1.0)])
                        else:
                            opts = [(c, move * float(probs[a, c])) for c in range(V)]
                            choices.append([*opts, (m, 1.0 - move)])
                    for combo in itertools.product(*choices):
                        p = pz * math.prod(q for _, q in combo)
                        if p > 0:
                            key = tuple(c for c, _ in combo)
                            nxt[key] = nxt.get(key, 0.0) + p
                blk = nxt
            for b, pb in blk.items():
                nxt_law[(*prefix, *b)] = nxt_law.get((*prefix, *b), 0.0) + pp * pb
        law = nxt_law
    return law


def test_block_diffusion_t_step_bound_and_sampler_against_the_enumerated_chain():
    model = tiny_bd3(2, vocab="ab", context=4)
    law = block_chain_probabilities(model, 4, 3)
    xs = every(2, 4)
    assert sum(law.values()) == pytest.approx(1.0, abs=1e-12)
    assert all(model.mask_id not in key for key in law)
    logp = torch.tensor([math.log(law[tuple(x.tolist())]) for x in xs], dtype=torch.float64)
    gap = logp - model.discrete_elbo(xs, 3)
    assert (gap >= -1e-12).all() and gap.max() > 1e-4  # a bound, strictly below somewhere
    n = 20_000
    x = model.sample(n, generator=torch.Generator().manual_seed(0), steps=3).x  # KV cache
    codes = (x * torch.tensor([8, 4, 2, 1])).sum(1)
    freq = torch.bincount(codes, minlength=16).double() / n
    assert (freq - logp.exp()).abs().max() < 4 * math.sqrt(0.25 / n)


def test_rotary_positions_make_attention_depend_on_relative_positions_only():
    from genlab.nets.transformer import Transformer

    idx = torch.randint(0, 5, (2, 6), generator=torch.Generator().manual_seed(0))
    shifted = torch.arange(6) + 3
    for rope in (True, False):
        torch.manual_seed(0)
        net = Transformer(5, 5, 12, hidden=16, depth=2, heads=2, causal=False, rope=rope)
        net = net.double().eval()
        same = torch.allclose(net(idx), net(idx, positions=shifted), rtol=0, atol=1e-12)
        assert same == rope  # learned absolute positions change with the shift


def test_a_gpt_with_rotary_positions_caches_exactly_and_sums_to_one():
    # the AR baseline on the diffusion models' backbone (bench/text.py): keys are rotated before
    # they are cached, and the sliding window re-feeds from position 0
    from genlab.models.autoregressive.gpt import GPT, GPTConfig

    torch.manual_seed(0)
    cfg = GPTConfig(context=4, hidden=16, depth=2, heads=2, dropout=0.0, rope=True)
    gpt = GPT.from_config(cfg, (), vocab="abc").double().eval()
    assert gpt.net.pos is None
    runs = [gpt.sample(3, generator=torch.Generator().manual_seed(1), length=11, cache=c).x
            for c in (True, False)]  # fmt: skip
    assert torch.equal(runs[0], runs[1])
    assert float(gpt.log_prob(every(3, 5)).value.logsumexp(0)) == pytest.approx(0.0, abs=1e-12)


# --- score entropy (SEDD) ---------------------------------------------------------------------
def tiny_sedd(
    transition: str, vocab: str = "ab", context: int = 2, scale: float = 2.0, **kw
) -> SEDD:
    torch.manual_seed(0)
    cfg = SEDDConfig(context=context, hidden=16, depth=2, heads=2, transition=transition, **kw)
    model = SEDD.from_config(cfg, (), vocab=vocab).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale if p.dim() > 1 else 1.0)
    return model


@torch.no_grad()
def reverse_chain_law(model: SEDD, L: int, t_end: float, grid: int = 200) -> torch.Tensor:
    """The law at ``t_end`` of the model's reverse CTMC over every window (absorb: over the states
    with masks too), solved with a matrix exponential per step of a fine grid (dense near 0)."""
    V, uniform = model.vocab_size, model.uniform
    symbols = list(range(V)) + ([] if uniform else [model.mask_id])
    states = list(itertools.product(symbols, repeat=L))
    index = {s: i for i, s in enumerate(states)}
    zs = torch.tensor(states)
    T = model.config.t_max if uniform else 1.0
    q = torch.zeros(len(states), dtype=torch.float64)
    if uniform:
        q[:] = 1.0 / len(states)
    else:
        q[index[(model.mask_id,) * L]] = 1.0
    u = torch.linspace(math.sqrt(T), math.sqrt(t_end), grid + 1, dtype=torch.float64)
    ts = u**2  # from T down to t_end, dense near 0
    for k in range(grid):
        t = 0.5 * (ts[k] + ts[k + 1])
        dt = float(ts[k] - ts[k + 1])
        G = torch.zeros(len(states), len(states), dtype=torch.float64)
        if uniform:
            a = model.schedule.alpha(t)
            rate = float(model.schedule.weight(t) * (1 - a) / a) / V  # σ(t)/N
            s = model.scores(zs, t.expand(len(states))).exp()  # (S, L, V)
        else:
            rate = float(model.schedule.weight(t))  # σ(t) α/(1 − α): the scaled scores
            s = model.logits(zs).exp()
        for i, x in enumerate(states):
            for pos in range(L):
                if not uniform and x[pos] != model.mask_id:
                    continue
                for b in range(V):
                    if b == x[pos]:
                        continue
                    y = list(x)
                    y[pos] = b
                    G[i, index[tuple(y)]] += rate * float(s[i, pos, b])
        G -= torch.diag(G.sum(1))
        q = q @ torch.linalg.matrix_exp(G * dt)
    return torch.stack([q[index[tuple(x.tolist())]] for x in every(V, L)])


@torch.no_grad()
def uniform_bound_exact(model: SEDD, x: torch.Tensor, grid: int = 200) -> torch.Tensor:
    """The uniform bound of each window ``(B,)`` by quadrature in t (``t = T u²``) with every
    noised window enumerated."""
    V, L = model.vocab_size, x.shape[1]
    T = model.config.t_max
    zs = every(V, L)
    u = (torch.arange(grid, dtype=torch.float64) + 0.5) / grid
    out = []
    for row in x:
        total = 0.0
        for uk in u:
            t = T * uk**2
            a = float(model.schedule.alpha(t))
            same = a + (1 - a) / V
            prob = torch.where(zs == row, same, (1 - a) / V).prod(1)  # p_{t|0}(z | x)
            terms = model._uniform_terms(row.expand(len(zs), L), zs, t.expand(len(zs))).sum(1)
            total += float((prob * terms).sum()) * 2 * T * float(uk) / grid
        out.append(-(total + model._prior_kl(L)))
    return torch.tensor(out, dtype=torch.float64)


def test_uniform_score_entropy_bounds_the_exact_log_likelihood_of_its_reverse_chain():
    model = tiny_sedd("uniform")
    p = reverse_chain_law(model, 2, 0.0)
    assert float(p.sum()) == pytest.approx(1.0, abs=1e-9)
    bound = uniform_bound_exact(model, every(2, 2))
    gap = p.log() - bound  # 0.04 to 0.08 nats; both grids are within 0.003 of 15x finer ones
    assert (gap > 0.02).all(), gap
    # the Monte-Carlo held-out estimate agrees with the quadrature
    lp = model.log_prob(every(2, 2), elbo_samples=1000, generator=torch.Generator().manual_seed(0))
    assert ((lp.value - bound).abs() < 4 * lp.stderr + 0.005).all()


def test_absorbing_score_entropy_bounds_its_reverse_chain_and_is_mdlm_when_normalised():
    model = tiny_sedd("absorb")
    xs = every(2, 2)
    p = reverse_chain_law(model, 2, 1e-12)
    assert float(p.sum()) == pytest.approx(1.0, abs=1e-4)  # masks left at t = 1e-12: negligible
    bound = model.continuous_elbo_exact(xs)
    assert ((p.log() - bound) > 0).all()
    # the same network read as MDLM (softmax of its outputs): a tighter bound, equal when the
    # scores are normalised (outputs shifted by their log-sum-exp)
    mdlm = MDLM.from_config(MDLMConfig(context=2, hidden=16, depth=2, heads=2), (), vocab="ab")
    mdlm = mdlm.double().eval()
    mdlm.load_state_dict(model.state_dict())
    assert (mdlm.continuous_elbo_exact(xs) > bound).all()
    logits = torch.randn(3, 2, 2, dtype=torch.float64)
    x = torch.tensor([[0, 1], [1, 1], [0, 0]])
    torch.testing.assert_close(model.log_terms(logits.log_softmax(-1), x),
                               mdlm.log_terms(logits, x))  # fmt: skip


def test_uniform_score_entropy_is_tight_for_the_stationary_chain():
    # scores ≡ 1: the reverse chain has the forward rates and stays uniform, so log p = −L log N,
    # and the bound equals it (by hand for N = 2: ∫_0^1 ½ log((2 − t)/t) dt = log 2)
    model = tiny_sedd("uniform", vocab="abc", t_max=1 - 1e-9)
    model.scores = lambda z, t: torch.zeros(*z.shape, 3, dtype=torch.float64)
    bound = uniform_bound_exact(model, torch.tensor([[0, 2], [1, 1]]), grid=400)
    torch.testing.assert_close(bound, torch.full((2,), -2 * math.log(3), dtype=torch.float64),
                               rtol=0, atol=2e-3)  # fmt: skip


@pytest.mark.parametrize("transition", ["absorb", "uniform"])
@pytest.mark.parametrize("sampler", ["tweedie", "euler"])
def test_sedd_samplers_follow_the_reverse_chain(transition, sampler):
    model = tiny_sedd(transition, scale=3.0)
    if transition == "absorb":  # a fixed random score table over the 9 states: a sharper law
        table = 1.5 * torch.randn(9, 2, 2, generator=torch.Generator().manual_seed(0)).double()
        model.logits = lambda z: table[z[:, 0] * 3 + z[:, 1]]
    p = reverse_chain_law(model, 2, 0.0 if transition == "uniform" else 1e-7, grid=100)
    assert (p - 0.25).abs().max() > 0.08  # far from uniform: a wrong sampler shows
    n, steps = 6000, 400 if transition == "absorb" else 25  # discretization error < 0.01
    g = torch.Generator().manual_seed(0)
    x = model.sample(n, generator=g, steps=steps, sampler=sampler).x
    assert int(x.max()) < model.vocab_size and int(x.min()) >= 0  # no mask token
    freq = torch.bincount(x[:, 0] * 2 + x[:, 1], minlength=4).double() / n
    assert (freq - p).abs().max() < 4 * math.sqrt(0.25 / n) + 0.01, (freq, p)


@pytest.mark.parametrize("transition", ["absorb", "uniform"])
def test_sedd_keeps_prompts_and_templates_and_the_absorbing_cache_is_exact(transition):
    model = tiny_sedd(transition, vocab="abc ", context=12)
    g = torch.Generator().manual_seed(0)
    template = "a_ b__ c_"
    for sampler in ("tweedie", "euler"):
        out = model.sample(8, generator=g, steps=10, sampler=sampler, infill=template).x
        for row in out:
            text = decode(row, "abc ")
            assert all(c == t for c, t in zip(text, template) if t != "_")
        out = model.sample(8, generator=g, steps=10, sampler=sampler, prompt="ab", length=6).x
        assert out.shape == (8, 8) and all(decode(r, "abc ").startswith("ab") for r in out)
    if transition == "absorb":
        runs = [model.sample(3, generator=torch.Generator().manual_seed(1), steps=40, cache=c).x
                for c in (True, False)]  # fmt: skip
        assert torch.equal(runs[0], runs[1])
    with pytest.raises(ConfigError, match="sampler must be one of"):
        model.sample(1, sampler="heun")


@pytest.mark.parametrize("transition", ["absorb", "uniform"])
def test_cli_score_entropy_trains_evaluates_and_samples(tmp_path, capsys, monkeypatch, transition):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "book.txt").write_text(TEXT, encoding="utf-8")
    recipe = str(ROOT / "configs" / "sedd-shakespeare.yaml")
    args = [*BD3_TINY[:-1], f"model.transition={transition}"]
    assert main(["train", recipe, "data.path=book.txt", *args, "--out", "run"]) == 0
    assert "bits/char [elbo]" in capsys.readouterr().out
    out = ["--out", "s.txt", "--force"]
    assert main(["sample", "run", "--n", "2", "--sampler", "euler", "--steps", "6", *out]) == 0
    assert main(["sample", "run", "--n", "2", "--infill", "the _____ fox", *out]) == 0
    texts = (tmp_path / "s.txt").read_text(encoding="utf-8").removesuffix("\n")
    assert all(t.startswith("the ") and t.endswith(" fox") for t in texts.split(SAMPLE_SEPARATOR))
    assert main(["sample", "run", "--n", "1", "--sampler", "heun", *out]) == 2
    assert "tweedie, euler" in capsys.readouterr().err
