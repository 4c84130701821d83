"""The evaluation every family reports through: one sampling interface, metrics chosen by the data's
kind, each with its real-data floor, likelihoods with their kind and standard error, and a clear
error for each kind of bad input. Image tests here use a stand-in feature map (the pixels) so they
check the evaluation's logic; tests/test_features.py checks the trained feature networks."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from test_trainer import family_config, family_data, family_kind, skip_uncovered

import genlab
from genlab.api import build_model
from genlab.config import EvalConfig
from genlab.data import load
from genlab.data.base import Dataset
from genlab.errors import ConfigError, DataError
from genlab.eval.evaluate import check_can_evaluate, evaluate
from genlab.eval.metrics import metrics_for
from genlab.eval.table import format_report
from genlab.models.base import GenerativeModel, LogProb, ModelSpec, SampleOption, SampleResult
from genlab.registry import MODELS


# --- stand-ins ----------------------------------------------------------------------------------
@dataclass
class _Info:
    kind: str = "pixels"
    hash: str = "pixels000000"
    data_hash: str = "-"
    recipe_hash: str = "-"
    heldout_accuracy: float | None = None
    heldout_mse: float | None = None
    heldout_examples: int = 0
    num_classes: int | None = None
    path: str = ""


class PixelFeatures:
    """Features = the pixels; class probabilities from the nearest class mean (a real classifier
    in miniature, enough to tell digits from noise)."""

    def __init__(self, data: Dataset) -> None:
        x, y = data.train.flatten(1).double(), data.labels_train
        self.num_classes = int(y.max()) + 1
        self.has_classes = True
        self.means = torch.stack([x[y == k].mean(0) for k in range(self.num_classes)])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).double()

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(-(torch.cdist(x.flatten(1).double(), self.means) ** 2) / 4, dim=-1)

    def info(self) -> _Info:
        return _Info(num_classes=self.num_classes)


class Replay(GenerativeModel):
    """A 'model' that returns given examples (real data, noise, half the classes): the metrics'
    behaviour on it is known in advance."""

    family = "replay"
    conditional = True
    sample_options = (SampleOption("scale", "multiplies the examples", float, 1.0),)

    def __init__(self, x: torch.Tensor, labels: torch.Tensor | None = None, k=None) -> None:
        super().__init__(None, ModelSpec("replay", tuple(x.shape[1:]), k))
        self.x, self.y = x, labels
        self.w = torch.nn.Parameter(torch.zeros(()))

    def _sample(self, n, *, labels, generator, scale):
        if labels is None or self.y is None:
            idx = torch.randint(0, len(self.x), (n,), generator=generator)
        else:  # an example of each requested class
            idx = torch.stack(
                [
                    torch.nonzero(self.y == k)[
                        torch.randint(0, int((self.y == k).sum()), (1,), generator=generator)
                    ].squeeze()
                    for k in labels.tolist()
                ]  # fmt: skip
            )
        return SampleResult(self.x[idx] * scale, 0)


@pytest.fixture(scope="module")
def digits():
    return load("digits")


def _cfg(**kw) -> EvalConfig:
    return dataclasses.replace(EvalConfig(n=300, seeds=2, nll=False), **kw)


# --- the sampling interface ---------------------------------------------------------------------
@pytest.mark.parametrize("family", MODELS.names())
def test_every_family_declares_its_options_and_refuses_others(tmp_path, family):
    # every family, with a tiny network, on a tiny dataset of the first data kind it takes
    # (points, images or text; a second stage over a tiny stage-1 run), built as `genlab train`
    # builds it
    skip_uncovered(family)
    cls = MODELS.get(family)
    data = family_data(family_kind(family))
    model = build_model(family_config(tmp_path, family, data), data)
    names = {o.name for o in cls.sample_options}
    assert len(names) == len(cls.sample_options)  # no option declared twice
    for opt in [*cls.sample_options, *model.options().values()]:  # (ldm: its diffusion model's)
        assert opt.help and (opt.parse in (None, int, float, str, bool))
    if not cls.can_sample:
        with pytest.raises(ConfigError, match="does not generate"):
            model.sample(2)
        return
    with pytest.raises(ConfigError, match=r"no sampling option 'nope'.*takes"):
        model.sample(2, nope=1)
    out = model.sample(3, generator=torch.Generator().manual_seed(0))
    if data.kind == "tokens":  # rows of characters: as many as the model writes by default
        length = model.resolve_options({}).get("length") or model.spec.shape[0]
        assert out.x.shape == (3, length) and out.x.dtype == torch.long
        assert int(out.x.min()) >= 0 and int(out.x.max()) < len(data.meta["vocab"])
    else:
        assert out.x.shape == (3, *data.shape)
    if model.label_classes({}) is None:  # not class-conditional: labels are refused
        assert out.labels is None
        with pytest.raises(ConfigError, match="not class-conditional"):
            model.sample(3, labels=1)
    else:
        k = data.num_classes
        assert out.labels is not None and out.labels.shape == (3,)
        with pytest.raises(ConfigError, match=rf"labels must be in \[0, {k - 1}\]"):
            model.sample(3, labels=k)


def test_options_are_read_with_their_declared_types():
    model = Replay(torch.ones(4, 2))
    assert model.resolve_options({"scale": "2.5"}) == {"scale": 2.5}
    with pytest.raises(ConfigError, match="'scale' must be a number, got 'big'"):
        model.sample(2, scale="big")
    fm = MODELS.get("flow-matching").from_config(MODELS.get("flow-matching").Config(), (2,))
    assert fm.resolve_options({"steps": "4", "sampler": "ddim", "eta": "0.5"})["eta"] == 0.5
    with pytest.raises(ConfigError, match="'steps' must be an integer, got 2.5"):
        fm.sample(2, steps=2.5)
    with pytest.raises(ConfigError, match="no sampling option 'eta'"):  # euler has no eta
        fm.sample(2, sampler="euler", eta=0.5)


def test_legacy_eval_sampler_fields_become_options():
    cfg = genlab.load_config(None, ["eval.sampler=euler", "eval.steps=7"])
    assert cfg.eval.options == {"sampler": "euler", "steps": 7}


# --- points ---------------------------------------------------------------------------------------
def test_point_metrics_carry_their_floor_and_schema():
    data = load("moons", n=4000)
    good = Replay(data.true.sample(5000, torch.Generator().manual_seed(5)).float())
    bad = Replay(good.x + 0.5)
    rg = evaluate(good, data, _cfg())
    rb = evaluate(bad, data, _cfg())
    assert set(rg["metrics"]) == set(metrics_for("points"))
    for name, m in rg["metrics"].items():
        assert {"value", "std", "values", "unit", "kind", "better", "n", "floor"} <= set(m)
        assert len(m["values"]) == 2 and m["n"] == 300 and m["floor"] is not None
        # a model that replays the true law scores like the floor; a shifted one far worse
        assert rb["metrics"][name]["value"] > 2 * max(m["floor"], m["value"], 1e-3)
    assert rg["reference"] == "fresh draws of the true law"
    assert "floor" in format_report(rg)


def test_samples_reference_and_floor_have_one_size_capped_by_the_real_examples():
    x = torch.randn(50, 3)
    data = Dataset("small", "points", x[:40], x[40:45], test=x[45:])
    rep = evaluate(Replay(x), data, _cfg(n=1000, seeds=1))
    assert rep["n"] == 5 and "n capped at 5: 5 held-out examples" in rep["note"]
    assert rep["metrics"]["w2"]["n"] == 5


def test_a_model_that_memorises_its_training_data_scores_the_floor_not_better():
    # the reference is held out and the floor's examples are training examples: replaying the
    # training set scores like the floor, a shifted copy far worse
    x = load("moons", n=6000).train.float()
    data = Dataset("file", "points", x[:5000], x[5000:5100], test=x[5100:])
    cfg = _cfg(n=800, seeds=2)
    memorised, shifted = (
        evaluate(Replay(data.train), data, cfg),
        evaluate(Replay(x + 1.0), data, cfg),
    )
    assert memorised["reference"] == "the test split of 'file'" and memorised["split"] == "test"
    for name, m in memorised["metrics"].items():
        gap, bad_gap = (
            abs(m["value"] - m["floor"]),
            abs(shifted["metrics"][name]["value"] - m["floor"]),
        )
        assert gap < 0.25 * bad_gap, name


def test_one_row_is_refused_before_training(tmp_path):
    np.save(tmp_path / "one.npy", np.ones((1, 2), np.float32))
    cfg = genlab.load_config(
        None, [f"data.path={tmp_path / 'one.npy'}", "data.name=null", "trainer.steps=5"]
    )
    with pytest.raises(DataError, match=r"0 example\(s\) in its test split and 1 training example"):
        genlab.train(cfg, out=tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing trained


def test_samples_with_nan_are_a_clear_error():
    data = load("moons", n=500)
    x = torch.randn(100, 2)
    x[3, 0] = float("nan")
    with pytest.raises(DataError, match=r"samples .* hold NaN or inf"):
        evaluate(Replay(x), data, _cfg(seeds=1, n=100))


def test_a_reference_of_another_shape_or_kind_is_refused(digits):
    data = load("moons", n=500)
    with pytest.raises(DataError, match=r"shape \(1, 8, 8\), but the model makes \(2,\)"):
        evaluate(Replay(torch.randn(10, 2)), data, _cfg(), held_out=_as_points(digits))
    with pytest.raises(DataError, match="holds images, but the run was trained on points"):
        evaluate(Replay(torch.randn(10, 2)), data, _cfg(), held_out=digits)


def _as_points(ds: Dataset) -> Dataset:
    return dataclasses.replace(ds, kind="points")


# --- images ---------------------------------------------------------------------------------------
def _image_eval(model, data, **kw):
    net = PixelFeatures(data)
    return evaluate(model, data, _cfg(**kw), features=(net, net.info()))


def test_image_metrics_rank_real_above_noise_with_floors(digits):
    real = Replay(digits.train, digits.labels_train, k=10)
    noise = Replay(torch.rand(500, 1, 8, 8) * 2 - 1)
    r, z = _image_eval(real, digits), _image_eval(noise, digits)
    names = set(metrics_for("images", ["features", "classes", "labels"]))
    assert set(r["metrics"]) == names and "class_accuracy" in names
    assert "class_accuracy" not in z["metrics"]  # noise is not class-conditional
    for name, m in z["metrics"].items():
        good = r["metrics"][name]
        assert m["floor"] is not None and good["floor"] is not None
        if m["better"] == "lower":
            assert m["value"] > good["value"] and m["value"] > m["floor"]
        else:
            assert m["value"] < good["value"] and m["value"] < m["floor"]
    # real examples (drawn from the same pool) score about as well as the floor
    assert r["metrics"]["precision"]["value"] > 0.9 and r["metrics"]["recall"]["value"] > 0.9
    assert r["metrics"]["class_accuracy"]["value"] > 0.8
    assert r["features"]["hash"] == "pixels000000"


def test_conditional_samples_follow_the_data_class_frequencies(digits):
    seen = []

    class Spy(Replay):
        def _sample(self, n, *, labels, generator, scale):
            seen.append(labels)
            return super()._sample(n, labels=labels, generator=generator, scale=scale)

    _image_eval(Spy(digits.train, digits.labels_train, k=10), digits, seeds=1, n=500)
    counts = torch.bincount(torch.cat(seen), minlength=10)
    assert int(counts.sum()) == 180  # n capped at the 180 held-out digits
    assert int(counts.min()) >= 16 and int(counts.max()) <= 20  # stratified, ~18 each


# --- likelihoods ----------------------------------------------------------------------------------
class Unigram(GenerativeModel):
    """Characters drawn independently with fixed probabilities: its bits per character on any
    text is the mean of -log2 p(c), known in closed form."""

    family = "unigram"

    def __init__(self, probs: torch.Tensor, window: int) -> None:
        super().__init__(None, ModelSpec("unigram", (window,)))
        self.logp = torch.nn.Parameter(probs.double().log(), requires_grad=False)

    def _sample(self, n, *, labels, generator):
        idx = torch.multinomial(self.logp.exp(), n * self.spec.shape[0], True, generator=generator)
        return SampleResult(idx.reshape(n, -1), 0)

    def log_prob(self, x: torch.Tensor) -> LogProb:
        return LogProb(self.logp[x].sum(-1), "exact", nfe=1)


def test_text_is_scored_in_bits_per_character_on_the_held_out_part():
    text = torch.randint(0, 5, (5000,), generator=torch.Generator().manual_seed(0))
    data = Dataset(
        "t", "tokens", text[:3000], text[3000:4000], test=text[4000:], meta={"vocab": "abcde"}
    )
    probs = torch.tensor([0.4, 0.3, 0.1, 0.1, 0.1])
    model = Unigram(probs, window=64)
    rep = evaluate(model, data, EvalConfig(nll_n=1000, seeds=1))
    used = text[4000 : 4000 + 1000 // 64 * 64]  # the test part's first windows
    assert rep["split"] == rep["nll"]["split"] == "test"
    expected = float(-(probs.double().log() / math.log(2))[used].mean())
    assert rep["nll"]["bits_per_char"] == pytest.approx(expected, rel=1e-9)
    assert rep["nll"]["kind"] == "exact" and rep["nll"]["n"] == 1000 // 64
    assert 0 < rep["nll"]["bits_per_char_stderr"] < 0.1
    assert rep["metrics"] == {}  # no sample metric is registered for text yet
    assert "bits/char" in format_report(rep)
    val = evaluate(model, data, EvalConfig(nll_n=1000, seeds=1, split="val"))
    used = text[3000 : 3000 + 1000 // 64 * 64]
    expected = float(-(probs.double().log() / math.log(2))[used].mean())
    assert val["nll"]["bits_per_char"] == pytest.approx(expected, rel=1e-9)
    assert val["split"] == val["nll"]["split"] == "val" and "validation split" in format_report(val)


def test_likelihood_reports_kind_bits_and_standard_error():
    data = load("moons", n=2000)
    flow = MODELS.get("realnvp").from_config(MODELS.get("realnvp").Config(layers=2, hidden=8), (2,))
    rep = evaluate(flow, data, EvalConfig(n=200, seeds=1, nll_n=500))
    nll = rep["nll"]
    assert nll["kind"] == "exact" and nll["n"] == 500
    assert nll["bits_per_dim"] == pytest.approx(nll["nats"] / (2 * math.log(2)))
    assert nll["stderr"] > 0 and "true_nats" in nll


def test_check_can_evaluate_wants_held_out_examples():
    x = torch.randn(100, 2)
    data = Dataset("notest", "points", x, x[:10])
    with pytest.raises(DataError, match=r"0 example\(s\) in its test split and 100 training"):
        check_can_evaluate(data, EvalConfig(), has_log_prob=False)
    with pytest.raises(DataError, match="no test split"):  # a likelihood needs one too
        check_can_evaluate(data, EvalConfig(metrics=[]), has_log_prob=True)
    check_can_evaluate(data, EvalConfig(metrics=[], nll=False), has_log_prob=True)
    check_can_evaluate(data, EvalConfig(split="val"), has_log_prob=True)  # (for diagnosis)


def test_a_recipe_with_guidance_samples_unlabelled_data_without_it(tmp_path):
    # the MNIST recipe (guidance 2) trained on a folder without classes: the default guidance
    # does not apply; asking for it explicitly fails before training, not after
    cls = MODELS.get("diffusion")
    model = cls.from_config(cls.Config(guidance=2.0, hidden=8, depth=1), (2,))
    assert model.resolve_options({})["guidance"] == 1.0
    assert model.sample(3, steps=2).x.shape == (3, 2)
    with pytest.raises(ConfigError, match="classifier-free guidance needs"):
        model.sample(3, guidance=2.0)
    with pytest.raises(ConfigError, match="steps must be at least 1"):
        model.sample(3, steps=0)
    cfg = genlab.load_config(
        None, ["model.family=diffusion", "data.n=500", "eval.options.guidance=3", "trainer.steps=2"]
    )
    with pytest.raises(ConfigError, match="classifier-free guidance"):
        genlab.train(cfg, out=tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_likelihood_kinds_are_labelled_and_checked():
    for kind in ("exact", "elbo", "iwae-5000", "ode-estimate"):
        assert LogProb(torch.zeros(2), kind).kind == kind
    for bad in ("iwae", "iwae-0", "nll", "ELBO"):
        with pytest.raises(ValueError, match="kind must be one of"):
            LogProb(torch.zeros(2), bad)


def test_metric_names_are_checked_before_training(tmp_path):
    for metrics, message in ((["w3"], "did you mean 'w2'"), (["fd"], "applies to images")):
        cfg = genlab.load_config(None, ["data.n=500", "trainer.steps=2", f"eval.metrics={metrics}"])
        with pytest.raises(genlab.GenlabError, match=message):
            genlab.train(cfg, out=tmp_path / "r")
        assert not (tmp_path / "r").exists()


def test_a_feature_network_made_for_other_data_is_refused(digits):
    from genlab.feature_networks import feature_network

    _, info = feature_network(digits, verbose=False)  # genlab's recipe, cached for the session
    other = load("digits", n=600)
    # its content is the training and validation parts (540 of 600 here): never the test part
    with pytest.raises(DataError, match=r"trained on other data .* 540 examples here, 1617"):
        evaluate(Replay(other.train), other, _cfg(features=str(info.path)))


def test_genlab_features_trains_once_then_shows(capsys):
    from genlab.cli import main

    assert main(["features", "digits"]) == 0
    first = capsys.readouterr().out
    assert "held-out accuracy" in first and "classifier over 10 classes" in first
    assert main(["features", "digits", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["heldout_accuracy"] > 0.95 and record["data_hash"]
    assert main(["features", "digts"]) == 2
    assert "did you mean 'digits'" in capsys.readouterr().err
    assert main(["features", "moons"]) == 2
    assert "feature networks are for images" in capsys.readouterr().err
