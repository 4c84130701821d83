"""VQ-VAE: codes and decoding for any image size, the straight-through gradient through the whole
model, the logged codebook statistics, sampling from the codes' frequencies, and settings."""

from __future__ import annotations

import pytest
import torch

from genlab.data.base import Batch
from genlab.errors import ConfigError
from genlab.models.autoencoders.vqvae import VQVAE, VQVAEConfig


def make(shape, **kw) -> VQVAE:
    cfg = VQVAEConfig(**{"codes": 8, "code_dim": 3, "channels": 4, **kw})
    return VQVAE.from_config(cfg, shape).double()


@pytest.mark.parametrize(
    "shape,down", [((1, 8, 8), 1), ((1, 28, 28), 2), ((3, 15, 9), 2), ((1, 5, 5), 0)]
)
def test_codes_and_reconstructions_have_the_right_shapes(shape, down):
    model = make(shape, downsample=down).eval()
    x = torch.rand(4, *shape, dtype=torch.float64) * 2 - 1
    codes = model.encode(x)
    assert codes.shape == (4, *model.sizes[-1]) and codes.dtype == torch.long
    assert int(codes.min()) >= 0 and int(codes.max()) < 8
    assert model.decode(codes).shape == x.shape
    xhat, q = model.reconstruct(x)
    torch.testing.assert_close(
        model.decode(q.indices), xhat
    )  # decode(encode(x)) is the reconstruction


def test_the_encoder_gets_the_reconstruction_gradient_through_the_codes():
    model = make((1, 8, 8), downsample=1, kmeans_init=False, restart=False).train()
    x = torch.rand(16, 1, 8, 8, dtype=torch.float64) * 2 - 1
    model.loss(Batch(x)).backward()
    first = model.encoder[0].weight.grad
    assert first is not None and float(first.abs().sum()) > 0
    assert int(model.quantizer.steps) == 1


def test_training_stats_report_usage_and_perplexity_then_reset():
    model = make((1, 8, 8), downsample=1).train()
    x = torch.rand(32, 1, 8, 8, dtype=torch.float64) * 2 - 1
    model.loss(Batch(x))
    stats = model.training_stats()
    assert 0 < stats["codebook_usage"] <= 1 and 1 <= stats["perplexity"] <= 8
    assert model.training_stats() == {}  # the window was reset


def test_samples_decode_codes_drawn_from_their_frequencies(monkeypatch):
    from scipy.stats import chisquare

    model = make((1, 8, 8), downsample=1)
    freq = torch.tensor([40.0, 20, 10, 10, 10, 5, 5, 0])  # the codes' training counts
    model.quantizer.cluster_size.copy_(freq)
    drawn = []
    decode = model.decode
    monkeypatch.setattr(model, "decode", lambda idx: drawn.append(idx) or decode(idx))
    out = model.sample(500, generator=torch.Generator().manual_seed(0))
    assert out.x.shape == (500, 1, 8, 8) and out.x.abs().max() <= 1
    counts = torch.bincount(drawn[0].flatten(), minlength=8).double()
    assert counts[7] == 0  # a code never used in training is never drawn
    expected = (freq[:7] / freq.sum() * counts.sum()).double()
    assert chisquare(counts[:7].numpy(), expected.numpy()).pvalue > 1e-3
    uniform = torch.full((7,), float(counts.sum()) / 7, dtype=torch.float64)
    assert chisquare(counts[:7].numpy(), uniform.numpy()).pvalue < 1e-6  # the test can fail


def test_bad_settings_are_explained():
    with pytest.raises(ConfigError, match="images"):
        VQVAE.from_config(VQVAEConfig(), (5,))
    with pytest.raises(ConfigError, match="below 1x1"):
        make((1, 4, 4), downsample=4)


def test_genlab_encode_writes_the_codes_of_both_splits(tmp_path, capsys):
    import numpy as np

    import genlab
    from genlab.cli import main

    overrides = ["trainer.steps=5", "trainer.progress=false", "trainer.tensorboard=false",
                 "trainer.val_every=0", "model.channels=4", "model.codes=8", "model.code_dim=2"]  # fmt: skip
    genlab.train(
        "configs/vqvae-digits.yaml", out=tmp_path / "vq", overrides=overrides, evaluate=False
    )
    assert main(["encode", str(tmp_path / "vq"), "--out", str(tmp_path / "codes.npz")]) == 0
    codes = np.load(tmp_path / "codes.npz")
    assert codes["codes_train"].shape[1:] == (4, 4) and codes["codes_train"].dtype == np.int64
    assert len(codes["codes_val"]) == len(codes["labels_val"]) > 0
    assert codes["codes_train"].max() < 8
    assert (
        main(["encode", str(tmp_path / "vq"), "--data", "mnist", "--out", str(tmp_path / "m.npz")])
        == 2
    )
    assert "trained on (1, 8, 8)" in capsys.readouterr().err
