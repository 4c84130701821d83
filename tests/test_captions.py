"""Text conditioning (model.conditioning=caption): captions written from labels and stroke weight,
their tokens, the U-Net's cross-attention to a jointly trained text encoder, the empty caption as
the null condition of classifier-free guidance, prompts at sampling, and latent diffusion on
captions through an identity autoencoder."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from test_two_stage import _Identity, images, in_memory, test_families  # noqa: F401

from genlab.data.base import Batch
from genlab.errors import ConfigError
from genlab.models.diffusion import captions as C
from genlab.models.diffusion.model import Diffusion, DiffusionConfig
from genlab.models.two_stage import LDMConfig
from genlab.nets.unet import UNet

SHAPE = (1, 8, 8)
SMALL = dict(backbone="unet", channels=8, channel_mults=[1, 2], time_dim=16, text_hidden=16,
             text_depth=1, conditioning="caption", label_dropout=0.3, sampler="euler",
             steps=3)  # fmt: skip


def caption_model(**kw) -> Diffusion:
    torch.manual_seed(0)
    return Diffusion.from_config(DiffusionConfig(**{**SMALL, **kw}), SHAPE, 10)


def perturb(model: torch.nn.Module, seed: int = 1) -> None:
    """Non-zero weights everywhere (zero-initialised projections hide the conditioning)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))


def test_tokens_round_trip_and_bad_prompts_are_refused_with_the_reason():
    t = C.tokenize("The  Digit 7, bold")
    assert t.shape == (C.LENGTH,) and t.dtype == torch.long
    assert C.detokenize(t) == "the digit 7, bold"  # lower case, single spaces
    assert int((t != C.PAD).sum()) == len("the digit 7, bold")
    with pytest.raises(ConfigError, match=r"lacks: '!é'"):
        C.tokenize("a seven!é")
    with pytest.raises(ConfigError, match="at most"):
        C.tokenize("x" * (C.LENGTH + 1))


def test_captions_name_the_class_and_the_stroke_weight_of_each_image():
    cap = C.Captioner(10)
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(10).repeat_interleave(30)
    # class k: images whose ink ranges over [0.1, 0.5]; terciles near 0.23 and 0.37
    level = torch.linspace(0.1, 0.5, 30).repeat(10)
    x = (level * 2 - 1)[:, None, None, None].expand(-1, *SHAPE).contiguous()
    cap.fit(x, labels)
    assert torch.allclose(cap.terciles[3], torch.tensor([0.2333, 0.3667]), atol=2e-3)
    texts = cap.captions(labels, x, g)
    for k, w, text in zip(labels.tolist(), level.tolist(), texts):
        words = set(text.replace(",", "").split())
        assert str(k) in words or C.WORDS[k] in words, text
        assert bool(words & set(C.THIN)) == (w < float(cap.terciles[k, 0]))
        assert bool(words & set(C.BOLD)) == (w > float(cap.terciles[k, 1]))
    # the same generator gives the same captions; no image: no stroke word
    assert texts == cap.captions(labels, x, torch.Generator().manual_seed(0))
    plain = cap.captions(labels, None, g)
    assert not any(set(t.split()) & set(C.THIN + C.BOLD) for t in plain)
    # the data's class names replace the numbers
    cap.fit(x, labels, [f"Class_{k}!" for k in range(10)])
    assert cap.name(4) == "class4"


@pytest.mark.parametrize("classes", [None, [f"Class_{k}!" for k in range(9)] + ["12"]])
def test_tokens_looked_up_on_the_device_equal_the_tokens_of_the_written_captions(classes):
    """The training step looks its captions up in a table (no value read back to the host); they
    are exactly the captions :meth:`Captioner.captions` writes, for every spelling, stroke word and
    template, also after the table is rebuilt by loading a state dict."""
    cap = C.Captioner(10)
    labels = torch.arange(10).repeat_interleave(300)
    level = torch.rand(3000, generator=torch.Generator().manual_seed(3)) * 0.6
    x = (level * 2 - 1)[:, None, None, None].expand(-1, *SHAPE).contiguous()
    cap.fit(x, labels, classes)
    loaded = torch.nn.Sequential(C.Captioner(10))
    loaded.load_state_dict({f"0.{k}": v for k, v in cap.state_dict().items()})
    for pictures in (x, None):
        texts = cap.captions(labels, pictures, torch.Generator().manual_seed(0))
        want = torch.stack([C.tokenize(t) for t in texts])
        assert len(set(texts)) > 30  # many choices are exercised
        for model in (cap, loaded[0]):
            got = model.tokens(labels, pictures, torch.Generator().manual_seed(0))
            assert torch.equal(got, want)


