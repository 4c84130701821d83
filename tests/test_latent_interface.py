"""The stage-1 interface every family shares (``latent``, ``encode``, ``decode``), built from
each family's tiny recipe (tests/families.py), so a new autoencoder is checked the moment it is
registered, and a family that is not one refuses with a clear message."""

from __future__ import annotations

import pytest
import torch
from families import TINY

import genlab
from genlab.errors import ConfigError


@pytest.mark.parametrize("family", sorted(TINY))
def test_latent_spec_matches_encode_and_decode(family):
    tiny = TINY[family]
    cfg = genlab.load_config(tiny.path, tiny.args())
    dataset = genlab.api.load_data(cfg)
    torch.manual_seed(0)
    model = genlab.api.build_model(cfg, dataset).eval()
    spec = model.latent()
    x = (dataset.val if len(dataset.val) else dataset.train)[:3]
    if spec is None:  # not an autoencoder (a diffusion model's encode is its ODE inversion)
        with pytest.raises(ConfigError, match="no decoder"):
            model.decode(x)
        return
    z = model.encode(x)
    assert tuple(z.shape) == (3, *spec.shape)
    if spec.kind == "codes":
        assert z.dtype == torch.long and spec.codes > 1
        assert int(z.min()) >= 0 and int(z.max()) < spec.codes
    else:
        assert spec.kind == "continuous" and z.is_floating_point()
    with torch.no_grad():
        back = model.decode(z)
    assert tuple(back.shape) == (3, *dataset.shape)
    assert torch.isfinite(back).all()