def test_the_unet_reads_captions_through_cross_attention_and_none_is_the_empty_caption():
    net = UNet(SHAPE, channels=8, time_dim=16, text_tokens=C.VOCAB, text_length=C.LENGTH,
               text_hidden=16, text_depth=1)  # fmt: skip
    x, t = torch.randn(2, *SHAPE), torch.rand(2)
    a = torch.stack([C.tokenize("a thin seven"), C.tokenize("a thin seven")])
    assert torch.equal(net(x, t, a), torch.zeros(2, *SHAPE))  # zero-initialised output
    perturb(net)
    b = torch.stack([C.tokenize("a bold one"), C.tokenize("a bold one")])
    assert not torch.allclose(net(x, t, a), net(x, t, b))
    empty = torch.zeros(2, C.LENGTH, dtype=torch.long)
    assert torch.equal(net(x, t, None), net(x, t, empty))
    assert net.class_embed is None
    # without the pooled embedding the captions still reach the output: through cross-attention
    with torch.no_grad():
        net.text_pool.weight.zero_()
        net.text_pool.bias.zero_()
    assert not torch.allclose(net(x, t, a), net(x, t, b))
    with pytest.raises(ValueError, match="tokens"):
        net(x, t, torch.tensor([1, 2]))


def test_prepare_writes_captions_and_drops_whole_captions_for_guidance():
    model = caption_model()
    data = images(256, SHAPE, 10)
    model.initialize(data)
    batch = model.prepare(Batch(data.train[:64], data.labels_train[:64]),
                          torch.Generator().manual_seed(0))  # fmt: skip
    y = batch.y
    assert y.shape == (64, C.LENGTH)
    empty = (y == C.PAD).all(1)
    assert 5 < int(empty.sum()) < 35  # label_dropout 0.3 drops whole captions
    for row, k in zip(y[~empty], data.labels_train[:64][~empty].tolist()):
        text = C.detokenize(row).replace(",", "").split()
        assert str(k) in text or C.WORDS[k] in text
    perturb(model)  # the zero-initialised output layer passes no gradient back at first
    loss = model.loss(batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert model.net.text.tok.weight.grad.abs().sum() > 0  # the text encoder trains with the U-Net


def test_guidance_mixes_the_prompt_and_the_empty_caption():
    model = caption_model().eval()
    perturb(model)
    prompt = C.tokenize("the digit 3").expand(4, -1)
    den = model.denoiser(prompt, 2.5)
    xhat = torch.randn(4, *SHAPE)
    d, _ = den(xhat, 1.3)
    d_c, _ = model.denoiser(prompt, 1.0)(xhat, 1.3)
    d_u, _ = model.denoiser(torch.zeros_like(prompt), 1.0)(xhat, 1.3)
    assert torch.allclose(d, d_u + 2.5 * (d_c - d_u), atol=1e-5)


def test_sampling_takes_a_prompt_or_labels_written_as_captions():
    model = caption_model().eval()
    perturb(model)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    a = model.sample(3, prompt="a bold seven", guidance=3.0, generator=g())
    assert a.x.shape == (3, *SHAPE) and a.labels is None and torch.isfinite(a.x).all()
    b = model.sample(3, prompt="a thin one", guidance=3.0, generator=g())
    assert not torch.allclose(a.x, b.x)
    c = model.sample(3, labels=7, guidance=3.0, generator=g())
    assert c.labels.tolist() == [7, 7, 7]
    with pytest.raises(ConfigError, match="alphabet lacks"):
        model.sample(1, prompt="sept ✓")
    with pytest.raises(ConfigError, match="not text-conditioned"):
        caption_model(conditioning="label").sample(1, prompt="a seven")
    with pytest.raises(ConfigError, match="backbone=unet"):
        Diffusion.from_config(DiffusionConfig(**{**SMALL, "backbone": "mlp"}), (2,), 3)
    with pytest.raises(ConfigError, match="has none"):
        Diffusion.from_config(DiffusionConfig(**SMALL), SHAPE, None)


def test_latent_diffusion_on_captions_with_an_identity_autoencoder_is_pixel_diffusion(
    test_families,  # noqa: F811
):
    data = images(64, SHAPE, 10)
    pixel = caption_model().eval()
    pixel.initialize(data)
    ldm_cfg = LDMConfig(**{**SMALL, "backbone": "auto"}, scale=1.0)
    ldm = in_memory(_Identity, data, "ldm", dataclasses.replace(ldm_cfg)).eval()
    ldm.diffusion.load_state_dict(pixel.state_dict())
    perturb(pixel)
    perturb(ldm.diffusion)
    for opts in ({"prompt": "a thin two", "guidance": 3.0}, {"labels": 4, "guidance": 2.0}):
        a = pixel.sample(4, generator=torch.Generator().manual_seed(3), **opts)
        b = ldm.sample(4, generator=torch.Generator().manual_seed(3), **opts)
        assert torch.equal(a.x.clamp(-1, 1), b.x)
    batch = Batch(data.train[:8], data.labels_train[:8])
    la = pixel.loss(pixel.prepare(batch, torch.Generator().manual_seed(5)))
    lb = ldm.loss(ldm.prepare(batch, torch.Generator().manual_seed(5)))
    assert torch.equal(la, lb)
